#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CacheAsideTLS
import Foundation
import IOLoop
import Testing

/// The TLS transform against a real TLS server (the TLS port of the Redis that
/// `scripts/dev-services` starts, with its throwaway CA), driven by a blocking socket on
/// a thread of its own. The transform itself never touches the socket.
@Suite struct TLSTransformTests {
    @Test func aVerifiedSessionCarriesBytesBothWays() async throws {
        let server = try TLSServer.fromEnvironment()
        let reply = try await BlockingCall.run { () throws -> String in
            let peer = try Peer(port: server.port)
            defer { peer.close() }
            let transform = try TLSClientContext(configuration: TLSClientConfiguration(trustRoots: .file(server.ca))).makeTransform(host: "localhost")
            #expect(try peer.handshake(transform) == .complete)
            #expect(transform.handshakeComplete)
            return try peer.exchange(transform, "*3\r\n$4\r\nAUTH\r\n$\(server.user.utf8.count)\r\n\(server.user)\r\n$\(server.password.utf8.count)\r\n\(server.password)\r\n*1\r\n$4\r\nPING\r\n", until: "+PONG\r\n")
        }
        #expect(reply == "+OK\r\n+PONG\r\n")
    }

    @Test func anIPAddressIsCheckedAgainstTheCertificatesAddresses() async throws {
        let server = try TLSServer.fromEnvironment()
        let status = try await BlockingCall.run { () throws -> TLSTransform.HandshakeStatus in
            let peer = try Peer(port: server.port)
            defer { peer.close() }
            let transform = try TLSClientContext(configuration: TLSClientConfiguration(trustRoots: .file(server.ca))).makeTransform(host: "127.0.0.1")
            return try peer.handshake(transform)
        }
        #expect(status == .complete)
    }

    @Test(arguments: [
        // An unrelated CA: the chain leads nowhere trusted.
        ("other-ca", nil as String?, TLSFailure.Reason.unknownCertificateAuthority, "not signed by a trusted CA"),
        // The right CA, but a name the certificate does not carry.
        ("ca", "cache.example.internal", .hostnameMismatch, "does not name cache.example.internal"),
        // An address the certificate does not carry.
        ("ca", "10.1.2.3", .hostnameMismatch, "does not name 10.1.2.3"),
        // The system's CAs know nothing of a throwaway CA.
        ("system", nil, .unknownCertificateAuthority, "not signed by a trusted CA"),
    ])
    func anUntrustedServerIsRefusedWithItsReason(trust: String, serverName: String?, reason: TLSFailure.Reason, words: String) async throws {
        let server = try TLSServer.fromEnvironment()
        let status = try await BlockingCall.run { () throws -> TLSTransform.HandshakeStatus in
            let peer = try Peer(port: server.port)
            defer { peer.close() }
            var configuration = TLSClientConfiguration()
            if trust != "system" { configuration.trustRoots = .file("\(server.directory)/\(trust).crt") }
            configuration.serverName = serverName
            return try peer.handshake(try TLSClientContext(configuration: configuration).makeTransform(host: "localhost"))
        }
        guard case .failed(let failure) = status else {
            Issue.record("handshake did not fail: \(status)")
            return
        }
        #expect(failure.reason == reason)
        #expect(failure.message.contains(words), "\(failure)")
    }

    @Test func withoutVerificationAnyCertificateIsAccepted() async throws {
        let server = try TLSServer.fromEnvironment()
        let status = try await BlockingCall.run { () throws -> TLSTransform.HandshakeStatus in
            let peer = try Peer(port: server.port)
            defer { peer.close() }
            var configuration = TLSClientConfiguration(trustRoots: .file("\(server.directory)/other-ca.crt"), serverName: "anything.example")
            configuration.verification = .insecureNoVerification
            return try peer.handshake(try TLSClientContext(configuration: configuration).makeTransform(host: "localhost"))
        }
        #expect(status == .complete)
    }

