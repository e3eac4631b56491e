import IOLoop
import Logging
import Synchronization

/// The messages of a ``RESPClusterClient`` subscription, as an `AsyncSequence`.
///
/// It listens on one node at a time, on a connection of its own. A message published
/// on any node of the cluster reaches it (the cluster passes published messages to every
/// node). While its node answers, the connection survives reconnects as a
/// ``RESPSubscription`` does; when the node stops answering (its connection waits to
/// reconnect) or leaves the cluster (a failover replaced it), the subscription moves to
/// another node. Messages published while it was not listening are lost.
///
/// The work of moving is done by the task that iterates the subscription, inside
/// `next()`. The connection is closed, which unsubscribes, when the iteration ends (the
/// loop left, the task cancelled) or ``close()`` is called; a subscription never
/// iterated is closed when its last copy is dropped. It supports one iterator.
public struct RESPClusterSubscription: AsyncSequence, Sendable {
    /// The messages received.
    public typealias Element = RESPPubSubMessage

    let keeper: ClusterSubscriptionKeeper

    /// Unsubscribes and closes the connection; the sequence then ends.
    public func close() async {
        await keeper.close()
    }

    /// The node the subscription listens on now (`host:port`).
    public var node: String? { keeper.currentNode?.description }

    /// The iterator (one per subscription).
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: keeper.stream.makeAsyncIterator(), keeper: keeper)
    }

    /// Iterates the messages.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<ClusterSubscriptionKeeper.Event, any Error>.AsyncIterator
        let keeper: ClusterSubscriptionKeeper

        /// The next message; `nil` once the subscription is closed or the task cancelled.
        public mutating func next() async throws -> RESPPubSubMessage? {
            while let event = try await base.next() {
                switch event {
                case .message(let message):
                    return message
                case .check:
                    await keeper.moveIfNeeded()
                }
            }
            return nil
        }
    }
}

/// The state of a cluster subscription: its current connection and node, and the timer
/// that checks them.
final class ClusterSubscriptionKeeper: Sendable {
    enum Event: Sendable {
        case message(RESPPubSubMessage)
        /// The node looked unhealthy: the iterating task checks and moves.
        case check
    }

    private struct State {
        var connection: RESPConnection?
        var node: ClusterNodeAddress?
        var closed = false
        var timer: IOLoop.Timer?
        var checkQueued = false
    }

    let client: RESPClusterClient
    let channels: [String]
    let stream: AsyncThrowingStream<Event, any Error>
    private let continuation: AsyncThrowingStream<Event, any Error>.Continuation
    private let state = Mutex(State())
    private let sink: @Sendable (RESPPubSubMessage) -> Void

    init(client: RESPClusterClient, channels: [String], bufferLimit: Int) {
        self.client = client
        self.channels = channels
        let (stream, continuation) = AsyncThrowingStream<Event, any Error>.makeStream(
            bufferingPolicy: .bufferingNewest(max(bufferLimit, 1)))
        self.stream = stream
        self.continuation = continuation
        let dropped = Atomic<Int>(0)
        let logger = client.logger
        sink = { message in
            if case .dropped = continuation.yield(.message(message)) {
                let n = dropped.wrappingAdd(1, ordering: .relaxed).newValue
                if n & (n - 1) == 0 {
                    logger.warning("subscriber is not keeping up: \(n) message(s) dropped so far")
                }
            }
        }
        continuation.onTermination = { [weak self] _ in self?.closeNow() }
    }

    deinit {
        closeNow()
    }

    var currentNode: ClusterNodeAddress? { state.withLock { $0.node } }

    /// Subscribes on a node of the cluster, in random order, `avoiding` last; replaces
    /// the current connection once the new one is subscribed.
    func connect(avoiding failed: ClusterNodeAddress?) async throws {
        let routing = try await client.currentRouting()
        var candidates = Array(routing.nodes.keys).shuffled()
        if let failed, let index = candidates.firstIndex(of: failed) {
            candidates.remove(at: index)
            candidates.append(failed)
        }
        var lastError: any Error = RESPError.connection("no node of the Redis Cluster to subscribe on")
        for address in candidates {
            let connection = RESPConnection(
                configuration: client.configuration.configuration(for: address), tls: client.tls,
                role: .subscriber(
                    .init(channels: channels, patterns: []), pingInterval: .seconds(5), pingTimeout: nil,
                    sink: { [sink] event in if case .message(let message) = event { sink(message) } }),
                loop: client.loop, logger: client.logger)
            do {
                try await connection.waitUntilReady()
            } catch {
                connection.closeNow()
                lastError = error
                if error is CancellationError { throw error }
                continue
            }
            let replaced: RESPConnection?? = state.withLock { s in
                guard !s.closed else { return .none }
                let old = s.connection
                s.connection = connection
                s.node = address
                return .some(old)
            }
            guard let replaced else {
                connection.closeNow()
                throw RESPError.connection("the subscription is closed")
            }
            replaced?.closeNow()
            return
        }
        throw lastError
    }

    /// Checks the node every ``RESPClusterConfiguration/subscriptionCheckInterval``.
    func startChecks() {
        scheduleCheck()
    }

    private func scheduleCheck() {
        state.withLock { s in
            guard !s.closed else { return }
            s.timer = client.loop.schedule(after: client.configuration.subscriptionCheckInterval) { [weak self] in
                self?.check()
            }
        }
    }

    /// On the loop thread: if the node looks unhealthy, wakes the iterating task.
    private func check() {
        let wake: Bool = state.withLock { s in
            guard !s.closed, !s.checkQueued, needsMove(s) else { return false }
            s.checkQueued = true
            return true
        }
        if wake { continuation.yield(.check) }
        scheduleCheck()
    }

    /// True when the connection waits to reconnect (its node does not answer), or its
    /// node is no longer part of the cluster as the client sees it.
    private func needsMove(_ s: State) -> Bool {
        guard let connection = s.connection, let node = s.node else { return true }
        if !connection.available.load(ordering: .relaxed) { return true }
        if let routing = client.routingSnapshot, routing.nodes[node] == nil { return true }
        return false
    }

    /// In the iterating task: moves to another node if the current one still looks
    /// unhealthy. A failure leaves things as they are until the next check.
    func moveIfNeeded() async {
        let from: ClusterNodeAddress?? = state.withLock { s in
            s.checkQueued = false
            guard !s.closed, needsMove(s) else { return .none }
            return .some(s.node)
        }
        guard let from else { return }
        do {
            try await connect(avoiding: from)
            client.logger.info("Redis Cluster subscription moved to another node", metadata: [
                "redis.from": "\(from.map(\.description) ?? "-")", "redis.node": "\(currentNode.map(\.description) ?? "-")",
            ])
        } catch {
            client.logger.debug("Redis Cluster subscription could not move yet", metadata: ["error": "\(error)"])
        }
    }

    /// Unsubscribes, closes the connection and ends the sequence.
    func close() async {
        let (connection, timer): (RESPConnection?, IOLoop.Timer?) = state.withLock { s in
            s.closed = true
            let connection = s.connection
            s.connection = nil
            return (connection, s.timer)
        }
        timer?.cancel()
        await connection?.close()
        continuation.finish()
    }

    /// Closes at once (the iteration ended, or the last reference went away).
    func closeNow() {
        let (connection, timer): (RESPConnection?, IOLoop.Timer?) = state.withLock { s in
            s.closed = true
            let connection = s.connection
            s.connection = nil
            return (connection, s.timer)
        }
        timer?.cancel()
        connection?.closeNow()
    }
}
