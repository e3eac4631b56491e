import Foundation
@testable import CacheAsidePostgres
import Testing

@Suite struct ConfigurationTests {
    @Test func parsesAFullURL() throws {
        let c = try PGConfiguration(url: "postgres://app%40corp:p%40ss%2Fw0rd%3A@db.example.com:6543/my%20db?sslmode=require&application_name=api&connect_timeout=7")
        #expect(c.user == "app@corp")
        #expect(c.password == "p@ss/w0rd:")
        #expect(c.host == "db.example.com")
        #expect(c.port == 6543)
        #expect(c.database == "my db")
        #expect(c.sslMode == .require)
        #expect(c.applicationName == "api")
        #expect(c.connectTimeout == .seconds(7))
        #expect(c.needsNameResolution)
    }

    @Test func parsesPostgresqlSchemeIPv6AndDefaults() throws {
        let c = try PGConfiguration(url: "postgresql://[::1]:5433/db")
        #expect(c.host == "::1")
        #expect(c.port == 5433)
        #expect(c.user == nil && c.password == nil)
        #expect(!c.needsNameResolution)
        let bare = try PGConfiguration(url: "postgres://localhost")
        #expect(bare.host == "localhost" && bare.port == nil && bare.database == nil)
        let socket = try PGConfiguration(url: "postgres://%2Fvar%2Frun%2Fpostgresql/db")
        #expect(socket.host == "/var/run/postgresql")
        #expect(!socket.needsNameResolution)
        let extra = try PGConfiguration(url: "postgres://u@127.0.0.1/db?target_session_attrs=read-write")
        #expect(extra.additionalKeywords.first?.key == "target_session_attrs")
        #expect(extra.additionalKeywords.first?.value == "read-write")
    }

    @Test(arguments: [
        ("mysql://u:p@h/db", "postgres://"),
        ("postgres://u:p@h:notaport/db", "invalid port"),
        ("postgres://u:p@h:70000/db", "invalid port"),
        ("postgres://u:p@h/db?sslmode=sometimes", "invalid sslmode"),
        ("postgres://u:p@h/db?bogus_option=1", "unknown connection parameter \"bogus_option\""),
        ("postgres://u:p@h/db?connect_timeout=soon", "connect_timeout"),
        ("postgres://u:p@h/db%zz", "percent-encoding"),
        ("postgres://u:p@[::1/db", "IPv6"),
        ("postgres://u:p@h1,h2/db", "several hosts"),
    ])
    func rejectsBadURLsClearly(url: String, expected: String) throws {
        let error = try #require(throws: PGError.self) { try PGConfiguration(url: url) }
        #expect(error.kind == .configuration)
        #expect(error.message.contains(expected), "\(error.message)")
        #expect(!error.description.contains(":p@"))
    }

    @Test func neverShowsThePassword() throws {
        let secret = "s3cr3t-Pa55word"
        let c = try PGConfiguration(url: "postgres://app:\(secret)@db:5432/app?sslmode=disable")
        #expect(!c.description.contains(secret))
        #expect(!c.debugDescription.contains(secret))
        #expect(!"\(c)".contains(secret))
        #expect(c.description.contains("********"))
        #expect(c.description.contains("app@db:5432/app") == false)
        #expect(c.description.hasPrefix("postgres://app:********@db:5432/app"))
        // The conninfo handed to libpq does carry it, quoted.
        #expect(c.connectionString.contains("password='\(secret)'"))
        #expect(redact("failed for \(secret)!", secret: secret) == "failed for ********!")
    }

    @Test func parsesKeywordStringsWithQuoting() throws {
        let c = try PGConfiguration(keywords: "host=127.0.0.1 port = 5432 user=app password='it\\'s \\'quoted\\' \\\\ ok' dbname=app sslmode=disable application_name='my app'")
        #expect(c.host == "127.0.0.1")
        #expect(c.port == 5432)
        #expect(c.user == "app")
        #expect(c.password == "it's 'quoted' \\ ok")
        #expect(c.applicationName == "my app")
        #expect(c.sslMode == .disable)
        #expect(throws: PGError.self) { try PGConfiguration(keywords: "host=h password") }
        #expect(throws: PGError.self) { try PGConfiguration(keywords: "host=h password='unterminated") }
        #expect(throws: PGError.self) { try PGConfiguration(keywords: "nonsense=1") }
    }

    @Test func connectionStringRoundTripsThroughTheKeywordParser() throws {
        var c = PGConfiguration(host: "db", port: 5432, user: "we ird", password: "p'a\\ss word", database: "d b", sslMode: .verifyFull)
        c.applicationName = "app 'x'"
        let back = try PGConfiguration(keywords: c.connectionString)
        #expect(back.user == c.user)
        #expect(back.password == c.password)
        #expect(back.database == c.database)
        #expect(back.applicationName == c.applicationName)
        #expect(back.sslMode == .verifyFull)
        #expect(back.host == "db" && back.port == 5432)
    }
}
