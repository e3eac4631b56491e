extension RESPCommands {
    /// `DEL key...`: how many of the keys existed and were removed.
    public struct DEL: RESPCommand {
        /// The keys (at least one).
        public var keys: [String]
        /// `DEL key...`.
        public init(_ keys: [String]) { self.keys = keys }
        public static var name: String { "DEL" }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("DEL", argumentCount: keys.count)
            encoder.arguments(keys)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int { Int(try reply.decodeInteger(for: Self.name)) }
    }

    /// `UNLINK key...`: like ``DEL`` but the memory is reclaimed in the background.
    /// Returns how many of the keys existed.
    public struct UNLINK: RESPCommand {
        /// The keys (at least one).
        public var keys: [String]
        /// `UNLINK key...`.
        public init(_ keys: [String]) { self.keys = keys }
        public static var name: String { "UNLINK" }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("UNLINK", argumentCount: keys.count)
            encoder.arguments(keys)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int { Int(try reply.decodeInteger(for: Self.name)) }
    }

    /// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
    public struct EXISTS: RESPCommand {
        /// The keys (at least one).
        public var keys: [String]
        /// `EXISTS key...`.
        public init(_ keys: [String]) { self.keys = keys }
        public static var name: String { "EXISTS" }
        public var isReadOnly: Bool { true }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("EXISTS", argumentCount: keys.count)
            encoder.arguments(keys)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int { Int(try reply.decodeInteger(for: Self.name)) }
    }

    /// `EXPIRE key seconds`: true if the timeout was set (the key exists).
    public struct EXPIRE: RESPCommand {
        /// The key.
        public var key: String
        /// Seconds to live.
        public var seconds: Int
        /// `EXPIRE key seconds`.
        public init(_ key: String, seconds: Int) {
            self.key = key
            self.seconds = seconds
        }
        public static var name: String { "EXPIRE" }
        public var keys: [String] { [key] }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("EXPIRE", argumentCount: 2)
            encoder.argument(key)
            encoder.argument(seconds)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Bool { try reply.decodeInteger(for: Self.name) == 1 }
    }

    /// `PEXPIRE key milliseconds`: true if the timeout was set (the key exists).
    public struct PEXPIRE: RESPCommand {
        /// The key.
        public var key: String
        /// Milliseconds to live.
        public var milliseconds: Int
        /// `PEXPIRE key milliseconds`.
        public init(_ key: String, milliseconds: Int) {
            self.key = key
            self.milliseconds = milliseconds
        }
        public static var name: String { "PEXPIRE" }
        public var keys: [String] { [key] }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("PEXPIRE", argumentCount: 2)
            encoder.argument(key)
            encoder.argument(milliseconds)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Bool { try reply.decodeInteger(for: Self.name) == 1 }
    }

    /// `TTL key`: the remaining time to live in seconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public struct TTL: RESPCommand {
        /// The key.
        public var key: String
        /// `TTL key`.
        public init(_ key: String) { self.key = key }
        public static var name: String { "TTL" }
        public var keys: [String] { [key] }
        public var isReadOnly: Bool { true }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("TTL", argumentCount: 1)
            encoder.argument(key)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int64 { try reply.decodeInteger(for: Self.name) }
    }

    /// `PTTL key`: the remaining time to live in milliseconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public struct PTTL: RESPCommand {
        /// The key.
        public var key: String
        /// `PTTL key`.
        public init(_ key: String) { self.key = key }
        public static var name: String { "PTTL" }
        public var keys: [String] { [key] }
        public var isReadOnly: Bool { true }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("PTTL", argumentCount: 1)
            encoder.argument(key)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int64 { try reply.decodeInteger(for: Self.name) }
    }
}

extension RESPCommand where Self == RESPCommands.DEL {
    /// `DEL key...`.
    public static func del(_ keys: [String]) -> Self { Self(keys) }
    /// `DEL key...`.
    public static func del(_ keys: String...) -> Self { Self(keys) }
}

extension RESPCommand where Self == RESPCommands.UNLINK {
    /// `UNLINK key...`.
    public static func unlink(_ keys: [String]) -> Self { Self(keys) }
}

extension RESPCommand where Self == RESPCommands.EXISTS {
    /// `EXISTS key...`.
    public static func exists(_ keys: [String]) -> Self { Self(keys) }
}

extension RESPCommand where Self == RESPCommands.EXPIRE {
    /// `EXPIRE key seconds`.
    public static func expire(_ key: String, seconds: Int) -> Self { Self(key, seconds: seconds) }
}

extension RESPCommand where Self == RESPCommands.PEXPIRE {
    /// `PEXPIRE key milliseconds`.
    public static func pexpire(_ key: String, milliseconds: Int) -> Self { Self(key, milliseconds: milliseconds) }
}

extension RESPCommand where Self == RESPCommands.TTL {
    /// `TTL key`.
    public static func ttl(_ key: String) -> Self { Self(key) }
}

extension RESPCommand where Self == RESPCommands.PTTL {
    /// `PTTL key`.
    public static func pttl(_ key: String) -> Self { Self(key) }
}
