//! End-of-day report benchmark (SPEC §15): a year of a busy store, and how long
//! `coupond report` takes on it.
//!
//! ```text
//! cargo build --release && cargo run --release --example report -- \
//!     --bin target/release/coupond [--messages 300000] [--days 365] [--runs 20] [--no-index]
//! ```
//!
//! Builds a database with the daemon's own schema (`Store::open` migrates it) holding
//! `--messages` messages spread over `--days` days, as `--keep-days 365` would keep
//! them: two of three verify a new coupon, one cancels an earlier one, one in ten of
//! each is also stored as a Douyin retry's duplicate; every applied message has an output
//! job, every coupon its details, a few requests were rejected. Then it runs the real
//! binary, `coupond report --date DAY --json`, for days across the year, and prints the
//! wall time of each run (process start included) as median and maximum. `--no-index`
//! drops the index on applied messages by time first, to see what it is worth.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rusqlite::params;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

const DAY: i64 = 86_400;

fn main() {
    let bin = arg("--bin", "target/release/coupond");
    let total: i64 = arg("--messages", "300000").parse().unwrap();
    let days: i64 = arg("--days", "365").parse().unwrap();
    let runs: i64 = arg("--runs", "20").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("coupond-report-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("coupond.db");
    let today = coupond::time::now_secs().div_euclid(DAY);
    let first = today - days + 1;
    let built = Instant::now();
    fill(&db, total, first, days);
    if std::env::args().any(|a| a == "--no-index") {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("DROP INDEX messages_applied_by_time")
            .unwrap();
    }
    println!(
        "{total} messages over {days} days ({} a day) in {:.1?}; database {} bytes",
        total / days,
        built.elapsed(),
        std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
    );
    plan(&db);

    let mut times = Vec::new();
    for i in 0..runs {
        let date = coupond::schedule::Date::from_days(first + 1 + i * (days - 2) / runs.max(1));
        let started = Instant::now();
        let out = Command::new(&bin)
            .args([
                "report",
                "--config",
                "/dev/null",
                "--json",
                "--keep-days",
                "0",
            ])
            .arg("--db")
            .arg(&db)
            .args(["--date", &date.to_string()])
            .env("TZ", "CST-8")
            .output()
            .expect("run coupond report");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if i == 0 {
            println!("one day: {json}");
        }
        times.push(took);
    }
    times.sort();
    println!(
        "coupond report --json, {} runs: median {:.1?}, max {:.1?} (budget: 200 ms)",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the year: messages (with duplicates), certificates' details, output jobs,
/// rejected requests.
fn fill(db: &Path, total: i64, first: i64, days: i64) {
    drop(coupond::store::Store::open(db).expect("create the database"));
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA synchronous = OFF;
         CREATE TABLE IF NOT EXISTS details (
             certificate_id TEXT PRIMARY KEY, title TEXT, sku_id TEXT, pay_amount INTEGER,
             original_amount INTEGER, coupon_pay_amount INTEGER,
             merchant_ticket_amount INTEGER, poi_id TEXT, verify_id TEXT, origin TEXT,
             fetched_at TEXT);",
    )
    .unwrap();
    let tx = c.transaction().unwrap();
    let now = coupond::time::now_rfc3339();
    {
        let mut message = tx
            .prepare(
                "INSERT INTO messages (received_at, event, client_key, action, certificate_id,
                     msg_time, outcome, body, body_sha1, last_received_at, source)
                 VALUES (?1, 'life_trade_certificate_notify', 'app', ?2, ?3, ?4, ?5, ?6, ?7,
                         ?1, 'push')",
            )
            .unwrap();
        let mut output = tx
            .prepare(
                "INSERT INTO outputs (message_id, sink, state, attempts, created_at, done_at)
                 VALUES (?1, 'printer', 'done', 1, ?2, ?2)",
            )
            .unwrap();
        let mut details = tx
            .prepare(
                "INSERT INTO details (certificate_id, title, sku_id, pay_amount,
                     original_amount, poi_id, verify_id, origin, fetched_at)
                 VALUES (?1, ?2, 'sku', ?3, ?4, ?5, 'v', 'query', ?6)",
            )
            .unwrap();
        let span = days * DAY;
        let mut n = 0;
        let mut seq = 0;
        while n < total {
            let t = first * DAY + seq * span / (total * 10 / 11).max(1);
            let (action, cert) = if seq % 3 == 2 {
                ("verify_cancel", format!("c{}", seq - 2))
            } else {
                ("verify", format!("c{seq}"))
            };
            let received = coupond::time::rfc3339_millis(t * 1000);
            for retry in 0..1 + i64::from(seq % 10 == 0) {
                let outcome = if retry == 0 { "applied" } else { "duplicate" };
                let body = format!("{{\"seq\":{seq},\"retry\":{retry}}}");
                let sha1 = format!("{seq}-{retry}");
                message
                    .execute(params![received, action, cert, t, outcome, body, sha1])
                    .unwrap();
                if retry == 0 {
                    output
                        .execute(params![tx.last_insert_rowid(), received])
                        .unwrap();
                }
                n += 1;
            }
            if action == "verify" {
                let (title, pay) =
                    [("双人下午茶套餐", 9900), ("美式咖啡 单人", 1500)][(seq % 2) as usize];
                let poi = ["7100000000001", "7100000000002"][(seq % 3 % 2) as usize];
                details
                    .execute(params![cert, title, pay, pay + 1000, poi, now])
                    .unwrap();
            }
            seq += 1;
        }
        for i in 0..1000 {
            tx.execute(
                "INSERT INTO rejected (received_at, reason, status, body, body_len)
                 VALUES (?1, 'bad signature', 401, '{}', 2)",
                [coupond::time::rfc3339_millis(
                    (first * DAY + i * span / 1000) * 1000,
                )],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    // No ANALYZE: the daemon never runs it, so the planner must find the index alone.
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

/// Shows that the day's query uses the index on applied messages by time.
fn plan(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare(
            "EXPLAIN QUERY PLAN SELECT m.action, d.pay_amount FROM messages m
             LEFT JOIN details d ON d.certificate_id = m.certificate_id
             WHERE m.outcome = 'applied' AND m.msg_time >= 0 AND m.msg_time < 1
               AND m.source != 'test'",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    println!("query plan: {}", rows.join("; "));
}
