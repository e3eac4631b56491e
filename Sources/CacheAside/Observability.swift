import Metrics
import Synchronization

/// What the cache did for one keyspace (or all of them) since it started: counts that
/// a demo, a test or a health endpoint can read without a metrics backend.
///
/// The same events are reported to swift-metrics (see ``CacheAside``), where a backend
/// such as Prometheus or StatsD picks them up.
public struct CacheStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Reads answered by Redis (including cached "absent" entries, and
    /// entries another process filled while this read waited for its lease), or a fill
    /// of this process that the read found in flight and joined in memory.
    public var hits = 0
    /// Reads answered by PostgreSQL: their own load, a load they joined, or a fail-open
    /// read. `memoryHits + hits + misses` is the number of reads (`find(many:)` counts
    /// each id).
    public var misses = 0
    /// Entries written by a reader holding a valid lease.
    public var fills = 0
    /// Fills refused because the lease was gone (a write happened, or it expired).
    public var rejectedFills = 0
    /// Times a reader found another process's lease and waited for its fill.
    public var leaseWaits = 0
    /// Loads from PostgreSQL made by reads (a `find(many:)` counts once).
    public var databaseLoads = 0
    /// Reads served from PostgreSQL because Redis failed or the breaker was open.
    public var failOpenReads = 0
    /// Invalidations retried because Redis could not be reached.
    public var invalidationRetries = 0
    /// Entries that failed to decode (treated as misses and replaced).
    public var decodeFailures = 0
    /// Calls to the store (Redis) that failed: unreachable, timed out, or refused.
    public var storeErrors = 0
    /// Reads answered by the in-process tier (``CachePolicy/memory``), without Redis;
    /// not counted in ``hits`` or ``misses``.
    public var memoryHits = 0
    /// Lookups of the in-process tier that found nothing to serve (no entry, or memory
    /// not trusted at the moment) and went on to Redis.
    public var memoryMisses = 0
    /// Entries the in-process tier evicted to make room.
    public var memoryEvictions = 0
    /// Keys invalidated in the in-process tier by messages from Redis (other processes'
    /// writes, and the echo of this process's own).
    public var memoryInvalidations = 0
    /// Times the in-process tier was emptied because invalidations may have been lost
    /// (the invalidation channel dropped or was reopened, Redis was flushed).
    public var memoryFlushes = 0
    /// Entries the in-process tier holds now.
    public var memoryEntries = 0
    /// Bytes the in-process tier accounts for now (at most its bound).
    public var memoryBytes = 0

    /// Zero counts.
    public init() {}

    static func + (a: CacheStatistics, b: CacheStatistics) -> CacheStatistics {
        var r = a
        r.hits += b.hits
        r.misses += b.misses
        r.fills += b.fills
        r.rejectedFills += b.rejectedFills
        r.leaseWaits += b.leaseWaits
        r.databaseLoads += b.databaseLoads
        r.failOpenReads += b.failOpenReads
        r.invalidationRetries += b.invalidationRetries
        r.decodeFailures += b.decodeFailures
        r.storeErrors += b.storeErrors
        r.memoryHits += b.memoryHits
        r.memoryMisses += b.memoryMisses
        r.memoryEvictions += b.memoryEvictions
        r.memoryInvalidations += b.memoryInvalidations
        r.memoryFlushes += b.memoryFlushes
        r.memoryEntries += b.memoryEntries
        r.memoryBytes += b.memoryBytes
        return r
    }

    public var description: String {
        "hits \(hits), misses \(misses), fills \(fills), rejected fills \(rejectedFills), lease waits \(leaseWaits), "
            + "database loads \(databaseLoads), fail-open reads \(failOpenReads), invalidation retries \(invalidationRetries), "
            + "decode failures \(decodeFailures), store errors \(storeErrors)"
            + (memoryHits + memoryMisses + memoryFlushes > 0
                ? ", memory hits \(memoryHits), memory misses \(memoryMisses), memory evictions \(memoryEvictions), "
                    + "memory invalidations \(memoryInvalidations), memory flushes \(memoryFlushes), memory entries \(memoryEntries)"
                : "")
    }
}

/// Counters of one keyspace: atomics for ``CacheStatistics`` and swift-metrics
/// instruments, created once.
final class KeyspaceCounters: Sendable {
    enum Event: Int, CaseIterable {
        case hit, miss, fill, rejectedFill, leaseWait, databaseLoad, failOpenRead, invalidationRetry, decodeFailure
        case storeError

