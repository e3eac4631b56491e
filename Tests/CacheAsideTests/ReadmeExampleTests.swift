// The README's example, compiled and run: if this file stops building, the README is
// wrong. Keep the two in step (the code between the markers is copied verbatim).
import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import TestSupport
import Testing

// README-BEGIN
struct User: Codable, Sendable {
    var id: Int64
    var name: String
    var email: String
}

struct UserRepository: CachedRepository {
    let cache: CacheAside
    var keyspace: String { "user" }
    var schemaVersion: Int { 1 }  // bump when User's shape changes

    func load(_ id: Int64, on db: some PGQueryable) async throws -> User? {
        try await db.query("SELECT id, name, email FROM users WHERE id = $1", [id]).first?.decode(User.self)
    }

    func load(many ids: [Int64], on db: some PGQueryable) async throws -> [Int64: User] {
        let rows = try await db.query("SELECT id, name, email FROM users WHERE id = ANY($1)", [ids])
        return Dictionary(uniqueKeysWithValues: try rows.decode(User.self).map { ($0.id, $0) })
    }
}

func example(databaseURL: String, redisURL: String) async throws {
    let postgres = PGClient(configuration: try PGConfiguration(url: databaseURL))
    var redisConfiguration = try RESPConfiguration(url: redisURL)
    redisConfiguration.commandTimeout = .milliseconds(250)  // a slow Redis costs at most this
    let redis = try RESPClient(configuration: redisConfiguration)
    let cache = try CacheAside(postgres: postgres, redis: redis, namespace: "myapp", logger: Logger(label: "myapp"))
    let users = UserRepository(cache: cache)

    try await cache.withRunning {                             // or run `cache` in a ServiceGroup
        let user = try await users.find(42)                   // Redis, else PostgreSQL (and cached)
        let some = try await users.find(many: [1, 2, 3])      // one MGET, one query for the misses
        try await users.update(42) { tx in                    // the entry is invalidated after COMMIT
            try await tx.execute("UPDATE users SET name = $1 WHERE id = $2", ["Ada", Int64(42)])
        }
        print(user?.name ?? "no user 42", some.count)
    }                                                         // then both clients are shut down
}
// README-END

@Suite struct ReadmeExampleTests {
    @Test func theReadmeExampleRuns() async throws {
        let url = try TestEnvironment.databaseURL()
        // The example uses a table named `users`: give it one of its own in a schema.
        let schema = TestEnvironment.uniqueName("readme")
        var adminConfig = try PGConfiguration(url: url)
        adminConfig.connectTimeout = .seconds(60)
        adminConfig.acquireTimeout = .seconds(60)
        let admin = PGClient(configuration: adminConfig)
        try await admin.execute("CREATE SCHEMA \(schema)")
        try await admin.execute("CREATE TABLE \(schema).users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL)")
        try await admin.execute("INSERT INTO \(schema).users VALUES (42, 'Grace', 'g@example.com'), (1, 'One', 'one@example.com')")
        let separator = url.contains("?") ? "&" : "?"
        let schemaURL = url + separator + "options=-c%20search_path%3D\(schema)"
        try await example(databaseURL: schemaURL, redisURL: try TestEnvironment.redisURL())
        let name = try await admin.query("SELECT name FROM \(schema).users WHERE id = 42").first?.decode(String.self, column: "name")
        #expect(name == "Ada")
        try await admin.execute("DROP SCHEMA \(schema) CASCADE")
        await admin.shutdown()
    }
}
