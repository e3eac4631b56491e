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

    /// The fields, behind one reference: an error is one word to copy or move (results
    /// and failures travel through several layers on every statement).
    private final class Storage: @unchecked Sendable {
        var kind: Kind
        var message: String
        var sqlState: String?
        var detail: String?
        var hint: String?
        var constraint: String?
        var schema: String?
        var table: String?
        var column: String?
        var severity: String?
        var sql: String?
        var underlying: (any Error)?
        var notSent = false

        init(kind: Kind, message: String) {
            self.kind = kind
            self.message = message
        }

        func copy() -> Storage {
            let c = Storage(kind: kind, message: message)
            c.sqlState = sqlState
            c.detail = detail
            c.hint = hint
            c.constraint = constraint
            c.schema = schema
            c.table = table
            c.column = column
            c.severity = severity
            c.sql = sql
            c.underlying = underlying
            c.notSent = notSent
            return c
        }
    }

    private var storage: Storage

    /// The storage, copied first if another error shares it (copy on write).
    private var unique: Storage {
        mutating get {
            if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
            return storage
        }
    }

    /// The class of failure.
    public var kind: Kind {
        get { storage.kind }
        set { unique.kind = newValue }
    }
    /// A human-readable message (the server's primary message for a query error).
    public var message: String {
        get { storage.message }
        set { unique.message = newValue }
    }
    /// The five-character SQLSTATE code, for errors the server reported (for example
    /// `23505` for a unique violation, `57014` for a cancelled statement).
    public var sqlState: String? {
        get { storage.sqlState }
        set { unique.sqlState = newValue }
    }
    /// The server's detail message, if any. It can quote row values (a unique
    /// violation's DETAIL quotes the key): ``description`` leaves it out.
    public var detail: String? {
        get { storage.detail }
        set { unique.detail = newValue }
    }
    /// The server's hint, if any.
    public var hint: String? {
        get { storage.hint }
        set { unique.hint = newValue }
    }
    /// The constraint that was violated, if any.
    public var constraint: String? {
        get { storage.constraint }
        set { unique.constraint = newValue }
    }
    /// The schema of the object concerned, if any.
    public var schema: String? {
        get { storage.schema }
        set { unique.schema = newValue }
    }
    /// The table concerned, if any.
    public var table: String? {
        get { storage.table }
        set { unique.table = newValue }
    }
    /// For a ``Kind/decoding`` error, the result column that could not be decoded;
    /// for a server error, the table column concerned (if the server said).
    public var column: String? {
        get { storage.column }
        set { unique.column = newValue }
    }
    /// The server's severity (`ERROR`, `FATAL`, ...), if any.
    public var severity: String? {
        get { storage.severity }
        set { unique.severity = newValue }
    }
    /// The SQL text of the statement that failed (never its parameters), if any.
    public var sql: String? {
        get { storage.sql }
        set { unique.sql = newValue }
    }
    /// The lower-level error that caused this one, if any (an `IOError`, a
    /// `DecodingError`...).
    public var underlying: (any Error)? {
        get { storage.underlying }
        set { unique.underlying = newValue }
    }

    /// Creates an error.
    public init(
        _ kind: Kind, _ message: String, sqlState: String? = nil, column: String? = nil,
        sql: String? = nil, underlying: (any Error)? = nil
    ) {
        storage = Storage(kind: kind, message: message)
        storage.sqlState = sqlState
        storage.column = column
        storage.sql = sql
        storage.underlying = underlying
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
    var notSent: Bool {
        get { storage.notSent }
        set { unique.notSent = newValue }
    }
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
