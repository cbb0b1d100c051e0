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

mod daemon;
mod day;
mod details;
mod ingest;
mod outputs;
mod report;
mod schema;

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::model::{LinkName, LinkStatus, Source};
use crate::time;
pub use details::{DetailsCounts, Lookup, LookupEnd};
use ingest::cap_header;
pub use ingest::{body_digest, rejected_digest};
pub use report::{CatchupRow, CertificateRow, CounterRow, Link, Summary};
use schema::{keep_copy, migrate, schema_version};
pub use schema::{pre_migration_copy, OpenError, SCHEMA_VERSION};

/// Unsigned requests kept in `rejected`; older rows are dropped.
pub const REJECTED_KEEP: i64 = 1000;
/// Bytes of an unsigned body kept in `rejected` (real Douyin bodies are under 1 KiB).
pub const REJECTED_BODY_CAP: usize = 8 * 1024;
/// Bytes kept of an attacker-controlled header (`Msg-Id`, the signature).
const HEADER_CAP: usize = 128;

pub type Result<T> = rusqlite::Result<T>;

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

/// Requests counted in memory since the last write, for `counters`.
#[derive(Debug, Clone)]
pub struct Counted {
    pub name: &'static str,
    pub n: i64,
    pub last_at: String,
    pub last_detail: String,
}

/// Repeats of a stored rejected body (or, when `message`, of a stored signed message
/// by its `body_sha1`) since the last write.
#[derive(Debug, Clone)]
pub struct Repeated {
    pub digest: String,
    pub n: i64,
    pub last_at: String,
    pub message: bool,
}

pub struct Store {
    conn: Connection,
    /// Whether output jobs were committed since [`Store::take_queued`] last asked: the
    /// writer then wakes the outbox, whichever call queued them.
    queued: bool,
}

