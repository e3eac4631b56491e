import Foundation
import Logging
import CacheAsidePostgres
import TestSupport
import Testing

/// Shared helpers for the Postgres tests: every test uses its own tables or schema, so
/// they run in parallel on one database.
enum PG {
    /// The test server's configuration, with timeouts far above what any step takes on
    /// a loaded machine: tests that are about a timeout set their own.
    static func configuration() throws -> PGConfiguration {
        var configuration = try PGConfiguration(url: try TestEnvironment.databaseURL())
        configuration.connectTimeout = .seconds(60)
        configuration.acquireTimeout = .seconds(60)
        return configuration
    }

    static func connect() async throws -> PGConnection {
        try await PGConnection.connect(configuration: try configuration())
    }

    static func password() throws -> String {
        try #require(try configuration().password)
    }

    /// Runs `body` with a client, then shuts it down (also when `body` throws).
    static func withClient<R>(
        max: Int = 4, min: Int = 0, acquireTimeout: Duration = .seconds(60),
        _ body: (PGClient) async throws -> R
    ) async throws -> R {
        var config = try configuration()
        config.maxConnections = max
        config.minConnections = min
        config.acquireTimeout = acquireTimeout
        let client = PGClient(configuration: config)
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
