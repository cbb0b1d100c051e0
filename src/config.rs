//! Command line and environment, parsed once into validated configurations.
//!
//! Every flag is declared once in a [`Flag`] table: its name, its `COUPOND_<FLAG>`
//! environment variable (for systemd's `EnvironmentFile=`), its default and its help line,
//! so `--help`, parsing and the README cannot drift apart. A command-line flag beats its
//! variable, which beats the default. The rest of the program only sees the validated
//! structs ([`ServeConfig`], [`SendConfig`], ...); a bad value stops start-up with one
//! [`ConfigError`] line that names the flag or variable to fix.
//!
//! Secrets are never flags (a command line is visible to every user of the box): see
//! [`load_secrets`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::coupon::Action;
use crate::intake::Apps;

/// A start-up error: one line that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// One flag: `--name META`, or a switch when `meta` is empty.
pub struct Flag {
    pub name: &'static str,
    pub meta: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// A subcommand and its flags.
pub struct Command {
    pub name: &'static str,
    pub about: &'static str,
    pub positional: Option<&'static str>,
    pub flags: &'static [Flag],
}

const fn flag(
    name: &'static str,
    meta: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        meta,
        default,
        help,
    }
}

const DB: Flag = flag("db", "FILE", Some("./coupond.db"), "SQLite database file");
const CLIENT_KEY: Flag = flag(
    "client-key",
    "KEY",
    None,
    "Douyin app id (client_key) to accept; several as KEY1,KEY2 (required)",
);
const SECRET_FILE: Flag = flag(
    "secret-file",
    "FILE",
    None,
    "file holding the app's client secret, one per line (new first, then old, during a \
     rotation); else $CREDENTIALS_DIRECTORY/client_secret, else $COUPOND_CLIENT_SECRET",
);
const LOG_LEVEL: Flag = flag(
    "log-level",
    "LEVEL",
    Some("info"),
    "error, warn, info, debug or trace",
);

pub const SERVE: Command = Command {
    name: "serve",
    about: "Receive Douyin coupon webhooks, record them in SQLite and tell the store",
    positional: None,
    flags: &[
        flag(
            "listen",
            "ADDR",
            Some("127.0.0.1:8080"),
            "webhook listen address (IP:PORT)",
        ),
        flag("path", "PATH", Some("/douyin/webhook"), "webhook URL path"),
        DB,
        CLIENT_KEY,
        SECRET_FILE,
        flag(
            "max-body",
            "BYTES",
            Some("64KiB"),
            "largest accepted request body (suffixes K, KiB, M, MiB); larger ones get 413 unread",
        ),
        PRINTER,
        flag("paper-width", "MM", Some("58"), "receipt paper: 58 (32 columns) or 80 (48 columns)"),
        flag("store-name", "NAME", None, "store name printed at the top of each receipt"),
        flag(
            "printer-status",
            "on|off",
            Some("on"),
            "ask a tcp:// printer for paper and online status (DLE EOT) around each receipt",
        ),
        DISPLAY_LISTEN,
        EXEC,
        flag("exec-timeout", "SECS", Some("30"), "time limit for one --exec run"),
        PRINT_ACTIONS,
        flag(
            "output-attempts",
            "N",
            Some("60"),
            "delivery attempts per output before it is marked failed (backoff 1 s doubling to 60 s)",
        ),
        flag(
            "keep-days",
            "DAYS",
            Some("90"),
            "prune message bodies, delivered outputs and rejects older than this (0: keep all); \
             coupon state and pending work are never pruned",
        ),
        LOG_LEVEL,
    ],
};

const PRINTER: Flag = flag(
    "printer",
    "DEST",
    None,
    "ESC/POS receipt printer: a device or file (/dev/usb/lp0) or tcp://HOST[:PORT] (port 9100)",
);
const DISPLAY_LISTEN: Flag = flag(
    "display-listen",
    "ADDR",
    None,
    "serve the counter display page on this IP:PORT (keep it on loopback or the shop LAN)",
);
const EXEC: Flag = flag(
    "exec",
    "CMD",
    None,
    "run CMD (with /bin/sh -c) for each applied message, its JSON on stdin; exit 0 = done",
);

