//! The stop signal every long-running part of `coupond serve` shares.
//!
//! One `watch` channel: `serve` keeps the sender and flips it to `true` on SIGTERM or
//! SIGINT; the accept loops, the outbox's sink tasks, retention, the watchdog and the
//! display's long polls each hold a [`Stop`] and finish what they have in hand once it
//! turns. A sender dropped without a stop counts as a stop, so no task can outlive the
//! daemon by accident.

use tokio::sync::watch;

/// The receiving side, cheap to clone: one per task.
pub type Stop = watch::Receiver<bool>;

/// The sending side, kept by whoever decides to stop.
pub type Trigger = watch::Sender<bool>;

/// A new signal, not yet given.
pub fn channel() -> (Trigger, Stop) {
    watch::channel(false)
}

/// Resolves once the stop is given (or its sender is gone).
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Whether the stop has been given, without waiting.
pub fn is_stopped(stop: &Stop) -> bool {
    *stop.borrow()
}
