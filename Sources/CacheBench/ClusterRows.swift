import CacheAside
import Foundation
import Logging
import CacheAsidePostgres
import CacheAsideRedis

/// The Redis Cluster rows, when a cluster URL is given (`--redis-cluster-url` or
/// `REDIS_CLUSTER_URL`; `make bench` starts a 6-node cluster):
///
/// - `cluster_get`: one task, GET through ``RESPClusterClient`` of keys on every primary;
/// - `cluster_get_one_key`: one task, GET of one key (one node, as `redis_get`);
/// - `cluster_get_concurrent`: the same from `--concurrency` tasks;
/// - `redis_benchmark_cluster_get_c50`: `redis-benchmark --cluster -t get -c 50` against
///   the same cluster, in the same run;
/// - `cluster_cache_hit`: `find` of a warm row through a cache on the cluster (as
///   `cache_hit` on one server);
/// - `cluster_find_many_hit`: `find(many:)` of 30 warm rows (one MGET per node).
struct ClusterRows: Sendable {
    let bench: Bench

    var settings: Settings { bench.settings }

    func run(postgres: PGClient, value: [UInt8]) async throws -> [(String, Result)] {
        guard let url = settings.redisClusterURL else {
            progress("no cluster URL (--redis-cluster-url or REDIS_CLUSTER_URL): skipping the cluster_* rows")
            return []
        }
        let logger = Logger(label: "cache-bench")
        let configuration = try RESPClusterConfiguration(url: url)
        let redis = try RESPClusterClient(configuration: configuration, logger: logger)
        let cache = try CacheAside(postgres: postgres, redis: redis, namespace: "cache-bench-cluster", logger: logger)
        let repository = BenchRepository(cache: cache)
        return try await cache.withRunning {
            var results: [(String, Result)] = []
            // Keys on every primary: 64 of them, spread over the slots.
            let keys = (0..<64).map { "cache-bench:cluster:\($0)" }
            _ = try await redis.pipeline(keys.map { RESPCommands.SET($0, to: value, expiration: .seconds(3600)) })
            progress("cluster: \(redis.knownPrimaries.count) primaries (\(redis.knownPrimaries.joined(separator: ", ")))")

            progress("cluster_get ...")
            results.append(("cluster_get", try await bench.sequential(settings.iterations, warmup: settings.warmup) { i in
                _ = try await redis.get(keys[i % keys.count])
            }))
            progress("cluster_get_one_key ...")
            results.append(("cluster_get_one_key", try await bench.sequential(settings.iterations, warmup: settings.warmup) { _ in
                _ = try await redis.get(keys[0])
            }))
            progress("cluster_get_concurrent (\(settings.concurrency) tasks, \(settings.seconds) s) ...")
            results.append(("cluster_get_concurrent", try await bench.concurrent { i in
                _ = try await redis.get(keys[i % keys.count])
            }))
            if settings.external, let r = try await redisBenchmarkCluster(configuration) {
                results.append(("redis_benchmark_cluster_get_c50", r))
            }

            progress("cluster_cache_hit ...")
            _ = try await repository.find(1)
            try await Task.sleep(for: .milliseconds(50))
            results.append(("cluster_cache_hit", try await bench.sequential(settings.iterations, warmup: settings.warmup) { _ in
                _ = try await repository.find(1)
            }))
            let many: [Int64] = Array(1...30)
            _ = try await repository.find(many: many)
            try await Task.sleep(for: .milliseconds(100))
            progress("cluster_find_many_hit (30 rows) ...")
            let iterations = max(100, settings.iterations / 10)
            results.append(("cluster_find_many_hit", try await bench.sequential(iterations, warmup: settings.warmup / 10) { _ in
                _ = try await repository.find(many: many)
            }))
            progress("cluster cache statistics: \(cache.statistics(keyspace: repository.keyspace)); \(redis.refreshCount) topology refreshes")
            _ = try await redis.del(keys)
            return results
        }
    }

    /// `redis-benchmark --cluster -t get -c 50` against the cluster (it finds the nodes
    /// from the first seed and spreads its clients and keys over the primaries).
    private func redisBenchmarkCluster(_ configuration: RESPClusterConfiguration) async throws -> Result? {
        guard let tool = ExternalTools.which("redis-benchmark") else {
            progress("redis-benchmark not on PATH: skipping redis_benchmark_cluster_get_c50")
            return nil
        }
        guard case .tcp(let host, let port) = configuration.seeds.first else { return nil }
        let requests = max(10_000, Int(100_000 * settings.seconds))
        var arguments = ["--cluster", "-h", host, "-p", String(port), "-t", "get", "-c", "50", "-n", String(requests), "--csv"]
        if let password = configuration.node.password {
            if let user = configuration.node.username { arguments += ["--user", user] }
            arguments += ["-a", password]
        }
        progress("redis-benchmark --cluster -t get -c 50 -n \(requests) ...")
        let output = try await ExternalTools.run(tool, arguments)
        return ExternalTools.getRow(fromCSV: output, tool: "redis-benchmark --cluster")
    }

    /// The cluster's targets (n/a without a cluster).
    static func targets(_ report: Report) -> [Report.Target] {
        func ratio(_ a: Double?, _ b: Double?) -> Double? {
            guard let a, let b, b > 0 else { return nil }
            return a / b
        }
        return [
            Report.Target(
                name: "cluster_get_concurrent ops/s / redis_benchmark_cluster_get_c50 ops/s",
                ratio: ratio(report.value("cluster_get_concurrent")?.opsPerSecond, report.value("redis_benchmark_cluster_get_c50")?.opsPerSecond),
                bound: 2, atMost: false, formula: ">= 2"),
            Report.Target(
                name: "cluster_cache_hit p50 / cache_hit p50",
                ratio: ratio(report.value("cluster_cache_hit")?.p50Micros, report.value("cache_hit")?.p50Micros),
                bound: 1.1, atMost: true, formula: "<= 1.1"),
        ]
    }
}
