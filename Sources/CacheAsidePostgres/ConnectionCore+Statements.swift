import CLibpq

extension ConnectionCore {
    /// Runs one statement with the extended protocol (binary results), preparing it
    /// the second time it runs on this connection (see ``StatementCache``).
    func run(sql: String, bindings: Bindings, cancellable: Bool = true) async throws -> PGResult {
        if try !tryAcquireTurn() { try await acquireTurn(cancellable: cancellable) }
        defer { releaseTurn() }
        return try await runHoldingTurn(sql: sql, bindings: bindings, cancellable: cancellable, mayRetry: true)
    }

    private func runHoldingTurn(sql: String, bindings: Bindings, cancellable: Bool, mayRetry: Bool) async throws -> PGResult {
        if !pendingDeallocations.isEmpty { try await deallocatePending() }
        let key = StatementCache.Key(sql: sql, types: bindings.types)
        var evicted: [String] = []
        let plan = cache.lookup(key, evicted: &evicted)
        if !evicted.isEmpty { pendingDeallocations += evicted }
        do {
            switch plan {
            case .runUnnamed:
                let delivery = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
                    bindings.withPointers { n, types, values, lengths, formats in
                        PQsendQueryParams(pg, sql, n, types, values, lengths, formats, 1)
                    }
                }
                return try single(delivery, sql: sql)
            case .prepareNow(let name):
                do {
                    let prepared = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
                        bindings.withPointers { n, types, _, _, _ in PQsendPrepare(pg, name, sql, n, types) }
                    }
                    _ = try single(prepared, sql: sql)
                } catch {
                    cache.remove(key)
                    throw error
                }
                return try await executePrepared(name: name, sql: sql, bindings: bindings, cancellable: cancellable)
            case .prepared(let name):
                return try await executePrepared(name: name, sql: sql, bindings: bindings, cancellable: cancellable)
            }
        } catch let error as PGError where error.kind == .query && (error.sqlState == "26000" || error.sqlState == "0A000") {
            // The server forgot our statement (DEALLOCATE ALL, DISCARD) or its plan went
            // stale after DDL: forget it, and retry once outside a transaction.
            if error.sqlState == "26000" { cache.removeAll() } else { cache.remove(key) }
            if error.sqlState == "0A000", case .prepared(let name) = plan { pendingDeallocations.append(name) }
            guard mayRetry, transactionStatus == PQTRANS_IDLE else { throw error }
            logger.debug("re-preparing a statement", metadata: ["sqlstate": "\(error.sqlState ?? "")"])
            return try await runHoldingTurn(sql: sql, bindings: bindings, cancellable: cancellable, mayRetry: false)
        }
    }

    private func executePrepared(name: String, sql: String, bindings: Bindings, cancellable: Bool) async throws -> PGResult {
        let delivery = try await roundTrip(sql: sql, cancellable: cancellable) { pg in
            bindings.withPointers { n, _, values, lengths, formats in
                PQsendQueryPrepared(pg, name, n, values, lengths, formats, 1)
            }
        }
        return try single(delivery, sql: sql)
    }

    private func deallocatePending() async throws {
        guard transactionStatus == PQTRANS_IDLE || transactionStatus == PQTRANS_INTRANS else { return }
        let names = pendingDeallocations
        pendingDeallocations = []
        for name in names {
            _ = try await simple("DEALLOCATE \(name)", cancellable: false, holdingTurn: true)
        }
    }

    /// Runs SQL (one or several statements, no parameters) with the simple protocol.
    func simple(_ sql: String, cancellable: Bool, holdingTurn: Bool = false) async throws -> PGResult? {
        if !holdingTurn { try await acquireTurn(cancellable: cancellable) }
        defer { if !holdingTurn { releaseTurn() } }
        let delivery = try await roundTrip(sql: sql, cancellable: cancellable) { pg in PQsendQuery(pg, sql) }
        try throwFirstError(delivery, sql: sql)
        return delivery.results.last
    }

    private func single(_ delivery: Delivery, sql: String) throws -> PGResult {
        try throwFirstError(delivery, sql: sql)
        guard let last = delivery.results.last else {
            throw PGError(.protocolViolation, "the server returned no result", sql: sql)
        }
        return last
    }

    private func throwFirstError(_ delivery: Delivery, sql: String) throws {
        for result in delivery.results {
            switch PQresultStatus(result.handle) {
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
                throw queryError(result, sql: sql, cancelled: delivery.cancelled)
            case PGRES_BAD_RESPONSE:
                throw PGError(.protocolViolation, "the server's response was not understood", sql: sql)
            default:
                continue
            }
        }
    }

    private func queryError(_ result: PGResult, sql: String, cancelled: Bool) -> PGError {
        func field(_ code: UInt8) -> String? {
            PQresultErrorField(result.handle, Int32(code)).map { String(cString: $0) }
        }
        let message = field(UInt8(ascii: "M")) ?? String(cString: PQresultErrorMessage(result.handle))
        let sqlState = field(UInt8(ascii: "C"))
        let byCancel = sqlState == "57014" && cancelled
        var error = PGError(byCancel ? .cancelled : .query, wire.redacting(message), sqlState: sqlState, sql: sql)
        error.detail = field(UInt8(ascii: "D")).map(wire.redacting)
        error.hint = field(UInt8(ascii: "H"))
        error.constraint = field(UInt8(ascii: "n"))
        error.schema = field(UInt8(ascii: "s"))
        error.table = field(UInt8(ascii: "t"))
        error.column = field(UInt8(ascii: "c"))
        error.severity = field(UInt8(ascii: "V")) ?? field(UInt8(ascii: "S"))
        return error
    }
}
