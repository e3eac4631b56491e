import CLibpq
import Foundation
import Postgres
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
