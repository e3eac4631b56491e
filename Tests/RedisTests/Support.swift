import Foundation
import Redis
import TestSupport
import Testing

/// A client on the shared test server (`REDIS_URL`), configured by `configure`.
func makeClient(
    url: String? = nil, _ configure: (inout RedisConfiguration) -> Void = { _ in }
) throws -> RedisClient {
    var configuration = try RedisConfiguration(url: url ?? TestEnvironment.redisURL())
    // Generous by default: the tests share two cores with each other and with other
    // suites. Tests about timeouts set their own.
    configuration.commandTimeout = .seconds(5)
    configuration.connectTimeout = .seconds(5)
    configure(&configuration)
    return try RedisClient(configuration: configuration)
}

/// Runs `body` with a client, and shuts it down afterwards, also on failure.
@discardableResult
func withClient<T>(
    url: String? = nil, _ configure: (inout RedisConfiguration) -> Void = { _ in },
    _ body: (RedisClient) async throws -> T
) async throws -> T {
    let client = try makeClient(url: url, configure)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// A private Redis (and PostgreSQL) from `scripts/dev-services --instance NAME`, for
/// tests that stop or restart the server; always brought down afterwards.
func withPrivateInstance<T>(_ label: String, _ body: (_ redisURL: String, _ instance: String) async throws -> T) async throws -> T {
    let name = TestEnvironment.uniqueName(label)
    do {
        let output = try await devServices(["up"], instance: name)
        let line = output.split(separator: "\n").first { $0.contains("REDIS_URL=") }
        guard let line, let eq = line.firstIndex(of: "=") else {
            throw DevServicesError("dev-services --instance \(name) up printed no REDIS_URL: \(output)")
        }
        let url = line[line.index(after: eq)...].trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        let result = try await body(url, name)
        _ = try? await devServices(["down"], instance: name)
        return result
    } catch {
        _ = try? await devServices(["down"], instance: name)
        throw error
    }
}

/// Runs `scripts/dev-services --instance NAME ARGS...` and returns its standard output.
///
/// Not `TestEnvironment.devServices`: Foundation's `Process.waitUntilExit()` never
/// returns in a Swift Testing process on Linux (SIGCHLD goes to the main thread, the
/// only one not blocking it, so the child is never reaped). This spawns the script
/// with `posix_spawn`, sends its output to temporary files (daemons it starts can keep
/// no pipe open), and reaps it with `waitpid` on a Dispatch thread, off the
/// cooperative pool.
@discardableResult
func devServices(_ arguments: [String], instance: String) async throws -> String {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try runDevServices(arguments, instance: instance) })
        }
    }
}

private func runDevServices(_ arguments: [String], instance: String) throws -> String {
    let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/dev-services").path
    let argv = [script, "--instance", instance] + arguments
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outPath = directory.appendingPathComponent("out").path
    let errPath = directory.appendingPathComponent("err").path

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)

    // Dispatch threads block most signals, and a spawned process inherits the mask:
    // the servers the script starts would then ignore SIGTERM. Start it clean.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var cArguments = argv.map { strdup($0) } + [nil]
    defer { for p in cArguments { free(p) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, script, &actions, &attributes, &cArguments, environ)
    guard rc == 0 else {
        throw DevServicesError("cannot run \(script): \(String(cString: strerror(rc)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    guard exitCode == 0 else {
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        throw DevServicesError("dev-services \(argv.dropFirst().joined(separator: " ")) failed (\(exitCode)): \(err)")
    }
    return out
}

/// Seconds elapsed since `start`.
func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Retries `body` until it succeeds or `timeout` passes; returns its last result.
func eventually<T>(
    timeout: Duration = .seconds(10), every interval: Duration = .milliseconds(50),
    _ body: () async throws -> T?
) async throws -> T? {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try? await body() { return value }
        if ContinuousClock.now >= deadline { return nil }
        try await Task.sleep(for: interval)
    }
}

/// Catches the error thrown by `body`, or records a failure if it returned.
func expectError<T>(
    _ body: () async throws -> T, sourceLocation: SourceLocation = #_sourceLocation
) async -> (any Error)? {
    do {
        let value = try await body()
        Issue.record("expected an error, got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

extension Array where Element == UInt8 {
    static func random(count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}

struct DevServicesError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
