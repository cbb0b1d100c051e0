//! `coupond reprint CERTIFICATE_ID`: queues a reprint of a coupon's latest receipt,
//! marked 重打. It only writes a `printer` job to the database and wakes the running
//! daemon, which prints it at once (or at its next start). What it says is what will happen:
//! a running daemon without a printer gets no job (it would never print), and with no
//! daemon running the job waits for the next start.

use crate::commands::serve::{DaemonLock, RunningDaemon};
use crate::config::ReprintConfig;
use crate::model::SinkKind;
use crate::store::Store;

pub fn run(cfg: &ReprintConfig) -> Result<(), String> {
    crate::commands::reachable(&cfg.db, libc::R_OK | libc::W_OK, "queue a reprint in")?;
    let daemon = RunningDaemon::on(&cfg.db);
    let printer = daemon.as_ref().and_then(|d| d.part("printer"));
    if daemon.as_ref().is_some_and(|d| d.known()) && printer.is_none() {
        return Err(format!(
            "the coupond running on {} has no printer (COUPOND_PRINTER, --printer): a reprint \
             would never print, so none is queued; set the printer and restart it \
             (systemctl restart coupond), or try one with coupond print-test --printer DEST",
            cfg.db.display()
        ));
    }
    let mut store = Store::open_existing(&cfg.db, false)?;
    let message_id = match store.queue_reprint(&cfg.certificate_id, &[SinkKind::Printer]) {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(format!(
                "coupon {} has no applied message in {}: nothing to reprint",
                cfg.certificate_id,
                cfg.db.display()
            ))
        }
        Err(e) => return Err(format!("cannot queue the reprint: {e}")),
    };
    DaemonLock::knock(&cfg.db);
    let when = match (&daemon, printer) {
        (Some(_), Some(dest)) => format!("the running daemon prints it on {dest} now"),
        (Some(_), None) => "the running daemon prints it now".to_string(),
        (None, _) => format!(
            "no coupond runs on {}: it prints when one starts with a printer \
             (systemctl start coupond)",
            cfg.db.display()
        ),
    };
    println!(
        "queued a reprint of coupon {} (message {message_id}); {when}",
        cfg.certificate_id
    );
    Ok(())
}
