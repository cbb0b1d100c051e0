//! Where applied coupon messages go: the store's printer, display, a hook, or the log.
//!
//! [`SinkKind`] is the one list of outputs: its name (the `outputs.sink` value and the
//! word in logs), the flag that configures it, and which of them a configuration has.
//! A [`Sink`] is a configured output that can deliver one [`Job`]; the outbox decides
//! when. Each sink states its own time limit, after which the attempt counts as failed,
//! and how many jobs it takes per round (see `outbox`).

pub mod display;
pub mod exec;
pub mod mqtt;
pub mod printer;
pub mod receipt;
pub mod speaker;

use std::sync::Arc;
use std::time::Duration;

use crate::backoff;
use crate::coupon::Action;
use crate::model::{DayReport, Job, JobEvent, OutputPlan, SinkKind, StoreSinks, Task, Work};
use crate::time;

/// The receipt printer's settings (`serve`, `print-test`).
#[derive(Debug, Clone)]
pub struct Receipts {
    pub printer: Option<printer::PrinterDest>,
    pub paper_columns: usize,
    pub store_name: Option<String>,
    pub printer_status: printer::PrinterStatus,
    pub serial_baud: Option<u32>,
    /// `--poi-names`: the store's name for a Douyin POI id (门店 NAME on receipts; `serve` and `report`).
    pub poi_names: Vec<(String, String)>,
}

impl Receipts {
    /// The printer, when one is configured.
    pub fn printer(&self) -> Option<printer::Printer> {
        Some(printer::Printer::new(
            self.printer.clone()?,
            self.printer_status,
            self.serial_baud,
        ))
    }
}

/// What the sinks need from the settings (`coupond serve`'s output flags).
#[derive(Debug, Clone)]
pub struct Outputs {
    pub receipts: Receipts,
    /// Whether `--display-listen` is set (the listener itself is `serve`'s business).
    pub display: bool,
    pub exec: Option<String>,
    pub exec_timeout: Duration,
    /// `--mqtt` and what it publishes.
    pub mqtt: Option<mqtt::Publisher>,
    /// `--speaker` or `--speaker-cmd`, with the voice pack and what it says.
    pub speaker: Option<speaker::Settings>,
}

impl Outputs {
    /// The output plan of these settings with `--print-actions` `actions`.
    pub fn plan(&self, actions: &[Action]) -> OutputPlan {
        let plan = OutputPlan::new(
            SinkKind::configured(StoreSinks {
                printer: self.receipts.printer.is_some(),
                display: self.display,
                exec: self.exec.is_some(),
            }),
            actions.to_vec(),
            self.mqtt.as_ref().map(|p| p.forward),
        );
        match &self.speaker {
            Some(s) => plan.speaking(s.actions.clone()),
            None => plan,
        }
    }

    /// Every configured sink: the store's own, then MQTT.
    pub fn kinds(&self) -> Vec<SinkKind> {
        self.plan(&[]).kinds()
    }

    /// The configured sinks, in [`SinkKind`] order. `feed` is the display's, present
    /// exactly when the display is configured.
    pub fn build(&self, feed: Option<Arc<display::Feed>>) -> Vec<Arc<Sink>> {
        self.kinds()
            .into_iter()
            .filter_map(|kind| {
                Some(match kind {
                    SinkKind::Printer => Sink::Printer {
                        printer: self.receipts.printer()?,
                        store_name: self.receipts.store_name.clone(),
                        poi_names: self.receipts.poi_names.clone(),
                        columns: self.receipts.paper_columns,
                        display: feed.clone(),
                    },
                    SinkKind::Display => Sink::Display(feed.clone()?),
                    SinkKind::Exec => Sink::Exec(exec::Exec {
                        command: self.exec.clone()?,
                        timeout: self.exec_timeout,
                    }),
                    SinkKind::Log => Sink::Log,
                    SinkKind::Mqtt => Sink::Mqtt(Box::new(mqtt::MqttSink::new(self.mqtt.clone()?))),
                    SinkKind::Speaker => {
                        Sink::Speaker(Box::new(speaker::Speaker::new(self.speaker.as_ref()?)))
                    }
                })
            })
            .map(Arc::new)
            .collect()
    }
}

