import Foundation

/// Turns cached values into bytes and back. The entry around them (schema version,
/// "absent" mark, leases, tombstones) is the cache's own, in ``EntryFormat``.
///
/// The default, ``JSONValueCodec``, writes JSON. A custom codec must read back what it
/// wrote, and should throw (not crash) on bytes it did not write: such an entry is
/// treated as a miss and replaced.
public protocol CacheValueCodec: Sendable {
    /// Encodes a value.
    func encode<Value: Encodable>(_ value: Value) throws -> [UInt8]
    /// Decodes a value from `bytes[range]`.
    func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8], in range: Range<Int>) throws -> Value
}

/// JSON values: written by Foundation's `JSONEncoder`; read by the cache's own decoder
/// (``init()``, a few hundred nanoseconds for a small struct, where `JSONDecoder` takes
/// microseconds), or by a `JSONDecoder` you configure (``init(encoder:decoder:)``).
public struct JSONValueCodec: CacheValueCodec, @unchecked Sendable {
    // JSONEncoder and JSONDecoder are safe to share once configured; they are never
    // mutated after init.
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder?

    /// JSON with `JSONEncoder`'s default strategies, read by the cache's own decoder.
    public init() {
        self.encoder = JSONEncoder()
        self.decoder = nil
    }

    /// JSON with the strategies (dates, keys, data) of `encoder` and `decoder`, which
    /// must agree with each other. Reading then costs what `JSONDecoder` costs.
    public init(encoder: JSONEncoder, decoder: JSONDecoder) {
        self.encoder = encoder
        self.decoder = decoder
    }

    public func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
        do {
            return Array(try encoder.encode(value))
        } catch {
            throw CacheError(kind: .encoding, message: "cannot encode \(Value.self) as JSON: \(describe(error))")
        }
    }

    public func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8], in range: Range<Int>) throws -> Value {
        do {
            if let decoder { return try decoder.decode(Value.self, from: Data(bytes[range])) }
            return try JSONValueDecoder().decode(Value.self, from: bytes, in: range)
        } catch {
            throw CacheError(kind: .decoding, message: "entry is not a \(Value.self): \(describe(error))")
        }
    }
}

/// What went wrong in coding, without the values involved (a row's values never go
/// into an error or a log): the kind of error and where, by coding path.
func describe(_ error: any Error) -> String {
    func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    switch error {
    case let error as DecodingError:
        switch error {
        case .typeMismatch(let type, let context): return "expected \(type) at \(path(context.codingPath))"
        case .valueNotFound(let type, let context): return "no \(type) at \(path(context.codingPath))"
        case .keyNotFound(let key, let context): return "no key '\(key.stringValue)' at \(path(context.codingPath))"
        case .dataCorrupted(let context): return "malformed JSON at \(path(context.codingPath))"
        @unknown default: return "decoding failed"
        }
    case let error as EncodingError:
        switch error {
        case .invalidValue(_, let context): return "a value JSON cannot hold at \(path(context.codingPath))"
        @unknown default: return "encoding failed"
        }
    default:
        return "\(type(of: error))"
    }
}

