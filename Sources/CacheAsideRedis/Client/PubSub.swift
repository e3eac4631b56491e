import Logging
import Synchronization

/// A message received on a subscription.
public struct RESPPubSubMessage: Sendable, Hashable {
    /// The channel it was published to.
    public var channel: String
    /// The published bytes.
    public var payload: [UInt8]
    /// The pattern it matched, for a ``RESPClient/psubscribe(patterns:)`` subscription.
    public var pattern: String?

    /// Creates a message.
    public init(channel: String, payload: [UInt8], pattern: String? = nil) {
        self.channel = channel
        self.payload = payload
        self.pattern = pattern
    }

    /// The payload decoded as UTF-8 (invalid sequences repaired).
    public var payloadString: String { String(decoding: payload, as: UTF8.self) }

    /// Reads a `message` or `pmessage` push; `nil` for any other reply.
    init?(push: RESPReply) {
        guard case .array(let parts) = push, parts.count >= 3, case .bulkString(let kind) = parts[0] else { return nil }
        if parts.count == 3, kind.elementsEqual("message".utf8),
            case .bulkString(let channel) = parts[1], case .bulkString(let payload) = parts[2]
        {
            self.init(channel: String(decoding: channel, as: UTF8.self), payload: payload)
        } else if parts.count == 4, kind.elementsEqual("pmessage".utf8),
            case .bulkString(let pattern) = parts[1], case .bulkString(let channel) = parts[2],
            case .bulkString(let payload) = parts[3]
        {
            self.init(
                channel: String(decoding: channel, as: UTF8.self), payload: payload,
                pattern: String(decoding: pattern, as: UTF8.self))
        } else {
            return nil
        }
    }
}

/// The messages of a subscription, as an `AsyncSequence`, on a connection of its own.
///
/// ```swift
/// let subscription = try await redis.subscribe(channels: ["invalidations"])
/// for try await message in subscription {
///     print(message.channel, message.payloadString)
/// }
/// ```
///
/// The subscription survives reconnects: after the connection breaks it is reopened
/// with backoff and the channels and patterns are subscribed again. Messages published
/// while it was down are lost (Redis pub/sub delivers at most once).
///
/// The connection is closed, which unsubscribes, when the iteration ends: a `for` loop
/// over the subscription left (by `break`, `return` or a thrown error: its iterator is
/// dropped), the iterating task cancelled, or ``close()`` called (the sequence then
/// ends). A subscription that is never iterated is closed when its last copy is
/// dropped. It supports one iterator.
///
/// If the consumer falls behind by more than the buffer limit given at subscribe time,
/// the oldest buffered messages are dropped and a warning is logged. A consumer that must
/// know when messages may have been lost (a reconnect, a lagging consumer) uses
/// ``RESPClient/withSubscriber(_:onEvent:_:)`` instead.
public struct RESPSubscription: AsyncSequence, Sendable {
    /// The messages received.
    public typealias Element = RESPPubSubMessage

    let stream: AsyncThrowingStream<RESPPubSubMessage, any Error>
    let continuation: AsyncThrowingStream<RESPPubSubMessage, any Error>.Continuation
    let closer: Closer

    /// Unsubscribes and closes the connection; the sequence then ends.
    public func close() async {
        await closer.connection.close()
        continuation.finish()
    }

    /// The iterator (one per subscription).
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), closer: Closer(connection: closer.connection))
    }

    /// Iterates the messages.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<RESPPubSubMessage, any Error>.AsyncIterator
        let closer: Closer

        /// The next message; `nil` once the subscription is closed or the task cancelled.
        public mutating func next() async throws -> RESPPubSubMessage? {
            try await base.next()
        }
    }

    /// Closes the connection when its owner (the subscription, or an iterator) is gone.
    final class Closer: Sendable {
        let connection: RESPConnection
        init(connection: RESPConnection) { self.connection = connection }
        deinit { connection.closeNow() }
    }
}

extension RESPClient {
    /// Subscribes to `channels` on a dedicated connection and returns once the server
    /// confirmed the subscription: anything published from then on is received.
    ///
    /// - Parameter bufferLimit: how many messages may wait for the consumer before the
    ///   oldest are dropped.
    /// - Throws: ``RESPError`` if the first connect or `SUBSCRIBE` fails.
    public func subscribe(channels: [String], bufferLimit: Int = 100_000) async throws -> RESPSubscription {
        try await makeSubscription(channels: channels, patterns: [], bufferLimit: bufferLimit)
    }

