import Synchronization
import CacheAsideRedis
import TestSupport
import Testing

/// A client on the shared test server (`REDIS_URL`), configured by `configure`.
func makeClient(
    url: String? = nil, _ configure: (inout RESPConfiguration) -> Void = { _ in }
) throws -> RESPClient {
    var configuration = try RESPConfiguration(url: url ?? TestEnvironment.redisURL())
    // Generous by default: the tests share two cores with each other and with other
    // suites. Tests about timeouts set their own.
    configuration.commandTimeout = .seconds(5)
    configuration.connectTimeout = .seconds(5)
    configure(&configuration)
    return try RESPClient(configuration: configuration)
}

/// Runs `body` with a client, and shuts it down afterwards, also on failure.
@discardableResult
func withClient<T>(
    url: String? = nil, _ configure: (inout RESPConfiguration) -> Void = { _ in },
    _ body: (RESPClient) async throws -> T
) async throws -> T {
    let client = try makeClient(url: url, configure)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// A private Redis (and PostgreSQL) from `scripts/dev-services --instance NAME`, for
/// tests that stop or restart the server; always brought down afterwards.
func withPrivateInstance<T>(_ label: String, _ body: (_ redisURL: String, _ instance: String) async throws -> T) async throws -> T {
    let name = TestEnvironment.uniqueName(label)
    do {
        let urls = try await TestEnvironment.startPrivateInstance(name)
        let result = try await body(urls.redisURL, name)
        _ = try? await TestEnvironment.runDevServices(["down"], instance: name)
        return result
    } catch {
        _ = try? await TestEnvironment.runDevServices(["down"], instance: name)
        throw error
    }
}

/// Seconds elapsed since `start`.
func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Retries `body` until it succeeds or `timeout` passes; returns its last result.
func eventually<T>(
    timeout: Duration = .seconds(10), every interval: Duration = .milliseconds(50),
    _ body: () async throws -> T?
) async throws -> T? {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try? await body() { return value }
        if ContinuousClock.now >= deadline { return nil }
        try await Task.sleep(for: interval)
    }
}

/// Catches the error thrown by `body`, or records a failure if it returned.
func expectError<T>(
    _ body: () async throws -> T, sourceLocation: SourceLocation = #_sourceLocation
) async -> (any Error)? {
    do {
        let value = try await body()
        Issue.record("expected an error, got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

extension Array where Element == UInt8 {
    /// `count` random bytes, eight at a time (a byte at a time took seconds of a
    /// thread that runs tasks in a debug build, and held up other tests' replies).
    static func random(count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var i = 0
            while i < count {
                var word = generator.next()
                let n = Swift.min(8, count - i)
                Swift.withUnsafeBytes(of: &word) { w in
                    raw.baseAddress!.advanced(by: i).copyMemory(from: w.baseAddress!, byteCount: n)
                }
                i += n
            }
        }
        return bytes
    }
}

/// A flag and a counter that concurrent test tasks share.
final class Flag: Sendable {
    let count = Atomic<Int>(0)
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}
