//! SPEC §3 (HTTP behaviour) and §4 (coupon state), row by row, against the real binary
//! over real HTTP, reading the SQLite file afterwards.

mod common;

use common::*;
use std::time::Duration;

fn outcome_of(d: &Daemon, body: &str) -> String {
    let sha = sha1_smol::Sha1::from(body).digest().to_string();
    query_one(
        &d.sql(),
        "SELECT outcome FROM messages WHERE body_sha1 = ?1",
        &sha,
    )
}

fn status_of(d: &Daemon, certificate_id: &str) -> String {
    query_one(
        &d.sql(),
        "SELECT status FROM certificates WHERE certificate_id = ?1",
        certificate_id,
    )
}

fn outputs_for(d: &Daemon, certificate_id: &str) -> i64 {
    query_one(
        &d.sql(),
        "SELECT count(*) FROM outputs o JOIN messages m ON m.id = o.message_id WHERE m.certificate_id = ?1",
        certificate_id,
    )
}

#[test]
fn douyins_own_example_body_verifies_and_is_committed_before_the_200() {
    let dir = Scratch::new("example");
    let d = Daemon::start(&dir.0);
    let r = d.push_with(
        DOUYIN_EXAMPLE,
        Some(&sign(SECRET, DOUYIN_EXAMPLE.as_bytes())),
        Some("msg-1"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Read right after the answer: the row must already be there.
    let c = d.sql();
    let (outcome, action, cert, msg_time, log_id, msg_id, body, deliveries): (String, String, String, i64, String, String, String, i64) = c
        .query_row(
            "SELECT outcome, action, certificate_id, msg_time, log_id, msg_id, body, deliveries FROM messages",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .unwrap();
    assert_eq!(
        (
            outcome.as_str(),
            action.as_str(),
            cert.as_str(),
            msg_time,
            log_id.as_str(),
            msg_id.as_str(),
            deliveries
        ),
        (
            "applied",
            "verify",
            "456",
            1665991178,
            "202210101930530102281180650970B5AF",
            "msg-1",
            1
        )
    );
    assert_eq!(
        body, DOUYIN_EXAMPLE,
        "the raw body is stored as text, byte for byte"
    );
    let (status, order, account, st_time): (String, String, String, i64) = c
        .query_row(
            "SELECT status, order_id, account_id, status_msg_time FROM certificates WHERE certificate_id = '456'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), order.as_str(), account.as_str(), st_time),
        ("verified", "123", "1234", 1665991178)
    );
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM outputs WHERE sink = 'log'"),
        1
    );
    let received: String = query_str(&c, "SELECT received_at FROM messages");
    assert!(
        received.len() == 24 && received.ends_with('Z') && received.as_bytes()[10] == b'T',
        "{received}"
    );
    assert_eq!(query_str(&c, "PRAGMA journal_mode"), "wal");
    assert_eq!(
        query_i64(&c, "PRAGMA user_version"),
        coupond::store::SCHEMA_VERSION
    );
}

#[test]
fn the_same_body_again_is_counted_not_reapplied_whatever_its_msg_id() {
    let dir = Scratch::new("redelivery");
    let d = Daemon::start(&dir.0);
    let body = coupon("verify", 1000, "c-redeliver");
    let sig = sign(SECRET, body.as_bytes());
    for msg_id in [Some("m1"), Some("m2"), None, Some("m1")] {
        assert_eq!(d.push_with(&body, Some(&sig), msg_id).status, 200);
    }
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 1);
    // Redeliveries are counted in memory and written with the other counts, at most
    // every 10 s (a replay costs no write of its own).
    wait_until("the redeliveries counted", Duration::from_secs(30), || {
        query_i64(&c, "SELECT deliveries FROM messages") == 4
    });
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM outputs"),
        1,
        "one receipt, however many deliveries"
    );
    assert!(
        query_str(&c, "SELECT last_received_at FROM messages")
            > query_str(&c, "SELECT received_at FROM messages")
    );
}

