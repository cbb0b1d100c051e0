//! SPEC §11: catch-up from Douyin's verify-record API, against a local fake of the two
//! calls (`tests/common/fake_douyin.rs`), with the real binary, the real SQLite file and
//! a fake network printer that answers status requests.

mod common;

use common::escpos::{FakePrinter, Mode as Paper};
use common::fake_douyin::{FakeDouyin, FakeRecord, Mode, Tls, ACCOUNT, POI};
use common::*;
use std::time::{Duration, Instant};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn catchup(fake: &FakeDouyin) -> Opts {
    catchup_opts(fake)
}

/// Waits until the daemon has logged `n` complete sweeps.
fn wait_sweeps(d: &Daemon, n: usize) {
    wait_until(&format!("{n} sweeps"), Duration::from_secs(30), || {
        d.log_text().matches("catch-up: swept").count() >= n
    });
}

fn count(d: &Daemon, sql: &str) -> i64 {
    query_i64(&d.sql(), sql)
}

#[test]
fn coupons_verified_while_the_daemon_was_down_are_recovered_and_printed_once_marked_bulu() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let t = now();
    fake.add(FakeRecord::verified("7001000000000000001", t - 3600));
    fake.add(FakeRecord::verified("7001000000000000002", t - 7200).cancelled(t - 7000));
    // Inside the 10-minute overlap that every sweep repeats.
    fake.add(FakeRecord::verified("7001000000000000003", t - 120));
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("catchup-down");
    let opts = catchup(&fake).args(&[
        "--printer",
        &printer.dest(),
        "--display-listen",
        "127.0.0.1:0",
    ]);
    let mut d = Daemon::start_with(&dir.0, opts.clone());
    let receipts = printer.wait_receipts(4, Duration::from_secs(20));
    assert_eq!(receipts.len(), 4, "{}", d.log_text());
    let texts: Vec<String> = receipts.iter().map(|r| r.text()).collect();
    for text in &texts {
        assert!(text.contains("补录"), "not marked 补录:\n{text}");
    }
    // In time order: the cancelled coupon's verify and its cancel, then the others.
    let order = [
        ("核销成功", "7001000000000000002"),
        ("已撤销核销", "7001000000000000002"),
        ("核销成功", "7001000000000000001"),
        ("核销成功", "7001000000000000003"),
    ];
    for (text, (headline, cert)) in texts.iter().zip(order) {
        assert!(text.contains(headline) && text.contains(cert), "{text}");
    }
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM messages WHERE source = 'reconcile' AND outcome = 'applied'"
        ),
        4
    );
    assert_eq!(
        query_str(
            &d.sql(),
            "SELECT status FROM certificates WHERE certificate_id = '7001000000000000002'"
        ),
        "cancelled"
    );
    let body = query_str(
        &d.sql(),
        "SELECT body FROM messages WHERE action = 'verify_cancel'",
    );
    assert!(
        body.contains("\"verify_id\":\"V-7001000000000000002-"),
        "{body}"
    );

    // The counter display marks them too.
    let api: serde_json::Value =
        serde_json::from_str(&request(d.display_addr(), "GET", "/api/coupons", &[], b"").body)
            .unwrap();
    let shown = api["coupons"].as_array().unwrap();
    assert_eq!(shown.len(), 3, "{api}");
    assert!(shown.iter().all(|c| c["recovered"] == true), "{api}");

    // Later sweeps overlap the first: redeliveries only.
    wait_sweeps(&d, 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(printer.receipts().len(), 4);
    let overlap = "SELECT deliveries FROM messages WHERE certificate_id = '7001000000000000003'";
    assert!(count(&d, overlap) >= 2);

    // A restart repeats the overlap and prints nothing.
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start_with(&dir.0, opts);
    wait_sweeps(&d, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(printer.receipts().len(), 4, "{}", d.log_text());
    assert_eq!(count(&d, "SELECT count(*) FROM messages"), 4);
    assert!(
        count(&d, overlap) >= 4,
        "the restart's sweep repeated the overlap"
    );

    let out = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("catch-up")
            && status.contains("1 record(s)")
            && status.contains("4 recovered in all"),
        "{status}"
    );
}

