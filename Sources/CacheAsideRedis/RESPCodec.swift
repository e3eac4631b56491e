#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CHiredis

// hiredis is this module's RESP codec: `redisFormatCommandArgv` encodes commands and a
// `redisReader` parses replies. Its own contexts (and their sockets) are never used.

/// One argument of a command, before encoding. Strings are sent as their UTF-8.
enum RedisArgument {
    case literal(StaticString)
    case string(String)
    case bytes([UInt8])
    case integer(Int64)
}

/// One or more encoded commands, in `malloc`ed memory: hiredis's own buffer from
/// `redisFormatCommandArgv`, or ours when commands are concatenated for a pipeline.
/// The owner calls ``free()`` once, after the bytes are written or copied.
struct EncodedCommand {
    let base: UnsafeMutableRawPointer
    let count: Int
    private let fromHiredis: Bool

    init(hiredis pointer: UnsafeMutablePointer<CChar>, count: Int) {
        self.base = UnsafeMutableRawPointer(pointer)
        self.count = count
        self.fromHiredis = true
    }

    init(malloced base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
        self.fromHiredis = false
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    func free() {
        if fromHiredis {
            redisFreeCommand(base.assumingMemoryBound(to: CChar.self))
        } else {
            #if canImport(Glibc)
            Glibc.free(base)
            #elseif canImport(Musl)
            Musl.free(base)
            #else
            Darwin.free(base)
            #endif
        }
    }
}

enum RESPEncoder {
    private static let empty: StaticString = ""

    /// Encodes `name key`: the hot path of single-key commands (GET, INCR, TTL, ...),
    /// with no intermediate copy of the key.
    static func encode(_ name: StaticString, _ key: String) throws(RESPError) -> EncodedCommand {
        var key = key
        let encoded: EncodedCommand? = key.withUTF8 { k in
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: 2) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: 2) { lengths in
                    argv[0] = cString(name.utf8Start)
                    lengths[0] = name.utf8CodeUnitCount
                    argv[1] = k.baseAddress.map(cString) ?? cString(empty.utf8Start)
                    lengths[1] = k.count
                    return format(count: 2, argv: argv, lengths: lengths)
                }
            }
        }
        guard let encoded else { throw formatFailure() }
        return encoded
    }

    /// Encodes a command from typed arguments.
    static func encode(_ arguments: [RedisArgument]) throws(RESPError) -> EncodedCommand {
        var capacity = 0
        for argument in arguments {
            switch argument {
            case .literal(let s): capacity += s.utf8CodeUnitCount
            case .string(let s): capacity += s.utf8.count
            case .bytes(let b): capacity += b.count
            case .integer: capacity += 20
            }
        }
        let encoded = flatten(count: arguments.count, capacity: capacity) { flat, lengths in
            var offset = 0
            for (i, argument) in arguments.enumerated() {
                let destination = flat + offset
                let n: Int
                switch argument {
                case .literal(let s):
                    n = s.utf8CodeUnitCount
                    destination.copyMemory(from: s.utf8Start, byteCount: n)
                case .string(let s):
                    n = copyUTF8(s, to: destination)
                case .bytes(let b):
                    n = b.count
                    b.withUnsafeBytes { raw in
                        if let source = raw.baseAddress { destination.copyMemory(from: source, byteCount: n) }
                    }
                case .integer(let value):
                    n = writeDecimal(value, to: destination)
                }
                lengths[i] = n
                offset += n
            }
        }
        guard let encoded else { throw formatFailure() }
        return encoded
    }

    /// Encodes a command given as raw arguments.
    static func encode(_ arguments: [[UInt8]]) throws(RESPError) -> EncodedCommand {
        var capacity = 0
        for argument in arguments { capacity += argument.count }
        let encoded = flatten(count: arguments.count, capacity: capacity) { flat, lengths in
            var offset = 0
            for (i, argument) in arguments.enumerated() {
                argument.withUnsafeBytes { raw in
                    if let source = raw.baseAddress { (flat + offset).copyMemory(from: source, byteCount: raw.count) }
                }
                lengths[i] = argument.count
                offset += argument.count
            }
        }
        guard let encoded else { throw formatFailure() }
        return encoded
    }

    /// Concatenates encoded commands into one buffer (a pipeline), freeing them.
    static func concatenate(_ commands: [EncodedCommand]) throws(RESPError) -> EncodedCommand {
        var total = 0
        for command in commands { total += command.count }
        guard let base = malloc(max(total, 1)) else {
            for command in commands { command.free() }
            throw .protocolError("out of memory encoding a pipeline of \(commands.count) commands")
        }
        var offset = 0
        for command in commands {
            (base + offset).copyMemory(from: command.base, byteCount: command.count)
            offset += command.count
            command.free()
        }
        return EncodedCommand(malloced: base, count: total)
    }

    /// Copies all arguments into one temporary buffer (on the stack when small), points
    /// `argv` into it, and formats.
    private static func flatten(
        count: Int, capacity: Int,
        fill: (UnsafeMutableRawPointer, UnsafeMutableBufferPointer<Int>) -> Void
    ) -> EncodedCommand? {
        guard count > 0 else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: max(capacity, 1), alignment: 1) { flat -> EncodedCommand? in
            guard let flatBase = flat.baseAddress else { return nil }
            return withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { lengths in
                fill(flatBase, lengths)
                return withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { argv in
                    var offset = 0
                    for i in 0..<count {
                        argv[i] = cString(UnsafeRawPointer(flatBase + offset))
                        offset += lengths[i]
                    }
                    return format(count: count, argv: argv, lengths: lengths)
                }
            }
        }
    }

    private static func format(
        count: Int, argv: UnsafeMutableBufferPointer<UnsafePointer<CChar>?>, lengths: UnsafeMutableBufferPointer<Int>
    ) -> EncodedCommand? {
        var target: UnsafeMutablePointer<CChar>?
        let n = redisFormatCommandArgv(&target, Int32(count), argv.baseAddress, lengths.baseAddress)
        guard n > 0, let target else { return nil }
        return EncodedCommand(hiredis: target, count: Int(n))
    }

    private static func formatFailure() -> RESPError {
        .protocolError("could not encode the command (no arguments, or out of memory)")
    }

    private static func copyUTF8(_ string: String, to destination: UnsafeMutableRawPointer) -> Int {
        if let n = string.utf8.withContiguousStorageIfAvailable({ utf8 -> Int in
            if let source = utf8.baseAddress { destination.copyMemory(from: source, byteCount: utf8.count) }
            return utf8.count
        }) {
            return n
        }
        var n = 0
        for byte in string.utf8 {
            destination.storeBytes(of: byte, toByteOffset: n, as: UInt8.self)
            n += 1
        }
        return n
    }

    private static func writeDecimal(_ value: Int64, to destination: UnsafeMutableRawPointer) -> Int {
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch
        return withUnsafeMutableBytes(of: &digits) { scratch in
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                i -= 1
                scratch[i] = UInt8(ascii: "-")
            }
            let n = scratch.count - i
            if let source = scratch.baseAddress { destination.copyMemory(from: source + i, byteCount: n) }
            return n
        }
    }
}

@inline(__always)
private func cString(_ pointer: UnsafeRawPointer) -> UnsafePointer<CChar> {
    pointer.assumingMemoryBound(to: CChar.self)
}

@inline(__always)
private func cString(_ pointer: UnsafePointer<UInt8>) -> UnsafePointer<CChar> {
    UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self)
}

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
