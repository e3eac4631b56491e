@testable import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// A cached row of the tests' own table.
struct Item: Codable, Sendable, Equatable {
    var id: Int64
    var name: String
    var version: Int64
}

/// Counts database loads per id, and can hold a load after it read its row.
final class LoadProbe: Sendable {
    typealias Gate = @Sendable (Int64, Item?) async -> Void
    private let counts = Mutex<[Int64: Int]>([:])
    private let manyCalls = Atomic<Int>(0)
    private let gate = Mutex<Gate?>(nil)

    func record(_ id: Int64) { counts.withLock { $0[id, default: 0] += 1 } }
    func recordMany() { manyCalls.add(1, ordering: .relaxed) }
    func loads(of id: Int64) -> Int { counts.withLock { $0[id] ?? 0 } }
    var totalLoads: Int { counts.withLock { $0.values.reduce(0, +) } }
    var loadManyCalls: Int { manyCalls.load(ordering: .relaxed) }
    func setGate(_ g: Gate?) { gate.withLock { $0 = g } }
    func pass(_ id: Int64, _ item: Item?) async {
        if let g = gate.withLock({ $0 }) { await g(id, item) }
    }
}

/// A repository over the test's own table.
struct ItemRepository: CachedRepository {
    let cache: CacheAside
    let table: String
    let probe: LoadProbe
    var policy: CachePolicy
    var keyspace: String { "item" }

    func load(_ id: Int64, on db: some PGQueryable) async throws -> Item? {
        probe.record(id)
        let item = try await db.query("SELECT id, name, version FROM \(table) WHERE id = $1", [id]).first?.decode(Item.self)
        await probe.pass(id, item)
        return item
    }

    func load(many ids: [Int64], on db: some PGQueryable) async throws -> [Int64: Item] {
        probe.recordMany()
        for id in ids { probe.record(id) }
        let rows = try await db.query("SELECT id, name, version FROM \(table) WHERE id = ANY($1)", [ids])
        var result: [Int64: Item] = [:]
        for item in try rows.decode(Item.self) { result[item.id] = item }
        return result
    }
}

/// A repository keyed by strings, for the key-escaping test.
struct NamedRepository: CachedRepository {
    let cache: CacheAside
    let table: String
    var keyspace: String { "named" }

    struct Named: Codable, Sendable, Equatable {
        var name: String
        var payload: String
    }

    func load(_ id: String, on db: some PGQueryable) async throws -> Named? {
        try await db.query("SELECT name, payload FROM \(table) WHERE name = $1", [id]).first?.decode(Named.self)
    }
}

/// One "process": its own clients and runtime (own single-flight table, breaker and
/// fill announcements subscription), running as a service until ``close()``. Its Redis
/// is the test's backend (``RedisBackend/current``) unless `redisURL` names another.
struct Process: Sendable {
    let postgres: PGClient
    let redis: any RESPClientProtocol
    let cache: CacheAside
    let runner: Task<Void, any Error>

    static func make(
        namespace: String, databaseURL: String? = nil, redisURL: String? = nil,
        redisCommandTimeout: Duration = .seconds(10), policy: CachePolicy = CachePolicy(leaseTTL: testLeaseTTL), slowLeases: Bool = false,
        maxConnections: Int = 8
    ) async throws -> Process {
        // Timeouts far above what a step takes on a loaded machine, so that no test
        // takes the fail-open path by accident; the failure tests set their own.
        var pgConfig = try PGConfiguration(url: try databaseURL ?? TestEnvironment.databaseURL())
        pgConfig.maxConnections = maxConnections
        pgConfig.connectTimeout = .seconds(60)
        pgConfig.acquireTimeout = .seconds(60)
        let redis = try makeRedisClient(url: try redisURL ?? RedisBackend.current.sharedURL()) { redisConfig in
            redisConfig.commandTimeout = redisCommandTimeout
            redisConfig.connectTimeout = min(redisCommandTimeout, .seconds(10))
        }
        let postgres = PGClient(configuration: pgConfig)
        let store = makeStore(redis, channel: "\(namespace):cache-aside:fills")
        let cache = try CacheAside(
            postgres: postgres, store: slowLeases ? SlowLeaseStore(base: store) : store, namespace: namespace,
            defaultPolicy: policy, logger: testLogger)
        let runner = Task { try await cache.run() }
        return Process(postgres: postgres, redis: redis, cache: cache, runner: runner)
    }

    /// Stops the runtime gracefully (pending invalidations delivered, clients closed).
    func close() async {
        await cache.shutdown()
        _ = try? await runner.value
    }
}

/// The cache's store on a client of either kind.
func makeStore(_ redis: some RESPClientProtocol, channel: String) -> any CacheStore {
    RedisCacheStore(redis: redis, channel: channel)
}

/// A process on a slow network, as a proxy that delays one process makes it: its lease
/// requests reach Redis up to 3 ms late, which widens every window between what a
/// reader saw and its lease.
struct SlowLeaseStore: CacheStore {
    let base: any CacheStore

