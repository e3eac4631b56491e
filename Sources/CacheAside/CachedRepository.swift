import CacheAsideMemory
import CacheAsidePostgres
import Synchronization

/// A table's rows, read through the cache.
///
/// A conforming type says where its rows come from (``load(_:on:)``, and where it can,
/// ``load(many:on:)``), its ``keyspace``, ``schemaVersion`` and ``policy``. The
/// extension gives it ``find(_:)``, ``find(many:)``, ``invalidate(_:)`` and the write
/// helpers (``update(_:_:)``, ``delete(_:_:)``, ``insert(_:)``), which keep the cache
/// right: every write deletes the entry after its transaction commits, and no reader
/// can put an old row back afterwards.
///
/// ```swift
/// struct UserRepository: CachedRepository {
///     let cache: CacheAside
///     var keyspace: String { "user" }
///
///     func load(_ id: Int64, on db: some PGQueryable) async throws -> User? {
///         try await db.query("SELECT id, name, email FROM users WHERE id = $1", [id])
///             .first?.decode(User.self)
///     }
/// }
/// ```
public protocol CachedRepository<Entity>: Sendable {
    /// The cached row type, stored as JSON.
    associatedtype Entity: Codable & Sendable
    /// The primary key.
    associatedtype ID: CacheIdentifier

    /// The shared runtime (clients, namespace, single-flight table).
    var cache: CacheAside { get }
    /// The entity's name in keys (`A-Z a-z 0-9 - . _`), e.g. `user`.
    var keyspace: String { get }
    /// The version of the cached representation: bump it when `Entity`'s shape
    /// changes, and every old entry is retired at once. Default: 1.
    var schemaVersion: Int { get }
    /// TTLs, leases and breaker settings. Default: the cache's default policy.
    var policy: CachePolicy { get }

    /// Loads one row from the database, or `nil` if there is none.
    func load(_ id: ID, on db: some PGQueryable) async throws -> Entity?

    /// Loads many rows in one query (e.g. `WHERE id = ANY($1)`), keyed by id; ids
    /// without a row are left out. The default calls ``load(_:on:)`` once per id.
    func load(many ids: [ID], on db: some PGQueryable) async throws -> [ID: Entity]
}

extension CachedRepository {
    public var schemaVersion: Int { 1 }

    public var policy: CachePolicy { cache.defaultPolicy }

    public func load(many ids: [ID], on db: some PGQueryable) async throws -> [ID: Entity] {
        var result: [ID: Entity] = [:]
        for id in ids {
            if let entity = try await load(id, on: db) { result[id] = entity }
        }
        return result
    }

