//! The one thread that writes the database, with group commit.
//!
//! SQLite calls block, and a `synchronous=FULL` commit waits for the disk. Doing them on
//! the runtime's one thread would stall every connection for each fsync, so the store
//! lives on this thread and the runtime talks to it over a channel. The thread takes
//! everything that queued up while the previous commit was on its way to disk, writes it
//! in one transaction, commits once, and only then answers each waiting request. So the
//! disk's fsync rate bounds batches, not messages (SPEC §10), and no request is answered
//! before the commit that holds it (SPEC §3).
//!
//! If a batch fails to commit (disk full, I/O error) every request in it gets the error
//! (the HTTP layer answers 503 and Douyin retries); when the batch held more than one
//! request each is retried alone first, so one poisoned message cannot fail the others.

use std::thread;

use tokio::sync::{mpsc, oneshot, watch};

use crate::model::{Ack, Arrival, OutputPlan};
use crate::store::Store;

/// Requests written in one transaction, at most.
const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before senders are made to wait too.
const QUEUE: usize = 1024;
/// Units of work (batches and calls) between WAL checkpoints.
///
/// Checkpoints run here, between batches, not on a second connection: a concurrent
/// checkpointer never catches up with a writer that appends continuously, so the WAL
/// never restarts (measured: the `-wal` file grew past 800 MB in 6 s of load). Nor only
/// "when idle": under sustained load the queue is never empty at that moment, and the
/// WAL reached 114 MB. Small, regular checkpoints keep the file under ~2 MB and, being
/// short, also gave the best p99 in the benchmark (2.7 ms, against 5 ms every 64).
const CHECKPOINT_EVERY: u32 = 16;

type Reply = oneshot::Sender<Result<Ack, String>>;
/// The writer's answer for a submitted arrival: resolves once its commit is done (or
/// failed); an error when the writer stopped.
pub type Committed = oneshot::Receiver<Result<Ack, String>>;
type Call = Box<dyn FnOnce(&mut Store) + Send>;

enum Command {
    Ingest(Box<Arrival>, Reply),
    Call(Call),
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

/// The writer has stopped (only during shutdown, or after a bug).
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database writer has stopped")
    }
}

impl Writer {
    /// Starts the writer thread over `store`. `changes` is bumped after every commit
    /// that queued output jobs, to wake the outbox and the display.
    pub fn start(
        store: Store,
        plan: OutputPlan,
        changes: watch::Sender<u64>,
    ) -> (Writer, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = thread::Builder::new()
            .name("coupond-db".into())
            .spawn(move || run(store, plan, rx, changes))
            .expect("spawning the database thread");
        (Writer { tx }, handle)
    }

    /// Records one arrival; resolves once it is committed (or the commit failed).
    pub async fn ingest(&self, arrival: Arrival) -> Result<Ack, String> {
        let rx = self.submit(arrival).await.map_err(|e| e.to_string())?;
        rx.await.map_err(|_| Closed.to_string())?
    }

    /// Queues one arrival and returns at once with the receiver of its answer, so a
    /// caller can queue several (catch-up) and have them committed together, in order.
    pub async fn submit(&self, arrival: Arrival) -> Result<Committed, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ingest(Box::new(arrival), reply))
            .await
            .map_err(|_| Closed)?;
        Ok(rx)
    }

    /// Runs `f` on the writer thread, between batches.
    pub async fn call<T, F>(&self, f: F) -> Result<T, Closed>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let call: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx
            .send(Command::Call(call))
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }
}

fn run(
    mut store: Store,
    plan: OutputPlan,
    mut rx: mpsc::Receiver<Command>,
    changes: watch::Sender<u64>,
) {
    let mut batch: Vec<(Box<Arrival>, Reply)> = Vec::with_capacity(MAX_BATCH);
    let mut calls: Vec<Call> = Vec::new();
    let mut since_checkpoint = 0u32;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Ingest(a, r) => batch.push((a, r)),
                Command::Call(c) => calls.push(c),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Every batch and every call (retention's prune steps write a lot) counts
        // towards the next checkpoint.
        since_checkpoint += u32::from(!batch.is_empty()) + calls.len() as u32;
        if !batch.is_empty() {
            commit(&mut store, &plan, &mut batch);
        }
        for call in calls.drain(..) {
            call(&mut store);
        }
        // Whatever queued them: a push, catch-up, the report's time, a reverify.
        if store.take_queued() {
            changes.send_modify(|n| *n += 1);
        }
        // After the answers went out: a checkpoint never delays the batch it follows.
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            if let Err(e) = store.checkpoint() {
                // A full disk, say: tried again after the next CHECKPOINT_EVERY units.
                log::warn!("WAL checkpoint failed (will retry): {e}");
            }
        }
    }
    // Channel closed: every sender is gone, the runtime is shutting down. Dropping the
    // store closes the database cleanly (and checkpoints the WAL).
    drop(store);
}

