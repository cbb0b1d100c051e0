//! Douyin's API is the internet too (SPEC §11): a broken record, records outside the
//! window asked for, a reused `verify_id`, a page larger than asked, a `total` that
//! lies, a short-lived token and a rotated secret must neither stop catch-up nor apply
//! what Douyin was not asked for. Against the local fake (`tests/common/fake_douyin.rs`).

mod common;

use common::fake_douyin::{FakeDouyin, FakeRecord};
use common::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn wait_sweeps(d: &Daemon, n: usize) {
    wait_until(&format!("{n} sweeps"), WAIT, || {
        d.log_text().matches("catch-up: swept").count() >= n
    });
}

fn certificates(d: &Daemon) -> Vec<String> {
    query_column(
        &d.sql(),
        "SELECT certificate_id FROM certificates ORDER BY certificate_id",
    )
}

fn record(certificate: &str, verify_time: serde_json::Value) -> serde_json::Value {
    json!({"cursor": "900", "verify_id": format!("V-{certificate}"), "certificate_id": certificate,
           "verify_time": verify_time, "status": 1, "can_cancel": true, "cancel_time": 0})
}

#[test]
fn a_bad_record_is_kept_as_rejected_and_the_good_ones_beside_it_are_recovered() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    fake.add(FakeRecord::verified("good-1", t - 3600));
    fake.add(FakeRecord::verified("good-2", t - 1800));
    fake.state.lock().unwrap().inject = vec![
        record("bad-zero", json!(0)),
        record("bad-negative", json!(-5)),
        record("bad-fraction", json!(1.5)),
    ];
    let dir = Scratch::new("catchup-bad-record");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 2);
    assert_eq!(certificates(&d), ["good-1", "good-2"], "{}", d.log_text());
    let rejected: Vec<String> = query_column(
        &d.sql(),
        "SELECT status || ' ' || source FROM rejected ORDER BY id",
    );
    assert_eq!(rejected, ["400 reconcile"; 3]);
    // Sweeps go on (and count the repeats on the same rows).
    assert!(!d.log_text().contains("sweep failed"), "{}", d.log_text());
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM rejected"), 3);
}

#[test]
fn records_outside_the_window_asked_for_are_refused_and_a_later_push_still_prints() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    fake.add(FakeRecord::verified("in-window", t - 600));
    fake.state.lock().unwrap().inject = vec![
        record("from-1970", json!(1)),
        record("from-3000", json!(32_503_680_000i64)),
    ];
    let dir = Scratch::new("catchup-window");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 1);
    assert_eq!(certificates(&d), ["in-window"]);
    let reasons: Vec<String> = query_column(&d.sql(), "SELECT reason FROM rejected ORDER BY id");
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.iter().all(|r| r.contains("outside the window")),
        "{reasons:?}"
    );
    // A genuine push for the coupon Douyin dated 3000 applies, as it would have.
    let r = d.push(&coupon("verify", t, "from-3000"));
    assert_eq!(r.body, r#"{"outcome":"applied"}"#);
}

#[test]
fn a_reused_verify_id_does_not_hide_the_second_certificate() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    let mut second = FakeRecord::verified("second", t - 1200);
    let first = FakeRecord::verified("first", t - 1200);
    second.verify_id = first.verify_id.clone();
    fake.add(first);
    fake.add(second);
    let dir = Scratch::new("catchup-reused-id");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 1);
    assert_eq!(certificates(&d), ["first", "second"]);
}

#[test]
fn a_page_larger_than_asked_and_a_lying_total_cost_bounded_reads_and_queries() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    let n = if emulated() { 500 } else { 2_000 };
    for i in 0..n {
        fake.add(FakeRecord::verified(&format!("busy-{i:05}"), t - 7200 + i));
    }
    fake.state.lock().unwrap().ignore_size = true;
    let dir = Scratch::new("catchup-oversized-page");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 1);
    // Every record still recovered, 20 per query, never more in one go.
    assert_eq!(
        query_i64(&d.sql(), "SELECT count(*) FROM certificates"),
        n,
        "{}",
        d.log_text()
    );
    let queries = fake.queries().len() as i64;
    assert!(
        queries >= n / 20,
        "{queries} queries: more than 20 records read from one"
    );
    drop(d);

    // `total` says 10^12 and every page is empty: one query per step, not a crawl.
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.state.lock().unwrap().total_override = Some(1_000_000_000_000);
    let dir = Scratch::new("catchup-lying-total");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 2);
    let queries = fake.queries().len();
    let sweeps = d.log_text().matches("catch-up: swept").count();
    assert!(
        queries <= sweeps + 2,
        "{queries} queries for {sweeps} sweeps"
    );
}

#[test]
fn a_short_lived_token_is_kept_for_half_its_life_not_fetched_for_every_page() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    for i in 0..60 {
        fake.add(FakeRecord::verified(&format!("page-{i:03}"), t - 3600 + i));
    }
    fake.state.lock().unwrap().expires_in = 120;
    let dir = Scratch::new("catchup-short-token");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 2);
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM certificates"), 60);
    assert!(fake.queries().len() >= 4);
    assert_eq!(fake.tokens_issued(), 1, "{}", d.log_text());
}

#[test]
fn sighup_gives_catch_up_the_new_secret() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let dir = Scratch::new("catchup-reload");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    wait_sweeps(&d, 1);
    // Douyin now takes only the new secret, and voids the token it gave.
    let rotated = "rotated-catchup-secret";
    fake.state.lock().unwrap().secret = rotated.into();
    std::fs::write(dir.path("secret"), format!("{rotated}\n")).unwrap();
    unsafe_kill(d.child.id(), "HUP");
    assert!(d.wait_log("SIGHUP: reloaded", WAIT));
    let before = fake.tokens_issued();
    fake.state.lock().unwrap().expire_next = 1;
    let t = now();
    fake.add(FakeRecord::verified("after-rotation", t - 300));
    wait_until("the record recovered with the new secret", WAIT, || {
        certificates(&d).contains(&"after-rotation".to_string())
    });
    assert!(fake.tokens_issued() > before);
    assert!(
        !d.log_text().contains(rotated),
        "the secret never reaches the log"
    );
}
