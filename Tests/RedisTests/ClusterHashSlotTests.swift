@testable import CacheAsideRedis
import Testing

/// Hash slots: CRC16/XMODEM and Redis's hash tag rules, no server needed.
@Suite struct ClusterHashSlotTests {
    private func crc16(_ text: String) -> UInt16 {
        Array(text.utf8).withUnsafeBytes { HashSlot.crc16($0) }
    }

    @Test func crc16IsTheXmodemVariant() {
        // The check value of CRC-16/XMODEM, and vectors computed bit by bit.
        #expect(crc16("123456789") == 0x31C3)
        #expect(crc16("") == 0)
        #expect(crc16("A") == 0x58E5)
        #expect([UInt8](repeating: 0, count: 4).withUnsafeBytes { HashSlot.crc16($0) } == 0)
        #expect([UInt8(0xFF)].withUnsafeBytes { HashSlot.crc16($0) } == 0x1EF0)
    }

    @Test func theTableMatchesTheBitwiseAlgorithm() {
        func bitwise(_ bytes: [UInt8]) -> UInt16 {
            var crc: UInt16 = 0
            for byte in bytes {
                crc ^= UInt16(byte) << 8
                for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
            }
            return crc
        }
        var state: UInt32 = 7
        func nextByte() -> UInt8 {
            state = state &* 1_664_525 &+ 1_013_904_223  // an LCG: any bytes will do
            return UInt8(truncatingIfNeeded: state >> 24)
        }
        for length in [0, 1, 2, 3, 7, 16, 100, 257] {
            let bytes = (0..<length).map { _ in nextByte() }
            #expect(bytes.withUnsafeBytes { HashSlot.crc16($0) } == bitwise(bytes), "\(bytes)")
        }
        #expect(HashSlot.crc16Table.count == 256)
        #expect(HashSlot.crc16Table[1] == 0x1021)
        #expect(HashSlot.crc16Table[255] == 0x1EF0)
    }

    @Test func slotsAgreeWithClusterKeyslotOfARealServer() {
        // Captured from CLUSTER KEYSLOT (see ClusterFixtures), hash tag edge cases included.
        for (key, slot) in ClusterFixtures.keySlots {
            #expect(HashSlot(key: key).rawValue == UInt16(slot), "\(String(decoding: key, as: UTF8.self))")
        }
        #expect(ClusterFixtures.keySlots.count >= 25)
    }

    @Test(arguments: [
        // (key, the part that is hashed)
        ("foo", "foo"),
        ("{user1000}.following", "user1000"),
        ("{user1000}.followers", "user1000"),
        ("foo{}{bar}", "foo{}{bar}"),      // empty tag: the whole key
        ("foo{{bar}}zap", "{bar"),         // from the first { to the first } after it
        ("foo{bar}{zap}", "bar"),          // only the first tag counts
        ("{}", "{}"),
        ("{", "{"),
        ("}", "}"),
        ("}{", "}{"),                      // no } after the first {
        ("a{b", "a{b"),
        ("{a}", "a"),
        ("a}b{c}", "c"),                   // a } before the first { does not count
        ("{{}}", "{"),
        ("{}{a}", "{}{a}"),                // the first { has an empty tag: whole key
        ("", ""),
    ])
    func hashTagsFollowRedisRules(key: String, hashed: String) {
        let range = Array(key.utf8).withUnsafeBytes { HashSlot.hashedRange(of: $0) }
        #expect(String(decoding: Array(key.utf8)[range], as: UTF8.self) == hashed)
        #expect(HashSlot(key: key) == HashSlot(key: hashed))
    }

    @Test func keysSharingATagShareASlotAndOthersSpread() {
        let tagged = (0..<100).map { HashSlot(key: "{order:42}:line:\($0)") }
        #expect(Set(tagged).count == 1)
        #expect(tagged[0] == HashSlot(key: "order:42"))
        // Untagged keys spread over many slots (a broken hash would not).
        let spread = Set((0..<1000).map { HashSlot(key: "user:\($0)") })
        #expect(spread.count > 900)
    }

    @Test func stringsBytesAndNonContiguousCollectionsGiveTheSameSlot() {
        let key = "caf\u{E9}:{\u{1F600}}:x"
        let bytes = Array(key.utf8)
        #expect(HashSlot(key: key) == HashSlot(key: bytes))
        #expect(HashSlot(key: key) == HashSlot(key: key.utf8))
        #expect(HashSlot(key: key) == HashSlot(key: bytes[...]))
        #expect(HashSlot(key: key) == HashSlot(key: "\u{1F600}"))
        // A non-contiguous collection (a reversed view, reversed back) takes the copying path.
        #expect(HashSlot(key: bytes.reversed().reversed()) == HashSlot(key: key))
        // A bridged-looking string that is not native UTF-8 still hashes its UTF-8.
        let substring = "xx\(key)yy".dropFirst(2).dropLast(2)
        #expect(HashSlot(key: String(substring)) == HashSlot(key: key))
    }

    @Test func slotNumbersAreBoundedAndOrdered() throws {
        #expect(HashSlot(0)?.rawValue == 0)
        #expect(HashSlot(16383)?.rawValue == 16383)
        #expect(HashSlot(16384) == nil)
        #expect(HashSlot(-1) == nil)
        #expect(try #require(HashSlot(3)) < #require(HashSlot(4)))
        #expect(HashSlot(12182)?.description == "12182")
        #expect(HashSlot.count == 16384)
        // Every slot a key can land in is in range.
        for i in 0..<2000 { #expect(HashSlot(key: "k\(i)").rawValue < 16384) }
    }
}
