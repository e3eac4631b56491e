import Logging
import CacheAsidePostgres
import CacheAsideRedis

/// One `find(many:)`: one MGET, leases for the misses (pipelined; in overlapped mode
/// while one database load reads the rows), fills pipelined.
///
/// It does not join or lead single-flight loads of single keys; concurrent misses of
/// the same keys across calls are still limited by the leases.
struct ManyReadPath<ID: CacheIdentifier, Entity: Codable & Sendable>: Sendable {
    let cache: CacheAside
    let state: KeyspaceState
    let loadMany: @Sendable ([ID], PGClient) async throws -> [ID: Entity]

    private var counters: KeyspaceCounters { state.counters }
    private var policy: CachePolicy { state.policy }

    func find(ids: [ID], keys: [CacheKey]) async throws -> [ID: Entity] {
        var result: [ID: Entity] = [:]
        // Ids answered by Redis: hits; the rest: misses.
        var fromRedis = 0
        defer {
            counters.record(.hit, fromRedis)
            counters.record(.miss, ids.count - fromRedis)
        }
        // Ids whose write in this process has not reached Redis yet: database only.
        var fromDatabase: [Int] = []
        var cacheable: [Int] = []
        for i in ids.indices {
            if cache.invalidations.contains(keys[i].entryKey) { fromDatabase.append(i) } else { cacheable.append(i) }
        }

        guard !cacheable.isEmpty, state.mayCallRedis() else {
            counters.record(.failOpenRead, cacheable.count > 0 ? 1 : 0)
            return try await load(ids.indices.map { $0 }, ids: ids, into: &result)
        }

        // 1. One MGET.
        let values: [[UInt8]?]
        do {
            values = try await cache.redis.mget(cacheable.map { keys[$0].entryKey })
            state.redisSucceeded()
        } catch {
            state.redisFailed(error)
            cache.logger.warning("cache read failed open: reading the database", metadata: ["error": "\(error)"])
            counters.record(.failOpenRead)
            return try await load(ids.indices.map { $0 }, ids: ids, into: &result)
        }
        // When this call looked: leases taken over what it saw much later are not trusted.
        let seen = ContinuousClock.now
        var observed: [Int: [UInt8]] = [:]  // what a missed key held (tombstone or garbage)
        var free: [Int] = []
        var heldElsewhere: [Int] = []
        for (position, i) in cacheable.enumerated() {
            guard let bytes = values[position] else {
                free.append(i)
                continue
            }
            if case .some(let entry) = entry(bytes, key: keys[i]) {
                fromRedis += 1
                if let value = entry { result[ids[i]] = value }
            } else if CacheMarks.isLease(bytes) {
                heldElsewhere.append(i)
            } else {
                observed[i] = bytes
                free.append(i)
            }
        }
        if free.isEmpty && heldElsewhere.isEmpty && fromDatabase.isEmpty { return result }

        // 2. In exclusive mode, the leases first: keys whose lease another reader took
        //    meanwhile wait for its fill like the others.
        let lease = CacheMarks.lease(makeLeaseToken())
        let exclusive = policy.leaseMode == .exclusive
        var leased: [Int] = []
        if exclusive && !free.isEmpty {
            let granted = await takeLeases(free, keys: keys, observed: observed, lease: lease, seen: seen)
            leased = free.filter { granted.contains($0) }
            heldElsewhere += free.filter { !granted.contains($0) }
        }

        // 3. Wait briefly for other readers' fills. Where a lease is released without
        //    a fill, this call loads the row itself (without filling it).
        if !heldElsewhere.isEmpty {
            counters.record(.leaseWait, heldElsewhere.count)
            let stillMissing = await waitForFills(heldElsewhere, ids: ids, keys: keys, into: &result)
            fromRedis += heldElsewhere.count - stillMissing.count
            fromDatabase.append(contentsOf: stillMissing)
        }

        // 4. One database load for what this call must read (in overlapped mode, while
        //    the leases of the free misses are taken).
        let toLoad = (exclusive ? leased : free) + fromDatabase
        if toLoad.isEmpty { return result }
        counters.record(.databaseLoad)
        let loadIDs = toLoad.map { ids[$0] }
        async let loading = loadMany(loadIDs, cache.postgres)
        if !exclusive && !free.isEmpty {
            let granted = await takeLeases(free, keys: keys, observed: observed, lease: lease, seen: seen)
            leased = free.filter { granted.contains($0) }
        }
        let loaded: [ID: Entity]
        do {
            loaded = try await loading
        } catch {
            if !leased.isEmpty {
                let release = leased.map { i in
                    evalCommand(CacheScripts.deleteIfEqual, keys: [keys[i].entryKey], arguments: [lease], withSource: true)
                }
                Task { [redis = cache.redis] in _ = try? await redis.pipeline(release) }
            }
            throw error
        }
        for i in toLoad { if let value = loaded[ids[i]] { result[ids[i]] = value } }

        // 5. Fills for the leased ids, in one pipeline, each only over its own lease.
        if !leased.isEmpty {
            var fills: [(RESPScript, [String], [[UInt8]])] = []
            for i in leased {
                let value = loaded[ids[i]]
                guard let encoded = try? cache.codec.encode(value.map(CacheEntry.present) ?? .absent) else { continue }
                let ttl = Array(String(policy.entryTTLMilliseconds(absent: value == nil)).utf8)
                fills.append((CacheScripts.compareAndSet, [keys[i].entryKey], [lease, encoded, ttl]))
            }
            do {
                let replies = try await runScripts(fills)
                state.redisSucceeded()
                let filled = replies.filter { $0.integer == 1 }.count
                counters.record(.fill, filled)
                counters.record(.rejectedFill, replies.count - filled)
            } catch {
                state.redisFailed(error)
            }
        }
        return result
    }

