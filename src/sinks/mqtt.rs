//! `--mqtt URL`: publishes to the broker what a message means to the rest of the chain
//! (SPEC §12), through the outbox, done only on the broker's PUBACK.
//!
//! One `mqtt` job per message carries both of its publishes, in this order:
//! - with `--mqtt-forward`, a push that Douyin sent over HTTP (not a test push) goes to
//!   `PREFIX/push/{client_key}/{account_id}` as `{"body", "signature", "msg_id"}`, for the
//!   store boxes' `--mqtt-source` (a push that came from MQTT never goes back);
//! - an applied message (test pushes excepted) goes to
//!   `PREFIX/event/{client_key}/{account_id}` as the hook's JSON plus `signature` and
//!   `msg_id`, for headquarters.
//!
//! Both QoS 1. A job is done when every publish it holds was acknowledged; a lost
//! connection fails the attempt and the outbox tries again (at least once: a repeat is
//! possible after a crash or a lost PUBACK, a gap never is). A job that can never be
//! published is given up with its reason ([`Failure::Never`]) so that the jobs behind it
//! move: a publish over the broker's Maximum Packet Size (its CONNACK says), or one the
//! broker refuses in its PUBACK (MQTT 5 reason codes, such as 0x95 for mosquitto's
//! `message_size_limit`). The forward of a push within `--max-body` always fits our own
//! limit ([`mqtt::max_packet`]). The connection is the
//! [`Link`] task's, kept up with backoff; the outbox's attempt waits for it, so a
//! backlog moves as soon as the broker is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::mqttbytes::{self, QoS};
use rumqttc::v5::{ConnectionError, Event, StateError};
use rumqttc::Outgoing;
use tokio::sync::{mpsc, oneshot, watch};

use super::exec::HookPayload;
use crate::model::{Forwarded, Job, LinkName, Publish, Work};
use crate::mqtt::{self, Broker, LinkState, Lost, Reconnect};
use crate::shutdown::{self, Stop};
use crate::sinks::Failure;
use crate::writer::Writer;

/// One attempt: waiting for the connection, then for each PUBACK.
pub const TIME_LIMIT: Duration = Duration::from_secs(90);
/// How long an attempt waits for a connection before it counts as failed: it goes on
/// the moment the link is up, and a broker outage costs one warning a minute. (At the
/// stop the link task ends, and with it this wait.)
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// What `--mqtt` publishes (settings).
#[derive(Debug, Clone)]
pub struct Publisher {
    pub broker: Broker,
    /// `--mqtt-forward`.
    pub forward: bool,
}

/// A publish handed to the link, answered on its PUBACK.
struct Request {
    topic: String,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), Failure>>,
}

/// The sink: hands publishes to the [`Link`] task and waits for their PUBACK.
pub struct MqttSink {
    publisher: Publisher,
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<LinkState>,
    /// Taken once by `serve`, which runs it beside the outbox.
    link: Mutex<Option<Link>>,
}

/// The publishing connection (`-pub`), as a task of its own.
pub struct Link {
    broker: Broker,
    requests: mpsc::Receiver<Request>,
    state: watch::Sender<LinkState>,
}

impl MqttSink {
    pub fn new(publisher: Publisher) -> MqttSink {
        let (tx, rx) = mpsc::channel(mqtt::CHANNEL);
        let (state_tx, state) = watch::channel(LinkState::Connecting("not yet".into()));
        let link = Link {
            broker: publisher.broker.clone(),
            requests: rx,
            state: state_tx,
        };
        MqttSink {
            publisher,
            requests: tx,
            state,
            link: Mutex::new(Some(link)),
        }
    }

    /// The connection task, for `serve` to run (once).
    pub fn take_link(&self) -> Option<Link> {
        self.link.lock().ok()?.take()
    }

