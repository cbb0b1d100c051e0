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

#[derive(serde::Serialize)]
struct Payload<'a> {
    output_id: i64,
    reprint: bool,
    #[serde(flatten)]
    event: &'a crate::store::JobEvent,
}

impl Exec {
    pub async fn run(&self, job: &Job) -> Result<(), String> {
        let payload = serde_json::to_vec(&Payload {
            output_id: job.id,
            reprint: job.reprint,
            event: &job.event,
        })
        .map_err(|e| e.to_string())?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .env("COUPOND_ACTION", &job.event.action)
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
