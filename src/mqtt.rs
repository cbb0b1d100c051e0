//! The MQTT broker (SPEC §12): its settings, the topics, and one connection kept up
//! with backoff, for the sink ([`sinks::mqtt`](crate::sinks::mqtt)) and the source
//! ([`sources::mqtt`](crate::sources::mqtt)).
//!
//! The client library is `rumqttc`, driven by our own loop on the one runtime thread.
//! Each connection gets a fresh client and event loop: rumqttc would otherwise resend
//! unacknowledged publishes from its memory after a reconnect, and the outbox, not the
//! client library, is what keeps and resends messages (it knows what is done). The
//! broker keeps the store box's subscription session (clean session off).
//!
//! Each connection's state goes to the `links` table (on changes only), for `coupond
//! status` and systemd's STATUS line.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff;
use crate::model::{LinkName, LinkStatus};
use crate::shutdown::{self, Stop};
use crate::writer::Writer;

/// The default port of `mqtt://`.
pub const PORT: u16 = 1883;
/// The default port of `mqtts://`.
pub const TLS_PORT: u16 = 8883;
/// How often the client pings an idle broker; a dead link is noticed within ~1.5x.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The store box's receive window (MQTT 5 Receive Maximum): the broker sends at most
/// this many publishes before it needs the first PUBACK, so a burst of any size waits
/// on the broker, not in the box's memory, and they still commit together.
pub const RECEIVE_MAXIMUM: u16 = 32;
/// Requests waiting for the event loop: the sink has one publish out at a time and the
/// source's acknowledgements are bounded by [`RECEIVE_MAXIMUM`], so it never fills.
pub const CHANNEL: usize = 256;
/// The largest packet MQTT can carry (a remaining length of 256 MiB - 1).
const MQTT_MAX_PACKET: u64 = 268_435_455;
/// The sign for a missing topic level (a challenge has no account).
pub const NO_LEVEL: &str = "-";
/// A connection that stayed up this long is stable: only then does the reconnect
/// backoff start again from 1 s (a broker that drops every connection after a second
/// is retried less and less often, not every 2 s forever).
pub const STABLE: Duration = Duration::from_secs(60);
/// At most one warning line per link per this long; the rest are summed up.
pub const LINE_EVERY: Duration = Duration::from_secs(60);

/// The largest MQTT packet a relay's forward of a push of `max_body` bytes can be,
/// which both connections declare as their Maximum Packet Size (MQTT 5): the body as a
/// JSON string (every byte may become a six-byte `\u00XX`), the account id it holds as
/// a topic level, and 16 KiB for the rest (prefix, client key, signature, `msg_id`,
/// which the store caps at 128 characters, keys and headers). The broker never sends
/// the box a larger packet: it drops it itself (MQTT 5 §3.1.2.11.4), so an oversized
/// publish can neither stop the session nor reach the box's memory.
pub fn max_packet(max_body: usize) -> u32 {
    (7 * max_body as u64 + 16 * 1024).min(MQTT_MAX_PACKET) as u32
}

