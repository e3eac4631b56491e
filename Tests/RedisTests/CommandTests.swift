import CacheAsideRedis
import TestSupport
import Synchronization
import Testing

/// Commands against the real, password-protected server. Every test uses keys under its
/// own unique prefix, so the tests run in parallel with each other and with other
/// suites on the same server.
@Suite struct CommandTests {
    @Test func binaryValuesRoundTrip() async throws {
        let p = TestEnvironment.uniqueName("binary")
        try await withClient { redis in
            let values: [String: [UInt8]] = [
                "\(p):nul": [0, 0, 65, 0],
                "\(p):crlf": Array("line1\r\nline2\r\n\r\n$3\r\n*1\r\n".utf8),
                "\(p):empty": [],
                "\(p):big": .random(count: 1 << 20),
                "\(p):ключ with spaces\r\n": Array("unicode key".utf8),
            ]
            for (key, value) in values {
                #expect(try await redis.set(key, to: value))
            }
            for (key, value) in values {
                let read = try await redis.get(key)
                #expect(read == value, "\(key): \(read?.count ?? -1) bytes back for \(value.count)")
            }
            #expect(try await redis.getString("\(p):crlf") == "line1\r\nline2\r\n\r\n$3\r\n*1\r\n")
            // The big value also comes back through MGET and a pipeline intact.
            let many = try await redis.mget(["\(p):big", "\(p):nul"])
            #expect(many == [values["\(p):big"], values["\(p):nul"]])
            let piped = try await redis.pipeline([[Array("GET".utf8), Array("\(p):big".utf8)]])
            #expect(piped == [.bulkString(values["\(p):big"] ?? [])])
            #expect(try await redis.del(Array(values.keys)) == values.count)
        }
    }

