#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The store's hash of a key's UTF-8 bytes: a multiply-and-fold hash in the style of
/// wyhash, keyed with a random seed per store, so that which keys collide differs from
/// store to store and from run to run.
///
/// Swift's own `String` hash (SipHash-1-3 through `Hasher`) costs about 330
/// instructions for a 25-byte key, a third of a whole hit; this one costs a few dozen.
/// Keys are hashed and compared by their UTF-8 bytes, as Redis compares keys: two
/// Unicode spellings of one string are two keys.
@usableFromInline
struct KeyHash: Sendable {
    @usableFromInline let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
    }

    @usableFromInline static let secret0: UInt64 = 0xA076_1D64_78BD_642F
    @usableFromInline static let secret1: UInt64 = 0xE703_7ED1_A0B4_28DB
    @usableFromInline static let secret2: UInt64 = 0x8EBC_6AF0_9C88_C6E3

    @inlinable
    static func fold(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (high, low) = a.multipliedFullWidth(by: b)
        return high ^ low
    }

    @inlinable
    func callAsFunction(_ key: String) -> UInt64 {
        withKeyBytes(key) { hash(bytes: $0.buffer) }
    }

    @inlinable
    func hash(bytes: UnsafeRawBufferPointer) -> UInt64 {
        let count = bytes.count
        var state = seed ^ KeyHash.fold(seed ^ KeyHash.secret0, UInt64(truncatingIfNeeded: count) ^ KeyHash.secret1)
        var a: UInt64 = 0
        var b: UInt64 = 0
        if count <= 16 {
            if count >= 8 {
                a = bytes.loadUnaligned(as: UInt64.self)
                b = bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
            } else if count >= 4 {
                a = UInt64(bytes.loadUnaligned(as: UInt32.self))
                b = UInt64(bytes.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self))
            } else if count > 0 {
                a = UInt64(bytes[0]) << 16 | UInt64(bytes[count >> 1]) << 8 | UInt64(bytes[count - 1])
            }
        } else {
            var offset = 0
            while count - offset > 16 {
                state = KeyHash.fold(
                    bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) ^ KeyHash.secret1,
                    bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self) ^ state)
                offset += 16
            }
            a = bytes.loadUnaligned(fromByteOffset: count - 16, as: UInt64.self)
            b = bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        }
        return KeyHash.fold(KeyHash.secret2 ^ UInt64(truncatingIfNeeded: count), KeyHash.fold(a ^ KeyHash.secret1, b ^ state))
    }
}

/// Whether two byte strings are equal.
@inline(__always)
func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    guard let x = a.baseAddress, let y = b.baseAddress else { return true }
    return memcmp(x, y, a.count) == 0
}

/// A key's UTF-8 bytes, borrowed for the duration of one call (see ``withKeyBytes(_:_:)``).
/// Sendable so that it may enter a shard's lock without tying the shard to the caller.
@usableFromInline
struct KeyBytes: @unchecked Sendable {
    @usableFromInline let buffer: UnsafeRawBufferPointer

    @usableFromInline
    init(_ buffer: UnsafeRawBufferPointer) {
        self.buffer = buffer
    }
}

/// Calls `body` with the UTF-8 bytes of `key` (no copy for a native string).
@inlinable
func withKeyBytes<Result>(_ key: String, _ body: (KeyBytes) throws -> Result) rethrows -> Result {
    let count = key.utf8.count
    return try key.withCString { try body(KeyBytes(UnsafeRawBufferPointer(start: $0, count: count))) }
}

/// A key as a slot keeps it: up to ``inlineCapacity`` UTF-8 bytes inside the slot
/// itself (no allocation, nothing to retain when comparing), longer keys in an array.
struct StoredKey {
    static let inlineCapacity = 48

    private var inline: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
    private var overflow: ContiguousArray<UInt8> = []
    private(set) var count: Int32 = 0

    init() {}

    init(_ key: KeyBytes) {
        count = Int32(truncatingIfNeeded: key.buffer.count)
        if key.buffer.count <= StoredKey.inlineCapacity {
            withUnsafeMutableBytes(of: &inline) { $0.copyMemory(from: key.buffer) }
        } else {
            overflow = ContiguousArray(key.buffer)
        }
    }

    /// The heap bytes a stored key of `count` bytes holds: none inline, else an
    /// array's 32-byte header and the bytes in a malloc chunk (8 bytes of bookkeeping,
    /// rounded up to 16).
    static func heapBytes(count: Int) -> Int {
        count <= inlineCapacity ? 0 : (32 + count + 8 + 15) & ~15
    }

    @inline(__always)
    func equals(_ key: KeyBytes) -> Bool {
        guard Int(count) == key.buffer.count else { return false }
        if key.buffer.count <= StoredKey.inlineCapacity {
            return withUnsafeBytes(of: inline) { sameBytes(UnsafeRawBufferPointer(rebasing: $0.prefix(key.buffer.count)), key.buffer) }
        }
        return overflow.withUnsafeBytes { sameBytes($0, key.buffer) }
    }
}