pub const REVERIFY: Command = Command {
    name: "reverify",
    about: "Re-check rejected pushes with the current secrets and record those that now verify",
    positional: None,
    flags: &[
        DB,
        CLIENT_KEY,
        SECRET_FILE,
        PRINTER,
        DISPLAY_LISTEN,
        EXEC,
        PRINT_ACTIONS,
    ],
};

const PRINT_ACTIONS: Flag = flag(
    "print-actions",
    "LIST",
    Some("verify,verify_cancel,refund_success"),
    "actions that produce output (receipt, display, exec, log)",
);

pub const REPRINT: Command = Command {
    name: "reprint",
    about:
        "Queue a reprint (marked 重打) of a coupon's latest receipt; the running daemon prints it",
    positional: Some("CERTIFICATE_ID"),
    flags: &[DB],
};

pub const STATUS: Command = Command {
    name: "status",
    about: "Summarise the database: coupons, messages, outputs, rejects (read-only)",
    positional: None,
    flags: &[DB],
};

pub const SEND: Command = Command {
    name: "send",
    about: "Push one signed coupon message the way Douyin does, to test a box and its tunnel",
    positional: None,
    flags: &[
        flag(
            "url",
            "URL",
            None,
            "webhook URL, http://HOST[:PORT]/PATH (required)",
        ),
        CLIENT_KEY,
        SECRET_FILE,
        flag(
            "action",
            "ACTION",
            Some("verify"),
            "verify, verify_cancel or refund_success",
        ),
        flag(
            "certificate-id",
            "ID",
            None,
            "coupon (certificate) id (required)",
        ),
        flag("order-id", "ID", None, "order id"),
        flag("code", "CODE", None, "coupon code (third-party codes only)"),
        flag("account-id", "ID", None, "merchant account id"),
        flag(
            "msg-time",
            "SECS",
            None,
            "event time, seconds since the epoch [default: now]",
        ),
        flag(
            "log-id",
            "ID",
            None,
            "Douyin trace id [default: a fresh one]",
        ),
        flag(
            "challenge",
            "N",
            None,
            "send a verify_webhook URL check with this challenge instead",
        ),
    ],
};

pub const COMMANDS: &[&Command] = &[&SERVE, &STATUS, &SEND, &REPRINT, &REVERIFY];

/// Where a value came from, to name it in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    Default,
}

/// Parsed but not yet validated values of one command.
pub struct Args {
    command: &'static Command,
    values: HashMap<&'static str, (String, Source)>,
    pub positional: Vec<String>,
}

/// What the user asked for.
pub enum Parsed {
    Run(Args),
    Help(String),
}

/// The environment variable of a flag: `COUPOND_` and the name in upper case.
pub fn env_name(flag: &str) -> String {
    format!("COUPOND_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Parses `argv` (without the program and command names) for `command`, reading the
/// environment through `env`.
pub fn parse(
    command: &'static Command,
    argv: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let mut values = HashMap::new();
    let mut positional = Vec::new();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help(help(command)));
        }
        let Some(long) = arg.strip_prefix("--") else {
            if command.positional.is_some() && positional.is_empty() {
                positional.push(arg.clone());
                continue;
            }
            return err(format!(
                "unexpected argument {arg:?} for 'coupond {}' (see coupond {} --help)",
                command.name, command.name
            ));
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        let Some(f) = command.flags.iter().find(|f| f.name == name) else {
            return err(format!(
                "unknown flag --{name} for 'coupond {}' (see coupond {} --help)",
                command.name, command.name
            ));
        };
        let value = match (inline, f.meta.is_empty()) {
            (Some(v), _) => v,
            (None, true) => "true".into(),
            (None, false) => match it.next() {
                Some(v) => v.clone(),
                None => return err(format!("--{name} needs a value ({})", f.meta)),
            },
        };
        values.insert(f.name, (value, Source::Flag));
    }
    for f in command.flags {
        if values.contains_key(f.name) {
            continue;
        }
        if let Some(v) = env(&env_name(f.name)).filter(|v| !v.is_empty()) {
            values.insert(f.name, (v, Source::Env));
        } else if let Some(d) = f.default {
            values.insert(f.name, (d.to_string(), Source::Default));
        }
    }
    if let (Some(p), true) = (command.positional, positional.is_empty()) {
        return err(format!("'coupond {}' needs {p}", command.name));
    }
    Ok(Parsed::Run(Args {
        command,
        values,
        positional,
    }))
}