    /// The Redis key of `id`'s entry.
    public func cacheKey(for id: ID) throws -> CacheKey {
        let state = try cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self)
        return state.prefix.key(for: id.cacheKeyComponent)
    }

    // MARK: - Reads

    /// Reads one row through the cache: from the in-process tier when the policy has
    /// one and holds the row, else from Redis when it is there (and then keeps it in
    /// memory), else from the database (one load per key per burst: callers in this
    /// process share one load, and other processes wait briefly for the lease holder's
    /// fill). A missing row is cached as absent for the policy's negative TTL.
    ///
    /// If Redis fails or is slow, the read goes to the database and succeeds.
    /// - Throws: the database's error (a `PGError`), or ``CacheError`` for a bad
    ///   keyspace.
    ///
    /// The memory tier's part is inlinable, so that a caller's module specializes it
    /// for its own `Entity`: a memory hit then costs no generic metadata lookups.
    @inlinable
    public func find(_ id: ID) async throws -> Entity? {
        let cache = self.cache
        let policy = self.policy
        // A memory hit through the published keyspaces, borrowing every shared object
        // (reference counts that every core would write cost more than the lookup). The
        // runtime, which keeps every published snapshot and so all of them alive, lives
        // until the lookup is done.
        if policy.memory != nil,
           let value = withExtendedLifetime(cache, {
               cache.published.load(ordering: .acquiring)._withUnsafeGuaranteedRef { snapshot in
                   snapshot.borrowed[KeyspaceID(name: keyspace, schemaVersion: schemaVersion)]?._withUnsafeGuaranteedRef { state in
                       state.policy == policy
                           ? state.memoryHit(id.cacheKeyComponent, as: Entity.self, invalidations: cache.invalidations) : nil
                   }
               }
           })
        {
            return value
        }
        let state = try cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self)
        let key = state.prefix.entryKey(for: id.cacheKeyComponent)
        // Memory first: the ticket of a miss is taken before the Redis read starts.
        var memory: (tier: MemoryTier<Entity>, ticket: MemoryFillTicket)?
        if let tier = state.memory(Entity.self), !cache.invalidations.contains(key) {
            switch tier.lookup(key) {
            case .hit(let value): return value
            case .miss(let ticket): memory = (tier, ticket)
            }
        }
        return try await findThroughRedis(id, key: key, state: state, memory: memory)
    }

    /// ``find(_:)`` past the memory tier: Redis, then the database.
    ///
    /// The hit path (one `GET`, the decoding, the counters) is inlinable too, so that
    /// it is specialized for the caller's `Entity`: unspecialized, its generic frames
    /// cost metadata lookups on every hit. The rest of the read path is not.
    @inlinable
    func findThroughRedis(
        _ id: ID, key: String, state: KeyspaceState, memory: (tier: MemoryTier<Entity>, ticket: MemoryFillTicket)?
    ) async throws -> Entity? {
        switch try await cache.readForHit(key, state: state) {
        case .read(let bytes, let contents, let since):
            // An entry of this schema version answers; anything else (or bytes that do
            // not decode: the read path counts and replaces them) goes on below.
            if let answer = try? EntryFormat.answer(
                Entity.self, bytes, contents, schemaVersion: state.prefix.schemaVersion, codec: cache.codec)
            {
                state.recordHit(since: since)
                if let memory, let bytes { memory.tier.fill(memory.ticket, with: answer, size: bytes.count) }
                return answer
            }
            return try await findAfterHitPath(id, key: key, state: state, memory: memory, bytes: bytes, since: since, failed: false)
        case .failed(let since):
            return try await findAfterHitPath(id, key: key, state: state, memory: memory, bytes: nil, since: since, failed: true)
        case .skipped:
            return try await findAfterHitPath(id, key: key, state: state, memory: memory, bytes: nil, since: nil, failed: false)
        }
    }

    /// The read path after the hit path found no answer: `bytes` is what the key held
    /// (read at `since`), `failed` says the read failed at `since`, and neither means
    /// the cache was not read.
    @usableFromInline
    func findAfterHitPath(
        _ id: ID, key: String, state: KeyspaceState, memory: (tier: MemoryTier<Entity>, ticket: MemoryFillTicket)?,
        bytes: [UInt8]?, since: ContinuousClock.Instant?, failed: Bool
    ) async throws -> Entity? {
        let first: ReadCore<Entity>.FirstRead
        if let since {
            first = failed ? .failed(since: since) : .read([bytes], since: since)
        } else {
            first = .none
        }
        let values = try await ReadCore<Entity>(
            cache: cache, state: state, keys: [key], memoryTickets: memory.map { [$0.ticket] }
        ) { _ in
            [try await self.load(id, on: self.cache.postgres)]
        }.run(after: first)
        return values[0]
    }

    /// Reads many rows through the cache: the in-process tier first (when the policy
    /// has one), then one `MGET` for the rest, one ``load(many:on:)`` for the misses,
    /// and the fills sent together. Ids without a row are left out of the result (and
    /// cached as absent).
    public func find(many ids: some Sequence<ID>) async throws -> [ID: Entity] {
        let state = try cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self)
        var unique: [ID] = []
        var seen = Set<ID>()
        for id in ids where seen.insert(id).inserted { unique.append(id) }
        if unique.isEmpty { return [:] }
        var result: [ID: Entity] = [:]
        result.reserveCapacity(unique.count)
        var ordered = unique
        var keys = ordered.map { state.prefix.entryKey(for: $0.cacheKeyComponent) }
        var tickets: [MemoryFillTicket?]?
        if let tier = state.memory(Entity.self) {
            // Memory first; the misses' tickets are taken before the MGET starts.
            var missedIDs: [ID] = []
            var missedKeys: [String] = []
            var missedTickets: [MemoryFillTicket?] = []
            for (id, key) in zip(ordered, keys) {
                if !cache.invalidations.contains(key), case .hit(let value) = tier.lookup(key) {
                    if let value { result[id] = value }
                    continue
                }
                missedIDs.append(id)
                missedKeys.append(key)
                missedTickets.append(tier.store.fillTicket(forKey: key))
            }
            if missedIDs.isEmpty { return result }
            ordered = missedIDs
            keys = missedKeys
            tickets = missedTickets
        }
        let wantedIDs = ordered
        let values = try await ReadCore<Entity>(cache: cache, state: state, keys: keys, memoryTickets: tickets) { positions in
            let wanted = positions.map { wantedIDs[$0] }
            let rows = try await self.load(many: wanted, on: self.cache.postgres)
            return wanted.map { rows[$0] }
        }.run()
        for (k, id) in wantedIDs.enumerated() {
            if let value = values[k] { result[id] = value }
        }
        return result
    }

    /// Reads one row inside a write transaction: from the database (it sees the
    /// transaction's own changes), never from the cache, and it fills nothing.
    public func find(_ id: ID, in transaction: PGTransaction) async throws -> Entity? {
        try await load(id, on: transaction)
    }

    // MARK: - Writes

    /// Replaces the cached entries (and leases) of `ids` with tombstones, so that the
    /// next read loads them from the database. Loads of these ids in flight in this
    /// process are not joined by later readers. If the invalidation cannot land (Redis
    /// unreachable, or refusing writes), it is retried by ``CacheAside/run()`` until it
    /// lands or the entries have expired, and this process skips the cache for these ids
    /// meanwhile.
    public func invalidate(_ ids: ID...) async {
        await invalidate(many: ids)
    }

    /// Like ``invalidate(_:)``, for a collection of ids.
    public func invalidate(many ids: some Sequence<ID>) async {
        guard let state = try? cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self) else { return }
        let keys = ids.map { state.prefix.key(for: $0.cacheKeyComponent).entryKey }
        await cache.invalidate(keys, state: state)
    }

    /// Runs `body` in a transaction and, after it commits, invalidates `ids`. A throw
    /// from `body` rolls the transaction back and invalidates nothing. If `COMMIT` was
    /// sent but its outcome is unknown (the connection dropped, a timeout), the ids are
    /// invalidated anyway before the error is thrown: an extra invalidation is safe.
    @discardableResult
    public func write<Result: Sendable>(
        invalidating ids: [ID],
        _ body: @Sendable (PGTransaction) async throws -> Result
    ) async throws -> Result {
        let state = try cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self)
        let keys = ids.map { state.prefix.key(for: $0.cacheKeyComponent).entryKey }
        return try await cache.write(keys: { _ in keys }, state: state, body)
    }

    /// Changes the row `id` in a transaction (`body` runs the SQL) and invalidates its
    /// entry after the commit. The new value is not written to the cache: the next
    /// read loads it.
    @discardableResult
    public func update<Result: Sendable>(
        _ id: ID, _ body: @Sendable (PGTransaction) async throws -> Result
    ) async throws -> Result {
        try await write(invalidating: [id], body)
    }

    /// Deletes the row `id` in a transaction (`body` runs the SQL) and invalidates its
    /// entry after the commit.
    @discardableResult
    public func delete<Result: Sendable>(
        _ id: ID, _ body: @Sendable (PGTransaction) async throws -> Result
    ) async throws -> Result {
        try await write(invalidating: [id], body)
    }

    /// Inserts a row in a transaction; `body` runs the SQL and returns the new row's id,
    /// whose entry is invalidated after the commit, so that a cached "absent" never
    /// hides the new row.
    @discardableResult
    public func insert(_ body: @Sendable (PGTransaction) async throws -> ID) async throws -> ID {
        let state = try cache.keyspace(keyspace, schemaVersion: schemaVersion, policy: policy, entity: Entity.self)
        return try await cache.write(keys: { id in [state.prefix.key(for: id.cacheKeyComponent).entryKey] }, state: state, body)
    }
}

