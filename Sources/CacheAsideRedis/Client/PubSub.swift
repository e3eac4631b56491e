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
/// the oldest buffered messages are dropped and a warning is logged.
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
            configuration: configuration, tls: tls, role: .subscriber(channels: channels, patterns: patterns, sink: sink),
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