    /// Takes the leases of `indexes` over what this call saw, in one pipeline; returns
    /// those granted.
    private func takeLeases(
        _ indexes: [Int], keys: [CacheKey], observed: [Int: [UInt8]], lease: [UInt8], seen: ContinuousClock.Instant
    ) async -> Set<Int> {
        guard state.mayCallRedis(),
              ContinuousClock.now - seen < .milliseconds(policy.leaseTTLMilliseconds) / 2
        else { return [] }
        let ttl = Array(String(policy.leaseTTLMilliseconds).utf8)
        var commands = indexes.map { i in
            CacheMarks.leaseCommand(key: keys[i], saw: observed[i], lease: lease, ttl: ttl)
        }
        do {
            var replies = try await cache.redis.pipeline(commands)
            // Scripts Redis does not know yet (after a restart or SCRIPT FLUSH): again with source.
            let unknown = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
            if !unknown.isEmpty {
                commands = unknown.map { position in
                    evalCommand(CacheScripts.compareAndSet, keys: [keys[indexes[position]].entryKey],
                                arguments: [observed[indexes[position]] ?? [], lease, ttl], withSource: true)
                }
                let retried = try await cache.redis.pipeline(commands)
                for (n, position) in unknown.enumerated() { replies[position] = retried[n] }
            }
            state.redisSucceeded()
            var granted = Set<Int>()
            for (position, i) in indexes.enumerated() where CacheMarks.granted(replies[position]) {
                granted.insert(i)
            }
            return granted
        } catch {
            state.redisFailed(error)
            counters.record(.failOpenRead)
            return []
        }
    }

    private func load(_ indexes: [Int], ids: [ID], into result: inout [ID: Entity]) async throws -> [ID: Entity] {
        counters.record(.databaseLoad)
        let loaded = try await loadMany(indexes.map { ids[$0] }, cache.postgres)
        for (id, value) in loaded { result[id] = value }
        return result
    }

    /// Polls until each waiting key is filled (into `result`), its lease is released
    /// without a fill, or the lease wait runs out; returns the ids still to load.
    private func waitForFills(_ waiting: [Int], ids: [ID], keys: [CacheKey], into result: inout [ID: Entity]) async -> [Int] {
        var remaining = waiting
        var released: [Int] = []
        let deadline = ContinuousClock.now + policy.leaseWait
        var pause = policy.leasePollInterval
        while !remaining.isEmpty && ContinuousClock.now < deadline {
            do {
                try await Task.sleep(for: min(pause, deadline - ContinuousClock.now))
            } catch {
                break
            }
            pause = min(pause * 2, policy.leasePollInterval * 8)
            guard state.mayCallRedis(),
                  let values = try? await cache.redis.mget(remaining.map { keys[$0].entryKey })
            else { break }
            var next: [Int] = []
            for (position, i) in remaining.enumerated() {
                let bytes = values[position]
                if let bytes, case .some(let decoded) = entry(bytes, key: keys[i]) {
                    if let value = decoded { result[ids[i]] = value }
                } else if let bytes, CacheMarks.isLease(bytes) {
                    next.append(i)
                } else {
                    released.append(i)
                }
            }
            remaining = next
        }
        return remaining + released
    }

    /// `.some(value)` for an entry (value nil for "absent"); nil for a lease, a
    /// tombstone, or bytes that do not decode (logged and counted).
    private func entry(_ bytes: [UInt8], key: CacheKey) -> Entity?? {
        if CacheMarks.isLease(bytes) || CacheMarks.isTombstone(bytes) { return nil }
        do {
            switch try cache.codec.decode(Entity.self, from: bytes) {
            case .present(let value): return .some(value)
            case .absent: return .some(nil)
            }
        } catch {
            counters.record(.decodeFailure)
            cache.logger.error("cache entry failed to decode: treating it as a miss and replacing it", metadata: [
                "key": "\(key.entryKey)", "bytes": "\(bytes.count)", "error": "\(error)",
            ])
            return nil
        }
    }

    /// Runs scripts in one pipeline by SHA; scripts Redis does not know yet (after a
    /// restart or SCRIPT FLUSH) are sent again with their source.
    private func runScripts(_ calls: [(RESPScript, [String], [[UInt8]])]) async throws -> [RESPReply] {
        var replies = try await cache.redis.pipeline(calls.map { evalCommand($0.0, keys: $0.1, arguments: $0.2) })
        let unknown = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
        if !unknown.isEmpty {
            let retried = try await cache.redis.pipeline(unknown.map { i in
                evalCommand(calls[i].0, keys: calls[i].1, arguments: calls[i].2, withSource: true)
            })
            for (position, i) in unknown.enumerated() { replies[i] = retried[position] }
        }
        return replies
    }
}

/// An EVALSHA (or EVAL) command line for a pipeline.
func evalCommand(_ script: RESPScript, keys: [String], arguments: [[UInt8]], withSource: Bool = false) -> [[UInt8]] {
    var command: [[UInt8]] = [
        Array((withSource ? "EVAL" : "EVALSHA").utf8),
        Array((withSource ? script.source : script.sha1).utf8),
        Array(String(keys.count).utf8),
    ]
    command.append(contentsOf: keys.map { Array($0.utf8) })
    command.append(contentsOf: arguments)
    return command
}
