//! `coupond check`: the installer's first command (SPEC §7). Checks everything `serve`
//! would use with the same settings, one line each (`ok`, `warn` or `FAIL` with what to
//! do), and changes nothing: the database is not created or migrated, no port is held,
//! no receipt is printed.
//!
//! When the systemd unit is installed and its daemon reads the same settings file, the
//! database and printer paths are judged as the service will see them
//! ([`Sandbox`]: read-only system, private /tmp, allowed devices, its own user), not as
//! the user running check sees them. With catch-up on, a Douyin token is fetched (and
//! thrown away); an MQTT broker is connected to under a client id of its own, so the
//! running daemon's sessions are left alone. `--settings-only` stops after the settings
//! and secrets: the unit's `ExecReload=` runs it before it signals a reload.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::commands::sandbox::{Refusal, Sandbox, UNIT};
use crate::commands::serve::RunningDaemon;
use crate::commands::verdict::line;
pub use crate::commands::verdict::{Level, Line};
use crate::config::{self, Args, ServeConfig};
use crate::sinks::printer::{self, PrinterDest, PrinterStatus};
use crate::store::{Store, SCHEMA_VERSION};

/// The client key the shipped settings file holds until the installer sets the real one.
const PLACEHOLDER_KEY: &str = "your-app-id";

/// Runs every check, prints one line each; `Ok(true)` when none failed.
pub fn run(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    let lines = checks(args, env);
    for l in &lines {
        println!("{l}");
    }
    Ok(lines.iter().all(|l| l.level != Level::Fail))
}

/// A settings error as `check` reports it: one FAIL line.
pub fn settings_failed(e: &config::ConfigError) -> Line {
    line(Level::Fail, "settings", e.to_string())
}

fn checks(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Vec<Line> {
    let mut out = Vec::new();
    let file = match args.config_file() {
        Some(p) => format!("settings file {}", p.display()),
        None => format!(
            "no settings file ({} does not exist): flags and environment only",
            config::flags::DEFAULT_CONFIG
        ),
    };
    let cfg = match ServeConfig::without_secrets(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            out.push(settings_failed(&e));
            return out;
        }
    };
    let keys = cfg.apps.client_keys.join(",");
    out.push(
        if cfg.apps.client_keys.iter().any(|k| k == PLACEHOLDER_KEY) {
            line(
                Level::Warn,
                "settings",
                format!(
                    "{file}; client key {keys}: {PLACEHOLDER_KEY} is the example's placeholder, \
                 no push from Douyin carries it: set COUPOND_CLIENT_KEY to your app's \
                 client_key (Douyin Open Platform console)"
                ),
            )
        } else {
            line(
                Level::Ok,
                "settings",
                format!("{file}; client key(s) {keys}"),
            )
        },
    );
    let (secret_line, secrets) = secrets(args, env);
    out.push(secret_line);
    let settings_only = args
        .text(&config::flags::SETTINGS_ONLY)
        .is_some_and(|v| matches!(v.as_str(), "true" | "yes" | "on" | "1"));
    if settings_only {
        return out;
    }
    let sandbox = Sandbox::installed().filter(|s| same_file(args.config_file(), &s.config));
    if let Some(s) = &sandbox {
        out.push(line(
            Level::Ok,
            "unit",
            format!(
                "paths judged as {UNIT} sees them ({}), as user {}",
                s.source(),
                s.user.as_deref().unwrap_or("root")
            ),
        ));
    }
    let daemon = RunningDaemon::on(&cfg.db);
    out.push(database(&cfg.db, sandbox.as_ref()));
    match cfg.listen {
        Some(addr) => out.push(port("listen", addr, Some(&cfg.path), daemon.as_ref())),
        None => out.push(line(
            Level::Ok,
            "listen",
            "off: pushes come from --mqtt-source only",
        )),
    }
    out.push(printer(&cfg, sandbox.as_ref()));
    if let Some(addr) = cfg.display_listen {
        out.push(port("display", addr, None, daemon.as_ref()));
    }
    let catchup = super::check_links::catchup(&cfg, &secrets);
    let details = super::check_links::details(&cfg, catchup.as_ref());
    out.extend(catchup);
    out.push(details);
    out.extend(super::check_links::brokers(&cfg));
    if let Some(speaker) = &cfg.outputs.speaker {
        out.extend(super::check_speaker::lines(speaker, sandbox.as_ref()));
    }
    if cfg.outputs.mqtt.is_some() || cfg.mqtt_source.is_some() {
        out.push(mqtt_links(&cfg.db));
    }
    out
}

