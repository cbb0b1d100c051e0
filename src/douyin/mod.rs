//! A client for Douyin Open Platform: the *stable* client token, the verify-record
//! query (SPEC §11, catch-up) and the certificate query (SPEC §13, the details lookup,
//! in `details`). [`Douyin`] (in `token`) is what callers use: it owns the token, its
//! refresh and the secrets; [`Client`] below is the bare connection it drives.
//!
//! - HTTP/1.1 with hyper's client over TCP, or over TLS with [`crate::tls`]'s one
//!   configuration; one connection is kept between calls, so a sweep of many pages pays
//!   for one handshake.
//! - Every call has a time limit ([`CALL_TIMEOUT`]) covering connect, TLS, request and
//!   the whole answer, and answers are read up to [`MAX_ANSWER`] bytes.
//! - Douyin's error envelope (`data.error_code`, `data.description`) becomes
//!   [`ApiError::Douyin`]; an expired or invalid token is recognisable
//!   ([`ApiError::token_invalid`]) so the caller can fetch a new one once.
//! - Secrets and tokens travel in request bodies and headers only: no error message or
//!   `Debug` output of this module contains either.
//!
//! The answer parsers are pure functions, tested below on the documented shapes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::wire::{integer, text};

mod details;
mod token;
pub use token::{Douyin, TOKEN_MARGIN};

/// The longest one call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a page of 20 records is a few KiB).
pub const MAX_ANSWER: usize = 1 << 20;
/// Records per page: the API's maximum.
pub const PAGE_SIZE: usize = 20;

const TOKEN_PATH: &str = "/oauth/stable_client_token/";
const QUERY_PATH: &str = "/goodlife/v1/fulfilment/certificate/verify_record/query/";
/// `error_code`s that mean "the access token is invalid or expired".
const TOKEN_INVALID: [i64; 2] = [28_001_003, 28_001_008];

/// `--douyin-api`: where the Open Platform is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path before the API's own paths, without a trailing `/` (usually empty).
    pub prefix: String,
}

impl ApiUrl {
    /// `https://HOST[:PORT][/PREFIX]`, or `http://` for a local test server.
    pub fn parse(s: &str) -> Result<ApiUrl, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("want https://HOST[:PORT] (or http:// for a test server)".into());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            return Err("want https://HOST[:PORT]".into());
        }
        Ok(ApiUrl {
            https,
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.prefix)
    }
}

/// Why a call failed. The `Display` form is a log line's reason: never a secret or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No answer within [`CALL_TIMEOUT`].
    Timeout,
    /// No connection (refused, no route, DNS, TLS handshake, connection lost).
    Network(String),
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not the documented envelope.
    Garbage(String),
    /// Douyin's own error: `data.error_code` and `data.description`.
    Douyin { code: i64, description: String },
}

impl ApiError {
    /// The token is invalid or expired: fetch a new one and try once more.
    pub fn token_invalid(&self) -> bool {
        match self {
            ApiError::Status(401) => true,
            ApiError::Douyin { code, .. } => TOKEN_INVALID.contains(code),
            _ => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Timeout => write!(f, "no answer within {}s", CALL_TIMEOUT.as_secs()),
            ApiError::Network(e) => f.write_str(e),
            ApiError::Status(s) => write!(f, "HTTP {s}"),
            ApiError::Garbage(why) => write!(f, "unexpected answer: {why}"),
            ApiError::Douyin { code, description } => {
                write!(f, "Douyin error_code {code}: {description}")
            }
        }
    }
}

/// An access token and its lifetime. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub expires_in: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(expires in {:?})", self.expires_in)
    }
}

/// One verify record, with the fields catch-up uses and the record itself (`raw`).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub cursor: String,
    pub verify_id: String,
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub verify_time: i64,
    /// 1 verified, 2 cancelled.
    pub status: i64,
    pub cancel_time: Option<i64>,
    /// The record as Douyin sent it, compact JSON.
    pub raw: String,
}

/// One page of the verify-record query.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Record>,
    /// Items that are not a readable record: (the item, why), for a `rejected` row.
    pub bad: Vec<(String, String)>,
    /// How many items were read: at most [`PAGE_SIZE`], whatever the page held.
    pub items: usize,
    /// The cursor of the last item read that has one (a bad item may).
    pub last_cursor: Option<String>,
    /// Douyin's `total`: a hint at most (a page is full or it is not).
    pub total: Option<i64>,
}

