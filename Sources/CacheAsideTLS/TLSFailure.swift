/// A TLS failure: what failed (``reason``) and OpenSSL's account of it.
///
/// Connections never fall back to plain text after one.
public struct TLSFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// What failed. Compare with the static members (`failure.reason == .hostnameMismatch`).
    public struct Reason: Sendable, Hashable, CustomStringConvertible {
        let name: String

        /// The server's certificate does not chain to a trusted CA (unknown or
        /// self-signed issuer).
        public static let unknownCertificateAuthority = Reason(name: "unknown certificate authority")
        /// The server's certificate does not name the host (DNS name or IP address) the
        /// client connected to (or the configured server name).
        public static let hostnameMismatch = Reason(name: "host name mismatch")
        /// The server's certificate has expired.
        public static let certificateExpired = Reason(name: "certificate expired")
        /// The server's certificate is not valid yet.
        public static let certificateNotYetValid = Reason(name: "certificate not yet valid")
        /// The server's certificate was refused for another reason (revoked, wrong
        /// purpose, malformed, ...).
        public static let certificateRejected = Reason(name: "certificate rejected")
        /// The server requires a client certificate and none was configured.
        public static let clientCertificateRequired = Reason(name: "client certificate required")
        /// The server refused the client certificate.
        public static let clientCertificateRejected = Reason(name: "client certificate rejected")
        /// The peer does not speak TLS (it answered the handshake in plain text), or
        /// broke the protocol.
        public static let notTLS = Reason(name: "not TLS")
        /// The handshake failed for another reason (no common version or cipher, an
        /// alert from the server).
        public static let handshakeFailed = Reason(name: "handshake failed")
        /// The configuration cannot be used (a CA, certificate or key file that cannot
        /// be read, a key that does not match its certificate).
        public static let configuration = Reason(name: "configuration")
        /// OpenSSL failed otherwise (out of memory, an internal error).
        public static let internalError = Reason(name: "internal error")

        /// The reason's name: `unknown certificate authority`, `host name mismatch`, ...
        public var description: String { name }
    }

    /// What failed.
    public var reason: Reason
    /// What failed and why, in words, with OpenSSL's text where it has one.
    public var message: String

    /// Creates a failure.
    public init(reason: Reason, message: String) {
        self.reason = reason
        self.message = message
    }

    /// `TLS <reason>: <message>`.
    public var description: String { "TLS \(reason): \(message)" }
}
