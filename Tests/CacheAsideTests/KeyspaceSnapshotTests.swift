@testable import CacheAside
import CacheAsidePostgres
import Testing

/// The keyspaces the hit path reads without a lock (published snapshots), checked
/// without servers: which keyspaces a snapshot holds, and that the states it hands
/// out are always the ones in force.
@Suite struct KeyspaceSnapshotTests {
    static func runtime() throws -> CacheAside {
        let postgres = PGClient(configuration: try PGConfiguration(url: "postgres://nobody@127.0.0.1:9/none"))
        return try CacheAside(postgres: postgres, store: FakeStore(), namespace: "snapshots", logger: testLogger)
    }

    static func published(_ cache: CacheAside) -> [KeyspaceID: KeyspaceState] {
        cache.published.load(ordering: .acquiring).takeUnretainedValue().states
    }

    @Test func manyKeyspacesWithStablePoliciesStayOnTheLockFreePath() throws {
        let cache = try Self.runtime()
        let policy = CachePolicy(memory: MemoryTierPolicy(maximumEntries: 16, maximumBytes: 1 << 16))
        for i in 0..<200 {
            _ = try cache.keyspace("ks\(i)", schemaVersion: 1, policy: policy, entity: Item.self)
        }
        let states = Self.published(cache)
        #expect(states.count == 200)
        // Reading them again publishes nothing new and returns the published states.
        let again = try cache.keyspace("ks7", schemaVersion: 1, policy: policy, entity: Item.self)
        #expect(states[KeyspaceID(name: "ks7", schemaVersion: 1)] === again)
    }

    @Test func aKeyspaceWhoseStateIsReplacedLeavesTheSnapshotsForGood() throws {
        let cache = try Self.runtime()
        let first = CachePolicy(memory: MemoryTierPolicy(ttl: .seconds(10)))
        let second = CachePolicy(memory: MemoryTierPolicy(ttl: .seconds(20)))
        let a = KeyspaceID(name: "a", schemaVersion: 1), b = KeyspaceID(name: "b", schemaVersion: 1)
        _ = try cache.keyspace("a", schemaVersion: 1, policy: first, entity: Item.self)
        _ = try cache.keyspace("b", schemaVersion: 1, policy: first, entity: Item.self)
        #expect(Set(Self.published(cache).keys) == [a, b])
        let replaced = try cache.keyspace("a", schemaVersion: 1, policy: second, entity: Item.self)
        #expect(replaced.policy == second)
        #expect(Set(Self.published(cache).keys) == [b], "a replaced keyspace is read under the lock")
        // Back to the first policy: a new state again, still never published.
        let back = try cache.keyspace("a", schemaVersion: 1, policy: first, entity: Item.self)
        #expect(back.policy == first && back !== replaced)
        _ = try cache.keyspace("c", schemaVersion: 1, policy: first, entity: Item.self)
        #expect(Set(Self.published(cache).keys) == [b, KeyspaceID(name: "c", schemaVersion: 1)])
    }

    @Test func pastTheLimitNothingIsPublishedAndStatesStayRight() throws {
        let cache = try Self.runtime()
        let policy = CachePolicy(memory: MemoryTierPolicy(maximumEntries: 16, maximumBytes: 1 << 16))
        for i in 0..<(KeyspaceSnapshot.limit + 20) {
            _ = try cache.keyspace("ks\(i)", schemaVersion: 1, policy: policy, entity: Item.self)
        }
        #expect(Self.published(cache).isEmpty, "the empty snapshot is published for good")
        for i in [0, 100, KeyspaceSnapshot.limit + 10] {
            let state = try cache.keyspace("ks\(i)", schemaVersion: 1, policy: policy, entity: Item.self)
            #expect(state.prefix.keyspace == "ks\(i)" && state.policy == policy)
        }
    }
}
