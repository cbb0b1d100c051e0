//! A careless installer's files and Douyin-sized fields must not stop the box: a
//! secret file that is a FIFO, a settings file that is a symlink to `/dev/zero`, a
//! settings file whose `COUPOND_DB` holds a NUL, and a 10 KB certificate id in the log.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn a_secret_file_swapped_for_a_fifo_never_freezes_a_reload_or_a_webhook_answer() {
    let dir = Scratch::new("secret-fifo");
    let d = Daemon::start(&dir.0);
    let secret = dir.path("secret");
    std::fs::remove_file(&secret).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&secret)
        .status()
        .unwrap();
    assert!(made.success());
    unsafe_kill(d.child.id(), "HUP");
    assert!(
        d.wait_log("SIGHUP: reload failed", Duration::from_secs(20)),
        "{}",
        d.log_text()
    );
    // The running secrets stay, and the webhook answers at once.
    let started = Instant::now();
    let r = d.push(&coupon("verify", 1_700_000_000, "after-fifo"));
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_settings_file_linked_to_dev_zero_is_refused_at_once() {
    if emulated() {
        return; // ulimit -v below would starve qemu itself.
    }
    let dir = Scratch::new("settings-zero");
    let link = dir.path("coupond.env");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    // Bounded in memory in case the daemon ever reads it whole again.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2000000; exec {BIN} check --config {}",
            link.display()
        ))
        .env_remove("COUPOND_TEST_RUNNER")
        .env_remove("COUPOND_BUILD_TIME")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("larger than"), "{text}");
}

#[test]
fn a_database_path_with_a_nul_is_a_settings_error_not_ok() {
    let dir = Scratch::new("db-nul");
    let file = dir.path("coupond.env");
    std::fs::write(
        &file,
        format!(
            "COUPOND_CLIENT_KEY={CLIENT_KEY}\nCOUPOND_DB={}/a\0b.db\n",
            dir.0.display()
        ),
    )
    .unwrap();
    let out = run(
        &["check", "--config", file.to_str().unwrap()],
        &[("COUPOND_CLIENT_SECRET", SECRET)],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("NUL"), "{text}");
}

#[test]
fn a_10_kb_certificate_id_makes_no_10_kb_log_line() {
    let dir = Scratch::new("long-id");
    let d = Daemon::start(&dir.0);
    let id = "9".repeat(10_000);
    assert_eq!(d.push(&coupon("verify", 1_700_000_000, &id)).status, 200);
    assert!(
        d.wait_log("bytes more)", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    let longest = d.log_text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_200, "a log line of {longest} bytes");
    // The database keeps the id whole.
    assert_eq!(
        query_i64(&d.sql(), "SELECT length(certificate_id) FROM certificates"),
        10_000
    );
}
