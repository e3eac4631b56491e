import DequeModule

/// The logic of one Redis connection, with no sockets, threads or clock: every event
/// comes in with the current time, and what the connection must do next goes out as a
/// return value. ``RESPConnection`` drives it under its lock and does the I/O; the unit
/// tests drive it with a fake byte stream and a manual clock.
///
/// What it decides:
/// - phases: idle (never used), connecting (the shell opens a socket: name
///   resolution, TCP, TLS, credentials), open (handshake in flight or done), draining
///   (no new command goes to this socket; it is reopened once its replies are in),
///   backoff (the last attempt failed; commands fail fast until the next one), closed;
/// - the bytes to write (``output``) and, in the same order, the requests waiting for
///   their replies (``inFlight``): a reply always belongs to the oldest request;
/// - the handshake: `AUTH` (when there are credentials; otherwise a `PING` that makes a
///   server requiring a password say so at connect), `SELECT` for a database other
///   than 0, and for a subscriber its setup (`CLIENT SETNAME`; `CLIENT ID`, then
///   `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX ...` for client tracking) and
///   `SUBSCRIBE`/`PSUBSCRIBE`, written before any command issued while connecting;
/// - deadlines: a request without its reply by its deadline means the connection is
///   stuck (replies come in order): everything on it fails with a timeout and it is
///   reopened. A request waiting for a connection fails at its deadline alone;
/// - reconnects: at once after a connection that had worked broke, else after an
///   exponential backoff with jitter; a `READONLY` reply (a primary demoted by a
///   failover) drains the socket and reopens it, which resolves the host name again;
/// - re-authentication on a schedule, with fresh credentials;
/// - keep-alive `PING`s for a subscriber, which otherwise never notices a silent peer;
///   each answer is reported with the instant its `PING` was sent (a heartbeat: every
///   message the server sent before it read that `PING` was reported before);
/// - what a subscriber's pushes are: messages, and client tracking's invalidations (a
///   list of keys, or null for "every key": the server was flushed).
///
/// A ``RequestWaiter`` is whom the shell hands a request's reply (a suspended task, or
/// a caller polling the socket); the machine only stores and returns it. The machine
/// never reads a clock: every event carries its instant, which the tests move by hand.
///
/// Concrete types, not generic parameters: every command goes through here, and generic
/// code paid for copies of requests through value witnesses.
struct ConnectionStateMachine: Sendable {
    typealias Instant = ContinuousClock.Instant
    typealias Waiter = RequestWaiter

    struct Configuration: Sendable {
        /// For messages: `host:port` or the socket path.
        var endpoint: String
        var commandTimeout: Duration
        var connectTimeout: Duration
        var reconnectBackoffMinimum: Duration
        var reconnectBackoffMaximum: Duration
        var database: Int
        var role: Role
        /// How often an open connection authenticates again with fresh credentials;
        /// `nil` for never.
        var reauthenticationInterval: Duration?
        /// How often a subscriber pings an idle server.
        var keepAliveInterval: Duration = .seconds(5)
        /// How long a subscriber's `PING` may go unanswered before the connection counts
        /// as stuck (`nil`: the command timeout).
        var keepAliveTimeout: Duration? = nil
    }

    enum Role: Sendable, Equatable {
        case commands
        case subscriber(SubscriberSetup)

        /// A subscriber with no setup but its subscriptions.
        static func subscriber(channels: [String], patterns: [String]) -> Role {
            .subscriber(SubscriberSetup(channels: channels, patterns: patterns))
        }

        var subscriberSetup: SubscriberSetup? {
            if case .subscriber(let setup) = self { return setup }
            return nil
        }
    }

    /// What a subscriber connection sets up at every connect, before it subscribes.
    struct SubscriberSetup: Sendable, Equatable {
        var channels: [String]
        var patterns: [String]
        /// `CLIENT SETNAME`, so that operators (and tests) can find the connection.
        var clientName: String? = nil
        /// Client tracking in broadcasting mode for keys with these prefixes, redirected
        /// to this very connection, which subscribes to ``trackingChannel``; `nil`: none.
        var trackingPrefixes: [String]? = nil

        /// Where the server sends tracking invalidations to a RESP2 connection.
        static let trackingChannel = "__redis__:invalidate"

        /// Everything `SUBSCRIBE` names: the tracking channel first, if any.
        var subscribedChannels: [String] {
            trackingPrefixes == nil ? channels : [SubscriberSetup.trackingChannel] + channels.filter { $0 != SubscriberSetup.trackingChannel }
        }
    }

