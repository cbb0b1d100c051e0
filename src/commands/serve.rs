//! `coupond serve`: opens the database, binds the port, and runs the receiver, the
//! outbox and (when configured) the display and catch-up until SIGTERM or SIGINT.
//!
//! Start-up order matters for systemd's `Type=notify`: READY is only true once the
//! database is open and migrated and the port is bound, so a failure in either stops
//! start-up with one line and a non-zero exit. Shutdown closes the listener, lets
//! requests in hand finish (each waits for its commit), stops the outbox, then closes
//! the database from the writer thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::commands::reverify;
use crate::config::ServeConfig;
use crate::conns::{self, BodyPool, BODY_POOL, DISPLAY_CONNECTIONS, WEBHOOK_CONNECTIONS};
use crate::notify::Notifier;
use crate::outbox;
use crate::ratelimit::{self, Limits};
use crate::retention;
use crate::server;
use crate::shutdown::{self, Stop, Trigger};
use crate::sinks::display::{self, Feed};
use crate::sinks::{Sink, SinkKind};
use crate::sources::catchup;
use crate::sources::mqtt as mqtt_source;
use crate::sources::webhook::{self, Webhook};
use crate::store::{OutputPlan, Store};
use crate::tls;
use crate::writer::Writer;

/// Runs the daemon; returns an error line for start-up failures.
pub fn run(cfg: ServeConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(cfg))
}

/// What start-up opened, bound and built, before anything runs.
struct Started {
    store: Store,
    /// `None` with `--listen off` (a store box fed by `--mqtt-source` only).
    listener: Option<TcpListener>,
    display: Option<(TcpListener, Arc<Feed>)>,
    sinks: Vec<Arc<Sink>>,
    plan: OutputPlan,
    catchup: Option<catchup::Settings>,
}

async fn serve(cfg: ServeConfig) -> Result<(), String> {
    // Before anything else: a SIGTERM from systemd right after READY must reach the
    // handler, not kill the process with the default action.
    let signals = Signals::install()?;
    let Started {
        store,
        listener,
        display,
        sinks,
        plan,
        catchup,
    } = start(&cfg).await?;
    let ear = match &listener {
        Some(l) => format!(
            "listening on http://{}{}",
            l.local_addr().map_err(|e| e.to_string())?,
            cfg.path
        ),
        None => "taking pushes from MQTT only (--listen off)".to_string(),
    };
    let (changes_tx, changes) = watch::channel(0u64);
    let (writer, db_thread) = Writer::start(store, plan, changes_tx);
    let (trigger, stop) = shutdown::channel();
    log::info!(
        "coupond {} {ear} with database {}; {} app(s), {} secret(s); outputs: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.db.display(),
        cfg.apps.client_keys.len(),
        cfg.apps.secrets.len(),
        sinks
            .iter()
            .map(|s| s.kind().name())
            .collect::<Vec<_>>()
            .join(", "),
    );

    let notifier = Arc::new(Notifier::from_env(&|k| std::env::var(k).ok()));
    let mut tasks = spawn_beside_webhook(
        &cfg, &sinks, display, catchup, &writer, &changes, &notifier, &stop,
    )?;
    let limits = Arc::new(Limits::new());
    tasks.spawn(ratelimit::run(limits.clone(), writer.clone(), stop.clone()));
    let hook = Arc::new(Webhook {
        path: cfg.path.clone(),
        max_body: cfg.max_body,
        apps: cfg.apps.clone(),
        writer: writer.clone(),
        limits,
        bodies: BodyPool::new(BODY_POOL),
    });
    notifier.send(&format!("READY=1\nSTATUS={ear}"));
    tokio::spawn(signals.stop_on_first(trigger, notifier));
    match listener {
        Some(listener) => {
            server::serve(
                "webhook",
                listener,
                webhook_connections(),
                move |req| webhook::handle(hook.clone(), req),
                stop.clone(),
            )
            .await
        }
        None => shutdown::stopped(&mut stop.clone()).await,
    }
    while tasks.join_next().await.is_some() {}
    close(writer, db_thread).await;
    Ok(())
}

