/// A value that names one cached entity: its primary key, as it appears in a cache key.
///
/// `Int`, `Int64`, `Int32`, `String` and `UUID` conform. A conforming type gives a
/// string form that is stable across processes and releases (it is part of the key that
/// every process computes); the library escapes it, so any characters are allowed.
public protocol CacheIdentifier: Hashable, Sendable {
    /// The identifier as it appears, escaped, at the end of a cache key.
    var cacheKeyComponent: String { get }
}

extension Int: CacheIdentifier {
    public var cacheKeyComponent: String { String(self) }
}

extension Int64: CacheIdentifier {
    public var cacheKeyComponent: String { String(self) }
}

extension Int32: CacheIdentifier {
    public var cacheKeyComponent: String { String(self) }
}

extension String: CacheIdentifier {
    public var cacheKeyComponent: String { self }
}

/// The Redis key of one cached entity: `{namespace}:{keyspace}:{id}`.
///
/// The id is escaped (every byte outside `A-Z a-z 0-9 - . _ ~` becomes `%XX`), so no
/// id can forge another id's key or another keyspace's key; `namespace`
/// and `keyspace` are restricted to `A-Z a-z 0-9 - . _` for the same reason.
///
/// The schema version is not part of the key: it is written inside each entry, so
/// that processes on different versions (a rolling deploy) share one key per row, and
/// a write invalidates what every version cached. A reader treats an entry of another
/// version as a miss and replaces it, so bumping `schemaVersion` retires every old
/// entry at once.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// The application's prefix, shared by all keyspaces of one cache.
    public let namespace: String
    /// The entity type's name (`user`, `order`).
    public let keyspace: String
    /// The version of the cached representation (written inside the entry).
    public let schemaVersion: Int
    /// The id, unescaped.
    public let id: String
    /// The full Redis key of the entry (which also holds its lease while a reader
    /// loads the row, and a tombstone after a write).
    public let entryKey: String

    /// Builds a key; throws ``CacheError`` for a namespace or keyspace that is empty or
    /// uses characters outside `A-Z a-z 0-9 - . _`, or a negative schema version.
    public init(namespace: String, keyspace: String, schemaVersion: Int, id: String) throws(CacheError) {
        try CacheKey.validate(namespace, what: "namespace")
        try CacheKey.validate(keyspace, what: "keyspace")
        guard schemaVersion >= 0 else {
            throw CacheError.configuration("schema version must be 0 or more, got \(schemaVersion)")
        }
        self.init(unchecked: KeyPrefix(namespace: namespace, keyspace: keyspace, schemaVersion: schemaVersion), id: id)
    }

    init(unchecked prefix: KeyPrefix, id: String) {
        self.namespace = prefix.namespace
        self.keyspace = prefix.keyspace
        self.schemaVersion = prefix.schemaVersion
        self.id = id
        self.entryKey = prefix.rendered + CacheKey.escape(id)
    }

    public var description: String { entryKey }

    static func validate(_ part: String, what: String) throws(CacheError) {
        guard !part.isEmpty else { throw CacheError.configuration("\(what) must not be empty") }
        for byte in part.utf8 where !CacheKey.isPlainNameByte(byte) {
            throw CacheError.configuration("\(what) '\(part)' may only use A-Z a-z 0-9 - . _")
        }
    }

    static func isPlainNameByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            || b == 0x2D || b == 0x2E || b == 0x5F
    }

    /// Percent-escapes every byte outside the unreserved set, so the result never
    /// contains `:`, `*`, `%` (unescaped), spaces, braces or non-ASCII bytes, and two
    /// different ids never escape to the same string.
    public static func escape(_ id: String) -> String {
        var needsEscape = id.isEmpty
        for b in id.utf8 where !isUnreserved(b) {
            needsEscape = true
            break
        }
        if !needsEscape { return id }
        if id.isEmpty { return "%" }  // the empty id: a lone '%' never results from escaping
        let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(id.utf8.count * 3)
        for b in id.utf8 {
            if isUnreserved(b) {
                out.append(b)
            } else {
                out.append(0x25)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isUnreserved(_ b: UInt8) -> Bool {
        isPlainNameByte(b) || b == 0x7E
    }
}

/// The fixed part of a keyspace's keys, validated once.
@usableFromInline
struct KeyPrefix: Hashable, Sendable {
    let namespace: String
    let keyspace: String
    @usableFromInline let schemaVersion: Int
    let rendered: String

    init(namespace: String, keyspace: String, schemaVersion: Int) {
        self.namespace = namespace
        self.keyspace = keyspace
        self.schemaVersion = schemaVersion
        self.rendered = "\(namespace):\(keyspace):"
    }

    static func validated(namespace: String, keyspace: String, schemaVersion: Int) throws(CacheError) -> KeyPrefix {
        try CacheKey.validate(namespace, what: "namespace")
        try CacheKey.validate(keyspace, what: "keyspace")
        guard schemaVersion >= 0 else {
            throw CacheError.configuration("schema version must be 0 or more, got \(schemaVersion)")
        }
        return KeyPrefix(namespace: namespace, keyspace: keyspace, schemaVersion: schemaVersion)
    }

    func key(for id: String) -> CacheKey {
        CacheKey(unchecked: self, id: id)
    }

    /// The entry key of `id`, without building a ``CacheKey``.
    @usableFromInline
    func entryKey(for id: String) -> String {
        rendered + CacheKey.escape(id)
    }
}
