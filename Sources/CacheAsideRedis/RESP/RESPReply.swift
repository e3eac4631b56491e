/// A reply from a Redis server, in the RESP2 protocol's terms.
///
/// Bulk strings are bytes (`[UInt8]`): Redis values are binary-safe, and only the
/// caller knows whether a value is text.
public enum RESPReply: Sendable, Hashable, CustomStringConvertible {
    /// A status reply such as `OK` or `PONG`.
    case simpleString(String)
    /// An error reply, e.g. `WRONGTYPE Operation against a key holding the wrong kind of value`.
    case error(String)
    /// An integer reply.
    case integer(Int64)
    /// A bulk string reply: binary-safe bytes.
    case bulkString([UInt8])
    /// The null bulk string or null array (a missing key, a failed `SET NX`, ...).
    case null
    /// An array reply; its elements may themselves be arrays.
    case array([RESPReply])

    /// True for ``null``.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The bytes of a bulk string, or the UTF-8 of a simple string; `nil` otherwise.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let text): return Array(text.utf8)
        default: return nil
        }
    }

    /// A bulk or simple string decoded as UTF-8 (invalid sequences repaired); `nil`
    /// for other replies.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .simpleString(let text): return text
        default: return nil
        }
    }

    /// The value of an integer reply, or of a bulk string holding a decimal integer
    /// (as Lua scripts and some commands return); `nil` otherwise.
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString(let bytes): return Int64(String(decoding: bytes, as: UTF8.self))
        default: return nil
        }
    }

    /// The elements of an array reply; `nil` otherwise.
    public var array: [RESPReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The message of an error reply; `nil` otherwise.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }

    /// A short, readable rendering for logs and test failures. Bulk strings longer than
    /// 64 bytes are abbreviated.
    public var description: String {
        switch self {
        case .simpleString(let text): return "+\(text)"
        case .error(let message): return "-\(message)"
        case .integer(let value): return ":\(value)"
        case .null: return "(null)"
        case .bulkString(let bytes):
            let shown = bytes.prefix(64)
            let text = String(decoding: shown, as: UTF8.self)
            let more = bytes.count > 64 ? "... (\(bytes.count) bytes)" : ""
            return "\"\(text)\"\(more)"
        case .array(let elements):
            return "[" + elements.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
