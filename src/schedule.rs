//! Work at a local time of day (the end-of-day report's `--report-at`, and the next
//! daily jobs): when a daily job runs next, in the box's time zone, and a wait for it
//! that survives clock changes.
//!
//! - The time zone is the box's (`localtime_r`, through [`BoxZone`]), as receipts show
//!   it; the rules below only ask a [`Zone`] for its UTC offset at an instant, so they
//!   are tested with made-up daylight-saving zones.
//! - DST: a time the clock skips (02:30 on a spring-forward night) runs when the clock
//!   jumps past it; a time the clock shows twice (fall back) runs at the first. A job
//!   runs once per local date: the caller says which date it last ran for, and the next
//!   run is for a later date, never the second 02:30 of the same night.
//! - A run that was due while the daemon was down is due at once (the caller decides
//!   whether to catch up, as SPEC §15 asks for the report).
//! - The wait reads the wall clock again at least every minute, so an NTP step or a
//!   suspend moves the wake-up with it, and waits first for a sane clock (not before
//!   this build), as catch-up does.

use std::time::Duration;

use crate::shutdown::{self, Stop};
use crate::time;

/// A local time of day, `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        (hour < 24 && minute < 60).then_some(TimeOfDay { hour, minute })
    }

    /// `HH:MM` (24-hour clock), e.g. `21:30`.
    pub fn parse(s: &str) -> Result<TimeOfDay, String> {
        let bad = || format!("{s:?} is not a time of day: use HH:MM, e.g. 21:30");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        TimeOfDay::new(h, m).ok_or_else(bad)
    }

    /// Seconds since midnight.
    pub fn secs(self) -> i64 {
        i64::from(self.hour) * 3600 + i64::from(self.minute) * 60
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A local calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let (year, month, day) = time::civil_from_days(days);
        Date { year, month, day }
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        time::days_from_civil(self.year, self.month, self.day)
    }

    /// The next day.
    pub fn succ(self) -> Date {
        Date::from_days(self.days() + 1)
    }

    /// The day before.
    pub fn pred(self) -> Date {
        Date::from_days(self.days() - 1)
    }

    /// `YYYY-MM-DD`, or a line saying what a date looks like (`--date`).
    pub fn parse_arg(s: &str) -> Result<Date, String> {
        Date::parse(s)
            .ok_or_else(|| format!("{s:?} is not a date: want YYYY-MM-DD, such as 2026-12-04"))
    }

    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.trim().splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let (month, day) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
        let date = Date { year, month, day };
        (s.trim().len() == 10 && Date::from_days(date.days()) == date).then_some(date)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A time zone: its UTC offset at each instant.
pub trait Zone {
    /// Seconds east of UTC at `unix` (DST included).
    fn offset(&self, unix: i64) -> i64;

    /// The local date at `unix`.
    fn date(&self, unix: i64) -> Date {
        Date::from_days((unix + self.offset(unix)).div_euclid(86_400))
    }

    /// The first instant the local clock reads `at` on `date`; if the clock skips it
    /// (spring forward), the instant it jumps past it.
    fn instant(&self, date: Date, at: TimeOfDay) -> i64 {
        let naive = date.days() * 86_400 + at.secs();
        // Transitions are hours apart and at most a few a year: the offsets half a day
        // either side are the only ones that can apply.
        let mut fits: Vec<i64> = [-43_200, 0, 43_200]
            .into_iter()
            .map(|d| naive - self.offset(naive + d))
            .filter(|u| naive - *u == self.offset(*u))
            .collect();
        fits.sort_unstable();
        match fits.first() {
            Some(u) => *u,
            None => self.gap_end(naive),
        }
    }

