//! What was bought (SPEC §13): a coupon's deal, its amounts and its store, as Douyin's
//! `certificate/query` answer or a recovered verify record gives them.
//!
//! Pure: [`from_answer`] picks the coupon's own entry out of a query answer (`data` of
//! Douyin's envelope, after its `error_code` was checked), [`from_record`] reads a
//! verify record that carries `amount` and `sku`, and [`yuan`] writes fen as the
//! receipt shows them. Amounts are integers in fen, `None` when Douyin leaves one out
//! (never guessed: the day report counts what it does not know). `poi_id` keeps its
//! digits: Douyin sends it as a 19-digit JSON number, beyond a float, and serde_json's
//! `arbitrary_precision` keeps a number's own text.
//!
//! Nothing here is shown as it is: every string from Douyin goes through
//! [`crate::sanitize`] where it is shown (receipt, hook environment, log, `status`).

use serde_json::{Map, Value};

use crate::wire::{integer, text};

/// Where a coupon's details came from (`details.origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DetailsOrigin {
    /// Douyin's `certificate/query`, asked by `order_id`.
    Query,
    /// A verify record catch-up recovered, which carried `amount` and `sku`.
    Record,
}

impl DetailsOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            DetailsOrigin::Query => "query",
            DetailsOrigin::Record => "record",
        }
    }

    pub fn parse(s: &str) -> Option<DetailsOrigin> {
        [DetailsOrigin::Query, DetailsOrigin::Record]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A coupon's details: one `details` row. Serialized as the hook's and the MQTT event's
/// `details` object (the table's fields, amounts in fen), so the field names are a
/// contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Details {
    pub certificate_id: String,
    /// The deal's title (`sku.title`).
    pub title: Option<String>,
    pub sku_id: Option<String>,
    /// What the customer paid, in fen.
    pub pay_amount: Option<i64>,
    /// The deal's list price, in fen.
    pub original_amount: Option<i64>,
    pub coupon_pay_amount: Option<i64>,
    pub merchant_ticket_amount: Option<i64>,
    /// The store that verified it, digit for digit.
    pub poi_id: Option<String>,
    pub verify_id: Option<String>,
    pub origin: DetailsOrigin,
    /// When coupond learnt them (RFC 3339 UTC).
    pub fetched_at: String,
}

/// What a `certificate/query` answer says about one coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The coupon's own entry.
    Found(Box<Details>),
    /// The answer is well formed but does not hold the coupon: final (SPEC §13).
    Absent,
}

/// The coupon `certificate_id`'s entry in `data` of a `certificate/query` answer
/// (`certificates`, else `certificates_v2`); an error says what is malformed.
pub fn from_answer(
    data: &Map<String, Value>,
    certificate_id: &str,
    fetched_at: &str,
) -> Result<Answer, String> {
    let list = match data.get("certificates").filter(|v| !v.is_null()) {
        Some(v) => v,
        None => data.get("certificates_v2").unwrap_or(&Value::Null),
    };
    let entries = match list {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        _ => return Err("data.certificates is not a list".into()),
    };
    let mine = entries
        .iter()
        .find(|e| entry_id(e).as_deref() == Some(certificate_id));
    Ok(match mine {
        Some(e) => Answer::Found(Box::new(read(
            e,
            certificate_id,
            DetailsOrigin::Query,
            fetched_at,
        ))),
        None => Answer::Absent,
    })
}

/// The details a recovered verify record carries, when it has `amount` and `sku`
/// (SPEC §13: then no query is needed).
pub fn from_record(record: &Value, certificate_id: &str, fetched_at: &str) -> Option<Details> {
    let has = |k: &str| record.get(k).is_some_and(Value::is_object);
    (has("amount") && has("sku"))
        .then(|| read(record, certificate_id, DetailsOrigin::Record, fetched_at))
}

/// An entry's `certificate_id`: at the top (`certificates_v2` gives it as a number) or
/// in `verify`.
fn entry_id(e: &Value) -> Option<String> {
    text(e.get("certificate_id"))
        .or_else(|| text(e.get("verify").and_then(|v| v.get("certificate_id"))))
}

