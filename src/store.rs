//! The SQLite file: schema, migrations and every SQL statement (SPEC §5).
//!
//! Invariants held here:
//! - one signed body is one `messages` row (`body_sha1` is unique); a redelivery only
//!   counts (`deliveries`, `last_received_at`);
//! - a message, its certificate's new state and its output jobs are written in one
//!   transaction, so an output exists if and only if its message was applied;
//! - unsigned traffic costs at most [`REJECTED_KEEP`] rows of at most
//!   [`REJECTED_BODY_CAP`] bytes: the internet cannot fill the box's flash (nor wear it:
//!   `ratelimit` decides which rejected requests are written at all, and the counts of
//!   the rest arrive here through [`Store::add_counts`]); one rejected body with one
//!   signature is one row, its repeats only count (`rejected.digest` is unique);
//! - `synchronous=FULL` in WAL mode: once [`Store::ingest`] returns `Ok`, the batch
//!   survives power loss, which is what lets the HTTP layer answer 200.
//!
//! The schema version is `PRAGMA user_version`; [`MIGRATIONS`] are numbered and
//! forward-only. A database newer than this binary is refused, never downgraded.

use std::path::Path;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql, Transaction};

use crate::coupon::{self, Action, State, Status};
use crate::intake::{Intake, Kind, Message, Outcome};
use crate::sinks::SinkKind;
use crate::time;

/// Unsigned requests kept in `rejected`; older rows are dropped.
pub const REJECTED_KEEP: i64 = 1000;
/// Bytes of an unsigned body kept in `rejected` (real Douyin bodies are under 1 KiB).
pub const REJECTED_BODY_CAP: usize = 8 * 1024;
/// Bytes kept of an attacker-controlled header (`Msg-Id`, the signature).
const HEADER_CAP: usize = 128;

/// Forward-only migrations; migration `i` brings `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    received_at      TEXT NOT NULL,
    msg_id           TEXT,
    log_id           TEXT,
    event            TEXT,
    client_key       TEXT,
    action           TEXT,
    certificate_id   TEXT,
    msg_time         INTEGER,
    outcome          TEXT NOT NULL CHECK (outcome IN
                         ('applied','duplicate','stale','ignored','invalid','challenge')),
    error            TEXT,
    body             TEXT NOT NULL,  -- the raw body; a body that is not UTF-8 is a BLOB
    body_sha1        TEXT NOT NULL UNIQUE,
    deliveries       INTEGER NOT NULL DEFAULT 1,
    last_received_at TEXT NOT NULL,
    order_id         TEXT,
    code             TEXT,
    account_id       TEXT
);
CREATE INDEX messages_by_certificate ON messages (certificate_id, msg_time);

