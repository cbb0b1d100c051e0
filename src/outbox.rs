//! Delivers output jobs after the webhook has answered (SPEC §6).
//!
//! Jobs are rows in `outputs`, written in the same transaction as their message, so a
//! job exists exactly when its message was applied and survives any crash. Each sink
//! gets its own task that works through its own queue strictly oldest first (receipts
//! come out in order, and a reprint never overtakes): take the head job, deliver it
//! within the sink's time limit, record the result, repeat. A failure is retried with
//! backoff ([`backoff`]: 1 s doubling to 60 s) while the rest of that sink's queue
//! waits; after `max_attempts` the job is `failed` (with `last_error`) and the queue
//! moves on. Sinks never share a task, so a stalled printer delays neither the display
//! nor any webhook answer: the receiver only ever writes rows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::sinks::Sink;
use crate::store::Job;
use crate::time;
use crate::writer::Writer;

/// How often an idle sink looks for work queued by another process (`coupond reprint`).
/// Work queued by this daemon wakes it at once.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The wait before retry number `attempt` (1-based): 1 s, 2 s, 4 s ... at most 60 s.
pub fn backoff(attempt: i64) -> Duration {
    let exp = (attempt.max(1) - 1).min(6) as u32;
    Duration::from_secs((1u64 << exp).min(60))
}

/// Runs one sink's delivery loop until `shutdown` turns true.
pub async fn run_sink(
    sink: Arc<Sink>,
    writer: Writer,
    max_attempts: i64,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = sink.name();
    // The job this loop last failed, and when it may be tried again. Kept in memory:
    // after a restart every pending job is simply tried at once.
    let mut retry: Option<(i64, Instant)> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let head = match writer.call(move |s| s.head_job(name)).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => {
                log::error!("{name}: cannot read pending outputs: {e}");
                None
            }
            Err(_) => return,
        };
        let wake_at = match (&head, retry) {
            (Some(job), Some((id, at))) if job.id == id && at > Instant::now() => Some(at),
            (Some(job), _) => {
                retry = attempt(&sink, job, &writer, max_attempts).await;
                continue;
            }
            (None, _) => None,
        };
        let sleep_until = wake_at.unwrap_or_else(|| Instant::now() + IDLE_POLL);
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {}
            r = changes.changed() => if r.is_err() { return },
            _ = crate::server::stopped(&mut shutdown) => return,
        }
    }
}

/// Delivers `job` once and records the result; returns when to retry it, if it is to be.
async fn attempt(
    sink: &Sink,
    job: &Job,
    writer: &Writer,
    max_attempts: i64,
) -> Option<(i64, Instant)> {
    let name = sink.name();
    let result = match tokio::time::timeout(sink.time_limit(), sink.deliver(job)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", sink.time_limit())),
    };
    let id = job.id;
    let attempts = job.attempts + 1;
    match result {
        Ok(()) => {
            log::debug!("{name}: output {id} delivered");
            let _ = writer
                .call(move |s| s.job_done(id))
                .await
                .map(|r| r.map_err(|e| log::error!("{name}: cannot mark output {id} done: {e}")));
            None
        }
        Err(error) => {
            let give_up = attempts >= max_attempts;
            let wait = backoff(attempts);
            let retry_at = (!give_up)
                .then(|| time::rfc3339_millis(time::now_millis() + wait.as_millis() as i64));
            if give_up {
                log::error!(
                    "{name}: output {id} (certificate {}) failed after {attempts} attempts: {error}; \
                     `coupond reprint {}` queues it again",
                    job.event.certificate_id,
                    job.event.certificate_id
                );
            } else {
                log::warn!(
                    "{name}: output {id} attempt {attempts} failed: {error}; retry in {wait:?}"
                );
            }
            let err = error.clone();
            let _ = writer
                .call(move |s| s.job_failed(id, &err, retry_at.as_deref()))
                .await
                .map(|r| {
                    r.map_err(|e| log::error!("{name}: cannot record failure of output {id}: {e}"))
                });
            (!give_up).then(|| (id, Instant::now() + wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0).as_secs(), 1);
    }
}
