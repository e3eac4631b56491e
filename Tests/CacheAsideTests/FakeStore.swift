@testable import CacheAside
import CacheAsidePostgres
import Logging
import Synchronization
import Testing

/// The storage seam in memory, with the semantics of the Redis implementation (and of
/// its scripts), plus hooks that run inside an operation so that a test can force any
/// interleaving: a write, an eviction or a flush between two steps of a reader.
///
/// TTLs are not simulated: a test expires a key by deleting it.
final class FakeStore: CacheStore {
    typealias Hook = @Sendable (FakeStore) async -> Void

    private struct State {
        var keys: [String: [UInt8]] = [:]
        /// Writes the server refuses: `.outOfMemory` refuses SET (not DEL), the others
        /// refuse both.
        var refusing: CacheStoreError.Kind?
        var beforeLease: Hook?
        var beforeFill: Hook?
        var afterRead: Hook?
        var listeners: [Int: AsyncStream<String>.Continuation] = [:]
        var nextListener = 0
        var counts: [String: Int] = [:]
    }

    private let state = Mutex(State())

    // MARK: Test controls

    func get(_ key: String) -> [UInt8]? { state.withLock { $0.keys[key] } }
    func set(_ key: String, _ bytes: [UInt8]?) { state.withLock { $0.keys[key] = bytes } }
    func delete(_ key: String) { state.withLock { _ = $0.keys.removeValue(forKey: key) } }
    func flush() { state.withLock { $0.keys.removeAll() } }
    func refuse(_ kind: CacheStoreError.Kind?) { state.withLock { $0.refusing = kind } }
    /// Runs once, before the next lease request is applied.
    func beforeNextLease(_ hook: Hook?) { state.withLock { $0.beforeLease = hook } }
    /// Runs once, before the next fill is applied.
    func beforeNextFill(_ hook: Hook?) { state.withLock { $0.beforeFill = hook } }
    /// Runs once, after the next read took its snapshot (before it returns).
    func afterNextRead(_ hook: Hook?) { state.withLock { $0.afterRead = hook } }
    /// How many calls of an operation were made (`read`, `lease`, `markWaited`, `fill`, ...).
    func calls(_ operation: String) -> Int { state.withLock { $0.counts[operation] ?? 0 } }

    private func count(_ operation: String) { state.withLock { $0.counts[operation, default: 0] += 1 } }

    private func refusal(deleting: Bool = false) -> CacheStoreError? {
        state.withLock { s in
            guard let kind = s.refusing else { return nil }
            if deleting && kind == .outOfMemory { return nil }
            return CacheStoreError(kind, "refused by the fake store (\(kind))")
        }
    }

    private func announce(_ key: String) {
        let listeners = state.withLock { Array($0.listeners.values) }
        for l in listeners { l.yield(key) }
    }

    // MARK: CacheStore

    func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] {
        count("read")
        let values = state.withLock { s in keys.map { s.keys[$0] } }
        if let hook = state.withLock({ s -> Hook? in defer { s.afterRead = nil }; return s.afterRead }) { await hook(self) }
        return values
    }

    func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? {
        try await read([key])[0]
    }

    func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        count("lease")
        if let hook = state.withLock({ s -> Hook? in defer { s.beforeLease = nil }; return s.beforeLease }) { await hook(self) }
        if let refused = refusal() { return requests.map { _ in .refused(refused) } }
        return state.withLock { s in
            requests.map { r in
                let current = s.keys[r.key]
                if current == r.expected || (current == nil && r.expected == nil) {
                    s.keys[r.key] = r.lease
                    return .granted
                }
                return .holds(current)
            }
        }
    }

    func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        count("markWaited")
        let refused = refusal()
        return state.withLock { s in
            requests.map { r in
                let current = s.keys[r.key]
                if current == r.lease.waitedBytes { return .granted }
                if current == r.lease.plainBytes {
                    if let refused { return .refused(refused) }
                    s.keys[r.key] = r.lease.waitedBytes
                    return .granted
                }
                return .holds(current)
            }
        }
    }

    func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply] {
        count("fill")
        if let hook = state.withLock({ s -> Hook? in defer { s.beforeFill = nil }; return s.beforeFill }) { await hook(self) }
        if let refused = refusal() { return requests.map { _ in .refused(refused) } }
        var announced: [String] = []
        let replies: [FillReply] = state.withLock { s in
            requests.map { r in
                let current = s.keys[r.key]
                guard current == r.lease.plainBytes || current == r.lease.waitedBytes else { return .leaseGone }
                if current == r.lease.waitedBytes { announced.append(r.key) }
                s.keys[r.key] = r.entry
                return .filled
            }
        }
        for key in announced { announce(key) }
        return replies
    }

    func release(_ requests: [WaitRequest]) async throws(CacheStoreError) {
        count("release")
        if let refused = refusal(deleting: true) { throw refused }
        var announced: [String] = []
        state.withLock { s in
            for r in requests {
                let current = s.keys[r.key]
                if current == r.lease.plainBytes || current == r.lease.waitedBytes {
                    s.keys.removeValue(forKey: r.key)
                    if current == r.lease.waitedBytes { announced.append(r.key) }
                }
            }
        }
        for key in announced { announce(key) }
    }

    func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply] {
        count("invalidate")
        let setRefused = refusal()
        let deleteRefused = refusal(deleting: true)
        return state.withLock { s in
            requests.map { r in
                if setRefused == nil {
                    s.keys[r.key] = r.tombstone
                    return .tombstoned
                }
                if let deleteRefused { return .refused(deleteRefused) }
                s.keys.removeValue(forKey: r.key)
                return .deleted
            }
        }
    }

    func listenForFills(
        onReady: @escaping @Sendable () -> Void, deliver: @escaping @Sendable (String) -> Void
    ) async throws(CacheStoreError) {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        let id = state.withLock { s in
            s.nextListener += 1
            s.listeners[s.nextListener] = continuation
            return s.nextListener
        }
        onReady()
        for await key in stream { deliver(key) }
        _ = state.withLock { $0.listeners.removeValue(forKey: id) }
    }

    func shutdown() async {}
}

