#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import IOLoop
import Synchronization
import Testing

private func socketPair() throws -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    #if canImport(Glibc)
    // Close-on-exec: a helper program that another test starts meanwhile must not keep
    // a copy (the peer would never see the end of the stream).
    let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    #else
    let rc = socketpair(AF_UNIX, SOCK_STREAM, 0, &fds)
    #endif
    try #require(rc == 0)
    try Socket.setNonBlocking(fds[0])
    try Socket.setNonBlocking(fds[1])
    return (fds[0], fds[1])
}

private func writeByte(_ fd: Int32) -> Socket.TransferResult {
    var b: UInt8 = 7
    return withUnsafeBytes(of: &b) { Socket.write(fd, $0) }
}

private final class Counter: Sendable {
    let value = Mutex<[Int]>([])
    func append(_ v: Int) { value.withLock { $0.append(v) } }
    var snapshot: [Int] { value.withLock { $0 } }
}

@Suite(.tags(.unit))
struct IOLoopTests {
    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func executeRunsWorkInOrderOnTheLoopThread(backend: IOLoop.Backend) async throws {
        let loop = IOLoop(name: "test-exec", backend: backend)
        defer { loop.shutdown() }
        let seen = Counter()
        let onLoop = Mutex(true)
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            for i in 0..<1000 {
                loop.execute {
                    if !loop.inLoop { onLoop.withLock { $0 = false } }
                    seen.append(i)
                    if i == 999 { cont.resume() }
                }
            }
        }
        #expect(seen.snapshot == Array(0..<1000))
        #expect(onLoop.withLock { $0 })
        #expect(!loop.inLoop)
    }

    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func timersFireInDeadlineOrderAndCancelledOnesDoNot(backend: IOLoop.Backend) async throws {
        let loop = IOLoop(name: "test-timer", backend: backend)
        defer { loop.shutdown() }
        let fired = Counter()
        let start = ContinuousClock.now
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            loop.schedule(after: .milliseconds(60)) { fired.append(3); cont.resume() }
            loop.schedule(after: .milliseconds(20)) { fired.append(1) }
            let cancelled = loop.schedule(after: .milliseconds(30)) { fired.append(99) }
            loop.schedule(after: .milliseconds(40)) { fired.append(2) }
            cancelled.cancel()
        }
        let elapsed = ContinuousClock.now - start
        #expect(fired.snapshot == [1, 2, 3])
        #expect(elapsed >= .milliseconds(60))
    }

    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func waitResumesWhenReadable(backend: IOLoop.Backend) async throws {
        let loop = IOLoop(name: "test-wait", backend: backend)
        defer { loop.shutdown() }
        let (a, b) = try socketPair()
        defer { Socket.close(a); Socket.close(b) }
        async let events = loop.wait(for: .readable, on: a, deadline: .now + .seconds(5))
        try await Task.sleep(for: .milliseconds(20))
        #expect(writeByte(b) == .transferred(1))
        let got = try await events
        #expect(got.contains(.readable))
        // The registration is gone: the descriptor can be waited on again.
        let again = try await loop.wait(for: .readable, on: a, deadline: .now + .seconds(5))
        #expect(again.contains(.readable))
    }

    @Test func waitTimesOutAtItsDeadline() async throws {
        let loop = IOLoop.shared
        let (a, b) = try socketPair()
        defer { Socket.close(a); Socket.close(b) }
        let start = ContinuousClock.now
        await #expect(throws: IOError.self) {
            _ = try await loop.wait(for: .readable, on: a, deadline: .now + .milliseconds(50))
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(45))
        #expect(elapsed < .seconds(5))
    }

    @Test func waitHonoursCancellation() async throws {
        let loop = IOLoop.shared
        let (a, b) = try socketPair()
        defer { Socket.close(a); Socket.close(b) }
        let task = Task { try await loop.wait(for: .readable, on: a) }
        try await Task.sleep(for: .milliseconds(20))
        let start = ContinuousClock.now
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func registeredHandlerSeesReadinessUntilDeregistered() async throws {
        final class Reader: IOHandler, @unchecked Sendable {
            let fd: Int32
            let total = Mutex(0)
            let done: Mutex<CheckedContinuation<Void, Never>?> = Mutex(nil)
            init(fd: Int32) { self.fd = fd }
            func ioReady(_ events: IOEvents) {
                var buf = [UInt8](repeating: 0, count: 64)
                let r = buf.withUnsafeMutableBytes { Socket.read(fd, into: $0) }
                if case .transferred(let n) = r {
                    let t = total.withLock { $0 += n; return $0 }
                    if t >= 3 { done.withLock { $0?.resume(); $0 = nil } }
                }
            }
        }
        let loop = IOLoop.shared
        let (a, b) = try socketPair()
        defer { Socket.close(b) }
        let reader = Reader(fd: a)
        let registration = try loop.register(fd: a, interest: .readable, handler: reader)
        await withCheckedContinuation { cont in
            reader.done.withLock { $0 = cont }
            _ = writeByte(b); _ = writeByte(b); _ = writeByte(b)
        }
        #expect(reader.total.withLock { $0 } == 3)
        registration.close()
        // Once the close has run on the loop thread, the peer sees end of file (the
        // loop may be busy with other tests' work: wait for it, up to a bound).
        var buf = [UInt8](repeating: 0, count: 8)
        var r = Socket.TransferResult.wouldBlock
        let deadline = ContinuousClock.now + .seconds(10)
        while r == .wouldBlock && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
            r = buf.withUnsafeMutableBytes { Socket.read(b, into: $0) }
        }
        #expect(r == .endOfFile)
    }

    /// Runs an empty job on the loop twice: once the second has run, the loop has
    /// polled and dispatched at least once since this was called.
    private func loopCycle(_ loop: IOLoop) async {
        for _ in 0..<2 {
            await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in loop.execute { cont.resume() } }
        }
    }

    @Test(.timeLimit(.minutes(1)), arguments: [IOLoop.Backend.automatic, .poll])
    func workAndTimersSubmittedFromTheLoopItselfRunWithoutAWakeUp(backend: IOLoop.Backend) async throws {
        let loop = IOLoop(name: "test-self", backend: backend)
        defer { loop.shutdown() }
        let steps = Counter()
        // Each step is submitted by the previous one, on the loop thread (which never
        // wakes itself): the loop must notice them before it sleeps.
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            loop.execute {
                steps.append(1)
                loop.schedule(after: .milliseconds(1)) {
                    steps.append(2)
                    loop.execute {
                        steps.append(3)
                        loop.schedule(after: .zero) {
                            steps.append(4)
                            cont.resume()
                        }
                    }
                }
            }
        }
        #expect(steps.snapshot == [1, 2, 3, 4])
    }

    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func interestChangesTakeEffectAndRepeatedOnesAreHarmless(backend: IOLoop.Backend) async throws {
        final class Seen: IOHandler, @unchecked Sendable {
            let count = Mutex(0)
            func ioReady(_ events: IOEvents) { if events.contains(.readable) { count.withLock { $0 += 1 } } }
        }
        let loop = IOLoop(name: "test-interest", backend: backend)
        defer { loop.shutdown() }
        let (a, b) = try socketPair()
        defer { Socket.close(a); Socket.close(b) }
        let seen = Seen()
        let registration = try loop.register(fd: a, interest: .readable, handler: seen)
        // Off (twice: the second call is answered from the registration's own copy).
        try registration.setInterest([])
        try registration.setInterest([])
        _ = writeByte(b)
        await loopCycle(loop)
        await loopCycle(loop)
        #expect(seen.count.withLock { $0 } == 0, "no report while the interest is empty")
        // On again (twice): the unread byte is reported, level-triggered, until read.
        try registration.setInterest(.readable)
        try registration.setInterest(.readable)
        let deadline = ContinuousClock.now + .seconds(30)
        while seen.count.withLock({ $0 }) == 0 && ContinuousClock.now < deadline {
            await loopCycle(loop)
        }
        #expect(seen.count.withLock { $0 } > 0)
        // Off once more: the reports stop although the byte is still unread.
        try registration.setInterest([])
        await loopCycle(loop)
        let stopped = seen.count.withLock { $0 }
        await loopCycle(loop)
        await loopCycle(loop)
        #expect(seen.count.withLock { $0 } == stopped)
        registration.deregister()
    }

    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func readinessOfManyDescriptorsInOnePollReachesEachHandler(backend: IOLoop.Backend) async throws {
        final class Seen: IOHandler, @unchecked Sendable {
            let fd: Int32
            let bytes = Mutex(0)
            init(fd: Int32) { self.fd = fd }
            func ioReady(_ events: IOEvents) {
                var buf = [UInt8](repeating: 0, count: 16)
                if case .transferred(let n) = buf.withUnsafeMutableBytes({ Socket.read(fd, into: $0) }) {
                    bytes.withLock { $0 += n }
                }
            }
        }
        let loop = IOLoop(name: "test-batch", backend: backend)
        defer { loop.shutdown() }
        let pairs: [(Int32, Int32)] = try (0..<8).map { _ in try socketPair() }
        defer { for (a, b) in pairs { Socket.close(a); Socket.close(b) } }
        let handlers = pairs.map { Seen(fd: $0.0) }
        // Registered and written to from a job on the loop, so that every descriptor is
        // ready by the loop's next poll.
        let registrations: [IORegistration] = try await withCheckedThrowingContinuation { cont in
            loop.execute {
                do {
                    var registrations: [IORegistration] = []
                    for (i, (a, b)) in pairs.enumerated() {
                        registrations.append(try loop.register(fd: a, interest: .readable, handler: handlers[i]))
                        for _ in 0...i { _ = writeByte(b) }
                    }
                    cont.resume(returning: registrations)
                } catch {
                    cont.resume(throwing: error)
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while handlers.enumerated().contains(where: { i, h in h.bytes.withLock { $0 } < i + 1 }) && ContinuousClock.now < deadline {
            await loopCycle(loop)
        }
        #expect(handlers.map { $0.bytes.withLock { $0 } } == Array(1...8), "each handler read its own descriptor's bytes")
        for r in registrations { r.deregister() }
    }

    @Test func taskExecutorPreferenceRunsOnTheLoop() async throws {
        let loop = IOLoop(name: "test-executor")
        defer { loop.shutdown() }
        let onLoop = await withTaskExecutorPreference(loop) {
            await Task.yield()
            return loop.inLoop
        }
        #expect(onLoop)
    }

    @Test func connectRefusedIsAClearError() async throws {
        // Bind a port, then close it, so nothing listens there.
        let port = try freePort()
        await #expect(throws: IOError.self) {
            _ = try await Socket.connectTCP(host: "127.0.0.1", port: port, loop: .shared, deadline: .now + .seconds(10))
        }
        do {
            _ = try await Socket.connectTCP(host: "127.0.0.1", port: port, loop: .shared, deadline: .now + .seconds(10))
        } catch let error as IOError {
            #expect(error.code == ECONNREFUSED)
            #expect(error.description.contains("127.0.0.1:\(port)"))
        }
    }

    @Test func connectsToALocalListenerByName() async throws {
        let (listener, port) = try listen()
        defer { Socket.close(listener) }
        let fd = try await Socket.connectTCP(host: "localhost", port: port, loop: .shared, deadline: .now + .seconds(10))
        defer { Socket.close(fd) }
        #expect(fd >= 0)
        #expect(writeByte(fd) == .transferred(1))
    }

    @Test func unresolvableHostIsAnError() async throws {
        await #expect(throws: IOError.self) {
            _ = try await Socket.connectTCP(host: "no-such-host.invalid", port: 1, loop: .shared, deadline: .now + .seconds(5))
        }
    }
}

