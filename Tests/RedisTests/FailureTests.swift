import CacheAsideRedis
import TestSupport
import Synchronization
import Testing

/// Server failures, each on a private Redis (`scripts/dev-services --instance`) so that
/// stopping it disturbs no other test.
@Suite struct FailureTests {
    @Test func serverKilledMidRunFailsCommandsInFlightWithinTheirTimeoutThenRecovers() async throws {
        try await withPrivateInstance("redis-restart") { url, instance in
            let timeout = 10.0
            try await withClient(url: url, {
                $0.commandTimeout = .seconds(10)
                $0.reconnectBackoffMinimum = .milliseconds(20)
                $0.reconnectBackoffMaximum = .milliseconds(200)
            }) { redis in
                try await redis.set("k", to: "v")
                // Commands in flight when the server dies: blocking ones (each holds a
                // connection of a second client for 30 s on the server), and a stream
                // of GETs from several tasks on this one.
                let blocker = try makeClient(url: url) { $0.commandTimeout = .seconds(10) }
                let start = ContinuousClock.now
                let blocked = (0..<2).map { i in
                    Task { () -> (any Error)? in
                        do {
                            _ = try await blocker.send("BLPOP", "list\(i)", "30")
                            return nil
                        } catch {
                            return error
                        }
                    }
                }
                // GETs run until shortly after the kill (however long the script takes
                // to kill the server on a loaded machine), at most 20 s.
                let killMark = KillMark()
                let answered = Flag()
                let getters = (0..<8).map { _ in
                    Task { () -> (ok: Int, failed: [RESPError], slowest: Double) in
                        var ok = 0
                        var failed: [RESPError] = []
                        var slowest = 0.0
                        while ContinuousClock.now - start < .seconds(20),
                              killMark.killed.map({ ContinuousClock.now - $0 < .milliseconds(700) }) ?? true {
                            let issued = ContinuousClock.now
                            do {
                                if try await redis.getString("k") == "v" {
                                    ok += 1
                                    answered.count.add(1, ordering: .relaxed)
                                }
                            } catch let error as RESPError {
                                failed.append(error)
                                slowest = max(slowest, seconds(since: issued))
                                try? await Task.sleep(for: .milliseconds(5))
                            } catch {}
                        }
                        return (ok, failed, slowest)
                    }
                }
                // Kill once the GETs are flowing and both BLPOPs block on the server.
                let ready = try await eventually(timeout: .seconds(30)) { () -> Bool? in
                    guard answered.count.load(ordering: .relaxed) >= 10 else { return nil }
                    let info = try await redis.send("INFO", "clients").string ?? ""
                    return info.contains("blocked_clients:2") ? true : nil
                }
                try #require(ready == true, "the GETs and BLPOPs never got going")
                let killed = ContinuousClock.now
                try await TestEnvironment.runDevServices(["stop", "redis"], instance: instance)
                killMark.mark()

                for task in blocked {
                    let error = await task.value as? RESPError
                    #expect(error?.isConnectionFailure == true, "\(String(describing: error))")
                }
                let failedAfter = seconds(since: killed)
                #expect(failedAfter < timeout, "in-flight commands failed \(failedAfter) s after the kill")
                var ok = 0
                var failures: [RESPError] = []
                var slowest = 0.0
                for task in getters {
                    let result = await task.value
                    ok += result.ok
                    failures += result.failed
                    slowest = max(slowest, result.slowest)
                }
                await blocker.shutdown()
                #expect(ok > 0)
                #expect(!failures.isEmpty)
                #expect(failures.allSatisfy { $0.isConnectionFailure }, "\(failures.prefix(3))")
                #expect(slowest < timeout, "a GET took \(slowest) s to fail")

                // While the server is down, commands fail fast.
                let probe = ContinuousClock.now
                let down = await expectError { try await redis.get("k") } as? RESPError
                #expect(down?.kind == .connection)
                #expect(seconds(since: probe) < 5.0)

                // Back up (empty): the client reconnects by itself.
                try await TestEnvironment.runDevServices(["start", "redis"], instance: instance)
                let recovered = try await eventually(timeout: .seconds(10)) { () -> Bool? in
                    try await redis.set("k", to: "again")
                    return try await redis.getString("k") == "again" ? true : nil
                }
                #expect(recovered == true)
                // Every connection works again.
                let all = try await withThrowingTaskGroup(of: String?.self) { group in
                    for _ in 0..<20 { group.addTask { try await redis.getString("k") } }
                    var values: [String?] = []
                    for try await v in group { values.append(v) }
                    return values
                }
                #expect(all == Array(repeating: "again", count: 20))
            }
        }
    }

    @Test func subscriptionSurvivesAServerRestart() async throws {
        try await withPrivateInstance("redis-pubsub") { url, instance in
            try await withClient(url: url, {
                $0.reconnectBackoffMinimum = .milliseconds(20)
                $0.reconnectBackoffMaximum = .milliseconds(200)
            }) { redis in
                let subscription = try await redis.subscribe(channels: ["events"])
                var iterator = subscription.makeAsyncIterator()
                #expect(try await redis.publish("before", to: "events") == 1)
                #expect(try await iterator.next()?.payloadString == "before")

                try await TestEnvironment.runDevServices(["restart", "redis"], instance: instance)

                // Publish until the resubscribed connection counts as a receiver.
                let delivered = try await eventually(timeout: .seconds(10), every: .milliseconds(50)) {
                    try await redis.publish("after", to: "events") >= 1 ? true : nil
                }
                #expect(delivered == true)
                #expect(try await iterator.next()?.payloadString == "after")
                await subscription.close()
            }
        }
    }
}

/// When the test killed the server, shared with the tasks that keep issuing commands.
private final class KillMark: Sendable {
    private let instant = Mutex<ContinuousClock.Instant?>(nil)
    func mark() { instant.withLock { $0 = .now } }
    var killed: ContinuousClock.Instant? { instant.withLock { $0 } }
}
