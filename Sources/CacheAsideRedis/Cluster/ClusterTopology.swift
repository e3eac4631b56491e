/// Where a cluster node accepts clients: a host (a name or a numeric address) and a
/// port. The identity of a node for routing and for its connections.
struct ClusterNodeAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, or `[host]:port` for an IPv6 address.
    var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    static func < (lhs: ClusterNodeAddress, rhs: ClusterNodeAddress) -> Bool {
        (lhs.host, lhs.port) < (rhs.host, rhs.port)
    }
}

/// A reply that does not describe a cluster: what is wrong, without any data beyond
/// node addresses, ids and slot numbers.
struct ClusterTopologyError: Error, Hashable, Sendable, CustomStringConvertible {
    var message: String

    init(_ message: String) {
        self.message = message
    }

    var description: String { "Redis Cluster topology error: \(message)" }
}

/// A cluster as it describes itself: its shards, each with the slots it serves and its
/// nodes, read from a `CLUSTER SHARDS` reply (Redis 7 and later, Valkey) or from a
/// `CLUSTER SLOTS` reply (every version with cluster support).
///
/// This is the server's view, kept as the server gave it (health, roles, both ports);
/// ``ClusterSlotMap`` is what routing uses.
struct ClusterTopology: Hashable, Sendable {
    /// One node of a shard.
    struct Node: Hashable, Sendable {
        enum Role: Hashable, Sendable {
            case primary
            case replica
        }

        enum Health: Hashable, Sendable {
            /// Serving. (`CLUSTER SLOTS` reports no health: its nodes count as online.)
            case online
            /// Marked failed by the cluster (`fail` or `failed`).
            case failed
            /// A replica that has not caught up with its primary yet.
            case loading
            /// A state this code does not know.
            case other(String)
        }

        /// The node's id (40 hex digits); `nil` when a `CLUSTER SLOTS` reply of an old
        /// server omits it.
        var id: String?
        /// The endpoint the cluster wants clients to use (an address or a host name,
        /// per `cluster-preferred-endpoint-type`); `nil` when unknown (`?`, empty or
        /// null), which means: the host of the node that sent the reply.
        var endpoint: String?
        /// The node's IP address, when reported.
        var ip: String?
        /// The node's announced host name, when it has one.
        var hostname: String?
        /// The port for plain-text clients, when known.
        var port: Int?
        /// The port for TLS clients, when known.
        var tlsPort: Int?
        var role: Role
        var health: Health
        /// How far the node's replication stream has come, when reported.
        var replicationOffset: Int64?

        /// Where a client reaches the node: its endpoint (or, when the cluster leaves it
        /// unknown, the host of `answeredBy`, the node that sent the reply) and its TLS or
        /// plain port; `nil` when the node reports no port of that kind.
        func address(tls: Bool, answeredBy: String) -> ClusterNodeAddress? {
            guard let port = tls ? tlsPort : port else { return nil }
            return ClusterNodeAddress(host: endpoint ?? answeredBy, port: port)
        }
    }

    /// One primary, its replicas and the slots they serve.
    struct Shard: Hashable, Sendable {
        /// The slots, as ascending, non-overlapping, non-adjacent ranges.
        var slots: [ClosedRange<UInt16>]
        /// Every node of the shard, in the server's order.
        var nodes: [Node]

        /// The shard's primary: its online primary (of several, the one furthest in
        /// replication, then the first listed), else its first primary (a failed primary
        /// still owns its slots until a replica takes over); `nil` if none is listed.
        var primary: Node? {
            var firstPrimary: Int?
            var bestOnline: Int?
            for index in nodes.indices where nodes[index].role == .primary {
                if firstPrimary == nil { firstPrimary = index }
                guard nodes[index].health == .online else { continue }
                // The first listed of those furthest ahead.
                if let best = bestOnline,
                   (nodes[index].replicationOffset ?? -1) <= (nodes[best].replicationOffset ?? -1) { continue }
                bestOnline = index
            }
            return (bestOnline ?? firstPrimary).map { nodes[$0] }
        }

        /// The shard's replicas, whatever their health.
        var replicas: [Node] { nodes.filter { $0.role == .replica } }

        /// How many slots the shard serves.
        var slotCount: Int { slots.reduce(0) { $0 + $1.count } }
    }

    /// The shards, in the server's order.
    var shards: [Shard]

    init(shards: [Shard]) {
        self.shards = shards
    }

