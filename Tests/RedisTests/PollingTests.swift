import CacheAsideRedis
import Logging
import Synchronization
import TestSupport
import Testing

/// The polling fast path (a caller that sends alone on an idle connection polls the
/// socket for its reply) against the real server.
@Suite struct PollingTests {
    @Test func sequentialCommandsGetTheirOwnRepliesWithOrWithoutPolling() async throws {
        let p = TestEnvironment.uniqueName("poll")
        // Short windows: a poll holds a thread that runs tasks, and the tests share two.
        for window in [Duration.zero, .microseconds(50), .microseconds(500)] {
            try await withClient({ $0.connectionCount = 1; $0.replyPollingWindow = window }) { redis in
                for i in 0..<200 {
                    try await redis.set("\(p):\(i)", to: "v\(i)")
                    #expect(try await redis.getString("\(p):\(i)") == "v\(i)")
                }
                // A pipeline alone on the connection is polled for too.
                let (a, b) = try await redis.pipeline(.get("\(p):7"), .del((0..<200).map { "\(p):\($0)" }))
                #expect(try a.get() == Array("v7".utf8) as [UInt8]?)
                #expect(try b.get() == 200)
            }
        }
    }

    /// Callers that poll leave the socket unwatched by the event loop between commands;
    /// the connection's timer watches it again within a tick, so that a server closing
    /// an idle connection is noticed (and the connection reopened) before the next
    /// command, which then succeeds.
    @Test func aServerClosingAnIdleConnectionIsNoticedBeforeTheNextCommand() async throws {
        let log = CapturedLog()
        var configuration = try RESPConfiguration(url: try TestEnvironment.redisURL())
        configuration.connectionCount = 1
        configuration.replyPollingWindow = .microseconds(200)
        configuration.commandTimeout = .seconds(5)
        let redis = try RESPClient(configuration: configuration, logger: Logger(label: "polling-test") { _ in log })
        do {
            for _ in 0..<300 { _ = try await redis.send("PING") }
            let id = try #require(try await redis.send("CLIENT", "ID").integer)
            try await withClient { admin in _ = try await admin.send("CLIENT", "KILL", "ID", String(id)) }
            let noticed = try await eventually(timeout: .seconds(20)) { log.contains("lost") ? true : nil }
            #expect(noticed == true, "\(log.messages)")
            #expect(try await redis.send("PING") == .simpleString("PONG"))
            #expect(try await redis.send("CLIENT", "ID").integer != id)
        } catch {
            Issue.record(error)
        }
        await redis.shutdown()
    }
}

/// Log messages, captured for a test to wait on.
final class CapturedLog: LogHandler, @unchecked Sendable {
    private let lines = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append("\(event.level): \(event.message)") }
    }

    var messages: [String] { lines.withLock { $0 } }

    func contains(_ text: String) -> Bool { messages.contains { $0.contains(text) } }
}
