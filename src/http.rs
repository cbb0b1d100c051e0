//! The webhook endpoint: HTTP in, [`intake::classify`], the writer, HTTP out (SPEC §3).
//!
//! Invariants:
//! - a body is never read past `max_body` (a larger `Content-Length` is refused before
//!   a byte of it is read, a chunked body as soon as it crosses the limit), and never
//!   for longer than [`BODY_TIMEOUT`];
//! - a 200 is sent only after the writer reports the commit that holds the message;
//!   a failed commit is a 503, so Douyin retries;
//! - one log line per request: status, outcome, certificate, `log_id`, time taken.
//!   Never the secret, never the signature.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::intake::{self, Apps, Intake, Kind};
use crate::store::{Ack, Arrival};
use crate::time;
use crate::writer::Writer;

/// The longest a client may take to send its body once the headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// The webhook endpoint's configuration and its way to the database.
pub struct Webhook {
    pub path: String,
    pub max_body: usize,
    pub apps: Apps,
    pub writer: Writer,
}

/// Answers one request on the webhook port.
pub async fn handle(
    hook: Arc<Webhook>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    if req.uri().path() != hook.path {
        log::debug!("404 {} {}", req.method(), req.uri().path());
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::POST {
        log::info!(
            "405 {} {}: the webhook takes POST only",
            req.method(),
            hook.path
        );
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(resp);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (msg_id, signature) = (header("msg-id"), header("x-douyin-signature"));
    let declared = header(CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > hook.max_body as u64) {
        log::warn!(
            "413 body of {} bytes refused unread (--max-body is {})",
            declared.unwrap_or_default(),
            hook.max_body
        );
        return Ok(closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large\n",
        )));
    }
    let body = match read_body(req.into_body(), hook.max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            log::warn!(
                "413 body crossed --max-body ({} bytes); stopped reading",
                hook.max_body
            );
            return Ok(closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large\n",
            )));
        }
        Err(BodyError::Timeout) => {
            log::warn!("408 body not received within {}s", BODY_TIMEOUT.as_secs());
            return Ok(closing(text(
                StatusCode::REQUEST_TIMEOUT,
                "body too slow\n",
            )));
        }
        Err(BodyError::Broken(e)) => {
            log::info!("400 request body broken off: {e}");
            return Ok(closing(text(StatusCode::BAD_REQUEST, "broken body\n")));
        }
    };
    let intake = intake::classify(&hook.apps, &body, signature.as_deref());
    let facts = Facts::of(&intake);
    let challenge = intake.challenge().cloned();
    let arrival = Arrival {
        received_at: time::now_rfc3339(),
        msg_id,
        signature,
        body,
        intake,
    };
    let rejected = match &arrival.intake {
        Intake::Rejected { status, reason, .. } => Some((*status, reason.clone())),
        Intake::Message(_) => None,
    };
    let ack = hook.writer.ingest(arrival).await;
    let took = started.elapsed();
    let resp = match (ack, rejected) {
        (Err(e), _) => {
            log::error!("503 database commit failed, Douyin will retry: {e};{facts} in {took:.1?}");
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry\n",
            ));
        }
        (Ok(_), Some((status, reason))) => match &challenge {
            Some(_) => {
                log::warn!(
                    "200 verify_webhook answered although {reason}: pushes will be rejected \
                     until the client secret is fixed; in {took:.1?}"
                );
                challenge_response(challenge.as_ref())
            }
            None => {
                log::warn!("{status} rejected: {reason};{facts} in {took:.1?}");
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
                text(code, "rejected\n")
            }
        },
        (
            Ok(Ack::Redelivered {
                message_id,
                deliveries,
                outcome,
            }),
            None,
        ) => {
            log::info!(
                "200 redelivery #{deliveries} of message {message_id} ({outcome}), nothing re-applied;{facts} in {took:.1?}"
            );
            challenge_response(challenge.as_ref())
        }
        (
            Ok(Ack::Recorded {
                message_id,
                outcome,
                outputs,
            }),
            None,
        ) => {
            let why = match &facts.invalid {
                Some(reason) => format!(" ({reason})"),
                None => String::new(),
            };
            let line = format!(
                "200 {}{why}: message {message_id}, {outputs} output(s);{facts} in {took:.1?}",
                outcome.as_str()
            );
            if facts.invalid.is_some() {
                log::warn!("{line}");
            } else {
                log::info!("{line}");
            }
            challenge_response(challenge.as_ref())
        }
        // The store rejects only what intake rejected; if that ever broke, a request
        // stored as rejected must not be acknowledged.
        (Ok(Ack::Rejected), None) => {
            log::error!("500 stored as rejected without a rejection (a bug);{facts} in {took:.1?}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    };
    Ok(resp)
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
        if let Some(c) = &self.certificate_id {
            write!(f, " certificate_id={c}")?;
        }
        if let Some(l) = &self.log_id {
            write!(f, " log_id={l}")?;
        }
        Ok(())
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken(hyper::Error),
}

async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, BodyError> {
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut buf = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Ends the connection after this response: the rest of the request is not read.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 200 with `{"challenge": N}` for a challenge, else an empty 200.
fn challenge_response(challenge: Option<&serde_json::Value>) -> Response<Body> {
    match challenge {
        Some(v) => json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({ "challenge": v })).unwrap_or_default(),
        ),
        None => text(StatusCode::OK, ""),
    }
}
