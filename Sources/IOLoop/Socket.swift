#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Non-blocking stream sockets: connect through an ``IOLoop``, then read and write
/// without ever blocking a thread.
public enum Socket {
    /// The outcome of one non-blocking `read` or `write`.
    public enum TransferResult: Sendable, Equatable {
        /// This many bytes moved.
        case transferred(Int)
        /// Nothing can move now; wait for readiness.
        case wouldBlock
        /// The peer closed the connection (reads only).
        case endOfFile
        /// The system call failed with this `errno`.
        case failed(Int32)
    }

    /// Connects to `host:port` over TCP without blocking: name resolution runs off
    /// Swift's cooperative pool (on a thread of its own, ``BlockingCall``) unless `host` is a numeric
    /// address, and the connect itself waits for writability on `loop`.
    ///
    /// Tries each resolved address in turn. The returned descriptor is non-blocking,
    /// close-on-exec, with `TCP_NODELAY` set; the caller owns it.
    public static func connectTCP(
        host: String, port: Int, loop: IOLoop, deadline: ContinuousClock.Instant
    ) async throws -> Int32 {
        let addresses = try await resolve(host: host, port: port)
        var lastError: any Error = IOError(operation: "connect to \(host):\(port)", code: EADDRNOTAVAIL)
        for address in addresses {
            try Task.checkCancellation()
            do {
                return try await connect(address: address, loop: loop, deadline: deadline, label: "\(host):\(port)")
            } catch let error as IOError {
                lastError = error
                if error.isTimeout { throw error }
            }
        }
        throw lastError
    }

    /// Connects to a Unix domain socket at `path` without blocking.
    public static func connectUnix(
        path: String, loop: IOLoop, deadline: ContinuousClock.Instant
    ) async throws -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        let bytes = Array(path.utf8)
        guard bytes.count < capacity else {
            throw IOError(operation: "connect to unix socket \(path) (path too long)", code: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let storage = withUnsafeBytes(of: addr) { Array($0) }
        let resolved = ResolvedAddress(family: AF_UNIX, bytes: storage)
        return try await connect(address: resolved, loop: loop, deadline: deadline, label: path)
    }

    /// One address to connect to, as the raw `sockaddr` bytes.
    struct ResolvedAddress: Sendable {
        var family: Int32
        var bytes: [UInt8]
    }

    static func resolve(host: String, port: Int) async throws -> [ResolvedAddress] {
        guard (0...65535).contains(port) else {
            throw IOError(operation: "resolve \(host):\(port) (invalid port)", code: EINVAL)
        }
        if let numeric = numericAddress(host: host, port: port) { return [numeric] }
        return try await BlockingCall.run { try blockingResolve(host: host, port: port) }
    }

    static func numericAddress(host: String, port: Int) -> ResolvedAddress? {
        let bareHost = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, bareHost, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
            return ResolvedAddress(family: AF_INET, bytes: withUnsafeBytes(of: v4) { Array($0) })
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, bareHost, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
            return ResolvedAddress(family: AF_INET6, bytes: withUnsafeBytes(of: v6) { Array($0) })
        }
        return nil
    }

    static func blockingResolve(host: String, port: Int) throws -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            let reason = String(cString: gai_strerror(rc))
            throw IOError.resolution(host: host, reason: reason)
        }
        defer { freeaddrinfo(first) }
        var out: [ResolvedAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let node = cursor {
            if let addr = node.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: addr, count: Int(node.pointee.ai_addrlen)))
                out.append(ResolvedAddress(family: node.pointee.ai_family, bytes: bytes))
            }
            cursor = node.pointee.ai_next
        }
        if out.isEmpty { throw IOError.resolution(host: host, reason: "no addresses") }
        return out
    }

    static func connect(
        address: ResolvedAddress, loop: IOLoop, deadline: ContinuousClock.Instant, label: String
    ) async throws -> Int32 {
        #if canImport(Darwin)
        let fd = socket(address.family, SOCK_STREAM, 0)
        #else
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #endif
        guard fd >= 0 else { throw IOError(operation: "socket", code: errno) }
        var ok = false
        defer { if !ok { _ = systemClose(fd) } }
        try setNonBlocking(fd)
        #if canImport(Darwin)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        if address.family == AF_INET || address.family == AF_INET6 {
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc = address.bytes.withUnsafeBytes { raw in
            raw.withMemoryRebound(to: sockaddr.self) { sa in
                systemConnect(fd, sa.baseAddress, socklen_t(raw.count))
            }
        }
        if rc != 0 {
            let code = errno
            guard code == EINPROGRESS || code == EAGAIN || code == EINTR else {
                throw IOError(operation: "connect to \(label)", code: code)
            }
            do {
                _ = try await loop.wait(for: .writable, on: fd, deadline: deadline)
            } catch let error as IOError where error.isTimeout {
                throw IOError.timeout(operation: "connect to \(label)")
            }
            var soError: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) == 0 else {
                throw IOError(operation: "connect to \(label)", code: errno)
            }
            if soError != 0 { throw IOError(operation: "connect to \(label)", code: soError) }
        }
        ok = true
        return fd
    }

    /// Puts `fd` in non-blocking mode.
    public static func setNonBlocking(_ fd: Int32) throws(IOError) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw IOError(operation: "fcntl(O_NONBLOCK)", code: errno)
        }
    }

    /// Reads what is available into `buffer` without blocking.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> TransferResult {
        while true {
            let n = systemRead(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .transferred(n) }
            if n == 0 { return .endOfFile }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            return .failed(code)
        }
    }

    /// Writes as much of `bytes` as the socket takes now, without blocking and without
    /// raising SIGPIPE.
    public static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> TransferResult {
        guard bytes.count > 0 else { return .transferred(0) }
        while true {
            #if canImport(Darwin)
            let n = send(fd, bytes.baseAddress, bytes.count, 0)
            #else
            let n = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            #endif
            if n >= 0 { return .transferred(n) }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            return .failed(code)
        }
    }

    /// Closes a descriptor this module handed out (one not registered with a loop).
    public static func close(_ fd: Int32) {
        _ = systemClose(fd)
    }
}

extension IOError {
    static func resolution(host: String, reason: String) -> IOError {
        var e = IOError(operation: "resolve \(host): \(reason)", code: EHOSTUNREACH)
        e.isTimeout = false
        return e
    }
}

private func systemConnect(_ fd: Int32, _ addr: UnsafePointer<sockaddr>?, _ len: socklen_t) -> Int32 {
    #if canImport(Glibc)
    return Glibc.connect(fd, addr, len)
    #elseif canImport(Musl)
    return Musl.connect(fd, addr, len)
    #else
    return Darwin.connect(fd, addr, len)
    #endif
}

private func systemRead(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.read(fd, buf, count)
    #elseif canImport(Musl)
    return Musl.read(fd, buf, count)
    #else
    return Darwin.read(fd, buf, count)
    #endif
}
