//! The `details` and `lookups` tables (SPEC §13): what was bought with each coupon, and
//! the queries still to make for it.
//!
//! A lookup is queued in the transaction that applies a coupon's message (never for a
//! test push, nor without an `order_id`, nor when the details are known); a recovered
//! record that carries `amount` and `sku` gives the details there and then. The lookup
//! task (`crate::lookup`) takes the due lookups, asks Douyin and ends each one here:
//! details stored (the lookup row goes), Douyin's answer lacks the coupon (final),
//! or a failure to retry at a later time or, after 24 hours, to give up.
//!
//! [`Store::details_of`] is the one way to read a coupon's details (receipts, the hook,
//! the speaker, the day report).

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{Result, Store};
use crate::details::{self, Details};
use crate::model::{Arrival, Job, Source, Work};
use crate::wire::CertificateMsg;

/// A coupon whose details are to be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub certificate_id: String,
    pub order_id: String,
    pub account_id: Option<String>,
    /// When it was queued (RFC 3339): lookups are given up 24 hours later.
    pub created_at: String,
    /// Queries made so far.
    pub attempts: i64,
}

/// How one query for a lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupEnd {
    Found(Box<Details>),
    /// Douyin answered without the coupon: final, with what to say.
    Absent(String),
    /// Failed with this error; ask again at `next_at` (RFC 3339).
    Retry {
        error: String,
        next_at: String,
    },
    /// Failed with this error for the last time.
    GiveUp(String),
}

/// `coupond status`'s view of the details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetailsCounts {
    /// Coupons whose details are known.
    pub fetched: i64,
    /// Lookups still to be answered.
    pub waiting: i64,
    /// Lookups that ended without details: Douyin did not know the coupon, or did not
    /// answer within 24 hours.
    pub failed: i64,
}

const DETAILS_COLUMNS: &str = "certificate_id, title, sku_id, pay_amount, original_amount,
    coupon_pay_amount, merchant_ticket_amount, poi_id, verify_id, origin, fetched_at";

fn details_row(r: &Row) -> Result<Details> {
    Ok(Details {
        certificate_id: r.get(0)?,
        title: r.get(1)?,
        sku_id: r.get(2)?,
        pay_amount: r.get(3)?,
        original_amount: r.get(4)?,
        coupon_pay_amount: r.get(5)?,
        merchant_ticket_amount: r.get(6)?,
        poi_id: r.get(7)?,
        verify_id: r.get(8)?,
        origin: r.get(9)?,
        fetched_at: r.get(10)?,
    })
}

/// Stores `d` unless the coupon's details are known already (the first answer stays).
fn insert_details(tx: &rusqlite::Connection, d: &Details) -> Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO details ({DETAILS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (certificate_id) DO NOTHING"
    ))?
    .execute(params![
        d.certificate_id,
        d.title,
        d.sku_id,
        d.pay_amount,
        d.original_amount,
        d.coupon_pay_amount,
        d.merchant_ticket_amount,
        d.poi_id,
        d.verify_id,
        d.origin,
        d.fetched_at,
    ])?;
    tx.prepare_cached("DELETE FROM lookups WHERE certificate_id = ?1")?
        .execute([&d.certificate_id])?;
    Ok(())
}

/// In the transaction that applied `c` (not a test push): its details from the
/// recovered record, or a lookup when none are known and there is an order to ask by.
pub(super) fn after_applied(tx: &Transaction, a: &Arrival, c: &CertificateMsg) -> Result<()> {
    if a.source == Source::Catchup {
        let record = serde_json::from_slice::<serde_json::Value>(&a.body).ok();
        let known = record
            .as_ref()
            .and_then(|r| details::from_record(r, &c.certificate_id, &a.received_at));
        if let Some(d) = known {
            return insert_details(tx, &d);
        }
    }
    let Some(order_id) = &c.order_id else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO lookups (certificate_id, order_id, account_id, state, created_at, next_at)
         SELECT ?1, ?2, ?3, 'pending', ?4, ?4
         WHERE NOT EXISTS (SELECT 1 FROM details WHERE certificate_id = ?1)
         ON CONFLICT (certificate_id) DO NOTHING",
    )?
    .execute(params![
        c.certificate_id,
        order_id,
        c.account_id,
        a.received_at
    ])?;
    Ok(())
}