/// `--help` for one command, generated from its flag table.
pub fn help(command: &Command) -> String {
    let mut s = format!(
        "{}\n\nUsage: coupond {} [OPTIONS]{}\n\nOptions:\n",
        command.about,
        command.name,
        command
            .positional
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    );
    for f in command.flags {
        let left = if f.meta.is_empty() {
            format!("--{}", f.name)
        } else {
            format!("--{} {}", f.name, f.meta)
        };
        s += &format!("  {left:<24} {}\n", f.help);
        let mut extra = format!("{:27}[env: {}]", "", env_name(f.name));
        if let Some(d) = f.default {
            extra += &format!(" [default: {d}]");
        }
        s += &extra;
        s.push('\n');
    }
    s += &format!("  {:<24} print this help\n", "-h, --help");
    s
}

/// The top-level `--help`.
pub fn top_help() -> String {
    let mut s = String::from(
        "coupond: receives Douyin life-services coupon webhooks (核销 / 撤销核销 / 退款), \
         records them durably in SQLite and tells the store.\n\nUsage: coupond COMMAND [OPTIONS]\n\nCommands:\n",
    );
    for c in COMMANDS {
        s += &format!("  {:<10} {}\n", c.name, c.about);
    }
    s += "\nEvery flag can also be set as COUPOND_<FLAG> (e.g. COUPOND_DB=/var/lib/coupond/coupond.db).\n\
          `coupond COMMAND --help` lists a command's flags.\n";
    s
}

impl Args {
    /// The value, and how to name it in an error.
    fn get(&self, name: &str) -> Option<(&str, String)> {
        let (v, src) = self.values.get(name)?;
        let label = match src {
            Source::Env => env_name(name),
            Source::Flag | Source::Default => format!("--{name}"),
        };
        Some((v.as_str(), label))
    }

    fn opt(&self, name: &str) -> Option<String> {
        self.get(name).map(|(v, _)| v.to_string())
    }

    fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.opt(name).ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> ConfigError {
        ConfigError(format!(
            "'coupond {}' needs --{name} (or {})",
            self.command.name,
            env_name(name)
        ))
    }

    /// Parses a value with `parse`, whose error says what a good value looks like.
    fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some((v, label)) => parse(v)
                .map(Some)
                .map_err(|why| ConfigError(format!("invalid {label} {v:?}: {why}"))),
        }
    }

    fn db(&self) -> PathBuf {
        PathBuf::from(self.opt("db").unwrap_or_else(|| "./coupond.db".into()))
    }

    fn client_keys(&self) -> Result<Vec<String>, ConfigError> {
        let keys = self.parsed("client-key", |v| {
            let keys: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
            if keys.is_empty() {
                Err("want the Douyin app id (client_key)".into())
            } else {
                Ok(keys)
            }
        })?;
        keys.ok_or_else(|| self.missing("client-key"))
    }

    fn log_level(&self) -> Result<LevelFilter, ConfigError> {
        Ok(self
            .parsed("log-level", |v| {
                v.parse::<LevelFilter>()
                    .map_err(|_| "want error, warn, info, debug or trace".into())
            })?
            .unwrap_or(LevelFilter::Info))
    }
}

/// `coupond serve`, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub db: PathBuf,
    pub apps: Apps,
    pub max_body: usize,
    pub log_level: LevelFilter,
    pub printer: Option<PrinterDest>,
    pub paper_columns: usize,
    pub store_name: Option<String>,
    pub printer_status: bool,
    pub display_listen: Option<SocketAddr>,
    pub exec: Option<String>,
    pub exec_timeout: Duration,
    pub print_actions: Vec<Action>,
    pub output_attempts: i64,
    /// `None`: keep everything.
    pub keep_days: Option<u32>,
}

