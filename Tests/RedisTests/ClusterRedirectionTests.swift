@testable import CacheAsideRedis
import Testing

/// MOVED and ASK, the other cluster errors, and what MOVED does to a slot map.
@Suite struct ClusterRedirectionTests {
    let answering = ClusterNodeAddress(host: "10.0.0.9", port: 6379)

    @Test func movedAndAskFromARealClusterParse() throws {
        let moved = try #require(ClusterRedirection(errorMessage: ClusterFixtures.movedError))
        #expect(moved == ClusterRedirection(kind: .moved, slot: try #require(HashSlot(12182)), host: "127.0.0.1", port: 30441))
        #expect(moved.slot == HashSlot(key: "foo"))
        #expect(moved.description == ClusterFixtures.movedError)
        let ask = try #require(ClusterRedirection(errorMessage: ClusterFixtures.askError))
        #expect(ask.kind == .ask && ask.slot.rawValue == 12182 && ask.port == 23364)
        #expect(ask.description == ClusterFixtures.askError)
        #expect(ClusterRedirection(reply: .error(ClusterFixtures.movedError)) == moved)
        #expect(ClusterRedirection(error: RESPError(kind: .server, message: ClusterFixtures.askError)) == ask)
        #expect(ClusterRedirection(error: RESPError(kind: .connection, message: ClusterFixtures.askError)) == nil)
        #expect(ClusterRedirection(reply: .simpleString(ClusterFixtures.movedError)) == nil)
    }

    @Test(arguments: [
        ("MOVED 3999 ::1:6381", "::1", 6381),
        ("MOVED 3999 [::1]:6381", "::1", 6381),
        ("MOVED 3999 [2001:db8::7]:7000", "2001:db8::7", 7000),
        ("MOVED 3999 :6381", "", 6381),
        ("ASK 0 cache-0001-001.abc.use1.cache.amazonaws.com:6379", "cache-0001-001.abc.use1.cache.amazonaws.com", 6379),
        ("MOVED 16383 10.0.0.5:6379", "10.0.0.5", 6379),
    ])
    func hostsOfEveryShapeParse(message: String, host: String, port: Int) throws {
        let redirection = try #require(ClusterRedirection(errorMessage: message))
        #expect(redirection.host == host)
        #expect(redirection.port == port)
    }

    @Test func anEmptyHostIsTheHostOfTheNodeThatAnswered() throws {
        let redirection = try #require(ClusterRedirection(errorMessage: "MOVED 3999 :6381"))
        #expect(redirection.address(answeredBy: answering) == ClusterNodeAddress(host: "10.0.0.9", port: 6381))
        let named = try #require(ClusterRedirection(errorMessage: "MOVED 3999 10.0.0.2:6381"))
        #expect(named.address(answeredBy: answering) == ClusterNodeAddress(host: "10.0.0.2", port: 6381))
        #expect(ClusterRedirection(errorMessage: "MOVED 3999 [::1]:6381")?.description == "MOVED 3999 [::1]:6381")
    }

    @Test(arguments: [
        "MOVED", "MOVED 3999", "MOVED 3999 127.0.0.1", "MOVED 16384 127.0.0.1:6379", "MOVED -1 h:1",
        "MOVED x h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:port", "MOVED 1 h:1 extra",
        "moved 1 h:1", "ASKING 1 h:1", "ERR MOVED 1 h:1", "", "TRYAGAIN 1 h:1",
    ])
    func malformedRedirectionsAreNotRedirections(message: String) {
        #expect(ClusterRedirection(errorMessage: message) == nil)
    }

