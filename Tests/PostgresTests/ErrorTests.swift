import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

@Suite struct ErrorTests {
    @Test func injectionAttemptsStayData() async throws {
        try await PG.withClient { client in
            let table = TestEnvironment.uniqueName("inj")
            try await client.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, name text NOT NULL)")
            do {
                let evil = "x'); DROP TABLE \(table); --"
                try await client.execute("INSERT INTO \(table) (id, name) VALUES ($1, $2)", [Int64(1), evil])
                let rows = try await client.query("SELECT name FROM \(table) WHERE name = $1", [evil])
                #expect(try rows.first?.decode(String.self, column: "name") == evil)
                let none = try await client.query("SELECT count(*) AS n FROM \(table) WHERE name = $1", ["' OR '1'='1"])
                #expect(try none[0].decode(Int.self, column: "n") == 0)
            } catch {
                _ = try? await client.execute("DROP TABLE IF EXISTS \(table)")
                throw error
            }
            try await client.execute("DROP TABLE \(table)")
        }
    }

    @Test func syntaxErrorsCarryTheirSQLState() async throws {
        try await PG.withClient { client in
            let error = try await #require(throws: PGError.self) { _ = try await client.query("SELEC 1") }
            #expect(error.kind == .query)
            #expect(error.sqlState == "42601")
            #expect(error.isSyntaxError)
            #expect(error.message.contains("syntax error"))
            #expect(error.sql == "SELEC 1")
            // The connection is still fine afterwards.
            #expect(try await client.query("SELECT 1::int8 AS one")[0].decode(Int64.self, at: 0) == 1)
        }
    }

    @Test func uniqueViolationsNameTheirConstraint() async throws {
        try await PG.withClient { client in
            let table = TestEnvironment.uniqueName("uniq")
            try await client.execute("CREATE TABLE \(table) (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL CONSTRAINT \(table)_email_key UNIQUE)")
            try await client.execute("INSERT INTO \(table) (email) VALUES ($1)", ["a@example.com"])
            let error = try await #require(throws: PGError.self) {
                try await client.execute("INSERT INTO \(table) (email) VALUES ($1)", ["a@example.com"])
            }
            #expect(error.kind == .query)
            #expect(error.sqlState == "23505")
            #expect(error.isUniqueViolation)
            #expect(error.constraint == "\(table)_email_key")
            #expect(error.table == table)
            #expect(error.detail?.contains("a@example.com") == true)
            // The description is for logs: no row value (the DETAIL quotes the key),
            // but the SQLSTATE, the server's message and the constraint. The debug
            // description has everything.
            #expect(!error.description.contains("a@example.com"), "\(error)")
            #expect(!"\(error)".contains("a@example.com"))
            #expect(error.description.contains("23505"))
            #expect(error.description.contains("duplicate key value violates unique constraint"))
            #expect(error.description.contains("\(table)_email_key"))
            #expect(String(reflecting: error).contains("a@example.com"))
            try await client.execute("DROP TABLE \(table)")
        }
    }

    @Test func aWrongPasswordIsAClearAuthenticationErrorWithoutThePassword() async throws {
        var config = try PG.configuration()
        let wrong = "Wr0ng-Pa55-\(UUID().uuidString.prefix(8))"
        config.password = wrong
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .authentication)
        #expect(error.message.contains("password authentication failed"))
        #expect(!error.description.contains(wrong))
        #expect(!"\(error)".contains(wrong))
        // Through the pool: the caller gets the authentication error, not a timeout.
        let client = PGClient(configuration: config)
        let pooled = try await #require(throws: PGError.self) { _ = try await client.query("SELECT 1") }
        #expect(pooled.kind == .authentication)
        #expect(!pooled.description.contains(wrong))
        await client.shutdown()
    }

    @Test func aRefusedConnectionIsAConnectionError() async throws {
        var config = try PG.configuration()
        config.host = "127.0.0.1"
        config.port = 1  // nothing listens there
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .connection)
        #expect(!error.description.contains(try PG.password()))
    }

    @Test func dataExceptionsDoNotPrintTheValueTheyQuote() async throws {
        try await PG.withClient { client in
            let secret = "not-a-number-\(UUID().uuidString.prefix(6))"
            let error = try await #require(throws: PGError.self) {
                _ = try await client.query("SELECT $1::text::int4 AS n", [secret])
            }
            #expect(error.kind == .query)
            #expect(error.sqlState == "22P02")
            #expect(error.description.contains("invalid input syntax for type integer"))
            #expect(!error.description.contains(secret), "\(error)")
            #expect(String(reflecting: error).contains(secret))
        }
    }

    @Test func parametersNeverAppearInErrors() async throws {
        try await PG.withClient { client in
            let table = TestEnvironment.uniqueName("chk")
            try await client.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, email text NOT NULL CHECK (email LIKE '%@%'))")
            let secret = "row-value-\(UUID().uuidString.prefix(6))"
            let error = try await #require(throws: PGError.self) {
                try await client.execute("INSERT INTO \(table) (id, email) VALUES ($1, $2)", [Int64(7), secret])
            }
            #expect(error.sqlState == "23514")
            #expect(!error.description.contains(secret), "\(error)")
            #expect(error.description.contains("INSERT INTO \(table)"))
            try await client.execute("DROP TABLE \(table)")
        }
    }
}