    /// The publishes `job` stands for: (topic, payload), in order.
    pub fn publishes(&self, job: &Job) -> Result<Vec<(String, Vec<u8>)>, String> {
        let Some(o) = &job.origin else {
            return Ok(Vec::new());
        };
        let prefix = &self.publisher.broker.prefix;
        let tail = format!(
            "{}/{}",
            mqtt::level(o.client_key.as_deref()),
            mqtt::level(o.account_id.as_deref())
        );
        let mut out = Vec::new();
        let publish = Publish::of(self.publisher.forward, o.source, o.outcome);
        if publish.forward {
            let payload = Forwarded {
                body: o.body.clone(),
                signature: o.signature.clone(),
                msg_id: o.msg_id.clone(),
            };
            out.push((format!("{prefix}/push/{tail}"), to_json(&payload)?));
        }
        if publish.event && matches!(job.work, Work::Coupon(_)) {
            let payload = EventPayload {
                hook: HookPayload::of(job)?,
                signature: o.signature.as_deref(),
                msg_id: o.msg_id.as_deref(),
            };
            out.push((format!("{prefix}/event/{tail}"), to_json(&payload)?));
        }
        Ok(out)
    }

    pub async fn deliver(&self, job: &Job) -> Result<(), Failure> {
        // A job whose payload cannot be made never will be. One publish the broker can
        // never take does not keep the other (the forward from headquarters' event):
        // the job is given up with its reason once the rest went.
        let mut never = None;
        for (topic, payload) in self.publishes(job).map_err(Failure::Never)? {
            match self.publish(topic, payload).await {
                Ok(()) => {}
                Err(Failure::Never(why)) => never = Some(why),
                Err(retry) => return Err(retry),
            }
        }
        never.map_or(Ok(()), |why| Err(Failure::Never(why)))
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), Failure> {
        let mut state = self.state.clone();
        let up = tokio::time::timeout(
            CONNECT_WAIT,
            state.wait_for(|s| matches!(s, LinkState::Connected(_))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !up {
            return Err(Failure::Retry(match &*self.state.borrow() {
                LinkState::Connecting(why) => format!("not connected ({why})"),
                LinkState::Connected(_) => "not connected".into(),
            }));
        }
        let (done, answer) = oneshot::channel();
        let stopped = || Failure::Retry("the MQTT connection task has stopped".to_string());
        self.requests
            .send(Request {
                topic,
                payload,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The size of a QoS 1 publish packet of `topic` and `payload`, without properties.
fn packet_size(topic: &str, payload: &[u8]) -> usize {
    // Topic length, packet id, the property length byte, then the fixed header's type
    // byte and remaining length (up to 4 bytes).
    let remaining = 2 + topic.len() + 2 + 1 + payload.len();
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// What a PUBACK's reason code means for the job.
fn acked(reason: PubAckReason) -> Result<(), Failure> {
    match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
        other => Err(Failure::Never(format!(
            "the broker refused the publish ({other:?})"
        ))),
    }
}

/// A connection that broke on a PUBACK rumqttc cannot read: a reason code it does not
/// know, such as mosquitto's 0x95 (packet too large, its `message_size_limit`).
fn refusal(e: &ConnectionError) -> Option<String> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            mqttbytes::Error::InvalidConnectReturnCode(code),
        )) => Some(match code {
            0x95 => "the broker refused the publish as too large (reason 0x95: raise the broker's message_size_limit)".into(),
            c => format!("the broker refused the publish (reason 0x{c:02x})"),
        }),
        _ => None,
    }
}

/// An event for headquarters: the hook's JSON plus what proves where it came from.
#[derive(serde::Serialize)]
struct EventPayload<'a> {
    #[serde(flatten)]
    hook: HookPayload<'a>,
    signature: Option<&'a str>,
    msg_id: Option<&'a str>,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

/// Publishes handed to one connection: waiting for their packet id, then for their
/// PUBACK.
#[derive(Default)]
struct Outstanding {
    unsent: VecDeque<oneshot::Sender<Result<(), Failure>>>,
    sent: HashMap<u16, oneshot::Sender<Result<(), Failure>>>,
}

impl Outstanding {
    /// The connection ended with `e`: every publish fails it. When the broker refused
    /// the only one sent (the sink has one out at a time) in a way that broke the
    /// connection, that one is given up rather than sent again for ever.
    fn lost(self, e: &ConnectionError, lost: &Lost) {
        let refused = refusal(e).filter(|_| self.sent.len() == 1 && self.unsent.is_empty());
        for done in self.unsent.into_iter().chain(self.sent.into_values()) {
            let _ = done.send(Err(match &refused {
                Some(why) => Failure::Never(why.clone()),
                None => Failure::Retry(lost.to_string()),
            }));
        }
    }
}

impl Link {
    /// Keeps the connection up until the stop: connects, publishes what the sink hands
    /// over, matches each PUBACK to its publish, and reconnects with backoff.
    pub async fn run(mut self, writer: Writer, mut stop: Stop) {
        let mut reconnect = Reconnect::new(
            LinkName::Mqtt,
            "-pub",
            &self.broker,
            writer,
            self.state.clone(),
        );
        loop {
            let connected = tokio::select! {
                c = self.broker.connect("-pub", false, false) => c,
                _ = shutdown::stopped(&mut stop) => return,
            };
            let lost = match connected {
                Ok((client, mut events, broker_limit)) => {
                    reconnect.connected().await;
                    let limit = broker_limit.map_or(usize::MAX, |l| l as usize);
                    let mut out = Outstanding::default();
                    loop {
                        tokio::select! {
                            event = events.poll() => match event {
                                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                    if let Some(done) = out.unsent.pop_front() {
                                        out.sent.insert(pkid, done);
                                    }
                                }
                                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                                    if let Some(done) = out.sent.remove(&ack.pkid) {
                                        let _ = done.send(acked(ack.reason));
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    let lost = Lost::of(&e);
                                    out.lost(&e, &lost);
                                    break lost;
                                }
                            },
                            request = self.requests.recv() => {
                                let Some(r) = request else { return };
                                let size = packet_size(&r.topic, &r.payload);
                                if size > limit {
                                    let why = format!("the publish is {size} bytes, over the broker's Maximum Packet Size ({limit})");
                                    let _ = r.done.send(Err(Failure::Never(why)));
                                    continue;
                                }
                                match client.try_publish(r.topic, QoS::AtLeastOnce, false, r.payload) {
                                    Ok(()) => out.unsent.push_back(r.done),
                                    Err(e) => { let _ = r.done.send(Err(Failure::Retry(e.to_string()))); }
                                }
                            }
                            _ = reconnect.settle() => {}
                            _ = shutdown::stopped(&mut stop) => {
                                let _ = client.try_disconnect();
                                return;
                            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::Outcome;
    use crate::model::Source;
    use crate::sinks::exec::tests::sample_job;

    fn sink(forward: bool) -> MqttSink {
        MqttSink::new(Publisher {
            broker: Broker {
                host: "h".into(),
                port: 1883,
                client_id: "c".into(),
                username: None,
                password: None,
                prefix: "chain".into(),
                tls: None,
                max_packet: mqtt::max_packet(65536),
            },
            forward,
        })
    }

    fn topics(sink: &MqttSink, job: &Job) -> Vec<String> {
        sink.publishes(job)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn an_applied_push_is_an_event_and_on_a_relay_also_a_forward() {
        let job = sample_job();
        assert_eq!(topics(&sink(false), &job), ["chain/event/your-app-id/1234"]);
        let both = sink(true).publishes(&job).unwrap();
        assert_eq!(both[0].0, "chain/push/your-app-id/1234");
        assert_eq!(
            String::from_utf8(both[0].1.clone()).unwrap(),
            r#"{"body":"{}","signature":"ab12","msg_id":"m-1"}"#
        );
        let event: serde_json::Value = serde_json::from_slice(&both[1].1).unwrap();
        assert_eq!(event["certificate_id"], "456");
        assert_eq!(event["output_id"], 7);
        assert_eq!(event["body"], "{}");
        assert_eq!(event["signature"], "ab12");
        assert_eq!(event["msg_id"], "m-1");
    }

    #[test]
    fn what_is_not_applied_is_only_forwarded_and_what_came_by_mqtt_never() {
        let mut job = sample_job();
        job.origin.as_mut().unwrap().outcome = Outcome::Stale;
        assert!(topics(&sink(false), &job).is_empty());
        assert_eq!(topics(&sink(true), &job), ["chain/push/your-app-id/1234"]);
        let mut job = sample_job();
        job.origin.as_mut().unwrap().source = Source::Mqtt;
        assert_eq!(topics(&sink(true), &job), ["chain/event/your-app-id/1234"]);
        let mut job = sample_job();
        job.origin.as_mut().unwrap().source = Source::Test;
        assert!(
            topics(&sink(true), &job).is_empty(),
            "a test push goes nowhere"
        );
        let mut job = sample_job();
        job.work = Work::Relayed;
        job.origin.as_mut().unwrap().outcome = Outcome::Challenge;
        job.origin.as_mut().unwrap().account_id = None;
        assert_eq!(topics(&sink(true), &job), ["chain/push/your-app-id/-"]);
    }
}
