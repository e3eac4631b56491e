#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An AWS access key: the key id, its secret, and the session token that comes with
/// temporary credentials (an assumed role, an instance or task role, SSO).
///
/// `description`, `debugDescription` and the reflection that `dump` and string
/// interpolation use show the key id (which AWS treats as an identifier, not a secret)
/// and never the secret access key or the session token.
public struct AWSCredentials: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// The access key id, e.g. `AKIA...` (long-term) or `ASIA...` (temporary).
    public var accessKeyID: String
    /// The secret access key. Never printed.
    public var secretAccessKey: String
    /// The session token of temporary credentials; `nil` for a long-term key. Never printed.
    public var sessionToken: String?

    /// Credentials from explicit values. An empty `sessionToken` counts as none.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken.flatMap { $0.isEmpty ? nil : $0 }
    }

    public var description: String {
        "AWSCredentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>, sessionToken: "
            + (sessionToken == nil ? "none)" : "<redacted>)")
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "accessKeyID": accessKeyID,
                "secretAccessKey": "<redacted>",
                "sessionToken": sessionToken == nil ? "none" : "<redacted>",
            ],
            displayStyle: .struct
        )
    }
}

/// A source of AWS credentials, asked each time a token is signed, so that a source
/// whose credentials rotate (temporary credentials, a role) is always current.
///
/// The package ships ``StaticCredentialsProvider`` and
/// ``EnvironmentCredentialsProvider``; conform a type of your own to add another source
/// (a shared-credentials file, a container or instance role, SSO).
public protocol AWSCredentialsProvider: Sendable {
    /// Current credentials, or an error that says what is missing (``AWSAuthError``).
    func credentials() async throws -> AWSCredentials
}

/// Always the same credentials, given explicitly.
public struct StaticCredentialsProvider: AWSCredentialsProvider {
    /// The credentials this provider returns.
    public let fixedCredentials: AWSCredentials

    /// A provider that always returns `credentials`.
    public init(_ credentials: AWSCredentials) {
        self.fixedCredentials = credentials
    }

    public func credentials() async throws -> AWSCredentials { fixedCredentials }
}

/// Credentials from the environment variables every AWS SDK reads:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary credentials,
/// `AWS_SESSION_TOKEN`. The variables are read at every call, so a process whose
/// environment is updated sees the new values.
public struct EnvironmentCredentialsProvider: AWSCredentialsProvider {
    private let environment: @Sendable () -> [String: String]

    /// Reads this process's environment at every call.
    public init() {
        self.environment = { ProcessInfo.processInfo.environment }
    }

    /// Reads `environment` instead of the process's (for tests and for configuration
    /// loaded from elsewhere).
    public init(environment: [String: String]) {
        self.environment = { environment }
    }

    /// The credentials in the environment.
    ///
    /// - Throws: ``AWSAuthError/missingEnvironmentVariable(_:)`` naming
    ///   `AWS_ACCESS_KEY_ID` or `AWS_SECRET_ACCESS_KEY` when it is unset or empty.
    public func credentials() async throws -> AWSCredentials {
        try AWSEnvironment.credentials(in: environment())
    }
}

/// The AWS settings that come from environment variables.
public enum AWSEnvironment {
    /// The credentials in `environment` (by default this process's):
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` if set.
    ///
    /// - Throws: ``AWSAuthError/missingEnvironmentVariable(_:)`` naming the first of
    ///   `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` that is unset or empty.
    public static func credentials(
        in environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> AWSCredentials {
        guard let keyID = nonEmpty(environment["AWS_ACCESS_KEY_ID"]) else {
            throw AWSAuthError.missingEnvironmentVariable("AWS_ACCESS_KEY_ID")
        }
        guard let secret = nonEmpty(environment["AWS_SECRET_ACCESS_KEY"]) else {
            throw AWSAuthError.missingEnvironmentVariable("AWS_SECRET_ACCESS_KEY")
        }
        return AWSCredentials(
            accessKeyID: keyID,
            secretAccessKey: secret,
            sessionToken: nonEmpty(environment["AWS_SESSION_TOKEN"])
        )
    }

    /// The region in `environment` (by default this process's): `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`.
    ///
    /// - Throws: ``AWSAuthError/missingRegion`` when neither is set (or both are empty).
    public static func region(
        in environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> String {
        if let region = nonEmpty(environment["AWS_REGION"]) ?? nonEmpty(environment["AWS_DEFAULT_REGION"]) {
            return region
        }
        throw AWSAuthError.missingRegion
    }

    private static func nonEmpty(_ value: String?) -> String? {
        guard let value else { return nil }
        let trimmed = value.trimmingWhitespace()
        return trimmed.isEmpty ? nil : trimmed
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and line breaks.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0.isNewline }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