/// What one Redis key holds, in the cache's format. One key per cached row holds, in
/// turn:
/// - nothing (never cached, expired, evicted, flushed);
/// - a lease, `{"s":2,"lease":"<token>"}`, while the reader that holds it loads the row
///   (`{"s":2,"lease":"<token>","w":1}` once another process waits for its fill);
/// - an entry, `{"s":2,"sv":<schema version>,"v":<value>}`, or
///   `{"s":2,"sv":<schema version>,"absent":true}` for a row that does not exist;
/// - a tombstone, `{"s":2,"tomb":"<token>"}`, left by a write.
///
/// Tokens are random and never reused, so a lease or tombstone that is still there is
/// proof that nothing happened to the key since it was seen. `s` is the format's
/// version. The schema version lives in the entry, not in the key: every version of a
/// row shares its key, so a write replaces what any version wrote.
@usableFromInline
package enum EntryFormat {
    /// What a key holds.
    @usableFromInline
    enum Contents: Equatable, Sendable {
        case nothing
        /// A value of this schema version; the value's bytes are `bytes[body]`.
        case value(schemaVersion: Int, body: Range<Int>)
        /// "No such row", for this schema version.
        case absent(schemaVersion: Int)
        case lease(Lease)
        case tombstone
        /// Bytes in no known shape.
        case garbage
    }

    /// A lease as stored: its token, and whether a waiter in another process marked it.
    @usableFromInline
    package struct Lease: Equatable, Hashable, Sendable {
        package let token: [UInt8]
        package var waited: Bool = false

        package init(token: [UInt8], waited: Bool = false) {
            self.token = token
            self.waited = waited
        }

        /// The bytes of this lease.
        package var bytes: [UInt8] { EntryFormat.leaseBytes(token, waited: waited) }
        /// The bytes of this lease once a waiter marked it.
        package var waitedBytes: [UInt8] { EntryFormat.leaseBytes(token, waited: true) }
        /// The bytes of this lease before a waiter marked it.
        package var plainBytes: [UInt8] { EntryFormat.leaseBytes(token, waited: false) }
    }

    private static let valuePrefix: [UInt8] = Array(#"{"s":2,"sv":"#.utf8)
    private static let valueMark: [UInt8] = Array(#","v":"#.utf8)
    private static let absentMark: [UInt8] = Array(#","absent":true}"#.utf8)
    private static let leasePrefix: [UInt8] = Array(#"{"s":2,"lease":""#.utf8)
    private static let tombstonePrefix: [UInt8] = Array(#"{"s":2,"tomb":""#.utf8)
    private static let plainEnd: [UInt8] = Array(#""}"#.utf8)
    private static let waitedEnd: [UInt8] = Array(#"","w":1}"#.utf8)

    /// Reads what a key holds. Cheap: fixed bytes are compared, the value is not parsed.
    static func classify(_ bytes: [UInt8]?) -> Contents {
        guard let bytes else { return .nothing }
        if hasPrefix(bytes, valuePrefix) {
            var i = valuePrefix.count
            var version = 0
            let digitsStart = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, i - digitsStart < 9 {
                version = version * 10 + Int(bytes[i] - 0x30)
                i += 1
            }
            guard i > digitsStart else { return .garbage }
            if matches(bytes, at: i, valueMark), bytes.count > i + valueMark.count + 1, bytes[bytes.count - 1] == UInt8(ascii: "}") {
                return .value(schemaVersion: version, body: (i + valueMark.count)..<(bytes.count - 1))
            }
            if bytes.count == i + absentMark.count, matches(bytes, at: i, absentMark) {
                return .absent(schemaVersion: version)
            }
            return .garbage
        }
        if hasPrefix(bytes, leasePrefix) {
            if let token = token(bytes, after: leasePrefix.count, end: plainEnd) { return .lease(Lease(token: token)) }
            if let token = token(bytes, after: leasePrefix.count, end: waitedEnd) {
                return .lease(Lease(token: token, waited: true))
            }
            return .garbage
        }
        if hasPrefix(bytes, tombstonePrefix), token(bytes, after: tombstonePrefix.count, end: plainEnd) != nil {
            return .tombstone
        }
        return .garbage
    }

    /// The answer an entry of `schemaVersion` gives: the value, `.some(nil)` for "no
    /// such row", or nil when the key holds no entry of that version (nothing, a lease,
    /// a tombstone, another version's entry). Throws when the value does not decode.
    @inlinable
    static func answer<Value: Decodable>(
        _ type: Value.Type, _ bytes: [UInt8]?, _ contents: Contents, schemaVersion: Int, codec: any CacheValueCodec
    ) throws -> Value?? {
        switch contents {
        case .value(let version, let body) where version == schemaVersion:
            guard let bytes else { return nil }
            return .some(try codec.decode(Value.self, from: bytes, in: body))
        case .absent(let version) where version == schemaVersion:
            return .some(nil)
        default:
            return nil
        }
    }

    /// What a hit does with the bytes `GET` returned: ``classify(_:)`` and
    /// ``answer(_:_:_:schemaVersion:codec:)``.
    package static func decode<Value: Decodable>(
        _ type: Value.Type, from bytes: [UInt8]?, schemaVersion: Int, codec: any CacheValueCodec
    ) throws -> Value?? {
        try answer(type, bytes, classify(bytes), schemaVersion: schemaVersion, codec: codec)
    }

    /// The entry a fill writes: the value encoded by `codec`, or "absent" for nil.
    package static func encode<Value: Encodable>(_ value: Value?, schemaVersion: Int, codec: any CacheValueCodec) throws -> [UInt8] {
        guard let value else { return absent(schemaVersion: schemaVersion) }
        return self.value(try codec.encode(value), schemaVersion: schemaVersion)
    }

    /// An entry holding a value's encoded bytes.
    static func value(_ body: [UInt8], schemaVersion: Int) -> [UInt8] {
        var out = valuePrefix
        out.reserveCapacity(valuePrefix.count + 12 + valueMark.count + body.count)
        out.append(contentsOf: String(schemaVersion).utf8)
        out.append(contentsOf: valueMark)
        out.append(contentsOf: body)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// An entry saying the row does not exist.
    static func absent(schemaVersion: Int) -> [UInt8] {
        valuePrefix + Array(String(schemaVersion).utf8) + absentMark
    }

    static func leaseBytes(_ token: [UInt8], waited: Bool) -> [UInt8] {
        leasePrefix + token + (waited ? waitedEnd : plainEnd)
    }

    /// A new tombstone, unique to one invalidation attempt.
    static func tombstone() -> [UInt8] { tombstonePrefix + Token.random() + plainEnd }

    private static func hasPrefix(_ bytes: [UInt8], _ prefix: [UInt8]) -> Bool {
        bytes.count >= prefix.count && matches(bytes, at: 0, prefix)
    }

    @inline(__always)
    private static func matches(_ bytes: [UInt8], at offset: Int, _ part: [UInt8]) -> Bool {
        guard bytes.count >= offset + part.count else { return false }
        for k in 0..<part.count where bytes[offset + k] != part[k] { return false }
        return true
    }

    /// The token between `start` and a closing `end`, if the bytes end that way and
    /// the token is hex.
    private static func token(_ bytes: [UInt8], after start: Int, end: [UInt8]) -> [UInt8]? {
        guard bytes.count > start + end.count, matches(bytes, at: bytes.count - end.count, end) else { return nil }
        let token = Array(bytes[start..<(bytes.count - end.count)])
        guard token.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        return token
    }
}

/// Random tokens for leases and tombstones: hex, never reused.
enum Token {
    /// 128 random bits as 32 hex digits.
    static func random() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return hex(generator.next() as UInt64) + hex(generator.next() as UInt64)
    }

    /// A lease token: this runtime's 16-digit prefix, then 16 random digits. The prefix
    /// tells whether a lease found in Redis was taken by this runtime.
    static func lease(prefix: [UInt8]) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return prefix + hex(generator.next() as UInt64)
    }

    static func hex(_ value: UInt64) -> [UInt8] {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: 0, count: 16)
        var word = value
        for i in 0..<16 {
            out[15 - i] = digits[Int(word & 0xF)]
            word >>= 4
        }
        return out
    }
}
