/// One shard's bookkeeping, without the values: the key index, S3-FIFO's two queues and
/// ghost, the byte and entry accounting, the invalidation sequence numbers and the
/// counters. Not generic, so it is compiled once, in this module; ``Shard`` pairs it
/// with the values. Always used under the shard's lock.
///
/// The eviction policy is S3-FIFO (Yang et al., "FIFO queues are all you need for cache
/// eviction", SOSP 2023):
/// - a new entry goes to the *small* queue (about 10% of the shard), or straight to the
///   *main* queue when its hash is in the *ghost* queue (it was evicted from the small
///   queue recently);
/// - a hit only raises the entry's 2-bit frequency: no list is reordered;
/// - eviction takes the oldest entry of the small queue while that queue is over its
///   share: an entry that was hit while there moves to the main queue, the others
///   leave (their hash goes to the ghost). Otherwise it takes the oldest entry of the
///   main queue: one with a frequency above 0 goes back to the front with its frequency
///   lowered, the first with 0 leaves.
///
/// A scan fills the small queue with entries that are never hit again; they leave from
/// there and never push hot entries out of the main queue.
@usableFromInline
struct ShardCore {
    enum Queue: UInt8 {
        case free, small, main
    }

    struct Slot {
        var key: StoredKey
        var hash: UInt64
        var expiresAt: Int64
        var charge: UInt32
        var previous: Int32  // towards the newer end of its queue
        var next: Int32  // towards the older end; the free list's link for free slots
        var queue: Queue
        var frequency: UInt8
    }

    struct QueueState {
        var newest: Int32 = -1
        var oldest: Int32 = -1
        var count = 0
        var bytes = 0  // the entries' weights
    }

    /// Sequence numbers per stripe of the hash space. An invalidation of a key moves its
    /// stripe's number; a flush moves them all. A fill brings the number its stripe had
    /// when the read that produced the value started, and is refused if it moved.
    static let stripeCount = 256

    /// The frequency at which an entry of the small queue moves to the main queue
    /// instead of leaving.
    static let promotionFrequency: UInt8 = 1

    private(set) var slots: [Slot] = []
    private var index = IndexTable()
    private var small = QueueState()
    private var main = QueueState()
    private var ghost = GhostQueue()
    private var stripes: [UInt64]
    private var freeList: Int32 = -1

    let maximumEntries: Int
    let maximumBytes: Int
    private let smallEntries: Int
    private let smallBytes: Int
    /// Bytes per reserved slot: the entry's record here and its value's slot in
    /// ``Shard/values`` (which the caller grows to ``reservedSlots`` with this array).
    private let recordBytes: Int
    /// Bytes the shard holds whatever it contains (its lock and headers).
    private let fixedBytes: Int

    /// Entries held, and the sum of their charges (sizes and keys' heap storage).
    private(set) var count = 0
    private(set) var entryBytes = 0
    /// The slots reserved in `slots` and in the caller's value array.
    @usableFromInline
    private(set) var reservedSlots = 0

    /// Slots freed by the last operation, whose values the caller must release before
    /// it stores a value in any slot.
    @usableFromInline
    var freed: [Int32] = []

    @usableFromInline
    var counters = ShardCounters()

    init(maximumEntries: Int, maximumBytes: Int, valueStride: Int, fixedBytes: Int) {
        self.maximumEntries = max(1, maximumEntries)
        self.maximumBytes = max(1, maximumBytes)
        self.recordBytes = MemoryLayout<Slot>.stride + valueStride
        self.fixedBytes = fixedBytes
        self.smallEntries = max(1, self.maximumEntries / 10)
        self.smallBytes = max(1, self.maximumBytes / 10)
        self.stripes = Array(repeating: 0, count: ShardCore.stripeCount)
    }

    @inline(__always)
    static func stripe(of hash: UInt64) -> Int {
        Int(truncatingIfNeeded: (hash >> 8) & UInt64(stripeCount - 1))
    }

    // MARK: Operations

    /// The slot of a live entry for `key` (counting a hit and raising its frequency),
    /// or -1: counting a miss and removing an expired entry when `countingMisses`, else
    /// counting nothing and changing nothing (the caller then takes the full lookup).
    @usableFromInline
    mutating func lookup(_ key: KeyBytes, hash: UInt64, now: Int64, countingMisses: Bool = true) -> Int32 {
        guard let found = find(key, hash: hash) else {
            if countingMisses { counters.misses &+= 1 }
            return -1
        }
        let slot = Int(found.slot)
        if slots[slot].expiresAt <= now {
            if countingMisses {
                counters.expirations &+= 1
                counters.misses &+= 1
                release(found.slot, bucket: found.bucket, rememberIfHot: true)
            }
            return -1
        }
        if slots[slot].frequency < 3 { slots[slot].frequency &+= 1 }
        counters.hits &+= 1
        return found.slot
    }

