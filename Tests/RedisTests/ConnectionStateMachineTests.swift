@testable import CacheAsideRedis
import Testing

/// The connection's logic without a server: a manual clock, and a fake byte stream
/// (what the client writes is taken from the machine's output; what the "server" sends
/// goes through the real reply parser, in whatever pieces the test chooses).
@Suite struct ConnectionStateMachineTests {
    // MARK: - Handshake

    @Test func theHandshakeAuthenticatesSelectsAndGoesBeforeQueuedCommands() throws {
        let h = try Harness(database: 3)
        // The first command opens the connection and waits for it.
        #expect(h.submit(.get("a"), 1) == "connect")
        #expect(h.submit(.set("b", to: "x"), 2) == "none")
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | SELECT 3 | GET a | SET b x")
        h.server("+OK\r\n+OK\r\n$1\r\nA\r\n+OK\r\n")
        #expect(h.completed == [1: .bulkString(Array("A".utf8)), 2: .simpleString("OK")])
        #expect(h.machine.handshakeDone)
        #expect(h.machine.phase == .open)
    }

    @Test func withoutCredentialsAPingChecksThatTheServerNeedsNone() throws {
        let h = try Harness()
        #expect(h.submit(.get("a"), 1) == "connect")
        h.connected(nil)
        #expect(h.written() == "PING | GET a")
        h.server("-NOAUTH Authentication required.\r\n")
        let error = try #require(h.failed[1])
        #expect(error.kind == .authentication)
        #expect(error.message.contains("requires a password and none is configured"))
        // It never worked: back off rather than hammer the server.
        guard case .backoff = h.machine.phase else {
            Issue.record("expected a backoff, got \(h.machine.phase)")
            return
        }
        #expect(h.lastTeardown?.next != .reconnect)
    }