CREATE TABLE certificates (
    certificate_id  TEXT PRIMARY KEY,
    order_id        TEXT,
    code            TEXT,
    account_id      TEXT,
    client_key      TEXT,
    status          TEXT NOT NULL CHECK (status IN ('verified','cancelled','refunded')),
    status_msg_time INTEGER NOT NULL,
    first_seen_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX certificates_by_update ON certificates (updated_at);

CREATE TABLE outputs (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages (id),
    sink            TEXT NOT NULL CHECK (sink IN ('printer','display','exec','log')),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','done','failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    done_at         TEXT,
    next_attempt_at TEXT NOT NULL,
    reprint         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outputs_queue ON outputs (sink, id) WHERE state = 'pending';

CREATE TABLE rejected (
    id          INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    reason      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    msg_id      TEXT,
    signature   TEXT,
    body,                   -- at most REJECTED_BODY_CAP bytes
    body_len    INTEGER NOT NULL
);
"#,
    r#"
-- Retention (--keep-days) walks these in small steps.
CREATE INDEX messages_by_received ON messages (received_at);
CREATE INDEX outputs_by_message ON outputs (message_id);
CREATE INDEX outputs_by_created ON outputs (created_at);
CREATE INDEX rejected_by_received ON rejected (received_at);
"#,
    r#"
-- outputs: `sink` may also be 'mqtt' (SPEC §5), and `next_attempt_at` goes: retry
-- timing is the outbox's, kept in memory (after a restart pending jobs are tried at once).
-- SQLite cannot change a CHECK in place, so the table is rebuilt.
CREATE TABLE outputs_v3 (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages (id),
    sink            TEXT NOT NULL CHECK (sink IN ('printer','display','exec','log','mqtt')),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','done','failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    done_at         TEXT,
    reprint         INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outputs_v3 (id, message_id, sink, state, attempts, last_error, created_at, done_at, reprint)
    SELECT id, message_id, sink, state, attempts, last_error, created_at, done_at, reprint FROM outputs;
DROP TABLE outputs;
ALTER TABLE outputs_v3 RENAME TO outputs;
CREATE INDEX outputs_queue ON outputs (sink, id) WHERE state = 'pending';
CREATE INDEX outputs_by_message ON outputs (message_id);
CREATE INDEX outputs_by_created ON outputs (created_at);
"#,
    r#"
-- The tunnel is the internet (SPEC §3): a rejected body sent again by its sender is one
-- row with a count, and what is not stored row by row is counted.
ALTER TABLE rejected ADD COLUMN digest TEXT;   -- sha1 of signature and body; NULL before
ALTER TABLE rejected ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1;
ALTER TABLE rejected ADD COLUMN last_received_at TEXT;
CREATE UNIQUE INDEX rejected_by_digest ON rejected (digest);
CREATE TABLE counters (
    name        TEXT PRIMARY KEY,  -- 'not_found', 'too_large', 'rejected_unstored'
    count       INTEGER NOT NULL,
    first_at    TEXT NOT NULL,
    last_at     TEXT NOT NULL,
    last_detail TEXT              -- e.g. the path a 404 asked for
);
"#,
    r#"
-- Catch-up (SPEC §11): how each message came, and how far the sweeps have got.
ALTER TABLE messages ADD COLUMN source TEXT NOT NULL DEFAULT 'push'
    CHECK (source IN ('push','reconcile','mqtt','test'));
CREATE TABLE catchup (
    account_id      TEXT PRIMARY KEY,
    swept_to        INTEGER,  -- Unix s: everything before it has been swept, no gap
    sweep_at        TEXT,     -- when the last complete sweep ended
    sweep_start     INTEGER,  -- its window (Unix s)
    sweep_end       INTEGER,
    sweep_records   INTEGER,  -- records it saw
    sweep_recovered INTEGER,  -- messages it applied (coupons Douyin had not pushed)
    error           TEXT,     -- the last failed sweep's reason (never a secret or token)
    error_at        TEXT
);
"#,
    r#"
-- MQTT (SPEC §12): a push's signature, which the relay forwards and headquarters' events
-- carry, and the state of each broker connection for `coupond status`.
ALTER TABLE messages ADD COLUMN signature TEXT;
-- How a rejected message came, so that `reverify` records it with its true source (a
-- push that came from MQTT must never be forwarded again).
ALTER TABLE rejected ADD COLUMN source TEXT NOT NULL DEFAULT 'push';
CREATE TABLE links (
    name    TEXT PRIMARY KEY,  -- 'mqtt' (events and forward), 'mqtt-source'
    state   TEXT NOT NULL,     -- 'connected', 'connecting'
    since   TEXT NOT NULL,
    detail  TEXT               -- the broker, or why the last connection failed
);
"#,
    r#"
-- What the running daemon has (written at each start, replacing the last run's), so that
-- `check`, `print-test` and `reprint` tell the truth about what it will do.
CREATE TABLE daemon (
    part    TEXT PRIMARY KEY,  -- 'listen', 'display' or an output: 'printer', 'exec', ...
    detail  TEXT,              -- its address or destination
    since   TEXT NOT NULL      -- when that daemon started
);
"#,
];

pub type Result<T> = rusqlite::Result<T>;

/// The schema version this binary writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Which sinks get a job for an applied message of each action.
#[derive(Debug, Clone, Default)]
pub struct OutputPlan {
    /// The store's own sinks (printer, display, exec, log), for `actions` only.
    pub sinks: Vec<SinkKind>,
    pub actions: Vec<Action>,
    /// `--mqtt`: every applied message but test pushes, whatever its action.
    pub mqtt_events: bool,
    /// `--mqtt-forward`: every new signed message that came over HTTP, whatever its
    /// outcome.
    pub mqtt_forward: bool,
}

impl OutputPlan {
    fn sinks_for(&self, action: Action) -> &[SinkKind] {
        if self.actions.contains(&action) {
            &self.sinks
        } else {
            &[]
        }
    }

    /// Whether a new message gets an `mqtt` job: one job publishes everything this
    /// message means to the broker (its forward, its event), in order with the others.
    /// Only Douyin's own pushes are forwarded: never one that came from MQTT (no loops),
    /// nor a test push, which a store box would take for a real one and report to
    /// headquarters.
    fn wants_mqtt(&self, source: Source, outcome: Outcome) -> bool {
        (self.mqtt_forward && source == Source::Push)
            || (self.mqtt_events && outcome == Outcome::Applied && source != Source::Test)
    }
}

/// How a message came (`messages.source`, SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Douyin's webhook over HTTP.
    Push,
    /// Recovered from Douyin's API (catch-up).
    Reconcile,
    /// A push forwarded by a relay through the broker.
    Mqtt,
    /// `coupond send`'s test push.
    Test,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Push, Source::Reconcile, Source::Mqtt, Source::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Reconcile => "reconcile",
            Source::Mqtt => "mqtt",
            Source::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A request that reached the webhook path, classified, with its raw bytes.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub received_at: String,
    pub msg_id: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub intake: Intake,
    pub source: Source,
    /// The dedup key (`body_sha1`) when it is not the sha1 of `body`: for a recovered
    /// record, the digest of (`verify_id`, action, time).
    pub dedup: Option<String>,
}

/// One account's catch-up, as `coupond status` shows it.
#[derive(Debug, Clone, Default)]
pub struct CatchupRow {
    pub account_id: String,
    pub sweep_at: Option<String>,
    pub window: Option<(i64, i64)>,
    pub records: i64,
    pub recovered: i64,
    /// (when, why) of the last failed sweep.
    pub error: Option<(String, String)>,
}

/// What the store did with one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Rejected,
    /// The same body was already stored: only its delivery count went up.
    Redelivered {
        message_id: i64,
        deliveries: i64,
        outcome: Outcome,
    },
    Recorded {
        message_id: i64,
        outcome: Outcome,
        outputs: usize,
    },
}

/// A pending output job, with what it is to tell.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub attempts: i64,
    pub reprint: bool,
    /// `coupond print-test`: a test receipt, about no coupon (`event` is `None`).
    pub print_test: bool,
    /// The coupon event. `None` only for an `mqtt` job that forwards a signed message
    /// that is no coupon event (a challenge, an invalid body): the store's own sinks
    /// only ever get applied coupon messages.
    pub event: Option<JobEvent>,
    /// The message as it came, for the sinks that pass it on (MQTT).
    pub origin: Origin,
}

