import IOLoop
import Testing

@testable import CacheAsidePostgres

/// The connection's state machine without a server: a scripted wire plays libpq.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<String>

    /// libpq as the machine sees it: what arrived on the socket, what libpq has read,
    /// whether the connection is dead.
    final class ScriptedWire: ConnectionWire {
        enum Item: Equatable {
            case result(String)
            case endOfResults
            case copyIn
            case copyOut
        }

        /// Chunks that arrived on the socket, not yet read by `consumeInput`. An empty
        /// chunk is part of a message: bytes, but nothing complete.
        var socket: [[Item]] = []
        /// Complete messages libpq has read.
        var buffer: [Item] = []
        var dead = false
        var copyOutFinished = false
        var copyInRefused = 0
        var consumed = 0
        var flushResult: Int32 = 0

        func arrive(_ items: Item...) { socket.append(items) }

        func flush() -> Int32 { dead ? -1 : flushResult }
        func consumeInput() -> Bool {
            if dead { return false }
            consumed += 1
            for chunk in socket { buffer += chunk }
            socket = []
            return true
        }
        func isBusy() -> Bool { buffer.isEmpty }
        func nextResult() -> WireResult<String>? {
            switch buffer.removeFirst() {
            case .result(let r): return .result(r)
            case .endOfResults: return nil
            case .copyIn: return .copyIn
            case .copyOut: return .copyOut
            }
        }
        func isBad() -> Bool { dead }
        func lastError() -> String { "server closed the connection unexpectedly" }
        func refuseCopyIn() { copyInRefused += 1 }
        func discardCopyOut() -> Bool? { dead ? nil : copyOutFinished }
        func discardNotifications() {}
    }

    /// Starts a round trip, sends it and suspends: the state the loop reads in.
    func sentAndSuspended(_ m: inout Machine) throws -> UInt64 {
        guard case .send(let id) = m.startRoundTrip(cancellable: true, taskCancelled: false) else {
            Issue.record("the round trip did not start")
            return 0
        }
        #expect(m.sendFinished(sent: true, flushed: 0, lastError: "").deliver == nil)
        let suspended = m.suspend()
        #expect(suspended.interest == .readable)
        #expect(!suspended.sendCancel)
        return id
    }

    func results(_ action: Machine.Action) -> [String]? {
        guard case .success(let r)? = action.deliver?.results else { return nil }
        return r
    }

    func failure(_ action: Machine.Action) -> PGError? {
        guard case .failure(let e)? = action.deliver?.results else { return nil }
        return e
    }

    @Test func aResultSplitAcrossReadsIsDeliveredOnceWhole() throws {
        var m = Machine()
        let wire = ScriptedWire()
        _ = try sentAndSuspended(&m)
        wire.arrive()  // the first bytes of the row
        let first = m.ioReady(.readable, wire)
        #expect(first.deliver == nil)
        guard case .awaitingResults = m.state else { Issue.record("expected awaitingResults, got \(m.state)"); return }
        wire.arrive(.result("SELECT 1"))  // the rest of the row, not yet ReadyForQuery
        #expect(m.ioReady(.readable, wire).deliver == nil)
        wire.arrive(.endOfResults)
        let done = m.ioReady(.readable, wire)
        #expect(results(done) == ["SELECT 1"])
        #expect(done.deliver?.cancelled == false)
        #expect(m.isIdle)
        #expect(wire.consumed == 3)
    }

    @Test func aCallerPollingItsSocketReadsASplitResultItself() throws {
        var m = Machine()
        let wire = ScriptedWire()
        guard case .send = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        #expect(m.sendFinished(sent: true, flushed: 0, lastError: "").deliver == nil)
        // The loop saw the reply arrive: it keeps off and stops watching.
        #expect(m.ioReady(.readable, wire).interest == [])
        #expect(wire.consumed == 0)
        wire.arrive()
        let partial = m.readWhileSending(wire)
        #expect(partial.keepReading && partial.deliver == nil)
        wire.arrive(.result("r1"), .result("r2"), .endOfResults)
        let done = m.readWhileSending(wire)
        #expect(results(done) == ["r1", "r2"])
        #expect(m.isIdle)
    }

    @Test func aPartReadWhilePollingIsFinishedByTheLoop() throws {
        var m = Machine()
        let wire = ScriptedWire()
        guard case .send = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        _ = m.sendFinished(sent: true, flushed: 0, lastError: "")
        wire.arrive(.result("r1"))
        #expect(m.readWhileSending(wire).keepReading)
        #expect(m.suspend().interest == .readable)  // the poll ran out
        wire.arrive(.endOfResults)
        #expect(results(m.ioReady(.readable, wire)) == ["r1"])
    }

    @Test func aTaskCancelledBeforeSendingNeverSends() {
        var m = Machine()
        guard case .fail(let error) = m.startRoundTrip(cancellable: true, taskCancelled: true) else {
            Issue.record("a cancelled task started a round trip")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(error.notSent)
        #expect(m.isIdle)
        // A non-cancellable statement (ROLLBACK, COMMIT) still goes.
        guard case .send = m.startRoundTrip(cancellable: false, taskCancelled: true) else {
            Issue.record("a non-cancellable statement was refused")
            return
        }
    }

    @Test func aCancelAfterSendingWaitsForPQcancelBeforeDelivering() throws {
        var m = Machine()
        let wire = ScriptedWire()
        let id = try sentAndSuspended(&m)
        let cancel = m.cancelRequested(id: id)
        #expect(cancel.sendCancel)
        guard case .cancelling = m.state else { Issue.record("expected cancelling, got \(m.state)"); return }
        #expect(!m.cancelRequested(id: id).sendCancel)  // once
        // The server answers (57014) before PQcancel returned: held back.
        wire.arrive(.result("ERROR 57014"), .endOfResults)
        #expect(m.ioReady(.readable, wire).deliver == nil)
        let returned = m.cancelReturned()
        #expect(results(returned) == ["ERROR 57014"])
        #expect(returned.deliver?.cancelled == true)
        #expect(m.isIdle)
    }

    @Test func aCancelThatReturnsFirstLetsTheResultsThroughWhenTheyCome() throws {
        var m = Machine()
        let wire = ScriptedWire()
        let id = try sentAndSuspended(&m)
        #expect(m.cancelRequested(id: id).sendCancel)
        #expect(m.cancelReturned().deliver == nil)
        guard case .awaitingResults = m.state else { Issue.record("expected awaitingResults, got \(m.state)"); return }
        wire.arrive(.result("ERROR 57014"), .endOfResults)
        let done = m.ioReady(.readable, wire)
        #expect(results(done) == ["ERROR 57014"])
        #expect(done.deliver?.cancelled == true)
    }

    @Test func aCancelDuringTheSendIsIssuedWhenTheCallerSuspends() throws {
        var m = Machine()
        guard case .send(let id) = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        #expect(!m.cancelRequested(id: id).sendCancel)  // still sending: not yet
        _ = m.sendFinished(sent: true, flushed: 0, lastError: "")
        let suspended = m.suspend()
        #expect(suspended.sendCancel)
        guard case .cancelling = m.state else { Issue.record("expected cancelling, got \(m.state)"); return }
    }

    @Test func aCancelForAFinishedRoundTripIsIgnored() throws {
        var m = Machine()
        let wire = ScriptedWire()
        let id = try sentAndSuspended(&m)
        wire.arrive(.result("ok"), .endOfResults)
        #expect(results(m.ioReady(.readable, wire)) == ["ok"])
        #expect(!m.cancelRequested(id: id).sendCancel)
        #expect(m.isIdle)
    }

    @Test func aConnectionThatDiesMidResultFailsTheCallerAndStaysBroken() throws {
        var m = Machine()
        let wire = ScriptedWire()
        _ = try sentAndSuspended(&m)
        wire.arrive(.result("row 1 of 2"))
        #expect(m.ioReady(.readable, wire).deliver == nil)
        wire.dead = true
        let died = m.ioReady([.readable, .hangup], wire)
        let error = try #require(failure(died))
        #expect(error.kind == .connection)
        #expect(error.message.contains("server closed the connection unexpectedly"))
        #expect(!error.notSent)  // the statement left: never retried elsewhere
        #expect(died.broke != nil)
        #expect(m.brokenError != nil)
        // Later statements fail at once, marked as never sent (another connection may run them).
        guard case .fail(let later) = m.startRoundTrip(cancellable: true, taskCancelled: false) else {
            Issue.record("a broken connection started a round trip")
            return
        }
        #expect(later.kind == .connection && later.notSent)
    }

    @Test func aFailedSendIsAConnectionErrorMarkedNotSent() {
        var m = Machine()
        guard case .send = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        let action = m.sendFinished(sent: false, flushed: -1, lastError: "no connection to the server")
        let error = failure(action)
        #expect(error?.kind == .connection && error?.notSent == true)
        #expect(action.broke != nil)
    }

    @Test func anIdleConnectionClosedByTheServerIsReportedBroken() {
        var m = Machine()
        let wire = ScriptedWire()
        #expect(m.ioReady(.readable, wire).broke == nil)  // a notification, say
        wire.dead = true
        let action = m.ioReady([.readable, .hangup], wire)
        #expect(action.broke?.kind == .connection)
        #expect(action.deliver == nil)  // nobody waits
        #expect(m.brokenError != nil)
    }

    @Test func copyFromStdinIsRefusedAndItsErrorDelivered() throws {
        var m = Machine()
        let wire = ScriptedWire()
        _ = try sentAndSuspended(&m)
        wire.arrive(.copyIn)
        #expect(m.ioReady(.readable, wire).deliver == nil)
        #expect(wire.copyInRefused == 1)
        // The server answers the refusal with an error, then ReadyForQuery.
        wire.arrive(.result("ERROR 57014 COPY from stdin failed"), .endOfResults)
        let done = m.ioReady(.readable, wire)
        #expect(results(done) == ["ERROR 57014 COPY from stdin failed"])
        #expect(m.isIdle)
    }

    @Test func copyToStdoutDataIsDroppedUntilTheCommandEnds() throws {
        var m = Machine()
        let wire = ScriptedWire()
        _ = try sentAndSuspended(&m)
        wire.arrive(.copyOut)
        #expect(m.ioReady(.readable, wire).deliver == nil)  // more COPY data to come
        wire.copyOutFinished = true
        wire.arrive(.result("COPY 3"), .endOfResults)
        #expect(results(m.ioReady(.readable, wire)) == ["COPY 3"])
    }

    @Test func closingWhileAStatementWaitsFailsItAndFinishes() throws {
        var m = Machine()
        _ = try sentAndSuspended(&m)
        let closed = m.close()
        #expect(failure(closed)?.kind == .closed)
        #expect(closed.finish)
        #expect(m.isClosed)
        #expect(m.close().deliver == nil && !m.close().finish)  // once
    }

    @Test func closingWhileTheCallerSendsDefersPQfinishToIt() {
        var m = Machine()
        guard case .send = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        let closed = m.close()
        #expect(!closed.finish)  // the caller still uses the PGconn
        let back = m.sendFinished(sent: true, flushed: 0, lastError: "")
        #expect(failure(back)?.kind == .closed)
        #expect(back.finish)
    }

    @Test func aPendingFlushWatchesWritableUntilDone() throws {
        var m = Machine()
        let wire = ScriptedWire()
        guard case .send = m.startRoundTrip(cancellable: true, taskCancelled: false) else { return }
        _ = m.sendFinished(sent: true, flushed: 1, lastError: "")
        #expect(m.suspend().interest == [.readable, .writable])
        wire.flushResult = 1
        #expect(m.ioReady(.writable, wire).interest == nil)
        wire.flushResult = 0
        #expect(m.ioReady(.writable, wire).interest == .readable)
        wire.arrive(.result("INSERT 0 1"), .endOfResults)
        #expect(results(m.ioReady(.readable, wire)) == ["INSERT 0 1"])
    }
}

