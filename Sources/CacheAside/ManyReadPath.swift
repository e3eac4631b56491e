import Logging
import Postgres
import Redis

/// One `find(many:)`: one MGET, leases for the misses (pipelined), one database load
/// for the rows this call must read, fills pipelined.
///
/// It does not join or lead single-flight loads of single keys; concurrent misses of
/// the same keys across calls are still limited by the leases.
struct ManyReadPath<ID: CacheIdentifier, Entity: Codable & Sendable>: Sendable {
    let cache: CacheAside
    let state: KeyspaceState
    let loadMany: @Sendable ([ID], PostgresClient) async throws -> [ID: Entity]

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
        var missing: [Int] = []
        var undecodable: [(Int, [UInt8])] = []
        for (position, i) in cacheable.enumerated() {
            guard let bytes = values[position] else {
                missing.append(i)
                continue
            }
            switch decode(bytes, key: keys[i]) {
            case .some(.some(let value)): result[ids[i]] = value
            case .some(.none): break  // cached absent
            case .none:
                undecodable.append((i, bytes))
                missing.append(i)
            }
        }
        fromRedis += cacheable.count - missing.count
        if !undecodable.isEmpty {
            _ = try? await cache.redis.pipeline(undecodable.map { i, bytes in
                evalCommand(CacheScripts.deleteIfEqual, keys: [keys[i].entryKey], arguments: [bytes])
            })
        }
        if missing.isEmpty && fromDatabase.isEmpty { return result }

        // 2. Leases for the misses, in one pipeline.
        let token = makeLeaseToken()
        let leaseTTL = Array(String(policy.leaseTTLMilliseconds).utf8)
        var leased: [Int] = []
        var heldElsewhere: [Int] = []
        if !missing.isEmpty {
            do {
                let replies = try await runScripts(missing.map { i in
                    (CacheScripts.acquire, [keys[i].entryKey, keys[i].leaseKey], [token, leaseTTL])
                })
                state.redisSucceeded()
                for (position, i) in missing.enumerated() {
                    let reply = replies[position]
                    guard case .array(let parts) = reply, let code = parts.first?.integer else {
                        fromDatabase.append(i)
                        continue
                    }
                    switch code {
                    case 1:
                        if parts.count > 1, case .bulkString(let bytes) = parts[1],
                           case .some(let entry) = decode(bytes, key: keys[i]) {
                            fromRedis += 1
                            if let value = entry { result[ids[i]] = value }
                        } else {
                            fromDatabase.append(i)
                        }
                    case 2: leased.append(i)
                    default: heldElsewhere.append(i)
                    }
                }
            } catch {
                state.redisFailed(error)
                counters.record(.failOpenRead)
                fromDatabase.append(contentsOf: missing)
            }
        }

        // 3. Wait briefly for other processes' fills.
        if !heldElsewhere.isEmpty {
            counters.record(.leaseWait, heldElsewhere.count)
            let stillMissing = await waitForFills(heldElsewhere, ids: ids, keys: keys, into: &result)
            fromRedis += heldElsewhere.count - stillMissing.count
            fromDatabase.append(contentsOf: stillMissing)
        }

        // 4. One database load for what this call must read.
        let toLoad = leased + fromDatabase
        if toLoad.isEmpty { return result }
        counters.record(.databaseLoad)
        let loaded: [ID: Entity]
        do {
            loaded = try await loadMany(toLoad.map { ids[$0] }, cache.postgres)
        } catch {
            if !leased.isEmpty {
                let leaseKeys = leased.map { keys[$0].leaseKey }
                Task { [redis = cache.redis] in _ = try? await redis.del(leaseKeys) }
            }
            throw error
        }
        for i in toLoad { if let value = loaded[ids[i]] { result[ids[i]] = value } }

        // 5. Fills for the leased ids, in one pipeline.
        if !leased.isEmpty {
            var fills: [(RedisScript, [String], [[UInt8]])] = []
            for i in leased {
                let value = loaded[ids[i]]
                guard let encoded = try? cache.codec.encode(value.map(CacheEntry.present) ?? .absent) else { continue }
                let ttl = Array(String(policy.entryTTLMilliseconds(absent: value == nil)).utf8)
                fills.append((CacheScripts.fill, [keys[i].entryKey, keys[i].leaseKey], [token, encoded, ttl]))
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

    private func load(_ indexes: [Int], ids: [ID], into result: inout [ID: Entity]) async throws -> [ID: Entity] {
        counters.record(.databaseLoad)
        let loaded = try await loadMany(indexes.map { ids[$0] }, cache.postgres)
        for (id, value) in loaded { result[id] = value }
        return result
    }

    private func waitForFills(_ waiting: [Int], ids: [ID], keys: [CacheKey], into result: inout [ID: Entity]) async -> [Int] {
        var remaining = waiting
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
                if let bytes = values[position], case .some(let entry) = decode(bytes, key: keys[i]) {
                    if let value = entry { result[ids[i]] = value }
                } else {
                    next.append(i)
                }
            }
            remaining = next
        }
        return remaining
    }

    /// `.some(value)` for a decoded entry (value nil for "absent"), nil if undecodable.
    private func decode(_ bytes: [UInt8], key: CacheKey) -> Entity?? {
        do {
            switch try cache.codec.decode(Entity.self, from: bytes) {
            case .present(let value): return .some(value)
            case .absent: return .some(nil)
            }
        } catch {
            counters.record(.decodeFailure)
            cache.logger.error("cache entry failed to decode: deleting it and reading the database", metadata: [
                "key": "\(key.entryKey)", "bytes": "\(bytes.count)", "error": "\(error)",
            ])
            return nil
        }
    }

    /// Runs scripts in one pipeline by SHA; scripts Redis does not know yet (after a
    /// restart or SCRIPT FLUSH) are sent again with their source.
    private func runScripts(_ calls: [(RedisScript, [String], [[UInt8]])]) async throws -> [RESPValue] {
        var replies = try await cache.redis.pipeline(calls.map { evalCommand($0.0, keys: $0.1, arguments: $0.2) })
        let unknown = replies.indices.filter {
            if case .error(let message) = replies[$0] { return message.hasPrefix("NOSCRIPT") }
            return false
        }
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
func evalCommand(_ script: RedisScript, keys: [String], arguments: [[UInt8]], withSource: Bool = false) -> [[UInt8]] {
    var command: [[UInt8]] = [
        Array((withSource ? "EVAL" : "EVALSHA").utf8),
        Array((withSource ? script.source : script.sha1).utf8),
        Array(String(keys.count).utf8),
    ]
    command.append(contentsOf: keys.map { Array($0.utf8) })
    command.append(contentsOf: arguments)
    return command
}
