import CacheAsideRedis
import CacheAsideTLS
import Foundation
import TestSupport
import Testing

/// `rediss://` against real TLS servers: the dev-services Redis (`REDIS_TLS_URL`, its
/// throwaway CA in `DEV_SERVICES_TLS_DIR`), and extra servers started for one test
/// (mutual TLS, an expired certificate). One test at a time: the extra servers and the
/// handshakes load a 2-core machine that other suites share.
@Suite(.serialized) struct TLSConnectionTests {
    /// `REDIS_TLS_URL` trusting the dev-services CA, with more URL options.
    static func tlsURL(_ options: String = "") throws -> String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_TLS_URL"], !url.isEmpty else {
            throw ExtraRedisServer.Failure(description: "REDIS_TLS_URL is not set: run the tests with `make test`, or export what `scripts/dev-services up` prints")
        }
        let directory = try ExtraRedisServer.tlsDirectory()
        return url + "?tls_ca_file=\(directory)/ca.crt" + (options.isEmpty ? "" : "&" + options)
    }

    /// The error of the first command of a client made from `url`.
    private func firstError(_ url: String, connectTimeout: Duration = .seconds(10)) async throws -> (RESPError?, Double) {
        try await withClient(url: url, {
            $0.connectionCount = 1
            $0.connectTimeout = connectTimeout
            $0.commandTimeout = .seconds(30)
            $0.reconnectBackoffMinimum = .seconds(30)
            $0.reconnectBackoffMaximum = .seconds(30)
        }) { redis in
            let start = ContinuousClock.now
            let error = await expectError { try await redis.get("anything") } as? RESPError
            return (error, seconds(since: start))
        }
    }

    @Test func commandsWorkOverTLS() async throws {
        let p = TestEnvironment.uniqueName("tls")
        try await withClient(url: try Self.tlsURL()) { redis in
            #expect(redis.configuration.tls != nil)
            try await redis.set("\(p):k", to: "over TLS")
            #expect(try await redis.getString("\(p):k") == "over TLS")
            // A value larger than a TLS record and than one read: many records, read
            // over several readiness reports and drained from the TLS buffers.
            let big = [UInt8].random(count: 600 * 1024)
            try await redis.set("\(p):big", to: big)
            #expect(try await redis.get("\(p):big") == big)
            // Many tasks at once share the connections (pipelined TLS writes and reads).
            let values = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<200 {
                    group.addTask { try await redis.incr("\(p):n") > 0 && i >= 0 }
                }
                var ok = 0
                for try await v in group where v { ok += 1 }
                return ok
            }
            #expect(values == 200)
            #expect(try await redis.getString("\(p):n") == "200")
            let (a, b) = try await redis.pipeline(.get("\(p):k"), .del(["\(p):k", "\(p):big", "\(p):n"]))
            #expect(try a.get() == Array("over TLS".utf8) as [UInt8]?)
            #expect(try b.get() == 3)
        }
    }

    @Test func theServersAddressIsVerifiedToo() async throws {
        // 127.0.0.1 instead of localhost: checked against the certificate's IP addresses.
        let url = try Self.tlsURL().replacingOccurrences(of: "@localhost:", with: "@127.0.0.1:")
        let pong = try await withClient(url: url) { redis in try await redis.send("PING") }
        #expect(pong == .simpleString("PONG"))
    }

    @Test func anUnknownCAIsRefusedWithItsOwnError() async throws {
        let directory = try ExtraRedisServer.tlsDirectory()
        let url = try Self.tlsURL().replacingOccurrences(of: "\(directory)/ca.crt", with: "\(directory)/other-ca.crt")
        let (error, _) = try await firstError(url)
        #expect(error?.kind == .tls)
        #expect(error?.isConnectionFailure == true)
        #expect(error?.tlsFailure?.reason == .unknownCertificateAuthority)
        #expect(error?.message.contains("not signed by a trusted CA") == true, "\(String(describing: error))")
    }

    @Test func theSystemsCAsDoNotTrustAThrowawayCA() async throws {
        // No tls_ca_file: the default trusts the system's CAs only.
        let url = try #require(ProcessInfo.processInfo.environment["REDIS_TLS_URL"])
        let (error, _) = try await firstError(url)
        #expect(error?.tlsFailure?.reason == .unknownCertificateAuthority)
    }

    @Test func aNameTheCertificateDoesNotCarryIsRefusedWithItsOwnError() async throws {
        let (error, _) = try await firstError(try Self.tlsURL("tls_server_name=cache.example.internal"))
        #expect(error?.kind == .tls)
        #expect(error?.tlsFailure?.reason == .hostnameMismatch)
        #expect(error?.message.contains("does not name cache.example.internal") == true, "\(String(describing: error))")
    }

    /// One extra server presenting an expired certificate: refused, with its own
    /// error, unless verification is explicitly skipped.
    @Test func anExpiredCertificateIsRefusedWithItsOwnErrorUnlessVerificationIsSkipped() async throws {
        let directory = try ExtraRedisServer.tlsDirectory()
        try await ExtraRedisServer.with(certificate: "expired") { server in
            let (error, _) = try await firstError(server.url("tls_ca_file=\(directory)/ca.crt"))
            #expect(error?.kind == .tls)
            #expect(error?.tlsFailure?.reason == .certificateExpired)
            #expect(error?.message.contains("expired") == true, "\(String(describing: error))")

            // The explicit opt-out accepts it, and any CA.
            try await withClient(url: server.url("tls_ca_file=\(directory)/other-ca.crt&tls_insecure_skip_verify=true")) { redis in
                #expect(redis.configuration.tls?.verification == .insecureNoVerification)
                let pong = try await redis.send("PING")
                #expect(pong == .simpleString("PONG"))
            }
        }
    }

    /// One extra server requiring a client certificate: it works with the dev-services
    /// client certificate, and its absence is refused with its own error.
    @Test func mutualTLSWorksAndAMissingClientCertificateIsRefused() async throws {
        let directory = try ExtraRedisServer.tlsDirectory()
        try await ExtraRedisServer.with(requireClientCertificate: true) { server in
            let url = server.url("tls_ca_file=\(directory)/ca.crt&tls_cert_file=\(directory)/client.crt&tls_key_file=\(directory)/client.key")
            try await withClient(url: url) { redis in
                try await redis.set("mtls", to: "yes")
                #expect(try await redis.getString("mtls") == "yes")
            }

            let (error, _) = try await firstError(server.url("tls_ca_file=\(directory)/ca.crt"))
            #expect(error?.kind == .tls)
            #expect(error?.tlsFailure?.reason == .clientCertificateRequired, "\(String(describing: error))")
            #expect(error?.message.contains("client certificate") == true)
        }
    }

    @Test func aPlainClientOnTheTLSPortFailsWithinTheConnectTimeout() async throws {
        let tls = try #require(ProcessInfo.processInfo.environment["REDIS_TLS_URL"])
        let plain = tls.replacingOccurrences(of: "rediss://", with: "redis://")
        let (error, elapsed) = try await firstError(plain, connectTimeout: .seconds(4))
        let failure = try #require(error)
        #expect(failure.isConnectionFailure)
        #expect(failure.message.contains("TLS") || failure.message.contains("rediss://"), "\(failure)")
        #expect(elapsed < 6, "failed after \(elapsed) s")
    }

    @Test func aTLSClientOnThePlainPortFailsWithinTheConnectTimeout() async throws {
        let directory = try ExtraRedisServer.tlsDirectory()
        let plain = try TestEnvironment.redisURL()
        let url = plain.replacingOccurrences(of: "redis://", with: "rediss://") + "?tls_ca_file=\(directory)/ca.crt"
        let (error, elapsed) = try await firstError(url, connectTimeout: .seconds(4))
        let failure = try #require(error)
        #expect(failure.isConnectionFailure)
        #expect(failure.message.contains("TLS"), "\(failure)")
        if failure.kind == .tls { #expect(failure.tlsFailure?.reason == .notTLS, "\(failure)") }
        #expect(elapsed < 6, "failed after \(elapsed) s")
    }
}
