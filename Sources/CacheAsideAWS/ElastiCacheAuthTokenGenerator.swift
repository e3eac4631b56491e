#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// IAM authentication tokens for Amazon ElastiCache (Redis OSS or Valkey, replication
/// groups and serverless caches): the password of an IAM-enabled ElastiCache user, made
/// by signing, never by calling AWS.
///
/// A token is a SigV4-presigned `GET` of
/// `http://CACHE/?Action=connect&User=USER` (plus `&ResourceType=ServerlessCache` for a
/// serverless cache) for the service `elasticache`, valid for 15 minutes, without its
/// scheme, where `CACHE` is the replication group id or the serverless cache's name (not
/// the endpoint's host name). The test suite checks it byte for byte against botocore's
/// presigner, as AWS's own examples use it.
///
/// Send it with `AUTH USER TOKEN` (or `HELLO 3 AUTH USER TOKEN`) over TLS: ask the
/// generator at every connect. ElastiCache closes an IAM-authenticated connection after
/// 12 hours (``maximumConnectionLifetime``) unless it re-authenticates with a fresh
/// token before then, so a client re-sends `AUTH` with a new token ahead of that limit.
///
/// The ElastiCache user's id and name must be equal (AWS requires this for IAM
/// authentication), and the credentials need `elasticache:Connect` on both the cache and
/// the user.
public struct ElastiCacheAuthTokenGenerator: Sendable {
    /// What the token is for.
    public enum Cache: Sendable, Hashable {
        /// A replication group (node-based cache), by its id, e.g. `my-redis`.
        case replicationGroup(String)
        /// A serverless cache, by its name, e.g. `my-serverless-cache`.
        case serverless(String)

        /// The replication group id or serverless cache name.
        public var name: String {
            switch self {
            case .replicationGroup(let id): return id
            case .serverless(let name): return name
            }
        }
    }

    /// The SigV4 signing name of ElastiCache IAM authentication.
    public static let signingName = "elasticache"
    /// How long a token can be used to authenticate: 15 minutes.
    public static let tokenLifetime: Duration = .seconds(900)
    /// How long ElastiCache keeps an IAM-authenticated connection without a new `AUTH`:
    /// 12 hours. Re-authenticate before then.
    public static let maximumConnectionLifetime: Duration = .seconds(12 * 3600)

    /// The cache the token is for.
    public let cache: Cache
    /// The ElastiCache user id (equal to its user name) to authenticate as.
    public let user: String
    /// The region the cache is in.
    public let region: String
    /// Where the signing credentials come from; asked at every ``generateToken()``.
    public let credentialsProvider: any AWSCredentialsProvider
    private let now: @Sendable () -> Date

    /// A generator for `user` on `cache`.
    ///
    /// - Parameters:
    ///   - cache: the replication group id or the serverless cache name.
    ///   - user: the IAM-enabled ElastiCache user (its id, which equals its name).
    ///   - region: the cache's region; `nil` reads `AWS_REGION`, else
    ///     `AWS_DEFAULT_REGION`.
    ///   - credentialsProvider: the signing credentials; by default the environment
    ///     (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    ///   - now: the clock that dates each token (tests pass a fixed one).
    /// - Throws: ``AWSAuthError/missingRegion``, or
    ///   ``AWSAuthError/invalidArgument(name:reason:)`` for an empty cache name or user,
    ///   or a cache name with a scheme, path or port in it.
    public init(
        cache: Cache,
        user: String,
        region: String? = nil,
        credentialsProvider: any AWSCredentialsProvider = EnvironmentCredentialsProvider(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        try TokenArguments.checkHost(cache.name, name: "cache")
        try TokenArguments.checkNotEmpty(user, name: "user")
        self.cache = cache
        self.user = user
        self.region = try TokenArguments.region(region)
        self.credentialsProvider = credentialsProvider
        self.now = now
    }

    /// A fresh token, signed now with the provider's current credentials.
    ///
    /// - Throws: what the credentials provider throws (``AWSAuthError`` when the
    ///   environment lacks a variable).
    public func generateToken() async throws -> String {
        let credentials = try await credentialsProvider.credentials()
        return token(credentials: credentials, at: now())
    }

    /// The token that `credentials` sign at `date`: a pure function, for tests and for
    /// callers that manage credentials and time themselves.
    public func token(credentials: AWSCredentials, at date: Date) -> String {
        var query: [SigV4Request.QueryItem] = [.init("Action", "connect"), .init("User", user)]
        if case .serverless = cache {
            query.append(.init("ResourceType", "ServerlessCache"))
        }
        let request = SigV4Request(
            method: "GET",
            path: "/",
            query: query,
            headers: [.init("Host", SigV4.lowercasedASCII(cache.name))]
        )
        let signer = SigV4Signer(credentials: credentials, region: region, service: Self.signingName)
        let presigned = signer.presignUnchecked(request, expiresIn: TokenArguments.expirySeconds, at: date)
        return "\(cache.name)/?\(presigned.encodedQuery)"
    }
}
