//! The end-of-day report (SPEC §15): the real daemon records a day of pushes, a test
//! push, a recovered record and a rejected request; `coupond report` counts them by
//! each event's own time in the box's time zone.
//!
//! Time zones are given in POSIX form, which glibc reads without tzdata (a clean CI
//! machine may have none): `CST-8` is Asia/Shanghai (UTC+8, no daylight saving),
//! `CET-1CEST,M3.5.0,M10.5.0/3` is Europe/Berlin's rule.

mod common;

use std::path::Path;
use std::time::Duration;

use common::escpos::{FakePrinter, Mode};
use common::fake_douyin::{FakeDouyin, FakeRecord};
use common::*;
use coupond::schedule::Date;
use serde_json::{json, Value};

const SHANGHAI: &str = "CST-8";
const BERLIN: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn now() -> i64 {
    coupond::time::now_secs()
}

/// `coupond report --db DB --json ARGS` in time zone `tz`, parsed.
fn report_json(db: &Path, tz: &str, args: &[&str]) -> Value {
    let out = report(db, tz, &[&["--json"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `coupond report --db DB ARGS` in time zone `tz`: its standard output.
fn report(db: &Path, tz: &str, args: &[&str]) -> String {
    let out = run(
        &[&["report", "--db", db.to_str().unwrap()], args].concat(),
        &[("TZ", tz)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "coupond report {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Records what SPEC §13's details say about a coupon, as the details lookup would.
fn details(db: &Path, certificate_id: &str, title: &str, poi: &str, pay: i64, original: i64) {
    let c = open_db(db);
    c.execute(
        "INSERT OR REPLACE INTO details (certificate_id, title, sku_id, pay_amount,
             original_amount, poi_id, verify_id, origin, fetched_at)
         VALUES (?1, ?2, 'sku', ?3, ?4, ?5, 'v', 'query', '2026-01-01T00:00:00.000Z')",
        rusqlite::params![certificate_id, title, pay, original, poi],
    )
    .unwrap();
}

fn pushed(d: &Daemon, action: &str, at: i64, certificate_id: &str) {
    let r = d.push(&coupon(action, at, certificate_id));
    assert_eq!(r.status, 200, "{action} {certificate_id}: {}", r.body);
    assert!(
        r.body.contains("applied"),
        "{action} {certificate_id}: {}",
        r.body
    );
}

/// A day with every kind of event at the edges of a business day that starts at 04:00
/// in Shanghai. The day is the one two hours ago, so that catch-up (which sweeps the
/// last 24 hours) can recover a record inside it.
#[test]
fn a_business_day_from_four_to_four_counts_each_event_at_its_own_time() {
    let dir = Scratch::new("report-day");
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    // Shanghai is UTC+8 all year: local day D starts at D 04:00 local = D*DAY - 4h UTC.
    let days = (now() - 2 * HOUR + 4 * HOUR).div_euclid(DAY);
    let date = Date::from_days(days).to_string();
    let from = days * DAY - 4 * HOUR;
    let to = from + DAY;
    // The recovered record: inside the day, swept (older than a minute), with room
    // after it for the push it duplicates.
    let recovered_at = (now() - 2 * HOUR).min(to - 61);
    // Catch-up's first sweep covers the last 24 hours, later ones only since the last:
    // the records are there before it starts. One of them Douyin also pushes, after the
    // sweep: a duplicate, it counts once.
    fake.add(FakeRecord::verified(
        "P-pushed-and-swept",
        recovered_at + 30,
    ));
    fake.add(FakeRecord::verified("R-recovered", recovered_at));
    let opts = catchup_opts(&fake).args(&["--exec", "exit 3", "--output-attempts", "1"]);
    let d = Daemon::start_with(&dir.0, opts);
    let c = d.sql();
    wait_until("the catch-up sweep", Duration::from_secs(30), || {
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE source = 'reconcile'",
        ) == 2
    });

    pushed(&d, "verify", from - 1, "B-before");
    pushed(&d, "verify", from, "A-at-start");
    pushed(&d, "verify", to - 1, "C-at-end");
    pushed(&d, "verify", to, "E-next-day");
    pushed(&d, "verify", from - DAY + 600, "F-yesterday");
    pushed(&d, "verify_cancel", from + 100, "F-yesterday");
    pushed(&d, "verify", from + 200, "G-same-day");
    pushed(&d, "verify_cancel", from + 300, "G-same-day");
    pushed(&d, "refund_success", from + 400, "H-refund");
    pushed(&d, "verify", from + 600, "K-no-details");
    // Douyin's retry of the same body: one message.
    let again = d.push(&coupon("verify", from + 600, "K-no-details"));
    assert!(again.body.contains("applied"), "{}", again.body);
    let test = coupon_with(
        "verify",
        from + 500,
        "T-test",
        r#","from_user_id":"coupond-send""#,
    );
    assert_eq!(d.push(&test).status, 200);
    let p = d.push(&coupon("verify", recovered_at + 30, "P-pushed-and-swept"));
    assert!(p.body.contains("duplicate"), "{}", p.body);
    let rejected = d.push_with(&coupon("verify", from + 700, "X-forged"), Some("bad"), None);
    assert!(rejected.status >= 400, "{}", rejected.status);

    let db = d.db.clone();
    wait_until("every hook to fail", Duration::from_secs(60), || {
        query_i64(&c, "SELECT count(*) FROM outputs WHERE state = 'failed'") == 13
    });
    for (cert, title, poi, pay, original) in [
        ("A-at-start", "双人套餐", "poi-1", 9900, 12800),
        ("C-at-end", "双人套餐", "poi-1", 9900, 12800),
        ("R-recovered", "双人套餐", "poi-2", 9900, 12800),
        ("G-same-day", "咖啡", "poi-2", 1500, 2000),
        ("F-yesterday", "咖啡", "poi-2", 1500, 2000),
        ("P-pushed-and-swept", "咖啡", "poi-1", 1500, 1500),
        ("B-before", "双人套餐", "poi-1", 9900, 12800),
        ("E-next-day", "双人套餐", "poi-1", 9900, 12800),
        ("T-test", "双人套餐", "poi-1", 9900, 12800),
    ] {
        details(&db, cert, title, poi, pay, original);
    }

    // The rejected request and the failed hooks count on the day they happened: now.
    let today = (from..to).contains(&now());
    let got = report_json(
        &db,
        SHANGHAI,
        &[
            "--date",
            &date,
            "--day-starts",
            "04:00",
            "--poi-names",
            "poi-1=望京店",
        ],
    );
    let want = json!({
        "date": date,
        "from": format!("{date}T04:00:00+08:00"),
        "to": format!("{}T04:00:00+08:00", Date::from_days(days + 1)),
        // A, C, G, K, P and R; not B (before), E (after), F (the day before), T (test),
        // nor P's push (a duplicate of its record).
        "verify": 6,
        // F's (verified the day before) and G's.
        "verify_cancel": 2,
        "refund_success": 1,
        "net": 4,
        "pay_amount": 9900 * 3 + 1500 * 2 - 1500 * 2,
        "original_amount": 12800 * 3 + 2000 + 1500 - 2000 * 2,
        "without_amount": 1,
        // P and R.
        "recovered": 2,
        "rejected": i64::from(today),
        "failed_outputs": if today { 13 } else { 0 },
        "deals": [
            {"title": "双人套餐", "count": 3, "pay_amount": 29700},
            {"title": "咖啡", "count": 0, "pay_amount": 0},
            {"title": null, "count": 1, "pay_amount": null},
        ],
        "stores": [
            {"poi_id": "poi-1", "name": "望京店", "count": 3, "pay_amount": 21300},
            {"poi_id": "poi-2", "name": null, "count": 0, "pay_amount": 8400},
            {"poi_id": null, "name": null, "count": 1, "pay_amount": null},
        ],
    });
    assert_eq!(got, want, "{got:#}");

    // The same database by midnight days: B (03:59:59) now counts, C (03:59:59 the
    // next morning) and F's cancel's verify still not, P and R as their hour falls.
    let midnight = report_json(&db, SHANGHAI, &["--date", &date]);
    assert_eq!(midnight["from"], json!(format!("{date}T00:00:00+08:00")));
    let in_day = |t: i64| (days * DAY - 8 * HOUR..(days + 1) * DAY - 8 * HOUR).contains(&t);
    let late = [recovered_at, recovered_at + 30].map(in_day);
    let verifies = 4 + late.iter().filter(|&&x| x).count() as i64;
    assert_eq!(
        midnight["verify"],
        json!(verifies),
        "B, A, G, K and P, R if in: {midnight}"
    );
    assert_eq!(midnight["verify_cancel"], json!(2), "{midnight}");

    let text = report(&db, SHANGHAI, &["--date", &date, "--day-starts", "04:00"]);
    for want in [
        "日结单",
        "营业日    ",
        "核销",
        "撤销",
        "退款",
        "￥297.00",
        "补录",
        "双人套餐",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let net = text.lines().find(|l| l.starts_with("净核销")).unwrap();
    assert!(net.ends_with(" 4"), "{net:?}");
    assert!(
        text.lines()
            .all(|l| coupond::sinks::receipt::width(l) <= 48),
        "{text}"
    );
}

/// The last Sunday of `month` (3 or 10) of `year`, as days since 1970-01-01: when
/// Europe's clocks change.
fn last_sunday(year: i64, month: u32) -> i64 {
    let last = Date::parse(&format!("{year}-{month:02}-31"))
        .unwrap()
        .days();
    // 1970-01-01 was a Thursday: (days + 4) % 7 is 0 on Sundays.
    last - (last + 4).rem_euclid(7)
}

/// Europe/Berlin: the day the clocks go back has 25 hours, the day before they go
/// forward (for a day that starts at 04:00) 23; each event counts at its own instant.
#[test]
fn days_across_daylight_saving_changes_are_twenty_five_and_twenty_three_hours() {
    let dir = Scratch::new("report-dst");
    let d = Daemon::start(&dir.0);
    // The latest such days that are over, whatever the year of the machine's clock.
    let year = Date::from_days(now().div_euclid(DAY)).year;
    let past = |days: i64| days + 2 < now().div_euclid(DAY);
    let autumn = [year, year - 1]
        .map(|y| last_sunday(y, 10))
        .into_iter()
        .find(|&d| past(d));
    let spring = [year, year - 1]
        .map(|y| last_sunday(y, 3))
        .into_iter()
        .find(|&d| past(d));
    let (autumn, spring) = (autumn.unwrap(), spring.unwrap());

    // Autumn, midnight to midnight: 00:00 CEST (+02:00) to 00:00 CET (+01:00).
    let (from, to) = (autumn * DAY - 2 * HOUR, (autumn + 1) * DAY - HOUR);
    assert_eq!(to - from, 25 * HOUR);
    // Spring, the Saturday from 04:00 CET to the Sunday 04:00 CEST.
    let (s_from, s_to) = ((spring - 1) * DAY + 3 * HOUR, spring * DAY + 2 * HOUR);
    assert_eq!(s_to - s_from, 23 * HOUR);
    for (name, from, to) in [("autumn", from, to), ("spring", s_from, s_to)] {
        pushed(&d, "verify", from - 1, &format!("{name}-before"));
        pushed(&d, "verify", from, &format!("{name}-first"));
        // 02:30 on the day the clocks go back happens twice; both are inside the day.
        pushed(
            &d,
            "verify",
            from + 2 * HOUR + 1800,
            &format!("{name}-night"),
        );
        pushed(&d, "verify", to - 1, &format!("{name}-last"));
        pushed(&d, "verify", to, &format!("{name}-after"));
    }

    let date = Date::from_days(autumn).to_string();
    let got = report_json(&d.db, BERLIN, &["--date", &date, "--keep-days", "0"]);
    assert_eq!(
        got["from"],
        json!(format!("{date}T00:00:00+02:00")),
        "{got}"
    );
    let next = Date::from_days(autumn + 1);
    assert_eq!(got["to"], json!(format!("{next}T00:00:00+01:00")), "{got}");
    assert_eq!(got["verify"], json!(3), "{got}");

    let date = Date::from_days(spring - 1).to_string();
    let args = ["--date", &date, "--keep-days", "0", "--day-starts", "04:00"];
    let got = report_json(&d.db, BERLIN, &args);
    assert_eq!(
        got["from"],
        json!(format!("{date}T04:00:00+01:00")),
        "{got}"
    );
    let next = Date::from_days(spring);
    assert_eq!(got["to"], json!(format!("{next}T04:00:00+02:00")), "{got}");
    assert_eq!(got["verify"], json!(3), "{got}");
}

/// A day before `--keep-days` may have lost its messages: refused, naming the day; so
/// is a day that has not begun. A bad date or time is a usage error.
#[test]
fn a_day_older_than_the_retention_or_not_begun_is_refused() {
    let dir = Scratch::new("report-refused");
    let d = Daemon::start(&dir.0);
    let db = d.db.to_str().unwrap();
    let today = now().div_euclid(DAY);
    let old = Date::from_days(today - 40).to_string();
    let out = run(
        &["report", "--db", db, "--date", &old, "--keep-days", "30"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&old) && err.contains("--keep-days 30"),
        "{err}"
    );
    let ok = run(
        &["report", "--db", db, "--date", &old, "--keep-days", "60"],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let future = Date::from_days(today + 3).to_string();
    let out = run(&["report", "--db", db, "--date", &future], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&future) && err.contains("not begun"), "{err}");

    for bad in [["--date", "2026-02-30"], ["--day-starts", "24:00"]] {
        let out = run(&[&["report", "--db", db], &bad[..]].concat(), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(bad[0]), "{err}");
    }
}

/// `--print` with no daemon running: straight to the printer, a receipt in GB18030
/// headed 日结单, every line within the paper's columns (a Chinese character is two).
#[test]
fn the_printed_report_is_a_receipt_headed_rijiedan_that_fits_58_and_80_mm_paper() {
    let dir = Scratch::new("report-print");
    let mut d = Daemon::start(&dir.0);
    let at = now() - 60;
    let days = (at + 8 * HOUR).div_euclid(DAY);
    let date = Date::from_days(days).to_string();
    pushed(&d, "verify", at, "print-1");
    pushed(&d, "verify", at, "print-2");
    pushed(&d, "verify", at, "print-3");
    details(
        &d.db,
        "print-1",
        "一个名字非常非常非常非常非常长的双人下午茶套餐",
        "7001",
        12900,
        19900,
    );
    details(&d.db, "print-2", "咖啡", "7002", 1550, 1550);
    d.terminate();

    for (mm, columns) in [("58", 32), ("80", 48)] {
        let printer = FakePrinter::start(Mode::Ready);
        let args = [
            "--date",
            &date,
            "--print",
            "--printer",
            &printer.dest(),
            "--paper-width",
            mm,
            "--store-name",
            "望京店",
            "--poi-names",
            "7001=望京店,7002=国贸店",
        ];
        report(&d.db, SHANGHAI, &args);
        let receipts = printer.wait_receipts(1, Duration::from_secs(10));
        assert_eq!(receipts.len(), 1, "{receipts:?}");
        let r = &receipts[0];
        assert!(r.chinese_mode && r.cut);
        let text = r.text();
        for want in [
            "日结单",
            &format!("营业日    {date}"),
            "￥144.50",
            "咖啡",
            "国贸店",
            "(未知商品)",
            "金额未知",
        ] {
            assert!(text.contains(want), "{mm} mm: {want} missing:\n{text}");
        }
        let row = |label: &str| r.lines.iter().find(|l| l.starts_with(label)).cloned();
        assert!(row("核销").unwrap().ends_with(" 3"), "{text}");
        assert!(row("实付合计").unwrap().ends_with(" ￥144.50"), "{text}");
        for line in &r.lines {
            let width = coupond::sinks::receipt::width(line);
            assert!(width <= columns, "{mm} mm: {line:?} is {width} columns");
        }
    }
}

/// `HH:MM` in Shanghai of the instant `t`, and that instant's local date.
fn shanghai_clock(t: i64) -> (String, String) {
    let local = t + 8 * HOUR;
    let tod = local.rem_euclid(DAY);
    let hhmm = format!("{:02}:{:02}", tod / HOUR, tod / 60 % 60);
    (hhmm, Date::from_days(local.div_euclid(DAY)).to_string())
}

fn report_jobs(d: &Daemon) -> Vec<(String, i64)> {
    d.sql()
        .prepare("SELECT state, attempts FROM outputs WHERE work = 'report' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A report time that passed while the daemon was down is printed at the next start,
/// once; the printer is out of paper then, and the report waits for it however many
/// attempts that takes (`--output-attempts 1` gives a coupon's receipt up at once); a
/// restart after it printed prints nothing.
#[test]
fn a_missed_report_time_prints_once_at_start_waits_for_paper_and_never_again() {
    let dir = Scratch::new("report-missed");
    let mut d = Daemon::start(&dir.0);
    pushed(&d, "verify", now() - 30, "missed-1");
    pushed(&d, "verify", now() - 30, "missed-2");
    d.terminate();
    // The database was there long before today's report time.
    d.sql()
        .execute(
            "UPDATE report_schedule SET since = '2000-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    let report_time = now() - 120;
    let (at, day) = shanghai_clock(report_time);
    let printer = FakePrinter::start(Mode::NoPaper);
    let opts = Opts::default().env("TZ", SHANGHAI).args(&[
        "--report-at",
        &at,
        "--printer",
        &printer.dest(),
        "--printer-status",
        "on",
        "--output-attempts",
        "1",
    ]);
    let d = Daemon::start_with(&dir.0, opts.clone());
    wait_until(
        "two attempts without paper",
        Duration::from_secs(30),
        || {
            report_jobs(&d)
                .first()
                .is_some_and(|(_, attempts)| *attempts >= 2)
        },
    );
    assert_eq!(report_jobs(&d)[0].0, "pending", "never given up");
    assert!(printer.receipts().is_empty());

    printer.set_mode(Mode::Ready);
    let receipts = printer.wait_receipts(1, Duration::from_secs(90));
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let text = receipts[0].text();
    assert!(
        text.contains("日结单") && text.contains(&format!("营业日    {day}")),
        "{text}"
    );
    wait_until("the job done", Duration::from_secs(10), || {
        report_jobs(&d) == [("done".to_string(), report_jobs(&d)[0].1)]
    });
    let last: String = query_str(&d.sql(), "SELECT last_day FROM report_schedule");
    assert_eq!(last, day);

    let mut d = d;
    d.terminate();
    let d = Daemon::start_with(&dir.0, opts);
    assert!(
        d.wait_log(
            "the next end-of-day report prints at",
            Duration::from_secs(20)
        ),
        "{}",
        d.log_text()
    );
    assert_eq!(report_jobs(&d).len(), 1, "printed once");
    assert_eq!(printer.receipts().len(), 1);
}

/// `--report-at` a little ahead: the daemon prints at that local time by itself.
#[test]
fn the_report_prints_by_itself_at_the_report_time() {
    let dir = Scratch::new("report-at");
    let printer = FakePrinter::start(Mode::Ready);
    // 90 s ahead, so that the minute it names begins 30 to 90 s from now: after the
    // daemon has started, and soon.
    let (at, _) = shanghai_clock(now() + 90);
    let opts = Opts::default().env("TZ", SHANGHAI).args(&[
        "--report-at",
        &at,
        "--printer",
        &printer.dest(),
    ]);
    let d = Daemon::start_with(&dir.0, opts);
    pushed(&d, "verify", now(), "timed-1");
    let receipts = printer.wait_receipts(2, Duration::from_secs(150));
    let reports: Vec<_> = receipts
        .iter()
        .filter(|r| r.text().contains("日结单"))
        .collect();
    assert_eq!(reports.len(), 1, "{receipts:?}");
    let report_time = reports[0]
        .lines
        .iter()
        .find(|l| l.starts_with("打印时间"))
        .unwrap()
        .clone();
    assert!(
        report_time.contains(&format!(" {at}:")),
        "{report_time} at {at}"
    );
    assert_eq!(report_jobs(&d).len(), 1);
}

/// With the daemon running, `--print` goes through its printer queue (two writers must
/// not interleave on one printer) and waits to see it printed.
#[test]
fn report_print_goes_through_the_running_daemon() {
    let dir = Scratch::new("report-via-daemon");
    let printer = FakePrinter::start(Mode::Ready);
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    let at = now() - 30;
    pushed(&d, "verify", at, "via-1");
    printer.wait_receipts(1, Duration::from_secs(20));
    let (_, date) = shanghai_clock(at);
    let out = report(
        &d.db,
        SHANGHAI,
        &["--date", &date, "--print", "--printer", &printer.dest()],
    );
    assert!(out.contains("printed by the running daemon"), "{out}");
    let receipts = printer.wait_receipts(2, Duration::from_secs(20));
    let text = receipts[1].text();
    assert!(text.contains("日结单"), "{text}");
    let verifies = receipts[1]
        .lines
        .iter()
        .find(|l| l.starts_with("核销"))
        .unwrap();
    assert!(verifies.ends_with(" 1"), "{text}");
    assert_eq!(report_jobs(&d), [("done".to_string(), 1)]);
}
