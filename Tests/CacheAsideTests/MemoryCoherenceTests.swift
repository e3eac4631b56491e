@testable import CacheAside
import CacheAsideMemory
import CacheAsidePostgres
import CacheAsideRedis
import Testing

/// The coherence driver's decisions without a server: the events of its dedicated
/// connection, as the Redis client reports them, applied to real tiers.
@Suite struct MemoryCoherenceTests {
    static let policy = CachePolicy(memory: MemoryTierPolicy(maximumEntries: 1000, maximumBytes: 1 << 20, ttl: .seconds(60)))

    struct Setup {
        let coherence: MemoryCoherence
        let users: MemoryTier<Item>
        let orders: MemoryTier<Item>

        init(invalidation: MemoryTierCoherence.Invalidation = .tracking) {
            coherence = MemoryCoherence(
                settings: MemoryTierCoherence(invalidation: invalidation), namespace: "app", instance: "test", logger: testLogger)
            users = MemoryTier<Item>(keyspace: "user", schemaVersion: 1, policy: MemoryCoherenceTests.policy, tier: MemoryCoherenceTests.policy.memory!)
            orders = MemoryTier<Item>(keyspace: "order", schemaVersion: 1, policy: MemoryCoherenceTests.policy, tier: MemoryCoherenceTests.policy.memory!)
            coherence.register(users)
            coherence.register(orders)
        }

        /// Subscribed and trusted, with `keys` of the user tier held.
        func trusted(holding keys: [String]) {
            coherence.handle(.subscribed)
            coherence.handle(.pong(sentAt: .now))
            for key in keys { fill(users, key) }
        }

        @discardableResult
        func fill(_ tier: MemoryTier<Item>, _ key: String, version: Int64 = 1) -> Bool {
            tier.store.fill(tier.store.fillTicket(forKey: key), with: Item(id: 1, name: key, version: version), size: 40)
        }

        func served(_ tier: MemoryTier<Item>, _ key: String) -> Bool {
            if case .hit = tier.store.lookup(key) { return true }
            return false
        }
    }

    @Test func aNewTierServesNothingUntilAPingSentAfterTheSubscriptionIsAnswered() {
        let s = Setup()
        s.fill(s.users, "app:user:1")
        #expect(!s.served(s.users, "app:user:1"))
        s.coherence.handle(.pong(sentAt: .now))  // not subscribed yet: no trust
        #expect(!s.users.store.isTrusted)
        s.coherence.handle(.subscribed)
        #expect(!s.users.store.isTrusted)
        #expect(s.users.store.peek("app:user:1") == nil, "subscribing flushes what was filled before")
        s.fill(s.users, "app:user:1")
        s.coherence.handle(.pong(sentAt: .now))
        #expect(s.users.store.isTrusted && s.orders.store.isTrusted)
        #expect(s.served(s.users, "app:user:1"))
    }

    @Test func trustLastsTheStalenessBoundFromWhenThePingWasSent() {
        let s = Setup()
        s.coherence.handle(.subscribed)
        // A ping answered so late that its bound has passed gives no trust.
        s.coherence.handle(.pong(sentAt: ContinuousClock.now - .milliseconds(1100)))
        #expect(!s.users.store.isTrusted)
        // One sent 900 ms ago is good for about 100 ms more, not for a second.
        s.coherence.handle(.pong(sentAt: ContinuousClock.now - .milliseconds(900)))
        #expect(s.users.store.isTrusted)
        let limit = s.users.store.clock.now() + .milliseconds(150)
        #expect(!MemoryStoreProbe.trusted(s.users.store, at: limit))
    }

    @Test func anAnswerAfterTrustLapsedFlushesBeforeTrustingAgain() async {
        let s = Setup()
        s.coherence.handle(.subscribed)
        // Trust for a few milliseconds only: the heartbeat then counts as missed.
        s.coherence.handle(.pong(sentAt: ContinuousClock.now - MemoryTierCoherence().maximumStaleness + .milliseconds(5)))
        s.fill(s.users, "app:user:1")
        #expect(s.users.store.peek("app:user:1") != nil)
        #expect(await eventually(timeout: .seconds(30)) { !s.users.store.isTrusted })
        let flushes = s.users.statistics.flushes
        s.coherence.handle(.pong(sentAt: .now))
        #expect(s.users.store.isTrusted)
        #expect(s.users.store.peek("app:user:1") == nil, "what memory held while trust had lapsed is dropped")
        #expect(s.users.statistics.flushes > flushes)
        // An answer within the trust flushes nothing.
        s.fill(s.users, "app:user:2")
        s.coherence.handle(.pong(sentAt: .now))
        #expect(s.users.store.peek("app:user:2") != nil)
    }