    /// What a request in flight is.
    enum Kind: Equatable {
        /// A caller's command: one reply.
        case command
        /// A caller's pipeline: `remaining` replies, gathered into one array.
        case pipeline
        /// Handshake steps: `AUTH` (or the `PING` that checks none is needed), `SELECT`,
        /// a subscriber's setup (`CLIENT SETNAME`, `CLIENT TRACKING`), its `CLIENT ID`
        /// (whose reply names the tracking redirect), `SUBSCRIBE` (one reply per channel).
        case auth, select, setup, clientID, subscribe
        /// `AUTH` with fresh credentials on an open connection.
        case reauth
        /// A subscriber's keep-alive.
        case ping

        var isHandshake: Bool {
            self == .auth || self == .select || self == .setup || self == .clientID || self == .subscribe
        }
        var isCallers: Bool { self == .command || self == .pipeline }
    }

    struct Request {
        var id: UInt64
        /// `nil` once the caller gave up (cancelled, or timed out while waiting for the
        /// handshake): the reply is then read and dropped.
        var waiter: Waiter?
        var kind: Kind
        var remaining: Int
        var deadline: Instant
    }

    /// A request waiting for a connection, with its own encoded bytes (so that a
    /// cancelled one can be dropped unsent).
    struct Queued {
        var request: Request
        var bytes: [UInt8]
    }

    enum Phase: Equatable {
        case idle
        case connecting
        case open
        case draining
        case backoff(until: Instant)
        case closed
    }

    /// ``Phase`` without its payload: compared on every request, so it must be cheap.
    enum PhaseKind: Equatable {
        case idle, connecting, open, draining, backoff, closed
    }

    let configuration: Configuration
    private let isSubscriber: Bool
    private let commandTimeout: Duration
    private(set) var phase: Phase = .idle {
        didSet {
            switch phase {
            case .idle: phaseKind = .idle
            case .connecting: phaseKind = .connecting
            case .open: phaseKind = .open
            case .draining: phaseKind = .draining
            case .backoff: phaseKind = .backoff
            case .closed: phaseKind = .closed
            }
        }
    }
    private(set) var phaseKind: PhaseKind = .idle
    /// Requests on the current socket, in the order of their bytes.
    private(set) var inFlight = RequestQueue()
    /// Bytes for the current socket not yet handed to the writer.
    private(set) var output: [UInt8] = []
    /// The replies gathered so far by the oldest request, a pipeline. Appended to in
    /// place (a copy per reply once made a long pipeline quadratic and held the event
    /// loop for seconds), and requests stay plain values.
    private var gathered: [RESPReply] = []
    /// Requests waiting for the next socket.
    private(set) var queued = Deque<Queued>()
    /// A writer is responsible for ``output``: the shell was told to write it (or to
    /// wait for writability), and has not reported it written yet.
    private(set) var writeScheduled = false
    /// The socket takes no more bytes now; the shell waits for writability.
    private(set) var writeBlocked = false
    private(set) var handshakeDone = false
    /// ``close()`` was called: no new request is accepted; the socket closes once its
    /// replies are in.
    private(set) var closeRequested = false
    private(set) var failedAttempts = 0
    private(set) var lastError: RESPError?
    private(set) var authenticatedAt: Instant?
    private(set) var reauthInFlight = false
    private var lastPing: Instant?
    /// When the subscriber's `PING` in flight was sent (one at a time).
    private var pingSentAt: Instant?
    private var spare: [UInt8] = []
    /// Requests waiting only for the handshake to complete (a subscriber's
    /// ``RESPConnection/waitUntilReady()``).
    private(set) var readyWaiters: [Waiter] = []

    init(configuration: Configuration) {
        self.configuration = configuration
        if case .subscriber = configuration.role { isSubscriber = true } else { isSubscriber = false }
        commandTimeout = configuration.commandTimeout
        output.reserveCapacity(4096)
        spare.reserveCapacity(4096)
    }

    /// Whether commands routed here now fail at once (a hint for the client's choice of
    /// connection).
    var isAvailable: Bool {
        switch phase {
        case .backoff, .closed: return false
        default: return !closeRequested
        }
    }

    // MARK: - Requests

    enum SubmitAction {
        /// The request was written to ``output``, which had no writer: write it now. When
        /// `alone`, it is the only request in flight, so its caller may poll the socket
        /// for the reply.
        case write(alone: Bool)
        /// The request was appended to ``output`` while replies are awaited: a write
        /// should happen soon (after the replies, or from the event loop), so that the
        /// requests of many callers go out together.
        case flushSoon
        /// Nothing to do: a writer already holds the output, or the request waits for a
        /// connection that is being opened.
        case none
        /// The request waits for a connection: open one.
        case connect
        /// Refused at once.
        case fail(RESPError)
    }

