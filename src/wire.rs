//! Douyin's wire format (SPEC §2): the JSON envelope and the coupon `content` in it.
//!
//! Parsing is deliberately lenient where real senders differ (`content` as a JSON string
//! or an object, numbers as strings and strings as numbers, a trailing newline) and
//! strict where a message would be meaningless (a required field missing). Errors are
//! sentences for the `error` column of an `invalid` message: they say which field.
//! Douyin's own names (`event`, `client_key`, `log_id`, `msg_time`, `certificate_id`)
//! are kept as they are.

use serde_json::{Map, Value};

use crate::coupon::Action;

/// The `event` of coupon messages.
pub const EVENT_CERTIFICATE: &str = "life_trade_certificate_notify";
/// The `event` Douyin sends to check a newly configured webhook URL.
pub const EVENT_VERIFY_WEBHOOK: &str = "verify_webhook";
/// The `from_user_id` of `coupond send`'s test pushes (SPEC §7).
pub const TEST_SENDER: &str = "coupond-send";

/// The outer JSON object, with the fields coupond uses picked out.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub event: Option<String>,
    pub client_key: Option<String>,
    pub log_id: Option<String>,
    /// `coupond send` puts [`TEST_SENDER`] here, inside the signed body.
    pub from_user_id: Option<String>,
    content: Option<Value>,
}

/// What a signed envelope asks of the receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `verify_webhook`: echo this value back, with its JSON type.
    Challenge(Value),
    /// A coupon message.
    Certificate(CertificateMsg),
    /// Another event: recorded, nothing to do.
    Other,
}

/// A coupon message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMsg {
    pub action: Action,
    pub msg_time: i64,
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
}

/// Parses the outer object. Fails only when the body is not a JSON object; missing
/// fields are reported later, by [`Envelope::notice`], so that `client_key` can be
/// checked first.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("body is not a JSON object".into());
    };
    Ok(Envelope {
        event: text(obj.get("event")),
        client_key: text(obj.get("client_key")),
        log_id: text(obj.get("log_id")),
        from_user_id: text(obj.get("from_user_id")),
        content: obj.remove("content"),
    })
}

impl Envelope {
    /// What the message asks for, or why it cannot be understood.
    pub fn notice(&self) -> Result<Notice, String> {
        let event = self.event.as_deref().ok_or("event is missing")?;
        match event {
            EVENT_VERIFY_WEBHOOK => self.challenge().map(Notice::Challenge),
            EVENT_CERTIFICATE => certificate(&self.content_object()?).map(Notice::Certificate),
            _ => Ok(Notice::Other),
        }
    }

    /// The challenge of a `verify_webhook` envelope, if it is one and has it.
    pub fn challenge(&self) -> Result<Value, String> {
        let content = self.content_object()?;
        match content.get("challenge") {
            Some(v @ (Value::Number(_) | Value::String(_))) => Ok(v.clone()),
            Some(_) => Err("content.challenge is not a number or string".into()),
            None => Err("content.challenge is missing".into()),
        }
    }

    /// `content` as an object, whether it came as a JSON string or inline.
    fn content_object(&self) -> Result<Map<String, Value>, String> {
        match &self.content {
            None | Some(Value::Null) => Err("content is missing".into()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err("content is not a JSON object".into()),
                Err(e) => Err(format!("content is not JSON: {e}")),
            },
            Some(_) => Err("content is neither a JSON string nor an object".into()),
        }
    }
}

