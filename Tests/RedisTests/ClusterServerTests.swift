@testable import CacheAsideRedis
import ProcessRunner
import TestSupport
import Testing

/// A private cluster (or replicated pair) from `scripts/dev-services up --cluster`
/// (`--replica`), talked to with today's `RESPClient` one node at a time: the cluster
/// code's parsers and decisions against what a real Redis Cluster says and does.
struct DevServicesCluster {
    var instance: String
    var username: String
    var password: String
    /// Every node of the cluster, from `REDIS_CLUSTER_URL` (empty for a pair).
    var seeds: [ClusterNodeAddress]
    /// The pair's nodes, from `REDIS_PRIMARY_URL` and `REDIS_REPLICA_URL` (empty for a cluster).
    var pair: [ClusterNodeAddress]

    /// Starts the instance with `flags`, runs `body`, and always brings it down.
    static func with<T>(
        _ flags: [String], _ body: (DevServicesCluster) async throws -> T
    ) async throws -> T {
        let name = TestEnvironment.uniqueName("cluster")
        do {
            // --only: no PostgreSQL and standalone Redis, which these tests do not use.
            let output = try await run(["up"] + flags + ["--only"], instance: name)
            let cluster = try parse(output, instance: name)
            let result = try await body(cluster)
            _ = try? await run(["down"], instance: name)
            return result
        } catch {
            _ = try? await run(["down"], instance: name)
            throw error
        }
    }

    /// `scripts/dev-services --instance NAME ARGUMENTS...` at a lower CPU priority
    /// (`nice`), as are the nodes it starts: setting up a cluster keeps a core busy for
    /// a while, and the other tests' servers and clients come first. Returns its
    /// standard output; throws with its standard error when it fails.
    static func run(_ arguments: [String], instance: String) async throws -> String {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/dev-services").path
        let full = ["-n", "10", script, "--instance", instance] + arguments
        let outcome = try await ProcessRunner.run("/usr/bin/nice", full)
        guard outcome.status == 0 else {
            throw DevServicesFailed(arguments: arguments, status: outcome.status, standardError: outcome.standardError)
        }
        return outcome.standardOutput
    }

    /// Reads `export NAME='redis://user:pass@host:port,host:port/0?...'` lines.
    static func parse(_ output: String, instance: String) throws -> DevServicesCluster {
        var cluster = DevServicesCluster(instance: instance, username: "", password: "", seeds: [], pair: [])
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let name = parts[0].split(separator: " ").last.map(String.init) ?? ""
            guard ["REDIS_CLUSTER_URL", "REDIS_PRIMARY_URL", "REDIS_REPLICA_URL"].contains(name) else { continue }
            var url = String(parts[1].filter { $0 != "'" && $0 != "\"" })
            guard url.hasPrefix("redis://"), let at = url.lastIndex(of: "@") else { continue }
            let credentials = url[url.index(url.startIndex, offsetBy: 8)..<at].split(separator: ":", maxSplits: 1)
            cluster.username = String(credentials.first ?? "")
            cluster.password = String(credentials.last ?? "")
            url = String(url[url.index(after: at)...])
            let hosts = url.prefix { $0 != "/" && $0 != "?" }
            let addresses = hosts.split(separator: ",").compactMap { hostPort -> ClusterNodeAddress? in
                guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]) else { return nil }
                return ClusterNodeAddress(host: String(hostPort[..<colon]), port: port)
            }
            if name == "REDIS_CLUSTER_URL" {
                #expect(url.hasSuffix("/0?cluster=true"), "\(url)")
                cluster.seeds = addresses
            } else {
                cluster.pair += addresses
            }
        }
        guard !cluster.seeds.isEmpty || !cluster.pair.isEmpty else {
            throw NoClusterURLs(output: output)
        }
        return cluster
    }

    /// A client of one node.
    func client(_ node: ClusterNodeAddress) throws -> RESPClient {
        var configuration = RESPConfiguration(
            endpoint: .tcp(host: node.host, port: node.port), username: username, password: password)
        configuration.commandTimeout = .seconds(5)
        configuration.connectTimeout = .seconds(5)
        configuration.connectionCount = 1
        configuration.reconnectBackoffMinimum = .milliseconds(50)
        configuration.reconnectBackoffMaximum = .milliseconds(500)
        return try RESPClient(configuration: configuration)
    }

    /// Runs `body` with a client of `node`, shut down afterwards.
    func on<T>(_ node: ClusterNodeAddress, _ body: (RESPClient) async throws -> T) async throws -> T {
        let client = try client(node)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// The slot map as `node` sees it, from CLUSTER SHARDS.
    func slotMap(from node: ClusterNodeAddress) async throws -> ClusterSlotMap {
        try await on(node) { redis in
            let reply = try await redis.send("CLUSTER", "SHARDS")
            return try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: reply), tls: false, answeredBy: node.host)
        }
    }

    /// A node's role from ROLE: `master` or `slave`.
    func role(of node: ClusterNodeAddress) async throws -> String? {
        try await on(node) { try await $0.send("ROLE").array?.first?.string }
    }

    func devServices(_ arguments: String...) async throws {
        _ = try await DevServicesCluster.run(arguments, instance: instance)
    }
}

