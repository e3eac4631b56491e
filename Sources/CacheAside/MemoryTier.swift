import CacheAsideMemory
import Metrics
import Synchronization

/// One repository's in-process tier: decoded entities (`nil` for a row known to be
/// absent) in a ``MemoryStore``, with its metrics. What the coherence driver needs of
/// it is in the non-generic base, ``MemoryTierBase``.
@usableFromInline
final class MemoryTier<Entity: Sendable>: MemoryTierBase, @unchecked Sendable {
    @usableFromInline let store: MemoryStore<Entity?>
    /// TTLs in memory: the tier's own, at most the entry's in Redis.
    let valueTTL: Duration
    let absentTTL: Duration

    init(keyspace: String, schemaVersion: Int, policy: CachePolicy, tier: MemoryTierPolicy) {
        let metrics = MemoryTierMetrics(keyspace: keyspace)
        self.store = MemoryStore<Entity?>(
            configuration: MemoryStoreConfiguration(
                maximumEntries: tier.maximumEntries, maximumBytes: tier.maximumBytes, timeToLive: tier.ttl),
            onEviction: { n in metrics.evictions.increment(by: Int64(n)) })
        self.valueTTL = max(.zero, min(tier.ttl, policy.ttl))
        self.absentTTL = max(.zero, min(tier.ttl, policy.negativeTTL))
        super.init(
            keyspace: keyspace, schemaVersion: schemaVersion, entityType: ObjectIdentifier(Entity.self),
            tier: tier, metrics: metrics)
        // Untrusted until the coherence driver says otherwise.
        store.revokeTrust()
    }

    /// A hit, or a miss with the ticket that a fill from the Redis read about to start
    /// must bring.
    @inlinable
    func lookup(_ key: String) -> MemoryLookup<Entity?> {
        let result = store.lookup(key)
        if case .hit = result {
            metrics.hits.increment()
        } else {
            metrics.misses.increment()
        }
        return result
    }

    /// Keeps what a Redis read returned (`bytes` is the entry's size), unless the key
    /// was invalidated since the ticket was taken.
    @inline(__always)
    @usableFromInline
    func fill(_ ticket: MemoryFillTicket, with value: Entity?, size: Int) {
        store.fill(ticket, with: value, size: size, timeToLive: value == nil ? absentTTL : valueTTL)
    }

    override func invalidate(keys: [String], received: Bool) {
        store.invalidate(keys: keys)
        if received {
            receivedInvalidations.add(keys.count, ordering: .relaxed)
            metrics.invalidations.increment(by: Int64(keys.count))
        }
    }

    override func flush() {
        store.flush()
        metrics.flushes.increment()
    }

    override func trust(until deadline: MemoryInstant) { store.trust(until: deadline) }

    override func revokeTrust() { store.revokeTrust() }

    override var clock: MemoryClock { store.clock }

    override func holds(_ key: String) -> Bool { store.peek(key) != nil }

    override var statistics: MemoryStatistics { store.statistics }
}

/// What the coherence driver and the statistics need of a tier, whatever its entity.
@usableFromInline
class MemoryTierBase: @unchecked Sendable {
    let keyspace: String
    let schemaVersion: Int
    /// The entity type the tier holds, for a cast-free check on the hit path.
    @usableFromInline let entityType: ObjectIdentifier
    let tier: MemoryTierPolicy
    @usableFromInline let metrics: MemoryTierMetrics
    /// Keys invalidated by messages received from Redis (not by this process's own
    /// writes).
    let receivedInvalidations = Atomic<Int>(0)

    init(keyspace: String, schemaVersion: Int, entityType: ObjectIdentifier, tier: MemoryTierPolicy, metrics: MemoryTierMetrics) {
        self.keyspace = keyspace
        self.schemaVersion = schemaVersion
        self.entityType = entityType
        self.tier = tier
        self.metrics = metrics
    }

    /// Removes the keys and refuses fills whose tickets predate this call.
    func invalidate(keys: [String], received: Bool) {}
    /// Removes everything and refuses fills whose tickets predate this call.
    func flush() {}
    /// Serves hits until `deadline`.
    func trust(until deadline: MemoryInstant) {}
    /// Serves no hit until the next ``trust(until:)``.
    func revokeTrust() {}
    var clock: MemoryClock { .monotonic }
    /// Whether an entry for `key` is held (live or not), counting nothing: for tests.
    func holds(_ key: String) -> Bool { false }
    var statistics: MemoryStatistics { MemoryStatistics() }
}

/// The tier's swift-metrics counters (dimension `keyspace`).
@usableFromInline
final class MemoryTierMetrics: Sendable {
    @usableFromInline let hits: Counter
    @usableFromInline let misses: Counter
    let evictions: Counter
    let invalidations: Counter
    let flushes: Counter

    init(keyspace: String) {
        let dimensions = [("keyspace", keyspace)]
        hits = Counter(label: "cache_aside_memory_hits_total", dimensions: dimensions)
        misses = Counter(label: "cache_aside_memory_misses_total", dimensions: dimensions)
        evictions = Counter(label: "cache_aside_memory_evictions_total", dimensions: dimensions)
        invalidations = Counter(label: "cache_aside_memory_invalidations_total", dimensions: dimensions)
        flushes = Counter(label: "cache_aside_memory_flushes_total", dimensions: dimensions)
    }
}

extension KeyspaceState {
    /// The memory tier's live entry for `id` (`.some(nil)`: a row known to be absent),
    /// counted as a hit; nil when memory cannot answer (counting nothing: the caller
    /// then looks up again, taking the ticket of a miss).
    @inlinable
    func memoryHit<Entity: Sendable>(_ id: String, as type: Entity.Type, invalidations: InvalidationQueue) -> Entity?? {
        // Unretained: this state, which the caller borrows, keeps the tier alive.
        guard let borrowed = memoryTier, borrowed.entityType == ObjectIdentifier(Entity.self) else { return nil }
        let key = prefix.entryKey(for: id)
        if invalidations.contains(key) { return nil }
        unowned(unsafe) let tier = unsafeDowncast(borrowed, to: MemoryTier<Entity>.self)
        unowned(unsafe) let store = tier.store
        guard let value = store.hit(forKey: key) else { return nil }
        unowned(unsafe) let hits = tier.metrics.hits
        hits.increment()
        return .some(value)
    }

    /// This keyspace's tier, if it has one holding `Entity`.
    @inlinable
    func memory<Entity>(_ type: Entity.Type) -> MemoryTier<Entity>? {
        guard let memory, memory.entityType == ObjectIdentifier(Entity.self) else { return nil }
        return unsafeDowncast(memory, to: MemoryTier<Entity>.self)
    }
}