#[test]
fn a_second_verify_of_a_verified_coupon_is_a_duplicate_without_output() {
    let dir = Scratch::new("duplicate");
    let d = Daemon::start(&dir.0);
    let first = coupon_with("verify", 1000, "c-dup", r#","log_id":"A""#);
    let second = coupon_with("verify", 1000, "c-dup", r#","log_id":"B""#);
    let later = coupon_with("verify", 2000, "c-dup", r#","log_id":"C""#);
    for b in [&first, &second, &later] {
        assert_eq!(d.push(b).status, 200);
    }
    assert_eq!(outcome_of(&d, &first), "applied");
    assert_eq!(outcome_of(&d, &second), "duplicate");
    assert_eq!(outcome_of(&d, &later), "duplicate");
    assert_eq!(outputs_for(&d, "c-dup"), 1);
    assert_eq!(
        query_i64(&d.sql(), "SELECT status_msg_time FROM certificates"),
        2000
    );
}

#[test]
fn stale_verify_after_cancel_is_recorded_but_not_printed() {
    let dir = Scratch::new("stale");
    let d = Daemon::start(&dir.0);
    let verify = coupon("verify", 1000, "c-stale");
    let cancel = coupon("verify_cancel", 1100, "c-stale");
    let old_verify = coupon_with("verify", 900, "c-stale", r#","log_id":"late""#);
    for b in [&verify, &cancel, &old_verify] {
        assert_eq!(d.push(b).status, 200);
    }
    assert_eq!(outcome_of(&d, &verify), "applied");
    assert_eq!(outcome_of(&d, &cancel), "applied");
    assert_eq!(outcome_of(&d, &old_verify), "stale");
    assert_eq!(status_of(&d, "c-stale"), "cancelled");
    assert_eq!(outputs_for(&d, "c-stale"), 2);
}

#[test]
fn a_cancel_that_overtakes_its_verify_wins() {
    let dir = Scratch::new("overtake");
    let d = Daemon::start(&dir.0);
    let verify = coupon("verify", 1000, "c-over");
    let cancel = coupon("verify_cancel", 1000, "c-over");
    assert_eq!(d.push(&cancel).status, 200);
    assert_eq!(d.push(&verify).status, 200);
    assert_eq!(outcome_of(&d, &cancel), "applied");
    assert_eq!(outcome_of(&d, &verify), "stale");
    assert_eq!(status_of(&d, "c-over"), "cancelled");
    assert_eq!(outputs_for(&d, "c-over"), 1);
}

#[test]
fn a_genuine_reverify_after_a_cancel_applies_even_with_a_reused_msg_id() {
    let dir = Scratch::new("reverify");
    let d = Daemon::start(&dir.0);
    let steps = [
        ("verify", 1000, "applied"),
        ("verify_cancel", 1100, "applied"),
        ("verify", 1200, "applied"),
    ];
    for (action, t, _) in steps {
        let body = coupon(action, t, "c-re");
        let msg_id = format!("same-entity-{action}");
        assert_eq!(
            d.push_with(&body, Some(&sign(SECRET, body.as_bytes())), Some(&msg_id))
                .status,
            200
        );
    }
    for (action, t, want) in steps {
        assert_eq!(outcome_of(&d, &coupon(action, t, "c-re")), want);
    }
    assert_eq!(status_of(&d, "c-re"), "verified");
    assert_eq!(outputs_for(&d, "c-re"), 3);
}

#[test]
fn refund_outranks_a_cancel_in_the_same_second_in_either_order() {
    let dir = Scratch::new("refund");
    let d = Daemon::start(&dir.0);
    for (cert, order) in [
        ("c-r1", ["verify_cancel", "refund_success"]),
        ("c-r2", ["refund_success", "verify_cancel"]),
    ] {
        for action in order {
            assert_eq!(d.push(&coupon(action, 5000, cert)).status, 200);
        }
        assert_eq!(status_of(&d, cert), "refunded", "{cert}");
    }
    assert_eq!(
        outcome_of(&d, &coupon("verify_cancel", 5000, "c-r2")),
        "stale"
    );
}

#[test]
fn numbers_as_strings_content_as_object_and_a_trailing_newline_are_accepted() {
    let dir = Scratch::new("shapes");
    let d = Daemon::start(&dir.0);
    let body = format!(
        "{{\"event\":\"life_trade_certificate_notify\",\"client_key\":\"{CLIENT_KEY}\",\"content\":{{\"action\":\"verify\",\"msg_time\":\"1665991178\",\"certificate\":{{\"certificate_id\":789,\"order_id\":123,\"account_id\":1234}}}}}}\n"
    );
    assert_eq!(d.push(&body).status, 200);
    assert_eq!(outcome_of(&d, &body), "applied");
    assert_eq!(
        query_str(
            &d.sql(),
            "SELECT account_id FROM certificates WHERE certificate_id = '789'"
        ),
        "1234"
    );
}

#[test]
fn verify_webhook_challenge_is_echoed_with_its_json_type() {
    let dir = Scratch::new("challenge");
    let d = Daemon::start(&dir.0);
    let cases = [
        (
            format!(
                r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":"{{\"challenge\":12345}}"}}"#
            ),
            r#"{"challenge":12345}"#,
        ),
        (
            format!(
                r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":{{"challenge":678}}}}"#
            ),
            r#"{"challenge":678}"#,
        ),
        (
            format!(
                r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":{{"challenge":"abc"}}}}"#
            ),
            r#"{"challenge":"abc"}"#,
        ),
    ];
    for (body, want) in &cases {
        let r = d.push(body);
        assert_eq!((r.status, r.body.as_str()), (200, *want), "{body}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(outcome_of(&d, body), "challenge");
    }
}

#[test]
fn a_challenge_with_a_bad_signature_is_answered_warned_and_kept_as_rejected() {
    let dir = Scratch::new("challenge-bad");
    let d = Daemon::start(&dir.0);
    let body = format!(
        r#"{{"event":"verify_webhook","client_key":"{CLIENT_KEY}","content":{{"challenge":99}}}}"#
    );
    let r = d.push_with(&body, Some(&sign("wrong", body.as_bytes())), None);
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"challenge":99}"#));
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 0);
    assert_eq!(query_i64(&c, "SELECT count(*) FROM rejected"), 1);
    assert!(
        d.wait_log(
            "[WARN] 200 verify_webhook answered although wrong signature",
            Duration::from_secs(5)
        ),
        "{}",
        d.log_text()
    );
}

#[test]
fn other_signed_events_are_ignored() {
    let dir = Scratch::new("ignored");
    let d = Daemon::start(&dir.0);
    let body = format!(
        r#"{{"event":"life_trade_order_notify","client_key":"{CLIENT_KEY}","content":"{{}}"}}"#
    );
    assert_eq!(d.push(&body).status, 200);
    assert_eq!(outcome_of(&d, &body), "ignored");
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM outputs"), 0);
}

#[test]
fn signed_but_broken_messages_are_stored_invalid_with_the_reason() {
    let dir = Scratch::new("invalid");
    let d = Daemon::start(&dir.0);
    let env = |content: &str| {
        format!(
            r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}","content":{}}}"#,
            serde_json::Value::String(content.into())
        )
    };
    let cases = [
        ("{not json".to_string(), "body is not JSON"),
        (
            format!(r#"{{"client_key":"{CLIENT_KEY}","content":"{{}}"}}"#),
            "event is missing",
        ),
        (
            r#"{"event":"life_trade_certificate_notify","content":"{}"}"#.to_string(),
            "client_key is missing",
        ),
        (
            format!(r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}"}}"#),
            "content is missing",
        ),
        (
            env(r#"{"msg_time":1,"certificate":{"certificate_id":"x"}}"#),
            "content.action is missing",
        ),
        (
            env(r#"{"action":"verify","certificate":{"certificate_id":"x"}}"#),
            "content.msg_time is missing",
        ),
        (
            env(r#"{"action":"verify","msg_time":1,"certificate":{}}"#),
            "content.certificate.certificate_id is missing",
        ),
    ];
    for (body, reason) in &cases {
        let r = d.push(body);
        assert_eq!(r.status, 200, "{body}");
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        let (outcome, error): (String, String) = d
            .sql()
            .query_row(
                "SELECT outcome, error FROM messages WHERE body_sha1 = ?1",
                [sha],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(outcome, "invalid", "{body}");
        assert!(error.starts_with(reason), "{body}: {error}");
    }
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM certificates"), 0);
}

#[test]
fn missing_or_wrong_signatures_are_401_and_kept_only_in_bounded_rejected() {
    let dir = Scratch::new("unsigned");
    let d = Daemon::start(&dir.0);
    let body = coupon("verify", 1000, "c-forged");
    let wrong = sign("guessed", body.as_bytes());
    for sig in [None, Some("not-hex"), Some(wrong.as_str())] {
        assert_eq!(d.push_with(&body, sig, Some("m")).status, 401, "{sig:?}");
    }
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 0);
    assert_eq!(query_i64(&c, "SELECT count(*) FROM certificates"), 0);
    let reasons: Vec<String> = query_column(&c, "SELECT reason FROM rejected ORDER BY id");
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons[0].contains("missing")
            && reasons[1].contains("malformed")
            && reasons[2].contains("wrong"),
        "{reasons:?}"
    );
    // Upper-case hex is the same signature.
    assert_eq!(
        d.push_with(
            &body,
            Some(&sign(SECRET, body.as_bytes()).to_uppercase()),
            None
        )
        .status,
        200
    );
}

#[test]
fn unsigned_floods_cannot_grow_the_rejected_table_past_its_cap() {
    let dir = Scratch::new("flood");
    let d = Daemon::start(&dir.0);
    let started = std::time::Instant::now();
    let big = "x".repeat(20_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = d.addr;
            let big = big.clone();
            std::thread::spawn(move || {
                for i in 0..260 {
                    let body = format!(r#"{{"n":{t}{i},"pad":"{big}"}}"#);
                    let r = request(addr, "POST", PATH, &[], body.as_bytes());
                    assert_eq!(r.status, 401);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Written at a bounded rate (the row cap itself is a store unit test), each cut.
    use coupond::ratelimit::{REJECTED_BURST, REJECTED_REFILL};
    let refills = started.elapsed().as_secs() / REJECTED_REFILL.as_secs() + 1;
    let c = d.sql();
    let rows = query_i64(&c, "SELECT count(*) FROM rejected");
    assert!(
        rows >= 1 && rows <= (REJECTED_BURST as u64 + refills) as i64,
        "{rows} rows"
    );
    assert_eq!(
        query_i64(&c, "SELECT max(length(body)) FROM rejected"),
        8192
    );
    assert!(
        query_i64(&c, "SELECT min(body_len) FROM rejected") > 20_000,
        "the true length is kept"
    );
}

#[test]
fn a_signed_message_for_an_unconfigured_app_is_403() {
    let dir = Scratch::new("403");
    let d = Daemon::start(&dir.0);
    let body = coupon("verify", 1000, "c-other").replace(CLIENT_KEY, "another-app");
    let r = d.push(&body);
    assert_eq!(r.status, 403);
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 0);
    assert!(query_str(&c, "SELECT reason FROM rejected").contains("another-app"));
    assert_eq!(query_i64(&c, "SELECT status FROM rejected"), 403);
}

#[test]
fn bodies_over_max_body_are_413_and_not_stored() {
    let dir = Scratch::new("413");
    let d = Daemon::start_with(&dir.0, Opts::default().args(&["--max-body", "2KiB"]));
    let pad = "y".repeat(3000);
    let body = coupon_with("verify", 1, "c-big", &format!(r#","pad":"{pad}""#));
    let r = d.push(&body);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // Chunked, with no Content-Length: refused once it crosses the limit.
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    use std::io::Write;
    let started = std::time::Instant::now();
    write!(
        s,
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..3 {
        write!(s, "400\r\n{}\r\n", "z".repeat(1024)).unwrap();
    }
    s.flush().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_response(&mut s, started);
    assert_eq!(r.status, 413);
    // Just under the limit is fine.
    let ok = coupon_with(
        "verify",
        1,
        "c-small",
        &format!(r#","pad":"{}""#, "y".repeat(1500)),
    );
    assert_eq!(d.push(&ok).status, 200);
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM messages"), 1);
    assert_eq!(query_i64(&c, "SELECT count(*) FROM rejected"), 0);
}

#[test]
fn other_paths_are_404_and_other_methods_405_and_neither_is_stored() {
    let dir = Scratch::new("404");
    let d = Daemon::start(&dir.0);
    let body = coupon("verify", 1, "c-path");
    let sig = vec![(
        "X-Douyin-Signature".to_string(),
        sign(SECRET, body.as_bytes()),
    )];
    assert_eq!(
        request(d.addr, "POST", "/other", &sig, body.as_bytes()).status,
        404
    );
    assert_eq!(
        request(d.addr, "POST", "/douyin/webhook/x", &sig, body.as_bytes()).status,
        404
    );
    for method in ["GET", "PUT", "DELETE"] {
        let r = request(d.addr, method, PATH, &sig, body.as_bytes());
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    let c = d.sql();
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM messages")
            + query_i64(&c, "SELECT count(*) FROM rejected"),
        0
    );
}

#[test]
fn secrets_rotate_new_and_old_both_verify() {
    let dir = Scratch::new("rotate");
    let opts = Opts {
        secret_file_contents: Some("brand-new-secret\n".to_string() + SECRET + "\n"),
        ..Opts::default()
    };
    let d = Daemon::start_with(&dir.0, opts);
    let a = coupon("verify", 1, "c-rot-a");
    let b = coupon("verify", 1, "c-rot-b");
    assert_eq!(
        d.push_with(&a, Some(&sign("brand-new-secret", a.as_bytes())), None)
            .status,
        200
    );
    assert_eq!(
        d.push_with(&b, Some(&sign(SECRET, b.as_bytes())), None)
            .status,
        200
    );
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM certificates"), 2);
    let log = d.log_text();
    assert!(
        !log.contains(SECRET) && !log.contains("brand-new-secret"),
        "a secret reached the log"
    );
}

#[test]
fn keep_alive_connections_get_every_answer_in_order() {
    let dir = Scratch::new("keepalive");
    let d = Daemon::start(&dir.0);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    let mut wire = Vec::new();
    for i in 0..5 {
        let body = coupon("verify", 1, &format!("c-ka-{i}"));
        let sig = sign(SECRET, body.as_bytes());
        write!(wire, "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Douyin-Signature: {sig}\r\n\r\n{body}", body.len()).unwrap();
    }
    write!(
        wire,
        "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.write_all(&wire).unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 5, "{out}");
    assert_eq!(out.matches("HTTP/1.1 404").count(), 1, "{out}");
    assert_eq!(query_i64(&d.sql(), "SELECT count(*) FROM certificates"), 5);
}
