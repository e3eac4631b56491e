/// The first generation's byte-array forms, kept while callers move to typed commands.
///
/// Each is a thin wrapper over ``RESPClient/execute(_:)`` or a pipeline of
/// ``RESPCommands/Raw`` commands; new code should use the typed commands instead:
///
/// | old form | typed replacement |
/// |---|---|
/// | `send(_: [[UInt8]])` | `execute(.raw(arguments))`, or the command's own type |
/// | `pipeline(_: [[[UInt8]]])` | `pipeline(_:)` with typed commands (`repeat each` or `[C]`, ``AnyRESPCommand`` to mix types) |
extension RESPClient {
    /// Sends any command, given as its raw arguments (binary-safe), and returns the
    /// reply.
    ///
    /// ```swift
    /// let reply = try await redis.send([Array("SCAN".utf8), Array("0".utf8)])
    /// ```
    ///
    /// - Throws: ``RESPError``: a server error reply (kind ``RESPError/Kind/server``,
    ///   with the server's text), or a connection failure or timeout.
    public func send(_ arguments: [[UInt8]]) async throws -> RESPReply {
        guard !arguments.isEmpty else { throw RESPError.emptyCommand }
        return try await execute(RESPCommands.Raw(arguments))
    }

    /// Sends several commands given as raw arguments back to back on one connection,
    /// in one write, and returns their raw replies in order. The old form of
    /// ``pipeline(_:)-(repeat each C)``.
    ///
    /// Server errors do not throw here: a command the server refused has an
    /// ``RESPReply/error(_:)`` reply in its place. `EVAL`/`EVALSHA` built by hand get no
    /// `NOSCRIPT` handling (``RESPCommands/EVALSHA`` does).
    ///
    /// - Throws: ``RESPError`` for a connection failure or timeout (then none of the
    ///   replies is known).
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RESPReply] {
        guard !commands.isEmpty else { return [] }
        guard !commands.contains(where: \.isEmpty) else { throw RESPError.emptyCommand }
        return try await pipelineReplies(count: commands.count, scripts: Array(repeating: nil, count: commands.count)) { encoder, _ in
            for command in commands { RESPCommands.Raw(command).encode(into: &encoder) }
        }
    }
}
