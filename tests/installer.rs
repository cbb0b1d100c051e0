//! The installer's day (SPEC §6, §7): one settings file for every command, `coupond
//! check`, `print-test`, test pushes marked 测试, SIGHUP, and printers as they are.

mod common;

use common::escpos::{decode, FakePrinter, Mode};
use common::*;
use std::path::Path;
use std::time::Duration;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A settings file in `dir` with these lines, and a secret file beside it.
fn settings(dir: &Path, lines: &[String]) -> String {
    let secret = dir.join("client_secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = format!(
        "# written by the test\nCOUPOND_CLIENT_KEY={CLIENT_KEY}\nCOUPOND_SECRET_FILE={}\n",
        secret.display()
    );
    for l in lines {
        text += l;
        text.push('\n');
    }
    let file = dir.join("coupond.env");
    std::fs::write(&file, text).unwrap();
    file.to_string_lossy().into_owned()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn check_passes_on_good_settings_with_a_database_not_created_yet() {
    let dir = Scratch::new("check-good");
    let printer = FakePrinter::start(Mode::Ready);
    let db = dir.path("coupond.db");
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_DB={}", db.display()),
            format!("COUPOND_LISTEN={}", free_addr()),
            format!("COUPOND_PRINTER={}", printer.dest()),
            format!("COUPOND_DISPLAY_LISTEN={}", free_addr()),
        ],
    );
    let out = run(&["check", "--config", &config], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for want in [
        "ok    settings  settings file",
        "ok    secret    1 secret(s) from",
        "ok    database",
        "does not exist yet",
        "ok    listen",
        "ok    printer",
        "answers status requests",
        "ok    display",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!db.exists(), "check creates nothing");
    assert!(printer.receipts().is_empty(), "check prints nothing");
}

