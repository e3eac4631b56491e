import CLibpq
import DequeModule
import Foundation
import IOLoop
import Logging
import Synchronization

/// A value moved between threads by hand (a libpq pointer whose use is serialized by
/// the connection's lock or by its single owner).
struct UnsafeTransfer<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// One libpq connection driven by an ``IOLoop``: the I/O shell around a
/// ``ConnectionStateMachine``.
///
/// The machine says who may touch the `PGconn` at any moment (the task that sends a
/// statement, or the loop thread that reads its results) and the shell carries out its
/// actions: libpq calls, socket interest, resuming the waiting task, `PQcancel` on a
/// thread of its own, `PQfinish`. The socket stays registered with the loop for the
/// connection's whole life, so that an idle connection the server closes is noticed at
/// once.
///
/// The files of this type: connecting (`ConnectionCore+Connect.swift`), round trips
/// (`ConnectionCore+RoundTrip.swift`), statements and their cache
/// (`ConnectionCore+Statements.swift`, `StatementCache.swift`).
///
/// Statements run one at a time: callers take turns (FIFO).
final class ConnectionCore: IOHandler, @unchecked Sendable {
    typealias Machine = ConnectionStateMachine<PGResult>

    let pg: OpaquePointer
    let wire: LibpqWire
    let cancelHandle: OpaquePointer?
    let loop: IOLoop
    let logger: Logger
    let configuration: PGConfiguration
    let backendPID: Int32
    let serverVersion: Int
    private(set) var registration: IORegistration?  // set in start(), before any concurrency

    struct TurnWaiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    /// The task waiting for a round trip's outcome; it is resumed with the outcome and
    /// the time it was handed over (to see how long the task then waited for a thread).
    typealias Waiter = UnsafeContinuation<(Machine.Outcome, Int64), Never>

    struct Locked {
        var machine = Machine()
        /// The task waiting for its round trip's results.
        var continuation: Waiter?
        /// Some caller holds the turn.
        var busy = false
        var turnWaiters = Deque<TurnWaiter>()
        var nextTurnID: UInt64 = 0
        var finished = false
        var onBroken: (@Sendable (PGError) -> Void)?
    }

    let state = Mutex(Locked())

    // Touched only by the task holding the turn.
    var cache: StatementCache
    var pendingDeallocations: [String] = []
    var pollSkips = 0
    var pollBackoff = 0
    /// ``PGConfiguration/replyPollTimeout`` in nanoseconds.
    let replyPollNanoseconds: Int64
    /// How long a thread may run statements answered while polling (never suspending)
    /// before one of them suspends and lets the thread's other tasks run: 1 ms.
    let pollSlice: Int64 = 1_000_000

    init(pg: OpaquePointer, secrets: [String], loop: IOLoop, logger: Logger, configuration: PGConfiguration) {
        self.pg = pg
        self.wire = LibpqWire(pg: pg, secrets: secrets)
        self.loop = loop
        self.logger = logger
        self.configuration = configuration
        self.cancelHandle = PQgetCancel(pg)
        self.backendPID = PQbackendPID(pg)
        self.serverVersion = Int(PQserverVersion(pg))
        self.cache = StatementCache(capacity: configuration.statementCacheCapacity)
        let (seconds, attoseconds) = max(.zero, configuration.replyPollTimeout).components
        self.replyPollNanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    deinit {
        if let cancelHandle { PQfreeCancel(cancelHandle) }
        let finished = state.withLock { $0.finished }
        if !finished {
            PQfinish(pg)
            if let registration { _ = Foundation.close(registration.fd) }
        }
    }

    /// Registers the socket with the loop (readable interest: an idle connection that
    /// the server closes is noticed at once).
    ///
    /// What is registered is a duplicate of libpq's socket, which this core closes
    /// itself once it is deregistered: libpq closes its own descriptor as soon as it
    /// finds the connection lost, and the number could then be reused (by the next
    /// connection) before the loop forgets the old registration, whose removal would
    /// then remove the new descriptor's.
    func start() throws {
        let socket = PQsocket(pg)
        guard socket >= 0 else { throw PGError(.connection, "the connection has no socket") }
        let fd = fcntl(socket, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else {
            throw PGError(.connection, "cannot duplicate the connection's socket (errno \(errno))")
        }
        PQsetNoticeReceiver(pg, noticeReceiver, Unmanaged.passUnretained(self).toOpaque())
        do {
            registration = try loop.register(fd: fd, interest: .readable, handler: self)
        } catch {
            _ = Foundation.close(fd)
            throw PGError(.connection, "cannot register the connection's socket: \(error)", underlying: error)
        }
    }

    // MARK: - Turns

    /// Takes the turn if nobody holds it (true), without suspending.
    @inline(__always)
    func tryAcquireTurn() throws -> Bool {
        try state.withLock { s in
            if s.machine.isClosed { throw PGError.closed() }
            if !s.busy {
                s.busy = true
                return true
            }
            return false
        }
    }

    /// Waits until no other statement runs on this connection (FIFO).
    func acquireTurn(cancellable: Bool = true) async throws {
        if try tryAcquireTurn() { return }
        let id = state.withLock { s in
            s.nextTurnID += 1
            return s.nextTurnID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if s.machine.isClosed { return .failure(PGError.closed()) }
                    if cancellable && Task.isCancelled { return .failure(PGError.cancelled()) }
                    if !s.busy {
                        s.busy = true
                        return .success(())
                    }
                    s.turnWaiters.append(TurnWaiter(id: id, continuation: cont))
                    return nil
                }
                if let outcome { cont.resume(with: outcome) }
            }
        } onCancel: {
            guard cancellable else { return }
            let waiter: TurnWaiter? = state.withLock { s in
                guard let i = s.turnWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.turnWaiters.remove(at: i)
            }
            waiter?.continuation.resume(throwing: PGError.cancelled())
        }
    }

