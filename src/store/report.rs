//! What `coupond status`, systemd's STATUS= line and the display read: counts, the
//! latest certificates, the broker links, catch-up's progress.

use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::schema_version;
use super::{Result, Store};
use crate::coupon::{Action, Status};
use crate::intake::Outcome;
use crate::model::{LinkName, LinkStatus, OutputState, SinkKind};
use crate::time;

/// One account's catch-up, as `coupond status` shows it.
#[derive(Debug, Clone, Default)]
pub struct CatchupRow {
    pub account_id: String,
    pub sweep_at: Option<String>,
    pub window: Option<(i64, i64)>,
    pub records: i64,
    pub recovered: i64,
    /// (when, why) of the last failed sweep.
    pub error: Option<(String, String)>,
}

/// A certificate as the counter display shows it.
#[derive(Debug, Clone)]
pub struct CertificateRow {
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    pub status: Status,
    pub status_msg_time: i64,
    pub updated_at: String,
    /// Set by a test push.
    pub test: bool,
    /// What was bought, when known.
    pub details: Option<crate::details::Details>,
}

/// A failed output job: (id, sink, what about (`certificate ID`, `task WORD`, `message
/// ID`), attempts, last error).
pub type FailedOutput = (i64, SinkKind, String, i64, Option<String>);

/// `coupond status`'s view of the database.
#[derive(Debug, Default)]
pub struct Summary {
    pub schema_version: i64,
    pub certificates: Vec<(Status, i64)>,
    pub outcomes: Vec<(Outcome, i64)>,
    pub redeliveries: i64,
    pub outputs: Vec<(SinkKind, OutputState, i64)>,
    /// The last five.
    pub failed_outputs: Vec<FailedOutput>,
    pub rejected: i64,
    /// Deliveries of the stored rejected bodies beyond the first.
    pub rejected_repeats: i64,
    pub last_message: Option<(String, Outcome, Option<Action>, Option<String>)>,
    pub last_rejected: Option<(String, i64, String)>,
    pub counters: Vec<CounterRow>,
    pub catchup: Vec<CatchupRow>,
    /// Messages catch-up applied, in all.
    pub recovered: i64,
    /// Test pushes (`coupond send`), counted apart from the rest.
    pub test_messages: i64,
    pub test_coupons: i64,
    /// See [`Store::signature_failures_last_hour`].
    pub signature_failures: i64,
    /// The broker connections of the last daemon that ran.
    pub links: Vec<Link>,
    /// Coupon details (SPEC §13): fetched, waiting, failed.
    pub details: super::DetailsCounts,
}

/// A broker connection's state, as the daemon last recorded it, with its traffic.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: LinkName,
    pub state: LinkStatus,
    pub since: String,
    pub detail: Option<String>,
    /// `mqtt`: jobs waiting for the broker; `mqtt-source`: none.
    pub queued: i64,
    /// `mqtt`: the last PUBACK'd publish; `mqtt-source`: the last push ingested.
    pub last: Option<String>,
}

/// A `counters` row: requests counted rather than stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub name: String,
    pub count: i64,
    pub last_at: String,
    pub last_detail: Option<String>,
}

/// Certificates a test push set, which `status` counts apart.
const TEST_CERTIFICATE: &str = "EXISTS (SELECT 1 FROM messages m
    WHERE m.certificate_id = c.certificate_id AND m.source = 'test')";

impl Store {
    /// Genuine-looking pushes that failed the signature check in the last hour
    /// ([`crate::intake::WRONG_SECRET`]): a wrong secret, not internet junk.
    pub fn signature_failures_last_hour(&self) -> Result<i64> {
        let since = time::rfc3339_millis(time::now_millis() - 3_600_000);
        self.conn
            .prepare_cached(
                "SELECT coalesce(sum(deliveries), 0) FROM rejected
                 WHERE coalesce(last_received_at, received_at) >= ?1 AND reason = ?2",
            )?
            .query_row(params![since, crate::intake::WRONG_SECRET], |r| r.get(0))
    }

