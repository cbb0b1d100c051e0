//! The appliance: systemd's notify protocol with the real binary (a Unix datagram socket
//! stands in for systemd), and the unit file as systemd-analyze judges it.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 512];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn systemd_hears_ready_after_the_port_is_bound_then_watchdog_pings_then_stopping() {
    let dir = Scratch::new("notify");
    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Daemon::start_with(
        &dir.0,
        Opts::default()
            .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
            .env("WATCHDOG_USEC", "400000"),
    );
    let first = recv(&sock).expect("no notification");
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    // READY means the port takes connections and the database is open.
    assert_eq!(d.push(&coupon("verify", 1, "n-1")).status, 200);

    let started = Instant::now();
    let mut pings = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = recv(&sock) {
            pings.push(m);
        }
    }
    let watchdogs: Vec<&String> = pings
        .iter()
        .filter(|m| m.starts_with("WATCHDOG=1"))
        .collect();
    assert!(
        watchdogs.len() >= 4,
        "WATCHDOG=1 every 200 ms, got {pings:?}"
    );
    assert!(
        watchdogs
            .iter()
            .any(|m| m.contains("STATUS=1 messages recorded, 0 outputs pending")),
        "{watchdogs:?}"
    );

    common::unsafe_kill(d.child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        stopping = recv(&sock).is_some_and(|m| m.contains("STOPPING=1"));
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
    assert_eq!(d.terminate(), Some(0));
}

fn systemd_analyze() -> Option<&'static str> {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?
        .status
        .success()
        .then_some("systemd-analyze")
}

/// `systemd-analyze security`'s overall exposure level for `unit`, and its report.
fn exposure(tool: &str, unit: &Path) -> (f64, String) {
    let out = Command::new(tool)
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for coupond.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    (level, text)
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_1_5_and_verifies_clean() {
    let tool = systemd_analyze()
        .expect("needs systemd-analyze (Debian package systemd; ./run-tests installs it as root)");
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/coupond.service");
    let (level, text) = exposure(tool, &unit);
    assert!(level <= 1.5, "exposure {level}:\n{text}");

    // verify checks that ExecStart= exists: point a copy at the binary under test.
    let dir = Scratch::new("unit");
    let copy = dir.path("coupond.service");
    let body = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("/usr/bin/coupond", BIN);
    std::fs::write(&copy, body).unwrap();
    let out = Command::new(tool)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

/// Catch-up needs the internet (SPEC §11); its drop-in lifts the IP restriction only,
/// and the unit with it is still hardened.
#[test]
fn the_catch_up_drop_in_lifts_only_the_ip_restriction() {
    let tool = systemd_analyze().expect("needs systemd-analyze");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dropin = std::fs::read_to_string(root.join("systemd/coupond-catchup.conf")).unwrap();
    let settings: Vec<&str> = dropin
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(settings, ["[Service]", "IPAddressAllow=any"]);
    // What systemd makes of the unit with the drop-in: the same unit, one line more.
    let dir = Scratch::new("unit-catchup");
    let copy = dir.path("coupond.service");
    let unit = std::fs::read_to_string(root.join("systemd/coupond.service")).unwrap();
    std::fs::write(&copy, unit + "IPAddressAllow=any\n").unwrap();
    let (level, text) = exposure(tool, &copy);
    eprintln!("exposure with the catch-up drop-in: {level}");
    assert!(level <= 1.5, "exposure {level}:\n{text}");
}

/// `--speaker` plays through aplay, which opens `/dev/snd/*` as the daemon's user.
#[test]
fn the_unit_lets_the_speaker_open_alsa_devices_as_group_audio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("systemd/coupond.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect()
    };
    assert!(values("SupplementaryGroups").contains(&"audio".to_string()));
    let allowed = values("DeviceAllow");
    assert!(
        allowed.windows(2).any(|w| w == ["char-alsa", "rw"]),
        "{allowed:?}"
    );
    assert_eq!(values("DevicePolicy"), ["closed"]);
}

#[test]
fn the_unit_and_the_readme_agree_on_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("systemd/coupond.service")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let env_example = std::fs::read_to_string(root.join("systemd/coupond.env.example")).unwrap();
    for path in [
        "/etc/coupond/coupond.env",
        "/etc/coupond/client_secret",
        "/var/lib/coupond/coupond.db",
        "/usr/bin/coupond",
    ] {
        assert!(unit.contains(path), "the unit lacks {path}");
        assert!(readme.contains(path), "the README lacks {path}");
    }
    // The daemon reads the settings file itself, and it names the database and secret.
    assert!(!unit.lines().any(|l| l.starts_with("EnvironmentFile=")));
    assert!(env_example.contains("COUPOND_DB=/var/lib/coupond/coupond.db"));
    assert!(env_example.contains("COUPOND_SECRET_FILE=/etc/coupond/client_secret"));
    assert!(
        coupond::config::flags::parse_settings(&env_example).is_ok(),
        "the example settings file is valid"
    );
    for line in env_example
        .lines()
        .filter(|l| l.starts_with("COUPOND_") || l.starts_with("#COUPOND_"))
    {
        let var = line.trim_start_matches('#').split('=').next().unwrap();
        let known = coupond::config::COMMANDS
            .iter()
            .flat_map(|c| c.flags)
            .any(|f| coupond::config::env_name(f.name) == var);
        assert!(
            known,
            "{var} in coupond.env.example is not a flag's variable"
        );
    }
}

