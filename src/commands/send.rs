//! `coupond send`: pushes one signed message the way Douyin does (SPEC §7) — JSON body
//! with `content` as a string, `X-Douyin-Signature`, `Msg-Id`, a 3 s limit per attempt and
//! up to 3 retries 500 ms apart — and prints what happened, to test a box and its tunnel:
//! each attempt, and the outcome the daemon answered with (why nothing printed, say).

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::config::SendConfig;
use crate::signature;
use crate::time;
use crate::wire;

/// The body Douyin would send for this configuration.
pub fn body(cfg: &SendConfig, now_secs: i64) -> Vec<u8> {
    let (event, content) = match cfg.challenge {
        Some(n) => (wire::EVENT_VERIFY_WEBHOOK, json!({ "challenge": n })),
        None => {
            let mut cert = json!({ "certificate_id": cfg.certificate_id });
            for (k, v) in [
                ("order_id", &cfg.order_id),
                ("code", &cfg.code),
                ("account_id", &cfg.account_id),
            ] {
                if let Some(v) = v {
                    cert[k] = json!(v);
                }
            }
            (
                wire::EVENT_CERTIFICATE,
                json!({
                    "action": cfg.action.as_str(),
                    "msg_time": cfg.msg_time.unwrap_or(now_secs),
                    "certificate": cert,
                }),
            )
        }
    };
    let log_id = cfg
        .log_id
        .clone()
        .unwrap_or_else(|| format!("COUPONDSEND{}", time::now_millis()));
    let envelope = json!({
        "event": event,
        "client_key": cfg.client_key,
        "from_user_id": wire::TEST_SENDER,
        "content": content.to_string(),
        "log_id": log_id,
    });
    envelope.to_string().into_bytes()
}

/// Sends, retrying as Douyin does; `Ok(true)` once a 200 came back.
pub fn run(cfg: &SendConfig) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(send(cfg))
}

async fn send(cfg: &SendConfig) -> Result<bool, String> {
    let body = body(cfg, time::now_secs());
    let sig = signature::sign(&cfg.secret, &body);
    let msg_id = format!("coupond-send-{}", time::now_millis());
    println!("POST http://{}{}", cfg.url.authority(), cfg.url.path);
    println!("body {}", String::from_utf8_lossy(&body));
    for attempt in 0..=cfg.retries {
        if attempt > 0 {
            tokio::time::sleep(cfg.retry_delay).await;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, post(cfg, &body, &sig, &msg_id)).await;
        let took = started.elapsed();
        match result {
            Ok(Ok((status, answer))) => {
                println!(
                    "attempt {}: HTTP {status} in {took:.1?} {answer}",
                    attempt + 1
                );
                if status == 200 {
                    if let Some(line) = outcome_line(&answer) {
                        println!("{line}");
                    }
                    return Ok(true);
                }
                // A definite answer: sending the same again cannot change it.
                if let Some(hint) = refusal_hint(cfg, status) {
                    println!("{hint}");
                    return Ok(false);
                }
            }
            Ok(Err(e)) => println!("attempt {}: failed after {took:.1?}: {e}", attempt + 1),
            Err(_) => println!(
                "attempt {}: no answer within {:?}",
                attempt + 1,
                cfg.timeout
            ),
        }
    }
    println!("not delivered after {} attempts", cfg.retries + 1);
    Ok(false)
}

/// What a refusal means and what to do, for the answers a retry cannot change.
fn refusal_hint(cfg: &SendConfig, status: u16) -> Option<String> {
    Some(match status {
        401 => format!(
            "rejected: the signature does not verify with the daemon's secret, so the secret \
             send signs with (from {}) differs from the daemon's; on the box both read the \
             settings file's COUPOND_SECRET_FILE: after changing it, systemctl reload coupond",
            cfg.secret_from
        ),
        403 => format!(
            "rejected: the daemon does not accept client key {} (its COUPOND_CLIENT_KEY \
             differs)",
            cfg.client_key
        ),
        404 if cfg.url.path != cfg.served_path => format!(
            "nothing is served at {}: the daemon serves {} (--path); fix --url",
            cfg.url.path, cfg.served_path
        ),
        404 => format!(
            "nothing is served at {} on {}: is that the daemon (coupond status counts the \
             paths it was asked for), or does a tunnel in between map the path?",
            cfg.url.path,
            cfg.url.authority()
        ),
        _ => return None,
    })
}

/// What the daemon's `{"outcome": ...}` answer means for the installer.
fn outcome_line(answer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    let outcome = v.get("outcome")?.as_str()?;
    let meaning = match outcome {
        "applied" => "the coupon's state changed: the store is told (receipt, display, hook)",
        "duplicate" => "the coupon already has this state, so nothing is printed",
        "stale" => "older than the coupon's latest message, so nothing is printed",
        "ignored" => "not a coupon event, so nothing is printed",
        "invalid" => "recorded but not understood (see the daemon's log), so nothing is printed",
        other => return Some(format!("outcome {other:?}")),
    };
    Some(format!("outcome {outcome}: {meaning}"))
}

async fn post(
    cfg: &SendConfig,
    body: &[u8],
    sig: &str,
    msg_id: &str,
) -> Result<(u16, String), String> {
    let authority = cfg.url.authority();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(&cfg.url.path)
        .header("host", &authority)
        .header("content-type", "application/json")
        .header("msg-id", msg_id)
        .header("x-douyin-signature", sig)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).trim().to_string()))
}
