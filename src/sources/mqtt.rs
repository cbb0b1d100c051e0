//! `--mqtt-source URL`: a store box takes the pushes a relay forwarded through the broker
//! (SPEC §12), exactly as if they had come over HTTP.
//!
//! It subscribes (QoS 1) to `PREFIX/push/{client_key}/{account}` for each configured app
//! and each account of `--mqtt-accounts`, with a persistent session: clean session off
//! and a stable client id (`-sub`), so the broker keeps what arrives while the box is
//! off and hands it over at the next connection.
//!
//! Invariants (SPEC §12: every delivery is acknowledged after a decision is stored):
//! - each payload goes through [`intake::classify`] (the signature checked again: the
//!   broker and the relay are not trusted) and the same writer transaction as a push,
//!   stored with `source = 'mqtt'`, under the secrets in use now (a reload reaches it);
//! - the PUBACK goes only after the commit that holds the decision, in the order the
//!   publishes came (acknowledgements are manual), so a crash in between means a
//!   redelivery, which the body digest counts and never applies twice;
//! - a payload that is not a forwarded push, whose body is over `--max-body`, or whose
//!   signature or app is wrong, is a `rejected` row, written and logged within the same
//!   [`Limits`] as the webhook's (a flood of forgeries costs a few rows a minute and a
//!   line per 10 s) and acknowledged: one bad message cannot wedge the session;
//! - a signed push for an account outside `--mqtt-accounts` is stored `invalid`, with
//!   that reason, whatever the topic said: the topic is the publisher's word, the body
//!   is Douyin's;
//! - a body stored recently (a redelivery, or a replay: it needs no secret) is counted
//!   in memory ([`Limits::redelivery`]), not written again;
//! - the broker holds at most [`crate::mqtt::RECEIVE_MAXIMUM`] publishes out to us at once
//!   (MQTT 5 Receive Maximum) and never sends a packet over [`crate::mqtt::max_packet`] of
//!   `--max-body` (it drops such a publish itself), so neither a burst nor a huge
//!   publish can stop the session; a retained publish is taken once per new
//!   subscription, not at every reconnect;
//! - a commit that fails (a full disk) is not acknowledged: the connection is dropped
//!   and the broker redelivers after the reconnect.

use std::collections::VecDeque;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAck, Publish, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, Request};
use tokio::sync::{oneshot, watch};

use crate::intake::{self, Apps, Intake, Kind};
use crate::model::{Ack, Arrival, Forwarded, LinkName, Source};
use crate::mqtt::{Broker, LinkState, Lost, Reconnect};
use crate::ratelimit::{Limits, Noise};
use crate::shutdown::{self, Stop};
use crate::store;
use crate::time;
use crate::writer::{Committed, Writer};

/// `--mqtt-source` and what it subscribes to (settings).
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub broker: Broker,
    /// `--mqtt-accounts`: account ids, or `+` for every account.
    pub accounts: Vec<String>,
    /// `--max-body`: a forwarded body over it is refused, as over HTTP.
    pub max_body: usize,
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

    /// Whether a push signed for `account` is this box's.
    fn takes(&self, account: &str) -> bool {
        self.accounts.iter().any(|a| a == "+" || a == account)
    }
}

