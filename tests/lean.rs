//! The lean box (SPEC §10): an idle daemon wakes for nothing (no poll, no timer beyond
//! the watchdog, retention and sweeps), and work another command queues (a reprint)
//! wakes it at once. What can be guarded without timing the machine: wake-ups counted,
//! not measured. The page cache setting and the replay table's size are guarded in the
//! unit tests (store, ratelimit); CPU and memory are measured by bench/run.

mod common;

use std::time::{Duration, Instant};

use common::escpos::{FakePrinter, Mode};
use common::*;

/// Context switches so far of the daemon's threads: each one is a wake-up. Under
/// qemu-user the process also holds the emulator's own threads, which wake on their
/// own; there only the database thread is counted (a task that polls reads the
/// database, so it still shows).
fn wakeups(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if emulated() && comm.trim() != "coupond-db" {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn an_idle_daemon_wakes_for_nothing_and_a_reprint_wakes_it_at_once() {
    let dir = Scratch::new("lean-idle");
    let printer = FakePrinter::start(Mode::Ready);
    let d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&[
            "--printer",
            &printer.dest(),
            "--display-listen",
            "127.0.0.1:0",
        ]),
    );
    assert_eq!(d.push(&coupon("verify", 1_700_000_000, "4501")).status, 200);
    assert_eq!(printer.wait_receipts(1, Duration::from_secs(20)).len(), 1);
    // Past the start-up work (retention's first pass comes 2 s after the start).
    std::thread::sleep(Duration::from_secs(4));

    // A sink that polled its queue every 5 s woke at least once in any 6 s.
    let pid = d.child.id();
    let before = wakeups(pid);
    std::thread::sleep(Duration::from_secs(6));
    let woken = wakeups(pid) - before;
    assert_eq!(woken, 0, "an idle daemon woke {woken} times in 6 s");

    // No poll left: only the command's knock can make it print now.
    let started = Instant::now();
    let out = run(&["reprint", "4501", "--db", d.db.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let receipts = printer.wait_receipts(2, Duration::from_secs(20));
    assert_eq!(receipts.len(), 2);
    assert!(
        receipts[1].text().contains("重打"),
        "{}",
        receipts[1].text()
    );
    if !emulated() {
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "the reprint printed after {took:?}"
        );
    }
    assert!(!d.log_text().contains("cannot watch"), "{}", d.log_text());
}