    /// The slot and expiry of `key`'s entry, live or not, counting nothing.
    func peek(_ key: KeyBytes, hash: UInt64) -> (slot: Int32, expiresAt: Int64)? {
        guard let found = find(key, hash: hash) else { return nil }
        return (found.slot, slots[Int(found.slot)].expiresAt)
    }

    /// The sequence number a fill of a key with this hash must bring.
    @usableFromInline
    func sequence(for hash: UInt64) -> UInt64 {
        stripes[ShardCore.stripe(of: hash)]
    }

    /// Makes room and takes a slot for `key`, replacing an entry the key already has;
    /// -1 when the fill is refused (its stripe's sequence moved, or the entry does not
    /// fit in the shard's byte budget even alone). The caller stores the value in the
    /// returned slot.
    ///
    /// The budget covers the entries' charges and the shard's structures as allocated
    /// (records, index, ghost), including the growth this insertion causes.
    @usableFromInline
    mutating func insert(_ key: KeyBytes, hash: UInt64, charge: Int, now: Int64, expiresAt: Int64, sequence: UInt64) -> Int32 {
        guard stripes[ShardCore.stripe(of: hash)] == sequence else {
            counters.refusedFills &+= 1
            return -1
        }
        // Evicting never shrinks the structures: an entry that does not fit beside them
        // alone is refused before anything is evicted for it.
        guard charge + structureBytes <= maximumBytes else {
            counters.oversizedFills &+= 1
            return -1
        }
        var queue = Queue.small
        var frequency: UInt8 = 0
        if let found = find(key, hash: hash) {
            // A second fill of the same entry (no invalidation in between, or the
            // sequence would have moved): same freshness; keep its place in the policy.
            queue = slots[Int(found.slot)].queue
            frequency = slots[Int(found.slot)].frequency
            release(found.slot, bucket: found.bucket, rememberIfHot: false)
        } else if ghost.contains(hash) {
            queue = .main
        }
        while count > 0 && (count >= maximumEntries || entryBytes + charge + structureBytesAfterInsertion > maximumBytes) {
            evictOne(now: now)
        }
        guard entryBytes + charge + structureBytesAfterInsertion <= maximumBytes else {
            counters.oversizedFills &+= 1
            return -1
        }
        let slot = allocate(Slot(
            key: StoredKey(key), hash: hash, expiresAt: expiresAt, charge: UInt32(truncatingIfNeeded: charge),
            previous: -1, next: -1, queue: queue, frequency: frequency))
        index.insert(hash: hash, slot: slot)
        pushNewest(slot, queue: queue)
        count += 1
        entryBytes += charge
        counters.fills &+= 1
        return slot
    }

    /// Removes `key`'s entry if there is one, and moves its stripe's sequence so that
    /// fills started before now are refused.
    @usableFromInline
    mutating func invalidate(_ key: KeyBytes, hash: UInt64) {
        stripes[ShardCore.stripe(of: hash)] &+= 1
        counters.invalidations &+= 1
        if let found = find(key, hash: hash) {
            counters.invalidatedEntries &+= 1
            release(found.slot, bucket: found.bucket, rememberIfHot: true)
        }
    }

    /// Drops every entry and moves every stripe's sequence. The ghost stays: it holds
    /// no values, only which keys were popular. The caller drops all values.
    @usableFromInline
    mutating func flush() {
        for i in stripes.indices { stripes[i] &+= 1 }
        slots = []
        index = IndexTable()
        small = QueueState()
        main = QueueState()
        freeList = -1
        count = 0
        entryBytes = 0
        reservedSlots = 0
        freed = []
    }

    /// The shard's own memory in bytes, as allocated now: records and value slots (as
    /// reserved), index, ghost, sequence numbers, lock and headers.
    var structureBytes: Int {
        fixedBytes + reservedSlots * recordBytes + index.byteSize + ghost.byteSize
            + stripes.count * MemoryLayout<UInt64>.stride
    }

    /// Everything the shard is charged now.
    var bytes: Int { entryBytes + structureBytes }

    /// ``structureBytes`` once one more entry is inserted: the records grow when no
    /// slot is free, the index when it would pass its load factor.
    private var structureBytesAfterInsertion: Int {
        var bytes = structureBytes
        if freeList < 0 && slots.count == reservedSlots { bytes += ShardCore.growth(reservedSlots) * recordBytes }
        if index.mustGrow(toHold: count + 1) { bytes += index.byteSize }
        return bytes
    }

    /// How many slots to add when all are taken: an eighth (at least 16), not twice as
    /// many: the byte budget is spent on entries, not on spare capacity.
    private static func growth(_ reserved: Int) -> Int { max(16, reserved / 8) }

    // MARK: Internals

    @inline(__always)
    private func find(_ key: KeyBytes, hash: UInt64) -> (bucket: Int, slot: Int32)? {
        index.find(hash: hash) { slot in
            slots[Int(slot)].hash == hash && slots[Int(slot)].key.equals(key)
        }
    }

