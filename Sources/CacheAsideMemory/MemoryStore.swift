import Synchronization

/// An in-process store of decoded values keyed by cache key, for the tier in front of
/// Redis: bounded by entry count and by bytes, each entry with its own time to live,
/// evicting by S3-FIFO (hot entries survive a scan), safe under many concurrent tasks,
/// with the primitives that keep it coherent with other processes: invalidate one key or
/// many, flush everything, and fill tickets that refuse a value read before an
/// invalidation.
///
/// ```swift
/// let store = MemoryStore<User?>(configuration: .init(maximumBytes: 32 << 20))
/// switch store.lookup(key) {
/// case .hit(let user):
///     return user                           // nil: the row is known to be absent
/// case .miss(let ticket):
///     let (user, json) = try await readFromRedis(key)   // the ticket predates this read
///     store.fill(ticket, with: user, size: json.count)  // refused if `key` was
///     return user                                       // invalidated meanwhile
/// }
/// ```
///
/// **Fills and invalidations.** A value read from a shared cache may be stale by the
/// time it arrives: an invalidation of its key can overtake the reply (it travels on
/// another connection, or is processed first). ``lookup(_:)`` therefore hands out a
/// ``MemoryFillTicket`` with the key's invalidation sequence number *before* the read
/// starts, and ``fill(_:with:size:timeToLive:)`` refuses the value if an invalidation of
/// the key (or a ``flush()``) came in between. The numbers are kept per stripe of the
/// hash space (256 per shard), so an invalidation of another key of the same stripe
/// refuses the fill as well: rarely, and only at the cost of a later miss.
///
/// **Trust.** Hits are served only while the store is trusted, which it is from the
/// start until ``revokeTrust()``; ``trust(until:)`` sets a deadline. A coherence
/// driver that proves its invalidation channel alive (a PING answered on the channel
/// after every invalidation sent before it) extends the deadline with each proof, so
/// that a channel that silently stalls stops memory hits within a known time. While
/// not trusted, lookups miss and fills still land (they are served once trust returns).
///
/// **Cost.** A hit hashes the key once, takes one shard's lock, finds the entry in an
/// open-addressing index, checks its expiry and raises a 2-bit frequency; it reorders
/// nothing. Values are returned as stored (a copy of a struct, retaining its storage).
///
/// Keys are hashed (with a seed of the store's own) and compared by their UTF-8 bytes,
/// as Redis compares keys.
public final class MemoryStore<Value: Sendable>: @unchecked Sendable {
    /// The bounds and defaults in force.
    public let configuration: MemoryStoreConfiguration
    /// The time source of expiry and trust.
    public let clock: MemoryClock
    /// The number of shards (a power of two).
    public let shardCount: Int

    @usableFromInline let shardBase: UnsafeMutableRawPointer
    @usableFromInline let shardStride: Int
    @usableFromInline let shardMask: UInt64
    @usableFromInline let timeToLiveNanoseconds: Int64
    @usableFromInline let keyHash = KeyHash(seed: UInt64.random(in: UInt64.min...UInt64.max))
    @usableFromInline let trustLimit = Atomic<Int64>(Int64.max)
    @usableFromInline let untrustedLookups = Atomic<UInt64>(0)
    @usableFromInline let onEviction: (@Sendable (Int) -> Void)?
    private let flushes = Atomic<UInt64>(0)

