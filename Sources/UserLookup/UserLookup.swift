import ArgumentParser
import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis

/// The demo: cache-aside at work on a `users` table.
@main
struct UserLookup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user-lookup",
        abstract: "Look users up through a Redis cache in front of PostgreSQL, and show where each answer came from.",
        discussion: """
            Applies the migrations, seeds users, then looks the same users up twice (first from the \
            database, then from the cache), updates one (which invalidates its entry), looks up an id \
            that does not exist (cached as absent), and prints a summary. Reads DATABASE_URL and \
            REDIS_URL unless given the options below; `make demo` starts throwaway servers for it.
            """)

    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (default: $DATABASE_URL).")
    var databaseURL: String?

    @Option(name: .customLong("redis-url"), help: "Redis URL (default: $REDIS_URL).")
    var redisURL: String?

    @Option(help: "How many users to seed (existing ones are kept).")
    var users: Int = 10_000

    @Option(help: "How many users to seed per INSERT.")
    var batchSize: Int = 1_000

    @Option(help: "How many users to look up in each pass.")
    var lookups: Int = 8

    @Option(help: "The folder of numbered .sql migrations.")
    var migrations: String = "Migrations"

    @Option(help: "The cache namespace (first part of every key).")
    var namespace: String = "user-lookup"

    @Flag(help: "Log what the library logs (warnings and errors) to stderr.")
    var verbose = false

    func validate() throws {
        guard users >= 1 else { throw ValidationError("--users must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lookups >= 1 && lookups <= users else { throw ValidationError("--lookups must be between 1 and --users") }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let databaseURL = databaseURL ?? environment["DATABASE_URL"] else {
            throw ValidationError("no database: pass --database-url or set DATABASE_URL (`make demo` does both for you)")
        }
        guard let redisURL = redisURL ?? environment["REDIS_URL"] else {
            throw ValidationError("no Redis: pass --redis-url or set REDIS_URL (`make demo` does both for you)")
        }
        var logger = Logger(label: "user-lookup")
        logger.logLevel = verbose ? .warning : .critical

        let postgres = PGClient(configuration: try PGConfiguration(url: databaseURL), logger: logger)
        let redis = try RESPClient(configuration: try RESPConfiguration(url: redisURL), logger: logger)
        // The cache owns both clients from here on: its shutdown closes them.
        let cache = try CacheAside(postgres: postgres, redis: redis, namespace: namespace, logger: logger)
        let demo = Demo(postgres: postgres, cache: cache, repository: UserRepository(cache: cache), logger: logger)
        try await cache.withRunning {
            try await demo.run(users: users, batchSize: batchSize, lookups: lookups, migrations: migrations)
        }
    }
}

/// The demo's steps.
struct Demo {
    let postgres: PGClient
    let cache: CacheAside
    let repository: UserRepository
    let logger: Logger

