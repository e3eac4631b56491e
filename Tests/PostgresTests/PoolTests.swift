import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

@Suite struct PoolTests {
    @Test func twoHundredConcurrentTasksOverFourConnectionsAllFinish() async throws {
        try await PG.withClient(max: 4) { client in
            let table = TestEnvironment.uniqueName("pool")
            try await client.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, n int8 NOT NULL)")
            let total = try await withThrowingTaskGroup(of: Int64.self) { group in
                for i in 1...200 {
                    group.addTask {
                        if i % 3 == 0 {
                            try await client.withTransaction { tx in
                                try await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(i), Int64(i)])
                            }
                        } else {
                            try await client.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(i), Int64(i)])
                        }
                        let stats = client.statistics
                        #expect(stats.idle + stats.leased + stats.connecting <= 4)
                        return try await client.query("SELECT n FROM \(table) WHERE id = $1", [Int64(i)])[0].decode(Int64.self, column: "n")
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == (1...200).reduce(0, +))
            let backends = try await client.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '' AND datname = current_database() AND pid <> pg_backend_pid()")
            _ = backends
            let stats = client.statistics
            #expect(stats.leased == 0 && stats.waiting == 0)
            #expect(stats.idle <= 4)
            try await client.execute("DROP TABLE \(table)")
        }
    }

    @Test func acquireTimeoutIsAnErrorNotAHang() async throws {
        try await PG.withClient(max: 1, acquireTimeout: .milliseconds(300)) { client in
            // Open the one connection first (under parallel load, opening one can take
            // longer than this pool's short acquire timeout).
            var warm = false
            for _ in 0..<50 where !warm {
                warm = (try? await client.query("SELECT 1")) != nil
            }
            try #require(warm)
            let holding = Task {
                try await client.withConnection { conn in
                    _ = try await conn.query("SELECT pg_sleep(60)")
                }
            }
            // Wait until the only connection is really held.
            for _ in 0..<500 where client.statistics.leased == 0 { try await Task.sleep(for: .milliseconds(10)) }
            try #require(client.statistics.leased == 1, "\(client.statistics)")
            let start = ContinuousClock.now
            let error = try await #require(throws: PGError.self) { _ = try await client.query("SELECT 1") }
            let waited = ContinuousClock.now - start
            #expect(error.kind == .timeout)
            #expect(error.message.contains("waiting for a connection"))
            // It gave up at its own timeout, long before the connection came free.
            #expect(waited >= .milliseconds(250) && waited < .seconds(30))
            // Waiters that queue one after another each time out at their own deadline
            // (one timer serves them all, re-armed for the next).
            let waiters = (0..<3).map { _ in Task { () -> (PGError.Kind?, Duration) in
                let start = ContinuousClock.now
                do {
                    _ = try await client.query("SELECT 1")
                    return (nil, ContinuousClock.now - start)
                } catch let error as PGError {
                    return (error.kind, ContinuousClock.now - start)
                }
            } }
            for waiter in waiters {
                let (kind, waited) = try await waiter.value
                #expect(kind == .timeout)
                #expect(waited >= .milliseconds(250) && waited < .seconds(30))
            }
            #expect(client.statistics.waiting == 0)
            holding.cancel()  // cancels the pg_sleep on the server
            _ = await holding.result
            #expect(try await client.query("SELECT 2 AS two")[0].decode(Int.self, at: 0) == 2)
        }
    }

    @Test func shutdownWaitsForStatementsInFlightThenRefuses() async throws {
        var config = try PG.configuration()
        config.maxConnections = 2
        let client = PGClient(configuration: config)
        let running = Task { try await client.query("SELECT pg_sleep(2), 42::int8 AS answer") }
        // Wait until the statement holds a connection (connecting may take a while),
        // then shut down while it runs (it runs for 2 s).
        for _ in 0..<200 where client.statistics.leased == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(client.statistics.leased == 1)
        let start = ContinuousClock.now
        await client.shutdown()
        #expect(ContinuousClock.now - start >= .milliseconds(300), "shutdown waited for the statement in flight")
        #expect(try await running.value[0].decode(Int64.self, column: "answer") == 42)
        let error = try await #require(throws: PGError.self) { _ = try await client.query("SELECT 1") }
        #expect(error.kind == .closed)
        #expect(client.statistics == .init(idle: 0, leased: 0, connecting: 0, waiting: 0))
    }

    @Test func runReturnsWhenCancelledAndKeepsTheMinimumOpen() async throws {
        var config = try PG.configuration()
        config.minConnections = 2
        config.maxConnections = 3
        let client = PGClient(configuration: config)
        let runner = Task { await client.run() }
        var opened = false
        for _ in 0..<500 where !opened {
            try await Task.sleep(for: .milliseconds(20))
            opened = client.statistics.idle == 2
        }
        #expect(opened)
        runner.cancel()
        await runner.value
        #expect(client.statistics.idle == 0)
        await #expect(throws: PGError.self) { _ = try await client.query("SELECT 1") }
    }

    @Test func theStatementCacheIsBoundedAndDeallocatesWhatItEvicts() async throws {
        var config = try PG.configuration()
        config.statementCacheCapacity = 2
        let conn = try await PGConnection.connect(configuration: config)
        defer { conn.close() }
        let statements = (1...4).map { "SELECT $1::int8 + \($0) AS v" }
        for round in 0..<3 {
            for (i, sql) in statements.enumerated() {
                for _ in 0..<2 {
                    #expect(try await conn.query(sql, [Int64(round)])[0].decode(Int64.self, column: "v") == Int64(round + i + 1))
                }
            }
        }
        let prepared = try await conn.query("SELECT count(*) AS n FROM pg_prepared_statements")[0].decode(Int.self, column: "n")
        #expect(prepared <= 2)
    }

    @Test func statementsArePreparedOnceAndReused() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let sql = "SELECT $1::int8 + 1 AS next"
        func prepared() async throws -> Int {
            try await conn.query("SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = $1", [sql])[0].decode(Int.self, column: "n")
        }
        _ = try await conn.query(sql, [Int64(1)])
        #expect(try await prepared() == 0)  // a one-off is not prepared
        for i in 0..<5 {
            #expect(try await conn.query(sql, [Int64(i)])[0].decode(Int64.self, column: "next") == Int64(i) + 1)
        }
        #expect(try await prepared() == 1)  // prepared once, reused
        // The server forgetting them (DEALLOCATE ALL) is survived.
        try await conn.execute("DEALLOCATE ALL")
        #expect(try await conn.query(sql, [Int64(9)])[0].decode(Int64.self, column: "next") == 10)
    }
}
