//! The output queue: pending jobs for the outbox, their results, reprints and print
//! tests.

use rusqlite::{params, OptionalExtension};

use super::ingest::insert_output;
use super::{Result, Store};
use crate::coupon::Action;
use crate::model::{
    Attempt, AttemptOutcome, Job, JobEvent, Origin, SinkKind, Source, PRINT_TEST_EVENT,
};
use crate::time;

impl Store {
    /// Up to `limit` of `sink`'s pending jobs, oldest first: each sink's queue is
    /// worked strictly in order.
    pub fn pending_jobs(&self, sink: SinkKind, limit: usize) -> Result<Vec<Job>> {
        self.pending_jobs_held(sink, limit, None)
    }

    /// [`Store::pending_jobs`], ending at the first job queued after `held_after`
    /// (Unix ms) that still waits for its coupon's details: the outbox's read, which
    /// holds the queue there (SPEC §13).
    pub fn pending_jobs_held(
        &self,
        sink: SinkKind,
        limit: usize,
        held_after: Option<i64>,
    ) -> Result<Vec<Job>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.attempts, o.reprint, m.id, m.action, m.certificate_id,
                    m.order_id, m.code, m.account_id, m.client_key, m.msg_time, m.log_id,
                    m.received_at, CAST(m.body AS TEXT), m.source, m.outcome, m.msg_id,
                    m.signature, m.event
             FROM outputs o JOIN messages m ON m.id = o.message_id
             WHERE o.state = 'pending' AND o.sink = ?1
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![sink, limit as i64], |r| {
            let print_test = r.get::<_, Option<String>>(18)?.as_deref() == Some(PRINT_TEST_EVENT);
            let origin = Origin {
                message_id: r.get(3)?,
                source: r.get(14)?,
                outcome: r.get(15)?,
                client_key: r.get(9)?,
                account_id: r.get(8)?,
                msg_id: r.get(16)?,
                signature: r.get(17)?,
                body: r.get(13)?,
            };
            let event = match (r.get::<_, Option<Action>>(4)?, r.get(5)?) {
                (Some(action), Some(certificate_id)) => Some(JobEvent {
                    message_id: origin.message_id,
                    action,
                    certificate_id,
                    order_id: r.get(6)?,
                    code: r.get(7)?,
                    account_id: origin.account_id.clone(),
                    client_key: origin.client_key.clone(),
                    msg_time: r.get(10)?,
                    log_id: r.get(11)?,
                    received_at: r.get(12)?,
                    body: origin.body.clone(),
                    source: origin.source,
                    details: None,
                }),
                _ => None,
            };
            Ok(Job {
                id: r.get(0)?,
                attempts: r.get(1)?,
                reprint: r.get(2)?,
                print_test,
                event,
                origin,
                awaiting_details: None,
            })
        })?;
        let mut jobs = rows.collect::<Result<Vec<_>>>()?;
        self.add_details(&mut jobs, held_after)?;
        Ok(jobs)
    }

    /// Records a `coupond print-test` request (a test message about no coupon) and
    /// queues it for the printer; returns the output job's id.
    pub fn queue_print_test(&mut self, body: &str) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let now = time::now_rfc3339();
        let sha1 = sha1_smol::Sha1::from(body.as_bytes()).digest().to_string();
        tx.execute(
            "INSERT INTO messages (received_at, event, outcome, body, body_sha1,
                                   last_received_at, source)
             VALUES (?1, ?2, 'ignored', ?3, ?4, ?1, ?5)",
            params![now, PRINT_TEST_EVENT, body, sha1, Source::Test],
        )?;
        let message_id = tx.last_insert_rowid();
        insert_output(&tx, message_id, SinkKind::Printer, &now, false)?;
        let output_id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(output_id)
    }

    /// An output job's state and last error, to follow one through the daemon.
    pub fn output_state(&self, id: i64) -> Result<Option<(String, Option<String>)>> {
        self.conn
            .query_row(
                "SELECT state, last_error FROM outputs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    /// Records delivery attempts in one transaction.
    pub fn finish_jobs(&mut self, results: &[Attempt]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let now = time::now_rfc3339();
        for a in results {
            let (state, error) = match &a.outcome {
                AttemptOutcome::Done => ("done", None),
                AttemptOutcome::Retry(e) => ("pending", Some(e)),
                AttemptOutcome::GiveUp(e) => ("failed", Some(e)),
            };
            tx.prepare_cached(
                "UPDATE outputs SET attempts = attempts + 1, state = ?2, last_error = ?3,
                        done_at = CASE ?2 WHEN 'done' THEN ?4 ELSE done_at END
                 WHERE id = ?1",
            )?
            .execute(params![a.id, state, error, now])?;
        }
        tx.commit()
    }

    /// Queues a reprint of `certificate_id`'s latest applied message on `sinks`.
    /// Returns the message id it reprints, or `None` if the coupon is unknown.
    pub fn queue_reprint(
        &mut self,
        certificate_id: &str,
        sinks: &[SinkKind],
    ) -> Result<Option<i64>> {
        let tx = self.conn.transaction()?;
        let message_id: Option<i64> = tx
            .query_row(
                "SELECT id FROM messages WHERE certificate_id = ?1 AND outcome = 'applied'
                 ORDER BY msg_time DESC, id DESC LIMIT 1",
                [certificate_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = message_id {
            let now = time::now_rfc3339();
            for sink in sinks {
                insert_output(&tx, id, *sink, &now, true)?;
            }
        }
        tx.commit()?;
        Ok(message_id)
    }

    /// Pending jobs per sink, to warn about sinks no longer configured.
    pub fn pending_by_sink(&self) -> Result<Vec<(SinkKind, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT sink, count(*) FROM outputs WHERE state = 'pending' GROUP BY sink ORDER BY sink",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}
