import CacheAsideRedis

/// The storage seam for ``MemoryTierCoherence/Invalidation/publish(channel:)``: every
/// operation goes to the base store, except invalidations, whose tombstone and a
/// `PUBLISH` of the key to the invalidation channel run in one script (atomically: no
/// tombstone lands unannounced, even if this process dies right after).
///
/// | operation | commands |
/// |---|---|
/// | `invalidate` | `EVALSHA` of ``PublishingCacheStore/script`` per key (pipelined) |
/// | everything else | the base store's |
struct PublishingCacheStore: CacheStore {
    let base: any CacheStore
    let redis: RESPClient
    let channel: String

    /// Replaces the key with the tombstone (`SET ... PX`); refused for lack of memory,
    /// deletes the key instead; then publishes the key. Returns 1 (tombstoned), 2
    /// (deleted), or the server's refusal.
    ///
    /// KEYS: the key. ARGV: tombstone, TTL in milliseconds, channel.
    static let script = RESPScript(source: """
        local ok = redis.pcall('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        local r = 1
        if type(ok) == 'table' and ok['err'] then
          if string.find(ok['err'], 'OOM', 1, true) == nil then return ok end
          redis.call('DEL', KEYS[1])
          r = 2
        end
        redis.call('PUBLISH', ARGV[3], KEYS[1])
        return r
        """)

    func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply] {
        let channelBytes = Array(channel.utf8)
        let calls = requests.map { r in
            RESPCommands.EVALSHA(
                Self.script, keys: [r.key], arguments: [r.tombstone, Array(String(r.ttlMilliseconds).utf8), channelBytes])
        }
        let replies: [Result<RESPReply, any Error>]
        do {
            if calls.count == 1 {
                do {
                    replies = [.success(try await redis.execute(calls[0]))]
                } catch let error as RESPError where error.isServerError {
                    replies = [.failure(error)]
                }
            } else {
                replies = try await redis.pipeline(calls).map { $0.mapError { $0 } }
            }
        } catch {
            throw RedisCacheStore<RESPClient>.classify(error)
        }
        return replies.map { reply in
            switch reply {
            case .failure(let error): return .refused(RedisCacheStore<RESPClient>.classify(error))
            case .success(.error(let message)): return .refused(RedisCacheStore<RESPClient>.classify(message))
            case .success(let value): return value.integer == 2 ? .deleted : .tombstoned
            }
        }
    }

    func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] { try await base.read(keys) }
    func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? { try await base.read(key) }
    func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] { try await base.lease(requests) }
    func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        try await base.markWaited(requests)
    }
    func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply] { try await base.fill(requests) }
    func release(_ requests: [WaitRequest]) async throws(CacheStoreError) { try await base.release(requests) }
    func listenForFills(
        onReady: @escaping @Sendable () -> Void, deliver: @escaping @Sendable (String) -> Void
    ) async throws(CacheStoreError) {
        try await base.listenForFills(onReady: onReady, deliver: deliver)
    }
    func shutdown() async { await base.shutdown() }
}
