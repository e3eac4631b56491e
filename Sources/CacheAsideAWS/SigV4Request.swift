/// An HTTP request as AWS Signature Version 4 sees it: method, path, query, headers and
/// body. ``SigV4Signer`` signs it (adding headers) or presigns it (adding query items).
public struct SigV4Request: Sendable, Hashable {
    /// One query parameter, unencoded (the signer and ``SigV4Request/encodedQuery``
    /// percent-encode it).
    public struct QueryItem: Sendable, Hashable {
        /// The parameter's name, unencoded.
        public var name: String
        /// The parameter's value, unencoded; empty for a parameter without one.
        public var value: String

        /// A query parameter `name=value` (both unencoded).
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// One header line. Names compare case-insensitively when signing; a name given
    /// more than once is signed as one header whose values are joined with commas, in
    /// the order given.
    public struct Header: Sendable, Hashable {
        /// The header's name, in any case.
        public var name: String
        /// The header's value as sent.
        public var value: String

        /// A header `name: value`.
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The HTTP method, e.g. `GET`.
    public var method: String
    /// The path as it appears in the request line, starting with `/`. The canonical
    /// request URI-encodes it (every byte but the unreserved characters and `/`); dot
    /// segments and repeated slashes are signed as they are, not normalized.
    public var path: String
    /// The query parameters, in the order they are sent (signing sorts them).
    public var query: [QueryItem]
    /// The headers; a request to sign needs at least `Host`.
    public var headers: [Header]
    /// The body, whose SHA-256 the signature covers (empty for `GET`).
    public var body: [UInt8]

    /// A request from its parts.
    public init(
        method: String = "GET",
        path: String = "/",
        query: [QueryItem] = [],
        headers: [Header] = [],
        body: [UInt8] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    /// The first value of the header `name` (compared case-insensitively), if any.
    public func header(_ name: String) -> String? {
        let wanted = SigV4.lowercasedASCII(name)
        return headers.first { SigV4.lowercasedASCII($0.name) == wanted }?.value
    }

    /// The first value of the query parameter `name` (compared exactly), if any.
    public func queryValue(_ name: String) -> String? {
        query.first { $0.name == name }?.value
    }

    /// The query string as sent: the items in their order, each name and value
    /// percent-encoded as SigV4 requires (every byte but `A-Z a-z 0-9 - _ . ~`), joined
    /// with `&`. Empty when there are no items.
    public var encodedQuery: String {
        query.map { SigV4.uriEncode($0.name) + "=" + SigV4.uriEncode($0.value) }.joined(separator: "&")
    }
}
