import CLibpq
import Foundation
import TestSupport
import Testing

/// The C module itself, against the real server: the base every Postgres test stands on.
@Suite struct LibpqSmokeTests {
    @Test func selectOneWithTheURLsCredentials() throws {
        let url = try TestEnvironment.databaseURL()
        let conn = try #require(PQconnectdb(url))
        defer { PQfinish(conn) }
        try #require(PQstatus(conn) == CONNECTION_OK, "\(String(cString: PQerrorMessage(conn)))")
        let result = PQexec(conn, "SELECT 1")
        defer { PQclear(result) }
        try #require(PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1)
        let value = try #require(PQgetvalue(result, 0, 0))
        #expect(String(cString: value) == "1")
    }

    @Test func aWrongPasswordFailsWithAnAuthenticationError() throws {
        var components = try #require(URLComponents(string: try TestEnvironment.databaseURL()))
        components.password = "definitely-not-the-password"
        let badURL = try #require(components.url).absoluteString
        let conn = try #require(PQconnectdb(badURL))
        defer { PQfinish(conn) }
        #expect(PQstatus(conn) == CONNECTION_BAD)
        let message = String(cString: PQerrorMessage(conn))
        #expect(message.contains("password authentication failed"), "\(message)")
        #expect(!message.contains("definitely-not-the-password"))
    }
}
