import COpenSSL

/// One client TLS session as a byte transform: ciphertext in, plaintext out, and the
/// other way round. It never touches a socket; its owner moves the bytes.
///
/// OpenSSL works on two memory buffers: what the peer sent (fed with
/// ``receive(_:)``), and what must go to the peer (taken with ``takeOutput(into:)``).
/// The owner:
/// 1. drives the ``handshake()`` until it completes, sending the pending output after
///    each step and feeding what the peer answers;
/// 2. then reads plaintext with ``read(into:)``, which decrypts what was received, and
///    writes plaintext with ``write(_:)``, which encrypts into the pending output;
/// 3. after a read, sends any pending output too (TLS 1.3 sends key updates, for
///    example).
///
/// Decrypted bytes can wait in the transform while the socket has nothing more to
/// read: ``hasBufferedPlaintext`` says so, and the owner must drain them without waiting
/// for the socket to become readable.
///
/// Not thread-safe: one owner uses a transform at a time, and never reads and writes
/// at once.
public final class TLSTransform: @unchecked Sendable {
    private let ssl: OpaquePointer
    private let incoming: OpaquePointer  // rbio: what the peer sent
    private let outgoing: OpaquePointer  // wbio: what must go to the peer
    private let context: TLSClientContext  // kept alive with the session
    private let host: String
    /// The last read found no complete record: nothing is decryptable until more
    /// ciphertext comes.
    private var starved = false

    /// True once the handshake completed.
    public private(set) var handshakeComplete = false

    init(context: TLSClientContext, host: String) throws(TLSFailure) {
        clearErrors()
        guard let ssl = SSL_new(context.context) else {
            throw TLSFailure(reason: .internalError, message: "cannot create a TLS session: \(openSSLErrors())")
        }
        guard let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSFailure(reason: .internalError, message: "cannot create TLS buffers: \(openSSLErrors())")
        }
        // An empty input buffer means "wait for more", not end of stream.
        _ = cacheaside_BIO_set_mem_eof_return(incoming, -1)
        _ = cacheaside_BIO_set_mem_eof_return(outgoing, -1)
        SSL_set_bio(ssl, incoming, outgoing)  // the session owns both now
        SSL_set_connect_state(ssl)
        self.ssl = ssl
        self.incoming = incoming
        self.outgoing = outgoing
        self.context = context
        self.host = host

