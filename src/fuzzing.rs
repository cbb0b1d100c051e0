//! One hostile input through each decoder that takes the internet's bytes, with the
//! invariants no input may break: a webhook body through intake and the receipt
//! ([`check`]), an MQTT payload through the store box's decoder ([`check_mqtt`]), and
//! an answer of Douyin's verify-record query through catch-up's record decoder
//! ([`check_records`]). The fuzz targets (`fuzz/`, nightly) and the normal suite
//! (stable, every `./run-tests`: a deterministic mutation test and a replay of each
//! target's committed corpus) call the same functions, so what the fuzzer explores the
//! normal suite re-checks.
//!
//! A violated invariant panics: that is the fuzzer's "crash" and the test's failure.
//! Nothing here runs in the daemon.

use crate::douyin;
use crate::intake::{self, Apps, Intake, Kind, Message};
use crate::model::JobEvent;
use crate::mqtt;
use crate::sanitize;
use crate::signature::sign;
use crate::sinks::receipt;
use crate::sources::catchup::{self, Window};
use crate::sources::mqtt::{self as mqtt_source, Subscriber};
use crate::wire::CertificateMsg;

/// The secret [`check`] signs with, so that every body reaches the parser.
pub const SECRET: &str = "fuzz-secret";
/// The apps [`check`] accepts: the mutation test's and Douyin's example's.
pub const CLIENT_KEYS: [&str; 2] = ["app1", "axxxxxxxxxxxxx"];

/// Classifies `body` unsigned and signed; renders a receipt for a coupon message.
/// Returns the signed classification.
pub fn check(body: &[u8]) -> Intake {
    let apps = Apps {
        client_keys: CLIENT_KEYS.iter().map(|k| k.to_string()).collect(),
        secrets: vec![SECRET.to_string()],
    };
    // Unsigned, or signed with another secret: never a message, whatever the body says.
    for header in [None, Some(sign("not-the-secret", body))] {
        match intake::classify(&apps, body, header.as_deref()) {
            Intake::Rejected { status: 401, .. } => {}
            other => panic!("an unsigned body got through: {other:?}"),
        }
    }
    let signed = intake::classify(&apps, body, Some(&sign(SECRET, body)));
    if let Intake::Message(
        m @ Message {
            kind: Kind::Certificate(c),
            ..
        },
    ) = &signed
    {
        receipt_holds_only_its_own_commands(&event(m, c, body));
    }
    let shown = sanitize::text(&String::from_utf8_lossy(body)).into_owned();
    assert!(!shown.chars().any(sanitize::is_unsafe), "{shown:?}");
    signed
}

/// The job event the store would make of a recorded coupon message.
fn event(m: &Message, c: &CertificateMsg, body: &[u8]) -> JobEvent {
    JobEvent {
        message_id: 1,
        action: c.action,
        certificate_id: c.certificate_id.clone(),
        order_id: c.order_id.clone(),
        code: c.code.clone(),
        account_id: c.account_id.clone(),
        client_key: m.client_key.clone(),
        msg_time: c.msg_time,
        log_id: m.log_id.clone(),
        received_at: "2026-11-25T16:48:43.438Z".into(),
        body: String::from_utf8_lossy(body).into_owned(),
        source: if m.test {
            crate::model::Source::Test
        } else {
            crate::model::Source::Push
        },
        // Douyin's text reaches the receipt through the details too: hostile fields
        // stand in for the deal's title and the store.
        details: Some(crate::details::Details {
            certificate_id: c.certificate_id.clone(),
            title: c.code.clone().or_else(|| Some(c.certificate_id.clone())),
            sku_id: None,
            pay_amount: Some(c.msg_time),
            original_amount: Some(c.msg_time.wrapping_add(1)),
            coupon_pay_amount: None,
            merchant_ticket_amount: None,
            poi_id: c.order_id.clone(),
            verify_id: None,
            origin: crate::details::DetailsOrigin::Query,
            fetched_at: String::new(),
        }),
    }
}