    /// A caller's command (`replies` 1) or pipeline (`replies` > 1, `pipeline` true):
    /// `encode` appends its bytes.
    mutating func submit(
        id: UInt64, waiter: Waiter, replies: Int, pipeline: Bool, now: Instant,
        encode: (inout RESPCommandEncoder) -> Void
    ) -> SubmitAction {
        if closeRequested { return .fail(.connection("the connection to \(configuration.endpoint) is closed")) }
        let request = Request(
            id: id, waiter: waiter, kind: pipeline ? .pipeline : .command, remaining: replies,
            deadline: now.advanced(by: commandTimeout))
        switch phaseKind {
        case .open:
            let before = output.count
            var encoder = RESPCommandEncoder(reusing: output)
            output = []
            encode(&encoder)
            output = encoder.bytes
            guard output.count > before else { return .fail(.emptyCommand) }
            let awaiting = !inFlight.isEmpty
            inFlight.append(request)
            if writeScheduled { return .none }
            writeScheduled = true
            return awaiting ? .flushSoon : .write(alone: handshakeDone)
        case .idle, .connecting, .draining:
            var encoder = RESPCommandEncoder()
            encode(&encoder)
            guard !encoder.bytes.isEmpty else { return .fail(.emptyCommand) }
            queued.append(Queued(request: request, bytes: encoder.bytes))
            if phaseKind == .idle {
                phase = .connecting
                return .connect
            }
            return .none
        case .backoff:
            guard case .backoff(let until) = phase else { return .none }
            return .fail(unavailableError(until: until, now: now))
        case .closed:
            return .fail(.connection("the connection to \(configuration.endpoint) is closed"))
        }
    }

    /// The caller of request `id` gives up (cancellation): its waiter, if the request
    /// is still waiting. A request already written keeps its place and its reply is
    /// dropped; one still waiting for a connection is dropped unsent.
    mutating func cancel(id: UInt64) -> Waiter? {
        if let i = inFlight.firstIndex(where: { $0.id == id }) {
            let waiter = inFlight[i].waiter
            inFlight[i].waiter = nil
            return waiter
        }
        if let i = queued.firstIndex(where: { $0.request.id == id }) {
            return queued.remove(at: i).request.waiter
        }
        return nil
    }

    /// Replaces the waiter of request `id` (a polling caller that starts to wait);
    /// false if the request is no longer waiting.
    mutating func replaceWaiter(id: UInt64, with waiter: Waiter) -> Bool {
        if let i = inFlight.firstIndex(where: { $0.id == id }) {
            guard inFlight[i].waiter != nil else { return false }
            inFlight[i].waiter = waiter
            return true
        }
        if let i = queued.firstIndex(where: { $0.request.id == id }) {
            queued[i].request.waiter = waiter
            return true
        }
        return false
    }

    /// A caller that waits until the connection is open and its handshake done.
    enum ReadyAction {
        case ready
        case wait
        case connect
        case fail(RESPError)
    }

    /// Opens a connection if none was opened yet; true if the shell should connect.
    mutating func start() -> Bool {
        guard phaseKind == .idle, !closeRequested else { return false }
        phase = .connecting
        return true
    }

    mutating func waitUntilReady(_ waiter: Waiter, now: Instant) -> ReadyAction {
        if closeRequested { return .fail(.connection("the connection to \(configuration.endpoint) is closed")) }
        switch phase {
        case .open where handshakeDone:
            return .ready
        case .open, .connecting, .draining:
            readyWaiters.append(waiter)
            return .wait
        case .idle:
            readyWaiters.append(waiter)
            phase = .connecting
            return .connect
        case .backoff(let until):
            return .fail(unavailableError(until: until, now: now))
        case .closed:
            return .fail(.connection("the connection to \(configuration.endpoint) is closed"))
        }
    }

    // MARK: - Writing

    /// Hands the pending output to the writer (swapped out, not copied); `nil` when
    /// there is nothing to write or the socket is full.
    mutating func takeOutput() -> [UInt8]? {
        guard !output.isEmpty, !writeBlocked, phaseKind == .open || phaseKind == .draining else { return nil }
        writeScheduled = true
        var taken = spare
        swap(&taken, &output)
        spare = []
        return taken
    }

    enum WrittenAction: Equatable {
        /// Everything was written and nothing new came meanwhile.
        case done
        /// More output accumulated meanwhile: write again.
        case writeMore
        /// The socket is full: wait until it is writable, then write again.
        case waitForWritable
    }

    /// The writer wrote `written` bytes of `buffer` (from ``takeOutput()``).
    mutating func outputWritten(_ buffer: [UInt8], count written: Int) -> WrittenAction {
        var buffer = buffer
        if written < buffer.count {
            // The rest goes back in front of whatever accumulated meanwhile.
            buffer.removeSubrange(0..<written)
            buffer.append(contentsOf: output)
            output = buffer
            writeBlocked = true
            writeScheduled = true
            return .waitForWritable
        }
        if buffer.capacity <= 1 << 20 {
            buffer.removeAll(keepingCapacity: true)
            spare = buffer
        }
        if output.isEmpty {
            writeScheduled = false
            return .done
        }
        return .writeMore
    }

