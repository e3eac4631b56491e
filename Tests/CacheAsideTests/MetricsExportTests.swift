@testable import CacheAside
import Metrics
import MetricsTestKit
import Testing

/// The keyspace counters against a metrics backend (server-free): what they export,
/// and that the cache's own statistics count whether or not anything is exported.
@Suite struct MetricsExportTests {
    @Test func countersAndTimersReachTheFactoryTheyWereMadeWith() throws {
        let metrics = TestMetrics()
        let counters = withMetricsFactory(metrics) { KeyspaceCounters(keyspace: "exported") }
        counters.record(.hit, 3)
        counters.record(.miss)
        counters.recordLatency(hit: true, since: .now - .milliseconds(5))
        counters.recordLatency(hit: false, since: .now)
        let keyspace = [("keyspace", "exported")]
        #expect(try metrics.expectCounter("cache_aside_hits_total", keyspace).totalValue == 3)
        #expect(try metrics.expectCounter("cache_aside_misses_total", keyspace).totalValue == 1)
        let hit = try metrics.expectTimer("cache_aside_find_duration", keyspace + [("path", "hit")])
        #expect(hit.values.count == 1)
        #expect(hit.values.first.map { $0 >= 5_000_000 } == true, "the hit took at least 5 ms")
        #expect(try metrics.expectTimer("cache_aside_find_duration", keyspace + [("path", "miss")]).values.count == 1)
        #expect(counters.count(.hit) == 3 && counters.count(.miss) == 1)
    }

    @Test func withoutABackendNothingIsExportedAndTheStatisticsStillCount() throws {
        let metrics = TestMetrics()
        // Made with the global factory (no backend is bootstrapped in the tests): the
        // test factory bound afterwards sees nothing of them.
        let counters = KeyspaceCounters(keyspace: "plain")
        withMetricsFactory(metrics) {
            counters.record(.hit, 2)
            counters.recordLatency(hit: true, since: .now)
        }
        #expect(counters.count(.hit) == 2)
        #expect(throws: (any Error).self) { try metrics.expectCounter("cache_aside_hits_total", [("keyspace", "plain")]) }
    }
}
