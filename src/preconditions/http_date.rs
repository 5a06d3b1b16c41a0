//! HTTP-date (RFC 9110 §5.6.7) as whole seconds since the Unix epoch.
//!
//! `httpdate` parses the three formats a recipient MUST accept (IMF-fixdate, RFC 850, asctime)
//! case-sensitively and checks the weekday. We add two things: the RFC 850 two-digit-year rule
//! of §5.6.7 (httpdate pivots at 1970 instead of "50 years from now"), and truncation to whole
//! seconds, because HTTP-date has one-second resolution and a sub-second `updated_at` would
//! otherwise never equal the date a client echoes back (the bug of actix-web PR #1887).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::HeaderValue;

/// Parses an HTTP-date in any of the three formats. `None` for anything that is not one.
///
/// The result is whole seconds; years before 1970 or after 9999 are not representable and
/// count as invalid (an invalid date is ignored by the precondition rules, RFC 9110 §13.1.3-4).
pub fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(super::entity_tag::trim_ows(value)).ok()?;
    if let Some(fixed) = rfc850_as_imf_fixdate(text, SystemTime::now()) {
        return httpdate::parse_http_date(&fixed).ok();
    }
    httpdate::parse_http_date(text).ok()
}

/// Reads a conditional date header (`If-Modified-Since`, `If-Unmodified-Since`).
///
/// Returns `None`, meaning "ignore the header", unless it has exactly one field line holding
/// one valid date (RFC 9110 §13.1.3: a recipient MUST ignore an invalid or multi-member value).
pub(crate) fn single_date<'a>(mut lines: impl Iterator<Item = &'a HeaderValue>) -> Option<u64> {
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse_http_date(line.as_bytes()).map(unix_seconds)
}

/// Whole seconds since the epoch; times before it count as the epoch.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Drops the sub-second part of a time, so it compares equal to its own HTTP-date.
pub fn truncate_to_seconds(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds(time))
}

/// Rewrites `Sunday, 06-Nov-94 08:49:37 GMT` to IMF-fixdate with the century chosen by
/// RFC 9110 §5.6.7: a two-digit year that appears more than 50 years in the future is the most
/// recent past year with the same last two digits. `None` if `text` is not RFC 850 shaped.
fn rfc850_as_imf_fixdate(text: &str, now: SystemTime) -> Option<String> {
    let (weekday, rest) = text.split_once(", ")?;
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let weekday = DAYS.iter().find(|d| **d == weekday)?;
    // `06-Nov-94 08:49:37 GMT`
    let bytes = rest.as_bytes();
    if bytes.len() != 22 || bytes[2] != b'-' || bytes[6] != b'-' {
        return None;
    }
    let two_digits = rest.get(7..9)?;
    if !two_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let yy: u64 = two_digits.parse().ok()?;
    let this_year = 1970 + unix_seconds(now) / 31_556_952; // mean Gregorian year
    let mut year = this_year / 100 * 100 + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    Some(format!(
        "{}, {} {} {year} {}",
        &weekday[..3],
        rest.get(0..2)?,
        rest.get(3..6)?,
        rest.get(10..)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH_1994: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn accepts_all_three_formats() {
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let parsed = parse_http_date(text.as_bytes()).expect(text);
            assert_eq!(unix_seconds(parsed), EPOCH_1994, "{text}");
        }
    }

    #[test]
    fn dates_are_case_sensitive() {
        assert!(parse_http_date(b"sun, 06 nov 1994 08:49:37 gmt").is_none());
    }

    #[test]
    fn invalid_dates_are_none() {
        for bad in [
            &b""[..],
            b"yesterday",
            b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            b"Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 06 Nov 0000 08:49:37 GMT",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"\xff\xfe",
        ] {
            assert!(parse_http_date(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rfc850_year_more_than_50_years_ahead_is_last_century() {
        let now_2026 = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // Nov 2026
        let fixed = |s| rfc850_as_imf_fixdate(s, now_2026).unwrap();
        assert_eq!(
            fixed("Sunday, 06-Nov-94 08:49:37 GMT"),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        // 2076 is exactly 50 years ahead: kept. 2077 is more: 1977.
        assert!(fixed("Friday, 06-Nov-76 08:49:37 GMT").contains(" 2076 "));
        assert!(fixed("Saturday, 06-Nov-77 08:49:37 GMT").contains(" 1977 "));
        assert!(fixed("Monday, 06-Nov-26 08:49:37 GMT").contains(" 2026 "));
    }

    #[test]
    fn truncation_drops_sub_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(EPOCH_1994 * 1000 + 999);
        assert_eq!(
            truncate_to_seconds(t),
            UNIX_EPOCH + Duration::from_secs(EPOCH_1994)
        );
    }

    #[test]
    fn two_field_lines_are_ignored() {
        let a = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(single_date([&a].into_iter()), Some(EPOCH_1994));
        assert_eq!(single_date([&a, &a].into_iter()), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_http_date(&bytes);
            }

            #[test]
            fn date_shaped_noise_never_panics(s in "[A-Za-z]{0,9}, [0-9]{1,3}[- ][A-Za-z]{3}[- ][0-9]{1,5} [0-9:]{0,9} (GMT)?") {
                let _ = parse_http_date(s.as_bytes());
            }

            #[test]
            fn formatted_dates_round_trip(secs in 0u64..253_402_300_799) {
                let time = UNIX_EPOCH + Duration::from_secs(secs);
                let text = httpdate::fmt_http_date(time);
                prop_assert_eq!(parse_http_date(text.as_bytes()), Some(time));
            }
        }
    }
}
