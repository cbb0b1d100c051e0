//! What traffic that is not Douyin's may cost: at most one log line per 10 s per kind,
//! rejected rows written at a bounded rate, and counts written instead (SPEC §3, "The
//! tunnel is the internet").
//!
//! Whoever reaches the tunnel can send requests as fast as the link carries them, all from
//! the tunnel's own address, so nothing here is per address. Three pure pieces, each
//! given the time so that it can be tested without waiting:
//!
//! - [`Throttle`]: one kind of warning (401, 404, an evicted connection, ...). The first
//!   after a quiet [`EVERY`] is logged at once, so an installer's test push shows up
//!   immediately; the rest are counted and summed up in one line once [`EVERY`] is over.
//! - [`Bucket`]: rejected rows are written [`REJECTED_BURST`] at once, then one per
//!   [`REJECTED_REFILL`]. 401 and 403 have a bucket each: a 401 flood (anyone) never
//!   crowds out 403s (only a holder of a configured secret can sign one).
//! - a tally of what was not written: rejected requests over the rate, 404s, 413s, and
//!   the repeats of a rejected body already stored (a sender's retries, kept as one row
//!   with a count). [`run`] writes it through the writer at most once per [`EVERY`], the
//!   first time at once.
//!
//! A rejected request is never answered 200 (bar the URL check, which stores nothing
//! Douyin relies on), so leaving its row out loses nothing SPEC promises. Signed messages
//! never come here: they are always committed before their 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::Level;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::intake::Outcome;
use crate::model::Ack;
use crate::shutdown::{self, Stop};
use crate::store::{Counted, Repeated};
use crate::time;
use crate::writer::Writer;

/// At most one line per kind, and one write of the counts, per this long.
pub const EVERY: Duration = Duration::from_secs(10);
/// Rejected rows written at once before the rate applies (per status).
///
/// A wrong secret rejects every real push; those rows are what `reverify` recovers, so
/// a store's real traffic must fit: pushes come one per redemption (their retries are
/// repeats, not rows), a few a minute at the busiest.
pub const REJECTED_BURST: u32 = 30;
/// One more rejected row may be written per this long (per status): 6 a minute.
pub const REJECTED_REFILL: Duration = Duration::from_secs(10);
/// Stored rejected bodies remembered, so that their repeats count on their row instead
/// of writing again. The bucket bounds how many can be stored, so this rarely fills.
const RECENT_CAP: usize = 1024;
/// How long a stored rejected body is remembered (Douyin retries within seconds).
const RECENT_FOR: Duration = Duration::from_secs(600);
/// Signed messages remembered by body digest (for [`RECENT_FOR`]), so that a replay of
/// one costs a count in memory, not a row update and a log line (a replay needs no
/// secret: anyone who saw a push can send it again). Past this many, a replay of
/// another one is written as before, and is then remembered in its turn if room came.
///
/// 1,792 is 7/8 of 2,048: the most a hash table of 2,048 slots holds before it doubles
/// (a store's real pushes in 10 minutes are a few hundred at the busiest). Each slot is
/// 56 bytes (the digest as 20 bytes, the rest numbers), so the whole table is 115 KB;
/// with 40 hex digits and two strings per entry, 4,096 entries and 8,192 slots it was
/// about 1 MB of the daemon's resident memory under load (issue 22).
pub const KNOWN_CAP: usize = 1792;

/// One kind of warning, logged at most once per [`EVERY`].
#[derive(Debug)]
pub struct Throttle {
    level: Level,
    last_line: Option<Instant>,
    held: u64,
    last: String,
}

impl Throttle {
    pub fn new(level: Level) -> Throttle {
        Throttle {
            level,
            last_line: None,
            held: 0,
            last: String::new(),
        }
    }

    fn may_log(&self, now: Instant) -> bool {
        self.last_line
            .map_or(true, |t| now.saturating_duration_since(t) >= EVERY)
    }

