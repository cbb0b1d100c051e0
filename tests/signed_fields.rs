//! SPEC §3 "Signed fields are data", §4 "Ids are text", §6 the hook contained: a
//! validly signed body is still hostile input. Printer commands in its fields never
//! reach the printer, a newline never starts a log line, ids sent as JSON numbers keep
//! every digit, and a hook gets a clean environment, its own process group and a
//! bounded share of memory.

mod common;

use common::escpos::{FakePrinter, Mode};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The sanitizer's mark for a character that must not be shown (`sanitize::MARK`).
const MARK: char = '\u{FFFD}';

/// A coupon message whose `certificate` object is `certificate`, `content` as a string.
fn coupon_of(action: &str, msg_time: i64, certificate: Value) -> String {
    let content = json!({"action": action, "msg_time": msg_time, "certificate": certificate});
    envelope(&Value::String(content.to_string()).to_string())
}

/// A coupon envelope around `content`, which is raw JSON text (a string or an object).
fn envelope(content: &str) -> String {
    format!(
        r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}","content":{content}}}"#
    )
}

#[test]
fn ids_sent_as_json_numbers_are_stored_with_every_digit() {
    let dir = Scratch::new("signed-numbers");
    let d = Daemon::start(&dir.0);
    // `content` as a JSON string (Douyin's shape) and as an object; ids past u64 and
    // f64 precision, pairs that a float would merge.
    let bodies = [
        envelope(&Value::String(
            r#"{"action":"verify","msg_time":1700000000,"certificate":{"certificate_id":7001234567890123457,"order_id":123456789012345678901234,"account_id":6900000000000000000001}}"#.into(),
        ).to_string()),
        envelope(r#"{"action":"verify","msg_time":1700000000,"certificate":{"certificate_id":7001234567890123458,"order_id":123456789012345678901235}}"#),
        envelope(r#"{"action":"verify","msg_time":"1700000000","certificate":{"certificate_id":12345678901234567890123,"order_id":1}}"#),
        envelope(r#"{"action":"verify","msg_time":1700000000,"certificate":{"certificate_id":12345678901234567890124,"order_id":2}}"#),
    ];
    for b in &bodies {
        let r = d.push(b);
        assert_eq!(r.status, 200, "{b}: {}", r.body);
    }
    let c = d.sql();
    let rows: Vec<(String, Option<String>, Option<String>)> = c
        .prepare(
            "SELECT certificate_id, order_id, account_id FROM certificates ORDER BY certificate_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [
            ("12345678901234567890123".to_string(), s("1"), None),
            ("12345678901234567890124".to_string(), s("2"), None),
            (
                "7001234567890123457".to_string(),
                s("123456789012345678901234"),
                s("6900000000000000000001")
            ),
            (
                "7001234567890123458".to_string(),
                s("123456789012345678901235"),
                None
            ),
        ]
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'applied' AND msg_time = 1700000000"
        ),
        4,
        "four coupons, none merged"
    );
}

#[test]
fn a_challenge_is_echoed_with_every_digit_and_its_json_type() {
    let dir = Scratch::new("signed-challenge");
    let d = Daemon::start(&dir.0);
    for (challenge, want) in [
        (
            r#"{"challenge":123456789012345678901234567890}"#,
            r#"{"challenge":123456789012345678901234567890}"#,
        ),
        (r#"{"challenge":-0.25}"#, r#"{"challenge":-0.25}"#),
        (r#"{"challenge":"0042"}"#, r#"{"challenge":"0042"}"#),
    ] {
        let body = format!(
            r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":{}}}"#,
            Value::String(challenge.into())
        );
        let r = d.push(&body);
        assert_eq!((r.status, r.body.as_str()), (200, want), "{body}");
    }
}

#[test]
fn printer_commands_in_signed_fields_never_reach_the_printer_and_each_receipt_has_one_cut() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("signed-printer");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    let long_order = "8".repeat(100);
    let bodies = [
        // ESC p 0 25 250 opens the cash drawer; GS V B 0 cuts; ESC @ resets; ESC ! 0x30
        // prints double size.
        json!({"certificate_id": "kick\u{1b}p\u{0}\u{19}\u{fa}", "order_id": "\u{1d}VB\u{0}cut",
               "account_id": "\u{1b}@init", "code": "\u{1b}!\u{30}BIG1234"}),
        // C1 CSI (clear screen on some printers' emulations), DEL, a 100-digit order id.
        json!({"certificate_id": "csi\u{9b}2J\u{7f}", "order_id": long_order}),
        json!({"certificate_id": "plain-3", "order_id": "o-3"}),
    ];
    for (i, cert) in bodies.into_iter().enumerate() {
        let r = d.push(&coupon_of("verify", 1_700_000_000 + i as i64, cert));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    printer.wait_receipts(3, Duration::from_secs(15));
    wait_until("three printed jobs", Duration::from_secs(10), || {
        outputs(&d, "printer").iter().all(|(s, _, _)| s == "done")
    });
    let raw = printer.received.lock().unwrap().clone();
    assert!(
        !raw.windows(2).any(|w| w == b"\x1bp"),
        "ESC p reached the printer"
    );
    assert_eq!(
        raw.windows(2).filter(|w| w == b"\x1dV").count(),
        3,
        "one cut per receipt"
    );
    // The decoder fails on any command that is not the layout's own.
    let receipts = common::escpos::decode(&raw);
    assert_eq!(receipts.len(), 3);
    assert!(receipts.iter().all(|r| r.cut && r.chinese_mode));
    let first = receipts[0].text();
    for want in [
        format!("kick{MARK}p{MARK}{MARK}\u{fa}"),
        format!("{MARK}VB{MARK}cut"),
        format!("{MARK}@init"),
        "****1234".to_string(),
    ] {
        assert!(first.contains(&want), "{want:?} missing from:\n{first}");
    }
    let second = receipts[1].text();
    assert!(second.contains(&format!("csi{MARK}2J{MARK}")), "{second}");
    // Cut to 64 characters with an ellipsis (wrapped over several rows of the paper).
    let shown_order: String = receipts[1]
        .lines
        .iter()
        .skip_while(|l| !l.starts_with("订单号"))
        .take_while(|l| l.starts_with("订单号") || l.starts_with(' '))
        .map(|l| l.trim_start_matches("订单号").trim())
        .collect();
    assert_eq!(shown_order, format!("{}…", "8".repeat(63)));
    // The database keeps what Douyin sent.
    let stored = query_str(
        &d.sql(),
        "SELECT certificate_id FROM certificates WHERE certificate_id LIKE 'kick%'",
    );
    assert_eq!(stored, "kick\u{1b}p\u{0}\u{19}\u{fa}");
}

#[test]
fn a_newline_or_escape_in_a_signed_field_cannot_forge_a_log_line_or_a_status_line() {
    let dir = Scratch::new("signed-log");
    // No sink: the log sink writes one line per coupon too.
    let d = Daemon::start(&dir.0);
    let forged =
        "x\n2026-11-25T16:48:43+08:00 [INFO] 200 applied: message 999 FORGED\r\u{1b}[2K\u{85}";
    let body = coupon_of(
        "verify",
        1_700_000_000,
        json!({"certificate_id": forged, "order_id": "o\u{1b}]0;pwned\u{7}"}),
    );
    let body = body.replacen('{', r#"{"log_id":"L1\nFORGED-LOG-ID\u001b[31m","#, 1);
    assert_eq!(d.push(&body).status, 200);
    assert!(
        d.wait_log("coupon x", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let quoting: Vec<&&str> = lines.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        quoting.len() >= 2,
        "the request line and the coupon line: {log}"
    );
    for line in &quoting {
        assert!(
            line.contains(&format!("x{MARK}2026-11-25"))
                || line.contains(&format!("L1{MARK}FORGED")),
            "a signed field started a log line of its own: {line:?}\n{log}"
        );
    }
    for bad in ['\u{1b}', '\r', '\u{85}', '\u{7}'] {
        assert!(!log.contains(bad), "{bad:?} reached the log:\n{log}");
    }
    // Quoted, as every field that is not one plain word: its spaces fake no pairs.
    assert!(log.contains(&format!(
        "certificate_id=\"x{MARK}2026-11-25T16:48:43+08:00 [INFO] 200 applied: message 999 FORGED{MARK}{MARK}[2K{MARK}\""
    )));

    let status = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        !status.contains('\u{1b}') && !status.contains('\r'),
        "{status:?}"
    );
    let last: Vec<&str> = status.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(last.len(), 1, "{status}");
    assert!(last[0].starts_with("last "), "{status}");
    // The record keeps the raw value.
    assert_eq!(
        query_str(&d.sql(), "SELECT certificate_id FROM certificates"),
        forged
    );
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Live processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    // state ppid pgrp ...
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// The daemon's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_hook_that_floods_stderr_and_forks_is_killed_with_its_process_group_at_the_time_limit() {
    let dir = Scratch::new("hook-flood");
    let pids = dir.path("pids");
    // 50 MB to stderr, a child that would live ten minutes, and a wait for it.
    let hook = format!(
        "echo $$ > {p}; sleep 600 & echo $! >> {p}; head -c 50000000 /dev/zero | tr '\\0' e >&2; wait",
        p = pids.display()
    );
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--exec",
            &hook,
            "--exec-timeout",
            "3",
            "--output-attempts",
            "1",
        ]),
    );
    let before = peak_rss(&d);
    let pushed = Instant::now();
    assert_eq!(d.push(&coupon("verify", 1, "flood-1")).status, 200);
    wait_until(
        "the hook's attempt to fail",
        Duration::from_secs(20),
        || outputs(&d, "exec")[0].0 == "failed",
    );
    let took = pushed.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (_, attempts, err) = outputs(&d, "exec").remove(0);
    let err = err.unwrap();
    assert_eq!(attempts, 1);
    assert!(err.contains("ran past --exec-timeout (3s)"), "{err}");
    assert!(
        err.ends_with("eeee") && err.len() < 4096 + 200,
        "{} bytes",
        err.len()
    );

    let listed = std::fs::read_to_string(&pids).unwrap();
    let ids: Vec<u32> = listed.lines().map(|l| l.trim().parse().unwrap()).collect();
    let (shell, sleeper) = (ids[0], ids[1]);
    wait_until(
        "the hook's processes to be gone",
        Duration::from_secs(5),
        || !alive(shell) && !alive(sleeper) && group_members(shell).is_empty(),
    );

    let peak = peak_rss(&d);
    let grew = peak.saturating_sub(before);
    // Under qemu-user the emulator's own memory counts too: its translation of the code
    // the flood runs through grew it by 19 MB on aarch64. A hook's output kept whole
    // would still be far more than 32 MB.
    let growth_budget = if emulated() { 32 << 20 } else { 16 << 20 };
    assert!(grew < growth_budget, "peak RSS grew by {grew} bytes");
    if !emulated() {
        assert!(peak < 32 << 20, "peak RSS {peak} bytes");
    }
    let longest = d.log_text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096 + 400, "a log line of {longest} bytes");
}

