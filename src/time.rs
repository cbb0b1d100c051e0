//! Wall-clock formatting without a date crate.
//!
//! The database stores times as RFC 3339 UTC text with milliseconds (SPEC §5), which
//! sorts as text and reads well in `sqlite3`. Receipts show the box's local time, taken
//! from the C library (`localtime_r`), so it follows `/etc/localtime` and `TZ` exactly as
//! every other program on the box does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// The current time as RFC 3339 UTC text, e.g. `2026-11-23T08:15:00.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now_millis())
}

/// `unix_ms` as RFC 3339 UTC text with milliseconds.
pub fn rfc3339_millis(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Unix seconds at build time (see `build.rs`): the earliest sane clock. Catch-up and
/// scheduled work wait while the clock says earlier (a box without its NTP time yet).
pub fn build_time() -> i64 {
    env!("BUILD_TIME_OF_COUPOND").parse().unwrap_or(0)
}

/// The box's UTC offset in seconds at `unix_secs` (`localtime_r`'s `tm_gmtoff`: the
/// local time zone, DST included, as every other program on the box sees it).
pub fn utc_offset(unix_secs: i64) -> i64 {
    let t = unix_secs as libc::time_t;
    // SAFETY: as in `local_datetime`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff as i64
    } else {
        0
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `unix_secs` in the box's local time zone, as `2026-11-23 16:15:00`.
pub fn local_datetime(unix_secs: i64) -> String {
    let t = unix_secs as libc::time_t;
    // SAFETY: `tm` is plain data that `localtime_r` fills in; both pointers are valid for
    // the call and `localtime_r` is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return rfc3339_millis(unix_secs.saturating_mul(1000));
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `unix_secs` as RFC 3339 in the box's local time with its offset, such as
/// `2026-12-04T04:00:00+08:00`.
pub fn rfc3339_local(unix_secs: i64) -> String {
    let offset = utc_offset(unix_secs);
    let local = unix_secs + offset;
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
    let tod = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        off / 3600,
        off / 60 % 60
    )
}

/// Year, month, day of the proleptic Gregorian calendar for a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Sleeps until `at`, or for ever (a timer that may not be set, in a `select!`).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_665_991_178_000, "2022-10-17T07:19:38.000Z"),
            (951_782_400_123, "2000-02-29T00:00:00.123Z"),
            (1_795_421_700_999, "2026-11-23T08:15:00.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339_millis(ms), want, "for {ms}");
        }
    }

    #[test]
    fn local_time_has_the_expected_shape() {
        let s = local_datetime(1_665_991_178);
        assert_eq!(s.len(), 19, "{s}");
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], " ");
    }
}