/// Opens and migrates the database, binds both ports, re-checks rejected pushes and
/// builds the sinks: everything that may fail, so READY is only sent once it all worked.
async fn start(cfg: &ServeConfig) -> Result<Started, String> {
    let mut store = Store::open(&cfg.db).map_err(|e| {
        format!(
            "cannot open database {}: {e} (check --db and that the directory exists and is writable)",
            cfg.db.display()
        )
    })?;
    let listener = match cfg.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            format!(
                "cannot listen on {addr}: {e} (another coupond running? choose another --listen)"
            )
        })?),
        None => None,
    };
    let display = match cfg.display_listen {
        Some(addr) => Some(bind_display(addr, &store, cfg).await?),
        None => None,
    };
    let sinks = cfg
        .outputs
        .build(display.as_ref().map(|(_, feed)| feed.clone()));
    warn_orphaned_jobs(&store, &sinks);
    let plan = OutputPlan {
        sinks: sinks
            .iter()
            .map(|s| s.kind())
            .filter(|k| *k != SinkKind::Mqtt)
            .collect(),
        actions: cfg.print_actions.clone(),
        mqtt_events: cfg.outputs.mqtt.is_some(),
        mqtt_forward: cfg.outputs.mqtt.as_ref().is_some_and(|p| p.forward),
    };
    match reverify::pass(&mut store, &cfg.apps, &plan) {
        Ok(r) if r.recovered > 0 => {
            log::warn!("reverify: {r} (they were rejected under an earlier configuration)")
        }
        Ok(_) => {}
        Err(e) => log::error!("reverify: {e}"),
    }
    let catchup = catchup_settings(cfg)?;
    Ok(Started {
        store,
        listener,
        display,
        sinks,
        plan,
        catchup,
    })
}

/// Catch-up's settings with its TLS set-up, when `--account-id` asks for it. A start-up
/// line says whether it is on; whether a token can be had is said by the first sweep.
fn catchup_settings(cfg: &ServeConfig) -> Result<Option<catchup::Settings>, String> {
    let Some(c) = &cfg.catchup else {
        log::info!("catch-up off (no --account-id): only pushes are recorded");
        return Ok(None);
    };
    let tls = if c.api.https {
        Some(tls::client_config(c.ca.as_deref()).map_err(|e| format!("invalid --douyin-ca: {e}"))?)
    } else {
        if c.ca.is_some() {
            log::warn!(
                "--douyin-ca is ignored: --douyin-api {} is not https",
                c.api
            );
        }
        None
    };
    let pois = match c.poi_ids.is_empty() {
        true => String::new(),
        false => format!(" (POI {})", c.poi_ids.join(",")),
    };
    log::info!(
        "catch-up on: account {}{pois}, every {:?}, from {}",
        c.account_id,
        c.every,
        c.api
    );
    Ok(Some(catchup::Settings {
        account_id: c.account_id.clone(),
        poi_ids: c.poi_ids.clone(),
        every: c.every,
        api: c.api.clone(),
        client_key: cfg.apps.client_keys[0].clone(),
        secrets: cfg.apps.secrets.clone(),
        tls,
    }))
}

