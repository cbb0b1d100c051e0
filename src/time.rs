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
    env!("COUPOND_BUILD_TIME").parse().unwrap_or(0)
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

/// A calendar date (proleptic Gregorian), as `--date` and the report name a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// `YYYY-MM-DD`, a real day of a real month.
    pub fn parse(v: &str) -> Result<Date, String> {
        let bad = || format!("{v:?} is not a date: want YYYY-MM-DD, such as 2026-12-04");
        let mut parts = v.trim().splitn(3, '-');
        let mut num = |len: usize| -> Result<i64, String> {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (year, month, day) = (num(4)?, num(2)?, num(2)?);
        let date = Date {
            year,
            month: month as u32,
            day: day as u32,
        };
        // A day that does not exist (2026-02-30) comes back from the day count as
        // another date.
        if !(1..=12).contains(&month) || Date::from_days(date.days()) != date {
            return Err(bad());
        }
        Ok(date)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    pub fn from_days(days: i64) -> Date {
        let (year, month, day) = civil_from_days(days);
        Date { year, month, day }
    }

    pub fn next(self) -> Date {
        Date::from_days(self.days() + 1)
    }

    pub fn prev(self) -> Date {
        Date::from_days(self.days() - 1)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A local time of day, `HH:MM` (`--day-starts`, `--report-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
}

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay { hour: 0, minute: 0 };

    pub fn parse(v: &str) -> Result<TimeOfDay, String> {
        let bad = || format!("{v:?} is not a time of day: want HH:MM (24-hour), such as 04:00");
        let (h, m) = v.trim().split_once(':').ok_or_else(bad)?;
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (hour, minute) = (num(h)?, num(m)?);
        if hour > 23 || minute > 59 || m.len() != 2 {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// An instant as the box's clock on the wall shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub date: Date,
    pub time: TimeOfDay,
    pub second: u32,
    /// Seconds east of UTC at that instant (`+08:00` is 28,800).
    pub offset: i64,
}

/// `unix_secs` in the box's local time zone (`localtime_r`: `TZ`, else
/// `/etc/localtime`), or `None` if the C library cannot place it.
pub fn local(unix_secs: i64) -> Option<Local> {
    let t = unix_secs as libc::time_t;
    // SAFETY: `tm` is plain data that `localtime_r` fills in; both pointers are valid for
    // the call and `localtime_r` is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm).is_null() } {
        return None;
    }
    Some(Local {
        date: Date {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
        },
        time: TimeOfDay {
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
        },
        second: tm.tm_sec as u32,
        offset: tm.tm_gmtoff as i64,
    })
}

/// The instant the box's clock shows `date` `time` (`mktime`, which knows the zone's
/// daylight saving rules). A time that does not exist that day (skipped when the clocks
/// go forward) comes out as the C library moves it, an hour on; one that happens twice
/// (clocks go back) as one of the two.
pub fn from_local(date: Date, time: TimeOfDay) -> Option<i64> {
    // SAFETY: `tm` is plain data; `mktime` reads and normalises it in place.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::try_from(date.year - 1900).ok()?;
    tm.tm_mon = date.month as i32 - 1;
    tm.tm_mday = date.day as i32;
    tm.tm_hour = time.hour as i32;
    tm.tm_min = time.minute as i32;
    // Not known: let the zone's rules say whether daylight saving time applies.
    tm.tm_isdst = -1;
    let t = unsafe { libc::mktime(&mut tm) };
    // -1 is also one second before 1970, never a day that a store reports on.
    (t != -1).then_some(t as i64)
}

/// `unix_secs` as RFC 3339 in the box's local time with its offset, such as
/// `2026-12-04T04:00:00+08:00`.
pub fn rfc3339_local(unix_secs: i64) -> String {
    let Some(l) = local(unix_secs) else {
        return rfc3339_millis(unix_secs.saturating_mul(1000));
    };
    let sign = if l.offset < 0 { '-' } else { '+' };
    let off = l.offset.abs();
    format!(
        "{}T{}:{:02}{sign}{:02}:{:02}",
        l.date,
        l.time,
        l.second,
        off / 3600,
        off / 60 % 60
    )
}

/// The business day `date` that starts at local time `starts` (`--day-starts`): from
/// then to the same local time the next day, `[from, to)` in Unix seconds. Across a
/// daylight saving change that is 23 or 25 hours.
pub fn business_day(date: Date, starts: TimeOfDay) -> Option<(i64, i64)> {
    Some((from_local(date, starts)?, from_local(date.next(), starts)?))
}

/// The business day in progress at `unix_secs`.
pub fn business_date_at(unix_secs: i64, starts: TimeOfDay) -> Option<Date> {
    let l = local(unix_secs)?;
    let mut date = if l.time < starts {
        l.date.prev()
    } else {
        l.date
    };
    // A start time the clocks skip that day moves (see `from_local`): the window, not
    // the wall clock, decides.
    let (from, to) = business_day(date, starts)?;
    if unix_secs < from {
        date = date.prev();
    } else if unix_secs >= to {
        date = date.next();
    }
    Some(date)
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
    fn dates_parse_count_and_step() {
        let d = Date::parse("2026-12-04").unwrap();
        assert_eq!(d.to_string(), "2026-12-04");
        assert_eq!(Date::from_days(d.days()), d);
        assert_eq!(
            Date::parse("2024-02-28").unwrap().next().to_string(),
            "2024-02-29"
        );
        assert_eq!(
            Date::parse("2026-01-01").unwrap().prev().to_string(),
            "2025-12-31"
        );
        assert_eq!(Date::parse("1970-01-01").unwrap().days(), 0);
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-00",
            "x",
            "",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        for days in -800_000..800_000 {
            let d = Date::from_days(days);
            assert_eq!(d.days(), days);
        }
    }

    #[test]
    fn times_of_day_parse() {
        assert_eq!(
            TimeOfDay::parse("04:00").unwrap(),
            TimeOfDay { hour: 4, minute: 0 }
        );
        assert_eq!(TimeOfDay::parse("4:05").unwrap().to_string(), "04:05");
        assert_eq!(TimeOfDay::parse("23:59").unwrap().to_string(), "23:59");
        for bad in [
            "24:00", "12:60", "12", "12:5", "-1:00", "12:00:00", "ab:cd", "",
        ] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
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
