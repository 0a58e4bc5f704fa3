import Foundation

/// The UTC calendar fields of an instant, computed arithmetically: Foundation's and ICU's formatters cost more
/// than the rest of a hand-off's bookkeeping, and the hand-off writes several dates.
struct CivilTime {
    let year: Int64
    let month: Int64
    let day: Int64
    let hour: Int64
    let minute: Int64
    let second: Int64
    /// Milliseconds within the second.
    let millisecond: Int64

    /// Nil outside the years 1000–9999, which the fixed-width formats here cannot write.
    ///
    /// - Parameter rounding: how the instant becomes whole milliseconds: GRDB's stored dates round to the nearest,
    ///   while ISO 8601 in JSON drops the fraction of the second (``millisecond`` is then ignored).
    init?(_ date: Date, rounding: FloatingPointRoundingRule) {
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded(rounding)
        guard milliseconds.isFinite, abs(milliseconds) < 1e15 else { return nil }
        let total = Int64(milliseconds)
        let millisecondsPerDay: Int64 = 86_400_000
        let days = total >= 0 ? total / millisecondsPerDay : (total - millisecondsPerDay + 1) / millisecondsPerDay
        let inDay = total - days * millisecondsPerDay
        // The civil date of a day count (Howard Hinnant's `civil_from_days`).
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        self.day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        self.month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        self.year = yearOfEra + era * 400 + (self.month <= 2 ? 1 : 0)
        guard (1000...9999).contains(self.year) else { return nil }
        self.hour = inDay / 3_600_000
        self.minute = inDay / 60_000 % 60
        self.second = inDay / 1000 % 60
        self.millisecond = inDay % 1000
    }

    func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }

    /// `2026-11-22 07:41:12.987`: how GRDB stores a `Date` (UTC, milliseconds).
    var databaseString: String {
        let milliseconds = self.millisecond < 10 ? "00\(self.millisecond)" : self.millisecond < 100 ? "0\(self.millisecond)" : "\(self.millisecond)"
        return
            "\(self.year)-\(self.two(self.month))-\(self.two(self.day)) \(self.two(self.hour)):\(self.two(self.minute)):\(self.two(self.second)).\(milliseconds)"
    }
}
