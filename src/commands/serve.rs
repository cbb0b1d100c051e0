//! `coupond serve`: opens the database, binds the port, and runs the receiver, the
//! outbox and (when configured) the display and catch-up until SIGTERM or SIGINT.
//!
//! Start-up order matters for systemd's `Type=notify`: READY is only true once the
//! database is open and migrated and the port is bound, so a failure in either stops
//! start-up with one line and a non-zero exit. Shutdown closes the listener, lets
//! requests in hand finish (each waits for its commit), stops the outbox, then closes
//! the database from the writer thread.
//!
//! SIGHUP (`systemctl reload`) re-reads the settings file and the secrets, swaps the
//! apps the webhook checks against, and re-checks the rejected pushes with them; other
//! settings take effect at the next start. A reload that fails keeps what runs.
//!
//! One daemon per database: it holds an advisory lock on `DB.lock` ([`DaemonLock`]), so
//! a second `serve` refuses to start and `print-test` knows to go through the outbox.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::closing;
use crate::commands::reverify;
use crate::config::ServeConfig;
use crate::conns::{self, BodyPool, BODY_POOL, DISPLAY_CONNECTIONS, WEBHOOK_CONNECTIONS};
use crate::douyin::Douyin;
use crate::intake::Apps;
use crate::knock::{self, Knocks};
use crate::lookup;
use crate::model::{OutputPlan, SinkKind};
use crate::notify::Notifier;
use crate::outbox;
use crate::ratelimit::{self, Limits};
use crate::retention;
use crate::server;
use crate::shutdown::{self, Stop, Trigger};
use crate::sinks::display::{self, Feed};
use crate::sinks::Sink;
use crate::sources::catchup;
use crate::sources::mqtt as mqtt_source;
use crate::sources::webhook::{self, Webhook};
use crate::store::Store;
use crate::tls;
use crate::writer::Writer;

/// Reads the apps (client keys and secrets) again, for a reload, with the names of the
/// other settings that changed (they apply at the next start).
pub type Reload = Box<dyn Fn() -> Result<(Apps, Vec<String>), String> + Send + Sync>;

/// What STATUS= keeps saying after a reload failed, until one succeeds.
type ReloadNote = Arc<std::sync::Mutex<Option<String>>>;

/// Runs the daemon; returns an error line for start-up failures.
pub fn run(cfg: ServeConfig, reload: Reload) -> Result<(), String> {
    one_malloc_arena();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(cfg, reload))
}

/// One malloc arena for the whole process. glibc gives each thread that allocates its
/// own arena, so the database thread kept a second heap (SQLite's page cache and
/// statements) with its own free space: 0.2 MB more resident under the benchmark's load
/// and no CPU saved, two threads being all there are (issue 22).
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The advisory lock one daemon holds on its database (`flock` on `DB.lock`, released
/// when the process ends however it ends). A separate file: closing any descriptor of
/// the database file itself would drop SQLite's own POSIX locks.
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    pub fn path(db: &Path) -> PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Takes the lock, or `Ok(None)` when a daemon holds it.
    pub fn take(db: &Path) -> Result<Option<DaemonLock>, String> {
        let path = DaemonLock::path(db);
        let cannot = |e: std::io::Error| format!("cannot open {}: {e}", path.display());
        // flock needs no write access: an existing lock file is opened read-only, so one
        // that root made (`coupond print-test` on a stopped box) still serves the daemon.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(cannot)?;
                // Made by root for the daemon's user: give it the database's owner.
                if let Ok(m) = std::fs::metadata(db) {
                    use std::os::unix::fs::MetadataExt;
                    let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
                }
                f
            }
            Err(e) => return Err(cannot(e)),
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(DaemonLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }

    /// Tells the daemon running on `db`, if any, that work is queued for it: it wakes
    /// its sinks at once ([`crate::knock`]). Called after the commit.
    pub fn knock(db: &Path) {
        knock::knock(&DaemonLock::path(db))
    }

    /// Whether a daemon holds the lock of `db` (its lock file exists and is locked).
    pub fn held(db: &Path) -> bool {
        let Ok(file) = File::open(DaemonLock::path(db)) else {
            return false;
        };
        // SAFETY: as above; a shared lock that we drop at once.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
    }
}

