extension RESPClusterClient {
    /// Runs a list of commands of one type across the cluster: each goes to the node
    /// that serves its first key's slot (a command without keys to one of the
    /// primaries); each node's commands go in one pipeline, the nodes concurrently, and
    /// the results come back in request order.
    ///
    /// Each command follows its own `MOVED`, `ASK` and `TRYAGAIN` redirections, and an
    /// `EVALSHA` answered `NOSCRIPT` is sent again after its script is loaded on that
    /// node. A command the server refused has a `.failure` with its ``RESPError`` (kind
    /// ``RESPError/Kind/server``); the commands of a node that could not be reached (or
    /// did not answer in time) have that connection failure or timeout, and the other
    /// nodes' commands their own results. Commands on different nodes run in any order
    /// relative to each other.
    ///
    /// - Throws: ``RESPError`` when no topology is known; `CancellationError`.
    public func pipeline<C: RESPCommand>(_ commands: [C]) async throws -> [Result<C.Response, RESPError>] {
        guard !commands.isEmpty else { return [] }
        var slots: [HashSlot?] = []
        slots.reserveCapacity(commands.count)
        var scripts: [RESPScript?] = []
        scripts.reserveCapacity(commands.count)
        for command in commands {
            slots.append(command.keys.first.map { HashSlot(key: $0) })
            scripts.append(command.script)
        }
        let replies = try await run(slots: slots, scripts: scripts) { encoder, index in
            commands[index].encode(into: &encoder)
        }
        var results: [Result<C.Response, RESPError>] = []
        results.reserveCapacity(commands.count)
        for (command, reply) in zip(commands, replies) {
            results.append(reply.flatMap { decodeResult(command, $0) })
        }
        return results
    }

    /// Runs several commands across the cluster, like ``pipeline(_:)-([C])``.
    public func pipeline<each C: RESPCommand>(_ commands: repeat each C) async throws -> (repeat Result<(each C).Response, RESPError>) {
        var slots: [HashSlot?] = []
        var scripts: [RESPScript?] = []
        var encoders: [@Sendable (inout RESPCommandEncoder) -> Void] = []
        for command in repeat each commands {
            slots.append(command.keys.first.map { HashSlot(key: $0) })
            scripts.append(command.script)
            encoders.append { command.encode(into: &$0) }
        }
        let replies = try await run(slots: slots, scripts: scripts) { [encoders] encoder, index in
            encoders[index](&encoder)
        }
        var position = 0
        func next<X: RESPCommand>(_ command: X) -> Result<X.Response, RESPError> {
            defer { position += 1 }
            return replies[position].flatMap { decodeResult(command, $0) }
        }
        return (repeat next(each commands))
    }

    /// Subscribes to `channels` on one node of the cluster (a message published on any
    /// node reaches every node's subscribers) and returns once it confirmed the
    /// subscription. When that node stops answering or leaves the cluster, the
    /// subscription moves to another node (checked every
    /// ``RESPClusterConfiguration/subscriptionCheckInterval``); messages published
    /// meanwhile are lost, as across any reconnection (Redis pub/sub delivers at most
    /// once).
    ///
    /// - Throws: ``RESPError`` if no node accepted the subscription.
    public func subscribe(channels: [String], bufferLimit: Int = 100_000) async throws -> RESPClusterSubscription {
        guard !channels.isEmpty else { throw RESPError.configuration("subscribe needs at least one channel") }
        let keeper = ClusterSubscriptionKeeper(client: self, channels: channels, bufferLimit: bufferLimit)
        do {
            try await keeper.connect(avoiding: nil)
        } catch {
            await keeper.close()
            throw error
        }
        keeper.startChecks()
        return RESPClusterSubscription(keeper: keeper)
    }

    // MARK: - Multi-key commands

