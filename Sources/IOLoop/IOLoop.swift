#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CIOLoopShims
import DequeModule
import Synchronization

/// Readiness of a file descriptor, as reported by an ``IOLoop``.
public struct IOEvents: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    /// Creates a set of events from its raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Data can be read (or the peer closed its side: a read then returns 0).
    public static let readable = IOEvents(rawValue: 1 << 0)
    /// Data can be written without blocking.
    public static let writable = IOEvents(rawValue: 1 << 1)
    /// The descriptor hung up or is in error. Reported whatever the interest.
    public static let hangup = IOEvents(rawValue: 1 << 2)

    public var description: String {
        var parts: [String] = []
        if contains(.readable) { parts.append("readable") }
        if contains(.writable) { parts.append("writable") }
        if contains(.hangup) { parts.append("hangup") }
        return "[" + parts.joined(separator: ",") + "]"
    }
}

/// An object that an ``IOLoop`` calls, on its own thread, when a registered file
/// descriptor becomes ready.
///
/// `ioReady` runs on the loop thread: it must not block, and it should do little more
/// than read or write what is ready and hand results to waiting tasks.
public protocol IOHandler: AnyObject, Sendable {
    /// Called on the loop thread with the events that are ready.
    func ioReady(_ events: IOEvents)
}

/// A single thread that waits for socket readiness (epoll on Linux, `poll(2)`
/// elsewhere), runs submitted work and fires timers.
///
/// Both database clients drive their sockets through an `IOLoop`, so that no thread of
/// Swift's cooperative pool ever waits for the network: a task that needs a socket to be
/// ready suspends, and the loop resumes it.
///
/// The loop knows no protocol. It offers:
/// - ``register(fd:interest:handler:)``: a long-lived registration whose handler runs
///   on the loop thread whenever the descriptor is ready;
/// - ``wait(for:on:deadline:)``: suspend the calling task until a descriptor is ready;
/// - ``execute(_:)`` and ``schedule(at:_:)``: run work on the loop thread, now or later.
///
/// `IOLoop` is also a `TaskExecutor`: a task started with
/// `withTaskExecutorPreference(loop) { ... }` runs on the loop thread and resumes there
/// without a thread hop, which lowers latency for short request/response work (and
/// blocks the loop while it computes, so keep such work short).
public final class IOLoop: @unchecked Sendable {
    /// The process-wide loop used when a client is not given one.
    public static let shared = IOLoop(name: "cache-aside-io")

    /// The loop's name, used for its thread.
    public let name: String

    private var poller: (any Poller)?  // set in init only
    private var startError: IOError?  // set in init only
    private let state: Mutex<LoopState>

    struct Registered {
        let fd: Int32
        let handler: any IOHandler
        var interest: IOEvents
    }

    struct TimerEntry: Comparable {
        let deadline: ContinuousClock.Instant
        let id: UInt64
        static func < (a: TimerEntry, b: TimerEntry) -> Bool {
            a.deadline == b.deadline ? a.id < b.id : a.deadline < b.deadline
        }
    }

    struct LoopState {
        var tasks = Deque<@Sendable () -> Void>()
        var notified = false
        var registrations: [UInt64: Registered] = [:]
        /// Which registration a descriptor number belongs to now. A descriptor can be
        /// closed behind the loop's back (libpq closes its socket when it finds the
        /// connection lost) and its number reused by a new connection at once: only the
        /// current owner may change or remove the poller's entry for that number, or a
        /// stale registration would silently stop a new connection's readiness reports.
        var fdOwners: [Int32: UInt64] = [:]
        var timerHeap = BinaryHeap<TimerEntry>()
        var timerBodies: [UInt64: @Sendable () -> Void] = [:]
        var nextID: UInt64 = 1
        var stopping = false
        var stopped = false
    }

    /// Backend selection, for tests and unusual platforms.
    public enum Backend: Sendable {
        /// epoll on Linux, `poll(2)` elsewhere.
        case automatic
        /// `poll(2)` everywhere.
        case poll
    }

