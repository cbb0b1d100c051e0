//! `--exec CMD`: runs a command for each applied message, the message as JSON on stdin.
//!
//! The command runs under `/bin/sh -c`. Exit status 0 means done; anything else (or
//! running past `--exec-timeout`) is retried with backoff, so the command must be safe
//! to run twice for the same message (`output_id` in the JSON identifies the job).
//!
//! A hook runs on data from the internet, next to the daemon's secret, on a small box.
//! So it is contained (SPEC §6):
//! - **A clean environment**: `PATH`, `LANG`, `TZ` and `HOME` as the daemon has them,
//!   and the event variables `COUPOND_ACTION`, `COUPOND_CERTIFICATE_ID` and, when the
//!   coupon's details are known, `COUPOND_TITLE`, `COUPOND_PAY_AMOUNT` (fen) and
//!   `COUPOND_POI_ID`, their values
//!   shown through the sanitizer (a NUL cannot be passed at all, and would fail the job
//!   forever; an escape sequence would reach a terminal). Nothing else: never the secret,
//!   never the daemon's settings. The JSON on stdin carries the raw values (JSON escapes
//!   them).
//! - **Its own process group**, killed whole (`SIGKILL`) at `--exec-timeout`, and also
//!   as soon as the command exits, so nothing it started stays behind (a hook that must
//!   leave something running detaches it itself, with `setsid`).
//! - **Bounded output**: stdout and stderr, as they come, pass through a ring of
//!   [`OUTPUT_KEPT`] bytes; only the end of the output is kept, for `last_error` and the
//!   log, however much the command writes.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};

use crate::details::Details;
use crate::model::{Job, JobEvent};
use crate::sanitize;

/// How much of a hook's output (stdout and stderr together) is kept.
pub const OUTPUT_KEPT: usize = 4096;
/// Variables passed on from the daemon's environment, when it has them.
const PASSED_ON: [&str; 4] = ["PATH", "LANG", "TZ", "HOME"];
/// `PATH` for a daemon started without one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Once the command has exited: how long the rest of its output may take to arrive.
const DRAIN: Duration = Duration::from_secs(1);

pub struct Exec {
    pub command: String,
    pub timeout: Duration,
}

/// The JSON a hook reads on stdin: a contract with every hook a store has written, so
/// it is spelled out here rather than derived from the store's row types (renaming a
/// column must not change it). Field order is the order written. Pinned by the test
/// below and shown in the README.
#[derive(Debug, serde::Serialize)]
pub struct HookPayload<'a> {
    /// The output job; the same job may run twice (after a failure or a crash).
    pub output_id: i64,
    /// A reprint asked for with `coupond reprint`.
    pub reprint: bool,
    /// The `messages` row.
    pub message_id: i64,
    /// `verify`, `verify_cancel` or `refund_success`.
    pub action: &'static str,
    pub certificate_id: &'a str,
    pub order_id: Option<&'a str>,
    pub code: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub client_key: Option<&'a str>,
    /// Douyin's event time, seconds since the epoch.
    pub msg_time: i64,
    pub log_id: Option<&'a str>,
    /// When coupond received the message (RFC 3339, UTC).
    pub received_at: &'a str,
    /// Douyin's raw body, for hooks that want every field (for a recovered coupon, the
    /// verify record).
    pub body: &'a str,
    /// `push`, or `reconcile` for a coupon catch-up recovered (SPEC §11).
    pub source: &'static str,
    /// What was bought (SPEC §13), the `details` table's fields with amounts in fen;
    /// `null` when not known by the time the hook runs (they are not sent again later).
    pub details: Option<&'a Details>,
}

impl<'a> HookPayload<'a> {
    pub fn of(job: &'a Job) -> Result<HookPayload<'a>, String> {
        let e = job.coupon()?;
        Ok(HookPayload {
            output_id: job.id,
            reprint: job.reprint,
            message_id: e.message_id,
            action: e.action.as_str(),
            certificate_id: &e.certificate_id,
            order_id: e.order_id.as_deref(),
            code: e.code.as_deref(),
            account_id: e.account_id.as_deref(),
            client_key: e.client_key.as_deref(),
            msg_time: e.msg_time,
            log_id: e.log_id.as_deref(),
            received_at: &e.received_at,
            body: &e.body,
            source: e.source.as_str(),
            details: e.details.as_ref(),
        })
    }
}

impl Exec {
    /// The outbox's limit for one attempt: a little over `--exec-timeout`, so that the
    /// hook's own limit (which kills the group and keeps the output) always acts first.
    pub fn time_limit(&self) -> Duration {
        self.timeout + DRAIN + Duration::from_secs(1)
    }

