#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ProcessRunner
import TestSupport

/// A throwaway `redis-server` configured differently from the dev-services one: on a
/// TLS port with the certificates of `DEV_SERVICES_TLS_DIR` (a client certificate
/// required, or an expired server certificate), or on a plain port with settings of
/// its own (a replica, say). No password. Started for one test and stopped (by its
/// process id) when the test is done.
struct ExtraRedisServer: Sendable {
    let port: Int
    let directory: URL
    let pid: pid_t

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The dev-services TLS material: `ca.crt`, `server.crt`, `client.crt`, ...
    static func tlsDirectory() throws -> String {
        guard let directory = ProcessInfo.processInfo.environment["DEV_SERVICES_TLS_DIR"], !directory.isEmpty else {
            throw Failure(description: "DEV_SERVICES_TLS_DIR is not set: run the tests with `make test`, or export what `scripts/dev-services up` prints")
        }
        return directory
    }

    /// Runs `body` with a TLS-only Redis (no password) presenting `certificate`, and
    /// requiring a client certificate from the dev-services CA if `requireClientCertificate`.
    static func with<T>(
        certificate: String = "server", requireClientCertificate: Bool = false,
        _ body: (ExtraRedisServer) async throws -> T
    ) async throws -> T {
        try await with(settings: { port in
            let tls = try tlsDirectory()
            return """
                port 0
                tls-port \(port)
                tls-cert-file "\(tls)/\(certificate).crt"
                tls-key-file "\(tls)/\(certificate).key"
                tls-ca-cert-file "\(tls)/ca.crt"
                tls-auth-clients \(requireClientCertificate ? "yes" : "no")
                """
        }, body)
    }

    /// Runs `body` with a plain-text Redis (no password) with more `settings` lines.
    static func withPlain<T>(_ settings: [String], _ body: (ExtraRedisServer) async throws -> T) async throws -> T {
        try await with(settings: { port in (["port \(port)"] + settings).joined(separator: "\n") }, body)
    }

    private static func with<T>(
        settings: (Int) throws -> String, _ body: (ExtraRedisServer) async throws -> T
    ) async throws -> T {
        let server = try await start(settings: settings)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    private static func start(settings: (Int) throws -> String) async throws -> ExtraRedisServer {
        guard let executable = which("redis-server") else { throw Failure(description: "redis-server is not on PATH (make deps)") }
        var lastError = ""
        for _ in 0..<5 {
            let port = try freePort()
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("extra-redis"))
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let configuration = """
                \(try settings(port))
                bind 127.0.0.1
                daemonize yes
                pidfile "\(directory.path)/redis.pid"
                logfile "\(directory.path)/redis.log"
                dir "\(directory.path)"
                save ""
                appendonly no

                """
            let file = directory.appendingPathComponent("redis.conf")
            try Data(configuration.utf8).write(to: file)
            let outcome = try await ProcessRunner.run(executable, [file.path])
            guard outcome.status == 0 else {
                lastError = "redis-server failed (\(outcome.status)): \(outcome.standardError) \(outcome.standardOutput)"
                try? FileManager.default.removeItem(at: directory)
                continue
            }
            // Daemonized: wait for its pid file and its port.
            let deadline = ContinuousClock.now + .seconds(30)
            var pid: pid_t?
            while ContinuousClock.now < deadline {
                if pid == nil, let text = try? String(contentsOf: directory.appendingPathComponent("redis.pid"), encoding: .utf8) {
                    pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                if let pid, accepts(port: port) { return ExtraRedisServer(port: port, directory: directory, pid: pid) }
                if let pid, !isAlive(pid) { break }  // it died (the port was taken, say)
                try await Task.sleep(for: .milliseconds(20))
            }
            let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
            lastError = "redis-server on port \(port) did not start: \(log.suffix(800))"
            if let pid { _ = kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(at: directory)
        }
        throw Failure(description: lastError)
    }

    /// Stops the server (SIGTERM, then SIGKILL) and deletes its directory.
    func stop() async {
        _ = kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(20)
        while isAlive(pid) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if isAlive(pid) { _ = kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A `rediss://` URL for this server, with URL options appended.
    func url(_ options: String = "") -> String {
        "rediss://localhost:\(port)/0" + (options.isEmpty ? "" : "?" + options)
    }

    /// A `redis://` URL for a plain-text server.
    var plainURL: String { "redis://localhost:\(port)/0" }
}

/// Whether process `pid` runs. A zombie (exited, not yet reaped by whoever adopted the
/// daemon) counts as gone: its sockets are closed.
private func isAlive(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let afterName = stat.split(separator: ")", maxSplits: 1).last
    else { return true }
    return afterName.dropFirst().first != "Z"
}

private func which(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick).
func freePort() throws -> Int {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw ExtraRedisServer.Failure(description: "socket: errno \(errno)") }
    defer { _ = close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw ExtraRedisServer.Failure(description: "bind: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
private func accepts(port: Int) -> Bool {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return false }
    defer { _ = close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