    /// Starts a loop with its own thread.
    ///
    /// If the kernel refuses the loop its resources (descriptor limits), the loop is
    /// still created, and every registration or wait on it throws that error.
    public init(name: String = "io-loop", backend: Backend = .automatic) {
        self.name = name
        self.state = Mutex(LoopState())
        var poller: (any Poller)?
        var startError: IOError?
        do {
            poller = try makePoller(backend: backend)
        } catch {
            startError = error
        }
        self.poller = poller
        self.startError = startError
        if let poller {
            do {
                try startThread(poller: poller)
            } catch {
                poller.close()
                self.startError = error
                self.poller = nil
            }
        }
    }

    /// True when called from this loop's thread.
    public var inLoop: Bool {
        ThreadKey.shared.get() == Unmanaged.passUnretained(self).toOpaque()
    }

    // MARK: - Work

    /// Runs `work` on the loop thread, soon. Work submitted from one thread runs in the
    /// order it was submitted.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let onLoop = inLoop
        let mustWake: Bool = state.withLock { s in
            if s.stopped { return false }
            s.tasks.append(work)
            // The loop looks at its queue before it sleeps: no wake-up needed from
            // its own thread, or when one is already on its way.
            if onLoop || s.notified { return false }
            s.notified = true
            return true
        }
        if mustWake { poller?.wake() }
    }

    /// A scheduled piece of work that can be cancelled before it fires.
    public struct Timer: Sendable {
        let id: UInt64
        let loop: IOLoop

        /// Cancels the timer. Does nothing if it already fired.
        public func cancel() {
            loop.state.withLock { s in _ = s.timerBodies.removeValue(forKey: id) }
        }
    }

    /// Runs `work` on the loop thread at `deadline` (or soon after).
    @discardableResult
    public func schedule(
        at deadline: ContinuousClock.Instant, _ work: @escaping @Sendable () -> Void
    ) -> Timer {
        let onLoop = inLoop
        let (id, mustWake): (UInt64, Bool) = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            if s.stopped { return (id, false) }
            let earliest = s.timerHeap.min?.deadline
            s.timerHeap.insert(TimerEntry(deadline: deadline, id: id))
            s.timerBodies[id] = work
            if let earliest, earliest <= deadline { return (id, false) }
            if onLoop || s.notified { return (id, false) }
            s.notified = true
            return (id, true)
        }
        if mustWake { poller?.wake() }
        return Timer(id: id, loop: self)
    }

    /// Runs `work` on the loop thread after `delay`.
    @discardableResult
    public func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> Timer {
        schedule(at: .now + delay, work)
    }

    // MARK: - Registrations

    /// Registers `fd` with the loop: `handler.ioReady` runs on the loop thread whenever
    /// one of `interest`'s events (or a hang-up) is ready. Level-triggered: an event is
    /// reported again until it is consumed or the interest dropped.
    ///
    /// A descriptor can have one registration at a time.
    public func register(
        fd: Int32, interest: IOEvents, handler: any IOHandler
    ) throws(IOError) -> IORegistration {
        guard let poller else { throw startError ?? IOError(operation: "register", code: EBADF) }
        // The poller is changed under the lock, so that changes for one descriptor
        // number are applied in the order their owners were decided.
        let id: UInt64 = try state.withLock { (s: inout LoopState) throws(IOError) -> UInt64 in
            let id = s.nextID
            s.nextID += 1
            let previousOwner = s.fdOwners[fd]
            do throws(IOError) {
                try poller.add(fd: fd, id: id, interest: interest)
            } catch {
                // The number may still have a poller entry (its old owner's descriptor
                // was closed while a copy of it lives on elsewhere): take it over.
                guard error.code == EEXIST && previousOwner != nil else { throw error }
                try poller.modify(fd: fd, id: id, interest: interest)
            }
            s.registrations[id] = Registered(fd: fd, handler: handler, interest: interest)
            s.fdOwners[fd] = id
            return id
        }
        if poller.needsWakeOnChange && !inLoop { poller.wake() }
        return IORegistration(loop: self, id: id, fd: fd, interest: interest)
    }

    /// Changes a registration's interest. `cache` (the registration's copy of its
    /// interest, read without the lock) is updated under the lock, in the same order as
    /// the table.
    func setInterest(id: UInt64, fd: Int32, interest: IOEvents, cache: borrowing Atomic<UInt8>) throws(IOError) {
        guard let poller else { return }
        let changed: Bool = try state.withLock { (s: inout LoopState) throws(IOError) -> Bool in
            guard var r = s.registrations[id], r.interest != interest else { return false }
            cache.store(interest.rawValue, ordering: .relaxed)
            r.interest = interest
            s.registrations[id] = r
            // A registration whose number now belongs to another leaves the poller alone.
            guard s.fdOwners[fd] == id else { return false }
            try poller.modify(fd: fd, id: id, interest: interest)
            return true
        }
        if changed && poller.needsWakeOnChange && !inLoop { poller.wake() }
    }

    /// Removes a registration; returns whether it was still registered.
    @discardableResult
    func deregister(id: UInt64, fd: Int32) -> Bool {
        let (removed, owned): (Bool, Bool) = state.withLock { s in
            let removed = s.registrations.removeValue(forKey: id) != nil
            guard s.fdOwners[fd] == id else { return (removed, false) }
            s.fdOwners.removeValue(forKey: fd)
            poller?.remove(fd: fd)
            return (removed, true)
        }
        if owned, let poller, poller.needsWakeOnChange, !inLoop { poller.wake() }
        return removed
    }

    // MARK: - One-shot waits

    /// Suspends the calling task until `fd` has one of `events` ready (a hang-up or
    /// error also ends the wait), until `deadline`, or until the task is cancelled.
    ///
    /// The descriptor must not be registered with ``register(fd:interest:handler:)``
    /// at the same time.
    ///
    /// - Returns: the events that were ready.
    /// - Throws: ``IOError`` with ``IOError/isTimeout`` at the deadline,
    ///   `CancellationError` when the task is cancelled.
    public func wait(
        for events: IOEvents, on fd: Int32, deadline: ContinuousClock.Instant? = nil
    ) async throws -> IOEvents {
        try Task.checkCancellation()
        let waiter = OneShotWaiter()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<IOEvents, any Error>) in
                guard waiter.install(cont) else { return }  // cancelled already
                do {
                    let registration = try register(fd: fd, interest: events, handler: waiter)
                    var timer: Timer?
                    if let deadline {
                        timer = schedule(at: deadline) {
                            waiter.finish(.failure(IOError.timeout(operation: "wait for \(events)")))
                        }
                    }
                    waiter.armed(registration: registration, timer: timer)
                } catch {
                    waiter.finish(.failure(error))
                }
            }
        } onCancel: {
            waiter.finish(.failure(CancellationError()))
        }
    }

    // MARK: - Lifecycle

    /// Stops the loop: pending work runs, timers are dropped, the thread exits.
    /// Registrations are not closed. Must not be called from the loop thread.
    /// Calling it on ``shared`` is a programming error and is ignored.
    public func shutdown() {
        guard self !== IOLoop.shared, !inLoop, let poller else { return }
        let alreadyStopping: Bool = state.withLock { s in
            let was = s.stopping
            s.stopping = true
            return was
        }
        if alreadyStopping { return }
        poller.wake()
        joinThread()
    }

    // MARK: - Thread

    private var thread: pthread_t?
    private let threadStarted = Mutex<Bool>(false)

    private func startThread(poller: any Poller) throws(IOError) {
        final class Box {
            let loop: IOLoop
            let poller: any Poller
            init(_ loop: IOLoop, _ poller: any Poller) { self.loop = loop; self.poller = poller }
        }
        let box = Unmanaged.passRetained(Box(self, poller))
        #if canImport(Darwin)
        var tid: pthread_t?
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            box.loop.run(poller: box.poller)
            return nil
        }, box.toOpaque())
        #else
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            box.loop.run(poller: box.poller)
            return nil
        }, box.toOpaque())
        #endif
        guard rc == 0 else {
            box.release()
            throw IOError(operation: "pthread_create", code: rc)
        }
        thread = tid
    }

    private func joinThread() {
        #if canImport(Darwin)
        if let t = thread { pthread_join(t, nil) }
        #else
        if let t = thread { pthread_join(t, nil) }
        #endif
    }

    private func run(poller: any Poller) {
        ThreadKey.shared.set(Unmanaged.passUnretained(self).toOpaque())
        cio_set_thread_name(name)
        var events = [PollerEvent](repeating: PollerEvent(id: 0, events: []), count: 256)
        var runQueue = Deque<@Sendable () -> Void>()
        var dueTimers: [@Sendable () -> Void] = []
        var handlers: [(any IOHandler)?] = []
        handlers.reserveCapacity(events.count)
        /// How long to sleep (nil: until woken), or whether to stop: under the lock.
        func sleepPlan(_ s: inout LoopState) -> (Duration?, Bool) {
            if s.stopping && s.tasks.isEmpty {
                s.stopped = true
                return (nil, true)
            }
            if !s.tasks.isEmpty { return (.zero, false) }
            // Drop cancelled timers at the top so they do not shorten the sleep.
            while let first = s.timerHeap.min, s.timerBodies[first.id] == nil {
                _ = s.timerHeap.popMin()
            }
            guard let first = s.timerHeap.min else { return (nil, false) }
            let remaining = first.deadline - ContinuousClock.now
            return (remaining < .zero ? .zero : remaining, false)
        }
        while true {
            // 1. Work submitted from any thread and the timers that are due, taken under
            // one lock with the length of the sleep for when there are none (the lock is
            // also taken by every caller that changes an interest or submits work).
            let now = ContinuousClock.now
            var (timeout, stop): (Duration?, Bool) = state.withLock { s in
                swap(&runQueue, &s.tasks)
                s.notified = false  // a submission from now on wakes the loop
                while let first = s.timerHeap.min, first.deadline <= now {
                    _ = s.timerHeap.popMin()
                    if let body = s.timerBodies.removeValue(forKey: first.id) {
                        dueTimers.append(body)
                    }
                }
                return runQueue.isEmpty && dueTimers.isEmpty ? sleepPlan(&s) : (.zero, false)
            }
            if !runQueue.isEmpty || !dueTimers.isEmpty {
                while let work = runQueue.popFirst() { work() }
                for body in dueTimers { body() }
                dueTimers.removeAll(keepingCapacity: true)
                // 2. What ran may have submitted work or timers: sleep accordingly.
                (timeout, stop) = state.withLock { s in sleepPlan(&s) }
            }
            if stop { break }

            // 3. Sleep until a descriptor is ready, the next timer, or a wake-up.
            let pollFDs: [(fd: Int32, id: UInt64, interest: IOEvents)]
            if poller.needsRegistrationSnapshot {
                pollFDs = state.withLock { s in
                    s.registrations.compactMap { id, r in s.fdOwners[r.fd] == id ? (r.fd, id, r.interest) : nil }
                }
            } else {
                pollFDs = []
            }
            let count = poller.wait(events: &events, timeout: timeout, snapshot: pollFDs)

            // 4. Dispatch readiness. The handlers are looked up under one lock for the
            // batch: callers on other threads change interests under the same lock.
            var sawWake = false
            if count > 0 {
                state.withLock { s in
                    for i in 0..<count where events[i].id != 0 {
                        handlers.append(s.registrations[events[i].id]?.handler)
                    }
                }
            }
            var next = 0
            for i in 0..<count {
                let event = events[i]
                if event.id == 0 {
                    sawWake = true
                    continue
                }
                let handler = handlers[next]
                next += 1
                handler?.ioReady(event.events)
            }
            handlers.removeAll(keepingCapacity: true)
            if sawWake { poller.drainWake() }  // `notified` is reset when the queue is next taken
        }
        state.withLock { s in
            s.timerBodies.removeAll()
            s.timerHeap = BinaryHeap()
        }
        poller.close()
    }
}