    /// A multi-key command whose keys live in several slots: one command per slot, in
    /// one pipeline per node, the parts put back together.
    func executeAcrossSlots<C: RESPCommand>(_ command: C, keys: [String], slots: [HashSlot]) async throws -> C.Response {
        let groups = ClusterSplit.groupBySlot(slots)
        let groupKeys = groups.map { group in group.indices.map { keys[$0] } }
        func replies(_ encode: @escaping @Sendable (inout RESPCommandEncoder, [String]) -> Void) async throws -> [RESPReply] {
            let results = try await run(slots: groups.map(\.slot), scripts: Array(repeating: nil, count: groups.count)) { encoder, index in
                encode(&encoder, groupKeys[index])
            }
            return try results.map { result in
                let reply = try result.get()
                if case .error(let message) = reply { throw RESPError.server(message) }
                return reply
            }
        }
        let response: Any
        switch command {
        case is RESPCommands.MGET:
            let parts = try await replies { encoder, keys in RESPCommands.MGET(keys).encode(into: &encoder) }
            var values = ClusterReassembly<[UInt8]?>(count: keys.count)
            do {
                for (index, reply) in parts.enumerated() {
                    try values.place(try RESPCommands.MGET(groupKeys[index]).decode(reply), at: groups[index].indices)
                }
                response = try values.result()
            } catch let error as ClusterReassemblyError {
                throw RESPError.protocolError("\(error)")
            }
        case is RESPCommands.DEL:
            response = try await count(replies { encoder, keys in RESPCommands.DEL(keys).encode(into: &encoder) }, "DEL")
        case is RESPCommands.UNLINK:
            response = try await count(replies { encoder, keys in RESPCommands.UNLINK(keys).encode(into: &encoder) }, "UNLINK")
        case is RESPCommands.EXISTS:
            response = try await count(replies { encoder, keys in RESPCommands.EXISTS(keys).encode(into: &encoder) }, "EXISTS")
        default:
            throw RESPError.server(
                "CROSSSLOT Keys in request don't hash to the same slot (not sent: the cluster client splits only MGET, DEL, UNLINK and EXISTS; use hash tags)")
        }
        guard let typed = response as? C.Response else {
            throw RESPError.protocolError("\(type(of: command).name) across slots: unexpected response type")
        }
        return typed
    }

    private func count(_ replies: [RESPReply], _ name: String) throws(RESPError) -> Int {
        var total = 0
        for reply in replies { total += Int(try reply.decodeInteger(for: name)) }
        return total
    }

    // MARK: - Routing a request

    /// A command of a request on its way: its index in the request, its slot (`nil`
    /// for a command without keys) and, after a redirection, the node it goes to.
    struct Routed: Sendable {
        var index: Int
        var slot: HashSlot?
        var node: ClusterNode?
        var asking = false
        /// The `MOVED` and `ASK` replies this command followed.
        var redirects = 0
    }

    /// What one node got and answered.
    struct Batch: Sendable {
        var node: ClusterNode
        var items: [Routed]
    }

    /// Sends the commands of a request (command `i` is `encode(&encoder, i)`) to their
    /// nodes, follows redirections, and returns each command's raw reply (error replies
    /// included) or the failure of its node, in request order.
    func run(
        slots: [HashSlot?], scripts: [RESPScript?],
        encode: @escaping @Sendable (inout RESPCommandEncoder, Int) -> Void
    ) async throws -> [Result<RESPReply, RESPError>] {
        var results = [Result<RESPReply, RESPError>?](repeating: nil, count: slots.count)
        var pending = slots.indices.map { Routed(index: $0, slot: slots[$0]) }
        var tryAgainUntil: ContinuousClock.Instant?
        while !pending.isEmpty {
            let routing = try await currentRouting()
            // By node, in order of each node's first command.
            var batches: [Batch] = []
            var batchOfNode: [ObjectIdentifier: Int] = [:]
            for item in pending {
                let node: ClusterNode
                if let target = item.node {
                    node = target
                } else {
                    do {
                        node = try self.node(for: item.slot, routing: routing)
                    } catch {
                        results[item.index] = .failure(error)
                        continue
                    }
                }
                if let b = batchOfNode[ObjectIdentifier(node)] {
                    batches[b].items.append(item)
                } else {
                    batchOfNode[ObjectIdentifier(node)] = batches.count
                    batches.append(Batch(node: node, items: [item]))
                }
            }
            let outcomes = try await send(batches, scripts: scripts, encode: encode)
            pending = []
            var pause = false
            for (batch, outcome) in zip(batches, outcomes) {
                switch outcome {
                case .failure(let error):
                    if error.isConnectionFailure { connectionFailed(batch.node) }
                    for item in batch.items { results[item.index] = .failure(error) }
                case .success(let replies):
                    for (item, reply) in zip(batch.items, replies) {
                        guard case .error(let message) = reply else {
                            results[item.index] = .success(reply)
                            continue
                        }
                        let errorClass = ClusterErrorClass(errorMessage: message)
                        if case .tryAgain = errorClass {
                            // Keys split by a migration: again, for at most the command timeout.
                            countRedirection(errorClass)
                            let deadline = tryAgainUntil ?? ContinuousClock.now + configuration.node.commandTimeout
                            tryAgainUntil = deadline
                            if ContinuousClock.now + configuration.tryAgainDelay < deadline {
                                pending.append(item)
                                pause = true
                            } else {
                                results[item.index] = .success(reply)
                            }
                            continue
                        }
                        guard item.redirects < configuration.maximumRedirects else {
                            if errorClass.suggestsTopologyChange { serverReportedChange(batch.node) }
                            results[item.index] = .success(reply)
                            continue
                        }
                        countRedirection(errorClass)
                        switch errorClass {
                        case .moved(let redirection):
                            pending.append(Routed(
                                index: item.index, slot: item.slot, node: followMoved(redirection, from: batch.node),
                                redirects: item.redirects + 1))
                        case .ask(let redirection):
                            let target = node(at: redirection.address(answeredBy: batch.node.address))
                            pending.append(Routed(index: item.index, slot: item.slot, node: target, asking: true, redirects: item.redirects + 1))
                        case .tryAgain:
                            pending.append(item)
                            pause = true
                        case .clusterDown, .readOnly:
                            serverReportedChange(batch.node)
                            results[item.index] = .success(reply)
                        case .crossSlot, .unavailable, .other:
                            results[item.index] = .success(reply)
                        }
                    }
                }
            }
            if pause { try await Task.sleep(for: configuration.tryAgainDelay) }
        }
        return results.map { $0 ?? .failure(RESPError.protocolError("no reply for a command of the pipeline")) }
    }

