//! The counter display (`--display-listen`): a page for a kiosk browser on the box and a
//! JSON endpoint beside it, on their own port (never the webhook port, which the tunnel
//! exposes).
//!
//! The page shows the latest coupons, newest first. Its data is a small in-memory
//! [`Feed`]: seeded from the `certificates` table at start, then updated by `display`
//! output jobs, so a coupon appears once its message is committed and the display job
//! is delivered (at once, unless the daemon restarts in between, when the job is
//! redelivered: an update keyed by certificate is harmless twice). The page long-polls
//! `/api/coupons?after=GENERATION`, so a change shows within a moment, and says plainly
//! when the daemon cannot be reached. No external assets: the box is offline.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::coupon::Action;
use crate::details::{yuan, Details};
use crate::model::JobEvent;
use crate::sanitize;
use crate::server::{json, text, Body};
use crate::shutdown::{self, Stop};
use crate::sinks::mask_code;
use crate::store::CertificateRow;
use crate::time;

/// Coupons the feed keeps (the page shows them all).
pub const FEED_LEN: usize = 12;
/// How long a long poll waits for a change before answering anyway.
const LONG_POLL: Duration = Duration::from_secs(20);

const PAGE: &str = include_str!("display.html");

/// One coupon as the screen shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Entry {
    pub certificate_id: String,
    pub status: String,
    pub headline: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    /// Event time in the box's local time zone.
    pub event_time: String,
    pub msg_time: i64,
    pub reprint: bool,
    /// Recovered by catch-up (补录).
    pub recovered: bool,
    /// A test push: shown marked 测试.
    pub test: bool,
    /// What was bought (SPEC §13), shown large: the deal's title and the amount paid
    /// (`￥99.00`), when known; filled in place when the details come late.
    pub title: Option<String>,
    pub pay: Option<String>,
}

impl Entry {
    pub fn from_event(e: &JobEvent, reprint: bool) -> Entry {
        let mut entry = Entry {
            reprint,
            recovered: e.from_catchup(),
            test: e.test(),
            ..Entry::new(
                e.action,
                &e.certificate_id,
                &e.order_id,
                &e.code,
                &e.account_id,
                e.msg_time,
            )
        };
        entry.set_details(e.details.as_ref());
        entry
    }

    pub fn from_row(r: &CertificateRow) -> Entry {
        let mut entry = Entry {
            test: r.test,
            ..Entry::new(
                r.status.action(),
                &r.certificate_id,
                &r.order_id,
                &r.code,
                &r.account_id,
                r.status_msg_time,
            )
        };
        entry.set_details(r.details.as_ref());
        entry
    }

    /// The page escapes what it shows; the sanitizer still takes out what would break
    /// a line, as everywhere Douyin's text is shown.
    fn set_details(&mut self, d: Option<&Details>) {
        let Some(d) = d else { return };
        self.title = d.title.as_deref().map(sanitize::receipt_field);
        self.pay = d.pay_amount.map(|fen| format!("￥{}", yuan(fen)));
    }

    fn new(
        action: Action,
        certificate_id: &str,
        order_id: &Option<String>,
        code: &Option<String>,
        account_id: &Option<String>,
        msg_time: i64,
    ) -> Entry {
        Entry {
            certificate_id: certificate_id.to_string(),
            status: action.status().as_str().to_string(),
            headline: action.headline_zh().to_string(),
            order_id: order_id.clone(),
            code: code.as_deref().map(mask_code),
            account_id: account_id.clone(),
            event_time: time::local_datetime(msg_time),
            msg_time,
            reprint: false,
            recovered: false,
            test: false,
            title: None,
            pay: None,
        }
    }
}

/// The latest coupons, newest first, and the trouble staff must see, with a generation
/// number that changes with them.
pub struct Feed {
    entries: Mutex<Vec<Entry>>,
    trouble: Mutex<Trouble>,
    generation: watch::Sender<u64>,
}

/// What goes wrong that the counter should show (SPEC §7, "visible trouble"): pushes for
/// our app whose signature fails (the secret is probably wrong), and the printer's last
/// error until a receipt prints again.
#[derive(Default)]
struct Trouble {
    signature_failures: VecDeque<std::time::Instant>,
    printer: Option<String>,
}

/// Signature failures remembered for the banner: the last hour, at most this many.
const SIGNATURE_WINDOW: Duration = Duration::from_secs(3600);
const SIGNATURE_KEEP: usize = 1000;

#[derive(serde::Serialize)]
struct Snapshot<'a> {
    generation: u64,
    coupons: &'a [Entry],
    /// Banners, in Chinese for the staff.
    alerts: Vec<String>,
}

impl Feed {
    pub fn new(seed: Vec<Entry>) -> Feed {
        let mut seed = seed;
        seed.truncate(FEED_LEN);
        Feed {
            entries: Mutex::new(seed),
            trouble: Mutex::new(Trouble::default()),
            generation: watch::channel(1).0,
        }
    }

    /// A push for a configured app failed the signature check.
    pub fn signature_failure(&self) {
        self.count_signature_failures(1, false);
    }

    /// The database's count of signature failures in the last hour, at start and after a
    /// reload (whose reverify removes the rejected pushes the new secret verifies, so a
    /// fixed secret clears the banner at once).
    pub fn reset_signature_failures(&self, n: usize) {
        self.count_signature_failures(n, true);
    }