extension IOLoop: TaskExecutor {
    /// Runs a job of a task that prefers this loop as its executor, on the loop thread.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = self.asUnownedTaskExecutor()
        execute { unowned.runSynchronously(on: executor) }
    }
}

/// A descriptor registered with an ``IOLoop``.
///
/// The registration stays until ``close()`` or ``deregister(then:)``. Both take effect on
/// the loop thread, so the handler is never running on a descriptor that another thread
/// has just closed.
public final class IORegistration: Sendable {
    /// The loop this descriptor is registered with.
    public let loop: IOLoop
    /// The registered descriptor.
    public let fd: Int32
    let id: UInt64
    /// The interest last set, read without taking the loop's lock (which the loop
    /// thread takes for every batch of readiness it dispatches).
    private let interest: Atomic<UInt8>

    init(loop: IOLoop, id: UInt64, fd: Int32, interest: IOEvents) {
        self.loop = loop
        self.id = id
        self.fd = fd
        self.interest = Atomic(interest.rawValue)
    }

    /// Changes the events the handler is told about. Callable from any thread; an
    /// interest that does not change costs an atomic load, not the loop's lock.
    public func setInterest(_ interest: IOEvents) throws(IOError) {
        if self.interest.load(ordering: .relaxed) == interest.rawValue { return }
        try loop.setInterest(id: id, fd: fd, interest: interest, cache: self.interest)
    }

