import Foundation
import ProcessRunner

/// Where the tests find their servers, and helpers to drive `scripts/dev-services`.
///
/// Tests run against the real PostgreSQL and Redis named by `DATABASE_URL` and
/// `REDIS_URL` (`make test` starts throwaway ones and exports both). A missing variable
/// is a failure with a clear message, never a silent skip.
public enum TestEnvironment {
    /// An error explaining what the test run is missing.
    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    /// `DATABASE_URL`, or an error that says how to get one.
    public static func databaseURL() throws -> String {
        try variable("DATABASE_URL")
    }

    /// `REDIS_URL`, or an error that says how to get one.
    public static func redisURL() throws -> String {
        try variable("REDIS_URL")
    }

    static func variable(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw Missing(description: "\(name) is not set: run the tests with `make test`, or export the URLs printed by `scripts/dev-services up`")
        }
        return value
    }

    /// The package's root folder (where `Package.swift` is).
    public static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        // Tests/TestSupport/TestEnvironment.swift -> repository root
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// A name no other test (or earlier run) uses: lower case, `[a-z0-9_]`, at most 40
    /// characters, safe as a SQL identifier or key prefix.
    public static func uniqueName(_ prefix: String) -> String {
        let clean = prefix.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let random = UInt64.random(in: 0...UInt64.max)
        return String(String(clean).prefix(20)) + "_" + String(random, radix: 36)
    }

    /// Runs `scripts/dev-services` with `arguments` (for `instance`, if given) and
    /// returns what it printed on standard output. Throws with its standard error when
    /// it fails. Blocks the calling thread: prefer ``runDevServices(_:instance:)`` from
    /// async code. (Not Foundation's `Process`, whose `waitUntilExit()` never returns in
    /// a Swift Testing process on Linux: see `ProcessRunner`.)
    @discardableResult
    public static func devServices(_ arguments: [String], instance: String? = nil) throws -> String {
        let script = repositoryRoot.appendingPathComponent("scripts/dev-services").path
        let fullArguments = (instance.map { ["--instance", $0] } ?? []) + arguments
        let outcome = try ProcessRunner.runBlocking(script, fullArguments)
        guard outcome.status == 0 else {
            throw Missing(description: "scripts/dev-services \(fullArguments.joined(separator: " ")) failed (\(outcome.status)): \(outcome.standardError)")
        }
        return outcome.standardOutput
    }

    /// ``devServices(_:instance:)``, run on a thread of its own so that no thread that
    /// runs tasks waits for the script. (Not `DispatchQueue.global()`: on Linux its
    /// threads are the ones that run every task, and a few scripts waited for there
    /// stalled the whole test process for seconds.)
    @discardableResult
    public static func runDevServices(_ arguments: [String], instance: String? = nil) async throws -> String {
        let script = repositoryRoot.appendingPathComponent("scripts/dev-services").path
        let fullArguments = (instance.map { ["--instance", $0] } ?? []) + arguments
        let outcome = try await ProcessRunner.run(script, fullArguments)
        guard outcome.status == 0 else {
            throw Missing(description: "scripts/dev-services \(fullArguments.joined(separator: " ")) failed (\(outcome.status)): \(outcome.standardError)")
        }
        return outcome.standardOutput
    }

    /// Starts a private pair of servers (`--instance name`) and returns their URLs.
    /// Tests that stop or restart a server use their own instance, so that tests
    /// running in parallel on the shared servers are not disturbed.
    public static func privateInstance(_ name: String) throws -> (databaseURL: String, redisURL: String) {
        try parseURLs(try devServices(["up"], instance: name), name: name)
    }

    /// ``privateInstance(_:)`` without blocking a thread of the cooperative pool.
    public static func startPrivateInstance(_ name: String) async throws -> (databaseURL: String, redisURL: String) {
        try parseURLs(try await runDevServices(["up"], instance: name), name: name)
    }

    static func parseURLs(_ output: String, name: String) throws -> (databaseURL: String, redisURL: String) {
        var db: String?, redis: String?
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let value = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            if parts[0].hasSuffix("DATABASE_URL") { db = value }
            if parts[0].hasSuffix("REDIS_URL") { redis = value }
        }
        guard let db, let redis else {
            throw Missing(description: "scripts/dev-services --instance \(name) up printed no URLs: \(output)")
        }
        return (db, redis)
    }

    /// Splits a `redis://user:password@host:port/db` URL, for the raw smoke tests.
    public static func redisParts(_ url: String) throws -> (user: String?, password: String?, host: String, port: Int, db: Int) {
        guard let c = URLComponents(string: url), let host = c.host else {
            throw Missing(description: "REDIS_URL is not a URL")
        }
        let db = Int(c.path.dropFirst()) ?? 0
        return (c.user, c.password, host, c.port ?? 6379, db)
    }
}
