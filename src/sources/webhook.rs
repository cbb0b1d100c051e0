//! The webhook endpoint: HTTP in, [`intake::classify`], the writer, HTTP out (SPEC §3).
//!
//! Invariants:
//! - a body is never read past `max_body` (a larger `Content-Length` is refused before
//!   a byte of it is read, a chunked body as soon as it crosses the limit), and never
//!   for longer than [`BODY_TIMEOUT`];
//! - a 200 is sent only after the writer reports the commit that holds the message;
//!   a failed commit is a 503, so Douyin retries;
//! - one log line per signed request: status, outcome, certificate, `log_id`, time
//!   taken. Never the secret, never the signature. A redelivery of a body stored in
//!   the last 10 minutes (Douyin's retry, or anyone's replay) is answered from memory
//!   and counted there ([`Limits::redelivery`]): no write, its line throttled. Everything else (401, 403, 404, 405,
//!   408, 413, 400) goes through [`Limits`]: at most one line per 10 s per kind, and
//!   rejected rows written at a bounded rate, the rest counted (SPEC §3);
//! - a 200 names the outcome, `{"outcome":"applied"}` (a redelivery: the first row's),
//!   so that `coupond send` can say why a test push printed nothing; the URL check's
//!   answer stays exactly `{"challenge": N}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH};
use hyper::{Method, Request, Response, StatusCode};

use crate::conns::{BodyPool, BODY_FREE};
use crate::intake::{self, Apps, Intake, Kind};
use crate::model::{Ack, Arrival, Source};
use crate::ratelimit::{Limits, Noise};
use crate::server::{closing, json, text, Body};
use crate::store;
use crate::time;
use crate::writer::Writer;

/// The longest a client may take to send its body once the headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook endpoint's configuration and its way to the database.
pub struct Webhook {
    pub path: String,
    pub max_body: usize,
    /// The apps and secrets in use; a reload (SIGHUP) replaces them.
    pub apps: tokio::sync::watch::Receiver<Arc<Apps>>,
    pub writer: Writer,
    /// What traffic that is not Douyin's may cost in log lines and writes.
    pub limits: Arc<Limits>,
    /// What request bodies may hold in memory together.
    pub bodies: BodyPool,
    /// The counter display, to show a wrong secret on, when there is one.
    pub display: Option<Arc<crate::sinks::display::Feed>>,
}