#[test]
fn a_hook_sees_path_lang_tz_home_and_its_event_and_never_the_secret() {
    let dir = Scratch::new("hook-env");
    let dump = dir.path("env");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default()
            .args(&["--exec", &format!("env > {}", dump.display())])
            .env("COUPOND_CLIENT_SECRET", SECRET)
            .env("AWS_SECRET_ACCESS_KEY", "leak-me-not")
            .env("COUPOND_LOG_LEVEL", "info")
            .env("LANG", "C.UTF-8")
            .env("TZ", "Asia/Shanghai")
            .env("HOME", "/var/lib/coupond"),
    );
    let cert = json!({"certificate_id": "env-1\u{1b}[2J", "order_id": "o-1"});
    assert_eq!(d.push(&coupon_of("verify", 1, cert)).status, 200);
    wait_until("the hook to run", Duration::from_secs(10), || {
        outputs(&d, "exec").first().is_some_and(|o| o.0 == "done")
    });
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(!env.contains(SECRET), "the secret reached the hook:\n{env}");
    assert!(!env.contains("leak-me-not"), "{env}");
    let vars: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    // What the shell adds by itself is allowed too.
    let allowed = [
        "PATH",
        "LANG",
        "TZ",
        "HOME",
        "COUPOND_ACTION",
        "COUPOND_CERTIFICATE_ID",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    for (k, _) in &vars {
        assert!(allowed.contains(k), "{k} in the hook's environment:\n{env}");
    }
    for want in [
        ("COUPOND_ACTION", "verify".to_string()),
        ("COUPOND_CERTIFICATE_ID", format!("env-1{MARK}[2J")),
        ("TZ", "Asia/Shanghai".into()),
        ("LANG", "C.UTF-8".into()),
        ("HOME", "/var/lib/coupond".into()),
    ] {
        assert!(
            vars.contains(&(want.0, want.1.as_str())),
            "{want:?} missing:\n{env}"
        );
    }
    assert!(vars.iter().any(|(k, _)| *k == "PATH"), "{env}");
}

#[test]
fn a_nul_in_a_field_does_not_hold_up_the_next_coupons_hook() {
    let dir = Scratch::new("hook-nul");
    let ids = dir.path("ids");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--exec",
            &format!(
                "printf '%s\\n' \"$COUPOND_CERTIFICATE_ID\" >> {}",
                ids.display()
            ),
        ]),
    );
    let pushed = Instant::now();
    for cert in ["nul\u{0}1", "after-nul"] {
        let body = coupon_of("verify", 1, json!({"certificate_id": cert}));
        assert_eq!(d.push(&body).status, 200);
    }
    wait_until("both hooks to run", Duration::from_secs(10), || {
        std::fs::read_to_string(&ids).is_ok_and(|s| s.contains("after-nul"))
    });
    assert!(
        pushed.elapsed() < Duration::from_secs(5),
        "{:?}",
        pushed.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&ids).unwrap(),
        format!("nul{MARK}1\nafter-nul\n")
    );
    wait_until("both jobs recorded", Duration::from_secs(5), || {
        outputs(&d, "exec")
            .iter()
            .all(|(s, attempts, _)| s == "done" && *attempts == 1)
    });
}