/// Writes and answers a batch.
fn commit(store: &mut Store, plan: &OutputPlan, batch: &mut Vec<(Box<Arrival>, Reply)>) {
    let results: Vec<Result<Ack, String>> =
        match store.ingest(batch.iter().map(|(a, _)| &**a), plan) {
            Ok(acks) => acks.into_iter().map(Ok).collect(),
            Err(e) if batch.len() == 1 => vec![Err(e.to_string())],
            Err(_) => batch
                .iter()
                .map(|(a, _)| {
                    store
                        .ingest([&**a], plan)
                        .map(|mut acks| acks.remove(0))
                        .map_err(|e| e.to_string())
                })
                .collect(),
        };
    for ((_, reply), result) in batch.drain(..).zip(results) {
        let _ = reply.send(result);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::coupon::Action;
    use crate::intake::{self, Apps, Outcome};
    use crate::model::{SinkKind, Source};
    use crate::signature::sign;

    const SECRET: &str = "writer-test-secret";

    /// The apps that `arrival`'s pushes are signed for.
    pub(crate) fn apps() -> Apps {
        Apps {
            client_keys: vec!["k".into()],
            secrets: vec![SECRET.into()],
        }
    }

    /// A signed verify of `certificate_id`, as the webhook would hand it over.
    pub(crate) fn arrival(apps: &Apps, certificate_id: &str) -> Arrival {
        let content = serde_json::json!({
            "action": "verify",
            "msg_time": 1_700_000_000,
            "certificate": {"certificate_id": certificate_id},
        })
        .to_string();
        let body = serde_json::json!({
            "event": "life_trade_certificate_notify",
            "client_key": "k",
            "content": content,
        })
        .to_string()
        .into_bytes();
        Arrival {
            received_at: crate::time::now_rfc3339(),
            msg_id: None,
            signature: Some(sign(SECRET, &body)),
            intake: intake::classify(apps, &body, Some(&sign(SECRET, &body))),
            body,
            source: Source::Push,
            dedup: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn arrivals_queued_during_a_commit_share_the_next_one_and_are_answered_in_order() {
        let dir = std::env::temp_dir().join(format!("coupond-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("coupond.db")).unwrap();
        let plan = OutputPlan::new(vec![SinkKind::Log], Action::ALL.to_vec(), None);
        let (changes_tx, changes) = watch::channel(0u64);
        let (writer, thread) = Writer::start(store, plan, changes_tx);
        // Hold the thread, as a commit on its way to disk would, while 100 arrive.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered, busy) = std::sync::mpsc::channel::<()>();
        let hold: Call = Box::new(move |_| {
            let _ = entered.send(());
            let _ = held.recv();
        });
        writer.tx.send(Command::Call(hold)).await.unwrap();
        busy.recv().unwrap();
        let apps = apps();
        let mut answers = Vec::new();
        for i in 0..100 {
            answers.push(
                writer
                    .submit(arrival(&apps, &format!("c{i}")))
                    .await
                    .unwrap(),
            );
        }
        release.send(()).unwrap();
        let mut ids = Vec::new();
        for a in answers {
            match a.await.unwrap().unwrap() {
                Ack::Recorded {
                    message_id,
                    outcome: Outcome::Applied,
                    outputs: 1,
                } => ids.push(message_id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids, (1..=100).collect::<Vec<i64>>(), "answered in order");
        let jobs = writer
            .call(|s| s.pending_jobs(SinkKind::Log, 1000).unwrap().len())
            .await
            .unwrap();
        assert_eq!(jobs, 100);
        // One commit with output jobs for all of them: one wake-up for the outbox (read
        // after a round trip, as the answers go out just before it).
        assert_eq!(*changes.borrow(), 1);
        drop(writer);
        thread.join().unwrap();
    }
}
