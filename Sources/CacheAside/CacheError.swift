/// An error of the cache layer itself. Errors of the database travel unchanged (a
/// `PGError`); Redis errors never reach a reader, since reads fail open.
public struct CacheError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is.
    public enum Kind: Sendable, Equatable {
        /// A bad namespace, keyspace, schema version or policy.
        case configuration
        /// A value could not be encoded for the cache.
        case encoding
        /// An entry could not be decoded (the caller never sees this: the entry is
        /// treated as a miss).
        case decoding
        /// The cache was shut down.
        case shutdown
    }

    /// What kind of failure this is.
    public var kind: Kind
    /// What failed and why.
    public var message: String

    /// Creates an error.
    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    static func configuration(_ message: String) -> CacheError {
        CacheError(kind: .configuration, message: message)
    }

    public var description: String { "cache \(kind): \(message)" }
}
