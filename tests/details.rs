//! SPEC §13: what was bought. The real binary against a local fake of Douyin's
//! `certificate/query` (`tests/common/fake_douyin.rs`, written from the documented
//! shapes), a fake network printer whose bytes are decoded as GB18030, the display's
//! JSON, a hook, and the real SQLite file.

mod common;

use common::escpos::{FakePrinter, Mode as Paper};
use common::fake_douyin::{FakeDeal, FakeDouyin, FakeRecord, Mode, ACCOUNT, POI_19};
use common::*;
use serde_json::Value;
use std::time::Duration;

const CERT: &str = "7001000000000000101";
const ORDER: &str = "1088000000000000101";

/// A verify pushed the way Douyin does, for coupon `certificate_id` of order `order_id`.
fn verify(certificate_id: &str, order_id: &str, msg_time: i64) -> String {
    let content = serde_json::json!({
        "action": "verify",
        "msg_time": msg_time,
        "certificate": {"certificate_id": certificate_id, "order_id": order_id,
                        "account_id": ACCOUNT},
    })
    .to_string();
    format!(
        r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}","content":{}}}"#,
        Value::String(content)
    )
}

/// SPEC's 1 s for a webhook answer; under qemu-user, Douyin's own 3 s (as elsewhere).
fn answer_limit() -> Duration {
    Duration::from_secs(if emulated() { 3 } else { 1 })
}

/// A generous bound for what the daemon does by itself in the background.
fn background() -> Duration {
    Duration::from_secs(if emulated() { 90 } else { 30 })
}

fn details_rows(d: &Daemon) -> i64 {
    query_i64(&d.sql(), "SELECT count(*) FROM details")
}

fn api(d: &Daemon) -> Value {
    serde_json::from_str(&request(d.display_addr(), "GET", "/api/coupons", &[], b"").body).unwrap()
}

#[test]
fn the_receipt_display_and_hook_say_the_deal_the_amount_and_the_store_with_one_token() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.sell(FakeDeal::new(
        CERT,
        ORDER,
        "双人套餐（含饮料）",
        9900,
        12800,
    ));
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("details-all");
    let hook_out = dir.path("hook");
    let opts = catchup_opts(&fake).args(&[
        "--printer",
        &printer.dest(),
        "--display-listen",
        "127.0.0.1:0",
        "--poi-names",
        &format!("{POI_19}=望京店,1=别的店"),
        "--exec",
        &format!("env > {0}.env; cat > {0}.json", hook_out.display()),
    ]);
    let d = Daemon::start_with(&dir.0, opts);
    // Catch-up has its token before the push: the lookup must use the same one.
    assert!(
        d.wait_log("catch-up: swept", background()),
        "{}",
        d.log_text()
    );
    let r = d.push(&verify(CERT, ORDER, 1_700_000_000));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.elapsed < answer_limit(), "answered in {:?}", r.elapsed);

    let receipts = printer.wait_receipts(1, background());
    assert_eq!(receipts.len(), 1, "{}", d.log_text());
    let text = receipts[0].text();
    for want in [
        "双人套餐（含饮料）",
        "实付 ￥99.00",
        "原价 ￥128.00",
        "门店 望京店",
        CERT,
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // The full-width ￥ as GB18030's two bytes (A3 A4), never the half-width ¥'s four.
    let bytes = gb18030("实付 ￥99.00");
    assert!(bytes.windows(2).any(|w| w == [0xA3, 0xA4]), "{bytes:x?}");

    // The table, the 19-digit POI id digit for digit.
    let c = d.sql();
    let row: (String, i64, i64, String, String, String) = c
        .query_row(
            "SELECT title, pay_amount, original_amount, poi_id, typeof(poi_id), origin
             FROM details WHERE certificate_id = ?1",
            [CERT],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "双人套餐（含饮料）".into(),
            9900,
            12800,
            POI_19.into(),
            "text".into(),
            "query".into()
        )
    );
    let asked = fake.state.lock().unwrap().certificate_queries.clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].contains(&("order_id".into(), ORDER.into())));
    assert!(asked[0].contains(&("account_id".into(), ACCOUNT.into())));

    // The hook: variables and a details object in its JSON.
    wait_until("the hook", background(), || {
        outputs(&d, "exec").first().is_some_and(|o| o.0 == "done")
    });
    let env = std::fs::read_to_string(format!("{}.env", hook_out.display())).unwrap();
    for want in [
        "COUPOND_TITLE=双人套餐（含饮料）",
        "COUPOND_PAY_AMOUNT=9900",
        &format!("COUPOND_POI_ID={POI_19}"),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing:\n{env}");
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.json", hook_out.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(json["details"]["pay_amount"], 9900);
    assert_eq!(json["details"]["poi_id"], POI_19);
    assert_eq!(json["details"]["origin"], "query");

    // The display: title and amount.
    let coupons = api(&d);
    assert_eq!(coupons["coupons"][0]["title"], "双人套餐（含饮料）");
    assert_eq!(coupons["coupons"][0]["pay"], "￥99.00");

    // One token for catch-up and the lookup together, and it never leaks.
    assert_eq!(fake.tokens_issued(), 1, "{}", d.log_text());
    let status =
        String::from_utf8_lossy(&run(&["status", "--db", d.db.to_str().unwrap()], &[]).stdout)
            .into_owned();
    assert!(
        status.contains("1 coupon(s) with details fetched, 0 waiting"),
        "{status}"
    );
    let db = std::fs::read(&d.db).unwrap();
    let wal = std::fs::read(d.db.with_extension("db-wal")).unwrap_or_default();
    for secret in fake.tokens().iter().map(String::as_str).chain([SECRET]) {
        assert!(!d.log_text().contains(secret), "{secret} in the log");
        assert!(!env.contains(secret), "{secret} in the hook's environment");
        for file in [&db, &wal] {
            assert!(
                !file.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in the database"
            );
        }
    }
}

