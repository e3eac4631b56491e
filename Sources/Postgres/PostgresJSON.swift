import Foundation

/// A `Codable` value stored as `jsonb`: bind `PostgresJSON(preferences)` as a parameter,
/// and decode a `json` or `jsonb` column with `row.decode(PostgresJSON<Preferences>.self,
/// column: "preferences").value`.
///
/// A `Decodable` struct decoded with ``PostgresRow/decode(_:columnNaming:)`` may also
/// simply have a `Decodable` property for a `json`/`jsonb` column.
public struct PostgresJSON<Value: Codable & Sendable>: PostgresEncodable, PostgresDecodable, Sendable {
    /// The wrapped value.
    public var value: Value

    /// Wraps a value.
    public init(_ value: Value) { self.value = value }

    public static var postgresDataType: PostgresDataType { .jsonb }

    public func encode(into buffer: inout [UInt8]) throws {
        buffer.append(1)  // jsonb binary format version
        do {
            buffer.append(contentsOf: try JSONEncoder().encode(value))
        } catch {
            throw PostgresError(.encoding, "cannot encode \(Value.self) as JSON: \(error)", underlying: error)
        }
    }

    public static func decode(from value: PostgresValue) throws -> PostgresJSON<Value> {
        PostgresJSON(try decodeJSON(Value.self, from: value))
    }
}

extension PostgresJSON: Equatable where Value: Equatable {}

func decodeJSON<T: Decodable>(_ type: T.Type, from value: PostgresValue) throws -> T {
    let bytes = try value.requireBytes(for: T.self)
    let body: UnsafeRawBufferPointer
    switch value.dataType {
    case .jsonb where value.format == .binary:
        guard bytes.count >= 1, bytes[0] == 1 else { throw PostgresDecodingFailure("unsupported jsonb format version") }
        body = UnsafeRawBufferPointer(rebasing: bytes[1...])
    case .json, .jsonb, .text, .varchar:
        body = bytes
    default:
        throw value.mismatch(T.self)
    }
    do {
        return try JSONDecoder().decode(T.self, from: Data(body))
    } catch {
        throw PostgresDecodingFailure("invalid JSON for \(T.self): \(error)")
    }
}
