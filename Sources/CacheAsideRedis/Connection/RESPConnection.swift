#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CacheAsideTLS
import IOLoop
import Logging
import Synchronization

/// One multiplexed connection to Redis, reopened when it breaks: the I/O shell around
/// a ``ConnectionStateMachine``.
///
/// Many tasks send commands on it at once. Each request's bytes are appended to the
/// machine's output and the request to its FIFO, atomically, under one lock; replies are
/// matched to the FIFO in order.
///
/// **I/O discipline.** Every read and write of a socket (and of the TLS session over it)
/// is done by the session's *I/O owner*, one at a time: whoever takes the session's
/// token under the lock (the event loop when the socket is ready, a caller writing its
/// command on an idle connection, or the loop running a requested flush) does the I/O
/// outside the lock and gives the token back. Reads and writes of one socket therefore
/// never overlap, which a TLS session requires. Before giving the token back, the owner
/// writes any output that accumulated meanwhile, and if the stream holds input that
/// needs no socket read (decrypted TLS records), it asks the loop to drain it: such
/// input never waits for a readiness report that may not come.
///
/// **Flush strategy.** A command issued on an idle connection (nothing in flight, no
/// writer) is written at once by its caller. A command issued while replies are awaited
/// is appended to the output, and a write follows after the awaited replies are read,
/// or from the loop soon after: the commands of many tasks share one write and one read
/// on the server, which is where the throughput comes from.
///
/// **Polling for the reply.** A caller whose command went out on an idle connection,
/// alone, polls the socket for its reply for a short while
/// (``RESPConfiguration/replyPollingWindow``) before it suspends: a reply that comes
/// within it reaches the caller without a thread hop or a wake-up, as with a blocking C
/// client. Nobody waits behind the poll (nothing else is in flight), and it stops as
/// soon as another command arrives. Polling backs off: a command that finds others in
/// flight turns it off on that connection for the next 64 commands (tasks that share a
/// connection keep it busy, and a poll would only burn a thread they need), and while
/// fewer than half of the recent polls got their reply in time (a distant or overloaded
/// server), only every 16th command polls. While a caller owns the socket, the loop
/// stops watching its readability (level-triggered readiness would otherwise make it
/// spin); it watches it again when someone waits on the loop, and within a timer tick.
///
/// **Fairness.** The loop reads at most one 64 KiB buffer per readiness report; the
/// socket stays readable (level-triggered) and the loop comes back after a turn of the
/// other connections.
///
/// Timeouts: one timer per connection ticks while requests are in flight, never one per
/// request.
final class RESPConnection: Sendable {
    typealias Machine = ConnectionStateMachine
    typealias Waiter = RequestWaiter

    /// What a connection is for.
    enum Role: Sendable {
        /// Ordinary request/response commands.
        case commands
        /// A dedicated pub/sub connection: runs its setup and (re)subscribes on every
        /// connect, and hands every event (messages, invalidations, keep-alive answers,
        /// subscribed, disconnected) to `sink`, in order, on the loop thread, which does
        /// all of a subscriber's I/O.
        case subscriber(
            Machine.SubscriberSetup, pingInterval: Duration, pingTimeout: Duration?,
            sink: @Sendable (RESPSubscriberEvent) -> Void)
    }

    struct Shared: Sendable {
        var machine: Machine
        var session: Session?
        /// The result of the polling caller's request, when someone else read it.
        var mailbox: (id: UInt64, result: Result<RESPReply, any Error>)?
        var timerArmed = false
        var idleTicks = 0
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        var socketClosedForGood = false
        /// Connect attempts and credential fetches, for ``close()`` to wait for.
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var finishedTasks: Set<UInt64> = []
        var nextTaskID: UInt64 = 0
        /// How often a poll got its reply within the window lately (a moving average of
        /// wins, 1 for a win and 0 for a loss). Below one half, callers stop polling,
        /// except every 16th, which probes whether it pays again.
        var pollingScore = 1.0
        var pollingProbe = 0
        /// Commands submitted on this connection, and the count until which nobody
        /// polls: set ahead whenever a command finds others in flight. Tasks that share
        /// a connection keep it busy; one of them polling the socket in a moment of
        /// calm would only burn a thread the others need.
        var submits = 0
        var quietFrom = 0
    }

    let configuration: RESPConfiguration
    let loop: IOLoop
    let logger: Logger
    let role: Role
    let tls: TLSClientContext?
    let endpoint: String
    private let shared: Mutex<Shared>
    private let nextID = Atomic<UInt64>(1)
    private let tickInterval: Duration
    private let idleTickLimit: Int
    private let pollingWindow: Duration
    /// True while the connection is open, handshaken and has nothing in flight: a hint
    /// (read without the lock) that the polling fast path may apply.
    let idle = Atomic<Bool>(false)
    /// Set when a command joins others in flight: a polling caller then stops polling.
    private let othersWaiting = Atomic<Bool>(false)
    /// False while the connection waits to reconnect (or is closed): a client prefers
    /// another connection then. Read without the lock, as a hint.
    let available = Atomic<Bool>(true)

