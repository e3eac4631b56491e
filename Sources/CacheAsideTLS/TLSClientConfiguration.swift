/// How a client verifies the server it connects to with TLS, and how it proves who it
/// is.
///
/// The default verifies the server's certificate against the system's CA bundle and
/// checks that it names the host connected to (a DNS name, or an IP address), and sends
/// the host name as SNI:
///
/// ```swift
/// var tls = TLSClientConfiguration()                         // system CAs, full verification
/// tls.trustRoots = .file("/etc/ssl/elasticache-ca.pem")       // or a CA file of your own
/// tls.certificateChainFile = "/etc/app/client.crt"             // mutual TLS
/// tls.privateKeyFile = "/etc/app/client.key"
/// ```
public struct TLSClientConfiguration: Sendable, Hashable {
    /// The certificates a server's chain must lead to.
    public enum TrustRoots: Sendable, Hashable {
        /// The system's CA bundle (OpenSSL's default paths: `/etc/ssl/certs` on Debian).
        case system
        /// CA certificates from a PEM file.
        case file(String)
    }

    /// How much of the server's identity is checked.
    public enum Verification: Sendable, Hashable {
        /// The certificate chain must lead to ``TrustRoots`` and name the host.
        case full
        /// NO verification at all: any server, any certificate, including an attacker in
        /// the middle, is accepted. The traffic is encrypted but the peer is unknown.
        /// For development against servers with throwaway certificates only.
        case insecureNoVerification
    }

    /// The CAs the server's certificate must chain to. Default: ``TrustRoots/system``.
    public var trustRoots: TrustRoots = .system
    /// A PEM file with the client's certificate (and any intermediates), for servers
    /// that require mutual TLS. Needs ``privateKeyFile``.
    public var certificateChainFile: String?
    /// The PEM file of the client certificate's private key.
    public var privateKeyFile: String?
    /// The name the server's certificate must carry, and the SNI sent, when it differs
    /// from the host connected to (connecting by IP address to a server whose
    /// certificate names a DNS name, for example). `nil`: the host connected to.
    public var serverName: String?
    /// Whether the server is verified. Default: ``Verification/full``.
    public var verification: Verification = .full

    /// Full verification against the system's CAs, no client certificate.
    public init() {}

    /// Full verification against `trustRoots`, with an optional client certificate.
    public init(trustRoots: TrustRoots, certificateChainFile: String? = nil, privateKeyFile: String? = nil, serverName: String? = nil) {
        self.trustRoots = trustRoots
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.serverName = serverName
    }
}
