//! `coupond serve`: opens the database, binds the port, and runs the receiver, the
//! outbox and (when configured) the display until SIGTERM or SIGINT.
//!
//! Start-up order matters for systemd's `Type=notify`: READY is only true once the
//! database is open and migrated and the port is bound, so a failure in either stops
//! start-up with one line and a non-zero exit. Shutdown closes the listener, lets
//! requests in hand finish (each waits for its commit), stops the outbox, then closes
//! the database from the writer thread.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::coupon::Action;
use crate::http::{self, Webhook};
use crate::outbox;
use crate::server;
use crate::sinks::Sink;
use crate::store::{OutputPlan, Store};
use crate::writer::Writer;

/// Runs the daemon; returns an error line for start-up failures.
pub fn run(cfg: ServeConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: ServeConfig) -> Result<(), String> {
    let store = Store::open(&cfg.db).map_err(|e| {
        format!(
            "cannot open database {}: {e} (check --db and that the directory exists and is writable)",
            cfg.db.display()
        )
    })?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e} (another coupond running? choose another --listen)",
            cfg.listen
        )
    })?;
    let sinks: Vec<Arc<Sink>> = vec![Arc::new(Sink::Log)];
    let plan = OutputPlan {
        sinks: sinks.iter().map(|s| s.name()).collect(),
        actions: Action::ALL.to_vec(),
    };
    let (changes_tx, changes) = watch::channel(0u64);
    let (writer, db_thread) = Writer::start(store, plan, changes_tx);
    let (stop_tx, stop) = watch::channel(false);

    log::info!(
        "coupond {} listening on http://{}{} with database {}; {} app(s), {} secret(s); outputs: {}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr().map_or(cfg.listen, |a| a),
        cfg.path,
        cfg.db.display(),
        cfg.apps.client_keys.len(),
        cfg.apps.secrets.len(),
        sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
    );

    let mut tasks = tokio::task::JoinSet::new();
    for sink in &sinks {
        tasks.spawn(outbox::run_sink(
            sink.clone(),
            writer.clone(),
            60,
            changes.clone(),
            stop.clone(),
        ));
    }
    let hook = Arc::new(Webhook {
        path: cfg.path.clone(),
        max_body: cfg.max_body,
        apps: cfg.apps.clone(),
        writer: writer.clone(),
    });
    let webhook = server::serve(
        "webhook",
        listener,
        move |req| http::handle(hook.clone(), req),
        stop.clone(),
    );
    tokio::spawn(stop_on_signal(stop_tx));
    webhook.await;
    while tasks.join_next().await.is_some() {}
    drop(writer);
    // The writer thread finishes the batch in hand and closes the database.
    let _ = tokio::task::spawn_blocking(move || db_thread.join()).await;
    log::info!("stopped; database closed");
    Ok(())
}

async fn stop_on_signal(stop: watch::Sender<bool>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{which}: stopping (answering requests in hand first)");
    let _ = stop.send(true);
}