impl Job {
    /// The coupon event, for sinks that only ever get applied coupon messages.
    pub fn coupon(&self) -> std::result::Result<&JobEvent, String> {
        self.event
            .as_ref()
            .ok_or_else(|| format!("message {} is not a coupon event", self.origin.message_id))
    }

    /// What the job is about, for a log line.
    pub fn subject(&self) -> String {
        match &self.event {
            Some(e) => format!("certificate {}", e.certificate_id),
            None => format!("message {}", self.origin.message_id),
        }
    }
}

/// A message as it came: what a relay forwards and headquarters' events quote.
#[derive(Debug, Clone)]
pub struct Origin {
    pub message_id: i64,
    pub source: Source,
    pub outcome: Outcome,
    pub client_key: Option<String>,
    pub account_id: Option<String>,
    pub msg_id: Option<String>,
    pub signature: Option<String>,
    /// The raw body (for a recovered message, the record).
    pub body: String,
}

/// The `event` of the message row `coupond print-test` records (no coupon, never
/// from Douyin).
pub const PRINT_TEST_EVENT: &str = "coupond_print_test";

/// The coupon event an output job reports.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub message_id: i64,
    pub action: Action,
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    pub client_key: Option<String>,
    pub msg_time: i64,
    pub log_id: Option<String>,
    pub received_at: String,
    /// Douyin's raw body, for hooks that want every field (a recovered record's JSON
    /// when `source` is `Reconcile`).
    pub body: String,
    /// A push, or a coupon recovered by catch-up (marked 补录).
    pub source: Source,
}

impl JobEvent {
    /// Recovered by catch-up rather than pushed: receipts and the display say 补录.
    pub fn recovered(&self) -> bool {
        self.source == Source::Reconcile
    }

    /// A test push (`coupond send`): marked 测试 wherever it shows.
    pub fn test(&self) -> bool {
        self.source == Source::Test
    }
}

/// One delivery attempt of output job `id`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub outcome: AttemptOutcome,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered: the job is `done`.
    Done,
    /// Failed with this error; it stays `pending` and is tried again.
    Retry(String),
    /// Failed with this error for the last time: the job is `failed`.
    GiveUp(String),
}

/// What one retention step deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outputs: usize,
    pub messages: usize,
    pub rejected: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.outputs + self.messages + self.rejected
    }
}

/// A `rejected` row, as `coupond reverify` re-checks it.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    pub id: i64,
    pub received_at: String,
    pub msg_id: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub body_len: i64,
    pub source: Source,
}

/// A certificate as the counter display shows it.
#[derive(Debug, Clone)]
pub struct CertificateRow {
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    pub status: Status,
    pub status_msg_time: i64,
    pub updated_at: String,
    /// Set by a test push.
    pub test: bool,
}

/// `coupond status`'s view of the database.
#[derive(Debug, Default)]
pub struct Summary {
    pub schema_version: i64,
    pub certificates: Vec<(Status, i64)>,
    pub outcomes: Vec<(Outcome, i64)>,
    pub redeliveries: i64,
    pub outputs: Vec<(SinkKind, String, i64)>,
    pub failed_outputs: Vec<(i64, SinkKind, String, i64, Option<String>)>,
    pub rejected: i64,
    /// Deliveries of the stored rejected bodies beyond the first.
    pub rejected_repeats: i64,
    pub last_message: Option<(String, Outcome, Option<Action>, Option<String>)>,
    pub last_rejected: Option<(String, i64, String)>,
    pub counters: Vec<CounterRow>,
    pub catchup: Vec<CatchupRow>,
    /// Messages catch-up applied, in all.
    pub recovered: i64,
    /// Test pushes and print tests, counted apart from the rest.
    pub test_messages: i64,
    pub test_coupons: i64,
    /// See [`Store::signature_failures_last_hour`].
    pub signature_failures: i64,
    /// The broker connections of the last daemon that ran.
    pub links: Vec<Link>,
}

/// A broker connection's state, as the daemon last recorded it, with its traffic.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub state: String,
    pub since: String,
    pub detail: Option<String>,
    /// `mqtt`: jobs waiting for the broker; `mqtt-source`: none.
    pub queued: i64,
    /// `mqtt`: the last PUBACK'd publish; `mqtt-source`: the last push ingested.
    pub last: Option<String>,
}

/// A `counters` row: requests counted rather than stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub name: String,
    pub count: i64,
    pub last_at: String,
    pub last_detail: Option<String>,
}

/// Requests counted in memory since the last write, for `counters`.
#[derive(Debug, Clone)]
pub struct Counted {
    pub name: &'static str,
    pub n: i64,
    pub last_at: String,
    pub last_detail: String,
}

/// Repeats of a stored rejected body since the last write.
#[derive(Debug, Clone)]
pub struct Repeated {
    pub digest: String,
    pub n: i64,
    pub last_at: String,
}