    pub async fn run(&self, job: &Job) -> Result<(), String> {
        let payload = serde_json::to_vec(&HookPayload::of(job)?).map_err(|e| e.to_string())?;
        let event = job.coupon()?;
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(&self.command);
        let mut env = passed_on(|k| std::env::var_os(k));
        env.extend(event_variables(event));
        let run = contained(command, env, &payload, self.timeout)
            .await
            .map_err(|e| format!("cannot start --exec command: {e}"))?;
        let output = run.result("--exec command", "--exec-timeout")?;
        if !output.is_empty() {
            log::debug!("exec: output {}: {output}", job.id);
        }
        Ok(())
    }
}

/// How a contained command ended, and the end of its output.
pub struct Contained {
    /// `None`: it ran past its time limit and its group was killed.
    ended: Option<std::io::Result<ExitStatus>>,
    timeout: Duration,
    output: Tail,
}

impl Contained {
    /// Exit status 0 is `Ok` with the command's output on one line; anything else says
    /// what happened, naming the command as `what` and its time limit as `limit`.
    pub fn result(&self, what: &str, limit: &str) -> Result<String, String> {
        let failure = match &self.ended {
            Some(Ok(status)) if status.success() => return Ok(self.output.summary()),
            Some(Ok(status)) => describe_exit(what, *status),
            Some(Err(e)) => return Err(format!("{what}: {e}")),
            None => format!(
                "{what} ran past {limit} ({}s); its process group was killed",
                self.timeout.as_secs()
            ),
        };
        Err(match self.output.summary() {
            s if s.is_empty() => failure,
            s => format!("{failure}: {s}"),
        })
    }
}

/// Runs `command` contained (SPEC §6): with only `env` for its environment, `input` on
/// its stdin, in its own process group, killed whole when the command exits and at
/// `timeout`, its stdout and stderr kept through a ring of [`OUTPUT_KEPT`] bytes. The
/// hook runs this way, and so does the speaker's player (`sinks::speaker`).
pub async fn contained(
    mut command: Command,
    env: Vec<(String, OsString)>,
    input: &[u8],
    timeout: Duration,
) -> std::io::Result<Contained> {
    let mut child = command
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let mut output = Tail::new(OUTPUT_KEPT);
    let deadline = tokio::time::Instant::now() + timeout;
    let finished = tokio::time::timeout_at(deadline, async {
        let io = async {
            tokio::join!(feed(stdin, input), collect(stdout, stderr, &mut output));
        };
        tokio::pin!(io);
        let mut io_done = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = &mut io, if !io_done => io_done = true,
            }
        };
        // The command is done, and so is everything it started; their ends of the
        // pipes close with them.
        group.kill();
        if !io_done {
            let _ = tokio::time::timeout(DRAIN, &mut io).await;
        }
        status
    })
    .await;
    if finished.is_err() {
        group.kill();
        let _ = tokio::time::timeout(DRAIN, child.wait()).await;
    }
    Ok(Contained {
        ended: finished.ok(),
        timeout,
        output,
    })
}