/// Everything beside the webhook, as tasks that end when the stop is given: one
/// delivery loop per sink (and the MQTT sink's connection), the MQTT source,
/// retention, the display's port, catch-up and the watchdog.
#[allow(clippy::too_many_arguments)]
fn spawn_beside_webhook(
    cfg: &ServeConfig,
    sinks: &[Arc<Sink>],
    display: Option<(TcpListener, Arc<Feed>)>,
    catchup: Option<catchup::Settings>,
    writer: &Writer,
    changes: &watch::Receiver<u64>,
    notifier: &Arc<Notifier>,
    stop: &Stop,
) -> Result<JoinSet<()>, String> {
    let mut tasks = JoinSet::new();
    for sink in sinks {
        if let Sink::Mqtt(m) = &**sink {
            if let Some(link) = m.take_link() {
                tasks.spawn(link.run(writer.clone(), stop.clone()));
            }
        }
        tasks.spawn(outbox::run_sink(
            sink.clone(),
            writer.clone(),
            cfg.output_attempts,
            changes.clone(),
            stop.clone(),
        ));
    }
    if let Some(sub) = &cfg.mqtt_source {
        tasks.spawn(mqtt_source::run(
            sub.clone(),
            cfg.apps.clone(),
            writer.clone(),
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
        let page_stop = stop.clone();
        tasks.spawn(server::serve(
            "display",
            listener,
            DISPLAY_CONNECTIONS,
            move |req| display::handle(feed.clone(), page_stop.clone(), req),
            stop.clone(),
        ));
    }
    let catchup_health = catchup.map(|settings| {
        let every = settings.every;
        let (health_tx, health) = watch::channel((crate::time::now_secs(), false));
        tasks.spawn(catchup::run(
            settings,
            writer.clone(),
            health_tx,
            stop.clone(),
        ));
        (health, every)
    });
    if let Some(every) = notifier.watchdog_interval() {
        tasks.spawn(watchdog(
            notifier.clone(),
            writer.clone(),
            every,
            catchup_health,
            stop.clone(),
        ));
    }
    Ok(tasks)
}

/// Lets the writer thread finish the batch in hand and close the database.
async fn close(writer: Writer, db_thread: JoinHandle<()>) {
    drop(writer);
    let _ = tokio::task::spawn_blocking(move || db_thread.join()).await;
    log::info!("stopped; database closed");
}

/// How many connections the webhook port holds: [`WEBHOOK_CONNECTIONS`], unless the file
/// descriptor limit cannot be raised that far (then said once, with what to raise).
fn webhook_connections() -> usize {
    let allowed = conns::fit_fd_limit(WEBHOOK_CONNECTIONS + DISPLAY_CONNECTIONS);
    let n = allowed.saturating_sub(DISPLAY_CONNECTIONS).max(16);
    if n < WEBHOOK_CONNECTIONS {
        log::warn!(
            "the file descriptor limit allows {n} webhook connections, not {WEBHOOK_CONNECTIONS}: \
             raise LimitNOFILE= (ulimit -n) to 2048"
        );
    }
    n
}

/// Binds the display port and seeds its feed from the database.
async fn bind_display(
    addr: SocketAddr,
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

/// Jobs queued for a sink this run does not have stay pending: say so once.
fn warn_orphaned_jobs(store: &Store, sinks: &[Arc<Sink>]) {
    let Ok(pending) = store.pending_by_sink() else {
        return;
    };
    for (kind, n) in pending {
        if !sinks.iter().any(|s| s.kind() == kind) {
            log::warn!(
                "{n} {kind} output(s) are pending but this run has no {kind} ({}); they wait until it does",
                kind.flag()
            );
        }
    }
}

/// Feeds systemd's watchdog from the main loop, and only after the database thread
/// answered: a hung runtime or a hung writer both stop the pings.
async fn watchdog(
    notifier: Arc<Notifier>,
    writer: Writer,
    every: Duration,
    catchup: Option<(catchup::Health, Duration)>,
    mut stop: Stop,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown::stopped(&mut stop) => return,
        }
        match tokio::time::timeout(every, writer.call(|s| s.status_line())).await {
            Ok(Ok(Ok(mut status))) => {
                // How long since the last complete catch-up sweep, once it is overdue.
                if let Some((health, sweep_every)) = &catchup {
                    let (since, complete) = *health.borrow();
                    let now = crate::time::now_secs();
                    if let Some(late) = catchup::overdue(now, since, complete, *sweep_every) {
                        status += &format!("; {late}");
                    }
                }
                notifier.send(&format!("WATCHDOG=1\nSTATUS={status}"))
            }
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
    async fn stop_on_first(mut self, stop: Trigger, notifier: Arc<Notifier>) {
        let which = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        log::info!("{which}: stopping (answering requests in hand first)");
        notifier.send("STOPPING=1");
        let _ = stop.send(true);
    }
}
