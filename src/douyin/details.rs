//! The certificate query (SPEC §13): `GET /goodlife/v1/fulfilment/certificate/query/`
//! by `order_id` (and `account_id`, which Douyin asks chains for), with the one token
//! of [`Douyin`]; the answer's envelope is checked here and its content read by the
//! pure [`crate::details::from_answer`].

use super::{data, encode, Douyin};
use crate::details::{self, Answer};

const CERTIFICATE_PATH: &str = "/goodlife/v1/fulfilment/certificate/query/";

impl Douyin {
    /// What was bought with coupon `certificate_id` of order `order_id`; the error is a
    /// log line (never a secret or token).
    pub async fn certificate(
        &self,
        order_id: &str,
        account_id: &str,
        certificate_id: &str,
    ) -> Result<Answer, String> {
        let path = format!(
            "{CERTIFICATE_PATH}?order_id={}&account_id={}",
            encode(order_id),
            encode(account_id)
        );
        let data = self.get("certificate query", &path, data).await?;
        details::from_answer(&data, certificate_id, &crate::time::now_rfc3339()).map_err(|why| {
            format!(
                "certificate query at {}: unexpected answer: {why}",
                self.url()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::douyin::ApiError;

    /// An answer as [`Douyin::certificate`] reads it: the envelope, then the content.
    fn parse_certificates(body: &[u8], certificate_id: &str, at: &str) -> Result<Answer, ApiError> {
        details::from_answer(&data(body)?, certificate_id, at).map_err(ApiError::Garbage)
    }

    #[test]
    fn certificate_answers_go_through_the_envelope() {
        let ok = br#"{"data":{"certificates":[{"certificate_id":"c1","amount":{"pay_amount":9900},
            "sku":{"title":"T"},"verify":{"poi_id":7100000000000000123}}],"error_code":0,
            "description":""},"extra":{"logid":"L"}}"#;
        match parse_certificates(ok, "c1", "now").unwrap() {
            Answer::Found(d) => {
                assert_eq!(d.poi_id.as_deref(), Some("7100000000000000123"));
                assert_eq!(d.pay_amount, Some(9900));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_certificates(ok, "c2", "now").unwrap(), Answer::Absent);
        let refused = br#"{"data":{"error_code":2119001,"description":"no permission"}}"#;
        assert!(matches!(
            parse_certificates(refused, "c1", "now"),
            Err(ApiError::Douyin { code: 2119001, .. })
        ));
        let expired = br#"{"data":{"error_code":28001003,"description":"invalid"}}"#;
        assert!(parse_certificates(expired, "c1", "now")
            .unwrap_err()
            .token_invalid());
        for garbage in [&b"<html>"[..], br#"{"data":{"certificates":7}}"#] {
            assert!(matches!(
                parse_certificates(garbage, "c1", "now"),
                Err(ApiError::Garbage(_))
            ));
        }
    }
}
