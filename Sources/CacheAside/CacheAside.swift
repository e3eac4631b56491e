import Foundation
import Logging
import CacheAsideMemory
import CacheAsidePostgres
import CacheAsideRedis
import ServiceLifecycle
import Synchronization

extension UUID: CacheIdentifier {
    /// The lower-case canonical form.
    public var cacheKeyComponent: String { uuidString.lowercased() }
}

/// The shared cache-aside runtime: one per application, shared by every repository.
///
/// It owns the database client and the cache's store (Redis), the namespace every key
/// starts with, this process's single-flight table, a circuit breaker per keyspace, the
/// invalidations waiting to be retried, the listener for fills announced by other
/// processes, and the in-process tiers of repositories that have one, with what keeps
/// them coherent (``MemoryTierCoherence``).
///
/// ## Lifecycle
/// It is a swift-service-lifecycle `Service`: put it in a `ServiceGroup`, or run it
/// with ``withRunning(_:)``. ``run()`` owns the background work: invalidation retries,
/// the fill announcements subscription, fills sent off the callers' paths, and the
/// in-process tiers' invalidation channel (memory tiers serve hits only while it runs). On
/// graceful shutdown (or ``shutdown()``) it stops taking background work, delivers
/// pending invalidations for at most ``shutdownTimeout``, then shuts both clients
/// down. `find` and the writes work without `run()` (fills are then sent on the
/// caller's path, and failed invalidations are retried only at ``shutdown()``).
///
/// ## Observability
/// Metrics (swift-metrics, dimension `keyspace`): counters `cache_aside_hits_total`,
/// `cache_aside_misses_total`, `cache_aside_fills_total`,
/// `cache_aside_rejected_fills_total`, `cache_aside_lease_waits_total`,
/// `cache_aside_database_loads_total`, `cache_aside_fail_open_reads_total`,
/// `cache_aside_invalidation_retries_total`, `cache_aside_decode_failures_total`,
/// `cache_aside_store_errors_total`, and the timer `cache_aside_find_duration`
/// (dimension `path`: `hit` or `miss`); for repositories with an in-process tier,
/// `cache_aside_memory_hits_total`, `cache_aside_memory_misses_total`,
/// `cache_aside_memory_evictions_total`, `cache_aside_memory_invalidations_total`
/// (invalidations received from Redis) and `cache_aside_memory_flushes_total`. Logs go
/// to the logger given at init: per-request
/// events at debug level; warnings only when something changes state (a breaker opens,
/// invalidations start failing, entries of a keyspace stop decoding).
public final class CacheAside: Sendable {
    /// The database every repository reads from and writes to.
    public let postgres: PGClient
    /// The prefix of every key this cache writes (`A-Z a-z 0-9 - . _`).
    public let namespace: String
    /// The policy of repositories that do not give their own.
    public let defaultPolicy: CachePolicy
    /// How cached values are turned into bytes and back.
    public let codec: any CacheValueCodec
    /// Where the runtime logs.
    public let logger: Logger
    /// How long a graceful shutdown keeps trying to deliver pending invalidations.
    public let shutdownTimeout: Duration
    /// How in-process tiers learn about writes, and how stale a memory hit may be.
    public let memoryCoherence: MemoryTierCoherence

    package let store: any CacheStore
    let flights = SingleFlightTable()
    @usableFromInline let invalidations: InvalidationQueue
    let announcements = FillAnnouncements()
    let background = BackgroundWork()
    let coherence: MemoryCoherence
    /// Where the in-process tiers' invalidation channel is opened (nil: nowhere, and
    /// memory tiers never serve).
    private let subscriber: RESPClient?
    /// The first half of every lease token this runtime takes: tells its own leases.
    let leasePrefix: [UInt8]
    private let keyspaces = Mutex<[KeyspaceID: KeyspaceState]>([:])
    /// The keyspaces as the hit path reads them, without a lock: the latest of the
    /// published snapshots, published (under `keyspaces`' lock) when a keyspace is
    /// added or its state replaced. Published snapshots live as long as the runtime, so
    /// that a reader never sees one freed. A keyspace whose state is replaced (its
    /// policy changed) leaves the snapshots for good and is read under the lock from
    /// then on: so at most one superseded state (and its flushed tier) per keyspace
    /// stays allocated, held by an old snapshot. After ``KeyspaceSnapshot/limit``
    /// snapshots (as many keyspaces, or changes), the empty first one is published
    /// again for good, and every read takes the lock.
    @usableFromInline let published: Atomic<Unmanaged<KeyspaceSnapshot>>
    private let snapshots: Mutex<PublishedKeyspaces>
    private let memoryTiers = Mutex<[KeyspaceID: MemoryTierBase]>([:])
    private let lifecycle = Mutex(Lifecycle())

