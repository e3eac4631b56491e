/// The storage seam: every operation the cache core needs from its shared store, and
/// nothing else. Redis implements it (``RedisCacheStore``), unit tests implement it in
/// memory to force interleavings, and the next tiers (an in-process memory tier, a
/// Redis Cluster client) plug in here.
///
/// Every request names its key, and every operation on one key is independent of the
/// others in the same call: a cluster implementation may split a call by node and run
/// the parts in any order. The bytes are the cache's own format (``EntryFormat``); a
/// store never interprets them beyond comparing them for equality.
///
/// Errors: a whole call fails with a ``CacheStoreError``; inside a batch, one key's
/// refusal by the server is that key's reply (`.refused`).
package protocol CacheStore: Sendable {
    /// What each key holds (`nil`: nothing). Redis: `GET`, or `MGET` for several keys.
    func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?]

    /// What one key holds: the hit path, with nothing else around it. Redis: `GET`.
    func read(_ key: String) async throws(CacheStoreError) -> [UInt8]?

    /// Takes leases, each only if its key holds exactly the expected bytes (`nil`:
    /// nothing), atomically per key. A refused lease's reply says what the key holds.
    func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply]

    /// Marks leases as waited for, so that their fill (or release) is announced to
    /// ``listenForFills(onReady:deliver:)``. `.granted` means the lease is marked (or
    /// already was); otherwise the reply says what the key holds instead.
    func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply]

    /// Writes entries, each only over its own lease (plain or marked), with its TTL. A
    /// marked lease's fill is announced.
    func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply]

    /// Deletes leases that will not be filled, each only if it is still there. A marked
    /// lease's release is announced.
    func release(_ requests: [WaitRequest]) async throws(CacheStoreError)

    /// Replaces whatever each key holds with a fresh tombstone (a refused tombstone
    /// falls back to deleting the key).
    func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply]

    /// Listens for announced fills and releases until the calling task is cancelled:
    /// calls `onReady` once listening (and again after each reconnection), then
    /// `deliver` with each announced key. Announcements sent while it was not
    /// listening are lost; waiters then fall back to reading the key again.
    func listenForFills(
        onReady: @escaping @Sendable () -> Void, deliver: @escaping @Sendable (String) -> Void
    ) async throws(CacheStoreError)

    /// Closes the store's connections.
    func shutdown() async
}

/// Take `lease` on `key` if the key holds `expected` (`nil`: nothing).
package struct LeaseRequest: Sendable {
    package var key: String
    package var expected: [UInt8]?
    package var lease: [UInt8]
    package var ttlMilliseconds: Int64

    package init(key: String, expected: [UInt8]?, lease: [UInt8], ttlMilliseconds: Int64) {
        self.key = key
        self.expected = expected
        self.lease = lease
        self.ttlMilliseconds = ttlMilliseconds
    }
}

/// A lease on a key: to mark as waited for, or to release.
package struct WaitRequest: Sendable {
    package var key: String
    package var lease: EntryFormat.Lease

    package init(key: String, lease: EntryFormat.Lease) {
        self.key = key
        self.lease = lease
    }
}

/// Write `entry` over `lease` (plain or marked), with its TTL.
package struct FillRequest: Sendable {
    package var key: String
    package var lease: EntryFormat.Lease
    package var entry: [UInt8]
    package var ttlMilliseconds: Int64

    package init(key: String, lease: EntryFormat.Lease, entry: [UInt8], ttlMilliseconds: Int64) {
        self.key = key
        self.lease = lease
        self.entry = entry
        self.ttlMilliseconds = ttlMilliseconds
    }
}

/// Replace what `key` holds with `tombstone`, which lives `ttlMilliseconds`.
package struct InvalidationRequest: Sendable {
    package var key: String
    package var tombstone: [UInt8]
    package var ttlMilliseconds: Int64

    package init(key: String, tombstone: [UInt8], ttlMilliseconds: Int64) {
        self.key = key
        self.tombstone = tombstone
        self.ttlMilliseconds = ttlMilliseconds
    }
}

/// One key's answer to a lease (or mark) request.
package enum LeaseReply: Sendable, Equatable {
    /// The lease is the key's now (or marked).
    case granted
    /// Refused: the key holds these bytes (`nil`: nothing).
    case holds([UInt8]?)
    /// The server refused to write (out of memory, read-only, ...).
    case refused(CacheStoreError)
}

/// One key's answer to a fill.
package enum FillReply: Sendable, Equatable {
    case filled
    /// The lease was gone: a write replaced it, or it expired.
    case leaseGone
    case refused(CacheStoreError)
}

/// One key's answer to an invalidation.
package enum InvalidationReply: Sendable, Equatable {
    /// The key holds the new tombstone.
    case tombstoned
    /// The tombstone was refused (out of memory) and the key was deleted instead.
    case deleted
    /// Neither was accepted (read-only, ...): the invalidation has not landed.
    case refused(CacheStoreError)
}

/// Why a store operation failed.
package struct CacheStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    package enum Kind: Sendable, Equatable {
        /// The store could not be reached or did not answer in time.
        case unavailable
        /// The server refuses writes: a replica, or a demoted primary (READONLY).
        case readOnly
        /// The server refuses writes for lack of memory (OOM under `noeviction`).
        case outOfMemory
        /// The server refuses writes because it cannot persist (MISCONF).
        case misconfigured
        /// The server is loading its data set (LOADING).
        case loading
        /// Any other error reply (a bug, WRONGTYPE): the server itself is fine.
        case rejected
        /// The calling task was cancelled.
        case cancelled
    }

    package var kind: Kind
    package var message: String

    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// Whether a circuit breaker counts it: the store is down, or up but refusing
    /// writes. A plain error reply or a cancellation is not an outage.
    package var isOutage: Bool {
        switch kind {
        case .unavailable, .readOnly, .outOfMemory, .misconfigured, .loading: return true
        case .rejected, .cancelled: return false
        }
    }

    package var description: String { "cache store \(kind): \(message)" }
}
