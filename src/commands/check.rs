//! `coupond check`: the installer's first command (SPEC §7). Checks everything `serve`
//! would use with the same settings, one line each (`ok`, `warn` or `FAIL` with what to
//! do), and changes nothing: the database is not created or migrated, no port is held,
//! no receipt is printed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Args, ServeConfig};
use crate::douyin;
use crate::sinks::printer::{self, PrinterDest, PrinterStatus};
use crate::store::{Store, SCHEMA_VERSION};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
pub struct Line {
    pub level: Level,
    pub what: &'static str,
    pub text: String,
}

fn line(level: Level, what: &'static str, text: impl Into<String>) -> Line {
    Line {
        level,
        what,
        text: text.into(),
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level:<5} {:<9} {}", self.what, self.text)
    }
}

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
    out.push(line(
        Level::Ok,
        "settings",
        format!("{file}; client key(s) {}", cfg.apps.client_keys.join(",")),
    ));
    out.push(secrets(args, env));
    out.push(database(&cfg.db));
    match cfg.listen {
        Some(addr) => out.push(port("listen", addr, Some(&cfg.path))),
        None => out.push(line(
            Level::Ok,
            "listen",
            "off: pushes come from --mqtt-source only",
        )),
    }
    out.push(printer(&cfg));
    if let Some(addr) = cfg.display_listen {
        out.push(port("display", addr, None));
    }
    out.push(details(&cfg, args, env));
    out
}

/// Whether the details lookup (SPEC §13) can work: a token can be had for the app. One
/// token call, nothing else (no query, nothing printed or stored).
fn details(cfg: &ServeConfig, args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Line {
    let Some(c) = &cfg.catchup else {
        return line(
            Level::Ok,
            "details",
            "off (no --account-id): receipts show the coupon's ids, not what was bought",
        );
    };
    if c.details.is_none() {
        return line(
            Level::Ok,
            "details",
            "off (--details off): receipts show the coupon's ids",
        );
    }
    let secrets = match config::settings::secrets(args, env) {
        Ok(s) => s,
        Err(e) => {
            return line(
                Level::Fail,
                "details",
                format!("no secret for a token: {e}"),
            )
        }
    };
    let tls = match c.api.https {
        true => match crate::tls::client_config(c.ca.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => return line(Level::Fail, "details", format!("invalid --douyin-ca: {e}")),
        },
        false => None,
    };
    let app = douyin::App {
        client_key: cfg.apps.client_keys[0].clone(),
        secrets,
    };
    let mut session = douyin::Session::new(douyin::Client::new(c.api.clone(), tls), app);
    let token = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| douyin::ApiError::Network(e.to_string()))
        .and_then(|rt| rt.block_on(session.token()));
    match token {
        Ok(_) => line(
            Level::Ok,
            "details",
            format!(
                "on: a token for app {} can be had from {}; Douyin must also let the app \
                 query the merchant's coupons (life.capacity.fulfilment, authorised by the \
                 merchant)",
                cfg.apps.client_keys[0], c.api
            ),
        ),
        // Douyin refused (a wrong secret, an app without the capability): fix it.
        Err(douyin::ApiError::NoToken { why, .. })
            if matches!(*why, douyin::ApiError::Douyin { .. }) =>
        {
            line(
                Level::Fail,
                "details",
                format!("Douyin gives no token: {why}; catch-up and details cannot work"),
            )
        }
        Err(e) => line(
            Level::Warn,
            "details",
            format!("cannot reach Douyin for a token now: {e}; the daemon keeps trying"),
        ),
    }
}

fn secrets(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Line {
    let secrets = match config::settings::secrets(args, env) {
        Ok(s) => s,
        Err(e) => return line(Level::Fail, "secret", e.to_string()),
    };
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
            format!("{} secret(s) from COUPOND_CLIENT_SECRET", secrets.len()),
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
                "{} secret(s) from {}, but every user of the box can read it: chmod 640 {} \
                 (owner root, group of the daemon's user)",
                secrets.len(),
                file.display(),
                file.display()
            ),
        );
    }
    line(
        Level::Ok,
        "secret",
        format!("{} secret(s) from {}", secrets.len(), file.display()),
    )
}

/// Whether this process may write `path` (`access(2)`: the real user's rights).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a flag.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn database(db: &Path) -> Line {
    let dir = parent(db);
    if !db.exists() {
        if !dir.is_dir() {
            // systemd's StateDirectory= makes /var/lib/coupond at the first start.
            if dir.starts_with("/var/lib/coupond") {
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
    if !writable(db) || !writable(&dir) {
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

/// A port `serve` would bind: free, or held by a running coupond.
fn port(what: &'static str, addr: SocketAddr, webhook_path: Option<&str>) -> Line {
    let flag = if webhook_path.is_some() {
        "--listen"
    } else {
        "--display-listen"
    };
    match TcpListener::bind(addr) {
        Ok(_) => line(Level::Ok, what, format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if is_coupond(addr, webhook_path) {
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

fn printer(cfg: &ServeConfig) -> Line {
    let receipts = &cfg.outputs.receipts;
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
