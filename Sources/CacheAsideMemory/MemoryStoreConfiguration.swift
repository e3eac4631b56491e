#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bounds and defaults of a ``MemoryStore``.
public struct MemoryStoreConfiguration: Sendable, Hashable {
    /// The most entries held at once (100,000). Values below 1 count as 1.
    public var maximumEntries: Int
    /// The most bytes held at once, as the store accounts them (64 MiB): the size each
    /// filler gives for its value, long keys' storage, and the store's own structures
    /// as allocated (see ``MemoryStore/charge(forKey:size:)``). Values below 1 count
    /// as 1.
    public var maximumBytes: Int
    /// How long an entry lives when its fill names no time to live (10 s). The tier's
    /// copies are kept coherent by invalidations; the TTL bounds what any lost
    /// invalidation can cost.
    public var timeToLive: Duration
    /// The number of independently locked shards, rounded up to a power of two, at
    /// most 256; `nil` (the default) picks four per processor, at most 64, and fewer
    /// when the bounds are so small that each shard would hold under 128 entries or
    /// 64 KiB. Bounds are split evenly between shards.
    public var shardCount: Int?

    /// Creates a configuration; every parameter has the default described above.
    public init(
        maximumEntries: Int = 100_000,
        maximumBytes: Int = 64 << 20,
        timeToLive: Duration = .seconds(10),
        shardCount: Int? = nil
    ) {
        self.maximumEntries = maximumEntries
        self.maximumBytes = maximumBytes
        self.timeToLive = timeToLive
        self.shardCount = shardCount
    }

    /// The shard count the store uses.
    var resolvedShardCount: Int {
        if let shardCount { return roundedUpToPowerOfTwo(min(max(1, shardCount), 256)) }
        let processors = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var count = roundedUpToPowerOfTwo(min(64, processors * 4))
        while count > 1 && (maximumEntries / count < 128 || maximumBytes / count < 64 << 10) {
            count /= 2
        }
        return count
    }
}

func roundedUpToPowerOfTwo(_ n: Int) -> Int {
    var p = 1
    while p < n { p <<= 1 }
    return p
}
