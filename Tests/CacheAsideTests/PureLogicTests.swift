@testable import CacheAside
import CacheAsideRedis
import Foundation
import Testing

/// The cache layer's pure parts, without sockets: keys, codec, policy, breaker, flights.
@Suite struct CacheKeyTests {
    @Test func keyHasTheDocumentedShape() throws {
        let key = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 3, id: "42")
        #expect(key.entryKey == "app:user:42")
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
            let tail = String(key.entryKey.dropFirst("app:user:".count))
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

    @Test func everySchemaVersionSharesTheKeyAndReadsOnlyItsOwnEntries() throws {
        let v1 = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 1, id: "7")
        let v2 = try CacheKey(namespace: "app", keyspace: "user", schemaVersion: 2, id: "7")
        #expect(v1.entryKey == v2.entryKey, "a write through either version reaches the other's entry")
        let codec = JSONValueCodec()
        let written = try EntryFormat.encode("seven", schemaVersion: 1, codec: codec)
        #expect(try EntryFormat.decode(String.self, from: written, schemaVersion: 1, codec: codec) == .some("seven"))
        #expect(try EntryFormat.decode(String.self, from: written, schemaVersion: 2, codec: codec) == nil, "another version's entry is a miss")
    }
}

@Suite struct EntryCodecTests {
    struct Row: Codable, Sendable, Equatable {
        var id: Int64
        var name: String
        var when: Date
    }

    struct Everything: Codable, Sendable, Equatable {
        enum Kind: String, Codable { case a, b }
        struct Inner: Codable, Sendable, Equatable { var x: Int8; var y: [UInt16] }
        var int: Int
        var int32: Int32
        var uint64: UInt64
        var double: Double
        var float: Float
        var bool: Bool
        var text: String
        var optional: String?
        var missing: Int?
        var kind: Kind
        var list: [String]
        var nested: Inner
        var map: [String: Double]
        var intMap: [Int: String]
        var data: Data
        var url: URL
        var decimal: Decimal
        var uuid: UUID
        var date: Date
    }

