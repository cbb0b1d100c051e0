//! `--exec CMD`: runs a command for each applied message, the message as JSON on stdin.
//!
//! The command runs under `/bin/sh -c` with `COUPOND_ACTION` and
//! `COUPOND_CERTIFICATE_ID` set as well. Exit status 0 means done; anything else (or
//! running past `--exec-timeout`, after which it is killed) is retried with backoff, so
//! the command must be safe to run twice for the same message (`output_id` in the JSON
//! identifies the job).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::store::Job;

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
    /// Douyin's raw body, for hooks that want every field.
    pub body: &'a str,
}

impl<'a> HookPayload<'a> {
    pub fn of(job: &'a Job) -> HookPayload<'a> {
        let e = &job.event;
        HookPayload {
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
        }
    }
}

impl Exec {
    pub async fn run(&self, job: &Job) -> Result<(), String> {
        let payload = serde_json::to_vec(&HookPayload::of(job)).map_err(|e| e.to_string())?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .env("COUPOND_ACTION", job.event.action.as_str())
            .env("COUPOND_CERTIFICATE_ID", &job.event.certificate_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start --exec command: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(&payload).await;
        }
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(match out.status.code() {
            Some(code) => format!("--exec command exited with status {code}: {first}"),
            None => format!("--exec command was killed by a signal: {first}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::Action;
    use crate::store::JobEvent;

    #[test]
    fn the_hook_payload_is_pinned() {
        let job = Job {
            id: 7,
            attempts: 0,
            reprint: false,
            event: JobEvent {
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
                body: "{}".into(),
            },
        };
        let json = serde_json::to_string(&HookPayload::of(&job)).unwrap();
        assert_eq!(
            json,
            r#"{"output_id":7,"reprint":false,"message_id":12,"action":"verify","certificate_id":"456","order_id":"123","code":"ABCD12345678","account_id":"1234","client_key":"your-app-id","msg_time":1665991178,"log_id":"2022101019","received_at":"2026-11-25T16:48:43.438Z","body":"{}"}"#
        );
        let mut job = job;
        job.event.code = None;
        let json = serde_json::to_string(&HookPayload::of(&job)).unwrap();
        assert!(json.contains(r#""code":null"#), "{json}");
    }
}
