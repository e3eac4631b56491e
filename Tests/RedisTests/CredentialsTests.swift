import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// Credentials that change: a provider asked at every connect and re-authentication,
/// against an ACL user whose password the test rotates with `ACL SETUSER`.
@Suite struct CredentialsTests {
    /// The password the provider hands out, and how often it was asked.
    final class Rotation: Sendable {
        let user: String
        private let current: Mutex<String>
        let calls = Atomic<Int>(0)

        init(user: String, password: String) {
            self.user = user
            self.current = Mutex(password)
        }

        var password: String {
            get { current.withLock { $0 } }
            set { current.withLock { $0 = newValue } }
        }

        var provider: RESPCredentialsProvider {
            RESPCredentialsProvider { [self] in
                calls.add(1, ordering: .relaxed)
                return RESPCredentials(username: user, password: password)
            }
        }
    }

    /// Runs `body` with a fresh ACL user (password `first`) and an admin client; the user
    /// is deleted afterwards.
    private func withUser(_ body: (Rotation, RESPClient) async throws -> Void) async throws {
        let user = TestEnvironment.uniqueName("rot")
        let first = TestEnvironment.uniqueName("pw")
        try await withClient { admin in
            _ = try await admin.send("ACL", "SETUSER", user, "on", ">\(first)", "~*", "&*", "+@all")
            do {
                try await body(Rotation(user: user, password: first), admin)
            } catch {
                _ = try? await admin.send("ACL", "DELUSER", user)
                throw error
            }
            _ = try await admin.send("ACL", "DELUSER", user)
        }
    }

    @Test func theProviderIsAskedAtEveryConnect() async throws {
        try await withUser { rotation, admin in
            try await withClient({
                $0.username = nil
                $0.password = nil
                $0.credentialsProvider = rotation.provider
                $0.connectionCount = 1
                $0.reconnectBackoffMinimum = .milliseconds(20)
                $0.reconnectBackoffMaximum = .milliseconds(100)
            }) { redis in
                #expect(try await redis.send("ACL", "WHOAMI") == .bulkString(Array(rotation.user.utf8)))
                let afterFirst = rotation.calls.load(ordering: .relaxed)
                #expect(afterFirst >= 1)

                // Rotate: the new password in, the old one out. The open connection stays
                // authenticated; a new one needs the new password.
                let second = TestEnvironment.uniqueName("pw")
                let old = rotation.password
                _ = try await admin.send("ACL", "SETUSER", rotation.user, ">\(second)", "<\(old)")
                rotation.password = second
                _ = try await admin.send("CLIENT", "KILL", "USER", rotation.user)
                let back = try await eventually { try await redis.send("ACL", "WHOAMI").string }
                #expect(back == rotation.user)
                #expect(rotation.calls.load(ordering: .relaxed) > afterFirst)
            }
        }
    }

    @Test func connectionsReauthenticateWithFreshCredentialsOnSchedule() async throws {
        try await withUser { rotation, admin in
            try await withClient({
                $0.username = nil
                $0.password = nil
                $0.credentialsProvider = rotation.provider
                $0.reauthenticationInterval = .milliseconds(200)
                $0.connectionCount = 1
                $0.reconnectBackoffMinimum = .seconds(1)
                $0.reconnectBackoffMaximum = .seconds(1)
            }) { redis in
                let id = try await redis.send("CLIENT", "ID").integer
                // The provider is asked again while the connection stays the same.
                let asked = try await eventually(timeout: .seconds(20)) { () -> Bool? in
                    _ = try await redis.send("PING")
                    return rotation.calls.load(ordering: .relaxed) >= 3 ? true : nil
                }
                #expect(asked == true)
                #expect(try await redis.send("CLIENT", "ID").integer == id)

                // Each re-authentication really sends AUTH with what the provider says: a
                // password the server refuses reopens the connection, whose connect then
                // fails as an authentication error.
                rotation.password = "not-the-password"
                let refused = try await eventually(timeout: .seconds(20)) { () -> RESPError? in
                    do {
                        _ = try await redis.send("PING")
                        return nil
                    } catch let error as RESPError where error.kind == .authentication {
                        return error
                    }
                }
                #expect(refused?.message.contains("WRONGPASS") == true, "\(String(describing: refused))")
                #expect(refused.map { "\($0)".contains("not-the-password") } == false)
                _ = admin
            }
        }
    }

    @Test func aProviderThatFailsIsAnAuthenticationError() async throws {
        struct Vault: Error {}
        try await withClient({
            $0.credentialsProvider = RESPCredentialsProvider { throw Vault() }
            $0.connectionCount = 1
        }) { redis in
            let error = await expectError { try await redis.get("k") } as? RESPError
            #expect(error?.kind == .authentication)
            #expect(error?.message.contains("credentials provider") == true)
        }
    }
}
