//! SPEC §4 "Ids are text": a validly signed body is still hostile input, and an id sent
//! as a JSON number keeps every digit.

mod common;

use common::*;
use serde_json::Value;

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
