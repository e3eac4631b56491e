import CacheAsideMemory
import CacheAsideRedis
import Logging
import Synchronization

/// Keeps this process's in-process tiers coherent with Redis, and so with every other
/// process: the driver of ``MemoryTierCoherence``.
///
/// It owns the tiers of the runtime (by keyspace name) and one dedicated subscriber
/// connection, opened by ``run(redis:)`` once a first tier exists. What the connection
/// reports is applied on the connection's I/O thread, in the order Redis sent it, before
/// anything after it:
/// - `subscribed` (first connect, or a reconnect): flush every tier. Tickets taken
///   before now are refused, so no value read while invalidations could be lost is
///   kept. Trust returns with the next answered `PING`.
/// - an invalidation (client tracking's keys, or a published key): invalidate those
///   keys in every tier of their keyspace. A fill whose ticket predates it is refused.
/// - "every key" (`FLUSHDB`, `FLUSHALL`): flush every tier.
/// - the answer to a `PING` sent at *t*: every invalidation Redis sent before it read
///   that `PING` has been applied, so serve hits until *t* + `maximumStaleness`. If
///   the trust given by the previous answer had lapsed (a heartbeat missed beyond the
///   bound), flush every tier first.
/// - disconnected: stop serving hits at once, and flush every tier.
///
/// Writes of this process invalidate their keys here too (``invalidate(keys:)``), after
/// their invalidation in Redis landed or was queued, before the write returns.
final class MemoryCoherence: Sendable {
    let settings: MemoryTierCoherence
    /// `<namespace>:`, the prefix of every key of the runtime.
    let keyPrefix: String
    /// The channel writers publish to (publish mode).
    let channel: String?
    let clientName: String
    let logger: Logger

    private struct State {
        var tiers: [String: [MemoryTierBase]] = [:]
        /// Subscribed, with no loss since: tiers may be trusted.
        var subscribed = false
        /// The trust deadline given to every tier (nil: revoked).
        var trustedUntil: MemoryInstant?
        /// The channel was reported lost (for logging changes of state once).
        var lost = false
        var refusalLogged = false
        var running = false
    }

    private let state = Mutex(State())
    /// Fired when the first tier registers: the connection is opened then.
    private let needed = Signal()

    init(settings: MemoryTierCoherence, namespace: String, instance: String, logger: Logger) {
        self.settings = settings
        self.keyPrefix = namespace + ":"
        switch settings.invalidation {
        case .tracking: channel = nil
        case .publish(let name): channel = name ?? "\(namespace):cache-aside:invalidations"
        }
        self.clientName = "\(namespace):cache-aside:memory:\(instance)"
        self.logger = logger
    }

    // MARK: - Tiers

    /// Adds a tier: it starts flushed and with the trust every tier has now.
    func register(_ tier: MemoryTierBase) {
        let first: Bool = state.withLock { s in
            let first = s.tiers.isEmpty
            s.tiers[tier.keyspace, default: []].append(tier)
            if let deadline = s.trustedUntil { tier.trust(until: deadline) } else { tier.revokeTrust() }
            return first
        }
        if first { needed.fire() }
    }

    /// Removes a tier that its keyspace no longer uses (its policy changed).
    func unregister(_ tier: MemoryTierBase) {
        state.withLock { s in
            // Untrusted before it stops hearing invalidations: a reader still holding
            // the old keyspace state gets no hit from it meanwhile.
            tier.revokeTrust()
            s.tiers[tier.keyspace]?.removeAll { $0 === tier }
        }
        tier.flush()
    }

    /// Invalidates `keys` in the tiers of their keyspaces: this process's own writes
    /// (`received` false), or keys Redis reported.
    func invalidate(keys: [String], received: Bool = false) {
        if keys.isEmpty { return }
        var byKeyspace: [Substring: [String]] = [:]
        for key in keys {
            guard let keyspace = keyspaceName(of: key) else { continue }
            byKeyspace[keyspace, default: []].append(key)
        }
        state.withLock { s in
            for (keyspace, keys) in byKeyspace {
                guard let tiers = s.tiers[String(keyspace)] else { continue }
                for tier in tiers { tier.invalidate(keys: keys, received: received) }
            }
        }
    }

    /// The keyspace of a key `<namespace>:<keyspace>:<id>` (keyspace names hold no `:`).
    private func keyspaceName(of key: String) -> Substring? {
        guard key.hasPrefix(keyPrefix) else { return nil }
        let rest = key.utf8.dropFirst(keyPrefix.utf8.count)
        guard let colon = rest.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        return Substring(key.utf8[rest.startIndex..<colon])
    }