/// The broker connections as the running (or last) daemon recorded them: a client id
/// that another client uses too fails (pushes would split between the two boxes).
fn mqtt_links(db: &Path) -> Line {
    let links = match Store::open_read_only(db).and_then(|s| s.links().map_err(|e| e.to_string())) {
        Ok(links) => links,
        Err(_) => {
            return line(
                Level::Ok,
                "mqtt",
                "no connection recorded yet (not started)",
            )
        }
    };
    if let Some(l) = links
        .iter()
        .find(|l| l.state == crate::model::LinkStatus::DuplicateClientId)
    {
        let detail = crate::sanitize::text(l.detail.as_deref().unwrap_or(""));
        return line(Level::Fail, "mqtt", format!("{}: {detail}", l.name));
    }
    let states: Vec<String> = links
        .iter()
        .map(|l| format!("{} {}", l.name, l.state))
        .collect();
    match states.is_empty() {
        true => line(
            Level::Ok,
            "mqtt",
            "no connection recorded yet (not started)",
        ),
        false => line(
            Level::Ok,
            "mqtt",
            format!("last recorded: {}", states.join(", ")),
        ),
    }
}

/// Whether the settings file check read is the one the unit's daemon reads.
fn same_file(checked: Option<&Path>, unit: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    checked.is_some_and(|c| canon(c) == canon(unit))
}

