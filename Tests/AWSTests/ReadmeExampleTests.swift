import CacheAsideAWS
import Foundation
import Testing

// The README's "AWS IAM authentication" example, verbatim.

/// Password closures for IAM authentication; credentials from the environment.
func iamPasswords() throws -> (
    postgres: @Sendable () async throws -> String,
    redis: @Sendable () async throws -> String
) {
    let rds = try RDSAuthTokenGenerator(
        hostname: "mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com", port: 5432,
        username: "app_user", region: "us-east-1")
    let elastiCache = try ElastiCacheAuthTokenGenerator(
        cache: .replicationGroup("my-redis-group"),  // or .serverless("my-cache")
        user: "app-user", region: "us-east-1")
    return ({ try await rds.generateToken() }, { try await elastiCache.generateToken() })
}

@Suite struct ReadmeExampleTests {
    /// The closures sign with the environment's credentials when it has them, and
    /// otherwise say which variable is missing. Nothing here calls AWS.
    @Test func readmeClosuresMakeTokensOrNameTheMissingVariable() async throws {
        let passwords = try iamPasswords()
        let environment = ProcessInfo.processInfo.environment
        let missing = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].first {
            (environment[$0] ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
        if let missing {
            await #expect(throws: AWSAuthError.missingEnvironmentVariable(missing)) { try await passwords.postgres() }
            await #expect(throws: AWSAuthError.missingEnvironmentVariable(missing)) { try await passwords.redis() }
        } else {
            let postgres = try await passwords.postgres()
            let redis = try await passwords.redis()
            #expect(
                postgres.hasPrefix(
                    "mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app_user&X-Amz-Algorithm="
                )
            )
            #expect(redis.hasPrefix("my-redis-group/?Action=connect&User=app-user&X-Amz-Algorithm="))
            #expect(postgres.contains("&X-Amz-Expires=900&") && redis.contains("&X-Amz-Expires=900&"))
        }
    }
}
