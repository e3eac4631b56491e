import Foundation
import ProcessRunner

extension TestEnvironment {
    /// `REDIS_CLUSTER_URL` (`redis://user:pass@host:port,...,host:port/0?cluster=true`),
    /// the run's shared Redis Cluster, or an error that says how to get one.
    /// `make test` (`scripts/with-services --cluster`) starts it.
    public static func redisClusterURL() throws -> String {
        guard let value = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], !value.isEmpty else {
            throw Missing(description: "REDIS_CLUSTER_URL is not set: run the tests with `make test`, or export the URLs printed by `scripts/dev-services up --cluster`")
        }
        return value
    }
}

/// Servers of a private dev-services instance that a test may stop, pause, fail over
/// or reconfigure: a Redis Cluster (`up --cluster --only`) or a primary with a replica
/// (`up --replica --only`). Always brought down by ``down()``.
///
/// Setting up a cluster keeps a core busy for seconds: one setup at a time in the test
/// process, at a lower CPU priority (`nice`), so that the other tests' servers and
/// clients come first.
public struct PrivateRedis: Sendable {
    /// The dev-services instance.
    public let instance: String
    /// `REDIS_CLUSTER_URL` for a cluster, `REDIS_PRIMARY_URL` for a pair.
    public let url: String
    /// The pair's `REDIS_REPLICA_URL` (nil for a cluster).
    public let replicaURL: String?

    /// Starts a private cluster (`cluster: true`) or a primary with a replica.
    public static func start(_ label: String, cluster: Bool) async throws -> PrivateRedis {
        let name = TestEnvironment.uniqueName(label)
        await setups.acquire()
        let output: String
        do {
            output = try await run(["up", cluster ? "--cluster" : "--replica", "--only"], instance: name)
        } catch {
            setups.release()
            _ = try? await run(["down"], instance: name)
            throw error
        }
        setups.release()
        var values: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let variable = parts[0].split(separator: " ").last else { continue }
            values[String(variable)] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        }
        guard let url = values[cluster ? "REDIS_CLUSTER_URL" : "REDIS_PRIMARY_URL"] else {
            _ = try? await run(["down"], instance: name)
            throw TestEnvironment.Missing(description: "scripts/dev-services --instance \(name) up printed no URL")
        }
        return PrivateRedis(instance: name, url: url, replicaURL: values["REDIS_REPLICA_URL"])
    }

    /// `scripts/dev-services --instance INSTANCE ARGUMENTS...` (stop, start, pause,
    /// resume, failover, promote, nodes); returns its standard output.
    @discardableResult
    public func devServices(_ arguments: String...) async throws -> String {
        try await Self.run(arguments, instance: instance)
    }

    /// The nodes as `scripts/dev-services nodes` lists them: name, address, role and
    /// (for a primary) its slot ranges.
    public func nodes() async throws -> [Node] {
        try await devServices("nodes").split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 5 else { return nil }
            return Node(
                name: String(fields[0]), address: String(fields[1]), tlsPort: String(fields[2]), state: String(fields[3]),
                role: String(fields[4]),
                slots: fields.count > 5 ? String(fields[5]) : "")
        }
    }

    /// One node of ``nodes()``.
    public struct Node: Sendable {
        public var name: String
        /// `127.0.0.1:PORT`.
        public var address: String
        /// The node's TLS port (the cluster bus, replication and `MIGRATE` between
        /// nodes run over TLS: `MIGRATE` must name this port).
        public var tlsPort: String
        /// `up`, `down` or `paused`.
        public var state: String
        /// `primary` or `replica-of-NAME`, with `,failed` when the cluster marks it so.
        public var role: String
        /// A primary's slot ranges (`0-5460`), comma-separated.
        public var slots: String
    }

    /// Stops every node and deletes the instance.
    public func down() async {
        _ = try? await Self.run(["down"], instance: instance)
    }

    static func run(_ arguments: [String], instance: String) async throws -> String {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/dev-services").path
        let outcome = try await ProcessRunner.run("/usr/bin/nice", ["-n", "10", script, "--instance", instance] + arguments)
        guard outcome.status == 0 else {
            throw TestEnvironment.Missing(description: "scripts/dev-services --instance \(instance) \(arguments.joined(separator: " ")) failed (\(outcome.status)): \(outcome.standardError)")
        }
        return outcome.standardOutput
    }

    private static let setups = AsyncGate()
}

/// An asynchronous lock: one holder at a time, waiters in order.
public final class AsyncGate: Sendable {
    private struct State {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = LockedState(State())

    public init() {}

    public func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { s in
                if !s.held {
                    s.held = true
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    public func release() {
        let next: CheckedContinuation<Void, Never>? = state.withLock { s in
            if s.waiters.isEmpty {
                s.held = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// A value behind a lock (Foundation's `NSLock`: TestSupport targets every platform).
final class LockedState<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

/// Tests that keep both cores busy for seconds (storms through the cache, traffic
/// during a failover or a migration) take turns: one at a time in the test process, so
/// that the rest of the suite keeps threads for its own I/O on a 2-core machine.
public enum HeavyTests {
    private static let gate = AsyncGate()

    /// Runs `body` once no other heavy test runs.
    public static func oneAtATime<T>(_ body: () async throws -> T) async rethrows -> T {
        await gate.acquire()
        do {
            let result = try await body()
            gate.release()
            return result
        } catch {
            gate.release()
            throw error
        }
    }
}
