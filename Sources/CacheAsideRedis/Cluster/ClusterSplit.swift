/// The items of one request, split for a cluster: by hash slot, and the slots by the
/// node that serves them.
///
/// The items are the keys of a multi-key command (`MGET k1 k2 ...`: one `MGET` per slot
/// group, since a cluster refuses keys of different slots in one command with
/// `CROSSSLOT`; the groups of a node go in one pipeline) or the commands of a pipeline
/// (each command's key decides its slot; a node's commands go in one pipeline, in
/// request order). Either way a request costs one round trip per node, and
/// ``ClusterReassembly`` puts the replies back in request order.
///
/// Items are identified by their index in the request. A split can cover a subset of
/// a request (the items to retry after `MOVED`), keeping the original indices.
struct ClusterSplit: Equatable, Sendable {
    /// Items whose keys hash to one slot, in request order.
    struct SlotGroup: Equatable, Sendable {
        var slot: HashSlot
        /// The items' indices in the request (a slice of one array per node: a split
        /// allocates per node, not per slot).
        var indices: ArraySlice<Int>
    }

    /// What goes to one node.
    struct NodeBatch: Equatable, Sendable {
        var node: ClusterNodeAddress
        /// The node's slot groups, in slot order: one command each for a multi-key
        /// command.
        var groups: [SlotGroup]
        /// Every item of the node, in request order: the order of a pipeline of
        /// single-key commands.
        var indices: [Int]
    }

    /// The nodes' batches, in order of each node's first item.
    var batches: [NodeBatch]
    /// Groups whose slot has no owner in the map, in slot order: the client refreshes
    /// the topology, or fails these items.
    var unassigned: [SlotGroup]

    /// Splits items given by their index in the request and their slot, in request
    /// order, routing each slot to its primary in `map`.
    init(items: some Sequence<(index: Int, slot: HashSlot)>, map: ClusterSlotMap) {
        // Each item as (batch, slot, index); sorted, the items of a slot group are
        // adjacent and in request order.
        var routed: [(batch: Int, slot: UInt16, index: Int)] = []
        var loose: [(batch: Int, slot: UInt16, index: Int)] = []
        var nodes: [ClusterNodeAddress] = []
        var requestOrder: [[Int]] = []
        // The batch of each shard of the map (a shard's primary is its node), -1 for none.
        var batchOfShard = [Int](repeating: -1, count: map.shards.count)
        routed.reserveCapacity(items.underestimatedCount)
        for (index, slot) in items {
            guard let shard = map.shardIndex(for: slot) else {
                loose.append((0, slot.rawValue, index))
                continue
            }
            var batch = batchOfShard[shard]
            if batch < 0 {
                let node = map.shards[shard].primary
                // Two shards never share a primary, but a map patched by MOVED replies is
                // checked rather than trusted.
                batch = nodes.firstIndex(of: node) ?? nodes.count
                if batch == nodes.count {
                    nodes.append(node)
                    requestOrder.append([])
                }
                batchOfShard[shard] = batch
            }
            routed.append((batch, slot.rawValue, index))
            requestOrder[batch].append(index)
        }
        let groups = ClusterSplit.groups(of: &routed, batches: nodes.count)
        batches = nodes.indices.map { NodeBatch(node: nodes[$0], groups: groups[$0], indices: requestOrder[$0]) }
        unassigned = ClusterSplit.groups(of: &loose, batches: 1).first ?? []
    }

    /// Sorts `entries` and cuts them into each batch's slot groups.
    private static func groups(
        of entries: inout [(batch: Int, slot: UInt16, index: Int)], batches: Int
    ) -> [[SlotGroup]] {
        entries.sort { ($0.batch, $0.slot, $0.index) < ($1.batch, $1.slot, $1.index) }
        var result = [[SlotGroup]](repeating: [], count: batches)
        var start = 0
        while start < entries.count {
            let batch = entries[start].batch
            var end = start
            while end < entries.count, entries[end].batch == batch { end += 1 }
            // One array of indices for the batch; each group is a slice of it.
            let indices = entries[start..<end].map(\.index)
            var groups: [SlotGroup] = []
            var first = 0
            while first < indices.count {
                let slot = entries[start + first].slot
                var last = first
                while last < indices.count, entries[start + last].slot == slot { last += 1 }
                groups.append(SlotGroup(slot: HashSlot(rawValue: slot), indices: indices[first..<last]))
                first = last
            }
            result[batch] = groups
            start = end
        }
        return result
    }

