//! Nothing acknowledged is ever lost: SIGKILL under load, and a full disk.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn sigkill_under_concurrent_load_loses_no_acknowledged_message_and_applies_none_twice() {
    let dir = Scratch::new("crash");
    let mut d = Daemon::start(&dir.0);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (addr, acked, sent, stop) = (d.addr, acked.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Each sender also re-sends some bodies and races a cancel against a
                    // verify, so dedup and the state rule are under the crash too.
                    let cert = format!("crash-{t}-{}", i / 2);
                    let action = if i % 2 == 0 {
                        "verify"
                    } else {
                        "verify_cancel"
                    };
                    let body = coupon(action, 1000 + i as i64, &cert);
                    sent.lock().unwrap().push(body.clone());
                    let hdr = vec![(
                        "X-Douyin-Signature".to_string(),
                        sign(SECRET, body.as_bytes()),
                    )];
                    if let Ok(r) = std::panic::catch_unwind(|| {
                        request(addr, "POST", PATH, &hdr, body.as_bytes())
                    }) {
                        if r.status == 200 {
                            acked.lock().unwrap().push(body);
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Kill mid-load, once there is load to lose: after 1.5 s, and not before 150
    // acknowledged messages, which under qemu (cross/test-arm) can take longer.
    let loading = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    while acked.lock().unwrap().len() < 150 && loading.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "too little load to mean anything: {}",
        acked.len()
    );

    let c = open_db(&d.db);
    assert_eq!(query_str(&c, "PRAGMA integrity_check"), "ok");
    let stored: HashSet<String> = query_column(&c, "SELECT body_sha1 FROM messages")
        .into_iter()
        .collect();
    for body in &acked {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        assert!(stored.contains(&sha), "acknowledged but lost: {body}");
    }
    // One output per applied message, never two.
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM outputs"),
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'applied'"
        )
    );
    assert_eq!(query_i64(&c, "SELECT count(*) FROM (SELECT message_id FROM outputs GROUP BY message_id HAVING count(*) > 1)"), 0);
    drop(c);

    // Douyin retries everything it sent; nothing acknowledged applies twice, the rest once.
    let d2 = Daemon::start(&dir.0);
    let before = query_i64(
        &d2.sql(),
        "SELECT count(*) FROM messages WHERE outcome = 'applied'",
    );
    for body in sent.lock().unwrap().iter() {
        assert_eq!(d2.push(body).status, 200);
    }
    let c = d2.sql();
    let applied_after = query_i64(
        &c,
        "SELECT count(*) FROM messages WHERE outcome = 'applied'",
    );
    let acked_set: HashSet<&String> = acked.iter().collect();
    let unacked = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|b| !acked_set.contains(b))
        .count() as i64;
    assert!(
        applied_after - before <= unacked,
        "re-sent acknowledged messages were applied again"
    );
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM messages"),
        sent.lock().unwrap().iter().collect::<HashSet<_>>().len() as i64
    );
    // Every certificate ends where its newest message says, whatever was killed when.
    let wrong = query_i64(
        &c,
        "SELECT count(*) FROM certificates c WHERE status_msg_time !=
           (SELECT max(msg_time) FROM messages m WHERE m.certificate_id = c.certificate_id)",
    );
    assert_eq!(wrong, 0);
    assert_eq!(query_str(&c, "PRAGMA integrity_check"), "ok");
}

