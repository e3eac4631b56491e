/// Writes commands in RESP: each command an array of bulk strings
/// (`*<count>\r\n` then `$<length>\r\n<bytes>\r\n` per argument), straight into the
/// bytes that go to the socket. Binary-safe: arguments are bytes, strings are sent as
/// their UTF-8.
///
/// A command says how many arguments follow its name, then appends them:
///
/// ```swift
/// encoder.command("SET", argumentCount: 4)
/// encoder.argument(key)
/// encoder.argument(value)
/// encoder.argument("PX" as StaticString)
/// encoder.argument(Int64(3000))
/// ```
public struct RESPCommandEncoder: Sendable {
    /// The encoded bytes.
    public internal(set) var bytes: [UInt8]
    /// Arguments still expected by the command being written (checked in debug builds).
    var expectedArguments = 0

    /// An encoder with an empty buffer.
    public init() {
        bytes = []
    }

    init(reusing buffer: [UInt8]) {
        bytes = buffer
    }

    /// Starts a command: its name followed by `argumentCount` arguments.
    public mutating func command(_ name: StaticString, argumentCount: Int) {
        assert(expectedArguments == 0, "the previous command got fewer arguments than it announced")
        bytes.append(UInt8(ascii: "*"))
        appendDecimal(UInt64(argumentCount + 1))
        bytes.append(0x0D)
        bytes.append(0x0A)
        appendBulk(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        expectedArguments = argumentCount
    }

    /// Starts a command whose name is only known at run time (`Raw` commands).
    public mutating func command(name: some Collection<UInt8>, argumentCount: Int) {
        assert(expectedArguments == 0, "the previous command got fewer arguments than it announced")
        bytes.append(UInt8(ascii: "*"))
        appendDecimal(UInt64(argumentCount + 1))
        bytes.append(0x0D)
        bytes.append(0x0A)
        appendBulk(name)
        expectedArguments = argumentCount
    }

    /// Appends a string argument, as its UTF-8.
    public mutating func argument(_ string: String) {
        took()
        var string = string
        string.withUTF8 { appendBulk(UnsafeRawBufferPointer($0)) }
    }

    /// Appends a constant argument (`"PX"`, `"NX"`).
    public mutating func argument(_ literal: StaticString) {
        took()
        appendBulk(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Appends a binary argument.
    public mutating func argument(_ value: [UInt8]) {
        took()
        value.withUnsafeBytes { appendBulk($0) }
    }

    /// Appends a binary argument.
    public mutating func argument(_ value: some Collection<UInt8>) {
        took()
        appendBulk(value)
    }

    /// Appends an integer argument, in decimal.
    public mutating func argument(_ value: Int64) {
        took()
        // Sign and digits first, into scratch, to know the length.
        var magnitude = value.magnitude
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes
        withUnsafeMutableBytes(of: &scratch) { raw in
            var i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                i -= 1
                raw[i] = UInt8(ascii: "-")
            }
            appendBulk(UnsafeRawBufferPointer(rebasing: raw[i...]))
        }
    }

    /// Appends an integer argument, in decimal.
    public mutating func argument(_ value: Int) {
        argument(Int64(value))
    }

    /// Appends several string arguments (keys).
    public mutating func arguments(_ strings: [String]) {
        for string in strings { argument(string) }
    }

    // MARK: - Bytes

    @inline(__always)
    private mutating func took() {
        assert(expectedArguments > 0, "a command got more arguments than it announced")
        expectedArguments -= 1
    }

    @inline(__always)
    private mutating func appendBulk(_ raw: UnsafeRawBufferPointer) {
        bytes.append(UInt8(ascii: "$"))
        appendDecimal(UInt64(raw.count))
        bytes.append(0x0D)
        bytes.append(0x0A)
        bytes.append(contentsOf: raw)
        bytes.append(0x0D)
        bytes.append(0x0A)
    }

    private mutating func appendBulk(_ value: some Collection<UInt8>) {
        if let done: Void = value.withContiguousStorageIfAvailable({ appendBulk(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        bytes.append(UInt8(ascii: "$"))
        appendDecimal(UInt64(value.count))
        bytes.append(0x0D)
        bytes.append(0x0A)
        bytes.append(contentsOf: value)
        bytes.append(0x0D)
        bytes.append(0x0A)
    }

    @inline(__always)
    private mutating func appendDecimal(_ value: UInt64) {
        if value < 10 {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
            return
        }
        var v = value
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { raw in
            var i = raw.count
            while v > 0 {
                i -= 1
                raw[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[i...]))
        }
    }
}
