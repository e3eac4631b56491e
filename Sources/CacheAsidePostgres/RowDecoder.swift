import Foundation

/// The `Decoder` behind ``PGRow/decode(_:columnNaming:)``: a keyed container over
/// the row's columns.
struct RowDecoder: Decoder {
    let row: PGRow
    let naming: PGColumnNaming
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(RowContainer<Key>(row: row, naming: naming))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw PGError(.decoding, "a row decodes into a keyed type (a struct or class), not an array")
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        guard row.result.columnCount == 1 else {
            throw PGError(.decoding, "a row with \(row.result.columnCount) columns cannot decode into a single value")
        }
        return ColumnDecoder(row: row, column: 0, codingPath: [])
    }
}

func snakeCased(_ key: String) -> String {
    var out = ""
    for (i, c) in key.enumerated() {
        if c.isUppercase {
            if i > 0 { out.append("_") }
            out += c.lowercased()
        } else {
            out.append(c)
        }
    }
    return out
}

struct RowContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let row: PGRow
    let naming: PGColumnNaming
    var codingPath: [any CodingKey] { [] }

    var allKeys: [Key] {
        row.result.columnNames.compactMap { Key(stringValue: $0) }
    }

    func columnName(_ key: Key) -> String {
        naming == .snakeCase ? snakeCased(key.stringValue) : key.stringValue
    }

    func column(_ key: Key) throws -> Int {
        let name = columnName(key)
        guard let i = row.result.index(ofColumn: name) else {
            throw PGError(.decoding, "no column named \"\(name)\" in the result (columns: \(row.result.columnNames.joined(separator: ", ")))", column: name)
        }
        return i
    }

    /// Always true: a key without a column must fail (naming the column) rather than
    /// decode as `nil` through `decodeIfPresent`'s default implementations.
    func contains(_ key: Key) -> Bool { true }

    func decodeNil(forKey key: Key) throws -> Bool {
        row.result.value(row: row.index, column: try column(key)).isNull
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decodeColumn(type, at: try column(key))
    }

    // The types a synthesized `init(from:)` asks for by name: decoded directly, with no
    // dynamic cast on the way.
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decodeDirect(String.self, at: try column(key)) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decodeDirect(Int64.self, at: try column(key)) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decodeDirect(Int.self, at: try column(key)) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decodeDirect(Int32.self, at: try column(key)) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decodeDirect(Int16.self, at: try column(key)) }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decodeDirect(Bool.self, at: try column(key)) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decodeDirect(Double.self, at: try column(key)) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decodeDirect(Float.self, at: try column(key)) }

    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try decodeDirect(String?.self, at: try column(key)) }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try decodeDirect(Int64?.self, at: try column(key)) }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try decodeDirect(Int?.self, at: try column(key)) }
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try decodeDirect(Bool?.self, at: try column(key)) }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try decodeDirect(Double?.self, at: try column(key)) }

    /// Decodes a column of a ``PGDecodable`` type known at compile time.
    func decodeDirect<T: PGDecodable>(_ type: T.Type, at i: Int) throws -> T {
        do {
            return try T.decode(from: row.result.value(row: row.index, column: i))
        } catch {
            throw columnError(error, column: i)
        }
    }

    func columnError(_ error: any Error, column i: Int) -> PGError {
        let name = row.result.columnName(i)
        switch error {
        case var e as PGError:
            if e.column == nil { e.column = name }
            return e
        case let e as PGDecodingFailure:
            return PGError(.decoding, e.reason, column: name, underlying: e)
        default:
            return PGError(.decoding, "\(error)", column: name, underlying: error)
        }
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        let i = try column(key)
        if row.result.value(row: row.index, column: i).isNull { return nil }
        return try decodeColumn(type, at: i)
    }

    func decodeColumn<T: Decodable>(_ type: T.Type, at i: Int) throws -> T {
        try decodeValue(type, row: row, column: i, codingPath: [])
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        throw PGError(.decoding, "nested containers are not supported; decode the column as a Decodable (json/jsonb) value", column: columnName(key))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        throw PGError(.decoding, "nested containers are not supported", column: columnName(key))
    }

    func superDecoder() throws -> any Decoder { RowDecoder(row: row, naming: naming) }
    func superDecoder(forKey key: Key) throws -> any Decoder {
        ColumnDecoder(row: row, column: try column(key), codingPath: [key])
    }
}

/// Decodes one column as `T`: directly for ``PGDecodable`` types, as JSON for a
/// json/jsonb column, else through a single-value decoder (RawRepresentable enums...).
func decodeValue<T: Decodable>(_ type: T.Type, row: PGRow, column i: Int, codingPath: [any CodingKey]) throws -> T {
    do {
        // Common types without a dynamic cast (a conformance lookup at run time).
        if T.self == Date.self {
            return unsafeBitCast(try Date.decode(from: row.result.value(row: row.index, column: i)), to: T.self)
        }
        if T.self == UUID.self {
            return unsafeBitCast(try UUID.decode(from: row.result.value(row: row.index, column: i)), to: T.self)
        }
        if let direct = T.self as? any PGDecodable.Type {
            let value = row.result.value(row: row.index, column: i)
            guard let decoded = try direct.decode(from: value) as? T else {
                throw PGDecodingFailure("cannot decode into \(T.self)")
            }
            return decoded
        }
        let type = row.result.columnType(i)
        if type == .json || type == .jsonb {
            return try decodeJSON(T.self, from: row.result.value(row: row.index, column: i))
        }
        return try T(from: ColumnDecoder(row: row, column: i, codingPath: codingPath))
    } catch let error as PGError {
        var e = error
        if e.column == nil { e.column = row.result.columnName(i) }
        throw e
    } catch let error as PGDecodingFailure {
        throw PGError(.decoding, error.reason, column: row.result.columnName(i), underlying: error)
    } catch {
        throw PGError(.decoding, "\(error)", column: row.result.columnName(i), underlying: error)
    }
}

/// A decoder for one column, for types that decode themselves from a single value.
struct ColumnDecoder: Decoder, SingleValueDecodingContainer {
    let row: PGRow
    let column: Int
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        throw PGDecodingFailure("a \(row.result.columnType(column)) column cannot decode into a keyed type (only json/jsonb can)")
    }
    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw PGDecodingFailure("a \(row.result.columnType(column)) column cannot decode into an unkeyed type (use a Swift array of a supported element type, or json/jsonb)")
    }
    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    var value: PGValue { row.result.value(row: row.index, column: column) }

    func decodeNil() -> Bool { value.isNull }
    func decode(_ type: Bool.Type) throws -> Bool { try Bool.decode(from: value) }
    func decode(_ type: String.Type) throws -> String { try String.decode(from: value) }
    func decode(_ type: Double.Type) throws -> Double { try Double.decode(from: value) }
    func decode(_ type: Float.Type) throws -> Float { try Float.decode(from: value) }
    func decode(_ type: Int.Type) throws -> Int { try Int.decode(from: value) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decodeInteger(value, as: Int8.self) }
    func decode(_ type: Int16.Type) throws -> Int16 { try Int16.decode(from: value) }
    func decode(_ type: Int32.Type) throws -> Int32 { try Int32.decode(from: value) }
    func decode(_ type: Int64.Type) throws -> Int64 { try Int64.decode(from: value) }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeInteger(value, as: UInt.self) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeInteger(value, as: UInt8.self) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeInteger(value, as: UInt16.self) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeInteger(value, as: UInt32.self) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeInteger(value, as: UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try decodeValue(type, row: row, column: column, codingPath: codingPath)
    }
}