    /// Creates an empty store.
    ///
    /// - Parameters:
    ///   - configuration: bounds, default time to live, shards.
    ///   - clock: the time source of expiry and trust.
    ///   - onEviction: called after a fill that evicted entries to make room, with how
    ///     many (outside the shard's lock, on the filling thread): for an evictions
    ///     metric.
    public init(
        configuration: MemoryStoreConfiguration = MemoryStoreConfiguration(), clock: MemoryClock = .monotonic,
        onEviction: (@Sendable (Int) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.clock = clock
        self.onEviction = onEviction
        let shards = configuration.resolvedShardCount
        self.shardCount = shards
        self.shardMask = UInt64(shards - 1)
        self.timeToLiveNanoseconds = MemoryInstant.nanoseconds(of: configuration.timeToLive)
        let entriesPerShard = (max(1, configuration.maximumEntries) + shards - 1) / shards
        let bytesPerShard = max(1, configuration.maximumBytes / shards)
        let stride = (MemoryLayout<Mutex<Shard<Value>>>.stride + 127) & ~127
        self.shardStride = stride
        self.shardBase = UnsafeMutableRawPointer.allocate(byteCount: stride * shards, alignment: 128)
        for i in 0..<shards {
            (shardBase + i * stride).bindMemory(to: Mutex<Shard<Value>>.self, capacity: 1)
                .initialize(to: Mutex(Shard(core: ShardCore(
                    maximumEntries: entriesPerShard, maximumBytes: bytesPerShard,
                    valueStride: MemoryLayout<Value?>.stride, fixedBytes: stride))))
        }
    }

    deinit {
        for i in 0..<shardCount {
            (shardBase + i * shardStride).assumingMemoryBound(to: Mutex<Shard<Value>>.self).deinitialize(count: 1)
        }
        shardBase.deallocate()
    }

    @inlinable
    func hash(_ key: String) -> UInt64 {
        keyHash(key)
    }

    @inlinable
    func shard(_ hash: UInt64) -> UnsafeMutablePointer<Mutex<Shard<Value>>> {
        shards.shard(hash)
    }

    /// Where the shards are, as a value: the hit path's closures capture this rather
    /// than the store, so that a lookup never retains the store (whose reference count
    /// every core would then write).
    @inlinable
    var shards: ShardTable<Value> { ShardTable(base: shardBase, stride: shardStride, mask: shardMask) }

    // MARK: Reading and filling

    /// The live value for `key`, or `nil` (a miss: no entry, an expired one, or the
    /// store is not trusted). A hit raises the entry's frequency.
    @inlinable
    public func value(forKey key: String) -> Value? {
        liveValue(forKey: key, countingMisses: true)
    }

    /// The live value for `key` when the store is trusted and holds one, counted as a
    /// hit (its frequency raised); nil otherwise, counting nothing and changing nothing,
    /// so that a caller may then take the full ``lookup(_:)``. The hit path of a cache
    /// that tries memory first.
    @inlinable
    public func hit(forKey key: String) -> Value? {
        liveValue(forKey: key, countingMisses: false)
    }

    /// ``value(forKey:)`` (`countingMisses`: misses, expired entries and untrusted
    /// lookups counted, an expired entry removed) or ``hit(forKey:)`` (only hits counted,
    /// nothing else changed).
    @inlinable
    func liveValue(forKey key: String, countingMisses: Bool) -> Value? {
        let now = clock.nanoseconds()
        guard now < trustLimit.load(ordering: .relaxed) else {
            if countingMisses { untrustedLookups.add(1, ordering: .relaxed) }
            return nil
        }
        // The closure captures values only (no reference to the store, whose reference
        // count every core would write); the store lives until the lookup is done.
        let keyHash = self.keyHash, shards = self.shards
        return withExtendedLifetime(self) {
            withKeyBytes(key) { bytes in
                let hash = keyHash.hash(bytes: bytes.buffer)
                return shards.shard(hash).pointee.withLock { shard in
                    let slot = shard.core.lookup(bytes, hash: hash, now: now, countingMisses: countingMisses)
                    if slot >= 0 { return shard.values[Int(slot)] }
                    if !shard.core.freed.isEmpty { shard.releaseFreed() }
                    return nil
                }
            }
        }
    }

    /// The entry held for `key`, live or not yet removed, whatever the trust: for
    /// tests and diagnostics. Counts nothing and changes nothing (no frequency raised,
    /// no expired entry removed).
    public func peek(_ key: String) -> (value: Value, expired: Bool)? {
        withKeyBytes(key) { bytes in
            let hash = keyHash.hash(bytes: bytes.buffer)
            let now = clock.nanoseconds()
            return shard(hash).pointee.withLock { shard in
                guard let (slot, expiresAt) = shard.core.peek(bytes, hash: hash), let value = shard.values[Int(slot)] else {
                    return nil
                }
                return (value, expiresAt <= now)
            }
        }
    }

    /// A hit, or a miss with the ticket that a fill of `key` must bring: take it before
    /// the read whose result will fill the store.
    @inlinable
    public func lookup(_ key: String) -> MemoryLookup<Value> {
        let now = clock.nanoseconds()
        let trusted = now < trustLimit.load(ordering: .relaxed)
        if !trusted { untrustedLookups.add(1, ordering: .relaxed) }
        // The closure captures values only (no reference to the store, whose reference
        // count every core would write); the store lives until the lookup is done.
        let keyHash = self.keyHash, shards = self.shards
        return withExtendedLifetime(self) {
            withKeyBytes(key) { bytes in
                let hash = keyHash.hash(bytes: bytes.buffer)
                return shards.shard(hash).pointee.withLock { shard in
                    if trusted {
                        let slot = shard.core.lookup(bytes, hash: hash, now: now)
                        if slot >= 0, let value = shard.values[Int(slot)] { return .hit(value) }
                        if !shard.core.freed.isEmpty { shard.releaseFreed() }
                    }
                    return .miss(MemoryFillTicket(key: key, hash: hash, sequence: shard.core.sequence(for: hash), issuer: keyHash.seed))
                }
            }
        }
    }

    /// A ticket for filling `key` without looking it up first; take it before the read.
    public func fillTicket(forKey key: String) -> MemoryFillTicket {
        let hash = hash(key)
        let sequence = shard(hash).pointee.withLock { $0.core.sequence(for: hash) }
        return MemoryFillTicket(key: key, hash: hash, sequence: sequence, issuer: keyHash.seed)
    }

    /// Stores `value` for the ticket's key unless the key was invalidated (or the store
    /// flushed) since the ticket was taken; returns whether it was stored. A ticket of
    /// another store stores nothing.
    ///
    /// - Parameters:
    ///   - size: the heap bytes the value holds, as the caller estimates them (the
    ///     length of its JSON is a fair estimate for small structs of strings and
    ///     numbers); see ``charge(forKey:size:)``. An entry that does not fit in a
    ///     shard's share of the byte bound even alone is not stored.
    ///   - timeToLive: how long the entry lives (the configuration's ``MemoryStoreConfiguration/timeToLive``
    ///     when `nil`); zero or less stores nothing.
    ///
    /// Filling a key that already has an entry replaces it (no invalidation came in
    /// between, so both values are equally fresh). Making room evicts other entries.
    @inlinable
    @discardableResult
    public func fill(_ ticket: MemoryFillTicket, with value: Value, size: Int, timeToLive: Duration? = nil) -> Bool {
        let ttl = timeToLive.map { MemoryInstant.nanoseconds(of: $0) } ?? timeToLiveNanoseconds
        guard ttl > 0, ticket.issuer == keyHash.seed else { return false }
        let now = clock.nanoseconds()
        let expiresAt = MemoryInstant.adding(now, ttl)
        let charge = self.charge(forKey: ticket.key, size: size)
        let (stored, evicted) = withKeyBytes(ticket.key) { bytes in
            shard(ticket.hash).pointee.withLock { shard -> (Bool, UInt64) in
                let evictionsBefore = shard.core.counters.evictions
                let slot = shard.core.insert(
                    bytes, hash: ticket.hash, charge: charge, now: now, expiresAt: expiresAt, sequence: ticket.sequence)
                if !shard.core.freed.isEmpty { shard.releaseFreed() }
                let evicted = shard.core.counters.evictions &- evictionsBefore
                guard slot >= 0 else { return (false, evicted) }
                shard.store(value, at: slot)
                return (true, evicted)
            }
        }
        if evicted > 0, let onEviction { onEviction(Int(truncatingIfNeeded: evicted)) }
        return stored
    }

    /// The bytes an entry's key and value are charged: `size` (at least 0), plus, for a
    /// key longer than 48 UTF-8 bytes, the heap storage of the store's copy (shorter
    /// keys live inside the entry's record).
    ///
    /// The store's own structures are charged too, as allocated: each entry's record
    /// and value slot (``recordBytes`` each, reserved an eighth at a time), the index
    /// and the ghost queue, and a few kilobytes per shard. The byte bound covers all of
    /// it; what it cannot see is how far `size` is from the value's real footprint.
    public func charge(forKey key: String, size: Int) -> Int {
        max(0, size) + StoredKey.heapBytes(count: key.utf8.count)
    }

    /// The bytes of one entry's record and value slot.
    public var recordBytes: Int {
        MemoryLayout<ShardCore.Slot>.stride + MemoryLayout<Value?>.stride
    }

    // MARK: Coherence

    /// Removes `key`'s entry, if any, and refuses every fill of it whose ticket was
    /// taken before this call.
    public func invalidate(_ key: String) {
        let released: Value?? = withKeyBytes(key) { bytes in
            let hash = keyHash.hash(bytes: bytes.buffer)
            return shard(hash).pointee.withLock { shard in
                shard.core.invalidate(bytes, hash: hash)
                return shard.takeFreed()
            }
        }
        _ = released  // dropped outside the lock
    }

    /// ``invalidate(_:)`` for each key, taking each shard's lock once.
    public func invalidate<Keys: Sequence<String>>(keys: Keys) {
        var byShard: [[(key: String, hash: UInt64)]] = Array(repeating: [], count: shardCount)
        for key in keys {
            let hash = hash(key)
            byShard[Int(truncatingIfNeeded: hash & shardMask)].append((key, hash))
        }
        for (index, group) in byShard.enumerated() where !group.isEmpty {
            let released: [Value?] = shard(UInt64(index)).pointee.withLock { shard in
                var released: [Value?] = []
                for (key, hash) in group {
                    withKeyBytes(key) { shard.core.invalidate($0, hash: hash) }
                    if let value = shard.takeFreed() { released.append(value) }
                }
                return released
            }
            _ = released
        }
    }

    /// Removes every entry and refuses every fill whose ticket was taken before this
    /// call. For when invalidations may have been lost: the invalidation channel
    /// dropped or was re-established, a redirect broke, the server was flushed.
    public func flush() {
        flushes.add(1, ordering: .relaxed)
        for index in 0..<shardCount {
            let released: [Value?] = shard(UInt64(index)).pointee.withLock { shard in
                shard.core.flush()
                let values = shard.values
                shard.values = []
                return values
            }
            _ = released  // the values are released here, outside the lock
        }
    }

    /// Serves hits until `deadline` (on ``clock``), replacing any earlier deadline.
    public func trust(until deadline: MemoryInstant) {
        trustLimit.store(deadline.nanoseconds, ordering: .relaxed)
    }

    /// Serves hits again with no deadline (the state a store starts in).
    public func trustIndefinitely() {
        trustLimit.store(Int64.max, ordering: .relaxed)
    }

    /// Stops serving hits until ``trust(until:)`` or ``trustIndefinitely()``.
    public func revokeTrust() {
        trustLimit.store(Int64.min, ordering: .relaxed)
    }

    /// Until when hits are served (``MemoryInstant/nanoseconds`` `Int64.min`: not at
    /// all; `Int64.max`: with no deadline).
    public var trustDeadline: MemoryInstant {
        MemoryInstant(nanoseconds: trustLimit.load(ordering: .relaxed))
    }

    /// Whether hits are served now.
    public var isTrusted: Bool {
        clock.nanoseconds() < trustLimit.load(ordering: .relaxed)
    }

    // MARK: Observation

    /// The counters and current size, summed over the shards (each read under its lock;
    /// the sum is not one atomic snapshot).
    public var statistics: MemoryStatistics {
        var stats = MemoryStatistics()
        for index in 0..<shardCount {
            shard(UInt64(index)).pointee.withLock { shard in
                let c = shard.core.counters
                stats.hits += c.hits
                stats.misses += c.misses
                stats.fills += c.fills
                stats.refusedFills += c.refusedFills
                stats.oversizedFills += c.oversizedFills
                stats.evictions += c.evictions
                stats.expirations += c.expirations
                stats.invalidations += c.invalidations
                stats.invalidatedEntries += c.invalidatedEntries
                stats.entries += shard.core.count
                stats.bytes += shard.core.bytes
            }
        }
        stats.untrustedLookups = untrustedLookups.load(ordering: .relaxed)
        stats.flushes = flushes.load(ordering: .relaxed)
        return stats
    }

    /// The part of ``MemoryStatistics/bytes`` that the store's own structures hold
    /// (records, value slots, index, ghost, shards), without the entries' charges.
    public var structureBytes: Int {
        var total = 0
        for index in 0..<shardCount {
            total += shard(UInt64(index)).pointee.withLock { $0.core.structureBytes }
        }
        return total
    }
}

/// The result of ``MemoryStore/lookup(_:)``.
public enum MemoryLookup<Value: Sendable>: Sendable {
    /// The live value.
    case hit(Value)
    /// No live value (or the store is not trusted): read elsewhere, then fill with this
    /// ticket.
    case miss(MemoryFillTicket)
}

/// Permission to fill one key of one store, valid until the key is invalidated or the
/// store flushed. Taken before the read that produces the value (see
/// ``MemoryStore/lookup(_:)``); only the store that issued it accepts it.
public struct MemoryFillTicket: Sendable {
    /// The key the ticket fills.
    public let key: String
    @usableFromInline let hash: UInt64
    @usableFromInline let sequence: UInt64
    @usableFromInline let issuer: UInt64  // the issuing store's hash seed

