#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CacheAsideMemory

/// A small, fast, seedable generator (SplitMix64), so that every workload is the same
/// sequence on every run.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in [0, 1).
    mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

/// Draws ranks 0..<n with probability proportional to 1 / (rank + 1)^exponent.
struct ZipfDistribution {
    private let cumulative: [Double]

    init(count: Int, exponent: Double) {
        var sum = 0.0
        var cumulative = [Double]()
        cumulative.reserveCapacity(count)
        for rank in 0..<count {
            sum += 1 / pow(Double(rank + 1), exponent)
            cumulative.append(sum)
        }
        self.cumulative = cumulative.map { $0 / sum }
    }

    func sample(_ generator: inout SplitMix64) -> Int {
        let u = generator.nextUnit()
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < u { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// A request trace over integer ids: Zipf-distributed reads of `universe` ids, with a
/// scan of `scanLength` ids never read before inserted every `scanEvery` reads (a batch
/// job, a crawler, a report walking the table).
struct Workload: Sendable, CustomStringConvertible {
    var universe: Int
    var exponent: Double
    var requests: Int
    var scanEvery: Int
    var scanLength: Int
    var seed: UInt64 = 42

    var description: String {
        let scans = scanEvery > 0 ? ", a scan of \(scanLength) new ids every \(scanEvery) reads" : ", no scans"
        return "Zipf(\(exponent)) over \(universe) ids, \(requests) reads\(scans)"
    }

    /// The ids, in request order (scan ids start at `universe`).
    func trace() -> [Int] {
        var generator = SplitMix64(seed: seed)
        let zipf = ZipfDistribution(count: universe, exponent: exponent)
        // Ranks map to ids through a fixed permutation, so that popularity is not
        // correlated with the id (nor with the key's hash).
        var permutation = Array(0..<universe)
        permutation.shuffle(using: &generator)
        var trace: [Int] = []
        trace.reserveCapacity(requests + (scanEvery > 0 ? requests / scanEvery * scanLength : 0))
        var nextScanID = universe
        for i in 0..<requests {
            if scanEvery > 0 && i > 0 && i % scanEvery == 0 {
                for _ in 0..<scanLength {
                    trace.append(nextScanID)
                    nextScanID += 1
                }
            }
            trace.append(permutation[zipf.sample(&generator)])
        }
        return trace
    }
}

/// A plain LRU cache bounded by entry count: the baseline the store's policy is
/// measured against (a dictionary and a doubly linked list over arrays).
struct LRUCache {
    private var slots: [Int: Int32] = [:]
    private var keys: [Int] = []
    private var previous: [Int32] = []
    private var next: [Int32] = []
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        slots.reserveCapacity(self.capacity)
    }

    /// Reads `key`: true on a hit (it becomes the newest); on a miss it is inserted,
    /// evicting the least recently used key when full.
    mutating func access(_ key: Int) -> Bool {
        if let slot = slots[key] {
            moveToNewest(slot)
            return true
        }
        let slot: Int32
        if keys.count < capacity {
            slot = Int32(keys.count)
            keys.append(key)
            previous.append(-1)
            next.append(-1)
        } else {
            slot = oldest
            unlink(slot)
            slots[keys[Int(slot)]] = nil
            keys[Int(slot)] = key
        }
        slots[key] = slot
        pushNewest(slot)
        return false
    }

    private mutating func moveToNewest(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        pushNewest(slot)
    }

    private mutating func unlink(_ slot: Int32) {
        let p = previous[Int(slot)], n = next[Int(slot)]
        if p >= 0 { next[Int(p)] = n } else { newest = n }
        if n >= 0 { previous[Int(n)] = p } else { oldest = p }
        previous[Int(slot)] = -1
        next[Int(slot)] = -1
    }

    private mutating func pushNewest(_ slot: Int32) {
        next[Int(slot)] = newest
        previous[Int(slot)] = -1
        if newest >= 0 { previous[Int(newest)] = slot } else { oldest = slot }
        newest = slot
    }
}

/// Hit ratios of the store's policy and of LRU on one trace, at one capacity.
struct HitRatioResult: Sendable, CustomStringConvertible {
    var capacity: Int
    var shards: Int
    var store: Double
    var lru: Double
    /// Hit ratio over the Zipf reads only (scan reads can never hit).
    var storeOnZipf: Double
    var lruOnZipf: Double

    var description: String {
        func percent(_ x: Double) -> String {
            let tenths = Int((x * 1000).rounded())
            return "\(tenths / 10).\(tenths % 10)%"
        }
        return "capacity \(capacity) (\(shards) shard\(shards == 1 ? "" : "s")): S3-FIFO \(percent(store)), LRU \(percent(lru)) of all reads; "
            + "\(percent(storeOnZipf)) vs \(percent(lruOnZipf)) of the Zipf reads"
    }
}

enum HitRatio {
    /// The key the store uses for an id (the shape of the cache's keys).
    static func key(_ id: Int) -> String { "bench:user:v1:\(id)" }

    /// Replays `trace` against a store and an LRU of `capacity` entries each (the
    /// store's byte bound set high enough that only the entry count binds).
    static func measure(trace: [Int], universe: Int, capacity: Int, shards: Int) -> HitRatioResult {
        let keys = trace.map(key)
        let store = MemoryStore<Int>(configuration: MemoryStoreConfiguration(
            maximumEntries: capacity, maximumBytes: Int.max / 2, timeToLive: .seconds(3600), shardCount: shards))
        var lru = LRUCache(capacity: capacity)
        var storeHits = 0, lruHits = 0, storeZipfHits = 0, lruZipfHits = 0, zipfReads = 0
        for (position, id) in trace.enumerated() {
            let isZipf = id < universe
            if isZipf { zipfReads += 1 }
            switch store.lookup(keys[position]) {
            case .hit:
                storeHits += 1
                if isZipf { storeZipfHits += 1 }
            case .miss(let ticket):
                store.fill(ticket, with: id, size: 100)
            }
            if lru.access(id) {
                lruHits += 1
                if isZipf { lruZipfHits += 1 }
            }
        }
        let reads = Double(trace.count)
        return HitRatioResult(
            capacity: capacity, shards: store.shardCount,
            store: Double(storeHits) / reads, lru: Double(lruHits) / reads,
            storeOnZipf: Double(storeZipfHits) / Double(max(1, zipfReads)),
            lruOnZipf: Double(lruZipfHits) / Double(max(1, zipfReads)))
    }
}