fn certificate(content: &Map<String, Value>) -> Result<CertificateMsg, String> {
    let action = match content.get("action") {
        None | Some(Value::Null) => return Err("content.action is missing".into()),
        Some(v) => {
            let s = text(Some(v)).unwrap_or_default();
            Action::parse(&s).ok_or_else(|| {
                format!("content.action {v} is not verify, verify_cancel or refund_success")
            })?
        }
    };
    let msg_time = match content.get("msg_time") {
        None | Some(Value::Null) => return Err("content.msg_time is missing".into()),
        Some(v) => integer(v)
            .ok_or_else(|| format!("content.msg_time {v} is not a whole number of seconds"))?,
    };
    let cert = match content.get("certificate") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Err("content.certificate is missing".into()),
        Some(_) => return Err("content.certificate is not an object".into()),
    };
    let certificate_id = text(cert.get("certificate_id"))
        .filter(|s| !s.is_empty())
        .ok_or("content.certificate.certificate_id is missing")?;
    Ok(CertificateMsg {
        action,
        msg_time,
        certificate_id,
        order_id: text(cert.get("order_id")),
        code: text(cert.get("code")).filter(|s| !s.is_empty()),
        account_id: text(cert.get("account_id")),
    })
}

/// A string field, also when a sender wrote it as a number.
pub(crate) fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer field, also when a sender wrote it as a string (`"1665991178"`).
pub(crate) fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Douyin's own example body (SPEC §2), byte for byte.
    pub const DOUYIN_EXAMPLE: &str = r#"{ "event": "life_trade_certificate_notify", "client_key": "axxxxxxxxxxxxx", "from_user_id": "f6e35c98-1e53-4943-ad6d-f476f869deab", "content": "{\"action\": \"verify\",\"msg_time\": 1665991178,\"certificate\": {\"certificate_id\": \"456\",\"order_id\": \"123\",\"account_id\": \"1234\"}}", "log_id": "202210101930530102281180650970B5AF" }"#;

    fn notice(body: &str) -> Result<Notice, String> {
        parse_envelope(body.as_bytes())?.notice()
    }

    fn cert(body: &str) -> CertificateMsg {
        match notice(body) {
            Ok(Notice::Certificate(c)) => c,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn parses_douyins_example() {
        let env = parse_envelope(DOUYIN_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(env.client_key.as_deref(), Some("axxxxxxxxxxxxx"));
        assert_eq!(
            env.log_id.as_deref(),
            Some("202210101930530102281180650970B5AF")
        );
        assert_eq!(
            cert(DOUYIN_EXAMPLE),
            CertificateMsg {
                action: Action::Verify,
                msg_time: 1_665_991_178,
                certificate_id: "456".into(),
                order_id: Some("123".into()),
                code: None,
                account_id: Some("1234".into()),
            }
        );
    }

    #[test]
    fn accepts_the_shapes_real_senders_use() {
        let c = cert(
            r#"{"event":"life_trade_certificate_notify","client_key":"k","content":{"action":"refund_success","msg_time":"1665991178","certificate":{"certificate_id":456,"order_id":123,"account_id":1234,"code":"ABCD1234"}}}
"#,
        );
        assert_eq!(c.action, Action::RefundSuccess);
        assert_eq!(c.msg_time, 1_665_991_178);
        assert_eq!(c.certificate_id, "456");
        assert_eq!(c.order_id.as_deref(), Some("123"));
        assert_eq!(c.account_id.as_deref(), Some("1234"));
        assert_eq!(c.code.as_deref(), Some("ABCD1234"));
    }

    /// serde_json's `arbitrary_precision` keeps a number's text: ids past a float's
    /// precision keep every digit, and `msg_time` still takes only whole seconds.
    #[test]
    fn numbers_keep_their_digits_and_msg_time_stays_whole_seconds() {
        let body = |msg_time: &str, id: &str| {
            format!(
                r#"{{"event":"life_trade_certificate_notify","client_key":"k","content":{{"action":"verify","msg_time":{msg_time},"certificate":{{"certificate_id":{id},"order_id":{id}}}}}}}"#
            )
        };
        for id in [
            "7001234567890123457",
            "123456789012345678901234",
            "18446744073709551616",
            "-9223372036854775809",
            "0",
        ] {
            let c = cert(&body("1", id));
            assert_eq!(c.certificate_id, id);
            assert_eq!(c.order_id.as_deref(), Some(id));
        }
        // A fraction keeps its digits too; an exponent is spelt serde_json's way.
        assert_eq!(cert(&body("1", "0.10")).certificate_id, "0.10");
        assert_eq!(cert(&body("1", "1.5e3")).certificate_id, "1.5e+3");
        let cases = [
            ("1665991178", Some(1_665_991_178)),
            ("\"1665991178\"", Some(1_665_991_178)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("1665991178.0", None),
            ("1.665991178e9", None),
            ("1e400", None),
        ];
        for (msg_time, want) in cases {
            match (notice(&body(msg_time, "1")), want) {
                (Ok(Notice::Certificate(c)), Some(t)) => assert_eq!(c.msg_time, t),
                (Err(e), None) => assert!(e.starts_with("content.msg_time"), "{e}"),
                (got, _) => panic!("msg_time {msg_time}: {got:?}"),
            }
        }
    }

    #[test]
    fn challenge_keeps_its_json_type() {
        let cases = [
            (
                r#"{"event":"verify_webhook","client_key":"k","content":"{\"challenge\":12345}"}"#,
                json!(12345),
            ),
            (
                r#"{"event":"verify_webhook","client_key":"k","content":{"challenge":12345}}"#,
                json!(12345),
            ),
            (
                r#"{"event":"verify_webhook","client_key":"k","content":{"challenge":"abc"}}"#,
                json!("abc"),
            ),
            (
                r#"{"event":"verify_webhook","client_key":"k","content":{"challenge":123456789012345678901234567890}}"#,
                serde_json::from_str("123456789012345678901234567890").unwrap(),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(notice(body), Ok(Notice::Challenge(want)), "{body}");
        }
    }

    #[test]
    fn other_events_are_recognised() {
        assert_eq!(
            notice(r#"{"event":"life_trade_order_notify","client_key":"k"}"#),
            Ok(Notice::Other)
        );
    }

    #[test]
    fn broken_messages_say_which_field() {
        let content = |c: &str| {
            format!(
                r#"{{"event":"life_trade_certificate_notify","client_key":"k","content":{}}}"#,
                json!(c)
            )
        };
        let cases = [
            ("not json".to_string(), "body is not JSON"),
            ("[1,2]".to_string(), "body is not a JSON object"),
            (r#"{"client_key":"k"}"#.to_string(), "event is missing"),
            (
                r#"{"event":"life_trade_certificate_notify","client_key":"k"}"#.to_string(),
                "content is missing",
            ),
            (content("{"), "content is not JSON"),
            (content("[]"), "content is not a JSON object"),
            (
                content(r#"{"msg_time":1,"certificate":{"certificate_id":"1"}}"#),
                "content.action is missing",
            ),
            (
                content(r#"{"action":"use","msg_time":1,"certificate":{"certificate_id":"1"}}"#),
                "content.action \"use\" is not",
            ),
            (
                content(r#"{"action":"verify","certificate":{"certificate_id":"1"}}"#),
                "content.msg_time is missing",
            ),
            (
                content(
                    r#"{"action":"verify","msg_time":"soon","certificate":{"certificate_id":"1"}}"#,
                ),
                "content.msg_time \"soon\" is not",
            ),
            (
                content(
                    r#"{"action":"verify","msg_time":1.5,"certificate":{"certificate_id":"1"}}"#,
                ),
                "content.msg_time 1.5 is not",
            ),
            (
                content(r#"{"action":"verify","msg_time":1}"#),
                "content.certificate is missing",
            ),
            (
                content(r#"{"action":"verify","msg_time":1,"certificate":{"order_id":"1"}}"#),
                "content.certificate.certificate_id is missing",
            ),
            (
                content(r#"{"action":"verify","msg_time":1,"certificate":{"certificate_id":""}}"#),
                "content.certificate.certificate_id is missing",
            ),
            (
                r#"{"event":"verify_webhook","client_key":"k","content":{}}"#.to_string(),
                "content.challenge is missing",
            ),
        ];
        for (body, want) in cases {
            let err = notice(&body).expect_err(&body);
            assert!(err.starts_with(want), "{body}: {err}");
        }
    }
}
