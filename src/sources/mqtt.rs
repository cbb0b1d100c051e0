//! `--mqtt-source URL`: a store box takes the pushes a relay forwarded through the broker
//! (SPEC §12), exactly as if they had come over HTTP.
//!
//! It subscribes (QoS 1) to `PREFIX/push/{client_key}/{account}` for each configured app
//! and each account of `--mqtt-accounts`, with a persistent session: clean session off
//! and a stable client id (`-sub`), so the broker keeps what arrives while the box is
//! off and hands it over at the next connection.
//!
//! Invariants:
//! - each payload goes through [`intake::classify`] (the signature checked again: the
//!   broker and the relay are not trusted) and the same writer transaction as a push,
//!   stored with `source = 'mqtt'`;
//! - the PUBACK goes only after the commit that holds the message, in the order the
//!   publishes came (acknowledgements are manual), so a crash in between means a
//!   redelivery, which the body digest counts and never applies twice;
//! - a payload that is not a forwarded push, or whose signature or app is wrong, is
//!   stored as `rejected` (bounded, as for HTTP) and acknowledged: one bad message
//!   cannot wedge the session;
//! - a commit that fails (a full disk) is not acknowledged: the connection is dropped
//!   and the broker redelivers after the reconnect.

use std::collections::VecDeque;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::watch;

use crate::intake::{self, Apps, Intake};
use crate::model::{Ack, Arrival, Forwarded, LinkName, Source};
use crate::mqtt::{Broker, LinkState, Reconnect};
use crate::shutdown::{self, Stop};
use crate::time;
use crate::writer::{Committed, Writer};

/// `--mqtt-source` and what it subscribes to (settings).
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub broker: Broker,
    /// `--mqtt-accounts`: account ids, or `+` for every account.
    pub accounts: Vec<String>,
}

impl Subscriber {
    /// The topic filters for `client_keys`.
    pub fn filters(&self, client_keys: &[String]) -> Vec<String> {
        client_keys
            .iter()
            .flat_map(|key| {
                self.accounts
                    .iter()
                    .map(move |a| format!("{}/push/{key}/{a}", self.broker.prefix))
            })
            .collect()
    }
}

/// Classifies one MQTT payload, purely: a forwarded push through the same intake as
/// HTTP, anything else a rejection (status 400, for the `rejected` row).
pub fn arrival(apps: &Apps, payload: &[u8], received_at: String) -> Arrival {
    match serde_json::from_slice::<Forwarded>(payload) {
        Ok(f) => Arrival {
            received_at,
            source: Source::Mqtt,
            intake: intake::classify(apps, f.body.as_bytes(), f.signature.as_deref()),
            msg_id: f.msg_id,
            signature: f.signature,
            body: f.body.into_bytes(),
            dedup: None,
        },
        Err(e) => Arrival {
            received_at,
            source: Source::Mqtt,
            msg_id: None,
            signature: None,
            body: payload.to_vec(),
            intake: Intake::Rejected {
                status: 400,
                reason: format!(
                    "MQTT payload is not a forwarded push ({{\"body\",\"signature\",\"msg_id\"}}): {e}"
                ),
                challenge: None,
            },
            dedup: None,
        },
    }
}

/// Runs the subscription until the stop.
pub async fn run(sub: Subscriber, apps: Apps, writer: Writer, mut stop: Stop) {
    let (state, _) = watch::channel(LinkState::Connecting("not yet".into()));
    let filters: Vec<SubscribeFilter> = sub
        .filters(&apps.client_keys)
        .into_iter()
        .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce))
        .collect();
    let mut reconnect = Reconnect::new(LinkName::MqttSource, writer.clone(), state);
    loop {
        let connected = tokio::select! {
            c = sub.broker.connect("-sub", false, true) => c,
            _ = shutdown::stopped(&mut stop) => return,
        };
        let error = match connected {
            Ok((client, events)) => {
                // Every time: a new session (the broker forgot us) needs it, and an old
                // one takes it as a no-op.
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    format!("cannot subscribe: {e}")
                } else {
                    reconnect.connected(&sub.broker).await;
                    match session(&client, events, &apps, &writer, &mut stop).await {
                        Some(error) => error,
                        None => return,
                    }
                }
            }
            Err(e) => e,
        };
        if !reconnect.failed(&sub.broker, &error, &mut stop).await {
            return;
        }
    }
}

