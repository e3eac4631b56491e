import CacheAsideTLS

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for one set of credentials, region and
/// service: the canonical request, the string to sign, the signing key, and the two ways
/// to attach a signature (an `Authorization` header, or a presigned query string as IAM
/// authentication tokens use).
///
/// Signing is a pure function of the request, the credentials and the time: every
/// method takes the signing time as `date`, so callers choose their clock (the token
/// generators take a `now` closure). The digests are OpenSSL's, through `CacheAsideTLS`.
public struct SigV4Signer: Sendable {
    /// The algorithm name that every SigV4 string to sign and credential begins with.
    public static let algorithm = "AWS4-HMAC-SHA256"
    /// The longest expiry a presigned request may have: 7 days, in seconds.
    public static let maximumExpiry = 604_800

    /// The credentials that sign.
    public var credentials: AWSCredentials
    /// The region the request is for, e.g. `us-east-1`.
    public var region: String
    /// The signing name of the service, e.g. `rds-db` or `elasticache`.
    public var service: String

    /// A signer for `service` in `region` with `credentials`.
    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    // MARK: The steps

    /// The canonical request: method, canonical URI, canonical query string (sorted by
    /// encoded name, then value), canonical headers (lower-case names, sorted, values
    /// trimmed with inner runs of spaces collapsed, repeated names joined with commas),
    /// signed headers, and the hex SHA-256 of the body, one per line.
    public func canonicalRequest(_ request: SigV4Request) -> String {
        let headers = SigV4.canonicalHeaders(request.headers)
        return [
            request.method,
            SigV4.canonicalURI(request.path),
            SigV4.canonicalQuery(request.query),
            headers.map { $0.name + ":" + $0.value + "\n" }.joined(),
            headers.map(\.name).joined(separator: ";"),
            Digest.hex(Digest.sha256(request.body)),
        ].joined(separator: "\n")
    }

    /// The credential scope: `yyyymmdd/region/service/aws4_request` of `date` in UTC.
    public func credentialScope(at date: Date) -> String {
        "\(SigV4Timestamp(date).dateStamp)/\(region)/\(service)/aws4_request"
    }

    /// The string to sign: the algorithm, the timestamp (`yyyymmddThhmmssZ`), the
    /// credential scope and the hex SHA-256 of `canonicalRequest`, one per line.
    public func stringToSign(canonicalRequest: String, at date: Date) -> String {
        [
            Self.algorithm,
            SigV4Timestamp(date).amzDate,
            credentialScope(at: date),
            Digest.hex(Digest.sha256(canonicalRequest.utf8)),
        ].joined(separator: "\n")
    }

    /// The signing key of `date`'s day: HMAC-SHA-256 chained over the date, the region,
    /// the service and `aws4_request`, starting from `AWS4` + the secret access key.
    public func signingKey(at date: Date) -> [UInt8] {
        var key = Digest.hmacSHA256(key: Array(("AWS4" + credentials.secretAccessKey).utf8), SigV4Timestamp(date).dateStamp.utf8)
        for part in [region, service, "aws4_request"] {
            key = Digest.hmacSHA256(key: key, part.utf8)
        }
        return key
    }

    /// The hex signature of `request` exactly as it is (its headers and query as given)
    /// at `date`.
    public func signature(of request: SigV4Request, at date: Date) -> String {
        let toSign = stringToSign(canonicalRequest: canonicalRequest(request), at: date)
        return Digest.hex(Digest.hmacSHA256(key: signingKey(at: date), toSign.utf8))
    }

    // MARK: Attaching a signature

    /// `request` signed with headers: adds `X-Amz-Date`, `X-Amz-Security-Token` (for
    /// temporary credentials), both signed, and then `Authorization`.
    public func sign(_ request: SigV4Request, at date: Date) -> SigV4Request {
        var signed = request
        signed.headers.append(.init("X-Amz-Date", SigV4Timestamp(date).amzDate))
        if let token = credentials.sessionToken {
            signed.headers.append(.init("X-Amz-Security-Token", token))
        }
        let signedHeaders = SigV4.canonicalHeaders(signed.headers).map(\.name).joined(separator: ";")
        let signature = signature(of: signed, at: date)
        signed.headers.append(
            .init(
                "Authorization",
                "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(credentialScope(at: date)), "
                    + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
            )
        )
        return signed
    }

    /// `request` presigned in its query string, valid for `expiresIn` seconds from
    /// `date`: appends, in this order, `X-Amz-Algorithm`, `X-Amz-Credential`,
    /// `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders` (the request's headers, at
    /// least `host`), `X-Amz-Security-Token` (temporary credentials only), all covered by
    /// the signature, and then `X-Amz-Signature`. The order is botocore's; servers sort
    /// the parameters themselves.
    ///
    /// - Throws: ``AWSAuthError/invalidArgument(name:reason:)`` when `expiresIn` is not
    ///   between 1 and ``maximumExpiry`` seconds.
    public func presign(_ request: SigV4Request, expiresIn: Int, at date: Date) throws -> SigV4Request {
        guard (1...Self.maximumExpiry).contains(expiresIn) else {
            throw AWSAuthError.invalidArgument(
                name: "expiresIn",
                reason: "\(expiresIn) s is outside 1...\(Self.maximumExpiry) s"
            )
        }
        return presignUnchecked(request, expiresIn: expiresIn, at: date)
    }

