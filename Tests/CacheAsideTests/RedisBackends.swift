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
/// must behave the same on both. (Tests that stop or reconfigure servers of their own
/// run on one Redis; the cluster's failures have tests of their own, on private
/// clusters.)
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

/// The tests' own view of Redis, beside the cache: reads and writes of raw keys, and
/// `SCAN`. On a cluster, a command on keys goes where they live (a cluster client), and
/// `SCAN` goes to every node.
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
