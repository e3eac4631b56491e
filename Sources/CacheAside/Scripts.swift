import CacheAsideRedis

/// What a key can hold besides an entry, and the Lua scripts that change it
/// atomically.
///
/// One Redis key per cached row holds, in turn:
/// - nothing (never cached, or expired);
/// - a lease: `{"s":1,"lease":"<token>"}`, set by the reader that loads the row, with
///   the lease TTL;
/// - an entry (`{"s":1,"v":...}` or `{"s":1,"absent":true}`), written over the lease by
///   that reader's fill, only if its lease is still there;
/// - a tombstone: `{"s":1,"invalidated":"<random>"}`, written by every write after it
///   commits, over whatever was there, with a TTL longer than any entry's.
///
/// A reader takes the lease only if the key still holds what the reader saw before it
/// began to load the row (nothing, or the same tombstone): a write since then has
/// replaced that with a fresh tombstone, so the lease is refused. A write after the
/// lease was taken replaces the lease with a tombstone, so the fill is refused. Either
/// way, a reader that loaded the row before a write can never put it back.
enum CacheMarks {
    static let leasePrefix: [UInt8] = Array(#"{"s":1,"lease":""#.utf8)
    static let tombstonePrefix: [UInt8] = Array(#"{"s":1,"invalidated":""#.utf8)
    private static let suffix: [UInt8] = Array(#""}"#.utf8)

    /// A lease holding `token`.
    static func lease(_ token: [UInt8]) -> [UInt8] { leasePrefix + token + suffix }

    /// A new tombstone, unique to one invalidation attempt.
    static func tombstone() -> [UInt8] { tombstonePrefix + makeLeaseToken() + suffix }

    static func isLease(_ bytes: [UInt8]) -> Bool { bytes.starts(with: leasePrefix) }
    static func isTombstone(_ bytes: [UInt8]) -> Bool { bytes.starts(with: tombstonePrefix) }

    /// The commands that invalidate `keys` in one round trip: each key gets a fresh
    /// tombstone that outlives any entry and lease written before it. Made anew for
    /// every attempt, so that a retry never restores a tombstone a reader has seen.
    static func invalidationCommands(_ keys: [CacheKey], policy: CachePolicy) -> [[[UInt8]]] {
        let ttl = Array(String(policy.tombstoneTTLMilliseconds).utf8)
        return keys.map { key in
            [Array("SET".utf8), Array(key.entryKey.utf8), tombstone(), Array("PX".utf8), ttl]
        }
    }

    /// The command that takes a lease over what the reader saw: `SET NX` when it saw
    /// nothing, else a compare-and-set script.
    static func leaseCommand(key: CacheKey, saw: [UInt8]?, lease: [UInt8], ttl: [UInt8]) -> [[UInt8]] {
        guard let saw else {
            return [Array("SET".utf8), Array(key.entryKey.utf8), lease, Array("NX".utf8), Array("PX".utf8), ttl]
        }
        return evalCommand(CacheScripts.compareAndSet, keys: [key.entryKey], arguments: [saw, lease, ttl])
    }

    /// Whether a reply to ``leaseCommand(key:saw:lease:ttl:)`` granted the lease.
    static func granted(_ reply: RESPReply) -> Bool {
        reply == .simpleString("OK") || reply.integer == 1
    }
}

enum CacheScripts {
    /// Compare-and-set: writes the new bytes only if the key still holds exactly the
    /// expected ones. Returns 1 if written. It takes a lease over what a reader saw (a
    /// tombstone, or an entry that failed to decode), and fills an entry over the
    /// reader's own lease.
    ///
    /// KEYS: the key. ARGV: the expected bytes, the new bytes, their TTL in milliseconds.
    static let compareAndSet = RESPScript(source: """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
          return 1
        end
        return 0
        """)

    /// Deletes the key only if it still holds these exact bytes (a lease given up, or
    /// an entry that failed to decode), so that anything written meanwhile survives.
    ///
    /// KEYS: the entry. ARGV: the bytes.
    static let deleteIfEqual = RESPScript(source: """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('DEL', KEYS[1])
        end
        return 0
        """)
}
