@testable import CacheAsideRedis
import Testing

/// The pure pieces: reply parsing and conversion, command encoding, SHA-1, backoff,
/// error classification. No server.
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

    private func text(_ command: EncodedCommand) -> String {
        defer { command.free() }
        return String(decoding: command.bytes, as: UTF8.self)
    }

    @Test func encodesCommandsWithHiredis() throws {
        #expect(text(try RESPEncoder.encode("GET", "user:1")) == "*2\r\n$3\r\nGET\r\n$6\r\nuser:1\r\n")
        #expect(text(try RESPEncoder.encode("GET", "")) == "*2\r\n$3\r\nGET\r\n$0\r\n\r\n")
        #expect(text(try RESPEncoder.encode("GET", "ключ")) == "*2\r\n$3\r\nGET\r\n$8\r\nключ\r\n")
        let typed = try RESPEncoder.encode([
            .literal("SET"), .string("k"), .bytes([0, 13, 10]), .literal("PX"), .integer(-1234), .integer(0), .integer(Int64.min),
        ])
        #expect(text(typed) == "*7\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\0\r\n\r\n$2\r\nPX\r\n$5\r\n-1234\r\n$1\r\n0\r\n$20\r\n-9223372036854775808\r\n")
        let raw = try RESPEncoder.encode([Array("ECHO".utf8), []])
        #expect(text(raw) == "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n")
        let pipeline = try RESPEncoder.concatenate([try RESPEncoder.encode("GET", "a"), try RESPEncoder.encode("GET", "b")])
        #expect(text(pipeline) == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
        #expect(throws: RESPError.self) { try RESPEncoder.encode([[UInt8]]()) }
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
        for kind in [RESPError.Kind.connection, .timeout, .protocol, .authentication] {
            let e = RESPError(kind: kind, message: "x")
            #expect(e.isConnectionFailure)
            #expect(!e.isServerError)
            #expect(e.serverErrorPrefix == nil)
        }
        #expect(RESPError(kind: .timeout, message: "x").isTimeout)
        #expect(!RESPError(kind: .configuration, message: "x").isConnectionFailure)
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
