//! The command line as an installer meets it: help, start-up errors, environment
//! variables, `status`, `send`, and a clean stop.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_names_every_command_and_every_flag_with_its_variable() {
    let top = run(&["--help"], &[]);
    assert!(top.status.success());
    for cmd in ["serve", "status", "send"] {
        assert!(stdout(&top).contains(cmd));
        let h = run(&[cmd, "--help"], &[]);
        assert!(h.status.success(), "{cmd}");
        assert!(stdout(&h).contains(&format!("Usage: coupond {cmd}")));
    }
    let serve = stdout(&run(&["serve", "--help"], &[]));
    for f in [
        "--listen",
        "--path",
        "--db",
        "--client-key",
        "--secret-file",
        "--max-body",
        "COUPOND_MAX_BODY",
        "127.0.0.1:8080",
        "/douyin/webhook",
    ] {
        assert!(serve.contains(f), "{f} missing from serve --help");
    }
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let dir = Scratch::new("badcfg");
    let db = dir.path("x.db");
    let db = db.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["serve", "--db", db],
            &[("COUPOND_CLIENT_SECRET", "s")],
            "needs --client-key",
        ),
        (
            &["serve", "--db", db, "--client-key", "k"],
            &[],
            "no client secret",
        ),
        (
            &[
                "serve",
                "--db",
                db,
                "--client-key",
                "k",
                "--listen",
                "localhost",
            ],
            &[("COUPOND_CLIENT_SECRET", "s")],
            "invalid --listen",
        ),
        (
            &["serve", "--db", db, "--client-key", "k"],
            &[("COUPOND_CLIENT_SECRET", "s"), ("COUPOND_MAX_BODY", "huge")],
            "invalid COUPOND_MAX_BODY",
        ),
        (
            &["serve", "--db", db, "--client-key", "k", "--frobnicate"],
            &[],
            "unknown flag --frobnicate",
        ),
        (
            &[
                "serve",
                "--db",
                "/nonexistent-dir/x.db",
                "--client-key",
                "k",
                "--listen",
                "127.0.0.1:0",
            ],
            &[("COUPOND_CLIENT_SECRET", "s")],
            "cannot open database /nonexistent-dir/x.db",
        ),
        (&["launch"], &[], "unknown command"),
    ];
    for (args, env, want) in cases {
        let o = run(args, env);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("coupond:")).count(),
            1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_port_in_use_is_reported_plainly() {
    let dir = Scratch::new("inuse");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = dir.path("x.db");
    let o = run(
        &[
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--client-key",
            "k",
            "--listen",
            &addr,
        ],
        &[("COUPOND_CLIENT_SECRET", "s")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn settings_come_from_the_environment_and_systemd_credentials() {
    let dir = Scratch::new("envcfg");
    let creds = dir.path("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("client_secret"), format!("{SECRET}\n")).unwrap();
    let db = dir.path("env.db");
    let mut child = coupond()
        .arg("serve")
        .env("COUPOND_LISTEN", "127.0.0.1:0")
        .env("COUPOND_CLIENT_KEY", CLIENT_KEY)
        .env("COUPOND_DB", &db)
        .env("COUPOND_PATH", "/hook")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    use std::io::BufRead;
    let line = err
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on http://"))
        .expect("coupond did not start");
    let addr: std::net::SocketAddr = line
        .split("listening on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let body = coupon("verify", 1, "from-env");
    let hdr = vec![(
        "X-Douyin-Signature".to_string(),
        sign(SECRET, body.as_bytes()),
    )];
    assert_eq!(
        request(addr, "POST", "/hook", &hdr, body.as_bytes()).status,
        200
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        query_i64(&open_db(&db), "SELECT count(*) FROM certificates"),
        1
    );
}

#[test]
fn status_summarises_the_database_while_the_daemon_runs() {
    let dir = Scratch::new("status");
    let d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "s1")).status, 200);
    assert_eq!(d.push(&coupon("verify", 1, "s1")).status, 200);
    assert_eq!(d.push(&coupon("verify_cancel", 2, "s1")).status, 200);
    assert_eq!(d.push(&coupon("refund_success", 1, "s2")).status, 200);
    assert_eq!(d.push(&coupon("verify", 0, "s2")).status, 200);
    assert_eq!(d.push_with("{}", None, None).status, 401);
    let o = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "coupons    2: 0 verified, 1 cancelled, 1 refunded",
        "messages   4: 3 applied, 0 duplicate, 1 stale",
        "1 redeliveries counted",
        "rejected   1 (last ",
        "401 missing signature",
        "certificate s2",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let missing = run(
        &["status", "--db", dir.path("nope.db").to_str().unwrap()],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no database at"),
        "{}",
        stderr(&missing)
    );
    assert!(
        !dir.path("nope.db").exists(),
        "status must not create a database"
    );
}

#[test]
fn send_pushes_a_signed_coupon_that_the_daemon_applies() {
    let dir = Scratch::new("send");
    let d = Daemon::start(&dir.0);
    let secret = dir.path("secret");
    let o = send(
        &d.url(),
        &secret,
        &[
            "--action",
            "verify",
            "--certificate-id",
            "sent-1",
            "--order-id",
            "o-1",
            "--code",
            "ABCDEFGH1234",
            "--msg-time",
            "1700000000",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("attempt 1: HTTP 200"), "{}", stdout(&o));
    let c = d.sql();
    let (status, code, t): (String, String, i64) = c
        .query_row("SELECT status, code, status_msg_time FROM certificates WHERE certificate_id = 'sent-1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (status.as_str(), code.as_str(), t),
        ("verified", "ABCDEFGH1234", 1_700_000_000)
    );
    assert!(query_str(&c, "SELECT msg_id FROM messages").starts_with("coupond-send-"));
    // The URL check.
    let o = send(&d.url(), &secret, &["--challenge", "4242"]);
    assert!(
        stdout(&o).contains(r#"HTTP 200"#) && stdout(&o).contains(r#"{"challenge":4242}"#),
        "{}",
        stdout(&o)
    );
}

/// A stand-in for a flaky tunnel: answers 500, then times out, then 200.
#[test]
fn send_retries_like_douyin_three_times_500ms_apart_with_a_3s_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        for (i, conn) in listener.incoming().take(3).enumerate() {
            let mut s = conn.unwrap();
            arrivals.push(Instant::now());
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match i {
                0 => s
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                    .unwrap(),
                1 => std::thread::sleep(Duration::from_millis(3500)),
                _ => s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .unwrap(),
            }
        }
        arrivals
    });
    let started = Instant::now();
    let o = run(
        &[
            "send",
            "--url",
            &format!("http://{addr}/douyin/webhook"),
            "--client-key",
            "k",
            "--certificate-id",
            "r1",
        ],
        &[("COUPOND_CLIENT_SECRET", "s")],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("attempt 1: HTTP 500"), "{out}");
    assert!(out.contains("attempt 2: no answer within 3s"), "{out}");
    assert!(out.contains("attempt 3: HTTP 200"), "{out}");
    let arrivals = server.join().unwrap();
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(500));
    assert!(arrivals[2] - arrivals[1] >= Duration::from_millis(3500));
    assert!(started.elapsed() < Duration::from_secs(8));

    // Nobody listening: 4 attempts, then a failure exit.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = run(
        &[
            "send",
            "--url",
            &format!("http://{closed}/x"),
            "--client-key",
            "k",
            "--certificate-id",
            "r1",
        ],
        &[("COUPOND_CLIENT_SECRET", "s")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("attempt 4: failed"), "{}", stdout(&o));
    assert!(stdout(&o).contains("not delivered after 4 attempts"));
}