    /// Creates the runtime over a Redis client.
    ///
    /// - Parameters:
    ///   - postgres: the database client (its pool is shared by every repository).
    ///   - redis: the Redis client: a `RESPClient` (one server, or a primary endpoint)
    ///     or a `RESPClusterClient` (a Redis Cluster). Give it a short command timeout
    ///     (100–250 ms suits a cache on the same network): a read waits at most that
    ///     long for a slow Redis before it goes to the database.
    ///   - namespace: the first part of every key, e.g. the application's name.
    ///   - defaultPolicy: the policy of repositories that do not give their own.
    ///   - codec: how values are stored; JSON by default.
    ///   - shutdownTimeout: how long shutdown keeps trying to deliver pending
    ///     invalidations. Default: 5 seconds.
    ///   - memoryCoherence: how repositories' in-process tiers (``CachePolicy/memory``)
    ///     learn about writes: client tracking by default, or a channel writers publish
    ///     to. Every process of a namespace must use the same.
    ///   - logger: where the runtime logs (debug for requests, warnings for changes of
    ///     state).
    /// - Throws: ``CacheError`` if the namespace is empty or uses other characters than
    ///   `A-Z a-z 0-9 - . _`, or the coherence settings cannot hold (a heartbeat not
    ///   shorter than the staleness bound).
    public convenience init(
        postgres: PGClient,
        redis: some RESPClientProtocol,
        namespace: String,
        defaultPolicy: CachePolicy = .default,
        codec: any CacheValueCodec = JSONValueCodec(),
        shutdownTimeout: Duration = .seconds(5),
        memoryCoherence: MemoryTierCoherence = MemoryTierCoherence(),
        logger: Logger
    ) throws(CacheError) {
        try CacheKey.validate(namespace, what: "namespace")
        try self.init(
            postgres: postgres, store: RedisCacheStore(redis: redis, channel: "\(namespace):cache-aside:fills"),
            namespace: namespace, defaultPolicy: defaultPolicy, codec: codec, shutdownTimeout: shutdownTimeout,
            // The in-process tiers' invalidation channel needs one server: on a cluster
            // client they have none, and serve nothing from memory.
            memoryCoherence: memoryCoherence, subscriber: redis as? RESPClient, logger: logger)
    }

