import Foundation
import CacheAsidePostgres
import TestSupport
import Testing

struct Preferences: Codable, Equatable, Sendable {
    var theme: String
    var tags: [String]
    var limit: Int?
}

@Suite struct TypeTests {
    /// Binds `value` as $1 and reads it back through `SELECT $1` (typed by the parameter).
    func roundTrip<T: PGEncodable & PGDecodable>(_ value: T, cast: String = "", on conn: PGConnection) async throws -> T {
        let rows = try await conn.query("SELECT $1\(cast) AS v", [value])
        return try rows[0].decode(T.self, column: "v")
    }

    @Test func scalarsRoundTrip() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        for v in [Int64.min, -1, 0, 1, Int64.max] { #expect(try await roundTrip(v, on: conn) == v) }
        for v in [Int32.min, 0, Int32.max] { #expect(try await roundTrip(v, on: conn) == v) }
        for v in [Int16.min, Int16.max] { #expect(try await roundTrip(v, on: conn) == v) }
        for v in [Int.min, 42, Int.max] { #expect(try await roundTrip(v, on: conn) == v) }
        for v in [true, false] { #expect(try await roundTrip(v, on: conn) == v) }
        for v in [0.0, -1.5, Double.pi, Double.greatestFiniteMagnitude, -Double.leastNonzeroMagnitude, .infinity] {
            #expect(try await roundTrip(v, on: conn) == v)
        }
        #expect(try await roundTrip(Double.nan, on: conn).isNaN)
        #expect(try await roundTrip(Float(1.25), on: conn) == 1.25)
        let uuid = UUID()
        #expect(try await roundTrip(uuid, on: conn) == uuid)
    }

    @Test func stringsRoundTripIncludingEmptyUnicodeAndQuotes() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        for s in ["", "plain", "ünïcödé ✓ 日本語 🚀", "it's \"quoted\" \\ back", String(repeating: "x", count: 100_000)] {
            #expect(try await roundTrip(s, cast: "::text", on: conn) == s)
        }
        // Strings are untyped, like literals: the server converts them.
        let uuid = UUID()
        let rows = try await conn.query("SELECT $1::uuid AS u, $2::int4 + 1 AS n", [uuid.uuidString, "41"])
        #expect(try rows[0].decode(UUID.self, column: "u") == uuid)
        #expect(try rows[0].decode(Int.self, column: "n") == 42)
        let nul = try await #require(throws: PGError.self) { _ = try await conn.query("SELECT $1::text", ["a\u{0}b"]) }
        #expect(nul.kind == .encoding)
    }

    @Test func bytesRoundTripIncludingZeroBytes() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let bytes: [UInt8] = [0, 1, 0, 255, 0, 0x7f, 0]
        #expect(try await roundTrip(bytes, on: conn) == bytes)
        #expect(try await roundTrip(Data(bytes), on: conn) == Data(bytes))
        #expect(try await roundTrip(Data(), on: conn) == Data())
        let length = try await conn.query("SELECT octet_length($1) AS n", [Data(bytes)])
        #expect(try length[0].decode(Int.self, column: "n") == 7)
    }

    @Test func datesKeepMicroseconds() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let precise = Date(timeIntervalSinceReferenceDate: 786_123_456.123456)
        let back = try await roundTrip(precise, on: conn)
        #expect(back == precise)
        #expect(try await roundTrip(Date(timeIntervalSince1970: 0), on: conn) == Date(timeIntervalSince1970: 0))
        #expect(try await roundTrip(Date(timeIntervalSince1970: -1_000_000_000.5), on: conn) == Date(timeIntervalSince1970: -1_000_000_000.5))
        // The server reads the same instant.
        let epoch = try await conn.query("SELECT extract(epoch FROM $1::timestamptz)::float8 AS e", [precise])
        #expect(abs(try epoch[0].decode(Double.self, column: "e") - precise.timeIntervalSince1970) < 1e-6)
        let fixed = try await conn.query("SELECT '2024-02-29 12:34:56.789012+00'::timestamptz AS t, '2024-02-29'::date AS d")
        let expected = Date(timeIntervalSince1970: 1_709_210_096.789012)
        #expect(abs(try fixed[0].decode(Date.self, column: "t").timeIntervalSince(expected)) < 1e-6)
        #expect(try fixed[0].decode(Date.self, column: "d") == Date(timeIntervalSince1970: 1_709_164_800))
    }

    @Test func nullsAndOptionals() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let none: Int64? = nil
        let some: String? = "x"
        let rows = try await conn.query("SELECT $1::int8 AS a, $2::text AS b, $3::uuid AS c", [none, some, UUID?.none])
        #expect(try rows[0].decode(Int64?.self, column: "a") == nil)
        #expect(try rows[0].decode(String?.self, column: "b") == "x")
        #expect(try rows[0].decode(UUID?.self, column: "c") == nil)
        let error = try #require(throws: PGError.self) { _ = try rows[0].decode(Int64.self, column: "a") }
        #expect(error.kind == .decoding)
        #expect(error.column == "a")
        #expect(error.message.contains("NULL"))
    }

