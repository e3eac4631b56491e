import CacheAsideTLS
import Testing

@Suite struct DigestTests {
    @Test func sha1MatchesKnownVectors() {
        #expect(Digest.hex(Digest.sha1("".utf8)) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(Digest.hex(Digest.sha1("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(Digest.hex(Digest.sha1([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        // Lengths around the 55/56/64-byte padding boundaries.
        #expect(Digest.hex(Digest.sha1([UInt8](repeating: 0x61, count: 55))) == "c1c8bbdc22796e28c0e15163d20899b65621d65a")
        #expect(Digest.hex(Digest.sha1([UInt8](repeating: 0x61, count: 64))) == "0098ba824b5c16427bd7a1122a5a442a25ec644d")
    }

    @Test func sha256MatchesKnownVectors() {
        #expect(Digest.hex(Digest.sha256("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Digest.hex(Digest.sha256("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digest.hex(Digest.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(Digest.hex(Digest.sha256([UInt8](repeating: 0x61, count: 1000))) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    /// RFC 4231, test cases 1 and 2.
    @Test func hmacSHA256MatchesRFC4231() {
        #expect(Digest.hex(Digest.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), "Hi There".utf8))
            == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(Digest.hex(Digest.hmacSHA256(key: "Jefe".utf8, "what do ya want for nothing?".utf8))
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
