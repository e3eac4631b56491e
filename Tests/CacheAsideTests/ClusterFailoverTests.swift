@testable import CacheAside
import CacheAsidePostgres
import CacheAsideRedis
import TestSupport
import Testing

/// The cache on a private 6-node Redis Cluster while the cluster changes under it: a
/// primary killed (its replica takes over). Fail-open must absorb every Redis failure,
/// and no entry may be stale afterwards.
@Suite(.serialized) struct ClusterFailoverTests {
    @Test func aStormThroughTheCacheSurvivesAKilledPrimaryWithNoErrorAndNoStaleEntry() async throws {
        let cluster = try await PrivateRedis.start("failover", cluster: true)
        let fixture = try await Fixture.make(rows: 80)
        let raw = try TestRedis(url: cluster.url)
        let keyCount: Int64 = 60
        // Ids above keyCount are only read by the probe that times the recovery.
        let policy = CachePolicy(ttl: .seconds(60), leaseTTL: testLeaseTTL)
        var processes: [Process] = []
        do {
            for _ in 0..<2 {
                // A cache's command timeout (250 ms): a read waits at most that long for
                // a node that stopped answering before it goes to the database.
                processes.append(try await Process.make(
                    namespace: fixture.namespace, redisURL: cluster.url, redisCommandTimeout: .milliseconds(250),
                    policy: policy, maxConnections: 4))
            }
            let repos = processes.map { fixture.repository($0, probe: LoadProbe(), policy: policy) }
            let keys = try (1...keyCount).map { try repos[0].cacheKey(for: $0).entryKey }
            let clusterClient = try #require(processes[0].redis as? RESPClusterClient)
            let clientStarted = ContinuousClock.now

            // The victim: the primary that serves the most of the storm's keys.
            _ = try await repos[0].find(1)
            var owners: [String: Int] = [:]
            for key in keys { if let owner = clusterClient.primary(forKey: key) { owners[owner, default: 0] += 1 } }
            let victimAddress = try #require(owners.max { $0.value < $1.value }?.key)
            let nodes = try await cluster.nodes()
            let victim = try #require(nodes.first { $0.address == victimAddress && $0.role == "primary" }, "\(nodes)")
            // The probe's id: one that lives on the victim, read by nobody else.
            let probeRepo = fixture.repository(processes[1], probe: LoadProbe(), policy: policy)
            var probeID: Int64?
            for id in (keyCount + 1)...80 where clusterClient.primary(forKey: try probeRepo.cacheKey(for: id).entryKey) == victimAddress {
                probeID = id
                break
            }
            let probe = try #require(probeID, "an id of 61...80 on \(victimAddress)")
            _ = try await probeRepo.find(probe)
            #expect(await eventually(timeout: .seconds(30)) {
                let before = probeRepo.probe.loads(of: probe)
                _ = try await probeRepo.find(probe)
                return probeRepo.probe.loads(of: probe) == before
            }, "the probe's id is a hit before the kill")

            // Versions whose write has returned, by the process that wrote them. A reader
            // never reads behind a write of its own process (a pending invalidation makes
            // it skip the entry). Another process may, while the write's invalidation
            // waits for the failover to land (the documented bound on a stale read):
            // counted and reported, not a failure.
            let committed = Shared<[[Int64: Int64]]>(Array(repeating: [:], count: repos.count))
            let behindOtherWrites = SharedCounter()
            let violations = Shared<[String]>([])
            let reads = SharedCounter(), writes = SharedCounter()
            let killedAt = Shared<ContinuousClock.Instant?>(nil)
            let hitsResumedAfter = Shared<Duration?>(nil)
            let table = fixture.table
            let deadline = ContinuousClock.now + .seconds(240)
            let targetReads = 3000, targetWrites = 300
            // Runs until it has done this much and the kill is behind it (hits resumed),
            // however long that takes on a loaded machine; the deadline only keeps a
            // broken build from hanging.
            let done: @Sendable () -> Bool = {
                (reads.count >= targetReads && writes.count >= targetWrites && hitsResumedAfter.withLock { $0 } != nil)
                    || ContinuousClock.now >= deadline
            }