private func listen() throws -> (Int32, Int) {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    try #require(fd >= 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(rc == 0)
    try #require(Glibc.listen(fd, 16) == 0)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

private func freePort() throws -> Int {
    let (fd, port) = try listen()
    Socket.close(fd)
    return port
}

extension Tag {
    @Tag static var unit: Self
}

@Suite(.tags(.unit))
struct BlockingCallTests {
    @Test func blockingCallsRunOnThreadsOfTheirOwn() async throws {
        #expect(!BlockingCall.isBlockingThread)
        #expect(await BlockingCall.run { BlockingCall.isBlockingThread })
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await BlockingCall.run { () throws -> Int in throw Boom() } }
    }

    /// Blocking calls parked on the library's threads (a DNS server that does not
    /// answer, say) leave every thread that runs tasks free: tasks started meanwhile
    /// all run while the calls are still parked. (On Linux, Dispatch's global queues
    /// run every task; parking the calls there stopped the whole process.)
    @Test func parkedBlockingCallsLeaveTasksRunning() async throws {
        let gate = Gate()
        let parkedCount = 4 * max(ProcessInfo.processInfo.activeProcessorCount, 2)
        let parked = (0..<parkedCount).map { _ in Task { await BlockingCall.run { gate.wait() } } }
        let ran = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<200 { group.addTask { i } }
            return try await group.reduce(0, +)
        }
        #expect(ran == (0..<200).reduce(0, +))
        #expect(!gate.isOpen, "the tasks ran while every blocking call was still parked")
        gate.open()
        for task in parked { await task.value }
    }
}