    func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] { try await base.read(keys) }
    func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? { try await base.read(key) }
    func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] {
        try? await Task.sleep(for: .microseconds(Int.random(in: 0...3000)))
        return try await base.lease(requests)
    }
    func markWaited(_ requests: [WaitRequest]) async throws(CacheStoreError) -> [LeaseReply] { try await base.markWaited(requests) }
    func fill(_ requests: [FillRequest]) async throws(CacheStoreError) -> [FillReply] { try await base.fill(requests) }
    func release(_ requests: [WaitRequest]) async throws(CacheStoreError) { try await base.release(requests) }
    func invalidate(_ requests: [InvalidationRequest]) async throws(CacheStoreError) -> [InvalidationReply] {
        try await base.invalidate(requests)
    }
    func listenForFills(
        onReady: @escaping @Sendable () -> Void, deliver: @escaping @Sendable (String) -> Void
    ) async throws(CacheStoreError) {
        try await base.listenForFills(onReady: onReady, deliver: deliver)
    }
    func shutdown() async { await base.shutdown() }
}

/// The tests' lease TTL: far longer than a load takes on a loaded machine, so that no
/// test loses its lease by accident (the tests about expiry expire leases themselves).
let testLeaseTTL: Duration = .seconds(60)

/// The tests' logger: the library logs through it.
let testLogger = Logger(label: "cache-aside-tests")

/// A test's own table and namespace, and helpers to read the raw state of both servers.
/// Its Redis is the test's backend (``RedisBackend/current``): one server or the cluster.
struct Fixture: Sendable {
    let table: String
    let namespace: String
    let admin: PGClient
    let rawRedis: TestRedis

    static func make(rows: Int = 0) async throws -> Fixture {
        let table = TestEnvironment.uniqueName("items")
        let namespace = TestEnvironment.uniqueName(RedisBackend.current == .cluster ? "ns_cluster" : "ns")
        // Generous timeouts: when the whole suite starts at once, a first connection can
        // take seconds on a loaded 2-core machine.
        var adminConfig = try PGConfiguration(url: try TestEnvironment.databaseURL())
        adminConfig.connectTimeout = .seconds(60)
        adminConfig.acquireTimeout = .seconds(60)
        let admin = PGClient(configuration: adminConfig)
        let rawRedis = try TestRedis(url: try RedisBackend.current.sharedURL())
        try await admin.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY, name text NOT NULL, version bigint NOT NULL DEFAULT 1)")
        if rows > 0 {
            try await admin.execute(
                "INSERT INTO \(table) (id, name) SELECT g, 'item ' || g FROM generate_series(1, $1::bigint) g", [Int64(rows)])
        }
        return Fixture(table: table, namespace: namespace, admin: admin, rawRedis: rawRedis)
    }

    func repository(_ process: Process, probe: LoadProbe = LoadProbe(), policy: CachePolicy = CachePolicy(leaseTTL: testLeaseTTL)) -> ItemRepository {
        ItemRepository(cache: process.cache, table: table, probe: probe, policy: policy)
    }

    func row(_ id: Int64) async throws -> Item? {
        try await admin.query("SELECT id, name, version FROM \(table) WHERE id = $1", [id]).first?.decode(Item.self)
    }

    /// The entry cached under `key`, or nil if there is none (no key, a lease, or a
    /// write's tombstone). Throws if the bytes are none of these.
    func cachedItem(_ key: String) async throws -> CacheEntry<Item>? {
        try await entry(key, in: rawRedis)
    }

    /// Every key under the namespace (SCAN, so it works on a shared server; on every
    /// node of a cluster).
    func keys() async throws -> [String] {
        try await rawRedis.keys(matching: "\(namespace):*")
    }

    func close() async {
        _ = try? await admin.execute("DROP TABLE IF EXISTS \(table)")
        if let keys = try? await keys(), !keys.isEmpty { _ = try? await rawRedis.del(keys) }
        await rawRedis.shutdown()
        await admin.shutdown()
    }
}

/// The entry under `key` in `redis`: nil for no key, a lease or a tombstone. Throws if
/// the bytes are none of these (or another schema version's entry).
func entry(_ key: String, in redis: TestRedis, schemaVersion: Int = 1) async throws -> CacheEntry<Item>? {
    try await entry(key, in: redis.client, schemaVersion: schemaVersion)
}

/// The entry under `key` read through a client of either kind (a test's private one).
func entry(_ key: String, in redis: some RESPClientProtocol, schemaVersion: Int = 1) async throws -> CacheEntry<Item>? {
    let bytes = try await redis.get(key)
    switch EntryFormat.classify(bytes) {
    case .nothing, .lease, .tombstone: return nil
    default: break
    }
    guard let answer = try EntryFormat.decode(Item.self, from: bytes, schemaVersion: schemaVersion, codec: JSONValueCodec()) else {
        throw CacheError(kind: .decoding, message: "not an entry of schema version \(schemaVersion): \(bytes.map { String(decoding: $0, as: UTF8.self) } ?? "nil")")
    }
    return answer.map(CacheEntry.present) ?? .absent
}

/// What a cache entry holds, for the tests' assertions.
enum CacheEntry<Value: Sendable & Equatable>: Sendable, Equatable {
    case present(Value)
    case absent
}

/// Whether the bytes are a lease.
func isLease(_ bytes: [UInt8]?) -> Bool {
    if case .lease = EntryFormat.classify(bytes) { return true }
    return false
}

/// Waits until `condition` holds or `timeout` passes; returns whether it held. A
/// condition that throws counts as not holding yet. The default is far above what any
/// wait takes alone: while a storm keeps both cores of a 2-core machine busy, a
/// background retry that takes milliseconds alone has been seen to need over 5 s.
func eventually(timeout: Duration = .seconds(30), _ condition: @Sendable () async throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return (try? await condition()) == true
}

/// A lock-protected value that concurrent test tasks share.
final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { value.withLock { body(&$0) } }
}

/// A counter that concurrent test tasks share.
final class SharedCounter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}