/// Where receipts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterDest {
    /// A raw TCP port (JetDirect / port 9100).
    Tcp { host: String, port: u16 },
    /// A device (`/dev/usb/lp0`, `/dev/ttyUSB0`), a FIFO or a file, written as is.
    Path(PathBuf),
}

impl fmt::Display for PrinterDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterDest::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            PrinterDest::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl PrinterDest {
    pub fn parse(v: &str) -> Result<PrinterDest, String> {
        if let Some(rest) = v.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                    (h, p.parse().map_err(|_| format!("bad port {p:?}"))?)
                }
                _ => (rest, 9100),
            };
            if host.is_empty() {
                return Err("want tcp://HOST[:PORT]".into());
            }
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            return Ok(PrinterDest::Tcp { host, port });
        }
        if v.contains("://") {
            return Err("want a device path such as /dev/usb/lp0, or tcp://HOST[:PORT]".into());
        }
        if !v.starts_with('/') {
            return Err("want an absolute path such as /dev/usb/lp0, or tcp://HOST[:PORT]".into());
        }
        Ok(PrinterDest::Path(PathBuf::from(v)))
    }
}

/// `verify,verify_cancel,refund_success` (any subset, comma separated).
pub fn parse_actions(v: &str) -> Result<Vec<Action>, String> {
    let mut actions = Vec::new();
    for word in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let a = Action::parse(word)
            .ok_or_else(|| format!("{word:?} is not verify, verify_cancel or refund_success"))?;
        if !actions.contains(&a) {
            actions.push(a);
        }
    }
    Ok(actions)
}

fn parse_on_off(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err("want on or off".into()),
    }
}

fn parse_positive(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("want a whole number above 0".into()),
    }
}

impl ServeConfig {
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = args.parsed("listen", parse_addr)?.expect("has a default");
        let path = args
            .parsed("path", |v| {
                if v.starts_with('/') && !v.contains(char::is_whitespace) {
                    Ok(v.to_string())
                } else {
                    Err("want a URL path starting with /, such as /douyin/webhook".into())
                }
            })?
            .expect("has a default");
        let max_body = args.parsed("max-body", parse_size)?.expect("has a default");
        let client_keys = args.client_keys()?;
        let secrets = load_secrets(args.opt("secret-file").as_deref(), env)?;
        let display_listen = args.parsed("display-listen", parse_addr)?;
        if display_listen.is_some_and(|d| d.port() != 0 && d == listen) {
            return err(
                "--display-listen must differ from --listen: the webhook port is reachable \
                 through the tunnel, the display must not be",
            );
        }
        let exec = args.parsed("exec", |v| {
            if v.trim().is_empty() {
                Err("want a command".to_string())
            } else {
                Ok(v.to_string())
            }
        })?;
        Ok(ServeConfig {
            printer: args.parsed("printer", PrinterDest::parse)?,
            paper_columns: args
                .parsed("paper-width", |v| match v.trim_end_matches("mm") {
                    "58" => Ok(32),
                    "80" => Ok(48),
                    _ => Err("want 58 or 80 (millimetres)".to_string()),
                })?
                .unwrap_or(32),
            store_name: args.opt("store-name").filter(|s| !s.trim().is_empty()),
            printer_status: args.parsed("printer-status", parse_on_off)?.unwrap_or(true),
            display_listen,
            exec,
            exec_timeout: Duration::from_secs(
                args.parsed("exec-timeout", parse_positive)?.unwrap_or(30),
            ),
            print_actions: args
                .parsed("print-actions", parse_actions)?
                .unwrap_or_default(),
            output_attempts: args
                .parsed("output-attempts", parse_positive)?
                .unwrap_or(60) as i64,
            keep_days: args
                .parsed("keep-days", |v| {
                    v.parse::<u32>()
                        .map_err(|_| "want a whole number of days (0 keeps everything)".to_string())
                })?
                .filter(|d| *d > 0),
            listen,
            path,
            db: args.db(),
            apps: Apps {
                client_keys,
                secrets,
            },
            max_body,
            log_level: args.log_level()?,
        })
    }
}

/// `coupond reprint`, validated.
#[derive(Debug, Clone)]
pub struct ReprintConfig {
    pub db: PathBuf,
    pub certificate_id: String,
}

