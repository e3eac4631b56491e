@testable import CacheAsideRedis
import Testing

/// A subscriber connection's logic without a server (the ``Harness`` of the connection
/// tests: a manual clock and a fake byte stream): its setup, client tracking's
/// invalidations, and keep-alive answers, all in the order the server sent them.
@Suite struct SubscriberStateMachineTests {
    typealias Setup = ConnectionStateMachine.SubscriberSetup

    static let tracking = Setup(
        channels: ["fills"], patterns: [], clientName: "cache-aside:memory", trackingPrefixes: ["ns:", "other:"])

    /// A tracking subscriber through its handshake (client id 42).
    static func trackingSubscriber(pingInterval: Duration = .milliseconds(250), pingTimeout: Duration? = .seconds(2)) throws -> Harness {
        let h = try Harness(role: .subscriber(tracking))
        h.machine = ConnectionStateMachine(configuration: {
            var c = h.machine.configuration
            c.keepAliveInterval = pingInterval
            c.keepAliveTimeout = pingTimeout
            return c
        }())
        #expect(h.start())
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | CLIENT SETNAME cache-aside:memory | CLIENT ID")
        h.server("+OK\r\n+OK\r\n:42\r\n")
        #expect(h.written() == "CLIENT TRACKING ON REDIRECT 42 BCAST PREFIX ns: PREFIX other: | SUBSCRIBE __redis__:invalidate fills")
        #expect(!h.machine.handshakeDone)
        h.server("+OK\r\n" + Self.subscribed("__redis__:invalidate", 1) + Self.subscribed("fills", 2))
        #expect(h.machine.handshakeDone)
        #expect(h.lastReplyAction == "ready")
        return h
    }

    static func subscribed(_ channel: String, _ count: Int) -> String {
        "*3\r\n$9\r\nsubscribe\r\n$\(channel.utf8.count)\r\n\(channel)\r\n:\(count)\r\n"
    }

    static func invalidation(_ keys: [String]?) -> String {
        let head = "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
        guard let keys else { return head + "$-1\r\n" }
        return head + "*\(keys.count)\r\n" + keys.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
    }

    static let pong = "*2\r\n$4\r\npong\r\n$0\r\n\r\n"

    @Test func trackingRedirectsToTheConnectionsOwnIdBeforeItSubscribes() throws {
        let h = try Self.trackingSubscriber()
        // The same connection, reopened: a new id, the setup again.
        h.socketFailed(.connection("reset"))
        #expect(h.lastTeardown?.next == .reconnect)
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | CLIENT SETNAME cache-aside:memory | CLIENT ID")
        h.server("+OK\r\n+OK\r\n:77\r\n")
        #expect(h.written() == "CLIENT TRACKING ON REDIRECT 77 BCAST PREFIX ns: PREFIX other: | SUBSCRIBE __redis__:invalidate fills")
    }

    @Test func withoutTrackingTheSubscriptionsGoOutWithTheHandshake() throws {
        let h = try Harness(role: .subscriber(Setup(channels: ["a"], patterns: ["p*"], clientName: "n")))
        #expect(h.start())
        #expect(!h.start())  // opened once
        h.connected(nil)
        #expect(h.written() == "PING | CLIENT SETNAME n | SUBSCRIBE a | PSUBSCRIBE p*")
    }

    @Test func invalidationsMessagesAndPongsComeOutInTheServersOrder() throws {
        let h = try Self.trackingSubscriber()
        let sentAt = h.now.advanced(by: .milliseconds(10))
        let tick = h.tick(after: .milliseconds(10))  // the first ping goes out right after the subscription
        #expect(tick.write)
        #expect(h.written() == "PING")
        h.server(
            Self.invalidation(["ns:user:1", "ns:user:2"])
                + "*3\r\n$7\r\nmessage\r\n$5\r\nfills\r\n$9\r\nns:user:3\r\n"
                + Self.invalidation(nil)
                + Self.pong
                + Self.invalidation(["ns:user:4"]))
        #expect(h.events == [
            .invalidated(["ns:user:1", "ns:user:2"]),
            .invalidatedAll,
            .pong(sentAt: sentAt),
            .invalidated(["ns:user:4"]),
        ])
        #expect(h.pushes == [RESPPubSubMessage(channel: "fills", payload: Array("ns:user:3".utf8))])
        #expect(h.machine.inFlight.isEmpty)
    }

    @Test func aHeartbeatGoesOutEveryIntervalOneAtATime() throws {
        let h = try Self.trackingSubscriber(pingInterval: .milliseconds(250))
        #expect(h.tick(after: .milliseconds(5)).write)
        #expect(h.written() == "PING")
        // While it is unanswered, no second one.
        #expect(!h.tick(after: .milliseconds(300)).write)
        h.server(Self.pong)
        #expect(h.events.count == 1)
        // The interval counts from the last PING sent.
        #expect(h.tick(after: .milliseconds(1)).write)
        #expect(h.written() == "PING")
        h.server(Self.pong)
        #expect(!h.tick(after: .milliseconds(100)).write)
        #expect(h.tick(after: .milliseconds(150)).write)
        #expect(h.written() == "PING")
    }

    @Test func anUnansweredPingTearsTheConnectionDownAtItsTimeout() throws {
        let h = try Self.trackingSubscriber(pingInterval: .milliseconds(250), pingTimeout: .seconds(2))
        #expect(h.tick(after: .milliseconds(5)).write)
        #expect(h.written() == "PING")
        #expect(h.tick(after: .milliseconds(1900)).teardown == nil)
        let result = h.tick(after: .milliseconds(200))
        let error = try #require(result.teardown)
        #expect(error.kind == .timeout)
        #expect(error.message.contains("keep-alive"))
    }

    @Test func aRefusedTrackingFailsTheHandshakeWithTheServersReason() throws {
        let h = try Harness(role: .subscriber(Setup(channels: [], patterns: [], trackingPrefixes: ["ns:"])))
        #expect(h.start())
        h.connected(nil)
        #expect(h.written() == "PING | CLIENT ID")
        h.server("+PONG\r\n:5\r\n")
        #expect(h.written() == "CLIENT TRACKING ON REDIRECT 5 BCAST PREFIX ns: | SUBSCRIBE __redis__:invalidate")
        h.server("-NOPERM this user has no permissions to run the 'client|tracking' command\r\n")
        #expect(h.lastReplyAction == "fail")
        #expect(!h.machine.handshakeDone)
        // Never subscribed: it backs off before the next attempt.
        guard case .backoff? = h.lastTeardown?.next else {
            Issue.record("expected a backoff, got \(String(describing: h.lastTeardown?.next))")
            return
        }
    }

    @Test func aNonIntegerClientIdIsAProtocolError() throws {
        let h = try Harness(role: .subscriber(Setup(channels: [], patterns: [], trackingPrefixes: ["ns:"])))
        #expect(h.start())
        h.connected(nil)
        _ = h.written()
        h.server("+PONG\r\n$2\r\nno\r\n")
        #expect(h.lastReplyAction == "fail")
        #expect(h.machine.phase != .open)
    }
}

extension Harness {
    /// Opens the connection (``ConnectionStateMachine/start()``); whether it connects.
    func start() -> Bool {
        machine.start()
    }
}
