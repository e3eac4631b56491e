import CacheAside
import Foundation
import CacheAsidePostgres

/// A row of `users` (Migrations/0001_users.sql).
struct User: Codable, Sendable, Equatable {
    var id: Int64
    var name: String
    var email: String
    var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, email
        case updatedAt = "updated_at"
    }
}

/// A cached repository of `users`: the classic `get_user` of cache-aside, done right.
struct UserRepository: CachedRepository {
    let cache: CacheAside
    var keyspace: String { "user" }

    func load(_ id: Int64, on db: some PGQueryable) async throws -> User? {
        try await db.query("SELECT id, name, email, updated_at FROM users WHERE id = $1", [id]).first?.decode(User.self)
    }

    func load(many ids: [Int64], on db: some PGQueryable) async throws -> [Int64: User] {
        let rows = try await db.query("SELECT id, name, email, updated_at FROM users WHERE id = ANY($1)", [ids])
        return Dictionary(uniqueKeysWithValues: try rows.decode(User.self).map { ($0.id, $0) })
    }
}
