import Foundation

/// A JSON decoder for `Decodable` values that reads bytes in place: no intermediate
/// tree, no Foundation `JSONSerialization`. It reads what `JSONEncoder` writes with its
/// default strategies (dates as `deferredToDate`, data as Base64, URLs as strings,
/// decimals as numbers, keys as they are), which is what ``JSONValueCodec`` uses.
///
/// Objects are scanned once when a keyed container is opened (key and value ranges);
/// values are parsed when asked for. Unknown keys are skipped, as `JSONDecoder` does.
struct JSONValueDecoder {
    /// Decodes a `Value` from the JSON in `bytes[range]`.
    func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8], in range: Range<Int>) throws -> Value {
        let input = JSONInput(bytes: bytes, end: range.upperBound)
        var start = range.lowerBound
        input.skipSpace(&start)
        guard start < range.upperBound else { throw input.error(at: start, "no value") }
        var end = range.upperBound
        if bytes[start] != UInt8(ascii: "{") && bytes[start] != UInt8(ascii: "[") {
            // A scalar: find its end now. (Objects and arrays find theirs, and check
            // that only spaces follow, when their container is opened.)
            end = try input.skipValue(from: start)
            var rest = end
            input.skipSpace(&rest)
            guard rest == range.upperBound else { throw input.error(at: rest, "unexpected bytes after the value") }
        }
        return try JSONValueDecoding(input: input, start: start, end: end, parent: nil, key: nil).decodeValue(Value.self)
    }
}

/// The bytes being decoded, shared by every container of one decode.
final class JSONInput {
    let bytes: [UInt8]
    let end: Int

    init(bytes: [UInt8], end: Int) {
        self.bytes = bytes
        self.end = end
    }

    func error(at position: Int, _ message: String, _ path: [any CodingKey] = []) -> DecodingError {
        .dataCorrupted(DecodingError.Context(codingPath: path, debugDescription: "JSON at byte \(position): \(message)"))
    }

    @inline(__always)
    func skipSpace(_ i: inout Int) {
        while i < end {
            let b = bytes[i]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { i += 1 } else { return }
        }
    }

    /// The end of the value starting at `i` (which is not a space).
    func skipValue(from i: Int) throws -> Int {
        guard i < end else { throw error(at: i, "unexpected end") }
        switch bytes[i] {
        case UInt8(ascii: "\""):
            return try skipString(from: i).end
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            return try skipNested(from: i)
        case UInt8(ascii: "t"):
            return try literal(i, "true")
        case UInt8(ascii: "f"):
            return try literal(i, "false")
        case UInt8(ascii: "n"):
            return try literal(i, "null")
        default:
            var j = i
            while j < end {
                let b = bytes[j]
                if (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: "-") || b == UInt8(ascii: "+") || b == UInt8(ascii: ".")
                    || b == UInt8(ascii: "e") || b == UInt8(ascii: "E")
                {
                    j += 1
                } else {
                    break
                }
            }
            guard j > i else { throw error(at: i, "unexpected byte \(bytes[i])") }
            return j
        }
    }

    private func literal(_ i: Int, _ word: StaticString) throws -> Int {
        let n = word.utf8CodeUnitCount
        guard i + n <= end else { throw error(at: i, "unexpected end") }
        let p = word.utf8Start
        for k in 0..<n where bytes[i + k] != p[k] { throw error(at: i, "expected \(word)") }
        return i + n
    }

    /// The end of a string starting at `i` (its opening quote), and whether it holds
    /// escapes.
    @inline(__always)
    func skipString(from i: Int) throws -> (end: Int, escaped: Bool) {
        var j = i + 1
        var escaped = false
        while j < end {
            let b = bytes[j]
            if b == UInt8(ascii: "\"") { return (j + 1, escaped) }
            if b == UInt8(ascii: "\\") {
                escaped = true
                j += 2
            } else {
                if b < 0x20 { throw error(at: j, "control character in a string") }
                j += 1
            }
        }
        throw error(at: i, "unterminated string")
    }

