//! One hostile body through intake and the receipt, with the invariants no body may
//! break. The fuzz target (`fuzz/`, nightly) and the deterministic mutation test in
//! `intake` (stable, every `./run-tests`, which also replays the fuzzer's committed
//! corpus) both call [`check`], so what the fuzzer explores the normal suite re-checks.
//!
//! A violated invariant panics: that is the fuzzer's "crash" and the test's failure.
//! Nothing here runs in the daemon.

use crate::intake::{self, Apps, Intake, Kind, Message};
use crate::model::JobEvent;
use crate::sanitize;
use crate::signature::sign;
use crate::sinks::receipt;
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
