@testable import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// The clients while the servers change under them, on private servers: a slot
/// migrated during traffic (cluster), a primary endpoint failed over (one primary with
/// a replica).
@Suite(.serialized) struct ClusterFailureTests {
    /// `CLUSTER SETSLOT ... IMPORTING / MIGRATING`, `MIGRATE` of the slot's keys in
    /// batches, then `SETSLOT ... NODE`, while four tasks increment, read, `MGET` and
    /// pipeline the slot's keys: every command is served (through `ASK` during the
    /// migration and `MOVED` after it), and no increment is lost.
    @Test func aSlotMigratedDuringTrafficKeepsEveryCommandWorkingThroughAskAndMoved() async throws {
        let cluster = try await PrivateRedis.start("migrate", cluster: true)
        let configuration = try RESPClusterConfiguration(url: cluster.url)
        let redis = try makeClusterClient(url: cluster.url)
        var admins: [RESPClient] = []
        do {
            // 120 keys of one slot (a hash tag), 30 per task.
            let keys = (0..<120).map { "{migrating}:\($0)" }
            let slot = HashSlot(key: keys[0])
            _ = try await redis.pipeline(keys.map { RESPCommands.SET($0, to: Array("0".utf8)) })
            let source = try #require(redis.primary(forKey: keys[0]))
            let target = try #require(redis.knownPrimaries.first { $0 != source })
            let sourceAdmin = try nodeClient(source, url: cluster.url)
            let targetAdmin = try nodeClient(target, url: cluster.url)
            admins = [sourceAdmin, targetAdmin]
            for primary in redis.knownPrimaries where primary != source && primary != target {
                admins.append(try nodeClient(primary, url: cluster.url))
            }
            let sourceID = try #require(try await sourceAdmin.send("CLUSTER", "MYID").string)
            let targetID = try #require(try await targetAdmin.send("CLUSTER", "MYID").string)
            // The nodes talk to each other over TLS (the cluster bus, replication, and
            // MIGRATE, which follows `tls-cluster`): MIGRATE names the target's TLS port.
            let targetNode = try #require(try await cluster.nodes().first { $0.address == target })
            let colon = try #require(target.lastIndex(of: ":"))
            let targetHost = String(target[..<colon]), targetPort = targetNode.tlsPort

            let slotOwners = admins
            let operations = SharedCount()
            let increments = Locked<[String: Int]>([:])
            let errors = Locked<[String]>([])
            let tryAgainExhausted = SharedCount(), mgets = SharedCount()
            let migrated = Locked(false)
            let deadline = ContinuousClock.now + .seconds(180)
            // The traffic runs until the migration is over and it did 200 more rounds.
            let after = Locked(Int.max)
            let done: @Sendable () -> Bool = {
                operations.value >= after.withLock { $0 } || ContinuousClock.now >= deadline
            }
            try await HeavyTests.oneAtATime { try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<4 {
                    group.addTask {
                        let mine = keys.indices.filter { $0 % 4 == t }.map { keys[$0] }
                        var counts: [String: Int] = [:]
                        var round = 0
                        while !done() {
                            round += 1
                            let key = mine[round % mine.count]
                            do {
                                let value = try await redis.incr(key)
                                counts[key, default: 0] += 1
                                if value != Int64(counts[key] ?? 0) {
                                    errors.withLock { $0.append("\(key): INCR gave \(value), expected \(counts[key] ?? 0)") }
                                }
                                let read = try await redis.getString(key)
                                if read != String(counts[key] ?? 0) {
                                    errors.withLock { $0.append("\(key): GET gave \(read ?? "nil"), expected \(counts[key] ?? 0)") }
                                }
                                // A pipeline: each command follows its own redirection.
                                let other = mine[(round + 7) % mine.count]
                                let (incremented, readBack) = try await redis.pipeline(.incr(other), .get(other))
                                counts[other, default: 0] += 1
                                if try incremented.get() != Int64(counts[other] ?? 0)
                                    || readBack.get().map({ String(decoding: $0, as: UTF8.self) }) != String(counts[other] ?? 0)
                                {
                                    errors.withLock { $0.append("\(other): pipelined INCR and GET gave \(incremented), \(readBack)") }
                                }
                            } catch {
                                errors.withLock { $0.append("\(key): \(error)") }
                            }
                            operations.add()
                        }
                        increments.withLock { all in for (k, n) in counts { all[k, default: 0] += n } }
                    }
                }
                // Multi-key reads of the slot, off the rounds the migration waits for:
                // while their keys are split between the nodes the server answers
                // TRYAGAIN, and the client sends them again until the keys are together
                // (at most the command timeout). Every value only grows.
                group.addTask {
                    var last: [String: Int] = [:]
                    var round = 0
                    while !done() {
                        round += 1
                        let some = (0..<6).map { keys[(round * 7 + $0 * 13) % keys.count] }
                        do {
                            let values = try await redis.mget(some)
                            for (k, v) in zip(some, values) {
                                guard let n = v.flatMap({ Int(String(decoding: $0, as: UTF8.self)) }), n >= last[k] ?? 0 else {
                                    errors.withLock { $0.append("\(k): MGET gave \(String(describing: v)) after \(last[k] ?? 0)") }
                                    continue
                                }
                                last[k] = n
                            }
                        } catch let error as RESPError where error.serverErrorPrefix == "TRYAGAIN" {
                            tryAgainExhausted.add()
                        } catch {
                            errors.withLock { $0.append("MGET: \(error)") }
                        }
                        mgets.add()
                    }
                }
                group.addTask {
                    func progress(_ rounds: Int) async throws {
                        let goal = operations.value + rounds
                        while operations.value < goal && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
                    }
                    try await progress(100)
                    _ = try await targetAdmin.send("CLUSTER", "SETSLOT", "\(slot.rawValue)", "IMPORTING", sourceID)
                    _ = try await sourceAdmin.send("CLUSTER", "SETSLOT", "\(slot.rawValue)", "MIGRATING", targetID)
                    while true {
                        let batch = try await sourceAdmin.send("CLUSTER", "GETKEYSINSLOT", "\(slot.rawValue)", "15").array ?? []
                        let names = batch.compactMap(\.string)
                        if names.isEmpty { break }
                        var arguments = ["MIGRATE", targetHost, targetPort, "", "0", "10000"]
                        arguments += ["AUTH2", configuration.node.username ?? "default", configuration.node.password ?? ""]
                        arguments += ["KEYS"] + names
                        _ = try await sourceAdmin.send(arguments)
                        // Traffic goes on between batches, half the keys on each node.
                        try await progress(20)
                    }
                    for admin in slotOwners {
                        _ = try await admin.send("CLUSTER", "SETSLOT", "\(slot.rawValue)", "NODE", targetID)
                    }
                    migrated.withLock { $0 = true }
                    after.withLock { $0 = operations.value + 200 }
                }
                try await group.waitForAll()
            } }
            #expect(migrated.withLock { $0 }, "the migration finished")
            let problems = errors.withLock { $0 }
            #expect(problems.isEmpty, "\(problems.count) failures: \(problems.prefix(10))")
            #expect(redis.primary(forKey: keys[0]) == target, "MOVED taught the client the slot's new owner")
            let redirections = redis.redirections
            #expect(redirections.ask > 0, "commands followed ASK during the migration")
            #expect(redirections.moved > 0, "commands followed MOVED after it")
            #expect(tryAgainExhausted.value == 0, "every MGET was served once its keys were together again")
            #expect(mgets.value > 0)
            // Every increment landed exactly once, on the target.
            let counted = increments.withLock { $0 }
            let finals = try await redis.mget(keys)
            for (key, value) in zip(keys, finals) {
                #expect(value.map { String(decoding: $0, as: UTF8.self) } == String(counted[key] ?? 0), "\(key)")
            }
            #expect(try await targetAdmin.send("CLUSTER", "COUNTKEYSINSLOT", "\(slot.rawValue)").integer == Int64(keys.count))
            print("slot migration under traffic: \(operations.value) rounds, \(redirections.ask) ASK, \(redirections.moved) MOVED, \(redirections.tryAgain) TRYAGAIN followed; \(mgets.value) MGETs, \(tryAgainExhausted.value) of them still TRYAGAIN at their command timeout")
        } catch {
            Issue.record(error)
        }
        for admin in admins { await admin.shutdown() }
        await redis.shutdown()
        await cluster.down()
    }

    /// A subscription listens on one node; when that node is killed it moves to
    /// another and receives what is published afterwards; a cluster client's commands
    /// to the killed primary's slots fail fast, then reach the replica that took over.
    @Test func aKilledNodeMovesTheSubscriptionAndItsSlotsToTheReplicaThatTookOver() async throws {
        let cluster = try await PrivateRedis.start("subscription", cluster: true)
        var configuration = try RESPClusterConfiguration(url: cluster.url)
        configuration.node.commandTimeout = .milliseconds(500)
        configuration.node.connectTimeout = .milliseconds(500)
        configuration.node.reconnectBackoffMaximum = .milliseconds(200)
        configuration.minimumRefreshInterval = .milliseconds(200)
        configuration.subscriptionCheckInterval = .milliseconds(100)
        let redis = try RESPClusterClient(configuration: configuration)
        do {
            let channel = TestEnvironment.uniqueName("moving")
            let subscription = try await redis.subscribe(channels: [channel])
            let listening = try #require(subscription.node)
            let nodes = try await cluster.nodes()
            let listener = try #require(nodes.first { $0.address == listening })
            // A key whose primary dies with the subscription's node: that node itself
            // if it is a primary, else a primary other than its own (a shard must not be
            // lost whole).
            let prefix = TestEnvironment.uniqueName("survivor")
            let key = try #require((0..<200).map { "\(prefix):\($0)" }.first { candidate in
                guard let owner = redis.primary(forKey: candidate) else { return false }
                if listener.role == "primary" { return owner == listening }
                return nodes.contains { $0.address == owner && listener.role != "replica-of-\($0.name)" }
            })
            #expect(try await redis.set(key, to: "kept"))
            let owner = try #require(redis.primary(forKey: key))
            let primary = try #require(nodes.first { $0.address == owner })
            let victims = owner == listening ? [primary] : [primary, listener]
            let ownerAdmin = try nodeClient(owner, url: cluster.url)
            _ = try await ownerAdmin.send("WAIT", "1", "5000")
            await ownerAdmin.shutdown()
            for victim in victims { try await cluster.devServices("stop", victim.name) }

            // Commands to the dead primary's slots fail fast until the replica takes
            // over, then work on the same client.
            let start = ContinuousClock.now
            _ = try? await redis.get(key)
            #expect(ContinuousClock.now - start < .seconds(10), "a command to a dead node never hangs")
            let value = try await eventually(timeout: .seconds(60)) { () -> String? in try await redis.getString(key) }
            #expect(value == "kept", "\(String(describing: value))")
            #expect(redis.primary(forKey: key) != nil)
            #expect(!victims.contains { $0.address == redis.primary(forKey: key) }, "the key's slot moved to the replica")

            // The subscription moved: a message published now arrives.
            let received = Locked<[String]>([])
            let reader = Task {
                for try await message in subscription {
                    received.withLock { $0.append(message.payloadString) }
                    if message.payloadString == "after" { return }
                }
            }
            let arrived = try await eventually(timeout: .seconds(60)) { () -> Bool? in
                _ = try await redis.publish("after", to: channel)
                return received.withLock { $0.contains("after") } ? true : nil
            }
            #expect(arrived == true, "a message published after the kill arrived")
            #expect(subscription.node != listening, "the subscription moved off \(listening)")
            reader.cancel()
            await subscription.close()
        } catch {
            Issue.record(error)
        }
        await redis.shutdown()
        await cluster.down()
    }

    /// One primary with a replica, the primary's address in the client (as
    /// ElastiCache's primary endpoint): a coordinated failover makes the old primary
    /// answer `READONLY` (the client reopens its connection), a failover back makes
    /// writes work again on the same client, and a killed primary fails commands fast
    /// (a connection error or the command timeout, never a hang) until it is back.
    @Test func aPrimaryEndpointFailsOverAndTheClientFailsFastAndRecovers() async throws {
        let pair = try await PrivateRedis.start("primary", cluster: false)
        var configuration = try RESPConfiguration(url: pair.url)
        configuration.commandTimeout = .milliseconds(500)
        configuration.connectTimeout = .milliseconds(500)
        configuration.reconnectBackoffMinimum = .milliseconds(20)
        configuration.reconnectBackoffMaximum = .milliseconds(200)
        let redis = try RESPClient(configuration: configuration)
        do {
            #expect(try await redis.set("k", to: "1"))

            // Roles swap: the client's node is a replica now. Writes are refused with
            // READONLY (the connection is reopened, to the same address); reads served.
            try await pair.devServices("failover", "repl-2")
            let refused = await expectError { try await redis.set("k", to: "2") }
            #expect((refused as? RESPError)?.isReadOnlyReplica == true, "\(String(describing: refused))")
            #expect(try await redis.getString("k") == "1")

            // Back: the same client writes again.
            try await pair.devServices("failover", "repl-1")
            let written = try await eventually(timeout: .seconds(30)) { () -> Bool? in
                try await redis.set("k", to: "3") ? true : nil
            }
            #expect(written == true)
            #expect(try await redis.getString("k") == "3")

            // The primary is killed: every command fails, with a connection error or
            // the command timeout, and none hangs (each well within 20 command timeouts).
            try await pair.devServices("stop", "repl-1")
            for attempt in 0..<5 {
                let start = ContinuousClock.now
                let error = await expectError { try await redis.set("k", to: "4") }
                let elapsed = ContinuousClock.now - start
                let kind = (error as? RESPError)?.kind
                #expect(kind == .connection || kind == .timeout, "attempt \(attempt): \(String(describing: error))")
                #expect(elapsed < configuration.commandTimeout * 20, "attempt \(attempt) took \(elapsed)")
            }
            // It comes back (empty, following nobody: the primary again): the client reconnects.
            try await pair.devServices("start", "repl-1")
            let back = try await eventually(timeout: .seconds(30)) { () -> Bool? in
                try await redis.set("k", to: "5") ? true : nil
            }
            #expect(back == true)
            #expect(try await redis.getString("k") == "5")
        } catch {
            Issue.record(error)
        }
        await redis.shutdown()
        await pair.down()
    }
}

/// A counter shared by tasks.
final class SharedCount: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    func add() { count.add(1, ordering: .relaxed) }
}

/// A value behind a lock, shared by tasks.
final class Locked<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    init(_ value: Value) { state = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { state.withLock { body(&$0) } }
}