    /// The end of an object or array starting at `i`; strings inside are skipped as such.
    private func skipNested(from i: Int) throws -> Int {
        var depth = 0
        var j = i
        while j < end {
            let b = bytes[j]
            switch b {
            case UInt8(ascii: "\""):
                j = try skipString(from: j).end
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return j + 1 }
            default:
                break
            }
            j += 1
        }
        throw error(at: i, "unterminated object or array")
    }

    /// The string value in `start..<end` (quotes included), unescaped.
    func string(_ start: Int, _ end: Int, escaped: Bool) throws -> String {
        if !escaped {
            return bytes.withUnsafeBufferPointer { all in
                String(decoding: UnsafeBufferPointer(rebasing: all[(start + 1)..<(end - 1)]), as: UTF8.self)
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var j = start + 1
        let last = end - 1
        while j < last {
            let b = bytes[j]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                j += 1
                continue
            }
            guard j + 1 < last else { throw error(at: j, "bad escape") }
            let e = bytes[j + 1]
            j += 2
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4(j, last)
                j += 4
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // A surrogate pair: the low half must follow.
                    guard j + 6 <= last, bytes[j] == UInt8(ascii: "\\"), bytes[j + 1] == UInt8(ascii: "u") else {
                        throw error(at: j, "lone surrogate")
                    }
                    let low = try hex4(j + 2, last)
                    guard low >= 0xDC00 && low < 0xE000 else { throw error(at: j, "bad surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    j += 6
                }
                guard let u = Unicode.Scalar(scalar) else { throw error(at: j, "bad \\u escape") }
                out.append(contentsOf: UTF8.encode(u).map { Array($0) } ?? [])
            default:
                throw error(at: j - 2, "bad escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func hex4(_ j: Int, _ last: Int) throws -> UInt32 {
        guard j + 4 <= last else { throw error(at: j, "short \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let b = bytes[j + k]
            let d: UInt32
            switch b {
            case 0x30...0x39: d = UInt32(b - 0x30)
            case 0x41...0x46: d = UInt32(b - 0x41 + 10)
            case 0x61...0x66: d = UInt32(b - 0x61 + 10)
            default: throw error(at: j, "bad \\u escape")
            }
            v = v << 4 | d
        }
        return v
    }

    /// An integer in `start..<end`, or nil if it is not a plain integer (or overflows).
    @inline(__always)
    func integer(_ start: Int, _ end: Int) -> Int64? {
        var j = start
        var negative = false
        if j < end && bytes[j] == UInt8(ascii: "-") {
            negative = true
            j += 1
        }
        guard j < end else { return nil }
        var value: Int64 = 0
        while j < end {
            let d = bytes[j] &- 0x30
            guard d < 10 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
            if o1 || o2 { return nil }
            value = a
            j += 1
        }
        return value
    }

    /// An unsigned integer in `start..<end`, or nil.
    func unsigned(_ start: Int, _ end: Int) -> UInt64? {
        guard start < end else { return nil }
        var value: UInt64 = 0
        for j in start..<end {
            let d = bytes[j] &- 0x30
            guard d < 10 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            if o1 || o2 { return nil }
            value = a
        }
        return value
    }

    func double(_ start: Int, _ end: Int) -> Double? {
        if let i = integer(start, end), i.magnitude < (1 << 53) { return Double(i) }
        let count = end - start
        guard count > 0, count < 64 else {
            return Double(String(decoding: bytes[start..<end], as: UTF8.self))
        }
        // strtod over a NUL-terminated copy on the stack: no String in between.
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer -> Double? in
            for k in 0..<count {
                let b = bytes[start + k]
                // Only the characters of a JSON number: strtod must not see "inf" or hex.
                guard (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2B || b == 0x2E || b == 0x65 || b == 0x45 else { return nil }
                buffer[k] = CChar(bitPattern: b)
            }
            buffer[count] = 0
            guard let base = buffer.baseAddress else { return nil }
            var stop: UnsafeMutablePointer<CChar>?
            let value = strtod(base, &stop)
            guard let stop, stop == base + count, value.isFinite else { return nil }
            return value
        }
    }
}

/// One value being decoded: the `Decoder` handed to `init(from:)`. Its coding path
/// is built only when asked for (errors), from its parent and key.
final class JSONValueDecoding: Decoder {
    let input: JSONInput
    let start: Int
    let end: Int
    let parent: JSONValueDecoding?
    let key: (any CodingKey)?
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(input: JSONInput, start: Int, end: Int, parent: JSONValueDecoding?, key: (any CodingKey)?) {
        self.input = input
        self.start = start
        self.end = end
        self.parent = parent
        self.key = key
    }

    var codingPath: [any CodingKey] {
        var path: [any CodingKey] = []
        var node: JSONValueDecoding? = self
        while let n = node {
            if let key = n.key { path.append(key) }
            node = n.parent
        }
        return path.reversed()
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(try JSONKeyedContainer<Key>(decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try JSONUnkeyedContainer(decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        JSONSingleValue(decoder: self)
    }

    /// Decodes the value, special-casing the types `JSONEncoder` writes in its own way.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONScalar(input: input, start: start, end: end).decode(T.self, parent: self, key: nil) { [self] in codingPath }
    }
}

/// A value's bytes, `start..<end`, read as a primitive or handed to `init(from:)`.
/// Coding paths are computed only for errors.
struct JSONScalar {
    let input: JSONInput
    let start: Int
    let end: Int

    /// The bytes themselves stay out of the error: they are a row's values.
    private func mismatch<T>(_ type: T.Type, _ path: () -> [any CodingKey]) -> DecodingError {
        .typeMismatch(type, DecodingError.Context(codingPath: path(), debugDescription: "expected \(type) at byte \(start)"))
    }

    func isNull() -> Bool { end - start == 4 && input.bytes[start] == UInt8(ascii: "n") }

    func bool(_ path: () -> [any CodingKey]) throws -> Bool {
        if input.bytes[start] == UInt8(ascii: "t") { return true }
        if input.bytes[start] == UInt8(ascii: "f") { return false }
        throw mismatch(Bool.self, path)
    }

    func string(_ path: () -> [any CodingKey]) throws -> String {
        guard input.bytes[start] == UInt8(ascii: "\"") else { throw mismatch(String.self, path) }
        let (stringEnd, escaped) = try input.skipString(from: start)
        return try input.string(start, stringEnd, escaped: escaped)
    }

    func double(_ path: () -> [any CodingKey]) throws -> Double {
        guard let v = input.double(start, end) else { throw mismatch(Double.self, path) }
        return v
    }

    func signed<T: FixedWidthInteger & SignedInteger>(_ type: T.Type, _ path: () -> [any CodingKey]) throws -> T {
        guard let v = input.integer(start, end), let r = T(exactly: v) else { throw mismatch(type, path) }
        return r
    }

    func unsigned<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ path: () -> [any CodingKey]) throws -> T {
        guard let v = input.unsigned(start, end), let r = T(exactly: v) else { throw mismatch(type, path) }
        return r
    }

    /// Any `Decodable`: primitives directly, the types `JSONEncoder` writes in its own
    /// way as it writes them, the rest through `init(from:)`.
    func decode<T: Decodable>(
        _ type: T.Type, parent: JSONValueDecoding?, key: (any CodingKey)?, _ path: () -> [any CodingKey]
    ) throws -> T {
        // Each cast follows a check that T is that very type, so it is a no-op.
        if T.self == String.self { return unsafeBitCast(try string(path), to: T.self) }
        if T.self == Int64.self { return unsafeBitCast(try signed(Int64.self, path), to: T.self) }
        if T.self == Int.self { return unsafeBitCast(try signed(Int.self, path), to: T.self) }
        if T.self == Double.self { return unsafeBitCast(try double(path), to: T.self) }
        if T.self == Bool.self { return unsafeBitCast(try bool(path), to: T.self) }
        if T.self == Date.self {
            // JSONEncoder's default: seconds since 2001-01-01 as a number.
            return unsafeBitCast(Date(timeIntervalSinceReferenceDate: try double(path)), to: T.self)
        }
        if T.self == Data.self {
            guard let data = Data(base64Encoded: try string(path)) as? T else { throw mismatch(type, path) }
            return data
        }
        if T.self == URL.self {
            guard let url = URL(string: try string(path)) as? T else { throw mismatch(type, path) }
            return url
        }
        if T.self == Decimal.self {
            let text = String(decoding: input.bytes[start..<end], as: UTF8.self)
            guard let d = Decimal(string: text) as? T else { throw mismatch(type, path) }
            return d
        }
        if let decoder = parent, key == nil, decoder.start == start {
            return try T(from: decoder)
        }
        return try T(from: JSONValueDecoding(input: input, start: start, end: end, parent: parent, key: key))
    }
}

/// The single value container of a decoder.
struct JSONSingleValue: SingleValueDecodingContainer {
    let decoder: JSONValueDecoding
    var codingPath: [any CodingKey] { decoder.codingPath }
    private var scalar: JSONScalar { JSONScalar(input: decoder.input, start: decoder.start, end: decoder.end) }

    func decodeNil() -> Bool { scalar.isNull() }
    func decode(_ type: Bool.Type) throws -> Bool { try scalar.bool { codingPath } }
    func decode(_ type: String.Type) throws -> String { try scalar.string { codingPath } }
    func decode(_ type: Double.Type) throws -> Double { try scalar.double { codingPath } }
    func decode(_ type: Float.Type) throws -> Float { Float(try scalar.double { codingPath }) }
    func decode(_ type: Int.Type) throws -> Int { try scalar.signed(type) { codingPath } }
    func decode(_ type: Int8.Type) throws -> Int8 { try scalar.signed(type) { codingPath } }
    func decode(_ type: Int16.Type) throws -> Int16 { try scalar.signed(type) { codingPath } }
    func decode(_ type: Int32.Type) throws -> Int32 { try scalar.signed(type) { codingPath } }
    func decode(_ type: Int64.Type) throws -> Int64 { try scalar.signed(type) { codingPath } }
    func decode(_ type: UInt.Type) throws -> UInt { try scalar.unsigned(type) { codingPath } }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try scalar.unsigned(type) { codingPath } }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try scalar.unsigned(type) { codingPath } }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try scalar.unsigned(type) { codingPath } }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try scalar.unsigned(type) { codingPath } }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // A type decoding itself from a single value (a wrapper): give it a decoder
        // for the same bytes.
        try scalar.decode(T.self, parent: decoder, key: nil) { codingPath }
    }
}

