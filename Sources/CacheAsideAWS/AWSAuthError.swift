/// Why an AWS credential, region or signing input could not be used.
///
/// Descriptions name what is missing or wrong and how to fix it; they never contain a
/// secret access key, a session token or a signature.
public enum AWSAuthError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A required environment variable is unset or empty (for example
    /// `AWS_ACCESS_KEY_ID`, or `AWS_SECRET_ACCESS_KEY` when the key id is set).
    case missingEnvironmentVariable(String)
    /// No region was given and neither `AWS_REGION` nor `AWS_DEFAULT_REGION` is set.
    case missingRegion
    /// An argument cannot be signed: an empty host name or user, a port out of range, an
    /// expiry outside what SigV4 allows.
    case invalidArgument(name: String, reason: String)

    public var description: String {
        switch self {
        case .missingEnvironmentVariable(let name):
            return "AWS credentials: \(name) is not set; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                + "(and AWS_SESSION_TOKEN for temporary credentials), or pass credentials explicitly"
        case .missingRegion:
            return "AWS region: none given, and neither AWS_REGION nor AWS_DEFAULT_REGION is set"
        case .invalidArgument(let name, let reason):
            return "AWS signing: invalid \(name): \(reason)"
        }
    }
}
