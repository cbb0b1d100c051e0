//! The README documents every flag of every command, with its default: docs that match
//! the code.

use coupond::config::COMMANDS;

#[test]
fn readme_lists_every_flag_and_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for cmd in COMMANDS {
        let section = readme
            .split(&format!("### `coupond {}`", cmd.name))
            .nth(1)
            .unwrap_or_else(|| panic!("README has no section for coupond {}", cmd.name));
        let section = section.split("\n### ").next().unwrap();
        for f in cmd.flags {
            let row = section
                .lines()
                .find(|l| l.starts_with(&format!("| `--{}", f.name)))
                .unwrap_or_else(|| {
                    panic!("README's coupond {} table lacks --{}", cmd.name, f.name)
                });
            if let Some(d) = f.default {
                assert!(
                    row.contains(&format!("`{d}`")),
                    "README row for --{} lacks its default {d}: {row}",
                    f.name
                );
            }
        }
    }
}

/// The packaged bash completion is the one the flag table generates. Run with
/// `COUPOND_BLESS=1` to rewrite it after changing a flag.
#[test]
fn bash_completion_is_generated_from_the_flag_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/coupond.bash");
    let want = coupond::config::flags::bash_completion();
    if std::env::var_os("COUPOND_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "packaging/coupond.bash is stale: COUPOND_BLESS=1 cargo test --test docs"
    );
    for c in COMMANDS {
        assert!(
            want.contains(&format!("        {}) ", c.name)),
            "{}",
            c.name
        );
    }
}

mod common;

use common::{Daemon, Opts, Scratch, BIN};
use std::time::Duration;

/// The fenced blocks of `section` (from its heading to the next `## `), in order:
/// `(info string, text)`.
fn blocks(readme: &str, section: &str) -> Vec<(String, String)> {
    let body = readme
        .split(section)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {section}"));
    let body = body.split("\n## ").next().unwrap();
    let mut out = Vec::new();
    let mut lines = body.lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push((info.to_string(), text.join("\n")));
        }
    }
    out
}

/// A line with what changes from run to run (times, durations, fresh ids) made
/// constant; counts, words and paths stay.
fn normal(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let dated = w.len() >= 10 && w.as_bytes()[4] == b'-' && digits(&w[..4]);
            if dated && w.contains('T') && w.ends_with('Z') {
                "TIME".to_string()
            } else if dated || (w.contains(':') && w.split(':').all(digits)) {
                "DATE".to_string()
            } else if w.ends_with("ms") && w.trim_end_matches("ms").parse::<f64>().is_ok() {
                "DURATION".to_string()
            } else if let Some(i) = w.find("COUPONDSEND") {
                format!("{}COUPONDSEND", &w[..i])
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `got` is what the README shows as `want`: equal once normalised, or, where
/// the README shortens a line with `...`, what comes before it.
fn shown_as(want: &str, got: &str) -> bool {
    let (want, got) = (normal(want), normal(got));
    match want.split_once("...") {
        Some((head, _)) => got.starts_with(head),
        None => want == got,
    }
}

/// The README's quick start, run as written against the real binary: the `send` it
/// shows, the daemon's log lines and `coupond status`, compared with what it says they
/// print.
#[test]
fn the_quick_start_prints_what_the_readme_shows() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let b = blocks(&readme, "## Quick start: push a coupon and look at it");
    let (send, send_out, log, status, status_out) = (&b[0], &b[1], &b[2], &b[3], &b[4]);
    assert_eq!(
        (send.0.as_str(), status.0.as_str()),
        ("sh", "sh"),
        "the quick start's blocks moved: {b:#?}"
    );
    // The daemon of "Set-up: two commands", with the app id and secret it names.
    let dir = Scratch::new("readme");
    let d = Daemon::start_with(
        &dir.0,
        Opts {
            secret_file_contents: Some("your-client-secret\n".into()),
            ..Opts::default()
        }
        .args(&["--client-key", "your-app-id"]),
    );
    // Under qemu-user (cross/test-arm) the binary is started through its runner.
    let program = match std::env::var("COUPOND_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => format!("{runner} {BIN}"),
        _ => BIN.to_string(),
    };
    let run = |script: &str| {
        let script = script
            .replace("target/release/coupond", &program)
            .replace("http://127.0.0.1:8080", &format!("http://{}", d.addr));
        let out = std::process::Command::new("sh")
            .args(["-ec", &script])
            .current_dir(&dir.0)
            .env("COUPOND_CONFIG", "/dev/null")
            .env_remove("COUPOND_TEST_RUNNER")
            .env_remove("COUPOND_CLIENT_SECRET")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).replace(&d.addr.to_string(), "127.0.0.1:8080")
    };
    let compare = |what: &str, want: &str, got: &str| {
        let (want, got): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
        assert_eq!(
            want.len(),
            got.len(),
            "{what}: README shows\n{want:#?}\nit prints\n{got:#?}"
        );
        for (w, g) in want.iter().zip(&got) {
            assert!(
                shown_as(w, g),
                "{what}: README shows\n  {w}\nit prints\n  {g}"
            );
        }
    };
    compare("send", &send_out.1, &run(&send.1));
    // The daemon's lines, once the log output is done (as a person reading it sees).
    for want in log.1.lines() {
        let key = want.split(' ').take(3).collect::<Vec<_>>().join(" ");
        assert!(
            d.wait_log(&key, Duration::from_secs(10)),
            "{}",
            d.log_text()
        );
        let text = d.log_text();
        assert!(
            text.lines().any(|l| {
                let l = l.split_once(' ').map_or(l, |(_, rest)| rest);
                shown_as(want, l)
            }),
            "README shows the log line\n  {want}\nthe daemon logged\n{text}"
        );
    }
    common::wait_until(
        "the log output recorded as done",
        Duration::from_secs(10),
        || {
            common::query_i64(
                &d.sql(),
                "SELECT count(*) FROM outputs WHERE state = 'pending'",
            ) == 0
        },
    );
    compare("status", &status_out.1, &run(&status.1));
}

/// What a run in the checkout leaves behind is ignored by git: the database, its WAL
/// files, its lock and the copies kept before a migration.
#[test]
fn gitignore_covers_what_a_run_leaves_in_the_checkout() {
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.gitignore")).unwrap();
    let matches = |name: &str| {
        ignore.lines().any(|p| match p.strip_prefix('*') {
            Some(tail) => match tail.split_once('*') {
                Some((a, b)) => name
                    .find(a)
                    .is_some_and(|i| name[i + a.len()..].ends_with(b)),
                None => name.ends_with(tail),
            },
            None => p == name,
        })
    };
    for name in [
        "coupond.db",
        "coupond.db-wal",
        "coupond.db-shm",
        "coupond.db.lock",
        "coupond.db.schema-6.bak",
    ] {
        assert!(matches(name), ".gitignore does not cover {name}");
    }
}