    @usableFromInline
    init(key: String, hash: UInt64, sequence: UInt64, issuer: UInt64) {
        self.key = key
        self.hash = hash
        self.sequence = sequence
        self.issuer = issuer
    }
}

/// Counters of a ``MemoryStore`` since it was created, and its current size. The
/// counters only grow; export them as metrics counters (entries and bytes as gauges).
public struct MemoryStatistics: Sendable, Hashable {
    /// Lookups served from memory.
    public var hits: UInt64 = 0
    /// Lookups that found no live entry while the store was trusted.
    public var misses: UInt64 = 0
    /// Lookups while the store was not trusted (none of them served from memory).
    public var untrustedLookups: UInt64 = 0
    /// Values stored.
    public var fills: UInt64 = 0
    /// Fills refused because their key was invalidated, or the store flushed, after
    /// their ticket was taken.
    public var refusedFills: UInt64 = 0
    /// Fills refused because the value alone exceeds a shard's byte budget.
    public var oversizedFills: UInt64 = 0
    /// Entries evicted to make room.
    public var evictions: UInt64 = 0
    /// Entries found expired (and removed) by a lookup.
    public var expirations: UInt64 = 0
    /// Invalidations received (keys, whether or not an entry was held).
    public var invalidations: UInt64 = 0
    /// Entries removed by those invalidations.
    public var invalidatedEntries: UInt64 = 0
    /// Flushes.
    public var flushes: UInt64 = 0
    /// Entries held now.
    public var entries: Int = 0
    /// Bytes charged now: the entries' charges and the store's own structures
    /// (see ``MemoryStore/charge(forKey:size:)``); at most the configured bound.
    public var bytes: Int = 0

