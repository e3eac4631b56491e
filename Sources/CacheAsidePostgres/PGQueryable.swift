/// Something that runs SQL: a ``PGClient`` (on a pooled connection), a
/// ``PGConnection``, or a ``PGTransaction``.
///
/// Write data access against it, so the same code runs inside or outside a
/// transaction:
///
/// ```swift
/// func load(_ id: Int64, on db: some PGQueryable) async throws -> User? {
///     try await db.query("SELECT id, name, email FROM users WHERE id = $1", [id])
///         .first?.decode(User.self)
/// }
/// ```
///
/// Parameters are always bound (`$1`, `$2`...), never spliced into the SQL.
public protocol PGQueryable: Sendable {
    /// Runs one statement and returns its rows.
    func query(_ sql: String, _ parameters: [any PGEncodable]) async throws -> PGRows
    /// Runs one statement and returns how many rows it affected (inserted, updated,
    /// deleted...).
    func execute(_ sql: String, _ parameters: [any PGEncodable]) async throws -> Int
}

extension PGQueryable {
    /// Runs one statement without parameters and returns its rows.
    public func query(_ sql: String) async throws -> PGRows {
        try await query(sql, [])
    }

    /// Runs one statement without parameters and returns how many rows it affected.
    @discardableResult
    public func execute(_ sql: String) async throws -> Int {
        try await execute(sql, [])
    }
}