/// Certificates a test push set, which `status` counts apart.
const TEST_CERTIFICATE: &str = "EXISTS (SELECT 1 FROM messages m
    WHERE m.certificate_id = c.certificate_id AND m.source = 'test')";

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if need be) the database for the daemon, migrated to the
    /// current schema.
    pub fn open(path: &Path) -> std::result::Result<Store, OpenError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A new file gives pruned space back to the file system bit by bit (see
        // `prune_step`). This must come before anything writes the file's header, even
        // the switch to WAL; on an existing file it changes nothing.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        // WAL lets `coupond status` and the display read while the daemon writes;
        // FULL makes every commit durable before we acknowledge (SPEC §5).
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NoWal);
        }
        // Checkpoints are the writer's job, after it has answered (see `checkpoint`):
        // SQLite's automatic one would run inside a commit, on the acknowledgement path.
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 4194304;",
        )?;
        let version = schema_version(&conn)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::TooNew(version, path.to_path_buf()));
        }
        if version > 0 && version < SCHEMA_VERSION {
            keep_copy(&conn, path, version).map_err(OpenError::Copy)?;
        }
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Opens the database a subcommand inspects or edits beside the daemon: it must
    /// exist already (only `coupond serve` creates one); errors are ready to print.
    pub fn open_existing(path: &Path, read_only: bool) -> std::result::Result<Store, String> {
        if !path.exists() {
            return Err(format!(
                "no database at {} (is --db right? `coupond serve` creates it)",
                path.display()
            ));
        }
        let opened = if read_only {
            Store::open_read_only(path)
        } else {
            Store::open(path).map_err(|e| e.to_string())
        };
        opened.map_err(|e| format!("cannot open database {}: {e}", path.display()))
    }

    /// Opens an existing database read-only, for inspection while the daemon runs.
    pub fn open_read_only(path: &Path) -> std::result::Result<Store, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let version = schema_version(&conn).map_err(|e| e.to_string())?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::TooNew(version, path.to_path_buf()).to_string());
        }
        Ok(Store { conn })
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64> {
        schema_version(&self.conn)
    }

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
        Ok(acks)
    }

    /// Copies the WAL into the database file as far as readers allow, so the `-wal` file
    /// stops growing; returns the WAL's size in pages.
    pub fn checkpoint(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
    }

    /// Up to `limit` of `sink`'s pending jobs, oldest first: each sink's queue is
    /// worked strictly in order.
    pub fn pending_jobs(&self, sink: SinkKind, limit: usize) -> Result<Vec<Job>> {
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
            })
        })?;
        rows.collect()
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

    /// Records delivery attempts in one transaction. A job given up meanwhile
    /// ([`Store::cancel_job`]) stays given up unless this attempt delivered it.
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
        Ok(message_id)
    }

    /// Genuine-looking pushes that failed the signature check in the last hour
    /// ([`crate::intake::WRONG_SECRET`]): a wrong secret, not internet junk.
    pub fn signature_failures_last_hour(&self) -> Result<i64> {
        let since = time::rfc3339_millis(time::now_millis() - 3_600_000);
        self.conn
            .prepare_cached(
                "SELECT coalesce(sum(deliveries), 0) FROM rejected
                 WHERE coalesce(last_received_at, received_at) >= ?1 AND reason = ?2",
            )?
            .query_row(params![since, crate::intake::WRONG_SECRET], |r| r.get(0))
    }

    /// Records a broker connection's state: `state` is `connected` or `connecting`,
    /// `detail` the broker or the last error. Written on changes only.
    pub fn set_link(&mut self, name: &str, state: &str, detail: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO links (name, state, since, detail) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                     since = CASE WHEN state = excluded.state THEN since ELSE excluded.since END,
                     state = excluded.state, detail = excluded.detail",
            )?
            .execute(params![name, state, time::now_rfc3339(), detail])?;
        Ok(())
    }

    /// The broker connections with their queue and last traffic.
    pub fn links(&self) -> Result<Vec<Link>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, state, since, detail,
                    CASE name WHEN 'mqtt' THEN (SELECT count(*) FROM outputs
                                                 WHERE state = 'pending' AND sink = 'mqtt')
                              ELSE 0 END,
                    CASE name WHEN 'mqtt' THEN (SELECT max(done_at) FROM outputs
                                                 WHERE sink = 'mqtt' AND state = 'done')
                              ELSE (SELECT max(last_received_at) FROM messages
                                    WHERE source = 'mqtt') END
             FROM links ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Link {
                name: r.get(0)?,
                state: r.get(1)?,
                since: r.get(2)?,
                detail: r.get(3)?,
                queued: r.get(4)?,
                last: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    /// A one-line summary for systemd's STATUS=: cheap (an index and the rowid).
    pub fn status_line(&self) -> Result<String> {
        let messages: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| {
                    r.get(0)
                })?;
        let pending: i64 = self.conn.query_row(
            "SELECT count(*) FROM outputs WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        let mut line = format!("{messages} messages recorded, {pending} outputs pending");
        let bad = self.signature_failures_last_hour()?;
        if bad > 0 {
            line += &format!(
                "; {bad} push(es) failed the signature check in the last hour: wrong client secret?"
            );
        }
        for link in self.links()? {
            line += &format!("; {} {}", link.name, link.state);
            if link.name == "mqtt" {
                line += &format!(", {} queued", link.queued);
            }
        }
        Ok(line)
    }

    /// Deletes up to `limit` rows of each kind older than `cutoff` (RFC 3339): delivered or
    /// failed outputs, then messages no output refers to any more, then rejects.
    /// Certificates and pending outputs (and their messages) are never touched. Small
    /// steps, each its own transaction, so the writer stays responsive.
    pub fn prune_step(&mut self, cutoff: &str, limit: i64) -> Result<Pruned> {
        let tx = self.conn.transaction()?;
        let outputs = tx.execute(
            "DELETE FROM outputs WHERE id IN (
                 SELECT id FROM outputs WHERE created_at < ?1 AND state != 'pending' LIMIT ?2)",
            params![cutoff, limit],
        )?;
        let messages = tx.execute(
            "DELETE FROM messages WHERE id IN (
                 SELECT m.id FROM messages m WHERE m.received_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.message_id = m.id)
                 LIMIT ?2)",
            params![cutoff, limit],
        )?;
        let rejected = tx.execute(
            "DELETE FROM rejected WHERE id IN (
                 SELECT id FROM rejected WHERE received_at < ?1 LIMIT ?2)",
            params![cutoff, limit],
        )?;
        tx.commit()?;
        let pruned = Pruned {
            outputs,
            messages,
            rejected,
        };
        if pruned.total() > 0 {
            // Hand free pages back to the file system a little at a time.
            self.conn
                .query_row("PRAGMA incremental_vacuum(64)", [], |_| Ok(()))
                .optional()?;
        }
        Ok(pruned)
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
        Ok(acks)
    }

    /// Adds what `ratelimit` counted in memory: requests not stored row by row, and
    /// repeats of stored rejected bodies. One small transaction, at most every 10 s.
    pub fn add_counts(&mut self, counted: &[Counted], repeated: &[Repeated]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for c in counted {
            tx.prepare_cached(
                "INSERT INTO counters (name, count, first_at, last_at, last_detail)
                 VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET count = count + excluded.count,
                     last_at = excluded.last_at, last_detail = excluded.last_detail",
            )?
            .execute(params![c.name, c.n, c.last_at, cap_header(&c.last_detail)])?;
        }
        for r in repeated {
            tx.prepare_cached(
                "UPDATE rejected SET deliveries = deliveries + ?2, last_received_at = ?3
                 WHERE digest = ?1",
            )?
            .execute(params![r.digest, r.n, r.last_at])?;
        }
        tx.commit()
    }

    /// Pending jobs per sink, to warn about sinks no longer configured.
    pub fn pending_by_sink(&self) -> Result<Vec<(SinkKind, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT sink, count(*) FROM outputs WHERE state = 'pending' GROUP BY sink ORDER BY sink",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// The most recently changed certificates, newest first.
    pub fn latest_certificates(&self, limit: usize) -> Result<Vec<CertificateRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT certificate_id, order_id, code, account_id, status, status_msg_time,
                        updated_at, {TEST_CERTIFICATE}
                 FROM certificates c ORDER BY updated_at DESC, rowid DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(CertificateRow {
                certificate_id: r.get(0)?,
                order_id: r.get(1)?,
                code: r.get(2)?,
                account_id: r.get(3)?,
                status: r.get(4)?,
                status_msg_time: r.get(5)?,
                updated_at: r.get(6)?,
                test: r.get(7)?,
            })
        })?;
        rows.collect()
    }

    /// Everything `coupond status` prints.
    pub fn summary(&self) -> Result<Summary> {
        let c = &self.conn;
        fn pairs<T: FromSql>(c: &Connection, sql: &str) -> Result<Vec<(T, i64)>> {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        }
        let mut stmt = c.prepare(
            "SELECT sink, state, count(*) FROM outputs GROUP BY sink, state ORDER BY sink, state",
        )?;
        let outputs = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_>>()?;
        let mut stmt = c.prepare(
            "SELECT o.id, o.sink, coalesce(m.certificate_id, ''), o.attempts, o.last_error
             FROM outputs o JOIN messages m ON m.id = o.message_id
             WHERE o.state = 'failed' ORDER BY o.id DESC LIMIT 5",
        )?;
        let failed_outputs = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT name, count, last_at, last_detail FROM counters ORDER BY name")?;
        let counters = stmt
            .query_map([], |r| {
                Ok(CounterRow {
                    name: r.get(0)?,
                    count: r.get(1)?,
                    last_at: r.get(2)?,
                    last_detail: r.get(3)?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(Summary {
            schema_version: schema_version(c)?,
            certificates: pairs(
                c,
                &format!(
                    "SELECT status, count(*) FROM certificates c WHERE NOT {TEST_CERTIFICATE}
                     GROUP BY status ORDER BY status"
                ),
            )?,
            outcomes: pairs(
                c,
                "SELECT outcome, count(*) FROM messages WHERE source != 'test'
                 GROUP BY outcome ORDER BY outcome",
            )?,
            signature_failures: self.signature_failures_last_hour()?,
            test_messages: c.query_row(
                "SELECT count(*) FROM messages WHERE source = 'test'",
                [],
                |r| r.get(0),
            )?,
            test_coupons: c.query_row(
                &format!("SELECT count(*) FROM certificates c WHERE {TEST_CERTIFICATE}"),
                [],
                |r| r.get(0),
            )?,
            redeliveries: c.query_row(
                "SELECT coalesce(sum(deliveries - 1), 0) FROM messages",
                [],
                |r| r.get(0),
            )?,
            outputs,
            failed_outputs,
            rejected: c.query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))?,
            rejected_repeats: c.query_row(
                "SELECT coalesce(sum(deliveries - 1), 0) FROM rejected",
                [],
                |r| r.get(0),
            )?,
            last_message: c
                .query_row(
                    "SELECT last_received_at, outcome, action, certificate_id FROM messages
                     ORDER BY last_received_at DESC, id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
            last_rejected: c
                .query_row(
                    "SELECT received_at, status, reason FROM rejected ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
            counters,
            catchup: self.catchup_rows()?,
            recovered: c.query_row(
                "SELECT count(*) FROM messages WHERE source = 'reconcile' AND outcome = 'applied'",
                [],
                |r| r.get(0),
            )?,
            links: self.links()?,
        })
    }

    /// Records what this daemon runs (its ports and outputs, with their address or
    /// destination), replacing what the previous run recorded.
    pub fn record_daemon(&mut self, parts: &[(&str, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM daemon", [])?;
        let now = time::now_rfc3339();
        for (part, detail) in parts {
            tx.execute(
                "INSERT INTO daemon (part, detail, since) VALUES (?1, ?2, ?3)",
                params![part, detail, now],
            )?;
        }
        tx.commit()
    }

    /// What the last daemon on this database recorded at its start: part and detail.
    /// Empty for a database no daemon of this schema has run on.
    pub fn daemon_parts(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT part, coalesce(detail, '') FROM daemon ORDER BY part")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Whether the newest message is a `coupond print-test` request (which `status`
    /// names as such rather than by its outcome).
    pub fn last_message_is_print_test(&self) -> Result<bool> {
        self.conn.query_row(
            "SELECT coalesce((SELECT event = ?1 FROM messages
                              ORDER BY last_received_at DESC, id DESC LIMIT 1), 0)",
            [PRINT_TEST_EVENT],
            |r| r.get(0),
        )
    }

    /// Gives up a pending output job (a `print-test` that stopped waiting), so that it
    /// never prints later; `false` when it was no longer pending.
    pub fn cancel_job(&mut self, id: i64, why: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE outputs SET state = 'failed', last_error = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, why],
        )?;
        Ok(n == 1)
    }

    /// The end of the time catch-up has swept for `account_id` without a gap.
    pub fn catchup_swept_to(&self, account_id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT swept_to FROM catchup WHERE account_id = ?1",
                [account_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// A sweep step is done: everything before `swept_to` has been applied.
    pub fn catchup_step_done(&mut self, account_id: &str, swept_to: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO catchup (account_id, swept_to) VALUES (?1, ?2)
                 ON CONFLICT (account_id) DO UPDATE SET swept_to = excluded.swept_to",
            )?
            .execute(params![account_id, swept_to])?;
        Ok(())
    }

    /// A whole sweep is done, at `at` (RFC 3339).
    pub fn catchup_sweep_done(
        &mut self,
        account_id: &str,
        at: &str,
        window: (i64, i64),
        records: i64,
        recovered: i64,
    ) -> Result<()> {
        let (start, end) = window;
        self.conn
            .prepare_cached(
                "INSERT INTO catchup (account_id, sweep_at, sweep_start, sweep_end, sweep_records,
                                      sweep_recovered) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account_id) DO UPDATE SET sweep_at = excluded.sweep_at,
                     sweep_start = excluded.sweep_start, sweep_end = excluded.sweep_end,
                     sweep_records = excluded.sweep_records,
                     sweep_recovered = excluded.sweep_recovered",
            )?
            .execute(params![account_id, at, start, end, records, recovered])?;
        Ok(())
    }

    /// A sweep failed with `error` at `at` (RFC 3339).
    pub fn catchup_error(&mut self, account_id: &str, error: &str, at: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO catchup (account_id, error, error_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id) DO UPDATE SET error = excluded.error,
                     error_at = excluded.error_at",
            )?
            .execute(params![account_id, error, at])?;
        Ok(())
    }

    /// Every account's catch-up state.
    pub fn catchup_rows(&self) -> Result<Vec<CatchupRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT account_id, sweep_at, sweep_start, sweep_end, sweep_records, sweep_recovered,
                    error, error_at
             FROM catchup ORDER BY account_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let window = match (r.get::<_, Option<i64>>(2)?, r.get::<_, Option<i64>>(3)?) {
                (Some(s), Some(e)) => Some((s, e)),
                _ => None,
            };
            let error = match (
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ) {
                (Some(e), Some(at)) => Some((at, e)),
                _ => None,
            };
            Ok(CatchupRow {
                account_id: r.get(0)?,
                sweep_at: r.get(1)?,
                window,
                records: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                recovered: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                error,
            })
        })?;
        rows.collect()
    }
}

