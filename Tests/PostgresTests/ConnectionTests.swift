import CLibpq
import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

@Suite struct ConnectionTests {
    @Test func selectsOverOneConnection() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let rows = try await conn.query("SELECT 1::int8 AS one, 'two' AS two")
        #expect(rows.count == 1)
        #expect(try rows[0].decode(Int64.self, column: "one") == 1)
        #expect(try rows[0].decode(String.self, at: 1) == "two")
        #expect(rows.commandTag == "SELECT 1")
    }
}

@Suite struct ManyConnectsTests {
    /// Twenty clients open connections at once by host name: libpq resolves the name
    /// synchronously, so each connect runs its libpq steps on a thread of its own; none
    /// of them may hold a thread that runs tasks (on a 2-core machine two of them used
    /// to stop every task of the process).
    @Test func twentyConnectionsOpenAtOnceByHostName() async throws {
        var configuration = try PG.configuration()
        configuration.host = "localhost"
        configuration.connectTimeout = .seconds(60)
        let byName = configuration
        let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    let conn = try await PGConnection.connect(configuration: byName)
                    defer { conn.close() }
                    return try await conn.query("SELECT pg_backend_pid()::int4 AS pid")[0].decode(Int32.self, column: "pid")
                }
            }
            var pids: Set<Int32> = []
            for try await pid in group { pids.insert(pid) }
            return pids
        }
        #expect(pids.count == 20)
    }
}

@Suite struct ConnectionIOTests {
    @Test func largeParametersAndResultsStream() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        // 16 MiB does not fit in the socket buffer: the send waits for writability.
        var big = [UInt8](repeating: 0, count: 16 << 20)
        for i in stride(from: 0, to: big.count, by: 4096) { big[i] = UInt8(truncatingIfNeeded: i / 4096) }
        let rows = try await conn.query("SELECT $1::bytea AS b, md5($1::bytea) AS h", [Data(big)])
        let back = try rows[0].decode([UInt8].self, column: "b")
        #expect(back.count == big.count)
        // memcmp: an element-wise comparison of 16 MiB takes seconds in a debug build.
        let same = back.count == big.count && back.withUnsafeBytes { a in big.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
        #expect(same)
        // And the connection is in a clean state afterwards.
        #expect(try await conn.query("SELECT 5::int8 AS five")[0].decode(Int64.self, at: 0) == 5)
    }

    @Test func concurrentStatementsOnOneConnectionTakeTurns() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let sum = try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<50 {
                group.addTask { try await conn.query("SELECT $1::int8 * 2 AS d", [Int64(i)])[0].decode(Int64.self, column: "d") }
            }
            return try await group.reduce(0, +)
        }
        #expect(sum == 2 * (0..<50).reduce(0, +))
    }

    @Test func aClosedConnectionRefusesStatements() async throws {
        let conn = try await PG.connect()
        conn.close()
        let error = try await #require(throws: PGError.self) { _ = try await conn.query("SELECT 1") }
        #expect(error.kind == .closed)
        #expect(conn.isClosed)
    }

    @Test func aServerSideDisconnectIsNoticedAndReportedAsConnectionLost() async throws {
        let victim = try await PG.connect()
        defer { victim.close() }
        let killer = try await PG.connect()
        defer { killer.close() }
        _ = try await killer.query("SELECT pg_terminate_backend($1)", [victim.backendPID])
        // The loop notices the idle connection closing.
        for _ in 0..<200 where !victim.isClosed { try await Task.sleep(for: .milliseconds(10)) }
        #expect(victim.isClosed)
        let error = try await #require(throws: PGError.self) { _ = try await victim.query("SELECT 1") }
        #expect(error.kind == .connection)
    }
}
