import Foundation

// MARK: - Protocols

/// A value that can be bound to a statement parameter (`$1`, `$2`, ...).
///
/// Parameters are always sent separately from the SQL text, never spliced into it, so
/// a parameter's content can never change what a statement does.
///
/// Conforming types: `Int`, `Int16`, `Int32`, `Int64`, `String`, `Bool`, `Double`,
/// `Float`, `Date` (as `timestamptz`), `UUID`, `Data` and `[UInt8]` (as `bytea`),
/// `Optional` (`nil` is SQL `NULL`), arrays of those element types (`[Int64]` as
/// `int8[]`, `[String]` as `text[]`, for `id = ANY($1)`), and ``PGJSON`` (as
/// `jsonb`).
///
/// `String` is sent with no declared type, as a SQL literal would be, so that the server
/// converts it to whatever the context needs (`uuid`, `citext`, an enum, `jsonb`...).
public protocol PGEncodable: Sendable {
    /// The type the parameter is declared with; ``PGDataType/unknown`` lets the
    /// server infer it from the statement.
    static var postgresDataType: PGDataType { get }
    /// The wire format ``encode(into:)`` produces. Default: binary.
    static var postgresFormat: PGFormat { get }
    /// True when the value is SQL `NULL` (``encode(into:)`` is then not called).
    /// Default: false.
    var isPostgresNull: Bool { get }
    /// Appends the value's wire form, in ``postgresFormat``, to `buffer`.
    func encode(into buffer: inout [UInt8]) throws
}

extension PGEncodable {
    public static var postgresFormat: PGFormat { .binary }
    public var isPostgresNull: Bool { false }
}

/// One column's value in a result, handed to ``PGDecodable/decode(from:)``.
///
/// `bytes` points into the result's memory and is valid only during the call.
public struct PGValue {
    /// The column's type.
    public let dataType: PGDataType
    /// The value's wire format (results of this module's queries are binary).
    public let format: PGFormat
    /// The value's bytes, or `nil` for SQL `NULL`.
    public let bytes: UnsafeRawBufferPointer?

    /// Creates a value (for custom decoders and tests).
    public init(dataType: PGDataType, format: PGFormat, bytes: UnsafeRawBufferPointer?) {
        self.dataType = dataType
        self.format = format
        self.bytes = bytes
    }

    /// True for SQL `NULL`.
    public var isNull: Bool { bytes == nil }

    /// The bytes of a non-NULL value, or the error for a NULL decoded into a
    /// non-optional type.
    public func requireBytes<T>(for type: T.Type) throws -> UnsafeRawBufferPointer {
        guard let bytes else {
            throw PGDecodingFailure("cannot decode NULL into non-optional \(T.self); decode an Optional")
        }
        return bytes
    }

    func mismatch<T>(_ type: T.Type) -> PGDecodingFailure {
        PGDecodingFailure("cannot decode a \(dataType) value into \(T.self)")
    }
}

/// Why a column value could not be decoded. Rows turn it into a ``PGError`` of kind
/// ``PGError/Kind/decoding`` that names the column.
public struct PGDecodingFailure: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var reason: String
    /// Creates a failure.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// A type that can be decoded from a result column.
///
/// The same types as ``PGEncodable`` conform, and decode from the types they
/// encode to (plus compatible ones: `Int64` from any integer column, `String` from any
/// text-like column, `Date` from `timestamp`, `timestamptz` or `date`, ...).
public protocol PGDecodable {
    /// Decodes a value; throws ``PGDecodingFailure`` (or any error) when it cannot.
    static func decode(from value: PGValue) throws -> Self
}

// MARK: - Byte helpers

