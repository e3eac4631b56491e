@testable import CacheAside
import Foundation
import CacheAsidePostgres
import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// The cache-aside contract against the real servers (one Redis, then the cluster).
@Suite(.onStandaloneAndCluster) struct ReadThroughTests {
    @Test func aMissLoadsFillsAndTheNextFindHits() async throws {
        let fixture = try await Fixture.make(rows: 3)
        let process = try await Process.make(namespace: fixture.namespace)
        let probe = LoadProbe()
        let repo = fixture.repository(process, probe: probe)
        do {
            let first = try await repo.find(2)
            #expect(first == Item(id: 2, name: "item 2", version: 1))
            #expect(await eventually { try await fixture.cachedItem(try repo.cacheKey(for: 2).entryKey) != nil }, "the fill landed")
            let second = try await repo.find(2)
            #expect(second == first)
            #expect(probe.loads(of: 2) == 1)
            let stats = process.cache.statistics(keyspace: "item")
            #expect(stats.hits == 1 && stats.misses == 1 && stats.databaseLoads == 1)
            // The stored entry is the JSON envelope.
            let raw = try #require(try await fixture.rawRedis.get(try repo.cacheKey(for: 2).entryKey))
            #expect(String(decoding: raw, as: UTF8.self).hasPrefix(#"{"s":2,"sv":1,"v":{"#))
            let envelope = try JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any]
            let value = envelope?["v"] as? [String: Any]
            #expect(value?["name"] as? String == "item 2" && value?["version"] as? Int == 1)
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func aMissingIdLoadsTheDatabaseOnceWithinItsNegativeTTL() async throws {
        let fixture = try await Fixture.make(rows: 1)
        let process = try await Process.make(namespace: fixture.namespace)
        let probe = LoadProbe()
        let repo = fixture.repository(process, probe: probe, policy: CachePolicy(negativeTTL: .seconds(30), leaseTTL: testLeaseTTL))
        do {
            #expect(try await repo.find(999) == nil)
            #expect(await eventually { try await fixture.cachedItem(try repo.cacheKey(for: 999).entryKey) != nil }, "the fill landed")
            for _ in 0..<20 { #expect(try await repo.find(999) == nil) }
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<50 { group.addTask { _ = try? await repo.find(999) } }
            }
            #expect(probe.loads(of: 999) == 1)
            // The absent entry's TTL is the negative TTL (plus jitter), not the row TTL.
            let ttl = try await fixture.rawRedis.pttl(try repo.cacheKey(for: 999).entryKey)
            #expect(ttl > 25_000 && ttl <= 33_000, "pttl \(ttl)")
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func anInsertInvalidatesACachedAbsence() async throws {
        let fixture = try await Fixture.make(rows: 0)
        let process = try await Process.make(namespace: fixture.namespace)
        let repo = fixture.repository(process)
        do {
            #expect(try await repo.find(7) == nil)
            #expect(await eventually { try await fixture.cachedItem(try repo.cacheKey(for: 7).entryKey) != nil }, "the fill landed")
            let table = fixture.table
            let id = try await repo.insert { tx in
                try await tx.query("INSERT INTO \(table) (id, name) VALUES (7, 'seven') RETURNING id").first?
                    .decode(Int64.self, column: "id") ?? -1
            }
            #expect(id == 7)
            #expect(try await repo.find(7) == Item(id: 7, name: "seven", version: 1))
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func aFindInsideAWriteTransactionReadsTheDatabaseAndFillsNothing() async throws {
        let fixture = try await Fixture.make(rows: 2)
        let process = try await Process.make(namespace: fixture.namespace)
        let repo = fixture.repository(process)
        do {
            let table = fixture.table
            let seen = try await repo.update(1) { tx in
                _ = try await tx.execute("UPDATE \(table) SET name = 'changed', version = version + 1 WHERE id = 1")
                return try await repo.find(1, in: tx)
            }
            #expect(seen?.name == "changed")
            #expect(try await fixture.cachedItem(try repo.cacheKey(for: 1).entryKey) == nil)
            #expect(try await repo.find(1)?.version == 2)
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func findManyUsesOneMGETAndOneQueryForTheMisses() async throws {
        let fixture = try await Fixture.make(rows: 20)
        let process = try await Process.make(namespace: fixture.namespace)
        let probe = LoadProbe()
        let repo = fixture.repository(process, probe: probe)
        do {
            _ = try await repo.find(1)
            _ = try await repo.find(2)
            #expect(await eventually { try await fixture.cachedItem(try repo.cacheKey(for: 2).entryKey) != nil }, "the fill landed")
            let before = probe.totalLoads
            let found = try await repo.find(many: [1, 2, 3, 4, 5, 404, 3])
            #expect(found.count == 5)
            #expect(found[4] == Item(id: 4, name: "item 4", version: 1))
            #expect(found[404] == nil)
            #expect(probe.loadManyCalls == 1)
            #expect(probe.totalLoads - before == 4)  // 3, 4, 5 and 404: not the two hits
            // Everything is now cached, the missing id as absent.
            let again = try await repo.find(many: [1, 2, 3, 4, 5, 404])
            #expect(again == found)
            #expect(probe.loadManyCalls == 1)
            if let cluster = process.redis as? RESPClusterClient {
                // On a cluster, hits across slots cost one round trip per node.
                let ids: [Int64] = Array(1...20)
                _ = try await repo.find(many: ids)
                let keys = try ids.map { try repo.cacheKey(for: $0).entryKey }
                #expect(await eventually(timeout: .seconds(30)) {
                    try await fixture.rawRedis.mget(keys).allSatisfy { bytes in
                        if case .value = EntryFormat.classify(bytes) { return true }
                        return false
                    }
                }, "every fill landed")
                let nodes = Set(keys.compactMap { cluster.primary(forKey: $0) })
                #expect(nodes.count > 1, "20 keys over several primaries")
                let trips = cluster.roundTrips
                let hits = try await repo.find(many: ids)
                #expect(hits.count == 20)
                #expect(cluster.roundTrips - trips == nodes.count, "one MGET per node of \(nodes)")
                #expect(probe.loadManyCalls == 2)
            }
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func garbageUnderAKeyIsAMissAndIsReplaced() async throws {
        let fixture = try await Fixture.make(rows: 3)
        let process = try await Process.make(namespace: fixture.namespace)
        let repo = fixture.repository(process)
        do {
            let key = try repo.cacheKey(for: 3).entryKey
            _ = try await fixture.rawRedis.set(key, to: [0xFF, 0x00, 0x7B, 0x22], expiration: .seconds(60))
            #expect(try await repo.find(3) == Item(id: 3, name: "item 3", version: 1))
            #expect(await eventually {
                guard let bytes = try await fixture.rawRedis.get(key) else { return false }
                return (try? EntryFormat.decode(Item.self, from: bytes, schemaVersion: 1, codec: JSONValueCodec())) != nil
            })
            #expect(process.cache.statistics(keyspace: "item").decodeFailures == 1)
            #expect(try await repo.find(3)?.id == 3)
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }

    @Test func idsThatLookAlikeNeverCollideAndEveryKeyHasATTL() async throws {
        let fixture = try await Fixture.make(rows: 5)
        let table = TestEnvironment.uniqueName("named")
        try await fixture.admin.execute("CREATE TABLE \(table) (name text PRIMARY KEY, payload text NOT NULL)")
        let process = try await Process.make(namespace: fixture.namespace)
        let ids = ["a:b", "a%3Ab", "a*", "a b", "a\u{a0}b", "é", "e\u{301}", "😀", "a", "a:lease", "*", ""]
        do {
            for (i, id) in ids.enumerated() {
                try await fixture.admin.execute("INSERT INTO \(table) VALUES ($1, $2)", [id, "payload \(i)"])
            }
            let repo = NamedRepository(cache: process.cache, table: table)
            for _ in 0..<2 {
                for (i, id) in ids.enumerated() {
                    #expect(try await repo.find(id) == .init(name: id, payload: "payload \(i)"))
                }
            }
            #expect(try await repo.find("missing one") == nil)
            // Every key this test's cache wrote, leases included, has a TTL. A load is
            // held after it took its lease, so that a lease is there to be seen.
            let probe = LoadProbe()
            let itemRepo = fixture.repository(process, probe: probe)
            _ = try await itemRepo.find(many: [1, 2, 3, 99])
            let itemTable = fixture.table
            try await itemRepo.update(4) { tx in try await tx.execute("UPDATE \(itemTable) SET version = 2 WHERE id = 4") }
            let (loaded, loadedSignal) = AsyncStream<Void>.makeStream()
            let (release, releaseSignal) = AsyncStream<Void>.makeStream()
            probe.setGate { _, _ in
                loadedSignal.yield()
                for await _ in release { break }
            }
            let held = Task { try await itemRepo.find(5) }
            for await _ in loaded { break }
            let leaseKey = try itemRepo.cacheKey(for: 5).entryKey
            #expect(await eventually {
                isLease(try await fixture.rawRedis.get(leaseKey))
            }, "a held load's lease is in Redis")
            let keys = try await fixture.keys()
            #expect(keys.count >= ids.count + 6)
            #expect(try await fixture.rawRedis.get(try itemRepo.cacheKey(for: 4).entryKey).map { String(decoding: $0, as: UTF8.self) }?
                .hasPrefix(#"{"s":2,"tomb":"#) == true, "a write leaves a tombstone")
            for key in keys {
                let ttl = try await fixture.rawRedis.pttl(key)
                #expect(ttl > 0, "\(key) has no TTL (\(ttl))")
            }
            releaseSignal.finish()
            #expect(try await held.value?.id == 5)
        } catch {
            Issue.record(error)
        }
        _ = try? await fixture.admin.execute("DROP TABLE \(table)")
        await process.close()
        await fixture.close()
    }
}

extension ReadThroughTests {
    /// The runtime reads its keyspaces from lock-free snapshots, of which it publishes
    /// a bounded number: past that bound (a policy that keeps changing), each find must
    /// still run under the policy it passed, never a stale snapshot's.
    @Test func aPolicyThatKeepsChangingIsAlwaysTheOneInForce() async throws {
        let fixture = try await Fixture.make(rows: 2)
        let process = try await Process.make(namespace: fixture.namespace)
        func policy(ttl seconds: Int) -> CachePolicy {
            CachePolicy(ttl: .seconds(seconds), ttlJitter: 0, leaseTTL: testLeaseTTL)
        }
        do {
            for i in 0..<300 {
                #expect(try await fixture.repository(process, policy: policy(ttl: 600 + i)).find(1)?.id == 1)
            }
            for seconds in [100, 3000, 100] {
                let repo = fixture.repository(process, policy: policy(ttl: seconds))
                await repo.invalidate(2)
                let key = try repo.cacheKey(for: 2).entryKey
                // Read until this policy's fill is in Redis; its TTL is the policy's.
                #expect(await eventually {
                    _ = try await repo.find(2)
                    guard try await fixture.cachedItem(key) != nil else { return false }
                    let ttl = try await fixture.rawRedis.pttl(key)
                    return ttl > Int64(seconds - 60) * 1000 && ttl <= Int64(seconds) * 1000
                }, "the entry filled under a \(seconds) s policy has that TTL")
            }
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
    }
}

@Suite(.onStandaloneAndCluster) struct ConsistencyTests {
    /// The stale-set race, forced: a reader loads v1, a write lands, then the reader's
    /// fill must be rejected.
    @Test(arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aFillThatRacedAWriteIsRejected(mode: CachePolicy.LeaseMode) async throws {
        let fixture = try await Fixture.make(rows: 1)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseMode: mode)
        let reader = try await Process.make(namespace: fixture.namespace, policy: policy)
        let writer = try await Process.make(namespace: fixture.namespace, policy: policy)
        let probe = LoadProbe()
        let readerRepo = fixture.repository(reader, probe: probe, policy: policy)
        let writerRepo = fixture.repository(writer, policy: policy)
        do {
            let (loaded, loadedSignal) = AsyncStream<Item?>.makeStream()
            let (release, releaseSignal) = AsyncStream<Void>.makeStream()
            probe.setGate { _, item in
                loadedSignal.yield(item)
                for await _ in release { break }
            }
            let read = Task { try await readerRepo.find(1) }
            var iterator = loaded.makeAsyncIterator()
            let held = await iterator.next()
            #expect(held??.version == 1)  // the reader loaded v1 and is held before its fill
            probe.setGate(nil)

            let table = fixture.table
            try await writerRepo.update(1) { tx in
                try await tx.execute("UPDATE \(table) SET name = 'v2', version = 2 WHERE id = 1")
            }
            releaseSignal.yield()
            releaseSignal.finish()
            let readerSaw = try await read.value
            #expect(readerSaw?.version == 1)  // it began before the write: v1 is a fair answer

            // Its fill was rejected: nothing (and certainly not v1) is cached.
            #expect(await eventually { reader.cache.statistics(keyspace: "item").rejectedFills == 1 })
            let cached = try await fixture.cachedItem(try readerRepo.cacheKey(for: 1).entryKey)
            #expect(cached == nil, "\(String(describing: cached))")
            #expect(try await readerRepo.find(1)?.version == 2)
            #expect(try await writerRepo.find(1)?.version == 2)
        } catch {
            Issue.record(error)
        }
        await reader.close()
        await writer.close()
        await fixture.close()
    }

    /// 500 concurrent finds of one cold key through 4 processes: the single-flight
    /// tables make it one load per process at most (overlapped leases), and exclusive
    /// leases make it one load in all.
    @Test(arguments: [CachePolicy.LeaseMode.overlapped, .exclusive])
    func aStampedeOnAColdKeyLoadsTheDatabaseAlmostOnce(mode: CachePolicy.LeaseMode) async throws {
        let fixture = try await Fixture.make(rows: 1)
        // A long lease wait, so that a loaded machine cannot turn waiting readers into loaders.
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseWait: .seconds(3), leaseMode: mode)
        var processes: [Process] = []
        for _ in 0..<4 { processes.append(try await Process.make(namespace: fixture.namespace, policy: policy)) }
        let probe = LoadProbe()
        // A slow load, so the burst really overlaps it.
        probe.setGate { _, _ in try? await Task.sleep(for: .milliseconds(50)) }
        let repos = processes.map { fixture.repository($0, probe: probe, policy: policy) }
        let failures = SharedCounter()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<500 {
                group.addTask {
                    let item = try? await repos[i % 4].find(1)
                    if item?.id != 1 { failures.add() }
                }
            }
        }
        #expect(failures.count == 0)
        print("stampede (\(mode) leases): 500 finds through 4 processes caused \(probe.loads(of: 1)) database load(s)")
        #expect(probe.loads(of: 1) <= 4, "database loads: \(probe.loads(of: 1))")
        if mode == .exclusive { #expect(probe.loads(of: 1) == 1, "database loads: \(probe.loads(of: 1))") }
        #expect(probe.loads(of: 1) >= 1)
        for p in processes { await p.close() }
        await fixture.close()
    }
}

@Suite struct FailOpenTests {
    /// Redis stopped: reads go to the database and succeed; once the breaker is open a
    /// read costs no Redis timeout; when Redis is back, hits resume. A write made while
    /// Redis was down is retried until it lands.
    @Test func readsFailOpenAndRecover() async throws {
        let instance = TestEnvironment.uniqueName("failopen")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let fixture = try await Fixture.make(rows: 10)
        // A long command timeout: with the breaker open, a read must not pay it (and a
        // loaded machine cannot make a read that skips Redis take half of it).
        let timeout = Duration.seconds(4)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, circuitBreaker: .init(failureThreshold: 2, coolDown: .seconds(5)))
        let process = try await Process.make(
            namespace: fixture.namespace, redisURL: urls.redisURL, redisCommandTimeout: timeout, policy: policy)
        let probe = LoadProbe()
        let repo = fixture.repository(process, probe: probe, policy: policy)
        do {
            #expect(try await repo.find(1)?.id == 1)
            #expect(await eventually { process.cache.statistics(keyspace: "item").fills == 1 }, "the fill landed")
            #expect(try await repo.find(1)?.id == 1)
            #expect(process.cache.statistics(keyspace: "item").hits == 1)

            try await TestEnvironment.runDevServices(["stop", "redis"], instance: instance)
            // Reads still return correct rows.
            for id in Int64(1)...4 { #expect(try await repo.find(id)?.id == id) }
            // The breaker is open now: a read costs no Redis timeout.
            let start = ContinuousClock.now
            #expect(try await repo.find(5)?.id == 5)
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < timeout / 2, "a read with the breaker open took \(elapsed)")
            #expect(process.cache.statistics(keyspace: "item").failOpenReads >= 4)

            // A write while Redis is down: queued, and this process skips the cache for it.
            let table = fixture.table
            try await repo.update(1) { tx in
                try await tx.execute("UPDATE \(table) SET version = 9 WHERE id = 1")
            }
            #expect(process.cache.pendingInvalidations == 1)

            try await TestEnvironment.runDevServices(["start", "redis"], instance: instance)
            // Redis restarted empty here, so the queued invalidation lands on nothing; what
            // matters is that it is delivered and reads go back to the cache.
            #expect(await eventually(timeout: .seconds(30)) { process.cache.pendingInvalidations == 0 })
            #expect(try await repo.find(1)?.version == 9)
            let hitsBefore = process.cache.statistics(keyspace: "item").hits
            #expect(await eventually(timeout: .seconds(30)) {
                _ = try? await repo.find(2)
                return process.cache.statistics(keyspace: "item").hits > hitsBefore
            })
        } catch {
            Issue.record(error)
        }
        await process.close()
        await fixture.close()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }

