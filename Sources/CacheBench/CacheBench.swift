import ArgumentParser
import CacheAside
import Foundation
import Histogram
import Logging
import CacheAsidePostgres
import CacheAsideRedis

/// `cache-bench`: hit vs miss latency and throughput, with the raw C baselines they
/// are built on, from one run on the same servers.
@main
struct CacheBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache-bench",
        abstract: "Measure cache hits and misses against raw hiredis and libpq, in one run.",
        discussion: """
            Prints p50/p99 latency (HdrHistogram) and throughput for: redis_get_raw (synchronous \
            hiredis redisCommandArgv), redis_get (our client), pg_select_raw (synchronous libpq \
            PQexecPrepared by primary key), pg_select (our client), cache_hit, cache_miss (entry \
            deleted before each find), and with --concurrency tasks redis_get_concurrent and \
            cache_hit_concurrent, pg_select_concurrent (16 tasks, default pool); with a TLS URL, \
            redis_get_tls and redis_get_tls_concurrent; decode_entry (the entry codec alone; \
            decode_entry_foundation with JSONDecoder), lease_fill and lease_wait_cross_process (a \
            reader in a second runtime waits for the first one's fill); when redis-benchmark and \
            pgbench are on PATH, also redis_benchmark_get_c50, redis_benchmark_get_tls_c50, \
            pgbench_select_c1 and pgbench_select_c8 against the same servers, and when \
            Benchmarks/PostgresNIOBench is built (`make bench` builds it), the same SELECT on \
            PostgresNIO (pg_select_postgresnio, pg_select_concurrent_postgresnio); with a Redis \
            Cluster URL, cluster_get, cluster_get_one_key, cluster_get_concurrent, redis_benchmark_cluster_get_c50 \
            (redis-benchmark --cluster), cluster_cache_hit and cluster_find_many_hit. Then the \
            ratios the project targets. Use a release build (`make bench`).
            """)

    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (default: $DATABASE_URL).")
    var databaseURL: String?

    @Option(name: .customLong("redis-url"), help: "Redis URL (default: $REDIS_URL).")
    var redisURL: String?

    @Option(name: .customLong("redis-tls-url"), help: "Redis URL over TLS, rediss:// (default: $REDIS_TLS_URL, trusting $DEV_SERVICES_TLS_DIR/ca.crt); without one the TLS rows are skipped.")
    var redisTLSURL: String?

    @Option(name: .customLong("redis-cluster-url"), help: "Redis Cluster URL, redis://host:port,.../0?cluster=true (default: $REDIS_CLUSTER_URL); without one the cluster_* rows are skipped.")
    var redisClusterURL: String?

    @Option(help: "Measured operations per sequential benchmark (after the warm-up).")
    var iterations: Int = 20_000

    @Option(help: "Warm-up operations before each sequential benchmark.")
    var warmup: Int = 2_000

    @Option(help: "Concurrent tasks for the *_concurrent benchmarks.")
    var concurrency: Int = 64

    @Option(help: "Seconds each concurrent benchmark and each external tool runs.")
    var seconds: Double = 3

    @Option(help: "Rows in the benchmark's table.")
    var rows: Int = 10_000

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Flag(help: "Skip redis-benchmark, pgbench and the PostgresNIO benchmark even if they are available.")
    var noExternal = false

    func validate() throws {
        guard iterations >= 100 else { throw ValidationError("--iterations must be at least 100") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
        guard rows >= 100 else { throw ValidationError("--rows must be at least 100") }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let databaseURL = databaseURL ?? environment["DATABASE_URL"] else {
            throw ValidationError("no database: pass --database-url or set DATABASE_URL (`make bench` does both)")
        }
        guard let redisURL = redisURL ?? environment["REDIS_URL"] else {
            throw ValidationError("no Redis: pass --redis-url or set REDIS_URL (`make bench` does both)")
        }
        let settings = Settings(
            databaseURL: databaseURL, redisURL: redisURL,
            redisTLSURL: benchTLSURL(option: redisTLSURL, environment: environment),
            redisClusterURL: (redisClusterURL ?? environment["REDIS_CLUSTER_URL"]).flatMap { $0.isEmpty ? nil : $0 },
            iterations: iterations, warmup: warmup,
            concurrency: concurrency, seconds: seconds, rows: rows, external: !noExternal)
        // Measure off the main actor: every await would otherwise hop back to it.
        let results = try await Task.detached { try await Bench(settings: settings).run() }.value
        Report(results: results).print()
        if let json {
            try Report(results: results).json().write(to: URL(fileURLWithPath: json))
            FileHandle.standardError.write(Data("wrote \(json)\n".utf8))
        }
    }
}

struct Settings: Sendable {
    var databaseURL: String
    var redisURL: String
    var redisTLSURL: String?
    var redisClusterURL: String?
    var iterations: Int
    var warmup: Int
    var concurrency: Int
    var seconds: Double
    var rows: Int
    var external: Bool
}

/// One benchmark's figures.
struct Result: Sendable {
    var p50Micros: Double
    var p99Micros: Double
    var opsPerSecond: Double
    var note: String = ""
}

/// A latency histogram in nanoseconds.
struct Latencies: Sendable {
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)

    mutating func record(_ d: Duration) {
        let (s, atto) = d.components
        _ = histogram.record(UInt64(max(0, s * 1_000_000_000 + atto / 1_000_000_000)))
    }

    mutating func add(_ other: Latencies) { histogram.add(other.histogram) }

    func result(elapsed: Duration) -> Result {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Result(
            p50Micros: Double(histogram.valueAtPercentile(50)) / 1000,
            p99Micros: Double(histogram.valueAtPercentile(99)) / 1000,
            opsPerSecond: seconds > 0 ? Double(histogram.totalCount) / seconds : 0)
    }
}

func progress(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