    /// In a gap (no instant reads `naive` local): the first instant after it.
    fn gap_end(&self, naive: i64) -> i64 {
        let (mut lo, mut hi) = (naive - 43_200, naive + 43_200);
        let before = self.offset(lo);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset(mid) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// The box's time zone (`/etc/localtime`, `TZ`), through the C library.
pub struct BoxZone;

impl Zone for BoxZone {
    fn offset(&self, unix: i64) -> i64 {
        time::utc_offset(unix)
    }
}

/// The next run of a job daily at `at`, as (its local date, when, Unix seconds): the
/// first date after `done` (the date it last ran for; `None`: never), not before
/// today. The instant may be past: a run missed while the daemon was down is due now.
pub fn next_run(zone: &impl Zone, at: TimeOfDay, now: i64, done: Option<Date>) -> (Date, i64) {
    let today = zone.date(now);
    let date = match done {
        Some(d) if d >= today => d.succ(),
        _ => today,
    };
    (date, zone.instant(date, at))
}

/// How long to sleep before looking at the clock again.
const RECHECK: Duration = Duration::from_secs(60);

/// Waits until the wall clock reaches `due` (Unix seconds): first for a sane clock (not
/// before this build), then in steps of at most a minute. `false` if stopped first.
pub async fn wait_until(due: i64, stop: &mut Stop) -> bool {
    let mut warned = false;
    loop {
        let now = time::now_secs();
        let nap = if now < time::build_time() {
            if !warned {
                log::warn!(
                    "schedule: waiting for a sane clock (it says {}, before this build); is NTP running?",
                    time::rfc3339_millis(now * 1000)
                );
                warned = true;
            }
            Duration::from_secs(5)
        } else if now >= due {
            return true;
        } else {
            Duration::from_secs((due - now) as u64).min(RECHECK)
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown::stopped(stop) => return false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zone 1 h east of UTC, 2 h during `[dst_from, dst_to)`.
    pub(crate) struct Dst {
        dst_from: i64,
        dst_to: i64,
    }

    impl Zone for Dst {
        fn offset(&self, unix: i64) -> i64 {
            if (self.dst_from..self.dst_to).contains(&unix) {
                7200
            } else {
                3600
            }
        }
    }

    pub(crate) struct Fixed(pub(crate) i64);

    impl Zone for Fixed {
        fn offset(&self, _: i64) -> i64 {
            self.0
        }
    }

    pub(crate) fn date(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    pub(crate) fn at(s: &str) -> TimeOfDay {
        TimeOfDay::parse(s).unwrap()
    }

    /// The Unix time of a UTC date and time.
    pub(crate) fn utc(d: &str, t: &str) -> i64 {
        date(d).days() * 86_400 + at(t).secs()
    }

    // 2026-03-29: 02:00 local (01:00 UTC) jumps to 03:00; 2026-10-25: 03:00 local
    // (01:00 UTC) falls back to 02:00.
    pub(crate) fn europe() -> Dst {
        Dst {
            dst_from: utc("2026-03-29", "01:00"),
            dst_to: utc("2026-10-25", "01:00"),
        }
    }

    #[test]
    fn times_and_dates_parse_strictly() {
        assert_eq!(at("21:30").to_string(), "21:30");
        assert_eq!(at("7:05").to_string(), "07:05");
        for bad in ["24:00", "12:60", "1230", "12:3", "", "ab:cd", "-1:00"] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(date("2028-02-29").succ(), date("2028-03-01"));
        assert_eq!(date("2026-12-31").succ(), date("2027-01-01"));
        assert!(Date::parse("2026-02-29").is_none() && Date::parse("2026-2-1").is_none());
    }

    #[test]
    fn a_daily_job_runs_today_if_not_yet_done_else_tomorrow() {
        let shanghai = Fixed(8 * 3600);
        let now = utc("2026-12-05", "12:00"); // 20:00 in Shanghai
        let (d, when) = next_run(&shanghai, at("21:30"), now, None);
        assert_eq!((d, when), (date("2026-12-05"), utc("2026-12-05", "13:30")));
        // Done for today: tomorrow's, 24 h later.
        let (d, next) = next_run(&shanghai, at("21:30"), when, Some(d));
        assert_eq!((d, next - when), (date("2026-12-06"), 86_400));
        // Missed while down (yesterday done, today's time past): due at once.
        let late = utc("2026-12-05", "15:00");
        let (d, when) = next_run(&shanghai, at("21:30"), late, Some(date("2026-12-04")));
        assert_eq!(d, date("2026-12-05"));
        assert!(when <= late);
        // Local midnight is not UTC midnight: 01:00 Shanghai is still the 6th there.
        assert_eq!(
            shanghai.date(utc("2026-12-05", "17:00")),
            date("2026-12-06")
        );
    }

    #[test]
    fn a_time_the_clock_skips_runs_when_it_jumps_past_it_and_days_stay_whole() {
        let z = europe();
        // 02:30 does not exist on 2026-03-29: the run is at the jump (03:00 local).
        assert_eq!(
            z.instant(date("2026-03-29"), at("02:30")),
            utc("2026-03-29", "01:00")
        );
        // The day before and after are normal; the spring-forward day is 23 h long.
        let before = z.instant(date("2026-03-28"), at("21:30"));
        let on = z.instant(date("2026-03-29"), at("21:30"));
        let after = z.instant(date("2026-03-30"), at("21:30"));
        assert_eq!((on - before, after - on), (23 * 3600, 24 * 3600));
        assert_eq!(on, utc("2026-03-29", "19:30"));
    }

    #[test]
    fn a_time_the_clock_shows_twice_runs_once_at_the_first() {
        let z = europe();
        let first = z.instant(date("2026-10-25"), at("02:30"));
        assert_eq!(first, utc("2026-10-25", "00:30"));
        // Run for that date; asked again during the second 02:30, the next run is the
        // next day's, not the repeat.
        let second = utc("2026-10-25", "01:30");
        assert_eq!(z.date(second), date("2026-10-25"));
        let (d, when) = next_run(&z, at("02:30"), second, Some(date("2026-10-25")));
        assert_eq!((d, when), (date("2026-10-26"), utc("2026-10-26", "01:30")));
        // The fall-back day is 25 h long.
        let on = z.instant(date("2026-10-25"), at("21:30"));
        let before = z.instant(date("2026-10-24"), at("21:30"));
        assert_eq!(on - before, 25 * 3600);
    }

    #[test]
    fn the_box_zone_agrees_with_the_c_library() {
        let now = time::now_secs();
        let local = time::local_datetime(now);
        assert_eq!(BoxZone.date(now).to_string(), local[..10]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_for_a_past_time_ends_at_once_and_a_stop_ends_any_wait() {
        let (trigger, mut stop) = shutdown::channel();
        assert!(wait_until(time::now_secs() - 1, &mut stop).await);
        let _ = trigger.send(true);
        assert!(!wait_until(time::now_secs() + 3600, &mut stop).await);
    }
}
