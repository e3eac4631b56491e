/// S3-FIFO's ghost queue: the hashes of entries recently evicted from the small queue
/// (and of hot entries that were invalidated or expired), in FIFO order, without their
/// keys or values. An entry whose hash is still here when it is filled again goes
/// straight to the main queue.
///
/// A hash collision only admits an entry to the main queue that would otherwise have
/// started in the small one: a question of hit ratio, never of correctness.
struct GhostQueue {
    private var ring: [UInt64]
    private var head = 0  // position of the oldest hash
    private(set) var count = 0
    private var index = IndexTable()

    init() {
        ring = Array(repeating: 0, count: 16)
    }

    /// The memory the queue holds, in bytes.
    var byteSize: Int { ring.capacity * MemoryLayout<UInt64>.stride + index.byteSize }

    func contains(_ hash: UInt64) -> Bool {
        index.find(hash: hash, where: { ring[Int($0)] == hash }) != nil
    }

    /// Appends `hash`, first dropping the oldest hashes while more than `limit - 1` are
    /// held. A hash already present is left where it is.
    mutating func add(_ hash: UInt64, limit: Int) {
        if contains(hash) { return }
        let limit = max(1, limit)
        while count >= limit { removeOldest() }
        if count == ring.count { grow() }
        let position = (head + count) & (ring.count - 1)
        ring[position] = hash
        index.insert(hash: hash, slot: Int32(position))
        count += 1
    }

    /// Drops hashes from the front until at most `limit` remain.
    mutating func trim(to limit: Int) {
        while count > max(0, limit) { removeOldest() }
    }

    mutating func removeAll() {
        self = GhostQueue()
    }

    private mutating func removeOldest() {
        index.remove(hash: ring[head], slot: Int32(head))
        head = (head + 1) & (ring.count - 1)
        count -= 1
    }

    /// Doubles the ring, keeping FIFO order (positions change, so the index is rebuilt).
    private mutating func grow() {
        var newRing = [UInt64](repeating: 0, count: ring.count * 2)
        var newIndex = IndexTable(minimumCapacity: count * 2)
        for i in 0..<count {
            let hash = ring[(head + i) & (ring.count - 1)]
            newRing[i] = hash
            newIndex.insert(hash: hash, slot: Int32(i))
        }
        ring = newRing
        index = newIndex
        head = 0
    }
}
