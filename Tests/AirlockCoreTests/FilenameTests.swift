import AirlockCore
import Testing

/// Filename checks, including the inputs the fuzz target `Fuzz/Sources/FuzzFilename` found.
@Suite("filenames")
struct FilenameTests {
    @Test func servesTheLastComponent() throws {
        #expect(try Filename.served(from: "/home/alice/plan.odt") == "plan.odt")
        #expect(try Filename.served(from: "C:\\Users\\bob\\invoice.docx") == "invoice.docx")
        #expect(try Filename.served(from: "dir/") == "dir")
        #expect(try Filename.served(from: "re\u{301}sume\u{301}.pdf") == "re\u{301}sume\u{301}.pdf")
        for refused in ["", "..", "../..", "///", "a\0b", "a\u{85}b", String(repeating: "a", count: 256)] {
            #expect(throws: BrokerError.self) { try Filename.served(from: refused) }
        }
    }

    /// Printable ASCII takes a shorter way (cut on bytes): the same last component as anywhere else.
    @Test func asciiNamesKeepTheirLastComponent() throws {
        let cases = [
            "plain.txt": "plain.txt", " spaced name .txt": " spaced name .txt", "a\\b/c.tar.gz": "c.tar.gz",
            "x/./y": "y", "trailing/": "trailing", "~user/.profile": ".profile", "100%.txt": "100%.txt",
        ]
        for (name, served) in cases {
            #expect(try Filename.served(from: name) == served, "\(name)")
        }
        for refused in ["x/.", "x/..", "\\", "/", "del\u{7F}.txt", "tab\t.txt", "nl\n"] {
            #expect(throws: BrokerError.self, "\(refused.debugDescription)") { try Filename.served(from: refused) }
        }
    }

    /// Found by FuzzFilename: a combining mark after `/` or `\` joins it into one `Character`, so a split on
    /// characters kept the directory part (`dir/\u{301}x` was served whole, `../\u{301}etc` kept `../`).
    @Test func aCombiningMarkDoesNotHideADirectorySeparator() throws {
        #expect(try Filename.served(from: "dir/\u{301}name.txt") == "\u{301}name.txt")
        #expect(try Filename.served(from: "..\\\u{301}boot.ini") == "\u{301}boot.ini")
        #expect(try Filename.served(from: "../\u{301}etc") == "\u{301}etc")
    }

    @Test func percentEncodingRoundTrips() {
        for name in ["plain.txt", "résumé.pdf", "re\u{301}sume\u{301}", "a/b\\c", "100%", "\u{202E}txt.exe", "👩\u{200D}💻", "a\r\nb"] {
            let encoded = Filename.percentEncoded(name)
            #expect(encoded.utf8.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: " ") })
            #expect(Filename.percentDecoded(Substring(encoded)) == name)
        }
        #expect(Filename.percentEncoded("a b/é") == "a%20b%2F%C3%A9")
        #expect(Filename.percentDecoded("100%") == nil)
        // Found by FuzzFilename: Foundation's removingPercentEncoding drops a leading byte order mark.
        #expect(Filename.percentDecoded("%EF%BB%BFname.txt") == "\u{FEFF}name.txt")
        #expect(Filename.percentDecoded("%e2%80%aetxt.exe") == "\u{202E}txt.exe")
        // Found by FuzzXEP0363Path: it also turned a stray continuation byte into U+FFFD instead of refusing it.
        #expect(Filename.percentDecoded("r%C3%A9sum%A9.pdf") == nil)
        #expect(Filename.percentDecoded("%FF") == nil)
    }
}
