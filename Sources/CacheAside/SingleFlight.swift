import Synchronization

/// One in-flight load of one key in this process, which other callers can join.
///
/// Its outcome is either a value, "start afresh" (the load's fill was rejected, so a
/// write may have happened after some joiner began: the joiner must not get the value
/// the load read), or a failure.
final class Flight<Value: Sendable>: Sendable {
    enum Outcome: Sendable {
        case value(Value)
        case retry
        case failure(any Error)
    }

    private struct State {
        var outcome: Outcome?
        /// Waiters that registered after this mark get `.retry` instead of the outcome.
        var cutoff: UInt64?
        var waiters: [UInt64: CheckedContinuation<Outcome, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Waits for the outcome. A cancelled waiter leaves alone, with a
    /// `CancellationError`, and the load goes on for the others.
    func wait() async -> Outcome {
        let id: UInt64 = state.withLock { s in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<Outcome, Never>) in
                let ready: Outcome? = state.withLock { s in
                    if let outcome = s.outcome {
                        if let cutoff = s.cutoff, id > cutoff { return .retry }
                        return outcome
                    }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiters[id] = cont
                    return nil
                }
                if let ready { cont.resume(returning: ready) }
            }
        } onCancel: {
            let cont = state.withLock { s in s.waiters.removeValue(forKey: id) }
            cont?.resume(returning: .failure(CancellationError()))
        }
    }

    /// A point in the order in which waiters register: see ``resolve(_:registeredBy:)``.
    func mark() -> UInt64 {
        state.withLock { $0.nextWaiter }
    }

    /// Sets the outcome and wakes every waiter. Only the first call counts.
    func resolve(_ outcome: Outcome) {
        resolve(outcome, registeredBy: nil)
    }

    /// Sets the outcome for the waiters that registered by `mark`; the others (and
    /// any that come later) get `.retry`.
    ///
    /// For a value read from Redis: a caller that joined after the read was sent may
    /// have begun after a write that the read did not see, so it must read afresh.
    /// Values loaded under a lease need no mark: a write after the load deletes the
    /// lease, the fill fails, and the leader resolves with `.retry`.
    func resolve(_ outcome: Outcome, registeredBy mark: UInt64?) {
        let waiters: [(UInt64, CheckedContinuation<Outcome, Never>)] = state.withLock { s in
            if s.outcome != nil { return [] }
            s.outcome = outcome
            s.cutoff = mark
            let all = s.waiters.map { ($0.key, $0.value) }
            s.waiters.removeAll()
            return all
        }
        for (id, waiter) in waiters {
            if let mark, id > mark {
                waiter.resume(returning: .retry)
            } else {
                waiter.resume(returning: outcome)
            }
        }
    }

    /// How many callers wait (for tests and metrics).
    var waiterCount: Int { state.withLock { $0.waiters.count } }
}

/// The per-process single-flight table: at most one load per key at a time.
///
/// Rules: a write in this process removes the key's flight (``forget(_:)``), so callers
/// that start after the write start afresh; a load leaves the table before it sends its
/// fill (``leave(_:_:)``), so nobody joins it by key after a write could have deleted
/// what it filled.
///
/// A load that holds a lease is also found by its lease token (``register(lease:_:)``)
/// until its fill is decided: a reader of this process that finds the lease in Redis
/// joins it in memory. That is safe after a write too: a write that returned before the
/// reader looked would have replaced the lease, so the reader would not have found it;
/// and a write after that makes the fill fail, which sends every joiner afresh.
final class SingleFlightTable: Sendable {
    private let flights = Mutex<[String: AnyObject]>([:])
    private let leases = Mutex<[[UInt8]: AnyObject]>([:])

    /// Makes the load findable by its lease token.
    func register<Value: Sendable>(lease token: [UInt8], _ flight: Flight<Value>) {
        leases.withLock { $0[token] = flight }
    }

    /// The load holding the lease with this token, if it is still deciding its fill.
    func flight<Value: Sendable>(lease token: [UInt8], as type: Value.Type) -> Flight<Value>? {
        leases.withLock { $0[token] as? Flight<Value> }
    }

    /// The fill of the lease with this token is decided.
    func unregister(lease token: [UInt8]) {
        _ = leases.withLock { $0.removeValue(forKey: token) }
    }

    enum Role<Value: Sendable> {
        case leader(Flight<Value>)
        case follower(Flight<Value>)
    }

    /// Joins the key's flight, or starts one and becomes its leader.
    func join<Value: Sendable>(_ key: String, as type: Value.Type) -> Role<Value> {
        flights.withLock { table in
            if let existing = table[key] as? Flight<Value> {
                return .follower(existing)
            }
            let flight = Flight<Value>()
            table[key] = flight
            return .leader(flight)
        }
    }

    /// Removes `flight` from the table if it is still the key's flight.
    func leave<Value: Sendable>(_ key: String, _ flight: Flight<Value>) {
        flights.withLock { table in
            if let current = table[key], current === flight {
                table.removeValue(forKey: key)
            }
        }
    }

    /// Removes whatever flight the key has: a write happened.
    func forget(_ key: String) {
        _ = flights.withLock { table in table.removeValue(forKey: key) }
    }

    /// Whether the key has a flight (for tests).
    func hasFlight(_ key: String) -> Bool {
        flights.withLock { $0[key] != nil }
    }
}