#[test]
fn a_push_and_a_recovered_record_of_the_same_event_never_both_print() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("catchup-converge");
    let d = Daemon::start_with(&dir.0, catchup(&fake).args(&["--printer", &printer.dest()]));
    let t = now() - 600;
    // 1. Pushed first (its msg_time a second after the verification), recovered later.
    assert_eq!(d.push(&coupon("verify", t + 1, "pushed-first")).status, 200);
    // 2. Pushed verify, then a cancel only the record knows.
    assert_eq!(
        d.push(&coupon("verify", t + 1, "cancel-recovered")).status,
        200
    );
    printer.wait_receipts(2, Duration::from_secs(10));
    fake.add(FakeRecord::verified("pushed-first", t));
    fake.add(FakeRecord::verified("cancel-recovered", t).cancelled(t + 100));
    // 3. Recovered first, its push arrives late.
    fake.add(FakeRecord::verified("recovered-first", t + 10).cancelled(t + 200));
    let n = d.log_text().matches("catch-up: swept").count();
    wait_sweeps(&d, n + 2);
    let receipts = printer.wait_receipts(5, Duration::from_secs(10));
    let texts: Vec<String> = receipts.iter().map(|r| r.text()).collect();
    assert_eq!(texts.len(), 5, "{texts:#?}");
    let printed = |cert: &str| texts.iter().filter(|t| t.contains(cert)).count();
    assert_eq!(printed("pushed-first"), 1);
    assert_eq!(
        printed("cancel-recovered"),
        2,
        "the pushed verify and the recovered cancel"
    );
    assert!(texts
        .iter()
        .any(|t| t.contains("cancel-recovered") && t.contains("已撤销核销") && t.contains("补录")));
    assert_eq!(printed("recovered-first"), 2);
    // The late pushes of what was recovered: answered, recorded, not printed.
    for (action, at) in [("verify", t + 11), ("verify_cancel", t + 201)] {
        let r = d.push(&coupon(action, at, "recovered-first"));
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("duplicate") || r.body.contains("stale") || r.body.is_empty(),
            "{}",
            r.body
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(printer.receipts().len(), 5);
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM messages WHERE source = 'push' AND outcome = 'applied'"
        ),
        2
    );
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM messages WHERE source = 'reconcile' AND outcome = 'applied'"
        ),
        3
    );
}

#[test]
fn forty_five_records_are_read_over_three_pages_for_this_stores_poi_only() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.state.lock().unwrap().records_v2 = true;
    let t = now() - 5000;
    for i in 0..45 {
        fake.add(FakeRecord::verified(&format!("poi-{i:02}"), t + i));
    }
    for i in 0..5 {
        fake.add(FakeRecord::verified(&format!("other-{i}"), t + i).at_poi("7100000000999"));
    }
    let dir = Scratch::new("catchup-pages");
    let d = Daemon::start_with(&dir.0, catchup(&fake).args(&["--poi-id", POI]));
    wait_sweeps(&d, 1);
    assert_eq!(count(&d, "SELECT count(*) FROM certificates"), 45);
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM certificates WHERE certificate_id LIKE 'other-%'"
        ),
        0
    );
    let first_sweep: Vec<_> = fake.queries().into_iter().take(3).collect();
    let param = |q: &Vec<(String, String)>, k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let cursors: Vec<String> = first_sweep.iter().map(|q| param(q, "cursor")).collect();
    assert_eq!(cursors, ["0", "20", "40"]);
    for q in &first_sweep {
        assert_eq!(param(q, "poi_ids"), POI);
        assert_eq!(param(q, "size"), "20");
        assert_eq!(param(q, "account_id"), ACCOUNT);
        let (start, end): (i64, i64) = (
            param(q, "start_time").parse().unwrap(),
            param(q, "end_time").parse().unwrap(),
        );
        assert!(end - start <= 86_400 && end <= now() - 59, "{start}..{end}");
    }
    assert!(
        d.log_text().contains("45 record(s), 45 recovered"),
        "{}",
        d.log_text()
    );
}

/// A busy day (more records than one step holds in memory) is read in shorter steps,
/// whether Douyin says its `total` or not, and nothing is lost at the steps' seams.
#[test]
fn a_busy_day_is_swept_in_shorter_steps_without_losing_a_record() {
    for no_total in [false, true] {
        let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
        fake.state.lock().unwrap().no_total = no_total;
        let t = now() - 80_000;
        for i in 0..450 {
            fake.add(FakeRecord::verified(&format!("busy-{i:03}"), t + i * 150));
        }
        let dir = Scratch::new("catchup-busy");
        let d = Daemon::start_with(&dir.0, catchup(&fake));
        wait_sweeps(&d, 1);
        assert_eq!(
            count(&d, "SELECT count(*) FROM certificates"),
            450,
            "no_total {no_total}: {}",
            d.log_text()
        );
        let queries = fake.queries().len();
        assert!(
            queries > 23,
            "no_total {no_total}: {queries} queries: not shortened?"
        );
        assert!(d.log_text().contains("450 record(s), 450 recovered"));
    }
}