    init(configuration: RESPConfiguration, tls: TLSClientContext?, role: Role = .commands, loop: IOLoop, logger: Logger) {
        self.configuration = configuration
        self.tls = tls
        self.role = role
        self.loop = loop
        self.logger = logger
        self.endpoint = configuration.endpoint.description
        let machineRole: Machine.Role
        var keepAliveInterval = Duration.seconds(5)
        var keepAliveTimeout: Duration?
        switch role {
        case .commands: machineRole = .commands
        case .subscriber(let setup, let interval, let timeout, _):
            machineRole = .subscriber(setup)
            keepAliveInterval = interval
            keepAliveTimeout = timeout
        }
        var machineConfiguration = Machine.Configuration(
            endpoint: configuration.endpoint.description,
            commandTimeout: configuration.commandTimeout,
            connectTimeout: configuration.connectTimeout,
            reconnectBackoffMinimum: configuration.reconnectBackoffMinimum,
            reconnectBackoffMaximum: configuration.reconnectBackoffMaximum,
            database: configuration.database,
            role: machineRole,
            reauthenticationInterval: configuration.credentialsProvider == nil ? nil : configuration.reauthenticationInterval)
        machineConfiguration.keepAliveInterval = keepAliveInterval
        machineConfiguration.keepAliveTimeout = keepAliveTimeout
        self.shared = Mutex(Shared(machine: Machine(configuration: machineConfiguration)))
        let tick = min(max(configuration.commandTimeout / 20, .milliseconds(2)), .milliseconds(25))
        self.tickInterval = tick
        self.idleTickLimit = max(Int(Duration.seconds(1) / tick), 4)
        self.pollingWindow = configuration.replyPollingWindow
    }

    // MARK: - Requests