    /// Creates the runtime over any store (tests use an in-memory one). With a
    /// `subscriber`, in-process tiers get their invalidation channel there (and in
    /// publish mode, the store's invalidations publish through it).
    package init(
        postgres: PGClient,
        store: any CacheStore,
        namespace: String,
        defaultPolicy: CachePolicy = .default,
        codec: any CacheValueCodec = JSONValueCodec(),
        shutdownTimeout: Duration = .seconds(5),
        memoryCoherence: MemoryTierCoherence = MemoryTierCoherence(),
        subscriber: RESPClient? = nil,
        logger: Logger
    ) throws(CacheError) {
        try CacheKey.validate(namespace, what: "namespace")
        guard memoryCoherence.heartbeatInterval > .zero, memoryCoherence.maximumStaleness > memoryCoherence.heartbeatInterval else {
            throw .configuration("the memory tier's heartbeat interval must be positive and shorter than its maximum staleness")
        }
        if case .publish(let channel?) = memoryCoherence.invalidation, channel.isEmpty {
            throw .configuration("the memory tier's invalidation channel must not be empty")
        }
        self.postgres = postgres
        self.namespace = namespace
        self.defaultPolicy = defaultPolicy
        self.codec = codec
        self.shutdownTimeout = shutdownTimeout
        self.memoryCoherence = memoryCoherence
        self.subscriber = subscriber
        self.logger = logger
        self.invalidations = InvalidationQueue(logger: logger)
        let empty = KeyspaceSnapshot(states: [:])
        self.published = Atomic(Unmanaged.passUnretained(empty))
        self.snapshots = Mutex(PublishedKeyspaces(all: [empty]))
        var generator = SystemRandomNumberGenerator()
        self.leasePrefix = Token.hex(generator.next() as UInt64)
        let coherence = MemoryCoherence(
            settings: memoryCoherence, namespace: namespace, instance: String(decoding: leasePrefix, as: UTF8.self),
            logger: logger)
        self.coherence = coherence
        if let subscriber, let channel = coherence.channel {
            self.store = PublishingCacheStore(base: store, redis: subscriber, channel: channel)
        } else {
            self.store = store
        }
    }

    /// What the cache did for one keyspace since it started.
    public func statistics(keyspace: String) -> CacheStatistics {
        keyspaces.withLock { all in
            all.filter { $0.key.name == keyspace }.values.map(\.statistics).reduce(CacheStatistics(), +)
        }
    }

    /// What the cache did for all keyspaces since it started.
    public func statistics() -> CacheStatistics {
        keyspaces.withLock { all in all.values.map(\.statistics).reduce(CacheStatistics(), +) }
    }

    /// Invalidations that could not land yet and are being retried.
    public var pendingInvalidations: Int { invalidations.count }

    // MARK: - Lifecycle

    private struct Lifecycle {
        var running = false
        var stopRequested = false
        var finished = false
        var stopSignal = Signal()
        var finishWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Runs the background work until graceful shutdown (or ``shutdown()``), then
    /// delivers pending invalidations for at most ``shutdownTimeout`` and shuts the
    /// clients down. Cancelling it stops at once (pending invalidations are then
    /// lost; their entries expire with their TTL).
    ///
    /// - Throws: ``CacheError`` of kind ``CacheError/Kind/shutdown`` if the runtime
    ///   already ran.
    public func run() async throws {
        let (start, stop): (Bool, Signal) = lifecycle.withLock { l in
            if l.running || l.finished { return (false, l.stopSignal) }
            l.running = true
            return (true, l.stopSignal)
        }
        guard start else { throw CacheError(kind: .shutdown, message: "the cache runtime runs once") }
        logger.debug("cache runtime started", metadata: ["namespace": "\(namespace)"])
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { outer in
                outer.addTask { await self.listenForFills() }
                if let subscriber = self.subscriber {
                    outer.addTask { await self.coherence.run(redis: subscriber) }
                }
                await withTaskGroup(of: Void.self) { inner in
                    inner.addTask { await self.background.run() }
                    inner.addTask { await self.invalidations.run(store: self.store) }
                    await stop.wait()
                    self.background.finish()
                    self.invalidations.stop(deadline: .now + self.shutdownTimeout)
                }
                outer.cancelAll()
            }
        } onGracefulShutdown: {
            self.requestStop()
        }
        await closeClients()
        let waiters: [CheckedContinuation<Void, Never>] = lifecycle.withLock { l in
            l.finished = true
            l.running = false
            let w = l.finishWaiters
            l.finishWaiters = []
            return w
        }
        for w in waiters { w.resume() }
        logger.debug("cache runtime stopped", metadata: ["namespace": "\(namespace)"])
    }

