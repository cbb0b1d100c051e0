//! Douyin's webhook signature (SPEC §2).
//!
//! `X-Douyin-Signature` is the lowercase hex of `sha1(client_secret ‖ raw body)`. It is
//! checked over the bytes exactly as received (never a re-serialisation), against every
//! configured secret so that a secret rotation can list the new and the old. The
//! comparison is over decoded bytes, so hex case does not matter, and takes the same time
//! wherever the first difference is.

/// What the signature header says about a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No `X-Douyin-Signature` header, or an empty one.
    Missing,
    /// The header is not 40 hex digits.
    Malformed,
    /// A well-formed signature that no configured secret produces.
    Mismatch,
    /// Signed with the configured secret at this index.
    Valid(usize),
}

impl Check {
    pub fn is_valid(self) -> bool {
        matches!(self, Check::Valid(_))
    }

    /// Short reason for the `rejected` table and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Check::Missing => "missing signature",
            Check::Malformed => "malformed signature (want 40 hex digits)",
            Check::Mismatch => "wrong signature (is the client secret right?)",
            Check::Valid(_) => "valid signature",
        }
    }
}

/// The signature Douyin would send for `body` under `secret`: lowercase hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(digest(secret, body))
}

/// Checks `header` against `body` under each of `secrets`.
pub fn verify<S: AsRef<str>>(secrets: &[S], body: &[u8], header: Option<&str>) -> Check {
    let header = match header.map(str::trim) {
        None | Some("") => return Check::Missing,
        Some(h) => h,
    };
    let mut claimed = [0u8; 20];
    if hex::decode_to_slice(header, &mut claimed).is_err() {
        return Check::Malformed;
    }
    secrets
        .iter()
        .position(|secret| constant_time_eq(&digest(secret.as_ref(), body), &claimed))
        .map_or(Check::Mismatch, Check::Valid)
}

fn digest(secret: &str, body: &[u8]) -> [u8; 20] {
    let mut h = sha1_smol::Sha1::new();
    h.update(secret.as_bytes());
    h.update(body);
    h.digest().bytes()
}

/// Equal-length comparison whose time does not depend on where the bytes differ.
fn constant_time_eq(a: &[u8; 20], b: &[u8; 20]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event":"life_trade_certificate_notify"}"#;

    #[test]
    fn sign_matches_sha1_of_secret_then_body() {
        // sha1("abc") is the FIPS 180 test vector; split across secret and body.
        assert_eq!(sign("a", b"bc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn verify_table() {
        let good = sign("s3cret", BODY);
        let upper = good.to_uppercase();
        let padded = format!("  {good}\t");
        let other = sign("other", BODY);
        let cases: &[(&[&str], Option<&str>, Check)] = &[
            (&["s3cret"], Some(&good), Check::Valid(0)),
            (&["s3cret"], Some(&upper), Check::Valid(0)),
            (&["s3cret"], Some(&padded), Check::Valid(0)),
            (&["new", "s3cret"], Some(&good), Check::Valid(1)),
            (&["s3cret"], Some(&other), Check::Mismatch),
            (&["s3cret"], None, Check::Missing),
            (&["s3cret"], Some(""), Check::Missing),
            (&["s3cret"], Some("xyz"), Check::Malformed),
            (&["s3cret"], Some(&good[..39]), Check::Malformed),
            (&["s3cret"], Some(&format!("{good}00")), Check::Malformed),
            (&[], Some(&good), Check::Mismatch),
        ];
        for (secrets, header, want) in cases {
            assert_eq!(
                verify(secrets, BODY, *header),
                *want,
                "{secrets:?} {header:?}"
            );
        }
    }

    #[test]
    fn signature_covers_every_byte_including_a_trailing_newline() {
        let sig = sign("k", BODY);
        let mut with_newline = BODY.to_vec();
        with_newline.push(b'\n');
        assert_eq!(verify(&["k"], &with_newline, Some(&sig)), Check::Mismatch);
        let sig_nl = sign("k", &with_newline);
        assert_eq!(
            verify(&["k"], &with_newline, Some(&sig_nl)),
            Check::Valid(0)
        );
    }
}