    /// The socket became writable again.
    mutating func writable() {
        writeBlocked = false
    }

    /// A flush requested by ``SubmitAction/flushSoon`` found nothing to write (a
    /// writer took it meanwhile) or is about to write: keeps the bookkeeping straight
    /// when the output is empty.
    mutating func flushFoundNothing() {
        if output.isEmpty && !writeBlocked { writeScheduled = false }
    }

    // MARK: - Replies

    enum ReplyAction {
        /// Nothing for the shell (a handshake step, a reply nobody waits for any more,
        /// one reply of a pipeline still gathering).
        case none
        /// A caller's reply (a pipeline's replies as one array).
        case complete(Waiter, RESPReply)
        /// A message on a subscriber connection.
        case push(RESPPubSubMessage)
        /// Another event of a subscriber: a tracking invalidation, a keep-alive's answer.
        case event(RESPSubscriberEvent)
        /// The handshake is done: resume these waiters (of ``waitUntilReady(_:now:)``).
        case ready([Waiter])
        /// The caller's reply, and the server refuses writes as a replica (`READONLY`):
        /// the connection now drains and is reopened.
        case completeAndDrain(Waiter?, RESPReply)
        /// The connection is unusable (a handshake step failed, a reply nobody asked
        /// for): tear it down with this error.
        case fail(RESPError)
        /// Re-authentication failed: the connection drains and is reopened (which asks
        /// the credentials again).
        case reauthFailed(RESPError)
    }

    /// One parsed reply from the socket.
    mutating func receive(_ reply: RESPReply, now: Instant) -> ReplyAction {
        if isSubscriber {
            if let message = RESPPubSubMessage(push: reply) { return .push(message) }
            if let invalidation = Self.invalidation(reply) { return .event(invalidation) }
        }
        guard !inFlight.isEmpty else {
            return .fail(.protocolError("unexpected reply from \(configuration.endpoint) with no command waiting: \(reply)"))
        }
        switch inFlight[0].kind {
        case .command:
            let request = inFlight.removeFirst()
            if case .error(let message) = reply, message.hasPrefix("READONLY"), phaseKind == .open, !closeRequested {
                phase = .draining
                return .completeAndDrain(request.waiter, reply)
            }
            guard let waiter = request.waiter else { return .none }
            return .complete(waiter, reply)
        case .pipeline:
            // Only the oldest request gathers replies: one array, appended to in place.
            if gathered.isEmpty { gathered.reserveCapacity(inFlight[0].remaining) }
            gathered.append(reply)
            inFlight[0].remaining -= 1
            guard inFlight[0].remaining <= 0 else { return .none }
            let request = inFlight.removeFirst()
            let replies = gathered
            gathered = []
            if phaseKind == .open, !closeRequested, replies.contains(where: { $0.errorMessage?.hasPrefix("READONLY") == true }) {
                phase = .draining
                return .completeAndDrain(request.waiter, .array(replies))
            }
            guard let waiter = request.waiter else { return .none }
            return .complete(waiter, .array(replies))
        case .auth:
            if case .error(let message) = reply {
                return .fail(.authentication(authenticationFailure(message, atConnect: true)))
            }
            authenticatedAt = now
            return handshakeStepDone()
        case .select:
            if case .error(let message) = reply {
                return .fail(.configuration("SELECT \(configuration.database) on \(configuration.endpoint) failed: \(message)"))
            }
            return handshakeStepDone()
        case .subscribe:
            if case .error(let message) = reply { return .fail(.server(message)) }
            inFlight[0].remaining -= 1
            guard inFlight[0].remaining <= 0 else { return .none }
            return handshakeStepDone()
        case .setup:
            if case .error(let message) = reply {
                return .fail(.server("subscriber setup on \(configuration.endpoint) failed: \(message)"))
            }
            return handshakeStepDone()
        case .clientID:
            guard case .integer(let id) = reply else {
                return .fail(.protocolError("CLIENT ID on \(configuration.endpoint) answered \(reply), not an integer"))
            }
            // The tracking redirect names this very connection; then it subscribes.
            if case .subscriber(let setup) = configuration.role {
                var encoder = RESPCommandEncoder(reusing: output)
                output = []
                appendTrackingAndSubscriptions(setup, clientID: id, deadline: inFlight[0].deadline, into: &encoder)
                output = encoder.bytes
            }
            return handshakeStepDone()
        case .reauth:
            inFlight.removeFirst()
            reauthInFlight = false
            if case .error(let message) = reply {
                let error = RESPError.authentication(authenticationFailure(message, atConnect: false))
                if phaseKind == .open && !closeRequested { phase = .draining }
                return .reauthFailed(error)
            }
            authenticatedAt = now
            return .none
        case .ping:
            inFlight.removeFirst()
            guard let sentAt = pingSentAt else { return .none }
            pingSentAt = nil
            return .event(.pong(sentAt: sentAt))
        }
    }