        if context.configuration.verification == .full {
            if isIPAddress(host) {
                let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
                guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), bare) == 1 else {
                    throw TLSFailure(reason: .configuration, message: "cannot verify the IP address \(host): \(openSSLErrors())")
                }
            } else {
                guard SSL_set1_host(ssl, host) == 1 else {
                    throw TLSFailure(reason: .configuration, message: "cannot verify the host name \(host): \(openSSLErrors())")
                }
            }
        }
        // SNI carries DNS names only (RFC 6066), never an IP address.
        if !isIPAddress(host), !host.isEmpty {
            guard cacheaside_SSL_set_tlsext_host_name(ssl, host) == 1 else {
                throw TLSFailure(reason: .configuration, message: "cannot send the server name \(host): \(openSSLErrors())")
            }
        }
    }

    deinit {
        SSL_free(ssl)
    }

    // MARK: - Handshake

    /// Where the handshake stands.
    public enum HandshakeStatus: Sendable, Equatable {
        /// Done: the server is verified (unless verification is off).
        case complete
        /// Send ``pendingOutputCount`` bytes (if any), then feed the peer's answer and
        /// call ``handshake()`` again.
        case needsInput
        /// The handshake failed; never fall back to plain text.
        case failed(TLSFailure)
    }

    /// Advances the handshake with what was received so far.
    public func handshake() -> HandshakeStatus {
        if handshakeComplete { return .complete }
        clearErrors()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            handshakeComplete = true
            return .complete
        }
        let error = SSL_get_error(ssl, rc)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE {
            return .needsInput
        }
        return .failed(failure(sslError: error, during: "handshake with \(host)"))
    }

    // MARK: - Bytes from the peer

    /// Ciphertext received from the peer.
    public func receive(_ ciphertext: UnsafeRawBufferPointer) {
        guard let base = ciphertext.baseAddress, ciphertext.count > 0 else { return }
        var offset = 0
        while offset < ciphertext.count {
            let n = BIO_write(incoming, base + offset, Int32(min(ciphertext.count - offset, Int(Int32.max))))
            if n <= 0 { break }  // a memory buffer only refuses when out of memory
            offset += Int(n)
        }
        starved = false
    }

    /// The outcome of a ``read(into:)``.
    public enum ReadResult: Sendable, Equatable {
        /// This many plaintext bytes were decrypted into the buffer.
        case bytes(Int)
        /// Nothing complete to decrypt: feed more ciphertext.
        case needsInput
        /// The peer closed the TLS session (close_notify).
        case closed
        /// The session failed (a bad record, an alert from the peer).
        case failed(TLSFailure)
    }

    /// Decrypts what was received into `buffer`, as much as is complete and fits.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> ReadResult {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .bytes(0) }
        var total = 0
        while total < buffer.count {
            clearErrors()
            let n = SSL_read(ssl, base + total, Int32(min(buffer.count - total, Int(Int32.max))))
            if n > 0 {
                total += Int(n)
                continue
            }
            let error = SSL_get_error(ssl, n)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE {
                starved = true
                break
            }
            if total > 0 { break }  // report the bytes now; the error comes again next time
            if error == SSL_ERROR_ZERO_RETURN { return .closed }
            return .failed(failure(sslError: error, during: "reading from \(host)"))
        }
        return total > 0 ? .bytes(total) : .needsInput
    }

    /// True when ``read(into:)`` would produce plaintext without more ciphertext: a
    /// decrypted record not fully read, or received records not yet decrypted.
    public var hasBufferedPlaintext: Bool {
        SSL_pending(ssl) > 0 || (!starved && BIO_ctrl_pending(incoming) > 0)
    }

    // MARK: - Bytes to the peer

    /// Encrypts plaintext into the pending output; returns how many plaintext bytes
    /// were taken (all of them, unless OpenSSL fails).
    public func write(_ plaintext: UnsafeRawBufferPointer) -> Result<Int, TLSFailure> {
        guard let base = plaintext.baseAddress, plaintext.count > 0 else { return .success(0) }
        var total = 0
        while total < plaintext.count {
            clearErrors()
            let n = SSL_write(ssl, base + total, Int32(min(plaintext.count - total, 1 << 20)))
            if n > 0 {
                total += Int(n)
                continue
            }
            let error = SSL_get_error(ssl, n)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { break }
            return .failure(failure(sslError: error, during: "writing to \(host)"))
        }
        return .success(total)
    }

    /// Bytes waiting to be sent to the peer.
    public var pendingOutputCount: Int {
        Int(BIO_ctrl_pending(outgoing))
    }

    /// Moves pending output into `buffer`; returns how many bytes.
    public func takeOutput(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0, BIO_ctrl_pending(outgoing) > 0 else { return 0 }
        let n = BIO_read(outgoing, base, Int32(min(buffer.count, Int(Int32.max))))
        return n > 0 ? Int(n) : 0
    }

    /// Queues a close_notify for the peer (send the pending output afterwards, if the
    /// socket still takes it).
    public func shutdown() {
        clearErrors()
        if handshakeComplete { _ = SSL_shutdown(ssl) }
        clearErrors()
    }

    // MARK: - Errors

    private func failure(sslError: Int32, during what: String) -> TLSFailure {
        var codes: [UInt] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            codes.append(code)
        }
        let detail = codes.map(errorText).joined(separator: "; ")
        let verify = SSL_get_verify_result(ssl)
        if verify != Int(X509_V_OK), context.configuration.verification == .full {
            let text = String(cString: X509_verify_cert_error_string(verify))
            let subject = peerSubject()
            switch Int32(verify) {
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
                X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
                X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
                return TLSFailure(
                    reason: .unknownCertificateAuthority,
                    message: "the certificate of \(host)\(subject) is not signed by a trusted CA (\(text)); configure the CA that issued it")
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
                return TLSFailure(
                    reason: .hostnameMismatch,
                    message: "the certificate\(subject) does not name \(host) (\(text))")
            case X509_V_ERR_CERT_HAS_EXPIRED:
                return TLSFailure(reason: .certificateExpired, message: "the certificate of \(host)\(subject) has expired (\(text))")
            case X509_V_ERR_CERT_NOT_YET_VALID:
                return TLSFailure(reason: .certificateNotYetValid, message: "the certificate of \(host)\(subject) is not valid yet (\(text))")
            default:
                return TLSFailure(reason: .certificateRejected, message: "the certificate of \(host)\(subject) was refused: \(text)")
            }
        }
        let reasons = codes.filter { cacheaside_ERR_GET_LIB($0) == cacheaside_ERR_LIB_SSL }.map { cacheaside_ERR_GET_REASON($0) }
        let why = detail.isEmpty ? (sslError == SSL_ERROR_SYSCALL ? "the connection ended" : "SSL error \(sslError)") : detail
        if reasons.contains(SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
            return TLSFailure(reason: .clientCertificateRequired, message: "\(host) requires a client certificate and none is configured (\(why))")
        }
        if reasons.contains(where: { [SSL_R_SSLV3_ALERT_BAD_CERTIFICATE, SSL_R_TLSV1_ALERT_UNKNOWN_CA, SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN, SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE, SSL_R_TLSV1_ALERT_ACCESS_DENIED].contains($0) }) {
            let hint = context.configuration.certificateChainFile == nil
                ? "it requires a client certificate and none is configured"
                : "it does not accept the client certificate"
            return TLSFailure(reason: context.configuration.certificateChainFile == nil ? .clientCertificateRequired : .clientCertificateRejected,
                              message: "\(host) refused the TLS session: \(hint) (\(why))")
        }
        if reasons.contains(where: { [SSL_R_WRONG_VERSION_NUMBER, SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_UNKNOWN_PROTOCOL, SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST, SSL_R_UNSUPPORTED_PROTOCOL].contains($0) }) {
            return TLSFailure(reason: .notTLS, message: "\(host) does not speak TLS: it answered \(what) with something else (is this a plain-text port?) (\(why))")
        }
        if sslError == SSL_ERROR_SSL {
            return TLSFailure(reason: .handshakeFailed, message: "\(what) failed: \(why)")
        }
        return TLSFailure(reason: .internalError, message: "\(what) failed: \(why)")
    }

    private func peerSubject() -> String {
        guard let certificate = cacheaside_SSL_get_peer_certificate(ssl) else { return "" }
        defer { X509_free(certificate) }
        guard let name = X509_get_subject_name(certificate) else { return "" }
        var buffer = [CChar](repeating: 0, count: 256)
        guard X509_NAME_oneline(name, &buffer, Int32(buffer.count)) != nil else { return "" }
        let subject = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return subject.isEmpty ? "" : " (\(subject))"
    }
}
