import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

@Suite struct MigratorTests {
    let migrations = [
        PGMigration(version: 1, name: "0001_users.sql", sql: """
            CREATE TABLE users (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                name text NOT NULL,
                email text NOT NULL UNIQUE,
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            """),
        PGMigration(version: 2, name: "0002_orders.sql", sql: """
            CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id));
            CREATE INDEX orders_user_id ON orders (user_id);
            """),
        PGMigration(version: 10, name: "0010_seed.sql", sql: "INSERT INTO users (name, email) VALUES ('seed', 'seed@example.com');"),
    ]

    func dropSchema(_ schema: String, _ client: PGClient) async {
        _ = try? await client.execute("DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    @Test func twoMigratorsAtOnceApplyEachMigrationExactlyOnce() async throws {
        try await PG.withClient(max: 6) { client in
            let schema = TestEnvironment.uniqueName("mig")
            do {
                let a = try PGMigrator(client: client, migrations: migrations.reversed(), schema: schema)
                let b = try PGMigrator(client: client, migrations: migrations, schema: schema)
                async let appliedA = a.migrate()
                async let appliedB = b.migrate()
                let (ra, rb) = try await (appliedA, appliedB)
                #expect((ra + rb).sorted() == [1, 2, 10])
                let recorded = try await a.appliedMigrations()
                #expect(recorded.map(\.version) == [1, 2, 10])
                #expect(recorded.map(\.checksum) == migrations.map(\.checksum))
                let seeds = try await client.query("SELECT count(*) AS n FROM \(schema).users")[0].decode(Int.self, column: "n")
                #expect(seeds == 1)
                // Nothing left to do.
                #expect(try await a.migrate() == [])
            } catch {
                await PG.cleanup(schema: schema)
                throw error
            }
            await dropSchema(schema, client)
        }
    }

    @Test func anEditedAppliedMigrationIsRefused() async throws {
        try await PG.withClient { client in
            let schema = TestEnvironment.uniqueName("mig")
            let first = try PGMigrator(client: client, migrations: Array(migrations.prefix(2)), schema: schema)
            #expect(try await first.migrate() == [1, 2])
            var edited = migrations
            edited[1].sql += "\nALTER TABLE orders ADD COLUMN total numeric;"
            let second = try PGMigrator(client: client, migrations: edited, schema: schema)
            let error = try await #require(throws: PGError.self) { try await second.migrate() }
            #expect(error.kind == .migration)
            #expect(error.message.contains("0002_orders.sql"))
            #expect(error.message.contains("edited"))
            // Refused before applying anything else.
            #expect(try await first.appliedMigrations().map(\.version) == [1, 2])
            await dropSchema(schema, client)
        }
    }

    @Test func aFailingMigrationRollsBackAndNamesItsFile() async throws {
        try await PG.withClient { client in
            let schema = TestEnvironment.uniqueName("mig")
            let broken = [migrations[0], PGMigration(version: 2, name: "0002_broken.sql", sql: "CREATE TABLE t2 (id int); SELEC 1;")]
            let migrator = try PGMigrator(client: client, migrations: broken, schema: schema)
            let error = try await #require(throws: PGError.self) { try await migrator.migrate() }
            #expect(error.sqlState == "42601")
            #expect(error.message.contains("0002_broken.sql"))
            #expect(try await migrator.appliedMigrations().map(\.version) == [1])
            let t2 = try await client.query("SELECT to_regclass($1) IS NULL AS missing", ["\(schema).t2"])
            #expect(try t2[0].decode(Bool.self, column: "missing"))
            await dropSchema(schema, client)
        }
    }

    @Test func loadsNumberedFilesFromADirectory() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("migdir"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "CREATE TABLE b (id int);".write(to: dir.appendingPathComponent("0002_b.sql"), atomically: true, encoding: .utf8)
        try "CREATE TABLE a (id int);".write(to: dir.appendingPathComponent("0001_a.sql"), atomically: true, encoding: .utf8)
        try "notes".write(to: dir.appendingPathComponent("README.md"), atomically: true, encoding: .utf8)
        let loaded = try PGMigrator.load(directory: dir)
        #expect(loaded.map(\.version) == [1, 2])
        #expect(loaded.map(\.name) == ["0001_a.sql", "0002_b.sql"])
        try "x".write(to: dir.appendingPathComponent("latest.sql"), atomically: true, encoding: .utf8)
        let error = try #require(throws: PGError.self) { _ = try PGMigrator.load(directory: dir) }
        #expect(error.message.contains("latest.sql"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("latest.sql"))
        try await PG.withClient { client in
            let schema = TestEnvironment.uniqueName("mig")
            let migrator = try PGMigrator(client: client, directory: dir, schema: schema)
            #expect(try await migrator.migrate() == [1, 2])
            await dropSchema(schema, client)
        }
    }

    @Test func theRepositorysMigrationsApply() async throws {
        let dir = TestEnvironment.repositoryRoot.appendingPathComponent("Migrations")
        let files = try PGMigrator.load(directory: dir)
        try #require(!files.isEmpty, "no migrations in \(dir.path)")
        try await PG.withClient { client in
            let schema = TestEnvironment.uniqueName("repo_mig")
            let migrator = try PGMigrator(client: client, migrations: files, schema: schema)
            #expect(try await migrator.migrate() == files.map(\.version))
            await dropSchema(schema, client)
        }
    }
}

extension PG {
    static func cleanup(schema: String) async {
        _ = try? await withClient(max: 1) { try await $0.execute("DROP SCHEMA IF EXISTS \(schema) CASCADE") }
    }
}
