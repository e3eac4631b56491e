import ArgumentParser
import CacheAsideMemory
import Foundation

/// Measures the in-process tier's store on its own (no servers): hit ratio against LRU,
/// the memory a fill really holds against the byte bound, and the cost of a hit.
///
/// ```sh
/// swift run -c release MemoryBench                   # everything
/// swift run -c release MemoryBench hit-ratio
/// swift run -c release MemoryBench footprint --users 100000 --bytes 16777216
/// valgrind --tool=callgrind .build/release/MemoryBench callgrind-hits 1000000
/// ```
@main
enum Entry {
    static func main() async {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "callgrind-hits" {
            // Hits on the main thread, with no task ever scheduled: valgrind 3.19 fails
            // as soon as Dispatch starts the threads that run tasks.
            let iterations = arguments.dropFirst().first.flatMap { Int($0) } ?? 1_000_000
            print(CallgrindHits.run(iterations: iterations))
            return
        }
        await MemoryBench.main()
    }
}

/// Hits in a plain loop, for instruction counts: run it twice with different
/// iteration counts under callgrind; the difference of the totals divided by the
/// difference of the counts is the cost of one hit.
enum CallgrindHits {
    static func run(iterations: Int) -> Int {
        let hot = HotSet(count: 1000)
        var found = 0
        for i in 0..<iterations where hot.store.value(forKey: hot.keys[i % 1000]) != nil { found += 1 }
        return found
    }
}

struct MemoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "MemoryBench",
        abstract: "Hit ratio, footprint and hit cost of the in-process tier's store.",
        subcommands: [All.self, HitRatioCommand.self, FootprintCommand.self, HitsCommand.self, ConcurrentCommand.self],
        defaultSubcommand: All.self)
}

struct All: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Every measurement, in turn.")

    func run() async throws {
        // Each with its options' defaults: a command built with `init()` has no parsed
        // options and traps when it reads one.
        try await HitRatioCommand.parse([]).run()
        try await FootprintCommand.parse([]).run()
        try await HitsCommand.parse([]).run()
        try await ConcurrentCommand.parse([]).run()
    }
}

struct HitRatioCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hit-ratio", abstract: "S3-FIFO against LRU on a Zipf workload, with and without scans.")

    @Option(help: "Distinct ids read by the Zipf part.") var universe = 100_000
    @Option(help: "Zipf exponent.") var exponent = 0.99
    @Option(help: "Zipf reads.") var requests = 1_000_000
    @Option(help: "A scan every this many reads (0: none).") var scanEvery = 50_000
    @Option(help: "Ids per scan.") var scanLength = 20_000
    @Option(help: "Shards of the store (1 for the policy alone).") var shards = 1

    func run() async throws {
        for scans in [false, true] {
            let workload = Workload(
                universe: universe, exponent: exponent, requests: requests,
                scanEvery: scans ? scanEvery : 0, scanLength: scanLength)
            let trace = workload.trace()
            print("hit ratio, \(workload):")
            for fraction in [0.01, 0.05, 0.1, 0.2] {
                let capacity = Int(Double(universe) * fraction)
                print("  " + HitRatio.measure(trace: trace, universe: universe, capacity: capacity, shards: shards).description)
            }
        }
    }
}

struct FootprintCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "footprint", abstract: "Heap held by a store filled with demo users, against its byte bound.")

    @Option(help: "Demo users to fill.") var users = 100_000
    @Option(help: "The store's byte bound (default 16 MiB: less than 100k users need, so it binds).")
    var bytes = 16 << 20
    @Option(help: "The store's entry bound.") var entries = 1_000_000
    @Flag(help: "Print the result as one JSON object.") var json = false

    func run() async throws {
        let result = try FootprintResult.measure(users: users, maximumBytes: bytes, maximumEntries: entries)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print("footprint: \(result)")
        }
    }
}

struct HitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hits", abstract: "Single-task hit latency (for instruction counts, see callgrind-hits).")

    @Option(help: "Hits to make.") var iterations = 2_000_000
    @Option(help: "Live entries to read from.") var hot = 1000

    func run() async throws {
        let set = HotSet(count: hot)
        print(await Latency.hits(set, iterations: iterations))
    }
}

struct ConcurrentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "concurrent", abstract: "Hits per second from many tasks at once.")

    @Option(help: "Concurrent tasks.") var tasks = 64
    @Option(help: "Hits per task.") var perTask = 200_000
    @Option(help: "Live entries to read from.") var hot = 1000

    func run() async throws {
        let set = HotSet(count: hot)
        _ = await Latency.concurrent(set, tasks: tasks, perTask: perTask / 10)  // warm-up
        let rate = await Latency.concurrent(set, tasks: tasks, perTask: perTask)
        print(String(format: "cache_hit_memory_concurrent: %d tasks x %d hits over %d keys, %d shards: %.0f hits/s",
                     tasks, perTask, hot, set.store.shardCount, rate))
    }
}
