//! [`Douyin`]: the one client every caller of Douyin's Open Platform shares (catch-up
//! now, the coupon details lookup next). It owns the stable client token: cached, asked
//! for again [`TOKEN_MARGIN`] before it expires (half its life when it lives less than
//! twice that) or once when Douyin calls it invalid,
//! and fetched with each configured secret in turn, so a secret being rotated works
//! whichever of the two Douyin holds. The secrets come from the daemon's reloadable
//! apps (a `watch` of [`Apps`]), so after `systemctl reload` the next token is asked
//! for with the new ones. Calls are serialised over one kept connection: one token and
//! one handshake for every caller.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::{ApiError, ApiUrl, Client, Page, Query, QUERY_PATH};
use crate::intake::Apps;

/// A token is fetched again this long before it expires.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// Douyin's Open Platform for one app (the first `--client-key`).
pub struct Douyin {
    url: ApiUrl,
    client_key: String,
    apps: watch::Receiver<Arc<Apps>>,
    state: Mutex<State>,
}

struct State {
    client: Client,
    token: Option<(super::Token, Instant)>,
}

impl Douyin {
    /// `tls` is for an `https://` `api`; `apps` holds the secrets (swapped on reload).
    pub fn new(
        api: ApiUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
        client_key: String,
        apps: watch::Receiver<Arc<Apps>>,
    ) -> Douyin {
        Douyin {
            url: api.clone(),
            client_key,
            apps,
            state: Mutex::new(State {
                client: Client::new(api, tls),
                token: None,
            }),
        }
    }

    pub fn url(&self) -> &ApiUrl {
        &self.url
    }

    /// One page of the verify-record query (SPEC §11).
    pub async fn verify_records(&self, q: &Query<'_>) -> Result<Page, String> {
        let path = format!("{QUERY_PATH}?{}", q.query_string());
        self.get("verify-record query", &path, super::parse_page)
            .await
    }

    /// One authorised `GET` of `path`, its answer read by `parse`; a token Douyin calls
    /// invalid is replaced once. The error is a log line naming `what` and the API.
    pub async fn get<T>(
        &self,
        what: &str,
        path: &str,
        parse: fn(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, String> {
        let mut state = self.state.lock().await;
        let mut renewed = false;
        loop {
            let token = self.token(&mut state).await?;
            let answer = state
                .client
                .call(
                    "GET",
                    path.to_string(),
                    Some(&token.access_token),
                    String::new(),
                )
                .await;
            match answer.and_then(|a| parse(&a)) {
                Ok(v) => return Ok(v),
                Err(e) if e.token_invalid() && !renewed => {
                    log::info!("douyin: Douyin says the token is no longer valid ({e}); fetching a new one");
                    state.token = None;
                    renewed = true;
                }
                Err(e) => return Err(format!("{what} at {}: {e}", self.url)),
            }
        }
    }

    /// The cached token, or a new one (each secret in order, for a rotation).
    async fn token(&self, state: &mut State) -> Result<super::Token, String> {
        if let Some((t, at)) = &state.token {
            // A short-lived token is kept for half its life, not fetched for every page.
            if at.elapsed() + TOKEN_MARGIN.min(t.expires_in / 2) < t.expires_in {
                return Ok(t.clone());
            }
        }
        let secrets = self.apps.borrow().secrets.clone();
        let mut last: Option<ApiError> = None;
        for (i, secret) in secrets.iter().enumerate() {
            match state.client.stable_token(&self.client_key, secret).await {
                Ok(t) => {
                    log::info!(
                        "douyin: token for app {} obtained with secret #{} (valid {}s)",
                        self.client_key,
                        i + 1,
                        t.expires_in.as_secs()
                    );
                    state.token = Some((t.clone(), Instant::now()));
                    return Ok(t);
                }
                Err(e) => {
                    let retry = matches!(e, ApiError::Douyin { .. });
                    last = Some(e);
                    // Only Douyin's refusal says another secret may do better.
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(format!(
            "no token for app {} from {}: {} (check the client secret, and that the merchant \
             authorised the app for its life services: the verify-record query for catch-up, \
             the certificate query for details)",
            self.client_key,
            self.url,
            last.map_or("no secret".into(), |e| e.to_string())
        ))
    }
}
