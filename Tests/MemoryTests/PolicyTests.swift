import CacheAsideMemory
import IOLoop
@testable import MemoryBench
import Testing

/// The suites that compute: serialized, so that at most one of them loads the machine at
/// a time (the rest of the suite runs I/O tests with deadlines beside them).
@Suite(.serialized) struct MemoryWorkloadTests {}

extension MemoryWorkloadTests {
    /// The eviction policy on deterministic workloads (fixed seeds, one shard, so that the
    /// numbers are the same on every run), against plain LRU at the same capacity. The
    /// replays run on a thread of their own (`BlockingCall`), off the threads that run
    /// tasks.
    @Suite struct PolicyTests {
        @Test func hotEntriesSurviveAScanThatEmptiesAnLRU() async {
            let (storeKept, lruKept) = await BlockingCall.run { () -> (Int, Int) in
                let store = MemoryStore<Int>(configuration: MemoryStoreConfiguration(
                    maximumEntries: 1000, maximumBytes: 1 << 30, timeToLive: .seconds(3600), shardCount: 1))
                var lru = LRUCache(capacity: 1000)
                let hot = 0..<500
                for _ in 0..<4 {
                    for id in hot {
                        store.readThrough(HitRatio.key(id), id)
                        _ = lru.access(id)
                    }
                }
                // A scan of 10 times the capacity, each id read once.
                for id in 1_000_000..<1_010_000 {
                    store.readThrough(HitRatio.key(id), id)
                    _ = lru.access(id)
                }
                let storeKept = hot.filter { store.value(forKey: HitRatio.key($0)) == $0 }.count
                let lruKept = hot.filter { lru.access($0) }.count
                return (storeKept, lruKept)
            }
            print("after a scan of 10x the capacity: S3-FIFO kept \(storeKept) of 500 hot entries, LRU \(lruKept)")
            #expect(storeKept == 500)
            #expect(lruKept == 0)
        }

        /// A smaller version of the comparison the README quotes from `MemoryBench hit-ratio`.
        @Test func onAZipfWorkloadWithScansTheHitRatioBeatsLRU() async {
            let workload = Workload(universe: 5000, exponent: 0.99, requests: 50_000, scanEvery: 5000, scanLength: 1000)
            let results = await BlockingCall.run {
                let trace = workload.trace()
                return [50, 250, 500].map { HitRatio.measure(trace: trace, universe: workload.universe, capacity: $0, shards: 1) }
            }
            print("hit ratio, \(workload):")
            for result in results {
                print("  \(result)")
                // Measured: +8 to +12 points of the Zipf reads; require a clear margin.
                #expect(result.storeOnZipf >= result.lruOnZipf + 0.05, "\(result)")
                #expect(result.store > result.lru, "\(result)")
            }
        }

        @Test func withoutScansTheHitRatioIsAtLeastLRUs() async {
            let workload = Workload(universe: 5000, exponent: 0.99, requests: 50_000, scanEvery: 0, scanLength: 0)
            let results = await BlockingCall.run {
                let trace = workload.trace()
                return [50, 500].map { HitRatio.measure(trace: trace, universe: workload.universe, capacity: $0, shards: 1) }
            }
            for result in results {
                print("  \(workload): \(result)")
                #expect(result.store >= result.lru, "\(result)")
            }
        }

        /// Shards split the capacity by key hash; on a skewed workload that costs little.
        @Test func shardingKeepsTheHitRatio() async {
            let workload = Workload(universe: 5000, exponent: 0.99, requests: 50_000, scanEvery: 5000, scanLength: 1000)
            let (one, four) = await BlockingCall.run {
                let trace = workload.trace()
                return (
                    HitRatio.measure(trace: trace, universe: workload.universe, capacity: 500, shards: 1),
                    HitRatio.measure(trace: trace, universe: workload.universe, capacity: 500, shards: 4))
            }
            print("one shard: \(one); four: \(four)")
            #expect(four.shards == 4)
            #expect(abs(one.store - four.store) < 0.02)
        }
    }
}
