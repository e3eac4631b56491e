/// How long a key set with ``RESPCommands/SET`` lives.
public enum RESPExpiration: Sendable, Hashable {
    /// `EX seconds`.
    case seconds(Int)
    /// `PX milliseconds`.
    case milliseconds(Int)
}

/// When ``RESPCommands/SET`` writes.
public enum RESPSetCondition: Sendable, Hashable {
    /// Always.
    case always
    /// Only if the key does not exist (`NX`).
    case ifNotExists
    /// Only if the key exists (`XX`).
    case ifExists
}

extension RESPCommands {
    /// `GET key`: the value's bytes, or `nil` if the key does not exist.
    ///
    /// A key holding something other than a string is a server error (`WRONGTYPE`).
    public struct GET: RESPCommand {
        /// The key.
        public var key: String

        /// `GET key`.
        public init(_ key: String) { self.key = key }

        public static var name: String { "GET" }
        public var keys: [String] { [key] }
        public var isReadOnly: Bool { true }

        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("GET", argumentCount: 1)
            encoder.argument(key)
        }

        public func decode(_ reply: RESPReply) throws(RESPError) -> [UInt8]? {
            try reply.decodeOptionalBytes(for: Self.name)
        }
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`: true if the value was written, false
    /// if the condition prevented it.
    public struct SET: RESPCommand {
        /// The key.
        public var key: String
        /// The value's bytes.
        public var value: [UInt8]
        /// How long the key lives; `nil` for no expiration.
        public var expiration: RESPExpiration?
        /// When to write.
        public var condition: RESPSetCondition

        /// `SET key value [EX|PX] [NX|XX]`.
        public init(_ key: String, to value: [UInt8], expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always) {
            self.key = key
            self.value = value
            self.expiration = expiration
            self.condition = condition
        }

        public static var name: String { "SET" }
        public var keys: [String] { [key] }

        public func encode(into encoder: inout RESPCommandEncoder) {
            let count = 2 + (expiration == nil ? 0 : 2) + (condition == .always ? 0 : 1)
            encoder.command("SET", argumentCount: count)
            encoder.argument(key)
            encoder.argument(value)
            switch expiration {
            case .seconds(let seconds)?:
                encoder.argument("EX" as StaticString)
                encoder.argument(Int64(seconds))
            case .milliseconds(let milliseconds)?:
                encoder.argument("PX" as StaticString)
                encoder.argument(Int64(milliseconds))
            case nil:
                break
            }
            switch condition {
            case .always: break
            case .ifNotExists: encoder.argument("NX" as StaticString)
            case .ifExists: encoder.argument("XX" as StaticString)
            }
        }

        public func decode(_ reply: RESPReply) throws(RESPError) -> Bool {
            try reply.decodeOKOrNull(for: Self.name)
        }
    }

    /// `MGET key...`: one entry per key, in order, `nil` where the key does not exist
    /// (or holds something other than a string).
    public struct MGET: RESPCommand {
        /// The keys (at least one).
        public var keys: [String]

        /// `MGET key...`.
        public init(_ keys: [String]) { self.keys = keys }

        public static var name: String { "MGET" }
        public var isReadOnly: Bool { true }

        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("MGET", argumentCount: keys.count)
            encoder.arguments(keys)
        }

        public func decode(_ reply: RESPReply) throws(RESPError) -> [[UInt8]?] {
            let elements = try reply.decodeArray(for: Self.name)
            guard elements.count == keys.count else { throw .unexpectedReply(to: Self.name, reply) }
            var values: [[UInt8]?] = []
            values.reserveCapacity(elements.count)
            for element in elements {
                switch element {
                case .bulkString(let bytes): values.append(bytes)
                case .null: values.append(nil)
                default: throw .unexpectedReply(to: Self.name, reply)
                }
            }
            return values
        }
    }

    /// `INCR key`: the value after the increment.
    public struct INCR: RESPCommand {
        /// The key.
        public var key: String
        /// `INCR key`.
        public init(_ key: String) { self.key = key }
        public static var name: String { "INCR" }
        public var keys: [String] { [key] }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("INCR", argumentCount: 1)
            encoder.argument(key)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int64 { try reply.decodeInteger(for: Self.name) }
    }

    /// `INCRBY key increment`: the value after the increment.
    public struct INCRBY: RESPCommand {
        /// The key.
        public var key: String
        /// What to add (may be negative).
        public var increment: Int64
        /// `INCRBY key increment`.
        public init(_ key: String, _ increment: Int64) {
            self.key = key
            self.increment = increment
        }
        public static var name: String { "INCRBY" }
        public var keys: [String] { [key] }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("INCRBY", argumentCount: 2)
            encoder.argument(key)
            encoder.argument(increment)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int64 { try reply.decodeInteger(for: Self.name) }
    }
}

extension RESPCommand where Self == RESPCommands.GET {
    /// `GET key`.
    public static func get(_ key: String) -> Self { Self(key) }
}

extension RESPCommand where Self == RESPCommands.SET {
    /// `SET key value [EX|PX] [NX|XX]`.
    public static func set(
        _ key: String, to value: [UInt8], expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) -> Self {
        Self(key, to: value, expiration: expiration, condition: condition)
    }

    /// `SET` with a string value, sent as its UTF-8.
    public static func set(
        _ key: String, to value: String, expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) -> Self {
        Self(key, to: Array(value.utf8), expiration: expiration, condition: condition)
    }
}

extension RESPCommand where Self == RESPCommands.MGET {
    /// `MGET key...`.
    public static func mget(_ keys: [String]) -> Self { Self(keys) }
}

extension RESPCommand where Self == RESPCommands.INCR {
    /// `INCR key`.
    public static func incr(_ key: String) -> Self { Self(key) }
}

extension RESPCommand where Self == RESPCommands.INCRBY {
    /// `INCRBY key increment`.
    public static func incrBy(_ key: String, _ increment: Int64) -> Self { Self(key, increment) }
}