impl ReprintConfig {
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        Ok(ReprintConfig {
            db: args.db(),
            certificate_id: args.positional[0].clone(),
        })
    }
}

/// `coupond reverify`, validated.
#[derive(Debug, Clone)]
pub struct ReverifyConfig {
    pub db: PathBuf,
    pub apps: Apps,
    /// The sinks the daemon has (from the same settings), for the recovered messages'
    /// output jobs.
    pub sinks: Vec<&'static str>,
    pub print_actions: Vec<Action>,
}

impl ReverifyConfig {
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        args.parsed("printer", PrinterDest::parse)?;
        args.parsed("display-listen", parse_addr)?;
        Ok(ReverifyConfig {
            db: args.db(),
            apps: Apps {
                client_keys: args.client_keys()?,
                secrets: load_secrets(args.opt("secret-file").as_deref(), env)?,
            },
            sinks: crate::sinks::names(
                args.opt("printer").is_some(),
                args.opt("display-listen").is_some(),
                args.opt("exec").is_some(),
            ),
            print_actions: args
                .parsed("print-actions", parse_actions)?
                .unwrap_or_default(),
        })
    }
}

/// `coupond status`, validated.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub db: PathBuf,
}

impl StatusConfig {
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        Ok(StatusConfig { db: args.db() })
    }
}

/// `coupond send`, validated.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub url: Url,
    pub client_key: String,
    pub secret: String,
    pub action: Action,
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    pub msg_time: Option<i64>,
    pub log_id: Option<String>,
    pub challenge: Option<i64>,
    /// Per attempt, as Douyin: 3 s.
    pub timeout: Duration,
    /// After the first attempt, as Douyin: 3, 500 ms apart.
    pub retries: u32,
    pub retry_delay: Duration,
}

impl SendConfig {
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let url = args
            .parsed("url", Url::parse)?
            .ok_or_else(|| args.missing("url"))?;
        let challenge = args.parsed("challenge", |v| {
            v.parse::<i64>()
                .map_err(|_| "want a whole number".to_string())
        })?;
        let certificate_id = match challenge {
            Some(_) => args.opt("certificate-id").unwrap_or_default(),
            None => args.required("certificate-id")?,
        };
        let client_keys = args.client_keys()?;
        let secrets = load_secrets(args.opt("secret-file").as_deref(), env)?;
        Ok(SendConfig {
            url,
            client_key: client_keys[0].clone(),
            secret: secrets[0].clone(),
            action: args
                .parsed("action", |v| {
                    Action::parse(v)
                        .ok_or_else(|| "want verify, verify_cancel or refund_success".into())
                })?
                .expect("has a default"),
            certificate_id,
            order_id: args.opt("order-id"),
            code: args.opt("code"),
            account_id: args.opt("account-id"),
            msg_time: args.parsed("msg-time", |v| {
                v.parse::<i64>()
                    .map_err(|_| "want seconds since the epoch".to_string())
            })?,
            log_id: args.opt("log-id"),
            challenge,
            timeout: Duration::from_secs(3),
            retries: 3,
            retry_delay: Duration::from_millis(500),
        })
    }
}

/// An `http://` URL, split for a raw HTTP/1.1 client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(
                "https is not supported: point --url at the box or at the tunnel's \
                        plain-HTTP entry (http://HOST:PORT/PATH)"
                    .into(),
            );
        } else {
            return Err("want http://HOST[:PORT]/PATH".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Url {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "want IP:PORT, such as 127.0.0.1:8080 or 0.0.0.0:8080".into())
}

/// `65536`, `64K`, `64KiB`, `1M`, `1MiB` (binary multiples), within 1 KiB..16 MiB.
pub fn parse_size(v: &str) -> Result<usize, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err("want a size such as 65536, 64KiB or 1MiB".into()),
    };
    let n: usize = num
        .parse()
        .map_err(|_| "want a size such as 65536, 64KiB or 1MiB".to_string())?;
    let bytes = n.saturating_mul(mult);
    if !(1024..=16 * 1024 * 1024).contains(&bytes) {
        return Err("want between 1KiB and 16MiB".into());
    }
    Ok(bytes)
}