    /// Subscribes to channels matching `patterns` (`PSUBSCRIBE`, glob-style) on a
    /// dedicated connection; messages carry the ``RESPPubSubMessage/pattern`` they
    /// matched. Returns once the server confirmed the subscription.
    public func psubscribe(patterns: [String], bufferLimit: Int = 100_000) async throws -> RESPSubscription {
        try await makeSubscription(channels: [], patterns: patterns, bufferLimit: bufferLimit)
    }

    private func makeSubscription(channels: [String], patterns: [String], bufferLimit: Int) async throws -> RESPSubscription {
        guard !channels.isEmpty || !patterns.isEmpty else {
            throw RESPError.configuration("subscribe needs at least one channel or pattern")
        }
        let (stream, continuation) = AsyncThrowingStream<RESPPubSubMessage, any Error>.makeStream(
            bufferingPolicy: .bufferingNewest(max(bufferLimit, 1)))
        let dropped = Atomic<Int>(0)
        let logger = self.logger
        let sink: @Sendable (RESPPubSubMessage) -> Void = { message in
            if case .dropped = continuation.yield(message) {
                let n = dropped.wrappingAdd(1, ordering: .relaxed).newValue
                if n & (n - 1) == 0 {
                    logger.warning("subscriber is not keeping up: \(n) message(s) dropped so far")
                }
            }
        }
        let connection = RESPConnection(
            configuration: configuration, tls: tls,
            role: .subscriber(
                .init(channels: channels, patterns: patterns), pingInterval: .seconds(5), pingTimeout: nil,
                sink: { event in if case .message(let message) = event { sink(message) } }),
            loop: loop, logger: logger)
        continuation.onTermination = { [weak connection] _ in connection?.closeNow() }
        do {
            try await connection.waitUntilReady()
        } catch {
            connection.closeNow()
            continuation.finish()
            throw error
        }
        return RESPSubscription(stream: stream, continuation: continuation, closer: .init(connection: connection))
    }
}

// MARK: - Subscriber events

/// What a subscriber connection reports to ``RESPClient/withSubscriber(_:onEvent:_:)``,
/// in the order it happened on the connection. Nothing is dropped: a message the
/// connection read is reported, and a message it may have missed is announced by
/// ``disconnected(_:)``.
public enum RESPSubscriberEvent: Sendable, Hashable {
    /// The connection is open, its setup ran (client name, client tracking) and the
    /// server confirmed every subscription: every message published from now on is
    /// reported, until a ``disconnected(_:)``. Reported at the first connect and after
    /// every reconnect.
    case subscribed
    /// A message published to a subscribed channel (or one matching a pattern).
    case message(RESPPubSubMessage)
    /// Client tracking says these keys changed (written, deleted, expired or evicted).
    case invalidated([String])
    /// Client tracking says every key may have changed: the server ran `FLUSHALL` or
    /// `FLUSHDB`.
    case invalidatedAll
    /// The answer to a keep-alive `PING` sent at `sentAt` (on `ContinuousClock`). The
    /// server answers in order: every message and invalidation it sent before it read
    /// that `PING` has been reported before this event.
    case pong(sentAt: ContinuousClock.Instant)
    /// The connection was lost, timed out (a keep-alive unanswered), or could not be
    /// opened; it is being reopened. Messages and invalidations sent until the next
    /// ``subscribed`` are lost.
    case disconnected(RESPError)
}