/// What a contained command inherits from the daemon's environment: `PATH` (a default
/// one when the daemon has none), `LANG`, `TZ`, `HOME`; never the secret or a setting.
pub fn passed_on(daemon_env: impl Fn(&str) -> Option<OsString>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = PASSED_ON
        .iter()
        .filter_map(|&k| Some((k.to_string(), daemon_env(k)?)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// The hook's event variables, shown through the sanitizer.
fn event_variables(event: &JobEvent) -> Vec<(String, OsString)> {
    let d = event.details.as_ref();
    let pay = d.and_then(|d| d.pay_amount).map(|fen| fen.to_string());
    let known = [
        ("COUPOND_ACTION", Some(event.action.as_str())),
        (
            "COUPOND_CERTIFICATE_ID",
            Some(event.certificate_id.as_str()),
        ),
        ("COUPOND_TITLE", d.and_then(|d| d.title.as_deref())),
        ("COUPOND_PAY_AMOUNT", pay.as_deref()),
        ("COUPOND_POI_ID", d.and_then(|d| d.poi_id.as_deref())),
    ];
    // Details not (yet) known: their variables are unset, not empty.
    known
        .into_iter()
        .filter_map(|(k, v)| Some((k.into(), sanitize::text(v?).into_owned().into())))
        .collect()
}

fn describe_exit(what: &str, status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("{what} exited with status {code}"),
        (None, Some(signal)) => format!("{what} was killed by signal {signal}"),
        (None, None) => format!("{what} ended: {status}"),
    }
}

/// Writes the payload to the command's stdin and closes it. A command that does not
/// read its input (or exits first) is fine.
async fn feed(stdin: Option<ChildStdin>, payload: &[u8]) {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(payload).await;
    }
}

/// Reads stdout and stderr until both are closed, keeping only their tail.
async fn collect(
    mut stdout: Option<impl AsyncRead + Unpin>,
    mut stderr: Option<impl AsyncRead + Unpin>,
    tail: &mut Tail,
) {
    let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            n = read_some(&mut stdout, &mut a) => match n {
                Some(n) => tail.push(&a[..n]),
                None => stdout = None,
            },
            n = read_some(&mut stderr, &mut b) => match n {
                Some(n) => tail.push(&b[..n]),
                None => stderr = None,
            },
        }
    }
}