/// Renders the receipt for `e` on both paper widths and checks it: every row fits the
/// paper and shows no control character, and the ESC/POS bytes hold exactly the
/// layout's own commands: one `ESC @` first, one cut last, nothing a field put there.
fn receipt_holds_only_its_own_commands(e: &JobEvent) {
    for (columns, reprint) in [(32, false), (48, true)] {
        let lines = receipt::lines(e, reprint, e.msg_time, Some("店"), &[]);
        for row in receipt::render_text(&lines, columns) {
            assert!(
                receipt::width(&row) <= columns,
                "{row:?} wider than {columns}"
            );
            assert!(!row.chars().any(char::is_control), "{row:?}");
        }
        let bytes = receipt::escpos(&lines, columns);
        assert!(bytes.starts_with(b"\x1b@") && bytes.ends_with(b"\x1dVB\x00"));
        let (mut inits, mut cuts, mut i) = (0, 0, 0);
        while i < bytes.len() {
            i += match &bytes[i..] {
                [0x1b, b'@', ..] => {
                    inits += 1;
                    2
                }
                [0x1d, b'V', b'B', _, ..] => {
                    cuts += 1;
                    4
                }
                [0x1c, b'&', ..] => 2,
                [0x1b, b'a' | b'E' | b'd', _, ..] | [0x1d, b'!', _, ..] => 3,
                [b'\n', ..] => 1,
                [b, ..] if *b < 0x20 || *b == 0x7f => {
                    panic!("byte {b:#04x} at {i} is no command of the layout: {bytes:x?}")
                }
                _ => 1,
            };
        }
        assert_eq!((inits, cuts), (1, 1), "{bytes:x?}");
    }
}

/// The apps of [`check`], signing with [`SECRET`].
fn apps() -> Apps {
    Apps {
        client_keys: CLIENT_KEYS.iter().map(|k| k.to_string()).collect(),
        secrets: vec![SECRET.to_string()],
    }
}

/// The store box [`check_mqtt`] decodes for: one account, a small `--max-body`.
pub const MQTT_ACCOUNT: &str = "1234";
const MQTT_MAX_BODY: usize = 4096;

/// One MQTT payload through the store box's decoder, as it came and as the body of a
/// forward signed with [`SECRET`]: never a panic; what is not a forward is a 400 that
/// keeps the payload; a body over `--max-body` a 413; a message only when the signature
/// verifies; a coupon only for the box's account.
pub fn check_mqtt(payload: &[u8]) {
    let sub = Subscriber {
        broker: mqtt::Broker {
            host: "fuzz".into(),
            port: mqtt::PORT,
            client_id: "fuzz".into(),
            username: None,
            password: None,
            prefix: "coupond".into(),
            tls: None,
            max_packet: mqtt::max_packet(MQTT_MAX_BODY),
        },
        accounts: vec![MQTT_ACCOUNT.to_string()],
        max_body: MQTT_MAX_BODY,
    };
    let apps = apps();
    let body = String::from_utf8_lossy(payload);
    let signed = serde_json::json!({"body": body, "signature": sign(SECRET, body.as_bytes()), "msg_id": "m"})
        .to_string();
    for p in [payload, signed.as_bytes()] {
        let a = mqtt_source::arrival(&sub, &apps, p, "t".into());
        match &a.intake {
            Intake::Rejected { status: 400, .. } => {
                assert_eq!(a.body, p, "a 400 keeps the payload")
            }
            Intake::Rejected { status: 413, .. } => assert!(a.body.len() > MQTT_MAX_BODY),
            Intake::Rejected { .. } => {}
            Intake::Message(m) => {
                assert!(a.body.len() <= MQTT_MAX_BODY);
                let again = intake::classify(&apps, &a.body, a.signature.as_deref());
                assert!(
                    matches!(again, Intake::Message(_)),
                    "only a signed body is a message"
                );
                if let Kind::Certificate(c) = &m.kind {
                    assert!(
                        c.account_id
                            .as_deref()
                            .map_or(true, |acc| acc == MQTT_ACCOUNT),
                        "a coupon of another account: {c:?}"
                    );
                }
            }
        }
    }
}

