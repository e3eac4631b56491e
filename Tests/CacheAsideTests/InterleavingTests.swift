@testable import CacheAside
import Synchronization
import Testing

/// Every lease interleaving the protocol must survive, forced step by step through the
/// fake store: a write, an eviction or a flush lands exactly between two steps of a
/// reader. Each test states what a design that overlapped a lease over "nothing" (or
/// kept the schema version in the key, or counted refusals as successes) would get
/// wrong.
@Suite struct InterleavingTests {
    static let modes: [CachePolicy.LeaseMode] = [.overlapped, .exclusive]

    enum Vanish: Sendable, CaseIterable {
        case evicted, flushed
        func apply(_ store: FakeStore, _ key: String) {
            switch self {
            case .evicted: store.delete(key)
            case .flushed: store.flush()
            }
        }
    }

    /// The version of the row cached under `key` for `schemaVersion`, if any.
    static func cachedVersion(_ store: FakeStore, _ key: String, schemaVersion: Int = 1) throws -> Int64? {
        try EntryFormat.decode(Item.self, from: store.get(key), schemaVersion: schemaVersion, codec: JSONValueCodec())??.version
    }

    static func row() -> FakeDatabase { FakeDatabase([Item(id: 1, name: "v1", version: 1)]) }

    /// Scenario 1: the reader found the key empty; before its lease, a write lands and
    /// its tombstone vanishes. A load that had started before the lease would have read
    /// v1 and filled it over "nothing" for the whole TTL.
    @Test(arguments: modes, Vanish.allCases)
    func aLeaseOverNothingIsTakenBeforeTheLoad(mode: CachePolicy.LeaseMode, vanish: Vanish) async throws {
        let store = FakeStore(), db = Self.row(), policy = CachePolicy(leaseMode: mode)
        let reader = try FakeProcess.make(store: store, policy: policy), writer = try FakeProcess.make(store: store, policy: policy)
        let readerRepo = reader.repository(db, policy: policy), writerRepo = writer.repository(db, policy: policy)
        let key = try readerRepo.cacheKey(for: 1).entryKey
        store.beforeNextLease { store in
            // A design that loads while it takes this lease has its load running now:
            // let it read v1 first.
            await db.letARunningLoadRead()
            await writerRepo.write(1)
            vanish.apply(store, key)
        }
        _ = try await readerRepo.find(1)  // began before the write: any version is a fair answer
        #expect(await eventually { (try? Self.cachedVersion(store, key)) != nil }, "the reader's fill landed")
        #expect(try Self.cachedVersion(store, key) == 2, "the fill holds the row as it was after the write")
        #expect(try await readerRepo.find(1)?.version == 2)
        #expect(try await writerRepo.find(1)?.version == 2)
        await reader.close()
        await writer.close()
    }

    /// Scenario 1, over a tombstone: the reader saw an earlier write's tombstone, a new
    /// write lands and its tombstone vanishes before the lease. The lease is granted
    /// only over the very tombstone the reader saw, so it is refused.
    @Test(arguments: modes, Vanish.allCases)
    func aLeaseOverATombstoneNeedsThatVeryTombstone(mode: CachePolicy.LeaseMode, vanish: Vanish) async throws {
        let store = FakeStore(), db = Self.row(), policy = CachePolicy(leaseMode: mode)
        let reader = try FakeProcess.make(store: store, policy: policy), writer = try FakeProcess.make(store: store, policy: policy)
        let readerRepo = reader.repository(db, policy: policy), writerRepo = writer.repository(db, policy: policy)
        let key = try readerRepo.cacheKey(for: 1).entryKey
        store.set(key, EntryFormat.tombstone())
        store.beforeNextLease { store in
            await db.letARunningLoadRead()
            await writerRepo.write(1)
            vanish.apply(store, key)
        }
        _ = try await readerRepo.find(1)
        await reader.cache.withRunningCheck()
        let cached = try Self.cachedVersion(store, key)
        #expect(cached == nil || cached == 2, "cached v\(cached ?? 0)")
        #expect(try await readerRepo.find(1)?.version == 2)
        #expect(try await writerRepo.find(1)?.version == 2)
        await reader.close()
        await writer.close()
    }

    /// A reader paused past every TTL: its lease expired, a write's tombstone came and
    /// expired too. Its fill must find its own lease gone.
    @Test(arguments: modes)
    func aReaderPausedPastEveryTTLCannotFill(mode: CachePolicy.LeaseMode) async throws {
        let store = FakeStore(), db = Self.row(), policy = CachePolicy(leaseMode: mode)
        let reader = try FakeProcess.make(store: store, policy: policy), writer = try FakeProcess.make(store: store, policy: policy)
        let readerRepo = reader.repository(db, policy: policy), writerRepo = writer.repository(db, policy: policy)
        let key = try readerRepo.cacheKey(for: 1).entryKey
        store.beforeNextFill { store in
            store.delete(key)  // the lease expired
            await writerRepo.write(1)
            store.delete(key)  // so did the tombstone
        }
        #expect(try await readerRepo.find(1)?.version == 1)
        #expect(await eventually { reader.cache.statistics().rejectedFills == 1 })
        #expect(try Self.cachedVersion(store, key) == nil)
        #expect(try await writerRepo.find(1)?.version == 2)
        await reader.close()
        await writer.close()
    }

