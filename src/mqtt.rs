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

use std::time::Duration;

use std::sync::Arc;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, TlsConfiguration, Transport};
use tokio::sync::watch;

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
/// Requests waiting for the event loop; the sink has one publish out at a time and the
/// source's acknowledgements are bounded by the broker's in-flight window.
pub const CHANNEL: usize = 256;
/// The largest packet either way: a Douyin body is under 1 KiB and `--max-body` at most
/// 64 KiB by default; a forward quotes it as a JSON string (escapes) with a little more.
const MAX_PACKET: usize = 256 * 1024;
/// The sign for a missing topic level (a challenge has no account).
pub const NO_LEVEL: &str = "-";

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

impl Broker {
    fn options(&self, suffix: &str, clean_session: bool, manual_acks: bool) -> MqttOptions {
        let mut o = MqttOptions::new(
            format!("{}{suffix}", self.client_id),
            self.host.clone(),
            self.port,
        );
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(clean_session)
            .set_manual_acks(manual_acks)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
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

    /// Connects once; returns the client and its event loop after the broker's CONNACK.
    pub async fn connect(
        &self,
        suffix: &str,
        clean_session: bool,
        manual_acks: bool,
    ) -> Result<(AsyncClient, EventLoop), String> {
        let (client, mut events) =
            AsyncClient::new(self.options(suffix, clean_session, manual_acks), CHANNEL);
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Ok((client, events)),
            Ok(other) => Err(format!("unexpected first packet {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Reconnect pacing and the state reports of one connection (`name` in `links`).
pub struct Reconnect {
    name: LinkName,
    failures: i64,
    writer: Writer,
    state: watch::Sender<LinkState>,
}

impl Reconnect {
    pub fn new(name: LinkName, writer: Writer, state: watch::Sender<LinkState>) -> Self {
        Reconnect {
            name,
            failures: 0,
            writer,
            state,
        }
    }

    /// Records a new connection.
    pub async fn connected(&mut self, broker: &Broker) {
        if self.failures > 0 {
            log::info!(
                "{}: connected to {broker} after {} failed attempt(s)",
                self.name,
                self.failures
            );
        } else {
            log::info!("{}: connected to {broker}", self.name);
        }
        self.failures = 0;
        self.report(LinkState::Connected(broker.to_string())).await;
    }

    /// Records a failed or lost connection and waits before the next attempt (1 s
    /// doubling to 60 s). Returns false when the stop came meanwhile.
    pub async fn failed(&mut self, broker: &Broker, error: &str, stop: &mut Stop) -> bool {
        self.failures += 1;
        let wait = backoff::OUTBOX.wait(self.failures);
        // One line per failure; with the backoff that is at most one a minute.
        log::warn!("{}: {broker}: {error}; reconnecting in {wait:?}", self.name);
        self.report(LinkState::Connecting(format!("{broker}: {error}")))
            .await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = shutdown::stopped(stop) => false,
        }
    }

    async fn report(&self, state: LinkState) {
        self.state.send_replace(state.clone());
        let name = self.name;
        let (word, detail) = match state {
            LinkState::Connecting(d) => (LinkStatus::Connecting, d),
            LinkState::Connected(d) => (LinkStatus::Connected, d),
        };
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
        };
        assert!(!format!("{b:?} {b}").contains("hunter2"));
    }
}
