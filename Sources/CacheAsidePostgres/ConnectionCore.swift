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

/// One libpq connection driven by an ``IOLoop``.
///
/// The connection's socket stays registered with the loop for its whole life, readable
/// interest always on: the loop thread reads replies as they arrive (`PQconsumeInput`),
/// collects the results once libpq is no longer busy, and resumes the waiting task; an
/// idle connection that the server closes is noticed at once. Every libpq call on the
/// `PGconn` happens under `state`'s lock, from the task that sends or from the loop thread
/// that reads, and none of them blocks (the connection is in non-blocking mode).
///
/// Statements run one at a time: callers take turns (FIFO).
final class ConnectionCore: IOHandler, @unchecked Sendable {
    let pg: OpaquePointer
    private let cancelHandle: OpaquePointer?
    let loop: IOLoop
    let logger: Logger
    let configuration: PGConfiguration
    let backendPID: Int32
    let serverVersion: Int
    private var registration: IORegistration?  // set in start(), before any concurrency

    struct TurnWaiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    struct State {
        var closed = false
        var finished = false
        var broken: PGError?
        var busy = false
        var turnWaiters = Deque<TurnWaiter>()
        var nextID: UInt64 = 1

        // The round trip in flight.
        var op: UInt64 = 0
        var continuation: UnsafeContinuation<[PGResult], any Error>?
        var results: [PGResult] = []
        var outcome: Result<[PGResult], any Error>?  // done, waiting for a PQcancel to return
        var wantWrite = false
        var cancelRequested = false
        var cancelInFlight = false
        var cancelBeforeSend: UInt64 = 0
        /// A task is inside `PQsend...`/`PQflush`, outside the lock: nobody else may
        /// touch the PGconn. Readiness seen meanwhile is parked in `pendingEvents`.
        var sending = false
        var pendingEvents: IOEvents = []
        var finishAfterSend = false
        var onBroken: (@Sendable (PGError) -> Void)?
    }

    let state = Mutex(State())

    // Touched only by the task holding the turn.
    private var cache: StatementCache
    private var pendingDeallocations: [String] = []

    private init(pg: OpaquePointer, loop: IOLoop, logger: Logger, configuration: PGConfiguration) {
        self.pg = pg
        self.loop = loop
        self.logger = logger
        self.configuration = configuration
        self.cancelHandle = PQgetCancel(pg)
        self.backendPID = PQbackendPID(pg)
        self.serverVersion = Int(PQserverVersion(pg))
        self.cache = StatementCache(capacity: configuration.statementCacheCapacity)
    }

    deinit {
        if let cancelHandle { PQfreeCancel(cancelHandle) }
        let finished = state.withLock { $0.finished }
        if !finished { PQfinish(pg) }
    }

    // MARK: - Connecting

    /// Connects without blocking a cooperative thread: libpq's connection state machine
    /// (`PQconnectStartParams`/`PQconnectPoll`) waits for the socket through the loop;
    /// when a host name must be resolved (which libpq does synchronously), the libpq
    /// calls run on a thread of their own (``BlockingCall``).
    static func connect(configuration: PGConfiguration, loop: IOLoop, logger: Logger) async throws -> ConnectionCore {
        let parameters = configuration.libpqParameters
        let offload = configuration.needsNameResolution
        let deadline = configuration.connectTimeout.map { ContinuousClock.now + $0 }
        try Task.checkCancellation()

        let started: UnsafeTransfer<OpaquePointer?> = await offloaded(offload) {
            UnsafeTransfer(startConnection(parameters))
        }
        guard let pg = started.value else {
            throw PGError(.connection, "could not allocate a libpq connection")
        }
        let conn = UnsafeTransfer(pg)
        var ok = false
        defer { if !ok { PQfinish(conn.value) } }

        if PQstatus(pg) == CONNECTION_BAD {
            throw connectError(pg, configuration: configuration)
        }
        var status = PGRES_POLLING_WRITING
        while true {
            switch status {
            case PGRES_POLLING_OK:
                break
            case PGRES_POLLING_FAILED:
                throw connectError(pg, configuration: configuration)
            default:
                let fd = PQsocket(pg)
                guard fd >= 0 else { throw connectError(pg, configuration: configuration) }
                do {
                    _ = try await loop.wait(for: status == PGRES_POLLING_READING ? .readable : .writable, on: fd, deadline: deadline)
                } catch let error as IOError where error.isTimeout {
                    let seconds = configuration.connectTimeout.map { "\($0)" } ?? "?"
                    throw PGError(.timeout, "connecting to \(configuration.description) timed out after \(seconds)", underlying: error)
                } catch is CancellationError {
                    throw PGError(.cancelled, "connecting was cancelled")
                } catch {
                    throw PGError(.connection, "connecting to \(configuration.description): \(error)", underlying: error)
                }
                let polled: UnsafeTransfer<PostgresPollingStatusType> = await offloaded(offload) {
                    UnsafeTransfer(PQconnectPoll(conn.value))
                }
                status = polled.value
                continue
            }
            break
        }
        guard PQsetnonblocking(pg, 1) == 0 else { throw connectError(pg, configuration: configuration) }
        let core = ConnectionCore(pg: pg, loop: loop, logger: logger, configuration: configuration)
        ok = true  // from here on, the core owns the PGconn (its deinit finishes it)
        try core.start()
        return core
    }

