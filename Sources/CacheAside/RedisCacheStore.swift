import CacheAsideRedis

/// The storage seam on one Redis (or Valkey) server: every Redis command the cache
/// core sends is in this file.
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
/// Scripts unknown to the server (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`) are
/// sent again with `EVAL`. Each script touches one key, so each call fits a cluster
/// slot; `PUBLISH` from a script reaches every node's subscribers.
package struct RedisCacheStore: CacheStore {
    package let redis: RESPClient
    /// Where fills and releases of marked leases are announced.
    package let channel: String

    package init(redis: RESPClient, channel: String) {
        self.redis = redis
        self.channel = channel
    }

    package func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] {
        do {
            if keys.count == 1 { return [try await redis.get(keys[0])] }
            return try await redis.mget(keys)
        } catch {
            throw Self.classify(error)
        }
    }

    package func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? {
        do {
            return try await redis.get(key)
        } catch {
            throw Self.classify(error)
        }
    }

    package func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        let replies = try await runScripts(Scripts.lease, requests.map { r in
            ([r.key], [r.expected ?? [], r.lease, Array(String(r.ttlMilliseconds).utf8)])
        })
        return replies.map(Self.leaseReply)
    }

    package func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        let replies = try await runScripts(Scripts.markWaited, requests.map { r in
            ([r.key], [r.lease.plainBytes, r.lease.waitedBytes])
        })
        return replies.map(Self.leaseReply)
    }

    package func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply] {
        let replies = try await runScripts(Scripts.fill, requests.map { r in
            ([r.key], [r.lease.plainBytes, r.lease.waitedBytes, r.entry, Array(String(r.ttlMilliseconds).utf8), Array(channel.utf8)])
        })
        return replies.map { reply in
            if case .error(let message) = reply { return .refused(Self.classify(message)) }
            return reply.integer == 1 ? .filled : .leaseGone
        }
    }

    package func release(_ requests: [WaitRequest]) async throws(CacheStoreError) {
        _ = try await runScripts(Scripts.release, requests.map { r in
            ([r.key], [r.lease.plainBytes, r.lease.waitedBytes, Array(channel.utf8)])
        })
    }

    package func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply] {
        do {
            let replies = try await redis.pipeline(requests.map { r in
                [Array("SET".utf8), Array(r.key.utf8), r.tombstone, Array("PX".utf8), Array(String(r.ttlMilliseconds).utf8)]
            })
            var result: [InvalidationReply] = replies.map { reply in
                if case .error(let message) = reply { return .refused(Self.classify(message)) }
                return .tombstoned
            }
            // A server out of memory refuses the tombstone but accepts DEL.
            let fallback = result.indices.filter { isOutOfMemory(result[$0]) }
            if !fallback.isEmpty {
                let deleted = try await redis.pipeline(fallback.map { [Array("DEL".utf8), Array(requests[$0].key.utf8)] })
                for (n, i) in fallback.enumerated() {
                    if case .error(let message) = deleted[n] {
                        result[i] = .refused(Self.classify(message))
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

    /// Runs one script per request: `EVALSHA` alone for one request, else pipelined;
    /// scripts the server does not know are sent again with their source.
    private func runScripts(_ script: RESPScript, _ calls: [([String], [[UInt8]])]) async throws(CacheStoreError) -> [RESPReply] {
        do {
            if calls.count == 1 {
                do {
                    return [try await redis.evalSHA(script, keys: calls[0].0, arguments: calls[0].1)]
                } catch let error as RESPError where error.isServerError {
                    return [.error(error.message)]
                }
            }
            var replies = try await redis.pipeline(calls.map { Self.eval(script, keys: $0.0, arguments: $0.1, withSource: false) })
            let unknown = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
            if !unknown.isEmpty {
                let again = try await redis.pipeline(unknown.map { Self.eval(script, keys: calls[$0].0, arguments: calls[$0].1, withSource: true) })
                for (n, i) in unknown.enumerated() { replies[i] = again[n] }
            }
            return replies
        } catch {
            throw Self.classify(error)
        }
    }

    private static func eval(_ script: RESPScript, keys: [String], arguments: [[UInt8]], withSource: Bool) -> [[UInt8]] {
        var command: [[UInt8]] = [
            Array((withSource ? "EVAL" : "EVALSHA").utf8),
            Array((withSource ? script.source : script.sha1).utf8),
            Array(String(keys.count).utf8),
        ]
        command.append(contentsOf: keys.map { Array($0.utf8) })
        command.append(contentsOf: arguments)
        return command
    }

    /// A lease script's reply: 1 (granted), a bulk string (what the key holds), 0
    /// (nothing), or an error.
    private static func leaseReply(_ reply: RESPReply) -> LeaseReply {
        switch reply {
        case .integer(1): return .granted
        case .bulkString(let bytes): return .holds(bytes)
        case .error(let message): return .refused(classify(message))
        default: return .holds(nil)
        }
    }

    // MARK: - Errors

    /// What a client error means for the cache.
    static func classify(_ error: any Error) -> CacheStoreError {
        if let error = error as? CacheStoreError { return error }
        if error is CancellationError { return CacheStoreError(.cancelled, "cancelled") }
        guard let redisError = error as? RESPError else { return CacheStoreError(.unavailable, "\(error)") }
        if redisError.isServerError { return classify(redisError.message) }
        return CacheStoreError(.unavailable, redisError.description)
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
