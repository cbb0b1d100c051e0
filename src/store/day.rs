//! One business day's tally, for the end-of-day report (SPEC §15): the SQL and the
//! arithmetic, nothing about how it is shown.
//!
//! Each event counts at its own time, `messages.msg_time` (Douyin's, in seconds; for a
//! message recovered by catch-up, the record's `verify_time` or `cancel_time`, which is
//! what catch-up stores there), never at the time it arrived. Only `applied` messages
//! count (a retry, a stale message, a push and the recovered record of the same event
//! count once), and never a test push. Amounts come from `details` (SPEC §13) and are
//! never guessed: a coupon without a known `pay_amount` is counted in `without_amount`
//! and left out of the sums.
//!
//! The partial index `messages_applied_by_time` keeps this to the day's own rows
//! however long the database is kept.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};
use crate::coupon::Action;
use crate::model::{DayReport, DayTally, Group, SinkKind, Task};
use crate::schedule::Date;

/// One applied, counted message with what is known of its coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub action: Action,
    pub recovered: bool,
    pub title: Option<String>,
    pub poi_id: Option<String>,
    pub pay_amount: Option<i64>,
    pub original_amount: Option<i64>,
}

impl Store {
    /// Queues the report of business day `date`, `[from, to)`, for the printer and
    /// returns its output job. `scheduled` (`--report-at`) marks the day as the last
    /// one queued, in the same transaction, and queues nothing if it (or a later day)
    /// already was: a day is printed once however often this is asked.
    pub fn queue_report(
        &mut self,
        date: Date,
        (from, to): (i64, i64),
        scheduled: bool,
    ) -> Result<Option<i64>> {
        let tx = self.conn.transaction()?;
        if scheduled {
            let last: Option<String> =
                tx.query_row("SELECT last_day FROM report_schedule", [], |r| r.get(0))?;
            if last.is_some_and(|last| last >= date.to_string()) {
                return Ok(None);
            }
            tx.execute(
                "UPDATE report_schedule SET last_day = ?1",
                [date.to_string()],
            )?;
        }
        tx.execute(
            "INSERT INTO outputs (work, sink, created_at) VALUES (?1, ?2, ?3)",
            params![Task::Report, SinkKind::Printer, crate::time::now_rfc3339()],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO report_jobs (output_id, day, day_from, day_to) VALUES (?1, ?2, ?3, ?4)",
            params![id, date.to_string(), from, to],
        )?;
        tx.commit()?;
        self.queued = true;
        Ok(Some(id))
    }

    /// `--report-at`'s memory: since when the database has been there (RFC 3339), and
    /// the last business day whose report was queued.
    pub fn report_schedule(&self) -> Result<(String, Option<Date>)> {
        self.conn
            .query_row("SELECT since, last_day FROM report_schedule", [], |r| {
                let last: Option<String> = r.get(1)?;
                Ok((r.get(0)?, last.and_then(|d| Date::parse(&d))))
            })
    }

    /// The report output job `id` prints, with the numbers as they are now; `None` if
    /// the job has no day.
    pub fn report_job(&self, id: i64) -> Result<Option<DayReport>> {
        let day = self
            .conn
            .prepare_cached("SELECT day, day_from, day_to FROM report_jobs WHERE output_id = ?1")?
            .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((day, from, to)) = day else {
            return Ok(None);
        };
        let Some(date) = Date::parse(&day) else {
            return Ok(None);
        };
        self.day_report(date, from, to).map(Some)
    }

    /// The report of business day `date`, `[from, to)`.
    pub fn day_report(&self, date: Date, from: i64, to: i64) -> Result<DayReport> {
        Ok(DayReport {
            date,
            from,
            to,
            tally: self.day_tally(from, to)?,
        })
    }