    /// A client tracking invalidation (`message` on `__redis__:invalidate` with a list
    /// of keys, or null for every key), or nil.
    private static func invalidation(_ reply: RESPReply) -> RESPSubscriberEvent? {
        guard case .array(let parts) = reply, parts.count == 3, case .bulkString(let kind) = parts[0],
            kind.elementsEqual("message".utf8), case .bulkString(let channel) = parts[1],
            channel.elementsEqual(SubscriberSetup.trackingChannel.utf8)
        else { return nil }
        switch parts[2] {
        case .null:
            return .invalidatedAll
        case .array(let keys):
            var names: [String] = []
            names.reserveCapacity(keys.count)
            for case .bulkString(let key) in keys { names.append(String(decoding: key, as: UTF8.self)) }
            return .invalidated(names)
        default:
            return nil
        }
    }

    private mutating func handshakeStepDone() -> ReplyAction {
        let step = inFlight.removeFirst()
        guard inFlight.first.map({ !$0.kind.isHandshake }) ?? true else { return .none }
        _ = step
        handshakeDone = true
        // A subscriber pings at the next tick: its first answer proves the new
        // subscription delivers.
        if isSubscriber { lastPing = nil }
        failedAttempts = 0
        lastError = nil
        let waiters = readyWaiters
        readyWaiters = []
        return .ready(waiters)
    }

    private func authenticationFailure(_ message: String, atConnect: Bool) -> String {
        let what = atConnect ? "authentication to" : "re-authentication to"
        if message.hasPrefix("NOAUTH") {
            return "\(what) \(configuration.endpoint) failed: the server requires a password and none is configured (\(message))"
        }
        return "\(what) \(configuration.endpoint) failed: \(message)"
    }

    /// Whether a draining (or closing) socket has all its replies: the shell then
    /// closes it (``socketClosed(now:)`` follows).
    var socketIsDrained: Bool {
        (phaseKind == .draining || closeRequested) && inFlight.isEmpty && phaseKind != .closed
    }

    // MARK: - Connecting

    /// The credentials the handshake authenticates with; `nil` sends a `PING` instead,
    /// so that a server requiring a password fails the connect rather than each
    /// command.
    struct Credentials: Sendable, Equatable {
        var username: String?
        var password: String
    }

    enum ConnectedAction: Equatable {
        /// The handshake is in ``output``: write it.
        case write
        /// The connection was closed meanwhile: close the new socket.
        case close
    }

    /// The shell opened a socket (and its TLS session), with `credentials` for the
    /// handshake; the handshake and the requests queued meanwhile go to ``output``.
    mutating func connected(credentials: Credentials?, now: Instant) -> ConnectedAction {
        guard phaseKind == .connecting, !closeRequested else { return .close }
        phase = .open
        handshakeDone = false
        writeBlocked = false
        let handshakeDeadline = now.advanced(by: configuration.connectTimeout)
        var encoder = RESPCommandEncoder(reusing: output)
        output = []
        if let credentials {
            if let user = credentials.username {
                encoder.command("AUTH", argumentCount: 2)
                encoder.argument(user)
            } else {
                encoder.command("AUTH", argumentCount: 1)
            }
            encoder.argument(credentials.password)
        } else {
            encoder.command("PING", argumentCount: 0)
        }
        inFlight.append(Request(id: 0, waiter: nil, kind: .auth, remaining: 1, deadline: handshakeDeadline))
        switch configuration.role {
        case .commands:
            if configuration.database != 0 {
                encoder.command("SELECT", argumentCount: 1)
                encoder.argument(configuration.database)
                inFlight.append(Request(id: 0, waiter: nil, kind: .select, remaining: 1, deadline: handshakeDeadline))
            }
        case .subscriber(let setup):
            if let name = setup.clientName {
                encoder.command("CLIENT", argumentCount: 2)
                encoder.argument("SETNAME" as StaticString)
                encoder.argument(name)
                inFlight.append(Request(id: 0, waiter: nil, kind: .setup, remaining: 1, deadline: handshakeDeadline))
            }
            if setup.trackingPrefixes != nil {
                // Tracking redirects to this connection's id: its reply comes first.
                encoder.command("CLIENT", argumentCount: 1)
                encoder.argument("ID" as StaticString)
                inFlight.append(Request(id: 0, waiter: nil, kind: .clientID, remaining: 1, deadline: handshakeDeadline))
            } else {
                appendTrackingAndSubscriptions(setup, clientID: nil, deadline: handshakeDeadline, into: &encoder)
            }
        }
        output = encoder.bytes
        while let next = queued.popFirst() {
            output.append(contentsOf: next.bytes)
            inFlight.append(next.request)
        }
        writeScheduled = true
        lastPing = now
        return .write
    }