    @Test func tenThousandConcurrentGetsOnOneConnectionEachGetTheirOwnAnswer() async throws {
        let p = TestEnvironment.uniqueName("concurrent")
        let count = 10_000
        try await withClient({ $0.connectionCount = 1; $0.commandTimeout = .seconds(10) }) { redis in
            // Distinct values, written in one pipeline.
            let sets = (0..<count).map { i in [Array("SET".utf8), Array("\(p):\(i)".utf8), Array("value-\(i)-\(i * 7919)".utf8)] }
            let replies = try await redis.pipeline(sets)
            #expect(replies.allSatisfy { $0 == .simpleString("OK") })

            let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<count {
                    group.addTask {
                        try await redis.getString("\(p):\(i)") == "value-\(i)-\(i * 7919)" ? 0 : 1
                    }
                }
                var bad = 0
                for try await m in group { bad += m }
                return bad
            }
            #expect(mismatches == 0)
            _ = try await redis.pipeline(stride(from: 0, to: count, by: 1000).map { start in
                [Array("DEL".utf8)] + (start..<min(start + 1000, count)).map { Array("\(p):\($0)".utf8) }
            })
        }
    }

    /// A long pipeline's replies are matched in linear time on the shared event loop
    /// (a copy of the replies gathered so far, per reply, once held the loop for
    /// seconds and stalled every other connection on it), and in order.
    @Test func aHundredThousandCommandPipelineIsAnsweredInOrder() async throws {
        let p = TestEnvironment.uniqueName("longpipe")
        let count = 100_000
        try await withClient({ $0.connectionCount = 1; $0.commandTimeout = .seconds(20) }) { redis in
            let commands = (0..<count).map { _ in [Array("INCR".utf8), Array("\(p):n".utf8)] }
            async let replies = redis.pipeline(commands)
            // Other work on the same loop goes on meanwhile.
            let echoed = try await withClient { other in
                var same = 0
                for i in 0..<50 where try await other.send("ECHO", "\(i)") == .bulkString(Array("\(i)".utf8)) { same += 1 }
                return same
            }
            #expect(echoed == 50)
            let answered = try await replies
            #expect(answered.count == count)
            #expect(answered.enumerated().allSatisfy { $0.element == .integer(Int64($0.offset + 1)) })
            _ = try await redis.del(["\(p):n"])
        }
    }

    @Test func serverErrorReachesTheCallerWithItsText() async throws {
        let p = TestEnvironment.uniqueName("wrongtype")
        try await withClient { redis in
            _ = try await redis.send("LPUSH", "\(p):list", "x")
            let error = await expectError { try await redis.get("\(p):list") }
            let redisError = try #require(error as? RESPError)
            #expect(redisError.kind == .server)
            #expect(redisError.isServerError)
            #expect(!redisError.isConnectionFailure)
            #expect(redisError.serverErrorPrefix == "WRONGTYPE")
            #expect(redisError.message.contains("WRONGTYPE Operation against a key holding the wrong kind of value"))

            let unknown = await expectError { try await redis.send("NOSUCHCOMMAND", "x") } as? RESPError
            #expect(unknown?.serverErrorPrefix == "ERR")
            #expect(unknown?.message.contains("unknown command") == true)

            // The connection is unharmed.
            #expect(try await redis.send("PING") == .simpleString("PONG"))
            #expect(try await redis.del(["\(p):list"]) == 1)
        }
    }

    @Test func wrongPasswordIsAClearAuthenticationError() async throws {
        let wrong = "not-the-password-\(TestEnvironment.uniqueName("pw"))"
        try await withClient({
            $0.password = wrong
            $0.connectionCount = 1
            $0.commandTimeout = .seconds(20)
            $0.reconnectBackoffMinimum = .seconds(20)
            $0.reconnectBackoffMaximum = .seconds(20)
        }) { redis in
            let first = await expectError { try await redis.get("anything") } as? RESPError
            #expect(first?.kind == .authentication)
            #expect(first?.isConnectionFailure == true)
            #expect(first?.message.contains("authentication") == true, "\(String(describing: first))")
            #expect(first?.message.contains("WRONGPASS") == true)
            #expect(first.map { "\($0)".contains(wrong) } == false)

            // While the client backs off (at least 10 s here), commands fail fast with
            // the same kind of error, without waiting for their 20 s timeout.
            let start = ContinuousClock.now
            let second = await expectError { try await redis.set("anything", to: "x") } as? RESPError
            #expect(second?.kind == .authentication)
            #expect(second.map { $0.message.contains(wrong) } == false)
            #expect(seconds(since: start) < 5.0)
        }
    }

    @Test func missingPasswordIsAnAuthenticationErrorToo() async throws {
        try await withClient({ $0.password = nil; $0.username = nil; $0.connectionCount = 1 }) { redis in
            let error = await expectError { try await redis.get("anything") } as? RESPError
            #expect(error?.kind == .authentication)
            #expect(error?.message.contains("requires a password") == true, "\(String(describing: error))")
            #expect(error?.message.contains("NOAUTH") == true)
        }
    }

    @Test func setConditionsAndExpirations() async throws {
        let p = TestEnvironment.uniqueName("set")
        try await withClient { redis in
            let key = "\(p):k"
            // NX: only when absent.
            #expect(try await redis.set(key, to: "first", condition: .ifNotExists))
            #expect(try await redis.set(key, to: "second", condition: .ifNotExists) == false)
            #expect(try await redis.getString(key) == "first")
            // XX: only when present.
            #expect(try await redis.set("\(p):absent", to: "x", condition: .ifExists) == false)
            #expect(try await redis.exists("\(p):absent") == false)
            #expect(try await redis.set(key, to: "third", condition: .ifExists))
            #expect(try await redis.getString(key) == "third")
            // No expiration unless asked; -2 for a missing key.
            #expect(try await redis.ttl(key) == -1)
            #expect(try await redis.ttl("\(p):absent") == -2)
            #expect(try await redis.pttl("\(p):absent") == -2)
            // EX and PX.
            #expect(try await redis.set(key, to: "ex", expiration: .seconds(100)))
            #expect((99...100).contains(try await redis.ttl(key)))
            // Long enough to outlive this test on a busy machine (the DEL below counts it).
            #expect(try await redis.set("\(p):px", to: "px", expiration: .milliseconds(60_000), condition: .ifNotExists))
            let pttl = try await redis.pttl("\(p):px")
            #expect(pttl > 50_000 && pttl <= 60_000)
            // A short PX really expires.
            #expect(try await redis.set("\(p):short", to: "x", expiration: .milliseconds(30)))
            let gone = try await eventually(timeout: .seconds(3)) { try await redis.get("\(p):short") == nil ? true : nil }
            #expect(gone == true)
            // EXPIRE / PEXPIRE.
            #expect(try await redis.expire(key, seconds: 500))
            #expect((499...500).contains(try await redis.ttl(key)))
            #expect(try await redis.pexpire(key, milliseconds: 60_000))
            #expect((59_000...60_000).contains(try await redis.pttl(key)))
            #expect(try await redis.expire("\(p):absent", seconds: 5) == false)
            #expect(try await redis.del([key, "\(p):px"]) == 2)
        }
    }

    @Test func mgetReportsMissingKeysAsNil() async throws {
        let p = TestEnvironment.uniqueName("mget")
        try await withClient { redis in
            try await redis.set("\(p):a", to: "A")
            try await redis.set("\(p):c", to: [])
            _ = try await redis.send("LPUSH", "\(p):list", "x")
            let values = try await redis.mget(["\(p):a", "\(p):missing", "\(p):c", "\(p):list", "\(p):a"])
            #expect(values == [Array("A".utf8), nil, [], nil, Array("A".utf8)])
            #expect(try await redis.mget([]) == [])
            _ = try await redis.del(["\(p):a", "\(p):c", "\(p):list"])
        }
    }

    @Test func delUnlinkExistsIncr() async throws {
        let p = TestEnvironment.uniqueName("keys")
        try await withClient { redis in
            for i in 0..<4 { try await redis.set("\(p):\(i)", to: "v") }
            #expect(try await redis.exists(["\(p):0", "\(p):1", "\(p):nope", "\(p):0"]) == 3)
            #expect(try await redis.del("\(p):0", "\(p):1", "\(p):nope") == 2)
            #expect(try await redis.unlink(["\(p):2", "\(p):3", "\(p):nope"]) == 2)
            #expect(try await redis.exists(["\(p):0", "\(p):1", "\(p):2", "\(p):3"]) == 0)
            #expect(try await redis.del([]) == 0)

            #expect(try await redis.incr("\(p):n") == 1)
            #expect(try await redis.incr("\(p):n") == 2)
            #expect(try await redis.incrBy("\(p):n", 40) == 42)
            #expect(try await redis.incrBy("\(p):n", -50) == -8)
            try await redis.set("\(p):text", to: "abc")
            let notInteger = await expectError { try await redis.incr("\(p):text") } as? RESPError
            #expect(notInteger?.isServerError == true)
            #expect(notInteger?.message.contains("not an integer") == true)
            _ = try await redis.del(["\(p):n", "\(p):text"])
        }
    }

    @Test func pipelineKeepsOrderAndReturnsErrorsInPlace() async throws {
        let p = TestEnvironment.uniqueName("pipeline")
        try await withClient { redis in
            func c(_ parts: String...) -> [[UInt8]] { parts.map { Array($0.utf8) } }
            var commands: [[[UInt8]]] = []
            for i in 0..<50 { commands.append(c("SET", "\(p):\(i)", "v\(i)")) }
            commands.append(c("LPUSH", "\(p):list", "x"))
            commands.append(c("INCR", "\(p):list"))  // WRONGTYPE, in the middle
            for i in 0..<50 { commands.append(c("GET", "\(p):\(i)")) }
            commands.append(c("INCR", "\(p):counter"))
            commands.append(c("INCR", "\(p):counter"))
            commands.append(c("GET", "\(p):missing"))

            let replies = try await redis.pipeline(commands)
            #expect(replies.count == commands.count)
            #expect(replies[0..<50].allSatisfy { $0 == .simpleString("OK") })
            #expect(replies[50] == .integer(1))
            #expect(replies[51].errorMessage?.hasPrefix("WRONGTYPE") == true)
            for i in 0..<50 { #expect(replies[52 + i] == .bulkString(Array("v\(i)".utf8))) }
            #expect(Array(replies.suffix(3)) == [.integer(1), .integer(2), .null])
            #expect(try await redis.pipeline([]) == [])
            _ = try await redis.del((0..<50).map { "\(p):\($0)" } + ["\(p):list", "\(p):counter"])
        }
    }

    @Test func genericSendAndScan() async throws {
        let p = TestEnvironment.uniqueName("scan")
        try await withClient { redis in
            for i in 0..<25 { try await redis.set("\(p):\(i)", to: "v") }
            var cursor = "0"
            var found = Set<String>()
            repeat {
                let reply = try await redis.send("SCAN", cursor, "MATCH", "\(p):*", "COUNT", "100")
                let parts = try #require(reply.array)
                cursor = try #require(parts[0].string)
                for key in try #require(parts[1].array) { found.insert(try #require(key.string)) }
            } while cursor != "0"
            #expect(found == Set((0..<25).map { "\(p):\($0)" }))
            #expect(try await redis.send([Array("ECHO".utf8), [0, 13, 10, 255]]) == .bulkString([0, 13, 10, 255]))
            _ = try await redis.del(Array(found))
        }
    }

    @Test func scriptRunsAgainAfterScriptFlush() async throws {
        let p = TestEnvironment.uniqueName("script")
        // A script unique to this run, so the first call really meets NOSCRIPT.
        let script = RESPScript(source: "-- \(p)\nredis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], ARGV[1], #ARGV}")
        try await withClient { redis in
            let expected = RESPReply.array([.bulkString(Array("\(p):k".utf8)), .bulkString(Array("a\0b".utf8)), .integer(2)])
            #expect(try await redis.evalSHA(script, keys: ["\(p):k"], arguments: [Array("a\0b".utf8), [1]]) == expected)
            #expect(try await redis.get("\(p):k") == Array("a\0b".utf8))
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(1)]))

            _ = try await redis.send("SCRIPT", "FLUSH")
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]))
            #expect(try await redis.evalSHA(script, keys: ["\(p):k"], arguments: ["a\0b", "x"]) == expected)
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(1)]))

            // An error raised by the script is a server error.
            let failing = RESPScript(source: "return redis.error_reply('BOOM \(p)')")
            let error = await expectError { try await redis.evalSHA(failing) } as? RESPError
            #expect(error?.isServerError == true)
            #expect(error?.message.contains("BOOM \(p)") == true)
            _ = try await redis.del(["\(p):k"])
        }
    }

    @Test func aCommandWithoutReplyTimesOutInsteadOfHanging() async throws {
        let p = TestEnvironment.uniqueName("timeout")
        try await withClient { try await $0.set("\(p):k", to: "v") }
        // The timeout leaves room to see the server block and queue the second command
        // before it fires, also on a loaded machine (at 2 s, a busy run once queued the
        // second command after the first had timed out).
        try await withClient({ $0.connectionCount = 1; $0.commandTimeout = .seconds(10) }) { redis in
            // Connected first (the machine may be busy).
            #expect(try await eventually { try await redis.send("PING") } == .simpleString("PONG"))
            // BLPOP blocks the connection for 30 s on the server; the client gives up
            // at its timeout, together with the command queued behind it.
            let start = ContinuousClock.now
            let blocked = Task { try await redis.send("BLPOP", "\(p):empty", "30") }
            // Queue the second command once the server really blocks on the first.
            let blocking = try await withClient { observer in
                try await eventually(timeout: .seconds(30)) { () -> Bool? in
                    let clients = try await observer.send("CLIENT", "LIST").string ?? ""
                    return clients.contains("cmd=blpop") ? true : nil
                }
            }
            #expect(blocking == true)
            let behind = Task { try await redis.get("\(p):k") }
            let first = await expectError { try await blocked.value } as? RESPError
            let second = await expectError { try await behind.value } as? RESPError
            let elapsed = seconds(since: start)
            #expect(first?.kind == .timeout)
            #expect(first?.isConnectionFailure == true)
            #expect(second?.kind == .timeout)
            #expect(elapsed >= 9.9 && elapsed < 29, "timed out after \(elapsed) s")
            // The connection was reopened: the client works again.
            let value = try await eventually(timeout: .seconds(5)) { try await redis.getString("\(p):k") }
            #expect(value == "v")
            _ = try await redis.del(["\(p):k"])
        }
    }

    @Test func cancellationIsPromptAndTheLateReplyIsDiscarded() async throws {
        let p = TestEnvironment.uniqueName("cancel")
        try await withClient({ $0.connectionCount = 1; $0.commandTimeout = .seconds(40) }) { redis in
            try await redis.set("\(p):k", to: "mine")
            let start = ContinuousClock.now
            let blocked = Task { try await redis.send("BLPOP", "\(p):list", "30") }
            // Cancel once the server really blocks on it.
            let blocking = try await withClient { observer in
                try await eventually(timeout: .seconds(30)) { () -> Bool? in
                    let clients = try await observer.send("CLIENT", "LIST").string ?? ""
                    return clients.contains("cmd=blpop") ? true : nil
                }
            }
            try #require(blocking == true)
            let cancelled = ContinuousClock.now
            blocked.cancel()
            let result = await blocked.result
            // Without cancellation the BLPOP would take 30 s.
            #expect(seconds(since: cancelled) < 15)
            _ = start
            #expect(throws: CancellationError.self) { try result.get() }

            // Release the BLPOP on the server: its reply arrives and is discarded; the
            // next command on the same connection gets its own reply.
            try await withClient { other in _ = try await other.send("LPUSH", "\(p):list", "popped") }
            #expect(try await redis.getString("\(p):k") == "mine")
            #expect(try await redis.send("PING") == .simpleString("PONG"))

            // A task cancelled before it sends does not send.
            let early = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await redis.set("\(p):never", to: "x")
            }
            await #expect(throws: CancellationError.self) { try await early.value }
            #expect(try await redis.exists("\(p):never") == false)
            _ = try await redis.del(["\(p):k", "\(p):list"])
        }
    }

    @Test func nothingListeningFailsFastWithAConnectionError() async throws {
        // A port nobody listens on (the discard port on loopback).
        // Timeouts of 20 s: "fast" is well under that (the bounds leave room for a
        // machine busy with parallel tests).
        try await withClient(url: "redis://127.0.0.1:9/0", {
            $0.connectionCount = 1
            $0.connectTimeout = .seconds(20)
            $0.commandTimeout = .seconds(20)
            $0.reconnectBackoffMinimum = .seconds(20)
            $0.reconnectBackoffMaximum = .seconds(20)
        }) { redis in
            let start = ContinuousClock.now
            let first = await expectError { try await redis.get("k") } as? RESPError
            #expect(first?.kind == .connection)
            #expect(first?.isConnectionFailure == true)
            #expect(first?.message.contains("127.0.0.1:9") == true)
            #expect(seconds(since: start) < 8)
            // In backoff: refused at once, without trying to connect.
            let again = ContinuousClock.now
            let second = await expectError { try await redis.get("k") } as? RESPError
            #expect(second?.kind == .connection)
            #expect(second?.message.contains("next attempt") == true, "\(String(describing: second))")
            #expect(seconds(since: again) < 5)
        }
    }

    @Test func shutdownLetsCommandsInFlightFinishThenRefusesNewOnes() async throws {
        let p = TestEnvironment.uniqueName("shutdown")
        let redis = try makeClient { $0.connectionCount = 1; $0.commandTimeout = .seconds(30) }
        #expect(try await redis.send("PING") == .simpleString("PONG"))
        // In flight for 5 s on the server (BLPOP with nothing to pop answers null).
        let inFlight = Task { try await redis.send("BLPOP", "\(p):empty", "5") }
        // Shut down once the server really blocks on it.
        let blocking = try await withClient { observer in
            try await eventually(timeout: .seconds(30)) { () -> Bool? in
                let clients = try await observer.send("CLIENT", "LIST").string ?? ""
                return clients.contains("cmd=blpop") ? true : nil
            }
        }
        #expect(blocking == true)
        await redis.shutdown()
        // Its reply came (BLPOP's null after 5 s), not a closed connection's error.
        #expect(try await inFlight.value == .null, "shutdown let the command in flight finish")
        let after = await expectError { try await redis.get("\(p):k") } as? RESPError
        #expect(after?.kind == .connection)
    }
}