            await HeavyTests.oneAtATime { await withTaskGroup(of: Void.self) { group in
                for r in 0..<8 {
                    group.addTask {
                        let mine = r % repos.count
                        let repo = repos[mine]
                        while !done() {
                            let id = Int64.random(in: 1...keyCount)
                            let (floor, othersFloor) = committed.withLock { c in
                                (c[mine][id] ?? 1, c.indices.filter { $0 != mine }.map { c[$0][id] ?? 1 }.max() ?? 1)
                            }
                            do {
                                guard let item = try await repo.find(id) else {
                                    violations.withLock { $0.append("row \(id) read as missing") }
                                    continue
                                }
                                reads.add()
                                if item.version < floor {
                                    violations.withLock { $0.append("row \(id): read v\(item.version) after v\(floor) was written by this process") }
                                } else if item.version < othersFloor {
                                    behindOtherWrites.add()
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
                        let repo = repos[mine]
                        while !done() {
                            let id = Int64.random(in: 1...keyCount)
                            do {
                                let version = try await repo.update(id) { tx in
                                    try await tx.query(
                                        "UPDATE \(table) SET version = version + 1 WHERE id = $1 RETURNING version", [id]
                                    ).first?.decode(Int64.self, column: "version") ?? 0
                                }
                                committed.withLock { $0[mine][id] = max($0[mine][id] ?? 1, version) }
                                writes.add()
                            } catch {
                                violations.withLock { $0.append("write failed: \(error)") }
                            }
                            await Task.yield()
                        }
                    }
                }
                // The kill, once the storm is under way; then the probe reads its id
                // until it is a hit again (no database load): the time until hits resume.
                group.addTask {
                    while reads.count < targetReads / 4 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
                    do {
                        try await cluster.devServices("stop", victim.name)
                    } catch {
                        violations.withLock { $0.append("stop \(victim.name) failed: \(error)") }
                        hitsResumedAfter.withLock { $0 = .zero }
                        return
                    }
                    let start = ContinuousClock.now
                    killedAt.withLock { $0 = start }
                    while ContinuousClock.now < deadline {
                        let before = probeRepo.probe.loads(of: probe)
                        do {
                            _ = try await probeRepo.find(probe)
                        } catch {
                            violations.withLock { $0.append("probe read failed: \(error)") }
                        }
                        if probeRepo.probe.loads(of: probe) == before {
                            hitsResumedAfter.withLock { $0 = ContinuousClock.now - start }
                            return
                        }
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                }
            } }

            let recovery = hitsResumedAfter.withLock { $0 }
            #expect(killedAt.withLock { $0 } != nil, "the primary was killed during the storm")
            #expect(recovery != nil, "hits resumed on the killed primary's keys")
            // Invalidations the failover refused are retried until they land.
            let running = processes
            #expect(await eventually(timeout: .seconds(60)) {
                running.allSatisfy { $0.cache.pendingInvalidations == 0 }
            }, "every invalidation landed")
            #expect(await eventually(timeout: .seconds(60)) {
                for key in keys where isLease(try await raw.get(key)) { return false }
                return true
            }, "every lease was filled, refused or expired")
            let problems = violations.withLock { $0 }
            #expect(problems.isEmpty, "\(problems.count) errors or violations reached callers: \(problems.prefix(10))")
            #expect(reads.count >= targetReads && writes.count >= targetWrites, "the storm ran out of time: \(reads.count) reads, \(writes.count) writes")
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
            #expect(stale.isEmpty, "stale entries after the failover: \(stale)")
            // Quiet now: every process reads every row as it is.
            for repo in repos {
                for id in 1...keyCount {
                    let item = try await repo.find(id)
                    #expect(item == (try await fixture.row(id)), "row \(id) after the failover")
                }
            }
            // No refresh storm: thousands of failed commands cost at most one refresh
            // per minimumRefreshInterval (1 s), plus the first.
            let elapsed = ContinuousClock.now - clientStarted
            let bound = Int(elapsed / clusterClient.configuration.minimumRefreshInterval) + 2
            #expect(clusterClient.refreshCount <= bound, "\(clusterClient.refreshCount) refreshes in \(elapsed)")
            let after = try await cluster.nodes()
            #expect(!after.contains { $0.address == victimAddress && $0.role == "primary" && $0.state == "up" })
            let stats = processes.map { $0.cache.statistics(keyspace: "item") }
            print("""
                cluster failover storm: \(victim.name) (\(victimAddress), \(owners[victimAddress] ?? 0) of \(keyCount) keys) killed; \
                hits resumed on its keys \(recovery.map { "\($0)" } ?? "never") after the kill; \
                \(reads.count) reads, \(writes.count) writes, \(problems.count) errors, \(behindOtherWrites.count) reads behind \
                another process's write whose invalidation waited for the failover; \(cachedCount) of \(keyCount) keys cached at \
                the end, \(stale.count) stale; refreshes \(clusterClient.refreshCount); \(stats.map(\.description))
                """)
        } catch {
            Issue.record(error)
        }
        for process in processes { await process.close() }
        await raw.shutdown()
        await fixture.close()
        await cluster.down()
    }
}
