import CacheAsideRedis
import Synchronization
import TestSupport
import Testing

/// `withSubscriber` against real servers: client tracking in broadcasting mode
/// redirected to the subscriber itself, its invalidations in order with the heartbeat's
/// answers, and every loss of the connection reported.
@Suite struct SubscriberTests {
    /// The events a subscriber reported, in order.
    final class Events: Sendable {
        private let events = Mutex<[RESPSubscriberEvent]>([])

        func record(_ event: RESPSubscriberEvent) { events.withLock { $0.append(event) } }
        var all: [RESPSubscriberEvent] { events.withLock { $0 } }

        /// Waits (generously) until the events satisfy `condition`.
        func wait(
            _ what: String, timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation,
            until condition: @escaping @Sendable ([RESPSubscriberEvent]) -> Bool
        ) async throws {
            let met = try await eventually(timeout: timeout, every: .milliseconds(10)) { condition(self.all) ? true : nil }
            #expect(met == true, "waited for \(what); events: \(all.suffix(20))", sourceLocation: sourceLocation)
        }

        func count(_ matching: (RESPSubscriberEvent) -> Bool) -> Int { all.filter(matching).count }
    }

    static func invalidatedKeys(_ events: [RESPSubscriberEvent]) -> [String] {
        events.flatMap { event -> [String] in
            if case .invalidated(let keys) = event { return keys }
            return []
        }
    }

    static func isSubscribed(_ event: RESPSubscriberEvent) -> Bool { event == .subscribed }
    static func isPong(_ event: RESPSubscriberEvent) -> Bool {
        if case .pong = event { return true }
        return false
    }
    static func isDisconnected(_ event: RESPSubscriberEvent) -> Bool {
        if case .disconnected = event { return true }
        return false
    }

    @Test func trackingReportsChangesOfPrefixedKeysBeforeTheAnswerToALaterPing() async throws {
        let prefix = TestEnvironment.uniqueName("track") + ":"
        let events = Events()
        try await withClient { redis in
            let configuration = RESPSubscriberConfiguration(
                trackingPrefixes: [prefix], pingInterval: .milliseconds(20))
            try await redis.withSubscriber(configuration, onEvent: events.record) {
                try await events.wait("subscribed") { $0.contains(.subscribed) }
                try await redis.set("\(prefix)a", to: "1")
                try await redis.set("unrelated-\(prefix)a", to: "1")
                _ = try await redis.del(["\(prefix)a"])
                _ = try await redis.del(["unrelated-\(prefix)a"])
                let writesDone = ContinuousClock.now
                // A ping sent after both writes returned is answered after their
                // invalidations were reported.
                try await events.wait("a pong for a ping sent after the writes") { all in
                    all.contains { if case .pong(let sentAt) = $0 { return sentAt > writesDone }; return false }
                }
                let all = events.all
                let firstLatePong = try #require(all.firstIndex { if case .pong(let sentAt) = $0 { return sentAt > writesDone }; return false })
                #expect(Self.invalidatedKeys(Array(all[..<firstLatePong])) == ["\(prefix)a", "\(prefix)a"])
                #expect(!Self.invalidatedKeys(all).contains { !$0.hasPrefix(prefix) })
            }
        }
        // Nothing is reported once withSubscriber has returned.
        let count = events.all.count
        try await Task.sleep(for: .milliseconds(100))
        #expect(events.all.count == count)
    }

