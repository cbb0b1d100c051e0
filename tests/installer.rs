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
    assert!(
        text.contains("is held by the coupond running on this database"),
        "{text}"
    );
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

// The installer's second day (issue 20): no wrong "ok", no silent failure.

/// A directory outside /tmp (which the unit makes private) and /home, for paths that
/// check must judge by the unit's other rules.
fn outside_tmp(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("coupond-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shipped unit, installed in `units/` under `dir` with its daemon reading `config`.
fn install_unit(dir: &Path, config: &str) -> std::path::PathBuf {
    let units = dir.join("units");
    std::fs::create_dir_all(units.join("coupond.service.d")).unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/coupond.service"
    ))
    .unwrap()
    .replace(
        "ExecStart=/usr/bin/coupond serve",
        &format!("ExecStart=/usr/bin/coupond serve --config {config}"),
    );
    std::fs::write(units.join("coupond.service"), unit).unwrap();
    units
}

fn line_of<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line {start:?} in:\n{text}"))
}

#[test]
fn check_judges_paths_as_the_installed_unit_sees_them_and_honours_a_drop_in() {
    let dir = Scratch::new("check-unit");
    let outside = outside_tmp("check-unit");
    let db = outside.join("coupond.db");
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_DB={}", db.display()),
            format!("COUPOND_LISTEN={}", free_addr()),
            "COUPOND_PRINTER=/tmp/receipts.bin".into(),
        ],
    );
    // Without the unit: this user may write both, so both are ok.
    let none = dir.path("no-units");
    std::fs::create_dir_all(&none).unwrap();
    let out = run(
        &["check", "--config", &config],
        &[("SYSTEMD_UNIT_PATH", none.to_str().unwrap())],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("unit "), "{text}");

    let units = install_unit(&dir.0, &config);
    let env = [("SYSTEMD_UNIT_PATH", units.to_str().unwrap())];
    let out = run(&["check", "--config", &config], &env);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        line_of(&text, "ok    unit").contains("as user coupond"),
        "{text}"
    );
    let database = line_of(&text, "FAIL  database");
    for want in [
        "read-only for the service (ProtectSystem=strict in",
        "use /var/lib/coupond/coupond.db",
        &format!("ReadWritePaths={}", outside.display()),
    ] {
        assert!(database.contains(want), "{want:?} missing: {database}");
    }
    let printer = line_of(&text, "FAIL  printer");
    assert!(
        printer.contains("private /tmp") && printer.contains("PrivateTmp=yes"),
        "{printer}"
    );
    assert!(
        printer.contains("use /var/lib/coupond/receipts.bin"),
        "{printer}"
    );

    // A drop-in that opens the directory makes the database ok.
    std::fs::write(
        units.join("coupond.service.d/paths.conf"),
        format!("[Service]\nReadWritePaths={}\n", outside.display()),
    )
    .unwrap();
    let out = run(
        &[
            "check",
            "--config",
            &config,
            "--printer",
            outside.join("receipts.bin").to_str().unwrap(),
        ],
        &env,
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        line_of(&text, "ok    unit").contains("paths.conf"),
        "{text}"
    );
    assert!(
        line_of(&text, "ok    database").contains("does not exist yet"),
        "{text}"
    );
    assert!(
        line_of(&text, "ok    printer").contains("receipts.bin"),
        "{text}"
    );

    // Settings the unit's daemon does not read are judged as this user sees them.
    let other = dir.path("other.env");
    std::fs::copy(&config, &other).unwrap();
    let out = run(&["check", "--config", other.to_str().unwrap()], &env);
    assert!(!stdout(&out).contains("ok    unit"), "{}", stdout(&out));
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn check_settings_only_judges_what_a_reload_reads_and_nothing_else() {
    let dir = Scratch::new("check-settings-only");
    // A port held by another program, and a printer that is not there: not its business.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_LISTEN={}", other.local_addr().unwrap()),
            "COUPOND_PRINTER=/dev/usb/coupond-test-nothing".into(),
        ],
    );
    let out = run(&["check", "--config", &config, "--settings-only"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    // The shipped placeholder key is a warning, not an ok.
    let placeholder = dir.path("placeholder.env");
    std::fs::write(
        &placeholder,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(CLIENT_KEY, "your-app-id"),
    )
    .unwrap();
    let out = run(
        &[
            "check",
            "--config",
            placeholder.to_str().unwrap(),
            "--settings-only",
        ],
        &[],
    );
    assert!(
        line_of(&stdout(&out), "warn  settings").contains("placeholder"),
        "{}",
        stdout(&out)
    );
    // A typo and an unreadable secret fail it.
    std::fs::write(&config, "COUPOND_CLIENT_KEYS=x\n").unwrap();
    let out = run(&["check", "--config", &config, "--settings-only"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("did you mean COUPOND_CLIENT_KEY?"));
}

/// A reload with a broken settings file: one error line, the daemon keeps serving with
/// its last good settings, and STATUS= keeps saying so until a reload succeeds.
#[test]
fn a_failed_reload_keeps_the_last_good_settings_and_status_says_so_until_fixed() {
    use std::os::unix::net::UnixDatagram;
    let dir = Scratch::new("reload-status");
    let config = settings(&dir.0, &[]);
    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let d = Daemon::start_with(
        &dir.0,
        Opts::default()
            .args(&["--config", &config])
            .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
            .env("WATCHDOG_USEC", "400000"),
    );
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}COUPOND_PRINTR=/dev/usb/lp0\n")).unwrap();
    unsafe_kill(d.child.id(), "HUP");
    let recv = || {
        let mut buf = [0u8; 2048];
        sock.recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            .unwrap_or_default()
    };
    let failed = |m: &str| m.contains("failed, running on the settings before it");
    let mut seen = Vec::new();
    wait_until(
        "STATUS= to say the reload failed",
        Duration::from_secs(10),
        || {
            let m = recv();
            seen.push(m.clone());
            failed(&m) && m.contains("COUPOND_PRINTR")
        },
    );
    // The watchdog's later STATUS= still says it.
    wait_until(
        "a watchdog STATUS= that still says it",
        Duration::from_secs(10),
        || {
            let m = recv();
            m.starts_with("WATCHDOG=1") && failed(&m)
        },
    );
    assert!(d.wait_log("reload failed, keeping", Duration::from_secs(5)));
    assert_eq!(d.push(&coupon("verify", 1, "still-serving")).status, 200);
    // Fixed, with another setting changed: the reload names it, and STATUS= is clean.
    std::fs::write(&config, format!("{good}COUPOND_STORE_NAME=望京店\n")).unwrap();
    unsafe_kill(d.child.id(), "HUP");
    assert!(
        d.wait_log(
            "changed, applied at the next start (systemctl restart coupond): COUPOND_STORE_NAME",
            Duration::from_secs(10)
        ),
        "{}",
        d.log_text()
    );
    wait_until("a clean watchdog STATUS=", Duration::from_secs(10), || {
        let m = recv();
        m.starts_with("WATCHDOG=1") && !failed(&m)
    });
}

#[test]
fn print_test_shows_what_the_printer_reports_and_a_receipt_given_up_on_never_prints_later() {
    let dir = Scratch::new("print-test-unplugged");
    // A network printer that is switched off: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dest = format!("tcp://{addr}");
    let d = Daemon::start_with(&dir.0, Opts::default().args(&["--printer", &dest]));
    let db = d.db.to_str().unwrap();
    let out = run(
        &["print-test", "--db", db, "--printer", &dest, "--wait", "12"],
        &[],
    );
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("the printer reports: printer"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("cancelled and will not print later"),
        "{text}"
    );
    assert!(!text.contains("is --printer set"), "{text}");
    let c = d.sql();
    assert_eq!(
        query_str(&c, "SELECT state FROM outputs WHERE sink = 'printer'"),
        "failed"
    );
    // The printer comes back: the next coupon prints, the given-up test receipt never.
    let printer = FakePrinter::start_on(std::net::TcpListener::bind(addr).unwrap(), Mode::Ready);
    assert_eq!(d.push(&coupon("verify", 1, "after-the-fix")).status, 200);
    let receipts = printer.wait_receipts(1, Duration::from_secs(30));
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].text().contains("after-the-fix"));
    wait_until("the coupon's job done", Duration::from_secs(10), || {
        outputs(&d, "printer")
            .iter()
            .filter(|o| o.0 == "done")
            .count()
            == 1
    });
    assert!(
        printer
            .receipts()
            .iter()
            .all(|r| !r.text().contains("打印测试")),
        "the test receipt printed after all"
    );
    assert_eq!(
        outputs(&d, "printer")[0].2.as_deref(),
        Some("given up by coupond print-test after 12s")
    );
}

