import Logging
import CacheAsideRedis
import Synchronization

/// Invalidations that could not reach Redis, retried in the background until they
/// succeed or until the entry they target has surely expired.
///
/// While a key waits here, reads of it in this process skip the cache (they read the
/// database and fill nothing), so this process never serves the row it just changed.
/// Other processes may serve the old entry until the retry succeeds or the entry's TTL
/// runs out: the worst-case staleness is the policy's ``CachePolicy/longestEntryLifetime``.
final class InvalidationQueue: Sendable {
    private struct Pending {
        var key: CacheKey
        var policy: CachePolicy
        var deadline: ContinuousClock.Instant
        var generation: UInt64
        var counters: KeyspaceCounters
        var firstDelay: Duration
        var maxDelay: Duration
    }

    private struct State {
        var pending: [String: Pending] = [:]
        var generation: UInt64 = 0
        var worker: Task<Void, Never>?
        var stopped = false
    }

    private let redis: RESPClient
    private let logger: Logger
    private let state = Mutex(State())
    private let size = Atomic<Int>(0)

    init(redis: RESPClient, logger: Logger) {
        self.redis = redis
        self.logger = logger
    }

    var count: Int { size.load(ordering: .relaxed) }

    /// Whether an invalidation of this entry is waiting. Cheap when none is.
    func contains(_ entryKey: String) -> Bool {
        if size.load(ordering: .relaxed) == 0 { return false }
        return state.withLock { $0.pending[entryKey] != nil }
    }

    /// Queues the invalidation of `keys` (entry and lease each) for retries.
    func enqueue(_ keys: [CacheKey], keyspace: KeyspaceState) {
        let policy = keyspace.policy
        let deadline = ContinuousClock.now + policy.longestEntryLifetime
        let startWorker: Bool = state.withLock { s in
            for key in keys {
                s.generation += 1
                s.pending[key.entryKey] = Pending(
                    key: key, policy: policy, deadline: deadline, generation: s.generation,
                    counters: keyspace.counters, firstDelay: policy.invalidationRetryDelay,
                    maxDelay: policy.invalidationRetryMaxDelay)
            }
            size.store(s.pending.count, ordering: .relaxed)
            return s.worker == nil && !s.stopped
        }
        keyspace.counters.record(.invalidationRetry, keys.count)
        if startWorker { start() }
    }

    private func start() {
        state.withLock { s in
            guard s.worker == nil, !s.stopped else { return }
            s.worker = Task { [weak self] in await self?.retryUntilDone() }
        }
    }

    private func retryUntilDone() async {
        var delay: Duration?
        while !Task.isCancelled {
            // Snapshot what is due, dropping what has surely expired in Redis.
            let now = ContinuousClock.now
            let batch: [(String, Pending)] = state.withLock { s in
                for (key, p) in s.pending where p.deadline <= now {
                    s.pending.removeValue(forKey: key)
                    logger.error("cache invalidation abandoned: the entry has expired by now", metadata: ["key": "\(key)"])
                }
                size.store(s.pending.count, ordering: .relaxed)
                if s.pending.isEmpty {
                    s.worker = nil
                    return []
                }
                return Array(s.pending.prefix(512))
            }
            if batch.isEmpty { return }
            let first = batch.map(\.1.firstDelay).min() ?? .milliseconds(100)
            let maxDelay = batch.map(\.1.maxDelay).max() ?? .seconds(5)
            let wait = delay ?? first
            do {
                try await Task.sleep(for: wait)
            } catch {
                return
            }
            do {
                try await deliver(batch.map(\.1))
                state.withLock { s in
                    for (key, p) in batch where s.pending[key]?.generation == p.generation {
                        s.pending.removeValue(forKey: key)
                    }
                    size.store(s.pending.count, ordering: .relaxed)
                }
                logger.info("cache invalidations delivered after retry", metadata: ["count": "\(batch.count)"])
                delay = nil
            } catch {
                for (_, p) in batch { p.counters.record(.invalidationRetry) }
                logger.warning("cache invalidation retry failed", metadata: ["error": "\(error)", "pending": "\(batch.count)"])
                delay = min(wait * 2, maxDelay)
            }
        }
    }

    /// One last attempt, then no more retries.
    func shutdown() async {
        let (worker, pending): (Task<Void, Never>?, [Pending]) = state.withLock { s in
            s.stopped = true
            let w = s.worker
            s.worker = nil
            return (w, Array(s.pending.values))
        }
        worker?.cancel()
        await worker?.value
        guard !pending.isEmpty else { return }
        do {
            try await deliver(pending)
            state.withLock { s in
                s.pending.removeAll()
                size.store(0, ordering: .relaxed)
            }
        } catch {
            logger.error("cache invalidations lost at shutdown: Redis unreachable; entries expire with their TTL",
                         metadata: ["count": "\(pending.count)", "error": "\(error)"])
        }
    }

    /// Sends the invalidations in one pipeline, with fresh tombstones.
    private func deliver(_ pending: [Pending]) async throws {
        var commands: [[[UInt8]]] = []
        for p in pending { commands += CacheMarks.invalidationCommands([p.key], policy: p.policy) }
        try await deliverInvalidationCommands(commands, redis: redis)
    }
}

/// Sends invalidation commands in one pipeline; a refusal by the server (out of
/// memory, say) counts as a failure to retry.
func deliverInvalidationCommands(_ commands: [[[UInt8]]], redis: RESPClient) async throws {
    let replies = try await redis.pipeline(commands)
    if let refused = replies.first(where: { $0.errorMessage != nil }) {
        throw CacheError(kind: .encoding, message: "Redis refused an invalidation: \(refused)")
    }
}
