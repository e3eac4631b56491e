import Foundation
@testable import MemoryBench
import ProcessRunner
import Testing

extension MemoryWorkloadTests {
    /// What a store filled with the demo's users really holds, against its byte bound:
    /// measured by `MemoryBench footprint` in a process of its own (the allocator's
    /// in-use bytes around the fill; in this process the other tests allocate meanwhile).
    @Suite struct FootprintTests {
        /// The MemoryBench executable built next to this test bundle.
        static var benchPath: String {
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("MemoryBench").path
        }

        #if os(Linux)
        @Test func aHundredThousandDemoUsersHoldWithinAFifthOfTheByteBound() async throws {
            let bound = 16 << 20
            let path = Self.benchPath
            #expect(FileManager.default.isExecutableFile(atPath: path), "MemoryBench is not built next to the tests")
            let outcome = try await ProcessRunner.run(
                path, ["footprint", "--users", "100000", "--bytes", String(bound), "--json"])
            #expect(outcome.status == 0, "\(outcome.standardError)")
            let result = try JSONDecoder().decode(FootprintResult.self, from: Data(outcome.standardOutput.utf8))
            print("footprint: \(result)")
            #expect(result.entries < result.users)  // the bound binds
            #expect(result.accountedBytes <= bound)
            #expect(result.heapToBound >= 0.8 && result.heapToBound <= 1.2, "\(result)")
        }
        #endif
    }
}