fn schema_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Why the daemon's database could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Sqlite(rusqlite::Error),
    /// WAL mode could not be switched on (a read-only file system, say).
    NoWal,
    /// The schema version (the first) is higher than this binary's: a newer coupond
    /// wrote the file (the second).
    TooNew(i64, std::path::PathBuf),
    /// The copy kept before a migration could not be written.
    Copy(String),
}

/// Where the copy made before migrating away from schema `version` goes.
pub fn pre_migration_copy(db: &Path, version: i64) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(format!(".schema-{version}.bak"));
    std::path::PathBuf::from(p)
}

/// Before a migration: a consistent copy of the database as it is (`VACUUM INTO`), so a
/// downgrade can go back to it. One per old schema version; an older copy of the same
/// version is replaced.
fn keep_copy(conn: &Connection, db: &Path, version: i64) -> std::result::Result<(), String> {
    let copy = pre_migration_copy(db, version);
    let _ = std::fs::remove_file(&copy);
    let target = copy.to_string_lossy().to_string();
    conn.execute("VACUUM INTO ?1", [&target]).map_err(|e| {
        format!(
            "cannot keep a copy of the database before migrating it ({}): {e}; free some space",
            copy.display()
        )
    })?;
    log::info!(
        "kept a copy of the schema version {version} database in {} before migrating",
        copy.display()
    );
    Ok(())
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> OpenError {
        OpenError::Sqlite(e)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Sqlite(e) => write!(f, "{e}"),
            OpenError::NoWal => {
                f.write_str("cannot switch the database to WAL mode; is the file system read-only?")
            }
            OpenError::TooNew(version, db) => write!(
                f,
                "the database was written by a newer coupond (schema version {version}; this one \
                 knows {SCHEMA_VERSION}): install that coupond again, or go back to the copy the \
                 newer one kept before migrating: stop coupond, then \
                 mv {copy} {db} and rm -f {db}-wal {db}-shm (coupons recorded since are only \
                 in the newer file)",
                copy = pre_migration_copy(db, SCHEMA_VERSION).display(),
                db = db.display()
            ),
            OpenError::Copy(e) => f.write_str(e),
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version = schema_version(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        log::info!("database migrated to schema version {}", i + 1);
    }
    Ok(())
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
        None => sha1_smol::Sha1::from(&a.body).digest().to_string(),
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
    let message_id = insert_message(tx, a, msg, outcome, error, &sha1)?;
    let mut outputs = 0;
    if let (Outcome::Applied, Some(c)) = (outcome, cert) {
        for sink in plan.sinks_for(c.action) {
            insert_output(tx, message_id, *sink, &a.received_at, false)?;
            outputs += 1;
        }
    }
    if plan.wants_mqtt(a.source, outcome) {
        insert_output(tx, message_id, SinkKind::Mqtt, &a.received_at, false)?;
        outputs += 1;
    }
    Ok(Ack::Recorded {
        message_id,
        outcome,
        outputs,
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
        if msg.test { Source::Test } else { a.source },
        a.signature.as_deref().map(cap_header),
    ])?;
    Ok(tx.last_insert_rowid())
}

fn insert_output(
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

fn cap_header(s: &str) -> &str {
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

/// The words of the schema's CHECK lists, one type each, so nothing above reads or
/// writes these columns as loose strings.
macro_rules! sql_word {
    ($type:ty, $what:literal, $to:expr, $from:expr) => {
        impl ToSql for $type {
            fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text($to(*self).as_bytes())))
            }
        }

        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let word = value.as_str()?;
                $from(word).ok_or_else(|| unknown_word($what, word))
            }
        }
    };
}

