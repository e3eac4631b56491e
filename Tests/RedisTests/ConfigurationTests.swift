import CacheAsideRedis
import Testing

/// URL parsing and the configuration's description: pure logic, no server.
@Suite struct ConfigurationTests {
    @Test func parsesUserPasswordHostPortAndDatabase() throws {
        let c = try RESPConfiguration(url: "redis://cacheaside:s3cret@db.example.com:6380/3")
        #expect(c.endpoint == .tcp(host: "db.example.com", port: 6380))
        #expect(c.username == "cacheaside")
        #expect(c.password == "s3cret")
        #expect(c.database == 3)
    }

    @Test func defaultsPortAndDatabase() throws {
        let c = try RESPConfiguration(url: "redis://localhost")
        #expect(c.endpoint == .tcp(host: "localhost", port: 6379))
        #expect(c.username == nil)
        #expect(c.password == nil)
        #expect(c.database == 0)
        #expect(c.connectTimeout == .seconds(2))
        #expect(c.commandTimeout == .seconds(1))
        #expect(c.connectionCount == 2)
        #expect(c.reconnectBackoffMinimum < c.reconnectBackoffMaximum)
    }

    @Test func passwordOnlyMeansTheDefaultUser() throws {
        let c = try RESPConfiguration(url: "redis://:onlypass@127.0.0.1:7000/0")
        #expect(c.username == nil)
        #expect(c.password == "onlypass")
        #expect(c.endpoint == .tcp(host: "127.0.0.1", port: 7000))
    }

    @Test func percentDecodesUserAndPassword() throws {
        let c = try RESPConfiguration(url: "redis://us%40er:p%3Aa%2Fs%40s%25@h:1/0")
        #expect(c.username == "us@er")
        #expect(c.password == "p:a/s@s%")
    }

    @Test func parsesBracketedIPv6() throws {
        let c = try RESPConfiguration(url: "redis://[::1]:6390/2")
        #expect(c.endpoint == .tcp(host: "::1", port: 6390))
        #expect(c.database == 2)
        #expect(c.description == "redis://[::1]:6390/2")
    }

    @Test func parsesUnixSocketURLs() throws {
        let c = try RESPConfiguration(url: "unix:///var/run/redis/redis.sock?db=5")
        #expect(c.endpoint == .unix(path: "/var/run/redis/redis.sock"))
        #expect(c.database == 5)
        let withAuth = try RESPConfiguration(url: "unix://app:pw@/tmp/r.sock")
        #expect(withAuth.endpoint == .unix(path: "/tmp/r.sock"))
        #expect(withAuth.username == "app")
        #expect(withAuth.password == "pw")
        #expect(withAuth.database == 0)
    }

    @Test func acceptsDatabaseAsQueryParameter() throws {
        let c = try RESPConfiguration(url: "redis://h:1?db=4")
        #expect(c.database == 4)
    }

    @Test(arguments: [
        ("rediss://u:pw@h:6379/0", "TLS"),
        ("http://h:6379", "scheme"),
        ("h:6379", "not a Redis URL"),
        ("redis://h:0/0", "port"),
        ("redis://h:65536/0", "port"),
        ("redis://h:abc/0", "port"),
        ("redis://h:6379/x", "database"),
        ("redis://h:6379/-1", "database"),
        ("redis://:pw@:6379/0", "no host"),
        ("redis://h:6379/0?timeout=3", "parameter"),
        ("redis://h:6379/1?db=2", "two different databases"),
        ("unix://", "no socket path"),
        ("unix://host/path", "empty host"),
        ("redis://u:p%zz@h/0", "percent-encoding"),
        ("redis://[::1:6379/0", "IPv6"),
    ])
    func rejectsBadURLsClearly(url: String, expected: String) throws {
        do {
            let c = try RESPConfiguration(url: url)
            Issue.record("accepted \(url): \(c)")
        } catch {
            #expect(error.kind == .configuration)
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test func errorsAndDescriptionsNeverShowThePassword() throws {
        let secret = "Sup3rSecretPassw0rd"
        let c = try RESPConfiguration(url: "redis://cacheaside:\(secret)@127.0.0.1:6379/2")
        #expect(!c.description.contains(secret))
        #expect(!"\(c)".contains(secret))
        #expect(c.description == "redis://cacheaside:***@127.0.0.1:6379/2")
        #expect(!String(reflecting: c.endpoint).contains(secret))

        for bad in [
            "redis://cacheaside:\(secret)@h:99999/0",
            "redis://cacheaside:\(secret)@h:6379/x",
            "rediss://cacheaside:\(secret)@h:6379/0",
            "redis://\(secret)@h:6379/0",
            "ftp://cacheaside:\(secret)@h/0",
        ] {
            do {
                _ = try RESPConfiguration(url: bad)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(!error.message.contains(secret), "\(error.message)")
                #expect(!"\(error)".contains(secret))
            }
        }
    }

    @Test func invalidKnobsAreRejectedByTheClient() throws {
        var c = try RESPConfiguration(url: "redis://h:1/0")
        c.connectionCount = 0
        #expect(throws: RESPError.self) { try RESPClient(configuration: c) }
        c.connectionCount = 1
        c.commandTimeout = .zero
        #expect(throws: RESPError.self) { try RESPClient(configuration: c) }
        c.commandTimeout = .seconds(1)
        c.reconnectBackoffMaximum = .milliseconds(1)
        c.reconnectBackoffMinimum = .milliseconds(10)
        #expect(throws: RESPError.self) { try RESPClient(configuration: c) }
    }
}