extension UnsafeRawBufferPointer {
    @inline(__always)
    func readBigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

@inline(__always)
func decodeInteger<T: FixedWidthInteger>(_ value: PGValue, as type: T.Type) throws -> T {
    let bytes = try value.requireBytes(for: T.self)
    guard value.format == .binary else { throw value.mismatch(T.self) }
    let wide: Int64
    switch value.dataType {
    case .int8 where bytes.count == 8: wide = bytes.readBigEndian(Int64.self, at: 0)
    case .int4 where bytes.count == 4: wide = Int64(bytes.readBigEndian(Int32.self, at: 0))
    case .int2 where bytes.count == 2: wide = Int64(bytes.readBigEndian(Int16.self, at: 0))
    case .oid where bytes.count == 4: wide = Int64(bytes.readBigEndian(UInt32.self, at: 0))
    default: throw value.mismatch(T.self)
    }
    guard let result = T(exactly: wide) else {
        throw PGDecodingFailure("a value of type \(value.dataType) does not fit in \(T.self)")
    }
    return result
}

// MARK: - Integers

extension Int64: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .int8 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(self) }
    public static func decode(from value: PGValue) throws -> Int64 { try decodeInteger(value, as: Int64.self) }
}

extension Int: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .int8 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(Int64(self)) }
    public static func decode(from value: PGValue) throws -> Int { try decodeInteger(value, as: Int.self) }
}

extension Int32: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .int4 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(self) }
    public static func decode(from value: PGValue) throws -> Int32 { try decodeInteger(value, as: Int32.self) }
}

extension Int16: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .int2 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(self) }
    public static func decode(from value: PGValue) throws -> Int16 { try decodeInteger(value, as: Int16.self) }
}

// MARK: - Bool, floating point

extension Bool: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .bool }
    public func encode(into buffer: inout [UInt8]) { buffer.append(self ? 1 : 0) }
    public static func decode(from value: PGValue) throws -> Bool {
        let bytes = try value.requireBytes(for: Bool.self)
        guard value.dataType == .bool, value.format == .binary, bytes.count == 1 else { throw value.mismatch(Bool.self) }
        return bytes[0] != 0
    }
}

extension Double: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .float8 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(bitPattern) }
    public static func decode(from value: PGValue) throws -> Double {
        let bytes = try value.requireBytes(for: Double.self)
        guard value.format == .binary else { throw value.mismatch(Double.self) }
        switch value.dataType {
        case .float8 where bytes.count == 8: return Double(bitPattern: bytes.readBigEndian(UInt64.self, at: 0))
        case .float4 where bytes.count == 4: return Double(Float(bitPattern: bytes.readBigEndian(UInt32.self, at: 0)))
        case .int2, .int4, .int8: return Double(try decodeInteger(value, as: Int64.self))
        case .numeric:
            let text = try NumericText.decode(bytes)
            guard let d = Double(text) else { throw value.mismatch(Double.self) }
            return d
        default: throw value.mismatch(Double.self)
        }
    }
}

extension Float: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .float4 }
    public func encode(into buffer: inout [UInt8]) { buffer.appendBigEndian(bitPattern) }
    public static func decode(from value: PGValue) throws -> Float {
        if value.dataType == .float4, let bytes = value.bytes, bytes.count == 4, value.format == .binary {
            return Float(bitPattern: bytes.readBigEndian(UInt32.self, at: 0))
        }
        return Float(try Double.decode(from: value))
    }
}

// MARK: - String

extension String: PGEncodable, PGDecodable {
    /// Strings are sent untyped, as literals are: the server converts them to the type
    /// the statement needs.
    public static var postgresDataType: PGDataType { .unknown }
    public static var postgresFormat: PGFormat { .text }
    public func encode(into buffer: inout [UInt8]) throws {
        let start = buffer.count
        buffer.append(contentsOf: utf8)
        if buffer[start...].contains(0) {
            throw PGError(.encoding, "a String parameter contains a NUL character, which PostgreSQL text cannot hold; bind it as Data (bytea)")
        }
    }
    public static func decode(from value: PGValue) throws -> String {
        let bytes = try value.requireBytes(for: String.self)
        if value.format == .text || value.dataType.isTextual || value.dataType == .json {
            return String(decoding: bytes, as: UTF8.self)
        }
        switch value.dataType {
        case .jsonb:
            guard bytes.count >= 1 else { throw value.mismatch(String.self) }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[1...]), as: UTF8.self)
        case .uuid: return try UUID.decode(from: value).uuidString.lowercased()
        case .numeric: return try NumericText.decode(bytes)
        case .int2, .int4, .int8: return String(try Int64.decode(from: value))
        default: throw value.mismatch(String.self)
        }
    }
}

