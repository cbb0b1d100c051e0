//! Delivers output jobs after the webhook has answered (SPEC §6).
//!
//! Jobs are rows in `outputs`, written in the same transaction as their message, so a
//! job exists exactly when its message was applied and survives any crash. Each sink
//! gets its own task that works through its own queue strictly oldest first (receipts
//! come out in order, and a reprint never overtakes): take the oldest jobs, deliver them
//! one by one within the sink's time limit, record the results, repeat. A failure stops
//! the round and is retried with backoff ([`crate::backoff::OUTBOX`]: 1 s doubling to 60 s) while the
//! rest of that sink's queue waits; after `max_attempts` the job is `failed` (with
//! `last_error`) and the queue moves on, except for MQTT, retried without limit (a
//! broker outage is not a bad message).
//!
//! Results are recorded after each round, in one transaction; if the database refuses
//! (disk full), they are kept in memory and nothing more is delivered by that sink until
//! they are written, so a receipt never prints again just because its "done" was lost.
//! A sink whose delivery must never repeat (a receipt) takes one job per round, so a
//! crash can repeat at most the receipt that was printing; cheap sinks (log, display) take many, so a backlog costs a
//! handful of commits, not one per job. Sinks never share a task, so a stalled printer
//! delays neither the display nor any webhook answer: the receiver only ever writes rows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::{Attempt, AttemptOutcome, Job, Work};
use crate::shutdown::{self, Stop};
use crate::sinks::{Delivered, Failure, Sink};
use crate::time;
use crate::writer::Writer;

/// How often to retry writing down delivery results the database refused.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// How jobs wait for their coupon's details (SPEC §13).
#[derive(Clone)]
pub struct DetailsWait {
    /// `--details-wait`.
    pub wait: Duration,
    /// Bumped when a lookup ends; `None` without a lookup task.
    pub ended: Option<watch::Receiver<u64>>,
}

impl DetailsWait {
    /// No lookups in this run: a job left waiting by an earlier one goes at once.
    pub fn none() -> DetailsWait {
        DetailsWait {
            wait: Duration::ZERO,
            ended: None,
        }
    }

    /// When `job` may go without its details (Unix ms); `None`: it need not wait.
    fn due(&self, job: &Job) -> Option<i64> {
        job.awaiting_details
            .map(|queued| queued + self.wait.as_millis() as i64)
    }

    /// How many of `jobs`, from the front, may go at `now_ms`, and when the first that
    /// may not will (Unix ms).
    fn ready(&self, jobs: &[Job], now_ms: i64) -> (usize, Option<i64>) {
        let ready = jobs
            .iter()
            .take_while(|j| self.due(j).map_or(true, |d| d <= now_ms))
            .count();
        (ready, jobs.get(ready).and_then(|j| self.due(j)))
    }

    /// Resolves when a lookup ends; never without a lookup task.
    async fn ended(&mut self) {
        if let Some(rx) = &mut self.ended {
            if rx.changed().await.is_ok() {
                return;
            }
            self.ended = None;
        }
        std::future::pending::<()>().await
    }
}

/// Runs one sink's delivery loop until the stop is given.
pub async fn run_sink(
    sink: Arc<Sink>,
    writer: Writer,
    max_attempts: i64,
    mut changes: watch::Receiver<u64>,
    mut details: DetailsWait,
    mut stop: Stop,
) {
    let kind = sink.kind();
    let name = kind.name();
    let batch = sink.batch();
    // The job this loop last failed, and when it may be tried again. Kept in memory:
    // after a restart every pending job is simply tried at once.
    let mut retry: Option<(i64, Instant)> = None;
    // Delivered but not yet written down. Written before anything else is delivered:
    // if the database refuses (a full disk, say), the same receipt must not print again.
    let mut to_record: Vec<Attempt> = Vec::new();
    loop {
        if shutdown::is_stopped(&stop) {
            return;
        }
        if !to_record.is_empty() {
            let results = std::mem::take(&mut to_record);
            match writer
                .call(move |s| s.finish_jobs(&results).map_err(|e| (e, results)))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err((e, results))) => {
                    log::error!("{name}: cannot record delivery results ({e}); delivering nothing until they are");
                    to_record = results;
                    tokio::select! {
                        _ = tokio::time::sleep(RECORD_RETRY) => {}
                        _ = shutdown::stopped(&mut stop) => return,
                    }
                }
                Err(_) => return,
            }
            continue;
        }
        let held_after = time::now_millis() - details.wait.as_millis() as i64;
        let jobs = match writer
            .call(move |s| s.pending_jobs_held(kind, batch, Some(held_after)))
            .await
        {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(e)) => {
                log::error!("{name}: cannot read pending outputs: {e}");
                Vec::new()
            }
            Err(_) => return,
        };
        let now_ms = time::now_millis();
        let (ready, held_until) = details.ready(&jobs, now_ms);
        // A job held for its details holds the queue: new jobs go behind it, so commits
        // need not wake this loop (under load that would be a read per commit).
        let held = ready == 0 && held_until.is_some();
        let waiting = match (jobs.first(), retry) {
            (Some(job), Some((id, at))) if job.id == id && at > Instant::now() => Some(Some(at)),
            (Some(_), _) if ready == 0 => {
                let ms = held_until.map_or(0, |due| (due - now_ms).max(0));
                Some(Some(Instant::now() + Duration::from_millis(ms as u64)))
            }
            (Some(_), _) => None,
            // Nothing to do: sleep until a commit or another process's knock wakes it
            // (`crate::knock`), with no timer (an idle box wakes for nothing).
            (None, _) => Some(None),
        };
        if let Some(until) = waiting {
            tokio::select! {
                _ = sleep_until(until) => {}
                r = changes.changed(), if !held => if r.is_err() { return },
                _ = details.ended() => {}
                _ = shutdown::stopped(&mut stop) => return,
            }
            continue;
        }
        retry = None;
        for job in &jobs[..ready] {
            let (attempt, wait) = deliver(&sink, job, max_attempts).await;
            let failed = attempt.outcome != AttemptOutcome::Done;
            retry = wait.map(|w| (job.id, Instant::now() + w));
            to_record.push(attempt);
            if failed || shutdown::is_stopped(&stop) {
                break;
            }
        }
    }
}