#[test]
fn sigterm_stops_cleanly_and_closes_the_database() {
    let dir = Scratch::new("sigterm");
    let mut d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "t1")).status, 200);
    assert_eq!(d.terminate(), Some(0));
    assert!(
        d.log_text().contains("stopped; database closed"),
        "{}",
        d.log_text()
    );
    // A clean close checkpoints and removes the WAL.
    assert!(!dir.path("coupond.db-wal").exists());
    assert_eq!(
        query_i64(&open_db(&d.db), "SELECT count(*) FROM certificates"),
        1
    );
}

#[test]
fn sigint_stops_cleanly_too() {
    let dir = Scratch::new("sigint");
    let mut d = Daemon::start(&dir.0);
    assert_eq!(d.push(&coupon("verify", 1, "i1")).status, 200);
    unsafe_kill(d.child.id(), "INT");
    assert!(
        d.wait_log("SIGINT: stopping", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    assert!(d.wait_log("stopped; database closed", Duration::from_secs(10)));
    assert_eq!(d.child.wait().unwrap().code(), Some(0));
}

/// What cargo hands a program it runs (`cargo run`, the tests) holds no `COUPOND_`
/// variable that coupond would warn about: the build time is not one.
#[test]
fn cargo_hands_coupond_no_variable_it_warns_about() {
    // coupond() passes this process's environment on, less the harness's own
    // COUPOND_TEST_RUNNER; COUPOND_BLESS too is set by whoever runs the tests.
    let mut cmd = coupond();
    cmd.args(["status", "--db", "/nonexistent/coupond.db"])
        .env_remove("COUPOND_BLESS");
    let out = cmd.output().unwrap();
    assert!(
        !stderr(&out).contains("is no coupond setting"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn print_test_help_says_the_printer_is_needed_and_how_long_it_waits() {
    let h = stdout(&run(&["print-test", "--help"], &[]));
    let printer = h
        .lines()
        .find(|l| l.trim_start().starts_with("--printer DEST"))
        .unwrap();
    assert!(printer.contains("required"), "{printer}");
    assert!(h.contains("--wait SECS"), "{h}");
    // Run without one, it says so before anything else.
    let out = run(&["print-test", "--db", "/nonexistent.db"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs --printer"), "{}", stderr(&out));
}
