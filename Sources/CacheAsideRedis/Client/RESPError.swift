import CacheAsideTLS

/// An error from the Redis client: a server's error reply, kept apart from failures of
/// the connection itself (connection, timeout, protocol, authentication) and from bad
/// configuration.
///
/// No `RESPError` ever contains a password.
public struct RESPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        let name: String

        /// The server answered the command with an error reply (`WRONGTYPE`, `NOSCRIPT`,
        /// `ERR ...`). The connection is fine.
        public static let server = Kind(name: "server")
        /// The connection could not be opened, broke (EOF, reset, write failure), or is
        /// down and waiting to reconnect.
        public static let connection = Kind(name: "connection")
        /// No reply within the command timeout (or the connect timeout). The
        /// connection is closed and reopened, since replies come in order.
        public static let timeout = Kind(name: "timeout")
        /// The server sent something that is not valid RESP, or a reply nobody asked
        /// for, or a reply of a type the command cannot return.
        public static let `protocol` = Kind(name: "protocol")
        /// `AUTH` failed at connect (wrong user or password, or no password given to a
        /// server that requires one).
        public static let authentication = Kind(name: "authentication")
        /// The configuration is invalid (a bad URL, an out-of-range database, a TLS file
        /// that cannot be read).
        public static let configuration = Kind(name: "configuration")
        /// TLS failed: the server's certificate was refused (unknown CA, name mismatch,
        /// expired), the server refused the client's, or the peer does not speak TLS.
        /// ``RESPError/tlsFailure`` says which. Never followed by a plain-text attempt.
        public static let tls = Kind(name: "TLS")

        /// The kind's name: `server`, `connection`, `timeout`, ...
        public var description: String { name }
    }

    /// What kind of failure this is.
    public var kind: Kind
    /// What failed and why. For ``Kind/server``, the server's error text, prefix
    /// included (`WRONGTYPE Operation against a key holding the wrong kind of value`).
    public var message: String

    /// For ``Kind/tls``: what failed, as OpenSSL saw it.
    public var tlsFailure: TLSFailure?

    /// Creates an error.
    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    /// A TLS failure on the connection to `endpoint`.
    init(tls failure: TLSFailure, endpoint: String) {
        self.kind = .tls
        self.message = "\(endpoint): \(failure)"
        self.tlsFailure = failure
    }

    /// True when the server answered the command with an error reply.
    public var isServerError: Bool { kind == .server }

    /// True when the command failed because Redis could not be reached or used: a
    /// connection failure, a timeout, a protocol error (which breaks the connection), an
    /// authentication failure at connect or a TLS failure. A server error reply is not
    /// one (see ``isUnavailable`` for replies that mean the server cannot serve).
    public var isConnectionFailure: Bool {
        kind == .connection || kind == .timeout || kind == .protocol || kind == .authentication || kind == .tls
    }

    /// True for `READONLY`: the server is a replica and refuses writes. After a
    /// failover, a connection to the old primary's address gets this; the client then
    /// reopens that connection, resolving the host name again (an ElastiCache primary
    /// endpoint moves to the new primary).
    public var isReadOnlyReplica: Bool { serverErrorPrefix == "READONLY" }

    /// True when the server answered but refuses writes now: `READONLY` (a replica),
    /// `OOM` (`maxmemory` reached with a no-eviction policy), `MISCONF` (snapshots
    /// failing with `stop-writes-on-bgsave-error`), `NOREPLICAS` (too few replicas for
    /// `min-replicas-to-write`).
    public var refusesWrites: Bool {
        switch serverErrorPrefix {
        case "READONLY", "OOM", "MISCONF", "NOREPLICAS": return true
        default: return false
        }
    }

    /// True when the server answered but is not ready to serve: `LOADING` (loading its
    /// dataset after a restart), `BUSY` (a script runs too long), `MASTERDOWN` (a
    /// replica that lost its primary), `TRYAGAIN`, `CLUSTERDOWN`.
    public var isServerNotReady: Bool {
        switch serverErrorPrefix {
        case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN": return true
        default: return false
        }
    }

    /// True when Redis cannot do what was asked now, whether it is unreachable
    /// (``isConnectionFailure``) or answers but refuses writes or is not ready
    /// (``refusesWrites``, ``isServerNotReady``): what a circuit breaker counts as a
    /// failure. Other server errors (`WRONGTYPE`, a script's own error) are the
    /// caller's, not the server's.
    public var isUnavailable: Bool {
        isConnectionFailure || refusesWrites || isServerNotReady
    }

    /// True for a timeout.
    public var isTimeout: Bool { kind == .timeout }

    /// The first word of a server error (`WRONGTYPE`, `NOSCRIPT`, `ERR`, `NOAUTH`), or
    /// `nil` for other kinds.
    public var serverErrorPrefix: String? {
        guard kind == .server else { return nil }
        let word = message.prefix { $0 != " " }
        return word.isEmpty ? nil : String(word)
    }

    /// The kind and message, e.g. `Redis timeout error: no reply from ...`.
    public var description: String {
        switch kind {
        case .server: return "Redis error: \(message)"
        default: return "Redis \(kind) error: \(message)"
        }
    }

    static func server(_ message: String) -> RESPError { RESPError(kind: .server, message: message) }
    static func connection(_ message: String) -> RESPError { RESPError(kind: .connection, message: message) }
    static func timeout(_ message: String) -> RESPError { RESPError(kind: .timeout, message: message) }
    static func protocolError(_ message: String) -> RESPError { RESPError(kind: .protocol, message: message) }
    static func authentication(_ message: String) -> RESPError { RESPError(kind: .authentication, message: message) }
    static func configuration(_ message: String) -> RESPError { RESPError(kind: .configuration, message: message) }
}