    /// Creates zeroed statistics.
    public init() {}
}

/// One shard: the bookkeeping and the values, under one lock.
@usableFromInline
struct Shard<Value> {
    @usableFromInline var core: ShardCore
    @usableFromInline var values: [Value?] = []

    @usableFromInline
    init(core: ShardCore) {
        self.core = core
    }

    /// Releases the values of the slots the last operation freed.
    @inlinable
    mutating func releaseFreed() {
        for slot in core.freed { values[Int(slot)] = nil }
        core.freed.removeAll(keepingCapacity: true)
    }

    /// Takes the value of the one slot the last operation freed, if any, so that the
    /// caller releases it outside the lock.
    @inlinable
    mutating func takeFreed() -> Value?? {
        guard let slot = core.freed.first else { return nil }
        let value = values[Int(slot)]
        releaseFreed()
        return value
    }

    @inlinable
    mutating func store(_ value: Value, at slot: Int32) {
        let index = Int(slot)
        if index < values.count {
            values[index] = value
        } else {
            if values.capacity < core.reservedSlots { values.reserveCapacity(core.reservedSlots) }
            values.append(value)
        }
    }
}

/// The shards' memory, as a value (see ``MemoryStore/shards``).
@usableFromInline
struct ShardTable<Value>: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let stride: Int
    @usableFromInline let mask: UInt64

    @inlinable
    init(base: UnsafeMutableRawPointer, stride: Int, mask: UInt64) {
        self.base = base
        self.stride = stride
        self.mask = mask
    }

    @inlinable
    func shard(_ hash: UInt64) -> UnsafeMutablePointer<Mutex<Shard<Value>>> {
        (base + Int(truncatingIfNeeded: hash & mask) &* stride).assumingMemoryBound(to: Mutex<Shard<Value>>.self)
    }
}
