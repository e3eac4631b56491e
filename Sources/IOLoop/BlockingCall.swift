#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CIOLoopShims

/// Runs the few calls that must block (name resolution with `getaddrinfo`, libpq's
/// cancel request, libpq's connection steps when they resolve a host name) on threads
/// of their own.
///
/// Never `DispatchQueue.global()` for such calls: on Linux, Swift's global concurrent
/// executor runs every task on the threads of Dispatch's global queues, and those grow
/// past the number of cores only about once a second. Two `getaddrinfo` calls waiting
/// for a slow DNS server on a 2-core machine therefore stop every task of the process,
/// including the ones whose replies have long arrived. A thread made for the call
/// costs some 30 µs, nothing next to the call itself.
public enum BlockingCall {
    /// Runs `body` on a thread of its own and returns its result; the calling task
    /// suspends meanwhile and no thread that runs tasks waits for `body`.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
            start { continuation.resume(returning: body()) }
        }
    }

    /// Runs `body` on a thread of its own, rethrowing what it throws.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            start { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Starts `work` on a new detached thread, without waiting for it. The caller is
    /// responsible for knowing when it is done (for example through a continuation).
    public static func start(_ work: @escaping @Sendable () -> Void) {
        final class Box {
            let work: @Sendable () -> Void
            init(_ work: @escaping @Sendable () -> Void) { self.work = work }
        }
        let box = Unmanaged.passRetained(Box(work))
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        #if canImport(Darwin)
        var thread: pthread_t?
        let rc = pthread_create(&thread, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            BlockingCall.enterThread()
            box.work()
            return nil
        }, box.toOpaque())
        #else
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            BlockingCall.enterThread()
            box.work()
            return nil
        }, box.toOpaque())
        #endif
        if rc != 0 {
            // No thread to be had (the process is at its limit): run it here rather
            // than lose it. The caller's thread waits, as it would have anyway.
            let box = box.takeRetainedValue()
            box.work()
        }
    }

    /// True on a thread started by ``BlockingCall``.
    public static var isBlockingThread: Bool {
        ThreadKey.blocking.get() != nil
    }

    static func enterThread() {
        ThreadKey.blocking.set(UnsafeMutableRawPointer(bitPattern: 1))
        cio_set_thread_name("cache-aside-blk")
    }
}

extension ThreadKey {
    /// Marks threads started by ``BlockingCall``.
    static let blocking = ThreadKey()
}