    /// Sends one command (`replies` 1) or a pipeline (`pipeline`, `replies` replies,
    /// gathered into one array reply) and waits for the reply. Error replies come back as
    /// `.error` values; connection failures, timeouts and cancellation are thrown.
    func send(replies: Int = 1, pipeline: Bool = false, encode: (inout RESPCommandEncoder) -> Void) async throws -> RESPReply {
        try Task.checkCancellation()
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let now = ContinuousClock.now

        // The fast path: an open, idle connection whose socket nobody is using. The
        // caller writes its command and polls for the reply, without suspending. A busy
        // connection (the hint is off) never takes the lock for it.
        if idle.load(ordering: .relaxed), pollingWindow > .zero, !loop.inLoop {
            var fast: (session: Session, bytes: [UInt8])?
            var armTimer = false
            let refused: RESPError? = shared.withLock { s in
                // The mailbox must be free: a caller that stopped polling may not have
                // collected its reply from it yet.
                guard s.submits >= s.quietFrom, s.mailbox == nil, s.machine.phaseKind == .open, s.machine.handshakeDone,
                    s.machine.inFlight.isEmpty, !s.machine.writeScheduled, let session = s.session, !session.ioOwned
                else { return nil }
                if s.pollingScore < 0.5 {
                    s.pollingProbe &+= 1
                    if s.pollingProbe & 15 != 0 {
                        return nil
                    }
                }
                switch s.machine.submit(id: id, waiter: .polling(id), replies: replies, pipeline: pipeline, now: now, encode: encode) {
                case .write:
                    guard let bytes = s.machine.takeOutput() else { return nil }
                    s.submits &+= 1
                    othersWaiting.store(false, ordering: .relaxed)
                    session.ioOwned = true
                    fast = (session, bytes)
                    idle.store(false, ordering: .relaxed)
                    if !s.timerArmed {
                        s.timerArmed = true
                        armTimer = true
                    }
                    s.idleTicks = 0
                    return nil
                case .fail(let error):
                    return error
                case .flushSoon, .none, .connect:
                    // Not possible on an idle open connection.
                    return nil
                }
            }
            if let refused { throw refused }
            if armTimer { scheduleTick() }
            if let fast {
                if let reply = try poll(id: id, session: fast.session, bytes: fast.bytes, since: now) { return reply }
                return try await wait(id: id)
            }
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
                submitAndSuspend(id: id, continuation: continuation, replies: replies, pipeline: pipeline, now: now, encode: encode)
            }
        } onCancel: {
            self.cancel(id: id)
        }
    }

    private func submitAndSuspend(
        id: UInt64, continuation: UnsafeContinuation<RESPReply, any Error>, replies: Int, pipeline: Bool,
        now: ContinuousClock.Instant, encode: (inout RESPCommandEncoder) -> Void
    ) {
        var armTimer = false
        var write: (session: Session, bytes: [UInt8])?
        var flush: Session?
        let action: Machine.SubmitAction = shared.withLock { s in
            s.submits &+= 1
            if !s.machine.inFlight.isEmpty {
                s.quietFrom = s.submits &+ 64
                othersWaiting.store(true, ordering: .relaxed)
            }
            let action = s.machine.submit(
                id: id, waiter: .continuation(continuation), replies: replies, pipeline: pipeline, now: now, encode: encode)
            // This caller waits for the loop: it must watch the socket.
            if let session = s.session { watchReadable(session) }
            switch action {
            case .fail:
                return action
            case .write:
                if let session = s.session, !session.ioOwned, let bytes = s.machine.takeOutput() {
                    session.ioOwned = true
                    write = (session, bytes)
                }
            case .flushSoon:
                flush = s.session
            case .none, .connect:
                break
            }
            idle.store(false, ordering: .relaxed)
            if !s.timerArmed {
                s.timerArmed = true
                armTimer = true
            }
            s.idleTicks = 0
            return action
        }
        switch action {
        case .fail(let error):
            continuation.resume(throwing: error)
            return
        case .connect:
            startConnect()
        case .write, .flushSoon, .none:
            break
        }
        if armTimer { scheduleTick() }
        if let write { runIO(write.session, read: false, taken: write.bytes) }
        if let flush { loop.execute { [self] in requestedFlush(flush) } }
        if Task.isCancelled { cancel(id: id) }
    }

    /// Writes the caller's command, then polls the socket for its reply within the
    /// polling window. Returns the reply, or `nil` when the window passed (the I/O token
    /// is given back; the caller then waits).
    private func poll(id: UInt64, session: Session, bytes: [UInt8], since start: ContinuousClock.Instant) throws -> RESPReply? {
        var step = Step(session: session)
        write(session, bytes, into: &step)
        let deadline = start + pollingWindow
        let clock = ContinuousClock()
        var attempts = 0
        while true {
            var failed = step.failure != nil
            if !failed, let error = readOnce(session) {
                step.failure = error
                failed = true
            }
            if step.written != nil || failed || !session.replies.isEmpty {
                var outcome = DeliverOutcome(connection: self)
                let result = shared.withLock { s -> Result<RESPReply, any Error>? in
                    performLocked(&s, &step, release: false, into: &outcome)
                    guard let mailbox = s.mailbox, mailbox.id == id else { return nil }
                    s.mailbox = nil
                    s.pollingScore = s.pollingScore * 0.875 + 0.125
                    return mailbox.result
                }
                step.written = nil
                outcome.resume()
                if outcome.tornDown {
                    return try result?.get() ?? takeMailbox(id: id)
                }
                if let result {
                    releaseIO(session)
                    return try result.get()
                }
            }
            // Another command came while this one is polled for: the connection is
            // shared, so leave the socket to the loop. The clock and cancellation are
            // looked at every fourth attempt (each attempt is a system call already).
            if othersWaiting.load(ordering: .relaxed) { break }
            // Let another thread run on this core meanwhile, if one is waiting (the
            // server itself, on a machine with few cores): a blocking client's wait
            // frees its core for the server; a poll must not keep it.
            sched_yield()
            attempts &+= 1
            if attempts & 3 == 0, clock.now >= deadline || Task.isCancelled { break }
        }
        // The window passed: give the socket back to the loop and wait.
        shared.withLock { s in s.pollingScore *= 0.875 }
        releaseIO(session)
        if Task.isCancelled { cancel(id: id) }
        return nil
    }

    private func takeMailbox(id: UInt64) throws -> RESPReply? {
        let result: Result<RESPReply, any Error>? = shared.withLock { s in
            guard let mailbox = s.mailbox, mailbox.id == id else { return nil }
            s.mailbox = nil
            return mailbox.result
        }
        return try result?.get()
    }

    /// Suspends until request `id` (which was polling) has its reply.
    private func wait(id: UInt64) async throws -> RESPReply {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
                let result: Result<RESPReply, any Error>? = shared.withLock { s in
                    if let mailbox = s.mailbox, mailbox.id == id {
                        s.mailbox = nil
                        return mailbox.result
                    }
                    if s.machine.replaceWaiter(id: id, with: .continuation(continuation)) {
                        if let session = s.session { watchReadable(session) }
                        return nil
                    }
                    return .failure(CancellationError())
                }
                if let result { continuation.resume(with: result) }
                if Task.isCancelled { cancel(id: id) }
            }
        } onCancel: {
            self.cancel(id: id)
        }
    }

    /// Cancels a waiting request: its caller gets `CancellationError` now. A request
    /// already sent keeps its place and its reply is dropped; one still waiting for a
    /// connection is dropped unsent.
    private func cancel(id: UInt64) {
        let waiter = shared.withLock { s in s.machine.cancel(id: id) }
        if case .continuation(let continuation)? = waiter {
            continuation.resume(throwing: CancellationError())
        }
    }

    /// Opens the connection if it is idle, without waiting: a subscriber then reports
    /// how it goes to its sink (and keeps reconnecting until it is closed).
    func open() {
        let connect: Bool = shared.withLock { s in s.machine.start() }
        if connect { startConnect() }
    }

    private var isSubscriber: Bool {
        if case .subscriber = role { return true }
        return false
    }

    /// Waits until the connection is open and its handshake done (opening it if it is
    /// idle): for a subscriber, until the server confirmed the subscriptions.
    func waitUntilReady() async throws {
        _ = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
            let action = shared.withLock { s in s.machine.waitUntilReady(.continuation(continuation), now: .now) }
            switch action {
            case .ready: continuation.resume(returning: .simpleString("OK"))
            case .wait: break
            case .connect: startConnect()
            case .fail(let error): continuation.resume(throwing: error)
            }
        }
    }

    // MARK: - I/O (by the token's owner)

    /// Readiness of the session's socket, on the loop thread.
    fileprivate func ioReady(_ session: Session, _ events: IOEvents) {
        let writable = events.contains(.writable)
        let readable = events.contains(.readable) || events.contains(.hangup)
        let taken: [UInt8]?? = shared.withLock { s in
            guard s.session === session else { return .none }
            guard !session.ioOwned else {
                // Someone else owns the socket and will read it. Level-triggered
                // readiness would be reported again at once, and the loop would spin
                // until the owner lets go: stop watching readability meanwhile; the
                // owner watches it again when it lets go.
                if readable, !session.readDeferred {
                    session.readDeferred = true
                    applyInterest(session)
                }
                return .none
            }
            session.ioOwned = true
            if writable { s.machine.writable() }
            return .some(writable && !session.stream.hasPendingOutput ? s.machine.takeOutput() : nil)
        }
        guard case .some(let bytes) = taken else { return }
        runIO(session, read: readable, taken: bytes, flushStream: writable)
    }

    /// Watches readability again after it was deferred (under the lock).
    private func watchReadable(_ session: Session) {
        guard session.readDeferred else { return }
        session.readDeferred = false
        applyInterest(session)
    }

    /// Sets what the loop watches on the session's socket: readability (unless
    /// deferred while another thread owns the socket) and writability (while the
    /// socket is full). Under the lock, so that the two never race.
    private func applyInterest(_ session: Session) {
        var interest: IOEvents = session.readDeferred ? [] : .readable
        if session.writableArmed { interest.insert(.writable) }
        do {
            try session.registration?.setInterest(interest)
        } catch {
            // The descriptor is gone (the session is being torn down): nothing to watch.
            logger.debug("cannot change what the loop watches: \(error)", metadata: ["redis.endpoint": "\(endpoint)"])
        }
    }

    /// A flush requested by a caller whose command joined replies in flight.
    private func requestedFlush(_ session: Session) {
        let taken: [UInt8]?? = shared.withLock { s in
            // The owner, if any, writes before it lets go.
            guard s.session === session, !session.ioOwned else { return .none }
            session.ioOwned = true
            let bytes = session.stream.hasPendingOutput ? nil : s.machine.takeOutput()
            if bytes == nil { s.machine.flushFoundNothing() }
            return .some(bytes)
        }
        guard case .some(let bytes) = taken else { return }
        runIO(session, read: false, taken: bytes)
    }

    /// Input the stream holds without a socket read (TLS), drained on the loop.
    private func drainBuffered(_ session: Session) {
        let owned: Bool = shared.withLock { s in
            guard s.session === session, !session.ioOwned else { return false }
            session.ioOwned = true
            return true
        }
        guard owned else { return }
        runIO(session, read: true, taken: nil)
    }

    /// What the owner did since it last took the lock.
    struct Step {
        let session: Session
        /// Bytes taken from the machine and how many were written.
        var written: (bytes: [UInt8], count: Int)?
        var failure: RESPError?
        /// Writability must be watched (the socket, or the TLS stream, is full).
        var watchWritable = false
        init(session: Session) { self.session = session }
    }

    /// The owner's loop, with the token held: writes `taken` (and the TLS stream's
    /// pending output when `flushStream`), reads once if `read`, then, under one lock per
    /// round, records what was written, delivers the replies, and either takes the
    /// output that accumulated meanwhile (and goes round again) or gives the token back.
    /// The callers whose replies came are resumed at the end, after the writes.
    private func runIO(_ session: Session, read: Bool, taken: [UInt8]?, flushStream: Bool = false) {
        var step = Step(session: session)
        var outcome = DeliverOutcome(connection: self)
        if flushStream && session.stream.hasPendingOutput {
            switch session.stream.flush() {
            case .failed(let error): step.failure = error
            case .endOfFile: step.failure = closedError(session)
            case .wouldBlock:
                step.watchWritable = true
                step.failure = watchWritable(session, true)
            case .transferred: break
            }
        }
        var next = taken
        var read = read
        // A caller's thread writes a few rounds at most, then leaves the rest to the
        // loop: it has a task to get back to.
        var rounds = loop.inLoop ? Int.max : 3
        while true {
            if let bytes = next, step.failure == nil {
                write(session, bytes, into: &step)
            }
            if read, step.failure == nil {
                step.failure = readOnce(session)
                read = false
            }
            rounds -= 1
            next = shared.withLock { s in performLocked(&s, &step, release: true, into: &outcome, keepWriting: rounds > 0) }
            step.written = nil
            if next == nil { break }
        }
        outcome.resume()
    }

    /// Reads once from the stream into the session's parser.
    private func readOnce(_ session: Session) -> RESPError? {
        switch session.stream.read(into: session.readBuffer) {
        case .transferred(let n):
            return session.parse(UnsafeRawBufferPointer(rebasing: session.readBuffer[..<n]))
        case .wouldBlock:
            return nil
        case .endOfFile:
            return closedError(session)
        case .failed(let error):
            return duringHandshake(session, error)
        }
    }

    /// Writes bytes taken from the machine (recorded in `step` for the next locked
    /// section), and watches writability while the socket is full (the owner's).
    private func write(_ session: Session, _ bytes: [UInt8], into step: inout Step) {
        var written = 0
        var failure: RESPError?
        bytes.withUnsafeBytes { raw in
            while written < raw.count {
                switch session.stream.write(UnsafeRawBufferPointer(rebasing: raw[written...])) {
                case .transferred(let n):
                    written += n
                    continue
                case .wouldBlock:
                    break
                case .endOfFile:
                    failure = closedError(session)
                case .failed(let error):
                    failure = duringHandshake(session, error)
                }
                break
            }
        }
        step.written = (bytes, written)
        if let failure {
            step.failure = failure
            return
        }
        let blocked = written < bytes.count || session.stream.hasPendingOutput
        step.watchWritable = blocked
        if blocked || session.writableArmed {
            step.failure = watchWritable(session, blocked)
        }
    }

    /// Under the lock: records the owner's write, delivers its replies, tears the
    /// session down on failure (or closes it once drained), and, when `release`, hands
    /// the owner the output that accumulated (nil: the token was given back).
    private func performLocked(
        _ s: inout Shared, _ step: inout Step, release: Bool, into outcome: inout DeliverOutcome, keepWriting: Bool = true
    ) -> [UInt8]? {
        let session = step.session
        guard s.session === session else {
            // Torn down meanwhile (by a timeout or a close): the owner closes the socket.
            session.replies.removeAll(keepingCapacity: true)
            outcome.extra.closeSession = session
            outcome.tornDown = true
            return nil
        }
        if let written = step.written {
            _ = s.machine.outputWritten(written.bytes, count: written.count)
        }
        let now = ContinuousClock.now
        if !session.replies.isEmpty {
            for reply in session.replies {
                switch s.machine.receive(reply, now: now) {
                case .none:
                    break
                case .complete(let waiter, let reply):
                    route(&s, waiter, .success(reply), into: &outcome)
                case .push(let message):
                    outcome.extra.events.append(.message(message))
                case .event(let event):
                    outcome.extra.events.append(event)
                case .ready(let waiters):
                    for waiter in waiters { route(&s, waiter, .success(.simpleString("OK")), into: &outcome) }
                    if isSubscriber { outcome.extra.events.append(.subscribed) }
                    available.store(true, ordering: .relaxed)
                    if s.machine.configuration.reauthenticationInterval != nil { outcome.extra.reauthTimer = session }
                case .completeAndDrain(let waiter, let reply):
                    if let waiter { route(&s, waiter, .success(reply), into: &outcome) }
                    outcome.extra.logs.append((.warning, "\(endpoint) is a read-only replica (READONLY): reopening the connection, which resolves the host name again"))
                case .fail(let error):
                    step.failure = error
                case .reauthFailed(let error):
                    outcome.extra.logs.append((.warning, "\(error.message); reopening the connection"))
                }
                if step.failure != nil { break }
            }
            session.replies.removeAll(keepingCapacity: true)
        }
        if step.failure != nil || s.machine.socketIsDrained {
            var teardown: Machine.Teardown
            if let failure = step.failure {
                teardown = s.machine.socketFailed(failure, now: now, random: Double.random(in: 0...1))
            } else {
                teardown = s.machine.drainedSocketClosed(now: now, random: Double.random(in: 0...1))
            }
            for (waiter, error) in teardown.failed { route(&s, waiter, .failure(error), into: &outcome) }
            teardown.failed = []
            outcome.extra.logs.append(contentsOf: teardownLogs(teardown, failure: step.failure, attempts: s.machine.failedAttempts))
            if isSubscriber, teardown.next != .closed, teardown.next != .nothing {
                outcome.extra.events.append(.disconnected(step.failure ?? .connection("the connection to \(endpoint) was reopened")))
            }
            available.store(teardown.next != .closed && !isBackoff(teardown.next), ordering: .relaxed)
            outcome.extra.teardown = teardown
            s.session = nil
            idle.store(false, ordering: .relaxed)
            outcome.extra.closeSession = session
            outcome.tornDown = true
            return nil
        }
        idle.store(s.machine.inFlight.isEmpty && s.machine.handshakeDone && s.mailbox == nil, ordering: .relaxed)
        guard release else { return nil }
        if !step.watchWritable, !s.machine.output.isEmpty {
            if keepWriting, let bytes = s.machine.takeOutput() {
                // Commands that accumulated while the replies were awaited go out
                // before their callers resume, so the server works on them meanwhile.
                return bytes
            }
            if !keepWriting { outcome.extra.flushLater = session }
        }
        if s.machine.output.isEmpty { s.machine.flushFoundNothing() }
        session.ioOwned = false
        if session.readDeferred && !s.machine.inFlight.isEmpty {
            // The loop saw the socket readable meanwhile and replies are awaited: watch
            // it again (the data is still there, so the loop is told at once). With
            // nothing in flight (a polling caller got its reply), it stays unwatched:
            // the next polling caller needs no loop, and whoever waits on the loop
            // (a suspended caller, or the timer within a tick) watches it again.
            watchReadable(session)
        }
        if session.stream.hasBufferedInput { outcome.extra.drainLater = session }
        return nil
    }

    /// Gives the token back after polling (writing what accumulated first).
    private func releaseIO(_ session: Session) {
        var step = Step(session: session)
        var outcome = DeliverOutcome(connection: self)
        var rounds = 2
        var next = shared.withLock { s in performLocked(&s, &step, release: true, into: &outcome, keepWriting: rounds > 0) }
        while let bytes = next {
            write(session, bytes, into: &step)
            rounds -= 1
            next = shared.withLock { s in performLocked(&s, &step, release: true, into: &outcome, keepWriting: rounds > 0) }
            step.written = nil
        }
        outcome.resume()
    }

    /// Turns the socket's writability reports on or off (the owner's).
    private func watchWritable(_ session: Session, _ on: Bool) -> RESPError? {
        guard session.writableArmed != on, session.registration != nil else { return nil }
        shared.withLock { _ in
            session.writableArmed = on
            applyInterest(session)
        }
        return nil
    }

    private func closedError(_ session: Session) -> RESPError {
        duringHandshake(session, .connection("\(endpoint) closed the connection"))
    }

    /// A plain-text client on a TLS port sees the server hang up (or reset) before the
    /// handshake's first reply: say what that likely means.
    private func duringHandshake(_ session: Session, _ error: RESPError) -> RESPError {
        guard tls == nil, error.kind == .connection else { return error }
        let handshaking = shared.withLock { s in s.session === session && !s.machine.handshakeDone }
        guard handshaking else { return error }
        return .connection("\(error.message), before answering the handshake (if the server speaks TLS on this port, use rediss://)")
    }

    /// What to do once the lock is released. The common case (one caller's reply)
    /// allocates nothing: the first completion has a slot of its own, and everything
    /// unusual lives in ``Rare``.
    struct DeliverOutcome {
        typealias Completion = (UnsafeContinuation<RESPReply, any Error>, Result<RESPReply, any Error>)
        var first: Completion?
        var more: [Completion] = []
        var rare: Rare?
        var tornDown = false
        let connection: RESPConnection

        final class Rare {
            var events: [RESPSubscriberEvent] = []
            var logs: [(Logger.Level, String)] = []
            var teardown: Machine.Teardown?
            var closeSession: Session?
            var reauthTimer: Session?
            var drainLater: Session?
            var flushLater: Session?
        }

        init(connection: RESPConnection) {
            self.connection = connection
        }

        var extra: Rare {
            mutating get {
                if let rare { return rare }
                let made = Rare()
                rare = made
                return made
            }
        }

        mutating func complete(_ continuation: UnsafeContinuation<RESPReply, any Error>, _ result: Result<RESPReply, any Error>) {
            if first == nil {
                first = (continuation, result)
            } else {
                more.append((continuation, result))
            }
        }

        /// Carries it out, in this order: logs, callers, a subscriber's events, the
        /// socket's close, the reconnect, timers.
        func resume() {
            if let rare {
                for (level, message) in rare.logs {
                    connection.logger.log(level: level, "\(message)", metadata: ["redis.endpoint": "\(connection.endpoint)"])
                }
            }
            if let (continuation, result) = first { continuation.resume(with: result) }
            for (continuation, result) in more { continuation.resume(with: result) }
            guard let rare else { return }
            if !rare.events.isEmpty, case .subscriber(_, _, _, let sink) = connection.role {
                for event in rare.events { sink(event) }
            }
            if let session = rare.closeSession { connection.closeSession(session) }
            if let teardown = rare.teardown { connection.perform(teardown) }
            if let session = rare.reauthTimer { connection.scheduleReauthentication(session) }
            if let session = rare.drainLater {
                let connection = self.connection
                connection.loop.execute { connection.drainBuffered(session) }
            }
            if let session = rare.flushLater {
                let connection = self.connection
                connection.loop.execute { connection.requestedFlush(session) }
            }
        }
    }

    private func route(_ s: inout Shared, _ waiter: Waiter, _ result: Result<RESPReply, any Error>, into outcome: inout DeliverOutcome) {
        switch waiter {
        case .continuation(let continuation):
            outcome.complete(continuation, result)
        case .polling(let id):
            s.mailbox = (id, result)
        }
    }

    private func isBackoff(_ next: Machine.Teardown.Next) -> Bool {
        if case .backoff = next { return true }
        return false
    }

    private func teardownLogs(_ teardown: Machine.Teardown, failure: RESPError?, attempts: Int) -> [(Logger.Level, String)] {
        switch teardown.next {
        case .reconnect:
            if let failure, failure.message.hasSuffix("was reopened") == false {
                return [(.warning, "connection to \(endpoint) lost (\(failure.message)); reconnecting")]
            }
            return [(.debug, "reopening the connection to \(endpoint)")]
        case .backoff(_, let delay):
            let message = failure?.message ?? "connection failed"
            let level: Logger.Level = attempts == 1 || failure?.kind == .authentication || failure?.kind == .tls ? .warning : .debug
            return [(level, "\(message); retrying in \(Backoff.nanoseconds(delay) / 1_000_000) ms (attempt \(attempts))")]
        case .closed, .nothing:
            return []
        }
    }

    // MARK: - Sessions and teardown

    /// Closes a socket that left the connection's state: on the loop thread, after it is
    /// deregistered, so no readiness handler runs on a closed (or reused) descriptor.
    private func closeSession(_ session: Session) {
        let waiters: [CheckedContinuation<Void, Never>] = shared.withLock { s in
            guard s.machine.phaseKind == .closed, s.session == nil, !s.socketClosedForGood else { return [] }
            s.socketClosedForGood = true
            let waiters = s.closeWaiters
            s.closeWaiters = []
            return waiters
        }
        if let registration = session.registration {
            registration.deregister {
                session.stream.close()
                for waiter in waiters { waiter.resume() }
            }
        } else {
            session.stream.close()
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Carries out what follows a teardown or a failed connect.
    private func perform(_ teardown: Machine.Teardown) {
        for (waiter, error) in teardown.failed {
            switch waiter {
            case .continuation(let continuation):
                continuation.resume(throwing: error)
            case .polling(let id):
                shared.withLock { s in s.mailbox = (id, .failure(error)) }
            }
        }
        switch teardown.next {
        case .reconnect:
            available.store(true, ordering: .relaxed)
            startConnect()
        case .backoff(let until, _):
            available.store(false, ordering: .relaxed)
            loop.schedule(at: until) { [self] in backoffExpired() }
        case .closed:
            available.store(false, ordering: .relaxed)
            let waiters: [CheckedContinuation<Void, Never>] = shared.withLock { s in
                guard s.session == nil, !s.socketClosedForGood else { return [] }
                s.socketClosedForGood = true
                let waiters = s.closeWaiters
                s.closeWaiters = []
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        case .nothing:
            break
        }
    }

    /// Tears the current session down with `error` (a timeout found by the timer).
    private func teardownCurrent(_ error: RESPError) {
        var outcome = DeliverOutcome(connection: self)
        var closeNow: Session?
        shared.withLock { s in
            guard let session = s.session else { return }
            let teardown = s.machine.socketFailed(error, now: .now, random: Double.random(in: 0...1))
            s.session = nil
            idle.store(false, ordering: .relaxed)
            for (waiter, failure) in teardown.failed { route(&s, waiter, .failure(failure), into: &outcome) }
            var rest = teardown
            rest.failed = []
            outcome.extra.teardown = rest
            outcome.extra.logs.append(contentsOf: [(.warning, "\(error.message)")])
            if isSubscriber, teardown.next != .closed, teardown.next != .nothing {
                outcome.extra.events.append(.disconnected(error))
            }
            // The owner, if any, closes the socket when it next looks at the state.
            if !session.ioOwned {
                session.ioOwned = true
                closeNow = session
            }
        }
        if let next = outcome.rare?.teardown?.next {
            available.store(next != .closed && !isBackoff(next), ordering: .relaxed)
        }
        if let closeNow { outcome.extra.closeSession = closeNow }
        outcome.resume()
    }

    // MARK: - Connecting

    private func startConnect() {
        let id: UInt64 = shared.withLock { s in
            s.nextTaskID += 1
            return s.nextTaskID
        }
        // On the loop's executor: opening a connection must not wait behind a busy
        // cooperative pool (name resolution still runs on a thread of its own).
        let task = Task(executorPreference: loop) { [self] in
            await connectAttempt()
            taskFinished(id)
        }
        track(task, id: id)
    }

    private func track(_ task: Task<Void, Never>, id: UInt64) {
        shared.withLock { s in
            if s.finishedTasks.remove(id) == nil { s.tasks[id] = task }
        }
    }

    private func taskFinished(_ id: UInt64) {
        shared.withLock { s in
            if s.tasks.removeValue(forKey: id) == nil { s.finishedTasks.insert(id) }
        }
    }

    private func backoffExpired() {
        let start = shared.withLock { s in s.machine.backoffExpired(now: .now) }
        if start {
            available.store(true, ordering: .relaxed)
            startConnect()
        }
    }

    /// The credentials for a handshake or a re-authentication: the provider's, else the
    /// configured user and password.
    private func credentials() async throws -> Machine.Credentials? {
        if let provider = configuration.credentialsProvider {
            do {
                let credentials = try await provider.fetch()
                return Machine.Credentials(username: credentials.username, password: credentials.password)
            } catch {
                throw RESPError.authentication("the credentials provider for \(endpoint) failed: \(error)")
            }
        }
        guard let password = configuration.password else { return nil }
        return Machine.Credentials(username: configuration.username, password: password)
    }

    private func connectAttempt() async {
        let session: Session
        let credentials: Machine.Credentials?
        let deadline: ContinuousClock.Instant
        do {
            credentials = try await self.credentials()
            deadline = ContinuousClock.now + configuration.connectTimeout
            let stream = try await StreamOpener.open(configuration, tls: tls, loop: loop, deadline: deadline)
            do {
                session = try Session(stream: stream, connection: self)
                session.registration = try loop.register(fd: stream.fd, interest: .readable, handler: session)
            } catch {
                stream.close()
                throw error
            }
        } catch {
            connectFailed(connectError(error))
            return
        }
        var handshake: [UInt8]?
        let action: Machine.ConnectedAction = shared.withLock { s in
            let action = s.machine.connected(credentials: credentials, now: .now)
            guard action == .write else { return action }
            s.session = session
            session.ioOwned = true
            handshake = s.machine.takeOutput()
            if !s.timerArmed {
                s.timerArmed = true
                scheduleTick()
            }
            s.idleTicks = 0
            return action
        }
        switch action {
        case .close:
            let closedAlready: Bool = shared.withLock { s in s.machine.phaseKind == .closed }
            if closedAlready {
                session.registration?.deregister { session.stream.close() }
            }
        case .write:
            logger.debug("connected", metadata: ["redis.endpoint": "\(endpoint)"])
            runIO(session, read: false, taken: handshake)
        }
    }

    private func connectError(_ error: any Error) -> RESPError {
        if let error = error as? RESPError { return error }
        if let error = error as? IOError {
            if error.isTimeout {
                return .timeout("connecting to \(endpoint) timed out after \(configuration.connectTimeout)")
            }
            return .connection("cannot connect to \(endpoint): \(error)")
        }
        return .connection("cannot connect to \(endpoint): \(error)")
    }

    private func connectFailed(_ error: RESPError) {
        let (teardown, attempts): (Machine.Teardown, Int) = shared.withLock { s in
            (s.machine.connectFailed(error, now: .now, random: Double.random(in: 0...1)), s.machine.failedAttempts)
        }
        for (level, message) in teardownLogs(teardown, failure: error, attempts: attempts) {
            logger.log(level: level, "\(message)", metadata: ["redis.endpoint": "\(endpoint)"])
        }
        if case .subscriber(_, _, _, let sink) = role, teardown.next != .closed, teardown.next != .nothing {
            sink(.disconnected(error))
        }
        perform(teardown)
    }

    // MARK: - Re-authentication

    fileprivate func scheduleReauthentication(_ session: Session) {
        guard let interval = configuration.reauthenticationInterval, configuration.credentialsProvider != nil else { return }
        loop.schedule(after: interval) { [self] in reauthenticateIfDue(session) }
    }

    private func reauthenticateIfDue(_ session: Session) {
        let due: Bool = shared.withLock { s in
            guard s.session === session else { return false }
            guard s.machine.reauthenticationDue(now: .now) else { return false }
            s.machine.reauthenticationStarted()
            return true
        }
        let current: Bool = shared.withLock { s in s.session === session }
        guard current else { return }
        // Check again one interval later, whatever happens now.
        scheduleReauthentication(session)
        guard due else { return }
        let id: UInt64 = shared.withLock { s in
            s.nextTaskID += 1
            return s.nextTaskID
        }
        let task = Task(executorPreference: loop) { [self] in
            await reauthenticate(session)
            taskFinished(id)
        }
        track(task, id: id)
    }

    private func reauthenticate(_ session: Session) async {
        let credentials: Machine.Credentials?
        do {
            credentials = try await self.credentials()
        } catch {
            logger.warning("re-authentication skipped: \(error)", metadata: ["redis.endpoint": "\(endpoint)"])
            shared.withLock { s in s.machine.reauthenticationAbandoned(now: .now) }
            return
        }
        guard let credentials else {
            shared.withLock { s in s.machine.reauthenticationAbandoned(now: .now) }
            return
        }
        var write: (session: Session, bytes: [UInt8])?
        var flush: Session?
        shared.withLock { s in
            guard s.session === session else { return }
            watchReadable(session)
            switch s.machine.reauthenticate(credentials: credentials, now: .now) {
            case .write:
                if !session.ioOwned, let bytes = s.machine.takeOutput() {
                    session.ioOwned = true
                    write = (session, bytes)
                }
            case .flushSoon:
                flush = session
            case .none, .connect, .fail:
                break
            }
            if !s.timerArmed {
                s.timerArmed = true
                scheduleTick()
            }
            s.idleTicks = 0
        }
        logger.debug("re-authenticating", metadata: ["redis.endpoint": "\(endpoint)"])
        if let write { runIO(write.session, read: false, taken: write.bytes) }
        if let flush { loop.execute { [self] in requestedFlush(flush) } }
    }

    // MARK: - Closing

    /// Closes the connection: commands not yet sent fail; commands already sent get
    /// their replies (or fail at their timeout); then the socket is closed. No reconnect
    /// follows. Returns once the socket is closed and no connect attempt runs.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            var resumeNow = false
            var closeNow: Session?
            let failed: [(Waiter, RESPError)] = shared.withLock { s in
                available.store(false, ordering: .relaxed)
                let (action, failed) = s.machine.close()
                switch action {
                case .closed:
                    if s.session == nil {
                        s.socketClosedForGood = true
                        resumeNow = true
                    } else {
                        s.closeWaiters.append(continuation)
                    }
                case .wait:
                    s.closeWaiters.append(continuation)
                case .closeSocket:
                    s.closeWaiters.append(continuation)
                    if let session = s.session, !session.ioOwned {
                        let teardown = s.machine.drainedSocketClosed(now: .now, random: 0)
                        _ = teardown  // nothing in flight: nobody to fail
                        s.session = nil
                        session.ioOwned = true
                        closeNow = session
                    }
                }
                return failed
            }
            fail(failed)
            if let closeNow { closeSession(closeNow) }
            if resumeNow { continuation.resume() }
        }
        await waitForTasks()
    }

    /// Closes at once, failing whatever is in flight (for `deinit` paths).
    func closeNow() {
        var closeNow: Session?
        let failed: [(Waiter, RESPError)] = shared.withLock { s in
            available.store(false, ordering: .relaxed)
            let (closeSocket, failed) = s.machine.closeNow(now: .now)
            if closeSocket, let session = s.session {
                s.session = nil
                if !session.ioOwned {
                    session.ioOwned = true
                    closeNow = session
                }
            }
            return failed
        }
        fail(failed)
        if let closeNow { closeSession(closeNow) }
    }

    private func fail(_ failed: [(Waiter, RESPError)]) {
        for (waiter, error) in failed {
            switch waiter {
            case .continuation(let continuation):
                continuation.resume(throwing: error)
            case .polling(let id):
                shared.withLock { s in s.mailbox = (id, .failure(error)) }
            }
        }
    }

    private func waitForTasks() async {
        while true {
            let tasks: [Task<Void, Never>] = shared.withLock { s in Array(s.tasks.values) }
            if tasks.isEmpty { return }
            for task in tasks { await task.value }
            shared.withLock { s in
                for (id, task) in s.tasks where tasks.contains(task) { s.tasks.removeValue(forKey: id) }
            }
        }
    }

    // MARK: - Timer

    private func scheduleTick() {
        loop.schedule(after: tickInterval) { [self] in tick() }
    }

    /// Runs every few milliseconds while requests are in flight (always, for a
    /// subscriber): deadlines and keep-alives.
    private func tick() {
        var write: (session: Session, bytes: [UInt8])?
        var flush: Session?
        var rearm = true
        let now = ContinuousClock.now
        let result: Machine.TickResult = shared.withLock { s in
            // A connection left unwatched by polling callers is watched again within a
            // tick (so that a server closing it while idle is noticed).
            if let session = s.session, !session.ioOwned { watchReadable(session) }
            let result = s.machine.tick(now: now)
            if result.teardown == nil, result.write, let session = s.session {
                if !session.ioOwned, let bytes = s.machine.takeOutput() {
                    session.ioOwned = true
                    write = (session, bytes)
                } else {
                    flush = session
                }
            }
            if result.keepTicking {
                s.idleTicks = 0
            } else {
                s.idleTicks += 1
            }
            if s.machine.phaseKind == .closed || s.idleTicks >= idleTickLimit {
                s.timerArmed = false
                rearm = false
            }
            return result
        }
        fail(result.failed)
        if let error = result.teardown { teardownCurrent(error) }
        if let write { runIO(write.session, read: false, taken: write.bytes) }
        if let flush { loop.execute { [self] in requestedFlush(flush) } }
        if rearm { scheduleTick() }
    }
}

