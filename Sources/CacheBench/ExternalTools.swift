import Foundation
import ProcessRunner
import CacheAsideRedis

/// The servers' own load tools, run by `cache-bench` against the same servers so that
/// their figures come from the same run.
enum ExternalTools {
    /// Finds an executable on PATH.
    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// `redis-benchmark -t get -c 50` on the same value as the other benchmarks.
    static func redisBenchmark(
        config: RESPConfiguration, key: String, value: [UInt8], seconds: Double, redis: RESPClient
    ) async throws -> Result? {
        guard let tool = which("redis-benchmark") else {
            progress("redis-benchmark not on PATH: skipping redis_benchmark_get_c50")
            return nil
        }
        guard case .tcp(let host, let port) = config.endpoint else { return nil }
        // Without -r, redis-benchmark GETs the literal key "key:__rand_int__".
        let benchKey = "key:__rand_int__"
        _ = try await redis.set(benchKey, to: value, expiration: .seconds(600))
        return try await withCleanup {
            let requests = max(10_000, Int(100_000 * seconds))
            var arguments = ["-h", host, "-p", String(port), "-t", "get", "-c", "50", "-n", String(requests), "--csv"]
            if let password = config.password {
                if let user = config.username { arguments += ["--user", user] }
                arguments += ["-a", password]
            }
            if config.database != 0 { arguments += ["--dbnum", String(config.database)] }
            progress("redis-benchmark -t get -c 50 -n \(requests) ...")
            let output = try await run(tool, arguments)
            return getRow(fromCSV: output, tool: "redis-benchmark")
        } cleanup: {
            _ = try? await redis.del([benchKey])
        }
    }

    /// The GET row of `redis-benchmark --csv` output
    /// (`"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`),
    /// or nil (said) when there is none.
    static func getRow(fromCSV output: String, tool: String) -> Result? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("\"GET\"") }) else {
            progress("\(tool) printed no GET line: \(output.prefix(300))")
            return nil
        }
        let fields = line.split(separator: ",").map { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
        guard fields.count >= 7, let rps = fields[1], let p50 = fields[4], let p99 = fields[6] else { return nil }
        return Result(p50Micros: p50 * 1000, p99Micros: p99 * 1000, opsPerSecond: rps)
    }

    /// `pgbench -c CLIENTS -j THREADS -M prepared` running the same primary-key SELECT.
    static func pgbench(url: String, table: String, rows: Int, seconds: Double, clients: Int = 1, threads: Int = 1) async throws -> Result? {
        guard let tool = which("pgbench") else {
            progress("pgbench not on PATH: skipping pgbench_select_c\(clients)")
            return nil
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cache-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let script = directory.appendingPathComponent("select.sql")
        try Data("""
            \\set id random(1, \(rows))
            SELECT id, name, email, updated_at FROM \(table) WHERE id = :id;

            """.utf8).write(to: script)
        let duration = max(1, Int(seconds.rounded(.up)))
        progress("pgbench -c \(clients) -j \(threads) -M prepared -T \(duration) ...")
        let prefix = directory.appendingPathComponent("pgbench").path
        let output = try await run(tool, [
            "-n", "-c", String(clients), "-j", String(threads), "-T", String(duration), "-M", "prepared", "-f", script.path,
            "-l", "--log-prefix=\(prefix)", url,
        ])
        var latencies = Latencies()
        let logs = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("pgbench") }
        for log in logs {
            let text = try String(contentsOfFile: directory.appendingPathComponent(log).path, encoding: .utf8)
            for line in text.split(separator: "\n") {
                // client_id transaction_no time(us) script_no time_epoch time_us
                let parts = line.split(separator: " ")
                if parts.count >= 3, let micros = Int64(parts[2]) { latencies.record(.microseconds(micros)) }
            }
        }
        let tps = output.split(separator: "\n").first { $0.hasPrefix("tps = ") }
            .flatMap { Double($0.dropFirst(6).split(separator: " ").first ?? "") }
        guard latencies.histogram.totalCount > 0 else {
            progress("pgbench wrote no transaction log: \(output.prefix(300))")
            return nil
        }
        var result = latencies.result(elapsed: .seconds(duration))
        if let tps { result.opsPerSecond = tps }
        return result
    }

    /// Runs a tool to completion and returns its standard output; throws with its
    /// standard error if it fails. The password travels in arguments to the tools
    /// (their own convention) and is never printed.
    static func run(_ tool: String, _ arguments: [String]) async throws -> String {
        let outcome = try await ProcessRunner.run(tool, arguments)
        guard outcome.status == 0 else {
            throw RawBaselines.Failure(description: "\(URL(fileURLWithPath: tool).lastPathComponent) failed (\(outcome.status)): \(outcome.standardError.prefix(500))")
        }
        return outcome.standardOutput
    }
}

/// Runs `body`, then `cleanup` (awaited), whether `body` threw or not.
func withCleanup<T>(_ body: () async throws -> T, cleanup: () async -> Void) async throws -> T {
    let result: T
    do {
        result = try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
    return result
}
