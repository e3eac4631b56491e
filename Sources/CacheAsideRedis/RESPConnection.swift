import DequeModule
import IOLoop
import Logging
import Synchronization

/// One multiplexed connection to Redis, reopened when it breaks.
///
/// Many tasks send commands on it at once. Each command takes a slot at the end of a
/// FIFO; replies are read and parsed on the loop thread and matched to the FIFO in
/// order.
///
/// Flush strategy (measured, see the package's benchmark notes):
/// - a command issued while the connection is idle (nothing awaited, nothing waiting
///   to be written) is written at once from the calling thread, under the lock: the
///   single-task latency path, one `send` and no thread hop;
/// - a command issued while replies are awaited, or while bytes wait to be written, is
///   appended to the pending output, and the loop writes everything that accumulated
///   in one `send`: when it runs the flush the first such command requested (one
///   `execute` per batch), after it processed a batch of replies, or when the socket
///   becomes writable again. The commands of many tasks thus share one write and one
///   read on the server, which is where the throughput comes from.
///
/// Timeouts: one timer per connection ticks while commands are in flight (never one
/// per command); see ``tick()``.
///
/// Thread safety: every field is guarded by `state`'s lock, except what the loop thread
/// alone touches (a session's parser and read buffer). Every access to the socket
/// happens under the lock or on the loop thread (the loop writes a batch it took out
/// of the state outside the lock, with `loopWriting` set so that nobody else writes
/// meanwhile), and closing it happens on the loop thread after it is deregistered, so
/// a close never races a read or a write.
final class RESPConnection: Sendable {
    /// What the connection is for.
    enum Role: Sendable {
        /// Ordinary request/response commands.
        case commands
        /// A dedicated pub/sub connection: (re)subscribes on every connect and hands
        /// every message to `sink`, on the loop thread.
        case subscriber(channels: [String], patterns: [String], sink: @Sendable (RESPPubSubMessage) -> Void)
    }

    /// A command (or handshake step, or pipeline) waiting for its replies.
    struct Slot {
        enum Kind: UInt8 {
            case command, pipeline, auth, select, subscribe, ping

            var isHandshake: Bool { self == .auth || self == .select || self == .subscribe }
        }

        var id: UInt64
        /// `nil` once the caller was cancelled (the reply is then discarded), and for
        /// the connection's own commands.
        var continuation: UnsafeContinuation<RESPReply, any Error>?
        var kind: Kind
        var completesHandshake = false
        /// Replies still expected (pipelines and `SUBSCRIBE` expect several).
        var remaining: Int
        /// A pipeline's replies so far. A reference, so that appending to it while the
        /// slot sits in the FIFO never copies what was collected (a copy per reply
        /// made a long pipeline quadratic and held the loop thread for seconds).
        var collected: ReplyCollector? = nil
        var deadline: ContinuousClock.Instant
    }

    /// The replies of one pipeline, gathered in order on the loop thread.
    final class ReplyCollector: @unchecked Sendable {
        var replies: [RESPReply] = []
        init(capacity: Int) { replies.reserveCapacity(capacity) }
    }

    /// A command issued while the connection is being opened: not yet sent.
    struct PendingCommand {
        var slot: Slot
        var bytes: [UInt8]
    }

    enum Phase {
        /// Never connected: the first command opens the connection.
        case idle
        /// A connect attempt is running; commands wait in `pending`.
        case connecting
        /// Connected (the handshake may still be in flight).
        case connected(Session)
        /// The last attempt failed; the next one starts at `until`. Commands fail fast.
        case backoff(until: ContinuousClock.Instant)
        /// Closed for good.
        case closed
    }

    struct State {
        var phase: Phase = .idle
        var fifo = Deque<Slot>()
        /// Bytes waiting to be written, from `outputStart`.
        var output: [UInt8] = []
        var outputStart = 0
        var writableArmed = false
        /// The loop thread is writing a batch it took from `output`, outside the lock:
        /// nobody else writes meanwhile (commands append to `output`).
        var loopWriting = false
        /// An empty buffer with capacity, swapped with `output` by the loop's writes.
        var spareOutput: [UInt8] = []
        /// A flush of `output` was requested from the loop (`execute`).
        var flushScheduled = false
        var pending = Deque<PendingCommand>()
        var handshakeComplete = false
        var failedAttempts = 0
        var lastError: RESPError?
        var closing = false
        var readyWaiters: [CheckedContinuation<Void, any Error>] = []
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        var timerArmed = false
        var idleTicks = 0
        var lastPing = ContinuousClock.now
    }