    func releaseTurn() {
        let next: TurnWaiter? = state.withLock { s in
            if let next = s.turnWaiters.popFirst() { return next }
            s.busy = false
            return nil
        }
        next?.continuation.resume()
    }

    // MARK: - Carrying out the machine's actions

    /// Applies the parts of `action` that must happen under the lock (socket interest,
    /// so that interest changes happen in the order of the state changes) and takes the
    /// waiting continuation if the action delivers to it.
    func applyLocked(_ action: Machine.Action, _ s: inout Locked, resumeWaiter: Bool) -> Waiter? {
        if let interest = action.interest { try? registration?.setInterest(interest) }
        if let error = action.broke {
            logger.debug("connection lost", metadata: ["backend_pid": "\(backendPID)", "error": "\(error.message)"])
            if !action.finish { registration?.deregister() }
        }
        guard resumeWaiter, action.deliver != nil else { return nil }
        let continuation = s.continuation
        s.continuation = nil
        return continuation
    }

    /// Carries out what is left of `action` once the lock is released.
    func perform(_ action: Machine.Action, continuation: Waiter?, onBroken: (@Sendable (PGError) -> Void)?) {
        if action.sendCancel { sendCancel() }
        if let continuation, let outcome = action.deliver {
            continuation.resume(returning: (outcome, monotonicNanoseconds()))
        }
        if let error = action.broke { onBroken?(error) }
        if action.finish { finishOnLoop() }
    }

    // MARK: - Loop thread

    func ioReady(_ events: IOEvents) {
        let (action, continuation, onBroken) = state.withLock { s in
            let action = s.machine.ioReady(events, wire)
            let continuation = applyLocked(action, &s, resumeWaiter: true)
            return (action, continuation, action.broke == nil ? nil : s.onBroken)
        }
        perform(action, continuation: continuation, onBroken: onBroken)
    }

    // MARK: - Status

    var transactionStatus: PGTransactionStatusType {
        state.withLock { _ in PQtransactionStatus(pg) }
    }

    /// True when the connection can serve another user: open, not broken, idle, not
    /// inside a transaction.
    var isReusable: Bool {
        state.withLock { s in
            !s.busy && s.machine.isIdle && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE
        }
    }

    var isBroken: Bool {
        state.withLock { s in
            if s.machine.isClosed || s.machine.brokenError != nil { return true }
            return false
        }
    }

    func setOnBroken(_ callback: @escaping @Sendable (PGError) -> Void) {
        state.withLock { $0.onBroken = callback }
    }

    /// Closes the connection: fails whoever waits, then `PQfinish` on the loop thread
    /// (or, if a caller is sending right now, once it is done).
    func close() {
        let (waiters, action, continuation): ([TurnWaiter], Machine.Action, Waiter?) = state.withLock { s in
            let action = s.machine.close()
            let waiters = Array(s.turnWaiters)
            s.turnWaiters.removeAll()
            let continuation = applyLocked(action, &s, resumeWaiter: true)
            return (waiters, action, continuation)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PGError.closed()) }
        perform(action, continuation: continuation, onBroken: nil)
    }

    /// `PQfinish`, once, on the loop thread after the socket is deregistered.
    func finishOnLoop() {
        if let registration {
            registration.deregister { [self] in finishNow() }
        } else {
            finishNow()
        }
    }

    private func finishNow() {
        let finish: Bool = state.withLock { s in
            if s.finished { return false }
            s.finished = true
            return true
        }
        if finish {
            PQfinish(pg)
            if let registration { _ = Foundation.close(registration.fd) }  // our duplicate
        }
    }
}

/// Routes server notices (`NOTICE: relation already exists, skipping`) to the logger
/// instead of libpq's default, which prints to stderr.
private let noticeReceiver: PQnoticeReceiver = { arg, result in
    guard let arg, let result else { return }
    let core = Unmanaged<ConnectionCore>.fromOpaque(arg).takeUnretainedValue()
    let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
    core.logger.debug("server notice: \(message)", metadata: ["backend_pid": "\(core.backendPID)"])
}

/// Runs `body` on a thread of its own when `offload` is true (it may block), inline
/// otherwise.
func offloaded<T: Sendable>(_ offload: Bool, _ body: @escaping @Sendable () -> T) async -> T {
    guard offload else { return body() }
    return await BlockingCall.run(body)
}