    /// A subscriber's `CLIENT TRACKING` (when it has an id to redirect to) and its
    /// subscriptions: in this order, since a RESP2 connection in subscribed mode takes
    /// no other command, and the server sends tracking invalidations to a RESP2
    /// connection only once it is subscribed.
    private mutating func appendTrackingAndSubscriptions(
        _ setup: SubscriberSetup, clientID: Int64?, deadline: Instant, into encoder: inout RESPCommandEncoder
    ) {
        if let clientID, let prefixes = setup.trackingPrefixes {
            encoder.command("CLIENT", argumentCount: 5 + 2 * prefixes.count)
            encoder.argument("TRACKING" as StaticString)
            encoder.argument("ON" as StaticString)
            encoder.argument("REDIRECT" as StaticString)
            encoder.argument(clientID)
            encoder.argument("BCAST" as StaticString)
            for prefix in prefixes {
                encoder.argument("PREFIX" as StaticString)
                encoder.argument(prefix)
            }
            inFlight.append(Request(id: 0, waiter: nil, kind: .setup, remaining: 1, deadline: deadline))
        }
        let channels = setup.subscribedChannels
        if !channels.isEmpty {
            encoder.command("SUBSCRIBE", argumentCount: channels.count)
            encoder.arguments(channels)
            inFlight.append(Request(id: 0, waiter: nil, kind: .subscribe, remaining: channels.count, deadline: deadline))
        }
        if !setup.patterns.isEmpty {
            encoder.command("PSUBSCRIBE", argumentCount: setup.patterns.count)
            encoder.arguments(setup.patterns)
            inFlight.append(Request(id: 0, waiter: nil, kind: .subscribe, remaining: setup.patterns.count, deadline: deadline))
        }
    }

    /// What follows a failure or the end of a socket.
    struct Teardown {
        /// Callers to fail, with their errors.
        var failed: [(Waiter, RESPError)] = []
        var next: Next = .nothing

        enum Next: Equatable {
            /// Nothing to do (the event did not concern this connection's state).
            case nothing
            /// Open a new connection now.
            case reconnect
            /// Wait, then open a new connection (``backoffExpired(now:)``).
            case backoff(until: Instant, delay: Duration)
            /// Closed for good.
            case closed
        }
    }

    /// Opening the connection failed (resolution, TCP, TLS, credentials).
    mutating func connectFailed(_ error: RESPError, now: Instant, random: Double) -> Teardown {
        guard phaseKind == .connecting else { return Teardown() }
        var teardown = Teardown()
        lastError = error
        while let next = queued.popFirst() {
            if let waiter = next.request.waiter { teardown.failed.append((waiter, error)) }
        }
        for waiter in readyWaiters { teardown.failed.append((waiter, error)) }
        readyWaiters = []
        if closeRequested {
            phase = .closed
            teardown.next = .closed
            return teardown
        }
        teardown.next = enterBackoff(now: now, random: random)
        return teardown
    }

    /// The socket failed or was closed (EOF, a read or write error, a protocol error, a
    /// timeout, or the end of a drain): everything on it fails with `error`. A
    /// connection that had completed its handshake reconnects at once (requests that
    /// were waiting for the next socket go there); one that never did backs off.
    mutating func socketFailed(_ error: RESPError, now: Instant, random: Double) -> Teardown {
        guard phaseKind == .open || phaseKind == .draining else { return Teardown() }
        var teardown = Teardown()
        for request in inFlight {
            if let waiter = request.waiter { teardown.failed.append((waiter, error)) }
        }
        inFlight.removeAll()
        gathered = []
        output.removeAll(keepingCapacity: true)
        writeScheduled = false
        writeBlocked = false
        reauthInFlight = false
        pingSentAt = nil
        let wasHealthy = handshakeDone
        handshakeDone = false
        authenticatedAt = nil
        if closeRequested {
            for queuedRequest in queued {
                if let waiter = queuedRequest.request.waiter { teardown.failed.append((waiter, error)) }
            }
            queued.removeAll()
            for waiter in readyWaiters { teardown.failed.append((waiter, error)) }
            readyWaiters = []
            phase = .closed
            teardown.next = .closed
            return teardown
        }
        lastError = error
        if wasHealthy {
            phase = .connecting
            teardown.next = .reconnect
        } else {
            for queuedRequest in queued {
                if let waiter = queuedRequest.request.waiter { teardown.failed.append((waiter, error)) }
            }
            queued.removeAll()
            for waiter in readyWaiters { teardown.failed.append((waiter, error)) }
            readyWaiters = []
            teardown.next = enterBackoff(now: now, random: random)
        }
        return teardown
    }

    /// A drained socket was closed on purpose (after `READONLY` or a failed
    /// re-authentication): reopen at once; nothing was in flight.
    mutating func drainedSocketClosed(now: Instant, random: Double) -> Teardown {
        guard phaseKind == .draining || (phaseKind == .open && closeRequested) else { return Teardown() }
        return socketFailed(.connection("the connection to \(configuration.endpoint) was reopened"), now: now, random: random)
    }

