@testable import CacheAsideMemory
import Synchronization
import Testing

/// A clock the test moves by hand.
final class ManualTime: Sendable {
    private let now = Mutex(Duration.seconds(1000))

    var clock: MemoryClock { MemoryClock { [self] in self.now.withLock { $0 } } }

    func advance(by duration: Duration) {
        now.withLock { $0 += duration }
    }
}

struct User: Sendable, Equatable {
    var id: Int64
    var name: String
    var email: String

    init(_ id: Int64, name: String? = nil) {
        self.id = id
        self.name = name ?? "User \(id)"
        self.email = "user\(id)@example.com"
    }
}

func key(_ id: Int) -> String { "app:user:v1:\(id)" }

extension MemoryStore {
    /// Looks `key` up and, on a miss, fills it at once with `value` (as a read that
    /// raced nothing would); returns whether the lookup hit.
    @discardableResult
    func readThrough(_ key: String, _ value: Value, size: Int = 64) -> Bool {
        switch lookup(key) {
        case .hit: return true
        case .miss(let ticket):
            fill(ticket, with: value, size: size)
            return false
        }
    }
}

@Suite struct MemoryStoreTests {
    let time = ManualTime()

    func store<V>(_: V.Type = User.self, entries: Int = 1000, bytes: Int = 1 << 30, ttl: Duration = .seconds(10), shards: Int = 1) -> MemoryStore<V> {
        MemoryStore<V>(
            configuration: MemoryStoreConfiguration(maximumEntries: entries, maximumBytes: bytes, timeToLive: ttl, shardCount: shards),
            clock: time.clock)
    }

    @Test func aFilledValueIsServedUntilItsTimeToLiveRunsOut() {
        let store = store()
        guard case .miss(let ticket) = store.lookup(key(1)) else { Issue.record("an empty store hit"); return }
        #expect(store.fill(ticket, with: User(1), size: 60))
        #expect(store.value(forKey: key(1)) == User(1))
        time.advance(by: .milliseconds(9999))
        #expect(store.value(forKey: key(1)) == User(1))
        time.advance(by: .milliseconds(1))
        #expect(store.value(forKey: key(1)) == nil)
        let stats = store.statistics
        #expect(stats.hits == 2 && stats.misses == 2 && stats.fills == 1 && stats.expirations == 1)
        #expect(stats.entries == 0 && stats.bytes == store.structureBytes)
    }

    @Test func aFillMayNameItsOwnTimeToLiveAndZeroStoresNothing() {
        let store = store()
        store.fill(store.fillTicket(forKey: key(1)), with: User(1), size: 60, timeToLive: .seconds(2))
        #expect(!store.fill(store.fillTicket(forKey: key(2)), with: User(2), size: 60, timeToLive: .zero))
        time.advance(by: .seconds(1))
        #expect(store.value(forKey: key(1)) != nil)
        #expect(store.value(forKey: key(2)) == nil)
        time.advance(by: .seconds(1))
        #expect(store.value(forKey: key(1)) == nil)
    }

    @Test func absentRowsAreCachedAsNilOfAnOptionalValue() {
        let store = store(User?.self)
        store.fill(store.fillTicket(forKey: key(7)), with: nil, size: 0)
        switch store.lookup(key(7)) {
        case .hit(let user): #expect(user == nil)
        case .miss: Issue.record("the absent marker was not served")
        }
        #expect(store.value(forKey: key(8)) == nil)  // a miss: no entry at all
        #expect(store.statistics.hits == 1)
    }

    /// The classic race: the read that will fill memory is in flight when the
    /// invalidation arrives; the invalidation must win.
    @Test func anInvalidationDuringTheReadRefusesItsFill() {
        let store = store()
        store.readThrough(key(1), User(1, name: "old"))
        store.invalidate(key(1))  // a write elsewhere
        guard case .miss(let ticket) = store.lookup(key(1)) else { Issue.record("invalidated entry still served"); return }
        // The read (a GET) is in flight and returns the old row; meanwhile the key is
        // written again and its invalidation arrives first.
        store.invalidate(key(1))
        #expect(!store.fill(ticket, with: User(1, name: "old"), size: 60))
        #expect(store.value(forKey: key(1)) == nil)
        // A read that starts after the invalidation fills normally.
        guard case .miss(let fresh) = store.lookup(key(1)) else { Issue.record("unexpected hit"); return }
        #expect(store.fill(fresh, with: User(1, name: "new"), size: 60))
        #expect(store.value(forKey: key(1))?.name == "new")
        let stats = store.statistics
        #expect(stats.refusedFills == 1 && stats.invalidations == 2 && stats.invalidatedEntries == 1)
    }

