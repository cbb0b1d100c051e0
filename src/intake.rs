//! What a request to the webhook path is, before anything is stored.
//!
//! [`classify`] is a pure function of the raw body, the signature header and the
//! configured apps. It implements the decision half of SPEC §3: unsigned requests
//! become a bounded `rejected` row and a 401, signed requests for an unknown app a 403,
//! and every signed request for a configured app becomes exactly one `messages` row,
//! whatever is wrong with it. The store then applies the coupon state rule.

use serde_json::Value;

use crate::signature::{self, Check};
use crate::wire::{self, CertificateMsg, Notice};

/// The apps this receiver accepts: `client_key`s and the secrets they sign with.
#[derive(Debug, Clone)]
pub struct Apps {
    pub client_keys: Vec<String>,
    pub secrets: Vec<String>,
}

/// The classification of one request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Not provably from Douyin for one of our apps: kept only as a bounded `rejected`
    /// row and answered with `status` (401 or 403) — or, for a `verify_webhook`
    /// challenge, still answered with the challenge.
    Rejected {
        status: u16,
        reason: String,
        challenge: Option<Value>,
    },
    /// A signed body for a configured app: one `messages` row.
    Message(Message),
}

/// A signed message, with what the `messages` row needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: Option<String>,
    pub client_key: Option<String>,
    pub log_id: Option<String>,
    /// `coupond send`'s test push (`from_user_id` = `coupond-send`, inside the signed
    /// body): the store records it with `source` = `test`.
    pub test: bool,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A coupon message: the state rule decides applied, duplicate or stale.
    Certificate(CertificateMsg),
    /// A `verify_webhook` challenge, answered with this value.
    Challenge(Value),
    /// Another event type.
    Ignored,
    /// Signed, but not understood; the reason is stored with it.
    Invalid(String),
}

/// The `outcome` column of a `messages` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Stale,
    Ignored,
    Invalid,
    Challenge,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::Stale,
        Outcome::Ignored,
        Outcome::Invalid,
        Outcome::Challenge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Invalid => "invalid",
            Outcome::Challenge => "challenge",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::coupon::Verdict> for Outcome {
    fn from(v: crate::coupon::Verdict) -> Outcome {
        match v {
            crate::coupon::Verdict::Applied => Outcome::Applied,
            crate::coupon::Verdict::Duplicate => Outcome::Duplicate,
            crate::coupon::Verdict::Stale => Outcome::Stale,
        }
    }
}

impl Intake {
    /// The challenge to echo, if the request was a `verify_webhook` (signed or not).
    pub fn challenge(&self) -> Option<&Value> {
        match self {
            Intake::Rejected { challenge, .. } => challenge.as_ref(),
            Intake::Message(Message {
                kind: Kind::Challenge(v),
                ..
            }) => Some(v),
            Intake::Message(_) => None,
        }
    }
}

/// The `rejected.reason` of a push that looks genuine (it parses, it names a configured
/// `client_key`, it carries a well-formed signature) and still does not verify: the
/// secret is probably wrong. Counted apart (`coupond status`, STATUS=, the display), so
/// that internet junk never raises the alarm and a wrong secret always does.
pub const WRONG_SECRET: &str =
    "wrong signature on a push for a configured client_key: the client secret is probably wrong";

