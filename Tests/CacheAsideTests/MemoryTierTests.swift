@testable import CacheAside
import CacheAsideMemory
import CacheAsidePostgres
import CacheAsideRedis
import Foundation
import Synchronization
import TestSupport
import Testing

/// The in-process tier against real PostgreSQL and Redis, with several "processes"
/// (each its own clients, runtime and dedicated invalidation connection) sharing a
/// namespace.
@Suite struct MemoryTierTests {
    /// The tests' memory tier: a long TTL of its own, so that only coherence removes
    /// entries while a test runs.
    static let policy = CachePolicy(
        leaseTTL: testLeaseTTL, memory: MemoryTierPolicy(maximumEntries: 1000, maximumBytes: 1 << 20, ttl: .seconds(60)))
    /// The default staleness bound, which the README states.
    static let bound = MemoryTierCoherence().maximumStaleness

    static let modes: [MemoryTierCoherence.Invalidation] = [.tracking, .publish()]

    @Test(arguments: modes)
    func aWriteInOneProcessRemovesTheEntryFromTheOthersMemory(mode: MemoryTierCoherence.Invalidation) async throws {
        let fixture = try await Fixture.make(rows: 2)
        var processes: [MemoryProcess] = []
        do {
            for _ in 0..<3 { processes.append(try await MemoryProcess.make(fixture, mode: mode)) }
            let repos = processes.map { $0.repository(fixture) }
            let key = try repos[0].cacheKey(for: 1).entryKey
            for (process, repo) in zip(processes, repos) {
                #expect(await process.servesFromMemory(repo, 1), "memory serves once the channel is up")
                #expect(try process.tier().holds(key))
            }
            let table = fixture.table
            try await repos[0].update(1) { tx in
                try await tx.execute("UPDATE \(table) SET name = 'changed', version = version + 1 WHERE id = 1")
            }
            // This process's memory forgot the key before the write returned.
            #expect(try !processes[0].tier().holds(key))
            for process in processes.dropFirst() {
                let invalidated = await eventually(timeout: .seconds(30)) { try !process.tier().holds(key) }
                #expect(invalidated, "the write's invalidation reaches every other process's memory")
                #expect(process.cache.statistics().memoryInvalidations > 0)
            }
            for repo in repos {
                #expect(try await repo.find(1)?.version == 2)
            }
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await fixture.close()
    }

    @Test(arguments: modes)
    func anInvalidationDuringTheReadThatWouldFillMemoryWins(mode: MemoryTierCoherence.Invalidation) async throws {
        let fixture = try await Fixture.make(rows: 2)
        let gate = ReadGate()
        var processes: [MemoryProcess] = []
        do {
            let writer = try await MemoryProcess.make(fixture, mode: mode)
            processes.append(writer)
            let reader = try await MemoryProcess.make(fixture, mode: mode, gate: gate)
            processes.append(reader)
            let writerRepo = writer.repository(fixture)
            let readerRepo = reader.repository(fixture)
            let key = try writerRepo.cacheKey(for: 1).entryKey
            // Redis holds row 1; the reader's memory is trusted (shown on row 2) and
            // holds nothing for row 1.
            _ = try await writerRepo.find(1)
            // (The fill may be sent off the read's path.)
            #expect(await eventually(timeout: .seconds(30)) {
                try await fixture.cachedItem(key) == .present(Item(id: 1, name: "item 1", version: 1))
            })
            #expect(await reader.servesFromMemory(readerRepo, 2))
            let tier = try reader.itemTier()
            #expect(await reader.caughtUp(), "every invalidation sent so far has been applied")
            #expect(tier.store.peek(key) == nil)

            // The reader's GET of row 1 returns the old entry and is held there.
            gate.arm(key)
            let read = Task { try await readerRepo.find(1) }
            #expect(await eventually(timeout: .seconds(30)) { gate.reached })
            let table = fixture.table
            try await writerRepo.update(1) { tx in
                try await tx.execute("UPDATE \(table) SET name = 'changed', version = version + 1 WHERE id = 1")
            }
            // The write's invalidation reached the reader before its GET returns.
            #expect(await reader.caughtUp())
            gate.release()
            let seen = try await read.value
            #expect(seen?.version == 1, "the read started before the write: the old row is a correct answer")
            if let held = tier.store.peek(key) {
                #expect(held.value?.version != 1, "the old row must not stay in memory")
            }
            // Every later read sees the new row, and memory ends up holding it.
            for _ in 0..<3 {
                #expect(try await readerRepo.find(1)?.version == 2)
            }
            #expect(await eventually(timeout: .seconds(30)) {
                (try await readerRepo.find(1))?.version == 2 && tier.store.peek(key)?.value?.version == 2
            })
        } catch {
            Issue.record(error)
        }
        gate.release()
        for process in processes { await process.close() }
        await fixture.close()
    }

    @Test(arguments: modes)
    func killingTheInvalidationConnectionFlushesMemoryAndNoReadExceedsTheBound(
        mode: MemoryTierCoherence.Invalidation
    ) async throws {
        let fixture = try await Fixture.make(rows: 2)
        var processes: [MemoryProcess] = []
        do {
            let writer = try await MemoryProcess.make(fixture, mode: mode)
            processes.append(writer)
            let reader = try await MemoryProcess.make(fixture, mode: mode)
            processes.append(reader)
            let writerRepo = writer.repository(fixture)
            let readerRepo = reader.repository(fixture)
            let key = try writerRepo.cacheKey(for: 1).entryKey
            #expect(await reader.servesFromMemory(readerRepo, 1))
            let flushesBefore = reader.cache.statistics().memoryFlushes

            // Kill the reader's invalidation connection, then write at once: the
            // invalidation may be sent while the reader has no channel.
            let killed = try await fixture.rawRedis.client.send(
                "CLIENT", "KILL", "ID", String(try await connectionID(named: reader.cache.coherence.clientName, in: fixture.rawRedis.client)))
            #expect(killed == .integer(1))
            let table = fixture.table
            try await writerRepo.update(1) { tx in
                try await tx.execute("UPDATE \(table) SET name = 'changed', version = version + 1 WHERE id = 1")
            }
            let written = ContinuousClock.now
            #expect(await eventually(timeout: .seconds(30)) { reader.cache.statistics().memoryFlushes > flushesBefore },
                    "the loss of the channel flushes memory")
            // Read until memory serves row 1 again; no read that starts later than the
            // bound after the write returned may see the old row.
            let late = Shared<[Int64]>([])
            let servedAgain = await eventually(timeout: .seconds(60)) {
                let start = ContinuousClock.now
                let before = reader.cache.statistics().memoryHits
                let version = try await readerRepo.find(1)?.version ?? 0
                if start > written + Self.bound, version != 2 { late.withLock { $0.append(version) } }
                return version == 2 && reader.cache.statistics().memoryHits > before
            }
            #expect(servedAgain, "memory serves again once the channel is back")
            #expect(late.withLock { $0 }.isEmpty, "reads later than the bound saw an old row")
            #expect(try reader.tier().holds(key))
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await fixture.close()
    }

    @Test(arguments: modes)
    func aStormAcrossProcessesEndsWithNoStaleEntryAndNoReadOlderThanTheBound(
        mode: MemoryTierCoherence.Invalidation
    ) async throws {
        let ids: [Int64] = Array(1...6)
        let fixture = try await Fixture.make(rows: ids.count)
        var processes: [MemoryProcess] = []
        do {
            for _ in 0..<3 { processes.append(try await MemoryProcess.make(fixture, mode: mode)) }
            for process in processes {
                #expect(await process.servesFromMemory(process.repository(fixture), 1))
            }
            // Each write's version and when it returned; each read's start and version.
            let writes = Shared<[(id: Int64, version: Int64, returned: ContinuousClock.Instant)]>([])
            let reads = Shared<[(id: Int64, version: Int64, started: ContinuousClock.Instant)]>([])
            let writersDone = SharedCounter()
            let table = fixture.table
            let processCount = processes.count
            try await withThrowingTaskGroup(of: Void.self) { group in
                for process in processes {
                    let repo = process.repository(fixture)
                    group.addTask {
                        for n in 0..<25 {
                            let id = ids[n % ids.count]
                            let version: Int64 = try await repo.update(id) { tx in
                                try await tx.query(
                                    "UPDATE \(table) SET version = version + 1 WHERE id = $1 RETURNING version", [id]
                                ).first!.decode(Int64.self)
                            }
                            let now = ContinuousClock.now
                            writes.withLock { $0.append((id, version, now)) }
                        }
                        writersDone.add()
                    }
                    for _ in 0..<2 {
                        group.addTask {
                            var n = 0
                            while writersDone.count < processCount {
                                let id = ids[n % ids.count]
                                n += 1
                                let started = ContinuousClock.now
                                let version = try await repo.find(id)?.version ?? 0
                                reads.withLock { $0.append((id, version, started)) }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            // No read returned a row older than one whose write returned more than
            // the bound before the read started.
            let allWrites = writes.withLock { $0 }
            let allReads = reads.withLock { $0 }
            var tooOld = 0
            for read in allReads {
                let newest = allWrites.filter { $0.id == read.id && $0.returned + Self.bound < read.started }.map(\.version).max() ?? 0
                if read.version < newest { tooOld += 1 }
            }
            #expect(allWrites.count == 75)
            #expect(!allReads.isEmpty)
            #expect(tooOld == 0, "\(tooOld) of \(allReads.count) reads saw a row older than the bound allows")
            let memoryHits = processes.map { $0.cache.statistics().memoryHits }.reduce(0, +)
            #expect(memoryHits > 0)

            // Once quiet, no memory and no Redis entry holds anything but the rows.
            var rows: [Int64: Item] = [:]
            for id in ids { rows[id] = try await fixture.row(id) }
            let expected = rows
            let keys = try ids.map { try processes[0].repository(fixture).cacheKey(for: $0).entryKey }
            let all = processes
            let coherent = await eventually(timeout: .seconds(30)) {
                for process in all {
                    let tier = try process.itemTier()
                    for (id, key) in zip(ids, keys) {
                        if let held = tier.store.peek(key), held.value != expected[id] { return false }
                    }
                }
                for (id, key) in zip(ids, keys) {
                    if let cached = try await fixture.cachedItem(key), cached != .present(expected[id]!) { return false }
                }
                return true
            }
            #expect(coherent, "a stale entry stayed in a memory or in Redis")
            for process in processes {
                let repo = process.repository(fixture)
                for id in ids { #expect(try await repo.find(id) == expected[id]) }
            }
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await fixture.close()
    }

    @Test func findManyServesFromMemoryAndSeesAnotherProcesssWrite() async throws {
        let fixture = try await Fixture.make(rows: 4)
        var processes: [MemoryProcess] = []
        do {
            let writer = try await MemoryProcess.make(fixture, mode: .tracking)
            processes.append(writer)
            let reader = try await MemoryProcess.make(fixture, mode: .tracking)
            processes.append(reader)
            let readerRepo = reader.repository(fixture)
            let ids: [Int64] = [1, 2, 3, 4, 99]
            // Until one find(many:) is answered by memory for every id (99 as absent).
            let allFromMemory = await eventually(timeout: .seconds(60)) {
                let before = reader.cache.statistics().memoryHits
                let found = try await readerRepo.find(many: ids)
                return found.count == 4 && reader.cache.statistics().memoryHits - before == ids.count
            }
            #expect(allFromMemory)
            let table = fixture.table
            try await writer.repository(fixture).update(3) { tx in
                try await tx.execute("UPDATE \(table) SET version = version + 1 WHERE id = 3")
            }
            let key = try readerRepo.cacheKey(for: 3).entryKey
            #expect(await eventually(timeout: .seconds(30)) { try !reader.tier().holds(key) })
            let found = try await readerRepo.find(many: ids)
            #expect(found[3]?.version == 2)
            #expect(found[1]?.version == 1 && found[99] == nil && found.count == 4)
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await fixture.close()
    }

    @Test func aFullTierEvictsAndCountsIt() async throws {
        let fixture = try await Fixture.make(rows: 40)
        let small = CachePolicy(leaseTTL: testLeaseTTL, memory: MemoryTierPolicy(maximumEntries: 8, ttl: .seconds(60)))
        let process = try await MemoryProcess.make(fixture, mode: .tracking)
        do {
            let repo = ItemRepository(cache: process.cache, table: fixture.table, probe: LoadProbe(), policy: small)
            #expect(await process.servesFromMemory(repo, 1))
            let ids = Array(Int64(1)...40)
            _ = try await repo.find(many: ids)  // fills Redis
            let evicted = await eventually(timeout: .seconds(30)) {
                _ = try await repo.find(many: ids)  // Redis hits fill memory
                return process.cache.statistics().memoryEvictions > 0
            }
            #expect(evicted)
            let statistics = process.cache.statistics()
            #expect(statistics.memoryEntries <= 8)
            #expect(statistics.memoryEntries > 0)
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func ownWritesPurgeMemoryBeforeTheyReturnEvenWithoutTheChannel() async throws {
        // No subscriber: memory never serves, but a write still purges it, and reads
        // go to Redis.
        let fixture = try await Fixture.make(rows: 1)
        let process = try await Process.make(namespace: fixture.namespace, policy: Self.policy)
        do {
            let repo = fixture.repository(process, policy: Self.policy)
            #expect(try await repo.find(1)?.version == 1)
            #expect(try await repo.find(1)?.version == 1)
            #expect(process.cache.statistics().memoryHits == 0, "memory without a channel serves nothing")
            #expect(process.cache.statistics().memoryMisses == 2)
            let table = fixture.table
            try await repo.update(1) { tx in try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = 1") }
            #expect(try await repo.find(1)?.version == 2)
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }
}

// MARK: - Helpers

/// A "process" whose repositories have a memory tier, kept coherent through its own
/// dedicated connection.
struct MemoryProcess: Sendable {
    let postgres: PGClient
    let redis: RESPClient
    let cache: CacheAside
    let runner: Task<Void, any Error>

    static func make(_ fixture: Fixture, mode: MemoryTierCoherence.Invalidation, gate: ReadGate? = nil) async throws -> MemoryProcess {
        var pgConfig = try PGConfiguration(url: try TestEnvironment.databaseURL())
        pgConfig.connectTimeout = .seconds(60)
        pgConfig.acquireTimeout = .seconds(60)
        var redisConfig = try RESPConfiguration(url: try TestEnvironment.redisURL())
        redisConfig.commandTimeout = .seconds(10)
        redisConfig.connectTimeout = .seconds(10)
        let postgres = PGClient(configuration: pgConfig)
        let redis = try RESPClient(configuration: redisConfig)
        let base = RedisCacheStore(redis: redis, channel: "\(fixture.namespace):cache-aside:fills")
        let cache = try CacheAside(
            postgres: postgres, store: gate.map { GatedReadStore(base: base, gate: $0) } ?? base, namespace: fixture.namespace,
            defaultPolicy: MemoryTierTests.policy, memoryCoherence: MemoryTierCoherence(invalidation: mode), subscriber: redis,
            logger: testLogger)
        let runner = Task { try await cache.run() }
        return MemoryProcess(postgres: postgres, redis: redis, cache: cache, runner: runner)
    }

    func repository(_ fixture: Fixture) -> ItemRepository {
        ItemRepository(cache: cache, table: fixture.table, probe: LoadProbe(), policy: MemoryTierTests.policy)
    }

    func tier() throws -> MemoryTierBase {
        try #require(cache.memoryTier(keyspace: "item"))
    }

    func itemTier() throws -> MemoryTier<Item> {
        try #require(cache.memoryTier(keyspace: "item") as? MemoryTier<Item>)
    }

    /// Reads `id` until a read is answered by memory (the channel is up and trusted).
    func servesFromMemory(_ repo: ItemRepository, _ id: Int64) async -> Bool {
        await eventually(timeout: .seconds(60)) {
            let before = cache.statistics().memoryHits
            _ = try await repo.find(id)
            return cache.statistics().memoryHits > before
        }
    }

    /// Waits until a `PING` sent after now was answered on the dedicated connection:
    /// every invalidation Redis sent before now has then been applied.
    func caughtUp() async -> Bool {
        guard let tier = try? itemTier() else { return false }
        let now = tier.store.clock.now()
        return await eventually(timeout: .seconds(30)) {
            tier.store.trustDeadline > now + MemoryTierTests.bound
        }
    }

    func close() async {
        await cache.shutdown()
        _ = try? await runner.value
    }
}

/// The id of the client connection named `name` (`CLIENT LIST`).
func connectionID(named name: String, in redis: any RESPClientProtocol) async throws -> Int {
    let found = Shared<Int?>(nil)
    _ = await eventually(timeout: .seconds(30)) {
        let reply = try await redis.send("CLIENT", "LIST")
        guard case .bulkString(let bytes) = reply else { return false }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.contains(where: { $0 == "name=\(name)" }),
                  let id = fields.first(where: { $0.hasPrefix("id=") }).flatMap({ Int($0.dropFirst(3)) }) else { continue }
            found.withLock { $0 = id }
            return true
        }
        return false
    }
    return try #require(found.withLock { $0 })
}

/// Holds the first single-key read of an armed key after Redis answered it, until
/// released.
final class ReadGate: Sendable {
    private struct State {
        var key: String?
        var reached = false
        var released = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    func arm(_ key: String) { state.withLock { $0.key = key } }
    var reached: Bool { state.withLock { $0.reached } }

    func release() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { s in
            s.released = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func pass(_ key: String) async {
        let held = state.withLock { s -> Bool in
            guard s.key == key, !s.reached else { return false }
            s.reached = true
            return true
        }
        guard held else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resume = state.withLock { s -> Bool in
                if s.released { return true }
                s.waiter = continuation
                return false
            }
            if resume { continuation.resume() }
        }
    }
}

/// A Redis store whose single-key reads pass a ``ReadGate`` after Redis answered.
struct GatedReadStore: CacheStore {
    let base: RedisCacheStore<RESPClient>
    let gate: ReadGate

    func read(_ keys: [String]) async throws(CacheStoreError) -> [[UInt8]?] { try await base.read(keys) }
    func read(_ key: String) async throws(CacheStoreError) -> [UInt8]? {
        let bytes = try await base.read(key)
        await gate.pass(key)
        return bytes
    }
    func lease(_ requests: [LeaseRequest]) async throws(CacheStoreError) -> [LeaseReply] { try await base.lease(requests) }
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
