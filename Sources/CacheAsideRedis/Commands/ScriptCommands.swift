extension RESPCommands {
    /// `EVALSHA sha1 numkeys key... arg...`: runs a ``RESPScript`` by its SHA-1 and
    /// returns the script's reply.
    ///
    /// When the server does not have the script (`NOSCRIPT`: after a restart, a
    /// failover or `SCRIPT FLUSH`), the client loads it with `SCRIPT LOAD` and runs the
    /// command again, once, for single commands and pipelines alike; a transaction
    /// loads its scripts before `MULTI`. An error the script raises is a server error.
    public struct EVALSHA: RESPCommand {
        /// The script.
        public var runs: RESPScript
        /// `KEYS` of the script.
        public var keys: [String]
        /// `ARGV` of the script.
        public var arguments: [[UInt8]]

        /// `EVALSHA` of `script` with its keys and arguments.
        public init(_ script: RESPScript, keys: [String] = [], arguments: [[UInt8]] = []) {
            self.runs = script
            self.keys = keys
            self.arguments = arguments
        }

        public static var name: String { "EVALSHA" }
        public var script: RESPScript? { runs }

        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("EVALSHA", argumentCount: 2 + keys.count + arguments.count)
            encoder.argument(runs.sha1)
            encoder.argument(keys.count)
            encoder.arguments(keys)
            for argument in arguments { encoder.argument(argument) }
        }

        public func decode(_ reply: RESPReply) throws(RESPError) -> RESPReply { reply }
    }

    /// `SCRIPT LOAD source`: the script's SHA-1 as the server computed it.
    public struct SCRIPTLOAD: RESPCommand {
        /// The script.
        public var loads: RESPScript

        /// `SCRIPT LOAD` of `script`.
        public init(_ script: RESPScript) { self.loads = script }

        public static var name: String { "SCRIPT" }

        public func encode(into encoder: inout RESPCommandEncoder) {
            encoder.command("SCRIPT", argumentCount: 2)
            encoder.argument("LOAD" as StaticString)
            encoder.argument(loads.source)
        }

        /// - Throws: ``RESPError`` of kind ``RESPError/Kind/protocol`` when the server
        ///   names the script differently than its local SHA-1.
        public func decode(_ reply: RESPReply) throws(RESPError) -> String {
            let sha1 = try reply.decodeString(for: "SCRIPT LOAD")
            guard sha1 == loads.sha1 else {
                throw .protocolError("SCRIPT LOAD returned \(reply), expected the script's SHA-1 \(loads.sha1)")
            }
            return sha1
        }
    }
}

extension RESPCommand where Self == RESPCommands.EVALSHA {
    /// `EVALSHA` of `script`, with `NOSCRIPT` handled by the client.
    public static func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [[UInt8]] = []) -> Self {
        Self(script, keys: keys, arguments: arguments)
    }

    /// `EVALSHA` with string arguments, sent as their UTF-8.
    public static func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [String]) -> Self {
        Self(script, keys: keys, arguments: arguments.map { Array($0.utf8) })
    }
}

extension RESPCommand where Self == RESPCommands.SCRIPTLOAD {
    /// `SCRIPT LOAD source`.
    public static func scriptLoad(_ script: RESPScript) -> Self { Self(script) }
}