    /// Records received in one go are decrypted in pieces when the reader's buffer is
    /// small; what is left waits in the transform, and the transform says so, since the
    /// socket will not become readable for it again.
    @Test func decryptedBytesThatDidNotFitWaitInTheTransform() async throws {
        let server = try TLSServer.fromEnvironment()
        let outcome = try await BlockingCall.run { () throws -> (first: Int, buffered: Bool, rest: Int, after: Bool) in
            let peer = try Peer(port: server.port)
            defer { peer.close() }
            let transform = try TLSClientContext(configuration: TLSClientConfiguration(trustRoots: .file(server.ca))).makeTransform(host: "localhost")
            _ = try peer.handshake(transform)
            // Unauthenticated: the server answers with a NOAUTH error (~40 bytes).
            let command = Array("*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n".utf8)
            _ = command.withUnsafeBytes { transform.write($0) }
            try peer.sendPending(transform)
            // Wait until the whole reply is in the transform.
            var plaintext: [UInt8] = []
            let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 1)
            defer { small.deallocate() }
            var first = 0
            while first == 0 {
                try peer.receive(into: transform)
                if case .bytes(let n) = transform.read(into: small) {
                    first = n
                    plaintext += small[..<n]
                }
            }
            let buffered = transform.hasBufferedPlaintext
            // The rest comes out without feeding anything more.
            var rest = 0
            while case .bytes(let n) = transform.read(into: small) {
                rest += n
                plaintext += small[..<n]
            }
            _ = String(decoding: plaintext, as: UTF8.self)
            return (first, buffered, rest, transform.hasBufferedPlaintext)
        }
        #expect(outcome.first == 8)
        #expect(outcome.buffered)
        #expect(outcome.rest > 20)
        #expect(!outcome.after)
    }

    @Test func filesThatCannotBeUsedAreConfigurationErrors() throws {
        do {
            _ = try TLSClientContext(configuration: TLSClientConfiguration(trustRoots: .file("/nonexistent/ca.pem")))
            Issue.record("loaded a CA file that does not exist")
        } catch {
            #expect(error.reason == .configuration)
            #expect(error.message.contains("/nonexistent/ca.pem"))
        }
        var halfClient = TLSClientConfiguration()
        halfClient.certificateChainFile = "/nonexistent/client.crt"
        #expect(throws: TLSFailure.self) { try TLSClientContext(configuration: halfClient) }
    }

    @Test func aClientCertificateAndItsKeyLoad() throws {
        let server = try TLSServer.fromEnvironment()
        let context = try TLSClientContext(configuration: TLSClientConfiguration(
            trustRoots: .file(server.ca), certificateChainFile: "\(server.directory)/client.crt",
            privateKeyFile: "\(server.directory)/client.key"))
        #expect(context.configuration.certificateChainFile != nil)
        // A key that is not the certificate's is refused.
        do {
            _ = try TLSClientContext(configuration: TLSClientConfiguration(
                trustRoots: .file(server.ca), certificateChainFile: "\(server.directory)/client.crt",
                privateKeyFile: "\(server.directory)/server.key"))
            Issue.record("accepted a key that does not match the certificate")
        } catch {
            #expect(error.reason == .configuration)
            #expect(error.message.contains("does not match"))
        }
    }
}

/// The dev-services TLS server, from `REDIS_TLS_URL` and `DEV_SERVICES_TLS_DIR`.
struct TLSServer: Sendable {
    var port: Int
    var user: String
    var password: String
    var directory: String
    var ca: String { "\(directory)/ca.crt" }

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func fromEnvironment() throws -> TLSServer {
        let environment = ProcessInfo.processInfo.environment
        guard let url = environment["REDIS_TLS_URL"], let directory = environment["DEV_SERVICES_TLS_DIR"],
            let components = URLComponents(string: url), let port = components.port
        else {
            throw Missing(description: "REDIS_TLS_URL and DEV_SERVICES_TLS_DIR are not set: run the tests with `make test`, or export what `scripts/dev-services up` prints")
        }
        return TLSServer(port: port, user: components.user ?? "default", password: components.password ?? "", directory: directory)
    }
}

/// A blocking TCP socket that moves a transform's ciphertext (for the tests only).
final class Peer: @unchecked Sendable {
    let fd: Int32

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(port: Int) throws {
        #if canImport(Glibc)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            closeDescriptor(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): errno \(errno)")
        }
    }

    func close() {
        closeDescriptor(fd)
    }

    func sendPending(_ transform: TLSTransform) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 1)
        defer { buffer.deallocate() }
        while true {
            let n = transform.takeOutput(into: buffer)
            if n == 0 { return }
            var sent = 0
            while sent < n {
                let m = send(fd, buffer.baseAddress! + sent, n - sent, 0)
                guard m > 0 else { throw Failure(description: "send: errno \(errno)") }
                sent += m
            }
        }
    }

    func receive(into transform: TLSTransform) throws {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw Failure(description: n == 0 ? "the server closed the connection" : "recv: errno \(errno)") }
        buffer.withUnsafeBytes { transform.receive(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
    }

    func handshake(_ transform: TLSTransform) throws -> TLSTransform.HandshakeStatus {
        while true {
            let status = transform.handshake()
            try sendPending(transform)
            guard status == .needsInput else { return status }
            try receive(into: transform)
        }
    }

    /// Sends `request` and reads the reply until it ends with `suffix`.
    func exchange(_ transform: TLSTransform, _ request: String, until suffix: String) throws -> String {
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { transform.write($0) }
        try sendPending(transform)
        var reply: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 1)
        defer { buffer.deallocate() }
        while !String(decoding: reply, as: UTF8.self).hasSuffix(suffix) {
            try receive(into: transform)
            while case .bytes(let n) = transform.read(into: buffer) { reply += buffer[..<n] }
        }
        return String(decoding: reply, as: UTF8.self)
    }
}

private func closeDescriptor(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #else
    _ = Darwin.close(fd)
    #endif
}
