//! The details lookup (SPEC §13): asks Douyin's `certificate/query` what was bought with
//! each coupon the store applied, and stores the answer in `details`.
//!
//! Work comes from the `lookups` table, which the ingest transaction fills (so a lookup
//! is never lost to a crash, and its message's commit never waits for Douyin). This
//! task takes the due ones, oldest first, at most [`PER_SECOND`] queries a second,
//! through the one Douyin session (catch-up's token and connection). Each ends as:
//! - details found: stored; the display updates the coupon in place; the outbox, whose
//!   jobs for the coupon were waiting, is woken (`ended`);
//! - Douyin's answer lacks the coupon: final, one log line;
//! - a failure (Douyin down, slow, answering garbage or refusing): asked again after
//!   [`backoff::DETAILS`] (1 s doubling to 30 s), for [`GIVE_UP_AFTER`], then given up. The
//!   day report needs the amounts, so a lookup outlives the receipt's short wait.
//!
//! Outputs never wait on this task beyond `--details-wait` (the outbox's rule), and
//! nothing here touches the webhook's path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff;
use crate::details::Answer;
use crate::douyin::Douyin;
use crate::ratelimit::Throttle;
use crate::shutdown::{self, Stop};
use crate::sinks::display::Feed;
use crate::store::{Lookup, LookupEnd};
use crate::time;
use crate::writer::Writer;

/// Queries a second, at most.
pub const PER_SECOND: u32 = 10;
/// How long a lookup is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Lookups read from the database at once.
const BATCH: usize = 10;
/// How long an idle task sleeps before it looks again (work queued by this daemon wakes
/// it at once; this only covers what another process queued).
const IDLE: Duration = Duration::from_secs(60);

/// What the lookup needs beside the session.
pub struct Lookups {
    pub douyin: Arc<Douyin>,
    pub account_id: String,
    pub writer: Writer,
    /// The counter display, updated in place when details come.
    pub feed: Option<Arc<Feed>>,
    /// Bumped when a lookup ends (found, absent or given up): waiting outputs go.
    pub ended: watch::Sender<u64>,
}

/// Runs the lookup until `stop`. `changes` is bumped after commits that queued work.
pub async fn run(l: Lookups, mut changes: watch::Receiver<u64>, mut stop: Stop) {
    let mut failures = Throttle::new(log::Level::Warn);
    let spacing = Duration::from_secs(1) / PER_SECOND;
    let mut next_query = Instant::now();
    loop {
        failures.flush(Instant::now(), false);
        let now = time::now_rfc3339();
        let due = match l.writer.call(move |s| s.due_lookups(&now, BATCH)).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                log::error!("details: cannot read the lookups: {e}");
                Vec::new()
            }
            Err(_) => return,
        };
        if due.is_empty() {
            let next = l.writer.call(|s| s.next_lookup_ms()).await;
            let wake = match next {
                Ok(Ok(Some(ms))) => {
                    let wait = (ms - time::now_millis()).clamp(0, IDLE.as_millis() as i64);
                    Instant::now() + Duration::from_millis(wait as u64)
                }
                Ok(_) => Instant::now() + IDLE,
                Err(_) => return,
            };
            let wake = failures.due().map_or(wake, |d| d.min(wake));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                r = changes.changed() => if r.is_err() { return },
                _ = shutdown::stopped(&mut stop) => {
                    failures.flush(Instant::now(), true);
                    return;
                }
            }
            continue;
        }
        for lookup in due {
            tokio::select! {
                _ = tokio::time::sleep_until(next_query) => {}
                _ = shutdown::stopped(&mut stop) => return,
            }
            next_query = Instant::now() + spacing;
            let end = tokio::select! {
                end = ask(&l, &lookup) => end,
                _ = shutdown::stopped(&mut stop) => return,
            };
            if !record(&l, &lookup, end, &mut failures).await {
                return;
            }
        }
    }
}