/// What a subscriber connection does at every connect (see
/// ``RESPClient/withSubscriber(_:onEvent:_:)``).
public struct RESPSubscriberConfiguration: Sendable, Hashable {
    /// Channels to subscribe to (`SUBSCRIBE`).
    public var channels: [String]
    /// Channel patterns to subscribe to (`PSUBSCRIBE`).
    public var patterns: [String]
    /// Server-assisted client-side caching: with prefixes, the connection asks for
    /// `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <prefix>...` and subscribes
    /// to `__redis__:invalidate`, so that every change of a key starting with one of the
    /// prefixes, by any client, is reported as ``RESPSubscriberEvent/invalidated(_:)``.
    /// Broadcasting mode needs no reads on this connection, and the tracking ends with
    /// the connection itself, so no invalidation is lost silently. `nil` (the default):
    /// no tracking. Needs Redis 6 or later, and a server that allows `CLIENT TRACKING`.
    public var trackingPrefixes: [String]?
    /// A name for the connection (`CLIENT SETNAME`), as `CLIENT LIST` shows it. No
    /// spaces. Default: none.
    public var clientName: String?
    /// How often the connection sends a `PING` while nothing is in flight; each answer
    /// is a ``RESPSubscriberEvent/pong(sentAt:)``. Default: 5 seconds.
    public var pingInterval: Duration
    /// How long a `PING` may go unanswered before the connection counts as stuck and is
    /// reopened. Default: 10 seconds.
    public var pingTimeout: Duration

    /// Creates a configuration; every parameter has the default described above.
    public init(
        channels: [String] = [],
        patterns: [String] = [],
        trackingPrefixes: [String]? = nil,
        clientName: String? = nil,
        pingInterval: Duration = .seconds(5),
        pingTimeout: Duration = .seconds(10)
    ) {
        self.channels = channels
        self.patterns = patterns
        self.trackingPrefixes = trackingPrefixes
        self.clientName = clientName
        self.pingInterval = pingInterval
        self.pingTimeout = pingTimeout
    }

    func validate() throws(RESPError) {
        if channels.isEmpty && patterns.isEmpty && trackingPrefixes == nil {
            throw .configuration("a subscriber needs at least one channel, pattern or tracking prefix")
        }
        if let prefixes = trackingPrefixes, prefixes.isEmpty || prefixes.contains(where: \.isEmpty) {
            throw .configuration("client tracking needs at least one prefix, none of them empty")
        }
        if let name = clientName, name.isEmpty || name.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7f }) {
            throw .configuration("a client name must be printable, without spaces")
        }
        if pingInterval <= .zero || pingTimeout <= .zero {
            throw .configuration("the subscriber's ping interval and timeout must be positive")
        }
    }
}

extension RESPClient {
    /// Runs `body` while a dedicated subscriber connection reports its events to
    /// `onEvent`; closes the connection when `body` returns or throws.
    ///
    /// ```swift
    /// let subscriber = RESPSubscriberConfiguration(trackingPrefixes: ["myapp:"], pingInterval: .milliseconds(250))
    /// try await redis.withSubscriber(subscriber, onEvent: { event in
    ///     switch event {
    ///     case .invalidated(let keys): memory.invalidate(keys: keys)
    ///     case .invalidatedAll, .disconnected: memory.flush()
    ///     default: break
    ///     }
    /// }) {
    ///     try await Task.sleep(for: .seconds(3600))
    /// }
    /// ```
    ///
    /// The connection opens at once and keeps reopening (at once after a connection
    /// that worked, then with the client's backoff) until `body` is done; each attempt
    /// runs the setup, then subscribes. Events are reported one at a time, in the order
    /// they happened on the connection, on the client's event loop thread: `onEvent`
    /// must return quickly and never block (hand long work to a task of your own). No
    /// event is reported after this method returns.
    ///
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for an invalid
    ///   configuration; otherwise what `body` throws. Connection failures are events,
    ///   not errors.
    public func withSubscriber<Result>(
        _ subscriber: RESPSubscriberConfiguration,
        onEvent: @escaping @Sendable (RESPSubscriberEvent) -> Void,
        _ body: () async throws -> Result
    ) async throws -> Result {
        try subscriber.validate()
        let setup = ConnectionStateMachine.SubscriberSetup(
            channels: subscriber.channels, patterns: subscriber.patterns, clientName: subscriber.clientName,
            trackingPrefixes: subscriber.trackingPrefixes)
        let connection = RESPConnection(
            configuration: configuration, tls: tls,
            role: .subscriber(setup, pingInterval: subscriber.pingInterval, pingTimeout: subscriber.pingTimeout, sink: onEvent),
            loop: loop, logger: logger)
        connection.open()
        do {
            let result = try await body()
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }
}
