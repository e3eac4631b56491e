import IOLoop

/// The state of one connection's round trips, with no socket, thread or task: events
/// come in (a round trip starts, its send finished, the socket is ready, a cancel was
/// asked for or came back, the connection is closed) and each returns what the caller
/// must do. ``ConnectionCore`` drives it under its lock and carries out the actions; the
/// unit tests drive it with a scripted ``ConnectionWire``.
///
/// Who may touch the `PGconn` follows from the state: in ``State/sending`` the task that
/// runs the round trip does (it writes, and may read the reply itself while it polls the
/// socket briefly); in ``State/awaitingResults`` and ``State/cancelling`` the event
/// loop's thread does (it reads and hands the results over); in ``State/idle`` the loop
/// only watches for the server closing the connection.
struct ConnectionStateMachine<Result> {
    /// A cancel request for the round trip in flight.
    enum Cancel: Equatable {
        /// None asked for.
        case none
        /// Asked for while the statement was being sent: issued once the send is done.
        case pending
        /// `PQcancel` is on its way (``State/cancelling``), or came back.
        case sent
    }

    /// One statement (or script) sent and its results being collected.
    struct RoundTrip {
        let id: UInt64
        var results: [Result] = []
        var cancel: Cancel = .none
        /// libpq still buffers part of the statement: wait for writable too.
        var wantWrite = false
        /// The caller suspended and waits for ``Action/deliver(_:)``.
        var suspended = false
        /// All results are in, but a `PQcancel` is still running: they are handed
        /// over when it returns, so that it cannot hit a later statement.
        var heldResults: [Result]?

        init(id: UInt64) { self.id = id }
    }

    /// What a finished round trip hands to its caller.
    struct Outcome {
        var results: Swift.Result<[Result], PGError>
        /// A cancel was sent for it: a `57014` error is the caller's cancellation.
        var cancelled: Bool
    }

    enum State {
        /// No statement in flight. The loop watches for the server closing.
        case idle
        /// The caller is sending (and may poll for the reply itself): nobody else
        /// touches the connection.
        case sending(RoundTrip)
        /// Sent; the loop reads the results and hands them to the suspended caller.
        case awaitingResults(RoundTrip)
        /// Sent, and a `PQcancel` for it is running on a thread of its own.
        case cancelling(RoundTrip)
        /// The connection failed; every later round trip fails at once.
        case broken(PGError)
        /// The connection was closed.
        case closed
    }

    private(set) var state: State = .idle
    private var nextID: UInt64 = 0
    /// `close()` came while a caller owned the connection: it releases the `PGconn`
    /// when it hands the connection back.
    private var finishWhenReturned = false

    // MARK: - Actions

    /// What to do after ``startRoundTrip(cancellable:taskCancelled:)``.
    enum StartAction {
        /// Send the statement (the caller owns the connection until it reports back).
        case send(id: UInt64)
        /// Do not send: fail with this error.
        case fail(PGError)
    }

    /// What to do after an event.
    struct Action {
        /// Hand this outcome to the caller (resume its continuation, or return it).
        var deliver: Outcome?
        /// The connection just broke: tell its owner (the pool) and stop watching it.
        var broke: PGError?
        /// Change what the loop watches on the socket.
        var interest: IOEvents?
        /// Send `PQcancel` (on a thread of its own), then report ``cancelReturned()``.
        var sendCancel = false
        /// Release the `PGconn` (deregister, then `PQfinish`).
        var finish = false
        /// The caller keeps the connection and may go on reading (the reply is not all
        /// in yet).
        var keepReading = false

        static var none: Action { Action() }
    }

    // MARK: - Round trips

    /// A caller (holding the connection's turn) wants to send a statement.
    mutating func startRoundTrip(cancellable: Bool, taskCancelled: Bool) -> StartAction {
        switch state {
        case .idle:
            if cancellable && taskCancelled {
                var error = PGError.cancelled()
                error.notSent = true
                return .fail(error)
            }
            nextID &+= 1
            state = .sending(RoundTrip(id: nextID))
            return .send(id: nextID)
        case .broken(var error):
            error.notSent = true
            return .fail(error)
        case .closed:
            return .fail(PGError.closed())
        case .sending, .awaitingResults, .cancelling:
            return .fail(PGError(.protocolViolation, "a statement is already in flight on this connection"))
        }
    }

