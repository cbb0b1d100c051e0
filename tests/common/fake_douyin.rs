//! A local fake of the Douyin Open Platform calls coupond makes, written from the
//! documented shapes: `POST /oauth/stable_client_token/` and `GET
//! /goodlife/v1/fulfilment/certificate/verify_record/query/` (SPEC §11: token envelope,
//! `records` or `records_v2`, `cursor`, `total`, `error_code`), and `GET
//! /goodlife/v1/fulfilment/certificate/query/` (SPEC §13: `certificates` or
//! `certificates_v2`, `amount` in fen, `sku`, `verify` with `poi_id` as a JSON number).
//! Plain HTTP or HTTPS (a certificate from a test CA made in the test), keep-alive, one
//! thread per connection, 127.0.0.1 only. Tests switch it into failure modes (down, slow,
//! garbage, HTTP 500, an expired token), for every call or for the certificate query
//! alone, and read what it was asked.
//!
//! Also used by `examples/bench.rs` (through `#[path]`), so it depends on nothing else in
//! `tests/common`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

pub const TOKEN_PATH: &str = "/oauth/stable_client_token/";
pub const QUERY_PATH: &str = "/goodlife/v1/fulfilment/certificate/verify_record/query/";
pub const CERTIFICATE_PATH: &str = "/goodlife/v1/fulfilment/certificate/query/";

/// How the fake answers queries (the token call too, for `Slow`, `Garbage`, `Http500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Sleeps this long before answering.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
    /// HTTP 500.
    Http500,
    /// Closes the connection without an answer.
    Down,
}

/// What was bought with one coupon: the fake's `certificate/query` answer for it (and,
/// with [`FakeRecord::with_details`], its verify record's `amount` and `sku`).
#[derive(Debug, Clone)]
pub struct FakeDeal {
    pub certificate_id: String,
    pub order_id: String,
    pub title: String,
    pub sku_id: String,
    /// Fen.
    pub pay_amount: i64,
    pub original_amount: i64,
    /// Written into the answer as a bare JSON number (19 digits, as Douyin does).
    pub poi_id: String,
}

impl FakeDeal {
    pub fn new(
        certificate_id: &str,
        order_id: &str,
        title: &str,
        pay: i64,
        original: i64,
    ) -> FakeDeal {
        FakeDeal {
            certificate_id: certificate_id.into(),
            order_id: order_id.into(),
            title: title.into(),
            sku_id: format!("1800{certificate_id}"),
            pay_amount: pay,
            original_amount: original,
            poi_id: POI_19.into(),
        }
    }

    fn amount(&self) -> Value {
        json!({"original_amount": self.original_amount, "pay_amount": self.pay_amount,
               "coupon_pay_amount": self.pay_amount, "merchant_ticket_amount": 0,
               "list_market_amount": self.original_amount})
    }

    fn sku(&self) -> Value {
        json!({"sku_id": self.sku_id, "title": self.title, "groupon_type": 1,
               "account_id": ACCOUNT})
    }

    /// One entry of `certificates` (`certificates_v2` gives the id as a number).
    fn entry(&self, v2: bool) -> Value {
        let poi = poi_number(&self.poi_id);
        let id = if v2 {
            poi_number(&self.certificate_id)
        } else {
            Value::String(self.certificate_id.clone())
        };
        json!({
            "certificate_id": id,
            "encrypted_code": "ENC(secret-code)",
            "amount": self.amount(),
            "sku": self.sku(),
            "verify": {"verify_id": format!("V-{}", self.certificate_id),
                       "certificate_id": self.certificate_id,
                       "verify_time": 1_700_000_000, "poi_id": poi},
        })
    }
}

/// A run of digits as a bare JSON number with exactly those digits (serde_json's
/// `arbitrary_precision` is on, as in the daemon); anything else as a string.
fn poi_number(digits: &str) -> Value {
    match serde_json::from_str::<Value>(digits) {
        Ok(n @ Value::Number(_)) if digits.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => Value::String(digits.into()),
    }
}

/// A verify record as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakeRecord {
    pub verify_id: String,
    pub certificate_id: String,
    pub order_id: String,
    pub account_id: String,
    pub poi_id: String,
    pub verify_time: i64,
    /// 1 verified, 2 cancelled.
    pub status: i64,
    pub cancel_time: i64,
    /// `amount` and `sku` carried in the record itself.
    pub deal: Option<FakeDeal>,
}

