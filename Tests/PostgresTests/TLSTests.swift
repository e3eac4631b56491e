import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

/// TLS is libpq's: these tests check that the configuration reaches it and that its
/// refusals come back as clear errors. The dev-services PostgreSQL runs `ssl = on` with a
/// certificate for localhost, 127.0.0.1 and ::1 from the instance's throwaway CA.
@Suite struct TLSTests {
    /// `DATABASE_TLS_URL` (`sslmode=verify-full` against the instance's CA) and the
    /// directory of the instance's certificates.
    static func tlsEnvironment() throws -> (url: String, directory: String) {
        let environment = ProcessInfo.processInfo.environment
        guard let url = environment["DATABASE_TLS_URL"], !url.isEmpty,
              let directory = environment["DEV_SERVICES_TLS_DIR"], !directory.isEmpty
        else {
            throw MissingTLSEnvironment(description: "DATABASE_TLS_URL and DEV_SERVICES_TLS_DIR are not set: run the tests with `make test`, or export what `scripts/dev-services up` prints")
        }
        return (url, directory)
    }

    static func configuration(_ url: String) throws -> PGConfiguration {
        var config = try PGConfiguration(url: url)
        config.connectTimeout = .seconds(60)
        config.acquireTimeout = .seconds(60)
        return config
    }

    @Test func verifyFullWithTheRightCAConnectsOverTLS() async throws {
        let (url, _) = try Self.tlsEnvironment()
        let config = try Self.configuration(url)
        #expect(config.sslMode == .verifyFull)
        let connection = try await PGConnection.connect(configuration: config)
        defer { connection.close() }
        let row = try await connection.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0]
        #expect(try row.decode(Bool.self, column: "ssl"))
        #expect(try row.decode(String?.self, column: "version")?.hasPrefix("TLS") == true)
        // And through the pool.
        let client = PGClient(configuration: config)
        let ssl = try await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0].decode(Bool.self, at: 0)
        await client.shutdown()
        #expect(ssl)
    }

    @Test func aServerCertificateFromAnotherCAIsRefused() async throws {
        let (url, directory) = try Self.tlsEnvironment()
        var config = try Self.configuration(url)
        config.additionalKeywords.removeAll { $0.key == "sslrootcert" }
        config.additionalKeywords.append(("sslrootcert", directory + "/other-ca.crt"))
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .connection)
        #expect(error.message.contains("certificate verify failed"), "\(error)")
        #expect(!error.description.contains(try #require(config.password)))
    }

    @Test func aHostNameTheCertificateDoesNotNameIsRefused() async throws {
        let (url, _) = try Self.tlsEnvironment()
        var config = try Self.configuration(url)
        // The right server and CA, reached by an address, under a name its certificate
        // does not carry: verify-full checks the name libpq was given as `host`.
        config.host = "wrong.example"
        config.additionalKeywords.append(("hostaddr", "127.0.0.1"))
        let error = try await #require(throws: PGError.self) {
            _ = try await PGConnection.connect(configuration: config)
        }
        #expect(error.kind == .connection)
        #expect(error.message.contains("does not match host name \"wrong.example\""), "\(error)")
        // verify-ca checks the chain only: the same connection is accepted.
        config.sslMode = .verifyCA
        let connection = try await PGConnection.connect(configuration: config)
        connection.close()
    }

    // `sslmode=require` against a server without TLS: see CredentialsTests, whose
    // private server (started without TLS) serves that check and the password rotation.
}

struct MissingTLSEnvironment: Error, CustomStringConvertible {
    var description: String
}

extension TestEnvironment {
    /// Runs `body` with the URL of a private PostgreSQL (`scripts/dev-services --instance
    /// NAME-xxxx [arguments] up`), then stops that instance (also when `body` throws).
    static func withPrivateInstance(
        _ prefix: String, arguments: [String] = [], _ body: (String) async throws -> Void
    ) async throws {
        let instance = prefix + "-" + TestEnvironment.uniqueName("i").suffix(8)
        do {
            let output = try await TestEnvironment.runDevServices(arguments + ["up"], instance: instance)
            let url = try #require(
                output.split(separator: "\n").first { $0.contains("export DATABASE_URL=") }
                    .map { $0.split(separator: "=", maxSplits: 1)[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) })
            try await body(url)
        } catch {
            _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
            throw error
        }
        _ = try await TestEnvironment.runDevServices(["down"], instance: instance)
    }
}
