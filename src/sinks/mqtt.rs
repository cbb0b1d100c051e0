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
//! possible after a crash or a lost PUBACK, a gap never is). The connection is the
//! [`Link`] task's, kept up with backoff; the outbox's attempt waits for it, so a
//! backlog moves as soon as the broker is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rumqttc::{Event, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};

use super::exec::HookPayload;
use crate::model::{Forwarded, Job, LinkName, Publish, Work};
use crate::mqtt::{self, Broker, LinkState, Reconnect};
use crate::shutdown::{self, Stop};
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
    done: oneshot::Sender<Result<(), String>>,
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

    pub async fn deliver(&self, job: &Job) -> Result<(), String> {
        for (topic, payload) in self.publishes(job)? {
            self.publish(topic, payload).await?;
        }
        Ok(())
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        let mut state = self.state.clone();
        let up = tokio::time::timeout(
            CONNECT_WAIT,
            state.wait_for(|s| matches!(s, LinkState::Connected(_))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !up {
            return Err(match &*self.state.borrow() {
                LinkState::Connecting(why) => format!("not connected ({why})"),
                LinkState::Connected(_) => "not connected".into(),
            });
        }
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request {
                topic,
                payload,
                done,
            })
            .await
            .map_err(|_| "the MQTT connection task has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the MQTT connection task has stopped".to_string())?
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

impl Link {
    /// Keeps the connection up until the stop: connects, publishes what the sink hands
    /// over, matches each PUBACK to its publish, and reconnects with backoff.
    pub async fn run(mut self, writer: Writer, mut stop: Stop) {
        let mut reconnect = Reconnect::new(LinkName::Mqtt, writer, self.state.clone());
        loop {
            let connected = tokio::select! {
                c = self.broker.connect("-pub", true, false) => c,
                _ = shutdown::stopped(&mut stop) => return,
            };
            let error = match connected {
                Ok((client, mut events)) => {
                    reconnect.connected(&self.broker).await;
                    // Publishes handed to the client, waiting for their packet id, and
                    // those sent, waiting for their PUBACK.
                    let mut unsent: VecDeque<oneshot::Sender<Result<(), String>>> = VecDeque::new();
                    let mut sent = HashMap::new();
                    let error = loop {
                        tokio::select! {
                            event = events.poll() => match event {
                                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                    if let Some(done) = unsent.pop_front() {
                                        sent.insert(pkid, done);
                                    }
                                }
                                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                                    if let Some(done) = sent.remove(&ack.pkid) {
                                        let _ = done.send(Ok(()));
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => break format!("connection lost: {e}"),
                            },
                            request = self.requests.recv() => {
                                let Some(r) = request else { return };
                                match client.try_publish(r.topic, QoS::AtLeastOnce, false, r.payload) {
                                    Ok(()) => unsent.push_back(r.done),
                                    Err(e) => { let _ = r.done.send(Err(e.to_string())); }
                                }
                            }
                            _ = shutdown::stopped(&mut stop) => {
                                let _ = client.try_disconnect();
                                return;
                            }
                        }
                    };
                    for done in unsent.into_iter().chain(sent.into_values()) {
                        let _ = done.send(Err(error.clone()));
                    }
                    error
                }
                Err(e) => e,
            };
            if !reconnect.failed(&self.broker, &error, &mut stop).await {
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
