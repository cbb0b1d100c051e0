//! Catch-up from Douyin (SPEC §11): with `--account-id`, coupond also asks Douyin's
//! verify-record API what happened at the counter, so a coupon whose push met a dead
//! tunnel, a power cut or a reboot is still recorded, shown and printed (marked 补录).
//!
//! A *sweep* covers the time from the end of the last complete sweep (less
//! [`OVERLAP`]) to now less [`LAG`], in steps of at most a day ([`STEP`]) and at most
//! [`MAX_BACK`] into the past; the first one covers the last day. The end of each
//! finished step is written to the database, so a restart or a power cut resumes where
//! it stopped, without a gap. Sweeps run at start, every `--reconcile-every`, and after
//! a failure again with [`backoff::CATCHUP`]; none runs while the clock is earlier than the
//! binary's build (a box without a real-time clock boots in 1970 until NTP runs).
//!
//! Each record becomes the messages it stands for ([`messages`]): a `verify` at
//! `verify_time` and, when cancelled, a `verify_cancel` at `cancel_time`. They take the
//! path of a push from the intake on: a [`Kind::Certificate`] intake, the writer, the
//! store's one transaction with the coupon state rule, the outbox. Only the dedup key
//! differs: a digest of (`verify_id`, `certificate_id`, action, time) instead of the
//! body's sha1, so a repeated sweep counts redeliveries even if other fields of the
//! record changed, and `messages.source` says `reconcile`. A step's messages are
//! applied in time order; a step that holds more than [`MAX_BUFFERED`] records is
//! shortened (by Douyin's `total` beside a full first page) before it is read, and the next step's length follows how busy the last
//! one was, so memory stays small however busy the store was and few queries are
//! wasted (measured: 10,000 records in about 500 pages, under 8 MB).
//!
//! This task only talks to Douyin and to the writer's queue: a slow, dead or raving
//! Douyin delays nothing but the next sweep, never a webhook answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::backoff;
use crate::coupon::Action;
use crate::douyin::{self, ApiUrl, Douyin, Query, Record};
use crate::intake::{Intake, Kind, Message, Outcome};
use crate::model::{Ack, Arrival, Source};
use crate::shutdown::{self, Stop};
use crate::time;
use crate::wire::{CertificateMsg, EVENT_CERTIFICATE};
use crate::writer::Writer;

/// How far each sweep reaches back before the end of the last complete one: records
/// that Douyin lists a little late are still found.
pub const OVERLAP: i64 = 10 * 60;
/// How far before now a sweep ends.
pub const LAG: i64 = 60;
/// The longest window one query covers.
pub const STEP: i64 = 24 * 3600;
/// How far back a sweep ever reaches.
pub const MAX_BACK: i64 = 7 * 24 * 3600;
/// Records held in memory for one step (5 pages); a busier step is shortened. Each
/// costs about 1 KB while held (the record, the messages made of it).
pub const MAX_BUFFERED: i64 = 100;
/// The shortest step: one that still holds more records is swept as it is.
const MIN_STEP: i64 = 60;
/// Messages handed to the writer at once (one commit, usually).
const CHUNK: usize = 64;

/// A time window in Unix seconds, `start <= t < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Where the next sweep starts, given the end of the last complete one.
pub fn sweep_start(now: i64, swept_to: Option<i64>) -> i64 {
    match swept_to {
        // A saved end in the future means the clock was wrong then or is now: sweep the
        // last day, as at first (repeats are only counted).
        Some(end) if end <= now + LAG => (end - OVERLAP).max(now - MAX_BACK),
        _ => now - STEP,
    }
}

/// The next step of a sweep from `start`, at most `len` seconds (and [`STEP`]) long, or
/// `None` when the sweep has reached now less [`LAG`].
pub fn next_step(start: i64, now: i64, len: i64) -> Option<Window> {
    let limit = now - LAG;
    (start < limit).then(|| Window {
        start,
        end: limit.min(start + len.clamp(MIN_STEP, STEP)),
    })
}

