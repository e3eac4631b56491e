@testable import CacheAsideRedis
import Testing

/// Splitting multi-key commands and pipelines by slot and node, and putting the replies
/// back in request order.
@Suite struct ClusterSplitTests {
    /// The running cluster of the fixtures: 23364 (0-5460), 24015 (5461-10922),
    /// 30441 (10923-16383).
    func map() throws -> ClusterSlotMap {
        try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: ClusterFixtures.shardsSteady), tls: false, answeredBy: "127.0.0.1")
    }

    func node(_ port: Int) -> ClusterNodeAddress { ClusterNodeAddress(host: "127.0.0.1", port: port) }

    @Test func keysAreGroupedBySlotThenByNodeKeepingRequestOrder() throws {
        // foo, {foo}x, {foo}y: 12182 (30441); bar: 5061, hello: 866, {user1000}.a: 3443
        // (all 23364).
        let keys = ["foo", "bar", "{foo}x", "hello", "bar", "{user1000}.a", "{foo}y"]
        let split = ClusterSplit(keys: keys.map { Array($0.utf8) }, map: try map())
        #expect(split.unassigned.isEmpty)
        #expect(split.itemCount == keys.count)
        #expect(split.batches.map(\.node) == [node(30441), node(23364)])
        let first = split.batches[0]
        #expect(first.groups == [ClusterSplit.SlotGroup(slot: HashSlot(key: "foo"), indices: [0, 2, 6])])
        #expect(first.indices == [0, 2, 6])
        let second = split.batches[1]
        // Groups in slot order: hello 866, {user1000} 3443, bar 5061.
        #expect(second.groups.map(\.slot) == [HashSlot(key: "hello"), HashSlot(key: "user1000"), HashSlot(key: "bar")])
        #expect(second.groups.map(\.indices) == [[3], [5], [1, 4]])
        #expect(second.indices == [1, 3, 4, 5])
        // Every group is one slot, as a cluster requires of one command.
        for batch in split.batches {
            for group in batch.groups {
                #expect(group.indices.allSatisfy { HashSlot(key: keys[$0]) == group.slot })
            }
        }
    }

    @Test func mgetRepliesGoBackInRequestOrder() throws {
        let keys = (0..<200).map { "user:\($0)" }
        let map = try map()
        let split = ClusterSplit(keys: keys.map { Array($0.utf8) }, map: map)
        #expect(split.batches.count == 3)
        #expect(split.batches.allSatisfy { batch in batch.groups.allSatisfy { map.primary(for: $0.slot) == batch.node } })
        // Each "MGET" returns its keys' values in its own order; the node batches answer
        // in reverse order, as concurrent nodes may.
        var replies = ClusterReassembly<String>(count: keys.count)
        for batch in split.batches.reversed() {
            for group in batch.groups {
                try replies.place(group.indices.map { "value of \(keys[$0])" }, at: group.indices)
            }
        }
        #expect(replies.isComplete)
        #expect(try replies.result() == keys.map { "value of \($0)" })
    }

    @Test func aPipelineOfSingleKeyCommandsIsOnePipelinePerNodeInRequestOrder() throws {
        let slots = ["a", "b", "c", "d", "e", "f", "g", "h", "a"].map { HashSlot(key: $0) }
        let split = ClusterSplit(slots: slots, map: try map())
        #expect(split.batches.flatMap(\.indices).sorted() == Array(0..<9))
        for batch in split.batches {
            #expect(batch.indices == batch.indices.sorted())
        }
        var replies = ClusterReassembly<Int>(count: slots.count)
        for batch in split.batches {
            try replies.place(batch.indices.map { $0 * 10 }, at: batch.indices)
        }
        #expect(try replies.result() == (0..<9).map { $0 * 10 })
    }

    @Test func aSubsetKeepsItsOriginalIndicesForRetries() throws {
        // Items 2 and 5 came back MOVED: only they are split again, under their indices.
        let slots = ["a", "b", "c", "d", "e", "f"].map { HashSlot(key: $0) }
        let retry = ClusterSplit(items: [2, 5].map { (index: $0, slot: slots[$0]) }, map: try map())
        #expect(retry.batches.flatMap(\.indices).sorted() == [2, 5])
        var replies = ClusterReassembly<String>(count: 6)
        for i in [0, 1, 3, 4] { try replies.place("first", at: i) }
        #expect(replies.missing == [2, 5])
        for batch in retry.batches { try replies.place(batch.indices.map { _ in "retried" }, at: batch.indices) }
        #expect(try replies.result() == ["first", "first", "retried", "first", "first", "retried"])
    }

    @Test func slotsWithoutAnOwnerAreSetAside() throws {
        let reply = RESPReply.array([
            SyntheticCluster.shard(slots: [0...8191], nodes: [SyntheticCluster.shardNode(id: "a", port: 7000, role: "master")]),
        ])
        let half = try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: reply), tls: false, answeredBy: "h")
        let keys = (0..<50).map { Array("k\($0)".utf8) }
        let split = ClusterSplit(keys: keys, map: half)
        #expect(split.itemCount == 50)
        #expect(split.batches.count == 1)
        #expect(split.batches[0].groups.allSatisfy { $0.slot.rawValue <= 8191 })
        #expect(!split.unassigned.isEmpty)
        #expect(split.unassigned.allSatisfy { $0.slot.rawValue > 8191 })
        #expect(split.unassigned.flatMap(\.indices).allSatisfy { HashSlot(key: keys[$0]).rawValue > 8191 })
        let nothing = ClusterSplit(keys: keys, map: ClusterSlotMap())
        #expect(nothing.batches.isEmpty && nothing.unassigned.flatMap(\.indices).sorted() == Array(0..<50))
    }

    @Test func emptyAndSingleKeyRequests() throws {
        let empty = ClusterSplit(keys: [[UInt8]](), map: try map())
        #expect(empty.batches.isEmpty && empty.unassigned.isEmpty && empty.itemCount == 0)
        #expect(try ClusterReassembly<Int>(count: 0).result() == [])
        let one = ClusterSplit(keys: [Array("foo".utf8)], map: try map())
        #expect(one.batches == [ClusterSplit.NodeBatch(
            node: node(30441), groups: [ClusterSplit.SlotGroup(slot: HashSlot(key: "foo"), indices: [0])], indices: [0])])
    }

    @Test func groupingBySlotAloneKeepsRequestOrderWithinASlot() {
        let slots = ["x{1}", "y{2}", "z{1}", "w{3}", "v{2}"].map { HashSlot(key: $0) }
        let groups = ClusterSplit.groupBySlot(slots)
        // Slots 9842 ("1"), 5649 ("2"), 1584 ("3"): in slot order.
        #expect(groups.map(\.slot) == [HashSlot(key: "3"), HashSlot(key: "2"), HashSlot(key: "1")])
        #expect(groups.map(\.slot.rawValue) == [1584, 5649, 9842])
        #expect(groups.map(\.indices) == [[3], [1, 4], [0, 2]])
        #expect(ClusterSplit.groupBySlot([]).isEmpty)
    }

    @Test func manyKeysOverManyNodesKeepEveryInvariant() throws {
        // 100 shards, 1000 keys, some repeated: every item once, groups of one slot and
        // node, request order within groups and batches.
        let map = try ClusterSlotMap(
            topology: ClusterTopology(clusterShardsReply: SyntheticCluster.shardsReply(shards: 100, replicas: 1)),
            tls: false, answeredBy: "h")
        let keys = (0..<1000).map { Array("k:\($0 % 700)".utf8) }
        let split = ClusterSplit(keys: keys, map: map)
        #expect(split.unassigned.isEmpty)
        #expect(split.batches.flatMap(\.indices).sorted() == Array(0..<1000))
        #expect(split.batches.flatMap { $0.groups.flatMap(\.indices) }.sorted() == Array(0..<1000))
        #expect(Set(split.batches.map(\.node)).count == split.batches.count)
        for batch in split.batches {
            #expect(batch.indices == batch.indices.sorted())
            #expect(batch.groups.map(\.slot) == batch.groups.map(\.slot).sorted())
            for group in batch.groups {
                #expect(Array(group.indices) == group.indices.sorted())
                #expect(group.indices.allSatisfy { HashSlot(key: keys[$0]) == group.slot })
                #expect(map.primary(for: group.slot) == batch.node)
            }
        }
        // Batches in order of each node's first item.
        let firsts = split.batches.map { $0.indices[0] }
        #expect(firsts == firsts.sorted())
    }

    @Test func reassemblyRefusesRepliesThatDoNotFitTheRequest() throws {
        var replies = ClusterReassembly<Int>(count: 3)
        #expect(throws: ClusterReassemblyError.self) { try replies.place([1, 2], at: [0]) }
        #expect(throws: ClusterReassemblyError.self) { try replies.place(1, at: 3) }
        #expect(throws: ClusterReassemblyError.self) { try replies.place(1, at: -1) }
        try replies.place(1, at: 0)
        #expect(throws: ClusterReassemblyError.self) { try replies.place(1, at: 0) }
        #expect(!replies.isComplete)
        #expect(replies.missing == [1, 2])
        #expect(throws: ClusterReassemblyError.self) { try replies.result() }
        try replies.place([2, 3], at: [1, 2])
        #expect(try replies.result() == [1, 2, 3])
    }
}