    /// The tally of `[from, to)` (Unix seconds).
    pub fn day_tally(&self, from: i64, to: i64) -> Result<DayTally> {
        let mut tally = tally(&self.counted(from, to)?);
        let (from_text, to_text) = (
            crate::time::rfc3339_millis(from * 1000),
            crate::time::rfc3339_millis(to * 1000),
        );
        tally.rejected = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(deliveries), 0) FROM rejected
                 WHERE received_at >= ?1 AND received_at < ?2",
            )?
            .query_row(params![from_text, to_text], |r| r.get(0))?;
        tally.failed_outputs = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM outputs
                 WHERE created_at >= ?1 AND created_at < ?2 AND state = 'failed'",
            )?
            .query_row(params![from_text, to_text], |r| r.get(0))?;
        Ok(tally)
    }

    /// The applied, non-test messages of `[from, to)`, with their coupon's details.
    fn counted(&self, from: i64, to: i64) -> Result<Vec<Counted>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.action, m.source = 'reconcile',
                    d.title, d.poi_id, d.pay_amount, d.original_amount
             FROM messages m LEFT JOIN details d ON d.certificate_id = m.certificate_id
             WHERE m.outcome = 'applied' AND m.msg_time >= ?1 AND m.msg_time < ?2
               AND m.source != 'test'",
        )?;
        let rows = stmt.query_map(params![from, to], |r| {
            Ok(Counted {
                action: r.get(0)?,
                recovered: r.get(1)?,
                title: r.get(2)?,
                poi_id: r.get(3)?,
                pay_amount: r.get(4)?,
                original_amount: r.get(5)?,
            })
        })?;
        rows.collect()
    }
}

/// Adds up the day's messages: a verify counts +1 at its coupon's amounts, a cancel −1,
/// a refund only in its own count.
pub fn tally(rows: &[Counted]) -> DayTally {
    let mut t = DayTally::default();
    let mut deals = Vec::new();
    let mut stores = Vec::new();
    for row in rows {
        t.recovered += i64::from(row.recovered);
        let sign = match row.action {
            Action::Verify => {
                t.verify += 1;
                1
            }
            Action::VerifyCancel => {
                t.verify_cancel += 1;
                -1
            }
            Action::RefundSuccess => {
                t.refund_success += 1;
                continue;
            }
        };
        match row.pay_amount {
            Some(fen) => t.pay_amount += sign * fen,
            None => t.without_amount += 1,
        }
        t.original_amount += sign * row.original_amount.unwrap_or(0);
        add(&mut deals, &row.title, sign, row.pay_amount);
        add(&mut stores, &row.poi_id, sign, row.pay_amount);
    }
    t.deals = sorted(deals);
    t.stores = sorted(stores);
    t
}

fn add(groups: &mut Vec<Group>, key: &Option<String>, sign: i64, fen: Option<i64>) {
    let at = match groups.iter().position(|g| &g.key == key) {
        Some(at) => at,
        None => {
            groups.push(Group {
                key: key.clone(),
                count: 0,
                pay_amount: None,
            });
            groups.len() - 1
        }
    };
    let g = &mut groups[at];
    g.count += sign;
    if let Some(fen) = fen {
        g.pay_amount = Some(g.pay_amount.unwrap_or(0) + sign * fen);
    }
}

