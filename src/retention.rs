//! `--keep-days`: bounded storage on flash.
//!
//! Every [`EVERY`] (and shortly after start) the daemon deletes what is older than the
//! retention period: delivered or failed outputs, the messages no output refers to any
//! more, and rejects. Certificates (the coupon state) and pending outputs with their
//! messages are never pruned. It works in steps of [`STEP`] rows per table, each its own
//! short transaction on the writer thread, with a pause between steps, so webhook
//! commits interleave and never wait long. Free pages go back to the file system a bit
//! at a time (`auto_vacuum = INCREMENTAL`), and the writer's checkpoints keep the `-wal`
//! file bounded.
//!
//! Deleting old messages does not weaken dedup: a very late redelivery of a pruned body
//! meets the coupon state rule and can only be `stale` or `duplicate`.

use std::time::Duration;

use crate::shutdown::{self, Stop};
use crate::store::Pruned;
use crate::time;
use crate::writer::Writer;

/// How often retention runs.
pub const EVERY: Duration = Duration::from_secs(3600);
/// The first run, after start.
const FIRST: Duration = Duration::from_secs(2);
/// Rows per table per step.
pub const STEP: i64 = 100;
/// Pause between steps, for the webhook's commits.
const PAUSE: Duration = Duration::from_millis(20);

/// The cutoff for `keep_days` at `now_ms`, as stored times compare.
pub fn cutoff(now_ms: i64, keep_days: u32) -> String {
    time::rfc3339_millis(now_ms - i64::from(keep_days) * 86_400_000)
}

/// Runs retention until `stop`.
pub async fn run(writer: Writer, keep_days: u32, mut stop: Stop) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown::stopped(&mut stop) => return,
        }
        wait = EVERY;
        let cut = cutoff(time::now_millis(), keep_days);
        let mut total = Pruned::default();
        loop {
            let c = cut.clone();
            let step = match writer.call(move |s| s.prune_step(&c, STEP)).await {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    log::error!("retention: cannot prune: {e}");
                    break;
                }
                Err(_) => return,
            };
            total.outputs += step.outputs;
            total.messages += step.messages;
            total.rejected += step.rejected;
            if step.total() == 0 || shutdown::is_stopped(&stop) {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if total.total() > 0 {
            log::info!(
                "retention: pruned {} messages, {} outputs, {} rejects older than {keep_days} days ({cut})",
                total.messages,
                total.outputs,
                total.rejected
            );
        }
    }
}
