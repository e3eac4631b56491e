import CacheAsideAWS
import Foundation

/// The test data under Vectors/: cases of AWS's SigV4 test suite, and tokens that
/// botocore signed (scripts/aws-token-vectors.py).
enum Vectors {
    struct SuiteFile: Decodable {
        var accessKeyID: String
        var secretAccessKey: String
        var region: String
        var service: String
        var timestamp: String
        var expiresIn: Int
        var cases: [SuiteCase]
    }

    struct SuiteCase: Decodable, Sendable {
        var name: String
        var sessionToken: String?
        var request: String
        var headerCanonicalRequest: String
        var headerStringToSign: String
        var headerSignature: String
        var queryCanonicalRequest: String
        var queryStringToSign: String
        var querySignature: String
    }

    struct BotocoreFile: Decodable {
        var credentials: [String: BotocoreCredentials]
        var cases: [TokenCase]
    }

    struct BotocoreCredentials: Decodable {
        var accessKeyID: String
        var secretAccessKey: String
        var sessionToken: String?
    }

    struct TokenCase: Decodable, Sendable {
        var name: String
        var kind: String
        var credentials: String
        var timestamp: String
        var region: String
        var user: String
        var token: String
        var hostname: String?
        var port: Int?
        var cache: String?
    }

    static func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors") else {
            throw VectorError("Vectors/\(name).json is not in the test bundle")
        }
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    /// Both files, loaded once; a file that fails to load fails `vectorFilesLoad`.
    static let suite: SuiteFile? = try? load("sigv4-test-suite", as: SuiteFile.self)
    static let botocore: BotocoreFile? = try? load("botocore-tokens", as: BotocoreFile.self)

    static var suiteCaseNames: [String] { suite?.cases.map(\.name) ?? [] }
    static var tokenCaseNames: [String] { botocore?.cases.map(\.name) ?? [] }

    static func date(_ iso8601: String) throws -> Date {
        guard let date = ISO8601DateFormatter().date(from: iso8601) else {
            throw VectorError("bad timestamp \(iso8601)")
        }
        return date
    }

    /// A request of the suite as sent: `METHOD PATH[?QUERY] HTTP/1.1`, then `Name:value`
    /// lines. The path and query are raw, so they are the unencoded values to sign.
    static func parseRequest(_ text: String) throws -> SigV4Request {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let requestLine = lines.first, let firstSpace = requestLine.firstIndex(of: " "),
            let versionStart = requestLine.range(of: " HTTP/", options: .backwards)?.lowerBound
        else {
            throw VectorError("bad request line in \(text)")
        }
        let method = String(requestLine[..<firstSpace])
        let target = String(requestLine[requestLine.index(after: firstSpace)..<versionStart])
        var path = target
        var query: [SigV4Request.QueryItem] = []
        if let questionMark = target.firstIndex(of: "?") {
            path = String(target[..<questionMark])
            for pair in target[target.index(after: questionMark)...].split(separator: "&") {
                if let equals = pair.firstIndex(of: "=") {
                    query.append(.init(String(pair[..<equals]), String(pair[pair.index(after: equals)...])))
                } else {
                    query.append(.init(String(pair), ""))
                }
            }
        }
        var headers: [SigV4Request.Header] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw VectorError("bad header line \(line)") }
            headers.append(.init(String(line[..<colon]), String(line[line.index(after: colon)...])))
        }
        return SigV4Request(method: method, path: path, query: query, headers: headers)
    }
}

struct VectorError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