    fn count_signature_failures(&self, n: usize, reset: bool) {
        let now = std::time::Instant::now();
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        if reset {
            t.signature_failures.clear();
        }
        for _ in 0..n.min(SIGNATURE_KEEP) {
            if t.signature_failures.len() == SIGNATURE_KEEP {
                t.signature_failures.pop_front();
            }
            t.signature_failures.push_back(now);
        }
        drop(t);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The printer's state after an attempt: its error, or `None` once a receipt printed.
    pub fn printer(&self, error: Option<&str>) {
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        if t.printer.as_deref() == error {
            return;
        }
        t.printer = error.map(String::from);
        drop(t);
        self.generation.send_modify(|g| *g += 1);
    }

    fn alerts(&self) -> Vec<String> {
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        while t
            .signature_failures
            .front()
            .is_some_and(|at| at.elapsed() > SIGNATURE_WINDOW)
        {
            t.signature_failures.pop_front();
        }
        let mut alerts = Vec::new();
        if !t.signature_failures.is_empty() {
            alerts.push(format!(
                "签名校验失败：最近一小时 {} 次推送未通过签名校验，客户端密钥可能有误，新的核销不会显示和打印",
                t.signature_failures.len()
            ));
        }
        if let Some(e) = &t.printer {
            alerts.push(format!("打印机故障（缺纸、离线或未连接）：{e}"));
        }
        alerts
    }

    /// Details that came after the coupon was shown: its entry is updated where it is
    /// (SPEC §13), not moved to the top.
    pub fn details(&self, d: &Details) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries
            .iter_mut()
            .find(|x| x.certificate_id == d.certificate_id)
        else {
            return;
        };
        entry.set_details(Some(d));
        drop(entries);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Puts `e` first, replacing the same coupon's older entry.
    pub fn upsert(&self, e: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|x| x.certificate_id != e.certificate_id);
        entries.insert(0, e);
        entries.truncate(FEED_LEN);
        drop(entries);
        self.generation.send_modify(|g| *g += 1);
    }

    fn json(&self) -> Vec<u8> {
        let alerts = self.alerts();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let generation = *self.generation.borrow();
        serde_json::to_vec(&Snapshot {
            generation,
            coupons: &entries,
            alerts,
        })
        .unwrap_or_default()
    }

    /// Waits until the generation differs from `seen`, at most `LONG_POLL`, or `stop`.
    async fn changed_since(&self, seen: u64, stop: &mut Stop) {
        let mut rx = self.generation.subscribe();
        let wait = rx.wait_for(|g| *g != seen);
        tokio::select! {
            _ = tokio::time::timeout(LONG_POLL, wait) => {}
            _ = shutdown::stopped(stop) => {}
        }
    }
}

/// Answers one request on the display port.
pub async fn handle(
    feed: Arc<Feed>,
    mut stop: Stop,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    let mut resp = match req.uri().path() {
        "/" => {
            let mut r = text(StatusCode::OK, PAGE);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/api/coupons" => {
            let query: HashMap<&str, &str> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            if let Some(seen) = query.get("after").and_then(|v| v.parse::<u64>().ok()) {
                feed.changed_since(seen, &mut stop).await;
            }
            json(StatusCode::OK, feed.json())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, status: &str) -> Entry {
        Entry {
            certificate_id: id.into(),
            status: status.into(),
            headline: String::new(),
            order_id: None,
            code: None,
            account_id: None,
            event_time: String::new(),
            msg_time: 0,
            reprint: false,
            recovered: false,
            test: false,
            title: None,
            pay: None,
        }
    }

    #[test]
    fn late_details_fill_the_coupon_in_place() {
        let feed = Feed::new(vec![entry("a", "verified"), entry("b", "verified")]);
        let mut d = crate::sinks::exec::tests::sample_details();
        d.certificate_id = "b".into();
        feed.details(&d);
        let e = feed.entries.lock().unwrap().clone();
        assert_eq!(e[1].certificate_id, "b", "not moved");
        assert_eq!(
            (e[1].title.as_deref(), e[1].pay.as_deref()),
            (Some("双人套餐"), Some("￥99.00"))
        );
        assert_eq!(*feed.generation.borrow(), 2);
        d.certificate_id = "unknown".into();
        feed.details(&d);
        assert_eq!(*feed.generation.borrow(), 2, "nothing shown changed");
    }

    #[test]
    fn newest_first_one_entry_per_coupon_bounded() {
        let feed = Feed::new(vec![entry("a", "verified")]);
        feed.upsert(entry("b", "verified"));
        feed.upsert(entry("a", "cancelled"));
        {
            let e = feed.entries.lock().unwrap();
            let ids: Vec<(&str, &str)> = e
                .iter()
                .map(|x| (x.certificate_id.as_str(), x.status.as_str()))
                .collect();
            assert_eq!(ids, [("a", "cancelled"), ("b", "verified")]);
        }
        for i in 0..50 {
            feed.upsert(entry(&format!("c{i}"), "verified"));
        }
        assert_eq!(feed.entries.lock().unwrap().len(), FEED_LEN);
        assert_eq!(*feed.generation.borrow(), 53);
    }
}