    private mutating func enterBackoff(now: Instant, random: Double) -> Teardown.Next {
        failedAttempts += 1
        let delay = Backoff.delay(
            afterFailures: failedAttempts, minimum: configuration.reconnectBackoffMinimum,
            maximum: configuration.reconnectBackoffMaximum, random: random)
        let until = now.advanced(by: delay)
        phase = .backoff(until: until)
        return .backoff(until: until, delay: delay)
    }

    /// The backoff is over: true if the shell should open a connection now.
    mutating func backoffExpired(now: Instant) -> Bool {
        guard case .backoff(let until) = phase, now >= until, !closeRequested else { return false }
        phase = .connecting
        return true
    }

    private func unavailableError(until: Instant, now: Instant) -> RESPError {
        let wait = now < until ? now.duration(to: until) : .zero
        let ms = Backoff.nanoseconds(wait) / 1_000_000
        let reason = lastError?.message ?? "not connected"
        var kind = RESPError.Kind.connection
        if let last = lastError, last.kind == .authentication || last.kind == .tls { kind = last.kind }
        var error = RESPError(kind: kind, message: "no connection to \(configuration.endpoint) (next attempt in \(ms) ms): \(reason)")
        error.tlsFailure = lastError?.tlsFailure
        return error
    }

    // MARK: - Closing

    enum CloseAction: Equatable {
        /// Nothing is in flight: close the socket now.
        case closeSocket
        /// Wait for the replies in flight; the socket closes after them.
        case wait
        /// No socket: closed already.
        case closed
    }

    /// Stops accepting requests. Requests waiting for a connection fail now; requests
    /// in flight get their replies (or time out); then the socket closes.
    mutating func close() -> (CloseAction, failed: [(Waiter, RESPError)]) {
        var failed: [(Waiter, RESPError)] = []
        let error = RESPError.connection("the connection to \(configuration.endpoint) was closed")
        closeRequested = true
        for queuedRequest in queued {
            if let waiter = queuedRequest.request.waiter { failed.append((waiter, error)) }
        }
        queued.removeAll()
        for waiter in readyWaiters { failed.append((waiter, error)) }
        readyWaiters = []
        switch phase {
        case .open, .draining:
            return (inFlight.isEmpty ? .closeSocket : .wait, failed)
        case .idle, .connecting, .backoff, .closed:
            phase = .closed
            return (.closed, failed)
        }
    }

    /// Closes at once: everything fails.
    mutating func closeNow(now: Instant) -> (closeSocket: Bool, failed: [(Waiter, RESPError)]) {
        let (action, failed) = close()
        guard action != .closed else { return (false, failed) }
        let teardown = socketFailed(.connection("the connection to \(configuration.endpoint) was closed"), now: now, random: 0)
        return (true, failed + teardown.failed)
    }

    // MARK: - Time

    struct TickResult {
        var failed: [(Waiter, RESPError)] = []
        /// The connection is stuck: tear it down with this error.
        var teardown: RESPError?
        /// A keep-alive was appended to ``output``: write it.
        var write = false
        /// Whether the timer should keep ticking.
        var keepTicking = true
    }

    /// Checks deadlines (and a subscriber's keep-alive). Run every few milliseconds
    /// while requests are in flight or queued.
    mutating func tick(now: Instant) -> TickResult {
        var result = TickResult()
        switch phase {
        case .open, .draining:
            if let head = inFlight.first, head.deadline <= now {
                if head.kind.isHandshake {
                    result.teardown = .timeout("connecting to \(configuration.endpoint) timed out: no reply to the handshake within \(configuration.connectTimeout)")
                } else if head.kind == .ping {
                    let timeout = configuration.keepAliveTimeout ?? configuration.commandTimeout
                    result.teardown = .timeout("no answer to a keep-alive PING from \(configuration.endpoint) within \(timeout); the subscriber connection is being reopened")
                } else {
                    result.teardown = .timeout("no reply from \(configuration.endpoint) within \(configuration.commandTimeout); \(inFlight.count) command(s) on the connection failed and it is being reopened")
                }
                return result
            }
            if let head = inFlight.first, head.kind.isHandshake {
                // Commands behind a handshake still in progress wait for it at most their
                // own timeout: their callers fail; the replies are dropped when they come.
                let error = RESPError.timeout("no reply from \(configuration.endpoint) within \(configuration.commandTimeout) (the connection is still being opened)")
                for i in inFlight.indices where inFlight[i].kind.isCallers && inFlight[i].deadline <= now {
                    if let waiter = inFlight[i].waiter { result.failed.append((waiter, error)) }
                    inFlight[i].waiter = nil
                    inFlight[i].deadline = head.deadline
                }
            }
            if isSubscriber, handshakeDone, inFlight.isEmpty, phaseKind == .open,
                lastPing.map({ $0.duration(to: now) >= configuration.keepAliveInterval }) ?? true
            {
                lastPing = now
                pingSentAt = now
                var encoder = RESPCommandEncoder(reusing: output)
                output = []
                encoder.command("PING", argumentCount: 0)
                output = encoder.bytes
                let timeout = configuration.keepAliveTimeout ?? configuration.commandTimeout
                inFlight.append(Request(id: 0, waiter: nil, kind: .ping, remaining: 1, deadline: now.advanced(by: timeout)))
                if !writeScheduled {
                    writeScheduled = true
                    result.write = true
                }
            }
        case .idle, .connecting, .backoff, .closed:
            break
        }
        if !queued.isEmpty {
            let error = RESPError.timeout("no connection to \(configuration.endpoint) within \(configuration.commandTimeout) (still connecting)")
            var kept = Deque<Queued>()
            while let next = queued.popFirst() {
                if next.request.deadline <= now {
                    if let waiter = next.request.waiter { result.failed.append((waiter, error)) }
                } else {
                    kept.append(next)
                }
            }
            queued = kept
        }
        if isSubscriber {
            result.keepTicking = phaseKind != .closed
        } else {
            result.keepTicking = !inFlight.isEmpty || !queued.isEmpty
        }
        return result
    }