    /// An event: the line to log now, or `None` when it is held for the summary.
    pub fn event(&mut self, now: Instant, line: String) -> Option<String> {
        if !self.may_log(now) {
            self.held += 1;
            self.last = line;
            return None;
        }
        let out = match self.held {
            0 => line,
            n => format!(
                "{line} (and {n} more like it in the last {})",
                self.since(now)
            ),
        };
        self.logged(now);
        Some(out)
    }

    /// The summary of held events, once [`EVERY`] has passed since the last line (or
    /// at once when `last`: the daemon is stopping).
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        self.tick_or_last(now, false)
    }

    fn tick_or_last(&mut self, now: Instant, last: bool) -> Option<String> {
        if self.held == 0 || !(last || self.may_log(now)) {
            return None;
        }
        let last = std::mem::take(&mut self.last);
        let out = match self.held - 1 {
            0 => last,
            n => format!(
                "{last} (and {n} more like it in the last {})",
                self.since(now)
            ),
        };
        self.logged(now);
        Some(out)
    }

    /// When [`Throttle::tick`] will have something to say.
    pub fn due(&self) -> Option<Instant> {
        // Held events always follow a logged line.
        self.last_line.filter(|_| self.held > 0).map(|t| t + EVERY)
    }

    /// [`Throttle::event`], logged.
    pub fn note(&mut self, now: Instant, line: String) {
        let out = self.event(now, line);
        self.log(out);
    }

    /// [`Throttle::tick`], logged; everything held when `last`.
    pub fn flush(&mut self, now: Instant, last: bool) {
        let out = self.tick_or_last(now, last);
        self.log(out);
    }

    fn log(&self, line: Option<String>) {
        if let Some(line) = line {
            log::log!(self.level, "{line}");
        }
    }

    fn since(&self, now: Instant) -> String {
        let since = self
            .last_line
            .map_or(EVERY, |t| now.saturating_duration_since(t));
        format!("{:.0?}", Duration::from_millis(since.as_millis() as u64))
    }

    fn logged(&mut self, now: Instant) {
        self.last_line = Some(now);
        self.held = 0;
        self.last.clear();
    }
}

/// A token bucket: `burst` at once, then one per `refill`.
#[derive(Debug)]
pub struct Bucket {
    burst: u32,
    refill: Duration,
    tokens: u32,
    since: Instant,
}