/// What the daemon running on a database has, as it recorded at its start (the
/// `daemon` table): its ports and outputs with their address or destination.
pub struct RunningDaemon {
    /// `None`: a daemon runs but recorded nothing (one older than that table).
    parts: Option<Vec<(String, String)>>,
}

impl RunningDaemon {
    /// The daemon that holds `db`'s lock, or `None` when none runs.
    pub fn on(db: &Path) -> Option<RunningDaemon> {
        if !DaemonLock::held(db) {
            return None;
        }
        let parts = Store::open_read_only(db)
            .ok()
            .and_then(|s| s.daemon_parts().ok())
            .filter(|p| !p.is_empty());
        Some(RunningDaemon { parts })
    }

    /// Whether it recorded what it has.
    pub fn known(&self) -> bool {
        self.parts.is_some()
    }

    /// `Some(detail)` when it has `part` (`listen`, `printer`, ...), `None` when it
    /// does not or did not say.
    pub fn part(&self, part: &str) -> Option<&str> {
        self.parts
            .as_ref()?
            .iter()
            .find(|(p, _)| p == part)
            .map(|(_, d)| d.as_str())
    }
}

/// What start-up opened, bound and built, before anything runs.
struct Started {
    _lock: DaemonLock,
    store: Store,
    /// `None` with `--listen off` (a store box fed by `--mqtt-source` only).
    listener: Option<TcpListener>,
    display: Option<(TcpListener, Arc<Feed>)>,
    sinks: Vec<Arc<Sink>>,
    plan: OutputPlan,
    catchup: Option<catchup::Settings>,
}