    private static func startConnection(_ parameters: [(String, String)]) -> OpaquePointer? {
        let keywordStrings = parameters.map { strdup($0.0) }
        let valueStrings = parameters.map { strdup($0.1) }
        defer {
            keywordStrings.forEach { free($0) }
            valueStrings.forEach { free($0) }
        }
        let keywords: [UnsafePointer<CChar>?] = keywordStrings.map { $0.map { UnsafePointer($0) } } + [nil]
        let values: [UnsafePointer<CChar>?] = valueStrings.map { $0.map { UnsafePointer($0) } } + [nil]
        return PQconnectStartParams(keywords, values, 0)
    }

    static func connectError(_ pg: OpaquePointer, configuration: PGConfiguration) -> PGError {
        let raw = String(cString: PQerrorMessage(pg)).trimmingCharacters(in: .whitespacesAndNewlines)
        let message = configuration.redacting(raw)
        let lower = message.lowercased()
        let isAuth = lower.contains("authentication failed") || lower.contains("no password supplied")
            || lower.contains("password is required") || PQconnectionNeedsPassword(pg) == 1
        return PGError(
            isAuth ? .authentication : .connection,
            "could not connect to \(configuration.description): \(message.isEmpty ? "unknown error" : message)")
    }

    private func start() throws {
        let fd = PQsocket(pg)
        guard fd >= 0 else { throw PGError(.connection, "the connection has no socket") }
        PQsetNoticeReceiver(pg, noticeReceiver, Unmanaged.passUnretained(self).toOpaque())
        do {
            registration = try loop.register(fd: fd, interest: .readable, handler: self)
        } catch {
            throw PGError(.connection, "cannot register the connection's socket: \(error)", underlying: error)
        }
    }

    // MARK: - Turns

