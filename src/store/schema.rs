//! The schema: forward-only migrations, opening a file of an older or newer version,
//! and the words of the schema's columns as types (`ToSql`/`FromSql`).

use std::path::Path;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::Result;
use crate::coupon::{Action, Status};
use crate::intake::Outcome;
use crate::model::{LinkName, LinkStatus, OutputState, SinkKind, Source, Task};

/// Forward-only migrations; migration `i` brings `user_version` from `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
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
-- A job may be about no message (SPEC §5): `message_id` NULL and what it is in `work`
-- (`model::Task`: 'print_test'), so a print test needs no made-up message. The words
-- of `outputs.sink` and `messages.source` are checked by the code's enums
-- (`SinkKind`, `Source`), not by CHECK lists, so a new sink or source needs no
-- rebuild. `outputs` is rebuilt once for both changes.
CREATE TABLE outputs_v7 (
    id         INTEGER PRIMARY KEY,
    message_id INTEGER REFERENCES messages (id),  -- NULL: a job about no message
    work       TEXT,                              -- for those: what it is
    sink       TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','done','failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    done_at    TEXT,
    reprint    INTEGER NOT NULL DEFAULT 0,
    CHECK ((message_id IS NULL) = (work IS NOT NULL))
);
INSERT INTO outputs_v7 (id, message_id, work, sink, state, attempts, last_error, created_at,
                        done_at, reprint)
    SELECT o.id, CASE WHEN m.event = 'coupond_print_test' THEN NULL ELSE o.message_id END,
           CASE WHEN m.event = 'coupond_print_test' THEN 'print_test' END,
           o.sink, o.state, o.attempts, o.last_error, o.created_at, o.done_at, o.reprint
    FROM outputs o JOIN messages m ON m.id = o.message_id;
DROP TABLE outputs;
ALTER TABLE outputs_v7 RENAME TO outputs;
CREATE INDEX outputs_queue ON outputs (sink, id) WHERE state = 'pending';
CREATE INDEX outputs_by_message ON outputs (message_id);
CREATE INDEX outputs_by_created ON outputs (created_at);
-- The print tests' made-up messages go: they were never messages.
DELETE FROM messages WHERE event = 'coupond_print_test' AND source = 'test';
-- messages.source loses its CHECK list without a rebuild: removing a CHECK changes
-- nothing on disk, the case SQLite's documentation gives for editing the schema's text
-- (the DDL above bumps the schema cookie, so every other connection reads it again;
-- RESET makes this one read it again too).
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, ' NOT NULL DEFAULT ''push''
    CHECK (source IN (''push'',''reconcile'',''mqtt'',''test''))', ' NOT NULL DEFAULT ''push''')
 WHERE type = 'table' AND name = 'messages';
PRAGMA writable_schema = RESET;
"#,
    r#"
-- What the running daemon has (written at each start, replacing the last run's), so that
-- `check`, `print-test` and `reprint` tell the truth about what it will do.
CREATE TABLE daemon (
    part    TEXT PRIMARY KEY,  -- 'listen', 'display-listen' or an output: 'printer', ...
    detail  TEXT,              -- its address or destination
    since   TEXT NOT NULL      -- when that daemon started
);
"#,
    r#"
-- What was bought (SPEC §13): a coupon's details, a row only once they are known, and
-- the lookups that fetch them from Douyin's certificate/query (one per coupon; a row
-- is deleted when its details are stored).
CREATE TABLE details (
    certificate_id         TEXT PRIMARY KEY,
    title                  TEXT,
    sku_id                 TEXT,
    pay_amount             INTEGER,  -- fen
    original_amount        INTEGER,
    coupon_pay_amount      INTEGER,
    merchant_ticket_amount INTEGER,
    poi_id                 TEXT,     -- digit for digit
    verify_id              TEXT,
    origin                 TEXT NOT NULL CHECK (origin IN ('query','record')),
    fetched_at             TEXT NOT NULL
);
CREATE TABLE lookups (
    certificate_id TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    account_id     TEXT,
    -- pending: to ask (again) at next_at; absent: Douyin's answer lacks the coupon
    -- (final); failed: no answer in 24 hours of retries.
    state          TEXT NOT NULL CHECK (state IN ('pending','absent','failed')),
    created_at     TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at        TEXT NOT NULL,
    last_error     TEXT
);
CREATE INDEX lookups_due ON lookups (next_at) WHERE state = 'pending';
"#,
    r#"
-- The end-of-day report (SPEC §15). It counts a day's applied messages by their own
-- time: this index holds those only, so a year of messages costs a day's rows.
CREATE INDEX messages_applied_by_time ON messages (msg_time) WHERE outcome = 'applied';
-- `--report-at`: the last business day whose report was queued for the printer (its
-- job is never given up), and since when this database has been there to print one: a
-- report time missed while the daemon was down is printed at the next start only if
-- the database already existed at that time.
CREATE TABLE report_schedule (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    since    TEXT NOT NULL,
    last_day TEXT              -- YYYY-MM-DD
);
INSERT INTO report_schedule (id, since) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
-- A report job (`outputs.work` = 'report'): which business day it prints, `[day_from,
-- day_to)` in Unix seconds as `--day-starts` made it when it was queued.
CREATE TABLE report_jobs (
    output_id INTEGER PRIMARY KEY REFERENCES outputs (id) ON DELETE CASCADE,
    day       TEXT NOT NULL,
    day_from  INTEGER NOT NULL,
    day_to    INTEGER NOT NULL
);
"#,
];

/// The schema version this binary writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn schema_version(conn: &Connection) -> Result<i64> {
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
pub(super) fn keep_copy(
    conn: &Connection,
    db: &Path,
    version: i64,
) -> std::result::Result<(), String> {
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

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
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
sql_word!(
    OutputState,
    "output state",
    OutputState::as_str,
    OutputState::parse
);

// A task's word may carry a value (`speak_test:9900`), so it is written owned.
impl ToSql for Task {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.word()))
    }
}

impl FromSql for Task {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let word = value.as_str()?;
        Task::parse(word).ok_or_else(|| unknown_word("work", word))
    }
}

sql_word!(LinkName, "link", LinkName::as_str, LinkName::parse);
sql_word!(
    LinkStatus,
    "link state",
    LinkStatus::as_str,
    LinkStatus::parse
);
sql_word!(
    crate::details::DetailsOrigin,
    "details origin",
    crate::details::DetailsOrigin::as_str,
    crate::details::DetailsOrigin::parse
);
