//! `coupond reprint CERTIFICATE_ID`: queues a reprint of a coupon's latest receipt,
//! marked 重打. It only writes a `printer` job to the database; the running daemon picks
//! it up within a few seconds (or at its next start).

use crate::config::ReprintConfig;
use crate::model::SinkKind;
use crate::store::Store;

pub fn run(cfg: &ReprintConfig) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    match store.queue_reprint(&cfg.certificate_id, &[SinkKind::Printer]) {
        Ok(Some(message_id)) => {
            println!(
                "queued a reprint of coupon {} (message {message_id}); the running daemon prints it within seconds",
                cfg.certificate_id
            );
            Ok(())
        }
        Ok(None) => Err(format!(
            "coupon {} has no applied message in {}: nothing to reprint",
            cfg.certificate_id,
            cfg.db.display()
        )),
        Err(e) => Err(format!("cannot queue the reprint: {e}")),
    }
}
