#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// IAM authentication tokens for Amazon RDS and Aurora (PostgreSQL or MySQL): the
/// password of a database user that has the `rds_iam` role, made by signing, never by
/// calling AWS.
///
/// A token is a SigV4-presigned `GET` of `https://HOST:PORT/?Action=connect&DBUser=USER`
/// for the service `rds-db`, valid for 15 minutes, without its `https://`: the same
/// string as botocore's `generate_db_auth_token` (the test suite checks this
/// byte for byte). A token only has to be valid when a connection *opens*: connections
/// outlive it, but every new connection needs a fresh one, so ask the generator at every
/// connect (a client's credentials provider), never once at startup.
///
/// The credentials need `rds-db:connect` on the database user's resource
/// (`arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI_RESOURCE_ID/USER`), and the connection
/// must use TLS (`sslmode=verify-full` with Amazon's CA bundle).
public struct RDSAuthTokenGenerator: Sendable {
    /// The SigV4 signing name of RDS IAM authentication.
    public static let signingName = "rds-db"
    /// How long a token can be used to open a connection: 15 minutes.
    public static let tokenLifetime: Duration = .seconds(900)

    /// The database endpoint's host name, as the client connects to it.
    public let hostname: String
    /// The database port, as the client connects to it.
    public let port: Int
    /// The database user to log in as.
    public let username: String
    /// The region the database is in.
    public let region: String
    /// Where the signing credentials come from; asked at every ``generateToken()``.
    public let credentialsProvider: any AWSCredentialsProvider
    private let now: @Sendable () -> Date

    /// A generator for `username` at `hostname:port`.
    ///
    /// - Parameters:
    ///   - hostname: the endpoint's host name (cluster, instance or proxy endpoint), with
    ///     no scheme and no port: the name the client connects to.
    ///   - port: the port the client connects to, e.g. 5432.
    ///   - username: the database user (granted `rds_iam`).
    ///   - region: the database's region; `nil` reads `AWS_REGION`, else
    ///     `AWS_DEFAULT_REGION`.
    ///   - credentialsProvider: the signing credentials; by default the environment
    ///     (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    ///   - now: the clock that dates each token (tests pass a fixed one).
    /// - Throws: ``AWSAuthError/missingRegion``, or
    ///   ``AWSAuthError/invalidArgument(name:reason:)`` for an empty host name or user, a
    ///   host name with a scheme, path or port in it, or a port outside 1...65535.
    public init(
        hostname: String,
        port: Int,
        username: String,
        region: String? = nil,
        credentialsProvider: any AWSCredentialsProvider = EnvironmentCredentialsProvider(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        try TokenArguments.checkHost(hostname, name: "hostname")
        guard (1...65_535).contains(port) else {
            throw AWSAuthError.invalidArgument(name: "port", reason: "\(port) is outside 1...65535")
        }
        try TokenArguments.checkNotEmpty(username, name: "username")
        self.hostname = hostname
        self.port = port
        self.username = username
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
        // The signed Host header is what an HTTP client would send: the host name in
        // lower case, the port unless it is HTTPS's default (botocore does the same).
        let hostHeader = SigV4.lowercasedASCII(hostname) + (port == 443 ? "" : ":\(port)")
        let request = SigV4Request(
            method: "GET",
            path: "/",
            query: [.init("Action", "connect"), .init("DBUser", username)],
            headers: [.init("Host", hostHeader)]
        )
        let signer = SigV4Signer(credentials: credentials, region: region, service: Self.signingName)
        let presigned = signer.presignUnchecked(request, expiresIn: TokenArguments.expirySeconds, at: date)
        return "\(hostname):\(port)/?\(presigned.encodedQuery)"
    }
}

/// Checks shared by the token generators.
enum TokenArguments {
    /// The expiry of IAM authentication tokens, in seconds (15 minutes).
    static let expirySeconds = 900

    static func checkNotEmpty(_ value: String, name: String) throws {
        if value.isEmpty {
            throw AWSAuthError.invalidArgument(name: name, reason: "empty")
        }
    }

    /// A bare host name: not empty, no scheme, path, port, user or whitespace.
    static func checkHost(_ host: String, name: String) throws {
        try checkNotEmpty(host, name: name)
        if let bad = host.first(where: { "/:@?# \t\r\n".contains($0) }) {
            throw AWSAuthError.invalidArgument(
                name: name,
                reason: "\"\(host)\" contains \"\(bad)\": give the bare host name, without scheme, port or path"
            )
        }
    }

    static func region(_ region: String?) throws -> String {
        guard let region else { return try AWSEnvironment.region() }
        try checkNotEmpty(region, name: "region")
        return region
    }
}
