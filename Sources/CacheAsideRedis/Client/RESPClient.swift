import CacheAsideTLS
import IOLoop
import Logging
import Synchronization

/// A Redis client: a small, fixed set of connections shared by all tasks.
///
/// ```swift
/// let redis = try RESPClient(url: "redis://cacheaside:secret@127.0.0.1:6379/0")
/// try await redis.set("greeting", to: "hello", expiration: .seconds(60))
/// let value = try await redis.getString("greeting")
/// let (a, b) = try await redis.pipeline(.get("a"), .incr("counter"))
/// await redis.shutdown()
/// ```
///
/// Commands are typed values (``RESPCommand``): ``execute(_:)`` runs one,
/// ``pipeline(_:)-(repeat each C)`` several in one round trip,
/// ``transaction(_:)-(repeat each C)`` several atomically (`MULTI`/`EXEC`). The
/// convenience methods (``get(_:)``, ``set(_:to:expiration:condition:)-(_,[UInt8],_,_)``,
/// ...) are each one such call.
///
/// - Connections: ``RESPConfiguration/connectionCount`` of them (2 by default), opened
///   lazily by the first command routed to each. A command goes to an idle connection
///   when there is one (a lone caller never waits behind another task's command, such
///   as a fill sent in the background); otherwise commands are spread round-robin (a
///   connection that is waiting to reconnect is skipped while another is up), and the
///   commands of many tasks are pipelined on each connection: those issued while
///   replies are awaited go out together in one write. Sequential use may therefore
///   keep a single connection open.
/// - Failures: when a connection breaks, every command in flight on it fails at once
///   with a ``RESPError`` of kind ``RESPError/Kind/connection``, and it is reopened in
///   the background (at once, then with exponential backoff and jitter). While it waits
///   to reconnect, commands routed to it fail at once rather than queue. A command with
///   no reply within ``RESPConfiguration/commandTimeout`` fails with a timeout, never
///   hangs. A cancelled task's command throws `CancellationError` at once.
/// - Server error replies (`WRONGTYPE`, ...) are thrown as ``RESPError`` of kind
///   ``RESPError/Kind/server`` with the server's text (inside a pipeline, each
///   command's result carries its own). ``RESPError/isUnavailable`` tells the replies
///   that mean the server cannot serve now (`READONLY`, `OOM`, `MISCONF`, `LOADING`,
///   ...) from the caller's own mistakes. A `READONLY` reply also reopens its
///   connection, which resolves the host name again (after a failover, the primary
///   endpoint names the new primary).
/// - TLS (`rediss://`, ``RESPConfiguration/tls``): verified against the system's CAs
///   by default; a failure is an error of kind ``RESPError/Kind/tls``.
///
/// I/O runs on an ``IOLoop``: no thread of Swift's cooperative pool ever waits for the
/// network. A command sent on an idle connection is written by its caller, who polls
/// the socket for the reply for a few tens of microseconds
/// (``RESPConfiguration/replyPollingWindow``) before suspending; replies that take
/// longer, and the replies of concurrent commands, are read on the loop's thread and
/// resume their tasks. Call ``shutdown()`` when done.
public final class RESPClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: RESPConfiguration
    let loop: IOLoop
    let logger: Logger
    let tls: TLSClientContext?
    private let connections: [RESPConnection]
    private let roundRobin = Atomic<UInt>(0)

    /// Creates a client. Nothing is connected yet: each connection opens on first use.
    ///
    /// - Parameters:
    ///   - configuration: where to connect, credentials, TLS and timeouts.
    ///   - loop: the event loop driving the sockets (the process-wide one by default).
    ///   - logger: where connection trouble is reported (never with a password).
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for invalid
    ///   settings (no connections, non-positive timeouts, TLS files that cannot be
    ///   loaded, ...).
    public init(
        configuration: RESPConfiguration,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis")
    ) throws(RESPError) {
        try configuration.validate()
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        if let tlsConfiguration = configuration.tls {
            do {
                tls = try TLSClientContext(configuration: tlsConfiguration)
            } catch {
                throw .configuration("TLS for \(configuration.endpoint): \(error)")
            }
            if tlsConfiguration.verification == .insecureNoVerification {
                logger.warning("TLS certificate verification is OFF for this Redis client: any server can impersonate Redis", metadata: [
                    "redis.endpoint": "\(configuration.endpoint)",
                ])
            }
        } else {
            tls = nil
        }
        let tls = self.tls
        self.connections = (0..<configuration.connectionCount).map { _ in
            RESPConnection(configuration: configuration, tls: tls, loop: loop, logger: logger)
        }
    }

    /// A client whose TLS context is made already (a cluster client's nodes share one).
    init(validatedConfiguration configuration: RESPConfiguration, tls: TLSClientContext?, loop: IOLoop, logger: Logger) {
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        self.tls = tls
        self.connections = (0..<configuration.connectionCount).map { _ in
            RESPConnection(configuration: configuration, tls: tls, loop: loop, logger: logger)
        }
    }

    /// Creates a client from a `redis://`, `rediss://` or `unix://` URL, with default
    /// timeouts; see ``RESPConfiguration/init(url:)``.
    public convenience init(
        url: String,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis")
    ) throws(RESPError) {
        try self.init(configuration: RESPConfiguration(url: url), loop: loop, logger: logger)
    }

    deinit {
        for connection in connections { connection.closeNow() }
    }

    /// Closes every connection and stops reconnecting. Commands already sent get their
    /// replies (or fail at their timeout); commands issued afterwards fail. Returns once
    /// the sockets are closed and no connect attempt runs any more. Subscriptions have
    /// connections of their own and are not affected.
    public func shutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask { await connection.close() }
            }
        }
    }

    /// The first connection, alone: what a cluster client asks for the topology on (a
    /// node asked only for that, a replica, keeps one connection open, not all).
    var firstConnection: RESPConnection { connections[0] }

    /// The connection for the next command: an idle one when there is one (its caller
    /// polls for the reply instead of waiting behind another command, such as a cache
    /// fill sent in the background), else the next available one in turn, skipping
    /// connections that wait to reconnect while another one is up.
    @inline(__always)
    func connection() -> RESPConnection {
        let count = connections.count
        if count == 1 { return connections[0] }
        let start = Int(roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue % UInt(count))
        for offset in 0..<count {
            let candidate = connections[(start + offset) % count]
            if candidate.idle.load(ordering: .relaxed) { return candidate }
        }
        let chosen = connections[start]
        if chosen.available.load(ordering: .relaxed) { return chosen }
        for offset in 1..<count {
            let other = connections[(start + offset) % count]
            if other.available.load(ordering: .relaxed) { return other }
        }
        return chosen
    }

    // MARK: - Commands

    /// Runs one command and returns its typed response.
    ///
    /// ```swift
    /// let bytes = try await redis.execute(.get("user:42"))
    /// ```
    ///
    /// - Throws: ``RESPError``: the server's error reply (kind ``RESPError/Kind/server``),
    ///   a connection failure, a timeout; `CancellationError` if the task is cancelled.
    @inline(__always)
    public func execute<C: RESPCommand>(_ command: C) async throws -> C.Response {
        let connection = connection()
        let reply = try await connection.send { command.encode(into: &$0) }
        if case .error = reply { return try await retryOrThrow(command, reply, on: connection) }
        return try command.decode(reply)
    }

    /// An error reply: `NOSCRIPT` for a script command loads the script and sends the
    /// command again, once; any other error is thrown.
    private func retryOrThrow<C: RESPCommand>(_ command: C, _ reply: RESPReply, on connection: RESPConnection) async throws -> C.Response {
        guard case .error(let message) = reply else { return try command.decode(reply) }
        guard let script = command.script, message.hasPrefix("NOSCRIPT") else { throw RESPError.server(message) }
        _ = try await loadScripts([script], on: connection)
        let again = try await connection.send { command.encode(into: &$0) }
        if case .error(let message) = again { throw RESPError.server(message) }
        return try command.decode(again)
    }

    /// Loads scripts with `SCRIPT LOAD` (after a `NOSCRIPT`), in one pipeline.
    func loadScripts(_ scripts: [RESPScript], on connection: RESPConnection) async throws -> [RESPReply] {
        var unique: [RESPScript] = []
        for script in scripts where !unique.contains(where: { $0.sha1 == script.sha1 }) { unique.append(script) }
        let reply = try await connection.send(replies: unique.count, pipeline: true) { encoder in
            for script in unique { RESPCommands.SCRIPTLOAD(script).encode(into: &encoder) }
        }
        let replies = reply.array ?? []
        for (script, loaded) in zip(unique, replies) {
            if case .error(let message) = loaded { throw RESPError.server(message) }
            _ = try RESPCommands.SCRIPTLOAD(script).decode(loaded)
            logger.debug("loaded script after NOSCRIPT", metadata: ["redis.script": "\(script.sha1)"])
        }
        return replies
    }
}
