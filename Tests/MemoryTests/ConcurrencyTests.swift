import CacheAsideMemory
import IOLoop
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension MemoryWorkloadTests {
    /// Readers, writers and flushes on real threads at once, against a model "database":
    /// per key, a version that writers bump before invalidating, and a published floor
    /// that writers raise after invalidating. A read that starts after a write's
    /// invalidation returned must never see an older version; in-flight fills that lose
    /// the race must be refused.
    @Suite struct ConcurrencyTests {
        final class Database: Sendable {
            private struct Row {
                var version = 0
                var floor = 0  // the version every read starting now must see at least
            }

            private let rows: Mutex<[Row]>

            init(keys: Int) {
                rows = Mutex(Array(repeating: Row(), count: keys))
            }

            func version(_ k: Int) -> Int { rows.withLock { $0[k].version } }
            func floor(_ k: Int) -> Int { rows.withLock { $0[k].floor } }

            /// Commits a new version and returns it.
            func commit(_ k: Int) -> Int {
                rows.withLock { rows in
                    rows[k].version += 1
                    return rows[k].version
                }
            }

            /// Marks `version` returned to its writer: reads that start now must see it.
            func publish(_ k: Int, _ version: Int) {
                rows.withLock { $0[k].floor = max($0[k].floor, version) }
            }
        }

        final class Progress: Sendable {
            let writersDone = Atomic(0)
        }

        struct Outcome: Sendable {
            var hits = 0
            var refused = 0
            var staleReads = 0
        }

        @Test(arguments: [1, 8])
        func noReadStartingAfterAnInvalidationSeesAnOlderVersion(shards: Int) async {
            let keyCount = 64
            let store = MemoryStore<Int>(configuration: MemoryStoreConfiguration(
                maximumEntries: 48, maximumBytes: 1 << 30, timeToLive: .seconds(3600), shardCount: shards))
            let database = Database(keys: keyCount)
            let keys = (0..<keyCount).map { "app:item:v1:\($0)" }
            let progress = Progress()
            let writers = 2

            let outcomes = await withTaskGroup(of: Outcome.self) { group in
                for reader in 0..<2 {
                    group.addTask {
                        await BlockingCall.run {
                            var outcome = Outcome()
                            var state = UInt64(reader + 1) &* 0x9E37_79B9_7F4A_7C15
                            var operations = 0
                            // Read until the writers are done, and at least 10,000 times.
                            while operations < 10_000 || progress.writersDone.load(ordering: .acquiring) < writers {
                                operations += 1
                                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                                let k = Int(state >> 33) % keyCount
                                let floor = database.floor(k)
                                switch store.lookup(keys[k]) {
                                case .hit(let version):
                                    outcome.hits += 1
                                    if version < floor { outcome.staleReads += 1 }
                                case .miss(let ticket):
                                    // The "GET": whatever version is current now...
                                    let version = database.version(k)
                                    // ...arrives a little later, sometimes after a write.
                                    if state & 7 == 0 { sched_yield() }
                                    if !store.fill(ticket, with: version, size: 8) { outcome.refused += 1 }
                                }
                            }
                            return outcome
                        }
                    }
                }
                for writer in 0..<writers {
                    group.addTask {
                        await BlockingCall.run {
                            var state = UInt64(writer + 100)
                            for write in 0..<3000 {
                                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                                let k = Int(state >> 33) % keyCount
                                // Commit, invalidate, and only then is the write "returned".
                                let version = database.commit(k)
                                store.invalidate(keys[k])
                                database.publish(k, version)
                                // Now and then everything goes, as when the invalidation channel drops.
                                if write % 300 == 150 { store.flush() }
                                if state & 15 == 0 { sched_yield() }
                            }
                            progress.writersDone.add(1, ordering: .releasing)
                            return Outcome()
                        }
                    }
                }
                var total = Outcome()
                for await outcome in group {
                    total.hits += outcome.hits
                    total.refused += outcome.refused
                    total.staleReads += outcome.staleReads
                }
                return total
            }

            print("\(shards) shard(s): \(outcomes.hits) hits, \(outcomes.refused) refused fills, \(outcomes.staleReads) stale reads; \(store.statistics)")
            #expect(outcomes.staleReads == 0)
            #expect(outcomes.hits > 0)
            // Once the writers are done, every entry still held is the latest version.
            var stale = 0
            for (k, key) in keys.enumerated() {
                if let version = store.value(forKey: key), version != database.version(k) {
                    stale += 1
                }
            }
            #expect(stale == 0)
            let stats = store.statistics
            #expect(stats.entries <= 48)
            #expect(stats.invalidations == UInt64(writers * 3000))
            #expect(stats.flushes == UInt64(writers * 10))
            #expect(stats.hits + stats.misses >= UInt64(2 * 10_000))
        }
    }
}