/// Rows in memory, standing in for the database in the seam's unit tests. A load
/// reads the row the moment it is called.
final class FakeDatabase: Sendable {
    private let rows = Mutex<[Int64: Item]>([:])
    private let loadCount = Atomic<Int>(0)
    private let gate = Mutex<(@Sendable (Int64) async -> Void)?>(nil)

    init(_ items: [Item]) {
        rows.withLock { r in for item in items { r[item.id] = item } }
    }

    func row(_ id: Int64) -> Item? { rows.withLock { $0[id] } }
    var loads: Int { loadCount.load(ordering: .relaxed) }

    /// Bumps the row's version (and name), as a committed write.
    @discardableResult
    func write(_ id: Int64) -> Item? {
        rows.withLock { r in
            guard var item = r[id] else { return nil }
            item.version += 1
            item.name = "v\(item.version)"
            r[id] = item
            return item
        }
    }

    /// Gives a load that was started concurrently the chance to read its row (a
    /// design that overlaps the load with a lease): yields until one did, or a while.
    func letARunningLoadRead() async {
        for _ in 0..<2000 where loads == 0 { await Task.yield() }
    }

    /// Runs after a load read its row, before it returns (once).
    func afterNextLoad(_ hook: (@Sendable (Int64) async -> Void)?) { gate.withLock { $0 = hook } }

    func load(_ id: Int64) async -> Item? {
        loadCount.add(1, ordering: .relaxed)
        let item = row(id)
        if let hook = gate.withLock({ g -> (@Sendable (Int64) async -> Void)? in defer { g = nil }; return g }) {
            await hook(id)
        }
        return item
    }
}

/// A repository over the fake database.
struct FakeRepository: CachedRepository {
    let cache: CacheAside
    let db: FakeDatabase
    var schemaVersion: Int = 1
    var policy: CachePolicy = .init()
    var keyspace: String { "item" }

    func load(_ id: Int64, on _: some PGQueryable) async throws -> Item? {
        await db.load(id)
    }

    /// A write: the row changes, then the entry is invalidated (as `update` does after
    /// its commit).
    func write(_ id: Int64) async {
        db.write(id)
        await invalidate(id)
    }
}

/// A runtime over a fake store (no server), running as a service until ``close()``.
struct FakeProcess: Sendable {
    let cache: CacheAside
    let runner: Task<Void, any Error>

    static func make(store: FakeStore, policy: CachePolicy = .init()) throws -> FakeProcess {
        // Never connects: the fake repositories read the fake database.
        let postgres = PGClient(configuration: try PGConfiguration(url: "postgres://nobody@127.0.0.1:9/none"))
        let cache = try CacheAside(postgres: postgres, store: store, namespace: "fake", defaultPolicy: policy, logger: testLogger)
        return FakeProcess(cache: cache, runner: Task { try await cache.run() })
    }

    func repository(_ db: FakeDatabase, schemaVersion: Int = 1, policy: CachePolicy = .init()) -> FakeRepository {
        FakeRepository(cache: cache, db: db, schemaVersion: schemaVersion, policy: policy)
    }

    func close() async {
        await cache.shutdown()
        _ = try? await runner.value
    }
}
