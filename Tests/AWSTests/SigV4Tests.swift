import CacheAsideAWS
import Foundation
import Testing

@Suite struct SigV4Tests {
    static let suiteDate = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z

    @Test func vectorFileLoadsWithEveryCase() throws {
        let suite = try Vectors.load("sigv4-test-suite", as: Vectors.SuiteFile.self)
        #expect(suite.cases.count == 10)
        #expect(Vectors.suiteCaseNames.count == 10)
        #expect(try Vectors.date(suite.timestamp) == Self.suiteDate)
    }

    /// AWS's published cases, signed with an Authorization header: canonical request,
    /// string to sign and signature each as published.
    @Test(arguments: Vectors.suiteCaseNames)
    func headerSigningMatchesTheTestSuite(_ name: String) throws {
        let suite = try #require(Vectors.suite)
        let vector = try #require(suite.cases.first { $0.name == name })
        let signer = Self.signer(suite, sessionToken: vector.sessionToken)
        let request = try Vectors.parseRequest(vector.request)

        let signed = signer.sign(request, at: Self.suiteDate)
        var unsigned = signed
        unsigned.headers.removeAll { $0.name == "Authorization" }
        let canonical = signer.canonicalRequest(unsigned)
        #expect(canonical == vector.headerCanonicalRequest)
        #expect(signer.stringToSign(canonicalRequest: canonical, at: Self.suiteDate) == vector.headerStringToSign)
        #expect(signer.signature(of: unsigned, at: Self.suiteDate) == vector.headerSignature)

        let signedHeaders = try #require(vector.headerCanonicalRequest.split(separator: "\n").dropLast().last)
        #expect(
            signed.header("authorization")
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                + "SignedHeaders=\(signedHeaders), Signature=\(vector.headerSignature)"
        )
        #expect(signed.header("x-amz-date") == "20150830T123600Z")
        #expect(signed.header("x-amz-security-token") == vector.sessionToken)
    }

    /// The same cases presigned in the query string (X-Amz-Expires=3600).
    @Test(arguments: Vectors.suiteCaseNames)
    func queryPresigningMatchesTheTestSuite(_ name: String) throws {
        let suite = try #require(Vectors.suite)
        let vector = try #require(suite.cases.first { $0.name == name })
        let signer = Self.signer(suite, sessionToken: vector.sessionToken)
        let request = try Vectors.parseRequest(vector.request)

        let presigned = try signer.presign(request, expiresIn: suite.expiresIn, at: Self.suiteDate)
        #expect(presigned.query.last == .init("X-Amz-Signature", vector.querySignature))
        #expect(presigned.headers == request.headers)
        var unsigned = presigned
        unsigned.query.removeLast()
        let canonical = signer.canonicalRequest(unsigned)
        #expect(canonical == vector.queryCanonicalRequest)
        #expect(signer.stringToSign(canonicalRequest: canonical, at: Self.suiteDate) == vector.queryStringToSign)
        #expect(presigned.queryValue("X-Amz-Security-Token") == vector.sessionToken)
        // The caller's parameters come first, in their order, then the signing ones.
        #expect(Array(presigned.query.prefix(request.query.count)) == request.query)
        #expect(
            presigned.query.dropFirst(request.query.count).map(\.name)
                == ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders"]
                + (vector.sessionToken == nil ? [] : ["X-Amz-Security-Token"]) + ["X-Amz-Signature"]
        )
    }

    /// AWS's documented example of deriving a signing key (IAM, us-east-1, 2012-02-15).
    @Test func signingKeyMatchesAWSExample() {
        let signer = SigV4Signer(
            credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1",
            service: "iam"
        )
        let date = Date(timeIntervalSince1970: 1_329_264_000 + 43_200)  // 2012-02-15T12:00:00Z
        #expect(signer.credentialScope(at: date) == "20120215/us-east-1/iam/aws4_request")
        #expect(
            signer.signingKey(at: date).map { String(format: "%02x", $0) }.joined()
                == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        )
    }

    /// The signing time is UTC, to the second: fractions are dropped, never rounded up
    /// into the next day.
    @Test(arguments: [
        (0.0, "19700101T000000Z"),
        (951_782_400.0, "20000229T000000Z"),  // a leap day of a year divisible by 400
        (1_709_251_199.999, "20240229T235959Z"),
        (4_107_542_400.0, "21000301T000000Z"),  // 2100 is no leap year
        (253_402_300_799.0, "99991231T235959Z"),
    ])
    func timestampsAreUTCToTheSecond(_ seconds: Double, _ expected: String) throws {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        let presigned = try signer.presign(
            SigV4Request(headers: [.init("Host", "h")]),
            expiresIn: 60,
            at: Date(timeIntervalSince1970: seconds)
        )
        #expect(presigned.queryValue("X-Amz-Date") == expected)
        #expect(presigned.queryValue("X-Amz-Credential") == "AK/\(expected.prefix(8))/r/s/aws4_request")
    }

    @Test func encodingKeepsOnlyUnreservedCharacters() {
        let request = SigV4Request(
            path: "/a b/ü/~x",
            query: [
                .init("b", "2 3"), .init("a", "x/y+z=&é"), .init("A", ""), .init("a", "-_.~"),
            ],
            headers: [.init("Host", "example.com")]
        )
        #expect(request.encodedQuery == "b=2%203&a=x%2Fy%2Bz%3D%26%C3%A9&A=&a=-_.~")
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        let lines = signer.canonicalRequest(request).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[1] == "/a%20b/%C3%BC/~x")
        // Sorted by encoded name (upper case first, bytewise), then by encoded value.
        #expect(lines[2] == "A=&a=-_.~&a=x%2Fy%2Bz%3D%26%C3%A9&b=2%203")
    }

    @Test func headerValuesAreTrimmedAndInnerBlanksCollapsed() {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        let request = SigV4Request(headers: [
            .init("Host", "h"), .init("X-Tabs", "\t a \t\t b \r\n"), .init("X-Blank", "   "), .init("x-tabs", "ü  ü"),
        ])
        let lines = signer.canonicalRequest(request).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(Array(lines[3...6]) == ["host:h", "x-blank:", "x-tabs:a b,ü ü", ""])
        #expect(lines[7] == "host;x-blank;x-tabs")
    }

    @Test func bodyIsHashedIntoTheCanonicalRequest() {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        let request = SigV4Request(method: "POST", headers: [.init("Host", "h")], body: Array("abc".utf8))
        #expect(
            signer.canonicalRequest(request).hasSuffix("\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        )
        var other = request
        other.body = Array("abd".utf8)
        #expect(signer.signature(of: request, at: Self.suiteDate) != signer.signature(of: other, at: Self.suiteDate))
    }

    @Test(arguments: [0, -1, 604_801])
    func presignRefusesAnExpiryOutsideSevenDays(_ seconds: Int) {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        #expect(throws: AWSAuthError.invalidArgument(name: "expiresIn", reason: "\(seconds) s is outside 1...604800 s")) {
            try signer.presign(SigV4Request(headers: [.init("Host", "h")]), expiresIn: seconds, at: Self.suiteDate)
        }
    }

    @Test func presignAcceptsSevenDays() throws {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AK", secretAccessKey: "SK"), region: "r", service: "s")
        let presigned = try signer.presign(SigV4Request(headers: [.init("Host", "h")]), expiresIn: 604_800, at: Self.suiteDate)
        #expect(presigned.queryValue("X-Amz-Expires") == "604800")
    }

    static func signer(_ suite: Vectors.SuiteFile, sessionToken: String?) -> SigV4Signer {
        SigV4Signer(
            credentials: AWSCredentials(
                accessKeyID: suite.accessKeyID,
                secretAccessKey: suite.secretAccessKey,
                sessionToken: sessionToken
            ),
            region: suite.region,
            service: suite.service
        )
    }
}
