/// The in-process tier of one repository: decoded entities kept in this process's
/// memory, in front of Redis. Off unless a policy names one:
///
/// ```swift
/// var policy: CachePolicy { CachePolicy(memory: MemoryTierPolicy()) }
/// ```
///
/// A hit costs a hash, a shard's lock and a copy of the entity (well under a
/// microsecond): no round trip, no decoding. The tier is filled by reads that hit Redis
/// (with the entity they decoded), never by a database load, and is kept coherent
/// through Redis (see ``MemoryTierCoherence``): another process's write reaches every
/// process's memory within the coherence's ``MemoryTierCoherence/maximumStaleness``
/// (1 second) at worst, and this process's own writes purge its memory before they
/// return.
public struct MemoryTierPolicy: Sendable, Hashable {
    /// The most entities held. Default: 100,000.
    public var maximumEntries: Int
    /// The most bytes held, counting each entity as the length of its cached JSON plus
    /// the tier's own structures (entry records, index). Default: 64 MiB.
    public var maximumBytes: Int
    /// How long an entity stays in memory (at most the policy's `ttl`, or its
    /// `negativeTTL` for a row known to be absent). Coherence does not depend on it;
    /// it bounds what the tier holds for keys nobody writes. Default: 10 seconds.
    public var ttl: Duration

    /// Creates a tier policy; every parameter has the default described above.
    public init(maximumEntries: Int = 100_000, maximumBytes: Int = 64 << 20, ttl: Duration = .seconds(10)) {
        self.maximumEntries = maximumEntries
        self.maximumBytes = maximumBytes
        self.ttl = ttl
    }
}

/// How the in-process tiers of every process sharing a namespace learn about writes,
/// and how stale a memory hit may be at worst. One setting per ``CacheAside``; every
/// process of a namespace must use the same ``invalidation``.
///
/// The runtime keeps one dedicated Redis connection (only while ``CacheAside/run()``
/// runs, and only once a repository uses a tier). Invalidations arrive on it in the
/// order Redis sent them, and it sends a `PING` every ``heartbeatInterval``: the answer
/// to a `PING` sent at instant *t* proves that every invalidation of a write that
/// completed before *t* has been applied, so memory hits are served only until
/// *t* + ``maximumStaleness`` after the last answered `PING`. Whenever the connection
/// drops or is reopened (invalidations may have been lost), every tier is flushed and
/// memory hits stop until a `PING` sent on the new connection is answered.
public struct MemoryTierCoherence: Sendable, Hashable {
    /// Where invalidations come from.
    public enum Invalidation: Sendable, Hashable {
        /// Redis's server-assisted client-side caching: `CLIENT TRACKING ON REDIRECT
        /// <id> BCAST PREFIX <namespace>:` on the dedicated connection. Every change of
        /// a key of the namespace (writes of any client, expiry, eviction, `FLUSHDB`) is
        /// reported. Needs Redis 6 or later, or Valkey, with `CLIENT TRACKING` allowed.
        case tracking
        /// For servers that do not allow client tracking: each write's tombstone and a
        /// `PUBLISH` of its key to `channel` run in one script, and every process
        /// subscribes to `channel` on the dedicated connection. Only writes made
        /// through the repositories (and `invalidate`) are reported, which is all that
        /// can make a memory entry stale. `nil`: `<namespace>:cache-aside:invalidations`.
        /// Also the mode for Redis Cluster, where tracking works per node.
        case publish(channel: String? = nil)
    }

    /// Where invalidations come from. Default: ``Invalidation/tracking``.
    public var invalidation: Invalidation
    /// How often the dedicated connection sends a `PING` whose answer renews the trust
    /// in memory. Default: 250 ms.
    public var heartbeatInterval: Duration
    /// How long after a write returned another process may still serve the old row
    /// from memory, at worst (however the invalidation channel is delayed or stalled):
    /// memory hits are served only within this much of the sending of the last
    /// answered `PING`. Longer than ``heartbeatInterval`` plus a round trip. Default:
    /// 1 second.
    public var maximumStaleness: Duration

    /// Creates the coherence settings; every parameter has the default described
    /// above.
    public init(
        invalidation: Invalidation = .tracking,
        heartbeatInterval: Duration = .milliseconds(250),
        maximumStaleness: Duration = .seconds(1)
    ) {
        self.invalidation = invalidation
        self.heartbeatInterval = heartbeatInterval
        self.maximumStaleness = maximumStaleness
    }
}