    /// Whether it is time to authenticate again (the shell then fetches credentials
    /// and calls ``reauthenticate(credentials:now:)``).
    func reauthenticationDue(now: Instant) -> Bool {
        guard let interval = configuration.reauthenticationInterval, !isSubscriber,
            phaseKind == .open, handshakeDone, !reauthInFlight, !closeRequested, let at = authenticatedAt
        else { return false }
        return at.duration(to: now) >= interval
    }

    /// Marks a re-authentication as started (credentials being fetched).
    mutating func reauthenticationStarted() {
        reauthInFlight = true
    }

    /// Sends `AUTH` with fresh credentials on the open connection.
    mutating func reauthenticate(credentials: Credentials, now: Instant) -> SubmitAction {
        guard phaseKind == .open, handshakeDone, !closeRequested else {
            reauthInFlight = false
            return .none
        }
        var encoder = RESPCommandEncoder(reusing: output)
        output = []
        if let user = credentials.username {
            encoder.command("AUTH", argumentCount: 2)
            encoder.argument(user)
        } else {
            encoder.command("AUTH", argumentCount: 1)
        }
        encoder.argument(credentials.password)
        output = encoder.bytes
        let awaiting = !inFlight.isEmpty
        inFlight.append(Request(id: 0, waiter: nil, kind: .reauth, remaining: 1, deadline: now.advanced(by: configuration.commandTimeout)))
        if writeScheduled { return .none }
        writeScheduled = true
        return awaiting ? .flushSoon : .write(alone: false)
    }

    /// Fetching fresh credentials failed: try again at the next interval.
    mutating func reauthenticationAbandoned(now: Instant) {
        reauthInFlight = false
        authenticatedAt = now
    }
}

extension RESPError {
    static let emptyCommand = RESPError.configuration("a command needs at least its name")
}

/// Whom a request's reply goes to.
enum RequestWaiter: Sendable {
    /// A suspended task.
    case continuation(UnsafeContinuation<RESPReply, any Error>)
    /// A caller polling the socket for request `id` (its result goes to the
    /// connection's mailbox). The unit tests use it to name their callers.
    case polling(UInt64)
}

/// The requests in flight, oldest first: an array with a moving head (a request leaves
/// from the front in O(1); the array is compacted now and then). In the module, so that
/// every operation on it is specialized for ``ConnectionStateMachine/Request``.
struct RequestQueue: Sendable, Sequence {
    typealias Request = ConnectionStateMachine.Request
    private var storage: [Request] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Request? { isEmpty ? nil : storage[head] }
    var indices: Range<Int> { 0..<count }

    subscript(i: Int) -> Request {
        get { storage[head + i] }
        _modify { yield &storage[head + i] }
    }

    mutating func append(_ request: Request) {
        storage.append(request)
    }

    @discardableResult
    mutating func removeFirst() -> Request {
        let request = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= 4096)
            head = 0
        } else if head >= 1024 && head * 2 >= storage.count {
            storage.removeSubrange(0..<head)
            head = 0
        }
        return request
    }

    mutating func removeAll() {
        storage.removeAll()
        head = 0
    }

    func firstIndex(where predicate: (Request) -> Bool) -> Int? {
        var i = head
        while i < storage.count {
            if predicate(storage[i]) { return i - head }
            i += 1
        }
        return nil
    }

    func makeIterator() -> ArraySlice<Request>.Iterator {
        storage[head...].makeIterator()
    }
}
