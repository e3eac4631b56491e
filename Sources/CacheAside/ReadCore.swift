import CacheAsideMemory
import Metrics

/// How many times a read starts afresh (a write happened while it waited, a lease
/// changed hands) before it reads the database directly.
let maximumRounds = 4

/// The read path of `find` and `find(many:)`: one core for one key or many.
///
/// For each key, in rounds:
/// 1. Read what the keys hold (one `read` for all). An entry of this schema version
///    that decodes is a hit.
/// 2. A miss joins this process's load of the key if one is in flight: by key (the
///    single-flight table), or by the lease token it found (a load of this process
///    that is deciding its fill).
/// 3. Otherwise this call leads the key's load:
///    - over a tombstone, in `.overlapped` mode, it loads while it takes the lease over
///      that very tombstone;
///    - over anything else (nothing, an entry of another schema version, bytes that do
///      not decode), and always in `.exclusive` mode, it takes the lease first and loads
///      only once it holds it;
///    - over another process's lease, it waits for that fill (announced at once), and
///      reads the database without a lease when the wait runs out.
/// 4. The rows this call must read come from one database load; the entries are
///    filled, each only over its own lease, after the load left the single-flight
///    table.
///
/// Nothing here assumes that a key keeps what it holds: any key may vanish at any time
/// (eviction, FLUSHDB, an operator, a failover), and a lease is granted only over bytes
/// the reader saw, or over nothing before the load begins.
struct ReadCore<Entity: Codable & Sendable>: Sendable {
    let cache: CacheAside
    let state: KeyspaceState
    /// The keys, one per position.
    let keys: [String]
    /// With an in-process tier: each position's fill ticket, taken before the first
    /// read; an entry read from Redis afterwards is kept in memory under it.
    var memoryTickets: [MemoryFillTicket?]? = nil
    /// Loads the rows at these positions, in that order (`nil`: no such row).
    let load: @Sendable ([Int]) async throws -> [Entity?]

    private var counters: KeyspaceCounters { state.counters }
    private var policy: CachePolicy { state.policy }

    /// A key this call leads the load of.
    struct Leader: Sendable {
        let position: Int
        let flight: Flight<Entity?>
        /// What the key held when this call looked.
        var seen: [UInt8]?
        var contents: EntryFormat.Contents
        /// The lease this call takes (or holds).
        let lease: EntryFormat.Lease
        /// The flight's mark when the load began.
        var loadMark: UInt64 = 0
    }

    /// What the caller already read for every key (the single-key fast path), or that
    /// the read failed.
    enum FirstRead {
        case none
        case read([[UInt8]?], since: ContinuousClock.Instant)
        case failed(since: ContinuousClock.Instant)
    }

