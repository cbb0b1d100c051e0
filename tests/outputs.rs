//! SPEC §6: receipts on a real (fake) network printer decoded byte by byte, a printer
//! that is down then up across a restart, a stalled printer, a file sink, the exec hook,
//! --print-actions and reprint.

mod common;

use common::escpos::{FakePrinter, Mode};
use common::*;
use std::time::Duration;

#[test]
fn one_receipt_per_applied_message_in_gb18030_with_every_field_and_a_cut() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("receipt");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--printer",
            &printer.dest(),
            "--store-name",
            "望京店",
            "--paper-width",
            "58",
        ]),
    );
    let verify = coupon("verify", 1_700_000_000, "cert-r1");
    assert_eq!(d.push(&verify).status, 200);
    assert_eq!(d.push(&verify).status, 200, "redelivery");
    assert_eq!(
        d.push(&coupon_with(
            "verify",
            1_700_000_000,
            "cert-r1",
            r#","log_id":"x""#
        ))
        .status,
        200,
        "duplicate"
    );
    assert_eq!(
        d.push(&coupon("verify_cancel", 1_700_000_100, "cert-r1"))
            .status,
        200
    );
    assert_eq!(
        d.push(&coupon("verify", 1_700_000_050, "cert-r1")).status,
        200,
        "stale"
    );
    assert_eq!(
        d.push(&coupon("refund_success", 1_700_000_200, "cert-r2"))
            .status,
        200
    );
    let receipts = printer.wait_receipts(3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let receipts_later = printer.receipts();
    assert_eq!(
        receipts_later.len(),
        3,
        "exactly one receipt per applied message: {receipts_later:#?}"
    );
    assert_eq!(receipts.len(), 3);
    for r in &receipts {
        assert!(r.chinese_mode && r.cut, "{r:?}");
        for row in &r.lines {
            assert!(
                coupond::sinks::receipt::width(row) <= 32,
                "{row:?} is wider than 58 mm paper"
            );
        }
    }
    let first = receipts[0].text();
    for want in [
        "望京店",
        "核销成功",
        "cert-r1",
        "order-1",
        "********5678",
        "acct-9",
        "核销时间",
        "打印时间",
    ] {
        assert!(first.contains(want), "{want:?} missing from:\n{first}");
    }
    assert!(!first.contains("CODE12345678"), "the code must be masked");
    assert!(receipts[1].text().contains("已撤销核销") && receipts[1].text().contains("撤销时间"));
    assert!(receipts[2].text().contains("退款成功") && receipts[2].text().contains("cert-r2"));
    // The event time is the box's local time of msg_time.
    let local = coupond::time::local_datetime(1_700_000_000);
    assert!(first.contains(&local), "{local} missing:\n{first}");
    assert!(outputs(&d, "printer")
        .iter()
        .all(|(state, attempts, _)| state == "done" && *attempts == 1));
}

#[test]
fn a_printer_that_is_down_gets_every_receipt_in_order_once_when_it_comes_up_even_across_a_restart()
{
    let spot = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let dir = Scratch::new("printer-down");
    let opts = Opts::default().args(&["--printer", &format!("tcp://{addr}")]);
    let mut d = Daemon::start_with(&dir.0, opts.clone());
    for c in ["down-a", "down-b", "down-c"] {
        assert_eq!(d.push(&coupon("verify", 1, c)).status, 200);
    }
    wait_until("a failed attempt", Duration::from_secs(10), || {
        outputs(&d, "printer")
            .first()
            .is_some_and(|(_, attempts, err)| *attempts >= 1 && err.is_some())
    });
    let (state, _, err) = outputs(&d, "printer").remove(0);
    assert_eq!(state, "pending");
    assert!(err.unwrap().contains("refused"), "last_error says why");
    let status = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("printer: 3 pending"));

    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start_with(&dir.0, opts);
    for c in ["down-d", "down-e"] {
        assert_eq!(d.push(&coupon("verify", 1, c)).status, 200);
    }
    let printer = FakePrinter::start_on(std::net::TcpListener::bind(addr).unwrap(), Mode::Ready);
    let receipts = printer.wait_receipts(5, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let ids: Vec<String> = printer
        .receipts()
        .iter()
        .map(|r| {
            r.lines
                .iter()
                .find(|l| l.starts_with("券ID"))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(receipts.len(), 5);
    assert_eq!(
        ids.iter()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect::<Vec<_>>(),
        ["down-a", "down-b", "down-c", "down-d", "down-e"]
    );
    assert!(outputs(&d, "printer").iter().all(|(s, _, _)| s == "done"));
}

#[test]
fn a_printer_out_of_paper_gets_nothing_until_it_has_paper() {
    let printer = FakePrinter::start(Mode::NoPaper);
    let dir = Scratch::new("nopaper");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "paper-1")).status, 200);
    wait_until("an out-of-paper attempt", Duration::from_secs(10), || {
        outputs(&d, "printer")[0]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("out of paper"))
    });
    assert!(
        printer.receipts().is_empty(),
        "nothing may be sent to a printer without paper"
    );
}

