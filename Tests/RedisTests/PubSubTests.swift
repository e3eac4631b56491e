import CacheAsideRedis
import TestSupport
import Testing

/// Pub/sub on the shared server (unique channel names).
@Suite struct PubSubTests {
    @Test func subscriberReceivesWhatIsPublished() async throws {
        let channel = TestEnvironment.uniqueName("chan")
        try await withClient { redis in
            let subscription = try await redis.subscribe(channels: [channel, "\(channel):other"])
            // subscribe returns once confirmed: the server now counts the subscriber.
            #expect(try await redis.send("PUBSUB", "NUMSUB", channel) == .array([.bulkString(Array(channel.utf8)), .integer(1)]))
            #expect(try await redis.publish("one", to: channel) == 1)
            #expect(try await redis.publish([0, 13, 10, 255], to: "\(channel):other") == 1)
            #expect(try await redis.publish("three", to: channel) == 1)

            var received: [RESPPubSubMessage] = []
            for try await message in subscription {
                received.append(message)
                if received.count == 3 { break }
            }
            #expect(received == [
                RESPPubSubMessage(channel: channel, payload: Array("one".utf8)),
                RESPPubSubMessage(channel: "\(channel):other", payload: [0, 13, 10, 255]),
                RESPPubSubMessage(channel: channel, payload: Array("three".utf8)),
            ])

            // Leaving the loop ended the iteration: that unsubscribed (the
            // subscription value itself is still alive).
            let gone = try await eventually(timeout: .seconds(5)) {
                try await redis.publish("late", to: channel) == 0 ? true : nil
            }
            #expect(gone == true)
            withExtendedLifetime(subscription) {}
        }
    }

    @Test func patternSubscriptionCarriesThePattern() async throws {
        let prefix = TestEnvironment.uniqueName("pchan")
        try await withClient { redis in
            let subscription = try await redis.psubscribe(patterns: ["\(prefix):*"])
            #expect(try await redis.publish("hello", to: "\(prefix):a") == 1)
            #expect(try await redis.publish("nope", to: "other-\(prefix)") == 0)
            var iterator = subscription.makeAsyncIterator()
            let message = try await iterator.next()
            #expect(message?.channel == "\(prefix):a")
            #expect(message?.pattern == "\(prefix):*")
            #expect(message?.payloadString == "hello")
            await subscription.close()
            // The sequence ends after close.
            #expect(try await iterator.next() == nil)
        }
    }

    @Test func cancellingTheIteratingTaskUnsubscribes() async throws {
        let channel = TestEnvironment.uniqueName("cancelsub")
        try await withClient { redis in
            let subscription = try await redis.subscribe(channels: [channel])
            let consumer = Task {
                var n = 0
                for try await _ in subscription { n += 1 }
                return n
            }
            #expect(try await redis.publish("x", to: channel) == 1)
            try await Task.sleep(for: .milliseconds(50))
            consumer.cancel()
            _ = try await consumer.value
            let gone = try await eventually(timeout: .seconds(5)) {
                try await redis.publish("late", to: channel) == 0 ? true : nil
            }
            #expect(gone == true)
        }
    }

    @Test func subscribingWithAWrongPasswordThrows() async throws {
        try await withClient({ $0.password = "definitely-wrong" }) { redis in
            let error = await expectError { try await redis.subscribe(channels: ["x"]) } as? RESPError
            #expect(error?.kind == .authentication)
        }
    }
}