    /// Sends each batch to its node, the nodes concurrently.
    private func send(
        _ batches: [Batch], scripts: [RESPScript?], encode: @escaping @Sendable (inout RESPCommandEncoder, Int) -> Void
    ) async throws -> [Result<[RESPReply], RESPError>] {
        if batches.count == 1 { return [try await send(batches[0], scripts: scripts, encode: encode)] }
        return try await withThrowingTaskGroup(of: (Int, Result<[RESPReply], RESPError>).self) { group in
            for (position, batch) in batches.enumerated() {
                group.addTask { (position, try await self.send(batch, scripts: scripts, encode: encode)) }
            }
            var outcomes = [Result<[RESPReply], RESPError>](repeating: .success([]), count: batches.count)
            for try await (position, outcome) in group { outcomes[position] = outcome }
            return outcomes
        }
    }

    /// Sends one node's commands in one pipeline (each after `ASKING` if it was asked
    /// to), loads the scripts the node answered `NOSCRIPT` for and sends those commands
    /// again, once. Connection failures and timeouts are the batch's result; only
    /// cancellation is thrown.
    private func send(
        _ batch: Batch, scripts: [RESPScript?], encode: @escaping @Sendable (inout RESPCommandEncoder, Int) -> Void
    ) async throws -> Result<[RESPReply], RESPError> {
        let connection = batch.node.client.connection()
        func sendItems(_ items: ArraySlice<Routed>) async throws -> [RESPReply] {
            countRoundTrip()
            let asking = items.reduce(0) { $0 + ($1.asking ? 1 : 0) }
            let total = items.count + asking
            let reply = try await connection.send(replies: total, pipeline: true) { encoder in
                for item in items {
                    if item.asking { encoder.command("ASKING", argumentCount: 0) }
                    encode(&encoder, item.index)
                }
            }
            guard case .array(let all) = reply, all.count == total else {
                throw RESPError.protocolError("a pipeline of \(total) commands got \(reply)")
            }
            if asking == 0 { return all }
            var replies: [RESPReply] = []
            replies.reserveCapacity(items.count)
            var position = 0
            for item in items {
                if item.asking { position += 1 }
                replies.append(all[position])
                position += 1
            }
            return replies
        }
        do {
            var replies = try await sendItems(batch.items[...])
            let unknown = batch.items.indices.filter { k in
                scripts[batch.items[k].index] != nil && replies[k].errorMessage?.hasPrefix("NOSCRIPT") == true
            }
            if !unknown.isEmpty {
                _ = try await batch.node.client.loadScripts(unknown.compactMap { scripts[batch.items[$0].index] }, on: connection)
                let again = try await sendItems(ArraySlice(unknown.map { batch.items[$0] }))
                for (position, k) in unknown.enumerated() { replies[k] = again[position] }
            }
            return .success(replies)
        } catch let error as RESPError {
            return .failure(error)
        }
    }
}