#[test]
fn a_stalled_printer_does_not_slow_webhook_answers() {
    let printer = FakePrinter::start(Mode::Stalled);
    let dir = Scratch::new("stalled");
    // `on`: under `auto` a printer that never answered is printed to blind, and a
    // stalled one looks the same until it has answered once.
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest(), "--printer-status", "on"]),
    );
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let r = d.push(&coupon("verify", 1, &format!("stall-{i}")));
        assert_eq!(r.status, 200);
        slowest = slowest.max(r.elapsed);
    }
    // Generous: answers take about a millisecond (under qemu on a busy machine, up to
    // most of a second); the stalled printer's attempts take 3 s.
    let budget = if emulated() {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(500)
    };
    assert!(slowest < budget, "slowest answer {slowest:?}");
    wait_until("a stalled attempt to fail", Duration::from_secs(15), || {
        outputs(&d, "printer")[0]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("did not answer"))
    });
    assert!(*printer.connections.lock().unwrap() >= 1);
}

#[test]
fn a_file_or_device_path_receives_the_receipts() {
    let dir = Scratch::new("lp0");
    let dev = dir.path("lp0");
    std::fs::write(&dev, b"").unwrap();
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", dev.to_str().unwrap(), "--paper-width", "80"]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "file-1")).status, 200);
    assert_eq!(d.push(&coupon("refund_success", 2, "file-1")).status, 200);
    wait_until("two receipts in the file", Duration::from_secs(10), || {
        std::fs::read(&dev)
            .unwrap()
            .windows(2)
            .filter(|w| w == b"\x1dV")
            .count()
            == 2
    });
    let receipts = common::escpos::decode(&std::fs::read(&dev).unwrap());
    assert!(receipts[0].text().contains("核销成功") && receipts[1].text().contains("退款成功"));
    assert!(
        receipts[0].lines.iter().any(|l| l == &"-".repeat(48)),
        "80 mm paper has 48 columns"
    );
    // A missing device in /dev is an error, never a new file.
    let gone = std::path::PathBuf::from("/dev/coupond-test-no-such-lp");
    let d2dir = Scratch::new("lp1");
    let d2 = Daemon::start_with(
        &d2dir.0,
        Opts::default().args(&["--printer", gone.to_str().unwrap()]),
    );
    assert_eq!(d2.push(&coupon("verify", 1, "file-2")).status, 200);
    wait_until("an attempt", Duration::from_secs(10), || {
        outputs(&d2, "printer")[0].1 >= 1
    });
    assert!(outputs(&d2, "printer")[0]
        .2
        .as_deref()
        .unwrap()
        .contains("plugged in"));
    assert!(!gone.exists());
}

