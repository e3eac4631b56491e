import COpenSSL

/// Message digests and HMAC from OpenSSL's libcrypto (the library libpq already links):
/// script hashes for Redis, migration checksums for PostgreSQL, request signatures for
/// AWS authentication tokens.
public enum Digest {
    /// SHA-1 of `bytes` (20 bytes). Redis names scripts by it; not for security.
    public static func sha1(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        digest(EVP_sha1(), Array(bytes))
    }

    /// SHA-256 of `bytes` (32 bytes).
    public static func sha256(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        digest(EVP_sha256(), Array(bytes))
    }

    /// HMAC-SHA-256 of `message` under `key` (32 bytes).
    public static func hmacSHA256(key: some Sequence<UInt8>, _ message: some Sequence<UInt8>) -> [UInt8] {
        let key = Array(key), message = Array(message)
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = key.withUnsafeBufferPointer { k in
            message.withUnsafeBufferPointer { m in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), m.baseAddress, m.count, &out, &length)
            }
        }
        // HMAC fails only when libcrypto cannot allocate; an empty result then makes
        // every signature wrong rather than the process crash.
        guard ok != nil else { return [] }
        return Array(out.prefix(Int(length)))
    }

    /// Lower-case hexadecimal.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func digest(_ type: OpaquePointer?, _ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBufferPointer { b in
            EVP_Digest(b.baseAddress, b.count, &out, &length, type, nil)
        }
        guard ok == 1 else { return [] }
        return Array(out.prefix(Int(length)))
    }
}