    @Test func aRefusedPasswordFailsTheConnectAndBacksOffWithoutShowingThePassword() throws {
        let h = try Harness()
        _ = h.submit(.get("a"), 1)
        h.connected(Harness.credentials)
        _ = h.written()
        h.server("-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        let error = try #require(h.failed[1])
        #expect(error.kind == .authentication)
        #expect(error.message.contains("WRONGPASS"))
        #expect(!error.message.contains("s3cret"))
        guard case .backoff(let until) = h.machine.phase else {
            Issue.record("expected a backoff, got \(h.machine.phase)")
            return
        }
        // While it backs off, commands fail at once, with the reason.
        #expect(h.submit(.get("b"), 2) == "fail")
        #expect(h.failed[2]?.kind == .authentication)
        #expect(h.failed[2]?.message.contains("next attempt in") == true)
        // Then it tries again.
        h.now = until
        let retrying = h.machine.backoffExpired(now: h.now)
        #expect(retrying)
        #expect(h.machine.phase == .connecting)
    }

    @Test func aFailedSelectIsAConfigurationError() throws {
        let h = try Harness(database: 99)
        _ = h.submit(.get("a"), 1)
        h.connected(Harness.credentials)
        _ = h.written()
        h.server("+OK\r\n-ERR DB index is out of range\r\n")
        #expect(h.failed[1]?.kind == .configuration)
        #expect(h.failed[1]?.message.contains("SELECT 99") == true)
    }

    @Test func aHandshakeWithoutReplyTimesOutAtTheConnectTimeout() throws {
        let h = try Harness(commandTimeout: .seconds(10), connectTimeout: .seconds(2))
        _ = h.submit(.get("a"), 1)
        h.connected(Harness.credentials)
        _ = h.written()
        // The command itself may wait 10 s, the handshake 2 s.
        #expect(h.tick(after: .milliseconds(1999)).teardown == nil)
        let result = h.tick(after: .milliseconds(2))
        let error = try #require(result.teardown)
        #expect(error.kind == .timeout)
        #expect(error.message.contains("handshake"))
        h.socketFailed(error)
        #expect(h.failed[1]?.kind == .timeout)
    }

    @Test func aConnectThatFailsFailsTheQueuedCommandsAndBacksOffLonger() throws {
        let h = try Harness()
        _ = h.submit(.get("a"), 1)
        var delays: [Duration] = []
        for attempt in 1...4 {
            let teardown = h.machine.connectFailed(.connection("refused"), now: h.now, random: 1)
            guard case .backoff(let until, let delay) = teardown.next else {
                Issue.record("attempt \(attempt): no backoff")
                return
            }
            delays.append(delay)
            h.now = until
            let retrying = h.machine.backoffExpired(now: h.now)
            #expect(retrying)
            if attempt == 1 { #expect(Harness.names(teardown.failed) == [1]) }
        }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800)])
    }

    // MARK: - Replies

    /// Every way of cutting the server's bytes in two gives the same replies, to the
    /// same callers, in order.
    @Test func repliesSplitAtEveryByteBoundaryReachTheirCallers() throws {
        let stream = "+OK\r\n$5\r\nhe\r\nl\r\n$-1\r\n:42\r\n*3\r\n$1\r\na\r\n$-1\r\n:7\r\n-WRONGTYPE bad\r\n$0\r\n\r\n"
        let expected: [Int: RESPReply] = [
            1: .simpleString("OK"),
            2: .bulkString(Array("he\r\nl".utf8)),
            3: .null,
            4: .integer(42),
            5: .array([.bulkString([97]), .null, .integer(7)]),
            6: .error("WRONGTYPE bad"),
            7: .bulkString([]),
        ]
        let bytes = Array(stream.utf8)
        for cut in 0...bytes.count {
            let h = try Harness.open()
            for waiter in 1...7 { _ = h.submit(.get("k\(waiter)"), waiter) }
            _ = h.written()
            h.server(bytes: Array(bytes[..<cut]))
            // Nothing is delivered twice, and what is delivered is right so far.
            for (waiter, reply) in h.completed { #expect(expected[waiter] == reply, "cut at \(cut)") }
            h.server(bytes: Array(bytes[cut...]))
            #expect(h.completed == expected, "cut at \(cut)")
            #expect(h.machine.inFlight.isEmpty)
        }
        // And byte by byte.
        let h = try Harness.open()
        for waiter in 1...7 { _ = h.submit(.get("k\(waiter)"), waiter) }
        _ = h.written()
        for byte in bytes { h.server(bytes: [byte]) }
        #expect(h.completed == expected)
    }

    @Test func aPipelinesRepliesAreGatheredIntoOneArray() throws {
        let h = try Harness.open()
        #expect(h.submitPipeline([.incr("n"), .incr("n"), .incr("m")], 1) == "write-alone")
        _ = h.submit(.get("after"), 2)
        #expect(h.written() == "INCR n | INCR n | INCR m | GET after")
        h.server(":1\r\n:2\r\n")
        #expect(h.completed.isEmpty)
        h.server("-ERR boom\r\n$-1\r\n")
        #expect(h.completed[1] == .array([.integer(1), .integer(2), .error("ERR boom")]))
        #expect(h.completed[2] == .null)
    }

    @Test func aReplyNobodyAskedForBreaksTheConnection() throws {
        let h = try Harness.open()
        h.server("+OK\r\n")
        #expect(h.lastReplyAction == "fail")
    }

    // MARK: - Timeouts

    /// A command without its reply by its deadline means the connection is stuck:
    /// everything on it fails and it is reopened, so the late reply, should it come,
    /// can never be matched to a later command.
    @Test func aReplyAfterATimeoutNeverReachesALaterCommand() throws {
        let h = try Harness.open(commandTimeout: .seconds(1))
        _ = h.submit(.get("slow"), 1)
        h.now = h.now.advanced(by: .milliseconds(500))
        _ = h.submit(.get("behind"), 2)
        _ = h.written()
        #expect(h.tick(after: .milliseconds(499)).teardown == nil)
        let result = h.tick(after: .milliseconds(2))
        let error = try #require(result.teardown)
        #expect(error.kind == .timeout)
        h.socketFailed(error)
        #expect(h.failed[1]?.kind == .timeout)
        #expect(h.failed[2]?.kind == .timeout)
        // The connection had worked: it reconnects at once, and a command issued
        // meanwhile waits for the new socket.
        #expect(h.lastTeardown?.next == .reconnect)
        #expect(h.submit(.get("next"), 3) == "none")
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | GET next")
        // The old socket's late reply ("slow") went with the old socket; the new one
        // answers its own commands.
        h.server("+OK\r\n$4\r\nnext\r\n")
        #expect(h.completed[3] == .bulkString(Array("next".utf8)))
        #expect(h.completed[1] == nil)
    }

    @Test func commandsBehindASlowHandshakeFailAtTheirOwnTimeoutAndTheirRepliesAreDropped() throws {
        let h = try Harness(commandTimeout: .seconds(1), connectTimeout: .seconds(5))
        _ = h.submit(.get("a"), 1)
        h.connected(Harness.credentials)
        _ = h.written()
        let result = h.tick(after: .milliseconds(1001))
        #expect(result.teardown == nil)
        #expect(Harness.names(result.failed) == [1])
        #expect(result.failed.first?.1.kind == .timeout)
        // The handshake and the late reply arrive: the reply is dropped, not given to
        // the next command.
        h.server("+OK\r\n$1\r\nA\r\n")
        #expect(h.completed.isEmpty)
        _ = h.submit(.get("b"), 2)
        _ = h.written()
        h.server("$1\r\nB\r\n")
        #expect(h.completed == [2: .bulkString(Array("B".utf8))])
    }

    @Test func aCommandWaitingForAConnectionFailsAtItsDeadline() throws {
        let h = try Harness(commandTimeout: .seconds(1))
        _ = h.submit(.get("a"), 1)
        h.now = h.now.advanced(by: .milliseconds(600))
        _ = h.submit(.get("b"), 2)
        let result = h.tick(after: .milliseconds(401))
        #expect(Harness.names(result.failed) == [1])
        #expect(result.failed.first?.1.message.contains("still connecting") == true)
        h.connected(nil)
        #expect(h.written() == "PING | GET b")
    }

    // MARK: - Reconnects

    @Test func aReconnectSendsTheHandshakeThenTheCommandsIssuedMeanwhile() throws {
        let h = try Harness.open(database: 2)
        _ = h.submit(.get("in-flight"), 1)
        _ = h.written()
        h.socketFailed(.connection("127.0.0.1:6379 closed the connection"))
        #expect(h.failed[1]?.kind == .connection)
        #expect(h.lastTeardown?.next == .reconnect)
        #expect(h.machine.phase == .connecting)
        // Issued while reconnecting: queued, not failed.
        #expect(h.submit(.set("k", to: "v"), 2) == "none")
        #expect(h.submit(.get("k"), 3) == "none")
        #expect(h.failed[2] == nil && h.failed[3] == nil)
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | SELECT 2 | SET k v | GET k")
        h.server("+OK\r\n+OK\r\n+OK\r\n$1\r\nv\r\n")
        #expect(h.completed[2] == .simpleString("OK"))
        #expect(h.completed[3] == .bulkString(Array("v".utf8)))
    }

    @Test func aCancelledCommandWaitingForAConnectionIsNeverSent() throws {
        let h = try Harness()
        _ = h.submit(.get("a"), 1)
        _ = h.submit(.set("never", to: "x"), 2)
        let cancelled = h.machine.cancel(id: 2)
        #expect(cancelled.map(Harness.name) == 2)
        h.connected(nil)
        #expect(h.written() == "PING | GET a")
    }

    @Test func aCancelledCommandInFlightKeepsItsPlaceAndItsReplyIsDropped() throws {
        let h = try Harness.open()
        _ = h.submit(.get("a"), 1)
        _ = h.submit(.get("b"), 2)
        _ = h.written()
        let cancelled = h.machine.cancel(id: 1)
        #expect(cancelled.map(Harness.name) == 1)
        h.server("$1\r\nA\r\n$1\r\nB\r\n")
        #expect(h.completed == [2: .bulkString(Array("B".utf8))])
    }

    // MARK: - READONLY and re-authentication

    /// After a failover the old primary answers writes with READONLY: the caller gets
    /// the error, the socket takes no new command, and once its replies are in it is
    /// reopened (the shell resolves the name again).
    @Test func readOnlyDrainsTheSocketAndReopensIt() throws {
        let h = try Harness.open()
        _ = h.submit(.set("k", to: "v"), 1)
        _ = h.submit(.get("k"), 2)
        _ = h.written()
        h.server("-READONLY You can't write against a read only replica.\r\n")
        #expect(h.completed[1] == .error("READONLY You can't write against a read only replica."))
        #expect(h.machine.phase == .draining)
        #expect(!h.machine.socketIsDrained)
        // New commands wait for the next socket.
        #expect(h.submit(.set("k", to: "again"), 3) == "none")
        h.server("$1\r\nv\r\n")
        #expect(h.completed[2] == .bulkString(Array("v".utf8)))
        #expect(h.machine.socketIsDrained)
        h.lastTeardown = h.machine.drainedSocketClosed(now: h.now, random: 0)
        #expect(h.lastTeardown?.next == .reconnect)
        #expect(h.lastTeardown?.failed.isEmpty == true)
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | SET k again")
    }

    @Test func reauthenticationSendsFreshCredentialsOnTheOpenConnection() throws {
        let h = try Harness.open(reauthenticateEvery: .seconds(60))
        #expect(!h.machine.reauthenticationDue(now: h.now.advanced(by: .seconds(59))))
        h.now = h.now.advanced(by: .seconds(60))
        #expect(h.machine.reauthenticationDue(now: h.now))
        h.machine.reauthenticationStarted()
        #expect(!h.machine.reauthenticationDue(now: h.now))
        _ = h.submit(.get("a"), 1)
        _ = h.machine.reauthenticate(credentials: .init(username: "app", password: "rotated"), now: h.now)
        _ = h.submit(.get("b"), 2)
        #expect(h.written() == "GET a | AUTH app rotated | GET b")
        h.server("$1\r\nA\r\n+OK\r\n$1\r\nB\r\n")
        #expect(h.completed.count == 2)
        #expect(h.machine.phase == .open)
        #expect(!h.machine.reauthenticationDue(now: h.now.advanced(by: .seconds(59))))
        #expect(h.machine.reauthenticationDue(now: h.now.advanced(by: .seconds(60))))
    }

    @Test func aRefusedReauthenticationReopensTheConnection() throws {
        let h = try Harness.open(reauthenticateEvery: .seconds(60))
        h.now = h.now.advanced(by: .seconds(60))
        h.machine.reauthenticationStarted()
        _ = h.machine.reauthenticate(credentials: .init(username: "app", password: "wrong"), now: h.now)
        _ = h.written()
        h.server("-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(h.lastReplyAction == "reauthFailed")
        #expect(h.machine.phase == .draining)
        #expect(h.machine.socketIsDrained)
    }

    // MARK: - Pub/sub

    @Test func pubSubMessagesInterleavedWithRepliesGoToTheSubscriber() throws {
        let h = try Harness(role: .subscriber(channels: ["a", "b"], patterns: ["p*"]))
        var ready = false
        if case .connect = h.machine.waitUntilReady(.polling(99), now: h.now) { ready = true }
        #expect(ready)
        h.connected(Harness.credentials)
        #expect(h.written() == "AUTH app s3cret | SUBSCRIBE a b | PSUBSCRIBE p*")
        // A message on "a" arrives before the confirmation of "b".
        h.server("+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
        #expect(h.pushes == [RESPPubSubMessage(channel: "a", payload: Array("hi".utf8))])
        #expect(h.readied.isEmpty)
        h.server("*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n")
        #expect(h.readied == [99])
        // A keep-alive PING goes out on an idle subscriber; its reply (a pong array in
        // subscribed mode) is matched while messages keep coming.
        let tick = h.tick(after: .seconds(5))
        #expect(tick.write)
        #expect(h.written() == "PING")
        h.server("*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npx\r\n$1\r\n1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\n2\r\n")
        #expect(h.pushes.count == 3)
        #expect(h.pushes[1] == RESPPubSubMessage(channel: "px", payload: [49], pattern: "p*"))
        #expect(h.pushes[2] == RESPPubSubMessage(channel: "b", payload: [50]))
        #expect(h.machine.inFlight.isEmpty)
    }

    // MARK: - Writing

    @Test func commandsIssuedWhileRepliesAreAwaitedShareOneWrite() throws {
        let h = try Harness.open()
        // Idle: the first command is written at once, by its caller, alone.
        #expect(h.submit(.get("a"), 1) == "write-alone")
        let taken = h.machine.takeOutput()
        let first = try #require(taken)
        // While it is in flight (and even before the write is reported done), the next
        // ones accumulate.
        #expect(h.submit(.get("b"), 2) == "none")
        let afterFirst = h.machine.outputWritten(first, count: first.count)
        #expect(afterFirst == .writeMore)
        #expect(h.written() == "GET b")
        #expect(h.submit(.get("c"), 3) == "flushSoon")
        #expect(h.submit(.get("d"), 4) == "none")
        #expect(h.written() == "GET c | GET d")
    }

    @Test func aFullSocketKeepsTheRestInFrontAndWaitsForWritability() throws {
        let h = try Harness.open()
        _ = h.submit(.set("k", to: "0123456789"), 1)
        let taken = h.machine.takeOutput()
        let bytes = try #require(taken)
        let partly = h.machine.outputWritten(bytes, count: 10)
        #expect(partly == .waitForWritable)
        _ = h.submit(.get("k"), 2)
        let whileBlocked = h.machine.takeOutput()
        #expect(whileBlocked == nil)  // blocked until writable
        h.machine.writable()
        let afterWritable = h.machine.takeOutput()
        let rest = try #require(afterWritable)
        #expect(Array(bytes[..<10]) + rest == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".utf8))
    }

    @Test func closeLetsCommandsInFlightFinishAndRefusesNewOnes() throws {
        let h = try Harness.open()
        _ = h.submit(.get("a"), 1)
        _ = h.written()
        let (action, failed) = h.machine.close()
        #expect(action == .wait)
        #expect(failed.isEmpty)
        #expect(h.submit(.get("b"), 2) == "fail")
        #expect(!h.machine.socketIsDrained)
        h.server("$1\r\nA\r\n")
        #expect(h.completed[1] == .bulkString([65]))
        #expect(h.machine.socketIsDrained)
    }
}

// MARK: - Harness

/// A state machine, a manual clock, and a fake byte stream around it.
final class Harness {
    typealias Machine = ConnectionStateMachine
    static let credentials = Machine.Credentials(username: "app", password: "s3cret")

    var machine: Machine
    /// The manual clock: moved only by the test (the machine never reads a clock).
    var now = ContinuousClock.now
    let parser: RESPParser
    var completed: [Int: RESPReply] = [:]
    var failed: [Int: RESPError] = [:]
    var pushes: [RESPPubSubMessage] = []
    var events: [RESPSubscriberEvent] = []
    var readied: [Int] = []
    var lastTeardown: Machine.Teardown?
    var lastReplyAction = ""
    private var nextID: UInt64 = 1

    init(
        database: Int = 0, commandTimeout: Duration = .seconds(1), connectTimeout: Duration = .seconds(2),
        role: Machine.Role = .commands, reauthenticateEvery: Duration? = nil
    ) throws {
        machine = Machine(configuration: .init(
            endpoint: "127.0.0.1:6379", commandTimeout: commandTimeout, connectTimeout: connectTimeout,
            reconnectBackoffMinimum: .milliseconds(100), reconnectBackoffMaximum: .seconds(2), database: database,
            role: role, reauthenticationInterval: reauthenticateEvery))
        parser = try RESPParser()
    }

    /// A machine whose connection is open and authenticated.
    static func open(
        database: Int = 0, commandTimeout: Duration = .seconds(1), reauthenticateEvery: Duration? = nil
    ) throws -> Harness {
        let h = try Harness(database: database, commandTimeout: commandTimeout, reauthenticateEvery: reauthenticateEvery)
        _ = h.machine.waitUntilReady(.polling(0), now: h.now)
        h.connected(credentials)
        _ = h.written()
        h.server(database == 0 ? "+OK\r\n" : "+OK\r\n+OK\r\n")
        precondition(h.machine.handshakeDone)
        h.readied = []
        return h
    }

    func submit(_ command: some RESPCommand, _ waiter: Int) -> String {
        let id = nextID
        nextID += 1
        let action = machine.submit(id: id, waiter: .polling(UInt64(waiter)), replies: 1, pipeline: false, now: now) { command.encode(into: &$0) }
        return describe(action, waiter)
    }

    func submitPipeline(_ commands: [RESPCommands.INCR], _ waiter: Int) -> String {
        let id = nextID
        nextID += 1
        let action = machine.submit(id: id, waiter: .polling(UInt64(waiter)), replies: commands.count, pipeline: true, now: now) { encoder in
            for command in commands { command.encode(into: &encoder) }
        }
        return describe(action, waiter)
    }

    private func describe(_ action: Machine.SubmitAction, _ waiter: Int) -> String {
        switch action {
        case .write(let alone): return alone ? "write-alone" : "write"
        case .flushSoon: return "flushSoon"
        case .none: return "none"
        case .connect: return "connect"
        case .fail(let error):
            failed[waiter] = error
            return "fail"
        }
    }

    func connected(_ credentials: Machine.Credentials?) {
        _ = machine.connected(credentials: credentials, now: now)
    }

    /// What the client wrote since the last call, commands separated by ` | `, all of
    /// it taken by the fake socket.
    func written() -> String {
        var text: [String] = []
        while let bytes = machine.takeOutput() {
            text.append(contentsOf: Self.commands(in: bytes))
            _ = machine.outputWritten(bytes, count: bytes.count)
        }
        return text.joined(separator: " | ")
    }

    /// Decodes RESP arrays of bulk strings back into "NAME arg arg".
    static func commands(in bytes: [UInt8]) -> [String] {
        var result: [String] = []
        var i = 0
        func line() -> String {
            var end = i
            while end + 1 < bytes.count && !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            let text = String(decoding: bytes[i..<end], as: UTF8.self)
            i = end + 2
            return text
        }
        while i < bytes.count {
            let header = line()
            let count = Int(header.dropFirst()) ?? 0
            var parts: [String] = []
            for _ in 0..<count {
                let length = Int(line().dropFirst()) ?? 0
                parts.append(String(decoding: bytes[i..<(i + length)], as: UTF8.self))
                i += length + 2
            }
            result.append(parts.joined(separator: " "))
        }
        return result
    }

    func server(_ text: String) {
        server(bytes: Array(text.utf8))
    }

    /// The server sends bytes: parsed as the connection parses them, and each complete
    /// reply given to the machine.
    func server(bytes: [UInt8]) {
        var replies: [RESPReply] = []
        bytes.withUnsafeBytes { raw in
            do {
                try parser.parse(raw, into: &replies)
            } catch {
                Issue.record("parser: \(error)")
            }
        }
        for reply in replies {
            switch machine.receive(reply, now: now) {
            case .none: lastReplyAction = "none"
            case .complete(let waiter, let reply):
                lastReplyAction = "complete"
                completed[Self.name(waiter)] = reply
            case .push(let message):
                lastReplyAction = "push"
                pushes.append(message)
            case .event(let event):
                lastReplyAction = "event"
                events.append(event)
            case .ready(let waiters):
                lastReplyAction = "ready"
                readied += waiters.map(Self.name)
            case .completeAndDrain(let waiter, let reply):
                lastReplyAction = "completeAndDrain"
                if let waiter { completed[Self.name(waiter)] = reply }
            case .fail(let error):
                lastReplyAction = "fail"
                socketFailed(error)
            case .reauthFailed:
                lastReplyAction = "reauthFailed"
            }
        }
    }

    func socketFailed(_ error: RESPError) {
        let teardown = machine.socketFailed(error, now: now, random: 1)
        for (waiter, error) in teardown.failed { failed[Self.name(waiter)] = error }
        lastTeardown = teardown
    }

    func tick(after duration: Duration) -> Machine.TickResult {
        now = now.advanced(by: duration)
        let result = machine.tick(now: now)
        for (waiter, error) in result.failed { failed[Self.name(waiter)] = error }
        return result
    }

    /// The test's name for a caller (its waiter is `.polling(name)`).
    static func name(_ waiter: RequestWaiter) -> Int {
        if case .polling(let id) = waiter { return Int(id) }
        return -1
    }

    static func names(_ failed: [(RequestWaiter, RESPError)]) -> [Int] {
        failed.map { name($0.0) }
    }
}
