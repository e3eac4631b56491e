@testable import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

/// The protocol's scenarios against the real servers: keys that vanish, a previous
/// schema version, a server that refuses writes, a commit whose outcome is unknown,
/// fills announced across processes, and the runtime as a service. One at a time: most
/// start private servers, which is heavy on a 2-core machine.
@Suite(.serialized) struct ProtocolTests {
    static let modes: [CachePolicy.LeaseMode] = [.overlapped, .exclusive]

    /// Scenario 1: a reader holds its lease and has read v1; a write lands, and the
    /// key vanishes (DEL, or FLUSHDB of a private Redis). The reader's fill must fail,
    /// and nobody reads v1 afterwards.
    @Test(arguments: modes, [false, true])
    func aWriteWhoseTombstoneVanishesLeavesNothingStale(mode: CachePolicy.LeaseMode, flush: Bool) async throws {
        var instance: String?
        var redisURL: String?
        if flush {
            let name = TestEnvironment.uniqueName("flush")
            instance = name
            redisURL = try await TestEnvironment.startPrivateInstance(name).redisURL
        }
        let fixture = try await Fixture.make(rows: 1)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseMode: mode)
        let reader = try await Process.make(namespace: fixture.namespace, redisURL: redisURL, policy: policy)
        let writer = try await Process.make(namespace: fixture.namespace, redisURL: redisURL, policy: policy)
        let raw = try RESPClient(configuration: try RESPConfiguration(url: redisURL ?? TestEnvironment.redisURL()))
        let probe = LoadProbe()
        let readerRepo = fixture.repository(reader, probe: probe, policy: policy)
        let writerRepo = fixture.repository(writer, policy: policy)
        do {
            let key = try readerRepo.cacheKey(for: 1).entryKey
            let (loaded, loadedSignal) = AsyncStream<Item?>.makeStream()
            let (release, releaseSignal) = AsyncStream<Void>.makeStream()
            probe.setGate { _, item in
                loadedSignal.yield(item)
                for await _ in release { break }
            }
            let read = Task { try await readerRepo.find(1) }
            var iterator = loaded.makeAsyncIterator()
            #expect(await iterator.next()??.version == 1)
            probe.setGate(nil)
            let table = fixture.table
            try await writerRepo.update(1) { tx in
                try await tx.execute("UPDATE \(table) SET name = 'v2', version = 2 WHERE id = 1")
            }
            if flush { _ = try await raw.send("FLUSHDB") } else { _ = try await raw.del([key]) }
            releaseSignal.finish()
            _ = try await read.value
            #expect(await eventually { reader.cache.statistics().rejectedFills == 1 }, "the fill found its lease gone")
            #expect(try await entry(key, in: raw) == nil)
            #expect(try await readerRepo.find(1)?.version == 2)
            #expect(try await writerRepo.find(1)?.version == 2)
        } catch {
            Issue.record(error)
        }
        await raw.shutdown()
        await reader.close()
        await writer.close()
        await fixture.close()
        if let instance { _ = try? await TestEnvironment.runDevServices(["down"], instance: instance) }
    }

    /// Scenario 2: one process still on the previous schema version. Ten writes
    /// through the new version, each read at once through the old one.
    @Test(arguments: modes)
    func aProcessOnThePreviousSchemaVersionNeverReadsAnOverwrittenRow(mode: CachePolicy.LeaseMode) async throws {
        let fixture = try await Fixture.make(rows: 1)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseMode: mode)
        let old = try await Process.make(namespace: fixture.namespace, policy: policy)
        let new = try await Process.make(namespace: fixture.namespace, policy: policy)
        let oldRepo = VersionedRepository(base: fixture.repository(old, policy: policy), schemaVersion: 1)
        let newRepo = VersionedRepository(base: fixture.repository(new, policy: policy), schemaVersion: 2)
        do {
            let key = try oldRepo.cacheKey(for: 1).entryKey
            let table = fixture.table
            for version in Int64(2)...11 {
                #expect(try await oldRepo.find(1)?.version == version - 1)
                // Read again until the old version's entry is cached: a find that met the
                // new process's lease may have given up waiting on a loaded machine and
                // read the database without a lease (filling nothing).
                #expect(await eventually {
                    if try await entry(key, in: fixture.rawRedis, schemaVersion: 1) != nil { return true }
                    _ = try await oldRepo.find(1)
                    return false
                }, "the old version's fill landed")
                try await newRepo.update(1) { tx in
                    try await tx.execute("UPDATE \(table) SET version = $1 WHERE id = 1", [version])
                }
                #expect(try await oldRepo.find(1)?.version == version, "trial \(version - 1)")
                #expect(try await newRepo.find(1)?.version == version)
            }
        } catch {
            Issue.record(error)
        }
        await old.close()
        await new.close()
        await fixture.close()
    }

    /// Scenario 3, out of memory (`noeviction`): Redis answers reads but refuses the
    /// tombstone; the invalidation falls back to `DEL`, and no process reads the old row.
    @Test(arguments: modes)
    func aTombstoneRefusedForMemoryIsReplacedByADelete(mode: CachePolicy.LeaseMode) async throws {
        let instance = TestEnvironment.uniqueName("oom")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let fixture = try await Fixture.make(rows: 10)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseMode: mode, circuitBreaker: .init(failureThreshold: 1000))
        let reader = try await Process.make(namespace: fixture.namespace, redisURL: urls.redisURL, policy: policy)
        let writer = try await Process.make(namespace: fixture.namespace, redisURL: urls.redisURL, policy: policy)
        let admin = try RESPClient(configuration: try RESPConfiguration(url: urls.redisURL))
        let readerRepo = fixture.repository(reader, policy: policy), writerRepo = fixture.repository(writer, policy: policy)
        do {
            for id in Int64(1)...10 {
                #expect(try await readerRepo.find(id)?.version == 1)
                let key = try readerRepo.cacheKey(for: id).entryKey
                #expect(await eventually { try await entry(key, in: admin) != nil })
            }
            _ = try await admin.send("CONFIG", "SET", "maxmemory-policy", "noeviction")
            _ = try await admin.send("CONFIG", "SET", "maxmemory", "1")
            let table = fixture.table
            for id in Int64(1)...10 {
                try await writerRepo.update(id) { tx in
                    try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = $1", [id])
                }
                #expect(try await readerRepo.find(id)?.version == 2, "trial \(id)")
                #expect(try await admin.get(try readerRepo.cacheKey(for: id).entryKey) == nil, "the entry was deleted")
            }
            #expect(writer.cache.pendingInvalidations == 0)
            #expect(writer.cache.statistics().storeErrors >= 10, "every refusal was counted")
            _ = try await admin.send("CONFIG", "SET", "maxmemory", "0")
        } catch {
            Issue.record(error)
        }
        await admin.shutdown()
        await reader.close()
        await writer.close()
        await fixture.close()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }

    /// Scenario 3, read-only (a demoted primary, here a private Redis made a replica):
    /// neither the tombstone nor `DEL` is accepted. The refusal counts as a failure for
    /// the breaker, the writer's process skips the cache for the key, the invalidation
    /// is retried, and it lands once the server accepts writes again.
    @Test func aTombstoneRefusedAsReadOnlyIsRetriedUntilItLands() async throws {
        let instance = TestEnvironment.uniqueName("readonly")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let fixture = try await Fixture.make(rows: 10)
        let policy = CachePolicy(
            leaseTTL: testLeaseTTL,
            circuitBreaker: .init(failureThreshold: 1, coolDown: .milliseconds(200)),
            invalidationRetryDelay: .milliseconds(50), invalidationRetryMaxDelay: .milliseconds(200))
        let reader = try await Process.make(namespace: fixture.namespace, redisURL: urls.redisURL, policy: policy)
        let writer = try await Process.make(namespace: fixture.namespace, redisURL: urls.redisURL, policy: policy)
        let admin = try RESPClient(configuration: try RESPConfiguration(url: urls.redisURL))
        let readerRepo = fixture.repository(reader, policy: policy), writerRepo = fixture.repository(writer, policy: policy)
        do {
            let ids = Array(Int64(1)...10)
            for id in ids {
                #expect(try await readerRepo.find(id)?.version == 1)
                let key = try readerRepo.cacheKey(for: id).entryKey
                #expect(await eventually { try await entry(key, in: admin) != nil })
            }
            // Port 9 (discard) has no Redis: the replica keeps its data and refuses writes.
            _ = try await admin.send("REPLICAOF", "127.0.0.1", "9")
            let table = fixture.table
            for id in ids {
                try await writerRepo.update(id) { tx in
                    try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = $1", [id])
                }
                #expect(try await writerRepo.find(id)?.version == 2, "the writer never serves the row it changed")
            }
            #expect(writer.cache.pendingInvalidations == ids.count)
            #expect(writer.cache.statistics().storeErrors >= 1)
            _ = try await admin.send("REPLICAOF", "NO", "ONE")
            #expect(await eventually(timeout: .seconds(30)) { writer.cache.pendingInvalidations == 0 }, "the retries landed")
            for id in ids {
                #expect(try await entry(try readerRepo.cacheKey(for: id).entryKey, in: admin) == nil)
                #expect(try await readerRepo.find(id)?.version == 2)
            }
        } catch {
            Issue.record(error)
        }
        _ = try? await admin.send("REPLICAOF", "NO", "ONE")
        await admin.shutdown()
        await reader.close()
        await writer.close()
        await fixture.close()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }

    /// Scenario 5: an error after `COMMIT` was sent (here the commit itself fails, from
    /// a deferred constraint) leaves the outcome unknown to the caller: the entry is
    /// invalidated anyway.
    @Test func aWriteWhoseCommitFailsStillInvalidates() async throws {
        let fixture = try await Fixture.make(rows: 1)
        let process = try await Process.make(namespace: fixture.namespace)
        let repo = fixture.repository(process)
        let table = fixture.table
        do {
            try await fixture.admin.execute("""
                CREATE FUNCTION \(table)_check() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.name = 'refused at commit' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NEW; END $$
                """)
            try await fixture.admin.execute("""
                CREATE CONSTRAINT TRIGGER \(table)_check AFTER UPDATE ON \(table)
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \(table)_check()
                """)
            let key = try repo.cacheKey(for: 1).entryKey
            #expect(try await repo.find(1)?.version == 1)
            #expect(await eventually { try await fixture.cachedItem(key) != nil })
            await #expect(throws: (any Error).self) {
                try await repo.update(1) { tx in
                    try await tx.execute("UPDATE \(table) SET name = 'refused at commit' WHERE id = 1")
                }
            }
            let raw = try await fixture.rawRedis.get(key)
            #expect(EntryFormat.classify(raw) == .tombstone, "invalidated although the commit failed")
            #expect(try await repo.find(1)?.name == "item 1")
        } catch {
            Issue.record(error)
        }
        await process.close()
        _ = try? await fixture.admin.execute("DROP TABLE IF EXISTS \(table)")
        _ = try? await fixture.admin.execute("DROP FUNCTION IF EXISTS \(table)_check()")
        await fixture.close()
    }

    /// A reader in another process waits on a lease and is woken by the fill's
    /// announcement: with a recheck interval of a minute, nothing else could wake it
    /// within the test's bound.
    @Test(arguments: modes)
    func aReaderInAnotherProcessSeesTheFillWhenItIsAnnounced(mode: CachePolicy.LeaseMode) async throws {
        let fixture = try await Fixture.make(rows: 1)
        let policy = CachePolicy(leaseTTL: testLeaseTTL, leaseWait: .seconds(120), leaseRecheckInterval: .seconds(60), leaseMode: mode)
        let a = try await Process.make(namespace: fixture.namespace, policy: policy)
        let b = try await Process.make(namespace: fixture.namespace, policy: policy)
        let probeA = LoadProbe(), probeB = LoadProbe()
        let repoA = fixture.repository(a, probe: probeA, policy: policy), repoB = fixture.repository(b, probe: probeB, policy: policy)
        do {
            #expect(await eventually { b.cache.announcements.isListening })
            let key = try repoA.cacheKey(for: 1).entryKey
            let (release, releaseSignal) = AsyncStream<Void>.makeStream()
            probeA.setGate { _, _ in for await _ in release { break } }
            let readA = Task { try await repoA.find(1) }
            #expect(await eventually { isLease(try await fixture.rawRedis.get(key)) }, "A holds its lease")
            let clock = ContinuousClock()
            let started = clock.now
            let readB = Task { try await repoB.find(1) }
            #expect(await eventually {
                guard case .lease(let lease) = EntryFormat.classify(try await fixture.rawRedis.get(key)) else { return false }
                return lease.waited
            }, "B waits on A's lease")
            releaseSignal.finish()
            #expect(try await readA.value?.version == 1)
            #expect(try await readB.value?.version == 1)
            let took = clock.now - started
            #expect(took < .seconds(30), "B saw the fill after \(took): not by its announcement")
            #expect(probeB.totalLoads == 0, "B never read the database")
            #expect(b.cache.statistics().hits == 1 && b.cache.statistics().leaseWaits == 1)
        } catch {
            Issue.record(error)
        }
        await a.close()
        await b.close()
        await fixture.close()
    }

    /// The runtime as a `Service` in a `ServiceGroup`: a write made while Redis was down
    /// leaves an invalidation pending; graceful shutdown delivers it, then closes the
    /// clients.
    @Test func gracefulShutdownDeliversPendingInvalidations() async throws {
        let instance = TestEnvironment.uniqueName("lifecycle")
        let urls = try await TestEnvironment.startPrivateInstance(instance)
        let fixture = try await Fixture.make(rows: 3)
        // Retries far apart, so that only the shutdown can deliver in time.
        let policy = CachePolicy(
            leaseTTL: testLeaseTTL,
            circuitBreaker: .init(failureThreshold: 1, coolDown: .seconds(60)),
            invalidationRetryDelay: .seconds(600), invalidationRetryMaxDelay: .seconds(600))
        var redisConfig = try RESPConfiguration(url: urls.redisURL)
        redisConfig.commandTimeout = .seconds(2)
        redisConfig.reconnectBackoffMaximum = .milliseconds(200)
        var pgConfig = try PGConfiguration(url: try TestEnvironment.databaseURL())
        pgConfig.connectTimeout = .seconds(60)
        pgConfig.acquireTimeout = .seconds(60)
        let postgres = PGClient(configuration: pgConfig)
        let redis = try RESPClient(configuration: redisConfig)
        let cache = try CacheAside(
            postgres: postgres, redis: redis, namespace: fixture.namespace, defaultPolicy: policy,
            shutdownTimeout: .seconds(30), logger: testLogger)
        let raw = try RESPClient(configuration: try RESPConfiguration(url: urls.redisURL))
        let repo = ItemRepository(cache: cache, table: fixture.table, probe: LoadProbe(), policy: policy)
        do {
            let group = ServiceGroup(services: [cache], logger: testLogger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                #expect(try await repo.find(1)?.version == 1)
                try await TestEnvironment.runDevServices(["stop", "redis"], instance: instance)
                let table = fixture.table
                try await repo.update(1) { tx in try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = 1") }
                try await repo.update(2) { tx in try await tx.execute("UPDATE \(table) SET version = 2 WHERE id = 2") }
                #expect(cache.pendingInvalidations == 2)
                try await TestEnvironment.runDevServices(["start", "redis"], instance: instance)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            #expect(cache.pendingInvalidations == 0, "delivered at shutdown")
            for id in Int64(1)...2 {
                let bytes = try await raw.get(try repo.cacheKey(for: id).entryKey)
                #expect(EntryFormat.classify(bytes) == .tombstone, "the invalidation of \(id) landed")
            }
            await #expect(throws: (any Error).self, "the clients are shut down") {
                _ = try await redis.get("anything")
            }
        } catch {
            Issue.record(error)
        }
        await raw.shutdown()
        await fixture.close()
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }
}