#[test]
fn check_fails_naming_an_unreachable_printer_and_a_missing_secret_file() {
    let dir = Scratch::new("check-bad");
    // A port nobody listens on: connection refused.
    let nobody = free_addr();
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_DB={}", dir.path("coupond.db").display()),
            format!("COUPOND_LISTEN={}", free_addr()),
            format!("COUPOND_PRINTER=tcp://{nobody}"),
        ],
    );
    let out = run(&["check", "--config", &config], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  printer"))
        .unwrap_or_else(|| panic!("no printer FAIL line:\n{text}"));
    assert!(line.contains(&format!("tcp://{nobody}")), "{line}");
    assert!(text.contains("ok    secret"), "{text}");

    let missing = dir.path("no-such-secret");
    let out = run(
        &[
            "check",
            "--config",
            &config,
            "--printer",
            dir.path("receipts.bin").to_str().unwrap(),
            "--secret-file",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  secret"))
        .unwrap();
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    assert!(
        text.contains("receipts.bin does not exist yet; created at the first receipt"),
        "{text}"
    );
    // A device that is not there is a FAIL that says what to look at.
    let out = run(
        &[
            "check",
            "--config",
            &config,
            "--printer",
            "/dev/usb/coupond-test-lp9",
        ],
        &[],
    );
    assert!(stdout(&out).contains("FAIL  printer   /dev/usb/coupond-test-lp9 does not exist"));
    // A typo in the settings file is a FAIL line too, naming the closest setting.
    std::fs::write(&config, "COUPOND_PRINTR=/dev/usb/lp0\n").unwrap();
    let out = run(&["check", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("did you mean COUPOND_PRINTER?"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_accepts_ports_held_by_the_running_coupond_and_warns_of_a_world_readable_secret() {
    let dir = Scratch::new("check-running");
    let d = Daemon::start(&dir.0);
    let secret = dir.path("secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        &[
            "check",
            "--db",
            d.db.to_str().unwrap(),
            "--listen",
            &d.addr.to_string(),
            "--client-key",
            CLIENT_KEY,
            "--secret-file",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("is held by a running coupond"), "{text}");
    assert!(
        text.contains("warn  secret") && text.contains("chmod 640"),
        "{text}"
    );
    assert!(text.contains("schema version"), "{text}");
    // A port held by something else is a FAIL.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(
        &[
            "check",
            "--db",
            d.db.to_str().unwrap(),
            "--listen",
            &other.local_addr().unwrap().to_string(),
            "--client-key",
            CLIENT_KEY,
            "--secret-file",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        stdout(&out).contains("in use by another program"),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn status_reprint_and_reverify_read_the_database_from_the_settings_file() {
    let dir = Scratch::new("config-status");
    let d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "cfg-1")).status, 200);
    let config = settings(&dir.0, &[format!("COUPOND_DB={}", d.db.display())]);
    let out = run(&["status", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("database   {}", d.db.display())));
    assert!(stdout(&out).contains("coupons    1: 1 verified"));
    // Through the environment too, as systemd or a shell would name it.
    let out = run(&["reverify"], &[("COUPOND_CONFIG", &config)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("0 of 0 rejected"), "{}", stdout(&out));
    // The environment beats the file; the flag beats both.
    let out = run(
        &["status", "--config", &config],
        &[("COUPOND_DB", "/nonexistent/env.db")],
    );
    assert!(
        stderr(&out).contains("/nonexistent/env.db"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "status",
            "--config",
            &config,
            "--db",
            d.db.to_str().unwrap(),
        ],
        &[("COUPOND_DB", "/nonexistent/env.db")],
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_mistyped_setting_in_the_file_stops_serve_naming_the_closest_one() {
    let dir = Scratch::new("config-typo");
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_DB={}", dir.path("coupond.db").display()),
            "COUPOND_LISTEN=127.0.0.1:0".into(),
            "COUPOND_PRINTR=/dev/usb/lp0".into(),
        ],
    );
    let out = run(&["serve", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("line 6: unknown setting COUPOND_PRINTR (did you mean COUPOND_PRINTER?)"),
        "{err}"
    );
    assert!(!dir.path("coupond.db").exists());
    // In the environment it is only a warning: hooks and scripts set their own.
    let out = run(
        &["status", "--db", "/nonexistent.db"],
        &[("COUPOND_PRINTR", "x")],
    );
    assert!(
        stderr(&out).contains("warning: environment variable COUPOND_PRINTR is no coupond setting and is ignored (did you mean COUPOND_PRINTER?)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sighup_rotates_the_secret_without_a_restart_and_recovers_what_the_old_one_rejected() {
    let dir = Scratch::new("sighup");
    let d = Daemon::start_with(
        &dir.0,
        Opts {
            secret_file_contents: Some("old-secret\n".into()),
            ..Opts::default()
        },
    );
    let pid = d.child.id();
    // Douyin already signs with the new secret: rejected for now.
    let body = coupon("verify", 1, "hup-1");
    let sig = sign(SECRET, body.as_bytes());
    assert_eq!(d.push_with(&body, Some(&sig), None).status, 401);
    std::fs::write(d.dir.join("secret"), format!("{SECRET}\nold-secret\n")).unwrap();
    unsafe_kill(pid, "HUP");
    assert!(
        d.wait_log(
            "reloaded: 1 app(s), 2 secret(s) in use",
            Duration::from_secs(10)
        ),
        "{}",
        d.log_text()
    );
    assert!(
        d.wait_log("reverify: 1 of 1 rejected", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    let body2 = coupon("verify", 2, "hup-2");
    assert_eq!(d.push(&body2).status, 200, "the new secret verifies");
    let c = d.sql();
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'applied'"
        ),
        2,
        "the rejected push was recovered"
    );
    assert_eq!(d.child.id(), pid);
    assert!(!d.log_text().contains(SECRET), "never a secret in the log");
    // A reload that fails keeps the secrets in use.
    std::fs::remove_file(d.dir.join("secret")).unwrap();
    unsafe_kill(pid, "HUP");
    assert!(d.wait_log(
        "reload failed, keeping the current secrets",
        Duration::from_secs(10)
    ));
    assert_eq!(d.push(&coupon("verify", 3, "hup-3")).status, 200);
}

#[test]
fn a_send_test_push_is_marked_as_a_test_in_the_database_receipt_display_and_status() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("test-push");
    let display = free_addr();
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest(), "--display-listen", &display]),
    );
    let out = send(&d.url(), &d.dir.join("secret"), &["--code", "TEST00001234"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Without --certificate-id each run is a fresh test coupon: a second run prints too.
    let out = send(&d.url(), &d.dir.join("secret"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let c = d.sql();
    assert_eq!(
        query_column::<String>(
            &c,
            "SELECT source || ' ' || outcome FROM messages ORDER BY id"
        ),
        ["test applied", "test applied"]
    );
    let receipts = printer.wait_receipts(2, Duration::from_secs(20));
    assert_eq!(receipts.len(), 2);
    for r in &receipts {
        assert!(r.text().contains("测试"), "{}", r.text());
        assert!(r.cut);
    }
    let api = request(display.parse().unwrap(), "GET", "/api/coupons", &[], b"");
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(v["coupons"][0]["test"], true, "{}", api.body);
    // A real push is no test.
    assert_eq!(d.push(&coupon("verify", 5, "real-1")).status, 200);
    let status = stdout(&run(&["status", "--db", d.db.to_str().unwrap()], &[]));
    assert!(status.contains("coupons    1: 1 verified"), "{status}");
    assert!(status.contains("messages   1: 1 applied"), "{status}");
    assert!(status.contains("tests      2 test message(s)"), "{status}");
}

#[test]
fn print_test_goes_straight_to_the_printer_and_creates_a_file_printer() {
    let dir = Scratch::new("print-test");
    let file = dir.path("receipts.bin");
    let out = run(
        &[
            "print-test",
            "--db",
            dir.path("coupond.db").to_str().unwrap(),
            "--printer",
            file.to_str().unwrap(),
            "--store-name",
            "望京店",
            "--paper-width",
            "80",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let receipts = decode(&std::fs::read(&file).unwrap());
    assert_eq!(receipts.len(), 1);
    let r = &receipts[0];
    let text = r.text();
    for want in [
        "望京店",
        "打印测试",
        "测试",
        "80 mm, 48 列",
        "核销成功",
        "0123456789",
        "打印时间",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(r.chinese_mode && r.cut);
}

#[test]
fn print_test_goes_through_the_running_daemon_and_is_recorded_as_a_job_about_no_message() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("print-test-daemon");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    let out = run(
        &[
            "print-test",
            "--db",
            d.db.to_str().unwrap(),
            "--printer",
            &printer.dest(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("printed by the running daemon"),
        "{}",
        stdout(&out)
    );
    let receipts = printer.wait_receipts(1, Duration::from_secs(10));
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].text().contains("打印测试") && receipts[0].cut);
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM certificates"), 0);
    // A job about no message: no made-up message row, and no test message in status.
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 0);
    assert_eq!(
        query_str(
            &c,
            "SELECT coalesce(message_id, 'none') || ' ' || work || ' ' || state FROM outputs"
        ),
        "none print_test done"
    );
    let status = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    assert!(
        !stdout(&status).contains("test message"),
        "{}",
        stdout(&status)
    );
    // One daemon per database.
    let second = run(
        &[
            "serve",
            "--db",
            d.db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--client-key",
            CLIENT_KEY,
        ],
        &[("COUPOND_CLIENT_SECRET", "x")],
    );
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another coupond serve is running on"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn a_printer_that_never_answers_status_gets_each_receipt_exactly_once_under_auto() {
    let printer = FakePrinter::start(Mode::OneWay);
    let dir = Scratch::new("one-way");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    for (i, c) in ["oneway-1", "oneway-2", "oneway-3"].iter().enumerate() {
        assert_eq!(d.push(&coupon("verify", i as i64 + 1, c)).status, 200);
    }
    let receipts = printer.wait_receipts(3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let receipts_now = printer.receipts();
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts_now.len(), 3, "each exactly once");
    // Each exactly once (the fake records a connection when it closes, so the order
    // of two close-together connections is its own, not the daemon's).
    let mut ids: Vec<String> = receipts_now
        .iter()
        .filter_map(|r| r.lines.iter().find(|l| l.starts_with("券ID")).cloned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "券ID      oneway-1",
            "券ID      oneway-2",
            "券ID      oneway-3"
        ]
    );
    let warnings = d
        .log_text()
        .lines()
        .filter(|l| l.contains("does not answer status requests"))
        .count();
    assert_eq!(warnings, 1, "one warning: {}", d.log_text());
    let c = d.sql();
    assert_eq!(
        query_column::<String>(&c, "SELECT state FROM outputs ORDER BY id"),
        ["done", "done", "done"]
    );
}

#[test]
fn a_wrong_secret_and_printer_trouble_show_in_status_and_on_the_display_but_junk_does_not() {
    let dir = Scratch::new("trouble");
    let display = free_addr();
    let nobody = free_addr();
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--display-listen",
            &display,
            "--printer",
            &format!("tcp://{nobody}"),
        ]),
    );
    let alerts = || {
        let api = request(display.parse().unwrap(), "GET", "/api/coupons", &[], b"");
        let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        v["alerts"].clone()
    };
    // Internet junk: unsigned, or signed for an app that is not ours.
    assert_eq!(
        d.push_with(&coupon("verify", 1, "junk-1"), None, None)
            .status,
        401
    );
    let theirs = coupon("verify", 1, "junk-2").replace(CLIENT_KEY, "someone-else");
    assert_eq!(
        d.push_with(&theirs, Some(&sign("x", theirs.as_bytes())), None)
            .status,
        401
    );
    let status = stdout(&run(&["status", "--db", d.db.to_str().unwrap()], &[]));
    assert!(!status.contains("signature  "), "{status}");
    assert!(!alerts().to_string().contains("签名"), "{}", alerts());
    // A genuine-looking push signed with another secret: the secret is wrong.
    let ours = coupon("verify", 1, "real-but-rejected");
    assert_eq!(
        d.push_with(&ours, Some(&sign("old-secret", ours.as_bytes())), None)
            .status,
        401
    );
    let status = stdout(&run(&["status", "--db", d.db.to_str().unwrap()], &[]));
    assert!(
        status.contains("signature  1 push(es) for a configured app failed the signature check in the last hour"),
        "{status}"
    );
    assert!(
        alerts().to_string().contains("签名校验失败"),
        "{}",
        alerts()
    );
    // The fix: the secret that push was signed with, and a reload. Reverify records the
    // push, and the banner and the count go at once.
    std::fs::write(d.dir.join("secret"), format!("{SECRET}\nold-secret\n")).unwrap();
    unsafe_kill(d.child.id(), "HUP");
    wait_until(
        "the banner to clear after the reload",
        Duration::from_secs(10),
        || !alerts().to_string().contains("签名校验失败"),
    );
    let status = stdout(&run(&["status", "--db", d.db.to_str().unwrap()], &[]));
    assert!(!status.contains("signature  "), "{status}");
    assert!(status.contains("coupons    1: 1 verified"), "{status}");
    // The printer is unreachable: the display says so until a receipt prints.
    assert_eq!(d.push(&coupon("verify", 2, "trouble-1")).status, 200);
    wait_until("a printer banner", Duration::from_secs(15), || {
        alerts().to_string().contains("打印机故障")
    });
}
