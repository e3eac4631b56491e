@testable import CacheAsideRedis
import Testing

/// A clock the tests move by hand.
struct ClusterTestInstant: InstantProtocol {
    var offset: Duration
    func advanced(by duration: Duration) -> ClusterTestInstant { ClusterTestInstant(offset: offset + duration) }
    func duration(to other: ClusterTestInstant) -> Duration { other.offset - offset }
    static func < (a: ClusterTestInstant, b: ClusterTestInstant) -> Bool { a.offset < b.offset }
}

/// The refresh decisions of the topology state machine, with a manual clock and no
/// server.
@Suite struct ClusterTopologyStateMachineTests {
    typealias Machine = ClusterTopologyStateMachine<ClusterTestInstant>

    func at(_ milliseconds: Int) -> ClusterTestInstant { ClusterTestInstant(offset: .milliseconds(milliseconds)) }
    func node(_ port: Int) -> ClusterNodeAddress { ClusterNodeAddress(host: "127.0.0.1", port: port) }

    let seeds = [7000, 7001, 7002].map { ClusterNodeAddress(host: "127.0.0.1", port: $0) }

    /// The map of ``map(primaries:covered:)`` with its defaults, built once: building a
    /// map takes milliseconds in a debug build, and some tests install hundreds.
    let full: ClusterSlotMap

    init() throws {
        full = try Self.map()
    }

    func map(primaries: [Int] = [7000, 7001, 7002], covered: Int = 16384) throws -> ClusterSlotMap {
        try Self.map(primaries: primaries, covered: covered)
    }

    /// Three shards, primaries 7000-7002 with replicas 7100-7102, on `covered` slots
    /// (all by default).
    static func map(primaries: [Int] = [7000, 7001, 7002], covered: Int = 16384) throws -> ClusterSlotMap {
        let shards = primaries.enumerated().map { (i, port) in
            SyntheticCluster.shard(
                slots: [(i * covered / primaries.count)...((i + 1) * covered / primaries.count - 1)],
                nodes: [
                    SyntheticCluster.shardNode(id: "p\(port)", port: port, role: "master"),
                    SyntheticCluster.shardNode(id: "r\(port)", port: port + 100, role: "replica"),
                ])
        }
        return try ClusterSlotMap(topology: ClusterTopology(clusterShardsReply: .array(shards)), tls: false, answeredBy: "127.0.0.1")
    }

