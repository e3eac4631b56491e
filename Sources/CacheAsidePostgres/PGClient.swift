import CLibpq
import IOLoop
import Logging
import Synchronization

/// A pool of PostgreSQL connections: the usual way to run SQL.
///
/// ```swift
/// let client = PGClient(configuration: try PGConfiguration(url: databaseURL))
/// let rows = try await client.query("SELECT name FROM users WHERE id = $1", [id])
/// try await client.withTransaction { tx in
///     try await tx.execute("UPDATE users SET name = $1 WHERE id = $2", [name, id])
///     tx.afterCommit { await cache.invalidate(id) }
/// }
/// await client.shutdown()
/// ```
///
/// The pool holds at most ``PGConfiguration/maxConnections`` connections, opened
/// on demand (and ``PGConfiguration/minConnections`` kept open). Callers that find
/// every connection busy wait in line, first come first served, for at most
/// ``PGConfiguration/acquireTimeout``, then fail with a
/// ``PGError/Kind/timeout`` error. A connection found broken (the server
/// restarted, the network dropped it) or left inside a transaction is closed and
/// replaced, never handed out again.
///
/// ## Latency
/// A statement's reply is read on the ``IOLoop``'s thread, which then resumes the
/// waiting task; on the default executor that costs one thread wake-up per statement
/// (a few microseconds). Code that issues many short statements can run with
/// `withTaskExecutorPreference(client.loop) { ... }`: replies then resume it on the loop
/// thread directly. Keep such code short, as it runs on (and holds) the loop thread.
///
/// ## Lifecycle
/// The client works as soon as it is created. ``shutdown()`` stops it gracefully:
/// callers still waiting for a connection fail, statements in flight finish, then every
/// connection is closed. ``run()`` suits service lifecycles: it opens the minimum
/// connections, then waits, and returns once the client is shut down, shutting it down
/// itself when its task is cancelled. This package does not depend on
/// swift-service-lifecycle, but `run()` is the shape its `Service` protocol expects, so
/// an application that uses it can write `extension PGClient: Service {}`
/// (cancellation of `run()` is how a `ServiceGroup` stops a service without graceful
/// shutdown support; call ``shutdown()`` from your own shutdown handler to begin
/// sooner).
public final class PGClient: PGQueryable, Sendable {
    typealias Machine = PoolStateMachine<ContinuousClock.Instant>

    /// The configuration the client was created with.
    public let configuration: PGConfiguration
    /// The loop that drives the connections' sockets.
    public let loop: IOLoop
    let logger: Logger

    struct State {
        var machine: Machine
        var started = false
        var connections: [Int: PGConnection] = [:]
        var waiters: [Int: CheckedContinuation<Lease, any Error>] = [:]
        /// One timer for every waiter's deadline: armed at the earliest, it fails the
        /// waiters that are due when it fires and re-arms for the next. A waiter served
        /// before its deadline costs no timer work (waiters are FIFO with one timeout, so
        /// deadlines come in order and a new waiter rarely moves the timer).
        var timeoutTimer: (deadline: ContinuousClock.Instant, timer: IOLoop.Timer)?
        var connectTasks: [Int: Task<Void, Never>] = [:]
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        var lastConnectError: PGError?
        var nextRequestID = 1
    }

    let state: Mutex<State>

    struct Lease: Sendable {
        let id: Int
        let connection: PGConnection
    }

