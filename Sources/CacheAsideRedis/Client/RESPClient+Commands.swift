/// One-line conveniences over ``RESPClientProtocol/execute(_:)``, for ``RESPClient`` and
/// ``RESPClusterClient`` alike.
extension RESPClientProtocol {
    // MARK: - Strings

    /// `GET key`: the value's bytes, or `nil` if the key does not exist.
    ///
    /// - Throws: ``RESPError``: of kind ``RESPError/Kind/server`` (`WRONGTYPE`) if the
    ///   key holds something other than a string; connection failures and timeouts.
    public func get(_ key: String) async throws -> [UInt8]? {
        try await execute(RESPCommands.GET(key))
    }

    /// `GET key`, decoded as UTF-8: the value, or `nil` if the key does not exist.
    public func getString(_ key: String) async throws -> String? {
        try await execute(RESPCommands.GET(key)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`.
    ///
    /// - Returns: true if the value was written; false if `condition` prevented it
    ///   (`NX` and the key exists, or `XX` and it does not).
    @discardableResult
    public func set(
        _ key: String, to value: [UInt8], expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) async throws -> Bool {
        try await execute(RESPCommands.SET(key, to: value, expiration: expiration, condition: condition))
    }

    /// `SET` with a string value, sent as its UTF-8; see ``set(_:to:expiration:condition:)-(_,[UInt8],_,_)``.
    @discardableResult
    public func set(
        _ key: String, to value: String, expiration: RESPExpiration? = nil, condition: RESPSetCondition = .always
    ) async throws -> Bool {
        try await execute(RESPCommands.SET(key, to: Array(value.utf8), expiration: expiration, condition: condition))
    }

    /// `MGET key...`: one entry per key, in order, `nil` where the key does not exist
    /// (or holds something other than a string).
    public func mget(_ keys: [String]) async throws -> [[UInt8]?] {
        keys.isEmpty ? [] : try await execute(RESPCommands.MGET(keys))
    }

    /// `INCR key`: the value after the increment.
    public func incr(_ key: String) async throws -> Int64 {
        try await execute(RESPCommands.INCR(key))
    }

    /// `INCRBY key increment`: the value after the increment.
    public func incrBy(_ key: String, _ increment: Int64) async throws -> Int64 {
        try await execute(RESPCommands.INCRBY(key, increment))
    }

    // MARK: - Keys

    /// `DEL key...`: how many of the keys existed and were removed.
    @discardableResult
    public func del(_ keys: [String]) async throws -> Int {
        keys.isEmpty ? 0 : try await execute(RESPCommands.DEL(keys))
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
        keys.isEmpty ? 0 : try await execute(RESPCommands.UNLINK(keys))
    }

    /// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
    public func exists(_ keys: [String]) async throws -> Int {
        keys.isEmpty ? 0 : try await execute(RESPCommands.EXISTS(keys))
    }

    /// `EXISTS key`: whether the key exists.
    public func exists(_ key: String) async throws -> Bool {
        try await execute(RESPCommands.EXISTS([key])) > 0
    }

    /// `EXPIRE key seconds`: true if the timeout was set (the key exists).
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws -> Bool {
        try await execute(RESPCommands.EXPIRE(key, seconds: seconds))
    }

    /// `PEXPIRE key milliseconds`: true if the timeout was set (the key exists).
    @discardableResult
    public func pexpire(_ key: String, milliseconds: Int) async throws -> Bool {
        try await execute(RESPCommands.PEXPIRE(key, milliseconds: milliseconds))
    }

    /// `TTL key`: the remaining time to live in seconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public func ttl(_ key: String) async throws -> Int64 {
        try await execute(RESPCommands.TTL(key))
    }

    /// `PTTL key`: the remaining time to live in milliseconds; -1 if the key has no
    /// expiration, -2 if it does not exist.
    public func pttl(_ key: String) async throws -> Int64 {
        try await execute(RESPCommands.PTTL(key))
    }

    // MARK: - Pub/sub

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: [UInt8], to channel: String) async throws -> Int {
        try await execute(RESPCommands.PUBLISH(message, to: channel))
    }

    /// `PUBLISH channel message` with a string message, sent as its UTF-8.
    @discardableResult
    public func publish(_ message: String, to channel: String) async throws -> Int {
        try await execute(RESPCommands.PUBLISH(Array(message.utf8), to: channel))
    }

    // MARK: - Scripts

    /// Runs a Lua script with `EVALSHA`. If the server does not have the script
    /// (`NOSCRIPT`), loads it with `SCRIPT LOAD` and runs it again, once.
    ///
    /// - Returns: the script's reply.
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/server`` for an error the
    ///   script raised (or any other error reply); connection failures and timeouts.
    public func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [[UInt8]] = []) async throws -> RESPReply {
        try await execute(RESPCommands.EVALSHA(script, keys: keys, arguments: arguments))
    }

    /// ``evalSHA(_:keys:arguments:)-(_,_,[[UInt8]])`` with string arguments, sent as
    /// their UTF-8.
    public func evalSHA(_ script: RESPScript, keys: [String] = [], arguments: [String]) async throws -> RESPReply {
        try await execute(RESPCommands.EVALSHA(script, keys: keys, arguments: arguments.map { Array($0.utf8) }))
    }

    // MARK: - Any command

    /// Sends any command given as strings and returns its raw reply:
    /// `try await redis.send("SCAN", "0", "MATCH", "user:*")`.
    ///
    /// - Throws: ``RESPError``: a server error reply (kind ``RESPError/Kind/server``,
    ///   with the server's text), or a connection failure or timeout.
    public func send(_ arguments: String...) async throws -> RESPReply {
        try await execute(RESPCommands.Raw(arguments))
    }

    /// Sends any command given as strings.
    public func send(_ arguments: [String]) async throws -> RESPReply {
        try await execute(RESPCommands.Raw(arguments))
    }
}
