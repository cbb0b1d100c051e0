//! SPEC §3, "The tunnel is the internet", against the real binary, and the small things
//! an installer meets first: a Notepad-saved secret file works.
//!
//! Every loop here is bounded in count and in time, and talks only to 127.0.0.1.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_secret_file_saved_by_notepad_with_a_bom_and_crlf_verifies() {
    let dir = Scratch::new("bom");
    let opts = Opts {
        secret_file_contents: Some(format!("\u{feff}{SECRET}\r\n \t \r\nolder-secret\r\n")),
        ..Opts::default()
    };
    let d = Daemon::start_with(&dir.0, opts);
    assert!(
        d.wait_log("2 secret(s)", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    let a = coupon("verify", 1, "c-bom-a");
    let b = coupon("verify", 1, "c-bom-b");
    assert_eq!(d.push(&a).status, 200);
    let r = d.push_with(&b, Some(&sign("older-secret", b.as_bytes())), None);
    assert_eq!(r.status, 200);
}
