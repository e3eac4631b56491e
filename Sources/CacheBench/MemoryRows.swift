import CMallocStatistics
import CacheAside
import CacheAsidePostgres
import CacheAsideRedis
import Foundation
import Logging

/// The in-process tier's rows, on runtimes of their own (namespace
/// `cache-bench-memory`, a tier on the benchmark's table):
/// - `cache_hit_memory`: a `find` answered by memory, sequential.
/// - `cache_hit_memory_concurrent`: the same from `--concurrency` tasks over 1,000 hot rows.
/// - `memory_invalidation_latency`: runtime A's write returns -> runtime B's memory
///   applied the invalidation (client tracking), per write.
/// - `memory_footprint_100k`: 100,000 users read through a tier bounded at 16 MiB; the
///   heap it holds against the bound (note), the accounted bytes as p50.
struct MemoryRows: Sendable {
    let bench: Bench
    var settings: Settings { bench.settings }

    static let namespace = "cache-bench-memory"
    static let footprintUsers = 100_000
    static let footprintBound = 16 << 20

    struct Repository: CachedRepository {
        let cache: CacheAside
        let memory: MemoryTierPolicy
        var keyspace: String { "bench-user" }
        var policy: CachePolicy { CachePolicy(memory: memory) }

        func load(_ id: Int64, on db: some PGQueryable) async throws -> BenchUser? {
            try await db.query(selectSQL, [id]).first?.decode(BenchUser.self)
        }
    }

    func run() async throws -> [(String, Result)] {
        let logger = Logger(label: "cache-bench")
        func runtime() throws -> CacheAside {
            try CacheAside(
                postgres: PGClient(configuration: try PGConfiguration(url: settings.databaseURL), logger: logger),
                redis: try RESPClient(configuration: try RESPConfiguration(url: settings.redisURL), logger: logger),
                namespace: Self.namespace, logger: logger)
        }
        let a = try runtime(), b = try runtime()
        let tier = MemoryTierPolicy(maximumEntries: 10_000, maximumBytes: 16 << 20, ttl: .seconds(60))
        let repoA = Repository(cache: a, memory: tier), repoB = Repository(cache: b, memory: tier)
        return try await a.withRunning {
            try await b.withRunning {
                var results: [(String, Result)] = []
                progress("cache_hit_memory ...")
                try await untilMemoryServes(repoA, 1)
                results.append(("cache_hit_memory", try await sequential { _ in _ = try await repoA.find(1) }))

                let hot = Int64(min(settings.rows, 1000))
                for id in 1...hot { try await untilMemoryServes(repoA, id) }
                progress("cache_hit_memory_concurrent (\(settings.concurrency) tasks, \(settings.seconds) s) ...")
                var concurrent = try await bench.concurrent { i in _ = try await repoA.find(Int64(i % Int(hot)) + 1) }
                concurrent.note = "memory hits \(a.statistics(keyspace: "bench-user").memoryHits)"
                results.append(("cache_hit_memory_concurrent", concurrent))

                progress("memory_invalidation_latency ...")
                results.append(("memory_invalidation_latency", try await invalidationLatency(a: repoA, b: repoB)))
                return results
            }
        } + (try await footprint(logger: logger))
    }

    /// Reads `id` until memory answers (the tier's channel is up and the entry held).
    private func untilMemoryServes(_ repo: Repository, _ id: Int64) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let before = repo.cache.statistics(keyspace: repo.keyspace).memoryHits
            _ = try await repo.find(id)
            if repo.cache.statistics(keyspace: repo.keyspace).memoryHits > before { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw ValidationFailure(description: "memory never served row \(id) (is CLIENT TRACKING allowed?)")
    }

    private func sequential(_ body: (Int) async throws -> Void) async throws -> Result {
        for i in 0..<settings.warmup { try await body(i) }
        var l = Latencies()
        var busy = Duration.zero
        let clock = ContinuousClock()
        for i in 0..<settings.iterations {
            let t = clock.now
            try await body(i)
            let d = clock.now - t
            busy += d
            l.record(d)
        }
        return l.result(elapsed: busy)
    }

    /// A writes a row B holds in memory; from A's write returning to B's tier having
    /// applied the invalidation (its received-invalidations count moves).
    private func invalidationLatency(a: Repository, b: Repository) async throws -> Result {
        let iterations = max(50, min(settings.iterations / 40, 500))
        var l = Latencies()
        var total = Duration.zero
        let clock = ContinuousClock()
        for i in 0..<iterations {
            let id = Int64(i % min(settings.rows, 1000) + 1)
            try await untilMemoryServes(b, id)
            let before = b.cache.statistics(keyspace: b.keyspace).memoryInvalidations
            try await a.update(id) { tx in
                try await tx.execute("UPDATE \(benchTable) SET updated_at = now() WHERE id = $1", [id])
            }
            let returned = clock.now
            let deadline = returned + .seconds(10)
            while b.cache.statistics(keyspace: b.keyspace).memoryInvalidations == before {
                guard clock.now < deadline else { throw ValidationFailure(description: "no invalidation reached B") }
                await Task.yield()
            }
            let d = max(.zero, clock.now - returned)
            l.record(d)
            total += d
        }
        var result = l.result(elapsed: total)
        result.note = "\(iterations) writes; A's update returns -> B's memory invalidated"
        return result
    }