#[test]
fn with_a_daemon_without_a_printer_print_test_prints_straight_and_reprint_refuses() {
    let dir = Scratch::new("no-printer-daemon");
    let d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "456")).status, 200);
    let db = d.db.to_str().unwrap();
    let file = dir.path("receipts.bin");
    let started = std::time::Instant::now();
    let out = run(
        &[
            "print-test",
            "--db",
            db,
            "--printer",
            file.to_str().unwrap(),
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
        stdout(&out).contains("the running coupond has no printer"),
        "{}",
        stdout(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let receipts = decode(&std::fs::read(&file).unwrap());
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].text().contains("打印测试"));
    // Recorded as a done printer job about no message: the last message is the coupon.
    let status = stdout(&run(&["status", "--db", db], &[]));
    assert!(
        status.contains("applied verify certificate 456\n"),
        "{status}"
    );
    assert!(status.contains("printer: 1 done"), "{status}");
    // A reprint would never print: none is queued, and it says why.
    let before = outputs(&d, "printer").len();
    let out = run(&["reprint", "456", "--db", db], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no printer"), "{}", stderr(&out));
    assert_eq!(outputs(&d, "printer").len(), before);
}

#[test]
fn with_a_daemon_printing_elsewhere_print_test_prints_on_the_printer_it_was_given() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("other-printer");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "789")).status, 200);
    printer.wait_receipts(1, Duration::from_secs(20));
    let db = d.db.to_str().unwrap();
    let file = dir.path("other.bin");
    let out = run(
        &[
            "print-test",
            "--db",
            db,
            "--printer",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("prints coupons on {}", printer.dest())));
    assert_eq!(decode(&std::fs::read(&file).unwrap()).len(), 1);
    let out = run(&["reprint", "789", "--db", db], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!("prints it on {} now", printer.dest())),
        "{}",
        stdout(&out)
    );
    assert_eq!(printer.wait_receipts(2, Duration::from_secs(20)).len(), 2);
}

