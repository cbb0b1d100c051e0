//! Where applied coupon messages go: the store's printer, display, a hook, or the log.
//!
//! A sink is a plain value that can deliver one [`Job`]; the outbox decides when. Each
//! sink states its own time limit, after which the attempt counts as failed.

use std::time::Duration;

use crate::coupon::Action;
use crate::store::{Job, JobEvent};
use crate::time;

/// A configured output.
pub enum Sink {
    /// No printer, display or hook configured: one log line per applied message.
    Log,
}

impl Sink {
    /// The `outputs.sink` word.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Log => "log",
        }
    }

    /// Jobs taken per round. One for sinks whose delivery must not repeat after a
    /// crash (a receipt); many for idempotent, cheap ones.
    pub fn batch(&self) -> usize {
        match self {
            Sink::Log => 64,
        }
    }

    pub fn time_limit(&self) -> Duration {
        match self {
            Sink::Log => Duration::from_secs(1),
        }
    }

    pub async fn deliver(&self, job: &Job) -> Result<(), String> {
        match self {
            Sink::Log => {
                log::info!("{}", describe(&job.event, job.reprint));
                Ok(())
            }
        }
    }
}

/// One line for a person: what happened to which coupon, when.
pub fn describe(e: &JobEvent, reprint: bool) -> String {
    let headline = Action::parse(&e.action).map_or("?", Action::headline_zh);
    let mut s = format!(
        "{}coupon {} {} ({headline})",
        if reprint { "reprint: " } else { "" },
        e.certificate_id,
        e.action
    );
    if let Some(o) = &e.order_id {
        s += &format!(", order {o}");
    }
    if let Some(c) = &e.code {
        s += &format!(", code {}", mask_code(c));
    }
    if let Some(a) = &e.account_id {
        s += &format!(", account {a}");
    }
    s += &format!(", at {}", time::local_datetime(e.msg_time));
    s
}

/// A coupon code with all but its last 4 characters hidden.
pub fn mask_code(code: &str) -> String {
    let n = code.chars().count();
    code.chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_masked_but_for_the_last_four() {
        assert_eq!(mask_code("ABCD12345678"), "********5678");
        assert_eq!(mask_code("1234"), "1234");
        assert_eq!(mask_code("12"), "12");
        assert_eq!(mask_code("券码ABCDE"), "***BCDE");
        assert_eq!(mask_code(""), "");
    }
}
