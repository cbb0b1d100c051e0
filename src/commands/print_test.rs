//! `coupond print-test`: a test receipt (marked 测试: store name, paper width, time, a
//! line of Chinese and one of ASCII) to check the printer, its code page and its cutter.
//!
//! Two writers must never interleave on one printer, so when a daemon runs on the same
//! database (it holds the [`DaemonLock`]) the receipt goes through its outbox as a
//! `printer` job and this command waits to see it printed; otherwise it prints straight
//! to the printer. Either way it is recorded as an output job about no message
//! (`Task::PrintTest`). [`print_sheet`] does the same for `coupond report --print`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::commands::serve::DaemonLock;
use crate::config::PrintTestConfig;
use crate::model::{Attempt, AttemptOutcome, OutputState, SinkKind, Task};
use crate::sinks::printer::Printer;
use crate::sinks::receipt;
use crate::store::Store;
use crate::time;

/// How long to wait for the running daemon to print it (its idle poll is 5 s; a
/// printer attempt may take 25 s).
const WAIT: Duration = Duration::from_secs(40);

pub fn run(cfg: &PrintTestConfig) -> Result<(), String> {
    let printer = cfg
        .receipts
        .printer()
        .ok_or("'coupond print-test' needs --printer")?;
    let columns = cfg.receipts.paper_columns;
    let lines = receipt::test_lines(
        cfg.receipts.store_name.as_deref(),
        columns,
        time::now_secs(),
    );
    let sheet = Sheet {
        what: "a test receipt",
        bytes: receipt::escpos(&lines, columns),
        queue: &|store| store.queue_task(Task::PrintTest, SinkKind::Printer),
        say: say_out,
    };
    print_sheet(&cfg.db, &printer, sheet)
}

/// A printed sheet about no coupon, and how to queue it as an output job.
pub struct Sheet<'a> {
    /// For the lines this prints: "a test receipt".
    pub what: &'a str,
    /// What to print when no daemon runs.
    pub bytes: Vec<u8>,
    /// Queues its job; returns the job's id.
    pub queue: &'a dyn Fn(&mut Store) -> rusqlite::Result<i64>,
    /// Where to say what happened: standard output, or standard error when standard
    /// output is for something else (`report --json`).
    pub say: fn(&str),
}

/// A line for [`Sheet::say`] on standard output.
pub fn say_out(line: &str) {
    println!("{line}");
}

/// A line for [`Sheet::say`] on standard error.
pub fn say_err(line: &str) {
    eprintln!("{line}");
}

/// Prints `sheet`: through the running daemon's outbox when one runs on `db` (and waits
/// to see it printed), else straight to `printer`, recorded as a job done or failed
/// (not recorded when there is no database yet).
pub fn print_sheet(db: &Path, printer: &Printer, sheet: Sheet) -> Result<(), String> {
    let (what, say) = (sheet.what, sheet.say);
    if !db.exists() {
        printer.send_now(sheet.bytes)?;
        say(&format!(
            "printed {what} on {} (not recorded: no database at {} yet)",
            printer.dest,
            db.display()
        ));
        return Ok(());
    }
    let Some(lock) = DaemonLock::take(db)? else {
        return through_daemon(db, sheet);
    };
    let mut store = Store::open_existing(db, false)?;
    let id = (sheet.queue)(&mut store).map_err(|e| format!("cannot record {what}: {e}"))?;
    let result = printer.send_now(sheet.bytes);
    let outcome = match &result {
        Ok(()) => AttemptOutcome::Done,
        Err(e) => AttemptOutcome::GiveUp(e.clone()),
    };
    store
        .finish_jobs(&[Attempt { id, outcome }])
        .map_err(|e| format!("printed, but cannot record it: {e}"))?;
    drop(store);
    drop(lock);
    result.map(|()| say(&format!("printed {what} on {}", printer.dest)))
}

/// Queues the sheet for the running daemon's printer and waits for the result.
fn through_daemon(db: &Path, sheet: Sheet) -> Result<(), String> {
    let (what, say) = (sheet.what, sheet.say);
    let mut store = Store::open_existing(db, false)?;
    let id = (sheet.queue)(&mut store).map_err(|e| format!("cannot queue {what}: {e}"))?;
    say(&format!(
        "a coupond daemon runs on {}: queued {what} for its printer",
        db.display()
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        match store.output_state(id).map_err(|e| e.to_string())? {
            Some((OutputState::Done, _)) => {
                say("printed by the running daemon");
                return Ok(());
            }
            Some((OutputState::Failed, err)) => {
                return Err(format!("the daemon could not print it: {}", err.unwrap_or_default()))
            }
            Some((_, err)) if Instant::now() >= deadline => {
                return Err(format!(
                    "not printed within {WAIT:?}; it stays queued (is --printer set for the daemon? journalctl -u coupond){}",
                    err.map(|e| format!("; last error: {e}")).unwrap_or_default()
                ))
            }
            None => return Err(format!("the job for {what} disappeared")),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
