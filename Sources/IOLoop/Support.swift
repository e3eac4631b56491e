#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A system call or readiness wait that failed.
public struct IOError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What was attempted (`connect`, `read`, `wait for [readable]`, ...).
    public var operation: String
    /// The `errno` value, or 0 when the failure was not a system call's (a timeout).
    public var code: Int32
    /// True when the operation ran out of time.
    public var isTimeout: Bool

    /// Creates an error from a failed system call's `errno`.
    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
        self.isTimeout = code == ETIMEDOUT
    }

    /// An operation that did not complete before its deadline.
    public static func timeout(operation: String) -> IOError {
        var e = IOError(operation: operation, code: ETIMEDOUT)
        e.isTimeout = true
        return e
    }

    public var description: String {
        if isTimeout { return "\(operation): timed out" }
        return "\(operation): \(String(cString: strerror(code))) (errno \(code))"
    }
}

/// A minimal binary min-heap.
struct BinaryHeap<Element: Comparable> {
    private var storage: [Element] = []

    var isEmpty: Bool { storage.isEmpty }
    var count: Int { storage.count }
    var min: Element? { storage.first }

    mutating func insert(_ element: Element) {
        storage.append(element)
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if storage[child] < storage[parent] {
                storage.swapAt(child, parent)
                child = parent
            } else {
                break
            }
        }
    }

    @discardableResult
    mutating func popMin() -> Element? {
        guard !storage.isEmpty else { return nil }
        storage.swapAt(0, storage.count - 1)
        let result = storage.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < storage.count && storage[left] < storage[smallest] { smallest = left }
            if right < storage.count && storage[right] < storage[smallest] { smallest = right }
            if smallest == parent { break }
            storage.swapAt(parent, smallest)
            parent = smallest
        }
        return result
    }
}
