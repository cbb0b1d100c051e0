//! `coupond print-test`: a test receipt (marked 测试: store name, paper width, time, a
//! line of Chinese and one of ASCII) to check the printer, its code page and its cutter.
//!
//! Two writers must never interleave on one printer, so when a daemon runs on the same
//! database (it holds the [`DaemonLock`]) the receipt goes through its outbox as a
//! `printer` job and this command waits to see it printed; otherwise it prints straight
//! to the printer. Either way it is recorded as an output job about no message (`Task::PrintTest`).

use std::time::{Duration, Instant};

use crate::commands::serve::DaemonLock;
use crate::config::PrintTestConfig;
use crate::model::{Attempt, AttemptOutcome, OutputState, SinkKind, Task};
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
    if cfg.db.exists() {
        if let Some(lock) = DaemonLock::take(&cfg.db)? {
            let mut store = Store::open_existing(&cfg.db, false)?;
            let id = store
                .queue_task(Task::PrintTest, SinkKind::Printer)
                .map_err(|e| format!("cannot record the print test: {e}"))?;
            let result = print_now(cfg, &printer);
            let outcome = match &result {
                Ok(()) => AttemptOutcome::Done,
                Err(e) => AttemptOutcome::GiveUp(e.clone()),
            };
            store
                .finish_jobs(&[Attempt { id, outcome }])
                .map_err(|e| format!("printed, but cannot record it: {e}"))?;
            drop(store);
            drop(lock);
            return result.map(|()| println!("printed a test receipt on {}", printer.dest));
        }
        return through_daemon(cfg);
    }
    print_now(cfg, &printer)?;
    println!(
        "printed a test receipt on {} (not recorded: no database at {} yet)",
        printer.dest,
        cfg.db.display()
    );
    Ok(())
}

fn print_now(
    cfg: &PrintTestConfig,
    printer: &crate::sinks::printer::Printer,
) -> Result<(), String> {
    let columns = cfg.receipts.paper_columns;
    let lines = receipt::test_lines(
        cfg.receipts.store_name.as_deref(),
        columns,
        time::now_secs(),
    );
    printer.send_now(receipt::escpos(&lines, columns))
}

/// Queues the receipt for the running daemon's printer and waits for the result.
fn through_daemon(cfg: &PrintTestConfig) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let id = store
        .queue_task(Task::PrintTest, SinkKind::Printer)
        .map_err(|e| format!("cannot queue the print test: {e}"))?;
    println!(
        "a coupond daemon runs on {}: queued the test receipt for its printer",
        cfg.db.display()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        match store.output_state(id).map_err(|e| e.to_string())? {
            Some((OutputState::Done, _)) => {
                println!("printed by the running daemon");
                return Ok(());
            }
            Some((OutputState::Failed, err)) => {
                return Err(format!("the daemon could not print it: {}", err.unwrap_or_default()))
            }
            Some((_, err)) if Instant::now() >= deadline => {
                return Err(format!(
                    "not printed within {WAIT:?} (is --printer set for the daemon? journalctl -u coupond){}",
                    err.map(|e| format!("; last error: {e}")).unwrap_or_default()
                ))
            }
            None => return Err("the print test's job disappeared".into()),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
