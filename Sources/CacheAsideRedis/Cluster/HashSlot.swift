/// One of Redis Cluster's 16384 hash slots: the unit that a cluster assigns to its
/// shards, and that every key belongs to.
///
/// A key's slot is CRC16 of the key (the XMODEM variant, as Redis computes it) modulo
/// 16384. When the key holds a *hash tag*, only the tag is hashed, so that related keys
/// land in one slot and can be used together in one multi-key command:
///
/// - the tag is what lies between the key's first `{` and the first `}` after it;
/// - if the key has no `{`, no `}` after its first `{`, or nothing between them
///   (`{}`), the whole key is hashed.
///
/// So `{user1000}.following` and `{user1000}.followers` share a slot, `foo{}{bar}`
/// hashes whole, and `foo{{bar}}zap` hashes `{bar`.
///
/// ```swift
/// HashSlot(key: "foo")                   // 12182
/// HashSlot(key: "{user1000}.following")  // 3443, as {user1000}.followers
/// ```
public struct HashSlot: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// How many slots a cluster has: 16384.
    public static let count = 16384

    /// The slot's number, `0..<16384`.
    public let rawValue: UInt16

    /// The slot numbered `value`, or `nil` outside `0..<16384`.
    public init?(_ value: Int) {
        guard value >= 0, value < HashSlot.count else { return nil }
        rawValue = UInt16(value)
    }

    /// A slot number known to be below 16384.
    init(rawValue: UInt16) {
        self.rawValue = rawValue & UInt16(HashSlot.count - 1)
    }

    /// The slot of a key given as bytes (Redis keys are binary-safe).
    public init<Key: Collection>(key: Key) where Key.Element == UInt8 {
        if let slot = key.withContiguousStorageIfAvailable({ HashSlot(bytes: UnsafeRawBufferPointer($0)) }) {
            self = slot
        } else {
            self = Array(key).withUnsafeBytes { HashSlot(bytes: $0) }
        }
    }

    /// The slot of a key given as a string (hashed as its UTF-8).
    public init(key: String) {
        var key = key
        self = key.withUTF8 { HashSlot(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// The slot of the key in `bytes`.
    init(bytes: UnsafeRawBufferPointer) {
        let hashed = HashSlot.hashedRange(of: bytes)
        let crc = HashSlot.crc16(UnsafeRawBufferPointer(rebasing: bytes[hashed]))
        rawValue = crc & UInt16(HashSlot.count - 1)
    }

    /// The part of `key` that decides its slot: the hash tag, or the whole key.
    static func hashedRange(of key: UnsafeRawBufferPointer) -> Range<Int> {
        let count = key.count
        var open = 0
        while open < count, key[open] != UInt8(ascii: "{") { open += 1 }
        guard open < count else { return 0..<count }
        var close = open + 1
        while close < count, key[close] != UInt8(ascii: "}") { close += 1 }
        guard close < count, close > open + 1 else { return 0..<count }
        return (open + 1)..<close
    }

    /// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection, no final XOR),
    /// the checksum Redis Cluster uses: `crc16("123456789") == 0x31C3`.
    static func crc16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        crc16Table.withUnsafeBufferPointer { table in
            var crc: UInt16 = 0
            for byte in bytes {
                // The index is a byte: always within the 256 entries.
                crc = (crc &<< 8) ^ table[unchecked: Int(UInt8(truncatingIfNeeded: crc &>> 8) ^ byte)]
            }
            return crc
        }
    }

    /// The CRC16/XMODEM of each byte value: the table-driven form of the bitwise
    /// algorithm, computed once.
    static let crc16Table: [UInt16] = (0..<256).map { (byte: Int) -> UInt16 in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }

    /// Slots order by number.
    public static func < (lhs: HashSlot, rhs: HashSlot) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The slot's number.
    public var description: String { String(rawValue) }
}

extension UnsafeBufferPointer {
    /// The element at `index`, which the caller knows to be within bounds.
    fileprivate subscript(unchecked index: Int) -> Element {
        (baseAddress.unsafelyUnwrapped + index).pointee
    }
}
