import Synchronization

/// Work that leaves a caller's path (a fill nobody waits for, a lease given up), run by
/// ``CacheAside/run()`` as child tasks, so that nothing outlives the runtime. When the
/// runtime is not running, ``submit(_:)`` refuses and the caller does the work itself.
final class BackgroundWork: Sendable {
    typealias Job = @Sendable () async -> Void

    private struct State {
        var continuation: AsyncStream<Job>.Continuation?
        var finished = false
    }

    private let state = Mutex(State())
    private let active = Atomic<Int>(0)

    /// Whether no submitted job is waiting or running.
    var isIdle: Bool { active.load(ordering: .relaxed) == 0 }

    /// Hands `job` to the running runtime; false if it is not running.
    func submit(_ job: @escaping Job) -> Bool {
        state.withLock { s in
            guard let c = s.continuation else { return false }
            active.add(1, ordering: .relaxed)
            if case .enqueued = c.yield(job) { return true }
            active.subtract(1, ordering: .relaxed)
            return false
        }
    }

    /// Runs submitted jobs until ``finish()``, then the jobs already submitted, then
    /// returns.
    func run() async {
        let (stream, continuation) = AsyncStream<Job>.makeStream()
        let finished = state.withLock { s in
            if !s.finished { s.continuation = continuation }
            return s.finished
        }
        if finished { return }
        await withDiscardingTaskGroup { group in
            for await job in stream {
                group.addTask {
                    await job()
                    self.active.subtract(1, ordering: .relaxed)
                }
            }
        }
    }

    /// Takes no more jobs; ``run()`` returns once those submitted are done.
    func finish() {
        let c = state.withLock { s in
            s.finished = true
            let c = s.continuation
            s.continuation = nil
            return c
        }
        c?.finish()
    }
}
