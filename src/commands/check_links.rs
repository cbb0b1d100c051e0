//! `coupond check`'s lines for what lies beyond the box: Douyin's API (catch-up, SPEC
//! §11: a token is fetched with the configured key and secret, then dropped, never
//! shown; the details lookup, SPEC §13, uses the same token) and the MQTT brokers (SPEC §12: one connection and its CONNACK, under a
//! client id of its own, `-check`, so the running daemon's sessions are not taken over).

use std::time::Duration;

use crate::commands::verdict::{line, Level, Line};
use crate::config::ServeConfig;
use crate::douyin::Client;
use crate::mqtt::Broker;

/// How long a broker may take to answer the connection.
const BROKER_WAIT: Duration = Duration::from_secs(10);

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The details lookup (SPEC §13): off, or on with the token the catch-up line had (or
/// could not have: then receipts go without details, a warning, since pushes still
/// print).
pub fn details(cfg: &ServeConfig, catchup: Option<&Line>) -> Line {
    let Some(c) = &cfg.catchup else {
        return line(
            Level::Ok,
            "details",
            "off (no --account-id): receipts show the coupon's ids, not what was bought",
        );
    };
    if c.details.is_none() {
        return line(
            Level::Ok,
            "details",
            "off (--details off): receipts show the coupon's ids",
        );
    }
    match catchup.map(|l| l.level) {
        Some(Level::Ok) => line(
            Level::Ok,
            "details",
            "on: a token can be had (as for catch-up); Douyin must also let the app query \
             the merchant's coupons (life.capacity.fulfilment, authorised by the merchant)",
        ),
        _ => line(
            Level::Warn,
            "details",
            "on, but no token can be had now (see the catch-up line): receipts go out \
             without the deal, the amount and the store",
        ),
    }
}

/// With catch-up on: whether a token can be had.
pub fn catchup(cfg: &ServeConfig, secrets: &[String]) -> Option<Line> {
    let c = cfg.catchup.as_ref()?;
    let Some(secret) = secrets.first() else {
        return Some(line(
            Level::Fail,
            "catch-up",
            "no token without a client secret (see the secret line)",
        ));
    };
    let key = &cfg.apps.client_keys[0];
    let tls = match c.api.https {
        true => match crate::tls::client_config(c.ca.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => return Some(line(Level::Fail, "catch-up", format!("--douyin-ca: {e}"))),
        },
        false => None,
    };
    let mut client = Client::new(c.api.clone(), tls);
    let got = block_on(async {
        tokio::time::timeout(
            crate::douyin::CALL_TIMEOUT,
            client.stable_token(key, secret),
        )
        .await
    });
    Some(match got {
        Ok(Ok(Ok(_token))) => line(
            Level::Ok,
            "catch-up",
            format!(
                "a token for app {key} was had from {} (account {}, every {:?})",
                c.api, c.account_id, c.every
            ),
        ),
        Ok(Ok(Err(e))) => line(
            Level::Fail,
            "catch-up",
            format!(
                "no token for app {key} from {}: {e} (is the client secret right? does the \
                 box reach {}? under systemd it needs the catch-up drop-in, README \
                 \"Catch-up from Douyin\")",
                c.api, c.api
            ),
        ),
        Ok(Err(_)) => line(
            Level::Fail,
            "catch-up",
            format!(
                "no answer from {} within {:?} (does the box reach the internet?)",
                c.api,
                crate::douyin::CALL_TIMEOUT
            ),
        ),
        Err(e) => line(Level::Fail, "catch-up", e),
    })
}

/// Each configured broker: does it accept a connection with these credentials?
pub fn brokers(cfg: &ServeConfig) -> Vec<Line> {
    let mut out = Vec::new();
    if let Some(p) = &cfg.outputs.mqtt {
        out.push(broker("mqtt", &p.broker));
    }
    if let Some(s) = &cfg.mqtt_source {
        let same = cfg
            .outputs
            .mqtt
            .as_ref()
            .is_some_and(|p| p.broker.host == s.broker.host && p.broker.port == s.broker.port);
        if !same {
            out.push(broker("mqtt-src", &s.broker));
        }
    }
    out
}

fn broker(what: &'static str, b: &Broker) -> Line {
    let url = format!(
        "{}://{}:{}",
        if b.tls.is_some() { "mqtts" } else { "mqtt" },
        b.host,
        b.port
    );
    let got = block_on(async {
        let connected = tokio::time::timeout(BROKER_WAIT, b.connect("-check", false, false)).await;
        match connected {
            Ok(Ok((client, mut events, _))) => {
                // Say goodbye properly, so the broker logs no lost client.
                let _ = client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
                Ok(Ok(()))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    });
    match got {
        Ok(Ok(Ok(()))) => line(
            Level::Ok,
            what,
            format!(
                "{url} accepts a connection (client id {}-check)",
                b.client_id
            ),
        ),
        Ok(Ok(Err(e))) => line(
            Level::Fail,
            what,
            format!(
                "{url}: {e} (is the broker up and reachable? user name and password right? \
                 under systemd, a broker outside the LAN needs IPAddressAllow= in a drop-in)"
            ),
        ),
        Ok(Err(_)) => line(
            Level::Fail,
            what,
            format!("{url}: no answer within {BROKER_WAIT:?}"),
        ),
        Err(e) => line(Level::Fail, what, e),
    }
}