// MARK: - Date, UUID, bytes

/// Microseconds between 2000-01-01 (PostgreSQL's epoch) and 2001-01-01 (Foundation's).
let postgresEpochOffsetMicroseconds: Int64 = 31_622_400_000_000

extension Date: PGEncodable, PGDecodable {
    /// Dates are sent as `timestamptz`, to the microsecond (PostgreSQL's precision).
    public static var postgresDataType: PGDataType { .timestamptz }
    public func encode(into buffer: inout [UInt8]) throws {
        let seconds = timeIntervalSinceReferenceDate
        let micros: Int64
        if seconds == .infinity {
            micros = .max
        } else if seconds == -.infinity {
            micros = .min
        } else {
            let scaled = (seconds * 1_000_000).rounded()
            guard scaled.isFinite, abs(scaled) < 9.0e18 else {
                throw PGError(.encoding, "a Date is out of timestamptz's range")
            }
            micros = Int64(scaled) + postgresEpochOffsetMicroseconds
        }
        buffer.appendBigEndian(micros)
    }
    public static func decode(from value: PGValue) throws -> Date {
        let bytes = try value.requireBytes(for: Date.self)
        guard value.format == .binary else { throw value.mismatch(Date.self) }
        switch value.dataType {
        case .timestamptz where bytes.count == 8, .timestamp where bytes.count == 8:
            let micros = bytes.readBigEndian(Int64.self, at: 0)
            if micros == .max { return .distantFuture }
            if micros == .min { return .distantPast }
            return Date(timeIntervalSinceReferenceDate: Double(micros - postgresEpochOffsetMicroseconds) / 1_000_000)
        case .date where bytes.count == 4:
            let days = bytes.readBigEndian(Int32.self, at: 0)
            if days == .max { return .distantFuture }
            if days == .min { return .distantPast }
            return Date(timeIntervalSinceReferenceDate: Double(Int64(days) * 86_400 - 31_622_400))
        default: throw value.mismatch(Date.self)
        }
    }
}

extension UUID: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .uuid }
    public func encode(into buffer: inout [UInt8]) {
        withUnsafeBytes(of: uuid) { buffer.append(contentsOf: $0) }
    }
    public static func decode(from value: PGValue) throws -> UUID {
        let bytes = try value.requireBytes(for: UUID.self)
        if value.dataType == .uuid, value.format == .binary, bytes.count == 16 {
            var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            withUnsafeMutableBytes(of: &raw) { $0.copyMemory(from: bytes) }
            return UUID(uuid: raw)
        }
        if value.dataType.isTextual || value.format == .text,
           let uuid = UUID(uuidString: String(decoding: bytes, as: UTF8.self)) {
            return uuid
        }
        throw value.mismatch(UUID.self)
    }
}

