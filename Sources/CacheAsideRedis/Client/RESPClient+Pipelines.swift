extension RESPClient {
    /// Runs several commands back to back on one connection, in one write, and returns
    /// each command's own result, in order.
    ///
    /// ```swift
    /// let (lease, ttl) = try await redis.pipeline(
    ///     .set(key, to: token, expiration: .milliseconds(3000), condition: .ifNotExists),
    ///     .pttl(key))
    /// if try lease.get() { ... }
    /// ```
    ///
    /// A command the server refused has a `.failure` with its ``RESPError`` (kind
    /// ``RESPError/Kind/server``); the others are unaffected. Scripts the server does
    /// not know (`NOSCRIPT`) are loaded and their commands sent again, once. The
    /// pipeline shares one timeout (``RESPConfiguration/commandTimeout``). It is not a
    /// transaction: other clients' commands may run between these (see
    /// ``transaction(_:)-(repeat each C)``).
    ///
    /// - Throws: ``RESPError`` for a connection failure or a timeout (then none of the
    ///   results is known); `CancellationError`.
    public func pipeline<each C: RESPCommand>(_ commands: repeat each C) async throws -> (repeat Result<(each C).Response, RESPError>) {
        var count = 0
        var scripts: [RESPScript?] = []
        for command in repeat each commands {
            count += 1
            scripts.append(command.script)
        }
        let replies = try await pipelineReplies(count: count, scripts: scripts) { encoder, only in
            var index = 0
            for command in repeat each commands {
                if only?.contains(index) ?? true { command.encode(into: &encoder) }
                index += 1
            }
        }
        var position = 0
        func next<X: RESPCommand>(_ command: X) -> Result<X.Response, RESPError> {
            defer { position += 1 }
            return decodeResult(command, replies[position])
        }
        return (repeat next(each commands))
    }

    /// Runs a list of commands of one type in one round trip, like
    /// ``pipeline(_:)-(repeat each C)``; wrap commands of different types in
    /// ``AnyRESPCommand``.
    public func pipeline<C: RESPCommand>(_ commands: [C]) async throws -> [Result<C.Response, RESPError>] {
        guard !commands.isEmpty else { return [] }
        let replies = try await pipelineReplies(count: commands.count, scripts: commands.map(\.script)) { encoder, only in
            if let only {
                for i in only.sorted() { commands[i].encode(into: &encoder) }
            } else {
                for command in commands { command.encode(into: &encoder) }
            }
        }
        var results: [Result<C.Response, RESPError>] = []
        results.reserveCapacity(commands.count)
        for (command, reply) in zip(commands, replies) { results.append(decodeResult(command, reply)) }
        return results
    }

    /// Sends a pipeline, then, if scripts came back `NOSCRIPT`, loads them and sends
    /// those commands again (`encode` with the indexes to send, or `nil` for all).
    func pipelineReplies(
        count: Int, scripts: [RESPScript?], encode: (inout RESPCommandEncoder, Set<Int>?) -> Void
    ) async throws -> [RESPReply] {
        let connection = connection()
        let reply = try await connection.send(replies: count, pipeline: true) { encode(&$0, nil) }
        guard case .array(var replies) = reply, replies.count == count else {
            throw RESPError.protocolError("pipeline of \(count) commands got \(reply)")
        }
        let unknown = replies.indices.filter { i in
            scripts[i] != nil && replies[i].errorMessage?.hasPrefix("NOSCRIPT") == true
        }
        guard !unknown.isEmpty else { return replies }
        _ = try await loadScripts(unknown.compactMap { scripts[$0] }, on: connection)
        let only = Set(unknown)
        let again = try await connection.send(replies: unknown.count, pipeline: true) { encode(&$0, only) }
        guard case .array(let retried) = again, retried.count == unknown.count else {
            throw RESPError.protocolError("pipeline of \(unknown.count) commands got \(again)")
        }
        for (position, index) in unknown.sorted().enumerated() { replies[index] = retried[position] }
        return replies
    }

    // MARK: - Transactions

    /// Runs several commands atomically (`MULTI` ... `EXEC`), in one round trip: no other
    /// client's command runs between them.
    ///
    /// Scripts the commands run are loaded (`SCRIPT LOAD`) in the same write, before
    /// `MULTI`, so that none fails with `NOSCRIPT` inside the transaction.
    ///
    /// - Returns: each command's result. A command that failed while it ran (a
    ///   `WRONGTYPE`, say) has its error; the others ran (Redis does not roll back).
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/server`` when the server
    ///   refused the transaction as a whole (`EXECABORT`: a command was rejected when
    ///   queued, an unknown command or wrong arity, and then none ran); a connection
    ///   failure or timeout.
    public func transaction<each C: RESPCommand>(_ commands: repeat each C) async throws -> (repeat Result<(each C).Response, RESPError>) {
        var count = 0
        var scripts: [RESPScript] = []
        for command in repeat each commands {
            count += 1
            if let script = command.script { scripts.append(script) }
        }
        let replies = try await transactionReplies(count: count, scripts: scripts) { encoder in
            for command in repeat each commands { command.encode(into: &encoder) }
        }
        var position = 0
        func next<X: RESPCommand>(_ command: X) -> Result<X.Response, RESPError> {
            defer { position += 1 }
            return decodeResult(command, replies[position])
        }
        return (repeat next(each commands))
    }

    /// ``transaction(_:)-(repeat each C)`` for a list of commands of one type.
    public func transaction<C: RESPCommand>(_ commands: [C]) async throws -> [Result<C.Response, RESPError>] {
        guard !commands.isEmpty else { return [] }
        let replies = try await transactionReplies(count: commands.count, scripts: commands.compactMap(\.script)) { encoder in
            for command in commands { command.encode(into: &encoder) }
        }
        return zip(commands, replies).map { decodeResult($0, $1) }
    }

    private func transactionReplies(
        count: Int, scripts: [RESPScript], encode: (inout RESPCommandEncoder) -> Void
    ) async throws -> [RESPReply] {
        var unique: [RESPScript] = []
        for script in scripts where !unique.contains(where: { $0.sha1 == script.sha1 }) { unique.append(script) }
        let reply = try await connection().send(replies: unique.count + count + 2, pipeline: true) { encoder in
            for script in unique { RESPCommands.SCRIPTLOAD(script).encode(into: &encoder) }
            encoder.command("MULTI", argumentCount: 0)
            encode(&encoder)
            encoder.command("EXEC", argumentCount: 0)
        }
        guard case .array(let all) = reply, all.count == unique.count + count + 2 else {
            throw RESPError.protocolError("transaction of \(count) commands got \(reply)")
        }
        for (script, loaded) in zip(unique, all) {
            if case .error(let message) = loaded { throw RESPError.server("SCRIPT LOAD \(script.sha1) before the transaction: \(message)") }
        }
        let replies = all.dropFirst(unique.count)
        if case .error(let message) = replies[replies.startIndex] { throw RESPError.server(message) }
        let queued = replies.dropFirst().prefix(count)
        switch replies[replies.endIndex - 1] {
        case .array(let results) where results.count == count:
            return results
        case .error(let message):
            // EXECABORT: name the command the server rejected.
            let rejected = queued.enumerated().first { $0.element.errorMessage != nil }
            let detail = rejected.map { " (command \($0.offset + 1) of \(count): \($0.element.errorMessage ?? ""))" } ?? ""
            throw RESPError.server(message + detail)
        case .null:
            throw RESPError.server("EXECABORT the transaction was aborted (a watched key changed)")
        case let other:
            throw RESPError.protocolError("EXEC of \(count) commands got \(other)")
        }
    }
}

/// A reply as a command's typed result: an error reply is its ``RESPError``.
func decodeResult<C: RESPCommand>(_ command: C, _ reply: RESPReply) -> Result<C.Response, RESPError> {
    if case .error(let message) = reply { return .failure(.server(message)) }
    do {
        return .success(try command.decode(reply))
    } catch {
        return .failure(error)
    }
}