/// Classifies a request body under `apps`.
pub fn classify(apps: &Apps, body: &[u8], signature_header: Option<&str>) -> Intake {
    let envelope = wire::parse_envelope(body);
    let check = signature::verify(&apps.secrets, body, signature_header);
    if !check.is_valid() {
        let ours = envelope
            .as_ref()
            .ok()
            .and_then(|e| e.client_key.as_deref())
            .is_some_and(|k| apps.client_keys.iter().any(|c| c == k));
        let reason = match check {
            Check::Mismatch if ours => WRONG_SECRET,
            _ => check.reason(),
        };
        let challenge = envelope.ok().and_then(|e| {
            (e.event.as_deref() == Some(wire::EVENT_VERIFY_WEBHOOK))
                .then(|| e.challenge().ok())
                .flatten()
        });
        return Intake::Rejected {
            status: 401,
            reason: reason.to_string(),
            challenge,
        };
    }
    let envelope = match envelope {
        Ok(e) => e,
        Err(reason) => return invalid(None, None, None, reason),
    };
    let (event, client_key, log_id) = (
        envelope.event.clone(),
        envelope.client_key.clone(),
        envelope.log_id.clone(),
    );
    let test = envelope.from_user_id.as_deref() == Some(wire::TEST_SENDER);
    let Some(key) = client_key.as_deref() else {
        return invalid(event, None, log_id, "client_key is missing".into());
    };
    if !apps.client_keys.iter().any(|k| k == key) {
        debug_assert!(matches!(check, Check::Valid(_)));
        return Intake::Rejected {
            status: 403,
            reason: format!(
                "client_key {key:?} is not configured (--client-key is {})",
                apps.client_keys.join(",")
            ),
            challenge: None,
        };
    }
    let kind = match envelope.notice() {
        Ok(Notice::Certificate(c)) => Kind::Certificate(c),
        Ok(Notice::Challenge(v)) => Kind::Challenge(v),
        Ok(Notice::Other) => Kind::Ignored,
        Err(reason) => Kind::Invalid(reason),
    };
    Intake::Message(Message {
        event,
        client_key,
        log_id,
        test,
        kind,
    })
}

