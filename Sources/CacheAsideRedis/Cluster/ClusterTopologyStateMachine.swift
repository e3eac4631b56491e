/// Decides when a cluster client refreshes its view of the cluster (`CLUSTER SHARDS`)
/// and which node it asks: a pure state machine, fed events with the current time,
/// returning what to do. The shell sends the command, runs the timer and feeds the
/// outcome back; nothing here touches a socket or a clock.
///
/// When it refreshes:
/// - at ``start(now:)`` (from the seed nodes);
/// - when something says that the view is out of date: a `MOVED` that the map did not
///   know, a failed connection to a node, a `CLUSTERDOWN` or `READONLY` reply;
/// - periodically, every ``Configuration/refreshInterval`` (with ±10 % jitter, so that
///   processes started together do not refresh together);
/// - again after a failed refresh, or one that left slots without an owner.
///
/// How it avoids a refresh storm: at most one refresh is in flight; events during a
/// refresh are folded into one follow-up; refreshes start at least
/// ``Configuration/minimumRefreshInterval`` apart; after `n` failures in a row the next
/// attempt waits `minimumRefreshInterval × 2^(n-1)`, at most
/// ``Configuration/maximumRefreshBackoff``. So a thousand `MOVED` replies or failed
/// connections in a second cost one refresh per second, and a cluster that cannot be
/// reached costs one attempt per `maximumRefreshBackoff`.
///
/// Which node: the nodes of the current map (primaries first, then replicas), then
/// the seeds, in turn from a random starting point (so that the processes of a
/// deployment spread their refreshes over the cluster), skipping nodes whose
/// connection or refresh failed within ``Configuration/suspectPeriod`` unless no
/// other node is left.
struct ClusterTopologyStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    struct Configuration: Hashable, Sendable {
        /// How often the topology is refreshed when nothing else asks for it (30 s).
        var refreshInterval: Duration = .seconds(30)
        /// The shortest time between the starts of two refreshes, except the first
        /// (1 s).
        var minimumRefreshInterval: Duration = .seconds(1)
        /// The longest wait before retrying after failed refreshes (10 s).
        var maximumRefreshBackoff: Duration = .seconds(10)
        /// A refresh with no outcome after this long counts as failed, and a late
        /// outcome is ignored (5 s).
        var refreshTimeout: Duration = .seconds(5)
        /// How long a node whose connection or refresh failed is not asked (30 s).
        var suspectPeriod: Duration = .seconds(30)

