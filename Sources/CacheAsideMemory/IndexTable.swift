/// An open-addressing hash index from a 64-bit hash to a small integer (a slot of the
/// shard's entry array, or a position of the ghost ring).
///
/// Each bucket holds the upper 32 bits of the hash next to `slot + 1` (0 marks an empty
/// bucket), so a probe compares hashes without touching the entries; the caller's
/// `matches` closure confirms a candidate. Linear probing with backward-shift deletion
/// (no tombstones), load factor at most 3/4, doubling when full.
struct IndexTable {
    private(set) var buckets: [UInt64]
    private var mask: Int
    private(set) var count = 0

    /// The memory the table holds, in bytes (8 per bucket).
    var byteSize: Int { buckets.capacity * MemoryLayout<UInt64>.stride }

    init(minimumCapacity: Int = 8) {
        var capacity = 8
        while capacity * 3 < minimumCapacity * 4 { capacity <<= 1 }
        buckets = Array(repeating: 0, count: capacity)
        mask = capacity - 1
    }

    @inline(__always)
    private static func fragment(_ hash: UInt64) -> UInt64 { hash >> 32 }

    @inline(__always)
    private func home(_ fragment: UInt64) -> Int { Int(truncatingIfNeeded: fragment) & mask }

    /// The bucket and slot of the entry with this hash that `matches` accepts.
    @inline(__always)
    func find(hash: UInt64, where matches: (Int32) -> Bool) -> (bucket: Int, slot: Int32)? {
        let fragment = IndexTable.fragment(hash)
        var index = home(fragment)
        return buckets.withUnsafeBufferPointer { buckets in
            while true {
                let bucket = buckets[index]
                if bucket == 0 { return nil }
                if bucket >> 32 == fragment {
                    let slot = Int32(truncatingIfNeeded: bucket & 0xFFFF_FFFF) - 1
                    if matches(slot) { return (index, slot) }
                }
                index = (index + 1) & mask
            }
        }
    }

    /// Whether holding `count` entries takes a larger table.
    func mustGrow(toHold count: Int) -> Bool {
        count * 4 > buckets.count * 3
    }

    /// Adds `slot` under `hash`; the caller knows no entry for it is present.
    mutating func insert(hash: UInt64, slot: Int32) {
        if mustGrow(toHold: count + 1) { grow() }
        place(IndexTable.fragment(hash) << 32 | UInt64(UInt32(slot) + 1))
        count += 1
    }

    /// Removes the entry in `bucket`, shifting later entries of its probe run back.
    mutating func remove(bucket: Int) {
        var hole = bucket
        var index = bucket
        while true {
            index = (index + 1) & mask
            let entry = buckets[index]
            if entry == 0 { break }
            let ideal = home(entry >> 32)
            // The entry may move into the hole unless its home lies cyclically in
            // (hole, index].
            let staysPut = hole <= index
                ? (ideal > hole && ideal <= index)
                : (ideal > hole || ideal <= index)
            if !staysPut {
                buckets[hole] = entry
                hole = index
            }
        }
        buckets[hole] = 0
        count -= 1
    }

    /// Removes the entry that maps `hash` to exactly `slot`; returns whether it was there.
    @discardableResult
    mutating func remove(hash: UInt64, slot: Int32) -> Bool {
        guard let found = find(hash: hash, where: { $0 == slot }) else { return false }
        remove(bucket: found.bucket)
        return true
    }

    private mutating func place(_ entry: UInt64) {
        var index = home(entry >> 32)
        while buckets[index] != 0 { index = (index + 1) & mask }
        buckets[index] = entry
    }

    private mutating func grow() {
        let old = buckets
        buckets = Array(repeating: 0, count: old.count * 2)
        mask = buckets.count - 1
        for entry in old where entry != 0 { place(entry) }
    }
}