impl FakeRecord {
    pub fn verified(certificate_id: &str, verify_time: i64) -> FakeRecord {
        FakeRecord {
            verify_id: format!("V-{certificate_id}-{verify_time}"),
            certificate_id: certificate_id.to_string(),
            order_id: format!("O-{certificate_id}"),
            account_id: ACCOUNT.to_string(),
            poi_id: POI.to_string(),
            verify_time,
            status: 1,
            cancel_time: 0,
            deal: None,
        }
    }

    /// The record carries `amount` and `sku` (and `poi_id` as a number), as some do.
    pub fn with_details(mut self, deal: FakeDeal) -> FakeRecord {
        self.order_id = deal.order_id.clone();
        self.poi_id = deal.poi_id.clone();
        self.deal = Some(deal);
        self
    }

    pub fn cancelled(mut self, cancel_time: i64) -> FakeRecord {
        self.status = 2;
        self.cancel_time = cancel_time;
        self
    }

    pub fn at_poi(mut self, poi: &str) -> FakeRecord {
        self.poi_id = poi.to_string();
        self
    }
}

pub const ACCOUNT: &str = "6900000000001";
pub const POI: &str = "7100000000001";
pub const TOKEN_PREFIX: &str = "clt.fake-token-";
/// A store id as Douyin gives it: 19 digits, beyond a float's precision.
pub const POI_19: &str = "7100000000000000123";

/// What the fake holds and how it behaves; shared with its threads.
pub struct State {
    pub client_key: String,
    pub secret: String,
    pub records: Vec<FakeRecord>,
    pub mode: Mode,
    /// Answer `records_v2` instead of `records`.
    pub records_v2: bool,
    /// Leave `total` out of the answers.
    pub no_total: bool,
    /// Answer the next this-many queries with `error_code` 28001008 (token expired).
    pub expire_next: u32,
    /// Tokens handed out so far (each a new one).
    pub tokens_issued: u32,
    /// Items put into the first page of every query (cursor 0) after its first record,
    /// as they are: hostile or broken records.
    pub inject: Vec<Value>,
    /// Answer every matching record at once, whatever `size` asked for.
    pub ignore_size: bool,
    /// Say this `total` instead of the true one.
    pub total_override: Option<i64>,
    /// The tokens' `expires_in` (7200 unless set).
    pub expires_in: i64,
    /// Every query's parameters, in order.
    pub queries: Vec<Vec<(String, String)>>,
    /// What `certificate/query` knows, by order.
    pub deals: Vec<FakeDeal>,
    /// Deals made up for an order `deals` does not hold (the benchmark's pushes).
    pub deals_for: Option<fn(&str) -> Vec<FakeDeal>>,
    /// How `certificate/query` alone answers (after `mode`).
    pub details_mode: Mode,
    /// Answer `certificates_v2` instead of `certificates`.
    pub certificates_v2: bool,
    /// Every `certificate/query`'s parameters, in order.
    pub certificate_queries: Vec<Vec<(String, String)>>,
    /// Requests by path (any method), in order.
    pub requests: Vec<String>,
}

pub struct FakeDouyin {
    pub port: u16,
    pub https: bool,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// A TLS server configuration for the fake (certificate chain and key, DER).
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// A test CA made here and a server certificate for `names` (host names or IP
    /// addresses) signed by it; returns the server's TLS set-up and the CA as PEM, for
    /// `--douyin-ca`.
    pub fn test_ca(names: &[&str]) -> (Tls, String) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "coupond test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        (
            Tls {
                config: Arc::new(config),
            },
            ca.pem(),
        )
    }
}

impl FakeDouyin {
    /// A fake over plain HTTP on 127.0.0.1.
    pub fn start(client_key: &str, secret: &str) -> FakeDouyin {
        FakeDouyin::start_with(client_key, secret, None)
    }

