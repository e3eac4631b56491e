import Logging
import Metrics
import CacheAsidePostgres
import CacheAsideRedis

/// Random tokens (leases, tombstones): 128 bits, hex.
func makeLeaseToken() -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(32)
    for _ in 0..<2 {
        var word = generator.next() as UInt64
        for _ in 0..<16 {
            out.append(hex[Int(word & 0xF)])
            word >>= 4
        }
    }
    return out
}

/// How many times a reader starts afresh (a write happened while it waited for a load)
/// before it reads the database directly.
let maximumFreshStarts = 3

/// One `find`: DESIGN.md's read contract, with the lease kept in the entry's own key
/// (see ``CacheMarks``).
struct ReadPath<Entity: Codable & Sendable>: Sendable {
    let cache: CacheAside
    let state: KeyspaceState
    let load: @Sendable (PGClient) async throws -> Entity?

    private var counters: KeyspaceCounters { state.counters }
    private var policy: CachePolicy { state.policy }

    /// What a reader saw under the key before it read the database.
    struct Observation {
        /// Nothing, a tombstone, a lease, or bytes that did not decode.
        var bytes: [UInt8]?
        /// When the reader saw it: a lease taken over it much later is not trusted.
        var at: ContinuousClock.Instant

        var isLease: Bool { bytes.map(CacheMarks.isLease) ?? false }
    }

    func find(_ key: CacheKey) async throws -> Entity? {
        let start = ContinuousClock.now
        // A write of this key in this process could not reach Redis yet: the entry
        // may be stale, so read the database and fill nothing.
        if cache.invalidations.contains(key.entryKey) {
            return try await loadFromDatabase(failOpen: false, start: start)
        }
        for _ in 0..<maximumFreshStarts {
            guard state.mayCallRedis() else {
                return try await loadFromDatabase(failOpen: true, start: start)
            }

            // 1. GET.
            let observation: Observation
            do {
                let bytes = try await cache.redis.get(key.entryKey)
                state.redisSucceeded()
                observation = Observation(bytes: bytes, at: .now)
            } catch {
                return try await failOpen(after: error, key: key, start: start)
            }
            if let bytes = observation.bytes, let entry = entry(bytes, key: key) {
                counters.record(.hit)
                counters.hitTimer.recordInterval(since: start)
                return entry.value
            }

            // 2. Join this process's load of the key, or lead one.
            switch cache.flights.join(key.entryKey, as: Entity?.self) {
            case .follower(let flight):
                switch await flight.wait() {
                case .value(let value):
                    counters.record(.miss)
                    counters.missTimer.recordInterval(since: start)
                    return value
                case .failure(let error):
                    throw error
                case .retry:
                    // A write happened since this caller began: read afresh.
                    continue
                }
            case .leader(let flight):
                return try await lead(flight, key: key, observation: observation, start: start)
            }
        }
        return try await loadFromDatabase(failOpen: false, start: start)
    }

    // MARK: - Leading a load

    private func lead(
        _ flight: Flight<Entity?>, key: CacheKey, observation first: Observation, start: ContinuousClock.Instant
    ) async throws -> Entity? {
        // What joiners get if this leader throws before deciding: a fresh start
        // (cancellation of this caller is not theirs) or the database's error.
        var resolved = false
        defer {
            if !resolved {
                cache.flights.leave(key.entryKey, flight)
                flight.resolve(.retry)
            }
        }
        var observation = first
        let lease = CacheMarks.lease(makeLeaseToken())
        let exclusive = policy.leaseMode == .exclusive
        var attempts = 0
        var leased = false
        while true {
            attempts += 1
            if attempts > maximumFreshStarts {
                // The key keeps changing under us: read the database without a lease.
                cache.flights.leave(key.entryKey, flight)
                return try await loadResolving(flight, failOpen: false, start: start, resolved: &resolved)
            }
            // 3a. Another reader holds the lease: wait briefly for its fill. If it
            // gives up without filling, take the lease ourselves.
            if observation.isLease {
                counters.record(.leaseWait)
                switch await waitForFill(key: key, flight: flight) {
                case .filled(let value, let pollMark):
                    cache.flights.leave(key.entryKey, flight)
                    flight.resolve(.value(value), registeredBy: pollMark)
                    resolved = true
                    counters.record(.hit)
                    counters.hitTimer.recordInterval(since: start)
                    return value
                case .released(let fresh):
                    observation = fresh
                    continue
                case .gaveUp:
                    // Read the database without a lease. Leave the table first, so
                    // that only callers that began before this read share it.
                    cache.flights.leave(key.entryKey, flight)
                    return try await loadResolving(flight, failOpen: false, start: start, resolved: &resolved)
                }
            }
            // 3b. In exclusive mode, the lease before the load.
            if exclusive {
                switch await takeLease(key: key, over: observation, lease: lease) {
                case .granted:
                    leased = true
                case .refused(let fresh):
                    observation = fresh
                    continue
                case .unavailable:
                    leased = false
                }
            }
            break
        }

        // 4. Load the row; in overlapped mode, take the lease meanwhile. The lease is
        // granted only over what this reader saw before the load began, so a write
        // in between (which leaves a fresh tombstone) is never missed.
        let loadMark = flight.mark()
        counters.record(.miss)
        counters.record(.databaseLoad)
        async let loaded = load(cache.postgres)
        if !exclusive {
            if case .granted = await takeLease(key: key, over: observation, lease: lease) { leased = true }
        }
        let value: Entity?
        do {
            value = try await loaded
        } catch {
            if leased {
                // Give the lease up so other readers need not wait it out.
                Task { await deleteIfEqual(key: key, bytes: lease) }
            }
            cache.flights.leave(key.entryKey, flight)
            flight.resolve(error is CancellationError ? .retry : .failure(error))
            resolved = true
            throw error
        }
        // Leave the table before the fill is sent: nobody may join this load after a
        // write could have invalidated what it fills.
        cache.flights.leave(key.entryKey, flight)
        resolved = true
        counters.missTimer.recordInterval(since: start)
        guard leased else {
            // Another reader took the lease, a write came first, or Redis failed: no
            // fill. The value is shared only with callers that joined before the load.
            flight.resolve(.value(value), registeredBy: loadMark)
            return value
        }
        if flight.waiterCount == 0 {
            // Nobody waits for the fill's verdict: encode and send it off this caller's path.
            Task { await fillAndResolve(flight, key: key, lease: lease, value: value) }
        } else {
            await fillAndResolve(flight, key: key, lease: lease, value: value)
        }
        return value
    }