/// The page cache of the daemon's connection, in KiB (`PRAGMA cache_size = -256`:
/// 64 pages of 4 KiB), against SQLite's default of 2,000 KiB. A commit touches the
/// right edge of a few tables and indexes and one leaf of each keyed by a digest or a
/// coupon; those leaves are random, so a bigger cache mostly keeps pages that will not
/// be read again, and a miss is a read from the kernel's page cache. `cache_spill` is
/// off, so a big batch (256 messages, a random leaf each in three indexes) never writes
/// its pages to the WAL before the commit: the cache grows for the transaction and
/// gives the pages back after it. Measured with bench/run: 2,000 -> 512 -> 256 KiB took
/// 1.5 MB and then 0.3 MB off the peak RSS under load, throughput and CPU per message
/// within the run-to-run noise (issue 22).
pub const CACHE_KIB: i64 = 256;

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
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "cache_spill", false)?;
        let version = schema_version(&conn)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::TooNew(version, path.to_path_buf()));
        }
        if version > 0 && version < SCHEMA_VERSION {
            keep_copy(&conn, path, version).map_err(OpenError::Copy)?;
        }
        migrate(&mut conn)?;
        Ok(Store {
            conn,
            queued: false,
        })
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
        Ok(Store {
            conn,
            queued: false,
        })
    }

    /// Whether output jobs were committed since the last time this was asked.
    pub fn take_queued(&mut self) -> bool {
        std::mem::take(&mut self.queued)
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64> {
        schema_version(&self.conn)
    }

    /// Copies the WAL into the database file as far as readers allow, so the `-wal` file
    /// stops growing; returns the WAL's size in pages.
    pub fn checkpoint(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
    }

    /// Records a broker connection's state: `state` is `connected` or `connecting`,
    /// `detail` the broker or the last error. Written on changes only.
    pub fn set_link(&mut self, name: LinkName, state: LinkStatus, detail: &str) -> Result<()> {
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
            tx.prepare_cached(match r.message {
                false => {
                    "UPDATE rejected SET deliveries = deliveries + ?2, last_received_at = ?3
                     WHERE digest = ?1"
                }
                true => {
                    "UPDATE messages SET deliveries = deliveries + ?2, last_received_at = ?3
                     WHERE body_sha1 = ?1"
                }
            })?
            .execute(params![r.digest, r.n, r.last_at])?;
        }
        tx.commit()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::{Action, Status};
    use crate::intake::{Intake, Outcome};
    use crate::model::{Arrival, Job, OutputPlan, OutputState, SinkKind, Task, Work};
    use schema::MIGRATIONS;

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
        for state in OutputState::ALL {
            let got: OutputState = c.query_row("SELECT ?1", [state], |r| r.get(0)).unwrap();
            assert_eq!(got, state);
            c.execute("UPDATE outputs SET state = ?1 WHERE id = 1", [state])
                .unwrap();
        }
        for task in Task::ALL {
            let got: Task = c.query_row("SELECT ?1", [task], |r| r.get(0)).unwrap();
            assert_eq!(got, task);
            c.execute(
                "INSERT INTO outputs (work, sink, created_at) VALUES (?1, 'printer', 'now')",
                [task],
            )
            .unwrap();
        }
        for (name, status) in LinkName::ALL.into_iter().zip(LinkStatus::ALL) {
            let got: (LinkName, LinkStatus) = c
                .query_row("SELECT ?1, ?2", params![name, status], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(got, (name, status));
        }
        let bad = c.query_row("SELECT 'used'", [], |r| r.get::<_, Action>(0));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown action \"used\""));
    }

    #[test]
    fn the_daemons_connection_keeps_a_small_page_cache() {
        // Resident memory (issue 22): SQLite's default would be 2,000 KiB.
        let store = Store::open(&scratch("cache")).unwrap();
        let kib: i64 = store
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -CACHE_KIB);
        let spill: i64 = store
            .conn
            .query_row("PRAGMA cache_spill", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            spill, 0,
            "a batch must not spill to the WAL before its commit"
        );
    }

    #[test]
    fn a_new_sink_or_source_word_needs_no_migration_and_a_print_test_no_message() {
        let path = scratch("v6");
        {
            let c = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..6].iter().enumerate() {
                c.execute_batch(sql).unwrap();
                c.pragma_update(None, "user_version", i as i64 + 1).unwrap();
            }
            // What `coupond print-test` wrote before: a made-up test message and its job.
            c.execute_batch(
                "INSERT INTO messages (id, received_at, event, outcome, body, body_sha1,
                                       last_received_at, source)
                 VALUES (1, 'now', 'coupond_print_test', 'ignored', '{}', 'x', 'now', 'test');
                 INSERT INTO outputs (message_id, sink, created_at) VALUES (1, 'printer', 'now');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let jobs = store.pending_jobs(SinkKind::Printer, 10).unwrap();
        assert!(matches!(
            jobs[..],
            [Job {
                work: Work::Task(Task::PrintTest),
                origin: None,
                ..
            }]
        ));
        let c = &store.conn;
        assert_eq!(count(&store, "SELECT count(*) FROM messages"), 0);
        assert_eq!(store.summary().unwrap().test_messages, 0);
        // Words no CHECK list knows, on the connection that migrated and on a new one.
        for c in [c, &Connection::open(&path).unwrap()] {
            c.execute_batch(
                "INSERT INTO messages (received_at, outcome, body, body_sha1, last_received_at, source)
                 VALUES ('now', 'ignored', '{}', hex(randomblob(8)), 'now', 'scanner');
                 INSERT INTO outputs (work, sink, created_at) VALUES ('print_test', 'speaker', 'now');",
            )
            .unwrap();
        }
        let id = store
            .queue_task(Task::PrintTest, SinkKind::Printer)
            .unwrap();
        assert_eq!(
            store.output_state(id).unwrap(),
            Some((OutputState::Pending, None))
        );
        let check: String = store
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
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
            message: false,
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