    /// Reads every key; the result has one value (or `nil`: no such row) per position.
    func run(after first: FirstRead = .none) async throws -> [Entity?] {
        var start = ContinuousClock.now
        var firstRead: [[UInt8]?]?
        switch first {
        case .none: break
        case .read(let read, let since):
            start = since
            firstRead = read
        case .failed(let since):
            start = since
        }
        let n = keys.count
        var answers = [Entity??](repeating: .none, count: n)
        var hits = 0
        var databaseOnly: [Int] = []
        var open: [Int] = []
        // A write of a key in this process has not landed yet: its entry may be stale,
        // so read the database and fill nothing.
        for i in 0..<n {
            if cache.invalidations.contains(keys[i]) { databaseOnly.append(i) } else { open.append(i) }
        }
        var failedOpen = false
        if case .failed = first {
            failedOpen = true
            databaseOnly += open
            open = []
        }
        let memory = memoryTickets == nil ? nil : state.memory(Entity.self)
        var round = 0
        while !open.isEmpty {
            round += 1
            guard round <= maximumRounds, state.mayCallStore() else {
                failedOpen = round <= maximumRounds
                databaseOnly += open
                break
            }
            // 1. What the keys hold.
            let read: [[UInt8]?]
            do {
                if let firstRead {
                    read = open.map { firstRead[$0] }
                } else {
                    read = try await cache.store.read(open.map { keys[$0] })
                    state.storeSucceeded()
                }
                firstRead = nil
            } catch {
                if error.kind == .cancelled { throw CancellationError() }
                state.storeFailed(error)
                failedOpen = true
                databaseOnly += open
                break
            }
            var misses: [(Int, [UInt8]?, EntryFormat.Contents)] = []
            for (k, i) in open.enumerated() {
                let contents = EntryFormat.classify(read[k])
                if let answer = decode(read[k], contents, key: keys[i]) {
                    answers[i] = .some(answer)
                    hits += 1
                    if let memory, let ticket = memoryTickets?[i], let bytes = read[k] {
                        memory.fill(ticket, with: answer, size: bytes.count)
                    }
                } else {
                    misses.append((i, read[k], contents))
                }
            }
            open = []
            if misses.isEmpty { break }

            // 2. Join this process's loads, or lead.
            // (position, flight, whether joined by its lease: its value is the fill's)
            var followers: [(Int, Flight<Entity?>, Bool)] = []
            var leaders: [Leader] = []
            for (i, bytes, contents) in misses {
                if case .lease(let lease) = contents, lease.token.starts(with: cache.leasePrefix),
                   let flight = cache.flights.flight(lease: lease.token, as: Entity?.self)
                {
                    followers.append((i, flight, true))
                    continue
                }
                switch cache.flights.join(keys[i], as: Entity?.self) {
                case .follower(let flight):
                    followers.append((i, flight, false))
                case .leader(let flight):
                    leaders.append(Leader(
                        position: i, flight: flight, seen: bytes, contents: contents,
                        lease: EntryFormat.Lease(token: Token.lease(prefix: cache.leasePrefix))))
                }
            }

            // 3. Lead (the database-only positions join this load).
            if !leaders.isEmpty {
                let led = try await lead(leaders, alsoLoading: databaseOnly)
                databaseOnly = []
                if !led.fills.isEmpty {
                    // Off this caller's path unless a joiner waits for the verdict.
                    let fills = led.fills
                    let someoneWaits = fills.contains { $0.0.flight.waiterCount > 0 }
                    let job: @Sendable () async -> Void = { await self.fill(fills) }
                    if someoneWaits || !cache.background.submit(job) { await job() }
                }
                for (i, value) in led.answers { answers[i] = .some(value) }
                hits += led.hits
                open += led.again
            }

            // 4. The loads joined.
            for (i, flight, byLease) in followers {
                switch await flight.wait() {
                case .value(let value):
                    answers[i] = .some(value)
                    if byLease { hits += 1 }
                case .retry: open.append(i)
                case .failure(let error): throw error
                }
            }
        }
        if !databaseOnly.isEmpty {
            if failedOpen { counters.record(.failOpenRead) }
            counters.record(.databaseLoad)
            let values = try await load(databaseOnly)
            for (k, i) in databaseOnly.enumerated() { answers[i] = .some(values[k]) }
            if failedOpen {
                state.logger.debug("cache read failed open: read the database", metadata: ["keys": "\(databaseOnly.count)"])
            }
        }
        counters.record(.hit, hits)
        counters.record(.miss, n - hits)
        counters.recordLatency(hit: hits == n, since: start)
        return answers.map { $0 ?? nil }
    }

    // MARK: - Leading loads

    struct Led {
        var answers: [(Int, Entity?)] = []
        var hits = 0
        /// Positions to read afresh.
        var again: [Int] = []
        /// Entries to fill over the leases held.
        var fills: [(Leader, Entity?)] = []
    }