/// Where the broker is and who we are to it.
#[derive(Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// `--mqtt-client-id`, without the `-pub` / `-sub` of each connection.
    pub client_id: String,
    pub username: Option<String>,
    /// From `--mqtt-password-file`; never printed (see the `Debug` below).
    pub password: Option<String>,
    /// `--mqtt-topic`.
    pub prefix: String,
    /// `mqtts://`: the TLS client configuration (`tls::client_config`, `--mqtt-ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The Maximum Packet Size declared to the broker: [`max_packet`] of `--max-body`.
    pub max_packet: u32,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.is_some())
            .field("max_packet", &self.max_packet)
            .finish()
    }
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` as (host, port, whether TLS).
pub fn parse_url(v: &str) -> Result<(String, u16, bool), String> {
    const WANT: &str = "want mqtt://HOST[:PORT] or mqtts://HOST[:PORT]";
    let (rest, tls, default_port) = match v.strip_prefix("mqtts://") {
        Some(rest) => (rest, true, TLS_PORT),
        None => (v.strip_prefix("mqtt://").ok_or(WANT)?, false, PORT),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>().map_err(|_| format!("{WANT}: bad port"))?,
        ),
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', '?', '#']) || port == 0 {
        return Err(WANT.into());
    }
    Ok((host.to_string(), port, tls))
}

/// A topic level for `client_key` or `account_id`: MQTT's wildcards and separators
/// cannot appear in a level, so they (and an absent value) become `-`.
pub fn level(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() && !s.contains(['/', '+', '#', '\0']) => s,
        _ => NO_LEVEL,
    }
}

/// The client id's default: `coupond-` and the start of `/etc/machine-id`, stable
/// across restarts (the broker keeps the store box's session under it).
pub fn default_client_id(machine_id: &str) -> Option<String> {
    let id = machine_id.trim();
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("coupond-{}", &id[..12]))
}

/// A connection's state, as `coupond status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting(String),
    Connected(String),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The broker gave our client id to another connection (MQTT 5 reason 0x8E, as
    /// EMQX says it): some other client uses the same id.
    TakenOver,
    /// The broker closed the connection without a word (how mosquitto 2.0 drops the
    /// older of two connections with one client id, among other reasons).
    Closed,
    /// Anything else, as a line for the log.
    Other(String),
}

impl Lost {
    /// Why `poll` failed.
    pub fn of(e: &ConnectionError) -> Lost {
        match e {
            ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code: DisconnectReasonCode::SessionTakenOver,
                ..
            }) => Lost::TakenOver,
            ConnectionError::MqttState(StateError::ConnectionAborted) => Lost::Closed,
            e => Lost::Other(format!("connection lost: {e}")),
        }
    }

    /// Whether another client with our id may have taken the connection.
    fn taken(&self) -> bool {
        matches!(self, Lost::TakenOver | Lost::Closed)
    }
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenOver => f.write_str("the broker handed our client id to another connection"),
            Lost::Closed => f.write_str("the broker closed the connection"),
            Lost::Other(e) => f.write_str(e),
        }
    }
}

impl Broker {
    /// MQTT 5 options. `persistent`: the broker keeps the session (and what arrives for
    /// it) while we are away, for ever; otherwise each connection starts clean.
    fn options(&self, suffix: &str, persistent: bool, manual_acks: bool) -> MqttOptions {
        let mut o = MqttOptions::new(
            format!("{}{suffix}", self.client_id),
            self.host.clone(),
            self.port,
        );
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_start(!persistent)
            .set_manual_acks(manual_acks)
            .set_request_channel_capacity(CHANNEL)
            .set_max_packet_size(Some(self.max_packet))
            .set_receive_maximum(Some(RECEIVE_MAXIMUM));
        if persistent {
            o.set_session_expiry_interval(Some(u32::MAX));
        }
        if let Some(config) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        o
    }