/// One connection: ingests what comes and acknowledges each after its commit, in
/// order. Returns why it ended, or `None` at the stop.
async fn session(
    client: &AsyncClient,
    mut events: rumqttc::EventLoop,
    apps: &Apps,
    writer: &Writer,
    stop: &mut Stop,
) -> Option<String> {
    // Publishes whose commit is on its way, oldest first: the broker sends up to its
    // in-flight window before it needs the first PUBACK, so they commit together.
    let mut committing: VecDeque<(Publish, Committed)> = VecDeque::new();
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let a = arrival(apps, &p.payload, time::now_rfc3339());
                    match writer.submit(a).await {
                        Ok(answer) => committing.push_back((p, answer)),
                        Err(_) => return None,
                    }
                }
                Ok(_) => {}
                Err(e) => return Some(format!("connection lost: {e}")),
            },
            answer = oldest(&mut committing), if !committing.is_empty() => {
                let Some((p, _)) = committing.pop_front() else { continue };
                match answer {
                    Ok(Ok(ack)) => {
                        log_ack(&p, &ack);
                        if let Err(e) = client.try_ack(&p) {
                            return Some(format!("cannot acknowledge: {e}"));
                        }
                    }
                    Ok(Err(e)) => {
                        log::error!("mqtt-source: database commit failed, not acknowledged (the broker redelivers): {e}");
                        return Some(format!("database: {e}"));
                    }
                    Err(_) => return None,
                }
            }
            _ = shutdown::stopped(stop) => {
                let _ = client.try_disconnect();
                return None;
            }
        }
    }
}

/// The answer for the oldest publish in flight.
async fn oldest(
    committing: &mut VecDeque<(Publish, Committed)>,
) -> Result<Result<Ack, String>, tokio::sync::oneshot::error::RecvError> {
    match committing.front_mut() {
        Some((_, answer)) => answer.await,
        None => std::future::pending().await,
    }
}

/// One line per message, as the webhook logs one per request.
fn log_ack(p: &Publish, ack: &Ack) {
    match ack {
        Ack::Rejected => log::warn!("mqtt-source: rejected a publish on {}", p.topic),
        Ack::Redelivered {
            message_id,
            deliveries,
            ..
        } => log::info!(
            "mqtt-source: redelivery #{deliveries} of message {message_id}, nothing re-applied"
        ),
        Ack::Recorded {
            message_id,
            outcome,
            outputs,
        } => log::info!(
            "mqtt-source: {outcome}: message {message_id}, {outputs} output(s); from {}",
            p.topic
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::Kind;
    use crate::signature::sign;

    fn is_coupon(a: &Arrival) -> bool {
        matches!(&a.intake, Intake::Message(m) if matches!(m.kind, Kind::Certificate(_)))
    }

    fn apps() -> Apps {
        Apps {
            client_keys: vec!["app1".into(), "app2".into()],
            secrets: vec!["s".into()],
        }
    }

    fn forwarded(body: &str, signature: &str) -> Vec<u8> {
        serde_json::to_vec(
            &serde_json::json!({"body": body, "signature": signature, "msg_id": "m"}),
        )
        .unwrap()
    }

    #[test]
    fn a_forwarded_push_is_classified_exactly_as_over_http() {
        let body = "{\"event\":\"life_trade_certificate_notify\",\"client_key\":\"app1\",\"content\":{\"action\":\"verify\",\"msg_time\":5,\"certificate\":{\"certificate_id\":\"c1\"}}}\n";
        let a = arrival(
            &apps(),
            &forwarded(body, &sign("s", body.as_bytes())),
            "t".into(),
        );
        assert!(is_coupon(&a));
        assert_eq!(a.body, body.as_bytes());
        assert_eq!((a.source, a.msg_id.as_deref()), (Source::Mqtt, Some("m")));
    }

    #[test]
    fn forged_and_broken_payloads_are_rejections() {
        let body = r#"{"event":"life_trade_certificate_notify","client_key":"app1"}"#;
        let forged = arrival(
            &apps(),
            &forwarded(body, &sign("guess", body.as_bytes())),
            "t".into(),
        );
        assert!(matches!(
            forged.intake,
            Intake::Rejected { status: 401, .. }
        ));
        for junk in [&b"not json"[..], b"{}", b"{\"body\":1}", b"\xff\xfe"] {
            let a = arrival(&apps(), junk, "t".into());
            assert!(
                matches!(a.intake, Intake::Rejected { status: 400, .. }),
                "{junk:?}"
            );
            assert_eq!(a.body, junk);
        }
    }

    #[test]
    fn it_subscribes_to_each_app_and_account() {
        let sub = Subscriber {
            broker: Broker {
                host: "h".into(),
                port: 1,
                client_id: "c".into(),
                username: None,
                password: None,
                prefix: "chain".into(),
                tls: None,
            },
            accounts: vec!["+".into()],
        };
        assert_eq!(
            sub.filters(&apps().client_keys),
            ["chain/push/app1/+", "chain/push/app2/+"]
        );
    }
}