    private func lead(_ leaders: [Leader], alsoLoading extra: [Int]) async throws -> Led {
        var led = Led()
        let overlapped = policy.leaseMode == .overlapped
        var overlap: [Leader] = []
        var first: [Leader] = []
        var waiting: [Leader] = []
        for l in leaders {
            switch l.contents {
            case .tombstone where overlapped: overlap.append(l)
            case .lease: waiting.append(l)
            default: first.append(l)
            }
        }
        var leased: [Leader] = []
        var unleased: [Leader] = []

        // Leases first over what is not unique.
        if !first.isEmpty {
            let marks = first.map { $0.flight.mark() }
            switch await takeLeases(first) {
            case nil:
                unleased += first
            case let replies?:
                for (k, l) in first.enumerated() {
                    switch replies[k] {
                    case .granted:
                        cache.flights.register(lease: l.lease.token, l.flight)
                        leased.append(l)
                    case .holds(let bytes):
                        let contents = EntryFormat.classify(bytes)
                        if let answer = decode(bytes, contents, key: keys[l.position]) {
                            finish(l, with: answer, mark: marks[k], into: &led)
                        } else if case .lease = contents {
                            var w = l
                            w.seen = bytes
                            w.contents = contents
                            waiting.append(w)
                        } else {
                            again(l, into: &led)
                        }
                    case .refused(let error):
                        state.storeFailed(error)
                        unleased.append(l)
                    }
                }
            }
        }

        // Another process's lease: wait for its fill.
        if !waiting.isEmpty {
            counters.record(.leaseWait, waiting.count)
            let outcomes = await waitForFills(waiting)
            for (k, l) in waiting.enumerated() {
                switch outcomes[k] {
                case .filled(let answer, let mark): finish(l, with: answer, mark: mark, into: &led)
                case .changed: again(l, into: &led)
                case .gaveUp: unleased.append(l)
                }
            }
        }

        // One load for every row this call must read.
        var loading = overlap + leased + unleased
        if loading.isEmpty && extra.isEmpty { return led }
        for k in loading.indices { loading[k].loadMark = loading[k].flight.mark() }
        let positions = loading.map(\.position) + extra
        counters.record(.databaseLoad)
        if overlap.isEmpty {
            // Nothing to overlap: load on this task (no child task to start and join).
            let values: [Entity?]
            do {
                values = try await load(positions)
            } catch {
                abandon(loading, holding: leased, error: error)
                throw error
            }
            return finishLoads(loading, holding: leased, positions: positions, values: values, led: led)
        }
        async let loaded = load(positions)
        // Over a tombstone (overlapped mode), the lease is taken while the row loads.
        var overlapLeased = Set<Int>()
        if let replies = await takeLeases(overlap) {
            for (k, l) in overlap.enumerated() {
                if case .granted = replies[k] {
                    cache.flights.register(lease: l.lease.token, l.flight)
                    overlapLeased.insert(l.position)
                } else if case .refused(let error) = replies[k] {
                    state.storeFailed(error)
                }
            }
        }
        let holding = loading.filter { l in
            overlapLeased.contains(l.position) || leased.contains { $0.position == l.position }
        }
        let values: [Entity?]
        do {
            values = try await loaded
        } catch {
            abandon(loading, holding: holding, error: error)
            throw error
        }
        return finishLoads(loading, holding: holding, positions: positions, values: values, led: led)
    }

    /// The load failed: joiners learn it, leases are given up.
    private func abandon(_ loading: [Leader], holding: [Leader], error: any Error) {
        for l in loading {
            cache.flights.leave(keys[l.position], l.flight)
            cache.flights.unregister(lease: l.lease.token)
            l.flight.resolve(error is CancellationError ? .retry : .failure(error))
        }
        if !holding.isEmpty { releaseLeases(holding) }
    }

    /// The rows are loaded: answers, joiners, and fills over the leases held.
    private func finishLoads(
        _ loading: [Leader], holding: [Leader], positions: [Int], values: [Entity?], led first: Led
    ) -> Led {
        var led = first
        // Leave the table before any fill is sent: nobody may join these loads by key
        // once a write could have invalidated what they fill.
        for l in loading { cache.flights.leave(keys[l.position], l.flight) }
        for (k, i) in positions.enumerated() { led.answers.append((i, values[k])) }
        let valueAt = Dictionary(uniqueKeysWithValues: zip(positions, values))
        var fills: [(Leader, Entity?)] = []
        for l in loading {
            let value = valueAt[l.position] ?? nil
            if holding.contains(where: { $0.position == l.position }) {
                // Encoded by the fill, off this caller's path.
                fills.append((l, value))
            } else {
                // No fill: the value goes only to callers that joined before the load.
                l.flight.resolve(.value(value), registeredBy: l.loadMark)
            }
        }
        if !fills.isEmpty {
            let toFill = fills
            led.fills = toFill
        }
        return led
    }