/// One answer of Douyin's verify-record query through catch-up's record decoder, as it
/// came and as the one record of a page: never a panic; at most the page size read,
/// every item a record or a refusal; each record's messages have distinct digests and
/// times of the record; a record outside the window asked for is refused.
pub fn check_records(answer: &[u8]) {
    let mut wrapped = br#"{"data":{"error_code":0,"records":["#.to_vec();
    wrapped.extend_from_slice(answer);
    wrapped.extend_from_slice(b"]}}");
    for body in [answer, &wrapped[..]] {
        let Ok(page) = douyin::parse_page(body) else {
            continue;
        };
        assert!(page.items <= douyin::PAGE_SIZE);
        assert_eq!(page.records.len() + page.bad.len(), page.items);
        let window = Window {
            start: 1_700_000_000,
            end: 1_700_086_400,
        };
        for r in &page.records {
            assert!(r.verify_time > 0);
            let msgs = catchup::messages(r, "6900000000001");
            assert!(!msgs.is_empty() && msgs.len() <= 2);
            assert!(msgs
                .iter()
                .all(|m| m.msg.certificate_id == r.certificate_id));
            if msgs.len() == 2 {
                assert_ne!(msgs[0].digest, msgs[1].digest);
            }
            let inside = (window.start..window.end).contains(&r.verify_time);
            let refused = catchup::refused(r, window, window.end);
            if !inside {
                assert!(refused.is_some(), "{r:?} is outside the window");
            }
            if let Some(why) = refused {
                assert!(!why.is_empty());
            }
        }
    }
}

/// Runs `check` on every input of the committed corpus of fuzz target `target`
/// (`fuzz/corpus/TARGET`), naming the input that panics; returns how many ran. For the
/// normal suite's replay tests.
pub fn replay_corpus(target: &str, check: fn(&[u8])) -> usize {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&corpus).expect("the committed fuzz corpus") {
        let path = entry.expect("a corpus entry").path();
        let input = std::fs::read(&path).expect("a corpus input");
        std::panic::catch_unwind(|| check(&input))
            .unwrap_or_else(|_| panic!("{} (a fuzz corpus input) panicked", path.display()));
        replayed += 1;
    }
    replayed
}

/// Deterministic mutations of `seeds` (bit flips, truncations, insertions, splices,
/// random bytes: xorshift, no crate), each through `check`: the stable suite's share of
/// what the fuzzer does.
pub fn mutate(seeds: &[&[u8]], rounds: usize, check: fn(&[u8])) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..rounds {
        let mut input = seeds[round % seeds.len()].to_vec();
        for _ in 0..=(rand() % 4) {
            let at = (rand() as usize) % input.len().max(1);
            match rand() % 5 {
                0 if !input.is_empty() => {
                    let i = at.min(input.len() - 1);
                    input[i] ^= 1 << (rand() % 8);
                }
                1 => input.truncate(at),
                2 => input.insert(at.min(input.len()), (rand() % 256) as u8),
                3 => {
                    let other = seeds[(rand() as usize) % seeds.len()];
                    let from = (rand() as usize) % other.len().max(1);
                    let piece: Vec<u8> = other
                        .get(from..)
                        .unwrap_or(&[])
                        .iter()
                        .copied()
                        .take(40)
                        .collect();
                    let at = at.min(input.len());
                    input.splice(at..at, piece);
                }
                _ => input = (0..(rand() % 64)).map(|_| (rand() % 256) as u8).collect(),
            }
        }
        check(&input);
    }
}
