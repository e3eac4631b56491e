import CacheAsideRedis

/// The storage seam on Redis (or Valkey), one server or a cluster (any
/// `RESPClientProtocol`: `RESPClient`, `RESPClusterClient`): every Redis command the
/// cache core sends is in this file.
///
/// | operation | commands |
/// |---|---|
/// | `read` | `GET key`; `MGET key...` for several |
/// | `read` (one key) | `GET key` |
/// | `lease` | `EVALSHA` of ``Scripts/lease`` per key (pipelined) |
/// | `markWaited` | `EVALSHA` of ``Scripts/markWaited`` per key |
/// | `fill` | `EVALSHA` of ``Scripts/fill`` per key (publishes when the lease was marked) |
/// | `release` | `EVALSHA` of ``Scripts/release`` per key (publishes when marked) |
/// | `invalidate` | `SET key tombstone PX ttl` per key; where refused for memory, `DEL key` |
/// | `listenForFills` | `SUBSCRIBE channel` on a connection of its own |
///
/// Scripts unknown to the server (`NOSCRIPT`, after a restart, a failover or `SCRIPT
/// FLUSH`) are loaded by the client, which sends the command again. Each script touches one key, so each call fits a cluster
/// slot; `PUBLISH` from a script reaches every node's subscribers.
package struct RedisCacheStore<Redis: RESPClientProtocol>: CacheStore {
    package let redis: Redis
    /// Where fills and releases of marked leases are announced.
    package let channel: String

    package init(redis: Redis, channel: String) {
        self.redis = redis
        self.channel = channel
    }

    package func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] {
        do {
            if keys.count == 1 { return [try await redis.execute(.get(keys[0]))] }
            return try await redis.execute(.mget(keys))
        } catch {
            throw Self.classify(error)
        }
    }

    package func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? {
        do {
            return try await redis.execute(.get(key))
        } catch {
            throw Self.classify(error)
        }
    }

    package func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        let replies = try await runScripts(requests.map { r in
            .evalSHA(Scripts.lease, keys: [r.key], arguments: [r.expected ?? [], r.lease, Array(String(r.ttlMilliseconds).utf8)])
        })
        return replies.map(Self.leaseReply)
    }

    package func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        let replies = try await runScripts(requests.map { r in
            .evalSHA(Scripts.markWaited, keys: [r.key], arguments: [r.lease.plainBytes, r.lease.waitedBytes])
        })
        return replies.map(Self.leaseReply)
    }

    package func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply] {
        let replies = try await runScripts(requests.map { r in
            .evalSHA(
                Scripts.fill, keys: [r.key],
                arguments: [r.lease.plainBytes, r.lease.waitedBytes, r.entry, Array(String(r.ttlMilliseconds).utf8), Array(channel.utf8)])
        })
        return replies.map { reply in
            switch reply {
            case .failure(let error): return .refused(error)
            case .success(let value): return value.integer == 1 ? .filled : .leaseGone
            }
        }
    }

    package func release(_ requests: [WaitRequest]) async throws(CacheStoreError) {
        _ = try await runScripts(requests.map { r in
            .evalSHA(Scripts.release, keys: [r.key], arguments: [r.lease.plainBytes, r.lease.waitedBytes, Array(channel.utf8)])
        })
    }

    package func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply] {
        do {
            let replies = try await redis.pipeline(requests.map { r in
                RESPCommands.SET(r.key, to: r.tombstone, expiration: .milliseconds(Int(r.ttlMilliseconds)))
            })
            var result: [InvalidationReply] = replies.map { reply in
                if case .failure(let error) = reply { return .refused(Self.classify(error)) }
                return .tombstoned
            }
            // A server out of memory refuses the tombstone but accepts DEL.
            let fallback = result.indices.filter { isOutOfMemory(result[$0]) }
            if !fallback.isEmpty {
                let deleted = try await redis.pipeline(fallback.map { RESPCommands.DEL([requests[$0].key]) })
                for (n, i) in fallback.enumerated() {
                    if case .failure(let error) = deleted[n] {
                        result[i] = .refused(Self.classify(error))
                    } else {
                        result[i] = .deleted
                    }
                }
            }
            return result
        } catch let error as CacheStoreError {
            throw error
        } catch {
            throw Self.classify(error)
        }
    }

    private func isOutOfMemory(_ reply: InvalidationReply) -> Bool {
        if case .refused(let error) = reply { return error.kind == .outOfMemory }
        return false
    }

    package func listenForFills(
        onReady: @escaping @Sendable () -> Void, deliver: @escaping @Sendable (String) -> Void
    ) async throws(CacheStoreError) {
        do {
            let subscription = try await redis.subscribe(channels: [channel])
            onReady()
            for try await message in subscription {
                deliver(message.payloadString)
            }
        } catch is CancellationError {
            return
        } catch {
            if Task.isCancelled { return }
            throw Self.classify(error)
        }
    }

    package func shutdown() async {
        await redis.shutdown()
    }

    // MARK: - Scripts

    /// Runs scripts: one `EVALSHA` alone, several in one pipeline (the client loads a
    /// script the server does not know and sends its command again). An error reply is
    /// that key's refusal; a failure of the whole call throws.
    private func runScripts(_ calls: [RESPCommands.EVALSHA]) async throws(CacheStoreError) -> [Result<RESPReply, CacheStoreError>] {
        do {
            if calls.count == 1 {
                do {
                    return [.success(try await redis.execute(calls[0]))]
                } catch let error as RESPError where error.isServerError {
                    return [.failure(Self.classify(error))]
                }
            }
            return try await redis.pipeline(calls).map { reply in
                reply.mapError { Self.classify($0) }
            }
        } catch {
            throw Self.classify(error)
        }
    }

    /// A lease script's reply: 1 (granted), a bulk string (what the key holds), 0
    /// (nothing), or an error.
    private static func leaseReply(_ reply: Result<RESPReply, CacheStoreError>) -> LeaseReply {
        switch reply {
        case .failure(let error): return .refused(error)
        case .success(.integer(1)): return .granted
        case .success(.bulkString(let bytes)): return .holds(bytes)
        case .success(.error(let message)): return .refused(classify(message))
        case .success: return .holds(nil)
        }
    }

    // MARK: - Errors

    /// What a client error means for the cache.
    static func classify(_ error: any Error) -> CacheStoreError {
        if let error = error as? CacheStoreError { return error }
        if error is CancellationError { return CacheStoreError(.cancelled, "cancelled") }
        guard let redisError = error as? RESPError else { return CacheStoreError(.unavailable, "\(error)") }
        guard redisError.isServerError else { return CacheStoreError(.unavailable, redisError.description) }
        switch redisError.serverErrorPrefix {
        case "READONLY": return CacheStoreError(.readOnly, redisError.message)
        case "OOM": return CacheStoreError(.outOfMemory, redisError.message)
        case "MISCONF": return CacheStoreError(.misconfigured, redisError.message)
        case "LOADING": return CacheStoreError(.loading, redisError.message)
        default:
            // A script's error carries the refusal inside its text on older servers.
            let byText = classify(redisError.message)
            if byText.kind != .rejected { return byText }
            // Other refusals the client knows (NOREPLICAS, MASTERDOWN, BUSY, ...): the
            // server cannot serve now, which a breaker counts.
            return redisError.isUnavailable ? CacheStoreError(.unavailable, redisError.message) : byText
        }
    }

    /// What a server error reply means. A script's error carries the refusal inside
    /// its text (`ERR Error running script ... -READONLY ...` on older servers).
    static func classify(_ message: String) -> CacheStoreError {
        let words: [(String, CacheStoreError.Kind)] = [
            ("READONLY", .readOnly), ("OOM", .outOfMemory), ("MISCONF", .misconfigured), ("LOADING", .loading),
        ]
        for (word, kind) in words where message.hasPrefix(word + " ") || message.contains("-" + word + " ")
            || message.contains(": " + word + " ") || message.contains(" " + word + " command")
        {
            return CacheStoreError(kind, message)
        }
        return CacheStoreError(.rejected, message)
    }
}