async fn serve(cfg: ServeConfig, reload: Reload) -> Result<(), String> {
    // Before anything else: a SIGTERM from systemd right after READY must reach the
    // handler, not kill the process with the default action (nor a SIGHUP).
    let signals = Signals::install()?;
    let Started {
        _lock,
        store,
        listener,
        display,
        sinks,
        plan,
        catchup,
    } = start(&cfg).await?;
    let plan_for_reload = plan.clone();
    let ear = match &listener {
        Some(l) => format!(
            "listening on http://{}{}",
            l.local_addr().map_err(|e| e.to_string())?,
            cfg.path
        ),
        None => "taking pushes from MQTT only (--listen off)".to_string(),
    };
    let (changes_tx, changes) = watch::channel(0u64);
    // Before the sinks first read their queues: a knock after that is not missed.
    let knocks = Knocks::watch(&DaemonLock::path(&cfg.db));
    let knocked = changes_tx.clone();
    let (writer, db_thread) = Writer::start(store, plan, changes_tx);
    let plan = plan_for_reload;
    let (trigger, stop) = shutdown::channel();
    log_start(&cfg, &ear, &sinks);

    let notifier = Arc::new(Notifier::from_env(&|k| std::env::var(k).ok()));
    let feed = display.as_ref().map(|(_, feed)| feed.clone());
    let note = ReloadNote::default();
    // The apps (client keys, secrets) a reload swaps: the webhook's, the MQTT source's
    // and Douyin's token. The limits are shared by the webhook and the MQTT source: one
    // budget for rejects and replays.
    let (apps_tx, apps) = watch::channel(Arc::new(cfg.apps.clone()));
    let limits = Arc::new(Limits::new());
    let ways_in = WaysIn {
        apps: apps.clone(),
        limits: limits.clone(),
    };
    let catchup = catchup.map(|settings| with_douyin(settings, &apps));
    let details = cfg.catchup.as_ref().and_then(|c| c.details);
    let mut tasks = spawn_beside_webhook(
        &cfg, &sinks, display, catchup, details, &writer, &changes, &notifier, &note, &ways_in,
        &stop,
    )?;
    tasks.spawn(ratelimit::run(limits.clone(), writer.clone(), stop.clone()));
    tasks.spawn(knocks.run(knocked, stop.clone()));
    let hook = Arc::new(Webhook {
        path: cfg.path.clone(),
        max_body: cfg.max_body,
        apps,
        writer: writer.clone(),
        limits,
        bodies: BodyPool::new(BODY_POOL),
        display: feed.clone(),
    });
    let ready = format!("READY=1\nSTATUS={ear}");
    notifier.send(&ready);
    let reloads = Reloads {
        reload,
        note,
        display: feed,
        apps: apps_tx,
        writer: writer.clone(),
        plan: plan.clone(),
        notifier: notifier.clone(),
        ready,
    };
    tokio::spawn(signals.run(trigger, notifier, reloads));
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
    let lock = DaemonLock::take(&cfg.db)
        .map_err(|e| format!("{e} (check --db and that the directory exists and is writable)"))?
        .ok_or_else(|| {
            format!(
                "another coupond serve is running on {} (one daemon per database)",
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
    store
        .record_daemon(&daemon_parts(
            cfg,
            listener.as_ref(),
            display.as_ref().map(|(l, _)| l),
        ))
        .map_err(|e| format!("cannot write to database {}: {e}", cfg.db.display()))?;
    warn_orphaned_jobs(&store, &sinks);
    let details = cfg.catchup.as_ref().is_some_and(|c| c.details.is_some());
    let plan = cfg.outputs.plan(&cfg.print_actions).with_details(details);
    match reverify::pass(&mut store, &cfg.apps, &plan) {
        Ok(r) if r.recovered > 0 => {
            log::warn!("reverify: {r} (they were rejected under an earlier configuration)")
        }
        Ok(_) => {}
        Err(e) => log::error!("reverify: {e}"),
    }
    let catchup = catchup_settings(cfg)?;
    Ok(Started {
        _lock: lock,
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
    match c.details {
        Some(wait) => log::info!(
            "details on: each verified coupon is looked up (certificate query); outputs wait up to {wait:?} for them"
        ),
        None => log::info!("details off (--details off): receipts show the coupon's ids only"),
    }
    Ok(Some(catchup::Settings {
        account_id: c.account_id.clone(),
        poi_ids: c.poi_ids.clone(),
        every: c.every,
        api: c.api.clone(),
        client_key: cfg.apps.client_keys[0].clone(),
        tls,
    }))
}

/// The start-up line: what listens, the database, the apps and the outputs.
fn log_start(cfg: &ServeConfig, ear: &str, sinks: &[Arc<Sink>]) {
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
}

/// Catch-up's settings with the daemon's one Douyin client, whose secrets follow
/// reloads through `apps`.
fn with_douyin(
    settings: catchup::Settings,
    apps: &watch::Receiver<Arc<Apps>>,
) -> (catchup::Settings, Arc<Douyin>) {
    let douyin = Douyin::new(
        settings.api.clone(),
        settings.tls.clone(),
        settings.client_key.clone(),
        apps.clone(),
    );
    (settings, Arc::new(douyin))
}

/// Catch-up's task, with what the watchdog needs to tell a stuck sweep.
fn spawn_catchup(
    tasks: &mut JoinSet<()>,
    catchup: Option<(catchup::Settings, Arc<Douyin>)>,
    writer: &Writer,
    stop: &Stop,
) -> Option<(catchup::Health, Duration)> {
    catchup.map(|(settings, douyin)| {
        let every = settings.every;
        let (health_tx, health) = watch::channel((crate::time::now_secs(), false));
        tasks.spawn(catchup::run(
            settings,
            douyin,
            writer.clone(),
            health_tx,
            stop.clone(),
        ));
        (health, every)
    })
}

/// What every source shares with the webhook: the apps in use (a reload replaces
/// them) and the limits on what rejects and replays may cost.
struct WaysIn {
    apps: watch::Receiver<Arc<Apps>>,
    limits: Arc<Limits>,
}

/// Everything beside the webhook, as tasks that end when the stop is given: one
/// delivery loop per sink (and the MQTT sink's connection), the MQTT source,
/// retention, `--report-at`, the display's port, catch-up and the watchdog.
#[allow(clippy::too_many_arguments)]
fn spawn_beside_webhook(
    cfg: &ServeConfig,
    sinks: &[Arc<Sink>],
    display: Option<(TcpListener, Arc<Feed>)>,
    catchup: Option<(catchup::Settings, Arc<Douyin>)>,
    details: Option<Duration>,
    writer: &Writer,
    changes: &watch::Receiver<u64>,
    notifier: &Arc<Notifier>,
    note: &ReloadNote,
    ways_in: &WaysIn,
    stop: &Stop,
) -> Result<JoinSet<()>, String> {
    let mut tasks = JoinSet::new();
    let feed = display.as_ref().map(|(_, feed)| feed.clone());
    let mut wait = outbox::DetailsWait::none();
    if let (Some((settings, douyin)), Some(details)) = (&catchup, details) {
        let (ended, rx) = watch::channel(0u64);
        wait = outbox::DetailsWait {
            wait: details,
            ended: Some(rx),
        };
        let lookups = lookup::Lookups {
            douyin: douyin.clone(),
            account_id: settings.account_id.clone(),
            writer: writer.clone(),
            feed,
            ended,
        };
        tasks.spawn(lookup::run(lookups, changes.clone(), stop.clone()));
    }
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
            wait.clone(),
            stop.clone(),
        ));
    }
    if let Some(sub) = &cfg.mqtt_source {
        let ingest = mqtt_source::Ingest {
            sub: sub.clone(),
            apps: ways_in.apps.clone(),
            writer: writer.clone(),
            limits: ways_in.limits.clone(),
        };
        tasks.spawn(mqtt_source::run(ingest, stop.clone()));
    }
    if let Some(days) = cfg.keep_days {
        tasks.spawn(retention::run(writer.clone(), days, stop.clone()));
    }
    if let Some(at) = cfg.report_at {
        let schedule = closing::Schedule {
            at,
            day_starts: cfg.day_starts,
        };
        tasks.spawn(closing::run(writer.clone(), schedule, stop.clone()));
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
    let catchup_health = spawn_catchup(&mut tasks, catchup, writer, stop);
    if let Some(every) = notifier.watchdog_interval() {
        tasks.spawn(watchdog(
            notifier.clone(),
            writer.clone(),
            every,
            catchup_health,
            note.clone(),
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
    // A wrong secret shows from the start, not only from the next failed push.
    feed.reset_signature_failures(store.signature_failures_last_hour().unwrap_or(0) as usize);
    Ok((listener, Arc::new(feed)))
}

/// What this run has, for the database's `daemon` table: its ports as bound and its
/// outputs with their destination, so that `check`, `print-test` and `reprint` can say
/// what the running daemon will do.
fn daemon_parts(
    cfg: &ServeConfig,
    listener: Option<&TcpListener>,
    display: Option<&TcpListener>,
) -> Vec<(&'static str, String)> {
    let addr = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(l) = listener {
        parts.push(("listen", format!("{}{}", addr(l), cfg.path)));
    }
    if let Some(l) = display {
        parts.push(("display-listen", addr(l)));
    }
    for kind in cfg.outputs.kinds() {
        let detail = match kind {
            SinkKind::Printer => cfg
                .outputs
                .receipts
                .printer
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            SinkKind::Mqtt => cfg
                .outputs
                .mqtt
                .as_ref()
                .map(|p| format!("{}:{}", p.broker.host, p.broker.port))
                .unwrap_or_default(),
            // The ALSA device; a speaker command, like a hook's, is not copied.
            SinkKind::Speaker => cfg
                .outputs
                .speaker
                .as_ref()
                .map(|s| s.player.name())
                .unwrap_or_default(),
            // A hook's command line may hold a token: not copied.
            SinkKind::Display | SinkKind::Exec | SinkKind::Log => String::new(),
        };
        parts.push((kind.name(), detail));
    }
    parts
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
    note: ReloadNote,
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
                if let Some(n) = note.lock().ok().and_then(|n| n.clone()) {
                    status += &format!("; {n}");
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

/// SIGTERM and SIGINT (stop) and SIGHUP (reload), caught from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a reload needs: how to read the apps again and where they go.
struct Reloads {
    reload: Reload,
    /// Set while the last reload failed: the watchdog's STATUS= keeps saying so.
    note: ReloadNote,
    /// The counter display, whose signature-failure banner a fixed secret clears.
    display: Option<Arc<Feed>>,
    apps: watch::Sender<Arc<Apps>>,
    writer: Writer,
    plan: OutputPlan,
    notifier: Arc<Notifier>,
    ready: String,
}

impl Reloads {
    /// Re-reads the secrets (and client keys), swaps them in, and re-checks the
    /// rejected pushes with them, as at start.
    async fn reload(&self) {
        self.notifier.send("RELOADING=1");
        let result = (self.reload)();
        let note = result.as_ref().err().map(|e| {
            format!(
                "reload at {} failed, running on the settings before it: {e}",
                crate::time::now_rfc3339()
            )
        });
        if let Ok(mut n) = self.note.lock() {
            n.clone_from(&note);
        }
        match result {
            Err(e) => {
                log::error!("SIGHUP: reload failed, keeping the current secrets and settings: {e}");
                let status = self.ready.split("STATUS=").nth(1).unwrap_or_default();
                self.notifier.send(&format!(
                    "READY=1\nSTATUS={status}; {}",
                    note.unwrap_or_default()
                ));
                return;
            }
            Ok((apps, changed)) => {
                let later = match changed.is_empty() {
                    true => "other settings apply at the next start".to_string(),
                    false => format!(
                        "changed, applied at the next start (systemctl restart coupond): {}",
                        changed.join(", ")
                    ),
                };
                log::info!(
                    "SIGHUP: reloaded: {} app(s), {} secret(s) in use ({later})",
                    apps.client_keys.len(),
                    apps.secrets.len()
                );
                let apps = Arc::new(apps);
                let _ = self.apps.send(apps.clone());
                let plan = self.plan.clone();
                match self
                    .writer
                    .call(move |s| reverify::pass(s, &apps, &plan))
                    .await
                {
                    Ok(Ok(r)) if r.recovered > 0 => log::warn!("reverify: {r}"),
                    Ok(Ok(r)) => log::info!("reverify: {r}"),
                    Ok(Err(e)) => log::error!("reverify: {e}"),
                    Err(_) => {}
                }
                if let Some(feed) = &self.display {
                    if let Ok(Ok(n)) = self.writer.call(|s| s.signature_failures_last_hour()).await
                    {
                        feed.reset_signature_failures(n as usize);
                    }
                }
            }
        }
        self.notifier.send(&self.ready);
    }
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let install =
            |kind| signal(kind).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Reloads on each SIGHUP; on the first SIGTERM or SIGINT, starts a clean stop.
    async fn run(mut self, stop: Trigger, notifier: Arc<Notifier>, reloads: Reloads) {
        let which = loop {
            tokio::select! {
                _ = self.term.recv() => break "SIGTERM",
                _ = self.int.recv() => break "SIGINT",
                _ = self.hup.recv() => reloads.reload().await,
            }
        };
        log::info!("{which}: stopping (answering requests in hand first)");
        notifier.send("STOPPING=1");
        let _ = stop.send(true);
    }
}
