import Foundation
import Logging
import Postgres
import TestSupport
import Testing

/// Shared helpers for the Postgres tests: every test uses its own tables or schema, so
/// they run in parallel on one database.
enum PG {
    static func configuration() throws -> PostgresConfiguration {
        try PostgresConfiguration(url: try TestEnvironment.databaseURL())
    }

    static func connect() async throws -> PostgresConnection {
        try await PostgresConnection.connect(configuration: try configuration())
    }

    static func password() throws -> String {
        try #require(try configuration().password)
    }

    /// Runs `body` with a client, then shuts it down (also when `body` throws).
    static func withClient<R>(
        max: Int = 4, min: Int = 0, acquireTimeout: Duration = .seconds(5),
        _ body: (PostgresClient) async throws -> R
    ) async throws -> R {
        var config = try configuration()
        config.maxConnections = max
        config.minConnections = min
        config.acquireTimeout = acquireTimeout
        let client = PostgresClient(configuration: config)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }
}