    @Test func aKilledSubscriberIsReportedAndComesBackTrackingAgain() async throws {
        let prefix = TestEnvironment.uniqueName("killed") + ":"
        let name = TestEnvironment.uniqueName("subscriber")
        let events = Events()
        try await withClient { redis in
            let configuration = RESPSubscriberConfiguration(
                channels: ["\(prefix)chan"], trackingPrefixes: [prefix], clientName: name, pingInterval: .milliseconds(50))
            try await redis.withSubscriber(configuration, onEvent: events.record) {
                try await events.wait("subscribed") { $0.contains(.subscribed) }
                let id = try #require(try await Self.clientID(named: name, redis))
                _ = try await redis.send("CLIENT", "KILL", "ID", String(id))
                try await events.wait("disconnected, then subscribed again") { all in
                    guard let lost = all.firstIndex(where: Self.isDisconnected) else { return false }
                    return all[lost...].contains(.subscribed)
                }
                let again = try #require(try await Self.clientID(named: name, redis))
                #expect(again != id)
                // The new connection tracks and receives messages.
                try await redis.set("\(prefix)b", to: "1")
                #expect(try await redis.publish("hello", to: "\(prefix)chan") == 1)
                try await events.wait("the invalidation and the message on the new connection") { all in
                    Self.invalidatedKeys(all).contains("\(prefix)b")
                        && all.contains(.message(RESPPubSubMessage(channel: "\(prefix)chan", payload: Array("hello".utf8))))
                }
                _ = try await redis.del(["\(prefix)b"])
            }
        }
    }

    @Test func aFlushIsReportedAsEveryKeyInvalidated() async throws {
        try await ExtraRedisServer.withPlain([]) { server in
            let events = Events()
            try await withClient(url: "redis://127.0.0.1:\(server.port)/0") { redis in
                try await redis.withSubscriber(
                    RESPSubscriberConfiguration(trackingPrefixes: ["app:"]), onEvent: events.record
                ) {
                    try await events.wait("subscribed") { $0.contains(.subscribed) }
                    try await redis.set("app:x", to: "1")
                    _ = try await redis.send("FLUSHALL")
                    try await events.wait("invalidated all") { $0.contains(.invalidatedAll) }
                    #expect(Self.invalidatedKeys(events.all) == ["app:x"])
                }
            }
        }
    }

    @Test func aServerThatRefusesTrackingIsReportedAndRetried() async throws {
        try await ExtraRedisServer.withPlain(["user default on nopass ~* &* +@all -client|tracking"]) { server in
            let events = Events()
            try await withClient(url: "redis://127.0.0.1:\(server.port)/0", {
                $0.reconnectBackoffMinimum = .milliseconds(10)
                $0.reconnectBackoffMaximum = .milliseconds(50)
            }) { redis in
                try await redis.withSubscriber(
                    RESPSubscriberConfiguration(trackingPrefixes: ["app:"]), onEvent: events.record
                ) {
                    try await events.wait("two refusals") { $0.filter(Self.isDisconnected).count >= 2 }
                }
            }
            #expect(!events.all.contains(.subscribed))
            guard case .disconnected(let error)? = events.all.first else {
                Issue.record("expected a disconnection first, got \(events.all.prefix(3))")
                return
            }
            #expect(error.message.contains("NOPERM"), "\(error)")
        }
    }

    @Test func anInvalidConfigurationIsRefusedAtOnce() async throws {
        try await withClient { redis in
            for configuration in [
                RESPSubscriberConfiguration(),
                RESPSubscriberConfiguration(trackingPrefixes: []),
                RESPSubscriberConfiguration(channels: ["a"], clientName: "has space"),
                RESPSubscriberConfiguration(channels: ["a"], pingInterval: .zero),
            ] {
                let error = await expectError {
                    try await redis.withSubscriber(configuration, onEvent: { _ in }) {}
                } as? RESPError
                #expect(error?.kind == .configuration)
            }
        }
    }

    /// The id of the client named `name` (`CLIENT LIST`), if it is connected.
    static func clientID(named name: String, _ redis: RESPClient) async throws -> Int64? {
        let list = try await redis.send("CLIENT", "LIST").string ?? ""
        for line in list.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: " ")
            guard fields.contains(Substring("name=\(name)")) else { continue }
            for field in fields where field.hasPrefix("id=") { return Int64(field.dropFirst(3)) }
        }
        return nil
    }
}
