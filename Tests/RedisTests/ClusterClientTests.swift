@testable import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// A cluster client on the run's shared cluster (`REDIS_CLUSTER_URL`), configured by
/// `configure`.
func makeClusterClient(
    url: String? = nil, _ configure: (inout RESPClusterConfiguration) -> Void = { _ in }
) throws -> RESPClusterClient {
    var configuration = try RESPClusterConfiguration(url: url ?? TestEnvironment.redisClusterURL())
    configuration.node.commandTimeout = .seconds(5)
    configuration.node.connectTimeout = .seconds(5)
    configure(&configuration)
    return try RESPClusterClient(configuration: configuration)
}

/// Runs `body` with a cluster client, shut down afterwards, also on failure.
@discardableResult
func withClusterClient<T>(
    url: String? = nil, _ configure: (inout RESPClusterConfiguration) -> Void = { _ in },
    _ body: (RESPClusterClient) async throws -> T
) async throws -> T {
    let client = try makeClusterClient(url: url, configure)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// A client of the one node at `address` (`host:port`), with the cluster URL's
/// credentials.
func nodeClient(_ address: String, url: String) throws -> RESPClient {
    var configuration = try RESPClusterConfiguration(url: url).node
    let colon = try #require(address.lastIndex(of: ":"))
    configuration.endpoint = .tcp(host: String(address[..<colon]), port: try #require(Int(address[address.index(after: colon)...])))
    configuration.commandTimeout = .seconds(5)
    configuration.connectionCount = 1
    return try RESPClient(configuration: configuration)
}

@Suite struct ClusterConfigurationTests {
    @Test func aClusterURLNamesSeedsCredentialsAndTheSwitch() throws {
        let c = try RESPClusterConfiguration(url: "redis://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/0?cluster=true")
        #expect(c.seeds == [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 6379), .tcp(host: "::1", port: 7002)])
        #expect(c.node.username == "app" && c.node.password == "s@cret" && c.node.database == 0 && c.node.tls == nil)
        #expect(c.description == "redis://app:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002/0?cluster=true")
        #expect(!c.description.contains("cret"))

        let tls = try RESPClusterConfiguration(url: "rediss://:pw@a.example:6380/?cluster=yes&tls_ca_file=/ca.pem")
        #expect(tls.seeds == [.tcp(host: "a.example", port: 6380)])
        #expect(tls.node.tls?.trustRoots == .file("/ca.pem") && tls.node.username == nil && tls.node.password == "pw")
        #expect(tls.description == "rediss://:***@a.example:6380/0?tls_ca_file=/ca.pem&cluster=true")

        #expect(RESPClusterConfiguration.isClusterURL("redis://h:1,h:2/0?cluster=true"))
        #expect(!RESPClusterConfiguration.isClusterURL("redis://h:1/0"))
        #expect(!RESPClusterConfiguration.isClusterURL("redis://h:1/0?cluster=false"))
    }

    @Test(arguments: [
        ("redis://a:1,b:2/0", "cluster=true"),
        ("redis://:pw@a:1/3?cluster=true", "only database 0"),
        ("unix:///tmp/redis.sock?cluster=true", "TCP"),
        ("redis://a:1,,b:2/0?cluster=true", "no host"),
        ("redis://a:1/0?cluster=maybe", "not a Redis URL"),
        ("redis://:topsecret@a:99999/0?cluster=true", "invalid port"),
    ])
    func invalidClusterURLsAreRefusedWithoutTheirPassword(url: String, reason: String) throws {
        let error = try #require(throws: RESPError.self) { try RESPClusterConfiguration(url: url) }
        #expect(error.kind == .configuration)
        #expect(error.message.contains(reason), "\(error.message)")
        #expect(!error.message.contains("topsecret"))
    }

    @Test func theFactoryPicksTheClientByTheURL() throws {
        let cluster = try RESPClients.make(url: "redis://a:1,b:2/0?cluster=true") { $0.commandTimeout = .milliseconds(250) }
        let clusterClient = try #require(cluster as? RESPClusterClient)
        #expect(clusterClient.configuration.node.commandTimeout == .milliseconds(250))
        #expect(clusterClient.configuration.seeds.count == 2)
        let single = try RESPClients.make(url: "redis://a:1/0") { $0.connectionCount = 3 }
        #expect((single as? RESPClient)?.configuration.connectionCount == 3)
    }
}

/// The cluster client against the run's shared cluster: routing, splitting, scripts,
/// pub/sub. (The tests that change the cluster run on private ones:
/// ClusterFailureTests.)
@Suite struct ClusterClientTests {
    @Test func everyKeyGoesToThePrimaryThatServesItsSlot() async throws {
        let url = try TestEnvironment.redisClusterURL()
        try await withClusterClient { redis in
            let prefix = TestEnvironment.uniqueName("route")
            let keys = (0..<60).map { "\(prefix):\($0)" }
            for (i, key) in keys.enumerated() {
                #expect(try await redis.set(key, to: "v\(i)", expiration: .seconds(60)))
            }
            for (i, key) in keys.enumerated() {
                #expect(try await redis.getString(key) == "v\(i)")
            }
            // Each key lives on the primary the client routed it to: the node has it,
            // and the cluster agrees on the slot.
            let primaries = redis.knownPrimaries
            #expect(primaries.count == 3)
            var perNode: [String: Int] = [:]
            for key in keys {
                let owner = try #require(redis.primary(forKey: key))
                perNode[owner, default: 0] += 1
                let client = try nodeClient(owner, url: url)
                #expect(try await client.exists(key), "\(key) on \(owner)")
                let slot = try await client.send("CLUSTER", "KEYSLOT", key).integer
                #expect(slot == Int64(HashSlot(key: key).rawValue))
                await client.shutdown()
            }
            #expect(perNode.count == 3, "60 keys spread over the three primaries: \(perNode)")
            #expect(try await redis.del(keys) == keys.count)
        }
    }

    @Test func multiKeyCommandsAreSplitBySlotWithRepliesInKeyOrderAndOneRoundTripPerNode() async throws {
        try await withClusterClient { redis in
            let prefix = TestEnvironment.uniqueName("mget")
            let keys = (0..<40).map { "\(prefix):\($0)" }
            _ = try await redis.pipeline(keys.enumerated().filter { $0.offset % 3 != 0 }.map {
                RESPCommands.SET($0.element, to: Array("v\($0.offset)".utf8), expiration: .seconds(60))
            })
            let before = redis.roundTrips
            let values = try await redis.mget(keys + [keys[1], "\(prefix):missing"])
            #expect(redis.roundTrips - before == 3, "one pipeline per primary")
            #expect(values.count == 42)
            for (i, value) in values.prefix(40).enumerated() {
                #expect(value.map { String(decoding: $0, as: UTF8.self) } == (i % 3 == 0 ? nil : "v\(i)"), "key \(i)")
            }
            #expect(values[40].map { String(decoding: $0, as: UTF8.self) } == "v1")
            #expect(values[41] == nil)
            #expect(try await redis.exists(keys) == 26)
            #expect(try await redis.unlink(Array(keys.prefix(20))) == 13)
            #expect(try await redis.del(keys) == 13)
            #expect(try await redis.exists(keys) == 0)

            // Hash tags keep keys together: one MGET, one node.
            let tagged = (0..<5).map { "{\(prefix)}:\($0)" }
            for key in tagged { try await redis.set(key, to: key, expiration: .seconds(60)) }
            let start = redis.roundTrips
            #expect(try await redis.mget(tagged).compactMap { $0 }.count == 5)
            #expect(redis.roundTrips == start + 1, "keys of one slot: one MGET, to their node")
            _ = try await redis.del(tagged)

            // Another command over keys of several slots is refused before it is sent.
            let refused = await expectError {
                try await redis.evalSHA(RESPScript(source: "return 1"), keys: [keys[0], keys[1], keys[2]])
            }
            #expect((refused as? RESPError)?.serverErrorPrefix == "CROSSSLOT")
        }
    }

    @Test func pipelinesAreSplitByNodeAndTheirResultsComeBackInRequestOrder() async throws {
        try await withClusterClient { redis in
            let prefix = TestEnvironment.uniqueName("pipe")
            let keys = (0..<30).map { "\(prefix):\($0)" }
            var commands: [AnyRESPCommand] = []
            for (i, key) in keys.enumerated() {
                commands.append(AnyRESPCommand(.set(key, to: Array("\(i)".utf8), expiration: .seconds(60))))
                commands.append(AnyRESPCommand(.incr(key)))
                if i % 10 == 0 { commands.append(AnyRESPCommand(.ping)) }
            }
            commands.append(AnyRESPCommand(.raw("HSET", keys[0] + ":h", "f", "1")))  // no keys known: any node
            let results = try await redis.pipeline(commands)
            #expect(results.count == commands.count)
            var position = 0
            for i in keys.indices {
                #expect((try? results[position].get()) == .simpleString("OK"))
                #expect((try? results[position + 1].get()) == .integer(Int64(i + 1)), "INCR of key \(i)")
                position += 2
                if i % 10 == 0 {
                    #expect((try? results[position].get()) == .simpleString("PONG"))
                    position += 1
                }
            }
            // A keyless command landed on whatever node: served there, or MOVED to the
            // key's node and served there.
            #expect((try? results[position].get()) == .integer(1))

            // The variadic form, with typed results.
            let (a, b, c) = try await redis.pipeline(.get(keys[0]), .incrBy(keys[1], Int64(10)), .pttl(keys[2]))
            #expect(try a.get() == Array("1".utf8))
            #expect(try b.get() == 12)
            #expect(try c.get() > 0)
            _ = try await redis.del(keys + [keys[0] + ":h"])
        }
    }

    @Test func scriptsAreLoadedOnEachNodeThatDoesNotKnowThem() async throws {
        let url = try TestEnvironment.redisClusterURL()
        try await withClusterClient { redis in
            // A script no node has seen: its source carries a unique name.
            let prefix = TestEnvironment.uniqueName("script")
            let script = RESPScript(source: "-- \(prefix)\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
            let keys = (0..<12).map { "\(prefix):\($0)" }
            // Alone, then in a pipeline: every primary ends up with it.
            #expect(try await redis.evalSHA(script, keys: [keys[0]], arguments: ["5"]) == .integer(5))
            let results = try await redis.pipeline(keys.map { RESPCommands.EVALSHA(script, keys: [$0], arguments: [Array("2".utf8)]) })
            #expect(results.map { try? $0.get() } == [.integer(7)] + Array(repeating: .integer(2), count: 11))
            for primary in redis.knownPrimaries {
                let client = try nodeClient(primary, url: url)
                let exists = try await client.send("SCRIPT", "EXISTS", script.sha1).array
                #expect(exists == [.integer(1)], "the script is loaded on \(primary)")
                await client.shutdown()
            }
            _ = try await redis.del(keys)
        }
    }

    @Test func aSubscriptionOnOneNodeReceivesWhatIsPublishedOnAnyNode() async throws {
        let url = try TestEnvironment.redisClusterURL()
        try await withClusterClient { redis in
            let channel = TestEnvironment.uniqueName("channel")
            let subscription = try await redis.subscribe(channels: [channel])
            let listening = try #require(subscription.node)
            // Published on every primary, one message each, and through the client.
            var sent: [String] = []
            for primary in redis.knownPrimaries {
                let client = try nodeClient(primary, url: url)
                _ = try await client.publish("from \(primary)", to: channel)
                sent.append("from \(primary)")
                await client.shutdown()
            }
            _ = try await redis.publish("through the client", to: channel)
            sent.append("through the client")
            var received: [String] = []
            for try await message in subscription {
                received.append(message.payloadString)
                if received.count == sent.count { break }
            }
            #expect(Set(received) == Set(sent), "listening on \(listening)")
        }
    }
}

/// How many connections a cluster client keeps per node, counted by the servers
/// (`CLIENT LIST` of a user of the test's own on every node of the shared cluster).
@Suite struct ClusterConnectionTests {
    @Test func aClientKeepsConnectionCountPerPrimaryAndOneConnectionPerReplicaItAskedForTheTopology() async throws {
        let url = try TestEnvironment.redisClusterURL()
        let shared = try RESPClusterConfiguration(url: url)
        let admins = try shared.seeds.map { seed -> RESPClient in
            var node = shared.node
            node.endpoint = seed
            node.commandTimeout = .seconds(10)
            node.connectionCount = 1
            return try RESPClient(configuration: node)
        }
        let user = TestEnvironment.uniqueName("conns")
        let password = TestEnvironment.uniqueName("pw")
        do {
            for admin in admins {
                _ = try await admin.send("ACL", "SETUSER", user, "on", ">\(password)", "~*", "&*", "+@all")
            }
            var configuration = shared
            configuration.node.username = user
            configuration.node.password = password
            configuration.node.commandTimeout = .seconds(5)
            configuration.minimumRefreshInterval = .milliseconds(20)
            let redis = try RESPClusterClient(configuration: configuration)
            let keys = (0..<60).map { "\(user):\($0)" }
            _ = try await redis.pipeline(keys.map { RESPCommands.SET($0, to: Array("v".utf8), expiration: .seconds(60)) })
            for key in keys { _ = try await redis.get(key) }
            // Refreshes go round every node: 12 of them ask each of the 6 nodes.
            for _ in 0..<12 {
                let before = redis.refreshCount
                let node = try #require(redis.routingSnapshot?.primaries.first)
                redis.serverReportedChange(node)
                #expect(try await eventually(timeout: .seconds(30)) { redis.refreshCount > before ? true : nil } == true)
            }
            let primaries = Set(redis.knownPrimaries)
            var counts: [String: Int] = [:]
            for (seed, admin) in zip(shared.seeds, admins) {
                let list = try await admin.send("CLIENT", "LIST").string ?? ""
                counts[seed.description] = list.split(separator: "\n").filter { $0.contains(" user=\(user) ") }.count
            }
            for (node, count) in counts {
                if primaries.contains(node) {
                    #expect(count <= configuration.node.connectionCount && count >= 1, "primary \(node): \(count) connections")
                } else {
                    #expect(count == 1, "replica \(node), asked for the topology: \(count) connections")
                }
            }
            print("cluster connections per node (\(primaries.count) primaries, connectionCount \(configuration.node.connectionCount)): \(counts.sorted { $0.key < $1.key })")
            _ = try await redis.del(keys)
            await redis.shutdown()
        } catch {
            Issue.record(error)
        }
        for admin in admins {
            _ = try? await admin.send("ACL", "DELUSER", user)
            await admin.shutdown()
        }
    }
}
