import Foundation

/// The results table, the target ratios, and the JSON file.
struct Report {
    let results: [(String, Result)]

    func value(_ name: String) -> Result? {
        results.first { $0.0 == name }?.1
    }

    /// A target: a ratio of figures from this run and its bound.
    struct Target {
        var name: String
        var ratio: Double?
        var bound: Double
        var atMost: Bool
        var formula: String

        var verdict: String {
            guard let ratio else { return "n/a" }
            return (atMost ? ratio <= bound : ratio >= bound) ? "met" : "MISSED"
        }
    }

    var targets: [Target] {
        let redisRaw = value("redis_get_raw")?.p50Micros
        let pgRaw = value("pg_select_raw")?.p50Micros
        func ratio(_ a: Double?, _ b: Double?) -> Double? {
            guard let a, let b, b > 0 else { return nil }
            return a / b
        }
        let missBudget = pgRaw.flatMap { pg in redisRaw.map { pg + 2.2 * $0 } }
        let redisBenchmark = value("redis_benchmark_get_c50")?.opsPerSecond
        return [
            Target(name: "cache_hit p50 / redis_get_raw p50", ratio: ratio(value("cache_hit")?.p50Micros, redisRaw),
                   bound: 1.2, atMost: true, formula: "<= 1.2"),
            Target(name: "cache_miss p50 / (pg_select_raw p50 + 2.2 x redis_get_raw p50)",
                   ratio: ratio(value("cache_miss")?.p50Micros, missBudget), bound: 1.0, atMost: true, formula: "<= 1.0"),
            Target(name: "redis_get p50 / redis_get_raw p50", ratio: ratio(value("redis_get")?.p50Micros, redisRaw),
                   bound: 1.15, atMost: true, formula: "<= 1.15"),
            Target(name: "pg_select p50 / pg_select_raw p50", ratio: ratio(value("pg_select")?.p50Micros, pgRaw),
                   bound: 1.2, atMost: true, formula: "<= 1.2"),
            Target(name: "redis_get_concurrent ops/s / redis_benchmark_get_c50 ops/s",
                   ratio: ratio(value("redis_get_concurrent")?.opsPerSecond, redisBenchmark),
                   bound: 3, atMost: false, formula: ">= 3"),
            Target(name: "redis_get_tls p50 / redis_get p50", ratio: ratio(value("redis_get_tls")?.p50Micros, value("redis_get")?.p50Micros),
                   bound: 1.2, atMost: true, formula: "<= 1.2"),
            Target(name: "redis_get_tls_concurrent ops/s / redis_benchmark_get_tls_c50 ops/s",
                   ratio: ratio(value("redis_get_tls_concurrent")?.opsPerSecond, value("redis_benchmark_get_tls_c50")?.opsPerSecond),
                   bound: 2, atMost: false, formula: ">= 2"),
            Target(name: "cache_hit_concurrent ops/s / redis_benchmark_get_c50 ops/s",
                   ratio: ratio(value("cache_hit_concurrent")?.opsPerSecond, redisBenchmark),
                   bound: 1.5, atMost: false, formula: ">= 1.5"),
        ] + cacheCoreTargets + memoryTargets + PostgresRows.targets(self) + ClusterRows.targets(self)
    }

    func print() {
        var lines: [String] = []
        lines.append(pad("benchmark", 26) + lpad("p50 µs", 10) + lpad("p99 µs", 10) + lpad("ops/s", 12))
        for (name, r) in results {
            lines.append(pad(name, 26) + lpad(String(format: "%.1f", r.p50Micros), 10)
                + lpad(String(format: "%.1f", r.p99Micros), 10) + lpad(String(format: "%.0f", r.opsPerSecond), 12))
        }
        lines.append("")
        lines.append(pad("target", 66) + lpad("ratio", 8) + lpad("bound", 9) + "  verdict")
        for t in targets {
            lines.append(pad(t.name, 66) + lpad(t.ratio.map { String(format: "%.2f", $0) } ?? "-", 8)
                + lpad(t.formula, 9) + "  " + t.verdict)
        }
        Swift.print(lines.joined(separator: "\n"))
    }

    func json() throws -> Data {
        var resultsObject: [String: Any] = [:]
        for (name, r) in results {
            resultsObject[name] = ["p50_us": r.p50Micros, "p99_us": r.p99Micros, "ops_per_s": r.opsPerSecond]
        }
        var targetsObject: [String: Any] = [:]
        for t in targets {
            targetsObject[t.name] = ["ratio": t.ratio.map { $0 as Any } ?? NSNull(), "bound": t.formula, "verdict": t.verdict]
        }
        return try JSONSerialization.data(
            withJSONObject: ["results": resultsObject, "targets": targetsObject], options: [.prettyPrinted, .sortedKeys])
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    private func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
}
