/// A user name and password for `AUTH`. Its description never shows the password.
public struct RESPCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The ACL user; `nil` for the `default` user (`AUTH password`).
    public var username: String?
    /// The password, or a token that stands for one (an ElastiCache IAM token).
    public var password: String

    /// Credentials for `AUTH [username] password`.
    public init(username: String? = nil, password: String) {
        self.username = username
        self.password = password
    }

    /// `user:***`.
    public var description: String { "\(username ?? "default"):***" }
}

/// Credentials that change over time: an async function that the client calls at
/// every connect and at every re-authentication
/// (``RESPConfiguration/reauthenticationInterval``). For rotated passwords and for
/// ElastiCache IAM authentication, whose tokens live 15 minutes and whose connections
/// must authenticate again within 12 hours.
///
/// ```swift
/// configuration.credentialsProvider = RESPCredentialsProvider {
///     RESPCredentials(username: "app", password: try await secrets.currentRedisPassword())
/// }
/// ```
///
/// It should return quickly (a local computation, or a cached secret): a connect waits
/// for it. An error it throws fails that connect attempt (kind
/// ``RESPError/Kind/authentication``), which is retried with backoff.
public struct RESPCredentialsProvider: Sendable, Hashable {
    /// Fetches the current credentials.
    public let fetch: @Sendable () async throws -> RESPCredentials
    private let identity: Identity

    /// A provider backed by `fetch`.
    public init(_ fetch: @escaping @Sendable () async throws -> RESPCredentials) {
        self.fetch = fetch
        self.identity = Identity()
    }

    /// Providers are equal when they are the same provider (copies of one value).
    public static func == (a: Self, b: Self) -> Bool { a.identity === b.identity }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(identity))
    }

    private final class Identity: Sendable {}
}