    /// The caller's send is done: `sent` is whether libpq accepted the statement,
    /// `flushed` what `PQflush` returned. `lastError` describes a failure.
    mutating func sendFinished(sent: Bool, flushed: Int32, lastError: @autoclosure () -> String) -> Action {
        guard case .sending(var trip) = state else {
            return returnedAfterClose()
        }
        if !sent || flushed < 0 {
            var error = PGError(.connection, "connection lost: \(lastError())")
            error.notSent = !sent
            return fail(error)
        }
        trip.wantWrite = flushed == 1
        state = .sending(trip)
        return .none
    }

    /// The caller, still owning the connection, reads what arrived (after its own
    /// poll said the socket is readable). `keepReading` in the answer means the reply
    /// is not all in.
    mutating func readWhileSending<W: ConnectionWire>(_ wire: W) -> Action where W.Result == Result {
        guard case .sending(var trip) = state else { return returnedAfterClose() }
        switch read(&trip, wire, readable: true) {
        case .failed(let error):
            return fail(error)
        case .more:
            state = .sending(trip)
            var action = Action.none
            action.keepReading = true
            return action
        case .done(let results):
            state = .idle
            var action = Action.none
            action.deliver = Outcome(results: .success(results), cancelled: trip.cancel != .none)
            return action
        }
    }

    /// The caller suspends until the loop delivers the results. Returns, among
    /// others, the interest the loop must watch.
    mutating func suspend() -> Action {
        guard case .sending(var trip) = state else { return returnedAfterClose() }
        trip.suspended = true
        var action = Action.none
        action.interest = trip.wantWrite ? [.readable, .writable] : .readable
        if trip.cancel == .pending {
            trip.cancel = .sent
            state = .cancelling(trip)
            action.sendCancel = true
        } else {
            state = .awaitingResults(trip)
        }
        return action
    }

    /// The socket is ready (on the loop thread).
    mutating func ioReady<W: ConnectionWire>(_ events: IOEvents, _ wire: W) -> Action where W.Result == Result {
        switch state {
        case .idle:
            // Nothing is expected: notifications, or the server closing the connection.
            if !wire.consumeInput() || wire.isBad() {
                return fail(PGError(.connection, "connection lost: \(wire.lastError())"))
            }
            wire.discardNotifications()
            return .none
        case .sending:
            // The caller owns the connection; it reads once it suspends. Stop the
            // level-triggered reports meanwhile.
            var action = Action.none
            action.interest = []
            return action
        case .awaitingResults(var trip), .cancelling(var trip):
            let cancelling: Bool
            if case .cancelling = state { cancelling = true } else { cancelling = false }
            guard trip.heldResults == nil else { return .none }
            var action = Action.none
            if trip.wantWrite {
                let flushed = wire.flush()
                if flushed < 0 { return fail(PGError(.connection, "connection lost: \(wire.lastError())")) }
                if flushed == 0 {
                    trip.wantWrite = false
                    action.interest = .readable
                }
            }
            switch read(&trip, wire, readable: events.contains(.readable) || events.contains(.hangup)) {
            case .failed(let error):
                return fail(error)
            case .more:
                state = cancelling ? .cancelling(trip) : .awaitingResults(trip)
                return action
            case .done(let results):
                if cancelling {
                    trip.heldResults = results
                    state = .cancelling(trip)
                } else {
                    state = .idle
                    action.deliver = Outcome(results: .success(results), cancelled: trip.cancel != .none)
                }
                return action
            }
        case .broken, .closed:
            return .none
        }
    }

    /// The caller's task was cancelled while its round trip `id` is in flight.
    mutating func cancelRequested(id: UInt64) -> Action {
        switch state {
        case .sending(var trip) where trip.id == id && trip.cancel == .none:
            trip.cancel = .pending  // sent once the caller suspends
            state = .sending(trip)
            return .none
        case .awaitingResults(var trip) where trip.id == id && trip.cancel == .none:
            trip.cancel = .sent
            state = .cancelling(trip)
            var action = Action.none
            action.sendCancel = true
            return action
        default:
            return .none  // done already, or cancelled already
        }
    }

