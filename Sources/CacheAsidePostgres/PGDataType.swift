/// A PostgreSQL type, by its object identifier (OID).
///
/// Only the built-in types this module encodes or decodes have names here; any other
/// OID (an extension's or a user-defined type, such as an enum) is still representable.
public struct PGDataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The type's OID.
    public var rawValue: UInt32
    /// Creates a type from its OID.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Creates a type from its OID.
    public init(_ oid: UInt32) { self.rawValue = oid }

    /// No declared type: the server infers it from the context, as for a literal.
    public static let unknown = PGDataType(0)
    /// `bool` (OID 16).
    public static let bool = PGDataType(16)
    /// `bytea` (OID 17).
    public static let bytea = PGDataType(17)
    /// `char` (OID 18).
    public static let char = PGDataType(18)
    /// `name` (OID 19).
    public static let name = PGDataType(19)
    /// `int8` (OID 20).
    public static let int8 = PGDataType(20)
    /// `int2` (OID 21).
    public static let int2 = PGDataType(21)
    /// `int4` (OID 23).
    public static let int4 = PGDataType(23)
    /// `text` (OID 25).
    public static let text = PGDataType(25)
    /// `oid` (OID 26).
    public static let oid = PGDataType(26)
    /// `json` (OID 114).
    public static let json = PGDataType(114)
    /// `float4` (OID 700).
    public static let float4 = PGDataType(700)
    /// `float8` (OID 701).
    public static let float8 = PGDataType(701)
    /// The type of an untyped literal in a result (`SELECT 'x'` before PostgreSQL 10).
    public static let unknownLiteral = PGDataType(705)
    /// `bpchar` (OID 1042).
    public static let bpchar = PGDataType(1042)
    /// `varchar` (OID 1043).
    public static let varchar = PGDataType(1043)
    /// `date` (OID 1082).
    public static let date = PGDataType(1082)
    /// `timestamp` (OID 1114).
    public static let timestamp = PGDataType(1114)
    /// `timestamptz` (OID 1184).
    public static let timestamptz = PGDataType(1184)
    /// `numeric` (OID 1700).
    public static let numeric = PGDataType(1700)
    /// `uuid` (OID 2950).
    public static let uuid = PGDataType(2950)
    /// `jsonb` (OID 3802).
    public static let jsonb = PGDataType(3802)

    /// `bool[]` (OID 1000).
    public static let boolArray = PGDataType(1000)
    /// `bytea[]` (OID 1001).
    public static let byteaArray = PGDataType(1001)
    /// `name[]` (OID 1003).
    public static let nameArray = PGDataType(1003)
    /// `int2[]` (OID 1005).
    public static let int2Array = PGDataType(1005)
    /// `int4[]` (OID 1007).
    public static let int4Array = PGDataType(1007)
    /// `text[]` (OID 1009).
    public static let textArray = PGDataType(1009)
    /// `bpchar[]` (OID 1014).
    public static let bpcharArray = PGDataType(1014)
    /// `varchar[]` (OID 1015).
    public static let varcharArray = PGDataType(1015)
    /// `int8[]` (OID 1016).
    public static let int8Array = PGDataType(1016)
    /// `float4[]` (OID 1021).
    public static let float4Array = PGDataType(1021)
    /// `float8[]` (OID 1022).
    public static let float8Array = PGDataType(1022)
    /// `timestamp[]` (OID 1115).
    public static let timestampArray = PGDataType(1115)
    /// `date[]` (OID 1182).
    public static let dateArray = PGDataType(1182)
    /// `timestamptz[]` (OID 1185).
    public static let timestamptzArray = PGDataType(1185)
    /// `numeric[]` (OID 1231).
    public static let numericArray = PGDataType(1231)
    /// `uuid[]` (OID 2951).
    public static let uuidArray = PGDataType(2951)
    /// `json[]` (OID 199).
    public static let jsonArray = PGDataType(199)
    /// `jsonb[]` (OID 3807).
    public static let jsonbArray = PGDataType(3807)

    static let names: [UInt32: String] = [
        0: "unknown", 16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2",
        23: "int4", 25: "text", 26: "oid", 114: "json", 700: "float4", 701: "float8",
        705: "unknown", 1042: "bpchar", 1043: "varchar", 1082: "date", 1114: "timestamp",
        1184: "timestamptz", 1700: "numeric", 2950: "uuid", 3802: "jsonb",
        1000: "bool[]", 1001: "bytea[]", 1003: "name[]", 1005: "int2[]", 1007: "int4[]",
        1009: "text[]", 1014: "bpchar[]", 1015: "varchar[]", 1016: "int8[]", 1021: "float4[]",
        1022: "float8[]", 1115: "timestamp[]", 1182: "date[]", 1185: "timestamptz[]",
        1231: "numeric[]", 2951: "uuid[]", 199: "json[]", 3807: "jsonb[]",
    ]

    /// The type's SQL name for the built-in types above, `oid <n>` otherwise.
    public var description: String { Self.names[rawValue] ?? "oid \(rawValue)" }

    /// True for types whose binary form is their text (text, varchar, name, bpchar) and
    /// for types defined outside the core catalog (enums, extension types such as
    /// citext), whose binary form is, for the usual ones, their text.
    var isTextual: Bool {
        switch self {
        case .text, .varchar, .name, .bpchar, .unknownLiteral, .char: return true
        default: return rawValue >= 16384
        }
    }
}

/// How a value travels on the wire.
public enum PGFormat: Int32, Sendable {
    /// The type's text form.
    case text = 0
    /// The type's binary form.
    case binary = 1
}