    /// Removes the registration on the loop thread, then runs `then` there (for
    /// example `PQfinish`, which closes the descriptor itself). After it, the handler
    /// is never called again.
    public func deregister(then: @escaping @Sendable () -> Void = {}) {
        let loop = self.loop, id = self.id, fd = self.fd
        if loop.inLoop {
            loop.deregister(id: id, fd: fd)
            then()
        } else {
            loop.execute {
                loop.deregister(id: id, fd: fd)
                then()
            }
        }
    }

    /// Removes the registration and closes the descriptor, on the loop thread.
    public func close() {
        let fd = self.fd
        deregister { _ = systemClose(fd) }
    }
}

/// Resumes one continuation once, from whichever of readiness, timeout or cancellation
/// comes first.
final class OneShotWaiter: IOHandler, @unchecked Sendable {
    private struct State {
        var continuation: CheckedContinuation<IOEvents, any Error>?
        var finished = false
        var registration: IORegistration?
        var timer: IOLoop.Timer?
    }
    private let state = Mutex(State())

    /// Stores the continuation; returns false (after resuming it) if the wait was
    /// already finished by a cancellation.
    func install(_ cont: CheckedContinuation<IOEvents, any Error>) -> Bool {
        let finished = state.withLock { s in
            if s.finished { return true }
            s.continuation = cont
            return false
        }
        if finished { cont.resume(throwing: CancellationError()) }
        return !finished
    }

