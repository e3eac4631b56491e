@testable import CacheAside
import Foundation
import CacheAsideRedis
import TestSupport
import Testing

/// The Redis a cache test runs against: one server (`REDIS_URL`) or the run's Redis
/// Cluster (`REDIS_CLUSTER_URL`). The fixtures read it from ``current``, which the
/// ``OnStandaloneAndCluster`` trait sets.
enum RedisBackend: String, Sendable, CustomStringConvertible {
    case standalone
    case cluster

    /// The backend of the running test (standalone unless a trait says otherwise).
    @TaskLocal static var current: RedisBackend = .standalone

    /// The URL of the run's shared server, or cluster.
    func sharedURL() throws -> String {
        switch self {
        case .standalone: return try TestEnvironment.redisURL()
        case .cluster: return try TestEnvironment.redisClusterURL()
        }
    }

    var description: String { rawValue }
}

/// Runs every test of a suite twice: against one Redis, then against the Redis Cluster,
/// with the same fixtures (``RedisBackend/current`` tells them which). The cache core
/// must behave the same on both; a test that needs servers of its own gets a private
/// Redis or a private cluster (``PrivateServers``).
///
/// The second run announces itself on the console, and its keys carry `cluster` in their
/// namespace, so that a failure says which run it came from.
///
/// (A recursive suite trait is applied to the suite's tests too, so it must also be a
/// test trait; it scopes test cases only, never a whole suite or function.)
struct OnStandaloneAndCluster: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        testCase == nil ? nil : self
    }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await RedisBackend.$current.withValue(.standalone) { try await function() }
        print("◇ \(test.name) again, on the Redis Cluster")
        do {
            try await RedisBackend.$current.withValue(.cluster) { try await function() }
        } catch {
            throw OnCluster(error: error)
        }
    }

    /// An error thrown by a test's run on the cluster.
    struct OnCluster: Error, CustomStringConvertible {
        var error: any Error
        var description: String { "on the Redis Cluster: \(error)" }
    }
}

extension Trait where Self == OnStandaloneAndCluster {
    /// Runs each test against one Redis, then against the Redis Cluster.
    static var onStandaloneAndCluster: Self { Self() }
}

/// Makes the Redis client of a test process: a cluster client for a cluster URL.
func makeRedisClient(url: String, _ configure: (inout RESPConfiguration) -> Void = { _ in }) throws -> any RESPClientProtocol {
    try RESPClients.make(url: url, logger: testLogger, configure: configure)
}

/// Servers of the test's own, which it may stop, pause or reconfigure: a private Redis
/// (and PostgreSQL) instance on the standalone run, a private 6-node cluster on the
/// cluster run.
struct PrivateServers: Sendable {
    let backend: RedisBackend
    let instance: String
    let redisURL: String

    static func start(_ label: String) async throws -> PrivateServers {
        switch RedisBackend.current {
        case .standalone:
            let name = TestEnvironment.uniqueName(label)
            let urls = try await TestEnvironment.startPrivateInstance(name)
            return PrivateServers(backend: .standalone, instance: name, redisURL: urls.redisURL)
        case .cluster:
            let cluster = try await PrivateRedis.start(label, cluster: true)
            return PrivateServers(backend: .cluster, instance: cluster.instance, redisURL: cluster.url)
        }
    }

    /// Kills Redis (every node of the cluster): it comes back empty with ``startRedis()``.
    func stopRedis() async throws {
        try await TestEnvironment.runDevServices(["stop", backend == .cluster ? "cluster" : "redis"], instance: instance)
    }

    /// Starts Redis again (every node of the cluster, and waits until it is healthy).
    func startRedis() async throws {
        try await TestEnvironment.runDevServices(["start", backend == .cluster ? "cluster" : "redis"], instance: instance)
    }

    /// Stops everything and deletes the instance.
    func down() async {
        _ = try? await TestEnvironment.runDevServices(["down"], instance: instance)
    }
}

/// The tests' own view of Redis, beside the cache: reads of raw keys and admin
/// commands. On a cluster, a command on keys goes where they live (a cluster client),
/// and an admin command (`send`) goes to every node: `FLUSHDB` empties every primary
/// (replicas refuse it and follow), `CONFIG SET` and `CLIENT PAUSE` change every node.
final class TestRedis: Sendable {
    let client: any RESPClientProtocol
    /// A client of each node of the cluster (the URL names them all); empty for one
    /// server.
    let nodes: [RESPClient]

