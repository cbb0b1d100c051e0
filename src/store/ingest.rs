//! The ingest transaction: dedup, the state rule, the message row and its output jobs,
//! all in one transaction per batch (group commit); and the bounded `rejected` rows.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, ToSql, Transaction};

use super::{RejectedRow, Result, Store, HEADER_CAP, REJECTED_BODY_CAP, REJECTED_KEEP};
use crate::coupon::{self, State};
use crate::intake::{Intake, Kind, Message, Outcome};
use crate::model::{Ack, Arrival, OutputPlan, SinkKind, Source};

impl Store {
    /// Records a batch of arrivals in one transaction: one fsync for all of them (group
    /// commit). Returns one [`Ack`] per arrival, in order, only once committed.
    pub fn ingest<'a>(
        &mut self,
        arrivals: impl IntoIterator<Item = &'a Arrival>,
        plan: &OutputPlan,
    ) -> Result<Vec<Ack>> {
        let tx = self.conn.transaction()?;
        let acks = arrivals
            .into_iter()
            .map(|a| ingest_one(&tx, a, plan))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        self.queued |= acks.iter().any(Ack::queued);
        Ok(acks)
    }

    /// Rejected requests, oldest first, for `coupond reverify`.
    pub fn rejected_rows(&self) -> Result<Vec<RejectedRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, received_at, msg_id, signature, body, body_len, source
             FROM rejected ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RejectedRow {
                id: r.get(0)?,
                received_at: r.get(1)?,
                msg_id: r.get(2)?,
                signature: r.get(3)?,
                body: r
                    .get_ref(4)?
                    .as_bytes_or_null()?
                    .unwrap_or_default()
                    .to_vec(),
                body_len: r.get(5)?,
                source: r.get(6)?,
            })
        })?;
        rows.collect()
    }

    /// Records rejected requests that now verify exactly as live ones, and forgets their
    /// `rejected` rows, in one transaction.
    pub fn recover_rejected(
        &mut self,
        items: &[(i64, Arrival)],
        plan: &OutputPlan,
    ) -> Result<Vec<Ack>> {
        let tx = self.conn.transaction()?;
        let mut acks = Vec::with_capacity(items.len());
        for (id, arrival) in items {
            acks.push(ingest_one(&tx, arrival, plan)?);
            tx.execute("DELETE FROM rejected WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        self.queued |= acks.iter().any(Ack::queued);
        Ok(acks)
    }
}

fn ingest_one(tx: &Transaction, a: &Arrival, plan: &OutputPlan) -> Result<Ack> {
    let msg = match &a.intake {
        Intake::Rejected { status, reason, .. } => {
            insert_rejected(tx, a, *status, reason)?;
            return Ok(Ack::Rejected);
        }
        Intake::Message(m) => m,
    };
    let sha1 = match &a.dedup {
        Some(key) => key.clone(),
        None => body_digest(&a.body),
    };
    let redelivered = tx
        .prepare_cached(
            "UPDATE messages SET deliveries = deliveries + 1, last_received_at = ?2
             WHERE body_sha1 = ?1 RETURNING id, deliveries, outcome",
        )?
        .query_row(params![sha1, a.received_at], |r| {
            Ok(Ack::Redelivered {
                message_id: r.get(0)?,
                deliveries: r.get(1)?,
                outcome: r.get(2)?,
            })
        })
        .optional()?;
    if let Some(ack) = redelivered {
        return Ok(ack);
    }
    let (outcome, error, cert) = match &msg.kind {
        Kind::Certificate(c) => {
            let current = current_state(tx, &c.certificate_id)?;
            let (verdict, after) = coupon::decide(current, c.action, c.msg_time);
            if verdict != coupon::Verdict::Stale {
                save_state(tx, c, msg, after, &a.received_at)?;
            }
            (Outcome::from(verdict), None, Some(c))
        }
        Kind::Challenge(_) => (Outcome::Challenge, None, None),
        Kind::Ignored => (Outcome::Ignored, None, None),
        Kind::Invalid(reason) => (Outcome::Invalid, Some(reason.as_str()), None),
    };
    // The source as stored: a `coupond send` push is a test whichever way it came, and
    // the plan decides from the same word the sinks will read back.
    let source = if msg.test { Source::Test } else { a.source };
    let message_id = insert_message(tx, a, msg, source, outcome, error, &sha1)?;
    if let (Outcome::Applied, Some(c)) = (outcome, cert) {
        if plan.details() && source != Source::Test {
            super::details::after_applied(tx, a, c)?;
        }
    }
    let jobs = plan.jobs_for(source, outcome, cert.map(|c| c.action));
    for sink in &jobs {
        insert_output(tx, message_id, *sink, &a.received_at, false)?;
    }
    Ok(Ack::Recorded {
        message_id,
        outcome,
        outputs: jobs.len(),
    })
}

fn current_state(tx: &Transaction, certificate_id: &str) -> Result<Option<State>> {
    tx.prepare_cached("SELECT status, status_msg_time FROM certificates WHERE certificate_id = ?1")?
        .query_row([certificate_id], |r| {
            Ok(State {
                status: r.get(0)?,
                msg_time: r.get(1)?,
            })
        })
        .optional()
}

fn save_state(
    tx: &Transaction,
    c: &crate::wire::CertificateMsg,
    msg: &Message,
    state: State,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO certificates (certificate_id, order_id, code, account_id, client_key,
                                   status, status_msg_time, first_seen_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (certificate_id) DO UPDATE SET
             order_id = coalesce(excluded.order_id, order_id),
             code = coalesce(excluded.code, code),
             account_id = coalesce(excluded.account_id, account_id),
             client_key = coalesce(excluded.client_key, client_key),
             status = excluded.status,
             status_msg_time = excluded.status_msg_time,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        c.certificate_id,
        c.order_id,
        c.code,
        c.account_id,
        msg.client_key,
        state.status,
        state.msg_time,
        now,
    ])?;
    Ok(())
}