    @Test func aDisconnectionStopsHitsAtOnceAndFlushes() {
        let s = Setup()
        s.trusted(holding: ["app:user:1", "app:user:2"])
        let ticket = s.users.store.fillTicket(forKey: "app:user:3")
        s.coherence.handle(.disconnected(RESPError(kind: .connection, message: "reset")))
        #expect(!s.users.store.isTrusted)
        #expect(s.users.store.peek("app:user:1") == nil && s.users.store.peek("app:user:2") == nil)
        // A read that started before the loss cannot fill.
        #expect(!s.users.store.fill(ticket, with: Item(id: 3, name: "x", version: 1), size: 10))
        // Answers on the old connection cannot come any more; the next subscription
        // flushes again and the next answer trusts.
        s.fill(s.users, "app:user:4")
        let beforeResubscribe = s.users.store.fillTicket(forKey: "app:user:5")
        s.coherence.handle(.subscribed)
        #expect(s.users.store.peek("app:user:4") == nil)
        #expect(!s.users.store.fill(beforeResubscribe, with: Item(id: 5, name: "x", version: 1), size: 10))
        s.coherence.handle(.pong(sentAt: .now))
        #expect(s.users.store.isTrusted)
    }

    @Test func invalidationsGoToTheTiersOfTheirKeyspaceOnly() {
        let s = Setup()
        s.trusted(holding: ["app:user:1", "app:user:2"])
        s.fill(s.orders, "app:order:1")
        s.coherence.handle(.invalidated(["app:user:1", "app:order:9", "other:user:2", "app:user", "app:nokeyspace"]))
        #expect(s.users.store.peek("app:user:1") == nil)
        #expect(s.users.store.peek("app:user:2") != nil)
        #expect(s.orders.store.peek("app:order:1") != nil)
        #expect(s.users.receivedInvalidations.load(ordering: .relaxed) == 1)
        #expect(s.orders.receivedInvalidations.load(ordering: .relaxed) == 1)
        // A read whose ticket predates the invalidation of its key cannot fill.
        let ticket = s.users.store.fillTicket(forKey: "app:user:2")
        s.coherence.handle(.invalidated(["app:user:2"]))
        #expect(!s.users.store.fill(ticket, with: Item(id: 2, name: "old", version: 1), size: 10))
        #expect(s.users.store.peek("app:user:2") == nil)
    }

    @Test func aFlushOfRedisFlushesEveryTier() {
        let s = Setup()
        s.trusted(holding: ["app:user:1"])
        s.fill(s.orders, "app:order:1")
        s.coherence.handle(.invalidatedAll)
        #expect(s.users.store.peek("app:user:1") == nil && s.orders.store.peek("app:order:1") == nil)
        #expect(s.users.store.isTrusted, "a flush loses nothing: trust stays")
    }

    @Test func inPublishModeMessagesOnTheChannelInvalidateAndOthersAreIgnored() {
        let s = Setup(invalidation: .publish())
        #expect(s.coherence.channel == "app:cache-aside:invalidations")
        #expect(s.coherence.subscriberConfiguration.channels == ["app:cache-aside:invalidations"])
        #expect(s.coherence.subscriberConfiguration.trackingPrefixes == nil)
        s.trusted(holding: ["app:user:1", "app:user:2"])
        s.coherence.handle(.message(RESPPubSubMessage(channel: "elsewhere", payload: Array("app:user:1".utf8))))
        #expect(s.users.store.peek("app:user:1") != nil)
        s.coherence.handle(.message(RESPPubSubMessage(channel: "app:cache-aside:invalidations", payload: Array("app:user:1".utf8))))
        #expect(s.users.store.peek("app:user:1") == nil)
        #expect(s.users.store.peek("app:user:2") != nil)
    }

    @Test func trackingModeTracksTheNamespacesPrefixOnANamedConnection() {
        let s = Setup()
        let configuration = s.coherence.subscriberConfiguration
        #expect(configuration.trackingPrefixes == ["app:"])
        #expect(configuration.channels.isEmpty)
        #expect(configuration.clientName == "app:cache-aside:memory:test")
        #expect(configuration.pingInterval == .milliseconds(250))
    }

    @Test func aTierRegisteredLaterGetsTheTrustInForce() {
        let s = Setup()
        s.coherence.handle(.subscribed)
        s.coherence.handle(.pong(sentAt: .now))
        let late = MemoryTier<Item>(keyspace: "late", schemaVersion: 1, policy: Self.policy, tier: Self.policy.memory!)
        #expect(!late.store.isTrusted)
        s.coherence.register(late)
        #expect(late.store.isTrusted)
        s.coherence.handle(.disconnected(RESPError(kind: .connection, message: "gone")))
        let later = MemoryTier<Item>(keyspace: "later", schemaVersion: 1, policy: Self.policy, tier: Self.policy.memory!)
        s.coherence.register(later)
        #expect(!later.store.isTrusted)
    }

    @Test func coherenceSettingsThatCannotHoldAreRefused() throws {
        // Never connects.
        let postgres = PGClient(configuration: try PGConfiguration(url: "postgres://nobody@127.0.0.1:9/none"))
        for settings in [
            MemoryTierCoherence(heartbeatInterval: .seconds(1), maximumStaleness: .seconds(1)),
            MemoryTierCoherence(heartbeatInterval: .zero),
            MemoryTierCoherence(invalidation: .publish(channel: "")),
        ] {
            #expect(throws: CacheError.self) {
                try CacheAside(postgres: postgres, store: FakeStore(), namespace: "app", memoryCoherence: settings, logger: testLogger)
            }
        }
    }
}

/// Reads a store's trust at a given instant (the store itself only answers for now).
enum MemoryStoreProbe {
    static func trusted<Value>(_ store: MemoryStore<Value>, at instant: MemoryInstant) -> Bool {
        instant < store.trustDeadline
    }
}