    /// ``presign(_:expiresIn:at:)`` for an expiry known to be in range.
    func presignUnchecked(_ request: SigV4Request, expiresIn: Int, at date: Date) -> SigV4Request {
        var presigned = request
        presigned.query += [
            .init("X-Amz-Algorithm", Self.algorithm),
            .init("X-Amz-Credential", "\(credentials.accessKeyID)/\(credentialScope(at: date))"),
            .init("X-Amz-Date", SigV4Timestamp(date).amzDate),
            .init("X-Amz-Expires", String(expiresIn)),
            .init("X-Amz-SignedHeaders", SigV4.canonicalHeaders(request.headers).map(\.name).joined(separator: ";")),
        ]
        if let token = credentials.sessionToken {
            presigned.query.append(.init("X-Amz-Security-Token", token))
        }
        presigned.query.append(.init("X-Amz-Signature", signature(of: presigned, at: date)))
        return presigned
    }
}

/// The encodings and formats SigV4 prescribes.
enum SigV4 {
    /// Percent-encodes every UTF-8 byte except `A-Z a-z 0-9 - _ . ~` (and `/` when
    /// `keepingSlash`), with upper-case hex digits: RFC 3986 as SigV4 requires it (a
    /// space is `%20`, never `+`).
    static func uriEncode(_ string: String, keepingSlash: Bool = false) -> String {
        // Most names and values need no escaping: return them as they are.
        guard string.utf8.contains(where: { !isUnreserved($0, keepingSlash: keepingSlash) }) else { return string }
        let hex: StaticString = "0123456789ABCDEF"
        var out: [UInt8] = []
        out.reserveCapacity(string.utf8.count * 3)
        for byte in string.utf8 {
            if isUnreserved(byte, keepingSlash: keepingSlash) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex.utf8Start[Int(byte >> 4)])
                out.append(hex.utf8Start[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    @inline(__always)
    private static func isUnreserved(_ byte: UInt8, keepingSlash: Bool) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
            UInt8(ascii: "."), UInt8(ascii: "~"):
            return true
        case UInt8(ascii: "/"):
            return keepingSlash
        default:
            return false
        }
    }

    /// The canonical URI: the path URI-encoded with its slashes kept; `/` when empty.
    static func canonicalURI(_ path: String) -> String {
        path.isEmpty ? "/" : uriEncode(path, keepingSlash: true)
    }

    /// The canonical query string: each name and value URI-encoded, sorted by encoded
    /// name and then encoded value, joined with `&`.
    static func canonicalQuery(_ items: [SigV4Request.QueryItem]) -> String {
        items
            .map { (uriEncode($0.name), uriEncode($0.value)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { $0.0 + "=" + $0.1 }
            .joined(separator: "&")
    }

    /// The canonical headers, sorted by lower-case name, one per name: values trimmed,
    /// runs of spaces inside collapsed to one, a repeated name's values joined with `,`.
    static func canonicalHeaders(_ headers: [SigV4Request.Header]) -> [(name: String, value: String)] {
        var values: [String: [String]] = [:]
        for header in headers {
            values[lowercasedASCII(header.name), default: []].append(normalizedValue(header.value))
        }
        return values.keys.sorted().map { name in (name, values[name, default: []].joined(separator: ",")) }
    }

    /// `value` trimmed of surrounding spaces, tabs and line breaks, with each inner run
    /// of spaces and tabs replaced by one space.
    static func normalizedValue(_ value: String) -> String {
        let isBlank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        let isTrimmed: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        let bytes = value.utf8
        guard let first = bytes.firstIndex(where: { !isTrimmed($0) }),
            let last = bytes.lastIndex(where: { !isTrimmed($0) })
        else { return "" }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var previousBlank = false
        for byte in bytes[first...last] {
            let blank = isBlank(byte)
            if blank {
                if !previousBlank { out.append(0x20) }
            } else {
                out.append(byte)
            }
            previousBlank = blank
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `string` with `A-Z` lower-cased and every other byte as it is.
    static func lowercasedASCII(_ string: String) -> String {
        String(decoding: string.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}

/// A signing time in the two UTC forms SigV4 uses, to the second (fractions dropped).
struct SigV4Timestamp {
    /// `yyyymmddThhmmssZ`, the `X-Amz-Date` form.
    let amzDate: String
    /// `yyyymmdd`, the credential scope's date.
    let dateStamp: String

    init(_ date: Date) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let (days, secondOfDay) = seconds.floorDivided(by: 86_400)
        let (year, month, day) = Self.civilDate(daysSince1970: days)
        let hour = secondOfDay / 3600, minute = secondOfDay / 60 % 60, second = secondOfDay % 60
        dateStamp = Self.digits(year, 4) + Self.digits(month, 2) + Self.digits(day, 2)
        amzDate = dateStamp + "T" + Self.digits(hour, 2) + Self.digits(minute, 2) + Self.digits(second, 2) + "Z"
    }

    /// The proleptic Gregorian date of a day count from 1970-01-01.
    private static func civilDate(daysSince1970: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = daysSince1970 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func digits(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}

extension Int64 {
    /// Quotient and remainder rounded toward negative infinity (remainder in 0..<divisor).
    fileprivate func floorDivided(by divisor: Int64) -> (Int64, Int64) {
        let remainder = self % divisor
        return remainder < 0 ? (self / divisor - 1, remainder + divisor) : (self / divisor, remainder)
    }
}
