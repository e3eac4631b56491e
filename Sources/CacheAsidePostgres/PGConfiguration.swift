import CLibpq
import Foundation

/// Where and how to connect to PostgreSQL, and how many connections a
/// ``PGClient`` may hold.
///
/// Build one from a URL (the ecosystem's `DATABASE_URL` habit) or from a libpq keyword
/// string:
///
/// ```swift
/// let config = try PGConfiguration(url: "postgres://app:secret@db.internal:5432/app?sslmode=require")
/// let same = try PGConfiguration(keywords: "host=db.internal user=app password=secret dbname=app sslmode=require")
/// ```
///
/// ``description`` never shows the password; ``connectionString`` does, and is meant
/// for libpq only.
public struct PGConfiguration: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// libpq's `sslmode`.
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    /// The server's host name, numeric address, or Unix socket directory (starting
    /// with `/`). `nil` uses libpq's default (the local socket). libpq's comma-separated
    /// host lists are accepted from ``init(keywords:)``.
    public var host: String?
    /// The server's port; `nil` uses libpq's default (5432).
    public var port: Int?
    /// The user name; `nil` uses libpq's default (the operating system user).
    public var user: String?
    /// The password, if any. Never shown by ``description``.
    public var password: String?
    /// The database name; `nil` uses libpq's default (the user name).
    public var database: String?
    /// libpq's `sslmode`; `nil` uses libpq's default (`prefer`).
    public var sslMode: SSLMode?
    /// Reported to the server as `application_name` (visible in `pg_stat_activity`).
    public var applicationName: String?
    /// How long establishing one connection may take (name resolution, TCP, TLS and
    /// authentication); `nil` waits indefinitely. Default 10 seconds.
    public var connectTimeout: Duration? = .seconds(10)
    /// Any other libpq connection keywords (`options`, `target_session_attrs`,
    /// `sslrootcert`, ...), passed to libpq as they are, in order.
    public var additionalKeywords: [(key: String, value: String)] = []

    /// Connections a ``PGClient`` keeps open even when idle. Default 0.
    public var minConnections: Int = 0
    /// The most connections a ``PGClient`` opens at once. Default 10.
    public var maxConnections: Int = 10
    /// How long a caller waits for a pooled connection before failing with a
    /// ``PGError/Kind/timeout`` error. Default 5 seconds.
    public var acquireTimeout: Duration = .seconds(5)
    /// How many statements each connection keeps prepared (least recently used ones
    /// are deallocated beyond it). 0 disables preparing. Default 256.
    public var statementCacheCapacity: Int = 256
    /// How long a caller that runs the only statement in flight in the process waits
    /// for its reply on its own thread (sleeping in `ppoll` on the connection's socket)
    /// before it suspends and lets the event loop resume it. Default 250 µs; zero turns
    /// it off.
    ///
    /// Waiting on its own thread saves the thread hop from the loop to the task (15-20
    /// µs on a small VM, a large part of a primary-key lookup). It holds one thread of
    /// Swift's cooperative pool for at most this long, and only while no other statement
    /// is in flight in the process. It backs off: a connection whose replies keep
    /// missing it stops polling for up to 64 statements; a thread that has run polled
    /// statements for 1 ms without suspending suspends once, so that the other tasks
    /// queued for it run; and when a suspended caller waited more than 1 ms for a
    /// thread once its reply was in (the pool has other work queued), nobody polls for
    /// the next 10 ms.
    public var replyPollTimeout: Duration = .microseconds(250)

    /// Asked for the user and password at every new connection, before libpq connects
    /// (when set, it overrides ``password``, and ``user`` if it returns one).
    ///
    /// For credentials that expire: an RDS or Aurora IAM authentication token (valid 15
    /// minutes, so a token is made for each connection), or database credentials that
    /// a secrets manager rotates. An error it throws fails the connection attempt with
    /// a ``PGError/Kind/authentication`` error that carries it as ``PGError/underlying``.
    ///
    /// An RDS IAM token generator plugs in as the provider; use TLS, since the token is
    /// sent as the password:
    ///
    /// ```swift
    /// var config = try PGConfiguration(url: "postgres://app@mydb.abc123.eu-west-1.rds.amazonaws.com:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/rds-global-bundle.pem")
    /// // CacheAsideAWS: a SigV4-presigned "connect" action of service "rds-db" for this
    /// // host, port and user, signed anew with the current AWS credentials at every call.
    /// let rds = try RDSAuthTokenGenerator(
    ///     hostname: "mydb.abc123.eu-west-1.rds.amazonaws.com", port: 5432,
    ///     username: "app", region: "eu-west-1")
    /// config.credentialsProvider = { _ in PGCredentials(password: try await rds.generateToken()) }
    /// ```
    public var credentialsProvider: (@Sendable (PGCredentialsRequest) async throws -> PGCredentials)?

    /// A configuration for a TCP server.
    public init(
        host: String? = nil, port: Int? = nil, user: String? = nil, password: String? = nil,
        database: String? = nil, sslMode: SSLMode? = nil
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
    }

    // MARK: Parsing (libpq's own parser)

    /// Parses a `postgres://` or `postgresql://` URL:
    /// `postgres://user:password@host:port/database?sslmode=require&application_name=app&connect_timeout=5`.
    ///
    /// libpq parses it (`PQconninfoParse`), so every form libpq accepts works: percent-
    /// encoded user, password, host and database, IPv6 addresses in brackets, a Unix
    /// socket directory as the percent-encoded host or a `host` query parameter, several
    /// hosts (`postgres://h1:5432,h2:5433/db`), and any libpq connection keyword as a
    /// query parameter.
    ///
    /// - Throws: a ``PGError/Kind/configuration`` error that says what is wrong, never
    ///   quoting the password (nor any fragment of the URL that could hold it).
    public init(url: String) throws {
        let lower = url.lowercased()
        guard lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") else {
            throw PGError(.configuration, "invalid PostgreSQL URL: it must start with postgres:// or postgresql://")
        }
        try self.init(conninfo: url, source: "URL")
    }

    /// Parses a libpq keyword string: `host=localhost port=5432 user=app password='a b'`.
    ///
    /// libpq parses it (`PQconninfoParse`): values may be single-quoted (with `\'` and
    /// `\\` escapes), and keywords must be libpq's.
    ///
    /// - Throws: a ``PGError/Kind/configuration`` error (never quoting a password).
    public init(keywords: String) throws {
        let trimmed = keywords.drop { $0.isWhitespace }.lowercased()
        if trimmed.hasPrefix("postgres://") || trimmed.hasPrefix("postgresql://") {
            throw PGError(.configuration, "invalid PostgreSQL keyword string: it is a URL; use init(url:)")
        }
        try self.init(conninfo: keywords, source: "keyword string")
    }

    private init(conninfo: String, source: String) throws {
        self.init()
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errorMessage) else {
            var message = "out of memory"
            if let errorMessage {
                message = String(cString: errorMessage).trimmingCharacters(in: .whitespacesAndNewlines)
                PQfreemem(errorMessage)
            }
            throw PGError(.configuration, "invalid PostgreSQL \(source): \(Self.explaining(message))")
        }
        defer { PQconninfoFree(options) }
        var cursor = options
        while let keyword = cursor.pointee.keyword {
            if let value = cursor.pointee.val {
                try apply(keyword: String(cString: keyword), value: String(cString: value), source: source)
            }
            cursor += 1
        }
    }

    /// libpq's parse error, safe to show: an unknown keyword is named, anything else
    /// libpq quotes is not (it may be part of the password).
    static func explaining(_ message: String) -> String {
        for prefix in ["invalid URI query parameter: \"", "invalid connection option \""] where message.hasPrefix(prefix) {
            // A keyword position: the text is a parameter's name, never its value.
            let name = message.dropFirst(prefix.count).prefix { $0 != "\"" }
            return "unknown connection parameter \"\(name)\" (libpq's keywords are listed in its documentation, \"Parameter Key Words\")"
        }
        return redactingQuotedFragments(message)
    }

    /// libpq's parse errors quote the text they could not parse, which may be (part of)
    /// the password: keep a quoted fragment only when it is a connection keyword.
    static func redactingQuotedFragments(_ message: String) -> String {
        var out = ""
        var rest = Substring(message)
        while let open = rest.firstIndex(of: "\"") {
            out += rest[...open]
            rest = rest[rest.index(after: open)...]
            guard let close = rest.firstIndex(of: "\"") else {
                out += "..."
                return out
            }
            let fragment = String(rest[..<close])
            out += libpqKeywords.contains(fragment) || fragment.count <= 1 ? fragment : "..."
            out += "\""
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }

    private mutating func apply(keyword: String, value: String, source: String) throws {
        func invalid(_ what: String) -> PGError {
            PGError(.configuration, "invalid PostgreSQL \(source): \(what)")
        }
        switch keyword {
        case "host":
            host = value.isEmpty ? nil : value
        case "port":
            if value.contains(",") {
                // One port per host (`postgres://h1:5432,h2:5433/db`): handed to libpq as is.
                for part in value.split(separator: ",", omittingEmptySubsequences: false) where !part.isEmpty {
                    guard let p = Int(part), (1...65535).contains(p) else {
                        throw invalid("invalid port \"\(part)\" (expected 1-65535)")
                    }
                }
                additionalKeywords.append(("port", value))
            } else if !value.isEmpty {
                guard let p = Int(value), (1...65535).contains(p) else {
                    throw invalid("invalid port \"\(value)\" (expected 1-65535)")
                }
                port = p
            }
        case "user": user = value.isEmpty ? nil : value
        case "password": password = value
        case "dbname": database = value.isEmpty ? nil : value
        case "sslmode":
            guard let mode = SSLMode(rawValue: value) else {
                throw invalid("invalid sslmode \"\(value)\" (expected one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            sslMode = mode
        case "application_name": applicationName = value
        case "connect_timeout":
            guard let seconds = Int(value.trimmingCharacters(in: .whitespaces)) else {
                throw invalid("invalid connect_timeout \"\(value)\" (expected whole seconds)")
            }
            connectTimeout = seconds > 0 ? .seconds(seconds) : nil
        default:
            additionalKeywords.append((keyword, value))
        }
    }

    /// The connection keywords libpq knows.
    static let libpqKeywords: Set<String> = {
        var names: Set<String> = []
        guard let defaults = PQconndefaults() else { return names }
        defer { PQconninfoFree(defaults) }
        var cursor = defaults
        while let keyword = cursor.pointee.keyword {
            names.insert(String(cString: keyword))
            cursor += 1
        }
        return names
    }()

    // MARK: Output

    /// The keyword/value pairs handed to libpq (including the password).
    var libpqParameters: [(String, String)] {
        var out: [(String, String)] = []
        if let host { out.append(("host", host)) }
        if let port { out.append(("port", String(port))) }
        if let user { out.append(("user", user)) }
        if let password { out.append(("password", password)) }
        if let database { out.append(("dbname", database)) }
        if let sslMode { out.append(("sslmode", sslMode.rawValue)) }
        if let applicationName { out.append(("application_name", applicationName)) }
        if let connectTimeout {
            let seconds = max(1, Int(connectTimeout.components.seconds))
            out.append(("connect_timeout", String(seconds)))
        }
        out.append(contentsOf: additionalKeywords.map { ($0.key, $0.value) })
        if !additionalKeywords.contains(where: { $0.key == "client_encoding" }) {
            out.append(("client_encoding", "UTF8"))
        }
        return out
    }

    /// The libpq keyword string for this configuration, every value quoted.
    ///
    /// It contains the password: hand it to libpq, never to a log.
    public var connectionString: String {
        libpqParameters.map { "\($0.0)=\(Self.quote($0.1))" }.joined(separator: " ")
    }

    static func quote(_ value: String) -> String {
        var out = "'"
        for c in value {
            if c == "'" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        out.append("'")
        return out
    }

    /// A URL-like summary with the password replaced by `********`.
    public var description: String {
        var text = "postgres://"
        if let user {
            text += user
            if password != nil { text += ":********" }
            text += "@"
        } else if password != nil {
            text += ":********@"
        }
        if let host { text += host.contains(":") && !host.hasPrefix("/") ? "[\(host)]" : host }
        if let port { text += ":\(port)" }
        text += "/" + (database ?? "")
        var params: [String] = []
        if let sslMode { params.append("sslmode=\(sslMode.rawValue)") }
        if let applicationName { params.append("application_name=\(applicationName)") }
        for (key, value) in additionalKeywords {
            params.append(key.contains("password") || key == "sslpassword" ? "\(key)=********" : "\(key)=\(value)")
        }
        if !params.isEmpty { text += "?" + params.joined(separator: "&") }
        return text
    }

    /// Same as ``description``, with the pool's settings: no password.
    public var debugDescription: String {
        let credentials = credentialsProvider == nil ? "" : ", credentials: from a provider"
        return "PGConfiguration(\(description), pool: \(minConnections)...\(maxConnections), acquireTimeout: \(acquireTimeout)\(credentials))"
    }

    /// True when connecting involves resolving a host name (which libpq does
    /// synchronously, so it must happen off Swift's cooperative pool).
    var needsNameResolution: Bool {
        if additionalKeywords.contains(where: { $0.key == "hostaddr" || $0.key == "service" }) {
            return additionalKeywords.contains(where: { $0.key == "service" })
        }
        // libpq falls back to $PGHOST (and resolves it) when no host is given.
        let environment = ProcessInfo.processInfo.environment
        if host == nil && environment["PGHOSTADDR"] != nil { return false }
        guard let host = host ?? environment["PGHOST"] else { return false }
        for h in host.split(separator: ",", omittingEmptySubsequences: false) {
            let name = h.trimmingCharacters(in: .whitespaces)
            if name.isEmpty || name.hasPrefix("/") || name.hasPrefix("@") { continue }
            if !isNumericAddress(name) { return true }
        }
        return false
    }

    /// The secrets to scrub from any message libpq produces.
    var secrets: [String] {
        var s: [String] = []
        if let password { s.append(password) }
        for (key, value) in additionalKeywords where key.contains("password") { s.append(value) }
        return s
    }

    func redacting(_ message: String) -> String {
        secrets.reduce(message) { redact($0, secret: $1) }
    }
}

func isNumericAddress(_ host: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
}
