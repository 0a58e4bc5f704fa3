import Foundation
import Testing

@testable import AirlockCore

@Suite("type policy")
struct TypePolicyTests {
    let policy = TypePolicy(AirlockConfiguration.development.policy)

    @Test func harmlessDeclaredTypesOverDangerousBytesMismatch() {
        let executable = self.policy.blockReason(declaredType: "image/jpeg", detectedType: "application/vnd.microsoft.portable-executable")
        #expect(executable?.hasPrefix("type mismatch: declared image/jpeg but the content is an executable") == true)
        #expect(self.policy.blockReason(declaredType: "text/plain; charset=utf-8", detectedType: "text/x-shellscript")?.contains("a script") == true)
        #expect(self.policy.blockReason(declaredType: "video/mp4", detectedType: "application/zip")?.contains("an archive") == true)
        #expect(self.policy.blockReason(declaredType: "audio/ogg", detectedType: "application/msword")?.contains("macros") == true)
    }

    @Test func honestOrGenericDeclarationsDoNotMismatch() {
        #expect(self.policy.blockReason(declaredType: "application/octet-stream", detectedType: "application/zip") == nil)
        #expect(self.policy.blockReason(declaredType: "application/zip", detectedType: "application/zip") == nil)
        #expect(self.policy.blockReason(declaredType: "text/x-shellscript", detectedType: "text/x-shellscript") == nil)
        #expect(self.policy.blockReason(declaredType: nil, detectedType: "text/x-shellscript") == nil)
        #expect(self.policy.blockReason(declaredType: "image/png", detectedType: "image/png") == nil)
        // libmagic calls ~2% of random bytes "DOS executable (COM)": that weak type is neither blocked nor a mismatch.
        #expect(self.policy.blockReason(declaredType: "image/jpeg", detectedType: "application/x-dosexec") == nil)
    }

    @Test func blockedAndAllowedTypes() {
        #expect(
            self.policy.blockReason(declaredType: nil, detectedType: "application/x-executable")
                == "type application/x-executable is blocked by policy"
        )
        let imagesOnly = TypePolicy(allowedTypes: ["image/*"], blockOnTypeMismatch: false)
        #expect(imagesOnly.blockReason(declaredType: nil, detectedType: "image/webp") == nil)
        #expect(imagesOnly.blockReason(declaredType: nil, detectedType: "text/plain") == "type text/plain is not in policy.allowedTypes")
        let noMismatch = TypePolicy(blockOnTypeMismatch: false)
        #expect(noMismatch.blockReason(declaredType: "image/jpeg", detectedType: "application/vnd.microsoft.portable-executable") == nil)
    }

    /// Types are compared without parameters, surrounding blanks or case, as Foundation's trimming would leave them.
    @Test func typesAreNormalizedAsFoundationTrimsThem() {
        let samples = [
            "text/plain", "  Text/Plain ; charset=utf-8", "\timage/PNG\t", "\u{00A0}image/png\u{2003}", " ; x", "", ";", ";text/plain", ";;x", "a;;b",
            "application/vnd.ms-excel.sheet.macroEnabled.12 ", "\u{1680}a/b;c\u{3000}", " a b ", "\na/b\n", "É/É",
        ]
        for sample in samples {
            let bare = sample.split(separator: ";", maxSplits: 1).first.map(String.init) ?? sample
            #expect(TypePolicy.normalize(sample) == bare.trimmingCharacters(in: .whitespaces).lowercased(), "\(sample.debugDescription)")
        }
    }
}
