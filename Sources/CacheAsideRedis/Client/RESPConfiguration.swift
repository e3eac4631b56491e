import CacheAsideTLS

/// Where a ``RESPClient`` connects, how it authenticates and encrypts, and its timeouts.
///
/// Usually made from a URL:
///
/// ```swift
/// var configuration = try RESPConfiguration(url: "rediss://app:secret@cache.example.internal:6379/0")
/// configuration.commandTimeout = .milliseconds(250)
/// let client = try RESPClient(configuration: configuration)
/// ```
///
/// Its ``description`` never shows the password.
public struct RESPConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// Where the server listens.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A TCP host name or numeric address, and port.
        case tcp(host: String, port: Int)
        /// A Unix domain socket path.
        case unix(path: String)

        /// `host:port` (`[v6]:port`) or the socket path.
        public var description: String {
            switch self {
            case .tcp(let host, let port):
                return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path):
                return path
            }
        }
    }

    /// Where the server listens.
    public var endpoint: Endpoint
    /// The ACL user name for `AUTH user password`; `nil` for the `default` user
    /// (`AUTH password`).
    public var username: String?
    /// The password sent with `AUTH` on every connect; `nil` sends no `AUTH`.
    public var password: String?
    /// The logical database selected with `SELECT` on every connect (0 sends none).
    public var database: Int
    /// TLS for the connection (`rediss://`); `nil` for plain text. The default
    /// ``TLSClientConfiguration`` verifies the server against the system's CAs and
    /// checks its name. A TLS failure is an error of kind ``RESPError/Kind/tls``, never
    /// a fallback to plain text.
    public var tls: TLSClientConfiguration?
    /// Credentials asked for at every connect and every re-authentication, instead of
    /// ``username`` and ``password`` (rotated passwords, ElastiCache IAM tokens).
    public var credentialsProvider: RESPCredentialsProvider?
    /// With a ``credentialsProvider``: how often an open connection authenticates again
    /// with fresh credentials (`AUTH` on the connection, between commands). ElastiCache
    /// closes IAM-authenticated connections that have not authenticated again within 12
    /// hours. Subscriber connections cannot re-authenticate (RESP2 allows no `AUTH`
    /// while subscribed); they authenticate afresh when they reconnect. `nil`: never.
    /// Default: 1 hour.
    public var reauthenticationInterval: Duration? = .seconds(3600)

    /// How long opening a connection may take: TCP connect plus `AUTH` and `SELECT`.
    /// Default: 2 seconds.
    public var connectTimeout: Duration = .seconds(2)
    /// How long a command may wait for its reply, from the moment it is issued. A
    /// command issued while the connection is being opened waits for it at most this
    /// long. When the oldest command on a connection runs out of time, every command on
    /// that connection fails with a timeout and the connection is reopened (replies
    /// come in order, so the connection is stuck). Checked every few milliseconds
    /// (1/20 of the timeout, between 2 and 25 ms), so a timeout fires up to that much
    /// late. Default: 1 second.
    public var commandTimeout: Duration = .seconds(1)
    /// How many connections a ``RESPClient`` may open and shares among all its tasks
    /// (commands of many tasks are pipelined on each; each opens when a command is
    /// first routed to it, and an idle one is preferred). Default: 2.
    public var connectionCount: Int = 2
    /// The first delay before reconnecting after a connect attempt failed. Each further
    /// failure doubles it, up to ``reconnectBackoffMaximum``; each delay is then
    /// randomized to between half and all of it (jitter), so that many clients do not
    /// reconnect in step. A connection that broke after working is reopened at once,
    /// without delay. Default: 100 milliseconds.
    public var reconnectBackoffMinimum: Duration = .milliseconds(100)
    /// The longest delay between reconnect attempts. While a connection waits to
    /// reconnect, commands routed to it fail at once with a connection error rather
    /// than waiting. Default: 2 seconds.
    public var reconnectBackoffMaximum: Duration = .seconds(2)
    /// How long a caller whose command went out alone on an idle connection polls the
    /// socket for its reply before it suspends. A reply within this window reaches the
    /// caller with no thread hop and no wake-up (on loopback or within an availability
    /// zone, a GET's round trip is well under it); a window that passes without the
    /// reply turns polling off for a growing number of commands, so a distant or
    /// overloaded server costs little. Never more than one caller per connection polls,
    /// and never on the event loop's thread. `.zero` turns polling off. Default: 50
    /// microseconds.
    public var replyPollingWindow: Duration = .microseconds(50)

    /// Creates a configuration from its parts.
    public init(
        endpoint: Endpoint, username: String? = nil, password: String? = nil, database: Int = 0,
        tls: TLSClientConfiguration? = nil
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses a Redis URL:
    ///
    /// - `redis://[[user]:password@]host[:port][/db]` (port 6379 and database 0 by
    ///   default; `redis://:password@host` authenticates as the `default` user);
    ///   an IPv6 address goes in brackets: `redis://[::1]:6379`;
    /// - `unix://[[user]:password@]/path/to/redis.sock[?db=N]`.
    ///
    /// - `rediss://...` (same form): TLS, verified against the system's CAs, with these
    ///   query parameters (values percent-decoded):
    ///   - `tls_ca_file=PATH`: trust the CAs in this PEM file instead;
    ///   - `tls_cert_file=PATH` and `tls_key_file=PATH`: a client certificate and its
    ///     key (mutual TLS);
    ///   - `tls_server_name=NAME`: the name the server's certificate must carry, and the
    ///     SNI sent, when it differs from the host;
    ///   - `tls_insecure_skip_verify=true`: NO verification of the server at all (any
    ///     certificate, any name): development only.
    ///
    /// User and password are percent-decoded (`%40` for `@`, `%3A` for `:`). `db` is
    /// understood as a query parameter too.
    ///
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` that says
    ///   what is wrong (never quoting the password).
    public init(url: String) throws(RESPError) {
        guard let schemeEnd = url.firstRange(of: "://") else {
            throw .configuration("not a Redis URL (expected redis://host:port/db or unix:///path): \(Self.redacted(url))")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        var rest = Substring(url[schemeEnd.upperBound...])

        switch scheme {
        case "redis", "unix", "rediss":
            break
        default:
            throw .configuration("unsupported URL scheme '\(scheme)' in \(Self.redacted(url)) (expected redis://, rediss:// or unix://)")
        }
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }

        // Query string: `db`, and the TLS options of rediss://.
        var queryDatabase: Int?
        var tls: TLSClientConfiguration? = scheme == "rediss" ? TLSClientConfiguration() : nil
        if let q = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: q)...]
            rest = rest[..<q]
            for pair in query.split(separator: "&") where !pair.isEmpty {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(parts[0])
                let value = try Self.percentDecode(parts.count > 1 ? parts[1] : "", what: "parameter '\(name)'", url: url)
                if name == "db" {
                    queryDatabase = try Self.parseDatabase(value, url: url)
                    continue
                }
                guard name.hasPrefix("tls_") else {
                    throw .configuration("unsupported parameter '\(name)' in Redis URL \(Self.redacted(url)) (understood: db, and for rediss:// tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, tls_insecure_skip_verify)")
                }
                guard tls != nil else {
                    throw .configuration("'\(name)' is a TLS option but \(Self.redacted(url)) is not a rediss:// URL")
                }
                guard !value.isEmpty else {
                    throw .configuration("the parameter '\(name)' in Redis URL \(Self.redacted(url)) has no value")
                }
                switch name {
                case "tls_ca_file": tls?.trustRoots = .file(value)
                case "tls_cert_file": tls?.certificateChainFile = value
                case "tls_key_file": tls?.privateKeyFile = value
                case "tls_server_name": tls?.serverName = value
                case "tls_insecure_skip_verify":
                    switch value.lowercased() {
                    case "true", "1", "yes": tls?.verification = .insecureNoVerification
                    case "false", "0", "no": tls?.verification = .full
                    default:
                        throw .configuration("tls_insecure_skip_verify in Redis URL \(Self.redacted(url)) must be true or false, not '\(value)'")
                    }
                default:
                    throw .configuration("unsupported TLS parameter '\(name)' in Redis URL \(Self.redacted(url)) (understood: tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, tls_insecure_skip_verify)")
                }
            }
        }

        // User information: everything before the last '@' of the authority (unix:
        // before the '@' that precedes the path).
        var username: String?
        var password: String?
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        let path = rest[authorityEnd...]
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = userInfo[..<colon]
                username = user.isEmpty ? nil : try Self.percentDecode(user, what: "user name", url: url)
                password = try Self.percentDecode(userInfo[userInfo.index(after: colon)...], what: "password", url: url)
            } else if !userInfo.isEmpty {
                // `redis://secret@host` is how some tools write a password alone; the
                // Redis CLI and most clients read it as a user name. Be explicit.
                throw .configuration("Redis URL \(Self.redacted(url)) has user information without ':': write redis://:password@host or redis://user:password@host")
            }
        }

        if scheme == "unix" {
            guard authority.isEmpty else {
                throw .configuration("unix:// URL \(Self.redacted(url)) must have an empty host: unix:///path/to/redis.sock")
            }
            guard path.count > 1 else {
                throw .configuration("unix:// URL \(Self.redacted(url)) has no socket path")
            }
            guard tls == nil else {
                throw .configuration("TLS over a Unix socket is not supported: \(Self.redacted(url))")
            }
            self.init(endpoint: .unix(path: String(path)), username: username, password: password, database: queryDatabase ?? 0)
            return
        }

        // Host and port.
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .configuration("unterminated IPv6 address in Redis URL \(Self.redacted(url))")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw .configuration("unexpected '\(after)' after the IPv6 address in Redis URL \(Self.redacted(url))")
                }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else {
            throw .configuration("Redis URL \(Self.redacted(url)) has no host")
        }
        var port = 6379
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw .configuration("invalid port '\(portText)' in Redis URL \(Self.redacted(url)) (expected 1-65535)")
            }
            port = value
        }

        // Database: the path (`/3`), or `?db=3`.
        var database = 0
        let dbText = path.drop { $0 == "/" }
        if !dbText.isEmpty {
            database = try Self.parseDatabase(String(dbText), url: url)
        }
        if let queryDatabase {
            if !dbText.isEmpty && queryDatabase != database {
                throw .configuration("Redis URL \(Self.redacted(url)) names two different databases")
            }
            database = queryDatabase
        }
        self.init(endpoint: .tcp(host: String(host), port: port), username: username, password: password, database: database, tls: tls)
    }

    /// The URL without the password: `redis://user:***@host:port/db`.
    public var description: String {
        var userInfo = ""
        if username != nil || password != nil {
            userInfo = (username ?? "") + (password != nil ? ":***" : "") + "@"
        }
        switch endpoint {
        case .tcp:
            guard let tls else { return "redis://\(userInfo)\(endpoint)/\(database)" }
            var options: [String] = []
            if case .file(let path) = tls.trustRoots { options.append("tls_ca_file=\(path)") }
            if let file = tls.certificateChainFile { options.append("tls_cert_file=\(file)") }
            if let file = tls.privateKeyFile { options.append("tls_key_file=\(file)") }
            if let name = tls.serverName { options.append("tls_server_name=\(name)") }
            if tls.verification == .insecureNoVerification { options.append("tls_insecure_skip_verify=true") }
            return "rediss://\(userInfo)\(endpoint)/\(database)" + (options.isEmpty ? "" : "?" + options.joined(separator: "&"))
        case .unix(let path):
            return "unix://\(userInfo)\(path)" + (database != 0 ? "?db=\(database)" : "")
        }
    }

    /// Checks the knobs; thrown from the client's first use rather than trapping.
    func validate() throws(RESPError) {
        guard database >= 0 else { throw .configuration("database \(database) is negative") }
        guard connectionCount >= 1 else { throw .configuration("connectionCount must be at least 1 (is \(connectionCount))") }
        guard connectTimeout > .zero, commandTimeout > .zero else {
            throw .configuration("connectTimeout and commandTimeout must be positive")
        }
        guard reconnectBackoffMinimum > .zero, reconnectBackoffMaximum >= reconnectBackoffMinimum else {
            throw .configuration("reconnect backoff must satisfy 0 < minimum <= maximum")
        }
        guard replyPollingWindow >= .zero, replyPollingWindow <= .milliseconds(10) else {
            throw .configuration("replyPollingWindow must be between zero and 10 ms (is \(replyPollingWindow))")
        }
        if let interval = reauthenticationInterval, interval <= .zero {
            throw .configuration("reauthenticationInterval must be positive")
        }
        if tls != nil, case .unix = endpoint {
            throw .configuration("TLS over a Unix socket is not supported")
        }
    }

    private static func parseDatabase(_ text: String, url: String) throws(RESPError) -> Int {
        guard let value = Int(text), value >= 0, value <= 1_000_000 else {
            throw .configuration("invalid database '\(text)' in Redis URL \(redacted(url)) (expected a non-negative integer)")
        }
        return value
    }

    private static func percentDecode(_ text: Substring, what: String, url: String) throws(RESPError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw .configuration("invalid percent-encoding in the \(what) of Redis URL \(redacted(url))")
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `url` with any password replaced by `***`, for error messages.
    static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://") else {
            // Not URL-shaped: show nothing that might be a secret.
            return url.contains("@") ? "(unparseable URL)" : url
        }
        let afterScheme = url[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return url }
        let userInfo = authority[..<at]
        // Without a ':', the lone word may be a password (`redis://secret@host`).
        let user = userInfo.firstIndex(of: ":").map { userInfo[..<$0] + ":***" } ?? "***"
        return url[..<schemeEnd.upperBound] + user + authority[at...] + afterScheme[authorityEnd...]
    }
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