/// A gate that blocking threads wait at until it opens.
private final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var opened = false
    var isOpen: Bool { condition.lock(); defer { condition.unlock() }; return opened }
    func wait() {
        condition.lock()
        while !opened { condition.wait() }
        condition.unlock()
    }
    func open() {
        condition.lock()
        opened = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Descriptors closed behind the loop's back (libpq closes its socket when it finds a
/// connection lost) and their numbers reused at once by a new connection.
@Suite(.tags(.unit))
struct ReusedDescriptorTests {
    final class Readiness: IOHandler, @unchecked Sendable {
        let seen = Mutex<IOEvents>([])
        func ioReady(_ events: IOEvents) { seen.withLock { $0.formUnion(events) } }
    }

    /// Moves a new socket pair onto the number `fd` had (as the kernel would on reuse).
    private func reuse(_ fd: Int32) throws -> Int32 {
        let (fresh, peer) = try socketPair()
        try #require(dup2(fresh, fd) == fd)
        Socket.close(fresh)
        return peer
    }

    @Test(arguments: [IOLoop.Backend.automatic, .poll])
    func aStaleRegistrationNeverTouchesTheNewOwnerOfItsNumber(backend: IOLoop.Backend) async throws {
        let loop = IOLoop(name: "test-reuse", backend: backend)
        defer { loop.shutdown() }
        let (a, b) = try socketPair()
        let stale = try loop.register(fd: a, interest: .readable, handler: Readiness())
        // Closed without deregistering, and the number reused by a new socket.
        Socket.close(b)
        let peer = try reuse(a)
        defer { Socket.close(a); Socket.close(peer) }
        let fresh = Readiness()
        let registration = try loop.register(fd: a, interest: .readable, handler: fresh)
        // The stale registration changes its interest and goes away: the new one must
        // keep its readiness reports.
        try stale.setInterest([.readable, .writable])
        stale.deregister()
        _ = writeByte(peer)
        // Wait for the report (a lost one used to hang here forever), up to a deadline.
        let deadline = ContinuousClock.now + .seconds(30)
        while !fresh.seen.withLock({ $0 }).contains(.readable) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(fresh.seen.withLock { $0 }.contains(.readable), "the new owner of the number got its readiness report")
        registration.deregister()
    }
}
