@testable import CacheAsideRedis
import Testing

/// The pure pieces: reply parsing and conversion, command encoding and decoding, SHA-1,
/// backoff, error classification. No server.
@Suite struct CodecTests {
    private func parse(_ chunks: [String]) throws -> [RESPReply] {
        let parser = try RESPParser()
        var replies: [RESPReply] = []
        for chunk in chunks {
            let bytes = Array(chunk.utf8)
            try bytes.withUnsafeBytes { try parser.feed($0) }
            while let reply = try parser.next() { replies.append(reply) }
        }
        return replies
    }

    @Test func convertsEveryReplyType() throws {
        let replies = try parse([
            "+OK\r\n", "-WRONGTYPE bad type\r\n", ":-42\r\n", "$5\r\nhello\r\n", "$-1\r\n", "$0\r\n\r\n",
            "*3\r\n$1\r\na\r\n:7\r\n*2\r\n+x\r\n$-1\r\n", "*-1\r\n", "*0\r\n",
        ])
        #expect(replies == [
            .simpleString("OK"),
            .error("WRONGTYPE bad type"),
            .integer(-42),
            .bulkString(Array("hello".utf8)),
            .null,
            .bulkString([]),
            .array([.bulkString([97]), .integer(7), .array([.simpleString("x"), .null])]),
            .null,
            .array([]),
        ])
    }

    @Test func reassemblesRepliesSplitAcrossReads() throws {
        let binary = "a\0b\r\nc"
        let replies = try parse(["$6\r", "\na\0b", "\r\nc\r", "\n:1", "2\r\n"])
        #expect(replies == [.bulkString(Array(binary.utf8)), .integer(12)])
    }

    /// Scalar replies complete in one read are parsed without hiredis; anything else,
    /// and whatever follows a reply cut in two, goes through hiredis. Every way of
    /// cutting a stream into three reads gives the same replies.
    @Test func theFastPathAndHiredisAgreeWhereverTheBytesAreCut() throws {
        let stream = "+OK\r\n:-7\r\n$3\r\nabc\r\n*2\r\n$1\r\nx\r\n:1\r\n$-1\r\n-ERR no\r\n$0\r\n\r\n:12345678901\r\n*0\r\n+\r\n$2\r\n\r\n\r\n"
        let expected: [RESPReply] = [
            .simpleString("OK"), .integer(-7), .bulkString(Array("abc".utf8)), .array([.bulkString([120]), .integer(1)]),
            .null, .error("ERR no"), .bulkString([]), .integer(12_345_678_901), .array([]), .simpleString(""),
            .bulkString([13, 10]),
        ]
        let bytes = Array(stream.utf8)
        for first in 0...bytes.count {
            for second in stride(from: first, through: bytes.count, by: 3) {
                let parser = try RESPParser()
                var replies: [RESPReply] = []
                for range in [0..<first, first..<second, second..<bytes.count] {
                    try Array(bytes[range]).withUnsafeBytes { try parser.parse($0, into: &replies) }
                }
                #expect(replies == expected, "cut at \(first), \(second)")
            }
        }
    }

    @Test func aMalformedScalarIsLeftToHiredisWhichRejectsIt() throws {
        let parser = try RESPParser()
        var replies: [RESPReply] = []
        do {
            try Array(":12x\r\n".utf8).withUnsafeBytes { try parser.parse($0, into: &replies) }
            Issue.record("parsed a malformed integer: \(replies)")
        } catch let error as RESPError {
            #expect(error.kind == .protocol)
        }
    }

    @Test func rejectsInvalidProtocol() throws {
        let parser = try RESPParser()
        let bytes = Array("!nonsense\r\n".utf8)
        try bytes.withUnsafeBytes { try parser.feed($0) }
        do {
            _ = try parser.next()
            Issue.record("parsed invalid RESP")
        } catch {
            #expect(error.kind == .protocol)
            #expect(error.isConnectionFailure)
        }
    }

    @Test func valueAccessors() {
        #expect(RESPReply.bulkString(Array("12".utf8)).integer == 12)
        #expect(RESPReply.integer(3).integer == 3)
        #expect(RESPReply.simpleString("OK").string == "OK")
        #expect(RESPReply.bulkString([0xE2, 0x82, 0xAC]).string == "€")
        #expect(RESPReply.null.isNull)
        #expect(RESPReply.null.bytes == nil)
        #expect(RESPReply.error("ERR x").errorMessage == "ERR x")
        #expect(RESPReply.array([.integer(1)]).array == [.integer(1)])
        #expect(RESPReply.integer(1).array == nil)
        #expect(RESPReply.bulkString(.init(repeating: 65, count: 100)).description.contains("(100 bytes)"))
    }

    private func text(_ commands: any RESPCommand...) -> String {
        var encoder = RESPCommandEncoder()
        for command in commands { command.encode(into: &encoder) }
        return String(decoding: encoder.bytes, as: UTF8.self)
    }

    @Test func encodesCommandsAsArraysOfBulkStrings() throws {
        #expect(text(RESPCommands.GET("user:1")) == "*2\r\n$3\r\nGET\r\n$6\r\nuser:1\r\n")
        #expect(text(RESPCommands.GET("")) == "*2\r\n$3\r\nGET\r\n$0\r\n\r\n")
        #expect(text(RESPCommands.GET("ключ")) == "*2\r\n$3\r\nGET\r\n$8\r\nключ\r\n")
        #expect(text(RESPCommands.SET("k", to: [0, 13, 10], expiration: .milliseconds(-1234), condition: .ifNotExists))
            == "*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\0\r\n\r\n$2\r\nPX\r\n$5\r\n-1234\r\n$2\r\nNX\r\n")
        #expect(text(RESPCommands.SET("k", to: Array("v".utf8), expiration: .seconds(0), condition: .ifExists))
            == "*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$1\r\n0\r\n$2\r\nXX\r\n")
        #expect(text(RESPCommands.INCRBY("n", Int64.min)) == "*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$20\r\n-9223372036854775808\r\n")
        #expect(text(RESPCommands.Raw([Array("ECHO".utf8), []])) == "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n")
        #expect(text(RESPCommands.PING()) == "*1\r\n$4\r\nPING\r\n")
        let script = RESPScript(source: "return 1")
        #expect(text(RESPCommands.EVALSHA(script, keys: ["a", "b"], arguments: [[1]]))
            == "*6\r\n$7\r\nEVALSHA\r\n$40\r\n\(script.sha1)\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\n\u{1}\r\n")
        // A pipeline is the commands back to back.
        #expect(text(RESPCommands.GET("a"), RESPCommands.GET("b")) == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
        // Long arguments get multi-digit lengths.
        let long = [UInt8](repeating: 65, count: 12_345)
        #expect(text(RESPCommands.ECHO(long)) == "*2\r\n$4\r\nECHO\r\n$12345\r\n" + String(repeating: "A", count: 12_345) + "\r\n")
    }

    @Test func commandsKnowTheirKeysAndWhetherTheyWrite() {
        #expect(RESPCommands.GET("a").keys == ["a"])
        #expect(RESPCommands.GET("a").isReadOnly)
        #expect(!RESPCommands.SET("a", to: []).isReadOnly)
        #expect(RESPCommands.MGET(["a", "b"]).keys == ["a", "b"])
        #expect(RESPCommands.DEL(["a", "b"]).keys == ["a", "b"])
        let script = RESPScript(source: "return 1")
        #expect(RESPCommands.EVALSHA(script, keys: ["k"]).keys == ["k"])
        #expect(RESPCommands.EVALSHA(script, keys: ["k"]).script == script)
        #expect(RESPCommands.GET("a").script == nil)
        #expect(RESPCommands.Raw(["SCAN", "0"]).keys == [])
        #expect(AnyRESPCommand(RESPCommands.PTTL("x")).keys == ["x"])
        #expect(AnyRESPCommand(RESPCommands.PTTL("x")).name == "PTTL")
    }

    @Test func typedRepliesAreCheckedAndNameTheCommand() throws {
        #expect(try RESPCommands.GET("k").decode(.null) == nil)
        #expect(try RESPCommands.GET("k").decode(.bulkString([1])) == [1])
        #expect(try RESPCommands.SET("k", to: []).decode(.simpleString("OK")))
        #expect(try !RESPCommands.SET("k", to: [], condition: .ifNotExists).decode(.null))
        #expect(try RESPCommands.MGET(["a", "b"]).decode(.array([.null, .bulkString([2])])) == [nil, [2]])
        #expect(throws: RESPError.self) { try RESPCommands.MGET(["a", "b"]).decode(.array([.null])) }
        do {
            _ = try RESPCommands.PTTL("k").decode(.bulkString([1]))
            Issue.record("decoded a bulk string as PTTL's integer")
        } catch {
            #expect(error.kind == .protocol)
            #expect(error.message.contains("PTTL"))
        }
        let script = RESPScript(source: "return 1")
        #expect(throws: RESPError.self) { try RESPCommands.SCRIPTLOAD(script).decode(.bulkString(Array("0000".utf8))) }
        #expect(try RESPCommands.SCRIPTLOAD(script).decode(.bulkString(Array(script.sha1.utf8))) == script.sha1)
    }

    @Test func scriptsAreNamedByTheSHA1OfTheirSource() {
        #expect(RESPScript(source: "return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }

    @Test func backoffDoublesUpToTheMaximumWithJitter() {
        let minimum = Duration.milliseconds(100), maximum = Duration.seconds(2)
        func ms(_ failures: Int, _ random: Double) -> Int64 {
            Backoff.nanoseconds(Backoff.delay(afterFailures: failures, minimum: minimum, maximum: maximum, random: random)) / 1_000_000
        }
        #expect(ms(1, 1) == 100)
        #expect(ms(1, 0) == 50)
        #expect(ms(2, 1) == 200)
        #expect(ms(3, 1) == 400)
        #expect(ms(5, 1) == 1600)
        #expect(ms(6, 1) == 2000)
        #expect(ms(60, 1) == 2000)
        #expect(ms(1_000_000, 0.5) == 1500)
        #expect(ms(0, 1) == 100)
        for failures in 1...20 {
            for _ in 0..<20 {
                let d = Backoff.delay(afterFailures: failures, minimum: minimum, maximum: maximum, random: Double.random(in: 0...1))
                #expect(d >= minimum / 2 && d <= maximum)
            }
        }
    }

    @Test func errorClassification() {
        let server = RESPError(kind: .server, message: "WRONGTYPE Operation against a key holding the wrong kind of value")
        #expect(server.isServerError)
        #expect(!server.isConnectionFailure)
        #expect(server.serverErrorPrefix == "WRONGTYPE")
        #expect("\(server)".contains("WRONGTYPE Operation"))
        for kind in [RESPError.Kind.connection, .timeout, .protocol, .authentication, .tls] {
            let e = RESPError(kind: kind, message: "x")
            #expect(e.isConnectionFailure)
            #expect(!e.isServerError)
            #expect(e.serverErrorPrefix == nil)
        }
        #expect(RESPError(kind: .timeout, message: "x").isTimeout)
        #expect(!RESPError(kind: .configuration, message: "x").isConnectionFailure)
    }

    /// Replies that mean the server cannot serve now count as failures; a caller's own
    /// mistakes do not.
    @Test(arguments: [
        ("READONLY You can't write against a read only replica.", true, false, true),
        ("OOM command not allowed when used memory > 'maxmemory'.", true, false, false),
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", true, false, false),
        ("NOREPLICAS Not enough good replicas to write.", true, false, false),
        ("LOADING Redis is loading the dataset in memory", false, true, false),
        ("BUSY Redis is busy running a script.", false, true, false),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", false, true, false),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", false, false, false),
        ("ERR unknown command 'FOO'", false, false, false),
        ("NOSCRIPT No matching script.", false, false, false),
    ])
    func serverErrorsThatMeanUnavailableAreClassified(message: String, refusesWrites: Bool, notReady: Bool, readOnly: Bool) {
        let error = RESPError(kind: .server, message: message)
        #expect(error.refusesWrites == refusesWrites)
        #expect(error.isServerNotReady == notReady)
        #expect(error.isReadOnlyReplica == readOnly)
        #expect(error.isUnavailable == (refusesWrites || notReady))
        #expect(!error.isConnectionFailure)
        #expect(RESPError(kind: .timeout, message: message).isUnavailable)
        #expect(!RESPError(kind: .configuration, message: message).isUnavailable)
    }

    @Test func pubSubPushMessagesAreRecognized() {
        let message = RESPPubSubMessage(push: .array([.bulkString(Array("message".utf8)), .bulkString(Array("ch".utf8)), .bulkString([0, 1])]))
        #expect(message == RESPPubSubMessage(channel: "ch", payload: [0, 1]))
        let pmessage = RESPPubSubMessage(push: .array([
            .bulkString(Array("pmessage".utf8)), .bulkString(Array("c*".utf8)), .bulkString(Array("ch".utf8)), .bulkString(Array("hi".utf8)),
        ]))
        #expect(pmessage == RESPPubSubMessage(channel: "ch", payload: Array("hi".utf8), pattern: "c*"))
        #expect(pmessage?.payloadString == "hi")
        let confirmation = RESPPubSubMessage(push: .array([.bulkString(Array("subscribe".utf8)), .bulkString(Array("ch".utf8)), .integer(1)]))
        #expect(confirmation == nil)
    }
}