    /// Stops the runtime gracefully and returns when it is done: pending invalidations
    /// are delivered (for at most ``shutdownTimeout``) and the clients are shut down.
    /// If ``run()`` is not running, does the same itself. Calling it again just waits.
    public func shutdown() async {
        enum Next { case wait, doItHere, done }
        let next: Next = lifecycle.withLock { l in
            if l.finished { return .done }
            if l.running { return .wait }
            l.finished = true
            return .doItHere
        }
        switch next {
        case .done:
            return
        case .doItHere:
            background.finish()
            await invalidations.flush(store: store, deadline: .now + shutdownTimeout)
            await closeClients()
        case .wait:
            requestStop()
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now: Bool = lifecycle.withLock { l in
                    if l.finished { return true }
                    l.finishWaiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    /// Runs ``run()`` while `body` runs, then shuts down gracefully (delivering pending
    /// invalidations, closing the clients) and returns `body`'s result.
    ///
    /// ```swift
    /// try await cache.withRunning {
    ///     let user = try await users.find(42)
    /// }
    /// ```
    public func withRunning<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            let result: Result
            do {
                result = try await body()
            } catch {
                await shutdown()
                try? await group.waitForAll()
                throw error
            }
            await shutdown()
            try await group.waitForAll()
            return result
        }
    }

    private func requestStop() {
        let signal: Signal? = lifecycle.withLock { l in
            if l.stopRequested { return nil }
            l.stopRequested = true
            return l.stopSignal
        }
        signal?.fire()
    }

    private func closeClients() async {
        await store.shutdown()
        await postgres.shutdown()
    }

    /// Keeps the fill announcements subscription open until cancelled, reopening it
    /// with backoff when it fails.
    private func listenForFills() async {
        var backoff = Duration.milliseconds(100)
        var failing = false
        while !Task.isCancelled {
            do {
                try await store.listenForFills(
                    onReady: { [announcements] in announcements.setListening(true) },
                    deliver: { [announcements] key in announcements.deliver(key) })
            } catch {
                if !failing {
                    logger.info("cache fill announcements unavailable; waiters read keys again instead",
                                metadata: ["error": "\(error)"])
                    failing = true
                }
            }
            announcements.setListening(false)
            if Task.isCancelled { return }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    // MARK: - Keyspaces

    /// The in-process tier of a keyspace and schema version, if a repository made one:
    /// for tests and diagnostics.
    func memoryTier(keyspace: String, schemaVersion: Int = 1) -> MemoryTierBase? {
        memoryTiers.withLock { $0[KeyspaceID(name: keyspace, schemaVersion: schemaVersion)] }
    }

    /// The state of a keyspace and schema version, under `policy`, for repositories
    /// of `Entity` (whose in-process tier, if the policy has one, holds `Entity`).
    @usableFromInline
    func keyspace<Entity: Sendable>(
        _ name: String, schemaVersion: Int, policy: CachePolicy, entity: Entity.Type
    ) throws(CacheError) -> KeyspaceState {
        let id = KeyspaceID(name: name, schemaVersion: schemaVersion)
        // The published snapshot first (no lock: the hit path of every core reads it),
        // then the dictionary under its lock.
        if let known = published.load(ordering: .acquiring)._withUnsafeGuaranteedRef({ $0.states[id] }),
           known.policy == policy, policy.memory == nil || known.memory != nil
        {
            return known
        }
        if let known = keyspaces.withLock({ $0[id] }), known.policy == policy,
           policy.memory == nil || known.memory != nil
        {
            return known
        }
        let prefix = try KeyPrefix.validated(namespace: namespace, keyspace: name, schemaVersion: schemaVersion)
        var replaced: MemoryTierBase?
        let state: KeyspaceState = keyspaces.withLock { all in
            let previous = all[id]
            if let previous, previous.policy == policy, policy.memory == nil || previous.memory != nil { return previous }
            var memory: MemoryTierBase?
            if let tier = policy.memory {
                // A tier lives as long as the runtime (a state replaced by a policy
                // without one keeps it registered, and coherent, for the next).
                memory = memoryTiers.withLock { tiers in
                    let entityType = ObjectIdentifier(Entity.self)
                    if let kept = tiers[id], kept.tier == tier, kept.entityType == entityType { return kept }
                    replaced = tiers[id]
                    let made = MemoryTier<Entity>(keyspace: name, schemaVersion: schemaVersion, policy: policy, tier: tier)
                    coherence.register(made)
                    tiers[id] = made
                    return made
                }
            }
            let state = KeyspaceState(
                prefix: prefix, policy: policy, counters: previous?.counters, memory: memory, logger: logger)
            all[id] = state
            publish(all, replacing: previous == nil ? nil : id)
            return state
        }
        if let replaced { coherence.unregister(replaced) }
        return state
    }
}

extension CacheAside {
    /// Publishes `states` for lock-free reads (called under `keyspaces`' lock), without
    /// the keyspaces ever replaced (`replacing` is one, if this change replaced its
    /// state); once the limit of snapshots is reached, publishes the empty one (a stale
    /// snapshot must never answer).
    private func publish(_ states: [KeyspaceID: KeyspaceState], replacing: KeyspaceID?) {
        let (next, limitReached): (KeyspaceSnapshot, Bool) = snapshots.withLock { p in
            if let replacing { p.replaced.insert(replacing) }
            guard p.all.count < KeyspaceSnapshot.limit else { return (p.all[0], false) }
            let snapshot = KeyspaceSnapshot(states: p.replaced.isEmpty ? states : states.filter { !p.replaced.contains($0.key) })
            p.all.append(snapshot)
            return (p.all.count == KeyspaceSnapshot.limit ? p.all[0] : snapshot, p.all.count == KeyspaceSnapshot.limit)
        }
        published.store(Unmanaged.passUnretained(next), ordering: .releasing)
        if limitReached {
            logger.info(
                "keyspaces are read under a lock from now on (\(KeyspaceSnapshot.limit) keyspaces or policy changes published)",
                metadata: ["namespace": "\(namespace)"])
        }
    }
}

/// Every snapshot published (the first is the empty one), and the keyspaces that left
/// them because their state was replaced.
struct PublishedKeyspaces {
    var all: [KeyspaceSnapshot]
    var replaced: Set<KeyspaceID> = []
}

/// An immutable copy of the keyspaces, for reads without a lock.
@usableFromInline
final class KeyspaceSnapshot: Sendable {
    /// Snapshots a runtime publishes at most.
    static let limit = 256
    let states: [KeyspaceID: KeyspaceState]
    /// The same states, unretained (`states` keeps them alive as long as the
    /// snapshot), for the memory tier's hit path: reading one writes no reference
    /// count that every core shares.
    @usableFromInline let borrowed: [KeyspaceID: Unmanaged<KeyspaceState>]

    init(states: [KeyspaceID: KeyspaceState]) {
        self.states = states
        self.borrowed = states.mapValues { Unmanaged.passUnretained($0) }
    }
}

extension CacheAside: Service {}

@usableFromInline
struct KeyspaceID: Hashable, Sendable {
    @usableFromInline let name: String
    @usableFromInline let schemaVersion: Int

    @usableFromInline
    init(name: String, schemaVersion: Int) {
        self.name = name
        self.schemaVersion = schemaVersion
    }
}

/// Per keyspace and schema version: its key prefix, policy, breaker and counters.
@usableFromInline
final class KeyspaceState: Sendable {
    @usableFromInline let prefix: KeyPrefix
    @usableFromInline let policy: CachePolicy
    let counters: KeyspaceCounters
    /// The in-process tier, if the policy has one.
    @usableFromInline let memory: MemoryTierBase?
    /// `memory`, unretained: the hit path borrows this state, which keeps it alive.
    @usableFromInline unowned(unsafe) let memoryTier: MemoryTierBase?
    let logger: Logger
    private let breaker: Mutex<CircuitBreaker>
    /// True while the breaker is closed with no failure counted: the hit path then
    /// needs neither the breaker's lock nor the clock.
    private let healthy = Atomic<Bool>(true)
    private let decodeFailureLogged = Atomic<Bool>(false)

    init(prefix: KeyPrefix, policy: CachePolicy, counters: KeyspaceCounters?, memory: MemoryTierBase? = nil, logger: Logger) {
        self.prefix = prefix
        self.policy = policy
        self.counters = counters ?? KeyspaceCounters(keyspace: prefix.keyspace)
        self.memory = memory
        self.memoryTier = memory
        self.logger = logger
        self.breaker = Mutex(CircuitBreaker(configuration: policy.circuitBreaker))
    }

    /// The counters, with the in-process tier's.
    var statistics: CacheStatistics {
        var statistics = counters.statistics
        if let memory {
            let m = memory.statistics
            statistics.memoryHits = Int(m.hits)
            statistics.memoryMisses = Int(m.misses + m.untrustedLookups)
            statistics.memoryEvictions = Int(m.evictions)
            statistics.memoryInvalidations = memory.receivedInvalidations.load(ordering: .relaxed)
            statistics.memoryFlushes = Int(m.flushes)
            statistics.memoryEntries = m.entries
            statistics.memoryBytes = m.bytes
        }
        return statistics
    }

    /// Counts a hit served from the store, with its latency since `start`.
    @usableFromInline
    func recordHit(since start: ContinuousClock.Instant) {
        counters.record(.hit)
        counters.recordLatency(hit: true, since: start)
    }

    /// Whether to call the store now.
    @inline(__always)
    func mayCallStore() -> Bool {
        if healthy.load(ordering: .relaxed) { return true }
        let now = ContinuousClock.now
        return breaker.withLock { $0.decide(now: now) } != .reject
    }

    /// Whether the breaker refuses calls now (for tests and health checks).
    var breakerIsOpen: Bool {
        let now = ContinuousClock.now
        return breaker.withLock { $0.isOpen(now: now) }
    }

    /// Reports a call the store answered.
    @inline(__always)
    func storeSucceeded() {
        if healthy.load(ordering: .relaxed) { return }
        let wasOpen: Bool = breaker.withLock { b in
            let wasOpen: Bool
            if case .closed = b.state { wasOpen = false } else { wasOpen = true }
            b.recordSuccess()
            healthy.store(true, ordering: .relaxed)
            return wasOpen
        }
        if wasOpen {
            logger.info("cache store answers again: circuit breaker closed", metadata: ["keyspace": "\(prefix.keyspace)"])
        }
    }

    /// Reports a failed call. Outages (unreachable, timeouts, refused writes) count
    /// for the breaker; other error replies and cancellations do not.
    func storeFailed(_ error: any Error) {
        let storeError = (error as? CacheStoreError) ?? CacheStoreError(.unavailable, "\(error)")
        if storeError.kind == .cancelled { return }
        counters.record(.storeError)
        guard storeError.isOutage else {
            logger.debug("cache store error reply", metadata: ["keyspace": "\(prefix.keyspace)", "error": "\(storeError)"])
            return
        }
        let now = ContinuousClock.now
        let opened: Bool = breaker.withLock { b in
            let wasOpen: Bool
            if case .closed = b.state { wasOpen = false } else { wasOpen = true }
            b.recordFailure(now: now)
            healthy.store(false, ordering: .relaxed)
            if case .open = b.state { return !wasOpen }
            return false
        }
        if opened {
            logger.warning("cache store failing: circuit breaker opened, reads go to the database",
                           metadata: ["keyspace": "\(prefix.keyspace)", "error": "\(storeError)"])
        } else {
            logger.debug("cache store call failed", metadata: ["keyspace": "\(prefix.keyspace)", "error": "\(storeError)"])
        }
    }

    /// Logs an entry that did not decode: the first at warning level (entries of this
    /// keyspace stopped decoding), later ones at debug.
    func logDecodeFailure(key: String, error: any Error) {
        counters.record(.decodeFailure)
        if !decodeFailureLogged.exchange(true, ordering: .relaxed) {
            logger.warning("cache entries fail to decode: treating them as misses and replacing them",
                           metadata: ["keyspace": "\(prefix.keyspace)", "key": "\(key)", "error": "\(error)"])
        } else {
            logger.debug("cache entry failed to decode", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }
}
