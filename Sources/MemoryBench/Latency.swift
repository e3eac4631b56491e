import CacheAsideMemory
import Foundation

/// A store holding `count` demo users, all of them live, and their keys.
struct HotSet: Sendable {
    let store: MemoryStore<DemoUser>
    /// The keys to look up: equal to the stored keys, but other strings (as keys built
    /// per request are), so that each lookup compares bytes.
    let keys: [String]

    init(count: Int) {
        store = MemoryStore<DemoUser>(configuration: MemoryStoreConfiguration(
            maximumEntries: count * 2, maximumBytes: 1 << 30, timeToLive: .seconds(3600)))
        for id in 1...Int64(max(1, count)) {
            let key = DemoUser.key(id)
            store.fill(store.fillTicket(forKey: key), with: DemoUser(id: id), size: 70)
        }
        keys = (1...Int64(max(1, count))).map(DemoUser.key)
    }

    /// A memory hit the way the cache would serve it: an `async` call that does not
    /// suspend.
    @inline(never)
    func find(_ key: String) async -> DemoUser? {
        store.value(forKey: key)
    }
}

struct LatencyResult: Sendable, CustomStringConvertible {
    var iterations: Int
    /// Wall time of the tight loop, per hit.
    var meanNanoseconds: Double
    /// Each hit timed on its own (the two clock reads included).
    var p50Nanoseconds: Int64
    var p99Nanoseconds: Int64
    /// Two back-to-back clock reads, the floor of the per-hit figures.
    var clockNanoseconds: Int64

    var description: String {
        String(format: "cache_hit_memory: %d hits, %.0f ns per hit (tight loop); timed one by one: p50 %d ns, p99 %d ns (clock reads alone: %d ns)",
               iterations, meanNanoseconds, p50Nanoseconds, p99Nanoseconds, clockNanoseconds)
    }
}

enum Latency {
    /// Hits on one task, over the hot set in a scrambled order.
    static func hits(_ hot: HotSet, iterations: Int) async -> LatencyResult {
        let order = scrambled(count: hot.keys.count, length: 4096)
        var found = 0
        for i in 0..<min(iterations, 10_000) where await hot.find(hot.keys[order[i & 4095]]) != nil { found += 1 }

        let start = monotonic()
        for i in 0..<iterations where await hot.find(hot.keys[order[i & 4095]]) != nil { found += 1 }
        let elapsed = monotonic() - start

        let samples = min(iterations, 200_000)
        var each = [Int64]()
        each.reserveCapacity(samples)
        var clockOnly = [Int64]()
        clockOnly.reserveCapacity(samples)
        for i in 0..<samples {
            let t0 = monotonic()
            if await hot.find(hot.keys[order[i & 4095]]) != nil { found += 1 }
            let t1 = monotonic()
            each.append(t1 - t0)
            let c0 = monotonic()
            let c1 = monotonic()
            clockOnly.append(c1 - c0)
        }
        each.sort()
        clockOnly.sort()
        precondition(found > 0)
        return LatencyResult(
            iterations: iterations, meanNanoseconds: Double(elapsed) / Double(max(1, iterations)),
            p50Nanoseconds: each[each.count / 2], p99Nanoseconds: each[each.count * 99 / 100],
            clockNanoseconds: clockOnly[clockOnly.count / 2])
    }

    /// `tasks` tasks, each making `perTask` hits; returns hits per second.
    static func concurrent(_ hot: HotSet, tasks: Int, perTask: Int) async -> Double {
        let start = monotonic()
        let total = await withTaskGroup(of: Int.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    let order = scrambled(count: hot.keys.count, length: 4096, seed: UInt64(t + 1))
                    var found = 0
                    for i in 0..<perTask {
                        if await hot.find(hot.keys[order[i & 4095]]) != nil { found += 1 }
                        if i & 1023 == 1023 { await Task.yield() }
                    }
                    return found
                }
            }
            return await group.reduce(0, +)
        }
        let elapsed = monotonic() - start
        precondition(total == tasks * perTask, "every lookup of the hot set must hit")
        return Double(total) / (Double(elapsed) / 1e9)
    }

    static func scrambled(count: Int, length: Int, seed: UInt64 = 7) -> [Int] {
        var generator = SplitMix64(seed: seed)
        return (0..<length).map { _ in Int(generator.next() % UInt64(count)) }
    }

    static func monotonic() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
