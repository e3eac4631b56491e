@testable import CacheAside
import Foundation
import Testing

/// The cache layer's pure parts, without sockets: keys, codec, policy, breaker, flights.
@Suite struct CacheKeyTests {
    @Test func keyHasTheDocumentedShape() throws {
        let key = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 3, id: "42")
        #expect(key.entryKey == "app:user:v3:42")
    }

    @Test func idsThatCouldForgeKeysNeverCollide() throws {
        let ids = ["1", "1:lease", "1%3Alease", "a b", "a%20b", "a*", "*", "%", "", "é", "e\u{301}",
                   "{tag}", "x:y:z", "😀", "1 ", " 1", "%25", "\u{0}", "~", "a\nb"]
        var seen: [String: String] = [:]
        for id in ids {
            let key = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 1, id: id)
            if let other = seen[key.entryKey] {
                Issue.record("ids \(other.debugDescription) and \(id.debugDescription) share \(key.entryKey)")
            }
            seen[key.entryKey] = id
            // No raw separators or glob characters survive escaping.
            let tail = String(key.entryKey.dropFirst("app:user:v1:".count))
            #expect(!tail.contains(":") && !tail.contains("*") && !tail.contains(" ") && !tail.contains("{"))
            #expect(tail.utf8.allSatisfy { $0 < 0x80 })
        }
        #expect(seen.count == ids.count)
    }

    @Test func badNamespaceOrKeyspaceIsRefused() {
        #expect(throws: CacheError.self) { try CacheKey(namespace: "", keyspace: "user", schemaVersion: 1, id: "1") }
        #expect(throws: CacheError.self) { try CacheKey(namespace: "a:b", keyspace: "user", schemaVersion: 1, id: "1") }
        #expect(throws: CacheError.self) { try CacheKey(namespace: "app", keyspace: "us*er", schemaVersion: 1, id: "1") }
        #expect(throws: CacheError.self) { try CacheKey(namespace: "app", keyspace: "user", schemaVersion: -1, id: "1") }
    }

    @Test func bumpingTheSchemaVersionChangesEveryKey() throws {
        let v1 = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 1, id: "7")
        let v2 = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 2, id: "7")
        #expect(v1.entryKey != v2.entryKey)
    }
}

@Suite struct EntryCodecTests {
    struct Row: Codable, Sendable, Equatable {
        var id: Int64
        var name: String
        var when: Date
    }