fn gb18030(s: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(s).0.into_owned()
}

#[test]
fn a_late_answer_prints_exactly_one_receipt_and_fills_the_display_in_place() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.sell(FakeDeal::new(CERT, ORDER, "单人午餐", 3900, 3900));
    fake.set_details_mode(Mode::Slow(Duration::from_secs(10)));
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("details-late");
    let opts = catchup_opts(&fake).args(&[
        "--printer",
        &printer.dest(),
        "--display-listen",
        "127.0.0.1:0",
        "--details-wait",
        "1s",
    ]);
    let d = Daemon::start_with(&dir.0, opts);
    let r = d.push(&verify(CERT, ORDER, 1_700_000_000));
    assert_eq!(r.status, 200);
    assert!(r.elapsed < answer_limit(), "answered in {:?}", r.elapsed);
    // After the 1 s wait the receipt goes with what is known: the coupon's ids.
    let receipts = printer.wait_receipts(1, background());
    assert_eq!(receipts.len(), 1, "{}", d.log_text());
    assert!(
        !receipts[0].text().contains("实付"),
        "{}",
        receipts[0].text()
    );
    assert_eq!(details_rows(&d), 0, "the answer came before the receipt");
    // Douyin answers at last (the slow query, or the retry after its time limit).
    fake.set_details_mode(Mode::Normal);
    wait_until("the late details", background(), || details_rows(&d) == 1);
    wait_until("the display in place", background(), || {
        api(&d)["coupons"][0]["title"] == "单人午餐"
    });
    let coupons = api(&d);
    assert_eq!(coupons["coupons"][0]["pay"], "￥39.00");
    assert_eq!(coupons["coupons"].as_array().unwrap().len(), 1);
    // Nothing queues a second receipt: one printer job, done, one receipt on paper.
    assert_eq!(
        outputs(&d, "printer"),
        [("done".to_string(), 1, None)],
        "{}",
        d.log_text()
    );
    assert_eq!(printer.receipts().len(), 1);
}

#[test]
fn douyin_down_or_answering_garbage_never_slows_a_webhook_answer_and_receipts_still_print() {
    for (name, mode, n) in [("down", Mode::Down, 0), ("garbage", Mode::Garbage, 1)] {
        let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
        fake.set_details_mode(mode);
        let printer = FakePrinter::start(Paper::Ready);
        let dir = Scratch::new(&format!("details-{name}"));
        let opts = catchup_opts(&fake).args(&["--printer", &printer.dest()]);
        let d = Daemon::start_with(&dir.0, opts);
        for i in 0..5 {
            fake.sell(FakeDeal::new(
                &format!("70{n}{i}"),
                &format!("O{n}{i}"),
                "套餐",
                100,
                100,
            ));
            let r = d.push(&verify(
                &format!("70{n}{i}"),
                &format!("O{n}{i}"),
                1_700_000_000 + i,
            ));
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            assert!(
                r.elapsed < answer_limit(),
                "{name}: answered in {:?}",
                r.elapsed
            );
        }
        let receipts = printer.wait_receipts(5, background());
        assert_eq!(receipts.len(), 5, "{name}: {}", d.log_text());
        assert!(receipts.iter().all(|r| !r.text().contains("实付")));
        // The lookups are still being retried, and say why in the log.
        assert!(
            d.wait_log("certificate query failed", background()),
            "{name}: {}",
            d.log_text()
        );
        assert_eq!(
            query_i64(
                &d.sql(),
                "SELECT count(*) FROM lookups WHERE state = 'pending'"
            ),
            5,
            "{name}"
        );
        // Douyin recovers: every coupon gets its details, no receipt again.
        fake.set_details_mode(Mode::Normal);
        wait_until(
            &format!("{name}: details after recovery"),
            background(),
            || details_rows(&d) == 5,
        );
        assert_eq!(outputs(&d, "printer").len(), 5, "{name}");
    }
}

