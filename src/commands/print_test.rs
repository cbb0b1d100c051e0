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
//! about no message (`Task::PrintTest`).

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
    crate::commands::reachable(&cfg.db, libc::R_OK | libc::W_OK, "record the test in")?;
    if !cfg.db.exists() {
        print_now(cfg, &printer)?;
        println!(
            "printed a test receipt on {} (not recorded: no database at {} yet)",
            printer.dest,
            cfg.db.display()
        );
        return Ok(());
    }
    let Some(lock) = DaemonLock::take(&cfg.db)? else {
        let daemon = RunningDaemon::on(&cfg.db);
        let theirs = daemon.as_ref().and_then(|d| d.part("printer"));
        let ours = printer.dest.to_string();
        return match (daemon.as_ref().is_some_and(|d| d.known()), theirs) {
            (true, None) => {
                print_and_record(cfg, &printer)?;
                println!(
                    "printed a test receipt straight on {ours}: the running coupond has no \
                     printer, so coupons print nowhere (set COUPOND_PRINTER and restart it)"
                );
                Ok(())
            }
            (true, Some(theirs)) if theirs != ours => {
                print_and_record(cfg, &printer)?;
                println!(
                    "printed a test receipt straight on {ours}: the running coupond prints \
                     coupons on {theirs}, not there"
                );
                Ok(())
            }
            _ => through_daemon(cfg),
        };
    };
    let result = print_and_record(cfg, &printer);
    drop(lock);
    result.map(|()| println!("printed a test receipt on {}", printer.dest))
}

/// Prints now and records the test (done, or failed with why).
fn print_and_record(cfg: &PrintTestConfig, printer: &Printer) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let id = store
        .queue_task(Task::PrintTest, SinkKind::Printer)
        .map_err(|e| format!("cannot record the print test: {e}"))?;
    let result = print_now(cfg, printer);
    let outcome = match &result {
        Ok(()) => AttemptOutcome::Done,
        Err(e) => AttemptOutcome::GiveUp(e.clone()),
    };
    store
        .finish_jobs(&[Attempt { id, outcome }])
        .map_err(|e| format!("printed, but cannot record it: {e}"))?;
    result
}

fn print_now(cfg: &PrintTestConfig, printer: &Printer) -> Result<(), String> {
    let columns = cfg.receipts.paper_columns;
    let lines = receipt::test_lines(
        cfg.receipts.store_name.as_deref(),
        columns,
        time::now_secs(),
    );
    let bytes = receipt::escpos(&lines, columns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        tokio::time::timeout(crate::sinks::printer::TIME_LIMIT, printer.send(bytes))
            .await
            .map_err(|_| "the printer did not take the receipt in time".to_string())?
    })
}

/// Queues the receipt for the running daemon's printer and waits for the result,
/// showing each new error its printer reports; gives the job up at the deadline.
fn through_daemon(cfg: &PrintTestConfig) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let id = store
        .queue_task(Task::PrintTest, SinkKind::Printer)
        .map_err(|e| format!("cannot queue the print test: {e}"))?;
    println!(
        "a coupond daemon runs on {}: queued the test receipt for its printer (waiting up to {:?})",
        cfg.db.display(),
        cfg.wait
    );
    let deadline = Instant::now() + cfg.wait;
    let mut shown: Option<String> = None;
    loop {
        let (state, err) = store
            .output_state(id)
            .map_err(|e| e.to_string())?
            .ok_or("the print test's job disappeared")?;
        match state {
            OutputState::Done => {
                println!("printed by the running daemon");
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
            println!(
                "the printer reports: {}; the daemon retries",
                err.as_deref().unwrap_or_default()
            );
            shown = err.clone();
        }
        if Instant::now() >= deadline {
            return give_up(&mut store, id, cfg.wait, err);
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
) -> Result<(), String> {
    let why = format!("given up by coupond print-test after {waited:?}");
    if !store.cancel_job(id, &why).map_err(|e| e.to_string())? {
        if let Some((state, _)) = store.output_state(id).map_err(|e| e.to_string())? {
            if state == OutputState::Done {
                println!("printed by the running daemon");
                return Ok(());
            }
        }
    }
    Err(match err {
        Some(e) => format!(
            "not printed within {waited:?}: the printer reports: {e}; the test receipt is \
             cancelled and will not print later (fix the printer, then run print-test again)"
        ),
        None => format!(
            "not printed within {waited:?}: the daemon did not get to it (receipts before it \
             still waiting? coupond status, journalctl -u coupond); the test receipt is \
             cancelled and will not print later"
        ),
    })
}