/// Old rows written straight into the database, as if the box had run for months.
fn seed_old_rows(db: &Path, days_ago: i64, done: usize, pending: usize, rejects: usize) {
    let mut c = open_db(db);
    let tx = c.transaction().unwrap();
    let when = coupond::time::rfc3339_millis(coupond::time::now_millis() - days_ago * 86_400_000);
    for i in 0..done + pending {
        let cert = format!("old-{i}");
        let body = coupon("verify", 1_600_000_000 + i as i64, &cert);
        let sha = sha1_smol::Sha1::from(&body).digest().to_string();
        tx.execute(
            "INSERT INTO messages (received_at, action, certificate_id, msg_time, outcome, body, body_sha1, last_received_at, event)
             VALUES (?1, 'verify', ?2, ?3, 'applied', ?4, ?5, ?1, 'life_trade_certificate_notify')",
            rusqlite::params![when, cert, 1_600_000_000 + i as i64, body, sha],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO certificates (certificate_id, status, status_msg_time, first_seen_at, updated_at)
             VALUES (?1, 'verified', ?2, ?3, ?3)",
            rusqlite::params![cert, 1_600_000_000 + i as i64, when],
        )
        .unwrap();
        let (sink, state) = if i < done {
            ("log", "done")
        } else {
            ("printer", "pending")
        };
        tx.execute(
            "INSERT INTO outputs (message_id, sink, state, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, sink, state, when],
        )
        .unwrap();
    }
    for i in 0..rejects {
        tx.execute(
            "INSERT INTO rejected (received_at, reason, status, body, body_len) VALUES (?1, 'missing signature', 401, ?2, 10)",
            rusqlite::params![when, format!("junk {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn retention_prunes_old_bodies_and_done_outputs_but_never_state_or_pending_work() {
    let dir = Scratch::new("retention");
    let mut d = Daemon::start(&dir.0);
    for c in ["recent-1", "recent-2"] {
        assert_eq!(d.push(&coupon("verify", 1, c)).status, 200);
    }
    assert_eq!(d.terminate(), Some(0));
    seed_old_rows(&d.db, 200, 20_000, 10, 300);
    let c = open_db(&d.db);
    assert_eq!(query_i64(&c, "PRAGMA auto_vacuum"), 2, "incremental");
    let pages_before = query_i64(&c, "PRAGMA page_count");
    let certificates_before = query_i64(&c, "SELECT count(*) FROM certificates");
    drop(c);

    let d = Daemon::start_with(&dir.0, Opts::default().args(&["--keep-days", "30"]));
    assert!(
        d.wait_log(
            "retention: pruned 20000 messages, 20000 outputs, 300 rejects",
            Duration::from_secs(60)
        ),
        "{}",
        d.log_text()
    );
    // The daemon answered pushes all along.
    assert_eq!(d.push(&coupon("verify", 1, "during-prune")).status, 200);
    let c = d.sql();
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM certificates"),
        certificates_before + 1,
        "coupon state is never pruned"
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM outputs WHERE state = 'pending' AND sink = 'printer'"
        ),
        10,
        "pending work is never pruned"
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE certificate_id LIKE 'old-%'"
        ),
        10,
        "messages with pending work stay"
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE certificate_id LIKE 'recent-%'"
        ),
        2
    );
    assert_eq!(query_i64(&c, "SELECT count(*) FROM rejected"), 0);
    assert_eq!(query_str(&c, "PRAGMA integrity_check"), "ok");
    let pages_after = query_i64(&c, "PRAGMA page_count");
    assert!(
        pages_after < pages_before,
        "space was not given back: {pages_before} -> {pages_after} pages"
    );
    // A very late redelivery of a pruned body is not applied again.
    let late = coupon("verify", 1_600_000_003, "old-3");
    assert_eq!(d.push(&late).status, 200);
    let sha = sha1_smol::Sha1::from(&late).digest().to_string();
    let outcome: String = c
        .query_row(
            "SELECT outcome FROM messages WHERE body_sha1 = ?1",
            [sha],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "duplicate");
}

