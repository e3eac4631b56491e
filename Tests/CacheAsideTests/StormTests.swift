@testable import CacheAside
import Foundation
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// Readers and writers on few keys through several processes (independent client
/// sets, each with its own single-flight table, breaker and subscription), with an
/// adversary: no read returns a version older than a write that returned before the
/// read began, and no stale entry is left.
///
/// One storm at a time, each process with a small pool: storms in parallel would hold
/// enough PostgreSQL connections to starve the other tests.
@Suite(.serialized) struct StormTests {
    enum Adversary: Sendable {
        case none
        /// Deletes every tombstone it sees, as eviction, FLUSHDB or an operator may.
        case deletesTombstones
        /// Writes filler keys so that a small `maxmemory` evicts keys at random.
        case evictsAtRandom
    }

    struct Storm: Sendable {
        var mode: CachePolicy.LeaseMode
        /// One process per element, on that schema version.
        var schemaVersions: [Int] = [1, 1]
        var adversary: Adversary = .none
        var redisURL: String?
        var keyCount: Int64 = 50
        var targetReads = 2000
        var targetWrites = 200
    }

    @Test(.onStandaloneAndCluster, arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aStormLeavesNoStaleEntryAndNoReadGoesBackInTime(mode: CachePolicy.LeaseMode) async throws {
        try await run(Storm(mode: mode))
    }

    /// Scenario 1 at scale: every tombstone is deleted as soon as it is seen.
    @Test(.onStandaloneAndCluster, arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aStormSurvivesAnAdversaryDeletingEveryTombstone(mode: CachePolicy.LeaseMode) async throws {
        try await run(Storm(mode: mode, schemaVersions: [1, 1, 1], adversary: .deletesTombstones, keyCount: 8))
    }

    /// Scenario 2 at scale: a rolling deploy, one process on the previous version.
    @Test(.onStandaloneAndCluster, arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aStormWithOneProcessOnThePreviousSchemaVersion(mode: CachePolicy.LeaseMode) async throws {
        try await run(Storm(mode: mode, schemaVersions: [1, 2, 2]))
    }

    /// Scenario 1 under real eviction: a private Redis with a small `maxmemory` and
    /// `allkeys-random`, kept full by filler keys.
    @Test(arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aStormUnderRandomEviction(mode: CachePolicy.LeaseMode) async throws {
        let instance = TestEnvironment.uniqueName("evict")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let admin = try RESPClient(configuration: try RESPConfiguration(url: urls.redisURL))
        do {
            let used = try await usedMemory(admin)
            _ = try await admin.send("CONFIG", "SET", "maxmemory-policy", "allkeys-random")
            _ = try await admin.send("CONFIG", "SET", "maxmemory", String(used + 1_000_000))
            // Fill it up until eviction has begun: from then on every write evicts.
            let filler = [UInt8](repeating: 0x78, count: 16_384)
            var n = 0
            while try await stat("evicted_keys", admin) == 0 {
                n += 1
                _ = try await admin.set("prefill:\(n)", to: filler, expiration: .seconds(300))
            }
            try await run(Storm(mode: mode, schemaVersions: [1, 1], adversary: .evictsAtRandom, redisURL: urls.redisURL, keyCount: 8))
            let evicted = try await stat("evicted_keys", admin)
            #expect(evicted > 1, "eviction went on during the storm")
            print("eviction storm (\(mode)): \(evicted) keys evicted")
            #expect(evicted > 0, "the storm ran under real eviction")
        } catch {
            Issue.record(error)
        }
        await admin.shutdown()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }

    // MARK: - The storm

    func run(_ storm: Storm) async throws {
        let fixture = try await Fixture.make(rows: Int(storm.keyCount))
        // The test's backend (one Redis, or the cluster) unless the storm brings its own.
        let redisURL = try storm.redisURL ?? RedisBackend.current.sharedURL()
        let raw = try TestRedis(url: redisURL)
        let policy = CachePolicy(ttl: .seconds(60), leaseTTL: testLeaseTTL, leaseMode: storm.mode)
        var processes: [Process] = []
        for n in storm.schemaVersions.indices {
            // With an adversary, the first process is on a slow network.
            processes.append(try await Process.make(
                namespace: fixture.namespace, redisURL: redisURL, policy: policy, slowLeases: storm.adversary != .none && n == 0,
                maxConnections: 3))
        }
        let repos = zip(processes, storm.schemaVersions).map { process, version in
            VersionedRepository(base: fixture.repository(process, policy: policy), schemaVersion: version)
        }
        let keyCount = storm.keyCount
        let keys = try (1...keyCount).map { try repos[0].cacheKey(for: $0).entryKey }
        let committed = Shared<[Int64: Int64]>([:])  // versions whose write has returned
        let violations = Shared<[String]>([])
        let reads = SharedCounter(), writes = SharedCounter(), deleted = SharedCounter()
        let table = fixture.table
        // The storm runs until it has done this much, however long that takes on a
        // loaded machine; the deadline only keeps a broken build from hanging.
        let deadline = ContinuousClock.now + .seconds(180)
        let done: @Sendable () -> Bool = {
            (reads.count >= storm.targetReads && writes.count >= storm.targetWrites) || ContinuousClock.now >= deadline
        }

        await HeavyTests.oneAtATime { await withTaskGroup(of: Void.self) { group in
            for r in 0..<16 {
                group.addTask {
                    let repo = repos[r % repos.count]
                    while !done() {
                        let id = Int64.random(in: 1...keyCount)
                        let floor = committed.withLock { $0[id] ?? 1 }
                        do {
                            guard let item = try await repo.find(id) else {
                                violations.withLock { $0.append("row \(id) read as missing") }
                                continue
                            }
                            reads.add()
                            if item.version < floor {
                                violations.withLock { $0.append("row \(id): read v\(item.version) after v\(floor) was written (schema \(repo.schemaVersion))") }
                            }
                        } catch {
                            violations.withLock { $0.append("read failed: \(error)") }
                        }
                    }
                }
            }
            for w in 0..<4 {
                group.addTask {
                    let repo = repos[w % repos.count]
                    while writes.count < storm.targetWrites && ContinuousClock.now < deadline {
                        let id = Int64.random(in: 1...keyCount)
                        do {
                            let version = try await repo.update(id) { tx in
                                try await tx.query(
                                    "UPDATE \(table) SET version = version + 1 WHERE id = $1 RETURNING version", [id]
                                ).first?.decode(Int64.self, column: "version") ?? 0
                            }
                            committed.withLock { $0[id] = max($0[id] ?? 1, version) }
                            writes.add()
                        } catch {
                            violations.withLock { $0.append("write failed: \(error)") }
                        }
                        await Task.yield()
                    }
                }
            }
            switch storm.adversary {
            case .none:
                break
            case .deletesTombstones:
                group.addTask {
                    while !done() {
                        guard let values = try? await raw.mget(keys) else { continue }
                        let tombstones = keys.indices.filter { i in
                            if case .tombstone = EntryFormat.classify(values[i]) { return true }
                            return false
                        }.map { keys[$0] }
                        if !tombstones.isEmpty, let n = try? await raw.del(tombstones) { deleted.add(n) }
                    }
                }
            case .evictsAtRandom:
                group.addTask {
                    let filler = [UInt8](repeating: 0x78, count: 8192)
                    var n = 0
                    while !done() {
                        n += 1
                        do {
                            _ = try await raw.set("\(fixture.namespace)-filler:\(n)", to: filler, expiration: .seconds(120))
                            deleted.add()
                        } catch {
                            violations.withLock { $0.append("filler write failed: \(error)") }
                            return
                        }
                    }
                }
            }
        } }
        // Fills sent off the callers' paths land (or are refused) before their lease
        // runs out: wait until no key holds a lease any more.
        #expect(await eventually(timeout: .seconds(30)) {
            for key in keys where isLease(try await raw.get(key)) { return false }
            return true
        }, "every lease was filled, refused or expired")

        let problems = violations.withLock { $0 }
        #expect(problems.isEmpty, "\(problems.count) violations: \(problems.prefix(10))")
        #expect(reads.count >= storm.targetReads, "the storm ran out of time after \(reads.count) reads")
        #expect(writes.count >= storm.targetWrites, "the storm ran out of time after \(writes.count) writes")
        var stale: [String] = []
        var cachedCount = 0
        for id in 1...keyCount {
            let bytes = try await raw.get(keys[Int(id - 1)])
            guard case .value(let version, _) = EntryFormat.classify(bytes) else {
                if case .absent = EntryFormat.classify(bytes) { stale.append("\(id): cached as absent") }
                continue
            }
            cachedCount += 1
            let cached = try EntryFormat.decode(Item.self, from: bytes, schemaVersion: version, codec: JSONValueCodec())
            let row = try await fixture.row(id)
            if cached != .some(row) { stale.append("\(id): cached v\(cached??.version ?? -1), row v\(row?.version ?? -1)") }
        }
        #expect(stale.isEmpty, "stale entries: \(stale)")
        if storm.adversary == .deletesTombstones { #expect(deleted.count > 0, "the adversary deleted tombstones") }
        let stats = processes.map { $0.cache.statistics(keyspace: "item") }
        print("storm on \(storm.redisURL == nil ? RedisBackend.current.description : "a private Redis") (\(storm.mode) leases, schema versions \(storm.schemaVersions), \(storm.adversary)): \(reads.count) reads, \(writes.count) writes, \(deleted.count) keys deleted or filler keys written; \(cachedCount) of \(keyCount) keys cached at the end; \(stats.map(\.description))")

        // Quiet now: one read of every key fills it, with its row as it is.
        if storm.adversary != .evictsAtRandom {
            for id in 1...keyCount { _ = try await repos[0].find(id) }
            #expect(await eventually {
                for id in 1...keyCount {
                    let cached = try EntryFormat.decode(
                        Item.self, from: try await raw.get(keys[Int(id - 1)]), schemaVersion: repos[0].schemaVersion,
                        codec: JSONValueCodec())
                    guard cached == .some(try await fixture.row(id)) else { return false }
                }
                return true
            }, "after the storm, every key is cached with its current row")
        }
        for p in processes { await p.close() }
        if storm.redisURL != nil { _ = try? await raw.client.send("FLUSHDB") }
        await raw.shutdown()
        await fixture.close()
    }

    func usedMemory(_ redis: RESPClient) async throws -> Int {
        let value = try await stat("used_memory", redis, section: "memory")
        return value
    }

    func stat(_ name: String, _ redis: RESPClient, section: String = "stats") async throws -> Int {
        let info = try await redis.send("INFO", section).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix(name + ":") {
            return Int(line.dropFirst(name.count + 1)) ?? 0
        }
        return 0
    }
}

extension StormTests.Adversary: Equatable {}

/// The tests' item repository on a chosen schema version.
struct VersionedRepository: CachedRepository {
    let base: ItemRepository
    let schemaVersion: Int
    var cache: CacheAside { base.cache }
    var keyspace: String { base.keyspace }
    var policy: CachePolicy { base.policy }

    func load(_ id: Int64, on db: some PGQueryable) async throws -> Item? { try await base.load(id, on: db) }
    func load(many ids: [Int64], on db: some PGQueryable) async throws -> [Int64: Item] {
        try await base.load(many: ids, on: db)
    }
}
