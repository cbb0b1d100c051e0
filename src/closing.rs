//! The end-of-day report's calendar (SPEC §15): what a business day is, and which one
//! `--report-at` prints when.
//!
//! A business day runs from `--day-starts` on its date to the same local time the next
//! day ([`business_day`]), so across a daylight saving change it is 23 or 25 hours.
//!
//! Which day is due is a pure function of the clock and two things the database keeps
//! ([`due`]): the last business day whose report was queued, and since when the
//! database has been there. The report time most recently passed decides: its business
//! day is due unless it was queued already, or the database did not exist yet at that
//! time. So a restart never prints a day twice, a report time missed while the daemon
//! was down is printed at the next start (only the latest one: a box off for a week
//! prints one report, not seven), and checking again at any moment is harmless, which
//! is what makes the schedule safe across clock changes and daylight saving. The waiting
//! is [`schedule`]'s; the time zone is a [`Zone`], the box's in the daemon.
//!
//! The job itself is an output job like a receipt's, queued in the same transaction as
//! the day it marks, and never given up: a printer that is off at report time prints it
//! once when it is back.

use crate::schedule::{self, BoxZone, Date, TimeOfDay, Zone};
use crate::shutdown::Stop;
use crate::time;
use crate::writer::Writer;

/// When to print, and what a business day is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// `--report-at`.
    pub at: TimeOfDay,
    /// `--day-starts`.
    pub day_starts: TimeOfDay,
}

/// The business day `date` that starts at local time `starts`: `[from, to)` in Unix
/// seconds.
pub fn business_day(zone: &impl Zone, date: Date, starts: TimeOfDay) -> (i64, i64) {
    (
        zone.instant(date, starts),
        zone.instant(date.succ(), starts),
    )
}

/// The business day in progress at `t`.
pub fn business_date_at(zone: &impl Zone, t: i64, starts: TimeOfDay) -> Date {
    let local = t + zone.offset(t);
    let mut date = zone.date(t);
    if local.rem_euclid(86_400) < starts.secs() {
        date = date.pred();
    }
    // A start time the clocks skip that day begins when they jump past it: the window,
    // not the wall clock, decides.
    let (from, to) = business_day(zone, date, starts);
    if t < from {
        date.pred()
    } else if t >= to {
        date.succ()
    } else {
        date
    }
}

/// Runs `--report-at` until the stop is given: at start (a report time missed while
/// the daemon was down), then at each report time, queues the day that is due.
pub async fn run(writer: Writer, s: Schedule, mut stop: Stop) {
    // Before anything goes by the calendar, a clock past this build's time.
    if !schedule::wait_until(time::build_time(), &mut stop).await {
        return;
    }
    let mut announced = 0;
    loop {
        let now = time::now_secs();
        if queue_due(&writer, s, now).await.is_err() {
            return;
        }
        let next = next_time(&BoxZone, now, s.at);
        if next != announced {
            announced = next;
            log::info!(
                "report: the next end-of-day report prints at {}",
                time::local_datetime(next)
            );
        }
        if !schedule::wait_until(next, &mut stop).await {
            return;
        }
    }
}

/// Queues the report that is due at `now`, if any; `Err` only when the writer stopped.
async fn queue_due(writer: &Writer, s: Schedule, now: i64) -> Result<(), crate::writer::Closed> {
    let queued = writer
        .call(move |store| -> rusqlite::Result<Option<Date>> {
            let (since, last) = store.report_schedule()?;
            let Some(day) = due(&BoxZone, now, s, last, &since) else {
                return Ok(None);
            };
            let window = business_day(&BoxZone, day, s.day_starts);
            Ok(store.queue_report(day, window, true)?.map(|_| day))
        })
        .await?;
    match queued {
        Ok(Some(day)) => {
            log::info!("report: queued the end-of-day report of {day} for the printer")
        }
        Ok(None) => {}
        Err(e) => log::error!("report: cannot queue the end-of-day report: {e}"),
    }
    Ok(())
}

/// The latest instant at or before `now` when the clock showed `at`.
pub fn last_time(zone: &impl Zone, now: i64, at: TimeOfDay) -> i64 {
    let today = zone.date(now);
    match zone.instant(today, at) {
        t if t <= now => t,
        _ => zone.instant(today.pred(), at),
    }
}

/// The first instant after `now` when the clock shows `at`.
pub fn next_time(zone: &impl Zone, now: i64, at: TimeOfDay) -> i64 {
    let today = zone.date(now);
    match zone.instant(today, at) {
        t if t > now => t,
        _ => zone.instant(today.succ(), at),
    }
}

