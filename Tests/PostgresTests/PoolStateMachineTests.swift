@testable import CacheAsidePostgres
import Testing

/// A clock the tests move by hand.
struct FakeInstant: InstantProtocol {
    var offset: Duration
    func advanced(by duration: Duration) -> FakeInstant { FakeInstant(offset: offset + duration) }
    func duration(to other: FakeInstant) -> Duration { other.offset - offset }
    static func < (a: FakeInstant, b: FakeInstant) -> Bool { a.offset < b.offset }
}

typealias Machine = PoolStateMachine<FakeInstant>

func t(_ ms: Int) -> FakeInstant { FakeInstant(offset: .milliseconds(ms)) }

func machine(min: Int = 0, max: Int = 2, timeout: Duration = .seconds(5)) -> Machine {
    Machine(configuration: .init(minConnections: min, maxConnections: max, acquireTimeout: timeout))
}

extension Machine.AcquireResult {
    var actions: Machine.Actions? { if case .wait(let a) = self { return a } else { return nil } }
}

@Suite struct PoolStateMachineTests {
    @Test func opensOnDemandAndReusesIdleConnections() {
        var m = machine()
        let first = m.acquire(1, now: t(0))
        #expect(first.actions?.start == [1])
        #expect(first.actions?.scheduleTimeout.first?.deadline == t(5000))
        let est = m.connectionEstablished(1, now: t(10))
        #expect(est.lease.map(\.request) == [1] && est.lease.map(\.connection) == [1])
        #expect(est.cancelTimeout == [1])
        let rel = m.release(1, reusable: true, now: t(20))
        #expect(rel.isEmpty)
        #expect(m.idle == [1])
        #expect(m.acquire(2, now: t(30)) == .leased(1))
    }

    @Test func neverExceedsMaxAndServesWaitersFirstInFirstOut() {
        var m = machine(max: 2)
        var started: [Int] = []
        for request in 1...5 {
            started += m.acquire(request, now: t(request)).actions?.start ?? []
        }
        #expect(started == [1, 2])
        #expect(m.total == 2)
        let a = m.connectionEstablished(1, now: t(10))
        let b = m.connectionEstablished(2, now: t(11))
        #expect(a.lease.map(\.request) == [1])
        #expect(b.lease.map(\.request) == [2])
        // Releases go to the oldest waiter, in order.
        #expect(m.release(1, reusable: true, now: t(12)).lease.map(\.request) == [3])
        #expect(m.release(2, reusable: true, now: t(13)).lease.map(\.request) == [4])
        #expect(m.release(1, reusable: true, now: t(14)).lease.map(\.request) == [5])
        // A newcomer does not jump the queue even when a connection is idle later.
        _ = m.release(2, reusable: true, now: t(15))
        #expect(m.acquire(6, now: t(16)) == .leased(2))
        #expect(m.total <= 2)
    }

    @Test func waitersTimeOutAtTheirDeadlineOnly() {
        var m = machine(max: 1, timeout: .seconds(1))
        _ = m.acquire(1, now: t(0))
        _ = m.connectionEstablished(1, now: t(1))
        let w = m.acquire(2, now: t(100))
        #expect(w.actions?.start == [])
        #expect(w.actions?.scheduleTimeout.first?.deadline == t(1100))
        #expect(m.timeout(2, now: t(1099)).isEmpty)  // too early: ignored
        let fired = m.timeout(2, now: t(1100))
        #expect(fired.fail.map(\.request) == [2] && fired.fail.map(\.reason) == [.timeout])
        #expect(m.waiters.isEmpty)
        #expect(m.release(1, reusable: true, now: t(1200)).lease.isEmpty)  // nobody left to serve
    }

