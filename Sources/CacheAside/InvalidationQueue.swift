import Logging
import Synchronization

/// Invalidations that could not land yet, retried by ``CacheAside/run()`` until they
/// do or until the entry they target has surely expired.
///
/// While a key waits here, reads of it in this process skip the cache (they read the
/// database and fill nothing), so this process never serves the row it just changed.
/// Other processes may serve the old entry until the retry lands or the entry's TTL
/// runs out: the worst-case staleness is the policy's ``CachePolicy/longestEntryLifetime``.
@usableFromInline
final class InvalidationQueue: Sendable {
    private struct Pending {
        var key: String
        var keyspace: KeyspaceState
        var deadline: ContinuousClock.Instant
        var generation: UInt64
    }

    private struct State {
        var pending: [String: Pending] = [:]
        var generation: UInt64 = 0
        /// Set when the runtime stops: deliver what is left until then, then give up.
        var stopDeadline: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let size = Atomic<Int>(0)
    private let wake = Signal()
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    var count: Int { size.load(ordering: .relaxed) }

    /// Whether an invalidation of this key is waiting. Cheap when none is.
    @usableFromInline
    func contains(_ key: String) -> Bool {
        if size.load(ordering: .relaxed) == 0 { return false }
        return state.withLock { $0.pending[key] != nil }
    }

    /// Queues the invalidation of `keys` for retries.
    func enqueue(_ keys: [String], keyspace: KeyspaceState) {
        guard !keys.isEmpty else { return }
        let deadline = ContinuousClock.now + keyspace.policy.longestEntryLifetime
        let wasEmpty: Bool = state.withLock { s in
            let wasEmpty = s.pending.isEmpty
            for key in keys {
                s.generation += 1
                s.pending[key] = Pending(key: key, keyspace: keyspace, deadline: deadline, generation: s.generation)
            }
            size.store(s.pending.count, ordering: .relaxed)
            return wasEmpty
        }
        keyspace.counters.record(.invalidationRetry, keys.count)
        if wasEmpty {
            logger.warning("cache invalidations are not landing; retrying them, and skipping the cache for their keys",
                           metadata: ["keyspace": "\(keyspace.prefix.keyspace)", "keys": "\(keys.count)"])
        }
        wake.fire()
    }

    /// Retries pending invalidations with backoff until ``stop(deadline:)``; then
    /// keeps trying what is left until that deadline, and returns.
    func run(store: any CacheStore) async {
        var delay: Duration?
        while true {
            let (batch, stopDeadline) = dueBatch()
            let now = ContinuousClock.now
            if let stopDeadline {
                if batch.isEmpty || now >= stopDeadline || Task.isCancelled {
                    if !batch.isEmpty {
                        logger.error("cache invalidations not delivered at shutdown; their entries expire with their TTL",
                                     metadata: ["count": "\(batch.count)"])
                    }
                    return
                }
            } else if Task.isCancelled {
                return
            }
            if batch.isEmpty {
                delay = nil
                await wake.wait()
                continue
            }
            let first = batch.map(\.keyspace.policy.invalidationRetryDelay).min() ?? .milliseconds(100)
            let longest = batch.map(\.keyspace.policy.invalidationRetryMaxDelay).max() ?? .seconds(5)
            let pause = delay ?? first
            if let stopDeadline {
                // Stopping: try again soon, within the deadline.
                await wake.wait(timeout: min(pause, max(stopDeadline - now, .zero)))
            } else {
                await wake.wait(timeout: pause)
            }
            if await deliver(batch, store: store) {
                delay = nil
            } else {
                delay = min(pause * 2, longest)
            }
        }
    }

    /// Stops retrying in the background: what is pending is tried until `deadline`.
    func stop(deadline: ContinuousClock.Instant) {
        state.withLock { $0.stopDeadline = deadline }
        wake.fire()
    }

    /// Delivers everything pending now, trying until `deadline` (for a runtime that
    /// never ran).
    func flush(store: any CacheStore, deadline: ContinuousClock.Instant) async {
        stop(deadline: deadline)
        await run(store: store)
    }

    /// What is pending, minus what has surely expired in the store by now.
    private func dueBatch() -> ([Pending], ContinuousClock.Instant?) {
        let now = ContinuousClock.now
        return state.withLock { s in
            var abandoned = 0
            for (key, p) in s.pending where p.deadline <= now {
                s.pending.removeValue(forKey: key)
                abandoned += 1
            }
            size.store(s.pending.count, ordering: .relaxed)
            if abandoned > 0 {
                logger.warning("cache invalidations abandoned: their entries have expired by now",
                               metadata: ["count": "\(abandoned)"])
            }
            return (Array(s.pending.values.prefix(512)), s.stopDeadline)
        }
    }

    /// One attempt; true if everything in the batch landed.
    private func deliver(_ batch: [Pending], store: any CacheStore) async -> Bool {
        let requests = batch.map { p in
            InvalidationRequest(key: p.key, tombstone: EntryFormat.tombstone(), ttlMilliseconds: p.keyspace.policy.tombstoneTTLMilliseconds)
        }
        let replies: [InvalidationReply]
        do {
            replies = try await store.invalidate(requests)
        } catch {
            for p in batch {
                p.keyspace.counters.record(.invalidationRetry)
                p.keyspace.storeFailed(error)
            }
            logger.debug("cache invalidation retry failed", metadata: ["error": "\(error)", "keys": "\(batch.count)"])
            return false
        }
        var landed: [Pending] = []
        var refused: CacheStoreError?
        for (p, reply) in zip(batch, replies) {
            switch reply {
            case .tombstoned, .deleted:
                landed.append(p)
                p.keyspace.storeSucceeded()
            case .refused(let error):
                refused = error
                p.keyspace.counters.record(.invalidationRetry)
                p.keyspace.storeFailed(error)
            }
        }
        let empty: Bool = state.withLock { s in
            for p in landed where s.pending[p.key]?.generation == p.generation {
                s.pending.removeValue(forKey: p.key)
            }
            size.store(s.pending.count, ordering: .relaxed)
            return s.pending.isEmpty
        }
        if let refused {
            logger.debug("cache invalidation retry refused", metadata: ["error": "\(refused)"])
        }
        if empty && !landed.isEmpty {
            logger.info("cache invalidations delivered; none pending", metadata: ["delivered": "\(landed.count)"])
        }
        return refused == nil
    }
}
