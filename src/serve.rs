//! `coupond serve`: opens the database, binds the port, and runs the receiver, the
//! outbox and (when configured) the display until SIGTERM or SIGINT.
//!
//! Start-up order matters for systemd's `Type=notify`: READY is only true once the
//! database is open and migrated and the port is bound, so a failure in either stops
//! start-up with one line and a non-zero exit. Shutdown closes the listener, lets
//! requests in hand finish (each waits for its commit), stops the outbox, then closes
//! the database from the writer thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::http::{self, Webhook};
use crate::notify::Notifier;
use crate::outbox;
use crate::retention;
use crate::reverify;
use crate::server;
use crate::sinks::display::{self, Feed};
use crate::sinks::exec::Exec;
use crate::sinks::printer::Printer;
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
    // Before anything else: a SIGTERM from systemd right after READY must reach the
    // handler, not kill the process with the default action.
    let signals = Signals::install()?;
    let mut store = Store::open(&cfg.db).map_err(|e| {
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
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let display = match cfg.display_listen {
        Some(addr) => Some(bind_display(addr, &store, &cfg).await?),
        None => None,
    };
    let sinks = build_sinks(&cfg, display.as_ref().map(|(_, feed)| feed.clone()));
    warn_orphaned_jobs(&store, &sinks);
    let plan = OutputPlan {
        sinks: sinks.iter().map(|s| s.name()).collect(),
        actions: cfg.print_actions.clone(),
    };
    match reverify::pass(&mut store, &cfg.apps, &plan) {
        Ok(r) if r.recovered > 0 => {
            log::warn!("reverify: {r} (they were rejected under an earlier configuration)")
        }
        Ok(_) => {}
        Err(e) => log::error!("reverify: {e}"),
    }
    let (changes_tx, changes) = watch::channel(0u64);
    let (writer, db_thread) = Writer::start(store, plan, changes_tx);
    let (stop_tx, stop) = watch::channel(false);
    log::info!(
        "coupond {} listening on http://{local}{} with database {}; {} app(s), {} secret(s); outputs: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.path,
        cfg.db.display(),
        cfg.apps.client_keys.len(),
        cfg.apps.secrets.len(),
        sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
    );

    // Everything beside the webhook runs as tasks that end when `stop` turns true.
    let mut tasks = tokio::task::JoinSet::new();
    for sink in &sinks {
        tasks.spawn(outbox::run_sink(
            sink.clone(),
            writer.clone(),
            cfg.output_attempts,
            changes.clone(),
            stop.clone(),
        ));
    }
    if let Some(days) = cfg.keep_days {
        tasks.spawn(retention::run(writer.clone(), days, stop.clone()));
    }
    if let Some((listener, feed)) = display {
        log::info!(
            "display on http://{}/",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let stop_rx = stop.clone();
        tasks.spawn(server::serve(
            "display",
            listener,
            move |req| display::handle(feed.clone(), stop_rx.clone(), req),
            stop.clone(),
        ));
    }
    let notifier = Arc::new(Notifier::from_env(&|k| std::env::var(k).ok()));
    if let Some(every) = notifier.watchdog_interval() {
        tasks.spawn(watchdog(
            notifier.clone(),
            writer.clone(),
            every,
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
    notifier.send(&format!("READY=1\nSTATUS=listening on {local}{}", cfg.path));
    tokio::spawn(signals.stop_on_first(stop_tx, notifier));

    webhook.await;
    while tasks.join_next().await.is_some() {}
    drop(writer);
    // The writer thread finishes the batch in hand and closes the database.
    let _ = tokio::task::spawn_blocking(move || db_thread.join()).await;
    log::info!("stopped; database closed");
    Ok(())
}

/// Binds the display port and seeds its feed from the database.
async fn bind_display(
    addr: std::net::SocketAddr,
    store: &Store,
    cfg: &ServeConfig,
) -> Result<(TcpListener, Arc<Feed>), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on --display-listen {addr}: {e} (choose another address)")
    })?;
    let seed = store
        .latest_certificates(display::FEED_LEN)
        .map_err(|e| format!("cannot read database {}: {e}", cfg.db.display()))?;
    let feed = Feed::new(seed.iter().map(display::Entry::from_row).collect());
    Ok((listener, Arc::new(feed)))
}

/// The configured sinks, in the order of `sinks::names`.
fn build_sinks(cfg: &ServeConfig, feed: Option<Arc<Feed>>) -> Vec<Arc<Sink>> {
    let mut sinks = Vec::new();
    if let Some(dest) = &cfg.printer {
        sinks.push(Sink::Printer {
            printer: Printer {
                dest: dest.clone(),
                status_check: cfg.printer_status,
            },
            store_name: cfg.store_name.clone(),
            columns: cfg.paper_columns,
        });
    }
    if let Some(feed) = feed {
        sinks.push(Sink::Display(feed));
    }
    if let Some(command) = &cfg.exec {
        sinks.push(Sink::Exec(Exec {
            command: command.clone(),
            timeout: cfg.exec_timeout,
        }));
    }
    if sinks.is_empty() {
        sinks.push(Sink::Log);
    }
    sinks.into_iter().map(Arc::new).collect()
}

/// Jobs queued for a sink this run does not have stay pending: say so once.
fn warn_orphaned_jobs(store: &Store, sinks: &[Arc<Sink>]) {
    let Ok(pending) = store.pending_by_sink() else {
        return;
    };
    for (sink, n) in pending {
        if !sinks.iter().any(|s| s.name() == sink) {
            let flag = match sink.as_str() {
                "printer" => "--printer",
                "display" => "--display-listen",
                "exec" => "--exec",
                _ => "no output flag",
            };
            log::warn!("{n} {sink} output(s) are pending but this run has no {sink} ({flag}); they wait until it does");
        }
    }
}

/// Feeds systemd's watchdog from the main loop, and only after the database thread
/// answered: a hung runtime or a hung writer both stop the pings.
async fn watchdog(
    notifier: Arc<Notifier>,
    writer: Writer,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = server::stopped(&mut stop) => return,
        }
        match tokio::time::timeout(every, writer.call(|s| s.status_line())).await {
            Ok(Ok(Ok(status))) => notifier.send(&format!("WATCHDOG=1\nSTATUS={status}")),
            Ok(Ok(Err(e))) => {
                log::error!("database error in the watchdog check: {e}");
                notifier.send("WATCHDOG=1");
            }
            Ok(Err(_)) => return,
            Err(_) => log::error!("the database thread did not answer within {every:?}; withholding the watchdog ping"),
        }
    }
}

/// SIGTERM and SIGINT, caught from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let install =
            |kind| signal(kind).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first of them, then starts a clean stop.
    async fn stop_on_first(mut self, stop: watch::Sender<bool>, notifier: Arc<Notifier>) {
        let which = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        log::info!("{which}: stopping (answering requests in hand first)");
        notifier.send("STOPPING=1");
        let _ = stop.send(true);
    }
}