    private func loadResolving(
        _ flight: Flight<Entity?>, failOpen: Bool, start: ContinuousClock.Instant, resolved: inout Bool
    ) async throws -> Entity? {
        do {
            let value = try await loadFromDatabase(failOpen: failOpen, start: start)
            flight.resolve(.value(value))
            resolved = true
            return value
        } catch {
            flight.resolve(error is CancellationError ? .retry : .failure(error))
            resolved = true
            throw error
        }
    }

    private func fillAndResolve(_ flight: Flight<Entity?>, key: CacheKey, lease: [UInt8], value: Entity?) async {
        guard let encoded = encode(value) else {
            // Nothing cached (the lease expires by itself); the value itself is good.
            flight.resolve(.value(value))
            return
        }
        let ttl = policy.entryTTLMilliseconds(absent: value == nil)
        do {
            let reply = try await cache.redis.evalSHA(
                CacheScripts.compareAndSet, keys: [key.entryKey], arguments: [lease, encoded, Array(String(ttl).utf8)])
            state.redisSucceeded()
            if reply.integer == 1 {
                counters.record(.fill)
                flight.resolve(.value(value))
            } else {
                // A write replaced the lease with a tombstone (or the lease expired):
                // callers that joined may have begun after that write: they start afresh.
                counters.record(.rejectedFill)
                flight.resolve(.retry)
            }
        } catch {
            state.redisFailed(error)
            // Unknown whether it filled; a write would have made the fill fail, so
            // joiners start afresh to be safe.
            flight.resolve(.retry)
        }
    }

    // MARK: - Leases

    enum LeaseOutcome {
        /// The key now holds our lease.
        case granted
        /// The key no longer holds what we saw: what it holds now.
        case refused(Observation)
        /// Redis failed, or our observation is too old to trust.
        case unavailable
    }

    /// Takes the lease over what the reader saw; on refusal, reads what is there now.
    private func takeLease(key: CacheKey, over observation: Observation, lease: [UInt8]) async -> LeaseOutcome {
        // The key can only come back to what we saw (nothing) after a lease expired
        // there, so an observation older than half a lease is not trusted.
        guard state.mayCallRedis(),
              ContinuousClock.now - observation.at < .milliseconds(policy.leaseTTLMilliseconds) / 2
        else { return .unavailable }
        let ttl = Int(policy.leaseTTLMilliseconds)
        do {
            let granted: Bool
            if let saw = observation.bytes {
                let reply = try await cache.redis.evalSHA(
                    CacheScripts.compareAndSet, keys: [key.entryKey], arguments: [saw, lease, Array(String(ttl).utf8)])
                granted = reply.integer == 1
            } else {
                granted = try await cache.redis.set(
                    key.entryKey, to: lease, expiration: .milliseconds(ttl), condition: .ifNotExists)
            }
            state.redisSucceeded()
            if granted { return .granted }
            let now = try await cache.redis.get(key.entryKey)
            return .refused(Observation(bytes: now, at: .now))
        } catch {
            state.redisFailed(error)
            logFailOpen(error, key: key)
            return .unavailable
        }
    }

