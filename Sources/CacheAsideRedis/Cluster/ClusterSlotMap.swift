/// Which node serves each hash slot: the routing table of a cluster client.
///
/// One array entry per slot (16384 of them, 32 KiB) holds the index of the slot's
/// shard, so that finding a key's node is an array read after its CRC16. Built from a
/// ``ClusterTopology`` on every topology refresh, and patched in between by `MOVED`
/// replies (``apply(moved:answeredBy:)``).
struct ClusterSlotMap: Equatable, Sendable, CustomStringConvertible {
    /// The addresses of a shard: its primary and its online replicas.
    struct Shard: Hashable, Sendable {
        var primary: ClusterNodeAddress
        var replicas: [ClusterNodeAddress]
    }

    /// The shards that serve slots (or served them: a shard keeps its index when a
    /// `MOVED` takes its slots away).
    private(set) var shards: [Shard]
    /// For each slot, the index of its shard in `shards`, or `unassigned`.
    private var owners: [UInt16]
    /// How many slots have an owner.
    private(set) var assignedSlotCount: Int

    private static let unassigned = UInt16.max

    /// A map in which no slot has an owner.
    init() {
        shards = []
        owners = [UInt16](repeating: ClusterSlotMap.unassigned, count: HashSlot.count)
        assignedSlotCount = 0
    }

    /// The map of a topology, for clients on TLS (`tls`) or plain connections.
    ///
    /// Each shard with slots and a primary contributes its primary and its online
    /// replicas (failed and loading replicas serve nothing). Nodes whose endpoint the
    /// cluster leaves unknown get the host of `answeredBy`, the node whose reply this
    /// topology came from.
    ///
    /// - Throws: ``ClusterTopologyError`` when a shard's primary has no port of the kind
    ///   asked for (a TLS client of a cluster that announces no TLS ports, or the
    ///   reverse).
    init(topology: ClusterTopology, tls: Bool, answeredBy: String) throws(ClusterTopologyError) {
        self.init()
        // Shards in slot order and replicas in address order: two replies that describe
        // the same cluster (CLUSTER SHARDS and CLUSTER SLOTS, or two nodes' replies)
        // make equal maps.
        let serving = topology.shards
            .filter { !$0.slots.isEmpty }
            .sorted { ($0.slots.first?.lowerBound ?? 0) < ($1.slots.first?.lowerBound ?? 0) }
        for shard in serving {
            guard let primaryNode = shard.primary else { continue }
            guard let primary = primaryNode.address(tls: tls, answeredBy: answeredBy) else {
                throw ClusterTopologyError(
                    "node \(primaryNode.id ?? "?") announces no \(tls ? "TLS" : "plain-text") port")
            }
            let replicas = shard.replicas.compactMap { node -> ClusterNodeAddress? in
                node.health == .online ? node.address(tls: tls, answeredBy: answeredBy) : nil
            }.sorted()
            guard shards.count < Int(ClusterSlotMap.unassigned) else {
                throw ClusterTopologyError("more than \(ClusterSlotMap.unassigned - 1) shards")
            }
            let index = UInt16(shards.count)
            shards.append(Shard(primary: primary, replicas: replicas))
            owners.withUnsafeMutableBufferPointer { owners in
                for range in shard.slots {
                    // Ranges are within 0...16383 (ClusterTopology checks them).
                    owners[Int(range.lowerBound)...Int(range.upperBound)].update(repeating: index)
                }
            }
            assignedSlotCount += shard.slotCount
        }
    }

    /// Two maps are equal when they route every slot to the same shard index and their
    /// shards have the same nodes.
    static func == (lhs: ClusterSlotMap, rhs: ClusterSlotMap) -> Bool {
        guard lhs.assignedSlotCount == rhs.assignedSlotCount, lhs.shards == rhs.shards else { return false }
        // 16384 entries: compared eight bytes at a time.
        return lhs.owners.withUnsafeBytes { l in
            rhs.owners.withUnsafeBytes { r in
                var offset = 0
                while offset + 8 <= l.count {
                    if l.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                        != r.loadUnaligned(fromByteOffset: offset, as: UInt64.self) { return false }
                    offset += 8
                }
                return l[offset...].elementsEqual(r[offset...])
            }
        }
    }

    // MARK: Lookups

    /// The index in ``shards`` of the shard that serves `slot`, if any.
    func shardIndex(for slot: HashSlot) -> Int? {
        let owner = owners[Int(slot.rawValue)]
        return owner == ClusterSlotMap.unassigned ? nil : Int(owner)
    }

    /// The shard that serves `slot`, if any.
    func shard(for slot: HashSlot) -> Shard? {
        shardIndex(for: slot).map { shards[$0] }
    }

    /// The primary that serves `slot`, if any: where every command on its keys goes.
    func primary(for slot: HashSlot) -> ClusterNodeAddress? {
        shardIndex(for: slot).map { shards[$0].primary }
    }

    /// True when every slot has an owner.
    var coversAllSlots: Bool { assignedSlotCount == HashSlot.count }

    /// The slots without an owner, as ascending ranges.
    var unassignedSlots: [ClosedRange<UInt16>] { ranges { $0 == ClusterSlotMap.unassigned } }

