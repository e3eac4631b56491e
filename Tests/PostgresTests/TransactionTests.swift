import Foundation
import CacheAsidePostgres
import Synchronization
import TestSupport
import Testing

struct Boom: Error {}

final class Flag: Sendable {
    let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

@Suite struct TransactionTests {
    func withTable(_ body: (PGClient, String) async throws -> Void) async throws {
        try await PG.withClient(max: 2) { client in
            let table = TestEnvironment.uniqueName("tx")
            try await client.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, name text NOT NULL)")
            do {
                try await body(client, table)
            } catch {
                _ = try? await client.execute("DROP TABLE \(table)")
                throw error
            }
            try await client.execute("DROP TABLE \(table)")
        }
    }

    func count(_ client: PGClient, _ table: String) async throws -> Int {
        try await client.query("SELECT count(*) AS n FROM \(table)")[0].decode(Int.self, column: "n")
    }

    @Test func commitsAndRunsAfterCommitWorkBeforeReturning() async throws {
        try await withTable { client, table in
            let ran = Flag()
            let inserted: Int = try await client.withTransaction { tx in
                let n = try await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(1), "a"])
                tx.afterCommit {
                    try? await Task.sleep(for: .milliseconds(50))
                    ran.set()
                }
                #expect(!ran.isSet)
                return n
            }
            #expect(inserted == 1)
            #expect(ran.isSet)  // awaited before withTransaction returned
            #expect(try await count(client, table) == 1)
        }
    }

    @Test func aThrowRollsBackAndSkipsAfterCommitWork() async throws {
        try await withTable { client, table in
            let ran = Flag()
            await #expect(throws: Boom.self) {
                try await client.withTransaction { tx in
                    try await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(1), "a"])
                    tx.afterCommit { ran.set() }
                    throw Boom()
                }
            }
            #expect(!ran.isSet)
            #expect(try await count(client, table) == 0)
            // The transaction can't be used after its body.
            var escaped: PGTransaction?
            try await client.withTransaction { tx in escaped = tx }
            await #expect(throws: PGError.self) { try await escaped?.execute("SELECT 1") }
        }
    }

    @Test func aSwallowedStatementErrorMakesCommitThrow() async throws {
        try await withTable { client, table in
            let ran = Flag()
            let error = try await #require(throws: PGError.self) {
                try await client.withTransaction { tx in
                    try await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(1), "a"])
                    tx.afterCommit { ran.set() }
                    _ = try? await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(1), "dup"])
                }
            }
            #expect(error.message.contains("rolled back"))
            #expect(!ran.isSet)
            #expect(try await count(client, table) == 0)
        }
    }

    @Test func cancellationRollsBack() async throws {
        try await withTable { client, table in
            let sleep = "SELECT pg_sleep(10) /* \(table) */"
            let task = Task {
                try await client.withTransaction { tx in
                    try await tx.execute("INSERT INTO \(table) VALUES ($1, $2)", [Int64(1), "a"])
                    _ = try await tx.query(sleep)
                }
            }
            // Cancel once the transaction has inserted and sleeps on the server.
            try await PG.waitUntilRunning(sleep)
            task.cancel()
            let result = await task.result
            #expect(throws: PGError.self) { try result.get() }
            #expect(try await count(client, table) == 0)
            // The pool still works, on a clean connection.
            #expect(try await client.query("SELECT 1 AS one")[0].decode(Int.self, at: 0) == 1)
        }
    }

    @Test func aConnectionLeftInATransactionIsNotReused() async throws {
        try await PG.withClient(max: 1) { client in
            let pid1: Int32 = try await client.withConnection { conn in
                try await conn.execute("BEGIN")
                #expect(conn.isInTransaction)
                return conn.backendPID
            }
            let (pid2, inTx): (Int32, Bool) = try await client.withConnection { conn in (conn.backendPID, conn.isInTransaction) }
            #expect(pid1 != pid2)
            #expect(!inTx)
        }
    }
}