    init(url: String) throws {
        client = try makeRedisClient(url: url) { $0.commandTimeout = .seconds(10) }
        if RESPClusterConfiguration.isClusterURL(url) {
            let configuration = try RESPClusterConfiguration(url: url)
            nodes = try configuration.seeds.map { seed in
                var node = configuration.node
                node.endpoint = seed
                node.commandTimeout = .seconds(10)
                node.connectionCount = 1
                return try RESPClient(configuration: node)
            }
        } else {
            nodes = []
        }
    }

    var isCluster: Bool { !nodes.isEmpty }

    func get(_ key: String) async throws -> [UInt8]? { try await client.get(key) }
    func mget(_ keys: [String]) async throws -> [[UInt8]?] { try await client.mget(keys) }
    func pttl(_ key: String) async throws -> Int64 { try await client.pttl(key) }
    @discardableResult
    func del(_ keys: [String]) async throws -> Int { try await client.del(keys) }
    @discardableResult
    func set(_ key: String, to value: [UInt8], expiration: RESPExpiration? = nil) async throws -> Bool {
        try await client.set(key, to: value, expiration: expiration)
    }

    /// The clients admin commands go to: the server's, or every node's.
    private var targets: [any RESPClientProtocol] { isCluster ? nodes : [client] }

    /// An admin command: to the server, or to every node of the cluster (the first
    /// reply; replicas refusing a write are skipped, any other error is thrown).
    @discardableResult
    func send(_ arguments: String...) async throws -> RESPReply {
        var first: RESPReply?
        for node in targets {
            do {
                let reply = try await node.send(arguments)
                if first == nil { first = reply }
            } catch let error as RESPError where isCluster && error.isReadOnlyReplica {
                continue
            }
        }
        guard let first else { throw RESPError(kind: .server, message: "no node took \(arguments.first ?? "")") }
        return first
    }

    /// The sum of an `INFO` field over the server, or over the primaries of the cluster.
    func stat(_ name: String, section: String = "stats") async throws -> Int {
        var total = 0
        for node in targets {
            if isCluster, try await node.send("ROLE").array?.first?.string != "master" { continue }
            total += Self.field(name, in: try await node.send("INFO", section).string ?? "")
        }
        return total
    }

    private static func field(_ name: String, in info: String) -> Int {
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix(name + ":") {
            return Int(line.dropFirst(name.count + 1)) ?? 0
        }
        return 0
    }

    /// Sets the `maxmemory` of the server (of every node) to what it uses now plus
    /// `headroom` bytes, with `policy` (`allkeys-random`, `noeviction`, ...).
    func limitMemory(headroom: Int, policy: String) async throws {
        for node in targets {
            _ = try await node.send("CONFIG", "SET", "maxmemory-policy", policy)
            let used = Self.field("used_memory", in: try await node.send("INFO", "memory").string ?? "")
            _ = try await node.send("CONFIG", "SET", "maxmemory", String(used + headroom))
        }
    }

    /// Makes the server refuse writes while it serves reads, as a primary demoted by a
    /// failover does: one server becomes a replica of nothing (`REPLICAOF` port 9, it
    /// answers `READONLY`); a cluster's primaries (which cannot be made replicas so)
    /// require more replicas than they have (`min-replicas-to-write`, they answer
    /// `NOREPLICAS`).
    func refuseWrites() async throws {
        if isCluster {
            try await send("CONFIG", "SET", "min-replicas-to-write", "10")
        } else {
            try await send("REPLICAOF", "127.0.0.1", "9")
        }
    }

    /// Undoes ``refuseWrites()``.
    func acceptWrites() async throws {
        if isCluster {
            try await send("CONFIG", "SET", "min-replicas-to-write", "0")
        } else {
            try await send("REPLICAOF", "NO", "ONE")
        }
    }

    /// Every key that matches `pattern` (SCAN on the server, or on every node).
    func keys(matching pattern: String) async throws -> [String] {
        var all = Set<String>()
        for node in targets {
            var cursor = "0"
            repeat {
                let reply = try await node.send("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
                guard case .array(let parts) = reply, parts.count == 2,
                      case .bulkString(let next) = parts[0], case .array(let batch) = parts[1] else {
                    Issue.record("unexpected SCAN reply \(reply)")
                    return Array(all)
                }
                cursor = String(decoding: next, as: UTF8.self)
                for case .bulkString(let k) in batch { all.insert(String(decoding: k, as: UTF8.self)) }
            } while cursor != "0"
        }
        return Array(all)
    }

    func shutdown() async {
        await client.shutdown()
        for node in nodes { await node.shutdown() }
    }
}
