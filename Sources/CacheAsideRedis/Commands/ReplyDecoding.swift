/// Decoding helpers for command types (``RESPCommand/decode(_:)``): each checks the
/// reply's type and names the command in the error when it is not what the command
/// returns.
extension RESPReply {
    /// A bulk string's bytes, or `nil` for a null reply.
    public func decodeOptionalBytes(for command: String) throws(RESPError) -> [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .null: return nil
        default: throw .unexpectedReply(to: command, self)
        }
    }

    /// A bulk string's bytes (or a simple string's UTF-8).
    public func decodeBytes(for command: String) throws(RESPError) -> [UInt8] {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let text): return Array(text.utf8)
        default: throw .unexpectedReply(to: command, self)
        }
    }

    /// A bulk or simple string as text.
    public func decodeString(for command: String) throws(RESPError) -> String {
        switch self {
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .simpleString(let text): return text
        default: throw .unexpectedReply(to: command, self)
        }
    }

    /// An integer reply.
    public func decodeInteger(for command: String) throws(RESPError) -> Int64 {
        guard case .integer(let value) = self else { throw .unexpectedReply(to: command, self) }
        return value
    }

    /// An array reply's elements.
    public func decodeArray(for command: String) throws(RESPError) -> [RESPReply] {
        guard case .array(let elements) = self else { throw .unexpectedReply(to: command, self) }
        return elements
    }

    /// `+OK` (any simple string) as true, a null reply (a condition not met) as false.
    public func decodeOKOrNull(for command: String) throws(RESPError) -> Bool {
        switch self {
        case .simpleString: return true
        case .null: return false
        default: throw .unexpectedReply(to: command, self)
        }
    }
}

extension RESPError {
    static func unexpectedReply(to command: String, _ reply: RESPReply) -> RESPError {
        .protocolError("unexpected reply to \(command): \(reply)")
    }
}
