//! The output queue: pending jobs for the outbox, their results, reprints and print
//! tests.

use rusqlite::{params, OptionalExtension};

use super::ingest::insert_output;
use super::{Result, Store};
use crate::coupon::Action;
use crate::model::{
    Attempt, AttemptOutcome, Job, JobEvent, Origin, OutputState, SinkKind, Task, Work,
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
            "SELECT o.id, o.attempts, o.reprint, o.work, m.id, m.action, m.certificate_id,
                    m.order_id, m.code, m.account_id, m.client_key, m.msg_time, m.log_id,
                    m.received_at, CAST(m.body AS TEXT), m.source, m.outcome, m.msg_id,
                    m.signature,
                    CAST(round((julianday(min(coalesce(m.received_at, o.created_at),
                                              o.created_at)) - 2440587.5) * 86400000)
                         AS INTEGER)
             FROM outputs o LEFT JOIN messages m ON m.id = o.message_id
             WHERE o.state = 'pending' AND o.sink = ?1
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![sink, limit as i64], |r| {
            let (work, origin) = match r.get::<_, Option<Task>>(3)? {
                Some(task) => (Work::Task(task), None),
                None => message_work(r)?,
            };
            Ok(Job {
                id: r.get(0)?,
                attempts: r.get(1)?,
                since_ms: r.get(19)?,
                reprint: r.get(2)?,
                work,
                origin,
                awaiting_details: None,
            })
        })?;
        let mut jobs = rows.collect::<Result<Vec<_>>>()?;
        self.add_details(&mut jobs, held_after)?;
        // A report is counted when it is printed: whatever came in since it was queued
        // (a printer that was off all night) is on it.
        for job in &mut jobs {
            if let Work::Task(Task::Report) = job.work {
                if let Some(report) = self.report_job(job.id)? {
                    job.work = Work::Report(Box::new(report));
                }
            }
        }
        Ok(jobs)
    }

    /// Queues a job about no message (`coupond print-test`'s receipt) for `sink`;
    /// returns the output job's id.
    pub fn queue_task(&mut self, task: Task, sink: SinkKind) -> Result<i64> {
        self.conn
            .prepare_cached("INSERT INTO outputs (work, sink, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![task, sink, time::now_rfc3339()])?;
        self.queued = true;
        Ok(self.conn.last_insert_rowid())
    }

    /// An output job's state and last error, to follow one through the daemon.
    pub fn output_state(&self, id: i64) -> Result<Option<(OutputState, Option<String>)>> {
        self.conn
            .query_row(
                "SELECT state, last_error FROM outputs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    /// Records delivery attempts in one transaction. A job given up meanwhile
    /// ([`Store::cancel_job`]) stays given up unless this attempt delivered it.
    pub fn finish_jobs(&mut self, results: &[Attempt]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let now = time::now_rfc3339();
        for a in results {
            let (state, error) = match &a.outcome {
                AttemptOutcome::Done => (OutputState::Done, None),
                AttemptOutcome::Retry(e) => (OutputState::Pending, Some(e)),
                AttemptOutcome::GiveUp(e) => (OutputState::Failed, Some(e)),
                AttemptOutcome::Dropped(note) => (OutputState::Done, Some(note)),
            };
            tx.prepare_cached(
                "UPDATE outputs SET attempts = attempts + 1, state = ?2, last_error = ?3,
                        done_at = CASE ?2 WHEN 'done' THEN ?4 ELSE done_at END
                 WHERE id = ?1 AND (state = 'pending' OR ?2 = 'done')",
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
        self.queued |= message_id.is_some() && !sinks.is_empty();
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

/// A message's job from `pending_jobs`' row (columns 4 on): its coupon event, or a
/// signed message that is none (only the relay's forward carries one), and the message
/// as it came.
fn message_work(r: &rusqlite::Row) -> Result<(Work, Option<Origin>)> {
    let origin = Origin {
        message_id: r.get(4)?,
        source: r.get(15)?,
        outcome: r.get(16)?,
        client_key: r.get(10)?,
        account_id: r.get(9)?,
        msg_id: r.get(17)?,
        signature: r.get(18)?,
        body: r.get(14)?,
    };
    let work = match (r.get::<_, Option<Action>>(5)?, r.get(6)?) {
        (Some(action), Some(certificate_id)) => Work::Coupon(JobEvent {
            message_id: origin.message_id,
            action,
            certificate_id,
            order_id: r.get(7)?,
            code: r.get(8)?,
            account_id: origin.account_id.clone(),
            client_key: origin.client_key.clone(),
            msg_time: r.get(11)?,
            log_id: r.get(12)?,
            received_at: r.get(13)?,
            body: origin.body.clone(),
            source: origin.source,
            details: None,
        }),
        _ => Work::Relayed,
    };
    Ok((work, Some(origin)))
}