    @Test func anInvalidationOfAKeyInAnotherStripeLeavesAFillAlone() throws {
        let store = store()
        let target = key(1)
        let stripe = ShardCore.stripe(of: store.hash(target))
        let other = try #require((2..<10_000).lazy.map(key).first {
            ShardCore.stripe(of: store.hash($0)) != stripe
        })
        let ticket = store.fillTicket(forKey: target)
        store.invalidate(other)
        #expect(store.fill(ticket, with: User(1), size: 60))
    }

    @Test func invalidatingManyKeysRemovesEachAndRefusesTheirPendingFills() {
        let store = store(shards: 4)
        for id in 0..<100 { store.readThrough(key(id), User(Int64(id))) }
        let pending = (100..<110).map { store.fillTicket(forKey: key($0)) }
        store.invalidate(keys: (0..<50).map(key) + (100..<110).map(key))
        for id in 0..<50 { #expect(store.value(forKey: key(id)) == nil) }
        for id in 50..<100 { #expect(store.value(forKey: key(id)) == User(Int64(id))) }
        for (i, ticket) in pending.enumerated() { #expect(!store.fill(ticket, with: User(Int64(100 + i)), size: 60)) }
        let stats = store.statistics
        #expect(stats.invalidations == 60 && stats.invalidatedEntries == 50 && stats.entries == 50)
    }

    @Test func aFlushRemovesEverythingAndRefusesEveryPendingFill() {
        let store = store(shards: 8)
        for id in 0..<200 { store.readThrough(key(id), User(Int64(id))) }
        let pending = (200..<220).map { store.fillTicket(forKey: key($0)) }
        store.flush()
        #expect(store.statistics.entries == 0 && store.statistics.bytes == store.structureBytes)
        for id in 0..<200 { #expect(store.value(forKey: key(id)) == nil) }
        for (i, ticket) in pending.enumerated() { #expect(!store.fill(ticket, with: User(Int64(200 + i)), size: 60)) }
        #expect(store.readThrough(key(1), User(1)) == false)
        #expect(store.readThrough(key(1), User(1)) == true)
        #expect(store.statistics.flushes == 1)
    }

    @Test func theEntryBoundHoldsAndEvictionsAreCounted() {
        let store = store(entries: 100)
        for id in 0..<1000 {
            store.readThrough(key(id), User(Int64(id)))
            #expect(store.statistics.entries <= 100)
        }
        let stats = store.statistics
        #expect(stats.entries == 100)
        #expect(stats.evictions == 900)
    }

    @Test func theByteBoundCoversTheEntriesChargesAndTheStoresOwnStructures() {
        let bound = 200_000
        let store = store(entries: 1_000_000, bytes: bound)
        #expect(store.charge(forKey: key(123_456), size: 200) == 200)  // an 18-byte key lives in the entry's record
        let long = String(repeating: "k", count: 49)  // 32 + 49 bytes of array storage, a 96-byte chunk
        #expect(store.charge(forKey: long, size: 200) == 200 + 96)
        let empty = store.statistics.bytes
        #expect(empty == store.structureBytes && empty > 0 && empty < 10_000)
        for id in 100_000..<102_000 {
            store.readThrough(key(id), User(Int64(id)), size: 200)
            #expect(store.statistics.bytes <= bound)
        }
        let stats = store.statistics
        #expect(stats.bytes == stats.entries * 200 + store.structureBytes)
        // Records, index and ghost take their share: fewer entries than 200 bytes each.
        #expect(stats.entries * (200 + store.recordBytes) <= bound)
        #expect(stats.entries > bound / (200 + store.recordBytes) / 2)
        #expect(stats.evictions == UInt64(2000 - stats.entries))
    }

    @Test func aTicketFillsOnlyTheStoreThatIssuedIt() {
        let one = store(), other = store()
        #expect(!other.fill(one.fillTicket(forKey: key(1)), with: User(1), size: 60))
        #expect(other.statistics.entries == 0)
        #expect(one.fill(one.fillTicket(forKey: key(1)), with: User(1), size: 60))
    }

    @Test func anExpiredEntryIsEvictedBeforeLiveOnesWhateverItsFrequency() {
        let store = store(entries: 2)
        store.fill(store.fillTicket(forKey: key(1)), with: User(1), size: 60, timeToLive: .seconds(1))
        store.fill(store.fillTicket(forKey: key(2)), with: User(2), size: 60, timeToLive: .seconds(100))
        for _ in 0..<3 { #expect(store.value(forKey: key(1)) != nil) }  // key 1 is hot
        time.advance(by: .seconds(2))
        store.fill(store.fillTicket(forKey: key(3)), with: User(3), size: 60)
        #expect(store.value(forKey: key(2)) == User(2))  // not evicted for the expired hot one
        #expect(store.value(forKey: key(3)) == User(3))
        #expect(store.statistics.evictions == 1)
    }

    @Test func aValueLargerThanAShardsBudgetIsNotStored() {
        let store = store(bytes: 20_000)
        store.readThrough(key(1), User(1))
        #expect(!store.fill(store.fillTicket(forKey: key(2)), with: User(2), size: 20_000))
        #expect(store.value(forKey: key(1)) == User(1))  // nothing was evicted for it
        #expect(store.statistics.oversizedFills == 1)
    }

    @Test func refillingAKeyReplacesItsValue() {
        let store = store()
        store.fill(store.fillTicket(forKey: key(1)), with: User(1, name: "a"), size: 60)
        let bytes = store.statistics.bytes
        store.fill(store.fillTicket(forKey: key(1)), with: User(1, name: "b"), size: 60)
        #expect(store.value(forKey: key(1))?.name == "b")
        #expect(store.statistics.entries == 1 && store.statistics.bytes == bytes)
    }

    @Test func hitsAreServedOnlyWhileTheStoreIsTrusted() {
        let store = store()
        store.readThrough(key(1), User(1))
        #expect(store.isTrusted)
        store.revokeTrust()
        #expect(store.value(forKey: key(1)) == nil)
        // Fills still land while untrusted, and are served once trust returns.
        guard case .miss(let ticket) = store.lookup(key(2)) else { Issue.record("hit while untrusted"); return }
        #expect(store.fill(ticket, with: User(2), size: 60))
        store.trust(until: store.clock.now() + .milliseconds(500))
        #expect(store.value(forKey: key(1)) == User(1))
        #expect(store.value(forKey: key(2)) == User(2))
        time.advance(by: .milliseconds(500))
        #expect(!store.isTrusted)
        #expect(store.value(forKey: key(1)) == nil)
        store.trustIndefinitely()
        #expect(store.value(forKey: key(1)) == User(1))
        #expect(store.statistics.untrustedLookups == 3)
    }

    @Test func aHitOnlyLookupCountsItsHitsAndNothingElse() {
        let store = store()
        store.readThrough(key(1), User(1))
        let before = store.statistics
        #expect(store.hit(forKey: key(1)) == User(1))
        #expect(store.hit(forKey: key(2)) == nil, "no entry")
        time.advance(by: .seconds(10))
        #expect(store.hit(forKey: key(1)) == nil, "expired")
        #expect(store.statistics.entries == 1, "the expired entry is left for the full lookup to remove")
        time.advance(by: .seconds(-10))
        store.revokeTrust()
        #expect(store.hit(forKey: key(1)) == nil, "untrusted")
        let after = store.statistics
        #expect(after.hits == before.hits + 1)
        #expect(after.misses == before.misses && after.expirations == before.expirations)
        #expect(after.untrustedLookups == before.untrustedLookups)
    }

    @Test func configurationsAreClampedToWorkingValues() {
        let tiny = MemoryStore<Int>(configuration: MemoryStoreConfiguration(maximumEntries: 0, maximumBytes: 0))
        #expect(tiny.shardCount == 1)
        #expect(!tiny.fill(tiny.fillTicket(forKey: "k"), with: 1, size: 0))  // no entry fits in 1 byte
        #expect(MemoryStore<Int>(configuration: MemoryStoreConfiguration(shardCount: 3)).shardCount == 4)
        #expect(MemoryStore<Int>(configuration: MemoryStoreConfiguration(shardCount: 10_000)).shardCount == 256)
        let automatic = MemoryStore<Int>(configuration: MemoryStoreConfiguration(maximumEntries: 1000, maximumBytes: 1 << 30))
        #expect(automatic.shardCount <= 8)  // at least 128 entries per shard
    }
}
