import CacheAsideAWS
import Foundation
import Testing

@Suite struct CredentialsTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let token = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"

    @Test func descriptionsNeverShowTheSecretOrTheToken() {
        let temporary = AWSCredentials(accessKeyID: "ASIAEXAMPLE", secretAccessKey: Self.secret, sessionToken: Self.token)
        var dumped = ""
        dump(temporary, to: &dumped)
        for text in [temporary.description, temporary.debugDescription, "\(temporary)", String(reflecting: temporary), dumped] {
            #expect(text.contains("ASIAEXAMPLE"))
            #expect(!text.contains(Self.secret))
            #expect(!text.contains(Self.token))
            #expect(!text.contains("EXAMPLEKEY"))
        }
        #expect(temporary.description.contains("sessionToken: <redacted>"))

        let longTerm = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: Self.secret)
        #expect(longTerm.description == "AWSCredentials(accessKeyID: AKIDEXAMPLE, secretAccessKey: <redacted>, sessionToken: none)")
    }

    @Test func anEmptySessionTokenIsNone() {
        #expect(AWSCredentials(accessKeyID: "A", secretAccessKey: "S", sessionToken: "").sessionToken == nil)
    }

    @Test func staticProviderReturnsItsCredentials() async throws {
        let credentials = AWSCredentials(accessKeyID: "AK", secretAccessKey: "SK", sessionToken: "T")
        #expect(try await StaticCredentialsProvider(credentials).credentials() == credentials)
    }

    @Test func environmentProviderReadsTheUsualVariables() async throws {
        let longTerm = EnvironmentCredentialsProvider(environment: [
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": Self.secret,
        ])
        #expect(try await longTerm.credentials() == AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: Self.secret))

        let temporary = EnvironmentCredentialsProvider(environment: [
            "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": Self.secret, "AWS_SESSION_TOKEN": Self.token + "\n",
        ])
        #expect(
            try await temporary.credentials()
                == AWSCredentials(accessKeyID: "ASIAEXAMPLE", secretAccessKey: Self.secret, sessionToken: Self.token)
        )
    }

    @Test(arguments: [
        ([String: String](), "AWS_ACCESS_KEY_ID"),
        (["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "S"], "AWS_ACCESS_KEY_ID"),
        (["AWS_ACCESS_KEY_ID": "AK"], "AWS_SECRET_ACCESS_KEY"),
        (["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "  "], "AWS_SECRET_ACCESS_KEY"),
        (["AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"], "AWS_ACCESS_KEY_ID"),
    ])
    func environmentProviderNamesTheMissingVariable(_ environment: [String: String], _ missing: String) async {
        let error = await #expect(throws: AWSAuthError.self) {
            try await EnvironmentCredentialsProvider(environment: environment).credentials()
        }
        #expect(error == .missingEnvironmentVariable(missing))
        #expect(error?.description.contains(missing) == true)
        #expect(error?.description.contains("AWS_SESSION_TOKEN") == true)  // how to fix it
    }

    @Test func regionComesFromAWSRegionThenAWSDefaultRegion() throws {
        #expect(try AWSEnvironment.region(in: ["AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"]) == "eu-west-1")
        #expect(try AWSEnvironment.region(in: ["AWS_DEFAULT_REGION": "us-east-1"]) == "us-east-1")
        #expect(try AWSEnvironment.region(in: ["AWS_REGION": "", "AWS_DEFAULT_REGION": "us-east-2"]) == "us-east-2")
        #expect(throws: AWSAuthError.missingRegion) { try AWSEnvironment.region(in: [:]) }
        #expect(AWSAuthError.missingRegion.description.contains("AWS_REGION"))
        #expect(AWSAuthError.missingRegion.description.contains("AWS_DEFAULT_REGION"))
    }
}