fn read(e: &Value, certificate_id: &str, origin: DetailsOrigin, fetched_at: &str) -> Details {
    let amount = |k: &str| e.get("amount").and_then(|a| a.get(k)).and_then(integer);
    let sku = |k: &str| nonempty(e.get("sku").and_then(|s| s.get(k)));
    // A record has `verify_id` and `poi_id` at its top; a query answer's entry in `verify`.
    let verify =
        |k: &str| nonempty(e.get("verify").and_then(|v| v.get(k))).or_else(|| nonempty(e.get(k)));
    Details {
        certificate_id: certificate_id.to_string(),
        title: sku("title"),
        sku_id: sku("sku_id"),
        pay_amount: amount("pay_amount"),
        original_amount: amount("original_amount"),
        coupon_pay_amount: amount("coupon_pay_amount"),
        merchant_ticket_amount: amount("merchant_ticket_amount"),
        poi_id: verify("poi_id"),
        verify_id: verify("verify_id"),
        origin,
        fetched_at: fetched_at.to_string(),
    }
}

/// A string or number field, `None` when absent, empty or `0` (Douyin's "none").
fn nonempty(v: Option<&Value>) -> Option<String> {
    text(v).filter(|s| !s.is_empty() && s != "0")
}

/// Fen as yuan with two decimals, for a person: `9900` → `99.00`, `-5` → `-0.05`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let f = fen.unsigned_abs();
    format!("{sign}{}.{:02}", f / 100, f % 100)
}

