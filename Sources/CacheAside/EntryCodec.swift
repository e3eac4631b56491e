import Foundation

/// What a cache entry holds: a row, or the fact that there is none.
public enum CacheEntry<Value>: Sendable where Value: Sendable {
    /// The row as it was loaded.
    case present(Value)
    /// No row has this id (a negative-cache entry).
    case absent
}

/// Turns entries into the bytes stored in Redis and back.
///
/// The default, ``JSONEntryCodec``, writes JSON. A custom codec must write something
/// that its own `decode` reads back, and should throw (not crash) on bytes it did not
/// write: such an entry is treated as a miss, deleted, and logged.
public protocol CacheEntryCodec: Sendable {
    /// Encodes an entry.
    func encode<Value: Encodable & Sendable>(_ entry: CacheEntry<Value>) throws -> [UInt8]
    /// Decodes an entry.
    func decode<Value: Decodable & Sendable>(_ type: Value.Type, from bytes: [UInt8]) throws -> CacheEntry<Value>
}

/// JSON entries with a small envelope: `{"s":1,"v":VALUE}` for a row and
/// `{"s":1,"absent":true}` for a missing one (`s` is the envelope's format version).
///
/// Reading does not parse the envelope with a general decoder: it checks the envelope's
/// fixed bytes and hands the value's bytes to `JSONDecoder`, so the envelope costs
/// nothing on the hit path. Entries in any other shape (or garbage) fail to decode.
public struct JSONEntryCodec: CacheEntryCodec, @unchecked Sendable {
    // JSONEncoder and JSONDecoder are safe to share once configured; they are not
    // mutated after init.
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder

    private static let presentPrefix: [UInt8] = Array(#"{"s":1,"v":"#.utf8)
    private static let absentBytes: [UInt8] = Array(#"{"s":1,"absent":true}"#.utf8)

    /// Creates a codec. Configure date, key and data strategies on the encoder and
    /// decoder you pass; they must agree with each other.
    public init(encoder: JSONEncoder = JSONEncoder(), decoder: JSONDecoder = JSONDecoder()) {
        self.encoder = encoder
        self.decoder = decoder
    }

    public func encode<Value: Encodable & Sendable>(_ entry: CacheEntry<Value>) throws -> [UInt8] {
        switch entry {
        case .absent:
            return Self.absentBytes
        case .present(let value):
            let json: Data
            do {
                json = try encoder.encode(value)
            } catch {
                throw CacheError(kind: .encoding, message: "cannot encode \(Value.self) as JSON: \(error)")
            }
            var out = Self.presentPrefix
            out.reserveCapacity(out.count + json.count + 1)
            out.append(contentsOf: json)
            out.append(UInt8(ascii: "}"))
            return out
        }
    }

    public func decode<Value: Decodable & Sendable>(_ type: Value.Type, from bytes: [UInt8]) throws -> CacheEntry<Value> {
        let prefix = Self.presentPrefix
        if bytes.count > prefix.count, bytes.last == UInt8(ascii: "}"), bytes.starts(with: prefix) {
            do {
                // The value's bytes, without copying them.
                let value = try bytes.withUnsafeBytes { raw in
                    guard let base = raw.baseAddress else { throw CacheError(kind: .decoding, message: "empty entry") }
                    let inner = Data(
                        bytesNoCopy: UnsafeMutableRawPointer(mutating: base + prefix.count),
                        count: raw.count - prefix.count - 1, deallocator: .none)
                    return try decoder.decode(Value.self, from: inner)
                }
                return .present(value)
            } catch {
                throw CacheError(kind: .decoding, message: "entry is not a \(Value.self): \(error)")
            }
        }
        if bytes == Self.absentBytes { return .absent }
        throw CacheError(kind: .decoding, message: "entry is not in the cache's envelope format (\(bytes.count) bytes)")
    }
}
