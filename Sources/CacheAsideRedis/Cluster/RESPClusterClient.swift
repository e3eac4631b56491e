import CacheAsideTLS
import IOLoop
import Logging
import Synchronization

/// A Redis Cluster client: commands go to the node that serves their keys' hash slot,
/// following the cluster as it changes.
///
/// ```swift
/// let redis = try RESPClusterClient(url: "redis://app:secret@10.0.0.1:6379,10.0.0.2:6379/0?cluster=true")
/// try await redis.set("greeting", to: "hello", expiration: .seconds(60))
/// let values = try await redis.mget(["a", "b", "c"])      // split by slot, one round trip per node
/// await redis.shutdown()
/// ```
///
/// It implements ``RESPClientProtocol`` like ``RESPClient``, so code written for one
/// runs on the other (`CacheAside` does).
///
/// - **Topology**: learned from the cluster (`CLUSTER SHARDS`, or `CLUSTER SLOTS` on
///   servers before Redis 7), first from the seeds, then from the nodes it knows, in
///   turn from a random start. It is refreshed when a `MOVED` reply says something the
///   client did not know, when a connection to a node fails, when a node answers
///   `CLUSTERDOWN` or `READONLY`, and every
///   ``RESPClusterConfiguration/refreshInterval``; one refresh at a time, at least
///   ``RESPClusterConfiguration/minimumRefreshInterval`` apart, so a storm of redirects
///   or failures costs one refresh per interval. The first commands wait for the first
///   topology (at most the connect timeout plus the command timeout).
/// - **Connections**: per node, the connections of a ``RESPClient``
///   (``RESPConfiguration/connectionCount`` of them, opened on first use, commands of
///   many tasks pipelined, a command sent alone polling for its reply), to the primaries
///   that serve slots. Nodes that leave the cluster have their connections closed.
/// - **Redirections**: `MOVED` updates the slot map at once and sends the command to
///   the named node; `ASK` sends `ASKING` and the command to the importing node, without
///   touching the map; each command follows at most
///   ``RESPClusterConfiguration/maximumRedirects`` of them. `TRYAGAIN` (a multi-key
///   command whose keys a migration has split between two nodes) sends it again every
///   ``RESPClusterConfiguration/tryAgainDelay``, for at most the command timeout.
/// - **Multi-key commands**: `MGET`, `DEL`, `UNLINK` and `EXISTS` whose keys live in
///   several slots are split into one command per slot, sent as one pipeline per node
///   (the nodes concurrently), and their replies put back together in key order. Any
///   other command's keys must share a slot (use hash tags: `{user42}:profile`); else it
///   fails with `CROSSSLOT` without being sent.
/// - **Pipelines**: split by node (the nodes concurrently, each node's commands in
///   request order), replies in request order; each command follows its own
///   redirections.
/// - **Scripts**: `EVALSHA` answered `NOSCRIPT` loads the script on the node that
///   answered and runs the command there again, once.
/// - **Failures fail fast**: a command to a node that cannot be reached fails at once
///   (while the node's connection waits to reconnect) or at its timeout, never hangs,
///   and tells the topology to refresh; after a failover, commands go to the new
///   primary as soon as the cluster reports it (or a `MOVED` names it).
/// - **Subscriptions** listen on one node (any node: the cluster passes every published
///   message to all of them), and move to another node when theirs stops answering or
///   leaves the cluster.
///
/// All commands go to primaries; replicas serve nothing but subscriptions. Call
/// ``shutdown()`` when done.
public final class RESPClusterClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: RESPClusterConfiguration
    let loop: IOLoop
    let logger: Logger
    let tls: TLSClientContext?
    private let state: Mutex<State>
    private let keylessCursor = Atomic<UInt>(0)
    private let sentToNodes = Atomic<Int>(0)
    private let movedCount = Atomic<Int>(0)
    private let askCount = Atomic<Int>(0)
    private let tryAgainCount = Atomic<Int>(0)

    typealias Machine = ClusterTopologyStateMachine<ContinuousClock.Instant>

    struct State {
        var machine: Machine
        var started = false
        var closed = false
        /// Where commands go: `nil` until the first topology arrives (and after shutdown).
        var routing: ClusterRouting?
        /// Every node the client talks to, by address.
        var nodes: [ClusterNodeAddress: ClusterNode] = [:]
        /// Callers waiting for the first topology.
        var waiters: [UInt64: UnsafeContinuation<ClusterRouting, any Error>] = [:]
        var lastRefreshError: RESPError?
        var topologyFailing = false
        /// The earliest scheduled wake-up of the state machine.
        var wakeUp: (deadline: ContinuousClock.Instant, timer: IOLoop.Timer)?
        /// Refreshes and node shutdowns, for ``shutdown()`` to wait for.
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var finishedTasks: Set<UInt64> = []
        var nextTaskID: UInt64 = 0
        /// The server does not know `CLUSTER SHARDS` (before Redis 7): ask `CLUSTER SLOTS`.
        var useClusterSlots = false
        var refreshes = 0
    }

    /// Creates a client. Nothing is connected yet: the first command asks a seed for the
    /// topology.
    ///
    /// - Parameters:
    ///   - configuration: the seeds, the settings of every node's connections, and the
    ///     refresh policy.
    ///   - loop: the event loop driving the sockets (the process-wide one by default).
    ///   - logger: where topology changes and connection trouble are reported (never
    ///     with a password).
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for invalid
    ///   settings.
    public init(
        configuration: RESPClusterConfiguration,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis")
    ) throws(RESPError) {
        try configuration.validate()
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        if let tlsConfiguration = configuration.node.tls {
            do {
                tls = try TLSClientContext(configuration: tlsConfiguration)
            } catch {
                throw .configuration("TLS for the Redis Cluster \(configuration.seeds.map(\.description).joined(separator: ",")): \(error)")
            }
            if tlsConfiguration.verification == .insecureNoVerification {
                logger.warning("TLS certificate verification is OFF for this Redis Cluster client: any server can impersonate a node", metadata: [
                    "redis.seeds": "\(configuration.seeds.map(\.description).joined(separator: ","))",
                ])
            }
        } else {
            tls = nil
        }
        var machineConfiguration = Machine.Configuration()
        machineConfiguration.refreshInterval = configuration.refreshInterval
        machineConfiguration.minimumRefreshInterval = configuration.minimumRefreshInterval
        machineConfiguration.maximumRefreshBackoff = configuration.maximumRefreshBackoff
        // A refresh always ends by itself (connect and command timeouts): this only
        // guards against an outcome that never comes.
        machineConfiguration.refreshTimeout = configuration.node.connectTimeout + configuration.node.commandTimeout + .seconds(1)
        let machine = Machine(
            seeds: configuration.seedAddresses, configuration: machineConfiguration,
            randomSeed: UInt64.random(in: 0...UInt64.max))
        state = Mutex(State(machine: machine))
    }

    /// Creates a client from a cluster URL
    /// (`redis://user:pass@host:port,host:port/0?cluster=true`), with default timeouts;
    /// see ``RESPClusterConfiguration/init(url:)``.
    public convenience init(
        url: String,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis")
    ) throws(RESPError) {
        try self.init(configuration: RESPClusterConfiguration(url: url), loop: loop, logger: logger)
    }

    /// Closes every node's connections and stops refreshing. Commands already sent get
    /// their replies (or fail at their timeout); commands issued afterwards fail. Returns
    /// once every socket is closed and no refresh runs. Subscriptions have connections
    /// of their own and are not affected.
    public func shutdown() async {
        let (nodes, waiters, timer): ([ClusterNode], [UnsafeContinuation<ClusterRouting, any Error>], IOLoop.Timer?) = state.withLock { s in
            s.closed = true
            s.routing = nil
            let nodes = Array(s.nodes.values)
            s.nodes = [:]
            let waiters = Array(s.waiters.values)
            s.waiters = [:]
            let timer = s.wakeUp?.timer
            s.wakeUp = nil
            return (nodes, waiters, timer)
        }
        timer?.cancel()
        for waiter in waiters { waiter.resume(throwing: RESPError.connection("the Redis Cluster client is shut down")) }
        await withTaskGroup(of: Void.self) { group in
            for node in nodes { group.addTask { await node.client.shutdown() } }
        }
        await waitForTasks()
    }

    // MARK: - Commands

    /// Runs one command on the node that serves its keys and returns its typed
    /// response, following `MOVED`, `ASK` and `TRYAGAIN`. `MGET`, `DEL`, `UNLINK` and
    /// `EXISTS` over keys of several slots are split by slot (one round trip per node).
    /// A command without keys goes to one of the primaries.
    ///
    /// - Throws: ``RESPError``: the server's error reply (kind ``RESPError/Kind/server``;
    ///   `CROSSSLOT` for keys of several slots in another command, `CLUSTERDOWN` for a
    ///   slot that no node serves), a connection failure, a timeout;
    ///   `CancellationError` if the task is cancelled.
    public func execute<C: RESPCommand>(_ command: C) async throws -> C.Response {
        let keys = command.keys
        var slot: HashSlot?
        if let first = keys.first {
            let firstSlot = HashSlot(key: first)
            if keys.count > 1 {
                var slots = [firstSlot]
                slots.reserveCapacity(keys.count)
                var several = false
                for key in keys.dropFirst() {
                    let other = HashSlot(key: key)
                    if other != firstSlot { several = true }
                    slots.append(other)
                }
                if several { return try await executeAcrossSlots(command, keys: keys, slots: slots) }
            }
            slot = firstSlot
        }
        let routing = try await currentRouting()
        var node = try self.node(for: slot, routing: routing)
        var asking = false
        var redirects = 0
        var tryAgainUntil: ContinuousClock.Instant?
        var loadedScript = false
        while true {
            let reply: RESPReply
            do {
                reply = try await send(command, to: node, asking: asking)
            } catch let error as RESPError {
                if error.isConnectionFailure { connectionFailed(node) }
                throw error
            }
            guard case .error(let message) = reply else { return try command.decode(reply) }
            if let script = command.script, !loadedScript, message.hasPrefix("NOSCRIPT") {
                // Scripts are per node: load it where it was missing, send again once.
                loadedScript = true
                _ = try await node.client.loadScripts([script], on: node.client.connection())
                continue
            }
            let errorClass = ClusterErrorClass(errorMessage: message)
            if case .tryAgain = errorClass {
                // The command's keys are split between two nodes while their slot
                // migrates: wait for the move, for at most the command timeout.
                countRedirection(errorClass)
                let deadline = tryAgainUntil ?? ContinuousClock.now + configuration.node.commandTimeout
                tryAgainUntil = deadline
                guard ContinuousClock.now + configuration.tryAgainDelay < deadline else { throw RESPError.server(message) }
                try await Task.sleep(for: configuration.tryAgainDelay)
                continue
            }
            guard redirects < configuration.maximumRedirects else {
                if errorClass.suggestsTopologyChange { serverReportedChange(node) }
                throw RESPError.server(message)
            }
            switch errorClass {
            case .moved(let redirection):
                countRedirection(errorClass)
                node = followMoved(redirection, from: node)
                asking = false
            case .ask(let redirection):
                countRedirection(errorClass)
                node = self.node(at: redirection.address(answeredBy: node.address))
                asking = true
            case .tryAgain:
                continue
            case .clusterDown, .readOnly:
                serverReportedChange(node)
                throw RESPError.server(message)
            case .crossSlot, .unavailable, .other:
                throw RESPError.server(message)
            }
            redirects += 1
        }
    }

    /// Sends one command to `node` (after `ASKING` for an `ASK` redirection) and waits
    /// for its reply.
    @inline(__always)
    func send<C: RESPCommand>(_ command: C, to node: ClusterNode, asking: Bool) async throws -> RESPReply {
        sentToNodes.add(1, ordering: .relaxed)
        let connection = node.client.connection()
        guard asking else { return try await connection.send { command.encode(into: &$0) } }
        let reply = try await connection.send(replies: 2, pipeline: true) { encoder in
            encoder.command("ASKING", argumentCount: 0)
            command.encode(into: &encoder)
        }
        guard case .array(let replies) = reply, replies.count == 2 else {
            throw RESPError.protocolError("ASKING and a command got \(reply)")
        }
        return replies[1]
    }

    // MARK: - Routing

    /// The current routing; waits for the first topology if there is none yet.
    @inline(__always)
    func currentRouting() async throws -> ClusterRouting {
        if let routing = state.withLock({ $0.routing }) { return routing }
        return try await waitForRouting()
    }

    /// The current routing, if any, without waiting.
    var routingSnapshot: ClusterRouting? { state.withLock { $0.routing } }

    /// The node for a command: its slot's primary, or for a command without keys one of
    /// the primaries, in turn.
    @inline(__always)
    func node(for slot: HashSlot?, routing: ClusterRouting) throws(RESPError) -> ClusterNode {
        if let slot {
            if let node = routing.node(for: slot) { return node }
            unservedSlot()
            throw RESPError.server("CLUSTERDOWN Hash slot \(slot) is not served (in the client's view of the cluster)")
        }
        let primaries = routing.primaries
        guard !primaries.isEmpty else {
            throw RESPError.server("CLUSTERDOWN no primary serves slots (in the client's view of the cluster)")
        }
        let turn = keylessCursor.wrappingAdd(1, ordering: .relaxed).oldValue
        return primaries[Int(turn % UInt(primaries.count))]
    }

    /// The node at `address`, made if the client does not know it yet (a `MOVED` or
    /// `ASK` may name a node the last topology did not have).
    func node(at address: ClusterNodeAddress) -> ClusterNode {
        state.withLock { s in node(address, in: &s) }
    }

    private func node(_ address: ClusterNodeAddress, in s: inout State) -> ClusterNode {
        if let node = s.nodes[address] { return node }
        let client = RESPClient(
            validatedConfiguration: configuration.configuration(for: address), tls: tls, loop: loop, logger: logger)
        let node = ClusterNode(address: address, client: client)
        if !s.closed { s.nodes[address] = node }
        return node
    }

    /// Waits until a topology is known, at most the connect timeout plus the command
    /// timeout (the first command's, and those issued while none is known).
    private func waitForRouting() async throws -> ClusterRouting {
        let deadline = ContinuousClock.now + configuration.node.connectTimeout + configuration.node.commandTimeout
        let id: UInt64 = state.withLock { s in
            s.nextTaskID += 1
            return s.nextTaskID
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<ClusterRouting, any Error>) in
                var action: Machine.Action?
                let immediate: Result<ClusterRouting, any Error>? = state.withLock { s in
                    if let routing = s.routing { return .success(routing) }
                    if s.closed { return .failure(RESPError.connection("the Redis Cluster client is shut down")) }
                    // (The cancellation handler runs after the flag is set: a waiter
                    // registered from here on is removed by it.)
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if !s.started {
                        s.started = true
                        action = s.machine.start(now: .now)
                    }
                    s.waiters[id] = continuation
                    return nil
                }
                if let immediate {
                    continuation.resume(with: immediate)
                    return
                }
                loop.schedule(at: deadline) { [weak self] in self?.expireWaiter(id) }
                if let action { perform(action) }
            }
        } onCancel: {
            let waiter = state.withLock { s in s.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private func expireWaiter(_ id: UInt64) {
        let (waiter, error): (UnsafeContinuation<ClusterRouting, any Error>?, RESPError?) = state.withLock { s in
            (s.waiters.removeValue(forKey: id), s.lastRefreshError)
        }
        guard let waiter else { return }
        let seeds = configuration.seeds.map(\.description).joined(separator: ",")
        waiter.resume(throwing: RESPError.timeout(
            "no topology of the Redis Cluster (seeds \(seeds)) within the connect and command timeouts" + (error.map { ": \($0.message)" } ?? "")))
    }

    // MARK: - Events from commands

    /// A connection to `node` failed: the topology may have changed (a failover).
    func connectionFailed(_ node: ClusterNode) {
        let action: Machine.Action? = state.withLock { s in
            guard s.started, !s.closed else { return nil }
            return s.machine.connectionFailed(to: node.address, now: .now)
        }
        if let action { perform(action) }
    }

    /// `node` answered `CLUSTERDOWN` or `READONLY`.
    func serverReportedChange(_ node: ClusterNode) {
        let action: Machine.Action? = state.withLock { s in
            guard s.started, !s.closed else { return nil }
            return s.machine.serverReportedChange(by: node.address, now: .now)
        }
        if let action { perform(action) }
    }

    /// A slot without an owner in the map: ask for a refresh.
    private func unservedSlot() {
        let action: Machine.Action? = state.withLock { s in
            guard s.started, !s.closed, let first = s.routing?.primaries.first else { return nil }
            return s.machine.serverReportedChange(by: first.address, now: .now)
        }
        if let action { perform(action) }
    }

    /// `node` answered `MOVED`: the map learns it at once (and asks for a refresh if it
    /// was news); returns the node to send the command to.
    func followMoved(_ redirection: ClusterRedirection, from node: ClusterNode) -> ClusterNode {
        let target = redirection.address(answeredBy: node.address)
        var action: Machine.Action?
        let next: ClusterNode = state.withLock { s in
            if let routing = s.routing, routing.map.primary(for: redirection.slot) == target, let known = routing.nodes[target] {
                // Sent with an older snapshot: nothing new.
                return known
            }
            guard s.started, !s.closed else { return self.node(target, in: &s) }
            action = s.machine.redirected(redirection, by: node.address, now: .now)
            if let map = s.machine.slotMap {
                s.routing = ClusterRouting(map: map) { address in self.node(address, in: &s) }
            }
            return self.node(target, in: &s)
        }
        if let action { perform(action) }
        logger.debug("MOVED", metadata: ["redis.slot": "\(redirection.slot)", "redis.node": "\(target)"])
        return next
    }

    // MARK: - The topology shell

    /// Carries out what the state machine asked for.
    private func perform(_ action: Machine.Action) {
        if let refresh = action.refresh { startRefresh(refresh) }
        if let wakeUp = action.wakeUp { schedule(wakeUp: wakeUp) }
    }

    /// Keeps one timer, at the earliest wake-up the machine asked for.
    private func schedule(wakeUp deadline: ContinuousClock.Instant) {
        let replaced: IOLoop.Timer? = state.withLock { s in
            guard !s.closed else { return nil }
            if let current = s.wakeUp, current.deadline <= deadline { return nil }
            let replaced = s.wakeUp?.timer
            let timer = loop.schedule(at: deadline) { [weak self] in self?.wokeUp(deadline) }
            s.wakeUp = (deadline, timer)
            return replaced
        }
        replaced?.cancel()
    }

    private func wokeUp(_ deadline: ContinuousClock.Instant) {
        let action: Machine.Action? = state.withLock { s in
            guard !s.closed else { return nil }
            if s.wakeUp?.deadline == deadline { s.wakeUp = nil }
            return s.machine.tick(now: .now)
        }
        if let action { perform(action) }
    }

    private func startRefresh(_ refresh: Machine.Refresh) {
        let id: UInt64? = state.withLock { s in
            guard !s.closed else { return nil }
            s.nextTaskID += 1
            s.refreshes += 1
            return s.nextTaskID
        }
        guard let id else { return }
        let task = Task { [self] in
            await runRefresh(refresh)
            taskFinished(id)
        }
        track(task, id: id)
    }

    private func runRefresh(_ refresh: Machine.Refresh) async {
        let node: ClusterNode? = state.withLock { s in s.closed ? nil : self.node(refresh.node, in: &s) }
        guard let node else { return }
        do {
            let map = try await fetchSlotMap(from: node)
            installed(refresh, map: map)
        } catch {
            refreshFailed(refresh, error: error)
        }
    }

    /// Asks `node` for the topology: `CLUSTER SHARDS`, or `CLUSTER SLOTS` where the
    /// server does not know it.
    private func fetchSlotMap(from node: ClusterNode) async throws -> ClusterSlotMap {
        let overTLS = tls != nil
        let topology: ClusterTopology
        do {
            // On the node's first connection only: a node asked for nothing but the
            // topology (a replica) costs one connection, not connectionCount.
            func ask(_ subcommand: String) async throws -> RESPReply {
                let reply = try await node.client.firstConnection.send { RESPCommands.Raw(["CLUSTER", subcommand]).encode(into: &$0) }
                if case .error(let message) = reply { throw RESPError.server(message) }
                return reply
            }
            if state.withLock({ $0.useClusterSlots }) {
                topology = try ClusterTopology(clusterSlotsReply: try await ask("SLOTS"), overTLS: overTLS)
            } else {
                do {
                    topology = try ClusterTopology(clusterShardsReply: try await ask("SHARDS"))
                } catch let error as RESPError where error.isServerError && error.message.lowercased().contains("unknown subcommand") {
                    state.withLock { $0.useClusterSlots = true }
                    topology = try ClusterTopology(clusterSlotsReply: try await ask("SLOTS"), overTLS: overTLS)
                }
            }
            return try ClusterSlotMap(topology: topology, tls: overTLS, answeredBy: node.address.host)
        } catch let error as ClusterTopologyError {
            throw RESPError.protocolError("\(node.address): \(error)")
        } catch let error as RESPError {
            if error.isConnectionFailure { connectionFailedDuringRefresh(node) }
            throw error
        }
    }

    /// A refresh could not reach its node: the node is suspect (not asked again soon).
    private func connectionFailedDuringRefresh(_ node: ClusterNode) {
        state.withLock { s in
            guard !s.closed else { return }
            // The machine counts the failed refresh itself; this marks the node.
            _ = s.machine.connectionFailed(to: node.address, now: .now)
        }
    }

    private func installed(_ refresh: Machine.Refresh, map: ClusterSlotMap) {
        var closing: [ClusterNode] = []
        var waiters: [UnsafeContinuation<ClusterRouting, any Error>] = []
        var changed = false
        var recovered = false
        let outcome: (Machine.Action, ClusterRouting?)? = state.withLock { s in
            guard !s.closed else { return nil }
            let installed = s.machine.refreshSucceeded(refresh.id, map: map, now: .now)
            if installed.accepted, let newMap = s.machine.slotMap, installed.changed || s.routing == nil {
                let routing = ClusterRouting(map: newMap) { address in self.node(address, in: &s) }
                s.routing = routing
                changed = true
                for (address, node) in s.nodes where routing.nodes[address] == nil {
                    closing.append(node)
                    s.nodes[address] = nil
                }
                waiters = Array(s.waiters.values)
                s.waiters = [:]
            }
            if installed.accepted {
                s.lastRefreshError = nil
                recovered = s.topologyFailing
                s.topologyFailing = false
            }
            return (installed.action, s.routing)
        }
        guard let (action, routing) = outcome else { return }
        if let routing {
            for waiter in waiters { waiter.resume(returning: routing) }
        }
        if changed, let routing {
            logger.info("Redis Cluster topology changed", metadata: [
                "redis.cluster.primaries": "\(routing.primaries.count)",
                "redis.cluster.nodes": "\(routing.nodes.count)",
                "redis.cluster.slots": "\(routing.map.assignedSlotCount)",
                "redis.cluster.reason": "\(refresh.reason)",
                "redis.node": "\(refresh.node)",
            ])
        }
        if recovered { logger.info("Redis Cluster topology refreshed again", metadata: ["redis.node": "\(refresh.node)"]) }
        if !closing.isEmpty {
            logger.debug("closing connections to nodes that left the cluster", metadata: [
                "redis.nodes": "\(closing.map(\.address.description).joined(separator: ","))",
            ])
            closeNodes(closing)
        }
        perform(action)
    }

    private func refreshFailed(_ refresh: Machine.Refresh, error: any Error) {
        let failure = (error as? RESPError) ?? RESPError.connection("\(error)")
        var firstFailure = false
        let action: Machine.Action? = state.withLock { s in
            guard !s.closed else { return nil }
            s.lastRefreshError = failure
            if !s.topologyFailing, s.machine.consecutiveFailures >= 1 {
                s.topologyFailing = true
                firstFailure = true
            }
            return s.machine.refreshFailed(refresh.id, now: .now)
        }
        guard let action else { return }
        if firstFailure {
            logger.warning("Redis Cluster topology refresh failed; retrying on other nodes", metadata: [
                "redis.node": "\(refresh.node)", "error": "\(failure)",
            ])
        } else {
            logger.debug("Redis Cluster topology refresh failed", metadata: ["redis.node": "\(refresh.node)", "error": "\(failure)"])
        }
        perform(action)
    }

    private func closeNodes(_ nodes: [ClusterNode]) {
        let id: UInt64? = state.withLock { s in
            guard !s.closed else { return nil }
            s.nextTaskID += 1
            return s.nextTaskID
        }
        // Shut down meanwhile: dropping the nodes closes their connections.
        guard let id else { return }
        let task = Task {
            for node in nodes { await node.client.shutdown() }
            self.taskFinished(id)
        }
        track(task, id: id)
    }

    private func track(_ task: Task<Void, Never>, id: UInt64) {
        state.withLock { s in
            if s.finishedTasks.remove(id) == nil { s.tasks[id] = task }
        }
    }

    private func taskFinished(_ id: UInt64) {
        state.withLock { s in
            if s.tasks.removeValue(forKey: id) == nil { s.finishedTasks.insert(id) }
        }
    }

    private func waitForTasks() async {
        while true {
            let tasks: [Task<Void, Never>] = state.withLock { s in Array(s.tasks.values) }
            if tasks.isEmpty { return }
            for task in tasks { await task.value }
            state.withLock { s in
                for (id, task) in s.tasks where tasks.contains(task) { s.tasks.removeValue(forKey: id) }
            }
        }
    }

    // MARK: - Introspection (tests, diagnostics)

    /// The primaries that serve slots, as the client sees them now (`host:port`); empty
    /// before the first topology.
    public var knownPrimaries: [String] {
        state.withLock { s in s.routing?.primaries.map(\.address.description) ?? [] }
    }

    /// How many round trips to nodes the client made for commands: one per command sent
    /// alone, one per node of a pipeline or a split command (redirections add theirs).
    package var roundTrips: Int { sentToNodes.load(ordering: .relaxed) }

    /// Counts a round trip to a node.
    func countRoundTrip() {
        sentToNodes.add(1, ordering: .relaxed)
    }

    /// How many `MOVED`, `ASK` and `TRYAGAIN` replies the client followed.
    package var redirections: (moved: Int, ask: Int, tryAgain: Int) {
        (movedCount.load(ordering: .relaxed), askCount.load(ordering: .relaxed), tryAgainCount.load(ordering: .relaxed))
    }

    /// Counts a redirection followed.
    func countRedirection(_ errorClass: ClusterErrorClass) {
        switch errorClass {
        case .moved: movedCount.add(1, ordering: .relaxed)
        case .ask: askCount.add(1, ordering: .relaxed)
        case .tryAgain: tryAgainCount.add(1, ordering: .relaxed)
        default: break
        }
    }

    /// How many topology refreshes the client started.
    public var refreshCount: Int { state.withLock { $0.refreshes } }

    /// The primary that serves `key`'s slot, as the client sees it now (`host:port`).
    public func primary(forKey key: String) -> String? {
        state.withLock { s in s.routing?.node(for: HashSlot(key: key))?.address.description }
    }
}

extension RESPClusterClient: RESPClientProtocol {}
