/// A `MOVED` or `ASK` error reply: the node that received a command does not serve the
/// slot of its keys, and names the node that does.
///
/// - `MOVED slot host:port`: the slot belongs to that node now; update the slot map,
///   send the command there, and refresh the topology soon (more slots may have moved).
/// - `ASK slot host:port`: the slot is migrating and this key is already (or will be)
///   on the importing node; send `ASKING` and then the command there, once, and leave
///   the slot map alone.
///
/// The host may be empty (`MOVED 3999 :6381`) when the cluster does not know the
/// node's endpoint: it is then the host of the node that sent the error
/// (``address(answeredBy:)``).
struct ClusterRedirection: Hashable, Sendable, CustomStringConvertible {
    enum Kind: Hashable, Sendable {
        case moved
        case ask
    }

    var kind: Kind
    var slot: HashSlot
    /// The host of the serving node; empty when it is the host of the node that sent
    /// the error.
    var host: String
    var port: Int

    init(kind: Kind, slot: HashSlot, host: String, port: Int) {
        self.kind = kind
        self.slot = slot
        self.host = host
        self.port = port
    }

    /// Parses the text of an error reply (`MOVED 3999 127.0.0.1:6381`,
    /// `ASK 3999 10.0.0.5:6379`, `MOVED 3999 ::1:6381`, `MOVED 3999 [::1]:6381`,
    /// `MOVED 3999 :6381`); `nil` for any other error or a malformed one.
    init?(errorMessage: some StringProtocol) {
        let words = errorMessage.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count == 3 else { return nil }
        switch words[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        guard let number = Int(words[1]), let slot = HashSlot(number) else { return nil }
        self.slot = slot
        // The port follows the last colon: an IPv6 address holds colons of its own.
        let target = words[2]
        guard let colon = target.lastIndex(of: ":"),
              let port = Int(target[target.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = target[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
        }
        self.host = String(host)
        self.port = port
    }

    /// The redirection in an error reply; `nil` for any other reply.
    init?(reply: RESPReply) {
        guard let message = reply.errorMessage else { return nil }
        self.init(errorMessage: message)
    }

    /// The redirection in a server error; `nil` for any other error.
    init?(error: RESPError) {
        guard error.kind == .server else { return nil }
        self.init(errorMessage: error.message)
    }

    /// The serving node: the named host, or the host of `answeredBy` (the node that sent
    /// the error) when the name is empty.
    func address(answeredBy: ClusterNodeAddress) -> ClusterNodeAddress {
        ClusterNodeAddress(host: host.isEmpty ? answeredBy.host : host, port: port)
    }

    /// The error as the server wrote it: `MOVED 3999 127.0.0.1:6381`.
    var description: String {
        let target = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return "\(kind == .moved ? "MOVED" : "ASK") \(slot) \(target)"
    }
}

/// What a cluster client should make of a server error reply, by its first word.
enum ClusterErrorClass: Hashable, Sendable {
    /// `MOVED`: the slot lives elsewhere now; update the map, retry there, refresh.
    case moved(ClusterRedirection)
    /// `ASK`: retry once on the importing node, after `ASKING`.
    case ask(ClusterRedirection)
    /// `TRYAGAIN`: a multi-key command met a slot in migration with only some of its
    /// keys; retry after a short pause.
    case tryAgain
    /// `CLUSTERDOWN`: the cluster serves no slot at the moment (a primary failed and no
    /// replica has taken over yet, or slots are unassigned); the command was not run.
    /// Refresh the topology; retrying at once is pointless.
    case clusterDown
    /// `CROSSSLOT`: the command's keys hash to different slots; a bug in the splitting
    /// of the command, never worth a retry.
    case crossSlot
    /// `READONLY`: a write reached a replica (a demoted primary after a failover);
    /// refresh the topology, or for a single primary, reconnect.
    case readOnly
    /// `LOADING` or `MASTERDOWN`: the node cannot serve now (loading its data, or a
    /// replica cut off from its primary); try elsewhere, or later.
    case unavailable
    /// Any other error: the command's own outcome.
    case other

    /// Classifies the text of an error reply.
    init(errorMessage: some StringProtocol) {
        let word = errorMessage.prefix { $0 != " " }
        switch word {
        case "MOVED":
            if let redirection = ClusterRedirection(errorMessage: errorMessage) {
                self = .moved(redirection)
            } else {
                self = .other
            }
        case "ASK":
            if let redirection = ClusterRedirection(errorMessage: errorMessage) {
                self = .ask(redirection)
            } else {
                self = .other
            }
        case "TRYAGAIN": self = .tryAgain
        case "CLUSTERDOWN": self = .clusterDown
        case "CROSSSLOT": self = .crossSlot
        case "READONLY": self = .readOnly
        case "LOADING", "MASTERDOWN": self = .unavailable
        default: self = .other
        }
    }

    /// Classifies an error reply; `nil` for a reply that is not an error.
    init?(reply: RESPReply) {
        guard let message = reply.errorMessage else { return nil }
        self.init(errorMessage: message)
    }

    /// True when the error says that the client's view of the cluster is out of date,
    /// so a topology refresh is due: `MOVED`, `CLUSTERDOWN`, `READONLY`.
    var suggestsTopologyChange: Bool {
        switch self {
        case .moved, .clusterDown, .readOnly: return true
        case .ask, .tryAgain, .crossSlot, .unavailable, .other: return false
        }
    }
}