extension Data: PGEncodable, PGDecodable {
    public static var postgresDataType: PGDataType { .bytea }
    public func encode(into buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
    public static func decode(from value: PGValue) throws -> Data {
        let bytes = try value.requireBytes(for: Data.self)
        guard value.dataType == .bytea, value.format == .binary else { throw value.mismatch(Data.self) }
        return Data(bytes)
    }
}

// MARK: - Optional

extension Optional: PGEncodable where Wrapped: PGEncodable {
    public static var postgresDataType: PGDataType { Wrapped.postgresDataType }
    public static var postgresFormat: PGFormat { Wrapped.postgresFormat }
    public var isPostgresNull: Bool {
        switch self {
        case .none: return true
        case .some(let wrapped): return wrapped.isPostgresNull
        }
    }
    public func encode(into buffer: inout [UInt8]) throws {
        if case .some(let wrapped) = self { try wrapped.encode(into: &buffer) }
    }
}

extension Optional: PGDecodable where Wrapped: PGDecodable {
    public static func decode(from value: PGValue) throws -> Wrapped? {
        if value.isNull { return nil }
        return try Wrapped.decode(from: value)
    }
}

// MARK: - Arrays

/// A type whose arrays can be bound and decoded (`[Int64]` as `int8[]`, `[String]` as
/// `text[]`, ...). `UInt8` is the exception: `[UInt8]` is `bytea`.
public protocol PGArrayElement: Sendable {
    /// The array type (`int8[]` for `Int64`).
    static var postgresArrayDataType: PGDataType { get }
    /// The element type inside the array (`int8` for `Int64`).
    static var postgresElementDataType: PGDataType { get }
    /// Appends one element's binary form.
    func encodeElement(into buffer: inout [UInt8]) throws
    /// Decodes one element from its binary form.
    static func decodeElement(from value: PGValue) throws -> Self
    /// Encodes a whole array (customization point; the default writes PostgreSQL's
    /// binary array format).
    static func encodeArray(_ array: [Self], into buffer: inout [UInt8]) throws
    /// Decodes a whole array (customization point).
    static func decodeArray(from value: PGValue) throws -> [Self]
}

extension PGArrayElement {
    public static func encodeArray(_ array: [Self], into buffer: inout [UInt8]) throws {
        buffer.appendBigEndian(Int32(array.isEmpty ? 0 : 1))  // dimensions
        buffer.appendBigEndian(Int32(0))  // no NULLs
        buffer.appendBigEndian(postgresElementDataType.rawValue)
        guard !array.isEmpty else { return }
        buffer.appendBigEndian(Int32(array.count))
        buffer.appendBigEndian(Int32(1))  // lower bound
        for element in array {
            let lengthAt = buffer.count
            buffer.appendBigEndian(Int32(0))
            let start = buffer.count
            try element.encodeElement(into: &buffer)
            let length = Int32(buffer.count - start).bigEndian
            withUnsafeBytes(of: length) { raw in
                for i in 0..<4 { buffer[lengthAt + i] = raw[i] }
            }
        }
    }

    public static func decodeArray(from value: PGValue) throws -> [Self] {
        let bytes = try value.requireBytes(for: [Self].self)
        guard value.format == .binary, value.dataType == postgresArrayDataType || bytes.count >= 12 && isCompatibleArray(value.dataType) else {
            throw value.mismatch([Self].self)
        }
        guard bytes.count >= 12 else { throw PGDecodingFailure("truncated array") }
        let dimensions = bytes.readBigEndian(Int32.self, at: 0)
        let elementType = PGDataType(bytes.readBigEndian(UInt32.self, at: 8))
        if dimensions == 0 { return [] }
        guard dimensions == 1, bytes.count >= 20 else {
            throw PGDecodingFailure("cannot decode a \(dimensions)-dimensional array into [\(Self.self)]")
        }
        let count = Int(bytes.readBigEndian(Int32.self, at: 12))
        var offset = 20
        var result: [Self] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            guard offset + 4 <= bytes.count else { throw PGDecodingFailure("truncated array") }
            let length = Int(bytes.readBigEndian(Int32.self, at: offset))
            offset += 4
            if length < 0 {
                throw PGDecodingFailure("array element \(index + 1) is NULL, which [\(Self.self)] cannot hold")
            }
            guard offset + length <= bytes.count else { throw PGDecodingFailure("truncated array") }
            let element = PGValue(
                dataType: elementType, format: .binary,
                bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]))
            result.append(try decodeElement(from: element))
            offset += length
        }
        return result
    }

    static func isCompatibleArray(_ type: PGDataType) -> Bool {
        switch type {
        case .int2Array, .int4Array, .int8Array, .textArray, .varcharArray, .nameArray, .bpcharArray,
             .float4Array, .float8Array, .numericArray, .timestampArray, .timestamptzArray, .dateArray,
             .uuidArray, .boolArray, .jsonArray, .jsonbArray:
            return true
        default:
            return type.rawValue >= 16384
        }
    }
}

extension PGArrayElement where Self: PGEncodable & PGDecodable {
    public static var postgresElementDataType: PGDataType { postgresDataType }
    public func encodeElement(into buffer: inout [UInt8]) throws { try encode(into: &buffer) }
    public static func decodeElement(from value: PGValue) throws -> Self { try decode(from: value) }
}