/// Answers one request on the webhook port: route, read, classify, commit, answer.
pub async fn handle(
    hook: Arc<Webhook>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    if let Some(refusal) = route(&hook, &req) {
        return Ok(refusal);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (msg_id, signature) = (header("msg-id"), header("x-douyin-signature"));
    let body = match read_limited(req, &hook).await {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let apps = hook.apps.borrow().clone();
    let intake = intake::classify(&apps, &body, signature.as_deref());
    let facts = Facts::of(&intake);
    let challenge = intake.challenge().cloned();
    let rejection = match &intake {
        Intake::Rejected { status, reason, .. } => Some((*status, reason.clone())),
        Intake::Message(_) => None,
    };
    let arrival = Arrival {
        received_at: time::now_rfc3339(),
        msg_id,
        signature,
        body,
        intake,
        source: Source::Push,
        dedup: None,
    };
    // A signed message is always committed before its answer. A rejected one is written
    // only within the write rate, and never answered 200 (bar the URL check), so leaving
    // its row out costs nothing; `limits` counts it instead.
    let write = rejection.as_ref().map_or(true, |(status, reason)| {
        let digest = store::rejected_digest(arrival.signature.as_deref(), &arrival.body);
        hook.limits.admit_rejected(*status, &digest, reason)
    });
    // A signed body stored recently (a retry, or a replay: it needs no secret) is only
    // counted in memory, and answered as the store did.
    let digest = rejection
        .is_none()
        .then(|| store::body_digest(&arrival.body));
    let known = digest.as_deref().and_then(|d| hook.limits.redelivery(d));
    let ack = match (known, write) {
        (Some(ack), _) => Ok(ack),
        (None, true) => hook.writer.ingest(arrival).await,
        (None, false) => Ok(Ack::Rejected),
    };
    if let (Some(digest), Ok(ack)) = (&digest, &ack) {
        hook.limits.stored(digest, ack);
    }
    let said = Said {
        facts,
        challenge,
        took: started.elapsed(),
    };
    Ok(match (ack, rejection) {
        (Err(e), _) => {
            log::error!(
                "503 database commit failed, Douyin will retry: {e};{} in {:.1?}",
                said.facts,
                said.took
            );
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry\n",
            )
        }
        (Ok(_), Some((status, reason))) => {
            if let (true, Some(feed)) = (reason == intake::WRONG_SECRET, &hook.display) {
                feed.signature_failure();
            }
            answer_rejected(status, &reason, &said, &hook.limits)
        }
        (Ok(ack), None) => answer_stored(ack, &said, &hook.limits),
    })
}

/// 404 for another path (logged with the path asked for, and counted: a wrong path is
/// the commonest installer mistake), 405 for another method on the path.
fn route(hook: &Webhook, req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.uri().path() != hook.path {
        let asked = asked_for(req);
        let line = format!("404 not found: {asked}; the webhook is {:?}", hook.path);
        hook.limits.note(Noise::NotFound, &asked, line);
        return Some(text(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::POST {
        let line = format!("405 {}: the webhook takes POST only", asked_for(req));
        hook.limits.note(Noise::Method, "", line);
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Some(resp);
    }
    None
}

/// The body, within `--max-body` bytes, [`BODY_TIMEOUT`] and the [`BodyPool`]; else the
/// refusal to send (413 unread when the declared length is too large, 413, 408, 400 or
/// 503 part way), which closes the connection.
async fn read_limited(req: Request<Incoming>, hook: &Webhook) -> Result<Vec<u8>, Response<Body>> {
    let (max, limits) = (hook.max_body, &hook.limits);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max as u64) {
        let line = format!("413 body of {n} bytes refused unread (--max-body is {max})");
        limits.note(Noise::TooLarge, &format!("{n} bytes declared"), line);
        return Err(closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large\n",
        )));
    }
    read_body(req.into_body(), max, &hook.bodies)
        .await
        .map_err(|e| closing(unread(e, hook)))
}

/// The answer to a body that could not be read whole, logged at most once per 10 s per
/// kind.
fn unread(e: BodyError, hook: &Webhook) -> Response<Body> {
    let (max, limits) = (hook.max_body, &hook.limits);
    match e {
        BodyError::Busy => {
            let line = format!(
                "503 body of over {} KiB refused: large bodies in hand already hold {} MiB \
                 (a flood of them?)",
                BODY_FREE / 1024,
                hook.bodies.used() / (1024 * 1024)
            );
            limits.note(Noise::Busy, "", line);
            text(StatusCode::SERVICE_UNAVAILABLE, "busy, retry\n")
        }
        BodyError::TooLarge => {
            let line = format!("413 body crossed --max-body ({max} bytes); stopped reading");
            limits.note(Noise::TooLarge, "chunked, over the limit", line);
            text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")
        }
        BodyError::Timeout => {
            let line = format!("408 body not received within {}s", BODY_TIMEOUT.as_secs());
            limits.note(Noise::TooSlow, "", line);
            text(StatusCode::REQUEST_TIMEOUT, "body too slow\n")
        }
        BodyError::Broken(e) => {
            let line = format!("400 request body broken off: {e}");
            limits.note(Noise::Broken, "", line);
            text(StatusCode::BAD_REQUEST, "broken body\n")
        }
    }
}

/// What the answer's log line says besides the outcome.
struct Said {
    facts: Facts,
    challenge: Option<serde_json::Value>,
    took: Duration,
}

/// A rejected request (stored or only counted): 401 or 403, except that a challenge is
/// still answered. Logged at most once per 10 s per kind.
fn answer_rejected(status: u16, reason: &str, said: &Said, limits: &Limits) -> Response<Body> {
    let took = said.took;
    if said.challenge.is_some() {
        let line = format!(
            "200 verify_webhook answered although {reason}: pushes will be rejected \
             until the client secret is fixed; in {took:.1?}"
        );
        limits.note(Noise::UnsignedChallenge, "", line);
        return answer(said.challenge.as_ref(), "challenge");
    }
    let line = format!("{status} rejected: {reason}{}", said.facts);
    limits.note(Noise::of_rejected(status), "", line);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    text(code, "rejected\n")
}

/// A signed message, committed: 200 with its outcome (the challenge for a URL check).
fn answer_stored(ack: Ack, said: &Said, limits: &Limits) -> Response<Body> {
    let (facts, took) = (&said.facts, said.took);
    let outcome = match ack {
        Ack::Redelivered {
            message_id,
            deliveries,
            outcome,
        } => {
            let line = format!(
                "200 redelivery #{deliveries} of message {message_id} ({outcome}), nothing re-applied;{facts} in {took:.1?}"
            );
            limits.note(Noise::Redelivery, "", line);
            outcome
        }
        Ack::Recorded {
            message_id,
            outcome,
            outputs,
        } => {
            let why = match &facts.invalid {
                Some(reason) => format!(" ({reason})"),
                None => String::new(),
            };
            let line =
                format!("200 {outcome}{why}: message {message_id}, {outputs} output(s);{facts} in {took:.1?}");
            if facts.invalid.is_some() {
                log::warn!("{line}");
            } else {
                log::info!("{line}");
            }
            outcome
        }
        // The store rejects only what intake rejected; if that ever broke, a request
        // stored as rejected must not be acknowledged.
        Ack::Rejected => {
            log::error!("500 stored as rejected without a rejection (a bug);{facts} in {took:.1?}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    answer(said.challenge.as_ref(), outcome.as_str())
}

/// What a log line says about a request.
struct Facts {
    action: Option<&'static str>,
    certificate_id: Option<String>,
    log_id: Option<String>,
    invalid: Option<String>,
}

impl Facts {
    fn of(intake: &Intake) -> Facts {
        let mut f = Facts {
            action: None,
            certificate_id: None,
            log_id: None,
            invalid: None,
        };
        if let Intake::Message(m) = intake {
            f.log_id = m.log_id.clone();
            match &m.kind {
                Kind::Certificate(c) => {
                    f.action = Some(c.action.as_str());
                    f.certificate_id = Some(c.certificate_id.clone());
                }
                Kind::Invalid(reason) => f.invalid = Some(reason.clone()),
                Kind::Challenge(_) => f.action = Some("verify_webhook"),
                Kind::Ignored => {}
            }
        }
        f
    }
}

impl std::fmt::Display for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(a) = self.action {
            write!(f, " action={a}")?;
        }
        // Signed fields, quoted when they are not one plain word (sanitize::field).
        if let Some(c) = &self.certificate_id {
            write!(f, " certificate_id={}", crate::sanitize::field(c))?;
        }
        if let Some(l) = &self.log_id {
            write!(f, " log_id={}", crate::sanitize::field(l))?;
        }
        Ok(())
    }
}

enum BodyError {
    TooLarge,
    /// Bodies in hand hold the whole [`BodyPool`].
    Busy,
    Timeout,
    Broken(hyper::Error),
}

/// Reads a body of at most `max` bytes; what its buffer holds beyond [`BODY_FREE`] is
/// covered by a share of `pool`, given back when reading ends.
async fn read_body(mut body: Incoming, max: usize, pool: &BodyPool) -> Result<Vec<u8>, BodyError> {
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut buf = Vec::new();
    let mut share = pool.share();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let need = buf.len() + data.len();
            if need > max {
                return Err(BodyError::TooLarge);
            }
            if need > buf.capacity() {
                // Doubling, as Vec would, but only as far as the share covers.
                let capacity = need.max(buf.capacity() * 2).min(max);
                if !share.cover(capacity) {
                    return Err(BodyError::Busy);
                }
                buf.reserve_exact(capacity - buf.len());
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// 200 with `{"challenge": N}` for a URL check, else `{"outcome": OUTCOME}`.
fn answer(challenge: Option<&serde_json::Value>, outcome: &str) -> Response<Body> {
    let body = match challenge {
        Some(v) => serde_json::json!({ "challenge": v }),
        None => serde_json::json!({ "outcome": outcome }),
    };
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// The method and path of a request that went astray, for its log line and for
/// `coupond status`: quoted and escaped (the path is the sender's text), and cut short.
fn asked_for(req: &Request<Incoming>) -> String {
    const SHOWN: usize = 100;
    let path = req.uri().path();
    let cut = path
        .char_indices()
        .nth(SHOWN)
        .map_or(path, |(i, _)| &path[..i]);
    let more = if cut.len() < path.len() { "…" } else { "" };
    format!("{} {cut:?}{more}", req.method())
}
