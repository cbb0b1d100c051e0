//! Where applied coupon messages go: the store's printer, display, a hook, or the log.
//!
//! A sink is a plain value that can deliver one [`Job`]; the outbox decides when. Each
//! sink states its own time limit, after which the attempt counts as failed, and how
//! many jobs it takes per round (see `outbox`).

pub mod display;
pub mod exec;
pub mod printer;
pub mod receipt;

use std::sync::Arc;
use std::time::Duration;

use crate::coupon::Action;
use crate::store::{Job, JobEvent};
use crate::time;

/// A configured output.
pub enum Sink {
    /// `--printer`: an ESC/POS receipt.
    Printer {
        printer: printer::Printer,
        store_name: Option<String>,
        columns: usize,
    },
    /// `--display-listen`: the counter screen's feed.
    Display(Arc<display::Feed>),
    /// `--exec`: a command per applied message.
    Exec(exec::Exec),
    /// No printer, display or hook configured: one log line per applied message.
    Log,
}

impl Sink {
    /// The `outputs.sink` word.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Printer { .. } => "printer",
            Sink::Display(_) => "display",
            Sink::Exec(_) => "exec",
            Sink::Log => "log",
        }
    }

    /// Jobs taken per round. One for sinks whose delivery must not repeat after a
    /// crash (a receipt, a hook); many for idempotent, cheap ones.
    pub fn batch(&self) -> usize {
        match self {
            Sink::Printer { .. } | Sink::Exec(_) => 1,
            Sink::Display(_) | Sink::Log => 64,
        }
    }

    pub fn time_limit(&self) -> Duration {
        match self {
            Sink::Printer { .. } => printer::TIME_LIMIT,
            Sink::Exec(e) => e.timeout,
            Sink::Display(_) | Sink::Log => Duration::from_secs(1),
        }
    }

    pub async fn deliver(&self, job: &Job) -> Result<(), String> {
        match self {
            Sink::Printer {
                printer,
                store_name,
                columns,
            } => {
                let lines = receipt::lines(
                    &job.event,
                    job.reprint,
                    time::now_secs(),
                    store_name.as_deref(),
                );
                printer.send(receipt::escpos(&lines, *columns)).await?;
                log::info!("printer: printed {}", describe(&job.event, job.reprint));
                Ok(())
            }
            Sink::Display(feed) => {
                feed.upsert(display::Entry::from_event(&job.event, job.reprint));
                Ok(())
            }
            Sink::Exec(e) => e.run(job).await,
            Sink::Log => {
                log::info!("{}", describe(&job.event, job.reprint));
                Ok(())
            }
        }
    }
}

/// The sinks a configuration has, in the order the daemon builds them: printer,
/// display, exec, or the log when there is none of those.
pub fn names(printer: bool, display: bool, exec: bool) -> Vec<&'static str> {
    let names: Vec<&'static str> = [(printer, "printer"), (display, "display"), (exec, "exec")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if names.is_empty() {
        vec!["log"]
    } else {
        names
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