impl Bucket {
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Bucket {
        Bucket {
            burst,
            refill,
            tokens: burst,
            since: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        // Capped at the burst, so that the multiplication below cannot overflow.
        let earned =
            (elapsed.as_nanos() / self.refill.as_nanos().max(1)).min(u128::from(self.burst)) as u32;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(self.burst);
            self.since += self.refill * earned;
        }
        if self.tokens == self.burst {
            // A full bucket earns nothing: start counting from now.
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The kinds of request that are logged at most once per [`EVERY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// 401: missing or wrong signature.
    Unsigned,
    /// 403: signed for an app that is not configured.
    UnknownApp,
    /// A URL check with a bad signature, answered anyway.
    UnsignedChallenge,
    /// 404: another path.
    NotFound,
    /// 405: another method on the path.
    Method,
    /// 413: a body over `--max-body`.
    TooLarge,
    /// 408: a body that did not arrive in time.
    TooSlow,
    /// 400: a body broken off.
    Broken,
    /// 503: large bodies in hand hold all the memory they may.
    Busy,
    /// A signed message stored before, sent again (a retry, or a replay).
    Redelivery,
}

impl Noise {
    const ALL: [Noise; 10] = [
        Noise::Unsigned,
        Noise::UnknownApp,
        Noise::UnsignedChallenge,
        Noise::NotFound,
        Noise::Method,
        Noise::TooLarge,
        Noise::TooSlow,
        Noise::Broken,
        Noise::Busy,
        Noise::Redelivery,
    ];

    fn level(self) -> Level {
        match self {
            Noise::Method | Noise::Broken | Noise::Redelivery => Level::Info,
            _ => Level::Warn,
        }
    }

    /// The `counters` row that `coupond status` shows for it, if any.
    fn counter(self) -> Option<&'static str> {
        match self {
            Noise::NotFound => Some(NOT_FOUND),
            Noise::TooLarge => Some(TOO_LARGE),
            _ => None,
        }
    }

    /// The noise of a rejected request's status.
    pub fn of_rejected(status: u16) -> Noise {
        match status {
            403 => Noise::UnknownApp,
            _ => Noise::Unsigned,
        }
    }
}

/// `counters.name` of requests to another path.
pub const NOT_FOUND: &str = "not_found";
/// `counters.name` of bodies over `--max-body`.
pub const TOO_LARGE: &str = "too_large";
/// `counters.name` of rejected requests over the write rate, counted but not stored.
pub const REJECTED_UNSTORED: &str = "rejected_unstored";

/// A count not written yet.
#[derive(Debug, Default)]
struct Count {
    n: i64,
    last_at: String,
    last_detail: String,
}

/// A stored rejected body, and its repeats not written yet.
#[derive(Debug)]
struct Recent {
    repeats: i64,
    last_at: String,
    seen: Instant,
}

/// A signed message stored recently, and its repeats not written yet.
#[derive(Debug)]
struct Known {
    message_id: i64,
    outcome: Outcome,
    /// Deliveries as the database has them plus `repeats`.
    deliveries: i64,
    repeats: u32,
    /// When it was stored or last repeated (Unix ms): with `repeats`, when the last
    /// repeat came, formatted only when written.
    seen_ms: i64,
}

/// A body's SHA-1 as [`Inner::known`] keys it: its 20 bytes, not its 40 hex digits.
type Digest = [u8; 20];

/// `digest` (40 hex digits, as [`crate::store::body_digest`] gives it) as a key;
/// `None` for anything else, which is then simply not remembered.
fn digest_key(digest: &str) -> Option<Digest> {
    let mut key = [0u8; 20];
    hex::decode_to_slice(digest, &mut key).ok()?;
    Some(key)
}

/// The webhook's and the MQTT source's limits, shared by their requests and the [`run`]
/// task.
pub struct Limits {
    inner: Mutex<Inner>,
    wake: Notify,
}

struct Inner {
    throttles: Vec<Throttle>,
    /// Rejected rows: 401, 403.
    buckets: [Bucket; 2],
    recent: HashMap<String, Recent>,
    /// Signed messages by body digest.
    known: HashMap<Digest, Known>,
    counts: HashMap<&'static str, Count>,
    /// Whether `counts` or a `recent` entry holds something not written yet.
    dirty: bool,
    last_write: Option<Instant>,
}

impl Inner {
    fn count(&mut self, name: &'static str, detail: &str) {
        self.dirty = true;
        let c = self.counts.entry(name).or_default();
        c.n += 1;
        c.last_at = time::now_rfc3339();
        c.last_detail.clear();
        c.last_detail.push_str(detail);
    }

    /// When the counts may next be written (`now`: at once), if there are any.
    fn write_due(&self, now: Instant) -> Option<Instant> {
        self.dirty
            .then(|| self.last_write.map_or(now, |t| (t + EVERY).max(now)))
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new()
    }
}

impl Limits {
    pub fn new() -> Limits {
        let now = Instant::now();
        let bucket = || Bucket::new(REJECTED_BURST, REJECTED_REFILL, now);
        Limits {
            inner: Mutex::new(Inner {
                throttles: Noise::ALL
                    .iter()
                    .map(|n| Throttle::new(n.level()))
                    .collect(),
                buckets: [bucket(), bucket()],
                recent: HashMap::new(),
                known: HashMap::new(),
                counts: HashMap::new(),
                dirty: false,
                last_write: None,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; if something did, the data is still counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request of kind `noise`: `line` is logged now or summed up later, and a kind
    /// that `coupond status` shows is counted with `detail` (the path, the size).
    pub fn note(&self, noise: Noise, detail: &str, line: String) {
        let mut inner = self.lock();
        let i = Noise::ALL.iter().position(|n| *n == noise).unwrap_or(0);
        // The run task sleeps until the next thing due; wake it only when that may now
        // come sooner (not for every request of a flood).
        let sooner = (!inner.dirty && noise.counter().is_some()) || inner.throttles[i].held == 0;
        if let Some(name) = noise.counter() {
            inner.count(name, detail);
        }
        inner.throttles[i].note(Instant::now(), line);
        drop(inner);
        if sooner {
            self.wake.notify_one();
        }
    }

    /// Whether a rejected request (`status` 401 or 403, whose body and signature give
    /// `digest`) is written as a row. If not, it is counted: as a repeat of its row when
    /// that body was stored recently, else as over the rate.
    pub fn admit_rejected(&self, status: u16, digest: &str, reason: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let sooner = !inner.dirty;
        if let Some(r) = inner.recent.get_mut(digest) {
            r.repeats += 1;
            r.last_at = time::now_rfc3339();
            r.seen = now;
            inner.dirty = true;
            drop(inner);
            if sooner {
                self.wake.notify_one();
            }
            return false;
        }
        let bucket = usize::from(status == 403);
        if inner.buckets[bucket].take(now) {
            if inner.recent.len() < RECENT_CAP {
                let recent = Recent {
                    repeats: 0,
                    last_at: String::new(),
                    seen: now,
                };
                inner.recent.insert(digest.to_string(), recent);
            }
            return true;
        }
        inner.count(REJECTED_UNSTORED, &format!("{status} {reason}"));
        drop(inner);
        if sooner {
            self.wake.notify_one();
        }
        false
    }

    /// A signed message whose body (`digest`, its SHA-1) was stored recently: counted as
    /// one more delivery in memory, and answered as the store would.
    pub fn redelivery(&self, digest: &str) -> Option<Ack> {
        let mut inner = self.lock();
        let sooner = !inner.dirty;
        let k = inner.known.get_mut(&digest_key(digest)?)?;
        k.repeats = k.repeats.saturating_add(1);
        k.deliveries += 1;
        k.seen_ms = time::now_millis();
        let ack = Ack::Redelivered {
            message_id: k.message_id,
            deliveries: k.deliveries,
            outcome: k.outcome,
        };
        inner.dirty = true;
        drop(inner);
        if sooner {
            self.wake.notify_one();
        }
        Some(ack)
    }

    /// Remembers a signed message the store answered for (committed), by its body's
    /// `digest`, while there is room.
    pub fn stored(&self, digest: &str, ack: &Ack) {
        let (message_id, outcome, deliveries) = match *ack {
            Ack::Recorded {
                message_id,
                outcome,
                ..
            } => (message_id, outcome, 1),
            Ack::Redelivered {
                message_id,
                outcome,
                deliveries,
            } => (message_id, outcome, deliveries),
            Ack::Rejected => return,
        };
        let Some(key) = digest_key(digest) else {
            return;
        };
        let mut inner = self.lock();
        if inner.known.len() >= KNOWN_CAP || inner.known.contains_key(&key) {
            return;
        }
        let known = Known {
            message_id,
            outcome,
            deliveries,
            repeats: 0,
            seen_ms: time::now_millis(),
        };
        inner.known.insert(key, known);
    }

    /// When [`Limits::tick`] next has something to do.
    fn due(&self) -> Option<Instant> {
        let inner = self.lock();
        inner
            .throttles
            .iter()
            .filter_map(Throttle::due)
            .chain(inner.write_due(Instant::now()))
            .min()
    }

    /// Logs the summaries that are due; returns the counts to write, if due.
    fn tick(&self, now: Instant, last: bool) -> Option<(Vec<Counted>, Vec<Repeated>)> {
        let mut inner = self.lock();
        for t in &mut inner.throttles {
            t.flush(now, last);
        }
        inner
            .recent
            .retain(|_, r| r.repeats > 0 || now.saturating_duration_since(r.seen) < RECENT_FOR);
        let now_ms = time::now_millis();
        let recent_ms = RECENT_FOR.as_millis() as i64;
        inner
            .known
            .retain(|_, k| k.repeats > 0 || now_ms - k.seen_ms < recent_ms);
        match inner.write_due(now) {
            Some(t) if last || t <= now => {}
            _ => return None,
        }
        inner.last_write = Some(now);
        inner.dirty = false;
        let counted = inner
            .counts
            .drain()
            .map(|(name, c)| Counted {
                name,
                n: c.n,
                last_at: c.last_at,
                last_detail: c.last_detail,
            })
            .collect();
        let mut repeated: Vec<Repeated> = inner
            .recent
            .iter_mut()
            .filter(|(_, r)| r.repeats > 0)
            .map(|(digest, r)| Repeated {
                digest: digest.clone(),
                n: std::mem::take(&mut r.repeats),
                last_at: r.last_at.clone(),
                message: false,
            })
            .collect();
        repeated.extend(inner.known.iter_mut().filter(|(_, k)| k.repeats > 0).map(
            |(digest, k)| Repeated {
                digest: hex::encode(digest),
                n: i64::from(std::mem::take(&mut k.repeats)),
                last_at: time::rfc3339_millis(k.seen_ms),
                message: true,
            },
        ));
        Some((counted, repeated))
    }
}

/// Logs the held summaries and writes the counts, each when due, until `stop`; then
/// writes what is left.
pub async fn run(limits: Arc<Limits>, writer: Writer, mut stop: Stop) {
    loop {
        let due = limits.due();
        tokio::select! {
            _ = time::sleep_until(due) => {}
            _ = limits.wake.notified() => {}
            _ = shutdown::stopped(&mut stop) => break,
        }
        write(&limits, &writer, false).await;
    }
    write(&limits, &writer, true).await;
}

async fn write(limits: &Limits, writer: &Writer, last: bool) {
    let Some((counted, repeated)) = limits.tick(Instant::now(), last) else {
        return;
    };
    match writer
        .call(move |s| s.add_counts(&counted, &repeated))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("could not write the counts of refused requests: {e}"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_throttle_logs_the_first_at_once_and_sums_up_the_rest_once_per_10s() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Level::Warn);
        assert_eq!(t.event(t0, "a".into()).as_deref(), Some("a"));
        assert_eq!(t.due(), None);
        for i in 0..500 {
            assert_eq!(t.event(at(t0, 0.01 * i as f64), format!("b{i}")), None);
        }
        assert_eq!(t.due(), Some(at(t0, 10.0)));
        assert_eq!(t.tick(at(t0, 9.9)), None);
        assert_eq!(
            t.tick(at(t0, 10.0)).as_deref(),
            Some("b499 (and 499 more like it in the last 10s)")
        );
        assert_eq!(t.tick(at(t0, 30.0)), None, "nothing held");
        // One held event is logged as it is, late.
        assert_eq!(t.event(at(t0, 15.0), "c".into()), None);
        assert_eq!(t.tick(at(t0, 20.0)).as_deref(), Some("c"));
        // A quiet spell: the next one is logged at once again.
        assert_eq!(t.event(at(t0, 31.0), "d".into()).as_deref(), Some("d"));
        // If the tick came late, the next event carries the count.
        assert_eq!(t.event(at(t0, 32.0), "e".into()), None);
        assert_eq!(
            t.event(at(t0, 45.0), "f".into()).as_deref(),
            Some("f (and 1 more like it in the last 14s)")
        );
    }

    #[test]
    fn a_throttle_never_logs_twice_within_10s_however_it_is_driven() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Level::Warn);
        let mut lines = Vec::new();
        for ms in (0..60_000).step_by(7) {
            let now = at(t0, ms as f64 / 1000.0);
            if t.event(now, "x".into()).is_some() {
                lines.push(now);
            }
            if ms % 700 == 0 && t.tick(now).is_some() {
                lines.push(now);
            }
        }
        assert!((6..=7).contains(&lines.len()), "{}", lines.len());
        for w in lines.windows(2) {
            assert!(w[1] - w[0] >= EVERY);
        }
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, Duration::from_secs(10), t0);
        let taken = (0..10).filter(|_| b.take(t0)).count();
        assert_eq!(taken, 3);
        assert!(!b.take(at(t0, 9.9)));
        assert!(b.take(at(t0, 10.0)));
        assert!(!b.take(at(t0, 10.1)));
        // An hour of flood at 1000 a second gets one row per 10 s.
        let taken = (0..3_600_000)
            .filter(|i| b.take(at(t0, 10.1 + *i as f64 / 1000.0)))
            .count();
        assert_eq!(taken, 360);
        // A quiet day refills only up to the burst.
        let later = at(t0, 90_000.0);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn repeats_of_a_stored_rejected_body_are_counted_not_stored_again() {
        let limits = Limits::new();
        assert!(limits.admit_rejected(401, "d1", "wrong signature"));
        for _ in 0..3 {
            assert!(!limits.admit_rejected(401, "d1", "wrong signature"));
        }
        let (counted, repeated) = limits.tick(Instant::now(), true).unwrap();
        assert!(counted.is_empty());
        assert_eq!(repeated.len(), 1);
        assert_eq!((repeated[0].digest.as_str(), repeated[0].n), ("d1", 3));
        assert!(limits.tick(Instant::now(), true).is_none(), "written once");
    }

    #[test]
    fn replays_of_a_stored_message_are_answered_and_counted_in_memory() {
        let limits = Limits::new();
        let m1 = crate::store::body_digest(b"m1");
        assert_eq!(limits.redelivery(&m1), None, "not known yet");
        let stored = Ack::Recorded {
            message_id: 7,
            outcome: Outcome::Applied,
            outputs: 1,
        };
        limits.stored(&m1, &stored);
        for n in 2..=1000 {
            assert_eq!(
                limits.redelivery(&m1),
                Some(Ack::Redelivered {
                    message_id: 7,
                    deliveries: n,
                    outcome: Outcome::Applied
                })
            );
        }
        let (_, repeated) = limits.tick(Instant::now(), true).unwrap();
        assert_eq!(repeated.len(), 1);
        assert_eq!((repeated[0].n, repeated[0].message), (999, true));
        assert_eq!(
            repeated[0].digest, m1,
            "written under the digest it came with"
        );
        // Bounded: past KNOWN_CAP nothing more is remembered, and the table never grows
        // past the slots that hold KNOWN_CAP (its memory, issue 22).
        for i in 0..KNOWN_CAP + 10 {
            limits.stored(
                &crate::store::body_digest(format!("x{i}").as_bytes()),
                &stored,
            );
        }
        let inner = limits.lock();
        assert_eq!(inner.known.len(), KNOWN_CAP);
        assert!(
            inner.known.capacity() <= KNOWN_CAP,
            "{}",
            inner.known.capacity()
        );
    }

    #[test]
    fn a_flood_of_rejected_bodies_is_stored_up_to_the_burst_and_counted_past_it() {
        let limits = Limits::new();
        let stored = (0..1000)
            .filter(|i| limits.admit_rejected(401, &format!("d{i}"), "wrong signature"))
            .count();
        assert_eq!(stored, REJECTED_BURST as usize);
        // 403s have their own budget.
        assert!(limits.admit_rejected(403, "other", "not configured"));
        let (counted, _) = limits.tick(Instant::now(), false).unwrap();
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].name, REJECTED_UNSTORED);
        assert_eq!(counted[0].n, 1000 - REJECTED_BURST as i64);
        assert_eq!(counted[0].last_detail, "401 wrong signature");
        // Written at most once per EVERY: the next count waits.
        limits.note(Noise::NotFound, "GET \"/x\"", "404".into());
        assert!(limits.tick(Instant::now(), false).is_none());
        assert!(limits.due().is_some());
        let (counted, _) = limits.tick(Instant::now() + EVERY, false).unwrap();
        assert_eq!((counted[0].name, counted[0].n), (NOT_FOUND, 1));
        assert_eq!(counted[0].last_detail, "GET \"/x\"");
    }
}
