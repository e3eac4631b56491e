import CHiredis
import CLibpq
import Foundation

/// The raw synchronous C calls the clients are built on: the baselines every ratio is
/// measured against. Each runs on its own thread, blocking, as a plain C program would.
enum RawBaselines {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A blocking hiredis connection (`redisConnect`, `redisCommandArgv`).
    final class Hiredis: @unchecked Sendable {
        private let context: UnsafeMutablePointer<redisContext>

        init(host: String, port: Int, user: String?, password: String?, database: Int) throws {
            guard let ctx = redisConnect(host, Int32(port)) else { throw Failure(description: "redisConnect: out of memory") }
            if ctx.pointee.err != 0 {
                let message = withUnsafeBytes(of: ctx.pointee.errstr) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                redisFree(ctx)
                throw Failure(description: "redisConnect \(host):\(port): \(message)")
            }
            context = ctx
            if let password {
                let auth = user.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                guard try command(auth.map { Array($0.utf8) }) != nil else { throw Failure(description: "AUTH failed") }
            }
            if database != 0 { _ = try command([Array("SELECT".utf8), Array(String(database).utf8)]) }
        }

        deinit { redisFree(context) }

        /// Runs one command; returns the reply's string bytes (nil for a nil reply).
        @discardableResult
        func command(_ args: [[UInt8]]) throws -> [UInt8]? {
            var lengths = args.map { $0.count }
            let reply: UnsafeMutableRawPointer? = withPointers(args) { argv in
                redisCommandArgv(context, Int32(args.count), argv, &lengths)
            }
            guard let reply else { throw Failure(description: "hiredis: connection error") }
            defer { freeReplyObject(reply) }
            let r = reply.assumingMemoryBound(to: redisReply.self).pointee
            switch r.type {
            case REDIS_REPLY_ERROR:
                throw Failure(description: "redis: " + String(cString: r.str))
            case REDIS_REPLY_STRING, REDIS_REPLY_STATUS:
                return Array(UnsafeRawBufferPointer(start: r.str, count: r.len))
            default:
                return nil
            }
        }

        /// A GET as a C program does it: format, write, block for the reply.
        func get(_ key: [UInt8], _ getCommand: [UInt8]) -> Int {
            var lengths = [getCommand.count, key.count]
            let reply: UnsafeMutableRawPointer? = withPointers([getCommand, key]) { argv in
                redisCommandArgv(context, 2, argv, &lengths)
            }
            guard let reply else { return -1 }
            let len = reply.assumingMemoryBound(to: redisReply.self).pointee.len
            freeReplyObject(reply)
            return len
        }
    }

    /// A blocking libpq connection with one prepared statement (`PQexecPrepared`).
    final class Libpq: @unchecked Sendable {
        private let conn: OpaquePointer

        init(url: String, sql: String) throws {
            guard let conn = PQconnectdb(url) else { throw Failure(description: "PQconnectdb: out of memory") }
            guard PQstatus(conn) == CONNECTION_OK else {
                let message = String(cString: PQerrorMessage(conn))
                PQfinish(conn)
                throw Failure(description: "libpq connect: \(message)")
            }
            self.conn = conn
            let prepared = PQprepare(conn, "bench_select", sql, 1, nil)
            defer { PQclear(prepared) }
            guard PQresultStatus(prepared) == PGRES_COMMAND_OK else {
                throw Failure(description: "PQprepare: \(String(cString: PQerrorMessage(conn)))")
            }
        }

        deinit { PQfinish(conn) }

        /// Runs the prepared statement with one text parameter and reads the row's
        /// values, as a client would; returns the bytes read (-1 on error).
        func select(_ id: String) -> Int {
            id.withCString { p in
                var values: [UnsafePointer<CChar>?] = [p]
                let result = PQexecPrepared(conn, "bench_select", 1, &values, nil, nil, 0)
                defer { PQclear(result) }
                guard PQresultStatus(result) == PGRES_TUPLES_OK, PQntuples(result) == 1 else { return -1 }
                var touched = 0
                for c in 0..<PQnfields(result) { touched += Int(PQgetlength(result, 0, c)) }
                return touched
            }
        }
    }
}

/// Calls `body` with C string pointers to `args` (no NUL needed: lengths are passed).
private func withPointers<R>(_ args: [[UInt8]], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafePointer<CChar>?] = []
    pointers.reserveCapacity(args.count)
    func recurse(_ i: Int) -> R {
        if i == args.count {
            return pointers.withUnsafeMutableBufferPointer { buf in
                guard let base = buf.baseAddress else { preconditionFailure("no arguments") }
                return body(base)
            }
        }
        return args[i].withUnsafeBufferPointer { buf in
            pointers.append(buf.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) })
            return recurse(i + 1)
        }
    }
    return recurse(0)
}
