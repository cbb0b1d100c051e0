//! `coupond status`: a read-only summary of the database, safe while the daemon runs
//! (WAL readers never block the writer).
//!
//! Values that came in a message (certificate ids, a hook's error output, reject reasons)
//! are shown through [`sanitize::text`], so a stored escape sequence or newline cannot
//! reach the terminal or forge a line of the report.

use crate::commands::serve::RunningDaemon;
use crate::config::StatusConfig;
use crate::coupon::Action;
use crate::intake::Outcome;
use crate::model::LinkName;
use crate::ratelimit::{NOT_FOUND, REJECTED_UNSTORED, TOO_LARGE};
use crate::sanitize;
use crate::store::{CatchupRow, Store, Summary};
use crate::time;

pub fn run(cfg: &StatusConfig) -> Result<(), String> {
    crate::commands::reachable(&cfg.db, libc::R_OK, "read")?;
    let store = Store::open_existing(&cfg.db, true)?;
    let cannot = |e: rusqlite::Error| format!("cannot read database {}: {e}", cfg.db.display());
    let summary = store.summary().map_err(cannot)?;
    let mut out = render(&cfg.db.display().to_string(), &summary);
    if RunningDaemon::on(&cfg.db).is_some() {
        // The webhook writes these counts at most once per ratelimit::EVERY.
        out += &format!(
            "counted    by the running daemon: request counts (not found, too large, unstored, \
             repeats) reach the database up to {}s late\n",
            crate::ratelimit::EVERY.as_secs()
        );
    }
    print!("{out}");
    Ok(())
}

fn count<K: PartialEq>(pairs: &[(K, i64)], key: K) -> i64 {
    pairs.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n)
}

/// The report, one topic a line.
pub fn render(db: &str, s: &Summary) -> String {
    let mut out = format!("database   {db} (schema version {})\n", s.schema_version);
    out += &totals(s);
    out += &outputs(s);
    out += &links(s);
    out += &rejects(s);
    for c in &s.catchup {
        out += &catchup_line(c, s.recovered);
    }
    out
}