/// The client secrets, in SPEC §7's order: `--secret-file` (one per line; blank lines and
/// `#` comments skipped), else `$CREDENTIALS_DIRECTORY/client_secret` (systemd
/// `LoadCredential=`), else `$COUPOND_CLIENT_SECRET`.
pub fn load_secrets(
    secret_file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    if let Some(file) = secret_file {
        return read_secret_file(Path::new(file), "--secret-file");
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join("client_secret");
        if path.exists() {
            return read_secret_file(&path, "the systemd credential");
        }
    }
    if let Some(v) = env("COUPOND_CLIENT_SECRET").filter(|v| !v.trim().is_empty()) {
        return Ok(secret_lines(&v));
    }
    err(
        "no client secret: put it in a file (one per line) and pass --secret-file FILE, \
         or use systemd LoadCredential=client_secret:FILE, or set COUPOND_CLIENT_SECRET",
    )
}

fn read_secret_file(path: &Path, what: &str) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {what} {}: {e}", path.display())))?;
    let secrets = secret_lines(&text);
    if secrets.is_empty() {
        return err(format!(
            "{what} {} holds no secret (want the app's client secret, one per line)",
            path.display()
        ));
    }
    Ok(secrets)
}

fn secret_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn args(
        cmd: &'static Command,
        argv: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Args, ConfigError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        match parse(cmd, &argv, env)? {
            Parsed::Run(a) => Ok(a),
            Parsed::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn flags_beat_environment_beat_defaults() {
        let env = |k: &str| match k {
            "COUPOND_LISTEN" => Some("0.0.0.0:9000".to_string()),
            "COUPOND_PATH" => Some("/from-env".to_string()),
            "COUPOND_CLIENT_SECRET" => Some("s".to_string()),
            _ => None,
        };
        let a = args(&SERVE, &["--path=/hook", "--client-key", "k1,k2"], &env).unwrap();
        let c = ServeConfig::from_args(&a, &env).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.path, "/hook");
        assert_eq!(c.apps.client_keys, ["k1", "k2"]);
        assert_eq!(c.apps.secrets, ["s"]);
        assert_eq!(c.max_body, 65536);
        assert_eq!(c.db, PathBuf::from("./coupond.db"));
    }

    #[test]
    fn bad_settings_name_what_to_fix() {
        let secret = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "s".to_string());
        let cases: &[(&[&str], &str)] = &[
            (
                &["--listen", "8080", "--client-key", "k"],
                "invalid --listen \"8080\"",
            ),
            (
                &["--client-key", "k", "--max-body", "lots"],
                "invalid --max-body",
            ),
            (
                &["--client-key", "k", "--max-body", "1"],
                "between 1KiB and 16MiB",
            ),
            (&["--client-key", "k", "--path", "hook"], "invalid --path"),
            (&[], "needs --client-key (or COUPOND_CLIENT_KEY)"),
            (
                &["--client-key", "k", "--secret-file", "/nonexistent/x"],
                "cannot read --secret-file /nonexistent/x",
            ),
            (
                &["--client-key", "k", "--log-level", "loud"],
                "invalid --log-level",
            ),
        ];
        for (argv, want) in cases {
            let got = args(&SERVE, argv, &secret).and_then(|a| ServeConfig::from_args(&a, &secret));
            let e = got.expect_err(&format!("{argv:?}")).0;
            assert!(e.contains(want), "{argv:?}: {e}");
        }
        let e = args(&SERVE, &["--bogus"], &no_env).err().unwrap().0;
        assert!(e.contains("unknown flag --bogus"), "{e}");
        let env_bad = |k: &str| (k == "COUPOND_LISTEN").then(|| "nope".to_string());
        let e = args(&SERVE, &["--client-key", "k"], &env_bad)
            .and_then(|a| ServeConfig::from_args(&a, &env_bad))
            .err()
            .unwrap()
            .0;
        assert!(e.starts_with("invalid COUPOND_LISTEN"), "{e}");
        let e = args(&SERVE, &["--client-key", "k"], &no_env)
            .and_then(|a| ServeConfig::from_args(&a, &no_env))
            .err()
            .unwrap()
            .0;
        assert!(e.starts_with("no client secret"), "{e}");
    }

    #[test]
    fn secrets_come_from_file_then_credentials_then_environment() {
        let dir = std::env::temp_dir().join(format!("coupond-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        std::fs::write(&file, "# rotated 2026-11\nnew-one\n\n  old-one  \n").unwrap();
        std::fs::write(dir.join("client_secret"), "from-credential\n").unwrap();
        let d = dir.to_string_lossy().to_string();
        let env = move |k: &str| match k {
            "CREDENTIALS_DIRECTORY" => Some(d.clone()),
            "COUPOND_CLIENT_SECRET" => Some("from-env".to_string()),
            _ => None,
        };
        let f = file.to_string_lossy().to_string();
        assert_eq!(
            load_secrets(Some(&f), &env).unwrap(),
            ["new-one", "old-one"]
        );
        assert_eq!(load_secrets(None, &env).unwrap(), ["from-credential"]);
        let env_only = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "from-env".to_string());
        assert_eq!(load_secrets(None, &env_only).unwrap(), ["from-env"]);
        std::fs::write(&file, "\n# nothing\n").unwrap();
        assert!(load_secrets(Some(&f), &env)
            .unwrap_err()
            .0
            .contains("holds no secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_settings() {
        let secret = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "s".to_string());
        let serve = |argv: &[&str]| {
            let mut all = vec!["--client-key", "k"];
            all.extend_from_slice(argv);
            args(&SERVE, &all, &secret).and_then(|a| ServeConfig::from_args(&a, &secret))
        };
        let c = serve(&[]).unwrap();
        assert_eq!(
            (c.printer.clone(), c.paper_columns, c.printer_status),
            (None, 32, true)
        );
        assert_eq!(c.print_actions, Action::ALL);
        assert_eq!((c.output_attempts, c.exec_timeout.as_secs()), (60, 30));
        let c = serve(&[
            "--printer",
            "tcp://10.0.0.5",
            "--paper-width",
            "80mm",
            "--print-actions",
            "verify, refund_success",
        ])
        .unwrap();
        assert_eq!(
            c.printer,
            Some(PrinterDest::Tcp {
                host: "10.0.0.5".into(),
                port: 9100
            })
        );
        assert_eq!(c.paper_columns, 48);
        assert_eq!(c.print_actions, [Action::Verify, Action::RefundSuccess]);
        let c = serve(&["--printer", "/dev/usb/lp0", "--printer-status", "off"]).unwrap();
        assert_eq!(c.printer, Some(PrinterDest::Path("/dev/usb/lp0".into())));
        assert!(!c.printer_status);
        assert_eq!(
            PrinterDest::parse("tcp://printer.local:9101"),
            Ok(PrinterDest::Tcp {
                host: "printer.local".into(),
                port: 9101
            })
        );
        for (argv, want) in [
            (&["--printer", "lp0"][..], "invalid --printer"),
            (&["--printer", "usb://x"][..], "invalid --printer"),
            (&["--paper-width", "70"][..], "invalid --paper-width"),
            (
                &["--print-actions", "verify,use"][..],
                "invalid --print-actions",
            ),
            (
                &["--display-listen", "127.0.0.1:8080"][..],
                "--display-listen must differ",
            ),
            (&["--exec-timeout", "0"][..], "invalid --exec-timeout"),
        ] {
            let e = serve(argv).expect_err(&format!("{argv:?}")).0;
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }

    #[test]
    fn sizes_and_urls() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("64Q").is_err());
        let u = Url::parse("http://127.0.0.1:8080/douyin/webhook").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/douyin/webhook")
        );
        assert_eq!(Url::parse("http://box.example").unwrap().port, 80);
        assert_eq!(
            Url::parse("http://[::1]:81/x").unwrap().authority(),
            "[::1]:81"
        );
        assert!(Url::parse("https://x/y")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(Url::parse("ftp://x").is_err());
    }

    #[test]
    fn help_lists_every_flag_with_its_variable() {
        for c in COMMANDS {
            let h = help(c);
            for f in c.flags {
                assert!(h.contains(&format!("--{}", f.name)), "{}", f.name);
                assert!(h.contains(&env_name(f.name)), "{}", f.name);
            }
        }
    }
}