/// Sleeps until `until`; forever without one.
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Delivers `job` once; says what to record and, after a failure that is to be
/// retried, how long to wait.
async fn deliver(sink: &Sink, job: &Job, max_attempts: i64) -> (Attempt, Option<Duration>) {
    let name = sink.kind().name();
    let result = match tokio::time::timeout(sink.time_limit(), sink.deliver(job)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(format!(
            "no answer within {:?}",
            sink.time_limit()
        ))),
    };
    let attempts = job.attempts + 1;
    let (outcome, retry_in) = match result {
        Ok(Delivered::Done) => {
            log::debug!("{name}: output {} delivered", job.id);
            (AttemptOutcome::Done, None)
        }
        Ok(Delivered::Dropped(note)) => {
            log::warn!(
                "{name}: output {} ({}) dropped: {note}",
                job.id,
                job.subject()
            );
            (AttemptOutcome::Dropped(note), None)
        }
        Err(Failure::Never(error)) => {
            log::error!(
                "{name}: output {} ({}) given up: {error}",
                job.id,
                job.subject()
            );
            (AttemptOutcome::GiveUp(error), None)
        }
        Err(Failure::Retry(error))
            if attempts >= max_attempts && !sink.retries_forever() && !job.retries_forever() =>
        {
            let again = match &job.work {
                Work::Coupon(e) => {
                    format!("; `coupond reprint {}` queues it again", e.certificate_id)
                }
                _ => String::new(),
            };
            log::error!(
                "{name}: output {} ({}) failed after {attempts} attempts: {error}{again}",
                job.id,
                job.subject(),
            );
            (AttemptOutcome::GiveUp(error), None)
        }
        Err(Failure::Retry(error)) => {
            let wait = sink.retry_wait(attempts);
            log::warn!(
                "{name}: output {} attempt {attempts} failed: {error}; retry in {wait:?}",
                job.id
            );
            (AttemptOutcome::Retry(error), Some(wait))
        }
    };
    (
        Attempt {
            id: job.id,
            outcome,
        },
        retry_in,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::Action;
    use crate::model::{OutputPlan, SinkKind};
    use crate::sinks::exec::Exec;
    use crate::store::Store;
    use crate::writer::tests::{apps, arrival};

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_go_out_oldest_first_and_a_failure_holds_the_rest_until_it_succeeds() {
        let dir = std::env::temp_dir().join(format!("coupond-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("coupond.db")).unwrap();
        let plan = OutputPlan::new(vec![SinkKind::Exec], Action::ALL.to_vec(), None);
        let (changes_tx, changes) = watch::channel(0u64);
        let (writer, thread) = Writer::start(store, plan, changes_tx);
        let apps = apps();
        for i in 1..=5 {
            writer
                .ingest(arrival(&apps, &format!("c{i}")))
                .await
                .unwrap();
        }
        // The hook notes each delivery; c2's first attempt fails.
        let log = dir.join("delivered");
        let command = format!(
            "echo $COUPOND_CERTIFICATE_ID >> {log}; \
             if [ $COUPOND_CERTIFICATE_ID = c2 ] && [ ! -e {mark} ]; then : > {mark}; exit 1; fi",
            log = log.display(),
            mark = dir.join("failed-once").display()
        );
        let sink = Arc::new(Sink::Exec(Exec {
            command,
            timeout: Duration::from_secs(10),
        }));
        let (trigger, stop) = shutdown::channel();
        let task = tokio::spawn(run_sink(
            sink,
            writer.clone(),
            5,
            changes,
            DetailsWait::none(),
            stop,
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let lines = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().count() >= 6 || Instant::now() > deadline {
                break text.lines().map(str::to_string).collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(lines, ["c1", "c2", "c2", "c3", "c4", "c5"]);
        let _ = trigger.send(true);
        task.await.unwrap();
        drop(writer);
        thread.join().unwrap();
    }

    #[test]
    fn jobs_wait_for_details_until_due_and_later_jobs_stay_behind() {
        let job = |awaiting| Job {
            awaiting_details: awaiting,
            ..crate::sinks::exec::tests::sample_job()
        };
        let w = DetailsWait {
            wait: Duration::from_secs(3),
            ended: None,
        };
        let jobs = [job(None), job(Some(1_000)), job(None)];
        assert_eq!(w.ready(&jobs, 3_999), (1, Some(4_000)));
        assert_eq!(w.ready(&jobs, 4_000), (3, None));
        assert_eq!(w.ready(&jobs[1..], 0), (0, Some(4_000)));
        // Without lookups in this run, what an earlier run left waiting goes at once.
        assert_eq!(DetailsWait::none().ready(&jobs, 1_000), (3, None));
    }
}
