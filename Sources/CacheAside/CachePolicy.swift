/// How a keyspace is cached: lifetimes, leases, and when to stop calling a failing Redis.
///
/// The defaults suit rows read far more often than written. Every entry gets a TTL:
/// values below ``minimumTTL`` are raised to it, so no entry is ever written without
/// an expiry.
public struct CachePolicy: Sendable, Equatable {
    /// The smallest TTL any entry gets, whatever the policy says (one second).
    public static let minimumTTL: Duration = .seconds(1)

    /// How long a cached row lives. Default: 10 minutes.
    public var ttl: Duration
    /// Spread of TTLs, as a fraction of the TTL added at random (0.1: each entry lives
    /// between `ttl` and `1.1 × ttl`), so entries filled together expire apart.
    /// Default: 0.1. Clamped to 0...1.
    public var ttlJitter: Double
    /// How long "this row does not exist" is cached. Default: 30 seconds.
    public var negativeTTL: Duration
    /// How long a fill lease lives: longer than a database load takes. A reader that
    /// holds it may fill the entry until then. Default: 3 seconds.
    public var leaseTTL: Duration
    /// How long a reader that finds another process's lease waits for that process's
    /// fill before reading the database itself. Default: 300 ms.
    public var leaseWait: Duration
    /// While waiting for another process's fill, how often the reader reads the key
    /// again in case no announcement comes (the lease was replaced by a write's
    /// tombstone, or announcements are not being received). Fills themselves are
    /// announced and seen at once. Default: 50 ms.
    public var leaseRecheckInterval: Duration
    /// Whether a reader that missed loads the row while it takes the lease, or only
    /// after. Default: ``LeaseMode/overlapped``.
    public var leaseMode: LeaseMode
    /// When to stop calling Redis, and when to try again.
    public var circuitBreaker: CircuitBreaker.Configuration
    /// First delay before retrying an invalidation that could not reach Redis; it
    /// doubles up to ``invalidationRetryMaxDelay``. Default: 100 ms.
    public var invalidationRetryDelay: Duration
    /// Longest delay between retries of one invalidation. Default: 5 seconds.
    public var invalidationRetryMaxDelay: Duration
    /// The in-process tier in front of Redis: decoded entities in this process's
    /// memory, kept coherent across processes (see ``MemoryTierPolicy``). Default:
    /// `nil`, no tier.
    public var memory: MemoryTierPolicy?

    /// Creates a policy; every parameter has a default.
    public init(
        ttl: Duration = .seconds(600),
        ttlJitter: Double = 0.1,
        negativeTTL: Duration = .seconds(30),
        leaseTTL: Duration = .seconds(3),
        leaseWait: Duration = .milliseconds(300),
        leaseRecheckInterval: Duration = .milliseconds(50),
        leaseMode: LeaseMode = .overlapped,
        circuitBreaker: CircuitBreaker.Configuration = .init(),
        invalidationRetryDelay: Duration = .milliseconds(100),
        invalidationRetryMaxDelay: Duration = .seconds(5),
        memory: MemoryTierPolicy? = nil
    ) {
        self.ttl = ttl
        self.ttlJitter = ttlJitter
        self.negativeTTL = negativeTTL
        self.leaseTTL = leaseTTL
        self.leaseWait = leaseWait
        self.leaseRecheckInterval = leaseRecheckInterval
        self.leaseMode = leaseMode
        self.circuitBreaker = circuitBreaker
        self.invalidationRetryDelay = invalidationRetryDelay
        self.invalidationRetryMaxDelay = invalidationRetryMaxDelay
        self.memory = memory
    }

    /// The default policy.
    public static let `default` = CachePolicy()

    /// How a reader that missed after a write (it found the write's tombstone) orders
    /// its lease and its database load. Over anything else (an empty key, an entry of
    /// another schema version, bytes that do not decode) the lease always comes first.
    /// Both modes are equally safe; they differ in cost.
    public enum LeaseMode: Sendable, Equatable {
        /// Over a tombstone, take the lease and load the row at the same time: such a
        /// miss costs one Redis round trip plus the load. The lease is granted only if
        /// the key still holds the very tombstone the reader saw (its token is unique),
        /// so a write in between is never missed. Readers of different processes that
        /// miss at the same instant may each load once.
        case overlapped
        /// Always take the lease first and load only if it was granted: one load per
        /// key per burst across all processes, at the price of a second round trip on
        /// every miss after a write. For expensive loads.
        case exclusive
    }

    /// The TTL, in milliseconds, for one new entry: `ttl` (or `negativeTTL` for an
    /// "absent" entry) raised to the minimum, plus jitter.
    func entryTTLMilliseconds(absent: Bool, random: Double = Double.random(in: 0..<1)) -> Int64 {
        let base = max(absent ? negativeTTL : ttl, CachePolicy.minimumTTL)
        let baseMs = base.milliseconds
        let jitter = min(max(ttlJitter.isFinite ? ttlJitter : 0, 0), 1)
        return baseMs + Int64((Double(baseMs) * jitter * random).rounded(.down))
    }

    /// The longest any entry written under this policy can live: `ttl × (1 + jitter)`
    /// (or the negative TTL's, if longer). It bounds how long a failed invalidation is
    /// retried, and the worst-case staleness while a write's invalidation cannot land.
    public var longestEntryLifetime: Duration {
        let jitter = min(max(ttlJitter.isFinite ? ttlJitter : 0, 0), 1)
        let longest = max(max(ttl, negativeTTL), CachePolicy.minimumTTL)
        return .milliseconds(longest.milliseconds + Int64((Double(longest.milliseconds) * jitter).rounded(.up)))
    }

    /// The lease TTL in milliseconds, at least 100 ms.
    var leaseTTLMilliseconds: Int64 { max(leaseTTL.milliseconds, 100) }

    /// How long a write's tombstone lives. Safety never depends on it (a tombstone that
    /// vanishes leaves an empty key, over which leases come first); while it lives, a
    /// miss after the write can overlap its lease and its load.
    var tombstoneTTLMilliseconds: Int64 { longestEntryLifetime.milliseconds + 2 * leaseTTLMilliseconds }
}

extension Duration {
    /// Whole milliseconds, rounded up, never negative.
    var milliseconds: Int64 {
        let (s, atto) = components
        if s < 0 { return 0 }
        if s > 1_000_000_000_000 { return 1_000_000_000_000_000 }
        return s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
