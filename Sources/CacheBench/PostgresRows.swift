import CacheAsidePostgres
import Foundation
import ProcessRunner

/// The PostgreSQL rows beyond the sequential pair: our client under 16 tasks, pgbench
/// with 8 connections, and the same statement on PostgresNIO (a separate package,
/// `Benchmarks/PostgresNIOBench`, run when it has been built), with their targets.
enum PostgresRows {
    /// Tasks of `pg_select_concurrent` and of PostgresNIO's concurrent row.
    static let tasks = 16

    /// Every PostgreSQL row after `pg_select_raw` and `pg_select`.
    static func run(settings: Settings) async throws -> [(String, Result)] {
        var results: [(String, Result)] = []
        progress("pg_select_concurrent (\(tasks) tasks, default pool, \(settings.seconds) s) ...")
        results.append(("pg_select_concurrent", try await selectConcurrent(settings: settings)))
        if settings.external {
            if let r = try await ExternalTools.pgbench(
                url: settings.databaseURL, table: benchTable, rows: settings.rows, seconds: settings.seconds,
                clients: 8, threads: 2)
            {
                results.append(("pgbench_select_c8", r))
            }
            results += try await postgresNIO(settings: settings)
        }
        return results
    }

    /// `pg_select_concurrent`: 16 tasks on one client with the default pool
    /// (``PGConfiguration/maxConnections``), each running the primary-key SELECT and
    /// decoding the row, for `seconds`.
    static func selectConcurrent(settings: Settings) async throws -> Result {
        let client = PGClient(configuration: try PGConfiguration(url: settings.databaseURL))
        do {
            let rows = settings.rows
            let body: @Sendable (Int) async throws -> Void = { i in
                _ = try await client.query(selectSQL, [Int64(i % rows + 1)]).first?.decode(BenchUser.self)
            }
            let result = try await concurrently(tasks: tasks, seconds: settings.seconds, body)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// Runs `body` in `tasks` tasks for `seconds` (after a 300 ms warm-up).
    static func concurrently(tasks: Int, seconds: Double, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Result {
        let warmEnd = ContinuousClock.now + .milliseconds(300)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    var i = t
                    while ContinuousClock.now < warmEnd {
                        try await body(i)
                        i += tasks
                    }
                }
            }
            try await group.waitForAll()
        }
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int64(seconds * 1000))
        let merged = try await withThrowingTaskGroup(of: Latencies.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    var l = Latencies()
                    let clock = ContinuousClock()
                    var i = t
                    while clock.now < end {
                        let s = clock.now
                        try await body(i)
                        l.record(clock.now - s)
                        i += tasks
                    }
                    return l
                }
            }
            var all = Latencies()
            for try await l in group { all.add(l) }
            return all
        }
        return merged.result(elapsed: ContinuousClock.now - start)
    }

    // MARK: - PostgresNIO

    /// The PostgresNIO benchmark's executable: `Benchmarks/PostgresNIOBench/.build/release/`
    /// of the checkout (found from the working directory or from this executable's
    /// place in `.build`), or `$POSTGRESNIO_BENCH`.
    static func postgresNIOExecutable() -> String? {
        if let path = ProcessInfo.processInfo.environment["POSTGRESNIO_BENCH"], !path.isEmpty {
            return FileManager.default.isExecutableFile(atPath: path) ? path : nil
        }
        let relative = "Benchmarks/PostgresNIOBench/.build/release/PostgresNIOBench"
        var roots = [FileManager.default.currentDirectoryPath]
        // .../.build/<triple>/release/cache-bench -> the checkout
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            dir.deleteLastPathComponent()
            roots.append(dir.path)
        }
        return roots.map { $0 + "/" + relative }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// `pg_select_postgresnio` and `pg_select_concurrent_postgresnio`: the same
    /// statement, row decoding and task counts on PostgresNIO's `PostgresClient`.
    static func postgresNIO(settings: Settings) async throws -> [(String, Result)] {
        guard let tool = postgresNIOExecutable() else {
            progress("Benchmarks/PostgresNIOBench is not built (`make bench` builds it): skipping pg_select_postgresnio and pg_select_concurrent_postgresnio")
            return []
        }
        progress("PostgresNIO: \(settings.iterations) sequential queries, then \(tasks) tasks for \(settings.seconds) s ...")
        let outcome = try await ProcessRunner.run(tool, [
            "--database-url", settings.databaseURL, "--iterations", String(settings.iterations),
            "--warmup", String(settings.warmup), "--concurrency", String(tasks), "--seconds", String(settings.seconds),
            "--rows", String(settings.rows), "--table", benchTable,
        ])
        guard outcome.status == 0 else {
            progress("PostgresNIOBench failed (\(outcome.status)): \(outcome.standardError.suffix(500))")
            return []
        }
        struct Figures: Decodable {
            var p50Micros: Double
            var p99Micros: Double
            var opsPerSecond: Double
        }
        let figures = try JSONDecoder().decode([String: Figures].self, from: Data(outcome.standardOutput.utf8))
        return ["pg_select_postgresnio", "pg_select_concurrent_postgresnio"].compactMap { name in
            figures[name].map { (name, Result(p50Micros: $0.p50Micros, p99Micros: $0.p99Micros, opsPerSecond: $0.opsPerSecond)) }
        }
    }

    // MARK: - Targets

    static func targets(_ report: Report) -> [Report.Target] {
        func ratio(_ a: Double?, _ b: Double?) -> Double? {
            guard let a, let b, b > 0 else { return nil }
            return a / b
        }
        let concurrent = report.value("pg_select_concurrent")?.opsPerSecond
        return [
            Report.Target(name: "pg_select_concurrent ops/s / pgbench_select_c8 ops/s",
                          ratio: ratio(concurrent, report.value("pgbench_select_c8")?.opsPerSecond),
                          bound: 0.8, atMost: false, formula: ">= 0.8"),
            Report.Target(name: "pg_select_concurrent ops/s / pg_select_concurrent_postgresnio ops/s",
                          ratio: ratio(concurrent, report.value("pg_select_concurrent_postgresnio")?.opsPerSecond),
                          bound: 3, atMost: false, formula: ">= 3"),
            Report.Target(name: "pg_select p50 / pg_select_postgresnio p50",
                          ratio: ratio(report.value("pg_select")?.p50Micros, report.value("pg_select_postgresnio")?.p50Micros),
                          bound: 0.35, atMost: true, formula: "<= 0.35"),
        ]
    }
}
