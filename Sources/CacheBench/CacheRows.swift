import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization

/// The cache core's own rows: `decode_entry` (the entry codec alone, as a hit runs it;
/// `decode_entry_foundation` the same with `JSONDecoder`, for comparison),
/// `lease_fill` (one fill over a lease: the script's round trip) and
/// `lease_wait_cross_process` (reader B in another runtime waits for reader A's fill:
/// from A's load returning to B's find returning).
struct CacheRows: Sendable {
    let settings: Settings

    func run(redis: RESPClient) async throws -> [(String, Result)] {
        var results: [(String, Result)] = []
        results.append(("decode_entry", try decodeEntry(JSONValueCodec())))
        // The same entry through Foundation's JSONDecoder, for comparison in the same run.
        results.append(("decode_entry_foundation", try decodeEntry(JSONValueCodec(encoder: JSONEncoder(), decoder: JSONDecoder()))))
        let waits = try await leaseWaits(redis: redis)
        results.append(("lease_fill", waits.fill))
        results.append(("lease_wait_cross_process", waits.wait))
        return results
    }

    /// Decodes a 100-byte entry (envelope and a four-field struct), as a hit does.
    private func decodeEntry(_ codec: JSONValueCodec) throws -> Result {
        progress("decode_entry ...")
        let user = BenchUser(id: 4242, name: "User 4242", email: "user4242@example.com", updatedAt: Date(timeIntervalSince1970: 1_764_547_200.123456))
        let entry = try EntryFormat.encode(user, schemaVersion: 1, codec: codec)
        progress("entry: \(entry.count) bytes")
        let clock = ContinuousClock()
        var latencies = Latencies()
        var busy = Duration.zero
        var checksum: Int64 = 0
        for i in 0..<(settings.warmup + settings.iterations) {
            let t = clock.now
            let decoded = try EntryFormat.decode(BenchUser.self, from: entry, schemaVersion: 1, codec: codec)
            let d = clock.now - t
            checksum &+= decoded??.id ?? 0
            if i >= settings.warmup {
                latencies.record(d)
                busy += d
            }
        }
        var result = latencies.result(elapsed: busy)
        result.note = "\(entry.count)-byte entry, checksum \(checksum % 10)"
        return result
    }

    /// Two runtimes with their own clients, as two processes: A leads a miss (its load
    /// held until B waits on A's lease), B finds A's lease and waits for the fill.
    private func leaseWaits(redis: RESPClient) async throws -> (fill: Result, wait: Result) {
        progress("lease_fill and lease_wait_cross_process ...")
        let iterations = max(100, min(settings.iterations / 20, 1000))
        let namespace = "cache-bench-wait"
        let gate = LoadGate()
        let logger = Logger(label: "cache-bench")
        func runtime() throws -> CacheAside {
            try CacheAside(
                postgres: PGClient(configuration: try PGConfiguration(url: settings.databaseURL), logger: logger),
                redis: try RESPClient(configuration: try RESPConfiguration(url: settings.redisURL), logger: logger),
                namespace: namespace, defaultPolicy: CachePolicy(leaseWait: .seconds(5)), logger: logger)
        }
        let a = try runtime(), b = try runtime()
        let repoA = GatedRepository(cache: a, gate: gate), repoB = GatedRepository(cache: b, gate: nil)
        return try await a.withRunning {
            try await b.withRunning {
                // The fill alone: a lease, then the fill script's round trip.
                let store = RedisCacheStore(redis: redis, channel: "\(namespace):cache-aside:fills")
                var fills = Latencies()
                var fillTime = Duration.zero
                let clock = ContinuousClock()
                let entry = try EntryFormat.encode(
                    BenchUser(id: 1, name: "User 1", email: "user1@example.com", updatedAt: Date()), schemaVersion: 1,
                    codec: JSONValueCodec())
                for i in 0..<iterations {
                    let key = "\(namespace):fill:\(i)"
                    let lease = EntryFormat.Lease(token: Array("00000000000000000000000000\(String(format: "%06d", i))".utf8))
                    _ = try await store.lease([LeaseRequest(key: key, expected: nil, lease: lease.bytes, ttlMilliseconds: 3000)])
                    let t = clock.now
                    _ = try await store.fill([FillRequest(key: key, lease: lease, entry: entry, ttlMilliseconds: 60_000)])
                    let d = clock.now - t
                    fills.record(d)
                    fillTime += d
                    _ = try await redis.del([key])
                }

                // B waits on A's lease.
                var waits = Latencies()
                var waitTime = Duration.zero
                for i in 0..<iterations {
                    let id = Int64(i % settings.rows + 1)
                    let key = try repoA.cacheKey(for: id).entryKey
                    _ = try await redis.del([key])
                    gate.close()
                    async let readerA: ContinuousClock.Instant = {
                        _ = try await repoA.find(id)
                        return clock.now
                    }()
                    // A holds the lease (its load waits at the gate): start B.
                    try await until { String(decoding: try await redis.get(key) ?? [], as: UTF8.self).contains("\"lease\"") }
                    async let readerB: ContinuousClock.Instant = {
                        _ = try await repoB.find(id)
                        return clock.now
                    }()
                    // B waits (it marked the lease): let A's load return.
                    try await until { String(decoding: try await redis.get(key) ?? [], as: UTF8.self).contains("\"w\":1") }
                    gate.open()
                    let aDone = try await readerA
                    let bDone = try await readerB
                    let d = bDone - aDone
                    waits.record(d)
                    waitTime += d
                }
                var fill = fills.result(elapsed: fillTime)
                fill.note = "EVALSHA of the fill script over a lease"
                var wait = waits.result(elapsed: waitTime)
                wait.note = "A's load returns -> B's find returns"
                return (fill, wait)
            }
        }
    }