/// `--poi-names ID=NAME,...`: the store's name for a poi id, else the id itself.
pub fn store_name<'a>(poi_id: &'a str, names: &'a [(String, String)]) -> &'a str {
    names
        .iter()
        .find(|(id, _)| id == poi_id)
        .map_or(poi_id, |(_, name)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "2026-12-05T00:00:00.000Z";

    fn data(json: &str) -> Map<String, Value> {
        match serde_json::from_str::<Value>(json).unwrap() {
            Value::Object(m) => m,
            other => panic!("{other}"),
        }
    }

    fn found(a: Result<Answer, String>) -> Details {
        match a {
            Ok(Answer::Found(d)) => *d,
            other => panic!("{other:?}"),
        }
    }

    /// The documented shape: `certificates`, amounts in fen, `sku`, `verify` with a
    /// 19-digit `poi_id` as a JSON number; two coupons of one order.
    const ANSWER: &str = r#"{"certificates":[
        {"certificate_id":"7001","encrypted_code":"E1",
         "amount":{"original_amount":12800,"pay_amount":9900,"coupon_pay_amount":9900,
                   "merchant_ticket_amount":0,"list_market_amount":12800},
         "sku":{"sku_id":"1800000000000000001","title":"双人套餐","groupon_type":1},
         "verify":{"verify_id":"V1","certificate_id":"7001","verify_time":1700000000,
                   "poi_id":7100000000000000123}},
        {"certificate_id":"7002","amount":{"pay_amount":100},"sku":{"title":"其他"},
         "verify":{"verify_id":"V2","poi_id":"1"}}],
      "error_code":0,"description":""}"#;

    #[test]
    fn the_coupons_own_entry_is_chosen_by_certificate_id() {
        let d = found(from_answer(&data(ANSWER), "7001", AT));
        assert_eq!(
            d,
            Details {
                certificate_id: "7001".into(),
                title: Some("双人套餐".into()),
                sku_id: Some("1800000000000000001".into()),
                pay_amount: Some(9900),
                original_amount: Some(12800),
                coupon_pay_amount: Some(9900),
                merchant_ticket_amount: Some(0),
                poi_id: Some("7100000000000000123".into()),
                verify_id: Some("V1".into()),
                origin: DetailsOrigin::Query,
                fetched_at: AT.into(),
            }
        );
        let other = found(from_answer(&data(ANSWER), "7002", AT));
        assert_eq!(
            (
                other.title.as_deref(),
                other.pay_amount,
                other.original_amount
            ),
            (Some("其他"), Some(100), None)
        );
    }

    #[test]
    fn answers_without_the_coupon_are_final_and_malformed_ones_say_why() {
        for (json, certificate_id) in [
            (ANSWER, "7003"),
            (r#"{"certificates":[],"error_code":0}"#, "7001"),
            (r#"{"certificates":null,"error_code":0}"#, "7001"),
            (r#"{"error_code":0}"#, "7001"),
            (r#"{"certificates":[{"amount":{"pay_amount":1}}]}"#, "7001"),
        ] {
            assert_eq!(
                from_answer(&data(json), certificate_id, AT),
                Ok(Answer::Absent),
                "{json}"
            );
        }
        for json in [r#"{"certificates":{}}"#, r#"{"certificates":"x"}"#] {
            assert!(from_answer(&data(json), "7001", AT).is_err(), "{json}");
        }
    }

    #[test]
    fn certificates_v2_gives_the_id_as_a_number_and_amounts_may_be_strings() {
        let json = r#"{"certificates_v2":[
            {"certificate_id":7001234567890123456,
             "amount":{"pay_amount":"9900","original_amount":9900},
             "sku":{"sku_id":1800000000000000001,"title":"单人餐"},
             "verify":{"verify_id":"V9","poi_id":"7100000000000000999"}}],
            "error_code":0}"#;
        let d = found(from_answer(&data(json), "7001234567890123456", AT));
        assert_eq!(d.sku_id.as_deref(), Some("1800000000000000001"));
        assert_eq!((d.pay_amount, d.original_amount), (Some(9900), Some(9900)));
        assert_eq!(d.poi_id.as_deref(), Some("7100000000000000999"));
        // Found by `verify.certificate_id` when the top has none.
        let json = r#"{"certificates":[{"verify":{"certificate_id":5,"poi_id":0},"sku":{}}]}"#;
        let d = found(from_answer(&data(json), "5", AT));
        assert_eq!((d.poi_id, d.title, d.pay_amount), (None, None, None));
    }

    #[test]
    fn odd_fields_become_none_never_a_guess() {
        let json = r#"{"certificates":[{"certificate_id":"1",
            "amount":{"pay_amount":99.5,"original_amount":null,"coupon_pay_amount":"x"},
            "sku":{"title":"","sku_id":{}},"verify":[]}]}"#;
        let d = found(from_answer(&data(json), "1", AT));
        assert_eq!(
            (d.pay_amount, d.original_amount, d.coupon_pay_amount),
            (None, None, None)
        );
        assert_eq!((d.title, d.sku_id, d.verify_id), (None, None, None));
    }

    #[test]
    fn a_record_with_amount_and_sku_gives_details_and_one_without_gives_none() {
        let record: Value = serde_json::from_str(
            r#"{"cursor":"1","verify_id":"V7","certificate_id":"7001","verify_time":5,
                "status":1,"poi_id":7100000000000000123,
                "amount":{"pay_amount":9900,"original_amount":12800},
                "sku":{"sku_id":"S1","title":"双人套餐"}}"#,
        )
        .unwrap();
        let d = from_record(&record, "7001", AT).unwrap();
        assert_eq!(d.origin, DetailsOrigin::Record);
        assert_eq!(d.poi_id.as_deref(), Some("7100000000000000123"));
        assert_eq!(d.verify_id.as_deref(), Some("V7"));
        assert_eq!(
            (d.pay_amount, d.title.as_deref()),
            (Some(9900), Some("双人套餐"))
        );
        let bare: Value =
            serde_json::from_str(r#"{"verify_id":"V7","amount":{"pay_amount":1}}"#).unwrap();
        assert_eq!(from_record(&bare, "7001", AT), None);
    }

    #[test]
    fn fen_read_as_yuan_with_two_decimals() {
        for (fen, want) in [
            (9900, "99.00"),
            (12800, "128.00"),
            (5, "0.05"),
            (0, "0.00"),
            (100_001, "1000.01"),
            (-250, "-2.50"),
            (i64::MIN, "-92233720368547758.08"),
        ] {
            assert_eq!(yuan(fen), want);
        }
    }

    #[test]
    fn store_names_come_from_poi_names_else_the_id() {
        let names = vec![("71".to_string(), "望京店".to_string())];
        assert_eq!(store_name("71", &names), "望京店");
        assert_eq!(store_name("72", &names), "72");
    }
}