    /// Scenario 2: a rolling deploy, one process on the previous schema version. A
    /// write through either version reaches the other's entry, since they share the key.
    @Test(arguments: modes)
    func aWriteThroughOneSchemaVersionInvalidatesTheOther(mode: CachePolicy.LeaseMode) async throws {
        let store = FakeStore(), db = Self.row(), policy = CachePolicy(leaseMode: mode)
        let old = try FakeProcess.make(store: store, policy: policy), new = try FakeProcess.make(store: store, policy: policy)
        let oldRepo = old.repository(db, schemaVersion: 1, policy: policy)
        let newRepo = new.repository(db, schemaVersion: 2, policy: policy)
        let key = try oldRepo.cacheKey(for: 1).entryKey
        #expect(try newRepo.cacheKey(for: 1).entryKey == key)

        #expect(try await oldRepo.find(1)?.version == 1)
        #expect(await eventually { (try? Self.cachedVersion(store, key, schemaVersion: 1)) == 1 })
        await newRepo.write(1)
        #expect(try await oldRepo.find(1)?.version == 2, "the old version's entry was invalidated by the new version's write")

        #expect(try await newRepo.find(1)?.version == 2)
        // Until the new version's entry is cached: a find that came while the old
        // process's fill was still in flight waited for it, and on a loaded machine may
        // have given up and read the database without a lease (so it filled nothing).
        #expect(await eventually {
            if (try? Self.cachedVersion(store, key, schemaVersion: 2)) == 2 { return true }
            _ = try await newRepo.find(1)
            return false
        })
        await oldRepo.write(1)
        #expect(try await newRepo.find(1)?.version == 3, "and the other way round")
        #expect(try await oldRepo.find(1)?.version == 3)
        await old.close()
        await new.close()
    }

    /// Scenario 3: the server refuses the tombstone for lack of memory; `DEL` still
    /// works, and nobody reads the old row afterwards. The refusal counts for the
    /// breaker.
    @Test(arguments: modes)
    func aTombstoneRefusedForMemoryFallsBackToDelete(mode: CachePolicy.LeaseMode) async throws {
        let store = FakeStore(), db = Self.row(), policy = CachePolicy(leaseMode: mode)
        let reader = try FakeProcess.make(store: store, policy: policy), writer = try FakeProcess.make(store: store, policy: policy)
        let readerRepo = reader.repository(db, policy: policy), writerRepo = writer.repository(db, policy: policy)
        let key = try readerRepo.cacheKey(for: 1).entryKey
        #expect(try await readerRepo.find(1)?.version == 1)
        #expect(await eventually { (try? Self.cachedVersion(store, key)) == 1 })

        store.refuse(.outOfMemory)
        await writerRepo.write(1)
        #expect(store.get(key) == nil, "the key was deleted")
        #expect(writer.cache.pendingInvalidations == 0)
        #expect(writer.cache.statistics().storeErrors >= 1, "the refusal was counted")
        #expect(try await readerRepo.find(1)?.version == 2)
        #expect(try Self.cachedVersion(store, key) == nil, "no fill while the server refuses writes")
        store.refuse(nil)
        #expect(try await readerRepo.find(1)?.version == 2)
        await reader.close()
        await writer.close()
    }

    /// Scenario 3, read-only (a demoted primary): neither the tombstone nor `DEL` is
    /// accepted. The invalidation is not counted as done: the writer's process skips
    /// the cache for the key and retries until the server accepts it.
    @Test(arguments: [CacheStoreError.Kind.readOnly, .misconfigured, .loading])
    func aRefusedInvalidationIsRetriedUntilItLands(refusal: CacheStoreError.Kind) async throws {
        let store = FakeStore(), db = Self.row()
        let policy = CachePolicy(invalidationRetryDelay: .milliseconds(20), invalidationRetryMaxDelay: .milliseconds(100))
        let reader = try FakeProcess.make(store: store, policy: policy), writer = try FakeProcess.make(store: store, policy: policy)
        let readerRepo = reader.repository(db, policy: policy), writerRepo = writer.repository(db, policy: policy)
        let key = try readerRepo.cacheKey(for: 1).entryKey
        #expect(try await writerRepo.find(1)?.version == 1)
        #expect(await eventually { (try? Self.cachedVersion(store, key)) == 1 })

        store.refuse(refusal)
        await writerRepo.write(1)
        #expect(writer.cache.pendingInvalidations == 1)
        #expect(writer.cache.statistics().storeErrors >= 1)
        #expect(try await writerRepo.find(1)?.version == 2, "the writer's process never serves the row it changed")
        store.refuse(nil)
        #expect(await eventually(timeout: .seconds(30)) { writer.cache.pendingInvalidations == 0 }, "the retry landed")
        #expect(try await readerRepo.find(1)?.version == 2)
        await reader.close()
        await writer.close()
    }

    /// A reader that finds its own process's lease (the fill in flight, the load out of
    /// the single-flight table) joins that fill in memory: no lease, no wait in Redis.
    @Test func aReaderJoinsItsOwnProcesssFillInMemory() async throws {
        let store = FakeStore(), db = Self.row()
        let process = try FakeProcess.make(store: store)
        let repo = process.repository(db)
        let key = try repo.cacheKey(for: 1).entryKey
        let second = Shared<Task<Item?, any Error>?>(nil)
        store.beforeNextFill { store in
            guard case .lease(let lease) = EntryFormat.classify(store.get(key)),
                  let flight = process.cache.flights.flight(lease: lease.token, as: Item?.self)
            else {
                Issue.record("the fill in flight is registered by its lease")
                return
            }
            second.withLock { $0 = Task { try await repo.find(1) } }
            _ = await eventually { flight.waiterCount == 1 }
        }
        #expect(try await repo.find(1)?.version == 1)
        let task = try #require(await waitFor { second.withLock { $0 } })
        #expect(try await task.value?.version == 1)
        #expect(store.calls("lease") == 1, "the second reader took no lease")
        #expect(store.calls("markWaited") == 0, "nor waited in the store")
        #expect(db.loads == 1)
        #expect(process.cache.statistics().hits == 1)
        await process.close()
    }

    /// A reader of another process waits for a lease's fill, and sees it when the fill
    /// is announced: with a recheck interval of a minute, it could not see it otherwise
    /// within the test's bound.
    @Test func aReaderInAnotherProcessIsWokenByTheFillsAnnouncement() async throws {
        let store = FakeStore(), db = Self.row()
        let policy = CachePolicy(leaseWait: .seconds(120), leaseRecheckInterval: .seconds(60))
        let a = try FakeProcess.make(store: store, policy: policy), b = try FakeProcess.make(store: store, policy: policy)
        let repoA = a.repository(db, policy: policy), repoB = b.repository(db, policy: policy)
        let key = try repoA.cacheKey(for: 1).entryKey
        #expect(await eventually { b.cache.announcements.isListening })
        let waiting = Shared<Task<Item?, any Error>?>(nil)
        let clock = ContinuousClock()
        let started = Shared<ContinuousClock.Instant?>(nil)
        db.afterNextLoad { _ in
            // A holds its lease and has its row: B comes, and waits on A's lease.
            started.withLock { $0 = clock.now }
            waiting.withLock { $0 = Task { try await repoB.find(1) } }
            _ = await eventually {
                guard case .lease(let lease) = EntryFormat.classify(store.get(key)) else { return false }
                return lease.waited
            }
        }
        #expect(try await repoA.find(1)?.version == 1)
        let task = try #require(await waitFor { waiting.withLock { $0 } })
        #expect(try await task.value?.version == 1)
        let took = clock.now - (started.withLock { $0 } ?? clock.now)
        #expect(took < .seconds(30), "B saw the fill after \(took), so not by its announcement")
        #expect(db.loads == 1)
        #expect(b.cache.statistics().leaseWaits == 1 && b.cache.statistics().hits == 1)
        await a.close()
        await b.close()
    }

    /// READONLY, MISCONF, LOADING and OOM are outages for the breaker; other error
    /// replies are not.
    @Test func refusalsOpenTheBreakerAndOtherErrorRepliesDoNot() throws {
        let policy = CachePolicy(circuitBreaker: .init(failureThreshold: 2, coolDown: .seconds(60)))
        for kind in [CacheStoreError.Kind.readOnly, .outOfMemory, .misconfigured, .loading, .unavailable] {
            let state = KeyspaceState(
                prefix: KeyPrefix(namespace: "a", keyspace: "b", schemaVersion: 1), policy: policy, counters: nil, logger: testLogger)
            state.storeFailed(CacheStoreError(kind, "x"))
            state.storeFailed(CacheStoreError(kind, "x"))
            #expect(state.breakerIsOpen, "\(kind)")
            #expect(!state.mayCallStore())
        }
        let state = KeyspaceState(
            prefix: KeyPrefix(namespace: "a", keyspace: "b", schemaVersion: 1), policy: policy, counters: nil, logger: testLogger)
        for _ in 0..<5 { state.storeFailed(CacheStoreError(.rejected, "WRONGTYPE")) }
        for _ in 0..<5 { state.storeFailed(CacheStoreError(.cancelled, "cancelled")) }
        #expect(!state.breakerIsOpen)
    }
}

/// Waits (with a generous deadline) until `value` gives something.
func waitFor<T: Sendable>(timeout: Duration = .seconds(30), _ value: @Sendable () -> T?) async -> T? {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let v = value() { return v }
        await Task.yield()
    }
    return value()
}

extension CacheAside {
    /// Waits until the background work submitted so far (fills) is done: a find after
    /// it sees what they wrote. Fills are short; the wait is for a condition.
    func withRunningCheck() async {
        _ = await eventually { self.background.isIdle }
    }
}