    /// Waits until no other statement runs on this connection (FIFO).
    func acquireTurn(cancellable: Bool = true) async throws {
        let immediate: Bool = try state.withLock { s in
            if s.closed { throw PGError.closed() }
            if !s.busy {
                s.busy = true
                return true
            }
            return false
        }
        if immediate { return }
        let id = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if s.closed { return .failure(PGError.closed()) }
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

    // MARK: - Round trips

    /// Sends with `send` (a `PQsend...` call), waits for every result, returns them.
    /// Must be called holding the turn.
    ///
    /// The send itself runs outside the lock (it is a system call that wakes the
    /// server, which may answer before it returns): the `sending` flag keeps the loop
    /// thread off the PGconn meanwhile, and a reply that arrived during the send is
    /// read right here, without waiting for the loop.
    func roundTrip(sql: String?, cancellable: Bool, send: (OpaquePointer) -> Int32) async throws -> [PGResult] {
        let op: UInt64 = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (cont: UnsafeContinuation<[PGResult], any Error>) in
                let refused: (any Error)? = state.withLock { s in
                    if var broken = s.broken {
                        broken.notSent = true
                        broken.sql = sql
                        return broken
                    }
                    if s.closed { return PGError.closed() }
                    if cancellable && (Task.isCancelled || s.cancelBeforeSend == op) {
                        return PGError.cancelled(sql: sql)
                    }
                    s.sending = true
                    s.op = op
                    s.cancelRequested = false
                    s.results = []
                    return nil
                }
                if let refused {
                    cont.resume(throwing: refused)
                    return
                }
                let sent = send(pg)
                let flushed = sent == 0 ? -1 : PQflush(pg)

                var outcome = Outcome()
                var finish = false
                var cancelNow = false
                var interest: IOEvents?
                state.withLock { s in
                    s.sending = false
                    finish = s.finishAfterSend
                    if s.closed {
                        outcome.resume = (cont, .failure(PGError.closed("the connection was closed while a statement ran")))
                        return
                    }
                    if sent == 0 || flushed < 0 {
                        var error = lostError(sql: sql)
                        error.notSent = sent == 0
                        markBroken(&s, error)
                        outcome.resume = (cont, .failure(error))
                        if let callback = s.onBroken { outcome.broken = (callback, error) }
                        return
                    }
                    s.continuation = cont
                    if flushed == 1 { s.wantWrite = true }
                    if cancellable && s.cancelBeforeSend == op { cancelNow = true }
                    if !s.pendingEvents.isEmpty {
                        // The reply (or part of it) came during the send.
                        let events = s.pendingEvents
                        s.pendingEvents = []
                        drive(events, &s, &outcome)
                        if s.broken == nil { interest = s.wantWrite ? [.readable, .writable] : .readable }
                    } else if flushed == 1 {
                        interest = [.readable, .writable]
                    }
                }
                if let interest { try? registration?.setInterest(interest) }
                outcome.deliver()
                if finish { finishNow() }
                if cancelNow { requestCancel(op: op) }
            }
        } onCancel: {
            if cancellable { requestCancel(op: op) }
        }
    }

    /// Continuations to resume and callbacks to call once the lock is released.
    struct Outcome {
        var resume: (UnsafeContinuation<[PGResult], any Error>, Result<[PGResult], any Error>)?
        var broken: ((@Sendable (PGError) -> Void), PGError)?

        func deliver() {
            if let resume { resume.0.resume(with: resume.1) }
            if let broken { broken.0(broken.1) }
        }
    }

    private func requestCancel(op: UInt64) {
        let send: Bool = state.withLock { s in
            if s.op == op && s.sending {
                s.cancelBeforeSend = op  // the sender issues the cancel once its send is done
                return false
            }
            if s.op == op && s.continuation != nil {
                if s.cancelRequested { return false }
                s.cancelRequested = true
                s.cancelInFlight = true
                return true
            }
            if s.op < op { s.cancelBeforeSend = op }
            return false
        }
        guard send, let cancelHandle else { return }
        let handle = UnsafeTransfer(cancelHandle)
        logger.debug("cancelling the running statement", metadata: ["backend_pid": "\(backendPID)"])
        // PQcancel opens a connection and waits for the server: on a thread of its own,
        // never on one that runs tasks.
        BlockingCall.start { [self] in
            var buffer = [CChar](repeating: 0, count: 256)
            if PQcancel(handle.value, &buffer, Int32(buffer.count)) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let message = configuration.redacting(text)
                logger.warning("PQcancel failed: \(message)")
            }
            let finished: (UnsafeContinuation<[PGResult], any Error>, Result<[PGResult], any Error>)? = state.withLock { s in
                s.cancelInFlight = false
                guard let outcome = s.outcome, let cont = s.continuation else { return nil }
                s.outcome = nil
                s.continuation = nil
                s.op = 0
                return (cont, outcome)
            }
            if let finished { finished.0.resume(with: finished.1) }
        }
    }

    // MARK: - Loop thread

    func ioReady(_ events: IOEvents) {
        var outcome = Outcome()
        state.withLock { s in
            guard !s.closed, s.broken == nil else { return }
            if s.sending {
                // A task is sending: leave the PGconn alone, park the events, and stop
                // level-triggered reports until the sender has read them.
                s.pendingEvents.formUnion(events)
                try? registration?.setInterest([])
                return
            }
            drive(events, &s, &outcome)
        }
        outcome.deliver()
    }

    /// Reads what is ready and completes the round trip in flight when its results
    /// are all in. Called under the lock, by the loop thread or by a sender.
    private func drive(_ events: IOEvents, _ s: inout State, _ outcome: inout Outcome) {
        var failure: PGError?
        if s.wantWrite {
            let flushed = PQflush(pg)
            if flushed == 0 {
                s.wantWrite = false
                try? registration?.setInterest(.readable)
            } else if flushed < 0 {
                failure = lostError(sql: nil)
            }
        }
        if failure == nil && (events.contains(.readable) || events.contains(.hangup)) {
            if PQconsumeInput(pg) == 0 { failure = lostError(sql: nil) }
        }
        if failure == nil {
            while let notify = PQnotifies(pg) { PQfreemem(notify) }
        }
        if failure == nil && s.continuation != nil && s.outcome == nil {
            var done = false
            while PQisBusy(pg) == 0 {
                guard let result = PQgetResult(pg) else {
                    done = true
                    break
                }
                let status = PQresultStatus(result)
                if status == PGRES_COPY_IN {
                    _ = PQputCopyEnd(pg, "COPY FROM STDIN is not supported by this client")
                    PQclear(result)
                    _ = PQflush(pg)
                    continue
                }
                if status == PGRES_COPY_OUT {
                    PQclear(result)
                    var drained = false
                    while true {
                        var buffer: UnsafeMutablePointer<CChar>?
                        let n = PQgetCopyData(pg, &buffer, 1)
                        if let buffer { PQfreemem(buffer) }
                        if n > 0 { continue }
                        drained = n < 0
                        break
                    }
                    if !drained { break }
                    continue
                }
                s.results.append(PGResult(result))
            }
            if done {
                if PQstatus(pg) == CONNECTION_BAD {
                    failure = lostError(sql: nil)
                } else {
                    let result: Result<[PGResult], any Error> = .success(s.results)
                    s.results = []
                    if s.cancelInFlight {
                        s.outcome = result
                    } else if let cont = s.continuation {
                        s.continuation = nil
                        s.op = 0
                        outcome.resume = (cont, result)
                    }
                }
            }
        } else if failure == nil && PQstatus(pg) == CONNECTION_BAD {
            failure = lostError(sql: nil)
        }
        if let failure {
            if let cont = s.continuation {
                s.continuation = nil
                s.outcome = nil
                s.results = []
                outcome.resume = (cont, .failure(failure))
            }
            markBroken(&s, failure)
            if let callback = s.onBroken { outcome.broken = (callback, failure) }
        }
    }

    /// Records that the connection is unusable and stops watching its socket.
    private func markBroken(_ s: inout State, _ error: PGError) {
        guard s.broken == nil else { return }
        s.broken = error
        logger.debug("connection lost", metadata: ["backend_pid": "\(backendPID)", "error": "\(error.message)"])
        registration?.deregister()
    }

    private func lostError(sql: String?) -> PGError {
        let raw = String(cString: PQerrorMessage(pg)).trimmingCharacters(in: .whitespacesAndNewlines)
        let message = configuration.redacting(raw.isEmpty ? "the connection was lost" : raw)
        return PGError(.connection, "connection lost: \(message)", sql: sql)
    }

    // MARK: - Statements

    /// Runs one statement with the extended protocol (binary results), preparing it
    /// the second time it runs on this connection.
    func run(sql: String, bindings: Bindings, cancellable: Bool = true) async throws -> PGResult {
        try await acquireTurn(cancellable: cancellable)
        defer { releaseTurn() }
        return try await runHoldingTurn(sql: sql, bindings: bindings, cancellable: cancellable, mayRetry: true)
    }

    private func runHoldingTurn(sql: String, bindings: Bindings, cancellable: Bool, mayRetry: Bool) async throws -> PGResult {
        if !pendingDeallocations.isEmpty { try await deallocatePending() }
        let key = StatementCache.Key(sql: sql, types: bindings.types)
        var evicted: [String] = []
        let plan = cache.lookup(key, evicted: &evicted)
        pendingDeallocations += evicted
        do {
            switch plan {
            case .runUnnamed:
                let results = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
                    bindings.withPointers { n, types, values, lengths, formats in
                        PQsendQueryParams(pg, sql, n, types, values, lengths, formats, 1)
                    }
                }
                return try single(results, sql: sql)
            case .prepareNow(let name):
                do {
                    let prepared = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
                        bindings.withPointers { n, types, _, _, _ in PQsendPrepare(pg, name, sql, n, types) }
                    }
                    _ = try single(prepared, sql: sql)
                } catch {
                    cache.remove(key)
                    throw error
                }
                return try await executePrepared(name: name, sql: sql, bindings: bindings, cancellable: cancellable)
            case .prepared(let name):
                return try await executePrepared(name: name, sql: sql, bindings: bindings, cancellable: cancellable)
            }
        } catch let error as PGError where error.kind == .query && (error.sqlState == "26000" || error.sqlState == "0A000") {
            // The server forgot our statement (DEALLOCATE ALL, DISCARD) or its plan went
            // stale after DDL: forget it, and retry once outside a transaction.
            if error.sqlState == "26000" { cache.removeAll() } else { cache.remove(key) }
            if error.sqlState == "0A000", case .prepared(let name) = plan { pendingDeallocations.append(name) }
            guard mayRetry, transactionStatus == PQTRANS_IDLE else { throw error }
            logger.debug("re-preparing a statement", metadata: ["sqlstate": "\(error.sqlState ?? "")"])
            return try await runHoldingTurn(sql: sql, bindings: bindings, cancellable: cancellable, mayRetry: false)
        }
    }

    private func executePrepared(name: String, sql: String, bindings: Bindings, cancellable: Bool) async throws -> PGResult {
        let results = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
            bindings.withPointers { n, _, values, lengths, formats in
                PQsendQueryPrepared(pg, name, n, values, lengths, formats, 1)
            }
        }
        return try single(results, sql: sql)
    }

    private func deallocatePending() async throws {
        guard transactionStatus == PQTRANS_IDLE || transactionStatus == PQTRANS_INTRANS else { return }
        let names = pendingDeallocations
        pendingDeallocations = []
        for name in names {
            _ = try await simple("DEALLOCATE \(name)", cancellable: false, holdingTurn: true)
        }
    }

    /// Runs SQL (one or several statements, no parameters) with the simple protocol.
    func simple(_ sql: String, cancellable: Bool, holdingTurn: Bool = false) async throws -> PGResult? {
        if !holdingTurn { try await acquireTurn(cancellable: cancellable) }
        defer { if !holdingTurn { releaseTurn() } }
        let results = try await roundTrip(sql: sql, cancellable: cancellable) { pg in PQsendQuery(pg, sql) }
        try throwFirstError(results, sql: sql)
        return results.last
    }

    private func single(_ results: [PGResult], sql: String) throws -> PGResult {
        try throwFirstError(results, sql: sql)
        guard let last = results.last else {
            throw PGError(.protocolViolation, "the server returned no result", sql: sql)
        }
        return last
    }

    private func throwFirstError(_ results: [PGResult], sql: String) throws {
        for result in results {
            let status = PQresultStatus(result.handle)
            switch status {
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
                throw queryError(result, sql: sql)
            case PGRES_BAD_RESPONSE:
                throw PGError(.protocolViolation, "the server's response was not understood", sql: sql)
            default:
                continue
            }
        }
    }

    private func queryError(_ result: PGResult, sql: String) -> PGError {
        func field(_ code: UInt8) -> String? {
            PQresultErrorField(result.handle, Int32(code)).map { String(cString: $0) }
        }
        let message = field(UInt8(ascii: "M")) ?? String(cString: PQresultErrorMessage(result.handle))
        let sqlState = field(UInt8(ascii: "C"))
        let cancelled = sqlState == "57014" && state.withLock { $0.cancelRequested }
        var error = PGError(
            cancelled ? .cancelled : .query, configuration.redacting(message), sqlState: sqlState, sql: sql)
        error.detail = field(UInt8(ascii: "D")).map(configuration.redacting)
        error.hint = field(UInt8(ascii: "H"))
        error.constraint = field(UInt8(ascii: "n"))
        error.schema = field(UInt8(ascii: "s"))
        error.table = field(UInt8(ascii: "t"))
        error.column = field(UInt8(ascii: "c"))
        error.severity = field(UInt8(ascii: "V")) ?? field(UInt8(ascii: "S"))
        return error
    }

    // MARK: - Status

    var transactionStatus: PGTransactionStatusType {
        state.withLock { _ in PQtransactionStatus(pg) }
    }

    /// True when the connection can serve another user: open, not broken, idle, not
    /// inside a transaction.
    var isReusable: Bool {
        state.withLock { s in
            !s.closed && s.broken == nil && !s.busy && s.continuation == nil
                && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE
        }
    }

    var isBroken: Bool { state.withLock { $0.broken != nil || $0.closed } }

    func setOnBroken(_ callback: @escaping @Sendable (PGError) -> Void) {
        state.withLock { $0.onBroken = callback }
    }

    /// Closes the connection: fails whoever waits, then `PQfinish` on the loop thread.
    func close() {
        let (waiters, cont): ([TurnWaiter], UnsafeContinuation<[PGResult], any Error>?) = state.withLock { s in
            if s.closed { return ([], nil) }
            s.closed = true
            let waiters = Array(s.turnWaiters)
            s.turnWaiters.removeAll()
            let cont = s.continuation
            s.continuation = nil
            s.outcome = nil
            return (waiters, cont)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PGError.closed()) }
        cont?.resume(throwing: PGError.closed("the connection was closed while a statement ran"))
        if let registration {
            registration.deregister { [self] in finishNow() }
        } else {
            finishNow()
        }
    }

    /// `PQfinish`, once, and never while a sender is using the PGconn (the sender
    /// finishes it when its send is done).
    private func finishNow() {
        let finish: Bool = state.withLock { s in
            if s.finished { return false }
            if s.sending {
                s.finishAfterSend = true
                return false
            }
            s.finished = true
            return true
        }
        if finish { PQfinish(pg) }
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
