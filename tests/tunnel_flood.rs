//! SPEC §3, "The tunnel is the internet", against the real binary, and the small things
//! an installer meets first: the answer names the outcome, a Notepad-saved secret file
//! works.
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

#[test]
fn the_200_names_the_outcome_and_send_prints_it() {
    let dir = Scratch::new("outcome");
    let d = Daemon::start(&dir.0);
    let verify = coupon("verify", 1000, "c-out");
    let cases = [
        (verify.clone(), "applied"),
        // The same body again answers with the first row's outcome.
        (verify, "applied"),
        (
            coupon_with("verify", 1000, "c-out", r#","log_id":"again""#),
            "duplicate",
        ),
        (coupon("verify", 900, "c-out"), "stale"),
        (
            format!(
                r#"{{"event":"life_trade_order_notify","client_key":"{CLIENT_KEY}","content":"{{}}"}}"#
            ),
            "ignored",
        ),
        (
            format!(r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}"}}"#),
            "invalid",
        ),
    ];
    for (body, outcome) in &cases {
        let r = d.push(body);
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(r.body, format!(r#"{{"outcome":"{outcome}"}}"#), "{body}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // The URL check's answer is unchanged.
    let challenge = format!(
        r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":{{"challenge":7}}}}"#
    );
    assert_eq!(d.push(&challenge).body, r#"{"challenge":7}"#);
    assert_eq!(d.push(&challenge).body, r#"{"challenge":7}"#, "redelivered");

    let send = |msg_time: &str| {
        let args = ["--certificate-id", "c-sent", "--msg-time", msg_time];
        let o = send(&d.url(), &dir.path("secret"), &args);
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let first = send("1700000000");
    assert!(first.contains("outcome applied"), "{first}");
    let again = send("1700000001");
    assert!(again.contains("outcome duplicate"), "{again}");
    assert!(again.contains("nothing is printed"), "{again}");
}
