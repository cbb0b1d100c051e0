//! Recovery from a wrong secret (or client key): re-checks the `rejected` rows with the
//! current configuration and records those that now verify through the same path as
//! live messages (`intake::classify`, then the store's one ingest transaction), with
//! their original arrival time, so no coupon that arrived meanwhile is lost.
//!
//! The daemon runs a pass at start (fix the secret, restart, done); `coupond reverify`
//! runs one on demand. Rows whose body was cut at the storage cap cannot be re-checked
//! and stay.

use crate::commands::serve::DaemonLock;
use crate::config::ReverifyConfig;
use crate::intake::{self, Apps, Intake};
use crate::model::{Ack, Arrival, OutputPlan};
use crate::store::Store;

/// What a pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub recovered: usize,
    pub applied: usize,
    pub truncated: usize,
}

/// Re-checks every rejected row against `apps` and records the ones that verify now.
pub fn pass(store: &mut Store, apps: &Apps, plan: &OutputPlan) -> Result<Report, String> {
    let rows = store.rejected_rows().map_err(|e| e.to_string())?;
    let mut report = Report {
        checked: rows.len(),
        ..Report::default()
    };
    let mut recovered = Vec::new();
    for row in rows {
        if (row.body.len() as i64) < row.body_len {
            report.truncated += 1;
            continue;
        }
        let intake = intake::classify(apps, &row.body, row.signature.as_deref());
        if matches!(intake, Intake::Message(_)) {
            recovered.push((
                row.id,
                Arrival {
                    received_at: row.received_at,
                    source: row.source,
                    msg_id: row.msg_id,
                    signature: row.signature,
                    body: row.body,
                    intake,
                    dedup: None,
                },
            ));
        }
    }
    if recovered.is_empty() {
        return Ok(report);
    }
    let acks = store
        .recover_rejected(&recovered, plan)
        .map_err(|e| e.to_string())?;
    report.recovered = acks.len();
    report.applied = acks
        .iter()
        .filter(|a| {
            matches!(
                a,
                Ack::Recorded {
                    outcome: intake::Outcome::Applied,
                    ..
                }
            )
        })
        .count();
    Ok(report)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} rejected push(es) now verify and were recorded ({} applied)",
            self.recovered, self.checked, self.applied
        )?;
        if self.truncated > 0 {
            write!(f, "; {} too large to re-check", self.truncated)?;
        }
        Ok(())
    }
}

/// `coupond reverify`.
pub fn run(cfg: &ReverifyConfig) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let report = pass(&mut store, &cfg.apps, &cfg.plan)?;
    println!("{report}");
    if report.recovered > 0 {
        DaemonLock::knock(&cfg.db);
        println!(
            "their outputs ({}) are delivered by the running daemon at once, or by the next one at its start",
            cfg.plan
                .kinds()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
