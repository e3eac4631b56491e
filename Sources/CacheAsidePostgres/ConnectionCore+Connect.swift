import CLibpq
import Foundation
import IOLoop
import Logging

extension ConnectionCore {
    /// Connects without blocking a cooperative thread: libpq's connection state machine
    /// (`PQconnectStartParams`/`PQconnectPoll`) waits for the socket through the loop;
    /// when a host name must be resolved (which libpq does synchronously), the libpq
    /// calls run on a thread of their own (``BlockingCall``).
    ///
    /// A ``PGConfiguration/credentialsProvider`` is asked for the user and password
    /// first, every time.
    static func connect(configuration: PGConfiguration, loop: IOLoop, logger: Logger) async throws -> ConnectionCore {
        let deadline = configuration.connectTimeout.map { ContinuousClock.now + $0 }
        try Task.checkCancellation()
        var configuration = configuration
        if let provider = configuration.credentialsProvider {
            let request = PGCredentialsRequest(
                host: configuration.host, port: configuration.port, user: configuration.user,
                database: configuration.database)
            let credentials: PGCredentials
            do {
                credentials = try await provider(request)
            } catch is CancellationError {
                throw PGError(.cancelled, "connecting was cancelled")
            } catch {
                let reason = configuration.redacting("\(error)")
                throw PGError(.authentication, "the credentials provider failed: \(reason)", underlying: error)
            }
            if let user = credentials.user { configuration.user = user }
            configuration.password = credentials.password
        }
        let parameters = configuration.libpqParameters
        let offload = configuration.needsNameResolution

        let started: UnsafeTransfer<OpaquePointer?> = await offloaded(offload) {
            UnsafeTransfer(startConnection(parameters))
        }
        guard let pg = started.value else {
            throw PGError(.connection, "could not allocate a libpq connection")
        }
        let conn = UnsafeTransfer(pg)
        var ok = false
        defer { if !ok { PQfinish(conn.value) } }

        if PQstatus(pg) == CONNECTION_BAD {
            throw connectError(pg, configuration: configuration)
        }
        var status = PGRES_POLLING_WRITING
        while true {
            switch status {
            case PGRES_POLLING_OK:
                break
            case PGRES_POLLING_FAILED:
                throw connectError(pg, configuration: configuration)
            default:
                let fd = PQsocket(pg)
                guard fd >= 0 else { throw connectError(pg, configuration: configuration) }
                do {
                    _ = try await loop.wait(for: status == PGRES_POLLING_READING ? .readable : .writable, on: fd, deadline: deadline)
                } catch let error as IOError where error.isTimeout {
                    let seconds = configuration.connectTimeout.map { "\($0)" } ?? "?"
                    throw PGError(.timeout, "connecting to \(configuration.description) timed out after \(seconds)", underlying: error)
                } catch is CancellationError {
                    throw PGError(.cancelled, "connecting was cancelled")
                } catch {
                    throw PGError(.connection, "connecting to \(configuration.description): \(error)", underlying: error)
                }
                let polled: UnsafeTransfer<PostgresPollingStatusType> = await offloaded(offload) {
                    UnsafeTransfer(PQconnectPoll(conn.value))
                }
                status = polled.value
                continue
            }
            break
        }
        guard PQsetnonblocking(pg, 1) == 0 else { throw connectError(pg, configuration: configuration) }
        let core = ConnectionCore(
            pg: pg, secrets: configuration.secrets, loop: loop, logger: logger, configuration: configuration)
        ok = true  // from here on, the core owns the PGconn (its deinit finishes it)
        try core.start()
        return core
    }

    private static func startConnection(_ parameters: [(String, String)]) -> OpaquePointer? {
        let keywordStrings = parameters.map { strdup($0.0) }
        let valueStrings = parameters.map { strdup($0.1) }
        defer {
            keywordStrings.forEach { free($0) }
            valueStrings.forEach { free($0) }
        }
        let keywords: [UnsafePointer<CChar>?] = keywordStrings.map { $0.map { UnsafePointer($0) } } + [nil]
        let values: [UnsafePointer<CChar>?] = valueStrings.map { $0.map { UnsafePointer($0) } } + [nil]
        return PQconnectStartParams(keywords, values, 0)
    }

    /// The error for a failed connection attempt: libpq's message (which says what TLS,
    /// the network or the server refused), without any secret, and of kind
    /// ``PGError/Kind/authentication`` when the server refused the credentials.
    static func connectError(_ pg: OpaquePointer, configuration: PGConfiguration) -> PGError {
        let raw = String(cString: PQerrorMessage(pg)).trimmingCharacters(in: .whitespacesAndNewlines)
        let message = configuration.redacting(raw)
        let lower = message.lowercased()
        let isAuth = lower.contains("authentication failed") || lower.contains("no password supplied")
            || lower.contains("password is required") || PQconnectionNeedsPassword(pg) == 1
        return PGError(
            isAuth ? .authentication : .connection,
            "could not connect to \(configuration.description): \(message.isEmpty ? "unknown error" : message)")
    }
}