    @Test func presentAndAbsentRoundTrip() throws {
        let codec = JSONEntryCodec()
        let row = Row(id: 9, name: "Zoë \"quoted\" }", when: Date(timeIntervalSince1970: 1_700_000_000.25))
        let bytes = try codec.encode(CacheEntry.present(row))
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix(#"{"s":1,"v":{"#))
        // The stored bytes are one valid JSON document.
        #expect((try? JSONSerialization.jsonObject(with: Data(bytes))) != nil)
        guard case .present(let back) = try codec.decode(Row.self, from: bytes) else {
            Issue.record("expected a present entry"); return
        }
        #expect(back == row)
        let absent = try codec.encode(CacheEntry<Row>.absent)
        guard case .absent = try codec.decode(Row.self, from: absent) else {
            Issue.record("expected an absent entry"); return
        }
    }

    @Test(arguments: [
        Array("garbage".utf8), [], [0, 1, 2, 255], Array(#"{"s":1,"v":{"id":"x"}}"#.utf8),
        Array(#"{"s":2,"v":{}}"#.utf8), Array(#"{"s":1,"v":"#.utf8), Array(#"{"s":1,"absent":false}"#.utf8),
    ])
    func garbageFailsToDecodeWithoutCrashing(bytes: [UInt8]) {
        #expect(throws: CacheError.self) { _ = try JSONEntryCodec().decode(Row.self, from: bytes) }
    }
}

@Suite struct CacheMarksTests {
    @Test func leasesAndTombstonesAreRecognisedAndNeverDecodeAsEntries() throws {
        let lease = CacheMarks.lease(makeLeaseToken())
        let tombstone = CacheMarks.tombstone()
        #expect(CacheMarks.isLease(lease) && !CacheMarks.isTombstone(lease))
        #expect(CacheMarks.isTombstone(tombstone) && !CacheMarks.isLease(tombstone))
        for mark in [lease, tombstone] {
            #expect((try? JSONSerialization.jsonObject(with: Data(mark))) != nil, "marks are JSON too")
            #expect(throws: CacheError.self) { _ = try JSONEntryCodec().decode(EntryCodecTests.Row.self, from: mark) }
        }
        let entry = try JSONEntryCodec().encode(CacheEntry.present(EntryCodecTests.Row(id: 1, name: "x", when: Date())))
        #expect(!CacheMarks.isLease(entry) && !CacheMarks.isTombstone(entry))
    }

    @Test func everyInvalidationAttemptWritesAFreshTombstone() throws {
        let key = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 1, id: "1")
        let first = CacheMarks.invalidationCommands([key], policy: .init())
        let second = CacheMarks.invalidationCommands([key], policy: .init())
        #expect(first.count == 1 && first[0].count == 5)
        #expect(first[0][2] != second[0][2], "a retry must not restore a tombstone a reader has seen")
        // The tombstone outlives any entry of the policy.
        let ttl = Int64(String(decoding: first[0][4], as: UTF8.self)) ?? 0
        #expect(ttl > CachePolicy().longestEntryLifetime.milliseconds)
    }

    @Test func aLeaseIsTakenWithSetNXOverNothingAndByScriptOverATombstone() throws {
        let key = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 1, id: "1")
        let lease = CacheMarks.lease(makeLeaseToken())
        let overNothing = CacheMarks.leaseCommand(key: key, saw: nil, lease: lease, ttl: Array("3000".utf8))
        #expect(overNothing.map { String(decoding: $0, as: UTF8.self) }.contains("NX"))
        let overTombstone = CacheMarks.leaseCommand(key: key, saw: CacheMarks.tombstone(), lease: lease, ttl: Array("3000".utf8))
        #expect(String(decoding: overTombstone[0], as: UTF8.self) == "EVALSHA")
        #expect(CacheMarks.granted(.simpleString("OK")) && CacheMarks.granted(.integer(1)))
        #expect(!CacheMarks.granted(.null) && !CacheMarks.granted(.integer(0)))
    }
}

@Suite struct CachePolicyTests {
    @Test func ttlsGetJitterWithinTheirBounds() {
        let policy = CachePolicy(ttl: .seconds(100), ttlJitter: 0.2, negativeTTL: .seconds(10))
        #expect(policy.entryTTLMilliseconds(absent: false, random: 0) == 100_000)
        #expect(policy.entryTTLMilliseconds(absent: false, random: 0.999_999) == 119_999)
        #expect(policy.entryTTLMilliseconds(absent: true, random: 0.5) == 11_000)
        let samples = Set((0..<200).map { _ in policy.entryTTLMilliseconds(absent: false) })
        #expect(samples.count > 50, "jitter spreads TTLs")
        #expect(samples.allSatisfy { (100_000..<120_000).contains($0) })
        #expect(policy.longestEntryLifetime == .seconds(120))
    }

    @Test func noEntryIsEverWrittenWithoutATTL() {
        let zero = CachePolicy(ttl: .zero, ttlJitter: -3, negativeTTL: .seconds(-5))
        #expect(zero.entryTTLMilliseconds(absent: false, random: 0) == 1000)
        #expect(zero.entryTTLMilliseconds(absent: true, random: 0.9) == 1000)
        let nan = CachePolicy(ttl: .seconds(5), ttlJitter: .nan)
        #expect(nan.entryTTLMilliseconds(absent: false, random: 0.5) == 5000)
    }
}

@Suite struct CircuitBreakerTests {
    let t0 = ContinuousClock.now

