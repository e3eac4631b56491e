/// When to stop calling a failing Redis, and when to try it again: a pure state
/// machine (no clock reads, no I/O), driven by the cache with the current time.
///
/// - Closed: calls go through; `failureThreshold` failures in a row open it.
/// - Open: calls are refused (reads go straight to the database) until `coolDown`
///   has passed.
/// - Half-open: one probe call goes through; success closes the breaker, failure opens
///   it for another cool-down. A probe that never reports back is replaced after a
///   cool-down.
public struct CircuitBreaker: Sendable, Equatable {
    /// The breaker's thresholds.
    public struct Configuration: Sendable, Equatable {
        /// Failures in a row (connection errors or timeouts) that open the breaker.
        /// Default: 3.
        public var failureThreshold: Int
        /// How long the breaker stays open before it lets a probe through.
        /// Default: 2 seconds.
        public var coolDown: Duration

        /// Creates a configuration.
        public init(failureThreshold: Int = 3, coolDown: Duration = .seconds(2)) {
            self.failureThreshold = max(1, failureThreshold)
            self.coolDown = coolDown
        }
    }

    /// Where the breaker stands.
    public enum State: Sendable, Equatable {
        /// Calls go through; this many failures in a row so far.
        case closed(consecutiveFailures: Int)
        /// Calls are refused until this instant.
        case open(until: ContinuousClock.Instant)
        /// One probe is allowed; `probeStarted` is when the current probe began, if any.
        case halfOpen(probeStarted: ContinuousClock.Instant?)
    }

    /// What the caller may do now.
    public enum Decision: Sendable, Equatable {
        /// Call Redis.
        case allow
        /// Call Redis as the probe: report its outcome.
        case probe
        /// Do not call Redis.
        case reject
    }

    /// The configuration.
    public let configuration: Configuration
    /// The current state.
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    /// Creates a closed breaker.
    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// Whether a call may go to Redis at `now`. A `.probe` answer marks the probe as
    /// started: report its outcome with ``recordSuccess()`` or ``recordFailure(now:)``.
    public mutating func decide(now: ContinuousClock.Instant) -> Decision {
        switch state {
        case .closed:
            return .allow
        case .open(let until):
            guard now >= until else { return .reject }
            state = .halfOpen(probeStarted: now)
            return .probe
        case .halfOpen(let started):
            if let started, now < started + configuration.coolDown { return .reject }
            state = .halfOpen(probeStarted: now)
            return .probe
        }
    }

    /// Whether the breaker currently refuses calls, without changing its state.
    public func isOpen(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed: return false
        case .open(let until): return now < until
        case .halfOpen(let started): return started.map { now < $0 + configuration.coolDown } ?? false
        }
    }

    /// A call to Redis succeeded.
    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    /// A call to Redis failed with a connection error or timeout.
    public mutating func recordFailure(now: ContinuousClock.Instant) {
        switch state {
        case .closed(let failures):
            if failures + 1 >= configuration.failureThreshold {
                state = .open(until: now + configuration.coolDown)
            } else {
                state = .closed(consecutiveFailures: failures + 1)
            }
        case .open:
            // A call that started before the breaker opened: it stays open.
            break
        case .halfOpen:
            state = .open(until: now + configuration.coolDown)
        }
    }
}
