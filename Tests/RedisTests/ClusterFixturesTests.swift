@testable import CacheAsideRedis
import Testing

/// Replies captured from the cluster that `scripts/dev-services up --cluster` starts
/// (Redis 7.0.15, 3 primaries and 3 replicas on 127.0.0.1, TLS ports announced), kept
/// as the RESP2 bytes the server sent, one protocol line per source line.
///
/// Captured with a raw socket: `AUTH`, then the command, reading exactly one reply.
/// Node names below are dev-services' (`scripts/dev-services nodes`): cluster-1
/// 127.0.0.1:23364 (TLS 21118), cluster-2 :24015 (29654), cluster-3 :30441 (31920),
/// cluster-4 :24928 (24938), cluster-5 :21297 (24495), cluster-6 :20714 (21301).
/// At first cluster-1, 2 and 3 were the primaries of 0-5460, 5461-10922 and
/// 10923-16383, with replicas cluster-4, 5 and 6; later cluster-4 took over from
/// cluster-1 (a kill), and cluster-1 (started again) from cluster-4 (another kill).
enum ClusterFixtures {
    /// The reply in `text` (RESP2, lines separated by newlines), decoded.
    static func resp(_ text: String) -> RESPReply {
        var parser = RESP2TestParser(bytes: Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8) + [13, 10])
        do {
            let reply = try parser.next()
            guard parser.atEnd else { throw RESP2TestParser.Malformed(offset: parser.offset) }
            return reply
        } catch {
            return .error("fixture does not parse: \(error)")
        }
    }

    /// `CLUSTER SHARDS` right after `redis-cli --cluster create`: the replicas are still `loading` with offset 0.
    static let shardsFresh = resp("""
        *3
        *4
        $5
        slots
        *2
        :10923
        :16383
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        $4
        port
        :30441
        $8
        tls-port
        :31920
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :0
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        ca0d4f99a9daedfa652531b08c87c23448ee6a17
        $4
        port
        :20714
        $8
        tls-port
        :21301
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :0
        $6
        health
        $7
        loading
        *4
        $5
        slots
        *2
        :5461
        :10922
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        $4
        port
        :24015
        $8
        tls-port
        :29654
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :0
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        e138ab1b688b9a31ed891563ab3142a2983dc802
        $4
        port
        :21297
        $8
        tls-port
        :24495
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :0
        $6
        health
        $7
        loading
        *4
        $5
        slots
        *2
        :0
        :5460
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        $4
        port
        :23364
        $8
        tls-port
        :21118
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :0
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec
        $4
        port
        :24928
        $8
        tls-port
        :24938
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :0
        $6
        health
        $7
        loading
        """)

    /// `CLUSTER SLOTS` at the same moment: the replicas are left out.
    static let slotsFresh = resp("""
        *3
        *3
        :0
        :5460
        *4
        $9
        127.0.0.1
        :23364
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        *0
        *3
        :5461
        :10922
        *4
        $9
        127.0.0.1
        :24015
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        *0
        *3
        :10923
        :16383
        *4
        $9
        127.0.0.1
        :30441
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        *0
        """)

    /// `CLUSTER SLOTS` at the same moment, asked over TLS: TLS ports.
    static let slotsFreshOverTLS = resp("""
        *3
        *3
        :0
        :5460
        *4
        $9
        127.0.0.1
        :21118
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        *0
        *3
        :5461
        :10922
        *4
        $9
        127.0.0.1
        :29654
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        *0
        *3
        :10923
        :16383
        *4
        $9
        127.0.0.1
        :31920
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        *0
        """)

    /// `CLUSTER SHARDS` of the running cluster (slot 12182 migrating from cluster-3 to cluster-1, which SHARDS does not show).
    static let shardsSteady = resp("""
        *3
        *4
        $5
        slots
        *2
        :10923
        :16383
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        $4
        port
        :30441
        $8
        tls-port
        :31920
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :76
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        ca0d4f99a9daedfa652531b08c87c23448ee6a17
        $4
        port
        :20714
        $8
        tls-port
        :21301
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :14
        $6
        health
        $6
        online
        *4
        $5
        slots
        *2
        :5461
        :10922
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        $4
        port
        :24015
        $8
        tls-port
        :29654
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :14
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        e138ab1b688b9a31ed891563ab3142a2983dc802
        $4
        port
        :21297
        $8
        tls-port
        :24495
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :14
        $6
        health
        $6
        online
        *4
        $5
        slots
        *2
        :0
        :5460
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        $4
        port
        :23364
        $8
        tls-port
        :21118
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :14
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec
        $4
        port
        :24928
        $8
        tls-port
        :24938
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :14
        $6
        health
        $6
        online
        """)

    /// `CLUSTER SLOTS` at the same moment, replicas included.
    static let slotsSteady = resp("""
        *3
        *4
        :0
        :5460
        *4
        $9
        127.0.0.1
        :23364
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        *0
        *4
        $9
        127.0.0.1
        :24928
        $40
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec
        *0
        *4
        :5461
        :10922
        *4
        $9
        127.0.0.1
        :24015
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        *0
        *4
        $9
        127.0.0.1
        :21297
        $40
        e138ab1b688b9a31ed891563ab3142a2983dc802
        *0
        *4
        :10923
        :16383
        *4
        $9
        127.0.0.1
        :30441
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        *0
        *4
        $9
        127.0.0.1
        :20714
        $40
        ca0d4f99a9daedfa652531b08c87c23448ee6a17
        *0
        """)

    /// `CLUSTER SHARDS` after cluster-4 (primary of 0-5460) was killed and its replica cluster-1 took over: the failed node is a shard of its own, without slots.
    static let shardsAfterFailover = resp("""
        *4
        *4
        $5
        slots
        *2
        :5461
        :10922
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        $4
        port
        :24015
        $8
        tls-port
        :29654
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :56
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        e138ab1b688b9a31ed891563ab3142a2983dc802
        $4
        port
        :21297
        $8
        tls-port
        :24495
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :56
        $6
        health
        $6
        online
        *4
        $5
        slots
        *0
        $5
        nodes
        *1
        *16
        $2
        id
        $40
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec
        $4
        port
        :24928
        $8
        tls-port
        :24938
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :42
        $6
        health
        $4
        fail
        *4
        $5
        slots
        *2
        :0
        :5460
        $5
        nodes
        *1
        *16
        $2
        id
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        $4
        port
        :23364
        $8
        tls-port
        :21118
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :42
        $6
        health
        $6
        online
        *4
        $5
        slots
        *2
        :10923
        :16383
        $5
        nodes
        *2
        *16
        $2
        id
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        $4
        port
        :30441
        $8
        tls-port
        :31920
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $6
        master
        $18
        replication-offset
        :150
        $6
        health
        $6
        online
        *16
        $2
        id
        $40
        ca0d4f99a9daedfa652531b08c87c23448ee6a17
        $4
        port
        :20714
        $8
        tls-port
        :21301
        $2
        ip
        $9
        127.0.0.1
        $8
        endpoint
        $9
        127.0.0.1
        $4
        role
        $7
        replica
        $18
        replication-offset
        :150
        $6
        health
        $6
        online
        """)

    /// `CLUSTER SLOTS` at the same moment.
    static let slotsAfterFailover = resp("""
        *3
        *3
        :0
        :5460
        *4
        $9
        127.0.0.1
        :23364
        $40
        4d28b2c31843042a742c2de6f411845bbe6581bb
        *0
        *4
        :5461
        :10922
        *4
        $9
        127.0.0.1
        :24015
        $40
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78
        *0
        *4
        $9
        127.0.0.1
        :21297
        $40
        e138ab1b688b9a31ed891563ab3142a2983dc802
        *0
        *4
        :10923
        :16383
        *4
        $9
        127.0.0.1
        :30441
        $40
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b
        *0
        *4
        $9
        127.0.0.1
        :20714
        $40
        ca0d4f99a9daedfa652531b08c87c23448ee6a17
        *0
        """)

    /// `CLUSTER NODES` at the same moment (text), to cross-check the parsers.
    static let nodesAfterFailover = """
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78 127.0.0.1:24015@25634 myself,master - 0 1796085983000 2 connected 5461-10922
        e138ab1b688b9a31ed891563ab3142a2983dc802 127.0.0.1:21297@20435 slave 317dccc2cf05f8f46d0ff1e2a61dff74f0221b78 0 1796085983741 2 connected
        ca0d4f99a9daedfa652531b08c87c23448ee6a17 127.0.0.1:20714@26141 slave 19f83d08a7f30d782bf3ddcfd92ab804fb51f54b 0 1796085983000 3 connected
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec 127.0.0.1:24928@20517 master,fail - 1796085979193 1796085978000 7 disconnected
        4d28b2c31843042a742c2de6f411845bbe6581bb 127.0.0.1:23364@26054 master - 0 1796085983135 8 connected 0-5460
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b 127.0.0.1:30441@23055 master - 0 1796085983235 3 connected 10923-16383
        """

    /// `CLUSTER NODES` of the fresh cluster (text).
    static let nodesFresh = """
        19f83d08a7f30d782bf3ddcfd92ab804fb51f54b 127.0.0.1:30441@23055 master - 0 1796085943565 3 connected 10923-16383
        317dccc2cf05f8f46d0ff1e2a61dff74f0221b78 127.0.0.1:24015@25634 master - 0 1796085943000 2 connected 5461-10922
        ca0d4f99a9daedfa652531b08c87c23448ee6a17 127.0.0.1:20714@26141 slave 19f83d08a7f30d782bf3ddcfd92ab804fb51f54b 0 1796085943565 3 connected
        e138ab1b688b9a31ed891563ab3142a2983dc802 127.0.0.1:21297@20435 slave 317dccc2cf05f8f46d0ff1e2a61dff74f0221b78 0 1796085943000 2 connected
        bc2a53edb0f202de6b48c9a6ab1acc81d72bdeec 127.0.0.1:24928@20517 slave 4d28b2c31843042a742c2de6f411845bbe6581bb 0 1796085943868 1 connected
        4d28b2c31843042a742c2de6f411845bbe6581bb 127.0.0.1:23364@26054 myself,master - 0 1796085942000 1 connected 0-5460
        """

    /// Keys and their slots as `CLUSTER KEYSLOT` gave them.
    static let keySlots: [(key: [UInt8], slot: Int)] = [
        (Array("".utf8), 0),
        (Array("foo".utf8), 12182),
        (Array("bar".utf8), 5061),
        (Array("hello".utf8), 866),
        (Array("123456789".utf8), 12739),
        (Array("{user1000}.following".utf8), 3443),
        (Array("{user1000}.followers".utf8), 3443),
        (Array("foo{}{bar}".utf8), 8363),
        (Array("foo{{bar}}zap".utf8), 4015),
        (Array("foo{bar}{zap}".utf8), 5061),
        (Array("{}".utf8), 15257),
        (Array("{".utf8), 4092),
        (Array("}".utf8), 12090),
        (Array("}{".utf8), 12793),
        (Array("a{b".utf8), 13340),
        (Array("{a}".utf8), 15495),
        (Array("{a}b".utf8), 15495),
        (Array("a}b{c}".utf8), 7365),
        (Array("{{}}".utf8), 4092),
        (Array("{}{a}".utf8), 13650),
        (Array("x{y}z{w}".utf8), 12222),
        ([226, 130, 172, 123, 195, 169, 125], 10180),
        (Array("user:{42}:profile".utf8), 8000),
        (Array("cache:user:v1:42".utf8), 14468),
        ([UInt8](repeating: UInt8(ascii: "a"), count: 300), 14126),
    ]

    // Error replies, as the servers sent them.
    static let movedError = "MOVED 12182 127.0.0.1:30441"
    static let movedOverTLSError = "MOVED 12182 127.0.0.1:31920"
    static let crossSlotError = "CROSSSLOT Keys in request don't hash to the same slot"
    static let askError = "ASK 12182 127.0.0.1:23364"
    static let tryAgainError = "TRYAGAIN Multiple keys request during rehashing of slot"
    static let clusterDownError = "CLUSTERDOWN The cluster is down"
    static let movedAfterFailoverError = "MOVED 5061 127.0.0.1:23364"
    static let readOnlyError = "READONLY You can't write against a read only replica."
}