/// Classifies one MQTT payload, purely: a forwarded push through the same intake as
/// HTTP (and then the box's accounts), anything else a rejection (400 not a forward,
/// 413 a body over `--max-body`), for the `rejected` row.
pub fn arrival(sub: &Subscriber, apps: &Apps, payload: &[u8], received_at: String) -> Arrival {
    let rejected = |status: u16, reason: String| Arrival {
        received_at: received_at.clone(),
        source: Source::Mqtt,
        msg_id: None,
        signature: None,
        body: payload.to_vec(),
        intake: Intake::Rejected {
            status,
            reason,
            challenge: None,
        },
        dedup: None,
    };
    let f = match serde_json::from_slice::<Forwarded>(payload) {
        Ok(f) => f,
        Err(e) => {
            return rejected(
                400,
                format!(
                "MQTT payload is not a forwarded push ({{\"body\",\"signature\",\"msg_id\"}}): {e}"
            ),
            )
        }
    };
    if f.body.len() > sub.max_body {
        let reason = format!(
            "forwarded body of {} bytes is over --max-body ({})",
            f.body.len(),
            sub.max_body
        );
        return rejected(413, reason);
    }
    let mut intake = intake::classify(apps, f.body.as_bytes(), f.signature.as_deref());
    if let Intake::Message(m) = &mut intake {
        if let Kind::Certificate(c) = &m.kind {
            if let Some(account) = c.account_id.as_deref().filter(|a| !sub.takes(a)) {
                let reason = format!(
                    "signed for account {account}, which is not one of --mqtt-accounts ({})",
                    sub.accounts.join(",")
                );
                m.kind = Kind::Invalid(reason);
            }
        }
    }
    Arrival {
        received_at,
        source: Source::Mqtt,
        intake,
        msg_id: f.msg_id,
        signature: f.signature,
        body: f.body.into_bytes(),
        dedup: None,
    }
}

/// Publishes taken from the broker and not yet acknowledged, at most (our own
/// receive window; [`crate::mqtt::RECEIVE_MAXIMUM`] asks the broker for less).
const WINDOW: usize = 128;
/// And the payload bytes they may hold together.
const WINDOW_BYTES: usize = 4 << 20;

/// What the source needs while it runs.
pub struct Ingest {
    pub sub: Subscriber,
    /// The apps and secrets in use; a reload (SIGHUP) replaces them.
    pub apps: watch::Receiver<Arc<Apps>>,
    pub writer: Writer,
    /// Shared with the webhook: what rejects and redeliveries may cost.
    pub limits: Arc<Limits>,
}

/// Runs the subscription until the stop.
pub async fn run(src: Ingest, mut stop: Stop) {
    let (state, _) = watch::channel(LinkState::Connecting("not yet".into()));
    let mut reconnect = Reconnect::new(
        LinkName::MqttSource,
        "-sub",
        &src.sub.broker,
        src.writer.clone(),
        state,
    );
    loop {
        let connected = tokio::select! {
            c = src.sub.broker.connect("-sub", true, true) => c,
            _ = shutdown::stopped(&mut stop) => return,
        };
        let lost = match connected {
            Ok((client, events, _)) => {
                // Every time: a new session (the broker forgot us) needs it, and an old
                // one takes it as a no-op (and sends no retained publish again).
                let keys = src.apps.borrow().client_keys.clone();
                let filters = src.sub.filters(&keys).into_iter().map(|path| {
                    let mut f = Filter::new(path, QoS::AtLeastOnce);
                    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                    f
                });
                if let Err(e) = client.try_subscribe_many(filters) {
                    Lost::Other(format!("cannot subscribe: {e}"))
                } else {
                    match session(&src, &client, events, &mut reconnect, &mut stop).await {
                        Some(lost) => lost,
                        None => return,
                    }
                }
            }
            Err(e) => Lost::Other(e),
        };
        if !reconnect.failed(&lost, &mut stop).await {
            return;
        }
    }
}

/// A publish on its way: its commit's answer (or the answer decided at once), and the
/// body's digest for a signed message.
struct InFlight {
    publish: Publish,
    digest: Option<String>,
    answer: Committed,
}

