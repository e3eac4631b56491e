import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

/// Restarts a PostgreSQL server: on a private instance, so that the tests running in
/// parallel on the shared server are not disturbed.
@Suite struct RestartTests {
    @Test(.timeLimit(.minutes(3)))
    func aServerRestartedMidRunLeavesTheClientWorkingOnceItIsBack() async throws {
        let instance = "pg-restart-" + TestEnvironment.uniqueName("r").suffix(8)
        let url: String
        do {
            url = try await TestEnvironment.startPrivateInstance(instance).databaseURL
        } catch {
            _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
            throw error
        }
        do {
            try await exercise(url: url, instance: instance)
        } catch {
            _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
            throw error
        }
        _ = try await TestEnvironment.runDevServices(["down"], instance: instance)
    }

    func exercise(url: String, instance: String) async throws {
        var config = try PGConfiguration(url: url)
        config.maxConnections = 3
        config.acquireTimeout = .seconds(10)
        let client = PGClient(configuration: config)
        do {
            // Warm: three connections open and idle.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 { group.addTask { _ = try await client.query("SELECT pg_sleep(0.05)") } }
                try await group.waitForAll()
            }
            let pidBefore = try await client.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, column: "pid")
            #expect(client.statistics.idle == 3)

            _ = try await TestEnvironment.runDevServices(["restart", "postgres"], instance: instance)

            // Every old connection is gone; the first statement after the restart runs
            // on a fresh one, without an error reaching the caller.
            let pidAfter = try await client.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, column: "pid")
            #expect(pidAfter != pidBefore)
            let results = try await withThrowingTaskGroup(of: Int64.self) { group in
                for i in 0..<20 {
                    group.addTask { try await client.query("SELECT $1::int8 AS i", [Int64(i)])[0].decode(Int64.self, column: "i") }
                }
                return try await group.reduce(0, +)
            }
            #expect(results == (0..<20).reduce(0, +))
            #expect(client.statistics.idle + client.statistics.leased <= 3)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }
}