/// Largest count first, then by name; the group without details last.
fn sorted(mut groups: Vec<Group>) -> Vec<Group> {
    groups.sort_by(|a, b| {
        (a.key.is_none(), -a.count, &a.key).cmp(&(b.key.is_none(), -b.count, &b.key))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: Action, title: Option<&str>, poi: Option<&str>, pay: Option<i64>) -> Counted {
        Counted {
            action,
            recovered: false,
            title: title.map(String::from),
            poi_id: poi.map(String::from),
            pay_amount: pay,
            original_amount: pay.map(|p| p + 1000),
        }
    }

    #[test]
    fn verifies_add_cancels_subtract_refunds_only_count_and_unknown_amounts_are_not_guessed() {
        let mut recovered = row(Action::Verify, Some("双人套餐"), Some("7001"), Some(9900));
        recovered.recovered = true;
        let rows = [
            row(Action::Verify, Some("双人套餐"), Some("7001"), Some(9900)),
            recovered,
            row(Action::Verify, Some("咖啡"), Some("7002"), Some(1500)),
            row(Action::Verify, None, None, None),
            row(
                Action::VerifyCancel,
                Some("双人套餐"),
                Some("7001"),
                Some(9900),
            ),
            row(Action::VerifyCancel, None, None, None),
            row(
                Action::RefundSuccess,
                Some("咖啡"),
                Some("7002"),
                Some(1500),
            ),
        ];
        let t = tally(&rows);
        assert_eq!(
            (t.verify, t.verify_cancel, t.refund_success, t.net()),
            (4, 2, 1, 2)
        );
        assert_eq!(t.pay_amount, 9900 + 9900 + 1500 - 9900);
        assert_eq!(t.original_amount, 10900 + 10900 + 2500 - 10900);
        assert_eq!(t.without_amount, 2);
        assert_eq!(t.recovered, 1);
        let deal = |k: Option<&str>, count, pay| Group {
            key: k.map(String::from),
            count,
            pay_amount: pay,
        };
        assert_eq!(
            t.deals,
            vec![
                deal(Some("双人套餐"), 1, Some(9900)),
                deal(Some("咖啡"), 1, Some(1500)),
                deal(None, 0, None),
            ]
        );
        assert_eq!(t.stores[0], deal(Some("7001"), 1, Some(9900)));
        assert_eq!(t.stores.len(), 3);
    }

    /// A scheduled day is queued once however often it is asked; an asked-for print
    /// (`report --print`) always is; the job hands out the day's numbers as they are
    /// when it is taken, and goes with its output when retention prunes that.
    #[test]
    fn a_scheduled_day_is_queued_once_and_its_job_counts_the_day_when_taken() {
        let dir = std::env::temp_dir().join(format!("coupond-day-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = Store::open(&dir.join("coupond.db")).unwrap();
        let day = Date::parse("2026-12-04").unwrap();
        let window = (1_000, 2_000);
        let first = store.queue_report(day, window, true).unwrap();
        assert!(first.is_some());
        assert_eq!(store.queue_report(day, window, true).unwrap(), None);
        assert_eq!(store.queue_report(day.pred(), window, true).unwrap(), None);
        assert!(store.queue_report(day, window, false).unwrap().is_some());
        let (_, last) = store.report_schedule().unwrap();
        assert_eq!(last, Some(day));

        store
            .conn
            .execute_batch(
                "INSERT INTO messages (received_at, outcome, action, certificate_id, msg_time,
                     body, body_sha1, last_received_at)
                 VALUES ('now', 'applied', 'verify', 'c1', 1500, '{}', 'a', 'now'),
                        ('now', 'applied', 'verify', 'c2', 2000, '{}', 'b', 'now')",
            )
            .unwrap();
        let jobs = store.pending_jobs(SinkKind::Printer, 10).unwrap();
        assert_eq!(jobs.len(), 2);
        for job in &jobs {
            assert!(job.retries_forever(), "{}", job.subject());
            match &job.work {
                crate::model::Work::Report(r) => {
                    assert_eq!((r.date, r.from, r.to), (day, 1_000, 2_000));
                    assert_eq!(r.tally.verify, 1, "2000 is the next day's");
                }
                _ => panic!("{}", job.subject()),
            }
        }
        store
            .conn
            .execute_batch("UPDATE outputs SET state = 'done'")
            .unwrap();
        store.prune_step("9999", 100).unwrap();
        let left: i64 = store
            .conn
            .query_row("SELECT count(*) FROM report_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_day_is_all_zero() {
        let t = tally(&[]);
        assert_eq!(t, DayTally::default());
        assert_eq!(t.net(), 0);
    }
}