/// A RESP2 reader for the fixtures, independent of the client's own codec: the fixtures
/// stay readable whatever the client's reply decoding becomes.
struct RESP2TestParser {
    struct Malformed: Error {
        var offset: Int
    }

    let bytes: [UInt8]
    private(set) var offset = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    var atEnd: Bool { offset == bytes.count }

    mutating func next() throws -> RESPReply {
        let line = try readLine()
        guard let type = line.first else { throw Malformed(offset: offset) }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch type {
        case UInt8(ascii: "+"): return .simpleString(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"):
            guard let value = Int64(rest) else { throw Malformed(offset: offset) }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let count = Int(rest) else { throw Malformed(offset: offset) }
            if count < 0 { return .null }
            guard offset + count + 2 <= bytes.count, bytes[offset + count] == 13, bytes[offset + count + 1] == 10 else {
                throw Malformed(offset: offset)
            }
            let value = Array(bytes[offset..<(offset + count)])
            offset += count + 2
            return .bulkString(value)
        case UInt8(ascii: "*"):
            guard let count = Int(rest) else { throw Malformed(offset: offset) }
            if count < 0 { return .null }
            var elements: [RESPReply] = []
            for _ in 0..<count { elements.append(try next()) }
            return .array(elements)
        default:
            throw Malformed(offset: offset)
        }
    }

    private mutating func readLine() throws -> ArraySlice<UInt8> {
        var end = offset
        while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
        guard end + 1 < bytes.count else { throw Malformed(offset: offset) }
        let line = bytes[offset..<end]
        offset = end + 2
        return line
    }
}

/// The fixtures decode: a broken fixture would make every test that uses it fail in
/// confusing ways.
@Suite struct ClusterFixturesTests {
    @Test(arguments: [
        ("shardsFresh", ClusterFixtures.shardsFresh, 3),
        ("slotsFresh", ClusterFixtures.slotsFresh, 3),
        ("slotsFreshOverTLS", ClusterFixtures.slotsFreshOverTLS, 3),
        ("shardsSteady", ClusterFixtures.shardsSteady, 3),
        ("slotsSteady", ClusterFixtures.slotsSteady, 3),
        ("shardsAfterFailover", ClusterFixtures.shardsAfterFailover, 4),
        ("slotsAfterFailover", ClusterFixtures.slotsAfterFailover, 3),
    ])
    func fixturesDecodeToArraysOfTheCapturedLength(name: String, reply: RESPReply, count: Int) {
        #expect(reply.array?.count == count, "\(name): \(reply)")
    }

    @Test func theTestParserReadsEveryReplyTypeAndRefusesTruncatedInput() throws {
        var parser = RESP2TestParser(bytes: Array("*5\r\n+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n".utf8))
        #expect(try parser.next() == .array([.simpleString("OK"), .error("ERR no"), .integer(-7), .bulkString(Array("a\r\n".utf8)), .null]))
        #expect(parser.atEnd)
        var truncated = RESP2TestParser(bytes: Array("*2\r\n:1\r\n".utf8))
        #expect(throws: RESP2TestParser.Malformed.self) { try truncated.next() }
    }
}