#[test]
fn the_token_is_fetched_once_and_again_exactly_once_when_douyin_says_it_expired() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.add(FakeRecord::verified("token-1", now() - 100));
    let dir = Scratch::new("catchup-token");
    // A rotation: the first secret is the old one, which Douyin refuses.
    let mut opts = catchup(&fake);
    opts.secret_file_contents = Some(format!("old-secret-no-longer-valid\n{SECRET}\n"));
    let d = Daemon::start_with(&dir.0, opts);
    wait_sweeps(&d, 3);
    assert_eq!(fake.tokens_issued(), 1, "{}", d.log_text());
    assert!(
        d.log_text().contains("obtained with secret #2"),
        "{}",
        d.log_text()
    );
    fake.state.lock().unwrap().expire_next = 1;
    let n = d.log_text().matches("catch-up: swept").count();
    wait_sweeps(&d, n + 3);
    assert_eq!(fake.tokens_issued(), 2, "{}", d.log_text());
    assert_eq!(d.log_text().matches("fetching a new one").count(), 1);
    assert!(!d.log_text().contains("sweep failed"), "{}", d.log_text());
}

/// The longest a push may wait for its answer while Douyin misbehaves (SPEC §3: 1 s).
const ANSWER_BUDGET: Duration = Duration::from_secs(1);

/// Pushes for `dur`, one after another; returns the slowest answer.
fn slowest_push(d: &Daemon, dur: Duration, tag: &str) -> Duration {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut i = 0;
    while started.elapsed() < dur {
        let r = d.push(&coupon("verify", 1_700_000_000 + i, &format!("{tag}-{i}")));
        assert_eq!(r.status, 200);
        slowest = slowest.max(r.elapsed);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    slowest
}

#[test]
fn douyin_down_slow_garbage_or_failing_never_slows_a_webhook_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cases: [(&str, Option<Mode>, &str); 4] = [
        ("down", None, "cannot connect"),
        (
            "garbage",
            Some(Mode::Garbage),
            "unexpected answer: not JSON",
        ),
        ("http500", Some(Mode::Http500), "HTTP 500"),
        (
            "slow",
            Some(Mode::Slow(Duration::from_secs(30))),
            "no answer within 10s",
        ),
    ];
    for (name, mode, want) in cases {
        let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
        let url = match mode {
            Some(m) => {
                fake.set_mode(m);
                fake.url()
            }
            None => down_url.clone(),
        };
        let dir = Scratch::new(&format!("catchup-{name}"));
        let d = Daemon::start_with(
            &dir.0,
            Opts::default().args(&[
                "--account-id",
                ACCOUNT,
                "--douyin-api",
                &url,
                "--reconcile-every",
                "1s",
                // Catch-up's own failure line is what this waits for: the details
                // lookup (tests/details.rs) would fetch the token first and hold it.
                "--details",
                "off",
            ]),
        );
        // One push first, not measured: under qemu-user (cross/test-arm) the first pass
        // through the code is translated and slow, catch-up or not.
        assert_eq!(
            d.push(&coupon("verify", 1, &format!("{name}-warm"))).status,
            200
        );
        let slowest = slowest_push(&d, Duration::from_secs(3), name);
        // SPEC §3: nothing may keep a valid push from an answer within 1 s.
        assert!(
            slowest < ANSWER_BUDGET,
            "{name}: a webhook answer took {slowest:?}"
        );
        assert!(
            d.wait_log(want, Duration::from_secs(20)),
            "{name}: {}",
            d.log_text()
        );
        assert!(
            d.log_text().contains("retry in 5s"),
            "{name}: {}",
            d.log_text()
        );
        let slowest = slowest_push(&d, Duration::from_secs(1), &format!("{name}-after"));
        assert!(slowest < ANSWER_BUDGET, "{name}: {slowest:?}");
        let out = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(
            status.contains("no complete sweep yet") && status.contains(want),
            "{name}: {status}"
        );
        // Still the same process, still answering.
        assert!(d.push(&coupon("verify", 1, &format!("{name}-end"))).status == 200);
    }
}

