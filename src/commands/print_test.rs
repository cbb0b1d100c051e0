//! `coupond print-test`: a test receipt (marked 测试: store name, paper width, time, a
//! line of Chinese and one of ASCII) to check the printer, its code page and its cutter.
//!
//! Two writers must never interleave on one printer, so when a daemon runs on the same
//! database (it holds the [`DaemonLock`]) and prints to this printer, the receipt goes
//! through its outbox as a `printer` job and this command waits to see it printed,
//! showing what the daemon's printer reports meanwhile (no device, no paper, offline).
//! A receipt not printed within `--wait` is given up (`failed`), so it never prints
//! hours later when the printer comes back. When no daemon runs, or the running one has
//! no printer or another one (it recorded what it has, see [`RunningDaemon`]), the
//! receipt goes straight to the printer. Either way it is recorded as an output job
//! about no message (`Task::PrintTest`). [`print_sheet`] does the same for `coupond
//! report --print`'s end-of-day report.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::commands::serve::{DaemonLock, RunningDaemon};
use crate::config::PrintTestConfig;
use crate::model::{Attempt, AttemptOutcome, OutputState, SinkKind, Task};
use crate::sinks::printer::Printer;
use crate::sinks::receipt;
use crate::store::Store;
use crate::time;

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
        command: "print-test",
        what: "a test receipt",
        bytes: receipt::escpos(&lines, columns),
        queue: &|store| store.queue_task(Task::PrintTest, SinkKind::Printer),
        say: say_out,
    };
    print_sheet(&cfg.db, &printer, cfg.wait, sheet)
}

/// A printed sheet about no coupon, and how to queue it as an output job.
pub struct Sheet<'a> {
    /// The command that prints it, for the job's error when it gives the job up:
    /// `print-test`.
    pub command: &'a str,
    /// For the lines this prints: "a test receipt".
    pub what: &'a str,
    /// What to print when it goes straight to the printer.
    pub bytes: Vec<u8>,
    /// Queues its printer job; returns the job's id.
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

/// Prints `sheet`: through the running daemon's outbox when one runs on `db` with this
/// printer (waiting up to `wait` to see it printed), else straight to `printer`,
/// recorded as a job done or failed (not recorded when there is no database yet).
pub fn print_sheet(
    db: &Path,
    printer: &Printer,
    wait: Duration,
    sheet: Sheet,
) -> Result<(), String> {
    let (what, say) = (sheet.what, sheet.say);
    crate::commands::reachable(db, libc::R_OK | libc::W_OK, "record what is printed in")?;
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
        let daemon = RunningDaemon::on(db);
        let theirs = daemon.as_ref().and_then(|d| d.part("printer"));
        let ours = printer.dest.to_string();
        return match (daemon.as_ref().is_some_and(|d| d.known()), theirs) {
            (true, None) => {
                print_and_record(db, printer, sheet)?;
                say(&format!(
                    "printed {what} straight on {ours}: the running coupond has no \
                     printer, so coupons print nowhere (set COUPOND_PRINTER and restart it)"
                ));
                Ok(())
            }
            (true, Some(theirs)) if theirs != ours => {
                print_and_record(db, printer, sheet)?;
                say(&format!(
                    "printed {what} straight on {ours}: the running coupond prints \
                     coupons on {theirs}, not there"
                ));
                Ok(())
            }
            _ => through_daemon(db, wait, sheet),
        };
    };
    let result = print_and_record(db, printer, sheet);
    drop(lock);
    result.map(|()| say(&format!("printed {what} on {}", printer.dest)))
}

/// Prints now and records the job (done, or failed with why).
fn print_and_record(db: &Path, printer: &Printer, sheet: Sheet) -> Result<(), String> {
    let what = sheet.what;
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
    result
}

/// Queues the sheet for the running daemon's printer and waits for the result,
/// showing each new error its printer reports; gives the job up at the deadline.
fn through_daemon(db: &Path, wait: Duration, sheet: Sheet) -> Result<(), String> {
    let (what, say) = (sheet.what, sheet.say);
    let mut store = Store::open_existing(db, false)?;
    let id = (sheet.queue)(&mut store).map_err(|e| format!("cannot queue {what}: {e}"))?;
    DaemonLock::knock(db);
    say(&format!(
        "a coupond daemon runs on {}: queued {what} for its printer (waiting up to {wait:?})",
        db.display(),
    ));
    let deadline = Instant::now() + wait;
    let mut shown: Option<String> = None;
    loop {
        let (state, err) = store
            .output_state(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the job for {what} disappeared"))?;
        match state {
            OutputState::Done => {
                say("printed by the running daemon");
                return Ok(());
            }
            OutputState::Failed => {
                return Err(format!(
                    "the daemon could not print it: {}",
                    err.unwrap_or_default()
                ))
            }
            _ => {}
        }
        if err.is_some() && err != shown {
            say(&format!(
                "the printer reports: {}; the daemon retries",
                err.as_deref().unwrap_or_default()
            ));
            shown = err.clone();
        }
        if Instant::now() >= deadline {
            return give_up(&mut store, id, wait, err, &sheet);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The deadline passed: the job is given up so that it never prints later, unless the
/// daemon finished it in the meantime.
fn give_up(
    store: &mut Store,
    id: i64,
    waited: Duration,
    err: Option<String>,
    sheet: &Sheet,
) -> Result<(), String> {
    let what = sheet.what;
    let why = format!("given up by coupond {} after {waited:?}", sheet.command);
    if !store.cancel_job(id, &why).map_err(|e| e.to_string())? {
        if let Some((state, _)) = store.output_state(id).map_err(|e| e.to_string())? {
            if state == OutputState::Done {
                (sheet.say)("printed by the running daemon");
                return Ok(());
            }
        }
    }
    Err(match err {
        Some(e) => format!(
            "not printed within {waited:?}: the printer reports: {e}; {what} is \
             cancelled and will not print later (fix the printer, then run this again)"
        ),
        None => format!(
            "not printed within {waited:?}: the daemon did not get to it (receipts before it \
             still waiting? coupond status, journalctl -u coupond); {what} is \
             cancelled and will not print later"
        ),
    })
}