    func armed(registration: IORegistration, timer: IOLoop.Timer?) {
        let finishedAlready = state.withLock { s in
            if s.finished { return true }
            s.registration = registration
            s.timer = timer
            return false
        }
        if finishedAlready {
            timer?.cancel()
            registration.loop.deregister(id: registration.id, fd: registration.fd)
        }
    }

    func ioReady(_ events: IOEvents) {
        finish(.success(events))
    }

    func finish(_ result: Result<IOEvents, any Error>) {
        let taken = state.withLock { s -> (CheckedContinuation<IOEvents, any Error>?, IORegistration?, IOLoop.Timer?)? in
            if s.finished { return nil }
            s.finished = true
            let c = (s.continuation, s.registration, s.timer)
            s.continuation = nil
            s.registration = nil
            s.timer = nil
            return c
        }
        guard let (cont, registration, timer) = taken else { return }
        timer?.cancel()
        if let registration {
            // Removed synchronously so the caller may reuse or close the descriptor as
            // soon as it resumes; the handler itself touches no descriptor.
            registration.loop.deregister(id: registration.id, fd: registration.fd)
        }
        cont?.resume(with: result)
    }
}

/// A per-thread slot used to tell whether code runs on a given loop's thread.
final class ThreadKey: @unchecked Sendable {
    static let shared = ThreadKey()
    private var key = pthread_key_t()

    init() {
        pthread_key_create(&key, nil)
    }

    func set(_ value: UnsafeMutableRawPointer?) {
        pthread_setspecific(key, value)
    }

    func get() -> UnsafeMutableRawPointer? {
        pthread_getspecific(key)
    }
}

func systemClose(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #elseif canImport(Musl)
    return Musl.close(fd)
    #else
    return Darwin.close(fd)
    #endif
}
