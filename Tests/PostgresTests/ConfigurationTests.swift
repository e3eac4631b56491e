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
        ("postgres://u:p@h/db%zz", "invalid percent-encoded token"),
        ("postgres://u:p@[::1/db", "IPv6"),
        ("host=h password=x", "postgres://"),
    ])
    func rejectsBadURLsClearly(url: String, expected: String) throws {
        let error = try #require(throws: PGError.self) { try PGConfiguration(url: url) }
        #expect(error.kind == .configuration)
        #expect(error.message.contains(expected), "\(error.message)")
        #expect(!error.description.contains(":p@"))
    }

    /// libpq's parser quotes what it could not parse, which can be the password: our
    /// errors never show it.
    @Test(arguments: [
        "postgres://u:s3cr%zzet@h/db",
        "postgres://u:s3cr%00et@h/db",
        "postgres://u:s3cr3t@[::1/db",
        "postgres://u:s3cr3t@h/db?s3cr3t",
    ])
    func urlErrorsNeverQuoteThePassword(url: String) throws {
        let error = try #require(throws: PGError.self) { try PGConfiguration(url: url) }
        #expect(error.kind == .configuration)
        #expect(!error.description.contains("s3cr"), "\(error.description)")
        #expect(!String(reflecting: error).contains("s3cr"))
    }

    @Test(arguments: ["host=h s3cr3t", "host=h password='s3cr3t"])
    func keywordErrorsNeverQuoteThePassword(keywords: String) throws {
        let error = try #require(throws: PGError.self) { try PGConfiguration(keywords: keywords) }
        #expect(error.kind == .configuration)
        #expect(!error.description.contains("s3cr"), "\(error.description)")
    }

    @Test func libpqParsesSeveralHostsAndSocketDirectories() throws {
        let c = try PGConfiguration(url: "postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write")
        #expect(c.host == "h1,h2")
        #expect(c.port == nil)
        #expect(c.additionalKeywords.contains { $0.key == "port" && $0.value == "5432,5433" })
        #expect(c.additionalKeywords.contains { $0.key == "target_session_attrs" && $0.value == "read-write" })
        let socket = try PGConfiguration(url: "postgres:///db?host=/var/run/postgresql&port=5433")
        #expect(socket.host == "/var/run/postgresql" && socket.port == 5433 && socket.database == "db")
        let keywords = try PGConfiguration(keywords: "host=h1,h2 port=5432 dbname=app sslrootcert=/etc/ca.pem")
        #expect(keywords.host == "h1,h2" && keywords.port == 5432)
        #expect(keywords.additionalKeywords.contains { $0.key == "sslrootcert" && $0.value == "/etc/ca.pem" })
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
