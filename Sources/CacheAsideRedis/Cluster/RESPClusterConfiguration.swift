import Logging
import IOLoop

/// Where a ``RESPClusterClient`` learns the cluster, and how it talks to its nodes.
///
/// Usually made from a URL that names one or more nodes of the cluster and the cluster
/// switch:
///
/// ```swift
/// var configuration = try RESPClusterConfiguration(
///     url: "rediss://app:secret@node-1.internal:6379,node-2.internal:6379/0?cluster=true")
/// configuration.node.commandTimeout = .milliseconds(250)
/// let redis = try RESPClusterClient(configuration: configuration)
/// ```
///
/// The seeds are only where the client asks for the topology first: any nodes of the
/// cluster (one is enough; several survive one of them being down). ElastiCache's
/// configuration endpoint is a seed. Every other node's address comes from the cluster
/// itself (`CLUSTER SHARDS`).
///
/// Its ``description`` never shows the password.
public struct RESPClusterConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// The nodes asked for the topology first (TCP endpoints).
    public var seeds: [RESPConfiguration.Endpoint]
    /// How every node is talked to: credentials (or a credentials provider), TLS,
    /// timeouts, connections per node (``RESPConfiguration/connectionCount``), reply
    /// polling, reconnect backoff. Its ``RESPConfiguration/endpoint`` is ignored (each
    /// node's address comes from the cluster), and its database must be 0 (a cluster
    /// has no other).
    public var node: RESPConfiguration
    /// How often the topology is refreshed when nothing else asks for it, with ±10 %
    /// jitter. Default: 30 seconds.
    public var refreshInterval: Duration = .seconds(30)
    /// The shortest time between the starts of two refreshes (a storm of `MOVED`
    /// replies or failed connections costs one refresh per this interval). Default: 1
    /// second.
    public var minimumRefreshInterval: Duration = .seconds(1)
    /// The longest wait between refresh attempts after failures (each failure in a row
    /// doubles the wait, from ``minimumRefreshInterval``). Default: 10 seconds.
    public var maximumRefreshBackoff: Duration = .seconds(10)
    /// How many times one command follows `MOVED` and `ASK` replies before the last one
    /// is its error. Default: 5.
    public var maximumRedirects: Int = 5
    /// How long a command waits after a `TRYAGAIN` reply (a multi-key command whose keys
    /// a slot migration has split between two nodes) before it is sent again; it is sent
    /// again for at most the command timeout. Default: 10 milliseconds.
    public var tryAgainDelay: Duration = .milliseconds(10)
    /// How often a subscription checks that its node still answers (and is still part
    /// of the cluster), and moves to another node if not. Default: 500 milliseconds.
    public var subscriptionCheckInterval: Duration = .milliseconds(500)

    /// A configuration from seeds and the settings every node's connections use.
    public init(seeds: [RESPConfiguration.Endpoint], node: RESPConfiguration) {
        self.seeds = seeds
        self.node = node
    }

    /// Parses a cluster URL: a Redis URL (see ``RESPConfiguration/init(url:)``) whose
    /// authority names one or more seeds, separated by commas, and whose query says
    /// `cluster=true`:
    ///
    /// - `redis://[[user]:password@]host[:port][,host[:port]...][/0]?cluster=true`
    /// - `rediss://...?cluster=true&tls_ca_file=...` (TLS to every node, with the
    ///   options of ``RESPConfiguration/init(url:)``).
    ///
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for a URL that
    ///   is not a cluster URL (no `cluster=true`), a `unix://` URL, a database other than
    ///   0, or anything ``RESPConfiguration/init(url:)`` refuses; never quoting the
    ///   password.
    public init(url: String) throws(RESPError) {
        guard let parts = ClusterURL(url) else {
            throw .configuration("not a Redis URL (expected redis://host:port,host:port/0?cluster=true): \(RESPConfiguration.redacted(url))")
        }
        guard parts.cluster == true else {
            throw .configuration("\(RESPConfiguration.redacted(url)) is not a cluster URL: add ?cluster=true (or use RESPClient for one server)")
        }
        var seeds: [RESPConfiguration.Endpoint] = []
        var template: RESPConfiguration?
        for host in parts.hosts {
            // Each seed through the one parser of Redis URLs: credentials, TLS options
            // and the database come out the same for every seed.
            let single = try RESPConfiguration(url: parts.url(withHost: host))
            guard case .tcp = single.endpoint else {
                throw .configuration("a Redis Cluster is reached over TCP, not \(RESPConfiguration.redacted(url))")
            }
            seeds.append(single.endpoint)
            if template == nil { template = single }
        }
        guard let template else {
            throw .configuration("Redis Cluster URL \(RESPConfiguration.redacted(url)) names no node")
        }
        self.init(seeds: seeds, node: template)
        try validate()
    }

    /// Whether `url` asks for a cluster (`cluster=true` in its query).
    public static func isClusterURL(_ url: String) -> Bool {
        ClusterURL(url)?.cluster == true
    }

    /// The seeds and the node settings, without the password:
    /// `redis://user:***@h1:p1,h2:p2/0?cluster=true`.
    public var description: String {
        var node = self.node
        node.endpoint = seeds.first ?? .tcp(host: "?", port: 0)
        let single = node.description
        guard let schemeEnd = single.firstRange(of: "://") else { return single }
        let rest = single[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let userInfo = rest[..<authorityEnd].lastIndex(of: "@").map { rest[...$0] } ?? ""
        let hosts = seeds.map(\.description).joined(separator: ",")
        let path = rest[authorityEnd...]
        let query = path.contains("?") ? "&cluster=true" : "?cluster=true"
        return single[..<schemeEnd.upperBound] + userInfo + hosts + path + query
    }

    /// Checks the knobs.
    func validate() throws(RESPError) {
        guard !seeds.isEmpty else { throw .configuration("a Redis Cluster configuration needs at least one seed") }
        for seed in seeds {
            guard case .tcp = seed else { throw .configuration("a Redis Cluster seed must be a TCP endpoint, not \(seed)") }
        }
        guard node.database == 0 else {
            throw .configuration("a Redis Cluster has only database 0 (the configuration selects \(node.database))")
        }
        var probe = node
        probe.endpoint = seeds[0]
        try probe.validate()
        guard refreshInterval > .zero, minimumRefreshInterval > .zero, maximumRefreshBackoff >= minimumRefreshInterval else {
            throw .configuration("cluster refresh intervals must be positive, with maximumRefreshBackoff >= minimumRefreshInterval")
        }
        guard maximumRedirects >= 1 else { throw .configuration("maximumRedirects must be at least 1 (is \(maximumRedirects))") }
        guard tryAgainDelay >= .zero, subscriptionCheckInterval > .zero else {
            throw .configuration("tryAgainDelay must not be negative and subscriptionCheckInterval must be positive")
        }
    }

    /// The addresses of the seeds.
    var seedAddresses: [ClusterNodeAddress] {
        seeds.compactMap { seed in
            guard case .tcp(let host, let port) = seed else { return nil }
            return ClusterNodeAddress(host: host, port: port)
        }
    }

    /// The settings of one node's connections.
    func configuration(for address: ClusterNodeAddress) -> RESPConfiguration {
        var configuration = node
        configuration.endpoint = .tcp(host: address.host, port: address.port)
        return configuration
    }
}

