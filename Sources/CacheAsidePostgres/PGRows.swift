import CLibpq
import Foundation

/// Owns one `PGresult` (read-only once complete, so safe to share between threads).
final class PGResult: @unchecked Sendable {
    let handle: OpaquePointer
    let rowCount: Int
    let columnCount: Int

    init(_ handle: OpaquePointer) {
        self.handle = handle
        rowCount = Int(PQntuples(handle))
        columnCount = Int(PQnfields(handle))
    }

    deinit { PQclear(handle) }

    var commandTag: String { String(cString: PQcmdStatus(handle)) }

    var affectedRows: Int {
        Int(String(cString: PQcmdTuples(handle))) ?? 0
    }

    var columnNames: [String] { (0..<columnCount).map { columnName($0) } }
    var columnTypes: [PGDataType] { (0..<columnCount).map { columnType($0) } }

    func columnName(_ i: Int) -> String {
        PQfname(handle, Int32(i)).map { String(cString: $0) } ?? "?column?"
    }

    @inline(__always)
    func columnType(_ i: Int) -> PGDataType { PGDataType(PQftype(handle, Int32(i))) }

    /// The first column with exactly this name (no allocation: compares C strings).
    func index(ofColumn name: String) -> Int? {
        var name = name
        return name.withUTF8 { wanted -> Int? in
            for i in 0..<columnCount {
                guard let field = PQfname(handle, Int32(i)) else { continue }
                guard strlen(field) == wanted.count else { continue }
                if wanted.isEmpty { return i }
                if let base = wanted.baseAddress, memcmp(field, base, wanted.count) == 0 { return i }
            }
            return nil
        }
    }

    @inline(__always)
    func value(row: Int, column: Int) -> PGValue {
        let r = Int32(row), c = Int32(column)
        let type = PGDataType(PQftype(handle, c))
        let format: PGFormat = PQfformat(handle, c) == 1 ? .binary : .text
        if PQgetisnull(handle, r, c) == 1 {
            return PGValue(dataType: type, format: format, bytes: nil)
        }
        let length = Int(PQgetlength(handle, r, c))
        let pointer = PQgetvalue(handle, r, c)
        return PGValue(
            dataType: type, format: format,
            bytes: UnsafeRawBufferPointer(start: pointer.map { UnsafeRawPointer($0) }, count: length))
    }
}

/// A column of a result: its name and type.
public struct PGColumn: Sendable, Hashable {
    /// The column's name (its alias, if the query gave one).
    public var name: String
    /// The column's type.
    public var dataType: PGDataType
}

/// The rows a statement returned, with its command tag.
///
/// A random-access collection of ``PGRow``; the rows stay valid as long as any of
/// them (or this value) is alive.
public struct PGRows: RandomAccessCollection, Sendable {
    let result: PGResult?

    init(result: PGResult?) { self.result = result }

    public var startIndex: Int { 0 }
    public var endIndex: Int { result?.rowCount ?? 0 }
    public subscript(position: Int) -> PGRow {
        guard let result else { preconditionFailure("index out of range") }
        precondition(position >= 0 && position < result.rowCount, "row index out of range")
        return PGRow(result: result, index: position)
    }

    /// The result's columns.
    public var columns: [PGColumn] {
        guard let result else { return [] }
        return zip(result.columnNames, result.columnTypes).map { PGColumn(name: $0, dataType: $1) }
    }

    /// The command tag (`SELECT 3`, `UPDATE 1`, `INSERT 0 1`...).
    public var commandTag: String { result?.commandTag ?? "" }

    /// Rows inserted, updated, deleted, selected... as the command tag says (0 when it
    /// does not say).
    public var affectedRows: Int { result?.affectedRows ?? 0 }

    /// Decodes every row into `T` by column names (see ``PGRow/decode(_:columnNaming:)``).
    public func decode<T: Decodable>(_ type: T.Type, columnNaming: PGColumnNaming = .exact) throws -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for row in self { out.append(try row.decode(type, columnNaming: columnNaming)) }
        return out
    }
}

/// How ``PGRow/decode(_:columnNaming:)`` matches a `Decodable` type's keys to
/// column names.
public enum PGColumnNaming: Sendable {
    /// A key matches the column with exactly its name: a property `updated_at` (or a
    /// `CodingKeys` case whose raw value is `"updated_at"`) reads column `updated_at`.
    case exact
    /// A camelCase key reads the snake_case column: `updatedAt` reads `updated_at`.
    case snakeCase
}

/// One row of a result.
public struct PGRow: Sendable {
    let result: PGResult
    /// The row's position in its result.
    public let index: Int

    /// The result's columns.
    public var columns: [PGColumn] {
        zip(result.columnNames, result.columnTypes).map { PGColumn(name: $0, dataType: $1) }
    }

    /// Decodes the column named `column`.
    ///
    /// - Throws: ``PGError`` of kind ``PGError/Kind/decoding`` naming the
    ///   column when it does not exist, is NULL and `T` is not optional, or has a type
    ///   `T` cannot be decoded from.
    public func decode<T: PGDecodable>(_ type: T.Type, column: String) throws -> T {
        guard let i = result.index(ofColumn: column) else {
            throw PGError(.decoding, "no column named \"\(column)\" in the result (columns: \(result.columnNames.joined(separator: ", ")))", column: column)
        }
        return try decode(type, at: i)
    }

    /// Decodes the column at position `index` (0-based).
    public func decode<T: PGDecodable>(_ type: T.Type, at index: Int) throws -> T {
        guard index >= 0 && index < result.columnCount else {
            throw PGError(.decoding, "no column at index \(index) (the result has \(result.columnCount))", column: "#\(index)")
        }
        do {
            return try T.decode(from: result.value(row: self.index, column: index))
        } catch let error as PGError {
            var e = error
            e.column = e.column ?? result.columnName(index)
            throw e
        } catch {
            throw PGError(.decoding, "\(error)", column: result.columnName(index), underlying: error)
        }
    }

    /// Decodes the row into a `Decodable` type by column names.
    ///
    /// Each key of `T` reads the column of that name (``PGColumnNaming/exact``,
    /// the default: use `CodingKeys` or snake_case property names to match snake_case
    /// columns, or pass ``PGColumnNaming/snakeCase``). Properties of the types
    /// this module decodes read their column directly; any other `Decodable` property
    /// reads a `json`/`jsonb` column as JSON, or a single value (a `String`-backed enum,
    /// for example). A key with no column is an error, even for an optional property,
    /// so that a misspelt name is not silently `nil`.
    public func decode<T: Decodable>(_ type: T.Type, columnNaming: PGColumnNaming = .exact) throws -> T {
        do {
            return try T(from: RowDecoder(row: self, naming: columnNaming))
        } catch let error as PGError {
            throw error
        } catch let error as DecodingError {
            throw PGError(.decoding, "cannot decode \(T.self): \(error)", underlying: error)
        }
    }

    /// True when the row has a column named `column`.
    public func contains(column: String) -> Bool { result.index(ofColumn: column) != nil }
}