    /// How many slots some shard serves (16384 for a healthy cluster).
    var assignedSlotCount: Int { shards.reduce(0) { $0 + $1.slotCount } }
}

// MARK: - Parsing

extension ClusterTopology {
    /// Reads a `CLUSTER SHARDS` reply: an array of shards, each a map (a flat array of
    /// name-value pairs in RESP2) with `slots` (pairs of integers, first and last slot
    /// of each range) and `nodes` (maps with `id`, `port`, `tls-port`, `ip`, `endpoint`,
    /// `hostname`, `role`, `replication-offset` and `health`). Fields this code does
    /// not know are skipped.
    ///
    /// - Throws: ``ClusterTopologyError`` when the reply has another shape, a slot is out
    ///   of range or claimed twice, or a node lacks its id, role or every port.
    init(clusterShardsReply reply: RESPReply) throws(ClusterTopologyError) {
        guard let shardReplies = reply.array else {
            throw ClusterTopologyError("CLUSTER SHARDS: expected an array of shards, got \(Self.kind(of: reply))")
        }
        var shards: [Shard] = []
        shards.reserveCapacity(shardReplies.count)
        for (index, shardReply) in shardReplies.enumerated() {
            var slots: [ClosedRange<UInt16>] = []
            var nodes: [Node] = []
            try Self.forEachField(of: shardReply, what: "shard \(index)") { (field, value) throws(ClusterTopologyError) in
                switch field {
                case .slots:
                    slots = try Self.slotRanges(value, what: "shard \(index)")
                case .nodes:
                    guard let nodeReplies = value.array else {
                        throw ClusterTopologyError("CLUSTER SHARDS: nodes of shard \(index) is \(Self.kind(of: value)), not an array")
                    }
                    nodes.reserveCapacity(nodeReplies.count)
                    for (offset, element) in nodeReplies.enumerated() {
                        nodes.append(try Self.shardNode(element, what: "node \(offset) of shard \(index)"))
                    }
                default:
                    break
                }
            }
            shards.append(Shard(slots: Self.normalized(slots), nodes: nodes))
        }
        self.init(shards: shards)
        try checkNoSlotClaimedTwice()
    }

    /// Reads a `CLUSTER SLOTS` reply: an array of `[first slot, last slot, primary,
    /// replica...]`, each node `[endpoint, port, id, {hostname, ip}]` (id and metadata
    /// since Redis 4 and 7). Ranges with the same primary become one shard.
    ///
    /// The reply has one port per node, the kind the asking connection uses: pass
    /// `overTLS` to say which. It omits failed replicas and reports no health, so its
    /// nodes count as online.
    ///
    /// - Throws: ``ClusterTopologyError`` when the reply has another shape, a slot is out
    ///   of range or claimed twice.
    init(clusterSlotsReply reply: RESPReply, overTLS: Bool) throws(ClusterTopologyError) {
        guard let entries = reply.array else {
            throw ClusterTopologyError("CLUSTER SLOTS: expected an array of slot ranges, got \(Self.kind(of: reply))")
        }
        var shards: [Shard] = []
        var shardOfPrimary: [String: Int] = [:]
        for (index, entry) in entries.enumerated() {
            guard let parts = entry.array, parts.count >= 3 else {
                throw ClusterTopologyError("CLUSTER SLOTS: range \(index) is not [first, last, primary, ...]")
            }
            let range = try Self.slotRange(first: parts[0], last: parts[1], what: "range \(index)")
            var nodes: [Node] = []
            for (offset, nodeReply) in parts.dropFirst(2).enumerated() {
                nodes.append(try Self.slotsNode(
                    nodeReply, role: offset == 0 ? .primary : .replica, overTLS: overTLS,
                    what: "node \(offset) of range \(index)"))
            }
            let primary = nodes[0]
            let key = primary.id ?? "\(primary.endpoint ?? "?")|\(primary.port ?? primary.tlsPort ?? 0)"
            if let existing = shardOfPrimary[key] {
                shards[existing].slots.append(range)
                for node in nodes.dropFirst() where !shards[existing].nodes.contains(node) {
                    shards[existing].nodes.append(node)
                }
            } else {
                shardOfPrimary[key] = shards.count
                shards.append(Shard(slots: [range], nodes: nodes))
            }
        }
        for index in shards.indices {
            shards[index].slots = Self.normalized(shards[index].slots)
        }
        self.init(shards: shards)
        try checkNoSlotClaimedTwice()
    }