fn unknown_word(what: &str, word: &str) -> FromSqlError {
    FromSqlError::Other(format!("unknown {what} {word:?} in the database").into())
}

sql_word!(Action, "action", Action::as_str, Action::parse);
sql_word!(Status, "status", Status::as_str, Status::parse);
sql_word!(Outcome, "outcome", Outcome::as_str, Outcome::parse);
sql_word!(SinkKind, "sink", SinkKind::name, SinkKind::parse);
sql_word!(Source, "source", Source::as_str, Source::parse);

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("coupond-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("coupond.db")
    }

    #[test]
    fn every_word_the_code_writes_is_one_the_schema_accepts_and_reads_back() {
        let path = scratch("words");
        let store = Store::open(&path).unwrap();
        let c = &store.conn;
        c.execute_batch(
            "INSERT INTO messages (id, received_at, outcome, body, body_sha1, last_received_at)
             VALUES (1, 'now', 'applied', '{}', 'x', 'now')",
        )
        .unwrap();
        for kind in SinkKind::ALL {
            c.execute(
                "INSERT INTO outputs (message_id, sink, created_at) VALUES (1, ?1, 'now')",
                [kind],
            )
            .unwrap();
        }
        let back: Vec<SinkKind> = c
            .prepare("SELECT sink FROM outputs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, SinkKind::ALL);
        for outcome in Outcome::ALL {
            let got: Outcome = c.query_row("SELECT ?1", [outcome], |r| r.get(0)).unwrap();
            assert_eq!(got, outcome);
        }
        for (i, source) in Source::ALL.into_iter().enumerate() {
            c.execute(
                "INSERT INTO messages (received_at, outcome, body, body_sha1, last_received_at, source)
                 VALUES ('now', 'ignored', '{}', ?1, 'now', ?2)",
                params![format!("s{i}"), source],
            )
            .unwrap();
            let got: Source = c
                .query_row(
                    "SELECT source FROM messages WHERE body_sha1 = ?1",
                    [format!("s{i}")],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(got, source);
        }
        for action in Action::ALL {
            c.execute(
                "INSERT INTO certificates (certificate_id, status, status_msg_time, first_seen_at, updated_at)
                 VALUES (?1, ?2, 0, 'now', 'now')",
                params![action.as_str(), action.status()],
            )
            .unwrap();
            let got: (Action, Status) = c
                .query_row(
                    "SELECT ?1, status FROM certificates WHERE certificate_id = ?1",
                    [action],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(got, (action, action.status()));
        }
        let bad = c.query_row("SELECT 'used'", [], |r| r.get::<_, Action>(0));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown action \"used\""));
    }

    #[test]
    fn mqtt_jobs_forward_only_douyins_own_pushes_and_report_no_test() {
        let plan = OutputPlan {
            sinks: vec![SinkKind::Log],
            actions: Action::ALL.to_vec(),
            mqtt_events: false,
            mqtt_forward: true,
        };
        let events = OutputPlan {
            mqtt_events: true,
            mqtt_forward: false,
            ..plan.clone()
        };
        use Outcome::*;
        use Source::*;
        for (source, outcome, forward, event) in [
            (Push, Applied, true, true),
            (Push, Stale, true, false),
            (Push, Challenge, true, false),
            (Mqtt, Applied, false, true),
            (Mqtt, Duplicate, false, false),
            (Reconcile, Applied, false, true),
            (Test, Applied, false, false),
        ] {
            assert_eq!(
                plan.wants_mqtt(source, outcome),
                forward,
                "{source:?} {outcome:?}"
            );
            assert_eq!(
                events.wants_mqtt(source, outcome),
                event,
                "{source:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn migrating_a_version_2_database_keeps_its_output_jobs() {
        let path = scratch("v2");
        {
            let mut c = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                c.execute_batch(sql).unwrap();
                c.pragma_update(None, "user_version", i as i64 + 1).unwrap();
            }
            let tx = c.transaction().unwrap();
            tx.execute_batch(
                "INSERT INTO messages (id, received_at, action, certificate_id, msg_time, outcome,
                                       body, body_sha1, last_received_at)
                 VALUES (1, 'now', 'verify', 'c1', 1, 'applied', '{}', 'x', 'now');
                 INSERT INTO outputs (message_id, sink, state, attempts, last_error, created_at, next_attempt_at, reprint)
                 VALUES (1, 'printer', 'pending', 3, 'paper out', 'then', 'later', 1);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(schema_version(&store.conn).unwrap(), SCHEMA_VERSION);
        let jobs = store.pending_jobs(SinkKind::Printer, 10).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].attempts, jobs[0].reprint), (3, true));
        let indexes: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outputs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 3);
        // The copy kept before migrating is the version 2 database, whole.
        let copy = Connection::open(pre_migration_copy(&path, 2)).unwrap();
        assert_eq!(schema_version(&copy).unwrap(), 2);
        let n: i64 = copy
            .query_row("SELECT count(*) FROM outputs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(copy);
        // A binary older than the file refuses it and says how to go back.
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("written by a newer coupond")
                && e.contains(&format!(".schema-{SCHEMA_VERSION}.bak")),
            "{e}"
        );
        let store = Store::open_read_only(&path);
        assert!(store.err().unwrap().contains("written by a newer coupond"));
    }

    fn rejected(n: usize, signature: Option<&str>, body: Vec<u8>) -> Arrival {
        Arrival {
            received_at: format!("2026-11-25T00:00:{:02}.000Z", n % 60),
            msg_id: None,
            signature: signature.map(String::from),
            body,
            intake: Intake::Rejected {
                status: 401,
                reason: "wrong signature".into(),
                challenge: None,
            },
            source: Source::Push,
            dedup: None,
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn rejected_rows_are_capped_in_number_and_size_and_repeats_only_count() {
        let path = scratch("rejected");
        let mut store = Store::open(&path).unwrap();
        let plan = OutputPlan::default();
        let big = |i: usize| format!("{i:05}{}", "x".repeat(20_000)).into_bytes();
        for chunk in (0..REJECTED_KEEP as usize + 10)
            .collect::<Vec<_>>()
            .chunks(100)
        {
            let batch: Vec<Arrival> = chunk.iter().map(|i| rejected(*i, None, big(*i))).collect();
            store.ingest(&batch, &plan).unwrap();
        }
        assert_eq!(
            count(&store, "SELECT count(*) FROM rejected"),
            REJECTED_KEEP
        );
        assert_eq!(
            count(&store, "SELECT max(length(body)) FROM rejected"),
            REJECTED_BODY_CAP as i64
        );
        assert_eq!(count(&store, "SELECT min(body_len) FROM rejected"), 20_005);
        // The same body and signature again: one row, counted (on insert, and in bulk).
        let again = rejected(1, Some("ab"), b"{}".to_vec());
        store.ingest([&again, &again], &plan).unwrap();
        let digest = rejected_digest(Some("ab"), b"{}");
        let repeated = Repeated {
            digest: digest.clone(),
            n: 3,
            last_at: "2026-11-25T01:00:00.000Z".into(),
        };
        let counted = Counted {
            name: "not_found",
            n: 2,
            last_at: "2026-11-25T01:00:00.000Z".into(),
            last_detail: "GET \"/x\"".into(),
        };
        store
            .add_counts(std::slice::from_ref(&counted), &[repeated])
            .unwrap();
        store.add_counts(&[counted], &[]).unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT deliveries FROM rejected WHERE digest IS NOT NULL AND body = '{}'"
            ),
            5
        );
        let s = store.summary().unwrap();
        assert_eq!(s.rejected_repeats, 4);
        assert_eq!(s.counters.len(), 1);
        assert_eq!(s.counters[0].count, 4);
        assert_eq!(s.counters[0].last_detail.as_deref(), Some("GET \"/x\""));
        // Another signature on the same body is another row.
        store
            .ingest([&rejected(2, Some("cd"), b"{}".to_vec())], &plan)
            .unwrap();
        assert_eq!(
            count(&store, "SELECT count(*) FROM rejected WHERE body = '{}'"),
            2
        );
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