#[test]
fn exec_hook_that_fails_once_is_retried_and_gets_the_message_json() {
    let dir = Scratch::new("exec");
    let out = dir.path("hook-out.json");
    let marker = dir.path("failed-once");
    let script = dir.path("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ ! -e {m} ]; then touch {m}; echo 'printer busy' >&2; exit 3; fi\ncat > {o}\necho \"$COUPOND_ACTION $COUPOND_CERTIFICATE_ID\" >> {o}.env\n",
            m = marker.display(),
            o = out.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--exec", &format!("sh {}", script.display())]),
    );
    assert_eq!(
        d.push(&coupon("verify", 1_700_000_000, "exec-1")).status,
        200
    );
    wait_until("the hook to succeed", Duration::from_secs(15), || {
        out.exists() && dir.path("hook-out.json.env").exists()
    });
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["certificate_id"], "exec-1");
    assert_eq!(json["action"], "verify");
    assert_eq!(json["msg_time"], 1_700_000_000);
    assert_eq!(json["code"], "CODE12345678");
    assert!(json["body"]
        .as_str()
        .unwrap()
        .contains("life_trade_certificate_notify"));
    assert_eq!(
        std::fs::read_to_string(dir.path("hook-out.json.env"))
            .unwrap()
            .trim(),
        "verify exec-1"
    );
    wait_until(
        "the job to be recorded done",
        Duration::from_secs(5),
        || outputs(&d, "exec")[0].0 == "done",
    );
    assert_eq!(outputs(&d, "exec")[0].1, 2, "failed once, then done");
    assert!(
        d.log_text().contains("exited with status 3: printer busy"),
        "{}",
        d.log_text()
    );
}

#[test]
fn print_actions_limits_which_actions_produce_output() {
    let dir = Scratch::new("actions");
    let d = Daemon::start_with(&dir.0, Opts::default().args(&["--print-actions", "verify"]));
    assert_eq!(d.push(&coupon("verify", 1, "pa-1")).status, 200);
    assert_eq!(d.push(&coupon("verify_cancel", 2, "pa-1")).status, 200);
    let c = d.sql();
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'applied'"
        ),
        2
    );
    assert_eq!(query_i64(&c, "SELECT count(*) FROM outputs"), 1);
    assert!(
        d.wait_log("coupon pa-1 verify (核销成功)", Duration::from_secs(5)),
        "no-sink log line: {}",
        d.log_text()
    );
}

#[test]
fn reprint_queues_the_latest_receipt_again_marked_as_a_reprint() {
    let printer = FakePrinter::start(Mode::Ready);
    let dir = Scratch::new("reprint");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--printer", &printer.dest()]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "rp-1")).status, 200);
    assert_eq!(d.push(&coupon("verify_cancel", 2, "rp-1")).status, 200);
    printer.wait_receipts(2, Duration::from_secs(10));
    let o = run(&["reprint", "rp-1", "--db", d.db.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let receipts = printer.wait_receipts(3, Duration::from_secs(15));
    assert_eq!(receipts.len(), 3);
    let again = receipts[2].text();
    assert!(
        again.contains("重打") && again.contains("已撤销核销") && again.contains("rp-1"),
        "{again}"
    );
    assert!(!receipts[0].text().contains("重打"));
    let unknown = run(&["reprint", "nope", "--db", d.db.to_str().unwrap()], &[]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nothing to reprint"));
}

#[test]
fn an_output_that_keeps_failing_is_marked_failed_with_its_error_after_output_attempts() {
    let dir = Scratch::new("giveup");
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--exec",
            "echo 'pos system offline' >&2; exit 7",
            "--output-attempts",
            "2",
        ]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "giveup-1")).status, 200);
    wait_until("the output to be given up", Duration::from_secs(15), || {
        outputs(&d, "exec")[0].0 == "failed"
    });
    let (_, attempts, err) = outputs(&d, "exec").remove(0);
    assert_eq!(attempts, 2);
    assert!(err
        .unwrap()
        .contains("exited with status 7: pos system offline"));
    let status =
        String::from_utf8_lossy(&run(&["status", "--db", d.db.to_str().unwrap()], &[]).stdout)
            .into_owned();
    assert!(
        status.contains("exec: 1 failed")
            && status.contains("certificate giveup-1) after 2 attempts"),
        "{status}"
    );
    assert!(d
        .log_text()
        .contains("`coupond reprint giveup-1` queues it again"));
}