    private mutating func allocate(_ slot: Slot) -> Int32 {
        if freeList >= 0 {
            let reused = freeList
            freeList = slots[Int(reused)].next
            slots[Int(reused)] = slot
            return reused
        }
        if slots.count == reservedSlots {
            reservedSlots += ShardCore.growth(reservedSlots)
            slots.reserveCapacity(reservedSlots)
        }
        slots.append(slot)
        return Int32(slots.count - 1)
    }

    /// Unlinks and frees a slot. A hot entry (in the main queue, or hit while in the
    /// small one) leaves its hash in the ghost, so that its next fill goes straight to
    /// the main queue.
    private mutating func release(_ slot: Int32, bucket: Int?, rememberIfHot: Bool) {
        let s = Int(slot)
        let hash = slots[s].hash
        let charge = Int(slots[s].charge)
        let hot = slots[s].queue == .main || slots[s].frequency > 0
        unlink(slot)
        if let bucket { index.remove(bucket: bucket) }
        count -= 1
        entryBytes -= charge
        if rememberIfHot && hot { ghost.add(hash, limit: ghostLimit) }
        slots[s].key = StoredKey()
        slots[s].queue = .free
        slots[s].next = freeList
        freeList = slot
        freed.append(slot)
    }

    private var ghostLimit: Int { max(16, count) }

    /// Evicts one entry (the shard holds at least one). An expired entry met on the way
    /// leaves whatever its frequency.
    private mutating func evictOne(now: Int64) {
        if small.count > 0 && (main.count == 0 || small.count > smallEntries || small.bytes > smallBytes) {
            if evictFromSmall(now: now) { return }
        }
        evictFromMain(now: now)
    }

    /// Returns false when every entry of the small queue was promoted instead.
    private mutating func evictFromSmall(now: Int64) -> Bool {
        while small.oldest >= 0 {
            let slot = small.oldest
            if slots[Int(slot)].frequency >= ShardCore.promotionFrequency && slots[Int(slot)].expiresAt > now {
                unlink(slot)
                slots[Int(slot)].frequency = 0
                pushNewest(slot, queue: .main)
            } else {
                ghost.add(slots[Int(slot)].hash, limit: ghostLimit)
                evict(slot)
                return true
            }
        }
        return false
    }

    private mutating func evictFromMain(now: Int64) {
        while main.oldest >= 0 {
            let slot = main.oldest
            if slots[Int(slot)].frequency > 0 && slots[Int(slot)].expiresAt > now {
                slots[Int(slot)].frequency -= 1
                unlink(slot)
                pushNewest(slot, queue: .main)
            } else {
                evict(slot)
                return
            }
        }
    }

    private mutating func evict(_ slot: Int32) {
        let found = index.find(hash: slots[Int(slot)].hash, where: { $0 == slot })
        counters.evictions &+= 1
        release(slot, bucket: found?.bucket, rememberIfHot: false)
    }

    /// What an entry weighs in its queue's share of the budget: its charge and its
    /// record.
    private func weight(_ slot: Int32) -> Int {
        Int(slots[Int(slot)].charge) + recordBytes
    }

    private mutating func pushNewest(_ slot: Int32, queue: Queue) {
        let charge = weight(slot)
        slots[Int(slot)].queue = queue
        slots[Int(slot)].previous = -1
        switch queue {
        case .small:
            slots[Int(slot)].next = small.newest
            if small.newest >= 0 { slots[Int(small.newest)].previous = slot } else { small.oldest = slot }
            small.newest = slot
            small.count += 1
            small.bytes += charge
        case .main:
            slots[Int(slot)].next = main.newest
            if main.newest >= 0 { slots[Int(main.newest)].previous = slot } else { main.oldest = slot }
            main.newest = slot
            main.count += 1
            main.bytes += charge
        case .free:
            break
        }
    }

    private mutating func unlink(_ slot: Int32) {
        let charge = weight(slot)
        let previous = slots[Int(slot)].previous
        let next = slots[Int(slot)].next
        if previous >= 0 { slots[Int(previous)].next = next }
        if next >= 0 { slots[Int(next)].previous = previous }
        switch slots[Int(slot)].queue {
        case .small:
            if small.newest == slot { small.newest = next }
            if small.oldest == slot { small.oldest = previous }
            small.count -= 1
            small.bytes -= charge
        case .main:
            if main.newest == slot { main.newest = next }
            if main.oldest == slot { main.oldest = previous }
            main.count -= 1
            main.bytes -= charge
        case .free:
            break
        }
        slots[Int(slot)].previous = -1
        slots[Int(slot)].next = -1
    }
}

/// A shard's counters; summed into ``MemoryStatistics``.
@usableFromInline
struct ShardCounters {
    var hits: UInt64 = 0
    var misses: UInt64 = 0
    var fills: UInt64 = 0
    var refusedFills: UInt64 = 0
    var oversizedFills: UInt64 = 0
    @usableFromInline var evictions: UInt64 = 0
    var expirations: UInt64 = 0
    var invalidations: UInt64 = 0
    var invalidatedEntries: UInt64 = 0
}