    /// Splits a request's items by their slots (`slots[i]` is item `i`'s).
    init(slots: [HashSlot], map: ClusterSlotMap) {
        // (A lazy collection, so that the split can reserve room for every item.)
        self.init(items: slots.indices.lazy.map { (index: $0, slot: slots[$0]) }, map: map)
    }

    /// Splits a request's keys (key `i` is item `i`).
    init<Key: Collection>(keys: [Key], map: ClusterSlotMap) where Key.Element == UInt8 {
        self.init(slots: keys.map { HashSlot(key: $0) }, map: map)
    }

    /// Groups items by slot alone, in slot order, each group's items in request order:
    /// for commands that need one slot per command but no node.
    static func groupBySlot(_ slots: [HashSlot]) -> [SlotGroup] {
        var entries = slots.enumerated().map { (batch: 0, slot: $0.element.rawValue, index: $0.offset) }
        return groups(of: &entries, batches: 1).first ?? []
    }

    /// How many items the split holds.
    var itemCount: Int {
        batches.reduce(0) { $0 + $1.indices.count } + unassigned.reduce(0) { $0 + $1.indices.count }
    }
}

/// Replies that do not fit a request: a reply for an item that has one already, for no
/// item, or a group reply of the wrong length.
struct ClusterReassemblyError: Error, Hashable, Sendable, CustomStringConvertible {
    var message: String
    var description: String { "Redis Cluster reassembly error: \(message)" }
}

/// Puts the replies of a split request back in request order.
///
/// ```swift
/// var replies = ClusterReassembly<RESPReply>(count: keys.count)
/// for (group, values) in zip(groups, mgetReplies) {
///     try replies.place(values, at: group.indices)   // one MGET per slot group
/// }
/// let ordered = try replies.result()
/// ```
struct ClusterReassembly<Value> {
    private var values: [Value?]
    private var placed: Int

    /// A reassembly for a request of `count` items.
    init(count: Int) {
        values = [Value?](repeating: nil, count: count)
        placed = 0
    }

    /// Places one reply: the one of item `index`.
    mutating func place(_ value: Value, at index: Int) throws(ClusterReassemblyError) {
        guard values.indices.contains(index) else {
            throw ClusterReassemblyError(message: "a reply for item \(index) of \(values.count)")
        }
        guard values[index] == nil else {
            throw ClusterReassemblyError(message: "a second reply for item \(index)")
        }
        values[index] = value
        placed += 1
    }

    /// Places the replies of a group: `replies[k]` is item `indices[k]`'s (the elements
    /// of one `MGET`'s array, or one node's pipeline replies).
    mutating func place<Replies: Collection, Indices: Collection>(
        _ replies: Replies, at indices: Indices
    ) throws(ClusterReassemblyError) where Replies.Element == Value, Indices.Element == Int {
        guard replies.count == indices.count else {
            throw ClusterReassemblyError(message: "\(replies.count) replies for \(indices.count) items")
        }
        for (index, value) in zip(indices, replies) {
            try place(value, at: index)
        }
    }

    /// True once every item has its reply.
    var isComplete: Bool { placed == values.count }

    /// The items that have no reply yet, in request order.
    var missing: [Int] { values.indices.filter { values[$0] == nil } }

    /// The replies in request order.
    ///
    /// - Throws: ``ClusterReassemblyError`` when an item has no reply.
    func result() throws(ClusterReassemblyError) -> [Value] {
        let ordered = values.compactMap { $0 }
        guard ordered.count == values.count else {
            throw ClusterReassemblyError(message: "no reply for items \(missing.prefix(10).map(String.init).joined(separator: ", "))")
        }
        return ordered
    }
}
