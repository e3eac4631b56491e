import CLibpq

/// A statement's parameters, encoded into one buffer, ready for libpq.
struct Bindings {
    var types: [UInt32] = []
    var formats: [Int32] = []
    var lengths: [Int32] = []
    var offsets: [Int] = []  // -1 for NULL
    var bytes: [UInt8] = []

    init(_ parameters: [any PGEncodable]) throws {
        guard !parameters.isEmpty else { return }
        let n = parameters.count
        types.reserveCapacity(n)
        formats.reserveCapacity(n)
        lengths.reserveCapacity(n)
        offsets.reserveCapacity(n)
        bytes.reserveCapacity(16 * n)
        for (i, parameter) in parameters.enumerated() {
            let type = Swift.type(of: parameter)
            types.append(type.postgresDataType.rawValue)
            let format = type.postgresFormat
            formats.append(format.rawValue)
            if parameter.isPostgresNull {
                offsets.append(-1)
                lengths.append(0)
                continue
            }
            let start = bytes.count
            do {
                try parameter.encode(into: &bytes)
            } catch let error as PGError {
                var e = error
                e.kind = .encoding
                e.message = "parameter $\(i + 1) (\(type)): \(error.message)"
                throw e
            } catch {
                throw PGError(.encoding, "parameter $\(i + 1) (\(type)): \(error)", underlying: error)
            }
            guard bytes.count - start <= Int(Int32.max) else {
                throw PGError(.encoding, "parameter $\(i + 1) (\(type)) is larger than 2 GiB")
            }
            lengths.append(Int32(bytes.count - start))
            offsets.append(start)
            if format == .text { bytes.append(0) }
        }
        bytes.append(0)  // never empty, so every non-NULL value has an address
    }

    var count: Int32 { Int32(types.count) }

    /// Calls `body` with libpq's parallel arrays (all nil when there are no parameters).
    func withPointers<R>(
        _ body: (
            _ count: Int32, _ types: UnsafePointer<Oid>?, _ values: UnsafePointer<UnsafePointer<CChar>?>?,
            _ lengths: UnsafePointer<Int32>?, _ formats: UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        if types.isEmpty { return body(0, nil, nil, nil, nil) }
        return bytes.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress)
            // The value pointers live on the stack for the call: no allocation.
            return withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: offsets.count) { values in
                for (i, offset) in offsets.enumerated() {
                    values.initializeElement(
                        at: i, to: offset >= 0 ? base.map { ($0 + offset).assumingMemoryBound(to: CChar.self) } : nil)
                }
                return types.withUnsafeBufferPointer { t in
                    lengths.withUnsafeBufferPointer { l in
                        formats.withUnsafeBufferPointer { f in
                            body(count, t.baseAddress, UnsafePointer(values.baseAddress), l.baseAddress, f.baseAddress)
                        }
                    }
                }
            }
        }
    }
}
