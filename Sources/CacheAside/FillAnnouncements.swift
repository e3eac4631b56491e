import Synchronization

/// This runtime's listener for fills announced by other processes: readers waiting for
/// another process's lease register here and are woken as soon as the key's fill (or
/// the lease's release) is announced, instead of polling.
///
/// ``CacheAside/run()`` keeps one subscription per runtime open and feeds it here.
/// While nothing listens (``isListening`` false), waiters read the key again more often.
final class FillAnnouncements: Sendable {
    private struct State {
        var waiters: [String: [ObjectIdentifier: FillWaiter]] = [:]
    }

    private let state = Mutex(State())
    private let listening = Atomic<Bool>(false)

    /// Whether announcements are being received now.
    var isListening: Bool { listening.load(ordering: .relaxed) }

    func setListening(_ on: Bool) { listening.store(on, ordering: .relaxed) }

    /// Wakes `waiter` when any of `keys` is announced, until ``unregister(_:keys:)``.
    func register(_ waiter: FillWaiter, keys: [String]) {
        state.withLock { s in
            for key in keys { s.waiters[key, default: [:]][ObjectIdentifier(waiter)] = waiter }
        }
    }

    func unregister(_ waiter: FillWaiter, keys: [String]) {
        state.withLock { s in
            for key in keys {
                s.waiters[key]?.removeValue(forKey: ObjectIdentifier(waiter))
                if s.waiters[key]?.isEmpty == true { s.waiters.removeValue(forKey: key) }
            }
        }
    }

    /// An announcement arrived for `key`.
    func deliver(_ key: String) {
        let waiters = state.withLock { s in s.waiters[key].map { Array($0.values) } ?? [] }
        for waiter in waiters { waiter.notify(key) }
    }
}

/// One reader's wait for fills: woken by announcements of its keys and by its recheck
/// timer.
final class FillWaiter: Sendable {
    private struct State {
        var announced: [String] = []
        var ticked = false
    }

    private let state = Mutex(State())
    private let signal = Signal()

    func notify(_ key: String) {
        state.withLock { $0.announced.append(key) }
        signal.fire()
    }

    func tick() {
        state.withLock { $0.ticked = true }
        signal.fire()
    }

    /// Waits for an announcement or a tick; returns the keys announced since the last
    /// call and whether the recheck timer ticked.
    func next() async -> (announced: [String], ticked: Bool) {
        await signal.wait()
        return state.withLock { s in
            let r = (s.announced, s.ticked)
            s.announced = []
            s.ticked = false
            return r
        }
    }
}