    /// `PQcancel` came back (whether or not it reached the server).
    mutating func cancelReturned() -> Action {
        guard case .cancelling(let trip) = state else { return .none }
        if let results = trip.heldResults {
            state = .idle
            var action = Action.none
            action.deliver = Outcome(results: .success(results), cancelled: true)
            return action
        }
        state = .awaitingResults(trip)
        return .none
    }

    /// The connection is closed by its owner.
    mutating func close() -> Action {
        var action = Action.none
        switch state {
        case .closed:
            return .none
        case .sending:
            finishWhenReturned = true  // the caller still uses the PGconn
        case .awaitingResults(let trip), .cancelling(let trip):
            if trip.suspended {
                action.deliver = Outcome(
                    results: .failure(PGError.closed("the connection was closed while a statement ran")),
                    cancelled: false)
            }
            action.finish = true
        case .idle, .broken:
            action.finish = true
        }
        state = .closed
        return action
    }

    // MARK: - Queries

    /// True when no statement is in flight and the connection is neither broken nor
    /// closed.
    var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// The error the connection broke with, if it did.
    var brokenError: PGError? {
        if case .broken(let error) = state { return error }
        return nil
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// Whether a cancel was asked for the round trip in flight.
    var cancelWasRequested: Bool {
        switch state {
        case .sending(let trip), .awaitingResults(let trip), .cancelling(let trip): return trip.cancel != .none
        default: return false
        }
    }

    // MARK: - Internals

    private enum ReadResult {
        case more
        case done([Result])
        case failed(PGError)
    }

    /// Reads what is ready and collects results until libpq is busy (more must
    /// arrive) or the round trip's results are all in. COPY is refused: `COPY FROM
    /// STDIN` ends with an error sent to the server, `COPY TO STDOUT` data is dropped.
    private func read<W: ConnectionWire>(_ trip: inout RoundTrip, _ wire: W, readable: Bool) -> ReadResult where W.Result == Result {
        if readable && !wire.consumeInput() {
            return .failed(PGError(.connection, "connection lost: \(wire.lastError())"))
        }
        wire.discardNotifications()
        while !wire.isBusy() {
            guard let next = wire.nextResult() else {
                if wire.isBad() { return .failed(PGError(.connection, "connection lost: \(wire.lastError())")) }
                let results = trip.results
                trip.results = []
                return .done(results)
            }
            switch next {
            case .result(let result):
                trip.results.append(result)
            case .copyIn:
                wire.refuseCopyIn()
            case .copyOut:
                switch wire.discardCopyOut() {
                case true?: continue
                case false?: return .more
                case nil: return .failed(PGError(.connection, "connection lost: \(wire.lastError())"))
                }
            }
        }
        if wire.isBad() { return .failed(PGError(.connection, "connection lost: \(wire.lastError())")) }
        return .more
    }

    /// The connection failed: the round trip in flight (if its caller waits) gets the
    /// error, and the connection stays broken.
    private mutating func fail(_ error: PGError) -> Action {
        var action = Action.none
        switch state {
        case .sending:
            action.deliver = Outcome(results: .failure(error), cancelled: false)
        case .awaitingResults(let trip), .cancelling(let trip):
            if trip.suspended { action.deliver = Outcome(results: .failure(error), cancelled: false) }
        case .idle:
            break
        case .broken, .closed:
            return .none
        }
        state = .broken(error)
        action.broke = error
        return action
    }

    /// A caller that owned the connection reports back after `close()`.
    private mutating func returnedAfterClose() -> Action {
        var action = Action.none
        action.deliver = Outcome(
            results: .failure(PGError.closed("the connection was closed while a statement ran")), cancelled: false)
        if finishWhenReturned {
            finishWhenReturned = false
            action.finish = true
        }
        return action
    }
}

extension ConnectionStateMachine.Outcome: Sendable where Result: Sendable {}
