import Foundation
import Logging
import Postgres
import TestSupport
import Testing

/// Shared helpers for the Postgres tests: every test uses its own tables or schema, so
/// they run in parallel on one database.
enum PG {
    static func configuration() throws -> PostgresConfiguration {
        try PostgresConfiguration(url: try TestEnvironment.databaseURL())
    }

    static func connect() async throws -> PostgresConnection {
        try await PostgresConnection.connect(configuration: try configuration())
    }

    static func password() throws -> String {
        try #require(try configuration().password)
    }

    /// Runs `body` with a client, then shuts it down (also when `body` throws).
    static func withClient<R>(
        max: Int = 4, min: Int = 0, acquireTimeout: Duration = .seconds(5),
        _ body: (PostgresClient) async throws -> R
    ) async throws -> R {
        var config = try configuration()
        config.maxConnections = max
        config.minConnections = min
        config.acquireTimeout = acquireTimeout
        let client = PostgresClient(configuration: config)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// Drives `scripts/dev-services` without blocking Swift's cooperative pool: the process
/// is spawned and reaped on a Dispatch thread (Foundation's `Process.waitUntilExit` was
/// seen to hang, and it blocks the calling thread).
enum DevServices {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func run(_ arguments: [String], instance: String) async throws -> String {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/dev-services").path
        let argv = [script, "--instance", instance] + arguments
        return try await withCheckedThrowingContinuation { cont in
            DispatchQueue.global().async {
                cont.resume(with: Result { try spawn(argv) })
            }
        }
    }

    private static func spawn(_ argv: [String]) throws -> String {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure(description: "pipe failed") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
        // The test process's threads block signals; the servers the script starts
        // must not inherit that mask.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw Failure(description: "cannot run \(argv[0]): errno \(rc)")
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n > 0 { output += buffer[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = String(decoding: output, as: UTF8.self)
        guard status == 0 else {
            throw Failure(description: "scripts/dev-services \(argv.dropFirst().joined(separator: " ")) failed with status \(status)")
        }
        return text
    }

    /// Starts a private instance and returns its `DATABASE_URL`.
    static func up(instance: String) async throws -> String {
        let output = try await run(["up"], instance: instance)
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0].hasSuffix("DATABASE_URL") {
                return parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            }
        }
        throw Failure(description: "dev-services up printed no DATABASE_URL: \(output)")
    }
}
