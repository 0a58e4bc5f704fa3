import AirlockCore
import Testing

/// XEP-0363 upload paths, including the inputs the fuzz target `Fuzz/Sources/FuzzXEP0363Path` found.
@Suite("XEP-0363 paths")
struct XEP0363PathTests {
    @Test func parsesSlotAndFilename() throws {
        let path = try XEP0363Path.parse("/upload/slot/r%C3%A9sum%C3%A9+1.txt", prefix: "/upload/")
        #expect(path.segments == ["slot", "résumé+1.txt"])
        #expect(path.path == "slot/résumé+1.txt")
        #expect(path.filename == "résumé+1.txt")
        #expect(throws: XEP0363Path.Error.outsidePrefix) { try XEP0363Path.parse("/uploads/slot/x", prefix: "/upload/") }
        #expect(throws: XEP0363Path.Error.notSlotAndFilename) { try XEP0363Path.parse("/upload/x", prefix: "/upload/") }
        for invalid in [
            "/upload/s/..", "/upload/s/%2e%2E", "/upload/s//x", "/upload/s/a%2Fb", "/upload/s/a%00", "/upload/s/%FF", "/upload/s/a%A9",
            "/upload/s/1%",
        ] {
            #expect(throws: XEP0363Path.Error.invalidSegment) { try XEP0363Path.parse(invalid, prefix: "/upload/") }
        }
    }

    /// Found by FuzzXEP0363Path: `%2F` followed by a combining mark decodes to one `Character` that is not "/",
    /// so a segment could hold a slash; and a raw combining mark after a `/` hid that separator from the split.
    @Test func aCombiningMarkDoesNotHideASlash() throws {
        #expect(throws: XEP0363Path.Error.invalidSegment) { try XEP0363Path.parse("/upload/slot/a%2F%CC%81b.txt", prefix: "/upload/") }
        #expect(throws: XEP0363Path.Error.invalidSegment) { try XEP0363Path.parse("/upload/slot/..%2F%E2%83%9D", prefix: "/upload/") }
        let raw = try XEP0363Path.parse("/upload/slot/\u{301}x.txt", prefix: "/upload/")
        #expect(raw.segments == ["slot", "\u{301}x.txt"])
        #expect(try XEP0363Path.parse("/upload/slot/%EF%BB%BFx.txt", prefix: "/upload/").filename == "\u{FEFF}x.txt")
        let afterPrefix = try XEP0363Path.parse("/upload/\u{301}slot/x.txt", prefix: "/upload/")
        #expect(afterPrefix.segments == ["\u{301}slot", "x.txt"])
    }

    @Test func signaturesFollowTheDesignFormulas() {
        let signer = XEP0363Signature(secret: "fuzz-xep0363-secret-0123456789abcdef")
        // Computed with Python's hmac module from the DESIGN §3 formulas.
        let v1 = signer.expected(.v1, path: "slot/photo.jpg", length: 1234, contentType: "image/jpeg")
        let v2 = signer.expected(.v2, path: "slot/photo.jpg", length: 1234, contentType: "image/jpeg")
        #expect(v1 == "b4e8e0a416b1f3e468b5deb440f55edd7d67b4c3bce4e3ca439f8b3d2318bc34")
        #expect(v2 == "86b1203a550a47c3662ce8da11a6a29abd991d86d820673bbae90d0bbe3769b4")
        #expect(signer.isValid(v2.uppercased(), .v2, path: "slot/photo.jpg", length: 1234, contentType: "image/jpeg"))
        #expect(!signer.isValid(v2, .v1, path: "slot/photo.jpg", length: 1234, contentType: "image/jpeg"))
        #expect(!signer.isValid(v1, .v1, path: "slot/photo.jpg", length: 1235, contentType: "image/jpeg"))
        #expect(XEP0363Signature.presented(v: "a", v2: "b", token: "c")?.signature == "b")
        #expect(XEP0363Signature.presented(v: "a", v2: nil, token: "c")?.version == .v2)
        #expect(XEP0363Signature.presented(v: "a", v2: nil, token: nil)?.version == .v1)
        #expect(XEP0363Signature.presented(v: nil, v2: nil, token: nil) == nil)
    }
}