    enum WaitOutcome {
        /// The entry appeared; the mark is the flight's when the read that found it
        /// was sent.
        case filled(Entity?, UInt64)
        /// The lease is gone and nothing was filled: what the key holds now.
        case released(Observation)
        /// The wait ran out, or Redis failed.
        case gaveUp
    }

    /// Polls the key, with growing pauses, until the entry is filled, the lease is
    /// released without a fill, or the policy's lease wait runs out.
    private func waitForFill(key: CacheKey, flight: Flight<Entity?>) async -> WaitOutcome {
        let deadline = ContinuousClock.now + policy.leaseWait
        var pause = policy.leasePollInterval
        let longest = policy.leasePollInterval * 8
        while ContinuousClock.now < deadline {
            let remaining = deadline - ContinuousClock.now
            do {
                try await Task.sleep(for: min(pause, remaining))
            } catch {
                return .gaveUp
            }
            pause = min(pause * 2, longest)
            guard state.mayCallRedis() else { return .gaveUp }
            let mark = flight.mark()
            do {
                let bytes = try await cache.redis.get(key.entryKey)
                state.redisSucceeded()
                if let bytes, let decoded = entry(bytes, key: key) { return .filled(decoded.value, mark) }
                if !(bytes.map(CacheMarks.isLease) ?? false) {
                    return .released(Observation(bytes: bytes, at: .now))
                }
            } catch {
                state.redisFailed(error)
                return .gaveUp
            }
        }
        return .gaveUp
    }

    // MARK: - Database and helpers

    private func loadFromDatabase(failOpen: Bool, start: ContinuousClock.Instant) async throws -> Entity? {
        if failOpen { counters.record(.failOpenRead) }
        counters.record(.miss)
        counters.record(.databaseLoad)
        let value = try await load(cache.postgres)
        counters.missTimer.recordInterval(since: start)
        return value
    }

    private func failOpen(after error: any Error, key: CacheKey, start: ContinuousClock.Instant) async throws -> Entity? {
        state.redisFailed(error)
        logFailOpen(error, key: key)
        return try await loadFromDatabase(failOpen: true, start: start)
    }

    private func logFailOpen(_ error: any Error, key: CacheKey) {
        cache.logger.warning("cache read failed open: reading the database", metadata: [
            "key": "\(key.entryKey)", "error": "\(error)",
        ])
    }

    struct DecodedEntry {
        let value: Entity?
    }

    /// The entry under a key, or nil for a lease, a tombstone, or bytes that do not
    /// decode (logged and counted; a fill or a later write replaces them).
    private func entry(_ bytes: [UInt8], key: CacheKey) -> DecodedEntry? {
        if CacheMarks.isLease(bytes) || CacheMarks.isTombstone(bytes) { return nil }
        do {
            switch try cache.codec.decode(Entity.self, from: bytes) {
            case .present(let value): return DecodedEntry(value: value)
            case .absent: return DecodedEntry(value: nil)
            }
        } catch {
            counters.record(.decodeFailure)
            cache.logger.error("cache entry failed to decode: treating it as a miss and replacing it", metadata: [
                "key": "\(key.entryKey)", "bytes": "\(bytes.count)", "error": "\(error)",
            ])
            return nil
        }
    }

    private func deleteIfEqual(key: CacheKey, bytes: [UInt8]) async {
        do {
            _ = try await cache.redis.evalSHA(CacheScripts.deleteIfEqual, keys: [key.entryKey], arguments: [bytes])
        } catch {
            state.redisFailed(error)
        }
    }

    private func encode(_ value: Entity?) -> [UInt8]? {
        do {
            return try cache.codec.encode(value.map(CacheEntry.present) ?? .absent)
        } catch {
            cache.logger.error("cannot encode an entry; not caching it", metadata: ["error": "\(error)"])
            return nil
        }
    }
}

extension CacheAside {
    /// Replaces entries (and any lease they hold) with fresh tombstones after a write,
    /// in one round trip; queues them for retries if Redis cannot be reached.
    func invalidate(_ keys: [CacheKey], state: KeyspaceState) async {
        guard !keys.isEmpty else { return }
        for key in keys { flights.forget(key.entryKey) }
        guard state.mayCallRedis() else {
            invalidations.enqueue(keys, keyspace: state)
            return
        }
        do {
            try await deliverInvalidationCommands(CacheMarks.invalidationCommands(keys, policy: state.policy), redis: redis)
            state.redisSucceeded()
        } catch {
            state.redisFailed(error)
            logger.warning("cache invalidation failed; retrying in the background", metadata: [
                "keys": "\(keys.count)", "error": "\(error)",
            ])
            invalidations.enqueue(keys, keyspace: state)
        }
    }
}

extension Metrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        let (s, atto) = elapsed.components
        recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