/// A Redis URL cut around its authority: the hosts (comma-separated seeds) apart, and
/// the `cluster` parameter taken out of the query.
struct ClusterURL {
    var scheme: Substring
    var userInfo: Substring
    var hosts: [Substring]
    var path: Substring
    /// The query without `cluster=...`, with its `?` (or empty).
    var query: String
    /// The value of `cluster`: `nil` when absent.
    var cluster: Bool?

    init?(_ url: String) {
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        scheme = url[..<schemeEnd.lowerBound]
        var rest = url[schemeEnd.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        var queryText: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            queryText = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        path = rest[authorityEnd...]
        userInfo = ""
        if let at = authority.lastIndex(of: "@") {
            userInfo = authority[...at]
            authority = authority[authority.index(after: at)...]
        }
        hosts = authority.split(separator: ",", omittingEmptySubsequences: false)
        var kept: [Substring] = []
        for pair in queryText.split(separator: "&") where !pair.isEmpty {
            let name = pair.prefix { $0 != "=" }
            guard name == "cluster" else {
                kept.append(pair)
                continue
            }
            let value = pair.dropFirst(name.count + 1).lowercased()
            switch value {
            case "true", "1", "yes": cluster = true
            case "false", "0", "no": cluster = false
            default: return nil
            }
        }
        query = kept.isEmpty ? "" : "?" + kept.joined(separator: "&")
    }

    /// The URL of one server: this URL with `host` as its only host and no `cluster`.
    func url(withHost host: Substring) -> String {
        "\(scheme)://\(userInfo)\(host)\(path)\(query)"
    }
}

/// Makes the right client for a URL: a ``RESPClusterClient`` for a cluster URL
/// (`?cluster=true`, one or more seeds), else a ``RESPClient``.
///
/// ```swift
/// let redis = try RESPClients.make(url: redisURL) { $0.commandTimeout = .milliseconds(250) }
/// let cache = try CacheAside(postgres: postgres, redis: redis, namespace: "myapp", logger: logger)
/// ```
public enum RESPClients {
    /// A client for `url`: a cluster client when the URL says `cluster=true`, else a
    /// client of one server. `configure` adjusts the settings of the connections (of
    /// every node, for a cluster) before the client is made.
    ///
    /// - Throws: ``RESPError`` of kind ``RESPError/Kind/configuration`` for an invalid
    ///   URL or settings.
    public static func make(
        url: String,
        loop: IOLoop = .shared,
        logger: Logger = Logger(label: "swift-cache-aside.redis"),
        configure: (inout RESPConfiguration) -> Void = { _ in }
    ) throws(RESPError) -> any RESPClientProtocol {
        if RESPClusterConfiguration.isClusterURL(url) {
            var configuration = try RESPClusterConfiguration(url: url)
            configure(&configuration.node)
            return try RESPClusterClient(configuration: configuration, loop: loop, logger: logger)
        }
        var configuration = try RESPConfiguration(url: url)
        configure(&configuration)
        return try RESPClient(configuration: configuration, loop: loop, logger: logger)
    }
}