    private func flushAll(_ s: State) {
        for tiers in s.tiers.values {
            for tier in tiers { tier.flush() }
        }
    }

    // MARK: - Events

    /// Applies one event of the dedicated connection (on its I/O thread).
    func handle(_ event: RESPSubscriberEvent) {
        switch event {
        case .invalidated(let keys):
            invalidate(keys: keys, received: true)
        case .message(let message):
            guard message.channel == channel else { return }
            invalidate(keys: [message.payloadString], received: true)
        case .invalidatedAll:
            state.withLock { s in flushAll(s) }
        case .pong(let sentAt):
            let age = sentAt.duration(to: .now)
            let left = settings.maximumStaleness - age
            state.withLock { s in
                guard s.subscribed, let any = s.tiers.values.first?.first else { return }
                let now = any.clock.now()
                // A heartbeat missed beyond the bound: trust lapsed. Nothing can have
                // been lost on an open connection, but flush anyway (what memory held
                // is no longer vouched for), then trust from this answer.
                if let previous = s.trustedUntil, previous <= now {
                    s.trustedUntil = nil
                    flushAll(s)
                }
                guard left > .zero else { return }
                let deadline = now + left
                s.trustedUntil = deadline
                for tiers in s.tiers.values {
                    for tier in tiers { tier.trust(until: deadline) }
                }
            }
        case .subscribed:
            let recovered: Bool = state.withLock { s in
                s.subscribed = true
                // Fills read while invalidations could be lost are refused from here.
                flushAll(s)
                defer { s.lost = false }
                return s.lost
            }
            if recovered {
                logger.info("memory tier: invalidation channel back; memory hits resume", metadata: ["namespace": "\(keyPrefix.dropLast())"])
            } else {
                logger.debug("memory tier: invalidation channel subscribed", metadata: ["namespace": "\(keyPrefix.dropLast())"])
            }
        case .disconnected(let error):
            let (firstLoss, logRefusal): (Bool, Bool) = state.withLock { s in
                s.subscribed = false
                s.trustedUntil = nil
                for tiers in s.tiers.values {
                    for tier in tiers {
                        tier.revokeTrust()
                        tier.flush()
                    }
                }
                let first = !s.lost
                s.lost = true
                let refusal = error.kind == .server && !s.refusalLogged
                if refusal { s.refusalLogged = true }
                return (first, refusal)
            }
            if logRefusal {
                logger.warning(
                    "memory tier: Redis refuses the invalidation channel's setup (client tracking not allowed?); memory is bypassed until it accepts it; consider MemoryTierCoherence.Invalidation.publish",
                    metadata: ["namespace": "\(keyPrefix.dropLast())", "error": "\(error)"])
            } else if firstLoss {
                logger.warning("memory tier: invalidation channel lost; memory flushed and bypassed until it is back",
                               metadata: ["namespace": "\(keyPrefix.dropLast())", "error": "\(error)"])
            }
        }
    }

    // MARK: - Running

    /// The dedicated connection's setup.
    var subscriberConfiguration: RESPSubscriberConfiguration {
        var configuration = RESPSubscriberConfiguration(
            clientName: clientName, pingInterval: settings.heartbeatInterval,
            pingTimeout: max(settings.maximumStaleness * 5, .seconds(5)))
        if let channel {
            configuration.channels = [channel]
        } else {
            configuration.trackingPrefixes = [keyPrefix]
        }
        return configuration
    }

    /// Keeps the dedicated connection open, from the first tier's registration until
    /// the task is cancelled; then revokes trust and flushes every tier (memory serves
    /// nothing once the runtime stops).
    func run(redis: RESPClient) async {
        await needed.wait()
        if Task.isCancelled { return stopped() }
        do {
            try await redis.withSubscriber(subscriberConfiguration, onEvent: { [self] event in handle(event) }) {
                // Until cancelled.
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
        } catch {
            logger.warning("memory tier: cannot open the invalidation channel; memory is bypassed", metadata: ["error": "\(error)"])
        }
        stopped()
    }

    private func stopped() {
        state.withLock { s in
            s.subscribed = false
            s.trustedUntil = nil
            for tiers in s.tiers.values {
                for tier in tiers {
                    tier.revokeTrust()
                    tier.flush()
                }
            }
        }
    }
}
