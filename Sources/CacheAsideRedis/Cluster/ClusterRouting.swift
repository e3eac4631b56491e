/// One node of a cluster as the cluster client talks to it: its address and a client of
/// its own (``RESPConfiguration/connectionCount`` pipelined connections, reply polling,
/// scripts loaded on `NOSCRIPT`, reconnection with backoff).
final class ClusterNode: Sendable {
    let address: ClusterNodeAddress
    let client: RESPClient

    init(address: ClusterNodeAddress, client: RESPClient) {
        self.address = address
        self.client = client
    }
}

/// An immutable snapshot of where commands go: the slot map and, for each of its
/// shards, the node of its primary. A command reads the current snapshot (one lock,
/// one retain) and routes without holding anything; a new snapshot replaces it after
/// a refresh or a `MOVED` that changed the map.
final class ClusterRouting: Sendable {
    let map: ClusterSlotMap
    /// The primary's node of each shard of ``map``, by shard index.
    private let shardPrimaries: [ClusterNode]
    /// The primaries that serve slots, for commands without keys.
    let primaries: [ClusterNode]
    /// Every node of the map (primaries and replicas), by address.
    let nodes: [ClusterNodeAddress: ClusterNode]

    /// A snapshot of `map`, with a node for each address (`node(address)` returns an
    /// existing node or makes one).
    init(map: ClusterSlotMap, node: (ClusterNodeAddress) -> ClusterNode) {
        self.map = map
        shardPrimaries = map.shards.map { node($0.primary) }
        var nodes: [ClusterNodeAddress: ClusterNode] = [:]
        for address in map.nodes { nodes[address] = node(address) }
        self.nodes = nodes
        primaries = map.primaries.compactMap { nodes[$0] }
    }

    /// The node of the primary that serves `slot`; `nil` when no shard serves it.
    @inline(__always)
    func node(for slot: HashSlot) -> ClusterNode? {
        guard let shard = map.shardIndex(for: slot) else { return nil }
        return shardPrimaries[shard]
    }
}