        init() {}
    }

    /// Why a refresh was started.
    enum Reason: Hashable, Sendable {
        case initial
        case periodic
        /// A `MOVED` that the slot map did not know.
        case moved
        /// A connection to a node failed.
        case connectionFailed
        /// A node answered `CLUSTERDOWN` or `READONLY`.
        case serverReportedChange
        /// The last refresh failed (or timed out).
        case retry
        /// The last refresh left slots without an owner.
        case incompleteTopology
    }

    /// A refresh to run: send `CLUSTER SHARDS` to `node` and report the outcome with
    /// `id` (``refreshSucceeded(_:map:now:)`` or ``refreshFailed(_:now:)``).
    struct Refresh: Hashable, Sendable {
        var id: Int
        var node: ClusterNodeAddress
        var reason: Reason
    }

    /// What the shell does after an event: start `refresh` (if any), and call
    /// ``tick(now:)`` at `wakeUp` (if any; an earlier call is harmless).
    struct Action: Hashable, Sendable {
        var refresh: Refresh?
        var wakeUp: Instant?
    }

    /// The outcome of a successful refresh.
    struct Installed: Hashable, Sendable {
        /// Whether the reply replaced the slot map. A map with fewer assigned slots than
        /// the current one is not taken (the node that sent it knows less than we do);
        /// another node is asked instead.
        var accepted: Bool
        /// Whether the new map differs from the old one.
        var changed: Bool
        /// Nodes new in the map (to connect to) and gone from it (to disconnect from).
        var addedNodes: [ClusterNodeAddress]
        var removedNodes: [ClusterNodeAddress]
        var action: Action
    }

    let configuration: Configuration
    /// The routing table: `nil` until the first refresh succeeds.
    private(set) var slotMap: ClusterSlotMap?
    /// Refreshes that failed in a row (a map with unowned slots counts as one).
    private(set) var consecutiveFailures = 0

    private let seeds: [ClusterNodeAddress]
    private var started = false
    private var inFlight: (refresh: Refresh, deadline: Instant)?
    private var lastStart: Instant?
    private var pending: Reason?
    private var nextPeriodic: Instant?
    private var suspects: [ClusterNodeAddress: Instant] = [:]
    private var cursor: Int
    private var nextID = 1
    private var random: SplitMix64

    /// A machine that will learn the cluster from `seeds`. `randomSeed` decides the
    /// node asked first and the jitter (a test passes a constant).
    init(seeds: [ClusterNodeAddress], configuration: Configuration = Configuration(), randomSeed: UInt64) {
        var seen = Set<ClusterNodeAddress>()
        self.seeds = seeds.filter { seen.insert($0).inserted }
        self.configuration = configuration
        random = SplitMix64(seed: randomSeed)
        cursor = Int(truncatingIfNeeded: random.next() & 0xFFFF)
    }

    /// True while a refresh is in flight.
    var isRefreshing: Bool { inFlight != nil }

    /// When the shell should call ``tick(now:)`` next, if anything is scheduled.
    var nextWakeUp: Instant? {
        if let inFlight { return inFlight.deadline }
        if pending != nil { return earliestStart }
        return nextPeriodic
    }

    // MARK: Events

    /// Starts: the first refresh, from a seed.
    mutating func start(now: Instant) -> Action {
        guard !started else { return decide(now: now) }
        started = true
        pending = .initial
        return decide(now: now)
    }

    /// The time has come (or passed) that an earlier action named.
    mutating func tick(now: Instant) -> Action {
        decide(now: now)
    }

    /// A node answered `MOVED` or `ASK`. A `MOVED` patches the slot map at once and, if
    /// it was news, asks for a refresh; an `ASK` changes nothing.
    mutating func redirected(_ redirection: ClusterRedirection, by node: ClusterNodeAddress, now: Instant) -> Action {
        guard redirection.kind == .moved else { return decide(now: now) }
        if var map = slotMap {
            let outcome = map.apply(moved: redirection, answeredBy: node)
            slotMap = map
            if outcome == .alreadyKnown { return decide(now: now) }
        }
        request(.moved)
        return decide(now: now)
    }

    /// A connection to `node` could not be opened, or broke.
    mutating func connectionFailed(to node: ClusterNodeAddress, now: Instant) -> Action {
        suspects[node] = now
        request(.connectionFailed)
        return decide(now: now)
    }

    /// A connection to `node` was opened: the node may be asked again.
    mutating func connectionSucceeded(to node: ClusterNodeAddress) {
        suspects[node] = nil
    }

    /// A node answered `CLUSTERDOWN` or `READONLY` (see
    /// ``ClusterErrorClass/suggestsTopologyChange``).
    mutating func serverReportedChange(by node: ClusterNodeAddress, now: Instant) -> Action {
        request(.serverReportedChange)
        return decide(now: now)
    }

    /// Refresh `id` brought a map. An outcome of a refresh that timed out or that is
    /// not the current one is ignored.
    mutating func refreshSucceeded(_ id: Int, map: ClusterSlotMap, now: Instant) -> Installed {
        guard let current = inFlight, current.refresh.id == id else {
            return Installed(accepted: false, changed: false, addedNodes: [], removedNodes: [], action: decide(now: now))
        }
        inFlight = nil
        suspects[current.refresh.node] = nil
        nextPeriodic = now.advanced(by: jittered(configuration.refreshInterval))

        let old = slotMap
        if let old, map.assignedSlotCount < old.assignedSlotCount {
            consecutiveFailures += 1
            request(.incompleteTopology)
            return Installed(accepted: false, changed: false, addedNodes: [], removedNodes: [], action: decide(now: now))
        }
        if map.coversAllSlots {
            consecutiveFailures = 0
        } else {
            consecutiveFailures += 1
            request(.incompleteTopology)
        }
        slotMap = map
        let oldNodes = old?.nodes ?? []
        let newNodes = map.nodes
        let oldSet = Set(oldNodes)
        let newSet = Set(newNodes)
        return Installed(
            accepted: true,
            changed: old != map,
            addedNodes: newNodes.filter { !oldSet.contains($0) },
            removedNodes: oldNodes.filter { !newSet.contains($0) },
            action: decide(now: now))
    }

    /// Refresh `id` failed: the node could not be reached, or its reply was an error or
    /// not a topology. Another node is asked after the backoff.
    mutating func refreshFailed(_ id: Int, now: Instant) -> Action {
        guard let current = inFlight, current.refresh.id == id else { return decide(now: now) }
        inFlight = nil
        fail(current.refresh.node, now: now)
        return decide(now: now)
    }

    // MARK: Decisions

    private mutating func request(_ reason: Reason) {
        if pending == nil { pending = reason }
    }

    private mutating func fail(_ node: ClusterNodeAddress, now: Instant) {
        consecutiveFailures += 1
        suspects[node] = now
        pending = .retry
    }

    /// When a wanted refresh may start.
    private var earliestStart: Instant? {
        guard let lastStart else { return nil }
        let wait = consecutiveFailures > 0 ? backoff(afterFailures: consecutiveFailures) : configuration.minimumRefreshInterval
        return lastStart.advanced(by: wait)
    }

    private func backoff(afterFailures failures: Int) -> Duration {
        var wait = configuration.minimumRefreshInterval
        for _ in 1..<max(failures, 1) {
            if wait >= configuration.maximumRefreshBackoff { break }
            wait = wait * 2
        }
        return min(wait, configuration.maximumRefreshBackoff)
    }

    private mutating func decide(now: Instant) -> Action {
        guard started else { return Action(refresh: nil, wakeUp: nil) }
        if let current = inFlight {
            guard now >= current.deadline else { return Action(refresh: nil, wakeUp: nextWakeUp) }
            inFlight = nil
            fail(current.refresh.node, now: now)
        }
        if pending == nil, let periodic = nextPeriodic, now >= periodic {
            pending = .periodic
        }
        guard let reason = pending else { return Action(refresh: nil, wakeUp: nextWakeUp) }
        if let earliest = earliestStart, now < earliest {
            return Action(refresh: nil, wakeUp: earliest)
        }
        guard let node = chooseNode(now: now) else {
            // No node to ask at all (no seeds): nothing can be done.
            return Action(refresh: nil, wakeUp: nil)
        }
        let refresh = Refresh(id: nextID, node: node, reason: reason)
        nextID += 1
        pending = nil
        lastStart = now
        inFlight = (refresh, now.advanced(by: configuration.refreshTimeout))
        return Action(refresh: refresh, wakeUp: inFlight?.deadline)
    }

    /// The next node to ask, in turn, skipping recent failures unless all failed.
    private mutating func chooseNode(now: Instant) -> ClusterNodeAddress? {
        var candidates = slotMap?.nodes ?? []
        let known = Set(candidates)
        candidates += seeds.filter { !known.contains($0) }
        guard !candidates.isEmpty else { return nil }
        let healthy = candidates.filter { node in
            guard let failed = suspects[node] else { return true }
            return now >= failed.advanced(by: configuration.suspectPeriod)
        }
        defer { cursor &+= 1 }
        if healthy.isEmpty {
            // Every node failed lately: the one that failed longest ago.
            return candidates.min { (suspects[$0] ?? now) < (suspects[$1] ?? now) }
        }
        return healthy[Int(UInt(bitPattern: cursor) % UInt(healthy.count))]
    }

    /// `duration` scaled by a random factor in [0.9, 1.1].
    private mutating func jittered(_ duration: Duration) -> Duration {
        let unit = Double(random.next() >> 11) / Double(1 << 53)
        return duration * (0.9 + 0.2 * unit)
    }
}

/// A small, fast, seedable generator (Steele, Lea and Flood's SplitMix64): the state
/// machine's choices are reproducible in tests.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
