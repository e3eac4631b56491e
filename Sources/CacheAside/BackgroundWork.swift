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

    /// Hands `job` to the running runtime; false if it is not running.
    func submit(_ job: @escaping Job) -> Bool {
        state.withLock { s in
            guard let c = s.continuation else { return false }
            if case .enqueued = c.yield(job) { return true }
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
                group.addTask { await job() }
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
