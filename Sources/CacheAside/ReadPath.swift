import Logging
import Metrics
import Postgres
import Redis

/// Random lease tokens: 128 bits, hex.
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

/// How many times a reader starts afresh (its load's fill was rejected, so a write
/// happened) before it reads the database directly.
let maximumFreshStarts = 3

/// One `find`: DESIGN.md's read contract.
struct ReadPath<Entity: Codable & Sendable>: Sendable {
    let cache: CacheAside
    let state: KeyspaceState
    let load: @Sendable (PostgresClient) async throws -> Entity?

    private var counters: KeyspaceCounters { state.counters }
    private var policy: CachePolicy { state.policy }

    func find(_ key: CacheKey) async throws -> Entity? {
        let start = ContinuousClock.now
        // A write of this key in this process could not reach Redis yet: the entry
        // may be stale, so read the database and fill nothing.
        if cache.invalidations.contains(key.entryKey) {
            return try await loadFromDatabase(failOpen: false, start: start)
        }
        guard state.mayCallRedis() else {
            return try await loadFromDatabase(failOpen: true, start: start)
        }

        // 1. GET.
        let bytes: [UInt8]?
        do {
            bytes = try await cache.redis.get(key.entryKey)
            state.redisSucceeded()
        } catch {
            return try await failOpen(after: error, key: key, start: start)
        }
        if let bytes {
            if let entry = decode(bytes, key: key) {
                counters.record(.hit)
                counters.hitTimer.recordInterval(since: start)
                return entry.value
            }
            await deleteUndecodable(key: key, bytes: bytes)
        }

        // 2. Join this process's load of the key, or lead one.
        for _ in 0..<maximumFreshStarts {
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
                    continue
                }
            case .leader(let flight):
                return try await lead(flight, key: key, start: start)
            }
        }
        return try await loadFromDatabase(failOpen: false, start: start)
    }

    // MARK: - Leading a load

    private func lead(_ flight: Flight<Entity?>, key: CacheKey, start: ContinuousClock.Instant) async throws -> Entity? {
        // What joiners get if this leader throws before deciding: a fresh start
        // (cancellation of this caller is not theirs) or the database's error.
        var resolved = false
        defer {
            if !resolved {
                cache.flights.leave(key.entryKey, flight)
                flight.resolve(.retry)
            }
        }
        func finish(_ outcome: Flight<Entity?>.Outcome, registeredBy mark: UInt64? = nil) {
            cache.flights.leave(key.entryKey, flight)
            flight.resolve(outcome, registeredBy: mark)
            resolved = true
        }

        // 3. Take the lease, unless the entry appeared meanwhile.
        let token = makeLeaseToken()
        let acquired: AcquireOutcome
        let acquireMark = flight.mark()
        if state.mayCallRedis() {
            do {
                acquired = try await acquire(key: key, token: token)
                state.redisSucceeded()
            } catch {
                state.redisFailed(error)
                logFailOpen(error, key: key)
                acquired = .unavailable
            }
        } else {
            acquired = .unavailable
        }

        switch acquired {
        case .entry(let value):
            // Read from Redis: only callers that joined before the read was sent share it.
            finish(.value(value), registeredBy: acquireMark)
            counters.record(.hit)
            counters.hitTimer.recordInterval(since: start)
            return value

        case .leased:
            let value: Entity?
            counters.record(.miss)
            do {
                counters.record(.databaseLoad)
                value = try await load(cache.postgres)
            } catch {
                // Release the lease so other processes need not wait it out.
                Task { [redis = cache.redis] in _ = try? await redis.del([key.leaseKey]) }
                finish(error is CancellationError ? .retry : .failure(error))
                throw error
            }
            // Leave the table before the fill is sent: nobody may join this load
            // after a write could have deleted what it fills.
            cache.flights.leave(key.entryKey, flight)
            resolved = true
            if flight.waiterCount == 0 {
                // Nobody waits for the fill's verdict: encode and send it off this
                // caller's path.
                Task { await fillAndResolve(flight, key: key, token: token, encoded: encode(value), value: value) }
            } else {
                await fillAndResolve(flight, key: key, token: token, encoded: encode(value), value: value)
            }
            counters.missTimer.recordInterval(since: start)
            return value

        case .heldElsewhere:
            counters.record(.leaseWait)
            if let (value, pollMark) = await waitForFill(key: key, flight: flight) {
                finish(.value(value), registeredBy: pollMark)
                counters.record(.hit)
                counters.hitTimer.recordInterval(since: start)
                return value
            }
            // The wait ran out: read the database without a lease. Leave the table
            // first, so that only callers that began before this read share it.
            cache.flights.leave(key.entryKey, flight)
            return try await loadResolving(flight, failOpen: false, start: start, resolved: &resolved)

        case .unavailable:
            cache.flights.leave(key.entryKey, flight)
            return try await loadResolving(flight, failOpen: true, start: start, resolved: &resolved)
        }
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

    private func fillAndResolve(
        _ flight: Flight<Entity?>, key: CacheKey, token: [UInt8], encoded: [UInt8]?, value: Entity?
    ) async {
        guard let encoded else {
            // Could not encode: nothing cached, the value itself is good.
            flight.resolve(.value(value))
            return
        }
        let ttl = policy.entryTTLMilliseconds(absent: value == nil)
        do {
            let reply = try await cache.redis.evalSHA(
                CacheScripts.fill, keys: [key.entryKey, key.leaseKey],
                arguments: [token, encoded, Array(String(ttl).utf8)])
            state.redisSucceeded()
            if reply.integer == 1 {
                counters.record(.fill)
                flight.resolve(.value(value))
            } else {
                // A write deleted the lease (or it expired): callers that joined may
                // have begun after that write, so they start afresh.
                counters.record(.rejectedFill)
                flight.resolve(.retry)
            }
        } catch {
            state.redisFailed(error)
            // Unknown whether it filled; a write after the lease would have made the
            // fill fail, so joiners start afresh to be safe.
            flight.resolve(.retry)
        }
    }

    // MARK: - Leases

    enum AcquireOutcome {
        case entry(Entity?)
        case leased
        case heldElsewhere
        case unavailable
    }

    private func acquire(key: CacheKey, token: [UInt8]) async throws -> AcquireOutcome {
        let reply = try await cache.redis.evalSHA(
            CacheScripts.acquire, keys: [key.entryKey, key.leaseKey],
            arguments: [token, Array(String(policy.leaseTTLMilliseconds).utf8)])
        guard case .array(let parts) = reply, let code = parts.first?.integer else {
            throw CacheError(kind: .decoding, message: "unexpected reply to the lease script: \(reply)")
        }
        switch code {
        case 1:
            guard parts.count > 1, case .bulkString(let bytes) = parts[1] else { return .leased }
            if let entry = decode(bytes, key: key) { return .entry(entry.value) }
            await deleteUndecodable(key: key, bytes: bytes)
            // Try once more to take the lease now that the bad entry is gone.
            return try await acquire(key: key, token: token)
        case 2:
            return .leased
        default:
            return .heldElsewhere
        }
    }

    /// Polls for another process's fill, with growing pauses, until the policy's lease
    /// wait runs out. Returns the entry's value and the flight's mark when the read that
    /// found it was sent, or nil if none came.
    private func waitForFill(key: CacheKey, flight: Flight<Entity?>) async -> (Entity?, UInt64)? {
        let deadline = ContinuousClock.now + policy.leaseWait
        var pause = policy.leasePollInterval
        let longest = policy.leasePollInterval * 8
        while ContinuousClock.now < deadline {
            let remaining = deadline - ContinuousClock.now
            do {
                try await Task.sleep(for: min(pause, remaining))
            } catch {
                return nil
            }
            pause = min(pause * 2, longest)
            guard state.mayCallRedis() else { return nil }
            let mark = flight.mark()
            do {
                let bytes = try await cache.redis.get(key.entryKey)
                state.redisSucceeded()
                if let bytes, let entry = decode(bytes, key: key) { return (entry.value, mark) }
            } catch {
                state.redisFailed(error)
                return nil
            }
        }
        return nil
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

    /// The decoded entry, or nil (logged and counted) if the bytes are not one.
    private func decode(_ bytes: [UInt8], key: CacheKey) -> DecodedEntry? {
        do {
            switch try cache.codec.decode(Entity.self, from: bytes) {
            case .present(let value): return DecodedEntry(value: value)
            case .absent: return DecodedEntry(value: nil)
            }
        } catch {
            counters.record(.decodeFailure)
            cache.logger.error("cache entry failed to decode: deleting it and reading the database", metadata: [
                "key": "\(key.entryKey)", "bytes": "\(bytes.count)", "error": "\(error)",
            ])
            return nil
        }
    }

    struct DecodedEntry {
        let value: Entity?
    }

    private func deleteUndecodable(key: CacheKey, bytes: [UInt8]) async {
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
    /// Deletes entries and leases after a write; queues them for retries if Redis
    /// cannot be reached.
    func invalidate(_ keys: [CacheKey], state: KeyspaceState) async {
        guard !keys.isEmpty else { return }
        for key in keys { flights.forget(key.entryKey) }
        guard state.mayCallRedis() else {
            invalidations.enqueue(keys, keyspace: state)
            return
        }
        do {
            _ = try await redis.del(keys.flatMap { [$0.entryKey, $0.leaseKey] })
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
