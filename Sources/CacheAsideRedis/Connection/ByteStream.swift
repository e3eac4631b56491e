import CacheAsideTLS
import IOLoop

/// The outcome of one non-blocking stream operation.
enum StreamResult: Equatable {
    /// This many (plaintext) bytes moved.
    case transferred(Int)
    /// Nothing can move now; wait for readiness.
    case wouldBlock
    /// The peer closed the connection.
    case endOfFile
    /// The stream failed.
    case failed(RESPError)
}

/// The byte stream under a connection: a plain socket, or TLS over one.
///
/// Non-blocking: `read` and `write` move what they can now and say `.wouldBlock`
/// otherwise; the connection then waits for the readiness of ``fd`` on its ``IOLoop``.
/// Its user (the connection's I/O owner, one at a time) never reads and writes at once.
///
/// A TLS stream can hold input that needs no more socket reads (decrypted records, or
/// records received but not decrypted yet): ``hasBufferedInput`` says so, and the owner
/// drains it without waiting for readiness. It can also hold output that the socket did
/// not take yet (ciphertext of bytes `write` accepted): ``hasPendingOutput``; the owner
/// then waits for writability and calls ``flush()``.
protocol RESPByteStream: AnyObject, Sendable {
    /// The descriptor whose readiness drives the stream.
    var fd: Int32 { get }
    /// Reads what is available, with at most one read from the socket.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamResult
    /// Writes what the socket takes now; returns how many of `bytes` were accepted.
    func write(_ bytes: UnsafeRawBufferPointer) -> StreamResult
    /// Input readable without the socket becoming readable again.
    var hasBufferedInput: Bool { get }
    /// Accepted bytes the socket has not taken yet.
    var hasPendingOutput: Bool { get }
    /// Writes pending output: `.transferred(0)` once none is left, `.wouldBlock` if
    /// some is.
    func flush() -> StreamResult
    /// Ends the session politely where the protocol has a way (TLS close_notify), then
    /// closes the descriptor. Called once, after the descriptor left the loop.
    func close()
}

/// A plain TCP or Unix domain socket.
final class PlainSocketStream: RESPByteStream {
    let fd: Int32
    private let endpoint: String