    /// The answer came from the store: hand it to this load's joiners (those that
    /// joined before the read that found it) and stop leading.
    private func finish(_ l: Leader, with answer: Entity?, mark: UInt64, into led: inout Led) {
        cache.flights.leave(keys[l.position], l.flight)
        l.flight.resolve(.value(answer), registeredBy: mark)
        led.answers.append((l.position, answer))
        led.hits += 1
    }

    /// The key changed under this call: it and its joiners read afresh.
    private func again(_ l: Leader, into led: inout Led) {
        cache.flights.leave(keys[l.position], l.flight)
        l.flight.resolve(.retry)
        led.again.append(l.position)
    }

    // MARK: - Store operations

    /// Takes the leaders' leases over what each saw; nil if the store failed.
    private func takeLeases(_ leaders: [Leader]) async -> [LeaseReply]? {
        guard state.mayCallStore() else { return nil }
        let ttl = policy.leaseTTLMilliseconds
        do {
            let replies = try await cache.store.lease(leaders.map { l in
                LeaseRequest(key: keys[l.position], expected: l.seen, lease: l.lease.bytes, ttlMilliseconds: ttl)
            })
            state.storeSucceeded()
            return replies
        } catch {
            state.storeFailed(error)
            return nil
        }
    }

    /// Fills the entries over their leases and tells each load's joiners the outcome.
    private func fill(_ held: [(Leader, Entity?)]) async {
        // Encoding happens here, not on the caller's path (a fill nobody waits for
        // runs in the background). A value that does not encode is not cached.
        var fills: [(Leader, Entity?)] = []
        var requests: [FillRequest] = []
        var unencodable: [Leader] = []
        fills.reserveCapacity(held.count)
        requests.reserveCapacity(held.count)
        for (l, value) in held {
            if let entry = encode(value) {
                fills.append((l, value))
                requests.append(FillRequest(
                    key: keys[l.position], lease: l.lease, entry: entry,
                    ttlMilliseconds: policy.entryTTLMilliseconds(absent: value == nil)))
            } else {
                // No fill: the value goes only to callers that joined before the load.
                l.flight.resolve(.value(value), registeredBy: l.loadMark)
                cache.flights.unregister(lease: l.lease.token)
                unencodable.append(l)
            }
        }
        if !unencodable.isEmpty {
            // Already off the caller's path (or a joiner waits for this verdict).
            try? await cache.store.release(unencodable.map { WaitRequest(key: keys[$0.position], lease: $0.lease) })
        }
        if requests.isEmpty { return }
        var replies: [FillReply]
        do {
            replies = try await cache.store.fill(requests)
            state.storeSucceeded()
        } catch {
            state.storeFailed(error)
            replies = Array(repeating: .refused(error), count: fills.count)
        }
        for (k, (l, value)) in fills.enumerated() {
            switch replies[k] {
            case .filled:
                counters.record(.fill)
                l.flight.resolve(.value(value))
            case .leaseGone:
                // A write replaced the lease (or it expired): joiners may have begun
                // after that write, so they read afresh.
                counters.record(.rejectedFill)
                l.flight.resolve(.retry)
            case .refused(let error):
                state.storeFailed(error)
                l.flight.resolve(.retry)
            }
            cache.flights.unregister(lease: l.lease.token)
        }
    }

    /// Gives leases up so that other readers need not wait them out.
    private func releaseLeases(_ leaders: [Leader]) {
        let requests = leaders.map { WaitRequest(key: keys[$0.position], lease: $0.lease) }
        let store = cache.store
        let job: @Sendable () async -> Void = { try? await store.release(requests) }
        if !cache.background.submit(job) {
            // Not running: the lease expires by itself.
            state.logger.debug("lease not released (runtime not running); it expires", metadata: ["keys": "\(requests.count)"])
        }
    }

    // MARK: - Waiting for other processes' fills

    enum WaitOutcome {
        /// The entry is there (the mark is the flight's when the read that found it
        /// was sent).
        case filled(Entity?, UInt64)
        /// The key holds something else than that lease or an entry: read afresh.
        case changed
        /// The wait ran out, or the store failed.
        case gaveUp
    }

