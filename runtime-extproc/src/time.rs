//! Times as providers and clients write them: RFC 3339 text parsed into a [`SystemTime`] or
//! whole Unix seconds (credential expiry times, response creation times), and Unix seconds
//! written as RFC 3339 UTC (model creation times). Dates are proleptic Gregorian; a time
//! before 1970 has no value here.

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 timestamp: `2025-01-02T03:04:05Z`, with an optional fraction of any
/// length (kept to the nanosecond) and a `Z` or `±hh:mm` offset. `T` may be `t` or a space and
/// `Z` may be `z`; a leap second (`:60`) counts as `:59`. Surrounding white space, an impossible
/// date, a missing offset or trailing text make it `None`, as does a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let at = |i: usize| text.as_bytes().get(i).copied();
    let year = number(0, 4)?;
    let month = number(5, 7)?;
    let day = number(8, 10)?;
    let hour = number(11, 13)?;
    let minute = number(14, 16)?;
    let second = number(17, 19)?;
    if at(4) != Some(b'-')
        || at(7) != Some(b'-')
        || !matches!(at(10), Some(b'T' | b't' | b' '))
        || at(13) != Some(b':')
        || at(16) != Some(b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return None;
        }
        let digits = fraction.get(..count)?;
        for (i, b) in digits.bytes().take(9).enumerate() {
            nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = fraction.get(count..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = rest.get(1..)?;
            let (h, m) = zone.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset;
    let seconds = u64::try_from(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Whole seconds since the epoch of an RFC 3339 timestamp (see [`parse_rfc3339`]); the
/// fraction is dropped.
pub fn rfc3339_unix_seconds(text: &str) -> Option<u64> {
    parse_rfc3339(text)?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|elapsed| elapsed.as_secs())
}

/// Whole seconds since the epoch now (0 should the clock read a time before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// RFC 3339 (UTC, whole seconds: `2025-01-01T00:00:00Z`) of Unix seconds.
pub fn format_rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a number of days since 1970-01-01 (the
/// inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn rfc3339_in_utc_and_with_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z"), at(1_709_210_096, 0));
        assert_eq!(parse_rfc3339("2024-06-20T15:04:05Z"), at(1_718_895_845, 0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00z"), at(951_868_800, 0));
        assert_eq!(parse_rfc3339("2100-12-31T23:59:59Z"), at(4_133_980_799, 0));
        assert_eq!(parse_rfc3339("2099-01-01T00:00:00Z"), at(4_070_908_800, 0));
        assert_eq!(
            parse_rfc3339("2014-10-02t17:01:23+02:00"),
            at(1_412_262_083, 0)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T10:31:23-04:30"),
            at(1_412_262_083, 0)
        );
        assert_eq!(
            parse_rfc3339("2024-06-20T17:04:05+02:00"),
            at(1_718_895_845, 0)
        );
        assert_eq!(
            parse_rfc3339("2024-06-20T10:04:05-05:00"),
            at(1_718_895_845, 0)
        );
        assert_eq!(parse_rfc3339("2024-06-20 15:04:05Z"), at(1_718_895_845, 0));
        // A leap second counts as the last second of its minute.
        assert_eq!(parse_rfc3339("2016-12-31T23:59:60Z"), at(1_483_228_799, 0));
    }

    #[test]
    fn rfc3339_fractions_are_kept_to_the_nanosecond() {
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.045123456Z"),
            at(1_412_262_083, 45_123_456)
        );
        assert_eq!(
            parse_rfc3339("2014-10-02T15:01:23.5Z"),
            at(1_412_262_083, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T08:30:00.250Z"),
            at(1_709_195_400, 250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T08:30:00.1234567891234+00:00"),
            at(1_709_195_400, 123_456_789)
        );
    }

    #[test]
    fn what_is_not_rfc3339_is_refused() {
        for bad in [
            "",
            " 2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z ",
            "2024-06-20",
            "2025-06-01 10:00",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:61Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01 00:00:00+0100",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01:60",
            "2024/01/01T00:00:00Z",
            "2025-06-01T10-00-00Z",
            "2024-01-01X00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:00Zjunk",
            "२०२४-01-01T00:00:00Z",
            "2025-0é-01T10:00:00Z",
            "1718895845",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_unix_seconds_drop_the_fraction() {
        assert_eq!(rfc3339_unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_unix_seconds("2025-03-26T05:13:28.963526Z"),
            Some(1_742_966_008)
        );
        assert_eq!(
            rfc3339_unix_seconds("2024-02-29T23:59:59Z"),
            Some(1_709_251_199)
        );
        assert_eq!(
            rfc3339_unix_seconds("2025-06-01T12:30:00+02:00"),
            Some(1_748_773_800)
        );
        assert_eq!(
            rfc3339_unix_seconds("2025-06-01T08:30:00-01:30"),
            Some(1_748_772_000)
        );
        assert_eq!(rfc3339_unix_seconds("1969-12-31T23:59:59Z"), None);
        assert_eq!(rfc3339_unix_seconds("2025-13-01T00:00:00Z"), None);
    }

    #[test]
    fn unix_seconds_are_formatted_in_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_412_262_083), "2014-10-02T15:01:23Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn now_is_after_2024() {
        assert!(unix_now() > 1_704_067_200);
    }

    #[test]
    fn formatted_times_parse_back() {
        for seconds in [0, 59, 86_399, 951_868_800, 1_709_251_199, 4_133_980_799] {
            let text = format_rfc3339(seconds);
            assert_eq!(
                rfc3339_unix_seconds(&text),
                u64::try_from(seconds).ok(),
                "{text}"
            );
        }
    }
}