    @Test func errorsOfARealClusterAreClassified() throws {
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.movedError)
            == .moved(try #require(ClusterRedirection(errorMessage: ClusterFixtures.movedError))))
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.askError)
            == .ask(try #require(ClusterRedirection(errorMessage: ClusterFixtures.askError))))
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.tryAgainError) == .tryAgain)
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.clusterDownError) == .clusterDown)
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.crossSlotError) == .crossSlot)
        #expect(ClusterErrorClass(errorMessage: ClusterFixtures.readOnlyError) == .readOnly)
        #expect(ClusterErrorClass(errorMessage: "LOADING Redis is loading the dataset in memory") == .unavailable)
        #expect(ClusterErrorClass(errorMessage: "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.") == .unavailable)
        #expect(ClusterErrorClass(errorMessage: "WRONGTYPE Operation against a key holding the wrong kind of value") == .other)
        #expect(ClusterErrorClass(errorMessage: "MOVED nonsense") == .other)
        #expect(ClusterErrorClass(reply: .error(ClusterFixtures.clusterDownError)) == .clusterDown)
        #expect(ClusterErrorClass(reply: .bulkString([])) == nil)

        let refresh = [ClusterFixtures.movedError, ClusterFixtures.clusterDownError, ClusterFixtures.readOnlyError]
        let noRefresh = [ClusterFixtures.askError, ClusterFixtures.tryAgainError, ClusterFixtures.crossSlotError, "ERR x"]
        #expect(refresh.allSatisfy { ClusterErrorClass(errorMessage: $0).suggestsTopologyChange })
        #expect(noRefresh.allSatisfy { !ClusterErrorClass(errorMessage: $0).suggestsTopologyChange })
    }

    // MARK: MOVED applied to a slot map

    /// Shards A (7000, replica 7100) on 0-8191 and B (7001, replica 7101) on 8192-16383.
    func twoShards() throws -> ClusterSlotMap {
        let reply = RESPReply.array([
            SyntheticCluster.shard(slots: [0...8191], nodes: [
                SyntheticCluster.shardNode(id: "a", port: 7000, role: "master"),
                SyntheticCluster.shardNode(id: "ar", port: 7100, role: "replica"),
            ]),
            SyntheticCluster.shard(slots: [8192...16383], nodes: [
                SyntheticCluster.shardNode(id: "b", port: 7001, role: "master"),
                SyntheticCluster.shardNode(id: "br", port: 7101, role: "replica"),
            ]),
        ])
        return try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: reply), tls: false, answeredBy: "127.0.0.1")
    }

    func node(_ port: Int) -> ClusterNodeAddress { ClusterNodeAddress(host: "127.0.0.1", port: port) }

    func moved(_ slot: Int, _ port: Int, host: String = "127.0.0.1") throws -> ClusterRedirection {
        ClusterRedirection(kind: .moved, slot: try #require(HashSlot(slot)), host: host, port: port)
    }

    @Test func movedToTheKnownPrimaryChangesNothing() throws {
        var map = try twoShards()
        let before = map
        #expect(map.apply(moved: try moved(5, 7000), answeredBy: node(7001)) == .alreadyKnown)
        #expect(map == before)
    }

    @Test func movedToAReplicaOfTheSlotsShardIsAFailoverOfTheWholeShard() throws {
        var map = try twoShards()
        #expect(map.apply(moved: try moved(5, 7100), answeredBy: node(7000)) == .replicaPromoted)
        // Every slot of shard A follows, not only slot 5; B is untouched.
        #expect(map.primary(for: try #require(HashSlot(0))) == node(7100))
        #expect(map.primary(for: try #require(HashSlot(8191))) == node(7100))
        #expect(map.shard(for: try #require(HashSlot(8191)))?.replicas == [])
        #expect(map.primary(for: try #require(HashSlot(8192))) == node(7001))
        #expect(map.coversAllSlots)
        #expect(!map.nodes.contains(node(7000)))
    }

    @Test func movedToAnotherShardsPrimaryMovesThatSlotOnly() throws {
        var map = try twoShards()
        #expect(map.apply(moved: try moved(100, 7001), answeredBy: node(7000)) == .movedToKnownPrimary)
        #expect(map.primary(for: try #require(HashSlot(100))) == node(7001))
        #expect(map.primary(for: try #require(HashSlot(99))) == node(7000))
        #expect(map.primary(for: try #require(HashSlot(101))) == node(7000))
        #expect(map.slots(ofShard: 0) == [0...99, 101...8191])
        #expect(map.slots(ofShard: 1) == [100...100, 8192...16383])
        #expect(map.assignedSlotCount == 16384)
    }

    @Test func movedToAnotherShardsReplicaMakesItThePrimaryOfANewShard() throws {
        var map = try twoShards()
        #expect(map.apply(moved: try moved(100, 7101), answeredBy: node(7000)) == .movedToFormerReplica)
        #expect(map.primary(for: try #require(HashSlot(100))) == node(7101))
        #expect(map.shards.count == 3)
        #expect(map.shard(for: try #require(HashSlot(9000)))?.replicas == [])
        #expect(map.primary(for: try #require(HashSlot(9000))) == node(7001))
    }

    @Test func movedToAnUnknownNodeAddsItAndResolvesAnEmptyHost() throws {
        var map = try twoShards()
        #expect(map.apply(moved: try moved(16000, 7002, host: ""), answeredBy: node(7001)) == .movedToUnknownNode)
        #expect(map.primary(for: try #require(HashSlot(16000))) == node(7002))
        #expect(map.nodes.contains(node(7002)))
        // A second MOVED to it is a known primary now.
        #expect(map.apply(moved: try moved(16001, 7002), answeredBy: node(7001)) == .movedToKnownPrimary)
        // A slot nobody served gets an owner.
        var empty = ClusterSlotMap()
        #expect(empty.apply(moved: try moved(1, 7000), answeredBy: node(7000)) == .movedToUnknownNode)
        #expect(empty.assignedSlotCount == 1)
        #expect(empty.apply(moved: try moved(1, 7000), answeredBy: node(7000)) == .alreadyKnown)
        #expect(empty.assignedSlotCount == 1)
    }

    @Test func aMovedAfterTheRealFailoverRoutesAsTheNewTopologyDoes() throws {
        // The map from before the failover, patched by the MOVED that the cluster sent
        // after it, routes slot 5061 as the topology read after the failover does.
        var before = try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: ClusterFixtures.shardsSteady), tls: false, answeredBy: "127.0.0.1")
        let redirection = try #require(ClusterRedirection(errorMessage: ClusterFixtures.movedAfterFailoverError))
        let after = try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: ClusterFixtures.shardsAfterFailover), tls: false, answeredBy: "127.0.0.1")
        // Steady: cluster-1 (23364) primary of 0-5460. The fixtures' failover went
        // 23364 -> 24928 -> 23364, so the MOVED names the primary the map has already.
        #expect(before.apply(moved: redirection, answeredBy: node(24015)) == .alreadyKnown)
        #expect(before.primary(for: redirection.slot) == after.primary(for: redirection.slot))
    }
}
