import Foundation
import CacheAsidePostgres
import Synchronization
import TestSupport
import Testing

/// The credentials provider is asked at every new connection: rotating the password
/// (as RDS IAM tokens, which expire after 15 minutes, require) needs no restart.
@Suite struct CredentialsTests {
    struct ProviderFailure: Error, CustomStringConvertible {
        var description: String { "the token service is unreachable" }
    }

    /// Checks on a private server (started with `--pg-ssl off`): rotating the shared
    /// server's password would disturb the tests running next to this one, and the
    /// shared server speaks TLS. One server for both, since starting one is costly.
    @Test(.timeLimit(.minutes(3)))
    func onAPrivateServerWithoutTLSRequireFailsClearlyAndARotatedPasswordIsPickedUp() async throws {
        try await TestEnvironment.withPrivateInstance("pg-private", arguments: ["--pg-ssl", "off"]) { url in
            try await requireFailsClearly(url: url)
            try await aRotatedPasswordIsPickedUpByTheNextConnection(url: url)
        }
    }

    /// `sslmode=require` against a server without TLS fails clearly.
    func requireFailsClearly(url: String) async throws {
        var config = try TLSTests.configuration(url)
        config.sslMode = .require
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .connection)
        #expect(error.message.contains("server does not support SSL, but SSL was required"), "\(error)")
        #expect(!error.description.contains(try #require(config.password)))
        // The same server without TLS is fine.
        config.sslMode = .disable
        let connection = try await PGConnection.connect(configuration: config)
        connection.close()
    }

    func aRotatedPasswordIsPickedUpByTheNextConnection(url: String) async throws {
        do {
            var base = try PGConfiguration(url: url)
            base.connectTimeout = .seconds(60)
            base.acquireTimeout = .seconds(60)
            let original = try #require(base.password)
            let current = Mutex(original)
            let asked = Mutex<[PGCredentialsRequest]>([])
            var config = base
            config.password = nil
            config.credentialsProvider = { request in
                asked.withLock { $0.append(request) }
                return PGCredentials(password: current.withLock { $0 })
            }

            let first = try await PGConnection.connect(configuration: config)
            defer { first.close() }
            #expect(asked.withLock { $0.count } == 1)
            #expect(asked.withLock { $0.first } == PGCredentialsRequest(host: base.host, port: base.port, user: base.user, database: base.database))

            // Rotate: the server now wants a new password, and the provider hands it out.
            let rotated = "rotated" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
            try await first.execute("ALTER ROLE CURRENT_USER PASSWORD '\(rotated)'")
            current.withLock { $0 = rotated }

            // The old password is refused now...
            let stale = try await #require(throws: PGError.self) {
                _ = try await PGConnection.connect(configuration: base)
            }
            #expect(stale.kind == .authentication)
            // ...and the next connection asks the provider again and gets in.
            let second = try await PGConnection.connect(configuration: config)
            #expect(try await second.query("SELECT 1::int8 AS one")[0].decode(Int64.self, at: 0) == 1)
            second.close()
            #expect(asked.withLock { $0.count } == 2)

            // A pool asks at each connection it opens, too.
            config.maxConnections = 2
            let client = PGClient(configuration: config)
            do {
                try await client.withConnection { held in
                    _ = try await held.query("SELECT 1")
                    _ = try await client.query("SELECT 1")  // needs a second connection
                }
                #expect(client.statistics.idle == 2)
            } catch {
                await client.shutdown()
                throw error
            }
            await client.shutdown()
            #expect(asked.withLock { $0.count } == 4)

            // Put the original back, so that `down` finds the instance as it made it.
            _ = try await first.execute("ALTER ROLE CURRENT_USER PASSWORD '\(original)'")
        }
    }

    @Test func aFailingProviderFailsTheConnectionWithItsError() async throws {
        var config = try PG.configuration()
        let secret = try PG.password()
        config.credentialsProvider = { _ in throw ProviderFailure() }
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .authentication)
        #expect(error.underlying is ProviderFailure)
        #expect(error.description.contains("the token service is unreachable"))
        #expect(!error.description.contains(secret))
        // Through the pool, waiters get that error at once rather than a timeout.
        let client = PGClient(configuration: config)
        let pooled = try await #require(throws: PGError.self) { _ = try await client.query("SELECT 1") }
        await client.shutdown()
        #expect(pooled.kind == .authentication)
    }

    @Test func aProviderTokenNeverAppearsInErrors() async throws {
        var config = try PG.configuration()
        let token = "iam-token-" + UUID().uuidString
        config.credentialsProvider = { _ in PGCredentials(password: token) }
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .authentication)
        #expect(!error.description.contains(token))
        #expect(!String(reflecting: error).contains(token))
        #expect(!"\(config)".contains(token) && !config.debugDescription.contains(token))
    }
}
