/// Per-connection prepared statements, keyed by SQL text and parameter types, least
/// recently used evicted. A statement is prepared the second time it runs on a
/// connection: one-off statements cost no extra round trip and no server memory.
struct StatementCache {
    struct Key: Hashable {
        var sql: String
        var types: [UInt32]
    }
    struct Entry {
        var name: String?  // nil: seen once, not prepared
        var lastUse: UInt64
    }

    let capacity: Int
    private(set) var entries: [Key: Entry] = [:]
    private var tick: UInt64 = 0
    private var nextName = 0
    /// The prepared statement looked up last: the same statement again (a loop, a hot
    /// query) is found without hashing its SQL. Its entry's `lastUse` is brought up to
    /// date when another statement comes.
    private var last: (key: Key, name: String, lastUse: UInt64)?

    init(capacity: Int) { self.capacity = max(0, capacity) }

    enum Lookup { case prepared(String), prepareNow(String), runUnnamed }

    /// What to do for `key`; `evicted` receives a prepared statement pushed out.
    mutating func lookup(_ key: Key, evicted: inout [String]) -> Lookup {
        guard capacity > 0 else { return .runUnnamed }
        tick &+= 1
        if let name = last?.name, last?.key == key {
            last?.lastUse = tick
            return .prepared(name)
        }
        recordLastUse()
        if let index = entries.index(forKey: key) {
            entries.values[index].lastUse = tick
            if let name = entries.values[index].name {
                last = (key, name, tick)
                return .prepared(name)
            }
            nextName += 1
            let name = "cas_\(nextName)"
            entries.values[index].name = name
            return .prepareNow(name)
        }
        if entries.count >= capacity, let victim = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[victim.key] = nil
            if let name = victim.value.name { evicted.append(name) }
        }
        entries[key] = Entry(name: nil, lastUse: tick)
        return .runUnnamed
    }

    private mutating func recordLastUse() {
        guard let last else { return }
        if let index = entries.index(forKey: last.key) { entries.values[index].lastUse = last.lastUse }
        self.last = nil
    }

    /// Forgets a statement (it failed to prepare, or the server dropped it).
    mutating func remove(_ key: Key) {
        if last?.key == key { last = nil }
        entries[key] = nil
    }

    /// Forgets everything (the server's prepared statements are gone).
    mutating func removeAll() {
        last = nil
        entries.removeAll()
    }

    var preparedCount: Int { entries.values.filter { $0.name != nil }.count }
}