    pub fn start_with(client_key: &str, secret: &str, tls: Option<Tls>) -> FakeDouyin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            client_key: client_key.into(),
            secret: secret.into(),
            records: Vec::new(),
            mode: Mode::Normal,
            records_v2: false,
            no_total: false,
            expire_next: 0,
            tokens_issued: 0,
            inject: Vec::new(),
            ignore_size: false,
            total_override: None,
            expires_in: 0,
            queries: Vec::new(),
            deals: Vec::new(),
            deals_for: None,
            details_mode: Mode::Normal,
            certificates_v2: false,
            certificate_queries: Vec::new(),
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let https = tls.is_some();
        let tls = tls.map(|t| t.config);
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (st, tls) = (st.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                    match tls {
                        Some(cfg) => {
                            let Ok(server) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(server, conn), &st);
                        }
                        None => serve(conn, &st),
                    }
                });
            }
        });
        FakeDouyin {
            port,
            https,
            state,
            stop,
        }
    }

    /// `--douyin-api` for this fake.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, r: FakeRecord) {
        self.state.lock().unwrap().records.push(r);
    }

    pub fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = m;
    }

    /// `certificate/query` answers this deal (by its order).
    pub fn sell(&self, deal: FakeDeal) {
        self.state.lock().unwrap().deals.push(deal);
    }

    /// How `certificate/query` answers, whatever the other calls do.
    pub fn set_details_mode(&self, m: Mode) {
        self.state.lock().unwrap().details_mode = m;
    }

    /// `certificate/query`s asked so far.
    pub fn certificate_queries(&self) -> usize {
        self.state.lock().unwrap().certificate_queries.len()
    }

    pub fn tokens_issued(&self) -> u32 {
        self.state.lock().unwrap().tokens_issued
    }

    pub fn queries(&self) -> Vec<Vec<(String, String)>> {
        self.state.lock().unwrap().queries.clone()
    }

    /// Tokens it has handed out, to look for in logs and files.
    pub fn tokens(&self) -> Vec<String> {
        (1..=self.tokens_issued())
            .map(|n| format!("{TOKEN_PREFIX}{n}"))
            .collect()
    }
}

impl Drop for FakeDouyin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Keep-alive request loop on one connection.
fn serve<S: Read + Write>(stream: S, state: &Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head += &line;
        }
        let mut lines = head.lines();
        let first = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = first.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let token = header("access-token");
        let req = Req {
            method,
            path,
            query,
            token: token.as_deref(),
            body: &body,
        };
        let Some((status, answer)) = answer(state, &req) else {
            return; // Mode::Down: the connection closes unanswered.
        };
        let out = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        let w = reader.get_mut();
        if w.write_all(out.as_bytes()).is_err()
            || w.write_all(answer.as_bytes()).is_err()
            || w.flush().is_err()
        {
            return;
        }
    }
}

fn error(code: i64, description: &str) -> String {
    json!({"data": {"error_code": code, "description": description}, "extra": {"logid": "FAKE"}})
        .to_string()
}

/// One request as the fake reads it.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    token: Option<&'a str>,
    body: &'a [u8],
}

/// The answer to one request, `None` for none at all ([`Mode::Down`]).
fn answer(state: &Arc<Mutex<State>>, req: &Req) -> Option<(u16, String)> {
    let Req {
        method,
        path,
        query,
        ..
    } = *req;
    let modes = {
        let mut s = state.lock().unwrap();
        s.requests.push(format!("{method} {path}"));
        if path == CERTIFICATE_PATH {
            s.certificate_queries.push(params(query));
            [s.mode, s.details_mode]
        } else {
            [s.mode, Mode::Normal]
        }
    };
    for mode in modes {
        match mode {
            Mode::Normal => {}
            Mode::Slow(d) => std::thread::sleep(d),
            Mode::Garbage => return Some((200, "<html>upstream busy</html>".into())),
            Mode::Http500 => return Some((500, "{}".into())),
            Mode::Down => return None,
        }
    }
    Some(documented(state, req))
}

fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), unescape(v)))
        .collect()
}