    /// Waits until each lease is filled or replaced, or the policy's lease wait runs
    /// out. Fills are announced (the lease is marked as waited for first); the key is
    /// also read again every recheck interval.
    private func waitForFills(_ waiting: [Leader]) async -> [WaitOutcome] {
        var outcomes = [WaitOutcome?](repeating: nil, count: waiting.count)
        let waiter = FillWaiter()
        let waitKeys = waiting.map { keys[$0.position] }
        cache.announcements.register(waiter, keys: waitKeys)
        defer { cache.announcements.unregister(waiter, keys: waitKeys) }

        func evaluate(_ k: Int, _ bytes: [UInt8]?, mark: UInt64) {
            let contents = EntryFormat.classify(bytes)
            if let answer = decode(bytes, contents, key: waitKeys[k]) {
                outcomes[k] = .filled(answer, mark)
            } else if case .lease(let lease) = contents, case .lease(let seen) = waiting[k].contents,
                      lease.token == seen.token
            {
                return  // still that lease
            } else {
                outcomes[k] = .changed
            }
        }

        // Mark the leases: their fills will be announced. What the key holds if not.
        var marks = waiting.map { $0.flight.mark() }
        do {
            let replies = try await cache.store.markWaited(waiting.map { l in
                guard case .lease(let lease) = l.contents else { return WaitRequest(key: keys[l.position], lease: l.lease) }
                return WaitRequest(key: keys[l.position], lease: lease)
            })
            state.storeSucceeded()
            for (k, reply) in replies.enumerated() {
                if case .holds(let bytes) = reply { evaluate(k, bytes, mark: marks[k]) }
            }
        } catch {
            state.storeFailed(error)
            return outcomes.map { $0 ?? .gaveUp }
        }

        let deadline = ContinuousClock.now + policy.leaseWait
        let recheck = cache.announcements.isListening
            ? policy.leaseRecheckInterval : min(policy.leaseRecheckInterval, .milliseconds(5))
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    let left = deadline - ContinuousClock.now
                    if left <= .zero {
                        waiter.tick()
                        return
                    }
                    do {
                        try await Task.sleep(for: min(recheck, left))
                    } catch {
                        return
                    }
                    waiter.tick()
                }
            }
            func isOpen(_ k: Int) -> Bool {
                if case .none = outcomes[k] { return true }
                return false
            }
            while outcomes.indices.contains(where: isOpen) && ContinuousClock.now < deadline && !Task.isCancelled {
                let (announced, ticked) = await waiter.next()
                let toRead = outcomes.indices.filter { k in
                    isOpen(k) && (ticked || announced.contains(waitKeys[k]))
                }
                if toRead.isEmpty { continue }
                for k in toRead { marks[k] = waiting[k].flight.mark() }
                do {
                    let read = try await cache.store.read(toRead.map { waitKeys[$0] })
                    state.storeSucceeded()
                    for (n, k) in toRead.enumerated() { evaluate(k, read[n], mark: marks[k]) }
                } catch {
                    state.storeFailed(error)
                    break
                }
            }
            group.cancelAll()
        }
        return outcomes.map { $0 ?? .gaveUp }
    }

    // MARK: - Entries

    /// The answer an entry gives (`.some(nil)`: the row does not exist), or nil when
    /// the key holds no entry of this schema version that decodes.
    @inline(__always)
    private func decode(_ bytes: [UInt8]?, _ contents: EntryFormat.Contents, key: String) -> Entity?? {
        if case .garbage = contents {
            state.logDecodeFailure(key: key, error: CacheError(kind: .decoding, message: "not in the cache's entry format"))
            return nil
        }
        do {
            return try EntryFormat.answer(
                Entity.self, bytes, contents, schemaVersion: state.prefix.schemaVersion, codec: cache.codec)
        } catch {
            state.logDecodeFailure(key: key, error: error)
            return nil
        }
    }

    private func encode(_ value: Entity?) -> [UInt8]? {
        do {
            return try EntryFormat.encode(value, schemaVersion: state.prefix.schemaVersion, codec: cache.codec)
        } catch {
            state.logger.debug("cannot encode an entry; not caching it", metadata: ["error": "\(error)"])
            return nil
        }
    }
}

extension Metrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        let (s, atto) = elapsed.components
        recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
