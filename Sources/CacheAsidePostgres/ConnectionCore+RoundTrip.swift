import CLibpq
import Foundation
import IOLoop
import Synchronization

/// Statements in flight in this process, on every connection: a caller polls its own
/// socket for the reply only while it runs the only one.
let statementsInFlight = Atomic<Int>(0)

extension ConnectionCore {
    /// What a round trip hands back: its results, and whether a cancel was sent for it.
    typealias Delivery = (results: [PGResult], cancelled: Bool)

    /// Sends with `send` (a `PQsend...` call), waits for every result, returns them.
    /// Must be called holding the turn.
    ///
    /// The send runs outside the lock: the machine's `sending` state keeps the loop
    /// thread off the `PGconn` meanwhile. Then, when this is the only statement in
    /// flight in the process, the caller waits for the reply on its own socket for at
    /// most ``PGConfiguration/replyPollTimeout`` (`ppoll`, its thread sleeping in the
    /// kernel) and reads it itself: no other thread is woken, and the task never
    /// suspends. Otherwise (several statements in flight, a slow statement, the poll ran
    /// out), it suspends and the loop thread reads the results and resumes it.
    func roundTrip(sql: String?, cancellable: Bool, send: (OpaquePointer) -> Int32) async throws -> Delivery {
        let othersInFlight = statementsInFlight.add(1, ordering: .relaxed).oldValue
        defer { statementsInFlight.subtract(1, ordering: .relaxed) }
        let poll = shouldPoll(othersInFlight: othersInFlight)

        let start: Machine.StartAction = state.withLock { s in
            let start = s.machine.startRoundTrip(cancellable: cancellable, taskCancelled: Task.isCancelled)
            if poll, case .send = start {
                try? registration?.setInterest([])  // the reply is ours to read
            }
            return start
        }
        let id: UInt64
        switch start {
        case .send(let started): id = started
        case .fail(var error):
            error.sql = error.sql ?? sql
            throw error
        }

        let sent = send(pg) == 1
        let flushed: Int32 = sent ? PQflush(pg) : -1
        let (action, onBroken): (Machine.Action, (@Sendable (PGError) -> Void)?) = state.withLock { s in
            let action = s.machine.sendFinished(sent: sent, flushed: flushed, lastError: wire.lastError())
            _ = applyLocked(action, &s, resumeWaiter: false)
            return (action, action.broke == nil ? nil : s.onBroken)
        }
        if let outcome = action.deliver {
            // The send failed, or the connection was closed meanwhile.
            perform(action, continuation: nil, onBroken: onBroken)
            return try deliver(outcome, sql: sql)
        }

        if poll && flushed == 0 {
            if let outcome = pollForReply() { return try deliver(outcome, sql: sql) }
        }

        // Suspend: the loop reads the results and resumes us.
        let (outcome, handedOver): (Machine.Outcome, Int64) = await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: Waiter) in
                let (action, onBroken): (Machine.Action, (@Sendable (PGError) -> Void)?) = state.withLock { s in
                    let action = s.machine.suspend()
                    _ = applyLocked(action, &s, resumeWaiter: false)
                    if action.deliver == nil { s.continuation = continuation }
                    return (action, action.broke == nil ? nil : s.onBroken)
                }
                if let outcome = action.deliver {
                    perform(action, continuation: nil, onBroken: onBroken)
                    continuation.resume(returning: (outcome, 0))
                } else {
                    perform(action, continuation: nil, onBroken: onBroken)
                }
            }
        } onCancel: {
            if cancellable { requestCancel(id: id) }
        }
        if handedOver > 0 { PollGate.observe(resumeDelay: monotonicNanoseconds() - handedOver) }
        return try deliver(outcome, sql: sql)
    }

    /// Waits on the socket, on this thread, for the reply, and reads it. Returns nil
    /// when it did not all arrive in time (the caller then suspends; what was read is
    /// kept).
    private func pollForReply() -> Machine.Outcome? {
        let fd = registration?.fd ?? PQsocket(pg)
        let budget = replyPollNanoseconds
        let start = monotonicNanoseconds()
        var remaining = budget
        while remaining > 0 {
            let ready = clibpq_wait_readable(fd, remaining)
            if ready > 0 {
                let (action, onBroken): (Machine.Action, (@Sendable (PGError) -> Void)?) = state.withLock { s in
                    let action = s.machine.readWhileSending(wire)
                    if action.deliver != nil { _ = applyLocked(action, &s, resumeWaiter: false) }
                    if action.deliver != nil && action.broke == nil {
                        try? registration?.setInterest(.readable)  // idle again: watch for the server closing
                    }
                    return (action, action.broke == nil ? nil : s.onBroken)
                }
                if let outcome = action.deliver {
                    perform(action, continuation: nil, onBroken: onBroken)
                    pollBackoff = 0
                    return outcome
                }
            } else if ready < 0 && errno != EINTR {
                break
            }
            remaining = budget - (monotonicNanoseconds() - start)
        }
        // The reply is slow: suspend this time, and poll less for a while.
        pollBackoff = min(max(1, pollBackoff * 2), 64)
        pollSkips = pollBackoff
        return nil
    }

    /// Whether this round trip waits for its reply on its own thread first.
    ///
    /// A task whose statements are all answered while it polls never suspends, so it
    /// never lets another task run on its thread: after ``pollSlice`` of that on one
    /// thread, a statement suspends as usual (the other tasks queued for the thread run
    /// first), and the slice starts again.
    private func shouldPoll(othersInFlight: Int) -> Bool {
        guard othersInFlight == 0, replyPollNanoseconds > 0, !loop.inLoop, PollGate.isOpen else {
            PollSlice.end()
            return false
        }
        if pollSkips > 0 {
            pollSkips -= 1
            PollSlice.end()
            return false
        }
        return PollSlice.continues(for: pollSlice)
    }

    private func deliver(_ outcome: Machine.Outcome, sql: String?) throws -> Delivery {
        switch outcome.results {
        case .success(let results):
            return (results, outcome.cancelled)
        case .failure(var error):
            error.sql = error.sql ?? sql
            throw error
        }
    }

    /// The task of the round trip `id` was cancelled: cancel the statement on the
    /// server, if it is still in flight.
    func requestCancel(id: UInt64) {
        let action = state.withLock { $0.machine.cancelRequested(id: id) }
        if action.sendCancel { sendCancel() }
    }

    /// `PQcancel` opens a connection and waits for the server: on a thread of its own,
    /// never on one that runs tasks. The results of the cancelled round trip are
    /// handed over only once it returned, so that it never hits a later statement.
    func sendCancel() {
        guard let cancelHandle else {
            cancelReturned()
            return
        }
        let handle = UnsafeTransfer(cancelHandle)
        logger.debug("cancelling the running statement", metadata: ["backend_pid": "\(backendPID)"])
        BlockingCall.start { [self] in
            var buffer = [CChar](repeating: 0, count: 256)
            if PQcancel(handle.value, &buffer, Int32(buffer.count)) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                logger.warning("PQcancel failed: \(configuration.redacting(text))")
            }
            cancelReturned()
        }
    }

    private func cancelReturned() {
        let (action, continuation) = state.withLock { s in
            let action = s.machine.cancelReturned()
            return (action, applyLocked(action, &s, resumeWaiter: true))
        }
        perform(action, continuation: continuation, onBroken: nil)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (cheaper than `Duration` arithmetic on the hot path).
@inline(__always)
func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// Whether callers may poll at all: closed for a while when a suspended caller, once
/// its results were handed over, waited long for a thread. That wait means the
/// cooperative pool has other tasks to run, and a thread held in `ppoll` would keep
/// them waiting; an idle pool resumes a task within some tens of microseconds.
enum PollGate {
    /// A resumption slower than this means the pool is busy.
    static let busyResumeDelay: Int64 = 1_000_000
    /// How long polling stays off after that.
    static let pause: Int64 = 10_000_000
    private static let closedUntil = Atomic<Int64>(0)

    static var isOpen: Bool {
        let until = closedUntil.load(ordering: .relaxed)
        return until == 0 || monotonicNanoseconds() >= until
    }

    /// A suspended caller resumed `resumeDelay` nanoseconds after its outcome was
    /// handed over.
    static func observe(resumeDelay: Int64) {
        if resumeDelay > busyResumeDelay {
            closedUntil.store(monotonicNanoseconds() + pause, ordering: .relaxed)
        }
    }
}

/// When this thread began running statements that never suspended (their replies came
/// while their callers polled): a thread-local slice, so that polling callers give the
/// thread up now and then.
enum PollSlice {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// True while this thread's slice lasts (starting one if none runs); false once it
    /// is used up, which ends it.
    static func continues(for slice: Int64) -> Bool {
        let now = monotonicNanoseconds()
        let since = Int64(Int(bitPattern: pthread_getspecific(key)))
        if since == 0 {
            pthread_setspecific(key, UnsafeRawPointer(bitPattern: Int(now)))
            return true
        }
        if now - since < slice { return true }
        end()
        return false
    }

    /// The caller suspends: the thread runs other tasks meanwhile.
    static func end() {
        if pthread_getspecific(key) != nil { pthread_setspecific(key, nil) }
    }
}
