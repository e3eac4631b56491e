import CHiredis
import Foundation
import TestSupport
import Testing

/// The C module itself, against the real server: the base every Redis test stands on.
@Suite struct HiredisSmokeTests {
    private func command(_ ctx: UnsafeMutablePointer<redisContext>, _ args: [String]) -> (type: Int32, text: String)? {
        var cStrings = args.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var lengths = args.map { $0.utf8.count }
        let raw = cStrings.withUnsafeMutableBufferPointer { argv in
            argv.withMemoryRebound(to: UnsafePointer<CChar>?.self) { argv in
                redisCommandArgv(ctx, Int32(args.count), argv.baseAddress, &lengths)
            }
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        let text = reply.pointee.str.map { String(cString: $0) } ?? ""
        return (reply.pointee.type, text)
    }

    private func connect() throws -> (UnsafeMutablePointer<redisContext>, user: String?, password: String?) {
        let parts = try TestEnvironment.redisParts(try TestEnvironment.redisURL())
        let ctx = try #require(redisConnect(parts.host, Int32(parts.port)))
        try #require(ctx.pointee.err == 0, "\(errorString(ctx))")
        return (ctx, parts.user, parts.password)
    }

    @Test func pingWithTheURLsCredentials() throws {
        let (ctx, user, password) = try connect()
        defer { redisFree(ctx) }
        let auth = command(ctx, user.map { ["AUTH", $0, password ?? ""] } ?? ["AUTH", password ?? ""])
        #expect(auth?.type == REDIS_REPLY_STATUS && auth?.text == "OK")
        let pong = command(ctx, ["PING"])
        #expect(pong?.type == REDIS_REPLY_STATUS)
        #expect(pong?.text == "PONG")
    }

    @Test func aWrongPasswordFailsWithAnAuthenticationError() throws {
        let (ctx, user, _) = try connect()
        defer { redisFree(ctx) }
        let auth = command(ctx, ["AUTH", user ?? "default", "definitely-not-the-password"])
        #expect(auth?.type == REDIS_REPLY_ERROR)
        #expect(auth?.text.hasPrefix("WRONGPASS") == true, "\(auth?.text ?? "no reply")")
        // Not authenticated: commands are refused.
        let ping = command(ctx, ["PING"])
        #expect(ping?.type == REDIS_REPLY_ERROR)
        #expect(ping?.text.hasPrefix("NOAUTH") == true, "\(ping?.text ?? "no reply")")
    }
}

private func errorString(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
    withUnsafeBytes(of: ctx.pointee.errstr) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}