/// Runs `coupond ARGS` as the unprivileged user `nobody` when this test runs as root
/// (else as this user): a user the state directory is closed to.
fn run_as_nobody(args: &[&str]) -> std::process::Output {
    let bin = Scratch::new("bin-for-nobody");
    let mut cmd = coupond_as_nobody(&bin);
    cmd.args(args)
        .env_remove("COUPOND_CLIENT_SECRET")
        .stdin(std::process::Stdio::null());
    cmd.output().unwrap()
}

/// `coupond()` as the user `nobody` when this test runs as root (else as this user).
/// The checkout may sit where only root may enter (/root): then the binary is run from
/// a copy in `bin`, which any user may run.
fn coupond_as_nobody(bin: &Scratch) -> std::process::Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return coupond();
    }
    let open_to_all = Path::new(BIN)
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let program = if open_to_all {
        std::path::PathBuf::from(BIN)
    } else {
        let copy = bin.path("coupond");
        std::fs::copy(BIN, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    };
    let runner = std::env::var("COUPOND_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(first) => {
            let mut c = std::process::Command::new(first);
            c.args(words).arg(&program);
            c
        }
        None => std::process::Command::new(&program),
    };
    cmd.env_remove("COUPOND_TEST_RUNNER")
        .env("COUPOND_CONFIG", "/dev/null")
        .uid(65534)
        .gid(65534);
    cmd
}

