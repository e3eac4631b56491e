import CacheAsideRedis
import Foundation

/// The TLS rows: our client over `rediss://` (sequential and concurrent) and
/// `redis-benchmark --tls` against the same TLS server, in the same run.
///
/// The TLS URL comes from `--redis-tls-url`, else `REDIS_TLS_URL` (what
/// `scripts/dev-services` prints; `make bench` runs through `scripts/with-services`,
/// which exports it). A URL without `tls_ca_file` trusts the dev-services CA in
/// `DEV_SERVICES_TLS_DIR` when that is set, else the system's CAs. Without a TLS URL the
/// rows are skipped.
extension Bench {
    /// Our client over `rediss://` with the benchmark's value written through it (the
    /// same Redis as REDIS_URL for dev-services; another one otherwise), or nil without
    /// a TLS URL. `redis_get_tls` runs in the rounds of the other single GETs.
    func tlsClient(valueKey: String, value: [UInt8]) async throws -> RESPClient? {
        guard let url = settings.redisTLSURL else {
            progress("no TLS URL (--redis-tls-url or REDIS_TLS_URL): skipping redis_get_tls, redis_get_tls_concurrent, redis_benchmark_get_tls_c50")
            return nil
        }
        let tls = try RESPClient(configuration: try RESPConfiguration(url: url))
        do {
            try await tls.set(valueKey, to: value, expiration: .seconds(3600))
        } catch {
            await tls.shutdown()
            throw error
        }
        return tls
    }

    /// `redis_get_tls_concurrent`, and `redis-benchmark --tls` against the same server.
    func tlsRows(_ tls: RESPClient, valueKey: String, value: [UInt8]) async throws -> [(String, Result)] {
        var rows: [(String, Result)] = []
        progress("redis_get_tls_concurrent (\(settings.concurrency) tasks, \(settings.seconds) s) ...")
        rows.append(("redis_get_tls_concurrent", try await concurrent { _ in _ = try await tls.get(valueKey) }))
        if settings.external,
            let r = try await ExternalTools.redisBenchmarkTLS(
                config: tls.configuration, value: value, seconds: settings.seconds, redis: tls)
        {
            rows.append(("redis_benchmark_get_tls_c50", r))
        }
        return rows
    }
}

extension ExternalTools {
    /// `redis-benchmark --tls -t get -c 50` against the TLS server, trusting the same CA
    /// (and presenting the same client certificate) as the client.
    static func redisBenchmarkTLS(config: RESPConfiguration, value: [UInt8], seconds: Double, redis: RESPClient) async throws -> Result? {
        guard let tool = which("redis-benchmark") else {
            progress("redis-benchmark not on PATH: skipping redis_benchmark_get_tls_c50")
            return nil
        }
        guard case .tcp(let host, let port) = config.endpoint, let tls = config.tls else { return nil }
        let benchKey = "key:__rand_int__"
        _ = try await redis.set(benchKey, to: value, expiration: .seconds(600))
        return try await withCleanup {
            let requests = max(10_000, Int(100_000 * seconds))
            var arguments = ["-h", host, "-p", String(port), "--tls", "-t", "get", "-c", "50", "-n", String(requests), "--csv"]
            switch tls.trustRoots {
            case .file(let path): arguments += ["--cacert", path]
            case .system: break
            }
            if let certificate = tls.certificateChainFile, let key = tls.privateKeyFile { arguments += ["--cert", certificate, "--key", key] }
            if let name = tls.serverName { arguments += ["--sni", name] }
            if tls.verification == .insecureNoVerification { arguments += ["--insecure"] }
            if let password = config.password {
                if let user = config.username { arguments += ["--user", user] }
                arguments += ["-a", password]
            }
            if config.database != 0 { arguments += ["--dbnum", String(config.database)] }
            progress("redis-benchmark --tls -t get -c 50 -n \(requests) ...")
            let output = try await run(tool, arguments)
            return ExternalTools.getRow(fromCSV: output, tool: "redis-benchmark --tls")
        } cleanup: {
            _ = try? await redis.del([benchKey])
        }
    }
}

/// The TLS URL cache-bench uses: `--redis-tls-url`, else `REDIS_TLS_URL` with the
/// dev-services CA (`DEV_SERVICES_TLS_DIR/ca.crt`) unless the URL names a CA itself.
func benchTLSURL(option: String?, environment: [String: String]) -> String? {
    if let option { return option }
    guard let url = environment["REDIS_TLS_URL"], !url.isEmpty else { return nil }
    guard !url.contains("tls_ca_file="), let directory = environment["DEV_SERVICES_TLS_DIR"], !directory.isEmpty else { return url }
    return url + (url.contains("?") ? "&" : "?") + "tls_ca_file=\(directory)/ca.crt"
}