    /// What to do once the lock is released.
    struct Effects {
        var failures: [(UnsafeContinuation<RESPReply, any Error>, any Error)] = []
        var readyWaiters: [CheckedContinuation<Void, any Error>] = []
        var readyError: RESPError?
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        var closeSession: Session?
        var startConnect = false
        var reconnectAt: ContinuousClock.Instant?
        var armTimer = false
        var logs: [(Logger.Level, String)] = []
    }

    let configuration: RESPConfiguration
    let loop: IOLoop
    let logger: Logger
    let role: Role
    private let endpoint: String
    private let commandTimeout: Duration
    private let tickInterval: Duration
    private let idleTickLimit: Int
    private let pingInterval: Duration = .seconds(5)
    private let state = Mutex(State())
    private let nextID = Atomic<UInt64>(1)
    /// False while the connection waits to reconnect (or is closed): a client prefers
    /// another connection then. Read without the lock, as a hint.
    let available = Atomic<Bool>(true)

    init(configuration: RESPConfiguration, role: Role = .commands, loop: IOLoop, logger: Logger) {
        self.configuration = configuration
        self.role = role
        self.loop = loop
        self.logger = logger
        self.endpoint = configuration.endpoint.description
        self.commandTimeout = configuration.commandTimeout
        let tick = min(max(configuration.commandTimeout / 20, .milliseconds(2)), .milliseconds(25))
        self.tickInterval = tick
        self.idleTickLimit = max(Int(Duration.seconds(1) / tick), 4)
    }

    // MARK: - Commands