#[test]
fn a_closed_state_directory_is_said_to_be_a_permission_problem_with_the_way_in() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("closed");
    let d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "perm-1")).status, 200);
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let mode = if root { 0o700 } else { 0o000 };
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(mode)).unwrap();
    let db = d.db.to_str().unwrap();
    for (args, stream) in [
        (vec!["status", "--db", db], "stderr"),
        (vec!["reprint", "perm-1", "--db", db], "stderr"),
        (
            vec![
                "check",
                "--db",
                db,
                "--client-key",
                "k",
                "--listen",
                "127.0.0.1:0",
            ],
            "stdout",
        ),
    ] {
        let out = run_as_nobody(&args);
        let text = if stream == "stdout" {
            stdout(&out)
        } else {
            stderr(&out)
        };
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains("permission denied"), "{args:?}: {text}");
        assert!(
            text.contains(&format!("the directory {}", dir.0.display())),
            "{text}"
        );
        assert!(text.contains("run it as root"), "{text}");
        assert!(!text.contains("is --db right"), "{text}");
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn send_on_the_box_finds_the_daemon_from_the_settings_and_explains_401_and_404() {
    let dir = Scratch::new("send-box");
    let d = Daemon::start(&dir.0);
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_LISTEN=0.0.0.0:{}", d.addr.port()),
            "COUPOND_PATH=/douyin/webhook".into(),
        ],
    );
    let out = run(&["send", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "POST http://127.0.0.1:{}/douyin/webhook",
            d.addr.port()
        )),
        "{}",
        stdout(&out)
    );
    // Another secret: one attempt, and what differs.
    let wrong = dir.path("wrong_secret");
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    let out = run(
        &[
            "send",
            "--config",
            &config,
            "--secret-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.matches("attempt ").count(), 1, "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains("differs from the daemon's"), "{text}");
    assert!(text.contains(wrong.to_str().unwrap()), "{text}");
    // Another path: what the daemon serves.
    let out = run(
        &[
            "send",
            "--config",
            &config,
            "--url",
            &format!("http://{}/webhook", d.addr),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(text.matches("attempt ").count(), 1, "{text}");
    assert!(
        text.contains("nothing is served at /webhook: the daemon serves /douyin/webhook"),
        "{text}"
    );
    // status says how late the daemon's counts may be.
    let status = stdout(&run(&["status", "--db", d.db.to_str().unwrap()], &[]));
    assert!(
        status.contains("counted    by the running daemon"),
        "{status}"
    );
    assert!(status.contains("tests      1 test message(s)"), "{status}");
}

#[test]
fn check_fetches_a_douyin_token_and_connects_to_the_mqtt_broker() {
    let dir = Scratch::new("check-links");
    let douyin = common::fake_douyin::FakeDouyin::start(CLIENT_KEY, SECRET);
    let broker = common::mosquitto::Mosquitto::start(&dir.0);
    let config = settings(
        &dir.0,
        &[
            format!("COUPOND_DB={}", dir.path("coupond.db").display()),
            format!("COUPOND_LISTEN={}", free_addr()),
            "COUPOND_ACCOUNT_ID=6900".into(),
            format!("COUPOND_DOUYIN_API={}", douyin.url()),
            format!("COUPOND_MQTT=mqtt://127.0.0.1:{}", broker.port),
            "COUPOND_MQTT_CLIENT_ID=box-check".into(),
        ],
    );
    let out = run(&["check", "--config", &config], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        line_of(&text, "ok    catch-up").contains("a token for app"),
        "{text}"
    );
    assert!(
        line_of(&text, "ok    mqtt").contains("accepts a connection"),
        "{text}"
    );
    assert_eq!(douyin.tokens_issued(), 1);
    assert!(!text.contains(&douyin.tokens()[0]), "never the token");
    // A wrong secret and a broker that is down: FAIL lines.
    let nobody = common::mosquitto::free_port();
    std::fs::write(dir.path("client_secret"), "wrong\n").unwrap();
    let out = run(
        &[
            "check",
            "--config",
            &config,
            "--mqtt",
            &format!("mqtt://127.0.0.1:{nobody}"),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        line_of(&text, "FAIL  catch-up").contains("no token"),
        "{text}"
    );
    assert!(
        line_of(&text, "FAIL  mqtt").contains(&nobody.to_string()),
        "{text}"
    );
}

#[test]
fn a_field_with_spaces_cannot_fake_a_pair_in_the_log_line() {
    let dir = Scratch::new("log-fields");
    let d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "1 log_id=FORGED")).status, 200);
    assert!(
        d.wait_log(
            r#"certificate_id="1 log_id=FORGED""#,
            Duration::from_secs(10)
        ),
        "{}",
        d.log_text()
    );
}