/// What to ask the verify-record query for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub account_id: &'a str,
    pub poi_ids: &'a [String],
    pub start_time: i64,
    pub end_time: i64,
    pub cursor: &'a str,
}

impl Query<'_> {
    /// The query string, parameters in the documented order.
    pub fn query_string(&self) -> String {
        let mut q = format!(
            "account_id={}&cursor={}&size={PAGE_SIZE}&start_time={}&end_time={}",
            encode(self.account_id),
            encode(self.cursor),
            self.start_time,
            self.end_time
        );
        if !self.poi_ids.is_empty() {
            q += &format!("&poi_ids={}", encode(&self.poi_ids.join(",")));
        }
        q
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters and the comma.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// `data` of Douyin's envelope, after checking `data.error_code`.
pub(crate) fn data(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::Garbage(format!("not JSON ({} bytes)", body.len())))?;
    let Some(Value::Object(data)) = v.get("data") else {
        return Err(ApiError::Garbage("no \"data\" object".into()));
    };
    let code = data.get("error_code").and_then(integer).unwrap_or(0);
    if code != 0 {
        let description = text(data.get("description")).unwrap_or_default();
        return Err(ApiError::Douyin {
            code,
            description: description.chars().take(200).collect(),
        });
    }
    Ok(data.clone())
}

/// Parses the stable token answer.
pub fn parse_token(body: &[u8]) -> Result<Token, ApiError> {
    let data = data(body)?;
    let access_token = text(data.get("access_token"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Garbage("no data.access_token".into()))?;
    let expires_in = data
        .get("expires_in")
        .and_then(integer)
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::Garbage("no data.expires_in".into()))?;
    Ok(Token {
        access_token,
        expires_in: Duration::from_secs(expires_in as u64),
    })
}

/// Parses one page of the verify-record query (`records`, else `records_v2`). Only the
/// first [`PAGE_SIZE`] items are read (what was asked for); an item that is not a
/// readable record is kept apart ([`Page::bad`]), so one broken record never costs the
/// good ones beside it.
pub fn parse_page(body: &[u8]) -> Result<Page, ApiError> {
    let data = data(body)?;
    let list = match data.get("records").filter(|v| !v.is_null()) {
        Some(v) => v,
        None => data.get("records_v2").unwrap_or(&Value::Null),
    };
    let items: &[Value] = match list {
        Value::Array(items) => &items[..items.len().min(PAGE_SIZE)],
        Value::Null => &[],
        _ => return Err(ApiError::Garbage("data.records is not a list".into())),
    };
    let mut page = Page {
        records: Vec::with_capacity(items.len()),
        bad: Vec::new(),
        items: items.len(),
        last_cursor: None,
        total: data.get("total").and_then(integer),
    };
    for item in items {
        if let Some(c) = text(item.get("cursor")).filter(|c| !c.is_empty()) {
            page.last_cursor = Some(c);
        }
        match record(item) {
            Ok(r) => page.records.push(r),
            Err(why) => page.bad.push((item.to_string(), why.to_string())),
        }
    }
    Ok(page)
}

fn record(r: &Value) -> Result<Record, String> {
    let field = |name: &str| text(r.get(name)).filter(|s| !s.is_empty());
    let time = |name: &str| r.get(name).and_then(integer).filter(|t| *t > 0);
    Ok(Record {
        cursor: field("cursor").ok_or("no cursor")?,
        verify_id: field("verify_id").ok_or("no verify_id")?,
        certificate_id: field("certificate_id").ok_or("no certificate_id")?,
        order_id: field("order_id"),
        verify_time: time("verify_time").ok_or("no verify_time")?,
        status: r.get("status").and_then(integer).ok_or("no status")?,
        cancel_time: time("cancel_time"),
        raw: r.to_string(),
    })
}

/// The client: where the API is, the TLS set-up, and the connection kept between calls.
pub struct Client {
    url: ApiUrl,
    tls: Option<TlsConnector>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// `tls` is used for an `https://` URL (see [`crate::tls::client_config`]).
    pub fn new(url: ApiUrl, tls: Option<Arc<rustls::ClientConfig>>) -> Client {
        Client {
            url,
            tls: tls.map(TlsConnector::from),
            conn: None,
        }
    }

    pub fn url(&self) -> &ApiUrl {
        &self.url
    }