#[test]
fn a_recovered_record_with_amount_and_sku_gives_its_details_without_a_query() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let deal = FakeDeal::new(
        "7001000000000000202",
        "1088000000000000202",
        "周末下午茶",
        6800,
        8800,
    );
    fake.add(FakeRecord::verified("7001000000000000202", now - 600).with_details(deal));
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("details-record");
    let d = Daemon::start_with(
        &dir.0,
        catchup_opts(&fake).args(&["--printer", &printer.dest()]),
    );
    let receipts = printer.wait_receipts(1, background());
    assert_eq!(receipts.len(), 1, "{}", d.log_text());
    let text = receipts[0].text();
    for want in [
        "补录",
        "周末下午茶",
        "实付 ￥68.00",
        "原价 ￥88.00",
        &format!("门店 {POI_19}"),
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let (origin, poi): (String, String) = d
        .sql()
        .query_row("SELECT origin, poi_id FROM details", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((origin.as_str(), poi.as_str()), ("record", POI_19));
    assert_eq!(
        fake.certificate_queries(),
        0,
        "no query for a record that says it all"
    );
}

#[test]
fn test_pushes_and_details_off_ask_douyin_nothing() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let dir = Scratch::new("details-off");
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake).args(&["--details", "off"]));
    assert_eq!(d.push(&verify("off-1", "O-off", 1_700_000_000)).status, 200);
    let out = send(
        &d.url(),
        &dir.path("secret"),
        &["--certificate-id", "test-1", "--order-id", "O-test"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("both logged", background(), || {
        outputs(&d, "log").iter().filter(|o| o.0 == "done").count() == 2
    });
    drop(d);
    let before_second = fake.tokens_issued();
    // On: a test push is still not looked up (it is no sale).
    let d = Daemon::start_with(&dir.0, catchup_opts(&fake));
    let out = send(
        &d.url(),
        &dir.path("secret"),
        &["--certificate-id", "test-2", "--order-id", "O-test2"],
    );
    assert!(out.status.success());
    wait_until("the test push logged", background(), || {
        outputs(&d, "log").iter().filter(|o| o.0 == "done").count() == 3
    });
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM lookups"), 0);
    assert_eq!(fake.certificate_queries(), 0);
    // `--details on` needs the account; `check` says whether a token can be had.
    let out = run(
        &["serve", "--client-key", CLIENT_KEY, "--details", "on"],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--details on needs --account-id"));
    let secret = dir.path("secret");
    let check = |api: &str| {
        let out = run(
            &[
                "check",
                "--client-key",
                CLIENT_KEY,
                "--secret-file",
                secret.to_str().unwrap(),
                "--db",
                d.db.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--account-id",
                ACCOUNT,
                "--douyin-api",
                api,
            ],
            &[],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The daemon's first sweep fetches a token of its own; under an emulator it may come
    // late, and must not be counted as check's.
    wait_until("the daemon's own token", background(), || {
        fake.tokens_issued() > before_second
    });
    let tokens = fake.tokens_issued();
    let ok = check(&fake.url());
    assert!(
        ok.lines().any(|l| l.starts_with("ok")
            && l.contains("details")
            && l.contains("a token can be had")),
        "{ok}"
    );
    assert_eq!(
        fake.tokens_issued(),
        tokens + 1,
        "one token for catch-up and details"
    );
    fake.state.lock().unwrap().secret = "another".into();
    let refused = check(&fake.url());
    assert!(
        refused
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("details") && l.contains("no token")),
        "{refused}"
    );
}

#[test]
fn a_receipt_waiting_for_details_still_waits_after_a_kill_and_goes_when_due() {
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    fake.set_details_mode(Mode::Down);
    let printer = FakePrinter::start(Paper::Ready);
    let dir = Scratch::new("details-restart");
    let wait = Duration::from_secs(if emulated() { 20 } else { 6 });
    let opts = catchup_opts(&fake).args(&[
        "--printer",
        &printer.dest(),
        "--details-wait",
        &format!("{}s", wait.as_secs()),
    ]);
    let mut d = Daemon::start_with(&dir.0, opts.clone());
    let pushed = std::time::Instant::now();
    assert_eq!(d.push(&verify(CERT, ORDER, 1_700_000_000)).status, 200);
    d.kill9();
    assert_eq!(
        printer.receipts().len(),
        0,
        "printed before the wait was over"
    );
    // Douyin still down after the restart: the job is due `wait` after its commit,
    // not `wait` after the restart, and not at once.
    let d = Daemon::start_with(&dir.0, opts);
    let receipts = printer.wait_receipts(1, background());
    let printed = pushed.elapsed();
    assert_eq!(receipts.len(), 1, "{}", d.log_text());
    assert!(
        printed >= wait,
        "printed {printed:?} after the push, before its wait"
    );
    assert_eq!(outputs(&d, "printer").len(), 1);
}