        var label: String {
            switch self {
            case .hit: return "cache_aside_hits_total"
            case .miss: return "cache_aside_misses_total"
            case .fill: return "cache_aside_fills_total"
            case .rejectedFill: return "cache_aside_rejected_fills_total"
            case .leaseWait: return "cache_aside_lease_waits_total"
            case .databaseLoad: return "cache_aside_database_loads_total"
            case .failOpenRead: return "cache_aside_fail_open_reads_total"
            case .invalidationRetry: return "cache_aside_invalidation_retries_total"
            case .decodeFailure: return "cache_aside_decode_failures_total"
            case .storeError: return "cache_aside_store_errors_total"
            }
        }
    }

    private let hits = Atomic<Int>(0)
    private let misses = Atomic<Int>(0)
    private let fills = Atomic<Int>(0)
    private let rejectedFills = Atomic<Int>(0)
    private let leaseWaits = Atomic<Int>(0)
    private let databaseLoads = Atomic<Int>(0)
    private let failOpenReads = Atomic<Int>(0)
    private let invalidationRetries = Atomic<Int>(0)
    private let decodeFailures = Atomic<Int>(0)
    private let storeErrors = Atomic<Int>(0)
    private let counters: [Counter]
    /// Latency of `find` served from Redis.
    private let hitTimer: Metrics.Timer
    /// Latency of `find` that went to PostgreSQL.
    private let missTimer: Metrics.Timer
    /// Whether the metrics go anywhere: they were made by a factory other than
    /// swift-metrics' no-op one (a metric keeps the factory it was made with, so
    /// recording into no-op ones would be work on every hit for nothing).
    private let exportsMetrics: Bool

    init(keyspace: String) {
        let dimensions = [("keyspace", keyspace)]
        let factory = MetricsSystem.factory
        exportsMetrics = !(factory is NOOPMetricsHandler)
        counters = Event.allCases.map { Counter(label: $0.label, dimensions: dimensions, factory: factory) }
        hitTimer = Metrics.Timer(label: "cache_aside_find_duration", dimensions: dimensions + [("path", "hit")], factory: factory)
        missTimer = Metrics.Timer(label: "cache_aside_find_duration", dimensions: dimensions + [("path", "miss")], factory: factory)
    }

    /// Records how long a `find` took, served from Redis (`hit`) or not.
    func recordLatency(hit: Bool, since start: ContinuousClock.Instant) {
        guard exportsMetrics else { return }
        (hit ? hitTimer : missTimer).recordInterval(since: start)
    }

    func record(_ event: Event, _ n: Int = 1) {
        guard n > 0 else { return }
        switch event {
        case .hit: hits.add(n, ordering: .relaxed)
        case .miss: misses.add(n, ordering: .relaxed)
        case .fill: fills.add(n, ordering: .relaxed)
        case .rejectedFill: rejectedFills.add(n, ordering: .relaxed)
        case .leaseWait: leaseWaits.add(n, ordering: .relaxed)
        case .databaseLoad: databaseLoads.add(n, ordering: .relaxed)
        case .failOpenRead: failOpenReads.add(n, ordering: .relaxed)
        case .invalidationRetry: invalidationRetries.add(n, ordering: .relaxed)
        case .decodeFailure: decodeFailures.add(n, ordering: .relaxed)
        case .storeError: storeErrors.add(n, ordering: .relaxed)
        }
        if exportsMetrics { counters[event.rawValue].increment(by: Int64(n)) }
    }

    func count(_ event: Event) -> Int {
        switch event {
        case .hit: return hits.load(ordering: .relaxed)
        case .miss: return misses.load(ordering: .relaxed)
        case .fill: return fills.load(ordering: .relaxed)
        case .rejectedFill: return rejectedFills.load(ordering: .relaxed)
        case .leaseWait: return leaseWaits.load(ordering: .relaxed)
        case .databaseLoad: return databaseLoads.load(ordering: .relaxed)
        case .failOpenRead: return failOpenReads.load(ordering: .relaxed)
        case .invalidationRetry: return invalidationRetries.load(ordering: .relaxed)
        case .decodeFailure: return decodeFailures.load(ordering: .relaxed)
        case .storeError: return storeErrors.load(ordering: .relaxed)
        }
    }

    var statistics: CacheStatistics {
        var s = CacheStatistics()
        s.hits = count(.hit)
        s.misses = count(.miss)
        s.fills = count(.fill)
        s.rejectedFills = count(.rejectedFill)
        s.leaseWaits = count(.leaseWait)
        s.databaseLoads = count(.databaseLoad)
        s.failOpenReads = count(.failOpenRead)
        s.invalidationRetries = count(.invalidationRetry)
        s.decodeFailures = count(.decodeFailure)
        s.storeErrors = count(.storeError)
        return s
    }
}