    /// An invalidation that cannot reach Redis is retried until it succeeds, so an entry
    /// cached before the write is deleted once Redis answers again.
    @Test func aFailedInvalidationIsRetriedUntilItLands() async throws {
        let instance = TestEnvironment.uniqueName("invalidate")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let fixture = try await Fixture.make(rows: 3)
        let policy = CachePolicy(
            leaseTTL: testLeaseTTL,
            circuitBreaker: .init(failureThreshold: 1, coolDown: .milliseconds(200)),
            invalidationRetryDelay: .milliseconds(50), invalidationRetryMaxDelay: .milliseconds(200))
        let process = try await Process.make(
            namespace: fixture.namespace, redisURL: urls.redisURL, redisCommandTimeout: .milliseconds(300), policy: policy)
        let raw = try RESPClient(configuration: try RESPConfiguration(url: urls.redisURL))
        let repo = fixture.repository(process, policy: policy)
        do {
            #expect(try await repo.find(2)?.version == 1)
            let key = try repo.cacheKey(for: 2).entryKey
            #expect(await eventually { (try? await raw.get(key)) != nil })

            // Pause Redis (its data stays), then write.
            _ = try await raw.send("CLIENT", "PAUSE", "1500", "ALL")
            let table = fixture.table
            try await repo.update(2) { tx in
                try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = 2")
            }
            #expect(process.cache.pendingInvalidations == 1)
            #expect(try await repo.find(2)?.version == 2)  // this process skips the stale entry
            // After the pause, the retry deletes the stale entry.
            #expect(await eventually(timeout: .seconds(30)) { process.cache.pendingInvalidations == 0 })
            // Nothing filled it since (reads skipped the cache while the write was pending).
            #expect(try await entry(key, in: raw) == nil)
            #expect(process.cache.statistics(keyspace: "item").invalidationRetries >= 1)
        } catch {
            Issue.record(error)
        }
        await raw.shutdown()
        await process.close()
        await fixture.close()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }
}
