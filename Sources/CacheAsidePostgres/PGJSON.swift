import Foundation

/// A `Codable` value stored as `jsonb`: bind `PGJSON(preferences)` as a parameter,
/// and decode a `json` or `jsonb` column with `row.decode(PGJSON<Preferences>.self,
/// column: "preferences").value`.
///
/// A `Decodable` struct decoded with ``PGRow/decode(_:columnNaming:)`` may also
/// simply have a `Decodable` property for a `json`/`jsonb` column.
public struct PGJSON<Value: Codable & Sendable>: PGEncodable, PGDecodable, Sendable {
    /// The wrapped value.
    public var value: Value

    /// Wraps a value.
    public init(_ value: Value) { self.value = value }

    public static var postgresDataType: PGDataType { .jsonb }

    public func encode(into buffer: inout [UInt8]) throws {
        buffer.append(1)  // jsonb binary format version
        do {
            buffer.append(contentsOf: try JSONEncoder().encode(value))
        } catch {
            throw PGError(.encoding, "cannot encode \(Value.self) as JSON: \(error)", underlying: error)
        }
    }

    public static func decode(from value: PGValue) throws -> PGJSON<Value> {
        PGJSON(try decodeJSON(Value.self, from: value))
    }
}

extension PGJSON: Equatable where Value: Equatable {}

func decodeJSON<T: Decodable>(_ type: T.Type, from value: PGValue) throws -> T {
    let bytes = try value.requireBytes(for: T.self)
    let body: UnsafeRawBufferPointer
    switch value.dataType {
    case .jsonb where value.format == .binary:
        guard bytes.count >= 1, bytes[0] == 1 else { throw PGDecodingFailure("unsupported jsonb format version") }
        body = UnsafeRawBufferPointer(rebasing: bytes[1...])
    case .json, .jsonb, .text, .varchar:
        body = bytes
    default:
        throw value.mismatch(T.self)
    }
    do {
        return try JSONDecoder().decode(T.self, from: Data(body))
    } catch {
        throw PGDecodingFailure("invalid JSON for \(T.self): \(error)")
    }
}