    /// Polls a condition of the benchmark's own setup (not a measured path).
    private func until(_ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !condition() {
            guard ContinuousClock.now < deadline else {
                throw RawBaselines.Failure(description: "lease_wait_cross_process: a setup step did not happen within 10 s")
            }
            await Task.yield()
        }
    }
}

/// Holds loads until opened.
final class LoadGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((true, []))

    func close() { state.withLock { $0.open = false } }

    func open() {
        let waiters = state.withLock { s in
            s.open = true
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    func pass() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { s in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// The benchmark's table, with loads that can be held at a gate.
struct GatedRepository: CachedRepository {
    let cache: CacheAside
    let gate: LoadGate?
    var keyspace: String { "bench-user" }

    func load(_ id: Int64, on db: some PGQueryable) async throws -> BenchUser? {
        let user = try await db.query(selectSQL, [id]).first?.decode(BenchUser.self)
        await gate?.pass()
        return user
    }
}

extension Report {
    /// The cache core's targets: differences in microseconds, or ratios.
    var cacheCoreTargets: [Target] {
        func difference(_ a: String, _ b: String) -> Double? {
            guard let x = value(a)?.p50Micros, let y = value(b)?.p50Micros else { return nil }
            return x - y
        }
        let concurrent: Double? = {
            guard let a = value("cache_hit_concurrent")?.opsPerSecond, let b = value("redis_get_concurrent")?.opsPerSecond,
                  b > 0 else { return nil }
            return a / b
        }()
        return [
            Target(name: "cache_hit p50 - redis_get p50 (µs)", ratio: difference("cache_hit", "redis_get"),
                   bound: 3, atMost: true, formula: "<= 3"),
            Target(name: "cache_hit_concurrent / redis_get_concurrent ops/s", ratio: concurrent,
                   bound: 0.8, atMost: false, formula: ">= 0.8"),
            Target(name: "decode_entry p50 (µs)", ratio: value("decode_entry")?.p50Micros, bound: 2, atMost: true, formula: "<= 2"),
            Target(name: "lease_wait_cross_process p50 - lease_fill p50 (µs)",
                   ratio: difference("lease_wait_cross_process", "lease_fill"), bound: 1000, atMost: true, formula: "<= 1000"),
        ]
    }
}
