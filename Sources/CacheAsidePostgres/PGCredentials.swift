/// What a ``PGConfiguration/credentialsProvider`` is asked for: the connection about to
/// be made, as configured (`nil` where libpq's default applies).
public struct PGCredentialsRequest: Sendable, Hashable {
    /// The server's host name, address, or socket directory (or a comma-separated list).
    public var host: String?
    /// The server's port.
    public var port: Int?
    /// The configured user.
    public var user: String?
    /// The database.
    public var database: String?

    /// Creates a request.
    public init(host: String?, port: Int?, user: String?, database: String?) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
    }
}

/// What a ``PGConfiguration/credentialsProvider`` returns for one connection.
public struct PGCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The user to connect as; `nil` keeps the configured one.
    public var user: String?
    /// The password (or token) to send.
    public var password: String?

    /// Creates credentials.
    public init(user: String? = nil, password: String?) {
        self.user = user
        self.password = password
    }

    /// The user, never the password.
    public var description: String {
        "PGCredentials(user: \(user ?? "(configured)"), password: \(password == nil ? "none" : "********"))"
    }
}