    /// Throws when two shards claim a slot (each shard's own ranges are normalized).
    private func checkNoSlotClaimedTwice() throws(ClusterTopologyError) {
        let ranges = shards.flatMap(\.slots).sorted { $0.lowerBound < $1.lowerBound }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.lowerBound <= previous.upperBound {
            throw ClusterTopologyError("slot \(next.lowerBound) is claimed by two shards")
        }
    }

    // MARK: Reply shapes

    /// The fields of `CLUSTER SHARDS` that this code reads.
    private enum Field {
        case slots, nodes, id, port, tlsPort, ip, endpoint, hostname, role, replicationOffset, health, other
    }

    /// Calls `body` with each name-value pair of a map reply, in order. RESP2 sends a map
    /// as a flat array of alternating names and values (a RESP3 map would be read here
    /// too). Names are matched as bytes: no string is made for a field name.
    private static func forEachField(
        of reply: RESPReply, what: @autoclosure () -> String,
        _ body: (Field, RESPReply) throws(ClusterTopologyError) -> Void
    ) throws(ClusterTopologyError) {
        guard let elements = reply.array, elements.count % 2 == 0 else {
            throw ClusterTopologyError("CLUSTER SHARDS: \(what()) is \(kind(of: reply)), not a map")
        }
        var index = 0
        while index < elements.count {
            guard let name = elements[index].bytes else {
                throw ClusterTopologyError("CLUSTER SHARDS: a field name of \(what()) is \(kind(of: elements[index]))")
            }
            try body(field(named: name), elements[index + 1])
            index += 2
        }
    }

    private static func field(named name: [UInt8]) -> Field {
        switch name.count {
        case 2:
            if equal(name, "id") { return .id }
            if equal(name, "ip") { return .ip }
        case 4:
            if equal(name, "port") { return .port }
            if equal(name, "role") { return .role }
        case 5:
            if equal(name, "slots") { return .slots }
            if equal(name, "nodes") { return .nodes }
        case 6:
            if equal(name, "health") { return .health }
        case 8:
            if equal(name, "tls-port") { return .tlsPort }
            if equal(name, "endpoint") { return .endpoint }
            if equal(name, "hostname") { return .hostname }
        case 18:
            if equal(name, "replication-offset") { return .replicationOffset }
        default:
            break
        }
        return .other
    }

    private static func equal(_ bytes: [UInt8], _ literal: StaticString) -> Bool {
        literal.withUTF8Buffer { bytes.elementsEqual($0) }
    }

    private static func shardNode(_ reply: RESPReply, what: @autoclosure () -> String) throws(ClusterTopologyError) -> Node {
        var id: String?
        var endpoint: String?
        var reportsEndpoint = false
        var ip: String?
        var hostname: String?
        var port: Int?
        var tlsPort: Int?
        var role: Node.Role?
        var health: Node.Health = .online
        var offset: Int64?
        try forEachField(of: reply, what: what()) { (field, value) throws(ClusterTopologyError) in
            switch field {
            case .id: id = value.string
            case .endpoint:
                endpoint = knownEndpoint(value.string)
                reportsEndpoint = true
            case .ip: ip = knownEndpoint(value.string)
            case .hostname: hostname = knownEndpoint(value.string)
            case .port: port = try self.port(value, what: what())
            case .tlsPort: tlsPort = try self.port(value, what: what())
            case .replicationOffset: offset = value.integer
            case .role:
                let text = value.bytes ?? []
                if equal(text, "master") || equal(text, "primary") {
                    role = .primary
                } else if equal(text, "replica") || equal(text, "slave") {
                    role = .replica
                } else {
                    throw ClusterTopologyError("CLUSTER SHARDS: \(what()) has role \(value)")
                }
            case .health:
                let text = value.bytes ?? []
                if equal(text, "online") {
                    health = .online
                } else if equal(text, "failed") || equal(text, "fail") {
                    health = .failed
                } else if equal(text, "loading") {
                    health = .loading
                } else {
                    health = .other(value.string ?? value.description)
                }
            case .slots, .nodes, .other:
                break
            }
        }
        guard let id, !id.isEmpty else { throw ClusterTopologyError("CLUSTER SHARDS: \(what()) has no id") }
        guard let role else { throw ClusterTopologyError("CLUSTER SHARDS: node \(id) has no role") }
        guard port != nil || tlsPort != nil else { throw ClusterTopologyError("CLUSTER SHARDS: node \(id) has no port") }
        return Node(
            // An unknown endpoint ("?") means: the host this reply came from, not the ip
            // (which a client behind NAT or a proxy may not reach). Only a node that
            // reports no endpoint at all is reached at its ip.
            id: id, endpoint: reportsEndpoint ? endpoint : ip, ip: ip, hostname: hostname, port: port, tlsPort: tlsPort,
            role: role, health: health, replicationOffset: offset)
    }