/// An object's fields: key and value ranges, found in one scan.
struct JSONField {
    var keyStart: Int  // after the opening quote
    var keyEnd: Int  // at the closing quote
    var keyEscaped: Bool
    var valueStart: Int
    var valueEnd: Int
}

/// Scans an object once: its fields, and checks that only spaces follow it up to the
/// decoder's end.
func scanObject(_ decoder: JSONValueDecoding) throws -> [JSONField] {
    let input = decoder.input
    var i = decoder.start
    guard i < decoder.end, input.bytes[i] == UInt8(ascii: "{") else {
        throw DecodingError.typeMismatch(
            [String: Any].self, DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "expected an object"))
    }
    i += 1
    var fields: [JSONField] = []
    fields.reserveCapacity(8)
    input.skipSpace(&i)
    if i < decoder.end && input.bytes[i] == UInt8(ascii: "}") {
        try checkEnd(input, after: i + 1, end: decoder.end)
        return fields
    }
    while true {
        input.skipSpace(&i)
        guard i < decoder.end, input.bytes[i] == UInt8(ascii: "\"") else { throw input.error(at: i, "expected a key") }
        let (keyEnd, escaped) = try input.skipString(from: i)
        var j = keyEnd
        input.skipSpace(&j)
        guard j < decoder.end, input.bytes[j] == UInt8(ascii: ":") else { throw input.error(at: j, "expected ':'") }
        j += 1
        input.skipSpace(&j)
        let valueEnd = try input.skipValue(from: j)
        fields.append(JSONField(keyStart: i + 1, keyEnd: keyEnd - 1, keyEscaped: escaped, valueStart: j, valueEnd: valueEnd))
        i = valueEnd
        input.skipSpace(&i)
        guard i < decoder.end else { throw input.error(at: i, "unterminated object") }
        if input.bytes[i] == UInt8(ascii: ",") {
            i += 1
            continue
        }
        guard input.bytes[i] == UInt8(ascii: "}") else { throw input.error(at: i, "expected ',' or '}'") }
        try checkEnd(input, after: i + 1, end: decoder.end)
        return fields
    }
}