    /// The broker connections with their queue and last traffic.
    pub fn links(&self) -> Result<Vec<Link>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, state, since, detail,
                    CASE name WHEN 'mqtt' THEN (SELECT count(*) FROM outputs
                                                 WHERE state = 'pending' AND sink = 'mqtt')
                              ELSE 0 END,
                    CASE name WHEN 'mqtt' THEN (SELECT max(done_at) FROM outputs
                                                 WHERE sink = 'mqtt' AND state = 'done')
                              ELSE (SELECT max(last_received_at) FROM messages
                                    WHERE source = 'mqtt') END
             FROM links ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Link {
                name: r.get(0)?,
                state: r.get(1)?,
                since: r.get(2)?,
                detail: r.get(3)?,
                queued: r.get(4)?,
                last: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    /// A one-line summary for systemd's STATUS=: cheap (an index and the rowid).
    pub fn status_line(&self) -> Result<String> {
        let messages: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| {
                    r.get(0)
                })?;
        let pending: i64 = self.conn.query_row(
            "SELECT count(*) FROM outputs WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        let mut line = format!("{messages} messages recorded, {pending} outputs pending");
        let bad = self.signature_failures_last_hour()?;
        if bad > 0 {
            line += &format!(
                "; {bad} push(es) failed the signature check in the last hour: wrong client secret?"
            );
        }
        for link in self.links()? {
            line += &format!("; {} {}", link.name, link.state);
            if link.name == LinkName::Mqtt {
                line += &format!(", {} queued", link.queued);
            }
        }
        Ok(line)
    }

    /// The most recently changed certificates, newest first.
    pub fn latest_certificates(&self, limit: usize) -> Result<Vec<CertificateRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT certificate_id, order_id, code, account_id, status, status_msg_time,
                        updated_at, {TEST_CERTIFICATE}
                 FROM certificates c ORDER BY updated_at DESC, rowid DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(CertificateRow {
                certificate_id: r.get(0)?,
                order_id: r.get(1)?,
                code: r.get(2)?,
                account_id: r.get(3)?,
                status: r.get(4)?,
                status_msg_time: r.get(5)?,
                updated_at: r.get(6)?,
                test: r.get(7)?,
                details: None,
            })
        })?;
        let mut rows = rows.collect::<Result<Vec<_>>>()?;
        for row in &mut rows {
            row.details = self.details_of(&row.certificate_id)?;
        }
        Ok(rows)
    }

    /// Everything `coupond status` prints.
    pub fn summary(&self) -> Result<Summary> {
        let c = &self.conn;
        fn pairs<T: FromSql>(c: &Connection, sql: &str) -> Result<Vec<(T, i64)>> {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        }
        let (outputs, failed_outputs) = (output_counts(c)?, failed_outputs(c)?);
        let counters = counters(c)?;
        Ok(Summary {
            schema_version: schema_version(c)?,
            certificates: pairs(
                c,
                &format!(
                    "SELECT status, count(*) FROM certificates c WHERE NOT {TEST_CERTIFICATE}
                     GROUP BY status ORDER BY status"
                ),
            )?,
            outcomes: pairs(
                c,
                "SELECT outcome, count(*) FROM messages WHERE source != 'test'
                 GROUP BY outcome ORDER BY outcome",
            )?,
            signature_failures: self.signature_failures_last_hour()?,
            test_messages: c.query_row(
                "SELECT count(*) FROM messages WHERE source = 'test'",
                [],
                |r| r.get(0),
            )?,
            test_coupons: c.query_row(
                &format!("SELECT count(*) FROM certificates c WHERE {TEST_CERTIFICATE}"),
                [],
                |r| r.get(0),
            )?,
            redeliveries: c.query_row(
                "SELECT coalesce(sum(deliveries - 1), 0) FROM messages",
                [],
                |r| r.get(0),
            )?,
            outputs,
            failed_outputs,
            rejected: c.query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))?,
            rejected_repeats: c.query_row(
                "SELECT coalesce(sum(deliveries - 1), 0) FROM rejected",
                [],
                |r| r.get(0),
            )?,
            last_message: c
                .query_row(
                    "SELECT last_received_at, outcome, action, certificate_id FROM messages
                     ORDER BY last_received_at DESC, id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
            last_rejected: c
                .query_row(
                    "SELECT received_at, status, reason FROM rejected ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
            counters,
            catchup: self.catchup_rows()?,
            recovered: c.query_row(
                "SELECT count(*) FROM messages WHERE source = 'reconcile' AND outcome = 'applied'",
                [],
                |r| r.get(0),
            )?,
            links: self.links()?,
            details: self.details_counts()?,
        })
    }

    /// Every account's catch-up state.
    pub fn catchup_rows(&self) -> Result<Vec<CatchupRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT account_id, sweep_at, sweep_start, sweep_end, sweep_records, sweep_recovered,
                    error, error_at
             FROM catchup ORDER BY account_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let window = match (r.get::<_, Option<i64>>(2)?, r.get::<_, Option<i64>>(3)?) {
                (Some(s), Some(e)) => Some((s, e)),
                _ => None,
            };
            let error = match (
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ) {
                (Some(e), Some(at)) => Some((at, e)),
                _ => None,
            };
            Ok(CatchupRow {
                account_id: r.get(0)?,
                sweep_at: r.get(1)?,
                window,
                records: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                recovered: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                error,
            })
        })?;
        rows.collect()
    }
}

/// Output jobs per sink and state.
fn output_counts(c: &Connection) -> Result<Vec<(SinkKind, OutputState, i64)>> {
    let mut stmt = c.prepare(
        "SELECT sink, state, count(*) FROM outputs GROUP BY sink, state ORDER BY sink, state",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_>>();
    rows
}

/// The last failed output jobs: (id, sink, what about, attempts, last error).
fn failed_outputs(c: &Connection) -> Result<Vec<FailedOutput>> {
    let mut stmt = c.prepare(
        "SELECT o.id, o.sink, coalesce('certificate ' || m.certificate_id, 'task ' || o.work,
                         'message ' || m.id, ''), o.attempts, o.last_error
         FROM outputs o LEFT JOIN messages m ON m.id = o.message_id
         WHERE o.state = 'failed' ORDER BY o.id DESC LIMIT 5",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_>>();
    rows
}

/// Requests counted rather than stored.
fn counters(c: &Connection) -> Result<Vec<CounterRow>> {
    let mut stmt =
        c.prepare("SELECT name, count, last_at, last_detail FROM counters ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(CounterRow {
                name: r.get(0)?,
                count: r.get(1)?,
                last_at: r.get(2)?,
                last_detail: r.get(3)?,
            })
        })?
        .collect::<Result<_>>();
    rows
}
