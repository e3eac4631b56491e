import CLibpq
import IOLoop
import Logging

/// One connection to PostgreSQL, over libpq in non-blocking mode, driven by an
/// ``IOLoop``: no call waits for the network on a thread of Swift's cooperative pool.
///
/// Statements run one at a time, in the order they were issued. Statements that run
/// more than once are prepared (once per connection) and reused. Cancelling the task of
/// a running statement cancels it on the server (`PQcancel`), and the connection stays
/// usable.
///
/// Most code uses a ``PGClient`` (a pool) rather than connections directly.
public final class PGConnection: PGQueryable, Sendable {
    let core: ConnectionCore

    init(core: ConnectionCore) { self.core = core }

    deinit { core.close() }

    /// Opens a connection.
    ///
    /// - Parameters:
    ///   - configuration: where to connect (its pool settings are ignored here).
    ///   - loop: the event loop that watches the socket.
    ///   - logger: where connection events go (at debug level).
    /// - Throws: ``PGError`` of kind ``PGError/Kind/connection``,
    ///   ``PGError/Kind/authentication``, ``PGError/Kind/timeout`` or
    ///   ``PGError/Kind/cancelled``; never containing the password.
    public static func connect(
        configuration: PGConfiguration,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "cache-aside.postgres")
    ) async throws -> PGConnection {
        PGConnection(core: try await ConnectionCore.connect(configuration: configuration, loop: loop, logger: logger))
    }

    public func query(_ sql: String, _ parameters: [any PGEncodable]) async throws -> PGRows {
        let bindings = try Bindings(parameters)
        return PGRows(result: try await core.run(sql: sql, bindings: bindings))
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [any PGEncodable]) async throws -> Int {
        let bindings = try Bindings(parameters)
        return try await core.run(sql: sql, bindings: bindings).affectedRows
    }

    /// Runs one or more statements separated by semicolons, without parameters, with
    /// the simple query protocol (as `psql -c` does): for scripts, DDL and migrations.
    /// Outside a transaction, the statements run in one implicit transaction.
    public func executeScript(_ sql: String) async throws {
        _ = try await core.simple(sql, cancellable: true)
    }

    /// Closes the connection. Statements waiting to run fail with
    /// ``PGError/Kind/closed``.
    public func close() {
        core.close()
    }

    /// True once the connection was closed, or found broken (the server went away).
    public var isClosed: Bool { core.isBroken }

    /// The server process serving this connection (`pg_backend_pid()`).
    public var backendPID: Int32 { core.backendPID }

    /// The server's version as an integer (`150004` for 15.4).
    public var serverVersion: Int { core.serverVersion }

    /// True when a transaction is open on this connection.
    public var isInTransaction: Bool {
        let status = core.transactionStatus
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE
    }
}
