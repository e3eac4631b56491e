#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Runs a program to completion and collects its output: for the benchmark (which runs
/// `redis-benchmark` and `pgbench`) and the tests (which run `scripts/dev-services`).
///
/// Not Foundation's `Process`: on Linux its `waitUntilExit()` can wait forever in a
/// process whose threads block SIGCHLD (Swift Testing's), and the child inherits the
/// parent thread's blocked signals (so `pgbench -T` never sees its timer, and servers
/// started by a script ignore SIGTERM). This spawns with `posix_spawn`, a clean signal
/// mask and default handlers, sends the output to temporary files (daemons the program
/// starts keep no pipe of ours open), and reaps it with `waitpid`.
public enum ProcessRunner {
    /// What a finished program left.
    public struct Outcome: Sendable {
        /// Its exit status (128 + N when killed by signal N).
        public var status: Int32
        /// What it wrote to standard output.
        public var standardOutput: String
        /// What it wrote to standard error.
        public var standardError: String
    }

    /// A program that could not be started.
    public struct LaunchFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs `executable` with `arguments`, blocking the calling thread until it exits.
    public static func runBlocking(_ executable: String, _ arguments: [String]) throws -> Outcome {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
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
        // Nothing else of ours: a socket the child (or a server it starts) inherited
        // would stay open after we close it, and its peer would never see the end.
        closeOtherDescriptors(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        #if canImport(Darwin)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_CLOEXEC_DEFAULT))
        #else
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        #endif

        var cArguments = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in cArguments { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &cArguments, environ)
        guard rc == 0 else {
            throw LaunchFailure(description: "cannot run \(executable): \(String(cString: strerror(rc)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Outcome(
            status: exit,
            standardOutput: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            standardError: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    /// Runs `executable` on a thread of its own, so that no thread of Swift's
    /// cooperative pool waits for it.
    public static func run(_ executable: String, _ arguments: [String]) async throws -> Outcome {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Outcome, any Error>) in
            let thread = Thread {
                continuation.resume(with: Result { try runBlocking(executable, arguments) })
            }
            thread.start()
        }
    }
}

/// Adds "close every descriptor from 3 up" to `actions` where the C library offers it
/// (glibc 2.34 and later; Swift's Glibc module does not import it, hence the lookup).
/// On Darwin, `POSIX_SPAWN_CLOEXEC_DEFAULT` does the same.
private func closeOtherDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    #if canImport(Glibc)
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
    let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
    _ = closeFrom(&actions, 3)
    #endif
}