/// The documented answer, as Douyin would give it.
fn documented(state: &Arc<Mutex<State>>, req: &Req) -> (u16, String) {
    let Req {
        method,
        path,
        query,
        token,
        body,
    } = *req;
    let mut s = state.lock().unwrap();
    match (method, path) {
        ("POST", TOKEN_PATH) => {
            let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if req["client_key"] != s.client_key.as_str()
                || req["grant_type"] != "client_credential"
            {
                return (200, error(10003, "client_key invalid"));
            }
            if req["client_secret"] != s.secret.as_str() {
                return (200, error(10004, "client_secret invalid"));
            }
            s.tokens_issued += 1;
            let token = format!("{TOKEN_PREFIX}{}", s.tokens_issued);
            let expires_in = if s.expires_in > 0 { s.expires_in } else { 7200 };
            (
                200,
                json!({"data": {"access_token": token, "expires_in": expires_in, "error_code": 0, "description": ""}, "message": "success"})
                    .to_string(),
            )
        }
        ("GET", CERTIFICATE_PATH) => {
            if let Some(refused) = token_refused(&mut s, token) {
                return refused;
            }
            let params = params(query);
            let Some((_, order)) = params.iter().find(|(k, _)| k == "order_id") else {
                return (200, error(2100005, "missing parameter order_id"));
            };
            let v2 = s.certificates_v2;
            let mut entries: Vec<Value> = s
                .deals
                .iter()
                .filter(|d| &d.order_id == order)
                .map(|d| d.entry(v2))
                .collect();
            if let (true, Some(made_up)) = (entries.is_empty(), s.deals_for) {
                entries = made_up(order).iter().map(|d| d.entry(v2)).collect();
            }
            let key = if v2 {
                "certificates_v2"
            } else {
                "certificates"
            };
            let mut data = json!({"error_code": 0, "description": ""});
            data[key] = Value::Array(entries);
            (
                200,
                json!({"data": data, "extra": {"logid": "FAKE"}}).to_string(),
            )
        }
        ("GET", QUERY_PATH) => {
            let params = params(query);
            s.queries.push(params.clone());
            if let Some(refused) = token_refused(&mut s, token) {
                return refused;
            }
            let p = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let num = |k: &str| p(k).and_then(|v| v.parse::<i64>().ok());
            let (Some(account), Some(start), Some(end), Some(size)) = (
                p("account_id"),
                num("start_time"),
                num("end_time"),
                num("size"),
            ) else {
                return (200, error(2100005, "missing parameter"));
            };
            if !(1..=20).contains(&size) {
                return (200, error(2100005, "size must be 1..20"));
            }
            let pois: Vec<String> = p("poi_ids")
                .map(|v| v.split(',').map(String::from).collect())
                .unwrap_or_default();
            let mut matching: Vec<(usize, &FakeRecord)> = s
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.account_id == account
                        && r.verify_time >= start
                        && r.verify_time < end
                        && (pois.is_empty() || pois.contains(&r.poi_id))
                })
                .collect();
            matching.sort_by_key(|(i, r)| (r.verify_time, *i));
            let total = matching.len();
            // The cursor is the record's position in this ordering, plus one.
            let after: usize = num("cursor").unwrap_or(0).max(0) as usize;
            let take = if s.ignore_size {
                usize::MAX
            } else {
                size as usize
            };
            let mut page: Vec<Value> = matching
                .iter()
                .enumerate()
                .skip(after)
                .take(take)
                .map(|(pos, (_, r))| {
                    let mut record = json!({
                        "cursor": (pos + 1).to_string(),
                        "verify_id": r.verify_id,
                        "certificate_id": r.certificate_id,
                        "order_id": r.order_id,
                        "encrypted_code": "ENC(secret-code)",
                        "verify_type": 1,
                        "verify_time": r.verify_time,
                        "can_cancel": r.status == 1,
                        "status": r.status,
                        "cancel_time": r.cancel_time,
                        "poi_id": poi_number(&r.poi_id),
                    });
                    if let Some(deal) = &r.deal {
                        record["amount"] = deal.amount();
                        record["sku"] = deal.sku();
                    }
                    record
                })
                .collect();
            let key = if s.records_v2 {
                "records_v2"
            } else {
                "records"
            };
            if after == 0 && !s.inject.is_empty() {
                let at = page.len().min(1);
                page.splice(at..at, s.inject.iter().cloned());
            }
            let total = s.total_override.unwrap_or(total as i64);
            let mut data = json!({"total": total, "error_code": 0, "description": ""});
            if s.no_total {
                data.as_object_mut().unwrap().remove("total");
            }
            data[key] = Value::Array(page);
            (
                200,
                json!({"data": data, "extra": {"logid": "FAKE"}}).to_string(),
            )
        }
        _ => (404, error(404, "no such path")),
    }
}

/// The answer to a query whose token is not the current one, or that is to be told it
/// expired (`expire_next`); `None`: the token is good.
fn token_refused(s: &mut State, token: Option<&str>) -> Option<(u16, String)> {
    let current = format!("{TOKEN_PREFIX}{}", s.tokens_issued);
    if token != Some(current.as_str()) {
        return Some((200, error(28001003, "access_token invalid")));
    }
    if s.expire_next > 0 {
        s.expire_next -= 1;
        return Some((200, error(28001008, "access_token expired")));
    }
    None
}

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(Some(h)), Some(Some(l))) = (
            b[i],
            b.get(i + 1).map(|c| hex(*c)),
            b.get(i + 2).map(|c| hex(*c)),
        ) {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