/// Only spaces between `after` and `end`.
func checkEnd(_ input: JSONInput, after: Int, end: Int) throws {
    var k = after
    input.skipSpace(&k)
    guard k == end else { throw input.error(at: k, "unexpected bytes after the value") }
}

/// A class, so that the copies `KeyedDecodingContainer` makes cost one retain.
final class JSONKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    typealias Field = JSONField

    let decoder: JSONValueDecoding
    let input: JSONInput
    let fields: [Field]
    var codingPath: [any CodingKey] { decoder.codingPath }

    init(decoder: JSONValueDecoding) throws {
        self.decoder = decoder
        self.input = decoder.input
        self.fields = try scanObject(decoder)
    }

    private func keyString(_ f: Field) -> String {
        if f.keyEscaped, let s = try? input.string(f.keyStart - 1, f.keyEnd + 1, escaped: true) { return s }
        return String(decoding: input.bytes[f.keyStart..<f.keyEnd], as: UTF8.self)
    }

    var allKeys: [Key] { fields.compactMap { Key(stringValue: keyString($0)) } }

    @inline(__always)
    private func find(_ key: Key) -> Field? {
        var name = key.stringValue
        return name.withUTF8 { wanted -> Field? in
            input.bytes.withUnsafeBufferPointer { bytes -> Field? in
                for f in fields where f.keyEnd - f.keyStart == wanted.count && !f.keyEscaped {
                    guard let all = bytes.baseAddress, let name = wanted.baseAddress else { return f }  // both empty
                    if memcmp(all + f.keyStart, name, wanted.count) == 0 { return f }
                }
                // Keys written with escapes are compared once unescaped.
                for f in fields where f.keyEscaped && keyString(f).utf8.elementsEqual(wanted) { return f }
                return nil
            }
        }
    }

    private func scalar(_ key: Key) throws -> JSONScalar {
        guard let f = find(key) else {
            throw DecodingError.keyNotFound(
                key, DecodingError.Context(codingPath: codingPath, debugDescription: "no value for key \(key.stringValue)"))
        }
        return JSONScalar(input: input, start: f.valueStart, end: f.valueEnd)
    }

    private func path(_ key: Key) -> [any CodingKey] { codingPath + [key] }

    func contains(_ key: Key) -> Bool { find(key) != nil }

    func decodeNil(forKey key: Key) throws -> Bool { try scalar(key).isNull() }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try scalar(key).bool { path(key) } }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try scalar(key).string { path(key) } }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try scalar(key).double { path(key) } }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try scalar(key).double { path(key) }) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try scalar(key).signed(type) { path(key) } }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try scalar(key).signed(type) { path(key) } }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try scalar(key).signed(type) { path(key) } }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try scalar(key).signed(type) { path(key) } }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try scalar(key).signed(type) { path(key) } }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try scalar(key).unsigned(type) { path(key) } }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try scalar(key).unsigned(type) { path(key) } }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try scalar(key).unsigned(type) { path(key) } }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try scalar(key).unsigned(type) { path(key) } }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try scalar(key).unsigned(type) { path(key) } }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try scalar(key).decode(type, parent: decoder, key: key) { path(key) }
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let f = find(key) else { return nil }
        let v = JSONScalar(input: input, start: f.valueStart, end: f.valueEnd)
        if v.isNull() { return nil }
        return try v.decode(type, parent: decoder, key: key) { path(key) }
    }

    private func nested(_ key: Key) throws -> JSONValueDecoding {
        let v = try scalar(key)
        return JSONValueDecoding(input: input, start: v.start, end: v.end, parent: decoder, key: key)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try nested(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try nested(key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        guard let f = fields.first(where: { keyString($0) == "super" }) else { return decoder }
        return JSONValueDecoding(input: input, start: f.valueStart, end: f.valueEnd, parent: decoder, key: nil)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder { try nested(key) }
}

/// An array's elements, found in one scan.
struct JSONUnkeyedContainer: UnkeyedDecodingContainer {
    let decoder: JSONValueDecoding
    let elements: [(Int, Int)]
    var currentIndex = 0
    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    init(decoder: JSONValueDecoding) throws {
        self.decoder = decoder
        let input = decoder.input
        var i = decoder.start
        guard i < decoder.end, input.bytes[i] == UInt8(ascii: "[") else {
            throw DecodingError.typeMismatch(
                [Any].self, DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "expected an array"))
        }
        i += 1
        var elements: [(Int, Int)] = []
        input.skipSpace(&i)
        if i < decoder.end && input.bytes[i] == UInt8(ascii: "]") {
            try checkEnd(input, after: i + 1, end: decoder.end)
            self.elements = elements
            return
        }
        while true {
            input.skipSpace(&i)
            let end = try input.skipValue(from: i)
            elements.append((i, end))
            i = end
            input.skipSpace(&i)
            guard i < decoder.end else { throw input.error(at: i, "unterminated array") }
            if input.bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard input.bytes[i] == UInt8(ascii: "]") else { throw input.error(at: i, "expected ',' or ']'") }
            try checkEnd(input, after: i + 1, end: decoder.end)
            break
        }
        self.elements = elements
    }

    private struct IndexKey: CodingKey {
        var stringValue: String { "Index \(intValue ?? 0)" }
        var intValue: Int?
        init(_ i: Int) { intValue = i }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    private mutating func next() throws -> (JSONScalar, IndexKey) {
        guard currentIndex < elements.count else {
            throw DecodingError.valueNotFound(
                Any.self, DecodingError.Context(codingPath: codingPath, debugDescription: "the array has no more elements"))
        }
        let (s, e) = elements[currentIndex]
        let key = IndexKey(currentIndex)
        currentIndex += 1
        return (JSONScalar(input: decoder.input, start: s, end: e), key)
    }

    mutating func decodeNil() throws -> Bool {
        guard currentIndex < elements.count else { return false }
        let (s, e) = elements[currentIndex]
        if JSONScalar(input: decoder.input, start: s, end: e).isNull() {
            currentIndex += 1
            return true
        }
        return false
    }

    private func path(_ key: IndexKey) -> [any CodingKey] { codingPath + [key] }

    mutating func decode(_ type: Bool.Type) throws -> Bool { let (v, k) = try next(); return try v.bool { path(k) } }
    mutating func decode(_ type: String.Type) throws -> String { let (v, k) = try next(); return try v.string { path(k) } }
    mutating func decode(_ type: Double.Type) throws -> Double { let (v, k) = try next(); return try v.double { path(k) } }
    mutating func decode(_ type: Float.Type) throws -> Float { let (v, k) = try next(); return Float(try v.double { path(k) }) }
    mutating func decode(_ type: Int.Type) throws -> Int { let (v, k) = try next(); return try v.signed(type) { path(k) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { let (v, k) = try next(); return try v.signed(type) { path(k) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { let (v, k) = try next(); return try v.signed(type) { path(k) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { let (v, k) = try next(); return try v.signed(type) { path(k) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { let (v, k) = try next(); return try v.signed(type) { path(k) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { let (v, k) = try next(); return try v.unsigned(type) { path(k) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { let (v, k) = try next(); return try v.unsigned(type) { path(k) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { let (v, k) = try next(); return try v.unsigned(type) { path(k) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { let (v, k) = try next(); return try v.unsigned(type) { path(k) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { let (v, k) = try next(); return try v.unsigned(type) { path(k) } }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (v, k) = try next()
        return try v.decode(type, parent: decoder, key: k) { path(k) }
    }

    private mutating func nextDecoder() throws -> JSONValueDecoding {
        let (v, k) = try next()
        return JSONValueDecoding(input: decoder.input, start: v.start, end: v.end, parent: decoder, key: k)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try nextDecoder().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try nextDecoder().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { try nextDecoder() }
}
