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
        var indices: [Int]
    }

    /// What goes to one node.
    struct NodeBatch: Equatable, Sendable {
        var node: ClusterNodeAddress
        /// The node's slot groups, in order of first appearance in the request: one
        /// command each for a multi-key command.
        var groups: [SlotGroup]
        /// Every item of the node, in request order: the order of a pipeline of
        /// single-key commands.
        var indices: [Int]
    }

    /// The nodes' batches, in order of each node's first item.
    var batches: [NodeBatch]
    /// Groups whose slot has no owner in the map: the client refreshes the topology,
    /// or fails these items.
    var unassigned: [SlotGroup]

    /// Splits items given by their index in the request and their slot, in request
    /// order, routing each slot to its primary in `map`.
    init(items: some Sequence<(index: Int, slot: HashSlot)>, map: ClusterSlotMap) {
        batches = []
        unassigned = []
        // Where each slot's group is: (batch, group) or (-1, unassigned group).
        var groupOfSlot: [HashSlot: (batch: Int, group: Int)] = [:]
        var batchOfNode: [ClusterNodeAddress: Int] = [:]
        for (index, slot) in items {
            if let place = groupOfSlot[slot] {
                if place.batch < 0 {
                    unassigned[place.group].indices.append(index)
                } else {
                    batches[place.batch].groups[place.group].indices.append(index)
                    batches[place.batch].indices.append(index)
                }
                continue
            }
            guard let node = map.primary(for: slot) else {
                groupOfSlot[slot] = (-1, unassigned.count)
                unassigned.append(SlotGroup(slot: slot, indices: [index]))
                continue
            }
            let batch: Int
            if let existing = batchOfNode[node] {
                batch = existing
            } else {
                batch = batches.count
                batchOfNode[node] = batch
                batches.append(NodeBatch(node: node, groups: [], indices: []))
            }
            groupOfSlot[slot] = (batch, batches[batch].groups.count)
            batches[batch].groups.append(SlotGroup(slot: slot, indices: [index]))
            batches[batch].indices.append(index)
        }
    }

    /// Splits a request's items by their slots (`slots[i]` is item `i`'s).
    init(slots: [HashSlot], map: ClusterSlotMap) {
        self.init(items: slots.enumerated().lazy.map { (index: $0.offset, slot: $0.element) }, map: map)
    }

    /// Splits a request's keys (key `i` is item `i`).
    init<Key: Collection>(keys: [Key], map: ClusterSlotMap) where Key.Element == UInt8 {
        self.init(slots: keys.map { HashSlot(key: $0) }, map: map)
    }

    /// Groups items by slot alone, in order of first appearance, each group's items in
    /// request order: for commands that need one slot per command but no node.
    static func groupBySlot(_ slots: [HashSlot]) -> [SlotGroup] {
        var groups: [SlotGroup] = []
        var groupOfSlot: [HashSlot: Int] = [:]
        for (index, slot) in slots.enumerated() {
            if let group = groupOfSlot[slot] {
                groups[group].indices.append(index)
            } else {
                groupOfSlot[slot] = groups.count
                groups.append(SlotGroup(slot: slot, indices: [index]))
            }
        }
        return groups
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
    mutating func place<Replies: Collection>(_ replies: Replies, at indices: [Int]) throws(ClusterReassemblyError)
    where Replies.Element == Value {
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
