import IOLoop

/// The byte stream under a connection: the seam where TLS (ElastiCache in-transit
/// encryption) will go.
///
/// A stream is non-blocking: `read` and `write` move what they can now and say
/// `.wouldBlock` otherwise; the connection waits for readiness of ``fd`` on its
/// ``IOLoop``. A TLS stream will wrap the same descriptor and report the readiness it
/// needs the same way. Every call happens either on the loop thread or under the
/// connection's lock, never at the same time as ``close()``.
protocol RedisByteStream: AnyObject, Sendable {
    /// The descriptor whose readiness drives the stream.
    var fd: Int32 { get }
    /// Reads what is available.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Socket.TransferResult
    /// Writes what the socket takes now.
    func write(_ bytes: UnsafeRawBufferPointer) -> Socket.TransferResult
    /// Closes the descriptor (called on the loop thread, after it is deregistered).
    func close()
}

/// A plain TCP or Unix domain socket.
final class PlainSocketStream: RedisByteStream {
    let fd: Int32

    init(fd: Int32) {
        self.fd = fd
    }

    /// Connects to `endpoint` without blocking a thread.
    static func connect(
        to endpoint: RESPConfiguration.Endpoint, loop: IOLoop, deadline: ContinuousClock.Instant
    ) async throws -> PlainSocketStream {
        switch endpoint {
        case .tcp(let host, let port):
            return PlainSocketStream(fd: try await Socket.connectTCP(host: host, port: port, loop: loop, deadline: deadline))
        case .unix(let path):
            return PlainSocketStream(fd: try await Socket.connectUnix(path: path, loop: loop, deadline: deadline))
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Socket.TransferResult {
        Socket.read(fd, into: buffer)
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> Socket.TransferResult {
        Socket.write(fd, bytes)
    }

    func close() {
        Socket.close(fd)
    }
}