    @Test func brokenConnectionsAreClosedAndReplaced() {
        var m = machine(max: 1)
        _ = m.acquire(1, now: t(0))
        _ = m.connectionEstablished(1, now: t(1))
        _ = m.acquire(2, now: t(2))
        let released = m.release(1, reusable: false, now: t(3))
        #expect(released.close == [1])
        #expect(released.start == [2])  // a replacement for the waiter
        let est = m.connectionEstablished(2, now: t(4))
        #expect(est.lease.map(\.request) == [2] && est.lease.map(\.connection) == [2])
        // An idle connection that breaks is dropped; with min 0 it is not replaced.
        _ = m.release(2, reusable: true, now: t(5))
        let closed = m.connectionClosed(2, now: t(6))
        #expect(closed.close == [2] && closed.start.isEmpty)
        #expect(m.total == 0)
    }

    @Test func keepsTheMinimumOpen() {
        var m = machine(min: 2, max: 4)
        #expect(m.start(now: t(0)).start == [1, 2])
        _ = m.connectionEstablished(1, now: t(1))
        _ = m.connectionEstablished(2, now: t(1))
        #expect(m.connectionClosed(1, now: t(2)).start == [3])
    }

    @Test func failedAttemptsAreRetriedWithBackoff() {
        var m = machine(max: 1)
        _ = m.acquire(1, now: t(0))
        let f1 = m.connectionFailed(1, retryable: true, now: t(10))
        #expect(f1.scheduleRetry == t(60))
        #expect(f1.fail.isEmpty)
        #expect(m.retryTimerFired(now: t(59)).isEmpty)
        #expect(m.retryTimerFired(now: t(60)).start == [2])
        let f2 = m.connectionFailed(2, retryable: true, now: t(70))
        #expect(f2.scheduleRetry == t(170))  // doubled
        #expect(m.retryTimerFired(now: t(170)).start == [3])
        #expect(m.connectionEstablished(3, now: t(180)).lease.map(\.request) == [1])
        #expect(m.consecutiveFailures == 0)
    }

    @Test func authenticationFailuresFailWaitersAtOnce() {
        var m = machine(max: 1)
        _ = m.acquire(1, now: t(0))
        _ = m.acquire(2, now: t(0))
        let f = m.connectionFailed(1, retryable: false, now: t(5))
        #expect(f.fail.map(\.request) == [1, 2])
        #expect(f.fail.allSatisfy { $0.reason == .connectionFailed })
        #expect(m.waiters.isEmpty)
    }

    @Test func shutdownFailsWaitersClosesIdleAndDrainsLeased() {
        var m = machine(max: 3)
        _ = m.acquire(1, now: t(0)); _ = m.acquire(2, now: t(0)); _ = m.acquire(3, now: t(0))
        _ = m.connectionEstablished(1, now: t(1))
        _ = m.connectionEstablished(2, now: t(1))
        _ = m.release(2, reusable: true, now: t(2))  // goes to waiter 3
        _ = m.acquire(4, now: t(3))  // waits (3 is still connecting, max reached)
        _ = m.release(2, reusable: true, now: t(4))  // served: waiter 4 gets 2
        _ = m.release(2, reusable: true, now: t(5))  // now idle
        _ = m.acquire(5, now: t(6))  // takes idle 2
        _ = m.acquire(6, now: t(7))  // waits
        let s = m.shutdown()
        #expect(s.fail.map(\.request) == [6] && s.fail.first?.reason == .shutdown)
        #expect(!s.shutdownComplete)
        #expect(m.acquire(7, now: t(8)) == .failed(.shutdown))
        #expect(m.release(1, reusable: true, now: t(9)).close == [1])
        #expect(m.connectionEstablished(3, now: t(10)).close == [3])
        let last = m.release(2, reusable: true, now: t(11))
        #expect(last.close == [2] && last.shutdownComplete)
        #expect(m.phase == .shutDown)
    }

    @Test func cancelledWaitersLeaveTheQueue() {
        var m = machine(max: 1)
        _ = m.acquire(1, now: t(0))
        _ = m.acquire(2, now: t(0))
        let c = m.cancel(1)
        #expect(c.fail.map(\.reason) == [.cancelled])
        #expect(m.connectionEstablished(1, now: t(1)).lease.map(\.request) == [2])
        #expect(m.cancel(99).isEmpty)
    }
}
