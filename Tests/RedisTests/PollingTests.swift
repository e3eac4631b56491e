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

    /// A command takes an idle connection when another one is busy, rather than queue
    /// behind it (and lose the polling path): here the busy one blocks in BLPOP, and no
    /// command sent meanwhile waits for it.
    @Test(.timeLimit(.minutes(2)))
    func aCommandTakesAnIdleConnectionWhileAnotherIsBusy() async throws {
        let p = TestEnvironment.uniqueName("idle-choice")
        try await withClient({ $0.connectionCount = 2; $0.commandTimeout = .seconds(60) }) { redis in
            func clientID() async throws -> Int64? {
                if case .integer(let id) = try await redis.send("CLIENT", "ID") { return id }
                return nil
            }
            // Both connections open (each opens on first use: commands sent together
            // spread over both).
            let both = try await eventually(timeout: .seconds(30)) { () -> Set<Int64>? in
                async let a = clientID()
                async let b = clientID()
                let ids = Set([try await a, try await b].compactMap { $0 })
                return ids.count == 2 ? ids : nil
            }
            #expect(both?.count == 2)
            let blocked = Task { try await redis.send("BLPOP", "\(p):list", "50") }
            let blockedID = try await withClient { observer in
                try await eventually(timeout: .seconds(30)) { () -> Int64? in
                    let clients = try await observer.send("CLIENT", "LIST").string ?? ""
                    let line = clients.split(separator: "\n").first { $0.contains("cmd=blpop") && $0.contains("\(p)") == false }
                    return line.flatMap { $0.split(separator: " ").first { $0.hasPrefix("id=") } }.flatMap { Int64($0.dropFirst(3)) }
                }
            }
            #expect(blockedID != nil)
            let start = ContinuousClock.now
            var ids = Set<Int64>()
            for _ in 0..<20 { if let id = try await clientID() { ids.insert(id) } }
            #expect(ContinuousClock.now - start < .seconds(30), "no command waited behind the BLPOP")
            #expect(ids.count == 1)
            #expect(blockedID.map { !ids.contains($0) } ?? false, "the commands went to the other connection")
            _ = try await withClient { try await $0.send("RPUSH", "\(p):list", "x") }
            #expect(try await blocked.value == .array([.bulkString(Array("\(p):list".utf8)), .bulkString(Array("x".utf8))]))
            _ = try await redis.del(["\(p):list"])
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
