import CLibpq

/// The libpq calls a connection's state machine makes while a round trip is in flight:
/// libpq in non-blocking mode in production (``LibpqWire``), a scripted stream in the
/// state machine's unit tests.
protocol ConnectionWire {
    associatedtype Result

    /// Sends what libpq still buffers (`PQflush`): 0 when all is sent, 1 when the
    /// socket must become writable first, -1 when the connection failed.
    func flush() -> Int32
    /// Reads what the socket holds into libpq (`PQconsumeInput`); false when the
    /// connection failed.
    func consumeInput() -> Bool
    /// True while libpq has not received a whole result (`PQisBusy`).
    func isBusy() -> Bool
    /// The round trip's next result (`PQgetResult`), or nil once all are in.
    func nextResult() -> WireResult<Result>?
    /// True once libpq considers the connection dead (`CONNECTION_BAD`).
    func isBad() -> Bool
    /// libpq's last error message, without any secret.
    func lastError() -> String
    /// Ends a `COPY FROM STDIN` the server started, with an error: this client sends no
    /// COPY data.
    func refuseCopyIn()
    /// Reads and drops `COPY TO STDOUT` data: true once all of it was read, false when
    /// more must arrive first, nil when the connection failed.
    func discardCopyOut() -> Bool?
    /// Drops notifications (`LISTEN`/`NOTIFY`) that arrived.
    func discardNotifications()
}

/// What `PQgetResult` returned.
enum WireResult<Result> {
    /// A result to hand to the caller (rows, a command's status, or an error).
    case result(Result)
    /// The server started `COPY FROM STDIN`.
    case copyIn
    /// The server started `COPY TO STDOUT`.
    case copyOut
}

/// ``ConnectionWire`` over a `PGconn` in non-blocking mode.
struct LibpqWire: ConnectionWire {
    let pg: OpaquePointer
    let secrets: [String]

    @inline(__always) func flush() -> Int32 { PQflush(pg) }
    @inline(__always) func consumeInput() -> Bool { PQconsumeInput(pg) != 0 }
    @inline(__always) func isBusy() -> Bool { PQisBusy(pg) != 0 }
    @inline(__always) func isBad() -> Bool { PQstatus(pg) == CONNECTION_BAD }

    func nextResult() -> WireResult<PGResult>? {
        guard let result = PQgetResult(pg) else { return nil }
        switch PQresultStatus(result) {
        case PGRES_COPY_IN:
            PQclear(result)
            return .copyIn
        case PGRES_COPY_OUT:
            PQclear(result)
            return .copyOut
        default:
            return .result(PGResult(result))
        }
    }

    func lastError() -> String {
        let raw = String(cString: PQerrorMessage(pg)).trimmingCharacters(in: .whitespacesAndNewlines)
        return redacting(raw.isEmpty ? "the connection was lost" : raw)
    }

    /// `message` without this connection's password (or any other secret it used).
    func redacting(_ message: String) -> String {
        secrets.reduce(message) { redact($0, secret: $1) }
    }

    func refuseCopyIn() {
        _ = PQputCopyEnd(pg, "COPY FROM STDIN is not supported by this client")
        _ = PQflush(pg)
    }

    func discardCopyOut() -> Bool? {
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(pg, &buffer, 1)
            if let buffer { PQfreemem(buffer) }
            if n > 0 { continue }
            if n == 0 { return false }
            return n == -1 ? true : nil
        }
    }

    func discardNotifications() {
        while let notify = PQnotifies(pg) { PQfreemem(notify) }
    }
}
