import CacheAsideAWS
import Foundation
import Testing

@Suite struct TokenGeneratorTests {
    @Test func vectorFileLoadsWithEveryCase() throws {
        let botocore = try Vectors.load("botocore-tokens", as: Vectors.BotocoreFile.self)
        #expect(botocore.cases.count == 8)
        #expect(Vectors.tokenCaseNames.count == 8)
        #expect(Set(botocore.cases.map(\.kind)) == ["rds", "elasticache-replication-group", "elasticache-serverless"])
    }

    /// Each token that botocore signed (scripts/aws-token-vectors.py), made again by our
    /// generators from the same inputs, byte for byte.
    @Test(arguments: Vectors.tokenCaseNames)
    func tokensMatchBotocore(_ name: String) async throws {
        let file = try #require(Vectors.botocore)
        let vector = try #require(file.cases.first { $0.name == name })
        let stored = try #require(file.credentials[vector.credentials])
        let credentials = AWSCredentials(
            accessKeyID: stored.accessKeyID,
            secretAccessKey: stored.secretAccessKey,
            sessionToken: stored.sessionToken
        )
        let date = try Vectors.date(vector.timestamp)
        let provider = StaticCredentialsProvider(credentials)

        let token: String
        switch vector.kind {
        case "rds":
            let generator = try RDSAuthTokenGenerator(
                hostname: try #require(vector.hostname),
                port: try #require(vector.port),
                username: vector.user,
                region: vector.region,
                credentialsProvider: provider,
                now: { date }
            )
            #expect(generator.token(credentials: credentials, at: date) == vector.token)
            token = try await generator.generateToken()
        case "elasticache-replication-group", "elasticache-serverless":
            let cacheName = try #require(vector.cache)
            let generator = try ElastiCacheAuthTokenGenerator(
                cache: vector.kind == "elasticache-serverless" ? .serverless(cacheName) : .replicationGroup(cacheName),
                user: vector.user,
                region: vector.region,
                credentialsProvider: provider,
                now: { date }
            )
            #expect(generator.token(credentials: credentials, at: date) == vector.token)
            token = try await generator.generateToken()
        default:
            Issue.record("unknown kind \(vector.kind)")
            return
        }
        #expect(token == vector.token)
        #expect(token.contains("&X-Amz-Expires=900&"))
        #expect(!token.contains("://"))
    }

    @Test func tokensLiveFifteenMinutesAndElastiCacheConnectionsTwelveHours() {
        #expect(RDSAuthTokenGenerator.tokenLifetime == .seconds(900))
        #expect(ElastiCacheAuthTokenGenerator.tokenLifetime == .seconds(900))
        #expect(ElastiCacheAuthTokenGenerator.maximumConnectionLifetime == .seconds(43_200))
        #expect(RDSAuthTokenGenerator.signingName == "rds-db")
        #expect(ElastiCacheAuthTokenGenerator.signingName == "elasticache")
    }

    /// Every call asks the provider and the clock again: a rotated key or a later time
    /// gives a new token.
    @Test func everyTokenAsksTheProviderAndTheClockAgain() async throws {
        let state = RotatingState()
        let generator = try ElastiCacheAuthTokenGenerator(
            cache: .replicationGroup("my-redis-group"),
            user: "iam-user-01",
            region: "us-west-2",
            credentialsProvider: state,
            now: { state.tick() }
        )
        let first = try await generator.generateToken()
        let second = try await generator.generateToken()
        #expect(first.contains("X-Amz-Credential=KEY1%2F20240102%2F"))
        #expect(first.contains("X-Amz-Date=20240102T030405Z"))
        #expect(second.contains("X-Amz-Credential=KEY2%2F20240102%2F"))
        #expect(second.contains("X-Amz-Date=20240102T030505Z"))
        #expect(state.credentialCalls == 2)
    }

    @Test func providerErrorsReachTheCaller() async throws {
        let generator = try RDSAuthTokenGenerator(
            hostname: "db.example.com",
            port: 5432,
            username: "app",
            region: "us-east-1",
            credentialsProvider: EnvironmentCredentialsProvider(environment: [:])
        )
        await #expect(throws: AWSAuthError.missingEnvironmentVariable("AWS_ACCESS_KEY_ID")) {
            try await generator.generateToken()
        }
    }

    @Test(arguments: [
        ("", 5432, "app", "hostname"),
        ("postgres://db.example.com", 5432, "app", "hostname"),
        ("db.example.com:5432", 5432, "app", "hostname"),
        ("db.example.com/app", 5432, "app", "hostname"),
        ("db.example.com", 0, "app", "port"),
        ("db.example.com", 65_536, "app", "port"),
        ("db.example.com", 5432, "", "username"),
    ])
    func rdsGeneratorRefusesBadArguments(_ host: String, _ port: Int, _ user: String, _ argument: String) {
        let error = #expect(throws: AWSAuthError.self) {
            try RDSAuthTokenGenerator(hostname: host, port: port, username: user, region: "us-east-1")
        }
        guard case .invalidArgument(let name, _) = error else {
            Issue.record("expected invalidArgument, got \(String(describing: error))")
            return
        }
        #expect(name == argument)
    }

    @Test func elastiCacheGeneratorRefusesBadArguments() {
        #expect(throws: AWSAuthError.invalidArgument(name: "user", reason: "empty")) {
            try ElastiCacheAuthTokenGenerator(cache: .serverless("c"), user: "", region: "us-east-1")
        }
        #expect(throws: AWSAuthError.invalidArgument(name: "cache", reason: "empty")) {
            try ElastiCacheAuthTokenGenerator(cache: .replicationGroup(""), user: "u", region: "us-east-1")
        }
        // The endpoint's host name is not the cache's name.
        #expect(throws: AWSAuthError.self) {
            try ElastiCacheAuthTokenGenerator(
                cache: .replicationGroup("rediss://my-group.abc123.use1.cache.amazonaws.com:6379"),
                user: "u",
                region: "us-east-1"
            )
        }
        #expect(throws: AWSAuthError.invalidArgument(name: "region", reason: "empty")) {
            try ElastiCacheAuthTokenGenerator(cache: .serverless("c"), user: "u", region: "")
        }
    }
}

/// A provider whose key changes at every call and a clock that advances a minute per
/// reading.
private final class RotatingState: AWSCredentialsProvider, @unchecked Sendable {
    private let lock = NSLock()
    private var calls = 0
    private var ticks = 0

    var credentialCalls: Int { lock.withLock { calls } }

    func credentials() async throws -> AWSCredentials {
        let n = lock.withLock {
            calls += 1
            return calls
        }
        return AWSCredentials(accessKeyID: "KEY\(n)", secretAccessKey: "SECRET\(n)")
    }

    func tick() -> Date {
        lock.withLock {
            defer { ticks += 1 }
            return Date(timeIntervalSince1970: 1_704_164_645 + Double(ticks) * 60)  // 2024-01-02T03:04:05Z + n min
        }
    }
}