/// What the hit path's read found.
@usableFromInline
enum HitRead {
    /// The key's bytes (nil: nothing there) and what they hold, read at `since`.
    case read([UInt8]?, EntryFormat.Contents, since: ContinuousClock.Instant)
    /// The store failed: read the database.
    case failed(since: ContinuousClock.Instant)
    /// The cache is not to be read for this key now (a pending invalidation, the
    /// breaker open).
    case skipped
}

extension CacheAside {
    /// The read of a single-key `find`'s hit path: one `GET`, the breaker's
    /// bookkeeping, and what the bytes hold. Not generic: the decoding happens in the
    /// caller's specialized code.
    @usableFromInline
    func readForHit(_ key: String, state: KeyspaceState) async throws -> HitRead {
        guard !invalidations.contains(key), state.mayCallStore() else { return .skipped }
        let start = ContinuousClock.now
        let bytes: [UInt8]?
        do {
            bytes = try await store.read(key)
        } catch {
            if error.kind == .cancelled { throw CancellationError() }
            state.storeFailed(error)
            return .failed(since: start)
        }
        state.storeSucceeded()
        return .read(bytes, EntryFormat.classify(bytes), since: start)
    }

    /// Runs `body` in a transaction and invalidates the keys its result names after
    /// the commit, or when the commit's outcome is unknown.
    func write<Result: Sendable>(
        keys: @escaping @Sendable (Result) -> [String],
        state: KeyspaceState,
        _ body: @Sendable (PGTransaction) async throws -> Result
    ) async throws -> Result {
        // The keys once `body` returned; nil until then (a throw from the body rolls
        // back: nothing to invalidate).
        let pending = Mutex<(keys: [String]?, done: Bool)>((nil, false))
        do {
            return try await postgres.withTransaction { transaction in
                let result = try await body(transaction)
                let resultKeys = keys(result)
                pending.withLock { $0.keys = resultKeys }
                transaction.afterCommit {
                    pending.withLock { $0.done = true }
                    await self.invalidate(resultKeys, state: state)
                }
                return result
            }
        } catch {
            // COMMIT may have been sent: its outcome is unknown, so invalidate.
            let (resultKeys, done) = pending.withLock { ($0.keys, $0.done) }
            if let resultKeys, !done {
                logger.debug("write failed after its body ran; invalidating in case it committed",
                             metadata: ["keyspace": "\(state.prefix.keyspace)", "error": "\(error)"])
                await invalidate(resultKeys, state: state)
            }
            throw error
        }
    }

