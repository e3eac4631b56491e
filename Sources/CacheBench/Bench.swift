import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization

/// A cached row of the benchmark's table.
struct BenchUser: Codable, Sendable {
    var id: Int64
    var name: String
    var email: String
    var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, email
        case updatedAt = "updated_at"
    }
}

let benchTable = "cache_bench_users"
let selectSQL = "SELECT id, name, email, updated_at FROM \(benchTable) WHERE id = $1"

struct BenchRepository: CachedRepository {
    let cache: CacheAside
    var keyspace: String { "bench-user" }

    func load(_ id: Int64, on db: some PGQueryable) async throws -> BenchUser? {
        try await db.query(selectSQL, [id]).first?.decode(BenchUser.self)
    }
}

/// Runs every benchmark, in an order that keeps each pair (raw and ours) side by side.
struct Bench: Sendable {
    let settings: Settings

    func run() async throws -> [(String, Result)] {
        let logger = Logger(label: "cache-bench")
        let pgConfig = try PGConfiguration(url: settings.databaseURL)
        let redisConfig = try RESPConfiguration(url: settings.redisURL)
        let postgres = PGClient(configuration: pgConfig, logger: logger)
        let redis = try RESPClient(configuration: redisConfig, logger: logger)
        let cache = try CacheAside(postgres: postgres, redis: redis, namespace: "cache-bench", logger: logger)
        let repository = BenchRepository(cache: cache)
        // The cache runs (fills leave the callers' paths) and, at the end, shuts both clients down.
        return try await cache.withRunning {
            try await measure(postgres: postgres, redis: redis, redisConfig: redisConfig, cache: cache, repository: repository)
        }
    }

    private func measure(
        postgres: PGClient, redis: RESPClient, redisConfig: RESPConfiguration, cache: CacheAside, repository: BenchRepository
    ) async throws -> [(String, Result)] {
        try await prepareTable(postgres)
        let valueKey = "cache-bench:raw:value"
        let sampleRow = try await repository.load(1, on: postgres)
        let sampleValue = try JSONEncoder().encode(sampleRow)
        _ = try await redis.set(valueKey, to: Array(sampleValue), expiration: .seconds(3600))
        progress("value: \(sampleValue.count) bytes of JSON; table \(benchTable): \(settings.rows) rows")

        // Our client over TLS, when there is a TLS URL (shut down, awaited, at the end).
        let tls = try await tlsClient(valueKey: valueKey, value: Array(sampleValue))
        return try await withCleanup {
            try await measureRows(
                postgres: postgres, redis: redis, tls: tls, redisConfig: redisConfig, cache: cache, repository: repository,
                valueKey: valueKey, sampleValue: Array(sampleValue))
        } cleanup: {
            await tls?.shutdown()
        }
    }

