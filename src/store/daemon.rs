//! What the running daemon has (the `daemon` table), and a job given up on beside it
//! (a print test that stopped waiting).

use rusqlite::params;

use super::{Result, Store};
use crate::time;

impl Store {
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

    /// Gives up a pending output job (a `print-test` that stopped waiting), so that it
    /// never prints later; `false` when it was no longer pending.
    pub fn cancel_job(&mut self, id: i64, why: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE outputs SET state = 'failed', last_error = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, why],
        )?;
        Ok(n == 1)
    }
}