    /// `POST /oauth/stable_client_token/`.
    pub async fn stable_token(
        &mut self,
        client_key: &str,
        secret: &str,
    ) -> Result<Token, ApiError> {
        let body = json!({
            "client_key": client_key,
            "client_secret": secret,
            "grant_type": "client_credential",
        })
        .to_string();
        let answer = self
            .call("POST", TOKEN_PATH.to_string(), None, body)
            .await?;
        parse_token(&answer)
    }

    /// One request within [`CALL_TIMEOUT`]; on a kept connection that turns out closed,
    /// once more on a new one (both calls are safe to repeat).
    async fn call(
        &mut self,
        method: &str,
        path: String,
        token: Option<&str>,
        body: String,
    ) -> Result<Vec<u8>, ApiError> {
        let attempt = async {
            let reused = self.conn.is_some();
            match self.request(method, &path, token, &body).await {
                Err(ApiError::Network(_)) if reused => {
                    self.request(method, &path, token, &body).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(ApiError::Timeout)
            }
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| ApiError::Network(format!("connection lost: {e}")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header("host", self.host_header())
            .header("user-agent", concat!("coupond/", env!("CARGO_PKG_VERSION")))
            .header("accept", "application/json");
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = token {
            req = req.header("access-token", t);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ApiError::Network("cannot build the request".into()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::Network(format!("request failed: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ApiError::Network(format!("answer broken off: {e}")))?
            .to_bytes();
        // Kept for the next call only after a complete answer.
        self.conn = Some(sender);
        if status != 200 {
            return Err(ApiError::Status(status));
        }
        Ok(bytes.to_vec())
    }

    fn host_header(&self) -> String {
        let default = if self.url.https { 443 } else { 80 };
        match (self.url.host.contains(':'), self.url.port == default) {
            (true, true) => format!("[{}]", self.url.host),
            (true, false) => format!("[{}]:{}", self.url.host, self.url.port),
            (false, true) => self.url.host.clone(),
            (false, false) => format!("{}:{}", self.url.host, self.url.port),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let (host, port) = (self.url.host.as_str(), self.url.port);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| ApiError::Network(format!("cannot connect to {}: {e}", self.url)))?;
        let _ = tcp.set_nodelay(true);
        let handshake_failed =
            |e: hyper::Error| ApiError::Network(format!("HTTP set-up failed: {e}"));
        match &self.tls {
            Some(tls) if self.url.https => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| ApiError::Network(format!("{host:?} is not a valid TLS name")))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ApiError::Network(format!("TLS with {} failed: {e}", self.url)))?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(conn);
                Ok(sender)
            }
            None if self.url.https => Err(ApiError::Network("no TLS configuration".into())),
            _ => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        let u = ApiUrl::parse("https://open.douyin.com").unwrap();
        assert_eq!(
            u,
            ApiUrl {
                https: true,
                host: "open.douyin.com".into(),
                port: 443,
                prefix: String::new()
            }
        );
        let u = ApiUrl::parse("http://127.0.0.1:9000/fake/").unwrap();
        assert_eq!((u.https, u.port, u.prefix.as_str()), (false, 9000, "/fake"));
        assert_eq!(ApiUrl::parse("https://[::1]:8443").unwrap().host, "::1");
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/fake");
        for bad in [
            "open.douyin.com",
            "ftp://x",
            "https://",
            "https://a:b",
            "https://u@h",
        ] {
            assert!(ApiUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_strings_carry_every_parameter() {
        let pois = vec!["7001".to_string(), "7002".to_string()];
        let q = Query {
            account_id: "6900",
            poi_ids: &pois,
            start_time: 100,
            end_time: 200,
            cursor: "0",
        };
        assert_eq!(
            q.query_string(),
            "account_id=6900&cursor=0&size=20&start_time=100&end_time=200&poi_ids=7001,7002"
        );
        let q = Query {
            poi_ids: &[],
            cursor: "a b&c",
            ..q
        };
        assert!(q.query_string().contains("cursor=a%20b%26c"));
        assert!(!q.query_string().contains("poi_ids"));
    }

    #[test]
    fn token_answers() {
        let ok = br#"{"data":{"access_token":"clt.abc","expires_in":7200,"error_code":0,"description":""},"message":"success"}"#;
        let t = parse_token(ok).unwrap();
        assert_eq!(t.access_token, "clt.abc");
        assert_eq!(t.expires_in, Duration::from_secs(7200));
        assert!(!format!("{t:?}").contains("clt.abc"));
        let bad = br#"{"data":{"error_code":10003,"description":"client_secret invalid"},"message":"error"}"#;
        assert_eq!(
            parse_token(bad),
            Err(ApiError::Douyin {
                code: 10003,
                description: "client_secret invalid".into()
            })
        );
        for garbage in [
            &b"<html>"[..],
            b"{}",
            br#"{"data":{"error_code":0}}"#,
            b"[1]",
        ] {
            assert!(
                matches!(parse_token(garbage), Err(ApiError::Garbage(_))),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn pages_read_records_or_records_v2_and_lenient_numbers() {
        let body = br#"{"data":{"records":[
            {"cursor":"11","verify_id":"v1","certificate_id":7001234567890123456,"verify_type":1,
             "verify_time":1700000000,"can_cancel":true,"status":1,"cancel_time":0,"encrypted_code":"x"},
            {"cursor":12,"verify_id":"v2","certificate_id":"c2","order_id":"o2","verify_time":"1700000100",
             "status":2,"cancel_time":1700000200}],
            "total":2,"error_code":0,"description":""},"extra":{"logid":"L"}}"#;
        let p = parse_page(body).unwrap();
        assert_eq!(p.total, Some(2));
        assert_eq!(p.records.len(), 2);
        let (a, b) = (&p.records[0], &p.records[1]);
        assert_eq!(
            (a.cursor.as_str(), a.certificate_id.as_str(), a.cancel_time),
            ("11", "7001234567890123456", None)
        );
        assert!(a.raw.contains("\"encrypted_code\":\"x\""));
        assert_eq!(
            (b.cursor.as_str(), b.status, b.verify_time, b.cancel_time),
            ("12", 2, 1_700_000_100, Some(1_700_000_200))
        );
        let v2 = br#"{"data":{"records_v2":[{"cursor":"1","verify_id":"v","certificate_id":"c","verify_time":5,"status":1}],"total":1,"error_code":0}}"#;
        assert_eq!(parse_page(v2).unwrap().records[0].verify_id, "v");
        let empty = br#"{"data":{"records":null,"total":0,"error_code":0,"description":""}}"#;
        assert!(parse_page(empty).unwrap().records.is_empty());
    }

    #[test]
    fn a_bad_record_is_kept_apart_and_only_the_asked_page_size_is_read() {
        let good = |c: usize| {
            format!(
                r#"{{"cursor":"{c}","verify_id":"v{c}","certificate_id":"c{c}","verify_time":1700000000,"status":1}}"#
            )
        };
        for bad_time in ["0", "-5", "1.5", "null"] {
            let body = format!(
                r#"{{"data":{{"records":[{},{{"cursor":"2","verify_id":"v2","certificate_id":"c2","verify_time":{bad_time},"status":1}},{}],"error_code":0}}}}"#,
                good(1),
                good(3)
            );
            let p = parse_page(body.as_bytes()).unwrap();
            assert_eq!(p.records.len(), 2, "{bad_time}");
            assert_eq!(p.bad.len(), 1);
            assert_eq!(p.bad[0].1, "no verify_time");
            assert_eq!((p.items, p.last_cursor.as_deref()), (3, Some("3")));
        }
        let many: Vec<String> = (1..=10_000).map(good).collect();
        let body = format!(
            r#"{{"data":{{"records":[{}],"total":1000000000000,"error_code":0}}}}"#,
            many.join(",")
        );
        let p = parse_page(body.as_bytes()).unwrap();
        assert_eq!((p.records.len(), p.items), (PAGE_SIZE, PAGE_SIZE));
        assert_eq!(p.last_cursor.as_deref(), Some("20"));
    }

    #[test]
    fn errors_say_what_and_recognise_an_expired_token() {
        let expired = br#"{"data":{"error_code":28001008,"description":"access_token expired"}}"#;
        let e = parse_page(expired).unwrap_err();
        assert!(e.token_invalid());
        assert_eq!(
            e.to_string(),
            "Douyin error_code 28001008: access_token expired"
        );
        assert!(ApiError::Status(401).token_invalid());
        assert!(!ApiError::Status(500).token_invalid());
        let not_list = br#"{"data":{"records":{},"error_code":0}}"#;
        assert!(matches!(parse_page(not_list), Err(ApiError::Garbage(_))));
    }
}
