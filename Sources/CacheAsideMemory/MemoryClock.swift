#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in time on a ``MemoryClock``: nanoseconds since the clock's arbitrary origin.
///
/// Only differences between instants of the same clock mean anything.
public struct MemoryInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: Int64

    /// Creates an instant `nanoseconds` after the clock's origin.
    @inlinable
    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    /// The instant `duration` later (saturating at the largest representable instant).
    @inlinable
    public func advanced(by duration: Duration) -> MemoryInstant {
        MemoryInstant(nanoseconds: MemoryInstant.adding(nanoseconds, MemoryInstant.nanoseconds(of: duration)))
    }

    /// The time from this instant to `other` (negative when `other` is earlier).
    @inlinable
    public func duration(to other: MemoryInstant) -> Duration {
        .nanoseconds(other.nanoseconds &- nanoseconds)
    }

    /// The instant `duration` later.
    @inlinable
    public static func + (lhs: MemoryInstant, rhs: Duration) -> MemoryInstant {
        lhs.advanced(by: rhs)
    }

    @inlinable
    public static func < (lhs: MemoryInstant, rhs: MemoryInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    public var description: String { "MemoryInstant(\(nanoseconds) ns)" }

    /// `duration` in whole nanoseconds, clamped to `Int64` (negative durations stay negative).
    @inlinable
    static func nanoseconds(of duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (secondsPart, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        return adding(secondsPart, attoseconds / 1_000_000_000)
    }

    /// `a + b`, saturating instead of overflowing.
    @inlinable
    static func adding(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        if overflow { return b > 0 ? Int64.max : Int64.min }
        return sum
    }
}

/// The time source of a ``MemoryStore``: entry expiry and the trust deadline are read
/// from it.
///
/// ``monotonic`` (the default) reads the system's monotonic clock. Tests pass a clock
/// of their own that they move by hand:
///
/// ```swift
/// let now = Mutex(Duration.zero)
/// let clock = MemoryClock { now.withLock { $0 } }
/// ```
public struct MemoryClock: Sendable {
    @usableFromInline
    let source: (@Sendable () -> Duration)?

    private init(source: (@Sendable () -> Duration)?) {
        self.source = source
    }

    /// The system's monotonic clock (`CLOCK_MONOTONIC`): unaffected by changes of the
    /// wall clock.
    public static var monotonic: MemoryClock { MemoryClock(source: nil) }

    /// A clock that reads `now`: the time since an origin of its choosing, which must
    /// never move backwards.
    public init(now: @escaping @Sendable () -> Duration) {
        self.source = now
    }

    /// The current instant.
    @inlinable
    public func now() -> MemoryInstant {
        MemoryInstant(nanoseconds: nanoseconds())
    }

    @inlinable
    func nanoseconds() -> Int64 {
        if let source { return MemoryInstant.nanoseconds(of: source()) }
        return monotonicNanoseconds()
    }
}

@usableFromInline
func monotonicNanoseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
}