    /// Creates a client. No connection is opened until one is needed (or ``run()``
    /// opens the minimum).
    ///
    /// - Parameters:
    ///   - configuration: the server and the pool's limits.
    ///   - loop: the event loop for the sockets; the process-wide one by default.
    ///   - logger: where pool and connection events go (mostly at debug level).
    public init(
        configuration: PGConfiguration,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "cache-aside.postgres")
    ) {
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        let machine = Machine(configuration: .init(
            minConnections: configuration.minConnections,
            maxConnections: configuration.maxConnections,
            acquireTimeout: configuration.acquireTimeout))
        self.state = Mutex(State(machine: machine))
    }

    /// Creates a client from a `postgres://` URL.
    public convenience init(url: String, loop: IOLoop = .shared, logger: Logger = Logger(label: "cache-aside.postgres")) throws {
        self.init(configuration: try PGConfiguration(url: url), loop: loop, logger: logger)
    }

    // MARK: - Running SQL

    public func query(_ sql: String, _ parameters: [any PGEncodable]) async throws -> PGRows {
        let bindings = try Bindings(parameters)
        return PGRows(result: try await runOnPooledConnection(sql: sql, bindings: bindings))
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [any PGEncodable]) async throws -> Int {
        let bindings = try Bindings(parameters)
        return try await runOnPooledConnection(sql: sql, bindings: bindings).affectedRows
    }

    private func runOnPooledConnection(sql: String, bindings: Bindings) async throws -> PGResult {
        var retried = false
        while true {
            let lease = try await acquire()
            do {
                let result = try await lease.connection.core.run(sql: sql, bindings: bindings)
                release(lease)
                return result
            } catch let error as PGError where error.kind == .connection && error.notSent && !retried {
                // The connection had died before the statement left: another one may do.
                release(lease)
                retried = true
                logger.debug("retrying a statement on another connection", metadata: ["error": "\(error.message)"])
            } catch {
                release(lease)
                throw error
            }
        }
    }

    /// Runs `body` with a connection of its own, then returns the connection to the
    /// pool (or closes it, if it was broken or left inside a transaction).
    ///
    /// Don't keep the connection after `body` returns.
    @discardableResult
    public func withConnection<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PGConnection) async throws -> Result
    ) async throws -> Result {
        let lease = try await acquire()
        do {
            let result = try await body(lease.connection)
            release(lease)
            return result
        } catch {
            release(lease)
            throw error
        }
    }

    /// Runs `body` in a transaction: `BEGIN`, then `COMMIT` when `body` returns, or
    /// `ROLLBACK` when it throws or the task is cancelled (the error is rethrown).
    ///
    /// Work registered with ``PGTransaction/afterCommit(_:)`` runs after the
    /// commit succeeded, and this method returns only once it has run. A transaction
    /// whose statement failed (and whose error `body` swallowed) cannot commit: the
    /// server rolls it back, and this method throws.
    ///
    /// - Parameter isolation: the caller's actor; `body` runs there.
    @discardableResult
    public func withTransaction<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PGTransaction) async throws -> Result
    ) async throws -> Result {
        var lease = try await acquire()
        do {
            _ = try await lease.connection.core.simple("BEGIN", cancellable: true)
        } catch let error as PGError where error.kind == .connection && error.notSent {
            // The connection died before BEGIN left: another one may do.
            release(lease)
            lease = try await acquire()
            do {
                _ = try await lease.connection.core.simple("BEGIN", cancellable: true)
            } catch {
                release(lease)
                throw error
            }
        } catch {
            release(lease)
            throw error
        }
        let core = lease.connection.core
        let transaction = PGTransaction(connection: lease.connection)
        let value: Result
        do {
            value = try await body(transaction)
            if Task.isCancelled { throw PGError.cancelled() }
        } catch {
            _ = transaction.finish()
            await rollback(core)
            release(lease)
            throw error
        }
        let hooks = transaction.finish()
        do {
            let result = try await core.simple("COMMIT", cancellable: false)
            if result?.commandTag == "ROLLBACK" {
                throw PGError(.query, "the transaction was rolled back instead of committed, because a statement in it failed (its error was caught inside the transaction)", sqlState: "25P02", sql: "COMMIT")
            }
        } catch let error as PGError {
            if core.transactionStatus != PQTRANS_IDLE { await rollback(core) }
            release(lease)
            if error.kind == .connection && !error.notSent {
                await runHooks(hooks)  // outcome unknown: invalidating needlessly is safe
            }
            throw error
        }
        release(lease)
        await runHooks(hooks)
        return value
    }

    private func rollback(_ core: ConnectionCore) async {
        guard !core.isBroken else { return }
        do {
            _ = try await core.simple("ROLLBACK", cancellable: false)
        } catch {
            logger.debug("ROLLBACK failed; the connection will be discarded", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Lifecycle

    /// Opens the minimum connections, then waits until the client is shut down.
    /// Cancelling the calling task shuts the client down (gracefully) and returns once
    /// that is done.
    public func run() async {
        startIfNeeded()
        await withTaskCancellationHandler {
            await waitForShutdown()
        } onCancel: {
            beginShutdown()
        }
    }

    /// Shuts the client down gracefully and waits until it is done: callers waiting
    /// for a connection fail with ``PGError/Kind/closed``, statements in flight
    /// finish, every connection is closed. Later calls fail with
    /// ``PGError/Kind/closed``. Calling it again just waits.
    public func shutdown() async {
        beginShutdown()
        await waitForShutdown()
    }

    private func beginShutdown() {
        let (effects, tasks): (Effects, [Task<Void, Never>]) = state.withLock { s in
            let actions = s.machine.shutdown()
            return (resolve(actions, in: &s), Array(s.connectTasks.values))
        }
        if !tasks.isEmpty || !effects.isEmpty { logger.debug("shutting down the PostgreSQL pool") }
        for task in tasks { task.cancel() }
        perform(effects)
    }

    private func waitForShutdown() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let done: Bool = state.withLock { s in
                if s.machine.phase == .shutDown { return true }
                s.shutdownWaiters.append(cont)
                return false
            }
            if done { cont.resume() }
        }
    }

    private func startIfNeeded() {
        let effects: Effects? = state.withLock { s in
            if s.started { return nil }
            s.started = true
            let actions = s.machine.start(now: .now)
            return resolve(actions, in: &s)
        }
        if let effects { perform(effects) }
    }

    /// A snapshot of the pool, for monitoring and tests.
    public struct Statistics: Sendable, Equatable {
        /// Open connections nobody uses.
        public var idle: Int
        /// Connections in use.
        public var leased: Int
        /// Connections being opened.
        public var connecting: Int
        /// Callers waiting for a connection.
        public var waiting: Int

        /// Creates a snapshot.
        public init(idle: Int, leased: Int, connecting: Int, waiting: Int) {
            self.idle = idle
            self.leased = leased
            self.connecting = connecting
            self.waiting = waiting
        }
    }

    /// The pool's current numbers.
    public var statistics: Statistics {
        state.withLock { s in
            Statistics(idle: s.machine.idle.count, leased: s.machine.leased.count,
                       connecting: s.machine.connecting.count, waiting: s.machine.waiters.count)
        }
    }

    // MARK: - Acquire and release

    func acquire() async throws -> Lease {
        if let lease = try acquireIdle() { return lease }
        while true {
            let lease = try await acquireOnce()
            if !lease.connection.core.isBroken { return lease }
            release(lease)  // died while idle, before we heard of it
        }
    }

    /// An idle connection when one is free and nobody waits, without suspending (and
    /// without the cost of an async call); nil otherwise.
    @inline(__always)
    private func acquireIdle() throws -> Lease? {
        switch acquireFast() {
        case .lease(let lease):
            if !lease.connection.core.isBroken { return lease }
            release(lease)  // died while idle, before we heard of it
            return nil
        case .failed(let error): throw error
        case .slow: return nil
        }
    }

    private enum Fast { case lease(Lease), failed(any Error), slow }

    /// The fast path: an idle connection and nobody waiting.
    private func acquireFast() -> Fast {
        state.withLock { s in
            guard s.started, s.machine.waiters.isEmpty, !s.machine.idle.isEmpty else { return .slow }
            switch s.machine.acquire(0, now: .now) {
            case .leased(let id):
                guard let connection = s.connections[id] else { return .failed(PGError(.closed, "pool inconsistency")) }
                return .lease(Lease(id: id, connection: connection))
            case .failed(let reason):
                return .failed(error(for: reason, in: s))
            case .wait:
                return .failed(PGError(.closed, "pool inconsistency"))
            }
        }
    }

    private func acquireOnce() async throws -> Lease {
        switch acquireFast() {
        case .lease(let lease): return lease
        case .failed(let error): throw error
        case .slow: break
        }
        startIfNeeded()
        try Task.checkCancellation()
        let request: Int = state.withLock { s in
            s.nextRequestID += 1
            return s.nextRequestID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Lease, any Error>) in
                let (immediate, effects): (Result<Lease, any Error>?, Effects?) = state.withLock { s in
                    switch s.machine.acquire(request, now: .now) {
                    case .leased(let id):
                        guard let connection = s.connections[id] else { return (.failure(PGError(.closed, "pool inconsistency")), nil) }
                        return (.success(Lease(id: id, connection: connection)), nil)
                    case .failed(let reason):
                        return (.failure(error(for: reason, in: s)), nil)
                    case .wait(let actions):
                        s.waiters[request] = cont
                        return (nil, resolve(actions, in: &s))
                    }
                }
                if let immediate { cont.resume(with: immediate) }
                if let effects { perform(effects) }
            }
        } onCancel: {
            let effects: Effects = state.withLock { s in
                resolve(s.machine.cancel(request), in: &s)
            }
            perform(effects)
        }
    }

    func release(_ lease: Lease) {
        let reusable = lease.connection.core.isReusable
        let effects: Effects = state.withLock { s in
            resolve(s.machine.release(lease.id, reusable: reusable, now: .now), in: &s)
        }
        if !reusable { logger.debug("discarding a connection that is broken or was left in a transaction") }
        perform(effects)
    }

    // MARK: - Effects

    /// The state machine's actions, resolved to objects under the lock.
    struct Effects {
        var close: [PGConnection] = []
        var resume: [(CheckedContinuation<Lease, any Error>, Result<Lease, any Error>)] = []
        var start: [Int] = []
        var scheduleTimeout: [(Int, ContinuousClock.Instant)] = []
        var cancelTimers: [IOLoop.Timer] = []

        mutating func merge(_ other: Effects) {
            close += other.close
            resume += other.resume
            start += other.start
            scheduleTimeout += other.scheduleTimeout
            cancelTimers += other.cancelTimers
            if let at = other.retryAt { retryAt = min(retryAt ?? at, at) }
            shutdownComplete += other.shutdownComplete
        }
        var retryAt: ContinuousClock.Instant?
        var shutdownComplete: [CheckedContinuation<Void, Never>] = []

        var isEmpty: Bool {
            close.isEmpty && resume.isEmpty && start.isEmpty && scheduleTimeout.isEmpty
                && cancelTimers.isEmpty && retryAt == nil && shutdownComplete.isEmpty
        }
    }

    private func resolve(_ actions: Machine.Actions, in s: inout State) -> Effects {
        var effects = Effects()
        for id in actions.close {
            if let connection = s.connections.removeValue(forKey: id) { effects.close.append(connection) }
        }
        for (request, id) in actions.lease {
            guard let cont = s.waiters.removeValue(forKey: request) else { continue }
            if let connection = s.connections[id] {
                effects.resume.append((cont, .success(Lease(id: id, connection: connection))))
            } else {
                effects.resume.append((cont, .failure(PGError(.closed, "pool inconsistency"))))
            }
        }
        for (request, reason) in actions.fail {
            guard let cont = s.waiters.removeValue(forKey: request) else { continue }
            effects.resume.append((cont, .failure(error(for: reason, in: s))))
        }
        // actions.cancelTimeout: nothing to do; the shared timer finds that waiter gone.
        effects.start = actions.start
        effects.scheduleTimeout = actions.scheduleTimeout.map { ($0.request, $0.deadline) }
        effects.retryAt = actions.scheduleRetry
        if actions.shutdownComplete {
            effects.shutdownComplete = s.shutdownWaiters
            s.shutdownWaiters = []
            if let armed = s.timeoutTimer {
                effects.cancelTimers.append(armed.timer)
                s.timeoutTimer = nil
            }
        }
        return effects
    }

    private func error(for reason: Machine.FailureReason, in s: State) -> PGError {
        switch reason {
        case .timeout:
            var message = "timed out after \(configuration.acquireTimeout) waiting for a connection from the pool (\(s.machine.leased.count) of at most \(configuration.maxConnections) connections in use, \(s.machine.connecting.count) being opened)"
            var error = PGError(.timeout, message)
            if let last = s.lastConnectError, s.machine.leased.isEmpty {
                message += "; the last connection attempt failed: \(last.message)"
                error = PGError(.timeout, message, underlying: last)
            }
            return error
        case .shutdown:
            return PGError(.closed, "the PostgreSQL client is shut down")
        case .cancelled:
            return PGError.cancelled()
        case .connectionFailed:
            return s.lastConnectError ?? PGError(.connection, "could not connect to \(configuration.description)")
        }
    }

    private func perform(_ effects: Effects) {
        for timer in effects.cancelTimers { timer.cancel() }
        for connection in effects.close { connection.close() }
        for (cont, result) in effects.resume { cont.resume(with: result) }
        if let earliest = effects.scheduleTimeout.map(\.1).min() { armTimeoutTimer(at: earliest) }
        if let at = effects.retryAt {
            loop.schedule(at: at) { [weak self] in self?.retryFired() }
        }
        for id in effects.start { startConnection(id) }
        for cont in effects.shutdownComplete { cont.resume() }
        if !effects.shutdownComplete.isEmpty { logger.debug("the PostgreSQL pool is shut down") }
    }

    /// Arms the shared waiter timer at `deadline` unless it fires earlier already.
    private func armTimeoutTimer(at deadline: ContinuousClock.Instant) {
        let armed: Bool = state.withLock { s in
            if let current = s.timeoutTimer, current.deadline <= deadline { return true }
            return false
        }
        if armed { return }
        let timer = loop.schedule(at: deadline) { [weak self] in self?.timeoutTimerFired() }
        let replaced: IOLoop.Timer?? = state.withLock { s in
            if s.machine.phase == .shutDown { return .some(timer) }  // too late: drop it
            if let current = s.timeoutTimer, current.deadline <= deadline { return .some(timer) }  // raced
            let old = s.timeoutTimer?.timer
            s.timeoutTimer = (deadline, timer)
            return .some(old)
        }
        if case .some(let stale?) = replaced { stale.cancel() }
    }

    /// Fails the waiters whose deadline passed, then re-arms for the next one.
    private func timeoutTimerFired() {
        let now = ContinuousClock.now
        let (effects, next): (Effects, ContinuousClock.Instant?) = state.withLock { s in
            s.timeoutTimer = nil
            var effects = Effects()
            let due = s.machine.waiters.filter { $0.deadline <= now }.map(\.id)
            for request in due {
                effects.merge(resolve(s.machine.timeout(request, now: now), in: &s))
            }
            return (effects, s.machine.waiters.map(\.deadline).min())
        }
        perform(effects)
        if let next { armTimeoutTimer(at: next) }
    }

    private func retryFired() {
        let effects: Effects = state.withLock { s in
            resolve(s.machine.retryTimerFired(now: .now), in: &s)
        }
        perform(effects)
    }

    private func startConnection(_ id: Int) {
        let configuration = self.configuration, loop = self.loop, logger = self.logger
        let task = Task {
            do {
                let connection = try await PGConnection.connect(configuration: configuration, loop: loop, logger: logger)
                connection.core.setOnBroken { [weak self] _ in self?.idleConnectionBroke(id) }
                let effects: Effects = self.state.withLock { s in
                    s.connectTasks[id] = nil
                    s.connections[id] = connection
                    s.lastConnectError = nil
                    return self.resolve(s.machine.connectionEstablished(id, now: .now), in: &s)
                }
                self.perform(effects)
            } catch {
                let pgError = error as? PGError ?? PGError(.connection, "\(error)", underlying: error)
                let retryable = pgError.kind != .authentication && pgError.kind != .configuration
                if pgError.kind != .cancelled {
                    logger.debug("opening a PostgreSQL connection failed", metadata: ["error": "\(pgError.message)"])
                }
                let effects: Effects = self.state.withLock { s in
                    s.connectTasks[id] = nil
                    if pgError.kind != .cancelled { s.lastConnectError = pgError }
                    return self.resolve(s.machine.connectionFailed(id, retryable: retryable, now: .now), in: &s)
                }
                self.perform(effects)
            }
        }
        state.withLock { s in
            if s.machine.connecting.contains(id) { s.connectTasks[id] = task }
        }
    }

    private func idleConnectionBroke(_ id: Int) {
        let effects: Effects = state.withLock { s in
            resolve(s.machine.connectionClosed(id, now: .now), in: &s)
        }
        perform(effects)
    }
}
