import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

@Suite struct CancellationTests {
    @Test func cancellingASleepingQueryReturnsPromptlyAndTheConnectionIsReused() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let pid = conn.backendPID
        let task = Task { try await conn.query("SELECT pg_sleep(60)") }
        try await PG.waitUntilActive(pid: pid)
        let start = ContinuousClock.now
        task.cancel()
        let result = await task.result
        // Long before the statement would have ended on its own.
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .seconds(30))
        let error = try #require(throws: PGError.self) { try result.get() }
        #expect(error.kind == .cancelled)
        #expect(error.sqlState == "57014")
        #expect(error.isCancellation)
        // Same connection, same server process, still usable.
        #expect(conn.backendPID == pid)
        #expect(try await conn.query("SELECT 1::int8 AS one")[0].decode(Int64.self, column: "one") == 1)
        #expect(!conn.isClosed)
    }

    @Test func cancellingThroughThePoolKeepsThePoolUsable() async throws {
        try await PG.withClient(max: 1) { client in
            // A marked statement, so the test cancels it once the server really runs it
            // (not while the pool is still opening its connection).
            let sql = "SELECT pg_sleep(60) /* \(TestEnvironment.uniqueName("poolcancel")) */"
            let task = Task { try await client.query(sql) }
            try await PG.waitUntilRunning(sql)
            let start = ContinuousClock.now
            task.cancel()
            let result = await task.result
            #expect(ContinuousClock.now - start < .seconds(30), "returned long before the statement would have ended")
            #expect((try? result.get()) == nil)
            #expect(try await client.query("SELECT 3::int8 AS three")[0].decode(Int64.self, at: 0) == 3)
        }
    }

    @Test func aTaskCancelledBeforeItsQueryNeverSendsIt() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let table = TestEnvironment.uniqueName("neversent")
        try await conn.execute("CREATE TEMPORARY TABLE \(table) (n int)")
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await conn.execute("INSERT INTO \(table) VALUES (1)")
        }
        let error = try await #require(throws: PGError.self) { _ = try await task.value }
        #expect(error.kind == .cancelled)
        // The server never saw the statement: the table is still empty.
        #expect(try await conn.query("SELECT count(*)::int8 AS n FROM \(table)")[0].decode(Int64.self, column: "n") == 0)
    }

    @Test func aStatementTimeoutIsAQueryErrorNotACancellation() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        try await conn.execute("SET statement_timeout = 100")
        let error = try await #require(throws: PGError.self) { _ = try await conn.query("SELECT pg_sleep(2)") }
        #expect(error.kind == .query)
        #expect(error.sqlState == "57014")
    }
}

extension PG {
    /// Waits until some server process runs exactly `sql`.
    static func waitUntilRunning(_ sql: String) async throws {
        let observer = try await connect()
        defer { observer.close() }
        for _ in 0..<1000 {
            let rows = try await observer.query("SELECT count(*) AS n FROM pg_stat_activity WHERE query = $1 AND state = 'active'", [sql])
            if try rows[0].decode(Int.self, column: "n") == 1 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("nobody ever ran \(sql)")
    }

    /// Waits until the server process `pid` runs a statement (seen from another
    /// connection), so that a test cancels a statement that really runs.
    static func waitUntilActive(pid: Int32) async throws {
        let observer = try await connect()
        defer { observer.close() }
        for _ in 0..<500 {
            let rows = try await observer.query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [pid])
            if try rows[0].decode(Int.self, column: "n") == 1 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("backend \(pid) never became active")
    }
}
