/// A Redis command as a value: its name, its arguments, the keys it touches, and how to
/// turn the server's reply into a typed response.
///
/// ```swift
/// let value = try await redis.execute(.get("user:42"))          // [UInt8]?
/// let (written, ttl) = try await redis.pipeline(
///     .set("user:42", to: bytes, expiration: .seconds(60)),
///     .pttl("user:42"))                                           // (Result<Bool, RESPError>, Result<Int64, RESPError>)
/// ```
///
/// The commands this module ships live in ``RESPCommands`` and have leading-dot
/// factories (`.get(_:)`, `.set(_:to:expiration:condition:)`, ...). Any other command
/// can be sent with ``RESPCommands/Raw``, or written as a type of your own:
///
/// ```swift
/// struct HSET: RESPCommand {
///     var key: String, field: String, value: [UInt8]
///     static var name: String { "HSET" }
///     var keys: [String] { [key] }
///     func encode(into encoder: inout RESPCommandEncoder) {
///         encoder.command("HSET", argumentCount: 3)
///         encoder.argument(key); encoder.argument(field); encoder.argument(value)
///     }
///     func decode(_ reply: RESPReply) throws(RESPError) -> Int64 { try reply.decodeInteger(for: Self.name) }
/// }
/// ```
public protocol RESPCommand: Sendable {
    /// What a successful reply decodes to.
    associatedtype Response: Sendable

    /// The command's name as the server knows it (`GET`, `SET`, `EVALSHA`, `SCRIPT`).
    static var name: String { get }

    /// The keys the command reads or writes, in argument order: what a cluster client
    /// routes by. Empty for commands that touch no key.
    var keys: [String] { get }

    /// True when the command never writes (a replica may serve it).
    var isReadOnly: Bool { get }

    /// The script this command runs by its SHA-1 (`EVALSHA`), if any: when the server
    /// does not know the script (`NOSCRIPT`), the client loads it with `SCRIPT LOAD`
    /// and sends the command again, once. `nil` for every other command.
    var script: RESPScript? { get }

    /// Writes the command in RESP (an array of bulk strings).
    func encode(into encoder: inout RESPCommandEncoder)

    /// Turns the server's reply into the response. Error replies never get here: the
    /// client turns them into a ``RESPError`` of kind ``RESPError/Kind/server``.
    ///
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/protocol`` for a reply of a
    ///   type the command cannot return.
    func decode(_ reply: RESPReply) throws(RESPError) -> Response
}

extension RESPCommand {
    /// No keys, unless the command says otherwise.
    public var keys: [String] { [] }
    /// Commands write, unless they say otherwise.
    public var isReadOnly: Bool { false }
    /// No script, unless the command runs one.
    public var script: RESPScript? { nil }
}

/// Namespace of the commands this module ships, one type per command, named as Redis
/// names them (`RESPCommands.GET`). Each has a leading-dot factory on ``RESPCommand``
/// (`redis.execute(.get("k"))`).
public enum RESPCommands {}

/// A type-erased command whose response is the raw ``RESPReply``: for a pipeline of
/// commands of different types whose number is only known at run time.
///
/// ```swift
/// let commands = keys.map { key in
///     seen[key] == nil
///         ? AnyRESPCommand(.set(key, to: lease, expiration: .milliseconds(3000), condition: .ifNotExists))
///         : AnyRESPCommand(.evalSHA(compareAndSet, keys: [key], arguments: [seen[key]!, lease]))
/// }
/// let replies = try await redis.pipeline(commands)   // [Result<RESPReply, RESPError>]
/// ```
public struct AnyRESPCommand: RESPCommand {
    /// The raw reply.
    public typealias Response = RESPReply

    /// The wrapped command.
    public let base: any RESPCommand

    /// Wraps a command.
    public init(_ base: some RESPCommand) {
        self.base = base
    }

    /// The wrapped command's name.
    public static var name: String { "" }
    /// The wrapped command's name.
    public var name: String { type(of: base).name }
    /// The wrapped command's keys.
    public var keys: [String] { base.keys }
    /// Whether the wrapped command only reads.
    public var isReadOnly: Bool { base.isReadOnly }
    /// The wrapped command's script.
    public var script: RESPScript? { base.script }

    /// Encodes the wrapped command.
    public func encode(into encoder: inout RESPCommandEncoder) {
        base.encode(into: &encoder)
    }

    /// The reply as it came.
    public func decode(_ reply: RESPReply) throws(RESPError) -> RESPReply {
        reply
    }
}