    /// Replaces entries (and any lease they hold) with fresh tombstones after a write,
    /// in one round trip; a tombstone refused for lack of memory falls back to deleting
    /// the key. What cannot land is queued for retries.
    func invalidate(_ keys: [String], state: KeyspaceState) async {
        guard !keys.isEmpty else { return }
        for key in keys { flights.forget(key) }
        // This process's memory forgets the keys once their invalidation landed in
        // Redis, or is queued (reads then skip the cache for them): a fill whose
        // ticket predates this is refused, and no later read can bring the old row
        // back into memory.
        defer { coherence.invalidate(keys: keys) }
        guard state.mayCallStore() else {
            invalidations.enqueue(keys, keyspace: state)
            return
        }
        let ttl = state.policy.tombstoneTTLMilliseconds
        do {
            let replies = try await store.invalidate(keys.map {
                InvalidationRequest(key: $0, tombstone: EntryFormat.tombstone(), ttlMilliseconds: ttl)
            })
            var failed: [String] = []
            var refusal: CacheStoreError?
            for (key, reply) in zip(keys, replies) {
                switch reply {
                case .tombstoned:
                    break
                case .deleted:
                    refusal = CacheStoreError(.outOfMemory, "tombstone refused for lack of memory; the key was deleted")
                case .refused(let error):
                    refusal = error
                    failed.append(key)
                }
            }
            if let refusal {
                state.storeFailed(refusal)
            } else {
                state.storeSucceeded()
            }
            if !failed.isEmpty { invalidations.enqueue(failed, keyspace: state) }
        } catch {
            state.storeFailed(error)
            invalidations.enqueue(keys, keyspace: state)
        }
    }
}
