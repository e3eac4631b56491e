@testable import CacheAside
import CacheAsidePostgres
import CacheAsideRedis
import TestSupport
import Testing

/// The cache on one primary with a replica (ElastiCache's primary endpoint without
/// cluster mode) while the primary fails over: the client's address is the old
/// primary's, which answers writes with `READONLY` until the roles swap back (a DNS
/// name would follow the new primary at the reconnection `READONLY` causes).
@Suite(.serialized) struct PrimaryFailoverTests {
    @Test func aStormThroughTheCacheSurvivesAFailoverAndAFailbackWithNoErrorAndNoStaleEntry() async throws {
        let pair = try await PrivateRedis.start("pair", cluster: false)
        let fixture = try await Fixture.make(rows: 40)
        let raw = try TestRedis(url: pair.url)
        let keyCount: Int64 = 40
        let policy = CachePolicy(ttl: .seconds(60), leaseTTL: testLeaseTTL)
        var processes: [Process] = []
        do {
            for _ in 0..<2 {
                processes.append(try await Process.make(
                    namespace: fixture.namespace, redisURL: pair.url, redisCommandTimeout: .milliseconds(250),
                    policy: policy, maxConnections: 4))
            }
            let repos = processes.map { fixture.repository($0, probe: LoadProbe(), policy: policy) }
            let keys = try (1...keyCount).map { try repos[0].cacheKey(for: $0).entryKey }
            let committed = Shared<[[Int64: Int64]]>(Array(repeating: [:], count: repos.count))
            let violations = Shared<[String]>([])
            let reads = SharedCounter(), writes = SharedCounter(), refusedWindowWrites = SharedCounter()
            let phase = Shared(0)  // 0 before, 1 failed over, 2 failed back
            let table = fixture.table
            let deadline = ContinuousClock.now + .seconds(240)
            let done: @Sendable () -> Bool = {
                (phase.withLock { $0 } == 3) || ContinuousClock.now >= deadline
            }
            await HeavyTests.oneAtATime { await withTaskGroup(of: Void.self) { group in
                for r in 0..<6 {
                    group.addTask {
                        let mine = r % repos.count
                        while !done() {
                            let id = Int64.random(in: 1...keyCount)
                            let floor = committed.withLock { $0[mine][id] ?? 1 }
                            do {
                                guard let item = try await repos[mine].find(id) else {
                                    violations.withLock { $0.append("row \(id) read as missing") }
                                    continue
                                }
                                reads.add()
                                if item.version < floor {
                                    violations.withLock { $0.append("row \(id): read v\(item.version) after v\(floor) was written by this process") }
                                }
                            } catch {
                                violations.withLock { $0.append("read failed: \(error)") }
                            }
                        }
                    }
                }
                for w in 0..<2 {
                    group.addTask {
                        let mine = w % repos.count
                        while !done() {
                            let id = Int64.random(in: 1...keyCount)
                            do {
                                let version = try await repos[mine].update(id) { tx in
                                    try await tx.query(
                                        "UPDATE \(table) SET version = version + 1 WHERE id = $1 RETURNING version", [id]
                                    ).first?.decode(Int64.self, column: "version") ?? 0
                                }
                                committed.withLock { $0[mine][id] = max($0[mine][id] ?? 1, version) }
                                writes.add()
                                if phase.withLock({ $0 }) == 1 { refusedWindowWrites.add() }
                            } catch {
                                violations.withLock { $0.append("write failed: \(error)") }
                            }
                            await Task.yield()
                        }
                    }
                }
                group.addTask {
                    func progress(_ n: Int) async {
                        let goal = writes.count + n
                        while writes.count < goal && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
                    }
                    do {
                        await progress(50)
                        try await pair.devServices("failover", "repl-2")
                        phase.withLock { $0 = 1 }
                        await progress(50)
                        try await pair.devServices("failover", "repl-1")
                        phase.withLock { $0 = 2 }
                        await progress(50)
                    } catch {
                        violations.withLock { $0.append("failover: \(error)") }
                    }
                    phase.withLock { $0 = 3 }
                }
            } }
            let running = processes
            #expect(await eventually(timeout: .seconds(60)) { running.allSatisfy { $0.cache.pendingInvalidations == 0 } },
                    "every invalidation refused by the demoted primary landed after the failback")
            #expect(await eventually(timeout: .seconds(60)) {
                for key in keys where isLease(try await raw.get(key)) { return false }
                return true
            }, "every lease was filled, refused or expired")
            let problems = violations.withLock { $0 }
            #expect(problems.isEmpty, "\(problems.count) errors or violations reached callers: \(problems.prefix(10))")
            #expect(refusedWindowWrites.count > 0, "writes went on while the client's node was a replica")
            var stale: [String] = []
            for id in 1...keyCount {
                let bytes = try await raw.get(keys[Int(id - 1)])
                guard case .value(let version, _) = EntryFormat.classify(bytes) else { continue }
                let cached = try EntryFormat.decode(Item.self, from: bytes, schemaVersion: version, codec: JSONValueCodec())
                let row = try await fixture.row(id)
                if cached != .some(row) { stale.append("\(id): cached v\(cached??.version ?? -1), row v\(row?.version ?? -1)") }
            }
            #expect(stale.isEmpty, "stale entries after the failback: \(stale)")
            let stats = processes.map { $0.cache.statistics(keyspace: "item") }
            print("primary failover storm: \(reads.count) reads, \(writes.count) writes (\(refusedWindowWrites.count) while the client's node was a replica), \(problems.count) errors, \(stale.count) stale; \(stats.map(\.description))")
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await raw.shutdown()
        await fixture.close()
        await pair.down()
    }
}