struct NoClusterURLs: Error {
    var output: String
}

struct DevServicesFailed: Error {
    var arguments: [String]
    var status: Int32
    var standardError: String
}

/// A server error as the error reply it came from, for ``ClusterErrorClass``.
func errorReply(_ error: (any Error)?) -> RESPReply? {
    guard let error = error as? RESPError, error.kind == .server else { return nil }
    return .error(error.message)
}

/// One cluster at a time: each test starts its own, and three at once would load a
/// 2-core machine while the rest of the suite runs.
@Suite(.serialized) struct ClusterServerTests {
    @Test func aRealClustersTopologyRoutesEveryKeyAsTheServerDoesThroughMovedAndAsk() async throws {
        try await DevServicesCluster.with(["--cluster"]) { cluster in
            #expect(cluster.seeds.count == 6)
            let seed = cluster.seeds[0]
            let shardsMap = try await cluster.slotMap(from: seed)

            // Every slot has an owner, and every owner is a live primary with a live replica.
            #expect(shardsMap.coversAllSlots, "\(shardsMap)")
            #expect(shardsMap.primaries.count == 3)
            #expect(Set(shardsMap.nodes) == Set(cluster.seeds))
            for shard in shardsMap.shards {
                #expect(try await cluster.role(of: shard.primary) == "master")
                #expect(shard.replicas.count == 1)
                for replica in shard.replicas { #expect(try await cluster.role(of: replica) == "slave") }
            }

            // CLUSTER SLOTS, and CLUSTER SHARDS from every other node, give the same map.
            let slotsMap = try await cluster.on(seed) { redis in
                try ClusterSlotMap(
                    topology: ClusterTopology(clusterSlotsReply: try await redis.send("CLUSTER", "SLOTS"), overTLS: false),
                    tls: false, answeredBy: seed.host)
            }
            #expect(slotsMap == shardsMap)
            for node in cluster.seeds.dropFirst() {
                #expect(try await cluster.slotMap(from: node) == shardsMap, "as \(node) sees it")
            }

            // Our slot of a key is the server's CLUSTER KEYSLOT: edge cases, many keys, bytes.
            var keys: [[UInt8]] = ClusterFixtures.keySlots.map(\.key)
            keys += (0..<300).map { Array("user:\($0):{tag\($0 % 7)}".utf8) }
            keys += (0..<50).map { i in (0..<(i % 40)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ i) } }
            try await cluster.on(seed) { redis in
                for key in keys {
                    let serverSlot = try await redis.send([Array("CLUSTER".utf8), Array("KEYSLOT".utf8), key]).integer
                    #expect(serverSlot == Int64(HashSlot(key: key).rawValue), "\(key)")
                }
            }

            // A key sent to the map's primary is served; sent elsewhere, it is MOVED to
            // that very primary.
            for i in 0..<30 {
                let key = "route:\(i)"
                let slot = HashSlot(key: key)
                let owner = try #require(shardsMap.primary(for: slot))
                let stored = try await cluster.on(owner) { try await $0.send("SET", key, "v\(i)") }
                #expect(stored == .simpleString("OK"))
                let other = try #require(shardsMap.primaries.first { $0 != owner })
                let error = try await cluster.on(other) { redis in
                    await expectError { try await redis.send("GET", key) }
                }
                let redirection = try #require((error as? RESPError).flatMap { ClusterRedirection(error: $0) })
                #expect(redirection.kind == .moved && redirection.slot == slot)
                #expect(redirection.address(answeredBy: other) == owner)
            }

            // An MGET split by slot and node: one MGET per slot group, the groups of a node
            // sent to it, the replies put back in request order; no CROSSSLOT.
            let mgetKeys = (0..<40).map { "route:\($0)" }
            let split = ClusterSplit(keys: mgetKeys.map { Array($0.utf8) }, map: shardsMap)
            #expect(split.batches.count == 3 && split.unassigned.isEmpty)
            var values = ClusterReassembly<RESPReply>(count: mgetKeys.count)
            for batch in split.batches {
                try await cluster.on(batch.node) { redis in
                    for group in batch.groups {
                        let reply = try await redis.send(["MGET"] + group.indices.map { mgetKeys[$0] })
                        try values.place(try #require(reply.array), at: group.indices)
                    }
                }
            }
            let ordered = try values.result()
            #expect(ordered.prefix(30).map(\.string) == (0..<30).map { "v\($0)" })
            #expect(ordered.suffix(10).allSatisfy { $0.isNull })

            // A slot in migration (CLUSTER SETSLOT ... MIGRATING / IMPORTING) answers ASK
            // for a key it does not hold, naming the importing node, which serves the
            // key after ASKING. (Last: it changes the cluster, then undoes the change.)
            let key = "migrating:key"
            let slot = HashSlot(key: key)
            let source = try #require(shardsMap.primary(for: slot))
            let target = try #require(shardsMap.primaries.first { $0 != source })
            let sourceID = try await cluster.on(source) { try await $0.send("CLUSTER", "MYID").string }
            let targetID = try await cluster.on(target) { try await $0.send("CLUSTER", "MYID").string }
            try await cluster.on(target) { redis in
                _ = try await redis.send("CLUSTER", "SETSLOT", slot.description, "IMPORTING", try #require(sourceID))
            }
            try await cluster.on(source) { redis in
                _ = try await redis.send("CLUSTER", "SETSLOT", slot.description, "MIGRATING", try #require(targetID))
                // The key is not on the source: ASK, naming the importing node.
                let error = await expectError { try await redis.send("GET", key) }
                let ask = try #require((error as? RESPError).flatMap { ClusterRedirection(error: $0) })
                #expect(ask.kind == .ask && ask.slot == slot)
                #expect(ask.address(answeredBy: source) == target)
                #expect(ClusterErrorClass(reply: try #require(errorReply(error))) == .ask(ask))
            }
            try await cluster.on(target) { redis in
                // Without ASKING the importing node sends us back; with it, it serves.
                let error = await expectError { try await redis.send("GET", key) }
                let moved = try #require((error as? RESPError).flatMap { ClusterRedirection(error: $0) })
                #expect(moved.kind == .moved && moved.address(answeredBy: target) == source)
                _ = try await redis.send("ASKING")
                #expect(try await redis.send("GET", key).isNull)
            }
            // The topology does not show the migration: the map still routes to the source.
            #expect(try await cluster.slotMap(from: target).primary(for: slot) == source)
            for node in [source, target] {
                try await cluster.on(node) { _ = try await $0.send("CLUSTER", "SETSLOT", slot.description, "STABLE") }
            }
        }
    }

    @Test func afterAPrimaryIsKilledTheStateMachineFindsTheReplicaThatTookOver() async throws {
        try await DevServicesCluster.with(["--cluster"]) { cluster in
            typealias Machine = ClusterTopologyStateMachine<ContinuousClock.Instant>
            var configuration = Machine.Configuration()
            configuration.minimumRefreshInterval = .milliseconds(200)
            var machine = Machine(seeds: cluster.seeds, configuration: configuration, randomSeed: 1)
            let clock = ContinuousClock()

            /// The shell: runs the refreshes the machine asks for until `done` holds.
            func drive(_ first: Machine.Action, until done: (Machine) -> Bool) async throws {
                var action = first
                let deadline = clock.now + .seconds(90)
                while !done(machine) {
                    guard clock.now < deadline else { break }
                    if let refresh = action.refresh {
                        do {
                            let map = try await cluster.slotMap(from: refresh.node)
                            action = machine.refreshSucceeded(refresh.id, map: map, now: clock.now).action
                        } catch {
                            action = machine.refreshFailed(refresh.id, now: clock.now)
                        }
                        continue
                    }
                    let wakeUp = min(action.wakeUp ?? clock.now + .milliseconds(100), clock.now + .milliseconds(100))
                    try await clock.sleep(until: wakeUp)
                    action = machine.tick(now: clock.now)
                }
            }

            try await drive(machine.start(now: clock.now)) { $0.slotMap?.coversAllSlots == true }
            let before = try #require(machine.slotMap)
            let key = "failover:key"
            let slot = HashSlot(key: key)
            let primary = try #require(before.primary(for: slot))
            let replica = try #require(before.shard(for: slot)?.replicas.first)
            let name = try #require(cluster.seeds.firstIndex(of: primary)).advanced(by: 1)

            try await cluster.devServices("stop", "cluster-\(name)")
            // Commands to the dead primary fail to connect: the shell reports it, and the
            // machine refreshes (at most every 200 ms) until a replica has taken over.
            var failures = 0
            try await cluster.on(primary) { client in
                let deadline = clock.now + .seconds(90)
                while machine.slotMap?.primary(for: slot) != replica, clock.now < deadline {
                    do {
                        _ = try await client.send("GET", key)
                    } catch {
                        failures += 1
                        let action = machine.connectionFailed(to: primary, now: clock.now)
                        try await drive(action) { !$0.isRefreshing }
                    }
                    try await clock.sleep(for: .milliseconds(50))
                }
            }
            let after = try #require(machine.slotMap)
            #expect(after.primary(for: slot) == replica, "\(after)")
            #expect(!after.nodes.contains(primary))
            #expect(after.coversAllSlots)
            #expect(failures > 0)
            // The survivors serve the slot; the new primary answers for the key.
            let stored = try await cluster.on(replica) { try await $0.send("SET", key, "after") }
            #expect(stored == .simpleString("OK"))

            // Started again, the old primary rejoins as a replica of the new one.
            try await cluster.devServices("start", "cluster-\(name)")
            #expect(try await cluster.role(of: primary) == "slave")
            // (CLUSTER SHARDS lists it as `loading`, not routed to, until it has acknowledged data.)
            let rejoined = try await eventually(timeout: .seconds(30)) { () -> ClusterSlotMap? in
                let map = try await cluster.slotMap(from: replica)
                return map.shard(for: slot)?.replicas == [primary] ? map : nil
            }
            #expect(rejoined?.shard(for: slot)?.replicas == [primary])
        }
    }

    @Test func theReplicatedPairFailsOverBothWaysAndTheDemotedPrimaryAnswersReadOnly() async throws {
        try await DevServicesCluster.with(["--replica"]) { pair in
            #expect(pair.pair.count == 2)
            let first = pair.pair[0], second = pair.pair[1]
            #expect(try await pair.role(of: first) == "master")
            #expect(try await pair.role(of: second) == "slave")
            let stored = try await pair.on(first) { try await $0.send("SET", "k", "1") }
            #expect(stored == .simpleString("OK"))

            // A coordinated failover: no write is lost, the old primary refuses writes.
            try await pair.devServices("failover", "repl-2")
            #expect(try await pair.role(of: second) == "master")
            #expect(try await pair.on(second) { try await $0.send("GET", "k").string } == "1")
            let refused = try await pair.on(first) { redis in await expectError { try await redis.send("SET", "k", "2") } }
            let message = try #require(errorReply(refused))
            #expect(ClusterErrorClass(reply: message) == .readOnly)
            #expect(ClusterErrorClass(reply: message)?.suggestsTopologyChange == true)

            // The primary dies; its replica is promoted; the dead one comes back as a replica.
            try await pair.devServices("stop", "repl-2")
            try await pair.devServices("promote", "repl-1")
            #expect(try await pair.on(first) { try await $0.send("SET", "k", "3") } == .simpleString("OK"))
            try await pair.devServices("start", "repl-2")
            #expect(try await pair.role(of: second) == "slave")
            let replicated = try await eventually(timeout: .seconds(30)) { () -> String? in
                let value = try await pair.on(second) { try await $0.send("GET", "k").string }
                return value == "3" ? value : nil
            }
            #expect(replicated == "3")
        }
    }
}
