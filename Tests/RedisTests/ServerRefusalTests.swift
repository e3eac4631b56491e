import CacheAsideRedis
import TestSupport
import Testing

/// Servers that answer but refuse writes, each an extra `redis-server` of its own, one
/// at a time.
@Suite(.serialized) struct ServerRefusalTests {
    /// After a failover, the old primary's address answers writes with READONLY: the
    /// caller gets an error that counts as unavailability, and the connection is
    /// reopened (resolving the name again), so writes work once the address leads to a
    /// primary.
    @Test func readOnlyFailsTheWriteAsUnavailableAndReopensTheConnection() async throws {
        let nowhere = try freePort()
        try await ExtraRedisServer.withPlain(["replicaof 127.0.0.1 \(nowhere)", "replica-serve-stale-data yes"]) { server in
            try await withClient(url: server.plainURL, { $0.connectionCount = 1 }) { redis in
                let before = try await redis.send("CLIENT", "ID").integer
                let error = await expectError { try await redis.set("k", to: "v") } as? RESPError
                #expect(error?.kind == .server)
                #expect(error?.isReadOnlyReplica == true)
                #expect(error?.refusesWrites == true)
                #expect(error?.isUnavailable == true)
                #expect(error?.isConnectionFailure == false)
                // Reads still work, on a new connection.
                let reopened = try await eventually { () -> Bool? in
                    let id = try await redis.send("CLIENT", "ID").integer
                    return id != before ? true : nil
                }
                #expect(reopened == true)
                // The "failover" completes: the address now leads to a primary.
                _ = try await withClient(url: server.plainURL) { admin in try await admin.send("REPLICAOF", "NO", "ONE") }
                let written = try await eventually { try await redis.set("k", to: "v") ? true : nil }
                #expect(written == true)
                #expect(try await redis.getString("k") == "v")
            }
        }
    }

    @Test func outOfMemoryIsAnUnavailableServerNotAConnectionFailure() async throws {
        try await ExtraRedisServer.withPlain(["maxmemory-policy noeviction"]) { server in
            try await withClient(url: server.plainURL) { redis in
                _ = try await redis.send("CONFIG", "SET", "maxmemory", "1")
                let error = await expectError { try await redis.set("k", to: "v") } as? RESPError
                #expect(error?.serverErrorPrefix == "OOM")
                #expect(error?.refusesWrites == true)
                #expect(error?.isUnavailable == true)
                #expect(error?.isConnectionFailure == false)
                // Reads are fine, and the connection was not reopened for it.
                #expect(try await redis.get("k") == nil)
                _ = try await redis.send("CONFIG", "SET", "maxmemory", "0")
                #expect(try await redis.set("k", to: "v"))
            }
        }
    }
}
