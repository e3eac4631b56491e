import Synchronization

/// An open transaction, handed to the body of ``PGClient/withTransaction(isolation:_:)``.
///
/// Run statements with ``query(_:_:)`` and ``execute(_:_:)``; register work that must
/// happen only once the transaction committed (cache invalidation) with
/// ``afterCommit(_:)``. The transaction can't be used once its body has returned.
public final class PGTransaction: PGQueryable, Sendable {
    /// The connection the transaction runs on.
    public let connection: PGConnection

    struct State {
        var open = true
        var hooks: [@Sendable () async -> Void] = []
    }
    let state = Mutex(State())

    init(connection: PGConnection) { self.connection = connection }

    private func checkOpen() throws {
        guard state.withLock({ $0.open }) else {
            throw PGError(.closed, "the transaction is over; run statements inside the withTransaction body")
        }
    }

    public func query(_ sql: String, _ parameters: [any PGEncodable]) async throws -> PGRows {
        try checkOpen()
        return try await connection.query(sql, parameters)
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [any PGEncodable]) async throws -> Int {
        try checkOpen()
        return try await connection.execute(sql, parameters)
    }

    /// Runs several statements without parameters (see
    /// ``PGConnection/executeScript(_:)``) inside the transaction.
    public func executeScript(_ sql: String) async throws {
        try checkOpen()
        try await connection.executeScript(sql)
    }

    /// Registers work to run after the transaction commits, in registration order.
    ///
    /// `withTransaction` awaits it before it returns, so that the caller sees its
    /// effects (after an update returns, its cache entry is gone). It runs even if the
    /// calling task was cancelled meanwhile (the commit happened), and never when the
    /// transaction rolls back. If the connection is lost while `COMMIT` is in flight
    /// the outcome is unknown: the work then runs too (it should be safe to run
    /// needlessly, as invalidation is) before the error is thrown.
    public func afterCommit(_ work: @escaping @Sendable () async -> Void) {
        state.withLock { $0.hooks.append(work) }
    }

    /// Ends the transaction; returns the registered hooks.
    func finish() -> [@Sendable () async -> Void] {
        state.withLock { s in
            s.open = false
            let hooks = s.hooks
            s.hooks = []
            return hooks
        }
    }
}

/// Runs after-commit hooks, shielded from the caller's cancellation.
func runHooks(_ hooks: [@Sendable () async -> Void]) async {
    guard !hooks.isEmpty else { return }
    if Task.isCancelled {
        await Task { for hook in hooks { await hook() } }.value
    } else {
        for hook in hooks { await hook() }
    }
}
