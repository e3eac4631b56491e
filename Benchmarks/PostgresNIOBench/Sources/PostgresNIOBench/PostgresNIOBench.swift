import Foundation
import NIOSSL
import PostgresNIO

// postgresnio-bench: runs cache-bench's primary-key SELECT on PostgresNIO's PostgresClient
// and prints the figures as JSON on stdout (progress goes to stderr).
//
//   postgresnio-bench --database-url URL [--iterations N] [--warmup N]
//                     [--concurrency N] [--seconds S] [--rows N] [--table NAME]
//
// One task (pg_select_postgresnio), then N tasks for S seconds
// (pg_select_concurrent_postgresnio), on a client with PostgresNIO's default pool. The
// table must exist and hold `rows` rows (cache-bench creates it).

struct Options {
    var databaseURL = ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
    var iterations = 20_000
    var warmup = 2_000
    var concurrency = 16
    var seconds = 3.0
    var rows = 10_000
    var table = "cache_bench_users"
}

struct Failure: Error, CustomStringConvertible {
    var description: String
}

func parseOptions() throws -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()
    while let arg = args.popFirst() {
        guard let value = args.popFirst() else { throw Failure(description: "\(arg) needs a value") }
        switch arg {
        case "--database-url": o.databaseURL = value
        case "--iterations": o.iterations = Int(value) ?? o.iterations
        case "--warmup": o.warmup = Int(value) ?? o.warmup
        case "--concurrency": o.concurrency = Int(value) ?? o.concurrency
        case "--seconds": o.seconds = Double(value) ?? o.seconds
        case "--rows": o.rows = Int(value) ?? o.rows
        case "--table": o.table = value
        default: throw Failure(description: "unknown option \(arg)")
        }
    }
    guard !o.databaseURL.isEmpty else { throw Failure(description: "no --database-url and no DATABASE_URL") }
    return o
}

/// A PostgresClient configuration from a postgres:// URL (host, port, user, password,
/// database, sslmode).
func configuration(_ url: String) throws -> PostgresClient.Configuration {
    guard let c = URLComponents(string: url), let host = c.host else { throw Failure(description: "not a postgres:// URL") }
    let sslmode = c.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
    let tls: PostgresClient.Configuration.TLS
    switch sslmode {
    case "disable":
        tls = .disable
    case "verify-full", "verify-ca":
        var t = TLSConfiguration.makeClientConfiguration()
        if let root = c.queryItems?.first(where: { $0.name == "sslrootcert" })?.value {
            t.trustRoots = .file(root)
        }
        tls = .require(t)
    default:
        var t = TLSConfiguration.makeClientConfiguration()
        t.certificateVerification = .none
        tls = sslmode == "require" ? .require(t) : .prefer(t)
    }
    return PostgresClient.Configuration(
        host: host, port: c.port ?? 5432, username: c.user ?? "postgres",
        password: c.password?.removingPercentEncoding ?? c.password,
        database: String(c.path.dropFirst()).removingPercentEncoding, tls: tls)
}

struct Figures: Codable {
    var p50Micros: Double
    var p99Micros: Double
    var opsPerSecond: Double
}

func figures(_ latencies: [Duration], elapsed: Duration) -> Figures {
    let micros = latencies.map { Double($0.components.seconds) * 1e6 + Double($0.components.attoseconds) / 1e12 }.sorted()
    func at(_ p: Double) -> Double { micros.isEmpty ? 0 : micros[min(micros.count - 1, Int(Double(micros.count) * p))] }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return Figures(p50Micros: at(0.5), p99Micros: at(0.99), opsPerSecond: seconds > 0 ? Double(micros.count) / seconds : 0)
}

func progress(_ message: String) {
    FileHandle.standardError.write(Data(("postgresnio-bench: " + message + "\n").utf8))
}

@main
struct PostgresNIOBench {
    static func main() async {
        do {
            let options = try parseOptions()
            let client = PostgresClient(configuration: try configuration(options.databaseURL))
            let output = try await withThrowingTaskGroup(of: [String: Figures]?.self) { group in
                group.addTask {
                    await client.run()
                    return nil
                }
                let result = try await measure(client, options)
                group.cancelAll()
                return result
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            FileHandle.standardOutput.write(try encoder.encode(output))
            FileHandle.standardOutput.write(Data("\n".utf8))
        } catch {
            progress("error: \(String(reflecting: error))")
            exit(1)
        }
    }

    static func select(_ client: PostgresClient, _ table: String, _ id: Int64) async throws {
        let rows = try await client.query("SELECT id, name, email, updated_at FROM \(unescaped: table) WHERE id = \(id)")
        for try await (rowID, name, email, updatedAt) in rows.decode((Int64, String, String, Date).self) {
            precondition(rowID == id && !name.isEmpty && !email.isEmpty && updatedAt.timeIntervalSince1970 > 0)
        }
    }

    static func measure(_ client: PostgresClient, _ o: Options) async throws -> [String: Figures] {
        let rows = Int64(o.rows)
        progress("pg_select_postgresnio: \(o.warmup) + \(o.iterations) sequential queries ...")
        for i in 0..<o.warmup { try await select(client, o.table, Int64(i) % rows + 1) }
        var latencies: [Duration] = []
        latencies.reserveCapacity(o.iterations)
        let clock = ContinuousClock()
        var busy = Duration.zero
        for i in 0..<o.iterations {
            let t = clock.now
            try await select(client, o.table, Int64(i) % rows + 1)
            let d = clock.now - t
            busy += d
            latencies.append(d)
        }
        let single = figures(latencies, elapsed: busy)

        progress("pg_select_concurrent_postgresnio: \(o.concurrency) tasks, \(o.seconds) s ...")
        let warmEnd = ContinuousClock.now + .milliseconds(300)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<o.concurrency {
                group.addTask {
                    var i = Int64(t)
                    while ContinuousClock.now < warmEnd {
                        try await select(client, o.table, i % rows + 1)
                        i += 1
                    }
                }
            }
            try await group.waitForAll()
        }
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int64(o.seconds * 1000))
        let all = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for t in 0..<o.concurrency {
                group.addTask {
                    var l: [Duration] = []
                    var i = Int64(t)
                    let clock = ContinuousClock()
                    while clock.now < end {
                        let s = clock.now
                        try await select(client, o.table, i % rows + 1)
                        l.append(clock.now - s)
                        i += Int64(o.concurrency)
                    }
                    return l
                }
            }
            var merged: [Duration] = []
            for try await l in group { merged += l }
            return merged
        }
        let concurrent = figures(all, elapsed: ContinuousClock.now - start)
        return ["pg_select_postgresnio": single, "pg_select_concurrent_postgresnio": concurrent]
    }
}
