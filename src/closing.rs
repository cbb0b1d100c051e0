//! `--report-at`: the end-of-day report printed once a day at a local time (SPEC §15).
//!
//! Which day is due is a pure function of the clock and two things the database keeps
//! ([`due`]): the last business day whose report was queued, and since when the
//! database has been there. The report time most recently passed decides: its business
//! day is due unless it was queued already, or the database did not exist yet at that
//! time. So a restart never prints a day twice, a report time missed while the daemon
//! was down is printed at the next start (only the latest one: a box off for a week
//! prints one report, not seven), and checking again at any moment is harmless, which
//! is what makes the schedule safe across clock changes and daylight saving.
//!
//! The job itself is an output job like a receipt's, queued in the same transaction as
//! the day it marks, and never given up: a printer that is off at report time prints it
//! once when it is back.

use std::time::Duration;

use crate::shutdown::{self, Stop};
use crate::time::{self, Date, TimeOfDay};
use crate::writer::Writer;

/// The longest sleep between two looks at the clock: a clock set late (NTP after a
/// boot in 1970) or moved is noticed within this, and the report is at most this late.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// When to print, and what a business day is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// `--report-at`.
    pub at: TimeOfDay,
    /// `--day-starts`.
    pub day_starts: TimeOfDay,
}

/// Runs `--report-at` until the stop is given: at start (a report time missed while
/// the daemon was down), then at each report time, queues the day that is due.
pub async fn run(writer: Writer, schedule: Schedule, mut stop: Stop) {
    let mut told_clock = false;
    let mut announced = 0;
    loop {
        let now = time::now_secs();
        let wait = if now < time::build_time() {
            if !std::mem::replace(&mut told_clock, true) {
                log::warn!(
                    "report: waiting for a sane clock (it says {}, before this build); is NTP running?",
                    time::rfc3339_millis(now * 1000)
                );
            }
            MAX_WAIT
        } else {
            if queue_due(&writer, schedule, now).await.is_err() {
                return;
            }
            let next = next_time(now, schedule.at).unwrap_or(now + MAX_WAIT.as_secs() as i64);
            if next != announced {
                announced = next;
                log::info!(
                    "report: the next end-of-day report prints at {}",
                    time::local_datetime(next)
                );
            }
            Duration::from_secs((next - now).max(1) as u64).min(MAX_WAIT)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Queues the report that is due at `now`, if any; `Err` only when the writer stopped.
async fn queue_due(writer: &Writer, s: Schedule, now: i64) -> Result<(), crate::writer::Closed> {
    let queued = writer
        .call(move |store| -> Result<Option<Date>, String> {
            let (since, last) = store.report_schedule().map_err(|e| e.to_string())?;
            let Some(day) = due(now, s, last, &since) else {
                return Ok(None);
            };
            let window = time::business_day(day, s.day_starts)
                .ok_or_else(|| format!("cannot place {day} {} in local time", s.day_starts))?;
            let id = store
                .queue_report(day, window, true)
                .map_err(|e| e.to_string())?;
            Ok(id.map(|_| day))
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

/// The latest instant at or before `now` when the box's clock showed `at`.
pub fn last_time(now: i64, at: TimeOfDay) -> Option<i64> {
    let today = time::local(now)?.date;
    match time::from_local(today, at)? {
        t if t <= now => Some(t),
        _ => time::from_local(today.prev(), at),
    }
}

/// The first instant after `now` when the box's clock shows `at`.
pub fn next_time(now: i64, at: TimeOfDay) -> Option<i64> {
    let mut day = time::local(now)?.date;
    // Two steps at most; a third only if a zone's rules skip a whole day.
    for _ in 0..3 {
        let t = time::from_local(day, at)?;
        if t > now {
            return Some(t);
        }
        day = day.next();
    }
    None
}

/// The business day whose report is due at `now`, if any: the day in progress at the
/// latest report time, unless `last_day` (the last one queued) is that day or later, or
/// the database was made after that time (`since`, RFC 3339 UTC as the store keeps it).
pub fn due(now: i64, s: Schedule, last_day: Option<Date>, since: &str) -> Option<Date> {
    let at = last_time(now, s.at)?;
    // The same text format on both sides: they compare as the instants do.
    if time::rfc3339_millis(at * 1000).as_str() < since {
        return None;
    }
    let day = time::business_date_at(at, s.day_starts)?;
    match last_day {
        Some(last) if last >= day => None,
        _ => Some(day),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These hold in whatever zone the tests run in: they only compare instants the C
    // library computed for that zone. tests/report.rs drives the daemon in fixed ones.

    fn at(h: u32, m: u32) -> TimeOfDay {
        TimeOfDay { hour: h, minute: m }
    }

    #[test]
    fn the_last_and_next_report_times_surround_now() {
        let now = time::now_secs();
        for t in [at(0, 0), at(4, 0), at(22, 0), at(23, 59)] {
            let (last, next) = (last_time(now, t).unwrap(), next_time(now, t).unwrap());
            assert!(last <= now && now < next, "{t}: {last} {now} {next}");
            assert!(next - last <= 25 * 3600 && next - last >= 23 * 3600, "{t}");
            assert_eq!(last_time(last, t), Some(last));
            assert_eq!(next_time(last, t), Some(next));
            assert_eq!(time::local(next).unwrap().time, t);
        }
    }

    #[test]
    fn a_day_is_due_once_and_only_if_the_database_was_there_at_report_time() {
        let now = time::now_secs();
        let s = Schedule {
            at: at(22, 0),
            day_starts: at(4, 0),
        };
        let report_time = last_time(now, s.at).unwrap();
        let since = |t: i64| time::rfc3339_millis(t * 1000);
        let old = since(0);
        let day = due(now, s, None, &old).expect("never printed: due");
        assert_eq!(Some(day), time::business_date_at(report_time, s.day_starts));
        assert_eq!(due(now, s, Some(day), &old), None, "queued already");
        assert_eq!(due(now, s, Some(day.next()), &old), None);
        assert_eq!(
            due(now, s, Some(day.prev()), &old),
            Some(day),
            "yesterday's"
        );
        let then = since(report_time);
        assert_eq!(due(now, s, None, &then), Some(day), "made at that moment");
        let after = since(report_time + 1);
        assert_eq!(due(now, s, None, &after), None, "made after it");
        // A second before the report time, the one before it decides.
        let before = due(report_time - 1, s, Some(day.prev().prev()), &old);
        assert_eq!(before, Some(day.prev()));
    }
}