    func moved(_ slot: Int, to port: Int) throws -> ClusterRedirection {
        ClusterRedirection(kind: .moved, slot: try #require(HashSlot(slot)), host: "127.0.0.1", port: port)
    }

    /// A started machine whose first refresh succeeded at `at(0)`.
    func running(seed: UInt64 = 1) throws -> Machine {
        var machine = Machine(seeds: seeds, randomSeed: seed)
        let first = try #require(machine.start(now: at(0)).refresh)
        let installed = machine.refreshSucceeded(first.id, map: full, now: at(0))
        #expect(installed.accepted)
        return machine
    }

    @Test func startAsksASeedAndInstallsItsMap() throws {
        var machine = Machine(seeds: seeds + [seeds[0]], randomSeed: 42)
        #expect(machine.slotMap == nil)
        #expect(machine.tick(now: at(0)) == Machine.Action(refresh: nil, wakeUp: nil), "nothing before start")
        let action = machine.start(now: at(0))
        let refresh = try #require(action.refresh)
        #expect(refresh.reason == .initial && seeds.contains(refresh.node))
        #expect(action.wakeUp == at(5000))  // the refresh timeout
        #expect(machine.isRefreshing)
        #expect(machine.start(now: at(1)).refresh == nil, "a second start starts nothing")

        let installed = machine.refreshSucceeded(refresh.id, map: full, now: at(20))
        #expect(installed.accepted && installed.changed)
        #expect(Set(installed.addedNodes) == Set([7000, 7001, 7002, 7100, 7101, 7102].map(node)))
        #expect(installed.removedNodes.isEmpty)
        #expect(installed.action.refresh == nil)
        // The next refresh is the periodic one, 30 s ± 10 % later.
        let wakeUp = try #require(installed.action.wakeUp)
        #expect(wakeUp >= at(20 + 27_000) && wakeUp <= at(20 + 33_000))
        #expect(machine.slotMap?.coversAllSlots == true)
        #expect(machine.consecutiveFailures == 0)
    }

    @Test func theTopologyIsRefreshedPeriodicallyAndAnUnchangedOneChangesNothing() throws {
        var machine = try running()
        var now = 0
        for _ in 0..<5 {
            let wakeUp = try #require(machine.nextWakeUp)
            #expect(wakeUp.offset >= .milliseconds(now + 27_000) && wakeUp.offset <= .milliseconds(now + 33_000))
            #expect(machine.tick(now: wakeUp.advanced(by: .milliseconds(-1))).refresh == nil, "not before its time")
            let refresh = try #require(machine.tick(now: wakeUp).refresh)
            #expect(refresh.reason == .periodic)
            now = Int(wakeUp.offset / .milliseconds(1)) + 10
            let installed = machine.refreshSucceeded(refresh.id, map: full, now: at(now))
            #expect(installed.accepted && !installed.changed && installed.addedNodes.isEmpty && installed.removedNodes.isEmpty)
        }
    }

    @Test func aStormOfMovedRepliesCostsOneRefreshPerMinimumInterval() throws {
        var machine = try running()
        // 1000 MOVED replies for different slots within 1 s, starting 2 s after the last refresh.
        var started: [Machine.Refresh] = []
        for i in 0..<1000 {
            let action = machine.redirected(try moved(i, to: 7001), by: node(7000), now: at(2000 + i))
            if let refresh = action.refresh { started.append(refresh) }
        }
        #expect(started.count == 1)
        #expect(started.first?.reason == .moved)
        // The map learned every MOVED at once, before any refresh.
        #expect(machine.slotMap?.primary(for: try #require(HashSlot(999))) == node(7001))
        // More MOVED replies while the refresh runs are folded into one follow-up, which
        // starts no earlier than 1 s after the first.
        for i in 1000..<1100 {
            #expect(machine.redirected(try moved(i, to: 7001), by: node(7000), now: at(2100)).refresh == nil)
        }
        let first = try #require(started.first)
        let installed = machine.refreshSucceeded(first.id, map: full, now: at(2200))
        #expect(installed.action.refresh == nil)
        #expect(installed.action.wakeUp == at(3000))
        #expect(machine.tick(now: at(2999)).refresh == nil)
        let followUp = try #require(machine.tick(now: at(3000)).refresh)
        #expect(followUp.reason == .moved)
        _ = machine.refreshSucceeded(followUp.id, map: full, now: at(3050))
        // Nothing more is pending: the next wake-up is the periodic refresh.
        #expect(try #require(machine.nextWakeUp) >= at(3050 + 27_000))
    }

    @Test func aMovedThatTheMapKnowsOrAnAskRefreshesNothing() throws {
        var machine = try running()
        // Slot 5 is 7000's: a MOVED there says what the map says.
        #expect(machine.redirected(try moved(5, to: 7000), by: node(7001), now: at(5000)).refresh == nil)
        let ask = ClusterRedirection(kind: .ask, slot: try #require(HashSlot(5)), host: "127.0.0.1", port: 7002)
        let before = machine.slotMap
        #expect(machine.redirected(ask, by: node(7000), now: at(5000)).refresh == nil)
        #expect(machine.slotMap == before)
        #expect(!machine.isRefreshing)
    }

    @Test func aMovedToAReplicaPromotesItInTheMapAtOnce() throws {
        var machine = try running()
        let action = machine.redirected(try moved(5, to: 7100), by: node(7000), now: at(5000))
        #expect(action.refresh?.reason == .moved)
        #expect(machine.slotMap?.primary(for: try #require(HashSlot(0))) == node(7100))
        #expect(machine.slotMap?.primary(for: try #require(HashSlot(5000))) == node(7100))
    }

    @Test func failedConnectionsAskAnotherNodeAndAreRateLimited() throws {
        var machine = try running()
        let dead = node(7000)
        var refreshes: [Machine.Refresh] = []
        // Every in-flight command to the dead node fails: 100 failures in 50 ms.
        for i in 0..<100 {
            if let refresh = machine.connectionFailed(to: dead, now: at(10_000 + i / 2)).refresh { refreshes.append(refresh) }
        }
        #expect(refreshes.count == 1)
        let refresh = try #require(refreshes.first)
        #expect(refresh.reason == .connectionFailed)
        #expect(refresh.node != dead)
        _ = machine.refreshSucceeded(refresh.id, map: full, now: at(10_100))
        // The node is still down (the cluster has not failed it over yet): more failures
        // bring a refresh a second after the last one, never asking the dead node.
        var asked: [ClusterNodeAddress] = []
        var now = 10_100
        while now < 20_000 {
            now += 10
            let action = machine.connectionFailed(to: dead, now: at(now))
            if let refresh = action.refresh {
                asked.append(refresh.node)
                _ = machine.refreshSucceeded(refresh.id, map: full, now: at(now + 5))
            }
        }
        #expect(asked.count == 10)  // at 11 s, 12 s, ..., 20 s
        #expect(!asked.contains(dead))
        #expect(Set(asked).count >= 4, "refreshes rotate over the live nodes: \(asked)")
        // Once the node is reachable again it may be asked again.
        machine.connectionSucceeded(to: dead)
        var askedAfter: Set<ClusterNodeAddress> = []
        for i in 0..<12 {
            let refresh = try #require(machine.serverReportedChange(by: node(7001), now: at(30_000 + i * 1000)).refresh)
            #expect(refresh.reason == .serverReportedChange)
            askedAfter.insert(refresh.node)
            _ = machine.refreshSucceeded(refresh.id, map: full, now: at(30_000 + i * 1000 + 5))
        }
        #expect(askedAfter.contains(dead))
    }

    @Test func failedRefreshesBackOffExponentiallyUpToTheMaximumAndAskOtherNodes() throws {
        var machine = try running()
        var now = 40_000
        var refresh = try #require(machine.connectionFailed(to: node(7005), now: at(now)).refresh)
        var waits: [Int] = []
        var asked: [ClusterNodeAddress] = [refresh.node]
        for _ in 0..<7 {
            let action = machine.refreshFailed(refresh.id, now: at(now + 100))
            #expect(action.refresh == nil)
            let wakeUp = try #require(action.wakeUp)
            waits.append(Int((wakeUp.offset - .milliseconds(now)) / .milliseconds(1)))
            #expect(machine.tick(now: wakeUp.advanced(by: .milliseconds(-1))).refresh == nil)
            refresh = try #require(machine.tick(now: wakeUp).refresh)
            #expect(refresh.reason == .retry)
            #expect(refresh.node != asked.last, "a node that just failed is not asked again at once")
            asked.append(refresh.node)
            now = Int(wakeUp.offset / .milliseconds(1))
        }
        #expect(waits == [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000])
        #expect(machine.consecutiveFailures == 7)
        #expect(machine.slotMap != nil, "the last map stays in use")
        _ = machine.refreshSucceeded(refresh.id, map: full, now: at(now + 10))
        #expect(machine.consecutiveFailures == 0)
        // Back to the minimum interval.
        #expect(machine.connectionFailed(to: node(7005), now: at(now + 500)).wakeUp == at(now + 1000))
    }

    @Test func aRefreshWithoutOutcomeTimesOutAndItsLateReplyIsIgnored() throws {
        var machine = try running()
        let slow = try #require(machine.serverReportedChange(by: node(7000), now: at(5000)).refresh)
        #expect(machine.nextWakeUp == at(10_000))
        #expect(machine.tick(now: at(9999)).refresh == nil)
        let retry = try #require(machine.tick(now: at(10_000)).refresh)
        #expect(retry.reason == .retry && retry.node != slow.node && retry.id != slow.id)
        // The slow node finally answers with a map that drops a shard: ignored.
        let late = machine.refreshSucceeded(slow.id, map: try map(primaries: [7000, 7001]), now: at(10_500))
        #expect(!late.accepted)
        #expect(machine.slotMap?.nodes.count == 6)
        #expect(machine.isRefreshing)
        #expect(machine.refreshFailed(slow.id, now: at(10_600)).refresh == nil, "a late failure changes nothing")
        #expect(machine.isRefreshing)
        let installed = machine.refreshSucceeded(retry.id, map: try map(primaries: [7000, 7001, 7003]), now: at(10_700))
        #expect(installed.accepted && installed.changed)
        #expect(installed.addedNodes == [node(7003), node(7103)])
        #expect(installed.removedNodes == [node(7002), node(7102)])
    }

    @Test func aMapWithUnownedSlotsIsUsedButRefreshedAgainAndOneThatKnowsLessIsNot() throws {
        var machine = Machine(seeds: seeds, randomSeed: 3)
        let first = try #require(machine.start(now: at(0)).refresh)
        // Half the slots (a cluster being set up, or a node that knows little).
        let partial = machine.refreshSucceeded(first.id, map: try map(covered: 8192), now: at(10))
        #expect(partial.accepted)
        #expect(machine.slotMap?.assignedSlotCount == 8192)
        #expect(partial.action.wakeUp == at(1000))
        let second = try #require(machine.tick(now: at(1000)).refresh)
        #expect(second.reason == .incompleteTopology && second.node != first.node)
        let full = machine.refreshSucceeded(second.id, map: full, now: at(1010))
        #expect(full.accepted && full.changed)
        #expect(machine.consecutiveFailures == 0)
        // A node that knows fewer slots than we do is not believed; another is asked.
        let third = try #require(machine.serverReportedChange(by: node(7000), now: at(5000)).refresh)
        let less = machine.refreshSucceeded(third.id, map: try map(covered: 8192), now: at(5010))
        #expect(!less.accepted)
        #expect(machine.slotMap?.coversAllSlots == true)
        #expect(less.action.wakeUp == at(6000))
        #expect(try #require(machine.tick(now: at(6000)).refresh).reason == .incompleteTopology)
    }

    @Test func whenEveryNodeFailedTheOneThatFailedLongestAgoIsAsked() throws {
        var machine = Machine(seeds: seeds, randomSeed: 9)
        var refresh = try #require(machine.start(now: at(0)).refresh)
        var failedAt: [ClusterNodeAddress: Int] = [:]
        var now = 0
        for _ in 0..<3 {
            failedAt[refresh.node] = now
            _ = machine.refreshFailed(refresh.id, now: at(now))
            let wakeUp = try #require(machine.nextWakeUp)
            now = Int(wakeUp.offset / .milliseconds(1))
            refresh = try #require(machine.tick(now: wakeUp).refresh)
        }
        #expect(failedAt.count == 3, "each seed was tried once")
        // All three failed: the oldest failure is tried first.
        let oldest = try #require(failedAt.min { $0.value < $1.value }?.key)
        #expect(refresh.node == oldest)
        #expect(machine.slotMap == nil)
    }

    @Test func withoutSeedsNothingCanBeAsked() {
        var machine = Machine(seeds: [], randomSeed: 1)
        #expect(machine.start(now: at(0)) == Machine.Action(refresh: nil, wakeUp: nil))
        #expect(machine.connectionFailed(to: node(7000), now: at(10)).refresh == nil)
    }

    @Test func processesStartingTogetherSpreadTheirRefreshesOverNodesAndTime() throws {
        var firstNodes: Set<ClusterNodeAddress> = []
        var periodic: Set<Duration> = []
        for seed in UInt64(0)..<50 {
            var machine = Machine(seeds: seeds, randomSeed: seed &* 0x9E37_79B9)
            let refresh = try #require(machine.start(now: at(0)).refresh)
            firstNodes.insert(refresh.node)
            let installed = machine.refreshSucceeded(refresh.id, map: full, now: at(0))
            periodic.insert(try #require(installed.action.wakeUp).offset)
        }
        #expect(firstNodes.count == 3)
        #expect(periodic.count > 40)
        // The same seed makes the same choices.
        var a = Machine(seeds: seeds, randomSeed: 77)
        var b = Machine(seeds: seeds, randomSeed: 77)
        #expect(a.start(now: at(0)) == b.start(now: at(0)))
    }

    @Test func overAMinuteOfConstantTroubleTheRefreshRateStaysBounded() throws {
        // A command fails every 10 ms for a minute, each refresh takes 30 ms and
        // succeeds: one refresh per second, not one per failure.
        var machine = try running(seed: 5)
        var inFlight: (id: Int, done: Int)?
        var count = 0
        for now in stride(from: 1000, through: 61_000, by: 10) {
            if let current = inFlight, now >= current.done {
                _ = machine.refreshSucceeded(current.id, map: full, now: at(now))
                inFlight = nil
            }
            let action = machine.connectionFailed(to: node(7002), now: at(now))
            if let refresh = action.refresh {
                #expect(inFlight == nil, "one refresh at a time")
                inFlight = (refresh.id, now + 30)
                count += 1
            }
        }
        #expect(count >= 59 && count <= 61, "\(count) refreshes")
    }
}
