import AirlockTestSupport
import Foundation
import LibMagic
import Testing

@Suite("libmagic pool")
struct MagicPoolTests {
    let pool: MagicPool

    init() throws {
        self.pool = try MagicPool()
    }

    private func identify(_ data: Data) throws -> FileType {
        try data.withUnsafeBytes { try self.pool.identify($0) }
    }

    @Test func identifiesCommonTypes() throws {
        #expect(try self.identify(Fixtures.png).mimeType == "image/png")
        #expect(try self.identify(Fixtures.png).description?.hasPrefix("PNG image data, 1 x 1") == true)
        #expect(try self.identify(Data("plain words\n".utf8)).mimeType == "text/plain")
        #expect(try self.identify(Fixtures.portableExecutable).mimeType == "application/vnd.microsoft.portable-executable")
        #expect(try self.identify(Data()).mimeType == "application/x-empty")
    }

    @Test func concurrentCallersGetTheirOwnAnswers() async throws {
        let inputs = [Fixtures.png, Data("plain words\n".utf8), Fixtures.portableExecutable]
        let expected = try inputs.map { try self.identify($0).mimeType }
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for index in 0..<96 {
                group.addTask { (index, try self.identify(inputs[index % inputs.count]).mimeType) }
            }
            for try await (index, mimeType) in group {
                #expect(mimeType == expected[index % inputs.count])
            }
        }
    }
}