/// A disk that fills up: 503 (Douyin retries), the daemon keeps running, and it recovers
/// when space comes back. Needs a small tmpfs, so root (as in CI).
#[test]
fn a_full_disk_answers_503_keeps_running_and_recovers() {
    let dir = Scratch::new("diskfull");
    let mnt = dir.path("mnt");
    let Some(_guard) = small_tmpfs(&mnt) else {
        eprintln!("SKIPPED a_full_disk_answers_503_keeps_running_and_recovers: cannot mount a tmpfs (not root?)");
        return;
    };
    let d = Daemon::start(&mnt);
    assert_eq!(d.push(&coupon("verify", 1, "before-full")).status, 200);
    let filler = fill(&mnt);
    let big_pad = "p".repeat(60_000);
    let mut saw_503 = false;
    let mut bodies = Vec::new();
    for i in 0..20 {
        let body = coupon_with(
            "verify",
            2,
            &format!("during-full-{i}"),
            &format!(r#","pad":"{big_pad}""#),
        );
        let r = d.push(&body);
        assert!(r.status == 503 || r.status == 200, "{r:?}");
        if r.status == 503 {
            saw_503 = true;
            bodies.push(body);
            break;
        }
    }
    assert!(saw_503, "the disk never filled up");
    assert!(d.wait_log("503 database commit failed", Duration::from_secs(5)));
    std::fs::remove_file(&filler).unwrap();
    // Douyin's retry now succeeds, and the daemon is the same process.
    let started = Instant::now();
    for body in &bodies {
        assert_eq!(d.push(body).status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let c = d.sql();
    assert_eq!(query_str(&c, "PRAGMA integrity_check"), "ok");
    assert!(
        query_i64(
            &c,
            "SELECT count(*) FROM certificates WHERE certificate_id LIKE 'during-full-%'"
        ) >= 1
    );
}

/// A 2 MiB tmpfs at `mnt`, unmounted on drop; `None` where mounting is not allowed.
fn small_tmpfs(mnt: &std::path::Path) -> Option<Unmount> {
    std::fs::create_dir_all(mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    mounted.then(|| Unmount(mnt.to_path_buf()))
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` to the last byte; returns the filler file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    filler
}

/// A receipt printed while the disk is full cannot be marked done; it must not be
/// printed again and again meanwhile, and is recorded once space is back.
#[test]
fn a_receipt_printed_while_the_disk_is_full_is_not_printed_again() {
    let dir = Scratch::new("fullprint");
    let mnt = dir.path("mnt");
    let Some(_guard) = small_tmpfs(&mnt) else {
        eprintln!("SKIPPED a_receipt_printed_while_the_disk_is_full_is_not_printed_again: cannot mount a tmpfs (not root?)");
        return;
    };
    let spot = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let d = Daemon::start_with(
        &mnt,
        Opts::default().args(&["--printer", &format!("tcp://{addr}")]),
    );
    assert_eq!(d.push(&coupon("verify", 1, "full-print")).status, 200);
    assert!(
        d.wait_log("attempt 1 failed", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    let filler = fill(&mnt);
    let printer = common::escpos::FakePrinter::start_on(
        std::net::TcpListener::bind(addr).unwrap(),
        common::escpos::Mode::Ready,
    );
    assert!(
        d.wait_log("cannot record delivery results", Duration::from_secs(15)),
        "{}",
        d.log_text()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        printer.receipts().len(),
        1,
        "printed again while the disk was full"
    );
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        "the receipt to be recorded as done",
        Duration::from_secs(10),
        || query_str(&d.sql(), "SELECT state FROM outputs") == "done",
    );
    assert_eq!(printer.receipts().len(), 1);
}

/// Catch-up killed in the middle of a sweep (SPEC §11): the restart resumes from the
/// saved progress, no recovered coupon is lost, none is printed twice (at most the one
/// receipt that was printing may repeat, as for pushes), and the file is sound.
#[test]
fn sigkill_during_a_catch_up_sweep_loses_no_coupon_and_prints_none_twice() {
    use common::fake_douyin::{FakeDouyin, FakeRecord, Mode};
    let fake = FakeDouyin::start(CLIENT_KEY, SECRET);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let records = 600;
    for i in 0..records {
        let r = FakeRecord::verified(&format!("kill-{i:03}"), now - 20_000 + 30 * i);
        fake.add(if i % 7 == 0 {
            r.cancelled(now - 19_000 + 30 * i)
        } else {
            r
        });
    }
    let cancels = (0..records).filter(|i| i % 7 == 0).count() as i64;
    // Slow pages, so that the kill lands mid-sweep.
    fake.set_mode(Mode::Slow(Duration::from_millis(40)));
    let dir = Scratch::new("catchup-kill");
    let receipts = dir.path("receipts.bin");
    let opts = catchup_opts(&fake).args(&["--printer", receipts.to_str().unwrap()]);
    std::fs::write(&receipts, b"").unwrap();
    let mut d = Daemon::start_with(&dir.0, opts.clone());
    wait_until("the sweep to get going", Duration::from_secs(30), || {
        query_i64(
            &d.sql(),
            "SELECT count(*) FROM messages WHERE source = 'reconcile'",
        ) >= 100
    });
    d.kill9();
    assert!(!d.log_text().contains("catch-up: swept"), "killed too late");
    assert_eq!(query_str(&open_db(&d.db), "PRAGMA integrity_check"), "ok");

    fake.set_mode(Mode::Normal);
    let d = Daemon::start_with(&dir.0, opts);
    let expected = records + cancels;
    wait_until(
        "the sweep to finish and print",
        Duration::from_secs(60),
        || {
            let c = d.sql();
            query_i64(
                &c,
                "SELECT count(*) FROM messages WHERE outcome = 'applied'",
            ) == expected
                && query_i64(&c, "SELECT count(*) FROM outputs WHERE state != 'done'") == 0
                && d.log_text().contains("catch-up: swept")
        },
    );
    let c = d.sql();
    assert_eq!(query_str(&c, "PRAGMA integrity_check"), "ok");
    assert_eq!(query_i64(&c, "SELECT count(*) FROM certificates"), records);
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), expected);
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM outputs"),
        expected,
        "one output per recovered message"
    );
    let printed = common::escpos::decode(&std::fs::read(&receipts).unwrap());
    assert!(
        printed.len() as i64 >= expected && printed.len() as i64 <= expected + 1,
        "{} receipts for {expected} recovered messages",
        printed.len()
    );
    assert!(printed.iter().all(|r| r.text().contains("补录")));
}
