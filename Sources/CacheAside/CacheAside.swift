import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization

extension UUID: CacheIdentifier {
    /// The lower-case canonical form.
    public var cacheKeyComponent: String { uuidString.lowercased() }
}

/// The shared cache-aside runtime: one per application, shared by every repository.
///
/// It holds the two clients, the namespace every key starts with, this process's
/// single-flight table, a circuit breaker per keyspace, and the queue of invalidations
/// waiting for Redis to come back. Repositories (``CachedRepository``) reach it through
/// their `cache` property.
///
/// Metrics (swift-metrics, dimension `keyspace`): counters `cache_aside_hits_total`,
/// `cache_aside_misses_total`, `cache_aside_fills_total`,
/// `cache_aside_rejected_fills_total`, `cache_aside_lease_waits_total`,
/// `cache_aside_database_loads_total`, `cache_aside_fail_open_reads_total`,
/// `cache_aside_invalidation_retries_total`, `cache_aside_decode_failures_total`, and the
/// timer `cache_aside_find_duration` (dimension `path`: `hit` or `miss`).
public final class CacheAside: Sendable {
    /// The database every repository reads from and writes to.
    public let postgres: PGClient
    /// The shared cache.
    public let redis: RESPClient
    /// The prefix of every key this cache writes (`A-Z a-z 0-9 - . _`).
    public let namespace: String
    /// The policy of repositories that do not give their own.
    public let defaultPolicy: CachePolicy
    /// How entries are turned into bytes and back.
    public let codec: any CacheEntryCodec
    /// Where problems are logged.
    public let logger: Logger

    let flights = SingleFlightTable()
    let invalidations: InvalidationQueue
    private let keyspaces = Mutex<[KeyspaceID: KeyspaceState]>([:])

    /// Creates the runtime.
    ///
    /// - Parameters:
    ///   - postgres: the database client (its pool is shared by every repository).
    ///   - redis: the Redis client. Give it a short command timeout (the default
    ///     1 s is an upper bound; 100–250 ms suits a cache on the same network): a read
    ///     waits at most that long for a slow Redis before it goes to the database.
    ///   - namespace: the first part of every key, e.g. the application's name.
    ///   - defaultPolicy: the policy of repositories that do not give their own.
    ///   - codec: the entry format; JSON by default.
    ///   - logger: where problems are logged.
    /// - Throws: ``CacheError`` if the namespace is empty or uses other characters than
    ///   `A-Z a-z 0-9 - . _`.
    public init(
        postgres: PGClient,
        redis: RESPClient,
        namespace: String,
        defaultPolicy: CachePolicy = .default,
        codec: any CacheEntryCodec = JSONEntryCodec(),
        logger: Logger = Logger(label: "cache-aside")
    ) throws(CacheError) {
        try CacheKey.validate(namespace, what: "namespace")
        self.postgres = postgres
        self.redis = redis
        self.namespace = namespace
        self.defaultPolicy = defaultPolicy
        self.codec = codec
        self.logger = logger
        self.invalidations = InvalidationQueue(redis: redis, logger: logger)
    }

    /// What the cache did for one keyspace since it started.
    public func statistics(keyspace: String) -> CacheStatistics {
        keyspaces.withLock { all in
            all.filter { $0.key.name == keyspace }.values.map(\.counters.statistics).reduce(CacheStatistics(), +)
        }
    }

    /// What the cache did for all keyspaces since it started.
    public func statistics() -> CacheStatistics {
        keyspaces.withLock { all in all.values.map(\.counters.statistics).reduce(CacheStatistics(), +) }
    }

    /// Invalidations that could not reach Redis yet and are being retried.
    public var pendingInvalidations: Int { invalidations.count }

    /// Tries the pending invalidations one last time and stops retrying. Call it when
    /// the service shuts down, before shutting the clients down.
    public func shutdown() async {
        await invalidations.shutdown()
    }

    // MARK: - Keyspaces

    func keyspace(_ name: String, schemaVersion: Int, policy: CachePolicy) throws(CacheError) -> KeyspaceState {
        let id = KeyspaceID(name: name, schemaVersion: schemaVersion)
        if let known = keyspaces.withLock({ $0[id] }), known.policy == policy { return known }
        let prefix = try KeyPrefix.validated(namespace: namespace, keyspace: name, schemaVersion: schemaVersion)
        return keyspaces.withLock { all in
            if let state = all[id], state.policy == policy { return state }
            let state = KeyspaceState(prefix: prefix, policy: policy, counters: all[id]?.counters)
            all[id] = state
            return state
        }
    }
}

struct KeyspaceID: Hashable, Sendable {
    let name: String
    let schemaVersion: Int
}

/// Per keyspace: its key prefix, policy, breaker and counters.
final class KeyspaceState: Sendable {
    let prefix: KeyPrefix
    let policy: CachePolicy
    let counters: KeyspaceCounters
    let breaker: Mutex<CircuitBreaker>
    /// True while the breaker is closed with no failure counted: the hit path then
    /// needs neither the breaker's lock nor the clock.
    private let healthy = Atomic<Bool>(true)

    init(prefix: KeyPrefix, policy: CachePolicy, counters: KeyspaceCounters?) {
        self.prefix = prefix
        self.policy = policy
        self.counters = counters ?? KeyspaceCounters(keyspace: prefix.keyspace)
        self.breaker = Mutex(CircuitBreaker(configuration: policy.circuitBreaker))
    }

    /// Whether to call Redis now.
    func mayCallRedis() -> Bool {
        if healthy.load(ordering: .relaxed) { return true }
        let now = ContinuousClock.now
        return breaker.withLock { $0.decide(now: now) } != .reject
    }

    /// Reports the outcome of a Redis call to the breaker. Server errors (a script
    /// bug, WRONGTYPE) are not Redis being down: they count as successes.
    func redisSucceeded() {
        if healthy.load(ordering: .relaxed) { return }
        breaker.withLock { b in
            b.recordSuccess()
            healthy.store(true, ordering: .relaxed)
        }
    }

    func redisFailed(_ error: any Error) {
        guard isUnavailability(error) else {
            redisSucceeded()
            return
        }
        let now = ContinuousClock.now
        breaker.withLock { b in
            b.recordFailure(now: now)
            healthy.store(false, ordering: .relaxed)
        }
    }
}

/// Whether an error means Redis is unreachable or too slow (what a breaker counts).
func isUnavailability(_ error: any Error) -> Bool {
    if let redisError = error as? RESPError { return redisError.isConnectionFailure }
    return !(error is CancellationError)
}