    private func measureRows(
        postgres: PGClient, redis: RESPClient, tls: RESPClient?, redisConfig: RESPConfiguration, cache: CacheAside,
        repository: BenchRepository, valueKey: String, sampleValue: [UInt8]
    ) async throws -> [(String, Result)] {
        var results: [(String, Result)] = []

        // The single-request Redis paths, in the same rounds: the raw hiredis call, our
        // client's GET, a cache hit and our client over TLS. Every target that compares
        // two of them compares figures of the same rounds.
        guard case .tcp(let host, let port) = redisConfig.endpoint else {
            throw RawBaselines.Failure(description: "the raw hiredis baseline needs a TCP Redis URL")
        }
        let hiredis = try RawBaselines.Hiredis(
            host: host, port: port, user: redisConfig.username, password: redisConfig.password,
            database: redisConfig.database)
        // The cache hit's row: filled by a first find (its fill runs in the background).
        _ = try await repository.find(1)
        try await Task.sleep(for: .milliseconds(50))
        var bodies: [(String, @Sendable (Int) async throws -> Latencies)] = [
            ("redis_get_raw", { n in
                await onThread {
                    var l = Latencies()
                    let key = Array(valueKey.utf8), get = Array("GET".utf8)
                    let clock = ContinuousClock()
                    for _ in 0..<n {
                        let t = clock.now
                        _ = hiredis.get(key, get)
                        l.record(clock.now - t)
                    }
                    return l
                }
            }),
            ("redis_get", { n in try await timedLoop(n) { _ in _ = try await redis.get(valueKey) } }),
            ("cache_hit", { n in try await timedLoop(n) { _ in _ = try await repository.find(1) } }),
        ]
        if let tls {
            bodies.append(("redis_get_tls", { n in try await timedLoop(n) { _ in _ = try await tls.get(valueKey) } }))
        }
        results += zip(bodies.map(\.0), try await interleavedRounds(bodies.map(\.1), label: bodies.map(\.0).joined(separator: ", ")))

        // PostgreSQL: raw PQexecPrepared against our client.
        let libpq = try RawBaselines.Libpq(url: settings.databaseURL, sql: selectSQL)
        let rowCount = settings.rows
        let pgPair = try await interleaved(
            raw: { n in
                await onThread {
                    var l = Latencies()
                    let clock = ContinuousClock()
                    for i in 0..<n {
                        let id = String(i % rowCount + 1)
                        let t = clock.now
                        _ = libpq.select(id)
                        l.record(clock.now - t)
                    }
                    return l
                }
            },
            ours: { n in
                try await timedLoop(n) { i in
                    _ = try await postgres.query(selectSQL, [Int64(i % rowCount + 1)]).first?.decode(BenchUser.self)
                }
            },
            label: "pg_select")
        results.append(("pg_select_raw", pgPair.raw))
        results.append(("pg_select", pgPair.ours))
        results += try await PostgresRows.run(settings: settings)

        // Cache miss: each find's entry is deleted first (untimed). Ids cycle through
        // the table so that no fill of an earlier find can land after the delete.
        progress("cache_miss ...")
        let missIterations = min(settings.iterations, rowCount)
        let keys = try (1...Int64(rowCount)).map { try repository.cacheKey(for: $0) }
        results.append(("cache_miss", try await sequential(missIterations, warmup: 0, untimed: { i in
            let key = keys[i % rowCount]
            _ = try await redis.del([key.entryKey])
        }) { i in
            _ = try await repository.find(Int64(i % rowCount + 1))
        }))
        let stats = cache.statistics(keyspace: repository.keyspace)
        progress("cache statistics: \(stats)")
        results += try await CacheRows(settings: settings).run(redis: redis)

        // Concurrency: many tasks on the shared clients.
        progress("redis_get_concurrent (\(settings.concurrency) tasks, \(settings.seconds) s) ...")
        results.append(("redis_get_concurrent", try await concurrent { _ in _ = try await redis.get(valueKey) }))
        let hot = Int64(min(rowCount, 1000))
        for id in 1...hot { _ = try await repository.find(id) }
        try await Task.sleep(for: .milliseconds(100))
        progress("cache_hit_concurrent (\(settings.concurrency) tasks, \(settings.seconds) s) ...")
        results.append(("cache_hit_concurrent", try await concurrent { i in
            _ = try await repository.find(Int64(i % Int(hot)) + 1)
        }))

        results += try await MemoryRows(bench: self).run()
        if let tls { results += try await tlsRows(tls, valueKey: valueKey, value: sampleValue) }
        results += try await ClusterRows(bench: self).run(postgres: postgres, value: sampleValue)

        // The servers' own tools, against the same servers.
        if settings.external {
            if let r = try await ExternalTools.redisBenchmark(config: redisConfig, key: valueKey, value: sampleValue, seconds: settings.seconds, redis: redis) {
                results.append(("redis_benchmark_get_c50", r))
            }
            if let r = try await ExternalTools.pgbench(url: settings.databaseURL, table: benchTable, rows: rowCount, seconds: settings.seconds) {
                results.append(("pgbench_select_c1", r))
            }
        }
        _ = try await redis.del([valueKey])
        return results
    }