fn invalid(
    event: Option<String>,
    client_key: Option<String>,
    log_id: Option<String>,
    reason: String,
) -> Intake {
    Intake::Message(Message {
        event,
        client_key,
        log_id,
        test: false,
        kind: Kind::Invalid(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::sign;
    use serde_json::json;

    fn apps() -> Apps {
        Apps {
            client_keys: vec!["app1".into()],
            secrets: vec!["new-secret".into(), "old-secret".into()],
        }
    }

    fn signed(body: &str) -> Intake {
        classify(
            &apps(),
            body.as_bytes(),
            Some(&sign("old-secret", body.as_bytes())),
        )
    }

    fn kind(i: Intake) -> Kind {
        match i {
            Intake::Message(m) => m.kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signed_coupon_message_for_our_app() {
        let body = r#"{"event":"life_trade_certificate_notify","client_key":"app1","log_id":"L1","content":{"action":"verify","msg_time":5,"certificate":{"certificate_id":"c1"}}}"#;
        match signed(body) {
            Intake::Message(m) => {
                assert_eq!(m.log_id.as_deref(), Some("L1"));
                assert!(matches!(m.kind, Kind::Certificate(ref c) if c.certificate_id == "c1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_genuine_looking_push_with_a_wrong_signature_blames_the_secret() {
        let ours = br#"{"event":"life_trade_certificate_notify","client_key":"app1"}"#;
        let theirs = br#"{"event":"life_trade_certificate_notify","client_key":"other"}"#;
        let reason = |body: &[u8], header: Option<&str>| match classify(&apps(), body, header) {
            Intake::Rejected { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(ours, Some(&sign("guess", ours))), WRONG_SECRET);
        assert_ne!(reason(ours, None), WRONG_SECRET);
        assert_ne!(reason(ours, Some("zz")), WRONG_SECRET);
        assert_ne!(reason(theirs, Some(&sign("guess", theirs))), WRONG_SECRET);
        assert_ne!(reason(b"junk", Some(&sign("guess", b"junk"))), WRONG_SECRET);
    }

    #[test]
    fn unsigned_and_wrongly_signed_are_401() {
        let body = br#"{"event":"life_trade_certificate_notify","client_key":"app1"}"#;
        for header in [None, Some("zz"), Some(sign("guess", body).as_str())] {
            let got = classify(&apps(), body, header);
            assert!(
                matches!(
                    got,
                    Intake::Rejected {
                        status: 401,
                        challenge: None,
                        ..
                    }
                ),
                "{got:?}"
            );
        }
    }

    #[test]
    fn signed_for_another_app_is_403() {
        let got = signed(r#"{"event":"life_trade_certificate_notify","client_key":"app2"}"#);
        assert!(
            matches!(got, Intake::Rejected { status: 403, .. }),
            "{got:?}"
        );
    }

    #[test]
    fn challenge_is_answered_signed_or_not() {
        let body =
            r#"{"event":"verify_webhook","client_key":"app1","content":"{\"challenge\":42}"}"#;
        assert_eq!(kind(signed(body)), Kind::Challenge(json!(42)));
        let unsigned = classify(&apps(), body.as_bytes(), None);
        assert!(matches!(unsigned, Intake::Rejected { status: 401, .. }));
        assert_eq!(unsigned.challenge(), Some(&json!(42)));
    }

    #[test]
    fn signed_but_broken_is_invalid_with_a_reason() {
        let cases = [
            ("garbage", "body is not JSON"),
            (
                r#"{"event":"life_trade_certificate_notify"}"#,
                "client_key is missing",
            ),
            (r#"{"client_key":"app1"}"#, "event is missing"),
            (
                r#"{"event":"life_trade_certificate_notify","client_key":"app1","content":"{}"}"#,
                "content.action is missing",
            ),
        ];
        for (body, want) in cases {
            match kind(signed(body)) {
                Kind::Invalid(reason) => assert!(reason.starts_with(want), "{body}: {reason}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    /// Never panic on input: thousands of mangled bodies (bit flips, truncations,
    /// splices, random bytes), signed so that they reach the parser, are classified, and
    /// each coupon among them gets a receipt that carries no command of its own
    /// ([`crate::fuzzing::check`]). Then the same for every input of the fuzzer's
    /// committed corpus (`fuzz/corpus/intake`, README "Fuzzing").
    #[test]
    fn mangled_bodies_and_the_fuzz_corpus_never_panic() {
        let seeds: [&[u8]; 4] = [
            br#"{ "event": "life_trade_certificate_notify", "client_key": "app1", "content": "{\"action\": \"verify\",\"msg_time\": 1665991178,\"certificate\": {\"certificate_id\": \"456\",\"order_id\": \"123\",\"account_id\": \"1234\"}}", "log_id": "X" }"#,
            br#"{"event":"verify_webhook","client_key":"app1","content":{"challenge":42}}"#,
            br#"{"event":"life_trade_certificate_notify","client_key":"app1","content":{"action":"refund_success","msg_time":"9","certificate":{"certificate_id":7,"code":"ABCDEFGH"}}}"#,
            "{\"event\":\"券\",\"client_key\":\"app1\",\"content\":\"{\\\"a\\\":[1,{}]}\"}".as_bytes(),
        ];
        // xorshift: deterministic, no crate.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut kinds = [0usize; 2];
        for round in 0..20_000 {
            let seed = seeds[round % seeds.len()];
            let mut body = seed.to_vec();
            for _ in 0..=(rand() % 4) {
                let at = (rand() as usize) % body.len().max(1);
                match rand() % 5 {
                    0 => {
                        let i = at.min(body.len() - 1);
                        body[i] ^= 1 << (rand() % 8);
                    }
                    1 => body.truncate(at),
                    2 => body.insert(at, (rand() % 256) as u8),
                    3 => {
                        let other = seeds[(rand() as usize) % seeds.len()];
                        let from = (rand() as usize) % other.len();
                        body.splice(at..at, other[from..].iter().copied().take(40));
                    }
                    _ => body = (0..(rand() % 64)).map(|_| (rand() % 256) as u8).collect(),
                }
                if body.is_empty() {
                    body.push(b'{');
                }
            }
            match crate::fuzzing::check(&body) {
                Intake::Message(_) => kinds[0] += 1,
                Intake::Rejected { .. } => kinds[1] += 1,
            }
        }
        // Both paths were exercised (a mangled client_key is a 403).
        assert!(kinds[0] > 1000 && kinds[1] > 10, "{kinds:?}");

        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/intake");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&corpus).expect("the committed fuzz corpus") {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let _ = std::panic::catch_unwind(|| crate::fuzzing::check(&body))
                .unwrap_or_else(|_| panic!("{} (a fuzz corpus input) panicked", path.display()));
            replayed += 1;
        }
        assert!(
            replayed >= 20,
            "only {replayed} corpus inputs in {}",
            corpus.display()
        );
    }

    #[test]
    fn other_events_are_ignored() {
        assert_eq!(
            kind(signed(
                r#"{"event":"life_trade_order_notify","client_key":"app1"}"#
            )),
            Kind::Ignored
        );
    }
}