/// A configured output.
pub enum Sink {
    /// `--printer`: an ESC/POS receipt.
    Printer {
        printer: printer::Printer,
        store_name: Option<String>,
        poi_names: Vec<(String, String)>,
        columns: usize,
        /// The display, to show printer trouble on, when there is one.
        display: Option<Arc<display::Feed>>,
    },
    /// `--display-listen`: the counter screen's feed.
    Display(Arc<display::Feed>),
    /// `--exec`: a command per applied message.
    Exec(exec::Exec),
    /// No printer, display or hook configured: one log line per applied message.
    Log,
    /// `--mqtt`: publishes to the broker, done on its PUBACK.
    Mqtt(Box<mqtt::MqttSink>),
    /// `--speaker`: says it aloud, done when the player exits 0.
    Speaker(Box<speaker::Speaker>),
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It may work next time (a printer out of paper, a broker away).
    Retry(String),
    /// It never will (a publish larger than the broker takes, or refused by it): the
    /// job is given up with the reason at once, even by a sink that otherwise retries
    /// without limit, so it does not hold up the jobs behind it.
    Never(String),
}

/// How a delivery that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Done,
    /// Not delivered, and never to be: the note for `last_error` (an announcement
    /// past its minute).
    Dropped(String),
}

impl Sink {
    pub fn kind(&self) -> SinkKind {
        match self {
            Sink::Printer { .. } => SinkKind::Printer,
            Sink::Display(_) => SinkKind::Display,
            Sink::Exec(_) => SinkKind::Exec,
            Sink::Log => SinkKind::Log,
            Sink::Mqtt(_) => SinkKind::Mqtt,
            Sink::Speaker(_) => SinkKind::Speaker,
        }
    }

    /// Jobs taken per round. One for sinks whose delivery must not repeat after a
    /// crash (a receipt, a hook); many for idempotent, cheap ones.
    pub fn batch(&self) -> usize {
        match self {
            // One announcement at a time, in order; each is worth a minute at most.
            Sink::Printer { .. } | Sink::Exec(_) | Sink::Speaker(_) => 1,
            // Each publish waits for its PUBACK; many per round make a backlog after an
            // outage cost a handful of commits, and a repeat is harmless (at least once).
            Sink::Display(_) | Sink::Log | Sink::Mqtt(_) => 64,
        }
    }

    pub fn time_limit(&self) -> Duration {
        match self {
            Sink::Printer { .. } => printer::TIME_LIMIT,
            Sink::Exec(e) => e.time_limit(),
            Sink::Display(_) | Sink::Log => Duration::from_secs(1),
            Sink::Mqtt(_) => mqtt::TIME_LIMIT,
            Sink::Speaker(s) => s.time_limit(),
        }
    }

    /// The wait before retry number `attempt`. MQTT's own attempt already waited for
    /// the connection (which reconnects with its own backoff), so it goes again soon:
    /// a backlog moves within moments of the broker's return.
    pub fn retry_wait(&self, attempt: i64) -> Duration {
        match self {
            Sink::Mqtt(_) => Duration::from_secs(1),
            Sink::Speaker(_) => speaker::Speaker::retry_wait(attempt),
            _ => backoff::OUTBOX.wait(attempt),
        }
    }

    /// Whether a failed job is retried without limit: a broker outage of any length is
    /// not a bad message (SPEC §12), so `--output-attempts` does not apply; an
    /// announcement is retried until its minute is over, then dropped (its own limit).
    pub fn retries_forever(&self) -> bool {
        matches!(self, Sink::Mqtt(_) | Sink::Speaker(_))
    }

    /// Delivers `job` once. Only MQTT knows a job that can never be delivered (too
    /// large for the broker, or refused by it): every other failure may pass.
    pub async fn deliver(&self, job: &Job) -> Result<Delivered, Failure> {
        match self {
            Sink::Mqtt(m) if matches!(job.work, Work::Coupon(_) | Work::Relayed) => {
                m.deliver(job).await.map(|()| Delivered::Done)
            }
            _ => self.deliver_here(job).await.map_err(Failure::Retry),
        }
    }