/// One query for `lookup`, and how it ends.
async fn ask(l: &Lookups, lookup: &Lookup) -> LookupEnd {
    let account = lookup.account_id.as_deref().unwrap_or(&l.account_id);
    let answer = l
        .douyin
        .certificate(&lookup.order_id, account, &lookup.certificate_id)
        .await;
    match answer {
        Ok(Answer::Found(d)) => LookupEnd::Found(d),
        Ok(Answer::Absent) => LookupEnd::Absent(format!(
            "Douyin's answer for order {} does not list the coupon",
            lookup.order_id
        )),
        Err(e) => failed(lookup, &e, time::now_millis()),
    }
}

/// A failed query: retried, or given up once [`GIVE_UP_AFTER`] has passed since the
/// lookup was queued (`now_ms`: Unix ms).
fn failed(lookup: &Lookup, e: &str, now_ms: i64) -> LookupEnd {
    let oldest = time::rfc3339_millis(now_ms - GIVE_UP_AFTER.as_millis() as i64);
    if lookup.created_at < oldest {
        return LookupEnd::GiveUp(e.to_string());
    }
    let wait = backoff::DETAILS.wait(lookup.attempts + 1);
    LookupEnd::Retry {
        error: e.to_string(),
        next_at: time::rfc3339_millis(now_ms + wait.as_millis() as i64),
    }
}

/// Writes down how `lookup` ended and tells whoever waits; `false` once the writer is
/// gone (the daemon stops).
async fn record(l: &Lookups, lookup: &Lookup, end: LookupEnd, failures: &mut Throttle) -> bool {
    let id = lookup.certificate_id.clone();
    match &end {
        LookupEnd::Found(d) => log::info!(
            "details: coupon {id}: {} {}",
            d.title.as_deref().unwrap_or("(no title)"),
            d.pay_amount.map_or("(no amount)".into(), |f| format!(
                "paid {}",
                crate::details::yuan(f)
            ))
        ),
        LookupEnd::Absent(why) => log::warn!("details: coupon {id}: {why}; it shows without"),
        LookupEnd::Retry { error, .. } => failures.note(
            Instant::now(),
            format!("details: coupon {id}: certificate query failed: {error}; will retry"),
        ),
        LookupEnd::GiveUp(error) => log::error!(
            "details: coupon {id}: no answer from Douyin in {} h ({error}); given up",
            GIVE_UP_AFTER.as_secs() / 3600
        ),
    }
    let saved = end.clone();
    match l.writer.call(move |s| s.end_lookup(&id, &saved)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::error!("details: cannot record the lookup's result: {e}");
            return true;
        }
        Err(_) => return false,
    }
    if let (LookupEnd::Found(d), Some(feed)) = (&end, &l.feed) {
        feed.details(d);
    }
    if !matches!(end, LookupEnd::Retry { .. }) {
        l.ended.send_modify(|n| *n += 1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_retried_for_a_day_then_given_up() {
        let now = 1_800_000_000_000;
        let lookup = |created_ms: i64, attempts| Lookup {
            certificate_id: "c".into(),
            order_id: "o".into(),
            account_id: None,
            created_at: time::rfc3339_millis(created_ms),
            attempts,
        };
        let e = "certificate query at http://x: no answer within 10s";
        assert_eq!(
            failed(&lookup(now - 1000, 0), e, now),
            LookupEnd::Retry {
                error: e.to_string(),
                next_at: time::rfc3339_millis(now + 1000)
            }
        );
        let LookupEnd::Retry { next_at, .. } = failed(&lookup(now - 1000, 9), e, now) else {
            panic!()
        };
        assert_eq!(next_at, time::rfc3339_millis(now + 30_000));
        let day = GIVE_UP_AFTER.as_millis() as i64;
        assert!(matches!(
            failed(&lookup(now - day + 1, 50), e, now),
            LookupEnd::Retry { .. }
        ));
        assert!(matches!(
            failed(&lookup(now - day - 1, 50), e, now),
            LookupEnd::GiveUp(_)
        ));
    }
}
