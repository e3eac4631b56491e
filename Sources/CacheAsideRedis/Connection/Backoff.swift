/// Reconnect delays: exponential, capped, with jitter.
enum Backoff {
    /// The delay before the next connect attempt after `failures` consecutive failed
    /// attempts (1 or more): `minimum * 2^(failures-1)`, capped at `maximum`, then
    /// scaled by a factor between 0.5 and 1 (`random` in `0...1`) so that many clients
    /// do not retry in step.
    static func delay(afterFailures failures: Int, minimum: Duration, maximum: Duration, random: Double) -> Duration {
        let minNanos = max(nanoseconds(minimum), 1)
        let maxNanos = max(nanoseconds(maximum), minNanos)
        let exponent = min(max(failures - 1, 0), 40)
        var base = minNanos
        for _ in 0..<exponent {
            base = base > maxNanos / 2 ? maxNanos : base * 2
            if base >= maxNanos { break }
        }
        base = min(base, maxNanos)
        let factor = 0.5 + 0.5 * min(max(random, 0), 1)
        return .nanoseconds(Int64(Double(base) * factor))
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        return product &+ attoseconds / 1_000_000_000
    }
}