extension Int64: PGArrayElement { public static var postgresArrayDataType: PGDataType { .int8Array } }
extension Int: PGArrayElement { public static var postgresArrayDataType: PGDataType { .int8Array } }
extension Int32: PGArrayElement { public static var postgresArrayDataType: PGDataType { .int4Array } }
extension Int16: PGArrayElement { public static var postgresArrayDataType: PGDataType { .int2Array } }
extension Bool: PGArrayElement { public static var postgresArrayDataType: PGDataType { .boolArray } }
extension Double: PGArrayElement { public static var postgresArrayDataType: PGDataType { .float8Array } }
extension Float: PGArrayElement { public static var postgresArrayDataType: PGDataType { .float4Array } }
extension UUID: PGArrayElement { public static var postgresArrayDataType: PGDataType { .uuidArray } }
extension Date: PGArrayElement { public static var postgresArrayDataType: PGDataType { .timestamptzArray } }
extension String: PGArrayElement {
    public static var postgresArrayDataType: PGDataType { .textArray }
    /// Inside an array, strings are `text`.
    public static var postgresElementDataType: PGDataType { .text }
}

extension UInt8: PGArrayElement {
    /// `[UInt8]` is `bytea`, not an array.
    public static var postgresArrayDataType: PGDataType { .bytea }
    public static var postgresElementDataType: PGDataType { .bytea }
    public func encodeElement(into buffer: inout [UInt8]) { buffer.append(self) }
    public static func decodeElement(from value: PGValue) throws -> UInt8 {
        throw PGDecodingFailure("UInt8 is decoded only as part of [UInt8] (bytea)")
    }
    public static func encodeArray(_ array: [UInt8], into buffer: inout [UInt8]) { buffer.append(contentsOf: array) }
    public static func decodeArray(from value: PGValue) throws -> [UInt8] {
        let bytes = try value.requireBytes(for: [UInt8].self)
        guard value.dataType == .bytea, value.format == .binary else { throw value.mismatch([UInt8].self) }
        return Array(bytes)
    }
}

extension Array: PGEncodable where Element: PGArrayElement {
    public static var postgresDataType: PGDataType { Element.postgresArrayDataType }
    public func encode(into buffer: inout [UInt8]) throws { try Element.encodeArray(self, into: &buffer) }
}

extension Array: PGDecodable where Element: PGArrayElement {
    public static func decode(from value: PGValue) throws -> [Element] { try Element.decodeArray(from: value) }
}

// MARK: - numeric

/// PostgreSQL's binary `numeric` as decimal text.
enum NumericText {
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> String {
        guard bytes.count >= 8 else { throw PGDecodingFailure("truncated numeric") }
        let ndigits = Int(bytes.readBigEndian(Int16.self, at: 0))
        let weight = Int(bytes.readBigEndian(Int16.self, at: 2))
        let sign = bytes.readBigEndian(UInt16.self, at: 4)
        let dscale = Int(bytes.readBigEndian(Int16.self, at: 6))
        switch sign {
        case 0xC000: return "NaN"
        case 0xD000: return "Infinity"
        case 0xF000: return "-Infinity"
        default: break
        }
        guard bytes.count >= 8 + 2 * ndigits else { throw PGDecodingFailure("truncated numeric") }
        var digits: [Int] = []
        for i in 0..<ndigits { digits.append(Int(bytes.readBigEndian(Int16.self, at: 8 + 2 * i))) }
        var text = sign == 0x4000 ? "-" : ""
        // Integer part: groups 0...weight.
        if weight < 0 {
            text += "0"
        } else {
            for g in 0...weight {
                let d = g < digits.count ? digits[g] : 0
                let s = String(d)
                text += g == 0 ? s : String(repeating: "0", count: 4 - s.count) + s
            }
        }
        if dscale > 0 {
            var fraction = ""
            var g = weight + 1
            while fraction.count < dscale {
                let d = (g >= 0 && g < digits.count) ? digits[g] : 0
                let s = String(d)
                fraction += String(repeating: "0", count: 4 - s.count) + s
                g += 1
            }
            text += "." + fraction.prefix(dscale)
        }
        return text
    }
}