/// The Lua scripts behind leases and fills. Each reads and writes one key, so each is
/// atomic on that key.
enum Scripts {
    /// Takes a lease if the key holds exactly the expected bytes (an empty string for
    /// nothing). Returns 1 if granted; else what the key holds (0 for nothing).
    ///
    /// KEYS: the key. ARGV: expected bytes, lease bytes, lease TTL in milliseconds.
    static let lease = RESPScript(source: """
        local v = redis.call('GET', KEYS[1])
        if (v == false and ARGV[1] == '') or v == ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
          return 1
        end
        if v == false then return 0 end
        return v
        """)

    /// Marks a lease as waited for, keeping its TTL. Returns 1 if the key holds the
    /// lease (now marked); else what the key holds (0 for nothing).
    ///
    /// KEYS: the key. ARGV: the lease's bytes, the marked lease's bytes.
    static let markWaited = RESPScript(source: """
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[2] then return 1 end
        if v == ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
          return 1
        end
        if v == false then return 0 end
        return v
        """)

    /// Writes the entry over the lease (plain or marked) and announces the fill of a
    /// marked lease. Returns 1 if written, 0 if the lease was gone.
    ///
    /// KEYS: the key. ARGV: lease bytes, marked lease bytes, entry, TTL in
    /// milliseconds, channel.
    static let fill = RESPScript(source: """
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
          return 1
        end
        if v == ARGV[2] then
          redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
          redis.call('PUBLISH', ARGV[5], KEYS[1])
          return 1
        end
        return 0
        """)

    /// Deletes the lease (plain or marked) if it is still there, announcing the
    /// release of a marked one. Returns 1 if deleted.
    ///
    /// KEYS: the key. ARGV: lease bytes, marked lease bytes, channel.
    static let release = RESPScript(source: """
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[1] then
          redis.call('DEL', KEYS[1])
          return 1
        end
        if v == ARGV[2] then
          redis.call('DEL', KEYS[1])
          redis.call('PUBLISH', ARGV[3], KEYS[1])
          return 1
        end
        return 0
        """)
}