/// One connection: ingests what comes and acknowledges each after its commit, in
/// order. Returns why it ended, or `None` at the stop.
async fn session(
    src: &Ingest,
    client: &AsyncClient,
    mut events: EventLoop,
    reconnect: &mut Reconnect,
    stop: &mut Stop,
) -> Option<Lost> {
    // Publishes whose decision is on its way, oldest first: the broker sends up to the
    // receive window before it needs the first PUBACK, so they commit together.
    let mut committing: VecDeque<InFlight> = VecDeque::new();
    // The payload bytes `committing` holds.
    let mut held = 0usize;
    loop {
        // The receive window, held by us too: a broker that ignores Receive Maximum
        // (mosquitto 2.0 does, measured) is not read from while it is full, so a burst
        // waits in the broker and in TCP's buffers, not in the box's memory.
        let room = committing.len() < WINDOW && held < WINDOW_BYTES;
        tokio::select! {
            event = events.poll(), if room => match event {
                // Connected once subscribed: what is published from then on is ours.
                Ok(Event::Incoming(Packet::SubAck(_))) => reconnect.connected().await,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    match decide(src, p).await {
                        Some(f) => {
                            held += f.publish.payload.len();
                            committing.push_back(f);
                        }
                        None => return None,
                    }
                }
                Ok(_) => {}
                Err(e) => return Some(Lost::of(&e)),
            },
            answer = oldest(&mut committing), if !committing.is_empty() => {
                let Some(f) = committing.pop_front() else { continue };
                match answer {
                    Ok(Ok(ack)) => {
                        if let Some(digest) = &f.digest {
                            src.limits.stored(digest, &ack);
                        }
                        held -= f.publish.payload.len();
                        log_ack(&f.publish, &ack, &src.limits);
                        // Straight into the event loop's own queue, in order: the
                        // client's request channel is bounded, and a full one would
                        // cost the connection and a redelivery of everything.
                        events.pending.push_back(Request::PubAck(PubAck::new(f.publish.pkid, None)));
                    }
                    Ok(Err(e)) => {
                        log::error!("mqtt-source: database commit failed, not acknowledged (the broker redelivers): {e}");
                        return Some(Lost::Other(format!("database: {e}")));
                    }
                    Err(_) => return None,
                }
            }
            _ = reconnect.settle() => {}
            _ = shutdown::stopped(stop) => {
                leave(client, &mut events).await;
                return None;
            }
        }
    }
}

/// At the stop: sends the acknowledgements already decided (so that a clean stop
/// causes no redelivery), then DISCONNECT, within a second.
async fn leave(client: &AsyncClient, events: &mut EventLoop) {
    let _ = client.try_disconnect();
    let flushed = async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flushed).await;
}

/// Classifies one publish and hands it to the writer, or decides at once: a rejection
/// over the write rate (counted), a redelivery of a body stored recently (counted).
/// `None` when the writer has stopped.
async fn decide(src: &Ingest, publish: Publish) -> Option<InFlight> {
    let apps = src.apps.borrow().clone();
    let a = arrival(&src.sub, &apps, &publish.payload, time::now_rfc3339());
    let at_once = |ack: Ack| {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(ack));
        rx
    };
    let (digest, answer) = match &a.intake {
        Intake::Rejected { status, reason, .. } => {
            let line = format!(
                "mqtt-source: {status} rejected a publish on {}: {reason}",
                String::from_utf8_lossy(&publish.topic)
            );
            src.limits.note(Noise::of_rejected(*status), "", line);
            let digest = store::rejected_digest(a.signature.as_deref(), &a.body);
            match src.limits.admit_rejected(*status, &digest, reason) {
                true => (None, src.writer.submit(a).await.ok()?),
                false => (None, at_once(Ack::Rejected)),
            }
        }
        Intake::Message(_) => {
            let digest = store::body_digest(&a.body);
            match src.limits.redelivery(&digest) {
                Some(ack) => (Some(digest), at_once(ack)),
                None => (Some(digest), src.writer.submit(a).await.ok()?),
            }
        }
    };
    Some(InFlight {
        publish,
        digest,
        answer,
    })
}

/// The answer for the oldest publish in flight.
async fn oldest(
    committing: &mut VecDeque<InFlight>,
) -> Result<Result<Ack, String>, oneshot::error::RecvError> {
    match committing.front_mut() {
        Some(f) => (&mut f.answer).await,
        None => std::future::pending().await,
    }
}

