import CacheAsideRedis
import CacheAsideTLS
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
        #expect(c.replyPollingWindow == .microseconds(50))
        #expect(c.reauthenticationInterval == .seconds(3600))
        #expect(c.credentialsProvider == nil)
        #expect(c.tls == nil)
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

    @Test func redissMeansTLSVerifiedAgainstTheSystemCAs() throws {
        let c = try RESPConfiguration(url: "rediss://app:pw@cache.example.internal:6380/2")
        #expect(c.endpoint == .tcp(host: "cache.example.internal", port: 6380))
        #expect(c.database == 2)
        let tls = try #require(c.tls)
        #expect(tls.trustRoots == .system)
        #expect(tls.verification == .full)
        #expect(tls.certificateChainFile == nil)
        #expect(tls.serverName == nil)
        #expect(c.description == "rediss://app:***@cache.example.internal:6380/2")
        #expect(try RESPConfiguration(url: "redis://h:1/0").tls == nil)
    }

    @Test func redissOptionsNameTheCAClientCertificateServerNameAndTheInsecureOptOut() throws {
        let c = try RESPConfiguration(url: "rediss://app:pw@10.0.0.7:6379?tls_ca_file=/etc/ca%20dir/ca.pem&tls_cert_file=/etc/c.crt&tls_key_file=/etc/c.key&tls_server_name=cache.example.internal&db=3")
        let tls = try #require(c.tls)
        #expect(tls.trustRoots == .file("/etc/ca dir/ca.pem"))
        #expect(tls.certificateChainFile == "/etc/c.crt")
        #expect(tls.privateKeyFile == "/etc/c.key")
        #expect(tls.serverName == "cache.example.internal")
        #expect(tls.verification == .full)
        #expect(c.database == 3)
        #expect(c.description.contains("tls_server_name=cache.example.internal"))
        #expect(!c.description.contains("pw"))

        let insecure = try RESPConfiguration(url: "rediss://h:1/0?tls_insecure_skip_verify=true")
        #expect(insecure.tls?.verification == .insecureNoVerification)
        #expect(insecure.description.contains("tls_insecure_skip_verify=true"))
        #expect(try RESPConfiguration(url: "rediss://h:1/0?tls_insecure_skip_verify=false").tls?.verification == .full)
    }

    @Test func tlsFilesThatCannotBeLoadedAreAConfigurationErrorAtClientCreation() throws {
        let missing = try RESPConfiguration(url: "rediss://h:1/0?tls_ca_file=/nonexistent/ca.pem")
        do {
            _ = try RESPClient(configuration: missing)
            Issue.record("accepted a CA file that does not exist")
        } catch {
            #expect(error.kind == .configuration)
            #expect(error.message.contains("/nonexistent/ca.pem"))
        }
        let halfClient = try RESPConfiguration(url: "rediss://h:1/0?tls_cert_file=/nonexistent/c.crt")
        #expect(throws: RESPError.self) { try RESPClient(configuration: halfClient) }
    }

    @Test func acceptsDatabaseAsQueryParameter() throws {
        let c = try RESPConfiguration(url: "redis://h:1?db=4")
        #expect(c.database == 4)
    }

    @Test(arguments: [
        ("rediss://u:pw@h:6379/0?tls_bogus=1", "unsupported TLS parameter"),
        ("redis://u:pw@h:6379/0?tls_ca_file=/x", "not a rediss:// URL"),
        ("rediss://h:6379/0?tls_insecure_skip_verify=maybe", "true or false"),
        ("rediss://h:6379/0?tls_ca_file=", "no value"),
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
            "rediss://cacheaside:\(secret)@h:6379/0?tls_nope=1",
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
