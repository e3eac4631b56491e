import CacheAsideTLS
/// A Lua script run with `EVALSHA`.
///
/// The SHA-1 is computed locally, so the first run is a plain `EVALSHA`. When the
/// server does not know the script (`NOSCRIPT`: after a restart, a failover or
/// `SCRIPT FLUSH`), ``RESPClient/evalSHA(_:keys:arguments:)`` loads it with
/// `SCRIPT LOAD` and retries once.
///
/// ```swift
/// let compareAndDelete = RESPScript(source: """
///     if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
///     return 0
///     """)
/// ```
public struct RESPScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The script's SHA-1, 40 lower-case hex digits, as Redis names it.
    public let sha1: String

    /// Creates a script from its Lua source.
    public init(source: String) {
        self.source = source
        self.sha1 = Digest.hex(Digest.sha1(source.utf8))
    }
}