/// One line per new message, as the webhook logs one per request; redeliveries within
/// the limits (rejections were noted when decided).
fn log_ack(p: &Publish, ack: &Ack, limits: &Limits) {
    match ack {
        Ack::Rejected => {}
        Ack::Redelivered {
            message_id,
            deliveries,
            ..
        } => limits.note(
            Noise::Redelivery,
            "",
            format!(
                "mqtt-source: redelivery #{deliveries} of message {message_id}, nothing re-applied"
            ),
        ),
        Ack::Recorded {
            message_id,
            outcome,
            outputs,
        } => log::info!(
            "mqtt-source: {outcome}: message {message_id}, {outputs} output(s); from {}",
            String::from_utf8_lossy(&p.topic)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt;
    use crate::signature::sign;

    fn sub(accounts: &[&str]) -> Subscriber {
        Subscriber {
            broker: Broker {
                host: "h".into(),
                port: 1,
                client_id: "c".into(),
                username: None,
                password: None,
                prefix: "chain".into(),
                tls: None,
                max_packet: mqtt::max_packet(1024),
            },
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            max_body: 1024,
        }
    }

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
            &sub(&["+"]),
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
            &sub(&["+"]),
            &apps(),
            &forwarded(body, &sign("guess", body.as_bytes())),
            "t".into(),
        );
        assert!(matches!(
            forged.intake,
            Intake::Rejected { status: 401, .. }
        ));
        for junk in [&b"not json"[..], b"{}", b"{\"body\":1}", b"\xff\xfe"] {
            let a = arrival(&sub(&["+"]), &apps(), junk, "t".into());
            assert!(
                matches!(a.intake, Intake::Rejected { status: 400, .. }),
                "{junk:?}"
            );
            assert_eq!(a.body, junk);
        }
    }

    #[test]
    fn a_body_over_max_body_is_413_and_another_account_is_invalid_whatever_the_topic() {
        let big = "x".repeat(1025);
        let a = arrival(&sub(&["+"]), &apps(), &forwarded(&big, "ab"), "t".into());
        assert!(matches!(a.intake, Intake::Rejected { status: 413, .. }));
        let body = "{\"event\":\"life_trade_certificate_notify\",\"client_key\":\"app1\",\"content\":{\"action\":\"verify\",\"msg_time\":5,\"certificate\":{\"certificate_id\":\"c1\",\"account_id\":\"9999\"}}}";
        let payload = forwarded(body, &sign("s", body.as_bytes()));
        let a = arrival(&sub(&["1111"]), &apps(), &payload, "t".into());
        match &a.intake {
            Intake::Message(m) => match &m.kind {
                Kind::Invalid(why) => assert!(why.contains("9999"), "{why}"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        for accounts in [&["+"][..], &["1111", "9999"]] {
            assert!(is_coupon(&arrival(
                &sub(accounts),
                &apps(),
                &payload,
                "t".into()
            )));
        }
    }

    /// The MQTT payload decoder never panics and keeps its invariants
    /// ([`crate::fuzzing::check_mqtt`]) on mangled forwards and on every input of the
    /// fuzzer's committed corpus (`fuzz/corpus/mqtt_payload`, README "Fuzzing").
    #[test]
    fn mangled_payloads_and_the_mqtt_fuzz_corpus_never_panic() {
        let body = "{\"event\":\"life_trade_certificate_notify\",\"client_key\":\"app1\",\"content\":{\"action\":\"verify\",\"msg_time\":5,\"certificate\":{\"certificate_id\":\"c1\",\"account_id\":\"1234\"}}}";
        let seeds = [
            forwarded(body, &sign(crate::fuzzing::SECRET, body.as_bytes())),
            forwarded(body, "00"),
            b"{\"body\":\"x\"}".to_vec(),
        ];
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        crate::fuzzing::mutate(&seeds, 5_000, crate::fuzzing::check_mqtt);
        let n = crate::fuzzing::replay_corpus("mqtt_payload", crate::fuzzing::check_mqtt);
        assert!(n >= 20, "only {n} corpus inputs");
    }

    #[test]
    fn it_subscribes_to_each_app_and_account() {
        let sub = sub(&["+"]);
        assert_eq!(
            sub.filters(&apps().client_keys),
            ["chain/push/app1/+", "chain/push/app2/+"]
        );
    }
}