/// One read: `None` at the end of the stream (or an error); never ready without a stream.
async fn read_some(stream: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> Option<usize> {
    match stream {
        Some(s) => s.read(buf).await.ok().filter(|&n| n > 0),
        None => std::future::pending().await,
    }
}

/// The hook's process group. Killed once: when the command exits, at the time limit, or
/// when the attempt is abandoned (the daemon stops) and this is dropped.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        // Never 0 or 1: kill(0) and kill(-1) would reach the daemon's own group or every
        // process it may signal.
        if let Some(pgid) = self.0.take().filter(|&id| id > 1) {
            // SAFETY: kill(2) with a negative pid signals that process group; it touches
            // no memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `cap` bytes of a stream, kept while reading: memory stays at `cap` however
/// long the stream.
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            buf: VecDeque::with_capacity(cap),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(bytes);
    }

    /// The kept output on one line: its non-blank lines joined with ` | `, starting with
    /// `…` when earlier output was dropped.
    fn summary(&self) -> String {
        let bytes: Vec<u8> = self.buf.iter().copied().collect();
        let cut = self.total > bytes.len() as u64;
        // A cut may fall inside a UTF-8 character: start at the next whole one.
        let start = if cut {
            bytes
                .iter()
                .take(4)
                .take_while(|&&b| b & 0xC0 == 0x80)
                .count()
        } else {
            0
        };
        let text = String::from_utf8_lossy(&bytes[start..]);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!("{}{}", if cut { "…" } else { "" }, lines.join(" | "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::coupon::Action;
    use crate::intake::Outcome;
    use crate::model::{Origin, Source, Work};

    /// The README's example job: an applied verify pushed over HTTP.
    pub(crate) fn sample_job() -> Job {
        let body = "{}".to_string();
        Job {
            id: 7,
            attempts: 0,
            since_ms: 1_795_538_923_438,
            reprint: false,
            work: Work::Coupon(JobEvent {
                message_id: 12,
                action: Action::Verify,
                certificate_id: "456".into(),
                order_id: Some("123".into()),
                code: Some("ABCD12345678".into()),
                account_id: Some("1234".into()),
                client_key: Some("your-app-id".into()),
                msg_time: 1665991178,
                log_id: Some("2022101019".into()),
                received_at: "2026-11-25T16:48:43.438Z".into(),
                body: body.clone(),
                source: Source::Push,
                details: None,
            }),
            origin: Some(Origin {
                message_id: 12,
                source: Source::Push,
                outcome: Outcome::Applied,
                client_key: Some("your-app-id".into()),
                account_id: Some("1234".into()),
                msg_id: Some("m-1".into()),
                signature: Some("ab12".into()),
                body,
            }),
            awaiting_details: None,
        }
    }

    #[test]
    fn the_hook_payload_is_pinned() {
        let job = sample_job();
        let json = serde_json::to_string(&HookPayload::of(&job).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"output_id":7,"reprint":false,"message_id":12,"action":"verify","certificate_id":"456","order_id":"123","code":"ABCD12345678","account_id":"1234","client_key":"your-app-id","msg_time":1665991178,"log_id":"2022101019","received_at":"2026-11-25T16:48:43.438Z","body":"{}","source":"push","details":null}"#
        );
        let mut job = job;
        if let Work::Coupon(e) = &mut job.work {
            e.code = None;
            e.details = Some(sample_details());
        }
        let json = serde_json::to_string(&HookPayload::of(&job).unwrap()).unwrap();
        assert!(json.contains(r#""code":null"#), "{json}");
        assert!(
            json.ends_with(
                r#""details":{"certificate_id":"456","title":"双人套餐","sku_id":"1800000000000000001","pay_amount":9900,"original_amount":12800,"coupon_pay_amount":9900,"merchant_ticket_amount":0,"poi_id":"7100000000000000123","verify_id":"V1","origin":"query","fetched_at":"2026-11-25T16:48:44.001Z"}}"#
            ),
            "{json}"
        );
    }

    /// The README's example details.
    pub(crate) fn sample_details() -> Details {
        Details {
            certificate_id: "456".into(),
            title: Some("双人套餐".into()),
            sku_id: Some("1800000000000000001".into()),
            pay_amount: Some(9900),
            original_amount: Some(12800),
            coupon_pay_amount: Some(9900),
            merchant_ticket_amount: Some(0),
            poi_id: Some("7100000000000000123".into()),
            verify_id: Some("V1".into()),
            origin: crate::details::DetailsOrigin::Query,
            fetched_at: "2026-11-25T16:48:44.001Z".into(),
        }
    }

    fn event(certificate_id: &str) -> JobEvent {
        JobEvent {
            message_id: 1,
            action: Action::Verify,
            certificate_id: certificate_id.into(),
            order_id: None,
            code: None,
            account_id: None,
            client_key: None,
            msg_time: 0,
            log_id: None,
            received_at: String::new(),
            body: String::new(),
            source: crate::model::Source::Push,
            details: None,
        }
    }

    #[test]
    fn the_environment_holds_the_four_passed_on_variables_and_the_event_only() {
        let daemon = |k: &str| match k {
            "PATH" => Some("/usr/bin".into()),
            "TZ" => Some("Asia/Shanghai".into()),
            "COUPOND_CLIENT_SECRET" | "SECRET" | "COUPOND_LOG_LEVEL" => Some("x".into()),
            _ => None,
        };
        let mut env = passed_on(daemon);
        env.extend(event_variables(&event("c\0\x1b[2J")));
        let got: Vec<(&str, String)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("PATH", "/usr/bin".to_string()),
                ("TZ", "Asia/Shanghai".into()),
                ("COUPOND_ACTION", "verify".into()),
                ("COUPOND_CERTIFICATE_ID", "c\u{fffd}\u{fffd}[2J".into()),
            ]
        );
        let bare = passed_on(|_| None);
        assert_eq!(bare[0], ("PATH".to_string(), OsString::from(DEFAULT_PATH)));
        let mut bought = event("c1");
        bought.details = Some(Details {
            title: Some("套餐\n1".into()),
            ..sample_details()
        });
        let mut env = passed_on(|_| None);
        env.extend(event_variables(&bought));
        let tail: Vec<(&str, String)> = env[3..]
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            tail,
            [
                ("COUPOND_TITLE", "套餐\u{fffd}1".to_string()),
                ("COUPOND_PAY_AMOUNT", "9900".into()),
                ("COUPOND_POI_ID", "7100000000000000123".into()),
            ]
        );
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_and_says_it_was_cut() {
        let cases: &[(&[&[u8]], usize, &str)] = &[
            (&[], 8, ""),
            (&[b"printer busy\n"], 64, "printer busy"),
            (&[b"one\n\n  two  \n", b"three"], 64, "one | two | three"),
            (&[b"0123456789", b"abc"], 8, "…56789abc"),
            (&[b"0123456789abcdef"], 4, "…cdef"),
            (&[b"x", b"y", b"z", b"w", b"v"], 3, "…zwv"),
            // The cut falls inside 券 (3 bytes in UTF-8): start at the next character.
            (&["a券码".as_bytes()], 4, "…码"),
        ];
        for (chunks, cap, want) in cases {
            let mut t = Tail::new(*cap);
            for c in *chunks {
                t.push(c);
            }
            assert!(t.buf.len() <= *cap);
            assert_eq!(t.summary(), *want, "{chunks:?} in {cap}");
        }
    }
}
