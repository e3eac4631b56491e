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