    async fn deliver_here(&self, job: &Job) -> Result<Delivered, String> {
        let sheet = match &job.work {
            Work::Task(Task::PrintTest) => Some(Sheet::Test),
            Work::Report(r) => Some(Sheet::Report(r)),
            Work::Task(Task::Report) => return Err("the report's day is missing".into()),
            Work::Task(Task::SpeakTest(_)) | Work::Coupon(_) | Work::Relayed => None,
        };
        if let Some(sheet) = sheet {
            return self.print_sheet(sheet).await.map(|()| Delivered::Done);
        }
        let told = match self {
            Sink::Printer {
                printer,
                store_name,
                poi_names,
                columns,
                display,
            } => {
                let event = job.coupon()?;
                let lines = receipt::lines(
                    event,
                    job.reprint,
                    time::now_secs(),
                    store_name.as_deref(),
                    poi_names,
                );
                let sent = printer.send(receipt::escpos(&lines, *columns)).await;
                if let Some(feed) = display {
                    feed.printer(sent.as_ref().err().map(String::as_str));
                }
                sent?;
                log::info!("printer: printed {}", describe(event, job.reprint));
                Ok(())
            }
            Sink::Display(feed) => {
                feed.upsert(display::Entry::from_event(job.coupon()?, job.reprint));
                Ok(())
            }
            Sink::Exec(e) => e.run(job).await,
            Sink::Log => {
                log::info!("{}", describe(job.coupon()?, job.reprint));
                Ok(())
            }
            // Delivered by `deliver` itself.
            Sink::Mqtt(_) => Ok(()),
            Sink::Speaker(s) => return s.deliver(job).await,
        };
        told.map(|()| Delivered::Done)
    }

    /// A sheet about no coupon (a print test, the end-of-day report) on the printer;
    /// other sinks have nothing to show for it.
    async fn print_sheet(&self, sheet: Sheet<'_>) -> Result<(), String> {
        if let Sink::Printer {
            printer,
            store_name,
            columns,
            poi_names,
            ..
        } = self
        {
            let (now, name) = (time::now_secs(), store_name.as_deref());
            let (lines, what) = match sheet {
                Sheet::Test => (
                    receipt::test_lines(name, *columns, now),
                    "a test receipt (coupond print-test)".to_string(),
                ),
                Sheet::Report(r) => (
                    receipt::day_lines(r, poi_names, name, now),
                    format!("the end-of-day report of {}", r.date),
                ),
            };
            printer.send(receipt::escpos(&lines, *columns)).await?;
            log::info!("printer: printed {what}");
        }
        Ok(())
    }
}

/// A printed sheet that is about no coupon.
enum Sheet<'a> {
    Test,
    Report(&'a DayReport),
}

/// One line for a person: what happened to which coupon, when.
pub fn describe(e: &JobEvent, reprint: bool) -> String {
    let mut s = format!(
        "{}{}{}coupon {} {} ({})",
        if e.test() { "TEST (测试) " } else { "" },
        if reprint { "reprint: " } else { "" },
        if e.from_catchup() { "recovered: " } else { "" },
        e.certificate_id,
        e.action,
        e.action.headline_zh()
    );
    // What was bought, when known (the logger sanitizes the whole line).
    if let Some(d) = &e.details {
        if let Some(t) = &d.title {
            s += &format!(", {t}");
        }
        if let Some(pay) = d.pay_amount {
            s += &format!(", paid {}", crate::details::yuan(pay));
        }
        if let Some(poi) = &d.poi_id {
            s += &format!(", POI {poi}");
        }
    }
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
    fn the_log_line_says_what_was_bought_when_known() {
        let mut job = crate::sinks::exec::tests::sample_job();
        let Work::Coupon(e) = &mut job.work else {
            panic!("a coupon job")
        };
        assert!(!describe(e, false).contains("paid"));
        e.details = Some(crate::sinks::exec::tests::sample_details());
        let line = describe(e, false);
        assert!(
            line.contains("coupon 456 verify (核销成功), 双人套餐, paid 99.00, POI 7100000000000000123, order 123"),
            "{line}"
        );
    }

    #[test]
    fn codes_are_masked_but_for_the_last_four() {
        assert_eq!(mask_code("ABCD12345678"), "********5678");
        assert_eq!(mask_code("1234"), "1234");
        assert_eq!(mask_code("12"), "12");
        assert_eq!(mask_code("券码ABCDE"), "***BCDE");
        assert_eq!(mask_code(""), "");
    }
}