    /// Connects once; returns the client and its event loop after the broker's CONNACK,
    /// with the largest packet the broker takes, when it says.
    pub async fn connect(
        &self,
        suffix: &str,
        persistent: bool,
        manual_acks: bool,
    ) -> Result<(AsyncClient, EventLoop, Option<u32>), String> {
        let (client, mut events) =
            AsyncClient::new(self.options(suffix, persistent, manual_acks), CHANNEL);
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let limit = ack.properties.and_then(|p| p.max_packet_size);
                Ok((client, events, limit))
            }
            Ok(other) => Err(format!("unexpected first packet {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// This many connections in a row taken over or closed by the broker before they were
/// stable: another client most likely holds the same id (our own reconnects never
/// take over a live connection of ours; mosquitto 2.0 drops the older one silently).
const TAKEN_OVER_IS_DUPLICATE: u32 = 3;
/// Up this long without being taken over: the duplicate is gone.
const DUPLICATE_CLEARS: Duration = Duration::from_secs(600);

/// Reconnect pacing and the state reports of one connection (`name` in `links`).
///
/// The backoff (1 s doubling to 60 s) starts again only after a connection stayed up
/// for [`STABLE`]; a failure line goes at most every [`LINE_EVERY`], the rest summed up
/// in the next (a reconnection after failures is said once it proved stable); the
/// `links` row is written when its word changes (connected, connecting,
/// [`LinkStatus::DuplicateClientId`]), not on every attempt.
pub struct Reconnect {
    name: LinkName,
    writer: Writer,
    state: watch::Sender<LinkState>,
    /// The broker, for the lines.
    broker: String,
    client_id: String,
    /// Failed or lost connections since the last stable one.
    failures: i64,
    /// When the current connection came up.
    up_since: Option<Instant>,
    /// Connections taken over by another client with our id.
    taken_over: u32,
    last_line: Option<Instant>,
    /// Events not logged since the last line.
    held: u32,
    /// The `links` word as last written.
    written: Option<LinkStatus>,
}

impl Reconnect {
    pub fn new(
        name: LinkName,
        suffix: &str,
        broker: &Broker,
        writer: Writer,
        state: watch::Sender<LinkState>,
    ) -> Self {
        Reconnect {
            name,
            writer,
            state,
            broker: broker.to_string(),
            client_id: format!("{}{suffix}", broker.client_id),
            failures: 0,
            up_since: None,
            taken_over: 0,
            last_line: None,
            held: 0,
            written: None,
        }
    }

    fn duplicate(&self) -> bool {
        self.taken_over >= TAKEN_OVER_IS_DUPLICATE
    }

    fn duplicate_detail(&self) -> String {
        format!(
            "{}: the broker keeps closing our connections soon after accepting them: client id {} \
             is most likely in use by another client too (a box cloned from this one's image?): \
             give each box its own --mqtt-client-id, or regenerate /etc/machine-id on the clone \
             (rm /etc/machine-id; systemd-machine-id-setup)",
            self.broker, self.client_id
        )
    }

    /// Logs `line` now, or holds it when a line went out less than [`LINE_EVERY`] ago.
    fn line(&mut self, now: Instant, level: log::Level, line: &str) {
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < LINE_EVERY)
        {
            self.held += 1;
            return;
        }
        match std::mem::take(&mut self.held) {
            0 => log::log!(level, "{}: {line}", self.name),
            n => log::log!(
                level,
                "{}: {line} (and {n} more failed attempt(s) since the last line)",
                self.name
            ),
        }
        self.last_line = Some(now);
    }

    /// Records a new connection. Said at once when it is the first, or the first after
    /// a stable one; after failures, once it has proved stable ([`Reconnect::settle`]).
    pub async fn connected(&mut self) {
        let now = Instant::now();
        self.up_since = Some(now);
        self.state
            .send_replace(LinkState::Connected(self.broker.clone()));
        if self.duplicate() {
            let detail = self.duplicate_detail();
            self.report(LinkStatus::DuplicateClientId, &detail).await;
            return;
        }
        if self.failures == 0 {
            log::info!("{}: connected to {}", self.name, self.broker);
        }
        let broker = self.broker.clone();
        self.report(LinkStatus::Connected, &broker).await;
    }

    /// While connected: resolves never, but on the way notes when the connection has
    /// been up for [`STABLE`] (the backoff starts again; a held line is said) and for
    /// [`DUPLICATE_CLEARS`] (a duplicate id is no longer reported).
    pub async fn settle(&mut self) {
        let Some(up) = self.up_since else {
            return std::future::pending().await;
        };
        if self.failures > 0 {
            tokio::time::sleep_until(up + STABLE).await;
            let line = format!(
                "connected to {}, stable again after {} failed attempt(s)",
                self.broker, self.failures
            );
            self.failures = 0;
            self.held = 0;
            log::info!("{}: {line}", self.name);
        }
        if self.taken_over > 0 {
            tokio::time::sleep_until(up + DUPLICATE_CLEARS).await;
            let was_duplicate = self.duplicate();
            self.taken_over = 0;
            if was_duplicate {
                self.line(
                    Instant::now(),
                    log::Level::Info,
                    &format!("connected to {}, no longer taken over", self.broker),
                );
                let broker = self.broker.clone();
                self.report(LinkStatus::Connected, &broker).await;
            }
        }
        std::future::pending().await
    }

    /// Records a failed or lost connection and waits before the next attempt. Returns
    /// false when the stop came meanwhile.
    pub async fn failed(&mut self, lost: &Lost, stop: &mut Stop) -> bool {
        let now = Instant::now();
        let up = self
            .up_since
            .take()
            .map(|t| now.saturating_duration_since(t));
        if up.is_some_and(|up| up >= STABLE) && !lost.taken() {
            self.failures = 0;
        }
        self.failures += 1;
        let was_duplicate = self.duplicate();
        match (lost.taken(), up) {
            (true, Some(up)) if up < STABLE => self.taken_over += 1,
            (true, _) => {}
            (false, _) => self.taken_over = 0,
        }
        if self.duplicate() && !was_duplicate {
            // Said at once, whatever the pace of the other lines: it needs a person.
            self.last_line = None;
        }
        let wait = backoff::OUTBOX.wait(self.failures);
        let (word, detail) = match self.duplicate() {
            true => (LinkStatus::DuplicateClientId, self.duplicate_detail()),
            false => (LinkStatus::Connecting, format!("{}: {lost}", self.broker)),
        };
        let level = match self.duplicate() {
            true => log::Level::Error,
            false => log::Level::Warn,
        };
        self.line(now, level, &format!("{detail}; reconnecting in {wait:?}"));
        self.state
            .send_replace(LinkState::Connecting(detail.clone()));
        self.report(word, &detail).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = shutdown::stopped(stop) => false,
        }
    }

    /// Writes the `links` row when its word changes.
    async fn report(&mut self, word: LinkStatus, detail: &str) {
        if self.written == Some(word) {
            return;
        }
        self.written = Some(word);
        let (name, detail) = (self.name, detail.to_string());
        let written = self
            .writer
            .call(move |s| s.set_link(name, word, &detail))
            .await;
        if let Ok(Err(e)) = written {
            log::warn!("{name}: cannot record the connection state: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_url("mqtt://broker"),
            Ok(("broker".into(), 1883, false))
        );
        assert_eq!(
            parse_url("mqtt://10.0.0.2:1884/"),
            Ok(("10.0.0.2".into(), 1884, false))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884"),
            Ok(("::1".into(), 1884, false))
        );
        assert_eq!(
            parse_url("mqtts://hq.example.com"),
            Ok(("hq.example.com".into(), 8883, true))
        );
        for bad in [
            "broker",
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://u@h",
            "mqtt://h:x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_levels_never_carry_wildcards() {
        assert_eq!(level(Some("1234")), "1234");
        for bad in [None, Some(""), Some("a/b"), Some("+"), Some("#x")] {
            assert_eq!(level(bad), NO_LEVEL);
        }
    }

    #[test]
    fn a_forward_of_the_largest_body_fits_even_when_every_byte_is_escaped() {
        let body = "\u{1}".repeat(65536);
        let forward = serde_json::json!({"body": body, "signature": "a".repeat(40), "msg_id": "\u{1}".repeat(128)});
        let topic = format!(
            "coupond/push/{}/{}",
            "k".repeat(64),
            "9".repeat(65536 - 200)
        );
        let packet = serde_json::to_vec(&forward).unwrap().len() + topic.len() + 16;
        assert!(packet <= max_packet(65536) as usize, "{packet}");
        assert_eq!(max_packet(usize::MAX / 8), 268_435_455);
    }

    #[test]
    fn client_ids_come_from_the_machine_id() {
        assert_eq!(
            default_client_id("0123456789abcdef0123456789abcdef\n").as_deref(),
            Some("coupond-0123456789ab")
        );
        assert_eq!(default_client_id(""), None);
        assert_eq!(default_client_id("not-hex-not-hex-not"), None);
    }

    #[test]
    fn the_password_is_never_printed() {
        let b = Broker {
            host: "h".into(),
            port: 1,
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
            prefix: "coupond".into(),
            tls: None,
            max_packet: max_packet(65536),
        };
        assert!(!format!("{b:?} {b}").contains("hunter2"));
    }
}