impl Store {
    /// What was bought with coupon `certificate_id`, when known.
    pub fn details_of(&self, certificate_id: &str) -> Result<Option<Details>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {DETAILS_COLUMNS} FROM details WHERE certificate_id = ?1"
            ))?
            .query_row([certificate_id], details_row)
            .optional()
    }

    /// Gives each coupon job its details, or, while they are being looked up, the time
    /// it was queued (see [`Job::awaiting_details`]). With `held_after` (Unix ms), the
    /// list ends at the first job queued after it that still awaits its details: the
    /// outbox holds its queue there, so what is behind need not be read yet.
    pub(super) fn add_details(&self, jobs: &mut Vec<Job>, held_after: Option<i64>) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {}, CASE WHEN d.certificate_id IS NULL AND EXISTS (
                    SELECT 1 FROM lookups l WHERE l.certificate_id = ?2 AND l.state = 'pending')
                  THEN CAST(round((julianday(o.created_at) - 2440587.5) * 86400000) AS INTEGER)
                  END
             FROM outputs o LEFT JOIN details d ON d.certificate_id = ?2 WHERE o.id = ?1",
            DETAILS_COLUMNS
                .split(',')
                .map(|c| format!("d.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        for i in 0..jobs.len() {
            let job = &mut jobs[i];
            let Work::Coupon(event) = &mut job.work else {
                continue;
            };
            let (details, awaiting) = stmt
                .query_row(params![job.id, event.certificate_id], |r| {
                    let known = r.get::<_, Option<String>>(0)?.is_some();
                    Ok((known.then(|| details_row(r)).transpose()?, r.get(11)?))
                })
                .optional()?
                .unwrap_or((None, None));
            event.details = details;
            job.awaiting_details = awaiting;
            if awaiting
                .zip(held_after)
                .is_some_and(|(queued, after)| queued > after)
            {
                jobs.truncate(i + 1);
                break;
            }
        }
        Ok(())
    }

    /// Up to `limit` lookups due at `now` (RFC 3339), the longest due first.
    pub fn due_lookups(&self, now: &str, limit: usize) -> Result<Vec<Lookup>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT certificate_id, order_id, account_id, created_at, attempts FROM lookups
             WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at, rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok(Lookup {
                certificate_id: r.get(0)?,
                order_id: r.get(1)?,
                account_id: r.get(2)?,
                created_at: r.get(3)?,
                attempts: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// When the next pending lookup is due (Unix ms), if any is pending.
    pub fn next_lookup_ms(&self) -> Result<Option<i64>> {
        self.conn
            .prepare_cached(
                "SELECT CAST(round((julianday(min(next_at)) - 2440587.5) * 86400000) AS INTEGER)
                 FROM lookups WHERE state = 'pending'",
            )?
            .query_row([], |r| r.get(0))
    }

    /// Records how a query for coupon `certificate_id` ended.
    pub fn end_lookup(&mut self, certificate_id: &str, end: &LookupEnd) -> Result<()> {
        let tx = self.conn.transaction()?;
        let (state, error, next_at) = match end {
            LookupEnd::Found(d) => {
                insert_details(&tx, d)?;
                return tx.commit();
            }
            LookupEnd::Absent(why) => ("absent", why, None),
            LookupEnd::Retry { error, next_at } => ("pending", error, Some(next_at)),
            LookupEnd::GiveUp(error) => ("failed", error, None),
        };
        tx.prepare_cached(
            "UPDATE lookups SET state = ?2, last_error = ?3, attempts = attempts + 1,
                    next_at = coalesce(?4, next_at)
             WHERE certificate_id = ?1",
        )?
        .execute(params![certificate_id, state, error, next_at])?;
        tx.commit()
    }

    /// Details known, lookups waiting, lookups ended without details.
    pub fn details_counts(&self) -> Result<DetailsCounts> {
        self.conn.query_row(
            "SELECT (SELECT count(*) FROM details),
                    (SELECT count(*) FROM lookups WHERE state = 'pending'),
                    (SELECT count(*) FROM lookups WHERE state != 'pending')",
            [],
            |r| {
                Ok(DetailsCounts {
                    fetched: r.get(0)?,
                    waiting: r.get(1)?,
                    failed: r.get(2)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::Action;
    use crate::details::DetailsOrigin;
    use crate::intake::Kind;
    use crate::intake::{Intake, Message};
    use crate::model::OutputPlan;
    use crate::model::SinkKind;

    fn store(name: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("coupond-details-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("coupond.db")).unwrap(), dir)
    }

    fn arrival(id: &str, order: Option<&str>, source: Source, test: bool, body: &str) -> Arrival {
        Arrival {
            received_at: "2026-12-05T00:00:00.000Z".into(),
            msg_id: None,
            signature: None,
            body: body.as_bytes().to_vec(),
            intake: Intake::Message(Message {
                event: Some("life_trade_certificate_notify".into()),
                client_key: Some("app".into()),
                log_id: None,
                test,
                kind: Kind::Certificate(CertificateMsg {
                    action: Action::Verify,
                    msg_time: 1_700_000_000,
                    certificate_id: id.into(),
                    order_id: order.map(String::from),
                    code: None,
                    account_id: Some("6900".into()),
                }),
            }),
            source,
            dedup: Some(format!("{id}-dedup")),
        }
    }

    fn plan() -> OutputPlan {
        OutputPlan::new(vec![SinkKind::Printer], Action::ALL.to_vec(), None).with_details(true)
    }

    fn found(id: &str) -> LookupEnd {
        LookupEnd::Found(Box::new(Details {
            certificate_id: id.into(),
            title: Some("套餐".into()),
            sku_id: None,
            pay_amount: Some(9900),
            original_amount: None,
            coupon_pay_amount: None,
            merchant_ticket_amount: None,
            poi_id: Some("7100000000000000123".into()),
            verify_id: None,
            origin: DetailsOrigin::Query,
            fetched_at: "2026-12-05T00:00:01.000Z".into(),
        }))
    }

    #[test]
    fn a_verify_queues_a_lookup_and_its_job_waits_until_the_lookup_ends() {
        let (mut s, dir) = store("wait");
        let arrivals = [
            arrival("c1", Some("o1"), Source::Push, false, "{}"),
            arrival("c2", Some("o2"), Source::Push, false, "{}"),
            arrival("c3", None, Source::Push, false, "{}"),
            arrival("c4", Some("o4"), Source::Test, true, "{}"),
        ];
        s.ingest(&arrivals, &plan()).unwrap();
        let due = s.due_lookups("2026-12-05T00:00:00.000Z", 10).unwrap();
        let ids: Vec<&str> = due.iter().map(|l| l.certificate_id.as_str()).collect();
        assert_eq!(
            ids,
            ["c1", "c2"],
            "none without an order, none for a test push"
        );
        assert_eq!(s.next_lookup_ms().unwrap(), Some(1_796_428_800_000));
        let jobs = s.pending_jobs(SinkKind::Printer, 10).unwrap();
        let waits: Vec<Option<i64>> = jobs.iter().map(|j| j.awaiting_details).collect();
        // Queued at the commit's time, read from the database: the same after a restart.
        let at = Some(1_796_428_800_000);
        assert_eq!(waits, [at, at, None, None]);
        // The outbox's read stops at the first job still held (queued after the cut-off).
        let held = s
            .pending_jobs_held(SinkKind::Printer, 10, Some(1_796_428_799_999))
            .unwrap();
        assert_eq!(held.len(), 1);
        let due = s
            .pending_jobs_held(SinkKind::Printer, 10, Some(1_796_428_800_000))
            .unwrap();
        assert_eq!(due.len(), 4, "its wait is over: nothing is held");
        s.end_lookup("c1", &found("c1")).unwrap();
        s.end_lookup("c2", &LookupEnd::Absent("not listed".into()))
            .unwrap();
        let jobs = s.pending_jobs(SinkKind::Printer, 10).unwrap();
        assert!(jobs.iter().all(|j| j.awaiting_details.is_none()));
        let d = jobs[0].coupon().unwrap().details.as_ref().unwrap();
        assert_eq!(d.poi_id.as_deref(), Some("7100000000000000123"));
        assert_eq!(s.details_of("c1").unwrap().unwrap().pay_amount, Some(9900));
        assert_eq!(
            s.details_counts().unwrap(),
            DetailsCounts {
                fetched: 1,
                waiting: 0,
                failed: 1
            }
        );
        // A retry moves next_at on; a give-up is counted as failed.
        s.ingest(
            &[arrival("c5", Some("o5"), Source::Push, false, "{}")],
            &plan(),
        )
        .unwrap();
        let retry = LookupEnd::Retry {
            error: "HTTP 500".into(),
            next_at: "2026-12-05T00:00:30.000Z".into(),
        };
        s.end_lookup("c5", &retry).unwrap();
        assert!(s
            .due_lookups("2026-12-05T00:00:29.999Z", 10)
            .unwrap()
            .is_empty());
        let again = s.due_lookups("2026-12-05T00:00:30.000Z", 10).unwrap();
        assert_eq!(again[0].attempts, 1);
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recovered_record_with_amount_and_sku_stores_its_details_and_asks_nothing() {
        let (mut s, dir) = store("record");
        let record = r#"{"verify_id":"V9","certificate_id":"c9","poi_id":7100000000000000999,
            "amount":{"pay_amount":6800,"original_amount":8800},"sku":{"title":"下午茶"}}"#;
        let plain = r#"{"verify_id":"V8","certificate_id":"c8"}"#;
        s.ingest(
            &[
                arrival("c9", Some("o9"), Source::Catchup, false, record),
                arrival("c8", Some("o8"), Source::Catchup, false, plain),
            ],
            &plan(),
        )
        .unwrap();
        let d = s.details_of("c9").unwrap().unwrap();
        assert_eq!(d.origin, DetailsOrigin::Record);
        assert_eq!(d.poi_id.as_deref(), Some("7100000000000000999"));
        assert_eq!((d.pay_amount, d.original_amount), (Some(6800), Some(8800)));
        let due = s.due_lookups("9999", 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].certificate_id, "c8", "a bare record is looked up");
        // Details off: nothing is stored or queued.
        let off = plan().with_details(false);
        s.ingest(
            &[arrival("c7", Some("o7"), Source::Push, false, "{}")],
            &off,
        )
        .unwrap();
        assert_eq!(s.due_lookups("9999", 10).unwrap().len(), 1);
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