fn secrets(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> (Line, Vec<String>) {
    let secrets = match config::settings::secrets(args, env) {
        Ok(s) => s,
        Err(e) => return (line(Level::Fail, "secret", e.to_string()), Vec::new()),
    };
    (secrets_line(args, env, secrets.len()), secrets)
}

fn secrets_line(args: &Args, env: &dyn Fn(&str) -> Option<String>, n: usize) -> Line {
    let file = args
        .text(&config::flags::SECRET_FILE)
        .map(PathBuf::from)
        .or_else(|| {
            env("CREDENTIALS_DIRECTORY")
                .map(|d| Path::new(&d).join("client_secret"))
                .filter(|p| p.exists())
        });
    let Some(file) = file else {
        return line(
            Level::Ok,
            "secret",
            format!("{n} secret(s) from COUPOND_CLIENT_SECRET"),
        );
    };
    let mode = std::fs::metadata(&file)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o004 != 0 {
        return line(
            Level::Warn,
            "secret",
            format!(
                "{n} secret(s) from {}, but every user of the box can read it: chmod 640 {} \
                 (owner root, group of the daemon's user)",
                file.display(),
                file.display()
            ),
        );
    }
    line(
        Level::Ok,
        "secret",
        format!("{n} secret(s) from {}", file.display()),
    )
}

/// Whether this process may write `path` (`access(2)`: the real user's rights).
fn writable(path: &Path) -> bool {
    super::may(path, libc::W_OK)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A FAIL for a path the unit's sandbox keeps the service from writing, saying what
/// to use instead or how to open it.
fn refused(what: &'static str, path: &Path, r: Refusal, instead: &str, s: &Sandbox) -> Line {
    let open = match r.open {
        Some(dir) => format!(
            ", or let the service write there: systemctl edit coupond, and under [Service] \
             add ReadWritePaths={}",
            dir.display()
        ),
        None => String::new(),
    };
    line(
        Level::Fail,
        what,
        format!(
            "{} is {} ({} in {}): use {instead}{open}",
            path.display(),
            r.why,
            r.setting,
            s.source()
        ),
    )
}

fn database(db: &Path, sandbox: Option<&Sandbox>) -> Line {
    if let Err(e) = super::reachable(db, libc::R_OK, "read") {
        return line(Level::Fail, "database", e);
    }
    let dir = parent(db);
    if let Some(s) = sandbox {
        let instead = format!(
            "{}/coupond.db (COUPOND_DB), the unit's state directory",
            s.state_dir().display()
        );
        if let Err(r) = s.writable(db) {
            return refused("database", db, r, &instead, s);
        }
        if !s.owned(db) {
            if let Err(e) = s.user_may_write(if db.exists() { db } else { &dir }) {
                return line(Level::Fail, "database", format!("{}: {e}", db.display()));
            }
        }
    }
    if !db.exists() {
        if !dir.is_dir() {
            // systemd's StateDirectory= makes /var/lib/coupond at the first start.
            let made = match sandbox {
                Some(s) => s.owned(db),
                None => dir.starts_with("/var/lib/coupond"),
            };
            if made {
                return line(
                    Level::Warn,
                    "database",
                    format!(
                        "{} does not exist yet: systemd creates it at the first start",
                        dir.display()
                    ),
                );
            }
            return line(
                Level::Fail,
                "database",
                format!(
                    "directory {} does not exist: create it or fix --db",
                    dir.display()
                ),
            );
        }
        if !writable(&dir) {
            return line(
                Level::Fail,
                "database",
                format!(
                    "{} is not writable: coupond cannot create {}",
                    dir.display(),
                    db.display()
                ),
            );
        }
        return line(
            Level::Ok,
            "database",
            format!(
                "{} does not exist yet; it is created at the first start",
                db.display()
            ),
        );
    }
    existing_database(db, &dir)
}

fn existing_database(db: &Path, dir: &Path) -> Line {
    let version = match Store::open_read_only(db) {
        Ok(s) => s.schema_version(),
        Err(e) => {
            return line(
                Level::Fail,
                "database",
                format!("cannot open {}: {e}", db.display()),
            )
        }
    };
    if !writable(db) || !writable(dir) {
        return line(
            Level::Fail,
            "database",
            format!(
                "{} (or its directory) is not writable by this user",
                db.display()
            ),
        );
    }
    let note = match version {
        Ok(v) if v < SCHEMA_VERSION => format!(
            "schema version {v}; migrated to {SCHEMA_VERSION} at the next start (a copy is kept first)"
        ),
        Ok(v) => format!("schema version {v}"),
        Err(e) => return line(Level::Fail, "database", format!("cannot read {}: {e}", db.display())),
    };
    line(
        Level::Ok,
        "database",
        format!("{}: {note}, writable", db.display()),
    )
}

/// A port `serve` would bind: free, or held by a running coupond. The daemon on this
/// database recorded its ports; only a port it did not record is asked over HTTP.
fn port(
    what: &'static str,
    addr: SocketAddr,
    webhook_path: Option<&str>,
    daemon: Option<&RunningDaemon>,
) -> Line {
    let flag = if webhook_path.is_some() {
        "--listen"
    } else {
        "--display-listen"
    };
    let recorded = daemon.and_then(|d| d.part(&flag[2..])).unwrap_or_default();
    match TcpListener::bind(addr) {
        Ok(_) => line(Level::Ok, what, format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if recorded == format!("{addr}{}", webhook_path.unwrap_or_default()) {
                line(
                    Level::Ok,
                    what,
                    format!("{addr} is held by the coupond running on this database"),
                )
            } else if is_coupond(addr, webhook_path) {
                line(
                    Level::Ok,
                    what,
                    format!("{addr} is held by a running coupond"),
                )
            } else {
                line(
                    Level::Fail,
                    what,
                    format!(
                        "{addr} is in use by another program: stop it or choose another {flag}"
                    ),
                )
            }
        }
        Err(e) => line(
            Level::Fail,
            what,
            format!("cannot listen on {addr}: {e} (fix {flag})"),
        ),
    }
}

/// Whether a coupond answers on `addr`: its webhook answers a GET on the path with 405
/// and `Allow: POST`; its display serves `/api/coupons`.
fn is_coupond(addr: SocketAddr, webhook_path: Option<&str>) -> bool {
    let ask = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let path = webhook_path.unwrap_or("/api/coupons");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        let _ = s.take(64 * 1024).read_to_end(&mut buf);
        Ok(String::from_utf8_lossy(&buf).to_ascii_lowercase())
    };
    let Ok(answer) = ask() else {
        return false;
    };
    match webhook_path {
        Some(_) => answer.starts_with("http/1.1 405") && answer.contains("allow: post"),
        None => answer.starts_with("http/1.1 200") && answer.contains("\"generation\""),
    }
}

fn printer(cfg: &ServeConfig, sandbox: Option<&Sandbox>) -> Line {
    let receipts = &cfg.outputs.receipts;
    if let (Some(PrinterDest::Path(p)), Some(s)) = (&receipts.printer, sandbox) {
        if let Some(fail) = sandboxed_printer(p, s) {
            return fail;
        }
    }
    match &receipts.printer {
        None => line(
            Level::Ok,
            "printer",
            "none configured (--printer): applied coupons go to the display, hook or log",
        ),
        Some(PrinterDest::Tcp { host, port }) => tcp_printer(host, *port, receipts.printer_status),
        Some(PrinterDest::Path(p)) => path_printer(p, receipts.printer_status),
    }
}

fn tcp_printer(host: &str, port: u16, status: PrinterStatus) -> Line {
    let dest = format!("tcp://{host}:{port}");
    let probe = async {
        if status == PrinterStatus::Off {
            let addr = format!("{host}:{port}");
            return tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            .map_err(|_| "no connection within 5s".to_string())?
            .map(|_| None)
            .map_err(|e| e.to_string());
        }
        printer::probe_tcp(host, port).await
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(probe));
    match (result, status) {
        (Err(e), _) => line(
            Level::Fail,
            "printer",
            format!("{dest}: {e} (is it on, and on this network? is --printer right?)"),
        ),
        (Ok(_), PrinterStatus::Off) => line(
            Level::Ok,
            "printer",
            format!("{dest} accepts connections (status checks off)"),
        ),
        (Ok(Some(b)), _) if b & 0x60 != 0 => line(
            Level::Warn,
            "printer",
            format!("{dest} answers: out of paper"),
        ),
        (Ok(Some(_)), _) => line(
            Level::Ok,
            "printer",
            format!("{dest} answers status requests: paper ok"),
        ),
        (Ok(None), PrinterStatus::Auto) => line(
            Level::Ok,
            "printer",
            format!(
                "{dest} accepts connections but answers no status requests (DLE EOT), as many \
                 print servers do: receipts are printed without paper checks"
            ),
        ),
        (Ok(None), _) => line(
            Level::Fail,
            "printer",
            format!(
                "{dest} answers no status requests (DLE EOT): set --printer-status auto or off"
            ),
        ),
    }
}

/// A FAIL when the unit keeps the service from a printer path: a file it cannot write,
/// a device it may not open, or one its user has no group for.
fn sandboxed_printer(path: &Path, s: &Sandbox) -> Option<Line> {
    let fail = |text: String| Some(line(Level::Fail, "printer", text));
    if path.starts_with("/dev") {
        if let Err(e) = s.device(path) {
            return fail(format!("{}: {e} ({})", path.display(), s.source()));
        }
        // A device is never created: a missing one is the printer's own FAIL below.
        if !path.exists() {
            return None;
        }
    } else {
        let instead = format!(
            "{}/receipts.bin for a file printer (the unit's state directory)",
            s.state_dir().display()
        );
        if let Err(r) = s.writable(path) {
            return Some(refused("printer", path, r, &instead, s));
        }
        if s.owned(path) {
            return None;
        }
    }
    let target = if path.exists() {
        path.to_path_buf()
    } else {
        parent(path)
    };
    match s.user_may_write(&target) {
        Err(e) => fail(format!("{}: {e}", target.display())),
        Ok(()) => None,
    }
}

fn path_printer(path: &Path, status: PrinterStatus) -> Line {
    let shown = path.display();
    if !path.exists() {
        if !printer::creatable(path) {
            return line(
                Level::Fail,
                "printer",
                format!("{shown} does not exist: is the printer plugged in and on? (ls /dev/usb/ /dev/ttyUSB*)"),
            );
        }
        let dir = parent(path);
        return match (dir.is_dir(), writable(&dir)) {
            (true, true) => line(
                Level::Ok,
                "printer",
                format!("{shown} does not exist yet; created at the first receipt"),
            ),
            (true, false) => line(
                Level::Fail,
                "printer",
                format!(
                    "{} is not writable: coupond cannot create {shown}",
                    dir.display()
                ),
            ),
            (false, _) => line(
                Level::Fail,
                "printer",
                format!("directory {} does not exist: fix --printer", dir.display()),
            ),
        };
    }
    let meta = std::fs::metadata(path);
    let is_fifo = meta.as_ref().is_ok_and(|m| m.file_type().is_fifo());
    if !writable(path) {
        return line(
            Level::Fail,
            "printer",
            format!("{shown} is not writable by this user: the daemon's user needs its group (lp for USB, dialout for serial)"),
        );
    }
    if is_fifo {
        return line(
            Level::Ok,
            "printer",
            format!("{shown} is a FIFO (a reader takes the receipts)"),
        );
    }
    if meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        return match f {
            Err(e) => line(
                Level::Fail,
                "printer",
                format!("{shown}: {e} (is the printer on?)"),
            ),
            Ok(f) => match printer::lp_trouble(&f).filter(|_| status != PrinterStatus::Off) {
                Some(trouble) => line(
                    Level::Warn,
                    "printer",
                    format!("{shown}: the printer is {trouble}"),
                ),
                None => line(
                    Level::Ok,
                    "printer",
                    format!("{shown} is a device and writable"),
                ),
            },
        };
    }
    line(Level::Ok, "printer", format!("{shown} is a writable file"))
}
