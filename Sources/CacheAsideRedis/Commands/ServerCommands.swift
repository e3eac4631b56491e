extension RESPCommands {
    /// `PING`: `PONG`.
    public struct PING: RESPCommand {
        /// `PING`.
        public init() {}
        public static var name: String { "PING" }
        public var isReadOnly: Bool { true }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("PING", argumentCount: 0)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> String { try reply.decodeString(for: Self.name) }
    }

    /// `ECHO message`: the message.
    public struct ECHO: RESPCommand {
        /// The bytes to echo.
        public var message: [UInt8]
        /// `ECHO message`.
        public init(_ message: [UInt8]) { self.message = message }
        public static var name: String { "ECHO" }
        public var isReadOnly: Bool { true }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("ECHO", argumentCount: 1)
            encoder.argument(message)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> [UInt8] { try reply.decodeBytes(for: Self.name) }
    }

    /// `PUBLISH channel message`: how many subscribers received it.
    public struct PUBLISH: RESPCommand {
        /// The channel.
        public var channel: String
        /// The message's bytes.
        public var message: [UInt8]
        /// `PUBLISH channel message`.
        public init(_ message: [UInt8], to channel: String) {
            self.channel = channel
            self.message = message
        }
        public static var name: String { "PUBLISH" }
        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("PUBLISH", argumentCount: 2)
            encoder.argument(channel)
            encoder.argument(message)
        }
        public func decode(_ reply: RESPReply) throws(RESPError) -> Int { Int(try reply.decodeInteger(for: Self.name)) }
    }

    /// Any command, given as its name and arguments (binary-safe); the response is the
    /// raw reply. Keys are not known (`keys` is empty): a cluster client cannot route
    /// it by key.
    public struct Raw: RESPCommand {
        /// The command's name and arguments.
        public var arguments: [[UInt8]]

        /// A command from raw arguments, its name first (`[Array("SCAN".utf8), Array("0".utf8)]`).
        public init(_ arguments: [[UInt8]]) { self.arguments = arguments }

        /// A command from strings, sent as their UTF-8 (`Raw(["SCAN", "0"])`).
        public init(_ arguments: [String]) { self.arguments = arguments.map { Array($0.utf8) } }

        public static var name: String { "" }

        public func encode(into encoder: inout RESPCommandEncoder) {
            guard let name = arguments.first else {
                // Nothing to send: an empty array, which the server answers with nothing.
                // Validated before sending (see RESPClient); never reached there.
                return
            }
            encoder.command(name: name, argumentCount: arguments.count - 1)
            for argument in arguments.dropFirst() { encoder.argument(argument) }
        }

        public func decode(_ reply: RESPReply) throws(RESPError) -> RESPReply { reply }
    }
}

extension RESPCommand where Self == RESPCommands.PING {
    /// `PING`.
    public static var ping: Self { Self() }
}

extension RESPCommand where Self == RESPCommands.ECHO {
    /// `ECHO message`.
    public static func echo(_ message: [UInt8]) -> Self { Self(message) }
}

extension RESPCommand where Self == RESPCommands.PUBLISH {
    /// `PUBLISH channel message`.
    public static func publish(_ message: [UInt8], to channel: String) -> Self { Self(message, to: channel) }
    /// `PUBLISH` with a string message, sent as its UTF-8.
    public static func publish(_ message: String, to channel: String) -> Self { Self(Array(message.utf8), to: channel) }
}

extension RESPCommand where Self == RESPCommands.Raw {
    /// Any command from raw arguments, its name first.
    public static func raw(_ arguments: [[UInt8]]) -> Self { Self(arguments) }
    /// Any command from strings: `.raw("SCAN", "0", "MATCH", "user:*")`.
    public static func raw(_ arguments: String...) -> Self { Self(arguments) }
}