fn insert_message(
    tx: &Transaction,
    a: &Arrival,
    msg: &Message,
    source: Source,
    outcome: Outcome,
    error: Option<&str>,
    sha1: &str,
) -> Result<i64> {
    let cert = match &msg.kind {
        Kind::Certificate(c) => Some(c),
        _ => None,
    };
    tx.prepare_cached(
        "INSERT INTO messages (received_at, msg_id, log_id, event, client_key, action,
                               certificate_id, msg_time, outcome, error, body, body_sha1,
                               last_received_at, order_id, code, account_id, source,
                               signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?1, ?13, ?14, ?15, ?16,
                 ?17)",
    )?
    .execute(params![
        a.received_at,
        a.msg_id.as_deref().map(cap_header),
        msg.log_id,
        msg.event,
        msg.client_key,
        cert.map(|c| c.action),
        cert.map(|c| &c.certificate_id),
        cert.map(|c| c.msg_time),
        outcome,
        error,
        Body(&a.body),
        sha1,
        cert.and_then(|c| c.order_id.as_ref()),
        cert.and_then(|c| c.code.as_ref()),
        cert.and_then(|c| c.account_id.as_ref()),
        source,
        a.signature.as_deref().map(cap_header),
    ])?;
    Ok(tx.last_insert_rowid())
}

pub(super) fn insert_output(
    tx: &Transaction,
    message_id: i64,
    sink: SinkKind,
    now: &str,
    reprint: bool,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO outputs (message_id, sink, created_at, reprint) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![message_id, sink, now, reprint])?;
    Ok(())
}

fn insert_rejected(tx: &Transaction, a: &Arrival, status: u16, reason: &str) -> Result<()> {
    let kept = &a.body[..a.body.len().min(REJECTED_BODY_CAP)];
    let digest = rejected_digest(a.signature.as_deref(), &a.body);
    // The same body with the same signature again (a sender's retry, usually counted in
    // memory by `ratelimit`): one row with a count.
    let repeated = tx
        .prepare_cached(
            "UPDATE rejected SET deliveries = deliveries + 1, last_received_at = ?2
             WHERE digest = ?1",
        )?
        .execute(params![digest, a.received_at])?;
    if repeated > 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO rejected (received_at, reason, status, msg_id, signature, body, body_len,
                               digest, last_received_at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?1, ?9)",
    )?
    .execute(params![
        a.received_at,
        reason,
        status,
        a.msg_id.as_deref().map(cap_header),
        a.signature.as_deref().map(cap_header),
        Body(kept),
        a.body.len() as i64,
        digest,
        a.source,
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached("DELETE FROM rejected WHERE id <= ?1")?
        .execute([id - REJECTED_KEEP])?;
    Ok(())
}

/// The dedup key of a signed body (`messages.body_sha1`): its SHA-1, in hex.
pub fn body_digest(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// What makes two rejected requests the same: the signature header and the whole body
/// (a sender's retry repeats both; another signature might verify under another secret,
/// so it is another row for `reverify`).
pub fn rejected_digest(signature: Option<&str>, body: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    match signature {
        Some(s) => {
            h.update(b"1");
            h.update(&(s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        None => h.update(b"0"),
    }
    h.update(body);
    h.digest().to_string()
}

pub(super) fn cap_header(s: &str) -> &str {
    match s.char_indices().nth(HEADER_CAP) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A raw body bound as TEXT when it is UTF-8 (every real one), else as a BLOB, so that
/// the stored bytes are exactly the signed bytes.
struct Body<'a>(&'a [u8]);

impl ToSql for Body<'_> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match std::str::from_utf8(self.0) {
            Ok(s) => ValueRef::Text(s.as_bytes()),
            Err(_) => ValueRef::Blob(self.0),
        }))
    }
}