/// Coupons and messages (tests apart), and the last message.
fn totals(s: &Summary) -> String {
    let mut out = String::new();
    let total: i64 = s.certificates.iter().map(|(_, n)| n).sum();
    out += &format!(
        "coupons    {total}: {}\n",
        Action::ALL
            .map(Action::status)
            .iter()
            .map(|st| format!("{} {}", count(&s.certificates, *st), st.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let messages: i64 = s.outcomes.iter().map(|(_, n)| n).sum();
    out += &format!(
        "messages   {messages}: {}; {} redeliveries counted\n",
        Outcome::ALL
            .iter()
            .map(|o| format!("{} {o}", count(&s.outcomes, *o)))
            .collect::<Vec<_>>()
            .join(", "),
        s.redeliveries
    );
    if s.test_messages > 0 {
        out += &format!(
            "tests      {} test message(s) (coupond send), {} test coupon(s): not counted above\n",
            s.test_messages, s.test_coupons
        );
    }
    match &s.last_message {
        Some((at, outcome, action, cert)) => {
            out += &format!(
                "last       {at} {outcome}{}{}\n",
                action.as_ref().map(|a| format!(" {a}")).unwrap_or_default(),
                cert.as_ref()
                    .map(|c| format!(" certificate {}", sanitize::text(c)))
                    .unwrap_or_default()
            );
        }
        None => out += "last       no message yet\n",
    }
    out
}

/// Output jobs per sink and state, the last failed ones, and signature trouble.
fn outputs(s: &Summary) -> String {
    let mut out = String::new();
    if s.outputs.is_empty() {
        out += "outputs    none yet\n";
    } else {
        let mut sinks: Vec<_> = s.outputs.iter().map(|(k, _, _)| *k).collect();
        sinks.dedup();
        let per_sink: Vec<String> = sinks
            .iter()
            .map(|sink| {
                let states: Vec<String> = s
                    .outputs
                    .iter()
                    .filter(|(k, _, _)| k == sink)
                    .map(|(_, st, n)| format!("{n} {st}"))
                    .collect();
                format!("{sink}: {}", states.join(", "))
            })
            .collect();
        out += &format!("outputs    {}\n", per_sink.join("; "));
    }
    for (id, sink, about, attempts, err) in &s.failed_outputs {
        out += &format!(
            "failed     output {id} ({sink}, {}) after {attempts} attempts: {}\n",
            sanitize::text(about),
            sanitize::text(err.as_deref().unwrap_or("?"))
        );
    }
    if s.signature_failures > 0 {
        out += &format!(
            "signature  {} push(es) for a configured app failed the signature check in the last hour: \
             the client secret is probably wrong (fix it, then systemctl reload coupond)\n",
            s.signature_failures
        );
    }
    out
}

/// The broker connections.
fn links(s: &Summary) -> String {
    let mut out = String::new();
    for l in &s.links {
        let mut line = format!("{:<10} {} since {}", l.name, l.state, l.since);
        if let Some(d) = &l.detail {
            line += &format!(" ({})", sanitize::text(d));
        }
        if l.name == LinkName::Mqtt {
            line += &format!("; {} queued", l.queued);
        }
        let last = if l.name == LinkName::Mqtt {
            "publish"
        } else {
            "push"
        };
        line += &format!(
            "; last {last} {}\n",
            l.last.as_deref().unwrap_or("none yet")
        );
        out += &line;
    }
    out
}

/// Rejected requests, stored and counted.
fn rejects(s: &Summary) -> String {
    let mut out = String::new();
    match &s.last_rejected {
        Some((at, status, reason)) => {
            out += &format!(
                "rejected   {} (last {at}: {status} {})",
                s.rejected,
                sanitize::text(reason)
            );
            if s.rejected_repeats > 0 {
                out += &format!(", and {} repeat(s) of them", s.rejected_repeats);
            }
            out += "\n";
        }
        None => out += "rejected   0\n",
    }
    // Counted, not stored: 404s always (a wrong path is the commonest installer
    // mistake), the others when there were any.
    let counter = |name: &str| s.counters.iter().find(|c| c.name == name);
    for (name, label, what, always) in [
        (
            REJECTED_UNSTORED,
            "unstored ",
            "rejected request(s) over the write rate, counted only",
            false,
        ),
        (NOT_FOUND, "not found", "request(s) for another path", true),
        (TOO_LARGE, "too large", "body/bodies over --max-body", false),
    ] {
        match counter(name) {
            Some(c) => {
                out += &format!("{label}  {} {what} (last {}", c.count, c.last_at);
                if let Some(d) = &c.last_detail {
                    out += &format!(": {}", sanitize::text(d));
                }
                out += ")\n";
            }
            None if always => out += &format!("{label}  0 {what}\n"),
            None => {}
        }
    }
    out
}

/// `catch-up` lines: the last complete sweep, what it found, and the last error.
fn catchup_line(c: &CatchupRow, recovered: i64) -> String {
    let secs = |t: i64| time::rfc3339_millis(t * 1000);
    let mut out = match (&c.sweep_at, c.window) {
        (Some(at), Some((start, end))) => format!(
            "catch-up   account {}: last complete sweep {at}, window {} .. {}, {} record(s), \
             {} recovered; {recovered} recovered in all\n",
            sanitize::text(&c.account_id),
            secs(start),
            secs(end),
            c.records,
            c.recovered,
        ),
        _ => format!(
            "catch-up   account {}: no complete sweep yet; {recovered} recovered in all\n",
            sanitize::text(&c.account_id)
        ),
    };
    if let Some((at, error)) = &c.error {
        // Douyin's `description` is in it: text from outside, shown safely.
        out += &format!("catch-up   last error {at}: {}\n", sanitize::text(error));
    }
    out
}
