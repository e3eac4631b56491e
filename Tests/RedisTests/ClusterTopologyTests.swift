@testable import CacheAsideRedis
import Testing

/// Builders of synthetic `CLUSTER SHARDS` and `CLUSTER SLOTS` replies, in the shape
/// Redis 7 sends over RESP2.
enum SyntheticCluster {
    static func bulk(_ text: String) -> RESPReply { .bulkString(Array(text.utf8)) }

    /// One node of a `CLUSTER SHARDS` reply, with the fields Redis 7.0 sends.
    static func shardNode(
        id: String, ip: String = "127.0.0.1", endpoint: String? = nil, hostname: String? = nil,
        port: Int, tlsPort: Int? = nil, role: String, offset: Int64 = 100, health: String = "online"
    ) -> RESPReply {
        var fields: [RESPReply] = [bulk("id"), bulk(id), bulk("port"), .integer(Int64(port))]
        if let tlsPort { fields += [bulk("tls-port"), .integer(Int64(tlsPort))] }
        fields += [bulk("ip"), bulk(ip), bulk("endpoint"), bulk(endpoint ?? ip)]
        if let hostname { fields += [bulk("hostname"), bulk(hostname)] }
        fields += [
            bulk("role"), bulk(role), bulk("replication-offset"), .integer(offset), bulk("health"), bulk(health),
        ]
        return .array(fields)
    }

    static func shard(slots: [ClosedRange<Int>], nodes: [RESPReply]) -> RESPReply {
        shard(slotPairs: slots.map { ($0.lowerBound, $0.upperBound) }, nodes: nodes)
    }

    /// A shard whose slot ranges may be nonsense (first after last).
    static func shard(slotPairs: [(Int, Int)], nodes: [RESPReply]) -> RESPReply {
        .array([
            bulk("slots"), .array(slotPairs.flatMap { [RESPReply.integer(Int64($0.0)), .integer(Int64($0.1))] }),
            bulk("nodes"), .array(nodes),
        ])
    }

    /// A `CLUSTER SHARDS` reply of `shards` shards with `replicas` replicas each, as a
    /// cluster in a VPC would send it: the slots split evenly, node `n` of shard `s` at
    /// ``ip(shard:node:)``, port 6379 and TLS port 6380, ids of 40 hex digits, replication
    /// offsets of 9 digits.
    static func shardsReply(shards: Int, replicas: Int) -> RESPReply {
        .array((0..<shards).map { s in
            let nodes = (0...replicas).map { n in
                shardNode(
                    id: id(shard: s, node: n), ip: ip(shard: s, node: n), port: 6379, tlsPort: 6380,
                    role: n == 0 ? "master" : "replica", offset: 123_456_789)
            }
            return shard(slots: [slotRange(shard: s, of: shards)], nodes: nodes)
        })
    }

    static func slotRange(shard s: Int, of shards: Int) -> ClosedRange<Int> {
        (s * HashSlot.count / shards)...((s + 1) * HashSlot.count / shards - 1)
    }

    static func id(shard: Int, node: Int) -> String {
        let hex = String(shard * 100 + node, radix: 16)
        return String(repeating: "0", count: 40 - hex.count) + hex
    }

    /// Node addresses as in a VPC: 10.0.s.n.
    static func ip(shard: Int, node: Int) -> String { "10.0.\(shard / 250).\(shard % 250 * 4 + node + 1)" }
}

/// A `CLUSTER NODES` line, read independently of the parsers under test.
struct ClusterNodesLine {
    var id: String
    var address: ClusterNodeAddress
    var flags: [String]
    var primaryID: String?
    var slots: [ClosedRange<UInt16>]

    static func parse(_ text: String) -> [ClusterNodesLine] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ").map(String.init)
            guard f.count >= 8, let at = f[1].firstIndex(of: "@"), let colon = f[1][..<at].lastIndex(of: ":"),
                  let port = Int(f[1][f[1].index(after: colon)..<at])
            else { return nil }
            let slots = f.dropFirst(8).compactMap { range -> ClosedRange<UInt16>? in
                let ends = range.split(separator: "-").compactMap { UInt16($0) }
                if ends.count == 2 { return ends[0]...ends[1] }
                if ends.count == 1 { return ends[0]...ends[0] }
                return nil
            }
            return ClusterNodesLine(
                id: f[0], address: ClusterNodeAddress(host: String(f[1][..<colon]), port: port),
                flags: f[2].split(separator: ",").map(String.init), primaryID: f[3] == "-" ? nil : f[3], slots: slots)
        }
    }
}