#[test]
fn check_knows_the_running_daemons_port_without_asking_it() {
    let dir = Scratch::new("check-no-405");
    let d = Daemon::start(&dir.0);
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
            dir.path("secret").to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        stdout(&out).contains("is held by the coupond running on this database"),
        "{}",
        stdout(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.log_text().contains("405 GET"),
        "check left a line in the daemon's log: {}",
        d.log_text()
    );
}

/// A lock file root made (a print-test on a stopped box) serves the daemon's own user,
/// and one that root makes is given the database's owner.
#[test]
fn a_lock_file_made_by_root_does_not_keep_the_daemons_user_out() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: needs root, to be root and another user");
        return;
    }
    let dir = Scratch::new("root-lock");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path("state");
    std::fs::create_dir(&state).unwrap();
    let chown = |p: &Path| std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    chown(&state);
    let db = state.join("coupond.db");
    let secret = dir.path("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = Scratch::new("bin-for-nobody");
    let serve = |db: &Path| {
        coupond_as_nobody(&bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--client-key",
                CLIENT_KEY,
            ])
            .arg("--db")
            .arg(db)
            .arg("--secret-file")
            .arg(&secret)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The daemon makes its database; stopped, root prints a test: the lock it makes
    // is the database owner's.
    let mut first = serve(&db);
    wait_until("the database", Duration::from_secs(20), || db.exists());
    std::thread::sleep(Duration::from_millis(300));
    unsafe_kill(first.id(), "TERM");
    first.wait().unwrap();
    let lock = state.join("coupond.db.lock");
    std::fs::remove_file(&lock).unwrap();
    let out = run(
        &[
            "print-test",
            "--db",
            db.to_str().unwrap(),
            "--printer",
            dir.path("receipts.bin").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), 65534);
    // One made by root as root's (an older coupond): read-only is enough for flock.
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(&lock, "").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), 0);
    let mut second = serve(&db);
    let stderr_pipe = second.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let started = wait_for_line(&rx, &mut seen, "listening on http://");
    unsafe_kill(second.id(), "TERM");
    second.wait().unwrap();
    assert!(started, "{seen:#?}");
}

fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
) -> bool {
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(20)) {
        let hit = l.contains(needle);
        seen.push(l);
        if hit {
            return true;
        }
    }
    false
}

/// cargo-deb deletes every other coupond package in its output directory; packaging/deb
/// first moves them to previous/, where a rollback finds them.
#[test]
fn building_a_package_keeps_the_previous_ones_for_a_rollback() {
    let dir = Scratch::new("keep-previous");
    for name in [
        "coupond_0.1.0_amd64.deb",
        "coupond_0.1.0_armhf.deb",
        "coupond_0.0.9_amd64.deb",
    ] {
        std::fs::write(dir.path(name), name).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/keep-previous");
    let out = std::process::Command::new(script)
        .arg(&dir.0)
        .arg("amd64")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("kept the previous package:"),
        "{}",
        stdout(&out)
    );
    for kept in ["coupond_0.1.0_amd64.deb", "coupond_0.0.9_amd64.deb"] {
        assert_eq!(
            std::fs::read_to_string(dir.path("previous").join(kept)).unwrap(),
            kept
        );
        assert!(!dir.path(kept).exists());
    }
    // Another architecture's package is not this build's business.
    assert!(dir.path("coupond_0.1.0_armhf.deb").exists());
    let deb =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/deb")).unwrap();
    let keep = deb
        .find("packaging/keep-previous")
        .expect("packaging/deb keeps them");
    assert!(keep < deb.find("cargo deb --no-build").unwrap());
}