    private static func slotsNode(
        _ reply: RESPReply, role: Node.Role, overTLS: Bool, what: @autoclosure () -> String
    ) throws(ClusterTopologyError) -> Node {
        guard let parts = reply.array, parts.count >= 2 else {
            throw ClusterTopologyError("CLUSTER SLOTS: \(what()) is not [endpoint, port, ...]")
        }
        let endpoint = knownEndpoint(parts[0].string)
        let port = try self.port(parts[1], what: what())
        let id = parts.count > 2 ? parts[2].string.flatMap { $0.isEmpty ? nil : $0 } : nil
        var hostname: String?
        var ip: String?
        if parts.count > 3, let metadata = parts[3].array, metadata.count % 2 == 0 {
            var index = 0
            while index < metadata.count {
                switch metadata[index].string {
                case "hostname": hostname = knownEndpoint(metadata[index + 1].string)
                case "ip": ip = knownEndpoint(metadata[index + 1].string)
                default: break
                }
                index += 2
            }
        }
        return Node(
            id: id, endpoint: endpoint, ip: ip ?? (endpoint.map { isNumericAddress($0) } == true ? endpoint : nil),
            hostname: hostname, port: overTLS ? nil : port, tlsPort: overTLS ? port : nil,
            role: role, health: .online, replicationOffset: nil)
    }

    /// `nil` for the ways a server says "unknown endpoint": null, empty, `?`.
    private static func knownEndpoint(_ value: String?) -> String? {
        guard let value, !value.isEmpty, value != "?" else { return nil }
        return value
    }

    private static func isNumericAddress(_ host: String) -> Bool {
        host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
    }

    private static func port(_ reply: RESPReply, what: @autoclosure () -> String) throws(ClusterTopologyError) -> Int? {
        guard let value = reply.integer, (0...65535).contains(value) else {
            throw ClusterTopologyError("\(what()) has port \(reply)")
        }
        return value == 0 ? nil : Int(value)
    }

    private static func slotRanges(
        _ reply: RESPReply, what: @autoclosure () -> String
    ) throws(ClusterTopologyError) -> [ClosedRange<UInt16>] {
        guard let values = reply.array, values.count % 2 == 0 else {
            throw ClusterTopologyError("CLUSTER SHARDS: slots of \(what()) is \(kind(of: reply)), not pairs of slots")
        }
        var ranges: [ClosedRange<UInt16>] = []
        ranges.reserveCapacity(values.count / 2)
        var index = 0
        while index < values.count {
            ranges.append(try slotRange(first: values[index], last: values[index + 1], what: what()))
            index += 2
        }
        return ranges
    }

    private static func slotRange(
        first: RESPReply, last: RESPReply, what: @autoclosure () -> String
    ) throws(ClusterTopologyError) -> ClosedRange<UInt16> {
        guard let low = first.integer, let high = last.integer,
              let lowSlot = HashSlot(Int(clamping: low)), let highSlot = HashSlot(Int(clamping: high)), low <= high
        else {
            throw ClusterTopologyError("\(what()) has slot range \(first)-\(last)")
        }
        return lowSlot.rawValue...highSlot.rawValue
    }

    /// Sorted, with overlapping and adjacent ranges merged.
    static func normalized(_ ranges: [ClosedRange<UInt16>]) -> [ClosedRange<UInt16>] {
        guard ranges.count > 1 else { return ranges }
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<UInt16>] = [sorted[0]]
        for range in sorted.dropFirst() {
            let last = merged[merged.count - 1]
            if Int(range.lowerBound) <= Int(last.upperBound) + 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    private static func kind(of reply: RESPReply) -> String {
        if let elements = reply.array { return "an array of \(elements.count)" }
        if let message = reply.errorMessage { return "the error \(message)" }
        if reply.isNull { return "null" }
        if case .integer = reply { return "an integer" }
        if reply.bytes != nil { return "a string" }
        return "an unexpected reply"
    }
}
