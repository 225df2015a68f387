//! Microsecond timestamps as calendar text (proleptic Gregorian, UTC), without a time library:
//! ERP payload dates and export timestamps.

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's civil-from-days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD` of a timestamp in microseconds since the epoch.
pub fn date_of_micros(micros: i64) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(86_400_000_000));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` of a timestamp in microseconds since the epoch.
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_render_in_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_709_251_199_123_456),
            "2024-02-29T23:59:59.123456Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(date_of_micros(1_709_251_199_123_456), "2024-02-29");
        assert_eq!(date_of_micros(-1), "1969-12-31");
        assert_eq!(date_of_micros(951_782_400_000_000), "2000-02-29");
    }
}