    @Test func opensAfterTheThresholdAndRejectsDuringCoolDown() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 3, coolDown: .seconds(2)))
        #expect(breaker.decide(now: t0) == .allow)
        breaker.recordFailure(now: t0)
        breaker.recordFailure(now: t0)
        #expect(breaker.decide(now: t0) == .allow)
        breaker.recordFailure(now: t0)
        #expect(breaker.state == .open(until: t0 + .seconds(2)))
        #expect(breaker.decide(now: t0 + .seconds(1)) == .reject)
        #expect(breaker.isOpen(now: t0 + .seconds(1)))
    }

    @Test func aSuccessResetsTheFailureCount() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 2, coolDown: .seconds(2)))
        breaker.recordFailure(now: t0)
        breaker.recordSuccess()
        breaker.recordFailure(now: t0)
        #expect(breaker.decide(now: t0) == .allow)
    }

    @Test func halfOpenLetsOneProbeThroughAndItsOutcomeDecides() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 1, coolDown: .seconds(2)))
        breaker.recordFailure(now: t0)
        #expect(breaker.decide(now: t0 + .seconds(2)) == .probe)
        // Others are refused while the probe runs.
        #expect(breaker.decide(now: t0 + .milliseconds(2100)) == .reject)
        // The probe fails: open for another cool-down.
        breaker.recordFailure(now: t0 + .milliseconds(2200))
        #expect(breaker.decide(now: t0 + .seconds(3)) == .reject)
        #expect(breaker.decide(now: t0 + .milliseconds(4200)) == .probe)
        breaker.recordSuccess()
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        #expect(breaker.decide(now: t0 + .milliseconds(4201)) == .allow)
    }

    @Test func aProbeThatNeverReportsIsReplacedAfterACoolDown() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 1, coolDown: .seconds(1)))
        breaker.recordFailure(now: t0)
        #expect(breaker.decide(now: t0 + .seconds(1)) == .probe)
        #expect(breaker.decide(now: t0 + .milliseconds(1500)) == .reject)
        #expect(breaker.decide(now: t0 + .seconds(2)) == .probe)
    }
}

@Suite struct SingleFlightTests {
    @Test func oneLeaderManyFollowersAllGetTheValue() async {
        let table = SingleFlightTable()
        guard case .leader(let flight) = table.join("k", as: Int.self) else {
            Issue.record("first caller leads"); return
        }
        let followers = (0..<20).map { _ in table.join("k", as: Int.self) }
        await withTaskGroup(of: Int?.self) { group in
            for role in followers {
                guard case .follower(let f) = role else { Issue.record("later callers follow"); continue }
                group.addTask {
                    if case .value(let v) = await f.wait() { return v }
                    return nil
                }
            }
            while flight.waiterCount < 20 { await Task.yield() }
            flight.resolve(.value(7))
            for await v in group { #expect(v == 7) }
        }
    }

    @Test func aWriteMakesLaterCallersStartAfresh() {
        let table = SingleFlightTable()
        guard case .leader = table.join("k", as: Int.self) else { Issue.record("leads"); return }
        table.forget("k")
        guard case .leader = table.join("k", as: Int.self) else {
            Issue.record("after a write, a caller starts a new load"); return
        }
    }

    @Test func leavingOnlyRemovesTheSameFlight() {
        let table = SingleFlightTable()
        guard case .leader(let first) = table.join("k", as: Int.self) else { return }
        table.forget("k")
        guard case .leader = table.join("k", as: Int.self) else { return }
        table.leave("k", first)  // the old load leaves: the new flight stays
        #expect(table.hasFlight("k"))
    }

    @Test func aValueReadFromRedisGoesOnlyToWaitersThatCameBeforeTheRead() async {
        let flight = Flight<Int>()
        let early = Task { await flight.wait() }
        while flight.waiterCount < 1 { await Task.yield() }
        let mark = flight.mark()  // the read is sent now
        let late = Task { await flight.wait() }
        while flight.waiterCount < 2 { await Task.yield() }
        flight.resolve(.value(5), registeredBy: mark)
        guard case .value(5) = await early.value else { Issue.record("early waiter gets the value"); return }
        guard case .retry = await late.value else { Issue.record("late waiter reads afresh"); return }
        guard case .retry = await flight.wait() else { Issue.record("even later waiter reads afresh"); return }
    }

    @Test func aCancelledFollowerLeavesWithoutDisturbingOthers() async throws {
        let flight = Flight<Int>()
        let cancelled = Task { await flight.wait() }
        let staying = Task { await flight.wait() }
        while flight.waiterCount < 2 { await Task.yield() }
        cancelled.cancel()
        guard case .failure(let error) = await cancelled.value else { Issue.record("cancelled waiter fails"); return }
        #expect(error is CancellationError)
        flight.resolve(.retry)
        guard case .retry = await staying.value else { Issue.record("others get the outcome"); return }
        // Late waiters see the outcome at once.
        guard case .retry = await flight.wait() else { Issue.record("late waiter"); return }
    }
}