    @Test func presentAndAbsentRoundTripThroughTheEnvelope() throws {
        let codec = JSONValueCodec()
        let row = Row(id: 9, name: "Zoë \"quoted\" }", when: Date(timeIntervalSince1970: 1_700_000_000.25))
        let bytes = try EntryFormat.encode(row, schemaVersion: 4, codec: codec)
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix(#"{"s":2,"sv":4,"v":{"#))
        // The stored bytes are one valid JSON document.
        #expect((try? JSONSerialization.jsonObject(with: Data(bytes))) != nil)
        #expect(try EntryFormat.decode(Row.self, from: bytes, schemaVersion: 4, codec: codec) == .some(row))
        let absent = try EntryFormat.encode(Row?.none, schemaVersion: 4, codec: codec)
        #expect((try? JSONSerialization.jsonObject(with: Data(absent))) != nil)
        #expect(try EntryFormat.decode(Row.self, from: absent, schemaVersion: 4, codec: codec) == .some(nil))
    }

    /// The cache's own decoder reads what JSONEncoder writes, as JSONDecoder does.
    @Test func theOwnDecoderAgreesWithFoundation() throws {
        let value = Everything(
            int: -42, int32: 7, uint64: .max, double: 3.141592653589793, float: 0.5, bool: true,
            text: "tab\t newline\n quote\" backslash\\ é 😀 \u{1}", optional: "here", missing: nil, kind: .b,
            list: ["", "a", "[x]", "{y}"], nested: .init(x: -128, y: [0, 65535]), map: ["k": 1e-7, "long key": -2.5e300],
            intMap: [1: "one", -2: "minus two"], data: Data([0, 1, 2, 254, 255]), url: URL(string: "https://example.com/a?b=c")!,
            decimal: Decimal(string: "12345.6789")!, uuid: UUID(), date: Date(timeIntervalSince1970: 1_764_547_200.123456))
        let json = Array(try JSONEncoder().encode(value))
        let ours = try JSONValueCodec().decode(Everything.self, from: json, in: 0..<json.count)
        let foundation = try JSONDecoder().decode(Everything.self, from: Data(json))
        #expect(ours == foundation)
        #expect(ours == value)
        // Escaped forms and spaces that JSONEncoder does not write, but JSON allows.
        let written = Array(#" { "name" : "a\u00e9\ud83d\ude00\/" , "id" : 5 , "when" : 0.5 } "#.utf8)
        let row = try JSONValueCodec().decode(Row.self, from: written, in: 0..<written.count)
        #expect(row == Row(id: 5, name: "aé😀/", when: Date(timeIntervalSinceReferenceDate: 0.5)))
    }

    @Test(arguments: [
        Array("garbage".utf8), [], [0, 1, 2, 255], Array(#"{"s":2,"sv":1,"v":{"id":"x"}}"#.utf8),
        Array(#"{"s":2,"sv":1,"v":{}}"#.utf8), Array(#"{"s":2,"sv":1,"v":"#.utf8),
        Array(#"{"s":2,"sv":1,"v":{"id":1,"name":"x","when":1}"#.utf8),
        Array(#"{"s":2,"sv":1,"v":{"id":1,"name":"x","when":1}} trailing"#.utf8),
        Array(#"{"s":2,"sv":1,"v":{"id":1,"name":"x\q","when":1}}"#.utf8),
        Array(#"{"s":2,"sv":1,"v":{"id":99999999999999999999,"name":"x","when":1}}"#.utf8),
        Array(#"{"s":2,"sv":1,"absent":false}"#.utf8),
    ])
    func garbageNeverDecodesAndNeverCrashes(bytes: [UInt8]) {
        let codec = JSONValueCodec()
        let answer = try? EntryFormat.decode(Row.self, from: bytes, schemaVersion: 1, codec: codec)
        #expect(answer == nil, "\(String(decoding: bytes, as: UTF8.self))")
    }
}

@Suite struct EntryFormatTests {
    @Test func leasesAndTombstonesAreRecognisedAndNeverDecodeAsEntries() throws {
        let lease = EntryFormat.Lease(token: Token.lease(prefix: Token.hex(7)))
        let tombstone = EntryFormat.tombstone()
        #expect(EntryFormat.classify(lease.bytes) == .lease(lease))
        #expect(EntryFormat.classify(lease.waitedBytes) == .lease(EntryFormat.Lease(token: lease.token, waited: true)))
        #expect(EntryFormat.classify(tombstone) == .tombstone)
        #expect(EntryFormat.classify(nil) == .nothing)
        for mark in [lease.bytes, lease.waitedBytes, tombstone] {
            #expect((try? JSONSerialization.jsonObject(with: Data(mark))) != nil, "marks are JSON too")
            #expect(try EntryFormat.decode(EntryCodecTests.Row.self, from: mark, schemaVersion: 1, codec: JSONValueCodec()) == nil)
        }
        #expect(EntryFormat.tombstone() != tombstone, "every invalidation attempt writes a fresh tombstone")
        #expect(Token.lease(prefix: Token.hex(7)) != lease.token)
        #expect(lease.token.starts(with: Token.hex(7)), "a lease tells which runtime took it")
    }

    @Test func theTombstoneOutlivesEveryEntryOfThePolicy() {
        let policy = CachePolicy()
        #expect(policy.tombstoneTTLMilliseconds > policy.longestEntryLifetime.milliseconds)
    }

    @Test func serverRefusalsAreClassifiedFromTheirText() {
        #expect(RedisCacheStore<RESPClient>.classify("READONLY You can't write against a read only replica.").kind == .readOnly)
        #expect(RedisCacheStore<RESPClient>.classify("OOM command not allowed when used memory > 'maxmemory'.").kind == .outOfMemory)
        #expect(RedisCacheStore<RESPClient>.classify("MISCONF Redis is configured to save RDB snapshots").kind == .misconfigured)
        #expect(RedisCacheStore<RESPClient>.classify("LOADING Redis is loading the dataset in memory").kind == .loading)
        #expect(RedisCacheStore<RESPClient>.classify(
            "ERR Error running script (call to f_1): @user_script:3: @user_script: 3: -READONLY You can't write against a read only replica."
        ).kind == .readOnly)
        #expect(RedisCacheStore<RESPClient>.classify("OOM command not allowed when used memory > 'maxmemory'. script: abc").isOutage)
        #expect(RedisCacheStore<RESPClient>.classify("WRONGTYPE Operation against a key holding the wrong kind of value").kind == .rejected)
        #expect(!RedisCacheStore<RESPClient>.classify("ERR unknown command").isOutage)
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
