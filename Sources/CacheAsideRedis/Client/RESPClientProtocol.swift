/// What every Redis client of this package does, whatever the server's topology: one
/// server (or a primary endpoint), ``RESPClient``, or a Redis Cluster,
/// ``RESPClusterClient``.
///
/// Code written against the protocol runs unchanged on either:
///
/// ```swift
/// func touch(_ keys: [String], on redis: some RESPClientProtocol) async throws {
///     let ttls = try await redis.pipeline(keys.map { RESPCommands.PTTL($0) })
///     let values = try await redis.mget(keys)          // a cluster splits it by slot
///     ...
/// }
/// let redis: any RESPClientProtocol = try RESPClients.make(url: url)
/// ```
///
/// The conveniences (``get(_:)``, ``set(_:to:expiration:condition:)-(_,[UInt8],_,_)``,
/// ``mget(_:)``, ``del(_:)-([String])``, ``evalSHA(_:keys:arguments:)-(_,_,[[UInt8]])``,
/// `send(...)`, ...) are extensions of the protocol, each one ``execute(_:)``.
///
/// What a cluster changes: every command goes to the node that serves its keys' slot,
/// so a command's keys must share a slot, except for the commands a cluster client
/// splits (`MGET`, `DEL`, `UNLINK`, `EXISTS`); a pipeline's commands may live on
/// different nodes and run in any order between nodes (in request order on each node);
/// a command without keys (``RESPCommands/Raw``, `PUBLISH`, `PING`) goes to one node of
/// the client's choice. A message published on any node of a cluster reaches the
/// subscribers of every node.
public protocol RESPClientProtocol: Sendable {
    /// The messages of a subscription (``subscribe(channels:bufferLimit:)``).
    associatedtype Subscription: AsyncSequence, Sendable where Subscription.Element == RESPPubSubMessage

    /// Runs one command and returns its typed response.
    ///
    /// - Throws: ``RESPError``: the server's error reply (kind ``RESPError/Kind/server``),
    ///   a connection failure, a timeout; `CancellationError` if the task is cancelled.
    func execute<C: RESPCommand>(_ command: C) async throws -> C.Response

    /// Runs a list of commands of one type in one round trip (one per node on a
    /// cluster), each with its own result, in order; wrap commands of different types
    /// in ``AnyRESPCommand``.
    func pipeline<C: RESPCommand>(_ commands: [C]) async throws -> [Result<C.Response, RESPError>]

    /// Runs several commands in one round trip (one per node on a cluster), each with
    /// its own result, in order.
    func pipeline<each C: RESPCommand>(_ commands: repeat each C) async throws -> (repeat Result<(each C).Response, RESPError>)

    /// Subscribes to `channels` on a connection of its own and returns once the server
    /// confirmed it; the subscription survives reconnections (and, on a cluster, the
    /// loss of the node it listens on).
    ///
    /// - Parameter bufferLimit: how many messages may wait for the consumer before the
    ///   oldest are dropped.
    func subscribe(channels: [String], bufferLimit: Int) async throws -> Subscription

    /// Closes every connection; commands issued afterwards fail.
    func shutdown() async
}

extension RESPClientProtocol {
    /// Subscribes to `channels` with room for 100,000 waiting messages; see
    /// ``subscribe(channels:bufferLimit:)``.
    public func subscribe(channels: [String]) async throws -> Subscription {
        try await subscribe(channels: channels, bufferLimit: 100_000)
    }
}

extension RESPClient: RESPClientProtocol {}
