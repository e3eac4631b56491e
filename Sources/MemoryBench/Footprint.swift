import CMallocStatistics
import CacheAsideMemory
import Foundation

/// The demo's cached entity (`users`: id, name, email), as the tier would hold it.
struct DemoUser: Codable, Sendable, Equatable {
    var id: Int64
    var name: String
    var email: String

    /// The row the demo seeds for `id`.
    init(id: Int64) {
        self.id = id
        self.name = "User \(id)"
        self.email = "user\(id)@example.com"
    }

    /// The entry's key, built the way the cache builds its keys.
    static func key(_ id: Int64) -> String { "user-lookup:user:v1:\(id)" }
}

/// What a filled store really holds, measured with the C allocator's own statistics
/// (bytes handed out and not returned) around the fill, in a process that does nothing
/// else meanwhile.
struct FootprintResult: Codable, Sendable, CustomStringConvertible {
    var users: Int
    var maximumBytes: Int
    var maximumEntries: Int
    /// Entries held after the fill.
    var entries: Int
    /// Bytes the store charged for them.
    var accountedBytes: Int
    /// Growth of the allocator's in-use bytes across the fill, with the store alive.
    var heapBytes: Int
    /// Growth of the resident set across the fill.
    var residentBytes: Int
    /// The store's own structures (entry records, value slots, index, ghost), without
    /// the keys' and values' heap storage.
    var structureBytes: Int
    /// The average size the fills gave (JSON bytes per user).
    var averageSize: Double

    var heapToBound: Double { Double(heapBytes) / Double(maximumBytes) }
    var heapToAccounted: Double { Double(heapBytes) / Double(max(1, accountedBytes)) }

    var description: String {
        func mib(_ bytes: Int) -> String { String(format: "%.2f MiB", Double(bytes) / 1_048_576) }
        return """
            \(users) demo users filled, bound \(mib(maximumBytes)) / \(maximumEntries) entries: \
            \(entries) held, \(mib(accountedBytes)) accounted, heap \(mib(heapBytes)) \
            (\(String(format: "%.3f", heapToBound)) of the bound, \(String(format: "%.3f", heapToAccounted)) of the accounted bytes, \
            \(String(format: "%.0f", Double(heapBytes) / Double(max(1, entries)))) B per entry; structures \(mib(structureBytes))), \
            resident set +\(mib(residentBytes)); JSON \(String(format: "%.1f", averageSize)) B per user
            """
    }

    /// Fills a new store with `users` demo users, each charged the length of its JSON,
    /// and measures what the process holds afterwards.
    static func measure(users: Int, maximumBytes: Int, maximumEntries: Int) throws -> FootprintResult {
        let encoder = JSONEncoder()
        _ = try encoder.encode(DemoUser(id: 0))  // the encoder's own caches, before the baseline
        c_malloc_trim()
        let heapBefore = c_malloc_bytes_in_use()
        let residentBefore = residentSetBytes()

        let store = MemoryStore<DemoUser>(configuration: MemoryStoreConfiguration(
            maximumEntries: maximumEntries, maximumBytes: maximumBytes, timeToLive: .seconds(3600)))
        var totalSize = 0
        for id in 1...Int64(max(1, users)) {
            let user = DemoUser(id: id)
            let size = try encoder.encode(user).count
            totalSize += size
            store.fill(store.fillTicket(forKey: DemoUser.key(id)), with: user, size: size)
        }

        c_malloc_trim()
        let heapAfter = c_malloc_bytes_in_use()
        let residentAfter = residentSetBytes()
        let statistics = store.statistics
        let structure = store.structureBytes
        return withExtendedLifetime(store) {
            FootprintResult(
                users: users, maximumBytes: maximumBytes, maximumEntries: maximumEntries,
                entries: statistics.entries, accountedBytes: statistics.bytes,
                heapBytes: heapAfter - heapBefore, residentBytes: residentAfter - residentBefore,
                structureBytes: structure, averageSize: Double(totalSize) / Double(max(1, users)))
        }
    }

    /// The resident set size from /proc/self/statm (0 where there is none).
    static func residentSetBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
