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

/// A business day's report: which day, its window and its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayReport {
    pub date: crate::time::Date,
    /// `[from, to)`, Unix seconds: `--day-starts` on `date` to the same time the next day.
    pub from: i64,
    pub to: i64,
    pub tally: DayTally,
}

/// The numbers of one business day, `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTally {
    /// Applied verifies (核销).
    pub verify: i64,
    /// Applied cancels (撤销), whichever day their verify was.
    pub verify_cancel: i64,
    /// Applied refunds (退款).
    pub refund_success: i64,
    /// Fen: the known `pay_amount` of the verifies minus that of the cancels.
    pub pay_amount: i64,
    /// Fen: the same with `original_amount`.
    pub original_amount: i64,
    /// Verifies and cancels whose coupon has no known `pay_amount`.
    pub without_amount: i64,
    /// One entry per deal title (`None`: coupons without details), largest count first.
    pub deals: Vec<Group>,
    /// One entry per store (`poi_id`; `None`: coupons without details), largest first.
    pub stores: Vec<Group>,
    /// Applied messages recovered by catch-up (补录).
    pub recovered: i64,
    /// Requests rejected in the window: rows first received in it, with their repeats.
    pub rejected: i64,
    /// Output jobs made in the window that failed for good.
    pub failed_outputs: i64,
}

impl DayTally {
    /// Verifies minus cancels.
    pub fn net(&self) -> i64 {
        self.verify - self.verify_cancel
    }
}

/// A deal's or a store's share of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: Option<String>,
    /// Verifies minus cancels.
    pub count: i64,
    /// Fen, of the coupons with a known amount; `None` when none of them has one.
    pub pay_amount: Option<i64>,
}

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
    /// The report of business day `date`, `[from, to)`.
    pub fn day_report(&self, date: crate::time::Date, from: i64, to: i64) -> Result<DayReport> {
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
        // `details` is SPEC §13's table; a database without it yet has no amounts.
        let details: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'details'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let known = if details.is_some() {
            "d.title, d.poi_id, d.pay_amount, d.original_amount
             FROM messages m LEFT JOIN details d ON d.certificate_id = m.certificate_id"
        } else {
            "NULL, NULL, NULL, NULL FROM messages m"
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT m.action, m.source = 'reconcile', {known}
             WHERE m.outcome = 'applied' AND m.msg_time >= ?1 AND m.msg_time < ?2
               AND m.source != 'test'"
        ))?;
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

    #[test]
    fn an_empty_day_is_all_zero() {
        let t = tally(&[]);
        assert_eq!(t, DayTally::default());
        assert_eq!(t.net(), 0);
    }
}
