@testable import CacheAsideRedis
import Testing

/// RESP2 encoding of a reply, for sizes and for feeding decoders: what a server sends.
enum RESP2TestEncoder {
    static func encode(_ reply: RESPReply) -> [UInt8] {
        var out: [UInt8] = []
        append(reply, to: &out)
        return out
    }

    static func append(_ reply: RESPReply, to out: inout [UInt8]) {
        func line(_ prefix: Character, _ text: String) {
            out += Array("\(prefix)\(text)\r\n".utf8)
        }
        if let elements = reply.array {
            line("*", String(elements.count))
            for element in elements { append(element, to: &out) }
        } else if case .bulkString(let bytes) = reply {
            line("$", String(bytes.count))
            out += bytes + [13, 10]
        } else if case .integer(let value) = reply {
            line(":", String(value))
        } else if case .simpleString(let text) = reply {
            line("+", text)
        } else if let message = reply.errorMessage {
            line("-", message)
        } else {
            line("$", "-1")
        }
    }
}

/// A cluster of a hundred shards, as the README's sizing assumes: the reply's size, and
/// that the parsers and the map handle it. (Its parse cost is measured with callgrind
/// on a release build; see the README.)
@Suite struct ClusterScaleTests {
    @Test func aHundredShardClusterShardsReplyParsesIntoAFullMap() throws {
        let reply = SyntheticCluster.shardsReply(shards: 100, replicas: 1)
        let bytes = RESP2TestEncoder.encode(reply)
        // Our encoding is what the server sends: the test decoder reads it back as is.
        var decoder = RESP2TestParser(bytes: bytes)
        #expect(try decoder.next() == reply)
        #expect(decoder.atEnd)
        // 52,158 bytes, about 260 per node, as the real replies: 1519 bytes for the 6
        // nodes of dev-services' cluster, 23,117 for a 100-node cluster without TLS ports
        // (the synthetic nodes carry tls-port and 9-digit offsets).
        #expect(bytes.count > 200 * 240 && bytes.count < 200 * 280, "\(bytes.count) bytes")
        let real = RESP2TestEncoder.encode(ClusterFixtures.shardsSteady)
        #expect(real.count == 1519)

        let topology = try ClusterTopology(clusterShardsReply: reply)
        #expect(topology.shards.count == 100)
        #expect(topology.shards.allSatisfy { $0.nodes.count == 2 && $0.slotCount >= 163 && $0.slotCount <= 164 })
        let map = try ClusterSlotMap(topology: topology, tls: true, answeredBy: "10.0.0.1")
        #expect(map.coversAllSlots)
        #expect(map.primaries.count == 100 && map.nodes.count == 200)
        for s in [0, 1, 42, 99] {
            let range = SyntheticCluster.slotRange(shard: s, of: 100)
            let expected = ClusterNodeAddress(host: SyntheticCluster.ip(shard: s, node: 0), port: 6380)
            for slot in [range.lowerBound, range.upperBound] {
                #expect(map.primary(for: try #require(HashSlot(slot))) == expected)
            }
        }
    }
}
