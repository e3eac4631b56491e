#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSL

/// An OpenSSL client context (`SSL_CTX`) made from a ``TLSClientConfiguration``: the
/// trusted CAs, the client certificate and key, and the verification mode, loaded once
/// and shared by every connection (OpenSSL's context is safe to share once set up).
public final class TLSClientContext: Sendable {
    /// The configuration the context was made from.
    public let configuration: TLSClientConfiguration
    nonisolated(unsafe) let context: OpaquePointer

    /// Loads the configuration's files.
    ///
    /// - Throws: ``TLSFailure`` with reason ``TLSFailure/Reason/configuration`` naming
    ///   the file that cannot be used.
    public init(configuration: TLSClientConfiguration) throws(TLSFailure) {
        self.configuration = configuration
        clearErrors()
        guard let method = TLS_client_method(), let context = SSL_CTX_new(method) else {
            throw TLSFailure(reason: .internalError, message: "cannot create an OpenSSL context: \(openSSLErrors())")
        }
        do throws(TLSFailure) {
            guard cacheaside_SSL_CTX_set_min_proto_version(context, cacheaside_TLS1_2_VERSION) == 1 else {
                throw TLSFailure(reason: .internalError, message: "cannot require TLS 1.2: \(openSSLErrors())")
            }
            // SSL_write may take part of a buffer; the buffer may move between retries.
            _ = cacheaside_SSL_CTX_set_mode(
                context, cacheaside_SSL_MODE_ENABLE_PARTIAL_WRITE | cacheaside_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
            switch configuration.verification {
            case .full:
                SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
                switch configuration.trustRoots {
                case .system:
                    guard SSL_CTX_set_default_verify_paths(context) == 1 else {
                        throw TLSFailure(reason: .configuration, message: "cannot load the system's CA certificates: \(openSSLErrors())")
                    }
                case .file(let path):
                    guard SSL_CTX_load_verify_locations(context, path, nil) == 1 else {
                        throw TLSFailure(reason: .configuration, message: "cannot load CA certificates from \(path): \(openSSLErrors())")
                    }
                }
            case .insecureNoVerification:
                SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
            }
            switch (configuration.certificateChainFile, configuration.privateKeyFile) {
            case (let certificate?, let key?):
                guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
                    throw TLSFailure(reason: .configuration, message: "cannot load the client certificate from \(certificate): \(openSSLErrors())")
                }
                guard SSL_CTX_use_PrivateKey_file(context, key, cacheaside_SSL_FILETYPE_PEM) == 1 else {
                    let errors = openSSLErrors()
                    if errors.contains("mismatch") {
                        throw TLSFailure(reason: .configuration, message: "the client key \(key) does not match the certificate \(certificate): \(errors)")
                    }
                    throw TLSFailure(reason: .configuration, message: "cannot load the client key from \(key): \(errors)")
                }
                guard SSL_CTX_check_private_key(context) == 1 else {
                    throw TLSFailure(reason: .configuration, message: "the client key \(key) does not match the certificate \(certificate): \(openSSLErrors())")
                }
            case (nil, nil):
                break
            case (_?, nil):
                throw TLSFailure(reason: .configuration, message: "a client certificate needs its private key (privateKeyFile)")
            case (nil, _?):
                throw TLSFailure(reason: .configuration, message: "a client private key needs its certificate (certificateChainFile)")
            }
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        self.context = context
    }

    deinit {
        SSL_CTX_free(context)
    }

    /// A new TLS session for a connection to `host` (the host name or address
    /// connected to; ``TLSClientConfiguration/serverName`` overrides it).
    public func makeTransform(host: String) throws(TLSFailure) -> TLSTransform {
        try TLSTransform(context: self, host: configuration.serverName ?? host)
    }
}

/// True when `host` is a numeric IPv4 or IPv6 address (then it is checked against the
/// certificate's IP addresses, and no SNI is sent).
func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    return inet_pton(AF_INET, bare, &v4) == 1 || inet_pton(AF_INET6, bare, &v6) == 1
}

/// Empties OpenSSL's per-thread error queue.
func clearErrors() {
    ERR_clear_error()
}

/// OpenSSL's queued errors, oldest first, as text (and empties the queue).
func openSSLErrors() -> String {
    var parts: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        parts.append(errorText(code))
    }
    return parts.isEmpty ? "no details from OpenSSL" : parts.joined(separator: "; ")
}

func errorText(_ code: UInt) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
