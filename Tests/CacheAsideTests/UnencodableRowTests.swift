@testable import CacheAside
import CacheAsidePostgres
import Testing

/// A row whose JSON encoding fails (`JSONEncoder` refuses NaN by default).
struct Reading: Codable, Sendable {
    var id: Int64
    var value: Double
}

/// Loads readings whose value is NaN.
struct NaNReadingRepository: CachedRepository {
    let cache: CacheAside
    var keyspace: String { "reading" }

    func load(_ id: Int64, on _: some PGQueryable) async throws -> Reading? {
        Reading(id: id, value: .nan)
    }
}

@Suite struct UnencodableRowTests {
    /// The fill encodes the row off the caller's path; a row that cannot be encoded is
    /// still answered, nothing is cached, and its lease is given up rather than left
    /// for other readers to wait out.
    @Test func aRowThatDoesNotEncodeIsAnsweredAndItsLeaseGivenUp() async throws {
        let store = FakeStore()
        let process = try FakeProcess.make(store: store)
        let repository = NaNReadingRepository(cache: process.cache)
        let key = try repository.cacheKey(for: 7).entryKey
        let reading = try await repository.find(7)
        #expect(reading?.id == 7)
        #expect(reading?.value.isNaN == true)
        #expect(await eventually(timeout: .seconds(30)) { store.calls("release") == 1 }, "the lease was given up")
        #expect(store.get(key) == nil, "the key holds neither an entry nor the lease")
        #expect(store.calls("fill") == 0)
        let statistics = process.cache.statistics(keyspace: repository.keyspace)
        #expect(statistics.fills == 0)
        #expect(statistics.databaseLoads == 1)
        // A second read misses again and loads again: nothing was cached.
        _ = try await repository.find(7)
        #expect(process.cache.statistics(keyspace: repository.keyspace).databaseLoads == 2)
        await process.close()
    }
}