@Suite struct ClusterTopologyTests {
    let host = "127.0.0.1"

    @Test func shardsOfTheRunningClusterParse() throws {
        let topology = try ClusterTopology(clusterShardsReply: ClusterFixtures.shardsSteady)
        #expect(topology.shards.count == 3)
        #expect(topology.assignedSlotCount == 16384)
        for shard in topology.shards {
            let primary = try #require(shard.primary)
            #expect(primary.role == .primary && primary.health == .online)
            #expect(primary.id?.count == 40)
            #expect(primary.endpoint == "127.0.0.1" && primary.ip == "127.0.0.1" && primary.hostname == nil)
            #expect(primary.port != nil && primary.tlsPort != nil && primary.port != primary.tlsPort)
            #expect(primary.replicationOffset != nil)
            #expect(shard.replicas.count == 1)
            #expect(shard.replicas.allSatisfy { $0.health == .online && $0.role == .replica })
        }
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: host)
        #expect(map.coversAllSlots)
        // As cluster-1 (23364), cluster-2 (24015) and cluster-3 (30441) served them.
        #expect(map.primary(for: HashSlot(key: "bar")) == ClusterNodeAddress(host: host, port: 23364))
        #expect(map.primary(for: HashSlot(key: "foo{}{bar}")) == ClusterNodeAddress(host: host, port: 24015))
        #expect(map.primary(for: HashSlot(key: "foo")) == ClusterNodeAddress(host: host, port: 30441))
        #expect(map.shard(for: HashSlot(key: "bar"))?.replicas == [ClusterNodeAddress(host: host, port: 24928)])
        let tlsMap = try ClusterSlotMap(topology: topology, tls: true, answeredBy: host)
        #expect(tlsMap.primary(for: HashSlot(key: "bar")) == ClusterNodeAddress(host: host, port: 21118))
        #expect(tlsMap.primaries.count == 3 && tlsMap.nodes.count == 6)
    }

    @Test func shardsAgreeWithClusterNodesOfTheSameMoment() throws {
        let topology = try ClusterTopology(clusterShardsReply: ClusterFixtures.shardsAfterFailover)
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: host)
        let lines = ClusterNodesLine.parse(ClusterFixtures.nodesAfterFailover)
        #expect(lines.count == 6)
        var checked = 0
        for line in lines where line.flags.contains("master") && !line.slots.isEmpty {
            for range in line.slots {
                for slot in [range.lowerBound, range.upperBound, (range.lowerBound + range.upperBound) / 2] {
                    #expect(map.primary(for: try #require(HashSlot(Int(slot)))) == line.address)
                    checked += 1
                }
            }
        }
        #expect(checked == 9)
        // Every node's id, role and ports as CLUSTER NODES lists them.
        let nodes = topology.shards.flatMap(\.nodes)
        #expect(Set(nodes.compactMap(\.id)) == Set(lines.map(\.id)))
        for line in lines {
            let node = try #require(nodes.first { $0.id == line.id })
            #expect(node.port == line.address.port)
            #expect((node.role == .primary) == line.flags.contains("master"))
            #expect((node.health == .failed) == line.flags.contains("fail"))
        }
    }

    @Test func afterAFailoverTheFailedPrimaryServesNothingAndTheReplicaServesItsSlots() throws {
        let topology = try ClusterTopology(clusterShardsReply: ClusterFixtures.shardsAfterFailover)
        #expect(topology.shards.count == 4)
        let failed = try #require(topology.shards.first { $0.slots.isEmpty })
        #expect(failed.nodes.count == 1)
        #expect(failed.primary?.health == .failed && failed.primary?.port == 24928)
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: host)
        #expect(map.coversAllSlots)
        #expect(map.primary(for: HashSlot(key: "bar")) == ClusterNodeAddress(host: host, port: 23364))
        #expect(map.shard(for: HashSlot(key: "bar"))?.replicas == [])
        #expect(!map.nodes.contains(ClusterNodeAddress(host: host, port: 24928)))
        #expect(map.nodes.count == 5)
        // CLUSTER SLOTS of the same moment routes every slot the same way.
        let fromSlots = try ClusterSlotMap(
            topology: ClusterTopology(clusterSlotsReply: ClusterFixtures.slotsAfterFailover, overTLS: false),
            tls: false, answeredBy: host)
        #expect(fromSlots == map)
        #expect(ClusterRedirection(errorMessage: ClusterFixtures.movedAfterFailoverError)?.port == 23364)
    }

    @Test func aFreshClustersLoadingReplicasAreNotRoutedTo() throws {
        let topology = try ClusterTopology(clusterShardsReply: ClusterFixtures.shardsFresh)
        #expect(topology.shards.flatMap(\.replicas).map(\.health) == [.loading, .loading, .loading])
        #expect(topology.shards.flatMap(\.replicas).allSatisfy { $0.replicationOffset == 0 })
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: host)
        #expect(map.coversAllSlots)
        #expect(map.shards.allSatisfy { $0.replicas.isEmpty })
        // CLUSTER SLOTS of that moment leaves those replicas out altogether.
        let slots = try ClusterTopology(clusterSlotsReply: ClusterFixtures.slotsFresh, overTLS: false)
        #expect(slots.shards.allSatisfy { $0.nodes.count == 1 })
        #expect(try ClusterSlotMap(topology: slots, tls: false, answeredBy: host) == map)
    }

    @Test func clusterSlotsGivesTheSameMapAsClusterShardsOverPlainAndTLSConnections() throws {
        let shards = try ClusterTopology(clusterShardsReply: ClusterFixtures.shardsSteady)
        let slots = try ClusterTopology(clusterSlotsReply: ClusterFixtures.slotsSteady, overTLS: false)
        #expect(slots.shards.count == 3)
        #expect(slots.shards.allSatisfy { $0.nodes.count == 2 && $0.primary?.id?.count == 40 })
        #expect(try ClusterSlotMap(topology: slots, tls: false, answeredBy: host)
            == ClusterSlotMap(topology: shards, tls: false, answeredBy: host))

        // Over TLS the reply carries TLS ports only.
        let overTLS = try ClusterTopology(clusterSlotsReply: ClusterFixtures.slotsFreshOverTLS, overTLS: true)
        #expect(overTLS.shards.allSatisfy { $0.nodes.allSatisfy { $0.port == nil && $0.tlsPort != nil } })
        let tlsMap = try ClusterSlotMap(topology: overTLS, tls: true, answeredBy: host)
        let fresh = try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: ClusterFixtures.shardsFresh), tls: true, answeredBy: host)
        #expect(tlsMap == fresh)
        #expect(ClusterRedirection(errorMessage: ClusterFixtures.movedOverTLSError).map { tlsMap.primary(for: $0.slot) == ClusterNodeAddress(host: host, port: $0.port) } == true)
        // A plain client cannot use a topology read over TLS.
        #expect(throws: ClusterTopologyError.self) { try ClusterSlotMap(topology: overTLS, tls: false, answeredBy: host) }
    }

    @Test func unknownEndpointsAreTheHostThatAnsweredAndHostnamesAreKept() throws {
        let reply = RESPReply.array([
            SyntheticCluster.shard(slots: [0...16383], nodes: [
                SyntheticCluster.shardNode(id: "a", endpoint: "?", port: 7000, role: "master"),
                SyntheticCluster.shardNode(
                    id: "b", ip: "10.0.0.2", endpoint: "cache-0001-002.example", hostname: "cache-0001-002.example",
                    port: 7001, role: "replica"),
            ])
        ])
        let topology = try ClusterTopology(clusterShardsReply: reply)
        // "?": the host the reply came from, not the ip (a client behind NAT may not reach it).
        #expect(topology.shards[0].primary?.endpoint == nil)
        #expect(topology.shards[0].primary?.ip == "127.0.0.1")
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: "seed.example")
        #expect(map.shards[0].primary == ClusterNodeAddress(host: "seed.example", port: 7000))
        #expect(map.shards[0].replicas == [ClusterNodeAddress(host: "cache-0001-002.example", port: 7001)])
        #expect(topology.shards[0].replicas[0].hostname == "cache-0001-002.example")
        #expect(topology.shards[0].replicas[0].ip == "10.0.0.2")

        // CLUSTER SLOTS: a null endpoint, and the hostname metadata of Redis 7.
        let slots = RESPReply.array([
            .array([.integer(0), .integer(16383),
                    .array([.null, .integer(7000), SyntheticCluster.bulk("a"), .array([])]),
                    .array([SyntheticCluster.bulk("10.0.0.2"), .integer(7001), SyntheticCluster.bulk("b"),
                            .array([SyntheticCluster.bulk("hostname"), SyntheticCluster.bulk("r.example")])])]),
        ])
        let fromSlots = try ClusterTopology(clusterSlotsReply: slots, overTLS: false)
        let slotsMap = try ClusterSlotMap(topology: fromSlots, tls: false, answeredBy: "seed.example")
        #expect(slotsMap.shards[0].primary == ClusterNodeAddress(host: "seed.example", port: 7000))
        #expect(fromSlots.shards[0].replicas[0].hostname == "r.example")
        #expect(fromSlots.shards[0].replicas[0].ip == "10.0.0.2")
    }

    @Test func rangesOfOnePrimaryInClusterSlotsMakeOneShard() throws {
        let node = { (port: Int, id: String) in
            RESPReply.array([SyntheticCluster.bulk("127.0.0.1"), .integer(Int64(port)), SyntheticCluster.bulk(id)])
        }
        let reply = RESPReply.array([
            .array([.integer(0), .integer(99), node(7000, "a"), node(7003, "d")]),
            .array([.integer(100), .integer(16383), node(7001, "b")]),
            .array([.integer(200), .integer(199), node(7000, "a")]),  // reversed: refused
        ])
        #expect(throws: ClusterTopologyError.self) { try ClusterTopology(clusterSlotsReply: reply, overTLS: false) }
        let good = RESPReply.array([
            .array([.integer(0), .integer(99), node(7000, "a"), node(7003, "d")]),
            .array([.integer(100), .integer(8000), node(7001, "b")]),
            .array([.integer(8001), .integer(16383), node(7000, "a"), node(7003, "d")]),
        ])
        let topology = try ClusterTopology(clusterSlotsReply: good, overTLS: false)
        #expect(topology.shards.count == 2)
        #expect(topology.shards[0].slots == [0...99, 8001...16383])
        #expect(topology.shards[0].nodes.count == 2)
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: host)
        #expect(map.slots(ofShard: 0) == [0...99, 8001...16383])
        #expect(map.coversAllSlots)
    }

    @Test func ofSeveralPrimariesInAShardTheOnlineOneFurthestAheadServes() throws {
        let reply = RESPReply.array([
            SyntheticCluster.shard(slots: [0...16383], nodes: [
                SyntheticCluster.shardNode(id: "old", port: 7000, role: "master", offset: 900, health: "fail"),
                SyntheticCluster.shardNode(id: "a", port: 7001, role: "master", offset: 10),
                SyntheticCluster.shardNode(id: "b", port: 7002, role: "master", offset: 20),
                SyntheticCluster.shardNode(id: "c", port: 7003, role: "master", offset: 20),
                SyntheticCluster.shardNode(id: "r", port: 7004, role: "replica", health: "loading"),
            ])
        ])
        let topology = try ClusterTopology(clusterShardsReply: reply)
        #expect(topology.shards[0].primary?.id == "b")
        let failedOnly = RESPReply.array([
            SyntheticCluster.shard(slots: [0...16383], nodes: [
                SyntheticCluster.shardNode(id: "r", port: 7004, role: "replica"),
                SyntheticCluster.shardNode(id: "old", port: 7000, role: "master", health: "failed"),
            ])
        ])
        let failedTopology = try ClusterTopology(clusterShardsReply: failedOnly)
        #expect(failedTopology.shards[0].primary?.id == "old")
        // A failed primary keeps its slots until a replica takes over.
        let map = try ClusterSlotMap(topology: failedTopology, tls: false, answeredBy: host)
        #expect(map.primary(for: HashSlot(key: "x")) == ClusterNodeAddress(host: host, port: 7000))
        #expect(map.shards[0].replicas == [ClusterNodeAddress(host: host, port: 7004)])
    }

    @Test func healthAndFieldsThisCodeDoesNotKnowAreKeptOrSkipped() throws {
        var node = SyntheticCluster.shardNode(id: "a", port: 7000, role: "master", health: "resharding")
        if case .array(var fields) = node {
            fields += [SyntheticCluster.bulk("availability-zone"), SyntheticCluster.bulk("us-east-1a")]
            node = .array(fields)
        }
        let reply = RESPReply.array([
            .array([
                SyntheticCluster.bulk("slots"), .array([.integer(0), .integer(16383)]),
                SyntheticCluster.bulk("nodes"), .array([node]),
                SyntheticCluster.bulk("shard-id"), SyntheticCluster.bulk("abc"),
            ])
        ])
        let topology = try ClusterTopology(clusterShardsReply: reply)
        #expect(topology.shards[0].nodes[0].health == .other("resharding"))
        #expect(topology.assignedSlotCount == 16384)
    }

    @Test(arguments: [
        ("not an array", RESPReply.bulkString(Array("x".utf8))),
        ("an error", RESPReply.error("ERR unknown subcommand 'shards'")),
        ("a shard with an odd field list", RESPReply.array([.array([SyntheticCluster.bulk("slots")])])),
        ("a field name that is a number", RESPReply.array([.array([.integer(1), .integer(2)])])),
        ("slot 16384", RESPReply.array([SyntheticCluster.shard(slots: [0...16384], nodes: [])])),
        ("a reversed range", RESPReply.array([SyntheticCluster.shard(slotPairs: [(10, 5)], nodes: [])])),
        ("an odd slot list", RESPReply.array([.array([SyntheticCluster.bulk("slots"), .array([.integer(1)])])])),
        ("nodes that are not an array", RESPReply.array([.array([SyntheticCluster.bulk("nodes"), .integer(1)])])),
        ("a node without a role", RESPReply.array([SyntheticCluster.shard(slots: [0...1], nodes: [
            .array([SyntheticCluster.bulk("id"), SyntheticCluster.bulk("a"), SyntheticCluster.bulk("port"), .integer(1)]),
        ])])),
        ("a node without an id", RESPReply.array([SyntheticCluster.shard(slots: [0...1], nodes: [
            .array([SyntheticCluster.bulk("role"), SyntheticCluster.bulk("master"), SyntheticCluster.bulk("port"), .integer(1)]),
        ])])),
        ("a node without a port", RESPReply.array([SyntheticCluster.shard(slots: [0...1], nodes: [
            .array([SyntheticCluster.bulk("id"), SyntheticCluster.bulk("a"), SyntheticCluster.bulk("role"), SyntheticCluster.bulk("master")]),
        ])])),
        ("port 70000", RESPReply.array([SyntheticCluster.shard(slots: [0...1], nodes: [
            SyntheticCluster.shardNode(id: "a", port: 70000, role: "master"),
        ])])),
        ("an unknown role", RESPReply.array([SyntheticCluster.shard(slots: [0...1], nodes: [
            SyntheticCluster.shardNode(id: "a", port: 7000, role: "arbiter"),
        ])])),
        ("a slot claimed by two shards", RESPReply.array([
            SyntheticCluster.shard(slots: [0...100], nodes: [SyntheticCluster.shardNode(id: "a", port: 7000, role: "master")]),
            SyntheticCluster.shard(slots: [100...200], nodes: [SyntheticCluster.shardNode(id: "b", port: 7001, role: "master")]),
        ])),
    ])
    func malformedShardsRepliesAreRefusedWithAReason(what: String, reply: RESPReply) {
        #expect(throws: ClusterTopologyError.self, "\(what)") { try ClusterTopology(clusterShardsReply: reply) }
    }

    @Test(arguments: [
        ("not an array", RESPReply.integer(1)),
        ("a short range", RESPReply.array([.array([.integer(0), .integer(1)])])),
        ("a node without a port", RESPReply.array([.array([.integer(0), .integer(1), .array([SyntheticCluster.bulk("h")])])])),
        ("a port that is text", RESPReply.array([.array([.integer(0), .integer(1),
            .array([SyntheticCluster.bulk("h"), SyntheticCluster.bulk("port")])])])),
        ("overlapping ranges", RESPReply.array([
            .array([.integer(0), .integer(10), .array([SyntheticCluster.bulk("h"), .integer(1), SyntheticCluster.bulk("a")])]),
            .array([.integer(10), .integer(20), .array([SyntheticCluster.bulk("h"), .integer(2), SyntheticCluster.bulk("b")])]),
        ])),
    ])
    func malformedSlotsRepliesAreRefusedWithAReason(what: String, reply: RESPReply) {
        #expect(throws: ClusterTopologyError.self, "\(what)") { try ClusterTopology(clusterSlotsReply: reply, overTLS: false) }
    }

    @Test func aShardWithoutPrimaryOrSlotsServesNothingAndAnEmptyClusterNoSlot() throws {
        let reply = RESPReply.array([
            SyntheticCluster.shard(slots: [0...8191], nodes: [SyntheticCluster.shardNode(id: "r", port: 7001, role: "replica")]),
            SyntheticCluster.shard(slots: [8192...16383], nodes: [SyntheticCluster.shardNode(id: "p", port: 7002, role: "master")]),
            SyntheticCluster.shard(slots: [], nodes: [SyntheticCluster.shardNode(id: "q", port: 7003, role: "master")]),
        ])
        let map = try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: reply), tls: false, answeredBy: host)
        #expect(map.assignedSlotCount == 8192 && !map.coversAllSlots)
        #expect(map.unassignedSlots == [0...8191])
        #expect(map.primary(for: try #require(HashSlot(8191))) == nil)
        #expect(map.primary(for: try #require(HashSlot(8192))) == ClusterNodeAddress(host: host, port: 7002))
        #expect(map.nodes == [ClusterNodeAddress(host: host, port: 7002)])

        let empty = try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: .array([])), tls: false, answeredBy: host)
        #expect(empty.assignedSlotCount == 0 && empty.unassignedSlots == [0...16383] && empty.nodes.isEmpty)
        #expect(ClusterSlotMap().unassignedSlots == [0...16383])
    }

    @Test func aNodeThatReportsNoEndpointIsReachedAtItsIP() throws {
        let node = RESPReply.array([
            SyntheticCluster.bulk("id"), SyntheticCluster.bulk("a"), SyntheticCluster.bulk("port"), .integer(7000),
            SyntheticCluster.bulk("ip"), SyntheticCluster.bulk("10.0.0.7"),
            SyntheticCluster.bulk("role"), SyntheticCluster.bulk("master"),
        ])
        let topology = try ClusterTopology(clusterShardsReply: .array([SyntheticCluster.shard(slots: [0...16383], nodes: [node])]))
        let map = try ClusterSlotMap(topology: topology, tls: false, answeredBy: "seed.example")
        #expect(map.primaries == [ClusterNodeAddress(host: "10.0.0.7", port: 7000)])
        #expect(topology.shards[0].primary?.health == .online)
    }

    @Test func aMapDescribesItsShardsBySlotRanges() throws {
        let map = try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: ClusterFixtures.shardsSteady), tls: false, answeredBy: host)
        #expect(map.description == "[127.0.0.1:23364 0-5460 (replicas 127.0.0.1:24928), "
            + "127.0.0.1:24015 5461-10922 (replicas 127.0.0.1:21297), "
            + "127.0.0.1:30441 10923-16383 (replicas 127.0.0.1:20714)]")
        #expect(ClusterSlotMap().description == "[]")
        #expect(ClusterNodeAddress(host: "::1", port: 7000).description == "[::1]:7000")
    }

    @Test func normalizationSortsAndMergesRanges() {
        #expect(ClusterTopology.normalized([10...20, 0...5, 6...9, 15...30, 40...40]) == [0...30, 40...40])
        #expect(ClusterTopology.normalized([]) == [])
        #expect(ClusterTopology.normalized([3...3]) == [3...3])
    }
}