    func run(users: Int, batchSize: Int, lookups: Int, migrations: String) async throws {
        say("swift-cache-aside demo: users from PostgreSQL, through Redis\n")

        // 1. Schema.
        let migrator = try PGMigrator(client: postgres, directory: URL(fileURLWithPath: migrations), logger: logger)
        let applied = try await migrator.migrate()
        say(applied.isEmpty ? "migrations: up to date" : "migrations: applied \(applied.map(String.init).joined(separator: ", "))")

        // 2. Seed.
        try await seed(users: users, batchSize: batchSize)
        let ids = try await postgres.query("SELECT id FROM users ORDER BY id LIMIT $1", [Int64(lookups)])
            .map { try $0.decode(Int64.self, column: "id") }
        // Start cold, whatever an earlier run left in Redis.
        await repository.invalidate(many: ids)

        var timings = Timings()

        // 3. The same lookups twice: the first from the database, the second from Redis.
        for pass in 1...2 {
            say("\nlookup pass \(pass):")
            for id in ids {
                let (user, source, micros) = try await timedFind(id)
                timings.record(source: source, micros: micros)
                say("  user \(id)  \(pad(user.map { "\($0.name) <\($0.email)>" } ?? "(none)", 34))  \(pad(source, 8))  \(format(micros))")
            }
        }

        // 4. An update invalidates: the next read loads the new row.
        guard let target = ids.first else { return }
        let newName = "Renamed \(Int.random(in: 100...999))"
        try await repository.update(target) { tx in
            try await tx.execute("UPDATE users SET name = $1, updated_at = now() WHERE id = $2", [newName, target])
        }
        say("\nupdated user \(target): name = \"\(newName)\" (its cache entry was invalidated after COMMIT)")
        // The first read loads the new row; the second finds the first one's fill in
        // flight (its lease in Redis) and joins it in memory.
        for _ in 1...2 {
            let (user, source, micros) = try await timedFind(target)
            timings.record(source: source, micros: micros)
            say("  user \(target)  \(pad(user?.name ?? "(none)", 34))  \(pad(source, 8))  \(format(micros))")
        }

        // 5. A missing id: loaded once, then served as "absent" from the cache.
        let missing: Int64 = 9_000_000_000
        say("\nmissing id \(missing):")
        for _ in 1...2 {
            let (user, source, micros) = try await timedFind(missing)
            timings.record(source: source, micros: micros)
            say("  user \(missing)  \(pad(user == nil ? "(no such user)" : "?", 34))  \(pad(source, 8))  \(format(micros))")
        }

        // 6. Summary.
        let stats = cache.statistics(keyspace: repository.keyspace)
        say("\nsummary: \(stats.hits) hits, \(stats.misses) misses, \(stats.databaseLoads) database loads, \(stats.fills) fills, \(stats.rejectedFills) rejected")
        say("  p50 from cache:    \(format(timings.p50(\.cache)))  (\(timings.cache.count) reads)")
        say("  p50 from database: \(format(timings.p50(\.database)))  (\(timings.database.count) reads)")
        if stats.failOpenReads > 0 {
            say("  \(stats.failOpenReads) reads failed open to the database (Redis unreachable)")
        }
    }

    /// Seeds users in batches until there are `users` of them, with a progress line.
    func seed(users: Int, batchSize: Int) async throws {
        let existing = try await postgres.query("SELECT count(*) AS n FROM users").first?.decode(Int64.self, column: "n") ?? 0
        guard existing < users else {
            say("users: \(existing) already seeded")
            return
        }
        var done = Int(existing)
        while done < users {
            let count = min(batchSize, users - done)
            let numbers = (done..<(done + count)).map { Int64($0 + 1) }
            try await postgres.execute("""
                INSERT INTO users (name, email)
                SELECT 'User ' || n, 'user' || n || '@example.com' FROM unnest($1::bigint[]) AS n
                ON CONFLICT (email) DO NOTHING
                """, [numbers])
            done += count
            // On a terminal the progress line rewrites itself; elsewhere, one line per batch.
            say((isTerminal ? "\r" : "") + "seeding users: \(done)/\(users)", terminator: isTerminal ? "" : "\n")
        }
        if isTerminal { say("") }
    }

    private var isTerminal: Bool { isatty(1) != 0 }

    /// One find, with where its answer came from (told by the cache's own counters:
    /// the demo reads one user at a time) and how long it took.
    func timedFind(_ id: Int64) async throws -> (User?, String, Double) {
        let before = cache.statistics(keyspace: repository.keyspace)
        let start = ContinuousClock.now
        let user = try await repository.find(id)
        let elapsed = ContinuousClock.now - start
        let after = cache.statistics(keyspace: repository.keyspace)
        let source = after.databaseLoads > before.databaseLoads ? "database" : "cache"
        return (user, source, elapsed.microseconds)
    }
}

struct Timings {
    var cache: [Double] = []
    var database: [Double] = []

    mutating func record(source: String, micros: Double) {
        if source == "cache" { cache.append(micros) } else { database.append(micros) }
    }

    func p50(_ path: KeyPath<Timings, [Double]>) -> Double {
        let values = self[keyPath: path].sorted()
        return values.isEmpty ? 0 : values[values.count / 2]
    }
}

extension Duration {
    var microseconds: Double {
        let (s, atto) = components
        return Double(s) * 1e6 + Double(atto) / 1e12
    }
}

/// Writes a line to standard output at once (unbuffered, so progress lines and the
/// rest come out in order).
func say(_ text: String = "", terminator: String = "\n") {
    FileHandle.standardOutput.write(Data((text + terminator).utf8))
}

func format(_ micros: Double) -> String {
    micros >= 1000 ? String(format: "%7.2f ms", micros / 1000) : String(format: "%7.1f µs", micros)
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