/// The business day whose report is due at `now`, if any: the day in progress at the
/// latest report time, unless `last_day` (the last one queued) is that day or later, or
/// the database was made after that time (`since`, RFC 3339 UTC as the store keeps it).
pub fn due(
    zone: &impl Zone,
    now: i64,
    s: Schedule,
    last_day: Option<Date>,
    since: &str,
) -> Option<Date> {
    let at = last_time(zone, now, s.at);
    // The same text format on both sides: they compare as the instants do.
    if time::rfc3339_millis(at * 1000).as_str() < since {
        return None;
    }
    let day = business_date_at(zone, at, s.day_starts);
    match last_day {
        Some(last) if last >= day => None,
        _ => Some(day),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::{at, date, europe, utc, Fixed};

    // 2026-03-29 01:00 UTC: 02:00 → 03:00 local; 2026-10-25 01:00 UTC: 03:00 → 02:00.
    const SPRING: i64 = 1_774_746_000;
    const AUTUMN: i64 = 1_792_890_000;
    /// Asia/Shanghai: UTC+8 all year.
    const SHANGHAI: Fixed = Fixed(8 * 3600);

    #[test]
    fn business_days_are_23_or_25_hours_across_daylight_saving_and_24_without() {
        assert_eq!(SPRING, utc("2026-03-29", "01:00"));
        assert_eq!(AUTUMN, utc("2026-10-25", "01:00"));
        let midnight = at("00:00");
        let (from, to) = business_day(&europe(), date("2026-03-29"), midnight);
        assert_eq!(
            (from, to),
            (utc("2026-03-28", "23:00"), utc("2026-03-29", "22:00"))
        );
        let (from, to) = business_day(&europe(), date("2026-10-25"), midnight);
        assert_eq!(to - from, 25 * 3600);
        // From 04:00 the short day is the Saturday: the clocks change inside it.
        let (from, to) = business_day(&europe(), date("2026-03-28"), at("04:00"));
        assert_eq!(
            (from, to),
            (utc("2026-03-28", "03:00"), utc("2026-03-29", "02:00"))
        );
        let (from, to) = business_day(&SHANGHAI, date("2026-12-04"), at("04:00"));
        assert_eq!(
            (from, to),
            (utc("2026-12-03", "20:00"), utc("2026-12-04", "20:00"))
        );
        // 02:30 does not exist on the spring day: that day starts when the clocks jump.
        let (from, _) = business_day(&europe(), date("2026-03-29"), at("02:30"));
        assert_eq!(from, SPRING);
    }

    #[test]
    fn an_instant_belongs_to_the_day_whose_window_holds_it() {
        let four = at("04:00");
        let start = utc("2026-12-03", "20:00"); // 2026-12-04 04:00 in Shanghai
        assert_eq!(
            business_date_at(&SHANGHAI, start - 1, four),
            date("2026-12-03")
        );
        assert_eq!(business_date_at(&SHANGHAI, start, four), date("2026-12-04"));
        assert_eq!(
            business_date_at(&SHANGHAI, start + 86_399, four),
            date("2026-12-04")
        );
        let skipped = at("02:30");
        assert_eq!(
            business_date_at(&europe(), SPRING - 1, skipped),
            date("2026-03-28")
        );
        assert_eq!(
            business_date_at(&europe(), SPRING, skipped),
            date("2026-03-29")
        );
        for t in (SPRING - 200_000..AUTUMN + 200_000).step_by(1799) {
            let d = business_date_at(&europe(), t, four);
            let (from, to) = business_day(&europe(), d, four);
            assert!(from <= t && t < to, "{t}: {d} is [{from}, {to})");
        }
    }

    #[test]
    fn the_last_and_next_report_times_surround_now() {
        let ten = at("22:00");
        for now in [utc("2026-12-04", "13:59"), utc("2026-12-04", "14:00")] {
            let (last, next) = (
                last_time(&SHANGHAI, now, ten),
                next_time(&SHANGHAI, now, ten),
            );
            assert!(last <= now && now < next);
            assert_eq!(next - last, 86_400);
        }
        assert_eq!(
            last_time(&SHANGHAI, utc("2026-12-04", "14:00"), ten),
            utc("2026-12-04", "14:00")
        );
        let autumn = next_time(&europe(), AUTUMN - 3600, at("23:00"));
        assert_eq!(autumn, utc("2026-10-25", "22:00"));
    }

    #[test]
    fn a_day_is_due_once_and_only_if_the_database_was_there_at_report_time() {
        let s = Schedule {
            at: at("22:00"),
            day_starts: at("04:00"),
        };
        let report_time = utc("2026-12-04", "14:00"); // 22:00 in Shanghai
        let now = report_time + 600;
        let since = |t: i64| time::rfc3339_millis(t * 1000);
        let old = since(0);
        let day = date("2026-12-04");
        assert_eq!(due(&SHANGHAI, now, s, None, &old), Some(day));
        assert_eq!(
            due(&SHANGHAI, now, s, Some(day), &old),
            None,
            "queued already"
        );
        assert_eq!(due(&SHANGHAI, now, s, Some(day.succ()), &old), None);
        assert_eq!(due(&SHANGHAI, now, s, Some(day.pred()), &old), Some(day));
        let then = since(report_time);
        assert_eq!(
            due(&SHANGHAI, now, s, None, &then),
            Some(day),
            "made at that moment"
        );
        let after = since(report_time + 1);
        assert_eq!(due(&SHANGHAI, now, s, None, &after), None, "made after it");
        // Before the report time, yesterday's decides; a box off for days prints only
        // the latest.
        let yesterday = due(&SHANGHAI, report_time - 1, s, None, &old);
        assert_eq!(yesterday, Some(day.pred()));
        let later = due(&SHANGHAI, now + 3 * 86_400, s, Some(day.pred()), &old);
        assert_eq!(later, Some(date("2026-12-07")));
        // Printed at 03:00, before the 04:00 start: the day is the one still in progress.
        let early = Schedule {
            at: at("03:00"),
            day_starts: at("04:00"),
        };
        let at_three = utc("2026-12-04", "19:00"); // 2026-12-05 03:00 in Shanghai
        assert_eq!(due(&SHANGHAI, at_three, early, None, &old), Some(day));
    }
}
