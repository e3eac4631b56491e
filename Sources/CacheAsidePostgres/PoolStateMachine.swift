import DequeModule

/// The connection pool's logic, with no sockets, tasks or clock: every event comes in
/// with the current time, and every effect goes out as an ``Actions`` value for the
/// caller to carry out. ``PGClient`` drives it under a lock; the tests drive it
/// with a fake clock.
///
/// Rules:
/// - at most `maxConnections` connections exist (idle + leased + connecting);
/// - a request is served at once by an idle connection only when nobody waits before
///   it; otherwise it waits, and waiters are served first-in, first-out, by released
///   or newly opened connections;
/// - a waiter that is not served by its deadline fails with a timeout;
/// - a connection released as not reusable (broken, or left inside a transaction) is
///   closed, and replaced if someone waits or the pool is below `minConnections`;
/// - a failed connection attempt is retried after an exponential backoff while
///   someone waits (or the pool is below its minimum); an attempt that failed for a
///   reason retrying cannot fix (authentication) fails the waiters at once;
/// - shutdown fails the waiters, closes idle connections at once and leased ones when
///   they come back, and completes when no connection is left.
struct PoolStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    typealias ConnectionID = Int
    typealias RequestID = Int

    struct Configuration {
        var minConnections: Int
        var maxConnections: Int
        var acquireTimeout: Duration
        var initialBackoff: Duration = .milliseconds(50)
        var maximumBackoff: Duration = .seconds(2)
    }

    enum FailureReason: Equatable {
        /// No connection became free before the deadline.
        case timeout
        /// The pool is shutting down.
        case shutdown
        /// The request was cancelled.
        case cancelled
        /// Opening a connection failed in a way retrying will not fix.
        case connectionFailed
    }

    /// What the caller must do after an event, in this order: close, lease, fail,
    /// start, schedule.
    struct Actions: Equatable {
        var close: [ConnectionID] = []
        var lease: [(request: RequestID, connection: ConnectionID)] = []
        var fail: [(request: RequestID, reason: FailureReason)] = []
        var start: [ConnectionID] = []
        var scheduleTimeout: [(request: RequestID, deadline: Instant)] = []
        var cancelTimeout: [RequestID] = []
        var scheduleRetry: Instant?
        var shutdownComplete = false

        var isEmpty: Bool { self == Actions() }

        static func == (a: Actions, b: Actions) -> Bool {
            a.close == b.close && a.lease.map(\.request) == b.lease.map(\.request)
                && a.lease.map(\.connection) == b.lease.map(\.connection)
                && a.fail.map(\.request) == b.fail.map(\.request) && a.fail.map(\.reason) == b.fail.map(\.reason)
                && a.start == b.start && a.scheduleTimeout.map(\.request) == b.scheduleTimeout.map(\.request)
                && a.scheduleTimeout.map(\.deadline) == b.scheduleTimeout.map(\.deadline)
                && a.cancelTimeout == b.cancelTimeout && a.scheduleRetry == b.scheduleRetry
                && a.shutdownComplete == b.shutdownComplete
        }
    }

    enum Phase { case running, shuttingDown, shutDown }

    struct Waiter {
        var id: RequestID
        var deadline: Instant
    }

    let configuration: Configuration
    private(set) var phase: Phase = .running
    private(set) var idle: [ConnectionID] = []  // a stack: the warmest connection first
    private(set) var leased: Set<ConnectionID> = []
    private(set) var connecting: Set<ConnectionID> = []
    private(set) var waiters = Deque<Waiter>()
    private(set) var consecutiveFailures = 0
    private(set) var retryAt: Instant?
    private var nextConnectionID = 1

    init(configuration: Configuration) {
        var c = configuration
        c.maxConnections = max(1, c.maxConnections)
        c.minConnections = min(max(0, c.minConnections), c.maxConnections)
        self.configuration = c
    }

    var total: Int { idle.count + leased.count + connecting.count }

    // MARK: Events

    /// Opens the minimum number of connections.
    mutating func start(now: Instant) -> Actions {
        var actions = Actions()
        startConnectionsIfNeeded(now: now, into: &actions)
        return actions
    }

    enum AcquireResult: Equatable {
        case leased(ConnectionID)
        case wait(Actions)
        case failed(FailureReason)
    }

    /// A request for a connection.
    mutating func acquire(_ request: RequestID, now: Instant) -> AcquireResult {
        guard phase == .running else { return .failed(.shutdown) }
        if waiters.isEmpty, let connection = idle.popLast() {
            leased.insert(connection)
            return .leased(connection)
        }
        let deadline = now.advanced(by: configuration.acquireTimeout)
        waiters.append(Waiter(id: request, deadline: deadline))
        var actions = Actions()
        actions.scheduleTimeout.append((request, deadline))
        startConnectionsIfNeeded(now: now, into: &actions)
        return .wait(actions)
    }

    /// A leased connection comes back; `reusable` is false when it is broken or was
    /// left in a bad state.
    mutating func release(_ connection: ConnectionID, reusable: Bool, now: Instant) -> Actions {
        var actions = Actions()
        guard leased.remove(connection) != nil else { return actions }
        if !reusable || phase != .running {
            actions.close.append(connection)
            finishShutdownIfDone(into: &actions)
            startConnectionsIfNeeded(now: now, into: &actions)
            return actions
        }
        hand(connection, into: &actions)
        return actions
    }

    /// A connection attempt succeeded.
    mutating func connectionEstablished(_ connection: ConnectionID, now: Instant) -> Actions {
        var actions = Actions()
        guard connecting.remove(connection) != nil else { return actions }
        consecutiveFailures = 0
        if phase != .running {
            actions.close.append(connection)
            finishShutdownIfDone(into: &actions)
            return actions
        }
        hand(connection, into: &actions)
        return actions
    }

    /// A connection attempt failed. `retryable` is false for failures retrying cannot
    /// fix (bad credentials, bad configuration): the waiters then fail at once.
    mutating func connectionFailed(_ connection: ConnectionID, retryable: Bool, now: Instant) -> Actions {
        var actions = Actions()
        guard connecting.remove(connection) != nil else { return actions }
        if phase != .running {
            finishShutdownIfDone(into: &actions)
            return actions
        }
        consecutiveFailures += 1
        if !retryable {
            // Waiters that no other attempt in progress could serve fail now.
            while waiters.count > connecting.count, let waiter = waiters.popLast() {
                actions.fail.append((waiter.id, .connectionFailed))
                actions.cancelTimeout.append(waiter.id)
            }
            actions.fail.reverse()
            actions.cancelTimeout.reverse()
        }
        if waiters.count > connecting.count || total < configuration.minConnections {
            if retryAt == nil {
                let exponent = min(consecutiveFailures - 1, 16)
                var backoff = configuration.initialBackoff * (1 << exponent)
                if backoff > configuration.maximumBackoff { backoff = configuration.maximumBackoff }
                let at = now.advanced(by: backoff)
                retryAt = at
                actions.scheduleRetry = at
            }
        }
        return actions
    }

    /// The retry timer fired.
    mutating func retryTimerFired(now: Instant) -> Actions {
        var actions = Actions()
        guard let at = retryAt, at <= now else { return actions }
        retryAt = nil
        startConnectionsIfNeeded(now: now, into: &actions)
        return actions
    }

    /// An idle connection was found broken (the server closed it).
    mutating func connectionClosed(_ connection: ConnectionID, now: Instant) -> Actions {
        var actions = Actions()
        guard let i = idle.firstIndex(of: connection) else { return actions }
        idle.remove(at: i)
        actions.close.append(connection)
        finishShutdownIfDone(into: &actions)
        startConnectionsIfNeeded(now: now, into: &actions)
        return actions
    }

    /// A waiter's deadline passed.
    mutating func timeout(_ request: RequestID, now: Instant) -> Actions {
        var actions = Actions()
        guard let i = waiters.firstIndex(where: { $0.id == request }), waiters[i].deadline <= now else { return actions }
        waiters.remove(at: i)
        actions.fail.append((request, .timeout))
        return actions
    }

    /// A waiter's task was cancelled.
    mutating func cancel(_ request: RequestID) -> Actions {
        var actions = Actions()
        guard let i = waiters.firstIndex(where: { $0.id == request }) else { return actions }
        waiters.remove(at: i)
        actions.fail.append((request, .cancelled))
        actions.cancelTimeout.append(request)
        return actions
    }

    /// Begins a graceful shutdown.
    mutating func shutdown() -> Actions {
        var actions = Actions()
        guard phase == .running else { return actions }
        phase = .shuttingDown
        retryAt = nil
        while let waiter = waiters.popFirst() {
            actions.fail.append((waiter.id, .shutdown))
            actions.cancelTimeout.append(waiter.id)
        }
        actions.close.append(contentsOf: idle)
        idle.removeAll()
        finishShutdownIfDone(into: &actions)
        return actions
    }

    // MARK: Helpers

    private mutating func hand(_ connection: ConnectionID, into actions: inout Actions) {
        if let waiter = waiters.popFirst() {
            leased.insert(connection)
            actions.lease.append((waiter.id, connection))
            actions.cancelTimeout.append(waiter.id)
        } else {
            idle.append(connection)
        }
    }

    private mutating func startConnectionsIfNeeded(now: Instant, into actions: inout Actions) {
        guard phase == .running, retryAt == nil else { return }
        let forWaiters = waiters.count - connecting.count
        let forMinimum = configuration.minConnections - total
        var wanted = max(forWaiters, forMinimum, 0)
        wanted = min(wanted, configuration.maxConnections - total)
        guard wanted > 0 else { return }
        for _ in 0..<wanted {
            let id = nextConnectionID
            nextConnectionID += 1
            connecting.insert(id)
            actions.start.append(id)
        }
    }

    private mutating func finishShutdownIfDone(into actions: inout Actions) {
        if phase == .shuttingDown && total == 0 {
            phase = .shutDown
            actions.shutdownComplete = true
        }
    }
}