/// The statement cache's bookkeeping, without a server.
@Suite struct StatementCacheTests {
    typealias Key = StatementCache.Key

    @Test func preparesOnTheSecondRunAndEvictsTheLeastRecentlyUsed() {
        var cache = StatementCache(capacity: 2)
        let a = Key(sql: "SELECT a", types: [20]), b = Key(sql: "SELECT b", types: []), c = Key(sql: "SELECT c", types: [])
        var evicted: [String] = []
        guard case .runUnnamed = cache.lookup(a, evicted: &evicted) else { Issue.record("a one-off was prepared"); return }
        guard case .prepareNow(let nameA) = cache.lookup(a, evicted: &evicted) else { Issue.record("not prepared on the second run"); return }
        for _ in 0..<3 {  // the hot statement, found without hashing
            guard case .prepared(let again) = cache.lookup(a, evicted: &evicted), again == nameA else {
                Issue.record("the prepared statement was not reused")
                return
            }
        }
        guard case .runUnnamed = cache.lookup(b, evicted: &evicted) else { return }
        guard case .prepareNow(let nameB) = cache.lookup(b, evicted: &evicted) else { return }
        guard case .prepared = cache.lookup(a, evicted: &evicted) else { return }  // a is now the most recent
        _ = cache.lookup(c, evicted: &evicted)  // full: evicts b, the least recently used
        #expect(evicted == [nameB])
        guard case .prepared(let stillA) = cache.lookup(a, evicted: &evicted), stillA == nameA else {
            Issue.record("the most recently used statement was evicted")
            return
        }
        cache.remove(a)
        guard case .runUnnamed = cache.lookup(a, evicted: &evicted) else { Issue.record("a removed statement was still known"); return }
    }
}
