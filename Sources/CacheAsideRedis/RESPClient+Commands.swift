/// How long a key set with ``RESPClient/set(_:to:expiration:condition:)`` lives.
public enum RESPExpiration: Sendable, Hashable {
    /// `EX seconds`.
    case seconds(Int)
    /// `PX milliseconds`.
    case milliseconds(Int)
}

/// When ``RESPClient/set(_:to:expiration:condition:)`` writes.
public enum RESPSetCondition: Sendable, Hashable {
    /// Always.
    case always
    /// Only if the key does not exist (`NX`).
    case ifNotExists
    /// Only if the key exists (`XX`).
    case ifExists
}

extension RESPClient {
    // MARK: - Strings

    /// `GET key`: the value's bytes, or `nil` if the key does not exist.
    ///
    /// - Throws: ``RESPError``: of kind ``RESPError/Kind/server`` (`WRONGTYPE`) if the
    ///   key holds something other than a string; connection failures and timeouts.
    public func get(_ key: String) async throws -> [UInt8]? {
        switch try await command(RESPEncoder.encode("GET", key)) {
        case .bulkString(let bytes): return bytes
        case .null: return nil
        case let other: throw unexpected("GET", other)
        }
    }

    /// `GET key`, decoded as UTF-8: the value, or `nil` if the key does not exist.
    public func getString(_ key: String) async throws -> String? {
        try await get(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`.
    ///
    /// - Returns: true if the value was written; false if `condition` prevented it
    ///   (`NX` and the key exists, or `XX` and it does not).
    @discardableResult
    public func set(
        _ key: String, to value: [UInt8], expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) async throws -> Bool {
        var arguments: [RedisArgument] = [.literal("SET"), .string(key), .bytes(value)]
        switch expiration {
        case .seconds(let seconds)?:
            arguments.append(.literal("EX"))
            arguments.append(.integer(Int64(seconds)))
        case .milliseconds(let milliseconds)?:
            arguments.append(.literal("PX"))
            arguments.append(.integer(Int64(milliseconds)))
        case nil:
            break
        }
        switch condition {
        case .always: break
        case .ifNotExists: arguments.append(.literal("NX"))
        case .ifExists: arguments.append(.literal("XX"))
        }
        switch try await command(RESPEncoder.encode(arguments)) {
        case .simpleString: return true
        case .null: return false
        case let other: throw unexpected("SET", other)
        }
    }

    /// `SET` with a string value, sent as its UTF-8; see ``set(_:to:expiration:condition:)-(_,[UInt8],_,_)``.
    @discardableResult
    public func set(
        _ key: String, to value: String, expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) async throws -> Bool {
        try await set(key, to: Array(value.utf8), expiration: expiration, condition: condition)
    }

    /// `MGET key...`: one entry per key, in order, `nil` where the key does not exist
    /// (or holds something other than a string).
    public func mget(_ keys: [String]) async throws -> [[UInt8]?] {
        guard !keys.isEmpty else { return [] }
        let reply = try await command(RESPEncoder.encode(keyed("MGET", keys)))
        guard case .array(let elements) = reply, elements.count == keys.count else { throw unexpected("MGET", reply) }
        return try elements.map { element in
            switch element {
            case .bulkString(let bytes): return bytes
            case .null: return nil
            default: throw unexpected("MGET", reply)
            }
        }
    }

    /// `INCR key`: the value after the increment.
    public func incr(_ key: String) async throws -> Int64 {
        try integer("INCR", try await command(RESPEncoder.encode("INCR", key)))
    }

    /// `INCRBY key increment`: the value after the increment.
    public func incrBy(_ key: String, _ increment: Int64) async throws -> Int64 {
        try integer("INCRBY", try await command(RESPEncoder.encode([.literal("INCRBY"), .string(key), .integer(increment)])))
    }

    // MARK: - Keys

    /// `DEL key...`: how many of the keys existed and were removed.
    @discardableResult
    public func del(_ keys: [String]) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return Int(try integer("DEL", try await command(RESPEncoder.encode(keyed("DEL", keys)))))
    }

    /// `DEL key...`.
    @discardableResult
    public func del(_ keys: String...) async throws -> Int {
        try await del(keys)
    }

    /// `UNLINK key...`: like ``del(_:)-([String])`` but the memory is reclaimed in the
    /// background. Returns how many keys existed.
    @discardableResult
    public func unlink(_ keys: [String]) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return Int(try integer("UNLINK", try await command(RESPEncoder.encode(keyed("UNLINK", keys)))))
    }

    /// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
    public func exists(_ keys: [String]) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return Int(try integer("EXISTS", try await command(RESPEncoder.encode(keyed("EXISTS", keys)))))
    }

    /// `EXISTS key`: whether the key exists.
    public func exists(_ key: String) async throws -> Bool {
        try await exists([key]) > 0
    }

    /// `EXPIRE key seconds`: true if the timeout was set (the key exists).
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws -> Bool {
        try integer("EXPIRE", try await command(RESPEncoder.encode([.literal("EXPIRE"), .string(key), .integer(Int64(seconds))]))) == 1
    }

    /// `PEXPIRE key milliseconds`: true if the timeout was set (the key exists).
    @discardableResult
    public func pexpire(_ key: String, milliseconds: Int) async throws -> Bool {
        try integer("PEXPIRE", try await command(RESPEncoder.encode([.literal("PEXPIRE"), .string(key), .integer(Int64(milliseconds))]))) == 1
    }

    /// `TTL key`: the remaining time to live in seconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public func ttl(_ key: String) async throws -> Int64 {
        try integer("TTL", try await command(RESPEncoder.encode("TTL", key)))
    }

    /// `PTTL key`: the remaining time to live in milliseconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public func pttl(_ key: String) async throws -> Int64 {
        try integer("PTTL", try await command(RESPEncoder.encode("PTTL", key)))
    }

    // MARK: - Pub/sub

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: [UInt8], to channel: String) async throws -> Int {
        Int(try integer("PUBLISH", try await command(RESPEncoder.encode([.literal("PUBLISH"), .string(channel), .bytes(message)]))))
    }

    /// `PUBLISH channel message` with a string message, sent as its UTF-8.
    @discardableResult
    public func publish(_ message: String, to channel: String) async throws -> Int {
        try await publish(Array(message.utf8), to: channel)
    }

    // MARK: - Scripts

    /// Runs a Lua script with `EVALSHA`. If the server does not have the script
    /// (`NOSCRIPT`), loads it with `SCRIPT LOAD` and retries once.
    ///
    /// - Returns: the script's reply.
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/server`` for an error the
    ///   script raised (or any other error reply); connection failures and timeouts.
    public func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [[UInt8]] = []) async throws -> RESPReply {
        var encoded: [RedisArgument] = [.literal("EVALSHA"), .string(script.sha1), .integer(Int64(keys.count))]
        encoded.reserveCapacity(3 + keys.count + arguments.count)
        for key in keys { encoded.append(.string(key)) }
        for argument in arguments { encoded.append(.bytes(argument)) }
        let reply = try await execute(RESPEncoder.encode(encoded))
        guard case .error(let message) = reply else { return reply }
        guard message.hasPrefix("NOSCRIPT") else { throw RESPError.server(message) }

        let loaded = try await command(RESPEncoder.encode([.literal("SCRIPT"), .literal("LOAD"), .string(script.source)]))
        guard loaded.string == script.sha1 else {
            throw RESPError.protocolError("SCRIPT LOAD returned \(loaded), expected the script's SHA-1 \(script.sha1)")
        }
        logger.debug("loaded script \(script.sha1) after NOSCRIPT")
        return try await command(RESPEncoder.encode(encoded))
    }

    /// ``evalSHA(_:keys:arguments:)-(_,_,[[UInt8]])`` with string arguments, sent as
    /// their UTF-8.
    public func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [String]) async throws -> RESPReply {
        try await evalSHA(script, keys: keys, arguments: arguments.map { Array($0.utf8) })
    }

    // MARK: - Helpers

    private func keyed(_ name: StaticString, _ keys: [String]) -> [RedisArgument] {
        var arguments: [RedisArgument] = [.literal(name)]
        arguments.reserveCapacity(keys.count + 1)
        for key in keys { arguments.append(.string(key)) }
        return arguments
    }

    private func integer(_ command: String, _ reply: RESPReply) throws -> Int64 {
        guard case .integer(let value) = reply else { throw unexpected(command, reply) }
        return value
    }

    private func unexpected(_ command: String, _ reply: RESPReply) -> RESPError {
        .protocolError("unexpected reply to \(command): \(reply)")
    }
}