    /// 100,000 users (entries written to Redis directly, then read through the tier
    /// with `find(many:)`), in a tier bounded at 16 MiB: what the heap grew by.
    private func footprint(logger: Logger) async throws -> [(String, Result)] {
        progress("memory_footprint_100k ...")
        let redis = try RESPClient(configuration: try RESPConfiguration(url: settings.redisURL), logger: logger)
        let cache = try CacheAside(
            postgres: PGClient(configuration: try PGConfiguration(url: settings.databaseURL), logger: logger),
            redis: redis, namespace: Self.namespace + "-footprint", logger: logger)
        let repo = Repository(
            cache: cache, memory: MemoryTierPolicy(maximumEntries: 1_000_000, maximumBytes: Self.footprintBound, ttl: .seconds(600)))
        return try await cache.withRunning {
            // Seed Redis with every user's entry (untimed; the table may hold fewer rows).
            let users = Self.footprintUsers
            let base = Date(timeIntervalSince1970: 1_764_547_200)
            var batch: [(String, [UInt8])] = []
            for id in 1...Int64(users) {
                let user = BenchUser(id: id, name: "User \(id)", email: "user\(id)@example.com", updatedAt: base)
                let entry = try EntryFormat.encode(user, schemaVersion: 1, codec: JSONValueCodec())
                batch.append((try repo.cacheKey(for: id).entryKey, entry))
                if batch.count == 1000 || id == Int64(users) {
                    _ = try await redis.pipeline(batch.map { RESPCommands.SET($0.0, to: $0.1, expiration: .seconds(600)) })
                    batch.removeAll(keepingCapacity: true)
                }
            }
            try await untilMemoryServes(repo, 1)
            c_malloc_trim()
            let heapBefore = c_malloc_bytes_in_use()
            for start in stride(from: 1, through: users, by: 500) {
                _ = try await repo.find(many: Int64(start)...Int64(min(users, start + 499)))
            }
            c_malloc_trim()
            let heapAfter = c_malloc_bytes_in_use()
            let statistics = cache.statistics(keyspace: repo.keyspace)
            let grown = heapAfter - heapBefore
            let ratio = Double(grown) / Double(Self.footprintBound)
            var result = Result(
                p50Micros: Double(statistics.memoryBytes), p99Micros: Double(grown), opsPerSecond: Double(statistics.memoryEntries))
            result.note = String(
                format: "bound %.1f MiB; accounted %.1f MiB (p50 column), heap grew %.1f MiB (p99 column, %.0f%% of the bound), %d entries (ops column), %d evictions",
                Double(Self.footprintBound) / 1_048_576, Double(statistics.memoryBytes) / 1_048_576, Double(grown) / 1_048_576,
                ratio * 100, statistics.memoryEntries, statistics.memoryEvictions)
            // Leave Redis clean.
            for start in stride(from: 1, through: users, by: 1000) {
                let keys = try (Int64(start)...Int64(min(users, start + 999))).map { try repo.cacheKey(for: $0).entryKey }
                _ = try await redis.del(keys)
            }
            return [("memory_footprint_100k", result)]
        }
    }
}

struct ValidationFailure: Error, CustomStringConvertible {
    var description: String
}

extension Report {
    /// The in-process tier's targets.
    var memoryTargets: [Target] {
        let concurrent: Double? = {
            guard let a = value("cache_hit_memory_concurrent")?.opsPerSecond, let b = value("cache_hit_concurrent")?.opsPerSecond,
                  b > 0 else { return nil }
            return a / b
        }()
        let footprint: Double? = value("memory_footprint_100k").map { $0.p99Micros / Double(MemoryRows.footprintBound) }
        return [
            Target(name: "cache_hit_memory p50 (µs)", ratio: value("cache_hit_memory")?.p50Micros, bound: 1, atMost: true, formula: "<= 1"),
            Target(name: "cache_hit_memory_concurrent / cache_hit_concurrent ops/s", ratio: concurrent,
                   bound: 10, atMost: false, formula: ">= 10"),
            Target(name: "memory_invalidation_latency p99 (ms)", ratio: value("memory_invalidation_latency").map { $0.p99Micros / 1000 },
                   bound: 5, atMost: true, formula: "<= 5"),
            Target(name: "memory_footprint_100k heap / byte bound", ratio: footprint, bound: 1.2, atMost: true, formula: "<= 1.2"),
        ]
    }
}
