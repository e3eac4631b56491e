#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CHiredis

// hiredis's `redisReader` is this module's RESP parser: it is fed bytes as they
// arrive and yields complete replies. Its own contexts (and their sockets) are never
// used; commands are encoded by `RESPCommandEncoder`.
//
// The most common replies (a status, an error, an integer, a bulk string or a null,
// complete in what was just read, with nothing left over in hiredis) are parsed here
// directly from the read buffer: hiredis would allocate a reply object and a string
// for each, which we would then copy and free (some 3,000 instructions per GET reply
// on the event loop's thread, three quarters of its work per command). Everything
// else (arrays, a reply split across reads, anything unusual) goes to hiredis.

/// A hiredis `redisReader`: fed bytes as they arrive, it yields complete replies.
/// Not thread-safe: one connection's reader is used only on its loop thread.
final class RESPParser {
    private let reader: UnsafeMutablePointer<redisReader>

    init() throws(RESPError) {
        guard let reader = redisReaderCreate() else {
            throw .protocolError("out of memory creating a RESP reader")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Parses received bytes, appending the complete replies to `replies`; the rest
    /// waits for more bytes.
    func parse(_ bytes: UnsafeRawBufferPointer, into replies: inout [RESPReply]) throws(RESPError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var start = 0
        if isIdle {
            while start < bytes.count, let (reply, end) = Self.scalar(base, start, bytes.count) {
                replies.append(reply)
                start = end
            }
            if start == bytes.count { return }
        }
        try feed(UnsafeRawBufferPointer(rebasing: bytes[start...]))
        while let reply = try next() { replies.append(reply) }
    }

    /// True when hiredis holds no bytes of an unfinished reply.
    private var isIdle: Bool {
        reader.pointee.ridx == -1 && reader.pointee.pos >= reader.pointee.len
    }

    /// A complete status, error, integer, bulk string or null reply at `start`, and the
    /// offset after it; `nil` for anything else (an array, an incomplete reply,
    /// something malformed: hiredis then parses it, or reports it).
    @inline(__always)
    static func scalar(_ base: UnsafeRawPointer, _ start: Int, _ count: Int) -> (RESPReply, Int)? {
        let type = base.load(fromByteOffset: start, as: UInt8.self)
        // The header line: up to the first CR LF.
        var lineEnd = start + 1
        while lineEnd + 1 < count {
            if base.load(fromByteOffset: lineEnd, as: UInt8.self) == 13 {
                guard base.load(fromByteOffset: lineEnd + 1, as: UInt8.self) == 10 else { return nil }
                break
            }
            lineEnd += 1
        }
        guard lineEnd + 1 < count else { return nil }
        let line = UnsafeRawBufferPointer(start: base + start + 1, count: lineEnd - start - 1)
        let next = lineEnd + 2
        switch type {
        case UInt8(ascii: "$"):
            guard let parsed = decimal(line), parsed >= -1, parsed <= Int64(Int32.max) else { return nil }
            if parsed == -1 { return (.null, next) }
            let length = Int(parsed)
            guard length >= 0, next + length + 2 <= count,
                base.load(fromByteOffset: next + length, as: UInt8.self) == 13,
                base.load(fromByteOffset: next + length + 1, as: UInt8.self) == 10
            else { return nil }
            let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
                if length > 0, let target = buffer.baseAddress {
                    UnsafeMutableRawPointer(target).copyMemory(from: base + next, byteCount: length)
                }
                initialized = length
            }
            return (.bulkString(bytes), next + length + 2)
        case UInt8(ascii: "+"):
            return (.simpleString(String(decoding: line, as: UTF8.self)), next)
        case UInt8(ascii: "-"):
            return (.error(String(decoding: line, as: UTF8.self)), next)
        case UInt8(ascii: ":"):
            guard let value = decimal(line) else { return nil }
            return (.integer(value), next)
        default:
            return nil
        }
    }

    /// A decimal integer, optionally negative, with no other characters.
    @inline(__always)
    private static func decimal(_ text: UnsafeRawBufferPointer) -> Int64? {
        guard !text.isEmpty, text.count <= 20 else { return nil }
        var i = 0
        var negative = false
        if text[0] == UInt8(ascii: "-") {
            negative = true
            i = 1
            guard text.count > 1 else { return nil }
        }
        var value: Int64 = 0
        while i < text.count {
            let digit = text[i] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
            i += 1
        }
        return negative ? -value : value
    }

    /// Appends received bytes.
    func feed(_ bytes: UnsafeRawBufferPointer) throws(RESPError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) != REDIS_OK {
            throw .protocolError(errorText())
        }
    }

    /// The next complete reply, or `nil` when more bytes are needed.
    func next() throws(RESPError) -> RESPReply? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else {
            throw .protocolError("invalid reply from the server: \(errorText())")
        }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return RESPReply(reply: reply.assumingMemoryBound(to: redisReply.self))
    }

    private func errorText() -> String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

extension RESPReply {
    /// Converts a hiredis reply tree.
    init(reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .bulkString(Self.bytes(r.str, r.len))
        case REDIS_REPLY_STATUS:
            self = .simpleString(String(decoding: Self.bytesView(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: Self.bytesView(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPReply] = []
            elements.reserveCapacity(Int(r.elements))
            if let element = r.element {
                for i in 0..<Int(r.elements) {
                    if let child = element[i] {
                        elements.append(RESPReply(reply: child))
                    } else {
                        elements.append(.null)
                    }
                }
            }
            self = .array(elements)
        default:  // REDIS_REPLY_NIL
            self = .null
        }
    }

    private static func bytesView(_ str: UnsafeMutablePointer<CChar>?, _ len: Int) -> UnsafeRawBufferPointer {
        guard let str else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: str, count: len)
    }

    private static func bytes(_ str: UnsafeMutablePointer<CChar>?, _ len: Int) -> [UInt8] {
        guard let str, len > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: len) { buffer, count in
            buffer.baseAddress?.initialize(from: UnsafeRawPointer(str).assumingMemoryBound(to: UInt8.self), count: len)
            count = len
        }
    }
}
