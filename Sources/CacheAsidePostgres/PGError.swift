import Foundation

/// An error from this module: what failed, why, and (for errors the server reported)
/// the server's SQLSTATE and diagnostic fields.
///
/// Errors are told apart by ``kind``: a ``Kind/connection`` error (the connection could
/// not be made or was lost) is not a ``Kind/query`` error (the server refused a
/// statement), so a caller can retry the one and not the other. No error ever contains
/// a password.
///
/// ``description`` (what `"\(error)"` and loggers print) is safe for logs: it never
/// shows a statement's parameters, row values, or the server's DETAIL (a unique
/// violation's DETAIL quotes the duplicate key). ``debugDescription``
/// (`String(reflecting: error)`) shows everything.
public struct PGError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The class of failure.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// The connection could not be established, or it was lost.
        public static let connection = Kind(name: "connection")
        /// The server rejected the credentials.
        public static let authentication = Kind(name: "authentication")
        /// The server reported an error for a statement (see ``PGError/sqlState``).
        public static let query = Kind(name: "query")
        /// Something took longer than allowed: acquiring a pooled connection or
        /// connecting.
        public static let timeout = Kind(name: "timeout")
        /// The task was cancelled; a running statement was cancelled on the server.
        public static let cancelled = Kind(name: "cancelled")
        /// The client or connection was shut down or closed.
        public static let closed = Kind(name: "closed")
        /// A value could not be decoded from a result column (see
        /// ``PGError/column``).
        public static let decoding = Kind(name: "decoding")
        /// A parameter could not be encoded.
        public static let encoding = Kind(name: "encoding")
        /// The configuration is invalid (a bad URL or keyword string).
        public static let configuration = Kind(name: "configuration")
        /// A migration could not be applied, or an applied migration was edited.
        public static let migration = Kind(name: "migration")
        /// The server sent something this client does not handle.
        public static let protocolViolation = Kind(name: "protocol")

        public var description: String { name }
    }

    /// The class of failure.
    public var kind: Kind
    /// A human-readable message (the server's primary message for a query error).
    public var message: String
    /// The five-character SQLSTATE code, for errors the server reported (for example
    /// `23505` for a unique violation, `57014` for a cancelled statement).
    public var sqlState: String?
    /// The server's detail message, if any.
    public var detail: String?
    /// The server's hint, if any.
    public var hint: String?
    /// The constraint that was violated, if any.
    public var constraint: String?
    /// The schema of the object concerned, if any.
    public var schema: String?
    /// The table concerned, if any.
    public var table: String?
    /// For a ``Kind/decoding`` error, the result column that could not be decoded;
    /// for a server error, the table column concerned (if the server said).
    public var column: String?
    /// The server's severity (`ERROR`, `FATAL`, ...), if any.
    public var severity: String?
    /// The SQL text of the statement that failed (never its parameters), if any.
    public var sql: String?
    /// The lower-level error that caused this one, if any (an `IOError`, a
    /// `DecodingError`...).
    public var underlying: (any Error)?

    /// Creates an error.
    public init(
        _ kind: Kind, _ message: String, sqlState: String? = nil, column: String? = nil,
        sql: String? = nil, underlying: (any Error)? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.column = column
        self.sql = sql
        self.underlying = underlying
    }

    /// `23505`: a unique constraint was violated.
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// `23503`: a foreign key constraint was violated.
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
    /// `23502`: a NOT NULL constraint was violated.
    public var isNotNullViolation: Bool { sqlState == "23502" }
    /// `40001` or `40P01`: the transaction failed to serialize or deadlocked, and may
    /// succeed if retried.
    public var isSerializationFailure: Bool { sqlState == "40001" || sqlState == "40P01" }
    /// `42601`: the statement has a syntax error.
    public var isSyntaxError: Bool { sqlState == "42601" }
    /// The statement was cancelled (by task cancellation or `statement_timeout`).
    public var isCancellation: Bool { kind == .cancelled || sqlState == "57014" }

    /// A summary safe for logs: the kind, the SQLSTATE, the server's primary message
    /// (for a data exception, without the value it quotes), the constraint or column
    /// concerned, and what failed (the statement's SQL, shortened). Never the statement's
    /// parameters, row values or the server's DETAIL, HINT and context, which can quote
    /// them: those are in ``debugDescription``.
    public var description: String {
        var text = "PostgreSQL \(kind) error"
        if let sqlState { text += " \(sqlState)" }
        if kind == .decoding, let column {
            text += " (column \"\(column)\")"
        }
        text += ": \(safeMessage)"
        if let constraint { text += " (constraint: \(constraint))" }
        if let sql { text += " [sql: \(Self.shorten(sql, to: 200))]" }
        return text
    }

    /// Everything the error carries, for debugging: ``description`` plus the server's
    /// full message, DETAIL, HINT, schema, table, column and severity, and the
    /// underlying error. It can contain row values (a unique violation's DETAIL quotes
    /// the key), so keep it out of logs that must not hold data. Never a password.
    public var debugDescription: String {
        var parts = ["kind: \(kind)"]
        if let sqlState { parts.append("sqlState: \(sqlState)") }
        if let severity { parts.append("severity: \(severity)") }
        parts.append("message: \(message)")
        if let detail { parts.append("detail: \(detail)") }
        if let hint { parts.append("hint: \(hint)") }
        if let schema { parts.append("schema: \(schema)") }
        if let table { parts.append("table: \(table)") }
        if let column { parts.append("column: \(column)") }
        if let constraint { parts.append("constraint: \(constraint)") }
        if let sql { parts.append("sql: \(sql)") }
        if let underlying { parts.append("underlying: \(String(reflecting: underlying))") }
        return "PGError(" + parts.joined(separator: ", ") + ")"
    }

    /// The primary message, without the value a data exception (SQLSTATE class 22,
    /// e.g. `invalid input syntax for type integer: "abc"`) quotes.
    var safeMessage: String {
        guard let sqlState, sqlState.hasPrefix("22"), let range = message.range(of: ": \"") else { return message }
        return String(message[..<range.lowerBound]) + ": (value omitted)"
    }

    static func shorten(_ text: String, to limit: Int) -> String {
        text.count > limit ? String(text.prefix(limit)) + "..." : text
    }

    // Set on connection errors that happened before any byte of a statement was sent:
    // the statement may then be retried on another connection.
    var notSent = false
}

extension PGError {
    static func closed(_ message: String = "the connection is closed") -> PGError {
        PGError(.closed, message)
    }
    static func cancelled(sql: String? = nil) -> PGError {
        var e = PGError(.cancelled, "the task was cancelled", sql: sql)
        e.sqlState = nil
        return e
    }
}

/// Removes a secret from a message, in case a library echoed it.
func redact(_ message: String, secret: String?) -> String {
    guard let secret, secret.count >= 3 else { return message }
    var result = message.replacingOccurrences(of: secret, with: "********")
    if let encoded = secret.addingPercentEncoding(withAllowedCharacters: .urlPasswordAllowed), encoded != secret {
        result = result.replacingOccurrences(of: encoded, with: "********")
    }
    return result
}
