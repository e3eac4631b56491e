import Redis

/// The Lua scripts behind leases. Each runs atomically in Redis.
enum CacheScripts {
    /// Read-or-lease, for a reader that missed: returns `{1, entry}` if the entry
    /// appeared meanwhile, `{2}` if this reader now holds the lease, `{3}` if another
    /// reader holds it.
    ///
    /// KEYS: entry, lease. ARGV: token, lease TTL in milliseconds.
    static let acquire = RedisScript(source: """
        local v = redis.call('GET', KEYS[1])
        if v then return {1, v} end
        if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
        return {3}
        """)

    /// Fill, only while the lease is still ours: a write deletes the lease, so a reader
    /// that loaded the old row can never put it back. Returns 1 if filled, 0 if not.
    ///
    /// KEYS: entry, lease. ARGV: token, entry bytes, entry TTL in milliseconds.
    static let fill = RedisScript(source: """
        if redis.call('GET', KEYS[2]) == ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
          redis.call('DEL', KEYS[2])
          return 1
        end
        return 0
        """)

    /// Deletes the entry only if it still holds these exact bytes (an entry that failed
    /// to decode), so that a good entry written meanwhile survives.
    ///
    /// KEYS: entry. ARGV: the bytes read.
    static let deleteIfEqual = RedisScript(source: """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('DEL', KEYS[1])
        end
        return 0
        """)
}
