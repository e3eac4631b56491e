import CacheAsideAWS
import CacheAsidePostgres
import CacheAsideRedis
import Foundation
import Testing

// The README's wiring of the IAM token closures into the clients, verbatim.

/// Client settings that authenticate with a fresh IAM token at every connect.
func iamConfigurations() throws -> (PGConfiguration, RESPConfiguration) {
    let passwords = try iamPasswords()
    var postgres = try PGConfiguration(
        url: "postgres://app_user@mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com:5432/app"
            + "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/rds-global-bundle.pem")
    postgres.credentialsProvider = { _ in PGCredentials(password: try await passwords.postgres()) }
    var redis = try RESPConfiguration(
        url: "rediss://master.my-redis-group.abcdef.use1.cache.amazonaws.com:6379")
    redis.credentialsProvider = RESPCredentialsProvider {
        RESPCredentials(username: "app-user", password: try await passwords.redis())
    }
    return (postgres, redis)
}

@Suite struct ReadmeWiringTests {
    /// The settings verify the servers' certificates, and their providers hand the
    /// clients a token per connect (or the error naming the missing AWS variable).
    @Test func readmeWiringSetsTLSAndTokenProviders() async throws {
        let (postgres, redis) = try iamConfigurations()
        #expect(postgres.sslMode == .verifyFull)
        #expect(postgres.host == "mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com")
        #expect(redis.tls != nil)
        let postgresProvider = try #require(postgres.credentialsProvider)
        let redisProvider = try #require(redis.credentialsProvider)
        let request = PGCredentialsRequest(
            host: postgres.host, port: postgres.port, user: postgres.user, database: postgres.database)
        let environment = ProcessInfo.processInfo.environment
        let missing = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].first {
            (environment[$0] ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
        if let missing {
            await #expect(throws: AWSAuthError.missingEnvironmentVariable(missing)) { try await postgresProvider(request) }
            await #expect(throws: AWSAuthError.missingEnvironmentVariable(missing)) { try await redisProvider.fetch() }
        } else {
            let pg = try await postgresProvider(request)
            #expect(pg.user == nil)
            #expect(pg.password?.hasPrefix("mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app_user&") == true)
            let resp = try await redisProvider.fetch()
            #expect(resp.username == "app-user")
            #expect(resp.password.hasPrefix("my-redis-group/?Action=connect&User=app-user&"))
        }
    }
}