#[test]
fn the_secret_and_the_token_never_reach_the_log_the_database_or_help() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.add(FakeRecord::verified("secret-1", now() - 100));
    fake.state.lock().unwrap().expire_next = 1;
    let dir = Scratch::new("catchup-secret");
    let mut d = Daemon::start_with(&dir.0, catchup(&fake).args(&["--log-level", "trace"]));
    wait_sweeps(&d, 3);
    fake.set_mode(Mode::Garbage);
    assert!(d.wait_log("sweep failed", Duration::from_secs(10)));
    assert_eq!(d.terminate(), Some(0));
    let tokens = fake.tokens();
    assert_eq!(tokens.len(), 2);
    let log = d.log_text();
    let mut files = String::from_utf8_lossy(&std::fs::read(&d.db).unwrap()).into_owned();
    for ext in ["db-wal", "db-shm"] {
        if let Ok(b) = std::fs::read(d.db.with_extension(ext)) {
            files += &String::from_utf8_lossy(&b);
        }
    }
    let help = run(&["serve", "--help"], &[("COUPOND_CLIENT_SECRET", SECRET)]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for needle in tokens.iter().map(String::as_str).chain([SECRET, "clt."]) {
        assert!(!log.contains(needle), "{needle} in the log:\n{log}");
        assert!(!files.contains(needle), "{needle} in the database");
        assert!(!help.contains(needle), "{needle} in --help");
    }
    assert!(help.contains("--account-id") && help.contains("COUPOND_DOUYIN_CA"));
}

#[test]
fn catch_up_speaks_https_trusting_the_ca_given_with_douyin_ca() {
    let dir = Scratch::new("catchup-https");
    let (tls, ca_pem) = Tls::test_ca(&["127.0.0.1", "localhost"]);
    let ca = dir.path("test-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let fake = FakeDouyin::start_with(CLIENT_KEY, SECRET, Some(tls));
    fake.add(FakeRecord::verified("https-1", now() - 100));
    assert!(fake.url().starts_with("https://"));

    // Without the test CA the bundled web roots do not trust it.
    let untrusting = Daemon::start_with(&dir.0, catchup(&fake));
    assert!(
        untrusting.wait_log("sweep failed", Duration::from_secs(10)),
        "{}",
        untrusting.log_text()
    );
    assert!(
        untrusting.log_text().contains("UnknownIssuer"),
        "{}",
        untrusting.log_text()
    );
    assert_eq!(fake.tokens_issued(), 0);
    drop(untrusting);

    let d = Daemon::start_with(
        &dir.0,
        catchup(&fake).args(&["--douyin-ca", ca.to_str().unwrap()]),
    );
    wait_sweeps(&d, 2);
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM messages WHERE source = 'reconcile'"
        ),
        1
    );
    assert_eq!(fake.tokens_issued(), 1);
}

#[test]
fn a_bad_catch_up_setting_stops_start_up_with_one_line() {
    let dir = Scratch::new("catchup-config");
    std::fs::write(dir.path("secret"), SECRET).unwrap();
    let db = dir.path("x.db");
    let secret = dir.path("secret");
    let base = [
        "serve",
        "--client-key",
        CLIENT_KEY,
        "--secret-file",
        secret.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let cases: [(&[&str], &str); 4] = [
        (&["--poi-id", "1"], "--poi-id needs --account-id"),
        (
            &["--account-id", "1", "--reconcile-every", "soon"],
            "invalid --reconcile-every",
        ),
        (
            &["--account-id", "1", "--douyin-api", "open.douyin.com"],
            "invalid --douyin-api",
        ),
        (
            &["--account-id", "1", "--douyin-ca", "/nonexistent/ca.pem"],
            "--douyin-ca",
        ),
    ];
    for (extra, want) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = run(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{extra:?}");
        assert!(err.contains(want), "{extra:?}: {err}");
        let said: Vec<&str> = err.lines().filter(|l| l.starts_with("coupond:")).collect();
        assert_eq!(said.len(), 1, "{err}");
    }
}

#[test]
fn a_secret_fixed_by_a_reload_gets_catch_up_its_token_without_a_restart() {
    const WAIT: Duration = Duration::from_secs(30);
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.add(FakeRecord::verified("reload-1", now() - 100));
    let dir = Scratch::new("catchup-reload");
    let mut opts = catchup(&fake);
    opts.secret_file_contents = Some("a-wrong-secret\n".into());
    let d = Daemon::start_with(&dir.0, opts);
    wait_until("a sweep that failed for want of a token", WAIT, || {
        d.log_text().contains("no token for app")
    });
    assert_eq!(count(&d, "SELECT count(*) FROM certificates"), 0);
    std::fs::write(dir.path("secret"), format!("{SECRET}\n")).unwrap();
    unsafe_kill(d.child.id(), "HUP");
    wait_until(
        "the coupon recovered with the reloaded secret",
        WAIT,
        || count(&d, "SELECT count(*) FROM certificates") == 1,
    );
    assert!(
        d.log_text().contains("douyin: token for app"),
        "{}",
        d.log_text()
    );
}