    @Test func arraysRoundTripAndBindToAny() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let ids: [Int64] = [3, 1, Int64.max, Int64.min]
        #expect(try await roundTrip(ids, on: conn) == ids)
        #expect(try await roundTrip([Int64](), on: conn) == [])
        let names = ["a", "", "ü,\"{x}\"", "NULL"]
        #expect(try await roundTrip(names, on: conn) == names)
        #expect(try await roundTrip([1.5, -2.0], on: conn) == [1.5, -2.0])
        #expect(try await roundTrip([true, false], on: conn) == [true, false])
        let uuids = [UUID(), UUID()]
        #expect(try await roundTrip(uuids, on: conn) == uuids)
        let table = TestEnvironment.uniqueName("arr")
        try await conn.execute("CREATE TEMP TABLE \(table) (id int8 PRIMARY KEY, name text)")
        try await conn.execute("INSERT INTO \(table) SELECT g, 'n' || g FROM generate_series(1, 10) g")
        let found = try await conn.query("SELECT id FROM \(table) WHERE id = ANY($1) ORDER BY id", [[Int64(2), 5, 99]])
        #expect(try found.map { try $0.decode(Int64.self, column: "id") } == [2, 5])
        let byName = try await conn.query("SELECT id FROM \(table) WHERE name = ANY($1) ORDER BY id", [["n7", "n9", "zz"]])
        #expect(try byName.map { try $0.decode(Int.self, at: 0) } == [7, 9])
        let withNull = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT ARRAY[1, NULL]::int8[] AS a").first?.decode([Int64].self, column: "a")
        }
        #expect(withNull.kind == .decoding && withNull.column == "a")
    }

    @Test func jsonbRoundTrips() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let prefs = Preferences(theme: "dark ☾", tags: ["a", "b"], limit: nil)
        #expect(try await roundTrip(PGJSON(prefs), on: conn).value == prefs)
        let rows = try await conn.query("SELECT $1::jsonb ->> 'theme' AS theme, $1::json AS j", [PGJSON(prefs)])
        #expect(try rows[0].decode(String.self, column: "theme") == "dark ☾")
        #expect(try rows[0].decode(PGJSON<Preferences>.self, column: "j").value == prefs)
    }

    @Test func numericAndTextLikeColumnsDecode() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let rows = try await conn.query("SELECT 12345.678::numeric AS n, -0.05::numeric(10,3) AS m, 'abc'::varchar AS v, 'x'::name AS nm, 7::int2 AS s")
        #expect(try rows[0].decode(String.self, column: "n") == "12345.678")
        #expect(try rows[0].decode(String.self, column: "m") == "-0.050")
        #expect(try rows[0].decode(Double.self, column: "n") == 12345.678)
        #expect(try rows[0].decode(String.self, column: "v") == "abc")
        #expect(try rows[0].decode(String.self, column: "nm") == "x")
        #expect(try rows[0].decode(Int64.self, column: "s") == 7)
    }

    struct UserRow: Decodable, Equatable {
        enum Kind: String, Decodable { case admin, member }
        let id: Int64
        let name: String
        let email: String?
        let kind: Kind
        let updated_at: Date
        let prefs: Preferences
        let tags: [String]
    }

    struct CamelUser: Decodable {
        let id: Int64
        let updatedAt: Date
    }

    @Test func rowsDecodeIntoDecodableStructsByColumnName() async throws {
        let conn = try await PG.connect()
        defer { conn.close() }
        let now = Date(timeIntervalSinceReferenceDate: 700_000_000.25)
        let rows = try await conn.query("""
            SELECT 7::int8 AS id, 'Ann' AS name, NULL::text AS email, 'admin' AS kind,
                   $1::timestamptz AS updated_at, '{"theme":"x","tags":[]}'::jsonb AS prefs,
                   ARRAY['t1']::text[] AS tags
            """, [now])
        let users = try rows.decode(UserRow.self)
        #expect(users == [UserRow(id: 7, name: "Ann", email: nil, kind: .admin, updated_at: now, prefs: Preferences(theme: "x", tags: [], limit: nil), tags: ["t1"])])
        let camel = try await conn.query("SELECT 1::int8 AS id, now() AS updated_at").first?.decode(CamelUser.self, columnNaming: .snakeCase)
        #expect(camel?.id == 1)

        // A missing column, a NULL into a non-optional, a type mismatch: errors naming the column.
        let missing = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT 1::int8 AS id, 'n' AS name").first?.decode(UserRow.self)
        }
        #expect(missing.kind == .decoding)
        #expect(missing.column == "email")
        let null = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT NULL::int8 AS id, now() AS \"updatedAt\"").first?.decode(CamelUser.self)
        }
        #expect(null.column == "id")
        #expect(null.message.contains("NULL"))
        let mismatch = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT 'seven' AS id, now() AS \"updatedAt\"").first?.decode(CamelUser.self)
        }
        #expect(mismatch.column == "id")
        #expect(mismatch.description.contains("id"))
        let byName = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT 1 AS a").first?.decode(Int.self, column: "b")
        }
        #expect(byName.column == "b")
        let typed = try await #require(throws: PGError.self) {
            _ = try await conn.query("SELECT 1::int4 AS a").first?.decode(UUID.self, column: "a")
        }
        #expect(typed.message.contains("int4") && typed.column == "a")
    }
}
