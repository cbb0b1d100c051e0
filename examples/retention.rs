//! Retention benchmark: does the database stay bounded over a long run?
//!
//! ```text
//! cargo run --release --example retention -- [--messages 1000000] [--per-day 3000] [--keep-days 30]
//! ```
//!
//! Drives the daemon's own store code (the ingest transaction, output delivery, the
//! retention steps and WAL checkpoints) through a synthetic run on a simulated clock:
//! `--per-day` messages a day (a verify, and for a third of the coupons a cancel later),
//! outputs delivered, retention run once a simulated day. Prints the database and WAL
//! sizes as it goes. Message rows and outputs stay within the retention window;
//! certificates (coupon state, never pruned by design) are the only part that grows.

use std::path::Path;
use std::time::Instant;

use coupond::intake::{Intake, Kind, Message};
use coupond::model::{Arrival, Attempt, AttemptOutcome, OutputPlan, SinkKind};
use coupond::store::Store;
use coupond::wire::CertificateMsg;

fn arg(name: &str, default: i64) -> i64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let total = arg("--messages", 1_000_000);
    let per_day = arg("--per-day", 3000);
    let keep_days = arg("--keep-days", 30);
    let dir = std::env::temp_dir().join(format!("coupond-retention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("retention.db");
    let wal = dir.join("retention.db-wal");
    let mut store = Store::open(&db).unwrap();
    let plan = OutputPlan::new(
        vec![SinkKind::Log],
        coupond::coupon::Action::ALL.to_vec(),
        None,
    );
    let day_ms = 86_400_000i64;
    let start_ms = coupond::time::now_millis() - 400 * day_ms;
    let started = Instant::now();
    println!(
        "{total} messages, {per_day} a day, --keep-days {keep_days}; database {}",
        db.display()
    );
    println!(
        "{:>9} {:>6} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "messages", "day", "msg rows", "certs", "db bytes", "wal bytes", "elapsed"
    );
    let mut n = 0i64;
    let mut day = 0i64;
    while n < total {
        // One simulated day, in batches as the writer would commit them.
        let day_start = start_ms + day * day_ms;
        let mut i = 0;
        while i < per_day && n < total {
            let batch: Vec<Arrival> = (0..200.min(per_day - i))
                .map(|k| {
                    let seq = n + k;
                    // Two of three messages verify a new coupon; one cancels an earlier one.
                    let (action, cert) = if seq % 3 == 2 {
                        (coupond::coupon::Action::VerifyCancel, format!("c{}", seq - 2))
                    } else {
                        (coupond::coupon::Action::Verify, format!("c{seq}"))
                    };
                    let t = day_start + (i + k) * (day_ms / per_day);
                    let body = format!(
                        r#"{{"event":"life_trade_certificate_notify","client_key":"app","content":"{{\"action\":\"{}\",\"msg_time\":{},\"certificate\":{{\"certificate_id\":\"{cert}\",\"order_id\":\"o{seq}\",\"account_id\":\"6900000000001\"}}}}","log_id":"L{seq}"}}"#,
                        action.as_str(),
                        t / 1000
                    );
                    Arrival {
                        received_at: coupond::time::rfc3339_millis(t),
                        msg_id: Some(format!("m{seq}")),
                        signature: None,
                        body: body.into_bytes(),
                        intake: Intake::Message(Message {
                            event: Some("life_trade_certificate_notify".into()),
                            client_key: Some("app".into()),
                            log_id: Some(format!("L{seq}")),
                            test: false,
                            kind: Kind::Certificate(CertificateMsg {
                                action,
                                msg_time: t / 1000,
                                certificate_id: cert,
                                order_id: Some(format!("o{seq}")),
                                code: None,
                                account_id: Some("6900000000001".into()),
                            }),
                        }),
                        source: coupond::model::Source::Push,
                        dedup: None,
                    }
                })
                .collect();
            let len = batch.len() as i64;
            store.ingest(&batch, &plan).unwrap();
            // The log sink delivers everything.
            let jobs = store.pending_jobs(SinkKind::Log, 1000).unwrap();
            let done: Vec<Attempt> = jobs
                .iter()
                .map(|j| Attempt {
                    id: j.id,
                    outcome: AttemptOutcome::Done,
                })
                .collect();
            store.finish_jobs(&done).unwrap();
            // The daemon checkpoints every few dozen commits; at a store's pace (a
            // message every half minute) that is far more often than this.
            store.checkpoint().unwrap();
            n += len;
            i += len;
        }
        // Retention at the end of the simulated day, in the daemon's step size.
        let cutoff = coupond::time::rfc3339_millis(day_start + day_ms - keep_days * day_ms);
        while store
            .prune_step(&cutoff, coupond::retention::STEP)
            .unwrap()
            .total()
            > 0
        {}
        store.checkpoint().unwrap();
        day += 1;
        if day % 30 == 0 || n >= total {
            let s = store.summary().unwrap();
            let rows: i64 = s.outcomes.iter().map(|(_, c)| c).sum();
            let certs: i64 = s.certificates.iter().map(|(_, c)| c).sum();
            println!(
                "{n:>9} {day:>6} {rows:>10} {certs:>10} {:>12} {:>10} {:>8.0}s",
                size(&db),
                size(&wal),
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