/// The first part of `window`, likely to hold half of [`MAX_BUFFERED`] records, when it
/// holds more than that (`records`: Douyin's `total`, or what has been read) and is long
/// enough to shorten; `None`: read it as it is.
pub fn too_busy(window: Window, records: Option<i64>) -> Option<Window> {
    let (n, len) = (records.unwrap_or(0), window.end - window.start);
    let busy = n > MAX_BUFFERED && len >= 2 * MIN_STEP;
    busy.then(|| Window {
        start: window.start,
        end: window.start + (len * MAX_BUFFERED / 2 / n).clamp(MIN_STEP, len / 2),
    })
}

/// The length of the next step, after one of `len` seconds held `records`: a quiet one
/// doubles it (up to [`STEP`]), so a sweep of a quiet day is one query.
pub fn next_len(len: i64, records: i64) -> i64 {
    if records <= MAX_BUFFERED / 2 {
        (len * 2).min(STEP)
    } else {
        len
    }
}

/// A message a record stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub msg: CertificateMsg,
    /// `messages.body_sha1`: sha1 of (`verify_id`, `certificate_id`, action, time).
    pub digest: String,
    /// `messages.body`: the record.
    pub body: String,
}

/// The messages one record stands for: its `verify`, and its `verify_cancel` when the
/// record says it was cancelled (status 2).
pub fn messages(r: &Record, account_id: &str) -> Vec<Recovered> {
    let mut out = vec![recovered(r, account_id, Action::Verify, r.verify_time)];
    if r.status == 2 {
        // Without a cancel time the cancel is put at the verify time, where precedence
        // still lets it win.
        let at = r.cancel_time.unwrap_or(r.verify_time);
        out.push(recovered(r, account_id, Action::VerifyCancel, at));
    }
    out
}

fn recovered(r: &Record, account_id: &str, action: Action, at: i64) -> Recovered {
    // The certificate too (SPEC §11): a `verify_id` Douyin reuses for another
    // certificate must not pass for a repeat of the first.
    let key = format!(
        "reconcile\n{}\n{}\n{}\n{at}",
        r.verify_id,
        r.certificate_id,
        action.as_str()
    );
    Recovered {
        msg: CertificateMsg {
            action,
            msg_time: at,
            certificate_id: r.certificate_id.clone(),
            order_id: r.order_id.clone(),
            // `encrypted_code` is not the code: recovered coupons show none.
            code: None,
            account_id: Some(account_id.to_string()),
        },
        digest: sha1_smol::Sha1::from(key).digest().to_string(),
        body: r.raw.clone(),
    }
}

/// In the order the state rule must see them: time, then precedence.
pub fn sort(msgs: &mut [Recovered]) {
    msgs.sort_by_key(|m| (m.msg.msg_time, m.msg.action));
}

/// How far past now a record's time may be (clocks differ a little).
const FUTURE: i64 = 5 * 60;

/// Why a record is not applied, if it is not: its verification outside the window
/// asked for (the API selects by verification time: anything else is not an answer to
/// the question), or a time past now.
pub fn refused(r: &Record, window: Window, now: i64) -> Option<String> {
    let t = r.verify_time;
    if t < window.start || t >= window.end {
        return Some(format!(
            "verify_time {t} is outside the window asked for ({} .. {})",
            window.start, window.end
        ));
    }
    if t > now + FUTURE {
        return Some(format!("verify_time {t} is in the future"));
    }
    match r.cancel_time {
        Some(c) if r.status == 2 && c > now + FUTURE => {
            Some(format!("cancel_time {c} is in the future"))
        }
        _ => None,
    }
}

/// What systemd's STATUS= adds when sweeps are overdue: `since` is the last complete
/// sweep (or the daemon's start, before the first), all in Unix seconds.
pub fn overdue(now: i64, since: i64, complete: bool, every: Duration) -> Option<String> {
    let allowed = 2 * every.as_secs() as i64 + 60;
    let late = now - since;
    (late > allowed).then(|| {
        if complete {
            format!("catch-up overdue: last complete sweep {} ago", human(late))
        } else {
            format!(
                "catch-up overdue: no complete sweep in the {} since start",
                human(late)
            )
        }
    })
}