    /// Sends an encoded command (or several, for a pipeline) and waits for its reply
    /// (for a pipeline, an array of `replies` replies). Server errors come back as
    /// `.error` values; connection failures, timeouts and cancellation are thrown.
    func execute(_ command: EncodedCommand, kind: Slot.Kind = .command, replies: Int = 1) async throws -> RESPReply {
        try Task.checkCancellation()
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let deadline = ContinuousClock.now + commandTimeout
        let bytes = command.bytes
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
                submit(bytes, kind: kind, replies: replies, id: id, deadline: deadline, continuation: continuation)
                if Task.isCancelled { cancel(id: id) }
            }
        } onCancel: {
            self.cancel(id: id)
        }
    }

    private func submit(
        _ bytes: UnsafeRawBufferPointer, kind: Slot.Kind, replies: Int, id: UInt64,
        deadline: ContinuousClock.Instant, continuation: UnsafeContinuation<RESPReply, any Error>
    ) {
        var armTimer = false
        var refused: RESPError?
        var effects: Effects?
        var flushSession: Session?
        state.withLock { s in
            let slot = Slot(id: id, continuation: continuation, kind: kind, remaining: replies, deadline: deadline)
            if !s.timerArmed {
                s.timerArmed = true
                armTimer = true
            }
            s.idleTicks = 0
            switch s.phase {
            case .connected(let session):
                if s.closing {
                    refused = .connection("the connection to \(endpoint) is closing")
                    return
                }
                let awaitingReplies = !s.fifo.isEmpty
                s.fifo.append(slot)
                if s.outputStart < s.output.count || awaitingReplies || s.loopWriting {
                    // Goes out with the next write: the loop writes what accumulated as
                    // soon as the socket takes it, the awaited replies arrive, or it
                    // runs the flush requested here, so the commands of many tasks
                    // share one write (and one read on the server).
                    if !s.flushScheduled && !s.loopWriting && !s.writableArmed {
                        s.flushScheduled = true
                        flushSession = session
                    }
                    s.output.append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
                } else if let error = writeDirect(&s, session, bytes) {
                    effects = teardownLocked(&s, error)
                }
            case .idle:
                s.phase = .connecting
                s.pending.append(PendingCommand(slot: slot, bytes: Array(bytes)))
                effects = Effects(startConnect: true)
            case .connecting:
                s.pending.append(PendingCommand(slot: slot, bytes: Array(bytes)))
            case .backoff(let until):
                refused = unavailableError(s, until: until)
            case .closed:
                refused = .connection("the connection to \(endpoint) is closed")
            }
        }
        if let refused { continuation.resume(throwing: refused) }
        if let effects { perform(effects) }
        if armTimer { scheduleTick() }
        if let flushSession { loop.execute { self.flushFromLoop(flushSession) } }
    }

    /// Writes what accumulated in `output` (on the loop thread).
    private func flushFromLoop(_ session: Session) {
        let batch: (bytes: [UInt8], start: Int)? = state.withLock { s in
            s.flushScheduled = false
            guard case .connected(let current) = s.phase, current === session,
                s.outputStart < s.output.count, !s.loopWriting, !s.writableArmed
            else { return nil }
            return takeOutputLocked(&s)
        }
        if let batch { writeFromLoop(session, batch) }
    }

    /// Cancels a waiting command: its caller gets `CancellationError` now. A command
    /// already sent keeps its place in the FIFO and its reply is discarded; one still
    /// waiting for the connection is dropped unsent.
    private func cancel(id: UInt64) {
        let continuation: UnsafeContinuation<RESPReply, any Error>? = state.withLock { s in
            if let i = s.fifo.firstIndex(where: { $0.id == id }) {
                let c = s.fifo[i].continuation
                s.fifo[i].continuation = nil
                return c
            }
            if let i = s.pending.firstIndex(where: { $0.slot.id == id }) {
                return s.pending.remove(at: i).slot.continuation
            }
            return nil
        }
        continuation?.resume(throwing: CancellationError())
    }

    private func unavailableError(_ s: State, until: ContinuousClock.Instant) -> RESPError {
        let wait = max(until - .now, .zero)
        let ms = Backoff.nanoseconds(wait) / 1_000_000
        let reason = s.lastError?.message ?? "not connected"
        let kind: RESPError.Kind = s.lastError?.kind == .authentication ? .authentication : .connection
        return RESPError(kind: kind, message: "no connection to \(endpoint) (next attempt in \(ms) ms): \(reason)")
    }

    // MARK: - Writing (under the lock)

    private func writeDirect(_ s: inout State, _ session: Session, _ bytes: UnsafeRawBufferPointer) -> RESPError? {
        switch session.stream.write(bytes) {
        case .transferred(let n):
            if n == bytes.count { return nil }
            s.output.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[n...]).assumingMemoryBound(to: UInt8.self))
            return setWritable(&s, session, true)
        case .wouldBlock:
            s.output.append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
            return setWritable(&s, session, true)
        case .failed(let code):
            return .connection(IOError(operation: "write to \(endpoint)", code: code).description)
        case .endOfFile:
            return .connection("\(endpoint) closed the connection")
        }
    }

    /// Writes as much of the pending output as the socket takes.
    private func flushLocked(_ s: inout State, _ session: Session) -> RESPError? {
        while s.outputStart < s.output.count {
            let start = s.outputStart
            let result = s.output.withUnsafeBytes { raw in
                session.stream.write(UnsafeRawBufferPointer(rebasing: raw[start...]))
            }
            switch result {
            case .transferred(let n):
                s.outputStart += n
            case .wouldBlock:
                return setWritable(&s, session, true)
            case .failed(let code):
                return .connection(IOError(operation: "write to \(endpoint)", code: code).description)
            case .endOfFile:
                return .connection("\(endpoint) closed the connection")
            }
        }
        if s.output.capacity > 1 << 20 {
            s.output = []
        } else {
            s.output.removeAll(keepingCapacity: true)
        }
        s.outputStart = 0
        return setWritable(&s, session, false)
    }

    private func setWritable(_ s: inout State, _ session: Session, _ on: Bool) -> RESPError? {
        guard s.writableArmed != on, let registration = session.registration else { return nil }
        do {
            try registration.setInterest(on ? [.readable, .writable] : .readable)
            s.writableArmed = on
            return nil
        } catch {
            return .connection("cannot watch the socket to \(endpoint): \(error)")
        }
    }

    /// Takes the pending output for the loop thread to write outside the lock.
    private func takeOutputLocked(_ s: inout State) -> (bytes: [UInt8], start: Int) {
        var bytes = s.spareOutput
        swap(&bytes, &s.output)
        let start = s.outputStart
        s.outputStart = 0
        s.loopWriting = true
        return (bytes, start)
    }

    /// Writes batches on the loop thread, without holding the lock (callers append to
    /// `output` meanwhile, and never write themselves while `loopWriting` is set), until
    /// nothing is left or the socket is full.
    private func writeFromLoop(_ session: Session, _ first: (bytes: [UInt8], start: Int)) {
        var batch = first
        while true {
            var failure: RESPError?
            var written = batch.start
            while written < batch.bytes.count {
                let start = written
                let result = batch.bytes.withUnsafeBytes { raw in
                    session.stream.write(UnsafeRawBufferPointer(rebasing: raw[start...]))
                }
                if case .transferred(let n) = result {
                    written += n
                    continue
                }
                if case .failed(let code) = result {
                    failure = .connection(IOError(operation: "write to \(endpoint)", code: code).description)
                }
                break  // would block (or failed)
            }
            var effects: Effects?
            var next: (bytes: [UInt8], start: Int)?
            state.withLock { s in
                s.loopWriting = false
                guard case .connected(let current) = s.phase, current === session else { return }
                if let failure {
                    effects = teardownLocked(&s, failure)
                    return
                }
                if written < batch.bytes.count {
                    // The socket is full: put the rest back in front, wait for writability.
                    var rest = Array(batch.bytes[written...])
                    rest.append(contentsOf: s.output[s.outputStart...])
                    s.output = rest
                    s.outputStart = 0
                    if let error = setWritable(&s, session, true) { effects = teardownLocked(&s, error) }
                    return
                }
                if batch.bytes.capacity <= 1 << 20 {
                    batch.bytes.removeAll(keepingCapacity: true)
                    s.spareOutput = batch.bytes
                }
                if s.outputStart < s.output.count {
                    next = takeOutputLocked(&s)
                } else if let error = setWritable(&s, session, false) {
                    effects = teardownLocked(&s, error)
                }
            }
            if let effects { perform(effects) }
            guard let following = next else { return }
            batch = following
        }
    }

    // MARK: - Reading (on the loop thread)

    fileprivate func sessionReady(_ session: Session, _ events: IOEvents) {
        var failure: RESPError?
        var replies: [RESPReply] = []
        swap(&replies, &session.replies)
        if events.contains(.readable) || events.contains(.hangup) {
            let buffer = session.readBuffer
            // One buffer's worth per readiness report: the loop is shared, and a
            // connection with megabytes of replies waiting must not hold it while other
            // connections' replies wait. The socket stays readable (level-triggered),
            // so the loop comes back for the rest after a turn of the others.
            reading: do {
                switch session.stream.read(into: buffer) {
                case .transferred(let n):
                    do {
                        try session.parser.feed(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                    } catch {
                        failure = error
                        break reading
                    }
                case .wouldBlock:
                    break reading
                case .endOfFile:
                    failure = .connection("\(endpoint) closed the connection")
                    break reading
                case .failed(let code):
                    failure = .connection(IOError(operation: "read from \(endpoint)", code: code).description)
                    break reading
                }
            }
            do {
                while let reply = try session.parser.next() { replies.append(reply) }
            } catch {
                failure = error
            }
        }

        var completions: [(UnsafeContinuation<RESPReply, any Error>, RESPReply)] = []
        swap(&completions, &session.completions)
        var pushes: [RESPPubSubMessage] = []
        var effects: Effects?
        var batch: (bytes: [UInt8], start: Int)?
        state.withLock { s in
            guard case .connected(let current) = s.phase, current === session else { return }
            var handshakeDone = false
            matching: for reply in replies {
                if case .subscriber = role, let message = RESPPubSubMessage(push: reply) {
                    pushes.append(message)
                    continue
                }
                guard !s.fifo.isEmpty else {
                    failure = .protocolError("unexpected reply from \(endpoint) with no command waiting: \(reply)")
                    break matching
                }
                switch s.fifo[0].kind {
                case .command:
                    if let c = s.fifo.removeFirst().continuation { completions.append((c, reply)) }
                case .pipeline:
                    let collector: ReplyCollector
                    if let existing = s.fifo[0].collected {
                        collector = existing
                    } else {
                        collector = ReplyCollector(capacity: s.fifo[0].remaining)
                        s.fifo[0].collected = collector
                    }
                    collector.replies.append(reply)
                    s.fifo[0].remaining -= 1
                    if s.fifo[0].remaining <= 0 {
                        let slot = s.fifo.removeFirst()
                        let replies = collector.replies
                        collector.replies = []
                        if let c = slot.continuation { completions.append((c, .array(replies))) }
                    }
                case .auth:
                    if case .error(let message) = reply {
                        if configuration.password == nil {
                            failure = .authentication("authentication to \(endpoint) failed: the server requires a password and none is configured (\(message))")
                        } else {
                            let who = configuration.username.map { "user '\($0)'" } ?? "the default user"
                            failure = .authentication("authentication to \(endpoint) as \(who) failed: \(message)")
                        }
                        break matching
                    }
                    if s.fifo.removeFirst().completesHandshake { handshakeDone = true }
                case .select:
                    if case .error(let message) = reply {
                        failure = .configuration("SELECT \(configuration.database) on \(endpoint) failed: \(message)")
                        break matching
                    }
                    if s.fifo.removeFirst().completesHandshake { handshakeDone = true }
                case .subscribe:
                    if case .error(let message) = reply {
                        failure = .server(message)
                        break matching
                    }
                    s.fifo[0].remaining -= 1
                    if s.fifo[0].remaining <= 0, s.fifo.removeFirst().completesHandshake { handshakeDone = true }
                case .ping:
                    s.fifo.removeFirst()
                }
            }
            if handshakeDone {
                s.handshakeComplete = true
                s.failedAttempts = 0
                if !s.readyWaiters.isEmpty {
                    effects = Effects(readyWaiters: s.readyWaiters)
                    s.readyWaiters = []
                }
            }
            if failure == nil, s.outputStart < s.output.count, !s.writableArmed || events.contains(.writable) {
                batch = takeOutputLocked(&s)
            }
            if let failure {
                effects = merge(effects, teardownLocked(&s, failure))
            } else if s.closing && s.fifo.isEmpty {
                effects = merge(effects, finishCloseLocked(&s))
            }
        }
        // Write the commands that accumulated while these replies were awaited before
        // resuming their tasks, so the server works on the next batch meanwhile.
        if let batch { writeFromLoop(session, batch) }
        for (continuation, reply) in completions { continuation.resume(returning: reply) }
        if case .subscriber(_, _, let sink) = role {
            for message in pushes { sink(message) }
        }
        if let effects { perform(effects) }
        replies.removeAll(keepingCapacity: true)
        swap(&replies, &session.replies)
        completions.removeAll(keepingCapacity: true)
        swap(&completions, &session.completions)
    }

    // MARK: - Connecting

    /// Waits until the connection is open and its handshake done (opening it if it is
    /// idle). Throws the connect attempt's error.
    func waitUntilReady() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            var result: Result<Void, RESPError>?
            var start = false
            state.withLock { s in
                switch s.phase {
                case .idle:
                    s.phase = .connecting
                    start = true
                    s.readyWaiters.append(continuation)
                case .connecting:
                    s.readyWaiters.append(continuation)
                case .connected:
                    if s.handshakeComplete {
                        result = .success(())
                    } else {
                        s.readyWaiters.append(continuation)
                    }
                case .backoff(let until):
                    result = .failure(unavailableError(s, until: until))
                case .closed:
                    result = .failure(.connection("the connection to \(endpoint) is closed"))
                }
            }
            if let result { continuation.resume(with: result) }
            if start { perform(Effects(startConnect: true)) }
        }
    }

    private func connectAttempt() async {
        let deadline = ContinuousClock.now + configuration.connectTimeout
        let session: Session
        let handshake: (bytes: [UInt8], slots: [Slot])
        do {
            handshake = try makeHandshake()
            let stream = try await PlainSocketStream.connect(to: configuration.endpoint, loop: loop, deadline: deadline)
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

        var effects = Effects()
        state.withLock { s in
            guard case .connecting = s.phase else {
                effects.closeSession = session  // closed meanwhile
                return
            }
            s.phase = .connected(session)
            available.store(true, ordering: .relaxed)
            // The handshake goes first, within the connect timeout; commands issued
            // meanwhile follow in the same write.
            s.output = handshake.bytes
            s.outputStart = 0
            for var slot in handshake.slots {
                slot.deadline = deadline
                s.fifo.append(slot)
            }
            while let command = s.pending.popFirst() {
                s.fifo.append(command.slot)
                s.output.append(contentsOf: command.bytes)
            }
            s.handshakeComplete = handshake.slots.isEmpty
            if s.handshakeComplete {
                s.failedAttempts = 0
                effects.readyWaiters = s.readyWaiters
                s.readyWaiters = []
            }
            if !s.timerArmed && !s.fifo.isEmpty {
                s.timerArmed = true
                effects.armTimer = true
            }
            s.idleTicks = 0
            effects.logs.append((s.lastError == nil ? .debug : .info, "connected to \(endpoint)"))
            if let error = flushLocked(&s, session) {
                effects = merge(effects, teardownLocked(&s, error))
            }
        }
        perform(effects)
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
        var effects = Effects()
        state.withLock { s in
            guard case .connecting = s.phase else { return }
            s.lastError = error
            while let command = s.pending.popFirst() {
                if let c = command.slot.continuation { effects.failures.append((c, error)) }
            }
            effects.readyWaiters = s.readyWaiters
            effects.readyError = error
            s.readyWaiters = []
            if s.closing {
                s.phase = .closed
                available.store(false, ordering: .relaxed)
                effects.closeWaiters = s.closeWaiters
                s.closeWaiters = []
                return
            }
            enterBackoff(&s, &effects, error)
        }
        perform(effects)
    }

    private func enterBackoff(_ s: inout State, _ effects: inout Effects, _ error: RESPError) {
        s.failedAttempts += 1
        let delay = Backoff.delay(
            afterFailures: s.failedAttempts,
            minimum: configuration.reconnectBackoffMinimum,
            maximum: configuration.reconnectBackoffMaximum,
            random: Double.random(in: 0...1))
        let until = ContinuousClock.now + delay
        s.phase = .backoff(until: until)
        available.store(false, ordering: .relaxed)
        effects.reconnectAt = until
        let level: Logger.Level = s.failedAttempts == 1 || error.kind == .authentication ? .warning : .debug
        effects.logs.append((level, "\(error.message); retrying in \(Backoff.nanoseconds(delay) / 1_000_000) ms (attempt \(s.failedAttempts))"))
    }

    private func backoffExpired() {
        let start: Bool = state.withLock { s in
            guard case .backoff = s.phase else { return false }
            s.phase = .connecting
            available.store(true, ordering: .relaxed)
            return true
        }
        if start { perform(Effects(startConnect: true)) }
    }

    /// AUTH, SELECT, and for a subscriber its SUBSCRIBE and PSUBSCRIBE.
    private func makeHandshake() throws(RESPError) -> (bytes: [UInt8], slots: [Slot]) {
        var bytes: [UInt8] = []
        var slots: [Slot] = []
        func add(_ arguments: [RedisArgument], _ kind: Slot.Kind, replies: Int = 1) throws(RESPError) {
            let encoded = try RESPEncoder.encode(arguments)
            bytes.append(contentsOf: encoded.bytes.assumingMemoryBound(to: UInt8.self))
            encoded.free()
            slots.append(Slot(id: 0, kind: kind, remaining: replies, deadline: .now))
        }
        if let password = configuration.password {
            if let user = configuration.username {
                try add([.literal("AUTH"), .string(user), .string(password)], .auth)
            } else {
                try add([.literal("AUTH"), .string(password)], .auth)
            }
        } else {
            // No password: a PING checks that the server does not require one (NOAUTH
            // then fails the connect as an authentication error, not each command).
            try add([.literal("PING")], .auth)
        }
        switch role {
        case .commands:
            if configuration.database != 0 {
                try add([.literal("SELECT"), .integer(Int64(configuration.database))], .select)
            }
        case .subscriber(let channels, let patterns, _):
            if !channels.isEmpty {
                try add([.literal("SUBSCRIBE")] + channels.map { .string($0) }, .subscribe, replies: channels.count)
            }
            if !patterns.isEmpty {
                try add([.literal("PSUBSCRIBE")] + patterns.map { .string($0) }, .subscribe, replies: patterns.count)
            }
        }
        if !slots.isEmpty { slots[slots.count - 1].completesHandshake = true }
        return (bytes, slots)
    }

    // MARK: - Breaking and closing (under the lock)

    /// Fails everything in flight with `error`, drops the socket, and decides what is
    /// next: reconnect now (the connection had worked), back off (it never got
    /// through its handshake), or stay closed (it was closing).
    private func teardownLocked(_ s: inout State, _ error: RESPError) -> Effects {
        var effects = Effects()
        guard case .connected(let session) = s.phase else { return effects }
        for slot in s.fifo {
            if let c = slot.continuation { effects.failures.append((c, error)) }
        }
        s.fifo.removeAll()
        s.output = []
        s.outputStart = 0
        s.writableArmed = false
        effects.closeSession = session
        let wasHealthy = s.handshakeComplete
        s.handshakeComplete = false
        s.lastError = error
        if !s.readyWaiters.isEmpty {
            effects.readyWaiters = s.readyWaiters
            effects.readyError = error
            s.readyWaiters = []
        }
        if s.closing {
            s.phase = .closed
            available.store(false, ordering: .relaxed)
            effects.closeWaiters = s.closeWaiters
            s.closeWaiters = []
            return effects
        }
        if wasHealthy {
            s.phase = .connecting
            effects.startConnect = true
            effects.logs.append((.warning, "connection to \(endpoint) lost (\(error.message)); \(effects.failures.count) command(s) failed; reconnecting"))
        } else {
            enterBackoff(&s, &effects, error)
        }
        return effects
    }

    private func finishCloseLocked(_ s: inout State) -> Effects {
        var effects = Effects()
        guard case .connected(let session) = s.phase else { return effects }
        for slot in s.fifo {
            if let c = slot.continuation { effects.failures.append((c, RESPError.connection("the connection to \(endpoint) was closed"))) }
        }
        s.fifo.removeAll()
        s.output = []
        s.outputStart = 0
        s.phase = .closed
        available.store(false, ordering: .relaxed)
        effects.closeSession = session
        effects.closeWaiters = s.closeWaiters
        s.closeWaiters = []
        return effects
    }

    /// Closes the connection: commands not yet sent fail; commands already sent get
    /// their replies (or fail at their timeout); then the socket is closed. No
    /// reconnect follows. Returns once the socket is closed.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            var effects = Effects()
            var done = false
            state.withLock { s in
                s.closing = true
                available.store(false, ordering: .relaxed)
                switch s.phase {
                case .connected:
                    s.closeWaiters.append(continuation)
                    if s.fifo.isEmpty { effects = finishCloseLocked(&s) }
                case .connecting, .idle, .backoff, .closed:
                    let error = RESPError.connection("the connection to \(endpoint) was closed")
                    while let command = s.pending.popFirst() {
                        if let c = command.slot.continuation { effects.failures.append((c, error)) }
                    }
                    effects.readyWaiters = s.readyWaiters
                    effects.readyError = error
                    s.readyWaiters = []
                    s.phase = .closed
                    done = true
                }
            }
            perform(effects)
            if done { continuation.resume() }
        }
    }

    /// Closes at once, failing whatever is in flight (for `deinit` paths).
    func closeNow() {
        var effects = Effects()
        state.withLock { s in
            s.closing = true
            available.store(false, ordering: .relaxed)
            if case .connected = s.phase {
                effects = teardownLocked(&s, .connection("the connection to \(endpoint) was closed"))
            } else {
                let error = RESPError.connection("the connection to \(endpoint) was closed")
                while let command = s.pending.popFirst() {
                    if let c = command.slot.continuation { effects.failures.append((c, error)) }
                }
                effects.readyWaiters = s.readyWaiters
                effects.readyError = error
                s.readyWaiters = []
                s.phase = .closed
            }
        }
        perform(effects)
    }

    // MARK: - Timer

    private func scheduleTick() {
        loop.schedule(after: tickInterval) { [self] in tick() }
    }

    /// Runs every few milliseconds while commands are in flight (always, for a
    /// subscriber): one timer per connection rather than one per command. Replies come
    /// in order, so if the oldest command is past its deadline the connection is stuck:
    /// everything on it fails with a timeout and it is reopened.
    private func tick() {
        var effects: Effects?
        var rearm = true
        let now = ContinuousClock.now
        state.withLock { s in
            switch s.phase {
            case .closed:
                s.timerArmed = false
                rearm = false
                return
            case .connected(let session):
                if let head = s.fifo.first, head.deadline > now, head.kind.isHandshake {
                    // Commands sent behind a handshake still in progress wait for it at
                    // most their own timeout: their callers fail, their replies will
                    // be discarded.
                    var e = Effects()
                    let error = RESPError.timeout("no reply from \(endpoint) within \(commandTimeout) (the connection is still being opened)")
                    var i = 0
                    while i + 1 < s.fifo.count {
                        i += 1
                        if s.fifo[i].kind.isHandshake { continue }
                        guard let c = s.fifo[i].continuation else { continue }
                        if s.fifo[i].deadline > now { break }
                        e.failures.append((c, error))
                        s.fifo[i].continuation = nil
                        // Its reply must still come by the end of the handshake.
                        s.fifo[i].deadline = head.deadline
                    }
                    if !e.failures.isEmpty { effects = e }
                } else if let head = s.fifo.first, head.deadline <= now {
                    let error: RESPError
                    switch head.kind {
                    case .auth, .select, .subscribe:
                        error = .timeout("connecting to \(endpoint) timed out: no reply to the handshake")
                    default:
                        error = .timeout("no reply from \(endpoint) within \(commandTimeout); \(s.fifo.count) command(s) on the connection failed and it is being reopened")
                    }
                    effects = teardownLocked(&s, error)
                } else if case .subscriber = role, s.fifo.isEmpty, s.handshakeComplete, now - s.lastPing >= pingInterval {
                    // Keepalive: a subscriber otherwise never notices a silent peer.
                    s.lastPing = now
                    s.fifo.append(Slot(id: 0, kind: .ping, remaining: 1, deadline: now + commandTimeout))
                    s.output.append(contentsOf: Self.ping)
                    if let error = flushLocked(&s, session) { effects = teardownLocked(&s, error) }
                }
            case .connecting:
                if s.pending.contains(where: { $0.slot.deadline <= now }) {
                    var kept = Deque<PendingCommand>()
                    var e = Effects()
                    let error = RESPError.timeout("no connection to \(endpoint) within \(commandTimeout) (still connecting)")
                    while let command = s.pending.popFirst() {
                        if command.slot.deadline <= now {
                            if let c = command.slot.continuation { e.failures.append((c, error)) }
                        } else {
                            kept.append(command)
                        }
                    }
                    s.pending = kept
                    effects = e
                }
            case .idle, .backoff:
                break
            }
            if s.fifo.isEmpty && s.pending.isEmpty {
                s.idleTicks += 1
            } else {
                s.idleTicks = 0
            }
            if case .commands = role, s.idleTicks >= idleTickLimit {
                s.timerArmed = false
                rearm = false
            }
        }
        if let effects { perform(effects) }
        if rearm { scheduleTick() }
    }

    private static let ping: [UInt8] = Array("*1\r\n$4\r\nPING\r\n".utf8)

    // MARK: - Effects

    private func merge(_ a: Effects?, _ b: Effects) -> Effects {
        guard var a else { return b }
        a.failures += b.failures
        a.readyWaiters += b.readyWaiters
        a.readyError = a.readyError ?? b.readyError
        a.closeWaiters += b.closeWaiters
        a.closeSession = a.closeSession ?? b.closeSession
        a.startConnect = a.startConnect || b.startConnect
        a.reconnectAt = a.reconnectAt ?? b.reconnectAt
        a.armTimer = a.armTimer || b.armTimer
        a.logs += b.logs
        return a
    }

    private func perform(_ effects: Effects) {
        for (level, message) in effects.logs {
            logger.log(level: level, "\(message)", metadata: ["redis.endpoint": "\(endpoint)"])
        }
        if let session = effects.closeSession {
            let waiters = effects.closeWaiters
            if let registration = session.registration {
                registration.deregister {
                    session.stream.close()
                    for waiter in waiters { waiter.resume() }
                }
            } else {
                session.stream.close()
                for waiter in waiters { waiter.resume() }
            }
        } else {
            for waiter in effects.closeWaiters { waiter.resume() }
        }
        for (continuation, error) in effects.failures { continuation.resume(throwing: error) }
        for waiter in effects.readyWaiters {
            if let error = effects.readyError {
                waiter.resume(throwing: error)
            } else {
                waiter.resume()
            }
        }
        if effects.startConnect {
            // On the loop's thread: opening a connection must not wait behind a busy
            // cooperative pool (name resolution still runs off the loop).
            Task(executorPreference: loop) { await self.connectAttempt() }
        }
        if let at = effects.reconnectAt {
            loop.schedule(at: at) { [self] in backoffExpired() }
        }
        if effects.armTimer { scheduleTick() }
    }
}

/// One socket's lifetime within a ``RESPConnection``: the stream, its reply parser and
/// read buffer (used only on the loop thread), registered with the loop.
final class Session: IOHandler, @unchecked Sendable {
    let stream: any RedisByteStream
    let connection: RESPConnection
    let parser: RESPParser
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Set once, before the session is published to the connection's state.
    var registration: IORegistration?
    /// Scratch arrays reused by the loop thread between readiness events.
    var replies: [RESPReply] = []
    var completions: [(UnsafeContinuation<RESPReply, any Error>, RESPReply)] = []

    init(stream: any RedisByteStream, connection: RESPConnection) throws(RESPError) {
        self.stream = stream
        self.connection = connection
        self.parser = try RESPParser()
        self.readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        readBuffer.deallocate()
    }

    func ioReady(_ events: IOEvents) {
        connection.sessionReady(self, events)
    }
}
