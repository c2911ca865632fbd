//! Timestamp spellings used on the wire and on the page. Everything is written in UTC.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `2024-05-01T14:22:39.441Z`: what Statuspage writes for an `Etc/UTC` page (RFC 3339 with
/// milliseconds), so clients that parse its exact shape read ours.
const API: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2024-05-01T14:22:39Z`: RFC 3339 for Atom.
const ATOM: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `May 1, 2024 14:22 UTC`: for people.
const HUMAN: &[BorrowedFormatItem<'static>] =
    format_description!("[month repr:short] [day padding:none], [year] [hour]:[minute] UTC");

pub(crate) fn api(t: OffsetDateTime) -> String {
    format(t, API)
}

pub(crate) fn atom(t: OffsetDateTime) -> String {
    format(t, ATOM)
}

pub(crate) fn human(t: OffsetDateTime) -> String {
    format(t, HUMAN)
}

fn format(t: OffsetDateTime, items: &[BorrowedFormatItem<'_>]) -> String {
    // Formatting fails only if a component is missing from the value or the writer fails;
    // an OffsetDateTime has every component and a String never fails to grow. Years past
    // 9999 would need a sign, which the descriptions above do not request, so those are the
    // one case `time` could refuse: fall back to its own RFC 3339-like Display there.
    let utc = t.to_offset(UtcOffset::UTC);
    utc.format(items).unwrap_or_else(|_| utc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn api_format_is_utc_with_milliseconds() {
        assert_eq!(api(datetime!(2024-05-01 14:22:39.441 UTC)), "2024-05-01T14:22:39.441Z");
        assert_eq!(api(datetime!(2024-05-01 14:22:39 UTC)), "2024-05-01T14:22:39.000Z");
        // Another offset is converted, not relabelled.
        assert_eq!(api(datetime!(2024-05-01 06:00:00 -08:00)), "2024-05-01T14:00:00.000Z");
    }

    #[test]
    fn atom_and_human_formats() {
        assert_eq!(atom(datetime!(2024-05-01 14:22:39.9 UTC)), "2024-05-01T14:22:39Z");
        assert_eq!(human(datetime!(2024-05-01 04:02:00 UTC)), "May 1, 2024 04:02 UTC");
    }
}