    /// The slots of the shard at `index`, as ascending ranges.
    func slots(ofShard index: Int) -> [ClosedRange<UInt16>] { ranges { Int($0) == index } }

    private func ranges(where matches: (UInt16) -> Bool) -> [ClosedRange<UInt16>] {
        var result: [ClosedRange<UInt16>] = []
        var start: Int?
        for slot in 0...HashSlot.count {
            let inside = slot < HashSlot.count && matches(owners[slot])
            if inside, start == nil { start = slot }
            if !inside, let first = start {
                result.append(UInt16(first)...UInt16(slot - 1))
                start = nil
            }
        }
        return result
    }

    /// The primaries that serve at least one slot, in shard order.
    var primaries: [ClusterNodeAddress] {
        var seen = Set<Int>()
        for owner in owners where owner != ClusterSlotMap.unassigned { seen.insert(Int(owner)) }
        var result: [ClusterNodeAddress] = []
        for index in shards.indices where seen.contains(index) && !result.contains(shards[index].primary) {
            result.append(shards[index].primary)
        }
        return result
    }

    /// Every node of the map once: the primaries in shard order, then the replicas.
    var nodes: [ClusterNodeAddress] {
        var seen = Set<ClusterNodeAddress>()
        var result: [ClusterNodeAddress] = []
        for shard in shards where seen.insert(shard.primary).inserted {
            result.append(shard.primary)
        }
        for shard in shards {
            for replica in shard.replicas where seen.insert(replica).inserted {
                result.append(replica)
            }
        }
        return result
    }

    /// Each shard's primary, slot ranges and replicas, e.g.
    /// `[127.0.0.1:7000 0-5460 (replicas 127.0.0.1:7003), ...]`.
    var description: String {
        let parts = shards.indices.map { index -> String in
            let slots = slots(ofShard: index)
                .map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
                .joined(separator: ",")
            let replicas = shards[index].replicas.isEmpty
                ? "" : " (replicas \(shards[index].replicas.map(\.description).joined(separator: " ")))"
            return "\(shards[index].primary) \(slots.isEmpty ? "no slots" : slots)\(replicas)"
        }
        return "[" + parts.joined(separator: ", ") + "]"
    }

    // MARK: MOVED

    /// What a `MOVED` changed in the map.
    enum MovedOutcome: Hashable, Sendable {
        /// The map already routed the slot to that node: the command was sent with an
        /// older map. Nothing new.
        case alreadyKnown
        /// A replica of the slot's shard is its primary now (a failover): the shard's
        /// primary changed, for all of its slots.
        case replicaPromoted
        /// The slot moved to the primary of another known shard (a migration).
        case movedToKnownPrimary
        /// The slot moved to a node known as a replica of another shard, now a primary
        /// of a shard of its own.
        case movedToFormerReplica
        /// The slot moved to a node the map did not know (a new node).
        case movedToUnknownNode
    }

    /// Updates the map with what a `MOVED` says: the slot is served by the named node,
    /// which is a primary. (An `ASK` changes nothing: call this for `MOVED` only.)
    ///
    /// The cases, in the order they are tried: the node is already the slot's
    /// primary; it is a replica of the slot's shard (a failover: it becomes that
    /// shard's primary, the old primary is dropped, the other replicas stay); it is the
    /// primary of another shard (a migration: the slot goes to that shard); it is a
    /// replica of another shard (it leaves that shard and becomes the primary of a new
    /// one holding the slot); it is unknown (a new shard holding the slot).
    @discardableResult
    mutating func apply(moved redirection: ClusterRedirection, answeredBy: ClusterNodeAddress) -> MovedOutcome {
        let target = redirection.address(answeredBy: answeredBy)
        let slot = Int(redirection.slot.rawValue)
        let current = owners[slot] == ClusterSlotMap.unassigned ? nil : Int(owners[slot])
        if let current {
            if shards[current].primary == target { return .alreadyKnown }
            if let replica = shards[current].replicas.firstIndex(of: target) {
                shards[current].replicas.remove(at: replica)
                shards[current].primary = target
                return .replicaPromoted
            }
        }
        if let other = shards.indices.first(where: { shards[$0].primary == target }) {
            assign(slot, to: other, from: current)
            return .movedToKnownPrimary
        }
        // (A shard index must fit the table's 16-bit entries; a map that has met more
        // than 65534 nodes waits for the next refresh instead.)
        guard shards.count < Int(ClusterSlotMap.unassigned) else { return .movedToUnknownNode }
        if let other = shards.indices.first(where: { shards[$0].replicas.contains(target) }) {
            shards[other].replicas.removeAll { $0 == target }
            shards.append(Shard(primary: target, replicas: []))
            assign(slot, to: shards.count - 1, from: current)
            return .movedToFormerReplica
        }
        shards.append(Shard(primary: target, replicas: []))
        assign(slot, to: shards.count - 1, from: current)
        return .movedToUnknownNode
    }

    private mutating func assign(_ slot: Int, to shard: Int, from current: Int?) {
        owners[slot] = UInt16(shard)
        if current == nil { assignedSlotCount += 1 }
    }
}
