import CacheAsideTLS
import Foundation
import Logging

/// One migration: a version, a name and the SQL that applies it.
public struct PGMigration: Sendable, Hashable {
    /// The version; migrations apply in increasing version order.
    public var version: Int64
    /// A name for people (the file name, for migrations loaded from files).
    public var name: String
    /// The SQL, one or several statements.
    public var sql: String

    /// Creates a migration.
    public init(version: Int64, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// The SHA-256 of the SQL text (hex), recorded when the migration is applied.
    public var checksum: String { Digest.hex(Digest.sha256(sql.utf8)) }
}

/// Applies numbered SQL migrations in order, each in its own transaction, and records
/// them in a `schema_migrations` table (version, name, checksum, time applied).
///
/// - Files are named `NNNN_description.sql`: the numeric prefix is the version.
/// - Several processes may migrate at once: each migration runs under a transaction-level
///   advisory lock (`pg_advisory_xact_lock`), and re-reads what was applied after taking
///   it, so every migration is applied exactly once.
/// - A migration that was applied and whose file changed since (its checksum differs)
///   stops the migrator before it applies anything: edit history with a new migration,
///   never by changing an applied one.
/// - With `schema:`, the migrations run with that schema first on the `search_path`
///   (created if needed), and the record table lives there too: handy for isolated
///   tests.
///
/// Statements that cannot run inside a transaction (`CREATE INDEX CONCURRENTLY`) are not
/// supported.
public struct PGMigrator: Sendable {
    /// The migrations, sorted by version.
    public let migrations: [PGMigration]
    /// The schema migrations run in (and record themselves in), or `nil` for the
    /// connection's default `search_path`.
    public let schema: String?
    /// The record table's name.
    public let table: String
    let client: PGClient
    let logger: Logger

    /// Creates a migrator for explicit migrations.
    ///
    /// - Throws: ``PGError/Kind/migration`` when two migrations share a version.
    public init(
        client: PGClient, migrations: [PGMigration], schema: String? = nil,
        table: String = "schema_migrations", logger: Logger = Logger(label: "cache-aside.postgres.migrator")
    ) throws {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.version == b.version {
            throw PGError(.migration, "migrations \"\(a.name)\" and \"\(b.name)\" have the same version \(a.version)")
        }
        self.migrations = sorted
        self.schema = schema
        self.table = table
        self.client = client
        self.logger = logger
    }

    /// Creates a migrator for the `*.sql` files in `directory` (`0001_users.sql`,
    /// `0002_orders.sql`, ...).
    ///
    /// - Throws: ``PGError/Kind/migration`` naming the file when a `.sql` file has
    ///   no numeric prefix, two files share a version, or a file cannot be read.
    public init(
        client: PGClient, directory: URL, schema: String? = nil,
        table: String = "schema_migrations", logger: Logger = Logger(label: "cache-aside.postgres.migrator")
    ) throws {
        try self.init(client: client, migrations: try Self.load(directory: directory), schema: schema, table: table, logger: logger)
    }

    /// Reads the migrations in `directory`.
    public static func load(directory: URL) throws -> [PGMigration] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw PGError(.migration, "cannot list migrations in \(directory.path): \(error.localizedDescription)", underlying: error)
        }
        var out: [PGMigration] = []
        for name in names.sorted() where name.hasSuffix(".sql") {
            let digits = name.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let version = Int64(digits) else {
                throw PGError(.migration, "migration file \(name) has no numeric version prefix (expected NNNN_name.sql)")
            }
            let url = directory.appendingPathComponent(name)
            let data: Data
            do {
                data = try Data(contentsOf: url)
            } catch {
                throw PGError(.migration, "cannot read migration file \(name): \(error.localizedDescription)", underlying: error)
            }
            out.append(PGMigration(version: version, name: name, sql: String(decoding: data, as: UTF8.self)))
        }
        return out
    }

    /// A migration that is recorded as applied.
    public struct AppliedMigration: Sendable, Hashable {
        /// Its version.
        public var version: Int64
        /// Its name when it was applied.
        public var name: String
        /// Its checksum when it was applied.
        public var checksum: String
    }

    /// Applies the migrations not applied yet, in version order, each in its own
    /// transaction.
    ///
    /// - Returns: the versions this call applied (empty when the database was up to
    ///   date, or another process applied them meanwhile).
    /// - Throws: ``PGError/Kind/migration`` naming the file when an applied
    ///   migration was edited; the server's error (with the file named) when a
    ///   migration fails, which is then rolled back.
    @discardableResult
    public func migrate() async throws -> [Int64] {
        var applied: [Int64] = []
        while true {
            let next: Int64? = try await client.withTransaction { tx in
                try await prepare(tx)
                let done = try await readApplied(tx)
                try verify(done)
                let doneVersions = Set(done.map(\.version))
                guard let migration = migrations.first(where: { !doneVersions.contains($0.version) }) else { return nil }
                logger.info("applying migration \(migration.name)")
                do {
                    try await tx.executeScript(migration.sql)
                } catch let error as PGError {
                    var e = error
                    e.message = "migration \(migration.name) failed: \(error.message)"
                    throw e
                }
                try await tx.execute(
                    "INSERT INTO \(qualifiedTable) (version, name, checksum) VALUES ($1, $2, $3)",
                    [migration.version, migration.name, migration.checksum])
                return migration.version
            }
            guard let next else { return applied }
            applied.append(next)
        }
    }

    /// The migrations recorded as applied.
    public func appliedMigrations() async throws -> [AppliedMigration] {
        try await client.withTransaction { tx in
            try await prepare(tx)
            return try await readApplied(tx)
        }
    }

    private var qualifiedTable: String {
        if let schema { return quoteIdentifier(schema) + "." + quoteIdentifier(table) }
        return quoteIdentifier(table)
    }

    /// Takes the lock, sets the search path, creates the schema and the table.
    private func prepare(_ tx: PGTransaction) async throws {
        let lockKey = Int64(bitPattern: fnv1a("swift-cache-aside.migrations:" + (schema ?? "") + "." + table))
        _ = try await tx.query("SELECT pg_advisory_xact_lock($1)", [lockKey])
        if let schema {
            try await tx.execute("CREATE SCHEMA IF NOT EXISTS \(quoteIdentifier(schema))")
            try await tx.execute("SET LOCAL search_path TO \(quoteIdentifier(schema))")
        }
        try await tx.execute("""
            CREATE TABLE IF NOT EXISTS \(qualifiedTable) (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    private func readApplied(_ tx: PGTransaction) async throws -> [AppliedMigration] {
        try await tx.query("SELECT version, name, checksum FROM \(qualifiedTable) ORDER BY version")
            .decode(AppliedMigration.self)
    }

    private func verify(_ applied: [AppliedMigration]) throws {
        let byVersion = Dictionary(migrations.map { ($0.version, $0) }, uniquingKeysWith: { a, _ in a })
        for record in applied {
            guard let migration = byVersion[record.version] else {
                logger.warning("migration \(record.version) (\(record.name)) is applied but unknown here")
                continue
            }
            if migration.checksum != record.checksum {
                throw PGError(.migration, "migration \(migration.name) was edited after it was applied (checksum \(migration.checksum) differs from the applied \(record.checksum)); add a new migration instead of changing an applied one")
            }
        }
    }
}

extension PGMigrator.AppliedMigration: Decodable {}

/// Quotes a SQL identifier: `"name"`, with `"` doubled.
func quoteIdentifier(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}
