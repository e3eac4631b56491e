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

    // MARK: URL

    /// Parses a `postgres://` or `postgresql://` URL:
    /// `postgres://user:password@host:port/database?sslmode=require&application_name=app&connect_timeout=5`.
    ///
    /// User, password, host and database are percent-decoded; an IPv6 address goes in
    /// brackets; a Unix socket directory can be given percent-encoded as the host or as
    /// a `host` query parameter. Other query parameters must be libpq connection
    /// keywords and are passed on.
    ///
    /// - Throws: a ``PGError/Kind/configuration`` error that says what is wrong
    ///   (never quoting the password).
    public init(url: String) throws {
        func fail(_ message: String) -> PGError {
            PGError(.configuration, "invalid PostgreSQL URL: \(message)")
        }
        var rest: Substring
        let lower = url.lowercased()
        if lower.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else if lower.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else {
            throw fail("it must start with postgres:// or postgresql://")
        }
        self.init()

        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var path: Substring?
        let authority: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
        }
        var hostPart = authority
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPart = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.percentDecode(userInfo[..<colon], what: "user name")
                password = try Self.percentDecode(userInfo[userInfo.index(after: colon)...], what: "password")
            } else {
                user = try Self.percentDecode(userInfo, what: "user name")
            }
            if user == "" { user = nil }
        }
        if hostPart.contains(",") {
            throw fail("several hosts are not supported in a URL; use init(keywords:) with host=a,b")
        }
        var portText: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw fail("unterminated [ in IPv6 host") }
            host = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            let after = hostPart[hostPart.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw fail("unexpected text after the IPv6 host")
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = try Self.percentDecode(hostPart[..<colon], what: "host")
            portText = hostPart[hostPart.index(after: colon)...]
        } else {
            host = try Self.percentDecode(hostPart, what: "host")
        }
        if host == "" { host = nil }
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw fail("invalid port \"\(portText)\" (expected 1-65535)")
            }
            port = p
        }
        if let path, !path.isEmpty {
            database = try Self.percentDecode(path, what: "database name")
        }
        if !query.isEmpty {
            for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
                guard let eq = pair.firstIndex(of: "=") else {
                    throw fail("query parameter \"\(pair)\" has no value")
                }
                let key = try Self.percentDecode(pair[..<eq], what: "query parameter name")
                let value = try Self.percentDecode(pair[pair.index(after: eq)...], what: "value of \(key)")
                try apply(keyword: key, value: value, source: "URL")
            }
        }
    }

    // MARK: Keywords

    /// Parses a libpq keyword string: `host=localhost port=5432 user=app password='a b'`.
    ///
    /// Values may be single-quoted (with `\'` and `\\` escapes). Keywords must be libpq's.
    ///
    /// - Throws: a ``PGError/Kind/configuration`` error (never quoting a password).
    public init(keywords: String) throws {
        self.init()
        let chars = Array(keywords.unicodeScalars)
        var i = 0
        func skipSpaces() { while i < chars.count && chars[i].properties.isWhitespace { i += 1 } }
        while true {
            skipSpaces()
            if i >= chars.count { break }
            var key = ""
            while i < chars.count && chars[i] != "=" && !chars[i].properties.isWhitespace {
                key.unicodeScalars.append(chars[i])
                i += 1
            }
            skipSpaces()
            guard i < chars.count && chars[i] == "=" else {
                throw PGError(.configuration, "invalid PostgreSQL keyword string: missing \"=\" after keyword \"\(key.lowercased() == "password" ? "password" : key)\"")
            }
            i += 1
            skipSpaces()
            var value = ""
            if i < chars.count && chars[i] == "'" {
                i += 1
                var closed = false
                while i < chars.count {
                    let c = chars[i]
                    if c == "\\" && i + 1 < chars.count {
                        value.unicodeScalars.append(chars[i + 1])
                        i += 2
                        continue
                    }
                    if c == "'" { closed = true; i += 1; break }
                    value.unicodeScalars.append(c)
                    i += 1
                }
                guard closed else {
                    throw PGError(.configuration, "invalid PostgreSQL keyword string: unterminated quoted value for \"\(key)\"")
                }
            } else {
                while i < chars.count && !chars[i].properties.isWhitespace {
                    if chars[i] == "\\" && i + 1 < chars.count {
                        value.unicodeScalars.append(chars[i + 1])
                        i += 2
                        continue
                    }
                    value.unicodeScalars.append(chars[i])
                    i += 1
                }
            }
            try apply(keyword: key, value: value, source: "keyword string")
        }
    }

    private mutating func apply(keyword: String, value: String, source: String) throws {
        switch keyword {
        case "host":
            host = value.isEmpty ? nil : value
        case "port":
            guard let p = Int(value), (1...65535).contains(p) else {
                throw PGError(.configuration, "invalid PostgreSQL \(source): invalid port \"\(value)\" (expected 1-65535)")
            }
            port = p
        case "user": user = value.isEmpty ? nil : value
        case "password": password = value
        case "dbname": database = value.isEmpty ? nil : value
        case "sslmode":
            guard let mode = SSLMode(rawValue: value) else {
                throw PGError(.configuration, "invalid PostgreSQL \(source): invalid sslmode \"\(value)\" (expected one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            sslMode = mode
        case "application_name": applicationName = value
        case "connect_timeout":
            guard let seconds = Int(value.trimmingCharacters(in: .whitespaces)) else {
                throw PGError(.configuration, "invalid PostgreSQL \(source): invalid connect_timeout \"\(value)\" (expected whole seconds)")
            }
            connectTimeout = seconds > 0 ? .seconds(seconds) : nil
        default:
            guard Self.libpqKeywords.contains(keyword) else {
                throw PGError(.configuration, "invalid PostgreSQL \(source): unknown connection parameter \"\(keyword)\"")
            }
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

    static func percentDecode(_ text: Substring, what: String) throws -> String {
        guard text.contains("%") else { return String(text) }
        guard let decoded = String(text).removingPercentEncoding else {
            throw PGError(.configuration, "invalid PostgreSQL URL: bad percent-encoding in the \(what)")
        }
        return decoded
    }

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

    /// Same as ``description``: no password.
    public var debugDescription: String {
        "PGConfiguration(\(description), pool: \(minConnections)...\(maxConnections), acquireTimeout: \(acquireTimeout))"
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