/// `3h 05m`, `12m 30s`, `45s`.
pub fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Catch-up's validated settings (from `config`).
#[derive(Clone)]
pub struct Settings {
    pub account_id: String,
    pub poi_ids: Vec<String>,
    pub every: Duration,
    /// The app recovered messages are recorded for, and whose token is asked for (the
    /// first `--client-key`).
    pub client_key: String,
    /// Where Douyin's API is, and how to reach it (`commands::serve` builds the shared
    /// [`Douyin`] from these, with the reloadable secrets).
    pub api: ApiUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What one complete sweep did, as `coupond status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub window: Option<Window>,
    pub records: i64,
    pub recovered: i64,
}

/// Last complete sweep, for systemd's STATUS= line: (Unix seconds, complete?).
pub type Health = watch::Receiver<(i64, bool)>;

/// The catch-up task: sweeps until `stop`.
pub async fn run(
    settings: Settings,
    douyin: Arc<Douyin>,
    writer: Writer,
    health: watch::Sender<(i64, bool)>,
    mut stop: Stop,
) {
    let mut sweeper = Sweeper {
        douyin,
        writer,
        settings,
    };
    let mut failures = 0u32;
    let mut clock_warned = false;
    loop {
        let now = time::now_secs();
        let wait = if now < time::build_time() {
            if !clock_warned {
                log::warn!(
                    "catch-up: waiting for a sane clock (it says {}, before this build); is NTP running?",
                    time::rfc3339_millis(now * 1000)
                );
                clock_warned = true;
            }
            Duration::from_secs(5)
        } else {
            let swept = tokio::select! {
                r = sweeper.sweep(now) => r,
                _ = shutdown::stopped(&mut stop) => return,
            };
            match swept {
                Ok(report) => {
                    failures = 0;
                    let _ = health.send((time::now_secs(), true));
                    if report.recovered > 0 {
                        log::warn!(
                            "catch-up: recovered {} coupon event(s) Douyin had not pushed ({} records seen)",
                            report.recovered,
                            report.records
                        );
                    }
                    sweeper.settings.every
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff::CATCHUP.wait(failures.into());
                    log::warn!("catch-up: sweep failed: {e}; retry in {wait:?}");
                    let error = e.clone();
                    let account = sweeper.settings.account_id.clone();
                    let at = time::now_rfc3339();
                    if let Ok(Err(e)) = sweeper
                        .writer
                        .call(move |s| s.catchup_error(&account, &error, &at))
                        .await
                    {
                        log::error!("catch-up: cannot record the error: {e}");
                    }
                    wait
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown::stopped(&mut stop) => return,
        }
    }
}

struct Sweeper {
    settings: Settings,
    douyin: Arc<Douyin>,
    writer: Writer,
}

impl Sweeper {
    /// One sweep from the saved progress to now; the error is a log line.
    async fn sweep(&mut self, now: i64) -> Result<Report, String> {
        let account = self.settings.account_id.clone();
        let a = account.clone();
        let swept_to = self
            .writer
            .call(move |s| s.catchup_swept_to(&a))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read progress: {e}"))?;
        if swept_to.is_some_and(|end| end > now + LAG) {
            log::warn!("catch-up: the last sweep ended in the future (the clock was or is wrong); sweeping the last day again");
        }
        let from = sweep_start(now, swept_to);
        let mut report = Report::default();
        let mut start = from;
        let mut len = STEP;
        while let Some(step) = next_step(start, now, len) {
            let (window, records, recovered) = self.step(step).await?;
            len = next_len(window.end - window.start, records);
            report.records += records;
            report.recovered += recovered;
            let a = account.clone();
            self.writer
                .call(move |s| s.catchup_step_done(&a, window.end))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot record progress: {e}"))?;
            start = window.end;
        }
        report.window = Some(Window {
            start: from,
            end: start,
        });
        let (a, at) = (account, time::now_rfc3339());
        let (records, recovered) = (report.records, report.recovered);
        self.writer
            .call(move |s| s.catchup_sweep_done(&a, &at, (from, start), records, recovered))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot record the sweep: {e}"))?;
        log::info!(
            "catch-up: swept {} .. {}: {} record(s), {} recovered",
            time::rfc3339_millis(from * 1000),
            time::rfc3339_millis(start * 1000),
            report.records,
            report.recovered
        );
        Ok(report)
    }

    /// Reads one step's records (halving it while too busy), applies them in time order;
    /// returns the window actually swept, records seen and messages applied. At most
    /// [`douyin::PAGE_SIZE`] items are read from a page, and `total` counts only beside
    /// a full page (Douyin's word on how busy a window is must not make a sweep ask for
    /// ever); a record that cannot be read, or is not of the window asked for, is stored
    /// as rejected and skipped.
    async fn step(&mut self, mut window: Window) -> Result<(Window, i64, i64), String> {
        let now = time::now_secs();
        let mut records: Vec<Record> = Vec::new();
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let page = self.page(window, &cursor).await?;
            let full = page.items >= douyin::PAGE_SIZE;
            // Too busy by Douyin's `total` (first page), or by what has been read when it
            // gives none: start again on the first half.
            let count = match cursor.as_str() {
                "0" => page.total.filter(|_| full),
                _ => Some((records.len() + page.records.len()) as i64),
            };
            if let Some(half) = too_busy(window, count) {
                window = half;
                records.clear();
                bad.clear();
                cursor = "0".into();
                continue;
            }
            for r in page.records {
                match refused(&r, window, now) {
                    Some(why) => bad.push((r.raw, why)),
                    None => records.push(r),
                }
            }
            bad.extend(page.bad);
            let next = page.last_cursor;
            if !full || next.as_deref().map_or(true, |c| c == cursor) {
                break;
            }
            if (records.len() + bad.len()) as i64 > 4 * MAX_BUFFERED {
                // Only in a window shorter than 2 minutes: Douyin's cursor must be wrong.
                return Err(format!(
                    "more than {} records in {} s of verifications; is Douyin's cursor moving?",
                    4 * MAX_BUFFERED,
                    window.end - window.start
                ));
            }
            cursor = next.unwrap_or_default();
        }
        self.refuse(window, bad).await?;
        let seen = records.len() as i64;
        let mut msgs: Vec<Recovered> = records
            .iter()
            .flat_map(|r| messages(r, &self.settings.account_id))
            .collect();
        drop(records);
        sort(&mut msgs);
        let applied = self.apply(msgs).await?;
        Ok((window, seen, applied))
    }

    /// Stores the records Douyin sent that catch-up will not apply, as rejected rows
    /// (bounded like every reject; a repeat only counts), with one line per step.
    async fn refuse(&self, window: Window, bad: Vec<(String, String)>) -> Result<(), String> {
        let Some((_, first)) = bad.first() else {
            return Ok(());
        };
        log::warn!(
            "catch-up: {} record(s) Douyin sent for {} .. {} refused and kept as rejected (first: {})",
            bad.len(),
            time::rfc3339_millis(window.start * 1000),
            time::rfc3339_millis(window.end * 1000),
            crate::sanitize::text(first)
        );
        for (raw, why) in bad {
            let arrival = Arrival {
                received_at: time::now_rfc3339(),
                msg_id: None,
                signature: None,
                body: raw.into_bytes(),
                source: Source::Catchup,
                dedup: None,
                intake: Intake::Rejected {
                    status: 400,
                    reason: format!("verify record from Douyin refused: {why}"),
                    challenge: None,
                },
            };
            self.writer
                .ingest(arrival)
                .await
                .map_err(|e| format!("cannot record a refused record: {e}"))?;
        }
        Ok(())
    }

    /// One page of the query (the token is [`Douyin`]'s business).
    async fn page(&mut self, w: Window, cursor: &str) -> Result<douyin::Page, String> {
        let q = Query {
            account_id: &self.settings.account_id,
            poi_ids: &self.settings.poi_ids,
            start_time: w.start,
            end_time: w.end,
            cursor,
        };
        self.douyin.verify_records(&q).await
    }

    /// Hands the messages to the writer in order; returns how many were applied.
    async fn apply(&self, msgs: Vec<Recovered>) -> Result<i64, String> {
        let mut applied = 0;
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let mut waiting: Vec<oneshot::Receiver<Result<Ack, String>>> =
                Vec::with_capacity(CHUNK);
            for m in msgs.by_ref().take(CHUNK) {
                let rx = self
                    .writer
                    .submit(self.arrival(m))
                    .await
                    .map_err(|e| e.to_string())?;
                waiting.push(rx);
            }
            for rx in waiting {
                let ack = rx
                    .await
                    .map_err(|_| "the database writer has stopped".to_string())?
                    .map_err(|e| format!("cannot record a recovered message: {e}"))?;
                if matches!(
                    ack,
                    Ack::Recorded {
                        outcome: Outcome::Applied,
                        ..
                    }
                ) {
                    applied += 1;
                }
            }
        }
        Ok(applied)
    }

    fn arrival(&self, m: Recovered) -> Arrival {
        Arrival {
            received_at: time::now_rfc3339(),
            msg_id: None,
            signature: None,
            body: m.body.into_bytes(),
            source: Source::Catchup,
            dedup: Some(m.digest),
            intake: Intake::Message(Message {
                event: Some(EVENT_CERTIFICATE.to_string()),
                client_key: Some(self.settings.client_key.clone()),
                log_id: None,
                test: false,
                kind: Kind::Certificate(m.msg),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catch-up's record decoder never panics and keeps its invariants
    /// ([`crate::fuzzing::check_records`]) on mangled answers and on every input of the
    /// fuzzer's committed corpus (`fuzz/corpus/catchup_records`, README "Fuzzing").
    #[test]
    fn mangled_answers_and_the_catch_up_fuzz_corpus_never_panic() {
        let page = br#"{"data":{"records":[{"cursor":"1","verify_id":"v1","certificate_id":"c1","verify_time":1700000100,"status":2,"cancel_time":1700000200}],"total":1,"error_code":0}}"#;
        let record = br#"{"cursor":12,"verify_id":"v2","certificate_id":7001234567890123456,"verify_time":"1700000100","status":1}"#;
        crate::fuzzing::mutate(&[page, record], 5_000, crate::fuzzing::check_records);
        let n = crate::fuzzing::replay_corpus("catchup_records", crate::fuzzing::check_records);
        assert!(n >= 20, "only {n} corpus inputs");
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    #[test]
    fn windows_start_from_progress_with_overlap_within_a_week() {
        let cases = [
            // (swept_to, want start)
            (None, NOW - DAY),
            (Some(NOW - 3600), NOW - 3600 - OVERLAP),
            (Some(NOW - 3 * DAY), NOW - 3 * DAY - OVERLAP),
            (Some(NOW - 30 * DAY), NOW - 7 * DAY),
            (Some(NOW + LAG), NOW + LAG - OVERLAP),
            // The clock went back (or was ahead before): the last day again.
            (Some(NOW + 3600), NOW - DAY),
        ];
        for (swept_to, want) in cases {
            assert_eq!(sweep_start(NOW, swept_to), want, "{swept_to:?}");
        }
    }

    #[test]
    fn a_long_gap_is_swept_in_steps_of_at_most_a_day_up_to_a_minute_ago() {
        let mut start = sweep_start(NOW, Some(NOW - 3 * DAY));
        let mut steps = Vec::new();
        while let Some(w) = next_step(start, NOW, STEP) {
            assert!(w.end - w.start <= STEP && w.start < w.end, "{w:?}");
            steps.push(w);
            start = w.end;
        }
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].start, NOW - 3 * DAY - OVERLAP);
        assert_eq!(steps.last().unwrap().end, NOW - LAG);
        assert!(steps.windows(2).all(|p| p[0].end == p[1].start));
        assert_eq!(next_step(NOW - LAG, NOW, STEP), None);
        assert_eq!(next_step(NOW, NOW, STEP), None);
        let short = next_step(NOW - DAY, NOW, 600).unwrap();
        assert_eq!(short.end - short.start, 600);
        assert_eq!(next_step(NOW - DAY, NOW, 1).unwrap().end, NOW - DAY + 60);
    }

    #[test]
    fn busy_steps_are_shortened_and_quiet_ones_lengthened() {
        let w = Window { start: 0, end: DAY };
        assert_eq!(too_busy(w, Some(MAX_BUFFERED)), None);
        assert_eq!(too_busy(w, None), None);
        // 10,000 records in a day: a step that should hold about MAX_BUFFERED / 2.
        let short = too_busy(w, Some(10_000)).unwrap();
        assert_eq!(
            (short.start, short.end),
            (0, DAY * MAX_BUFFERED / 2 / 10_000)
        );
        // Just over the limit: about half.
        let over = MAX_BUFFERED + 1;
        assert_eq!(
            too_busy(w, Some(over)).unwrap().end,
            DAY * MAX_BUFFERED / 2 / over
        );
        // Never shorter than a minute, and a 2-minute step is read as it is.
        assert_eq!(too_busy(w, Some(i64::MAX / DAY)).unwrap().end, 60);
        assert_eq!(too_busy(Window { start: 0, end: 119 }, Some(99_999)), None);
        assert_eq!(next_len(600, 10), 1200);
        assert_eq!(next_len(600, MAX_BUFFERED), 600);
        assert_eq!(next_len(STEP, 0), STEP);
    }

    fn record(verify_id: &str, status: i64, cancel: Option<i64>) -> Record {
        Record {
            cursor: "1".into(),
            verify_id: verify_id.into(),
            certificate_id: "c1".into(),
            order_id: Some("o1".into()),
            verify_time: 1000,
            status,
            cancel_time: cancel,
            raw: format!(r#"{{"verify_id":"{verify_id}"}}"#),
        }
    }

    #[test]
    fn a_record_stands_for_its_verify_and_its_cancel() {
        let v = messages(&record("v1", 1, None), "acct");
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].msg.action, v[0].msg.msg_time), (Action::Verify, 1000));
        assert_eq!(v[0].msg.account_id.as_deref(), Some("acct"));
        assert_eq!(v[0].body, r#"{"verify_id":"v1"}"#);
        let vc = messages(&record("v1", 2, Some(1500)), "acct");
        assert_eq!(
            vc.iter()
                .map(|m| (m.msg.action, m.msg.msg_time))
                .collect::<Vec<_>>(),
            [(Action::Verify, 1000), (Action::VerifyCancel, 1500)]
        );
        // Same (verify_id, action, time): same digest, whatever else changed.
        assert_eq!(vc[0].digest, v[0].digest);
        assert_ne!(vc[0].digest, vc[1].digest);
        let mut changed = record("v1", 1, None);
        changed.raw = r#"{"verify_id":"v1","can_cancel":false}"#.into();
        assert_eq!(messages(&changed, "acct")[0].digest, v[0].digest);
        assert_ne!(
            messages(&record("v2", 1, None), "acct")[0].digest,
            v[0].digest
        );
        let no_time = messages(&record("v1", 2, None), "acct");
        assert_eq!(no_time[1].msg.msg_time, 1000);
    }

    #[test]
    fn messages_are_applied_in_time_then_precedence_order() {
        let mut a = record("a", 2, Some(3000));
        a.verify_time = 2000;
        let b = record("b", 2, Some(1000));
        let mut msgs: Vec<Recovered> = [a, b].iter().flat_map(|r| messages(r, "x")).collect();
        sort(&mut msgs);
        let order: Vec<(i64, Action)> = msgs
            .iter()
            .map(|m| (m.msg.msg_time, m.msg.action))
            .collect();
        assert_eq!(
            order,
            [
                (1000, Action::Verify),
                (1000, Action::VerifyCancel),
                (2000, Action::Verify),
                (3000, Action::VerifyCancel)
            ]
        );
    }

    #[test]
    fn overdue_says_how_long_since_the_last_complete_sweep() {
        let every = Duration::from_secs(600);
        assert_eq!(overdue(NOW, NOW - 1200, true, every), None);
        assert_eq!(
            overdue(NOW, NOW - 3 * 3600 - 300, true, every).as_deref(),
            Some("catch-up overdue: last complete sweep 3h 05m ago")
        );
        assert!(overdue(NOW, NOW - 7200, false, every)
            .unwrap()
            .contains("no complete sweep"));
        assert_eq!(human(45), "45s");
        assert_eq!(human(750), "12m 30s");
        assert_eq!(human(2 * DAY + 3600), "2d 01h");
    }
}