    private func prepareTable(_ postgres: PGClient) async throws {
        try await postgres.execute("""
            CREATE TABLE IF NOT EXISTS \(benchTable) (
                id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
                updated_at timestamptz NOT NULL DEFAULT now())
            """)
        let count = try await postgres.query("SELECT count(*) AS n FROM \(benchTable)").first?.decode(Int64.self, column: "n") ?? 0
        if count < settings.rows {
            progress("seeding \(settings.rows) rows ...")
            try await postgres.execute("""
                INSERT INTO \(benchTable) (id, name, email)
                SELECT g, 'User ' || g, 'user' || g || '@example.com' FROM generate_series(1, $1::bigint) g
                ON CONFLICT (id) DO NOTHING
                """, [Int64(settings.rows)])
            try await postgres.execute("ANALYZE \(benchTable)")
        }
    }

    /// Runs `raw` and `ours` in alternating rounds (5 each) after a warm-up of both, so
    /// that drift on a shared machine affects both alike.
    func interleaved(
        raw: @escaping @Sendable (Int) async throws -> Latencies,
        ours: @escaping @Sendable (Int) async throws -> Latencies,
        label: String
    ) async throws -> (raw: Result, ours: Result) {
        let results = try await interleavedRounds([raw, ours], label: "\(label)_raw and \(label)")
        return (results[0], results[1])
    }

    /// Runs each body in alternating rounds (5 each, in order) after a warm-up of
    /// every one, so that drift on a shared machine affects them alike; their results,
    /// in order.
    func interleavedRounds(_ bodies: [@Sendable (Int) async throws -> Latencies], label: String) async throws -> [Result] {
        progress("\(label), interleaved ...")
        for body in bodies { _ = try await body(settings.warmup) }
        let rounds = 5
        let perRound = max(1, settings.iterations / rounds)
        var all = [Latencies](repeating: Latencies(), count: bodies.count)
        var time = [Duration](repeating: .zero, count: bodies.count)
        let clock = ContinuousClock()
        for _ in 0..<rounds {
            for (k, body) in bodies.enumerated() {
                let t = clock.now
                all[k].add(try await body(perRound))
                time[k] += clock.now - t
            }
        }
        return bodies.indices.map { all[$0].result(elapsed: time[$0]) }
    }

    func sequential(
        _ n: Int, warmup: Int, untimed: (Int) async throws -> Void = { _ in },
        _ body: (Int) async throws -> Void
    ) async throws -> Result {
        for i in 0..<warmup {
            try await untimed(i)
            try await body(i)
        }
        var l = Latencies()
        var busy = Duration.zero
        let clock = ContinuousClock()
        for i in 0..<n {
            try await untimed(i)
            let t = clock.now
            try await body(i)
            let d = clock.now - t
            busy += d
            l.record(d)
        }
        return l.result(elapsed: busy)
    }

    func concurrent(_ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Result {
        let duration = Duration.milliseconds(Int64(settings.seconds * 1000))
        // Warm-up: a short burst.
        let warmEnd = ContinuousClock.now + .milliseconds(300)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<settings.concurrency {
                group.addTask {
                    var i = t
                    while ContinuousClock.now < warmEnd {
                        try await body(i)
                        i += 1
                    }
                }
            }
            try await group.waitForAll()
        }
        let start = ContinuousClock.now
        let end = start + duration
        let merged = try await withThrowingTaskGroup(of: Latencies.self) { group in
            for t in 0..<settings.concurrency {
                group.addTask {
                    var l = Latencies()
                    let clock = ContinuousClock()
                    var i = t
                    while clock.now < end {
                        let s = clock.now
                        try await body(i)
                        l.record(clock.now - s)
                        i += settings.concurrency
                    }
                    return l
                }
            }
            var all = Latencies()
            for try await l in group { all.add(l) }
            return all
        }
        return merged.result(elapsed: ContinuousClock.now - start)
    }
}

/// Runs `body` `n` times (with the iteration's number) and records each call's latency.
func timedLoop(_ n: Int, _ body: (Int) async throws -> Void) async throws -> Latencies {
    var l = Latencies()
    let clock = ContinuousClock()
    for i in 0..<n {
        let t = clock.now
        try await body(i)
        l.record(clock.now - t)
    }
    return l
}

/// Runs blocking work on a thread of its own (not Swift's cooperative pool), as a
/// plain C program would, and returns its result.
func onThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