    init(fd: Int32, endpoint: String) {
        self.fd = fd
        self.endpoint = endpoint
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamResult {
        switch Socket.read(fd, into: buffer) {
        case .transferred(let n): return .transferred(n)
        case .wouldBlock: return .wouldBlock
        case .endOfFile: return .endOfFile
        case .failed(let code): return .failed(.connection(IOError(operation: "read from \(endpoint)", code: code).description))
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> StreamResult {
        switch Socket.write(fd, bytes) {
        case .transferred(let n): return .transferred(n)
        case .wouldBlock: return .wouldBlock
        case .endOfFile: return .endOfFile
        case .failed(let code): return .failed(.connection(IOError(operation: "write to \(endpoint)", code: code).description))
        }
    }

    var hasBufferedInput: Bool { false }
    var hasPendingOutput: Bool { false }
    func flush() -> StreamResult { .transferred(0) }

    func close() {
        Socket.close(fd)
    }
}

/// TLS over a socket: a ``TLSTransform`` (OpenSSL on memory buffers) whose ciphertext
/// this stream moves to and from the socket.
final class TLSSocketStream: RESPByteStream, @unchecked Sendable {
    let fd: Int32
    private let endpoint: String
    private let transform: TLSTransform
    /// Ciphertext from the socket, before it goes into the transform.
    private let cipherIn: UnsafeMutableRawBufferPointer
    /// Ciphertext taken from the transform that the socket did not take yet.
    private let cipherOut: UnsafeMutableRawBufferPointer
    private var cipherOutStart = 0
    private var cipherOutEnd = 0

    init(fd: Int32, endpoint: String, transform: TLSTransform) {
        self.fd = fd
        self.endpoint = endpoint
        self.transform = transform
        self.cipherIn = .allocate(byteCount: 64 * 1024, alignment: 16)
        self.cipherOut = .allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        cipherIn.deallocate()
        cipherOut.deallocate()
    }

    /// Runs the TLS handshake on the connected socket, waiting for readiness on `loop`
    /// (the socket is not registered with it yet), until `deadline`.
    func handshake(loop: IOLoop, deadline: ContinuousClock.Instant, timeout: Duration) async throws {
        while true {
            let status = transform.handshake()
            if case .failed(let failure) = status { throw RESPError(tls: failure, endpoint: endpoint) }
            // Whatever the step produced goes out first.
            while hasPendingOutput || transform.pendingOutputCount > 0 {
                switch flush() {
                case .failed(let error): throw error
                case .endOfFile: throw handshakeClosed()
                case .wouldBlock: _ = try await waitFor(.writable, loop: loop, deadline: deadline, timeout: timeout)
                case .transferred: break
                }
            }
            if status == .complete { return }
            _ = try await waitFor(.readable, loop: loop, deadline: deadline, timeout: timeout)
            switch Socket.read(fd, into: cipherIn) {
            case .transferred(let n):
                transform.receive(UnsafeRawBufferPointer(rebasing: cipherIn[..<n]))
            case .wouldBlock:
                continue
            case .endOfFile:
                throw handshakeClosed()
            case .failed(let code):
                throw RESPError.connection(IOError(operation: "TLS handshake with \(endpoint)", code: code).description)
            }
        }
    }

    private func waitFor(_ events: IOEvents, loop: IOLoop, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> IOEvents {
        do {
            return try await loop.wait(for: events, on: fd, deadline: deadline)
        } catch let error as IOError where error.isTimeout {
            throw RESPError.timeout("TLS handshake with \(endpoint) timed out after \(timeout): no answer (does the server speak TLS on this port?)")
        }
    }

    private func handshakeClosed() -> RESPError {
        RESPError(
            tls: TLSFailure(
                reason: .notTLS,
                message: "the server closed the connection during the TLS handshake (does it speak TLS on this port?)"),
            endpoint: endpoint)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamResult {
        if !transform.hasBufferedPlaintext {
            switch Socket.read(fd, into: cipherIn) {
            case .transferred(let n):
                transform.receive(UnsafeRawBufferPointer(rebasing: cipherIn[..<n]))
            case .wouldBlock:
                return .wouldBlock
            case .endOfFile:
                return .endOfFile
            case .failed(let code):
                return .failed(.connection(IOError(operation: "read from \(endpoint)", code: code).description))
            }
        }
        let result = transform.read(into: buffer)
        // Reading can make the session answer (a TLS 1.3 key update): send it along.
        if transform.pendingOutputCount > 0 || hasPendingOutput { _ = flush() }
        switch result {
        case .bytes(let n): return .transferred(n)
        case .needsInput: return .wouldBlock
        case .closed: return .endOfFile
        case .failed(let failure): return .failed(RESPError(tls: failure, endpoint: endpoint))
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> StreamResult {
        if hasPendingOutput {
            switch flush() {
            case .transferred: break
            case let other: return other
            }
        }
        // Encrypt a chunk (one buffer of ciphertext at most), then send it.
        let chunk = UnsafeRawBufferPointer(rebasing: bytes[..<min(bytes.count, 32 * 1024)])
        switch transform.write(chunk) {
        case .failure(let failure): return .failed(RESPError(tls: failure, endpoint: endpoint))
        case .success(let accepted):
            switch flush() {
            case .failed(let error): return .failed(error)
            case .endOfFile: return .endOfFile
            case .transferred, .wouldBlock: return .transferred(accepted)
            }
        }
    }

    var hasBufferedInput: Bool { transform.hasBufferedPlaintext }

    var hasPendingOutput: Bool { cipherOutStart < cipherOutEnd }

    func flush() -> StreamResult {
        while true {
            if cipherOutStart == cipherOutEnd {
                cipherOutStart = 0
                cipherOutEnd = transform.takeOutput(into: cipherOut)
                if cipherOutEnd == 0 { return .transferred(0) }
            }
            switch Socket.write(fd, UnsafeRawBufferPointer(rebasing: cipherOut[cipherOutStart..<cipherOutEnd])) {
            case .transferred(let n):
                cipherOutStart += n
            case .wouldBlock:
                return .wouldBlock
            case .endOfFile:
                return .endOfFile
            case .failed(let code):
                return .failed(explainFailedWrite(code))
            }
        }
    }

    func close() {
        transform.shutdown()
        _ = flush()
        Socket.close(fd)
    }

    /// A write the peer reset: a TLS server that refuses the session (a missing client
    /// certificate, in TLS 1.3 only known after the client's handshake is done) sends
    /// an alert and closes, and the client's next write meets the reset. The alert may
    /// already be in the socket: read it, so that the error says why.
    private func explainFailedWrite(_ code: Int32) -> RESPError {
        let plain = RESPError.connection(IOError(operation: "write to \(endpoint)", code: code).description)
        guard case .transferred(let n) = Socket.read(fd, into: cipherIn), n > 0 else { return plain }
        transform.receive(UnsafeRawBufferPointer(rebasing: cipherIn[..<n]))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 1)
        defer { scratch.deallocate() }
        while true {
            switch transform.read(into: scratch) {
            case .failed(let failure): return RESPError(tls: failure, endpoint: endpoint)
            case .bytes: continue
            case .needsInput, .closed: return plain
            }
        }
    }
}

/// Opens the stream of a connection: TCP (resolving the host name again on every
/// call) or a Unix socket, then TLS if configured.
enum StreamOpener {
    static func open(
        _ configuration: RESPConfiguration, tls: TLSClientContext?, loop: IOLoop, deadline: ContinuousClock.Instant
    ) async throws -> any RESPByteStream {
        let endpoint = configuration.endpoint.description
        switch configuration.endpoint {
        case .tcp(let host, let port):
            let fd = try await Socket.connectTCP(host: host, port: port, loop: loop, deadline: deadline)
            guard let tls else { return PlainSocketStream(fd: fd, endpoint: endpoint) }
            do {
                let transform: TLSTransform
                do {
                    transform = try tls.makeTransform(host: host)
                } catch {
                    throw RESPError(tls: error, endpoint: endpoint)
                }
                let stream = TLSSocketStream(fd: fd, endpoint: endpoint, transform: transform)
                try await stream.handshake(loop: loop, deadline: deadline, timeout: configuration.connectTimeout)
                return stream
            } catch {
                Socket.close(fd)
                throw error
            }
        case .unix(let path):
            let fd = try await Socket.connectUnix(path: path, loop: loop, deadline: deadline)
            return PlainSocketStream(fd: fd, endpoint: endpoint)
        }
    }
}