#[test]
fn pushes_rejected_under_a_wrong_secret_are_recovered_by_reverify_with_the_right_state() {
    let dir = Scratch::new("reverify");
    let wrong = Opts {
        secret_file_contents: Some("a-wrong-secret\n".into()),
        ..Opts::default()
    };
    let mut d = Daemon::start_with(&dir.0, wrong);
    let pushes = [
        coupon("verify", 100, "rv-1"),
        coupon("verify_cancel", 200, "rv-1"),
        coupon("verify", 100, "rv-2"),
    ];
    for p in &pushes {
        assert_eq!(d.push(p).status, 401);
    }
    let unsigned = coupon("verify", 100, "rv-forged");
    assert_eq!(
        d.push_with(
            &unsigned,
            Some(&sign("attacker", unsigned.as_bytes())),
            None
        )
        .status,
        401
    );
    assert_eq!(d.terminate(), Some(0));
    let arrived: Vec<String> = open_db(&d.db)
        .prepare("SELECT received_at FROM rejected ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();

    // The installer fixes the secret file and runs reverify with the daemon's settings.
    std::fs::write(dir.path("secret"), format!("{SECRET}\n")).unwrap();
    let o = run(
        &[
            "reverify",
            "--db",
            d.db.to_str().unwrap(),
            "--client-key",
            CLIENT_KEY,
            "--secret-file",
            dir.path("secret").to_str().unwrap(),
        ],
        &[],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("3 of 4 rejected push(es) now verify and were recorded (3 applied)"),
        "{out}"
    );
    let c = open_db(&d.db);
    let status = |id: &str| -> String {
        c.query_row(
            "SELECT status FROM certificates WHERE certificate_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(status("rv-1"), "cancelled");
    assert_eq!(status("rv-2"), "verified");
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM certificates WHERE certificate_id = 'rv-forged'"
        ),
        0
    );
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM rejected"),
        1,
        "the forged push stays rejected"
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM outputs WHERE sink = 'log' AND state = 'pending'"
        ),
        3
    );
    let kept: Vec<String> = query_column(&c, "SELECT received_at FROM messages ORDER BY id");
    assert_eq!(
        kept,
        arrived[..3],
        "recovered messages keep their arrival time"
    );
    drop(c);
    // The daemon, started again, delivers their outputs.
    let d = Daemon::start(&dir.0);
    assert!(
        d.wait_log("coupon rv-2 verify", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
}

#[test]
fn the_daemon_recovers_rejected_pushes_by_itself_when_restarted_with_the_right_secret() {
    let dir = Scratch::new("reverify-start");
    let mut d = Daemon::start_with(
        &dir.0,
        Opts {
            secret_file_contents: Some("wrong\n".into()),
            ..Opts::default()
        },
    );
    assert_eq!(d.push(&coupon("verify", 1, "auto-1")).status, 401);
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start_with(
        &dir.0,
        Opts {
            secret_file_contents: Some(format!("{SECRET}\n")),
            ..Opts::default()
        },
    );
    assert!(
        d.wait_log(
            "reverify: 1 of 1 rejected push(es) now verify",
            Duration::from_secs(5)
        ),
        "{}",
        d.log_text()
    );
    assert_eq!(
        query_str(
            &d.sql(),
            "SELECT status FROM certificates WHERE certificate_id = 'auto-1'"
        ),
        "verified"
    );
}
