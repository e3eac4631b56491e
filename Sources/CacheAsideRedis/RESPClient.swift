import IOLoop
import Logging
import Synchronization

/// A Redis client: a small, fixed set of connections shared by all tasks.
///
/// ```swift
/// let redis = try RESPClient(url: "redis://cacheaside:secret@127.0.0.1:6379/0")
/// try await redis.set("greeting", to: "hello", expiration: .seconds(60))
/// let value = try await redis.getString("greeting")
/// await redis.shutdown()
/// ```
///
/// - Connections: ``RESPConfiguration/connectionCount`` of them (2 by default), opened
///   lazily by the first command routed to each. Commands are spread round-robin (a
///   connection that is waiting to reconnect is skipped while another is up), and the
///   commands of many tasks are pipelined on each connection: those issued while
///   replies are awaited go out together in one write.
/// - Failures: when a connection breaks, every command in flight on it fails at once
///   with a ``RESPError`` of kind ``RESPError/Kind/connection``, and it is reopened in
///   the background (at once, then with exponential backoff and jitter). While it waits
///   to reconnect, commands routed to it fail at once rather than queue. A command with
///   no reply within ``RESPConfiguration/commandTimeout`` fails with a timeout, never
///   hangs. A cancelled task's command throws `CancellationError` at once.
/// - Server error replies (`WRONGTYPE`, ...) are thrown as ``RESPError`` of kind
///   ``RESPError/Kind/server`` with the server's text (inside ``pipeline(_:)``, they are
///   returned as ``RESPReply/error(_:)`` values instead).
///
/// I/O runs on an ``IOLoop``: no thread of Swift's cooperative pool ever waits for the
/// network. A reply is read on the loop's thread and resumes the waiting task on its
/// executor, which costs one thread hop (a few microseconds); latency-critical code
/// can avoid it by running on the loop itself,
/// `withTaskExecutorPreference(IOLoop.shared) { ... }`, if its work between commands
/// is short. Call ``shutdown()`` when done.
public final class RESPClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: RESPConfiguration
    let loop: IOLoop
    let logger: Logger
    private let connections: [RESPConnection]
    private let roundRobin = Atomic<UInt>(0)

    /// Creates a client. Nothing is connected yet: each connection opens on first use.
    ///
    /// - Parameters:
    ///   - configuration: where to connect, credentials and timeouts.
    ///   - loop: the event loop driving the sockets (the process-wide one by default).
    ///   - logger: where connection trouble is reported (never with a password).
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for invalid
    ///   settings (no connections, non-positive timeouts, ...).
    public init(
        configuration: RESPConfiguration,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis")
    ) throws(RESPError) {
        try configuration.validate()
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        self.connections = (0..<configuration.connectionCount).map { _ in
            RESPConnection(configuration: configuration, loop: loop, logger: logger)
        }
    }

    /// Creates a client from a `redis://` or `unix://` URL, with default timeouts; see
    /// ``RESPConfiguration/init(url:)``.
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
    /// the sockets are closed. Subscriptions have connections of their own and are not
    /// affected.
    public func shutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask { await connection.close() }
            }
        }
    }

    /// The connection for the next command: round-robin, skipping connections that
    /// wait to reconnect while another one is up.
    @inline(__always)
    func connection() -> RESPConnection {
        let count = connections.count
        if count == 1 { return connections[0] }
        let start = Int(roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue % UInt(count))
        let chosen = connections[start]
        if chosen.available.load(ordering: .relaxed) { return chosen }
        for offset in 1..<count {
            let other = connections[(start + offset) % count]
            if other.available.load(ordering: .relaxed) { return other }
        }
        return chosen
    }

    // MARK: - Sending

    /// Sends an encoded command and returns its reply, `.error` replies included.
    @inline(__always)
    func execute(_ command: EncodedCommand) async throws -> RESPReply {
        defer { command.free() }
        return try await connection().execute(command)
    }

    /// Sends a command; throws a server error reply as ``RESPError``.
    @inline(__always)
    func command(_ command: EncodedCommand) async throws -> RESPReply {
        let reply = try await execute(command)
        if case .error(let message) = reply { throw RESPError.server(message) }
        return reply
    }

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
        try await command(RESPEncoder.encode(arguments))
    }

    /// Sends any command given as strings: `try await redis.send("SCAN", "0", "MATCH", "user:*")`.
    public func send(_ arguments: String...) async throws -> RESPReply {
        try await send(arguments)
    }

    /// Sends any command given as strings.
    public func send(_ arguments: [String]) async throws -> RESPReply {
        try await command(RESPEncoder.encode(arguments.map { .string($0) }))
    }

    /// Sends several commands back to back on one connection, in one write, and
    /// returns their replies in order.
    ///
    /// Server errors do not throw here: a command the server refused has an
    /// ``RESPReply/error(_:)`` reply in its place. The pipeline shares one timeout
    /// (``RESPConfiguration/commandTimeout``). It is not a transaction: other clients'
    /// commands may run between these.
    ///
    /// - Throws: ``RESPError`` for a connection failure or timeout (then none of the
    ///   replies is known).
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RESPReply] {
        guard !commands.isEmpty else { return [] }
        var encoded: [EncodedCommand] = []
        encoded.reserveCapacity(commands.count)
        do {
            for command in commands { encoded.append(try RESPEncoder.encode(command)) }
        } catch {
            for command in encoded { command.free() }
            throw error
        }
        let batch = try RESPEncoder.concatenate(encoded)
        defer { batch.free() }
        let reply = try await connection().execute(batch, kind: .pipeline, replies: commands.count)
        guard case .array(let replies) = reply, replies.count == commands.count else {
            throw RESPError.protocolError("pipeline of \(commands.count) commands got \(reply)")
        }
        return replies
    }
}
