#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CIOLoopShims

/// One ready descriptor, named by its registration id (0 is the loop's own wake-up).
struct PollerEvent {
    var id: UInt64
    var events: IOEvents
}

typealias RegistrationSnapshot = [(fd: Int32, id: UInt64, interest: IOEvents)]

/// The operating system's readiness mechanism behind an ``IOLoop``.
protocol Poller: AnyObject, Sendable {
    /// Whether the loop must pass a snapshot of its registrations to every `wait`.
    var needsRegistrationSnapshot: Bool { get }
    /// Whether a change of registrations must wake the loop to take effect.
    var needsWakeOnChange: Bool { get }
    func add(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError)
    func modify(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError)
    func remove(fd: Int32)
    /// Waits (only on the loop thread) and fills `events`; returns how many.
    func wait(events: inout [PollerEvent], timeout: Duration?, snapshot: RegistrationSnapshot) -> Int
    /// Wakes a `wait` in progress, from any thread.
    func wake()
    func drainWake()
    func close()
}

func makePoller(backend: IOLoop.Backend) throws(IOError) -> any Poller {
    if backend == .automatic && cio_has_epoll() == 1 { return try EpollPoller() }
    return try PollPoller()
}

func timeoutMilliseconds(_ timeout: Duration?) -> Int32 {
    guard let timeout else { return -1 }
    let (seconds, attoseconds) = timeout.components
    if seconds < 0 { return 0 }
    if seconds > 86_400 { return 86_400_000 }
    // Round up so that a timer is never woken for too early.
    let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    return Int32(ms)
}

/// Linux backend: epoll, woken by an eventfd.
final class EpollPoller: Poller, @unchecked Sendable {
    private let epfd: Int32
    private let wakeFD: Int32
    private var raw: [cio_event]

    var needsRegistrationSnapshot: Bool { false }
    var needsWakeOnChange: Bool { false }

    init() throws(IOError) {
        let epfd = cio_epoll_create()
        guard epfd >= 0 else { throw IOError(operation: "epoll_create1", code: errno) }
        let wakeFD = cio_eventfd()
        guard wakeFD >= 0 else {
            let code = errno
            _ = systemClose(epfd)
            throw IOError(operation: "eventfd", code: code)
        }
        guard cio_epoll_ctl(epfd, Int32(CIO_CTL_ADD), wakeFD, UInt32(CIO_EV_IN), 0) == 0 else {
            let code = errno
            _ = systemClose(epfd)
            _ = systemClose(wakeFD)
            throw IOError(operation: "epoll_ctl", code: code)
        }
        self.epfd = epfd
        self.wakeFD = wakeFD
        self.raw = [cio_event](repeating: cio_event(), count: 256)
    }

    private func mask(_ interest: IOEvents) -> UInt32 {
        var m = UInt32(CIO_EV_RDHUP)
        if interest.contains(.readable) { m |= UInt32(CIO_EV_IN) }
        if interest.contains(.writable) { m |= UInt32(CIO_EV_OUT) }
        return m
    }

    func add(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError) {
        guard cio_epoll_ctl(epfd, Int32(CIO_CTL_ADD), fd, mask(interest), id) == 0 else {
            throw IOError(operation: "epoll_ctl(ADD)", code: errno)
        }
    }

    func modify(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError) {
        guard cio_epoll_ctl(epfd, Int32(CIO_CTL_MOD), fd, mask(interest), id) == 0 else {
            throw IOError(operation: "epoll_ctl(MOD)", code: errno)
        }
    }

    func remove(fd: Int32) {
        _ = cio_epoll_ctl(epfd, Int32(CIO_CTL_DEL), fd, 0, 0)
    }

    func wait(events: inout [PollerEvent], timeout: Duration?, snapshot: RegistrationSnapshot) -> Int {
        let ms = timeoutMilliseconds(timeout)
        let capacity = Int32(min(raw.count, events.count))
        let n = raw.withUnsafeMutableBufferPointer { buf in
            cio_epoll_wait(epfd, buf.baseAddress, capacity, ms)
        }
        guard n > 0 else { return 0 }
        for i in 0..<Int(n) {
            let e = raw[i]
            var out: IOEvents = []
            if e.events & UInt32(CIO_EV_IN) != 0 { out.insert(.readable) }
            if e.events & UInt32(CIO_EV_OUT) != 0 { out.insert(.writable) }
            if e.events & UInt32(CIO_EV_ERR | CIO_EV_HUP | CIO_EV_RDHUP) != 0 { out.insert(.hangup) }
            events[i] = PollerEvent(id: e.data, events: out)
        }
        return Int(n)
    }

    func wake() {
        _ = cio_eventfd_signal(wakeFD)
    }

    func drainWake() {
        _ = cio_eventfd_drain(wakeFD)
    }

    func close() {
        _ = systemClose(wakeFD)
        _ = systemClose(epfd)
    }
}

/// Portable backend: `poll(2)` over a snapshot of the registrations, woken by a pipe.
final class PollPoller: Poller, @unchecked Sendable {
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private var fds: [pollfd] = []
    private var ids: [UInt64] = []

    var needsRegistrationSnapshot: Bool { true }
    var needsWakeOnChange: Bool { true }

    // The snapshot the loop passes to every wait is the whole registration state.
    func add(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError) {}
    func modify(fd: Int32, id: UInt64, interest: IOEvents) throws(IOError) {}
    func remove(fd: Int32) {}

    init() throws(IOError) {
        var pair: [Int32] = [0, 0]
        guard pipe(&pair) == 0 else { throw IOError(operation: "pipe", code: errno) }
        for fd in pair {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = pair[0]
        wakeWrite = pair[1]
    }

    func wait(events: inout [PollerEvent], timeout: Duration?, snapshot: RegistrationSnapshot) -> Int {
        fds.removeAll(keepingCapacity: true)
        ids.removeAll(keepingCapacity: true)
        fds.append(pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0))
        ids.append(0)
        for entry in snapshot {
            var mask: Int16 = 0
            if entry.interest.contains(.readable) { mask |= Int16(POLLIN) }
            if entry.interest.contains(.writable) { mask |= Int16(POLLOUT) }
            fds.append(pollfd(fd: entry.fd, events: mask, revents: 0))
            ids.append(entry.id)
        }
        let n = fds.withUnsafeMutableBufferPointer { buf in
            poll(buf.baseAddress, nfds_t(buf.count), timeoutMilliseconds(timeout))
        }
        guard n > 0 else { return 0 }
        var count = 0
        for (i, p) in fds.enumerated() where p.revents != 0 && count < events.count {
            var out: IOEvents = []
            if p.revents & Int16(POLLIN) != 0 { out.insert(.readable) }
            if p.revents & Int16(POLLOUT) != 0 { out.insert(.writable) }
            if p.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { out.insert(.hangup) }
            events[count] = PollerEvent(id: ids[i], events: out)
            count += 1
        }
        return count
    }

    func wake() {
        var one: UInt8 = 1
        _ = write(wakeWrite, &one, 1)
    }

    func drainWake() {
        var buf = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &buf, buf.count) > 0 {}
    }

    func close() {
        _ = systemClose(wakeRead)
        _ = systemClose(wakeWrite)
    }
}