/// One socket's lifetime within a ``RESPConnection``: the stream, its reply parser and
/// read buffer (used only by the I/O owner), registered with the loop.
final class Session: IOHandler, @unchecked Sendable {
    let stream: any RESPByteStream
    let connection: RESPConnection
    let parser: RESPParser
    let readBuffer: UnsafeMutableRawBufferPointer
    // The fields below are guarded by the connection's lock or owned by the I/O owner
    // (never both at once): no dynamic exclusivity checks on the hot path.
    /// Set once, before the session is published to the connection's state.
    @exclusivity(unchecked) var registration: IORegistration?
    /// The I/O token: guarded by the connection's lock.
    @exclusivity(unchecked) var ioOwned = false
    /// Whether writability is watched: set by the I/O owner, under the lock.
    @exclusivity(unchecked) var writableArmed = false
    /// Readability is not watched because another thread owned the socket when it was
    /// reported: guarded by the connection's lock.
    @exclusivity(unchecked) var readDeferred = false
    /// Replies parsed by the I/O owner, delivered under the lock.
    @exclusivity(unchecked) var replies: [RESPReply] = []

    init(stream: any RESPByteStream, connection: RESPConnection) throws(RESPError) {
        self.stream = stream
        self.connection = connection
        self.parser = try RESPParser()
        self.readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        replies.reserveCapacity(64)
    }

    deinit {
        readBuffer.deallocate()
    }

    /// Feeds received bytes to the parser and collects the complete replies.
    func parse(_ bytes: UnsafeRawBufferPointer) -> RESPError? {
        do {
            try parser.parse(bytes, into: &replies)
            return nil
        } catch {
            return error
        }
    }

    func ioReady(_ events: IOEvents) {
        connection.ioReady(self, events)
    }
}
