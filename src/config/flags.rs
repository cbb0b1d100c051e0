//! The command line's vocabulary: every flag once, its `COUPOND_<FLAG>` variable, its
//! default and its help line; the tokenizer; and `--help`, generated from the same table
//! so that help, parsing and the README (checked by `tests/docs.rs`) cannot drift apart.
//!
//! This layer knows no types. [`parse`] turns `argv` and the outside values (the
//! environment, then the settings file of SPEC §7) into [`Args`]: for each flag of the
//! command, its text and where it came from. The typed, validated settings
//! are built from them once, in [`super::settings`], by naming the flag constants
//! (never a string key), and a flag's default is only ever written here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// One flag: `--name META`, or a switch when `meta` is empty.
pub struct Flag {
    pub name: &'static str,
    pub meta: &'static str,
    /// The default, as it would be typed; parsed by the same code as a typed value.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// Which subcommand a [`Command`] is, for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandId {
    Serve,
    Status,
    Send,
    Reprint,
    Reverify,
    Check,
    PrintTest,
    Report,
    SpeakTest,
}

/// A subcommand and its flags.
pub struct Command {
    pub id: CommandId,
    pub name: &'static str,
    pub about: &'static str,
    pub positional: Option<&'static str>,
    pub flags: &'static [&'static Flag],
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

/// Where the settings file is when `--config` is not given (read only if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/coupond/coupond.env";

// Shared by several commands.
pub const CONFIG: Flag = flag(
    "config",
    "FILE",
    Some(DEFAULT_CONFIG),
    "settings file of COUPOND_<FLAG>=value lines, below flags and environment \
     (the default is read only when it exists)",
);
pub const DB: Flag = flag("db", "FILE", Some("./coupond.db"), "SQLite database file");
pub const CLIENT_KEY: Flag = flag(
    "client-key",
    "KEY",
    None,
    "Douyin app id (client_key) to accept; several as KEY1,KEY2 (required)",
);
pub const SECRET_FILE: Flag = flag(
    "secret-file",
    "FILE",
    None,
    "file holding the app's client secret, one per line (new first, then old, during a \
     rotation); else $CREDENTIALS_DIRECTORY/client_secret, else $COUPOND_CLIENT_SECRET",
);
pub const LOG_LEVEL: Flag = flag(
    "log-level",
    "LEVEL",
    Some("info"),
    "error, warn, info, debug or trace",
);

// `coupond send`'s own words for the shared names: it signs, it does not accept.
pub const SEND_CLIENT_KEY: Flag = flag(
    "client-key",
    "KEY",
    None,
    "Douyin app id (client_key) to put in the signed body (required)",
);
pub const SEND_SECRET_FILE: Flag = flag(
    "secret-file",
    "FILE",
    None,
    "file holding the app's client secret; the first one signs (else \
     $CREDENTIALS_DIRECTORY/client_secret, else $COUPOND_CLIENT_SECRET)",
);
/// `status` and `reprint` only read (or queue in) the daemon's database.
pub const EXISTING_DB: Flag = flag(
    "db",
    "FILE",
    Some("./coupond.db"),
    "the daemon's SQLite database (never created)",
);

// The webhook.
pub const LISTEN: Flag = flag(
    "listen",
    "ADDR",
    Some("127.0.0.1:8080"),
    "webhook listen address (IP:PORT), or off (a store box fed by --mqtt-source only)",
);
pub const PATH: Flag = flag("path", "PATH", Some("/douyin/webhook"), "webhook URL path");
pub const MAX_BODY: Flag = flag(
    "max-body",
    "BYTES",
    Some("64KiB"),
    "largest accepted request body (suffixes K, KiB, M, MiB); larger ones get 413 unread",
);

// The outputs.
pub const PRINTER: Flag = flag(
    "printer",
    "DEST",
    None,
    "ESC/POS receipt printer: a device or file (/dev/usb/lp0) or tcp://HOST[:PORT] (port 9100)",
);
pub const PAPER_WIDTH: Flag = flag(
    "paper-width",
    "MM",
    Some("58"),
    "receipt paper: 58 (32 columns) or 80 (48 columns)",
);
pub const STORE_NAME: Flag = flag(
    "store-name",
    "NAME",
    None,
    "store name printed at the top of each receipt",
);
pub const PRINTER_STATUS: Flag = flag(
    "printer-status",
    "auto|on|off",
    Some("auto"),
    "ask a tcp:// printer for paper and online status (DLE EOT) around each receipt; \
     auto: once it has answered, without asking if it never does",
);
pub const SERIAL_BAUD: Flag = flag(
    "serial-baud",
    "BAUD",
    None,
    "speed of a serial printer (/dev/ttyUSB0, /dev/ttyS0), such as 9600 or 115200 \
     [default: as the port is set]",
);
pub const DISPLAY_LISTEN: Flag = flag(
    "display-listen",
    "ADDR",
    None,
    "serve the counter display page on this IP:PORT (keep it on loopback or the shop LAN)",
);
pub const EXEC: Flag = flag(
    "exec",
    "CMD",
    None,
    "run CMD (with /bin/sh -c) for each applied message, its JSON on stdin; exit 0 = done",
);
pub const EXEC_TIMEOUT: Flag = flag(
    "exec-timeout",
    "SECS",
    Some("30"),
    "time limit for one --exec run",
);
pub const PRINT_ACTIONS: Flag = flag(
    "print-actions",
    "LIST",
    Some("verify,verify_cancel,refund_success"),
    "actions that produce output (receipt, display, exec, log)",
);
// The speaker (SPEC §14).
pub const SPEAKER: Flag = flag(
    "speaker",
    "DEVICE",
    None,
    "say each applied verify aloud (抖音 核销成功 …元) with aplay on this ALSA device, \
     such as plughw:0,0 (needs alsa-utils)",
);
pub const SPEAKER_CMD: Flag = flag(
    "speaker-cmd",
    "CMD",
    None,
    "instead of aplay, run CMD (with /bin/sh -c) with the announcement on stdin, raw \
     16 kHz mono S16LE; exit 0 = said",
);
pub const VOICE: Flag = flag(
    "voice",
    "DIR",
    Some(crate::voice::DEFAULT_DIR),
    "the voice pack: one WAV clip (16 kHz mono 16-bit) per word, such as 9.wav, yuan.wav",
);
pub const SPEAK_ACTIONS: Flag = flag(
    "speak-actions",
    "LIST",
    Some("verify"),
    "actions the speaker says (--print-actions does not apply to it)",
);
pub const AMOUNT: Flag = flag(
    "amount",
    "FEN",
    None,
    "say this amount, in fen (9900 is 99 yuan) [default: no amount]",
);
pub const OUTPUT_ATTEMPTS: Flag = flag(
    "output-attempts",
    "N",
    Some("60"),
    "delivery attempts per output before it is marked failed (backoff 1 s doubling to 60 s)",
);
/// One retention for the daemon that prunes and the report that must not look past it.
const KEEP_DAYS_DEFAULT: &str = "90";
pub const KEEP_DAYS: Flag = flag(
    "keep-days",
    "DAYS",
    Some(KEEP_DAYS_DEFAULT),
    "prune message bodies, delivered outputs and rejects older than this (0: keep all); \
     coupon state and pending work are never pruned",
);
pub const POI_NAMES: Flag = flag(
    "poi-names",
    "ID=NAME,...",
    None,
    "store names for Douyin poi ids, such as 7001=望京店,7002=国贸店: 门店 NAME on \
     receipts and the end-of-day report's lines (else the id)",
);

// The end-of-day report (SPEC §15).
pub const DAY_STARTS: Flag = flag(
    "day-starts",
    "HH:MM",
    Some("00:00"),
    "local time the business day starts; it ends at the same time the next day (a shop \
     open past midnight counts its night with the evening before, e.g. 04:00)",
);
pub const REPORT_AT: Flag = flag(
    "report-at",
    "HH:MM",
    None,
    "print the end-of-day report (日结单) of the business day in progress at this local \
     time every day, once, even across restarts and a printer that was off (needs --printer)",
);
/// `report`'s word for the daemon's retention: a day before it is refused.
pub const REPORT_KEEP_DAYS: Flag = flag(
    "keep-days",
    "DAYS",
    Some(KEEP_DAYS_DEFAULT),
    "the daemon's --keep-days: a day older than that is refused, its messages may be \
     pruned (0: keep all)",
);
pub const DATE: Flag = flag(
    "date",
    "YYYY-MM-DD",
    None,
    "the business day to report [default: the one in progress]",
);
pub const JSON: Flag = flag(
    "json",
    "",
    None,
    "print the report as one JSON object (for scripts) instead of text",
);
pub const PRINT: Flag = flag(
    "print",
    "",
    None,
    "also print it as a receipt: through the running daemon when one runs on the \
     database, else straight to --printer",
);

// Catch-up (SPEC §11).
pub const CATCHUP_ACCOUNT_ID: Flag = flag(
    "account-id",
    "ID",
    None,
    "merchant account (certificate.account_id): enables catch-up, which asks Douyin's \
     verify-record API for coupons whose push never arrived",
);
pub const POI_ID: Flag = flag(
    "poi-id",
    "ID[,ID]",
    None,
    "catch-up: only this store's verifications (Douyin POI ids)",
);
pub const RECONCILE_EVERY: Flag = flag(
    "reconcile-every",
    "DURATION",
    Some("10m"),
    "catch-up: time between sweeps, such as 30s, 10m, 1h (and after a failure, \
     5 s doubling to 10 min)",
);
pub const DOUYIN_API: Flag = flag(
    "douyin-api",
    "URL",
    Some("https://open.douyin.com"),
    "catch-up: Douyin Open Platform (http:// only for a local test server)",
);
pub const DOUYIN_CA: Flag = flag(
    "douyin-ca",
    "FILE",
    None,
    "catch-up: an extra CA certificate (PEM) to trust, for a test or private endpoint",
);
// What was bought (SPEC §13): details from Douyin's certificate query.
pub const DETAILS: Flag = flag(
    "details",
    "on|off",
    None,
    "look each verified coupon up with Douyin's certificate query (deal, amount, store) \
     for the receipt, display, hook and MQTT event; default on with --account-id",
);
pub const DETAILS_WAIT: Flag = flag(
    "details-wait",
    "DURATION",
    Some("3s"),
    "how long a verify's outputs wait for its details after the commit before they go \
     out with what is known (0s: never wait)",
);
// The fleet (SPEC §12): one MQTT broker for headquarters and the store boxes.
pub const MQTT: Flag = flag(
    "mqtt",
    "URL",
    None,
    "publish each applied message to this broker, mqtt://HOST[:PORT] or mqtts:// (TLS), \
     QoS 1 through the outbox, on PREFIX/event/{client_key}/{account_id}",
);
pub const MQTT_FORWARD: Flag = flag(
    "mqtt-forward",
    "",
    None,
    "on a relay: also publish every signed push that came over HTTP to \
     PREFIX/push/{client_key}/{account_id}, for the store boxes (needs --mqtt)",
);
pub const MQTT_SOURCE: Flag = flag(
    "mqtt-source",
    "URL",
    None,
    "on a store box: take the pushes a relay forwarded from this broker, \
     mqtt[s]://HOST[:PORT] (persistent session, acknowledged after the commit)",
);
pub const MQTT_ACCOUNTS: Flag = flag(
    "mqtt-accounts",
    "IDS",
    Some("+"),
    "merchant accounts whose pushes --mqtt-source takes, ID[,ID] (+: every account)",
);
pub const MQTT_TOPIC: Flag = flag("mqtt-topic", "PREFIX", Some("coupond"), "MQTT topic prefix");
pub const MQTT_CLIENT_ID: Flag = flag(
    "mqtt-client-id",
    "ID",
    None,
    "MQTT client id, stable across restarts (the connections add -pub and -sub) \
     [default: coupond- and the start of /etc/machine-id]",
);
pub const MQTT_CA: Flag = flag(
    "mqtt-ca",
    "FILE",
    None,
    "extra CA certificate(s), PEM, to trust for an mqtts:// broker (besides the built-in \
     web-PKI roots)",
);
pub const MQTT_USERNAME: Flag = flag("mqtt-username", "NAME", None, "MQTT user name");
pub const MQTT_PASSWORD_FILE: Flag = flag(
    "mqtt-password-file",
    "FILE",
    None,
    "file holding the MQTT password (its first line); never a flag",
);

// `coupond print-test`.
pub const PRINT_TEST_PRINTER: Flag = flag(
    "printer",
    "DEST",
    None,
    "the printer to test: a device or file (/dev/usb/lp0) or tcp://HOST[:PORT] (required: \
     here or as COUPOND_PRINTER in the settings file)",
);
pub const WAIT: Flag = flag(
    "wait",
    "SECS",
    Some("40"),
    "how long to wait for the running daemon to print it; not printed by then, it is \
     cancelled (it never prints later)",
);

// `coupond send`.
pub const URL: Flag = flag(
    "url",
    "URL",
    None,
    "webhook URL, http://HOST[:PORT]/PATH [default: the daemon's own, from --listen and \
     --path]",
);
pub const SEND_LISTEN: Flag = flag(
    "listen",
    "ADDR",
    Some("127.0.0.1:8080"),
    "the daemon's webhook address, for the URL when --url is not given (on the box: \
     COUPOND_LISTEN in the settings file)",
);
pub const SEND_PATH: Flag = flag(
    "path",
    "PATH",
    Some("/douyin/webhook"),
    "the daemon's webhook path, for the URL when --url is not given, and to explain a 404",
);
pub const ACTION: Flag = flag(
    "action",
    "ACTION",
    Some("verify"),
    "verify, verify_cancel or refund_success",
);
pub const CERTIFICATE_ID: Flag = flag(
    "certificate-id",
    "ID",
    None,
    "coupon (certificate) id [default: a fresh TEST-<millis> id, so each test prints]",
);
pub const ORDER_ID: Flag = flag("order-id", "ID", None, "order id");
pub const CODE: Flag = flag("code", "CODE", None, "coupon code (third-party codes only)");
pub const ACCOUNT_ID: Flag = flag("account-id", "ID", None, "merchant account id");
pub const MSG_TIME: Flag = flag(
    "msg-time",
    "SECS",
    None,
    "event time, seconds since the epoch [default: now]",
);
pub const LOG_ID: Flag = flag(
    "log-id",
    "ID",
    None,
    "Douyin trace id [default: a fresh one]",
);
pub const CHALLENGE: Flag = flag(
    "challenge",
    "N",
    None,
    "send a verify_webhook URL check with this challenge instead",
);

// `coupond check`.
pub const SETTINGS_ONLY: Flag = flag(
    "settings-only",
    "",
    None,
    "check only the settings file and the secrets, as a reload reads them (the unit's \
     ExecReload= runs this before it signals the daemon)",
);

/// `serve`'s settings; `check` takes the same, to check what `serve` would use.
const SERVE_FLAGS: [&Flag; 42] = [
    &CONFIG,
    &LISTEN,
    &PATH,
    &DB,
    &CLIENT_KEY,
    &SECRET_FILE,
    &MAX_BODY,
    &PRINTER,
    &PAPER_WIDTH,
    &STORE_NAME,
    &PRINTER_STATUS,
    &SERIAL_BAUD,
    &DISPLAY_LISTEN,
    &EXEC,
    &EXEC_TIMEOUT,
    &PRINT_ACTIONS,
    &SPEAKER,
    &SPEAKER_CMD,
    &VOICE,
    &SPEAK_ACTIONS,
    &OUTPUT_ATTEMPTS,
    &KEEP_DAYS,
    &POI_NAMES,
    &DAY_STARTS,
    &REPORT_AT,
    &CATCHUP_ACCOUNT_ID,
    &POI_ID,
    &RECONCILE_EVERY,
    &DOUYIN_API,
    &DOUYIN_CA,
    &DETAILS,
    &DETAILS_WAIT,
    &MQTT,
    &MQTT_FORWARD,
    &MQTT_SOURCE,
    &MQTT_ACCOUNTS,
    &MQTT_TOPIC,
    &MQTT_CLIENT_ID,
    &MQTT_CA,
    &MQTT_USERNAME,
    &MQTT_PASSWORD_FILE,
    &LOG_LEVEL,
];

/// `check`'s flags: `serve`'s and its own.
const CHECK_FLAGS: [&Flag; SERVE_FLAGS.len() + 1] = {
    let mut out = [&SETTINGS_ONLY; SERVE_FLAGS.len() + 1];
    let mut i = 0;
    while i < SERVE_FLAGS.len() {
        out[i] = SERVE_FLAGS[i];
        i += 1;
    }
    out
};

pub const SERVE: Command = Command {
    id: CommandId::Serve,
    name: "serve",
    about: "Receive Douyin coupon webhooks, record them in SQLite and tell the store",
    positional: None,
    flags: &SERVE_FLAGS,
};

pub const CHECK: Command = Command {
    id: CommandId::Check,
    name: "check",
    about: "Check everything serve would use (settings, secrets, database, ports, printer, \
            speaker), \
            one line each; exit 1 if anything FAILs",
    positional: None,
    flags: &CHECK_FLAGS,
};

pub const PRINT_TEST: Command = Command {
    id: CommandId::PrintTest,
    name: "print-test",
    about: "Print a test receipt (marked 测试): through the running daemon when one runs on \
            the database, else straight to the printer",
    positional: None,
    flags: &[
        &CONFIG,
        &DB,
        &PRINT_TEST_PRINTER,
        &PAPER_WIDTH,
        &STORE_NAME,
        &PRINTER_STATUS,
        &SERIAL_BAUD,
        &WAIT,
    ],
};

pub const REPORT: Command = Command {
    id: CommandId::Report,
    name: "report",
    about: "The end-of-day report (日结单) of a business day: verifies, cancels, refunds, \
            amounts, deals and stores, as text or JSON, or printed",
    positional: None,
    flags: &[
        &CONFIG,
        &EXISTING_DB,
        &DATE,
        &JSON,
        &PRINT,
        &DAY_STARTS,
        &POI_NAMES,
        &REPORT_KEEP_DAYS,
        &PRINTER,
        &PAPER_WIDTH,
        &STORE_NAME,
        &PRINTER_STATUS,
        &SERIAL_BAUD,
        &WAIT,
    ],
};

pub const SPEAK_TEST: Command = Command {
    id: CommandId::SpeakTest,
    name: "speak-test",
    about: "Say a test announcement (测试 抖音 核销成功 [AMOUNT 元]): through the running \
            daemon when one runs on the database, else straight to the speaker",
    positional: None,
    flags: &[&CONFIG, &DB, &SPEAKER, &SPEAKER_CMD, &VOICE, &AMOUNT],
};

pub const STATUS: Command = Command {
    id: CommandId::Status,
    name: "status",
    about: "Summarise the database: coupons, messages, outputs, rejects (read-only)",
    positional: None,
    flags: &[&CONFIG, &EXISTING_DB],
};

pub const SEND: Command = Command {
    id: CommandId::Send,
    name: "send",
    about: "Push one signed coupon message the way Douyin does, to test a box and its tunnel",
    positional: None,
    flags: &[
        &CONFIG,
        &URL,
        &SEND_LISTEN,
        &SEND_PATH,
        &SEND_CLIENT_KEY,
        &SEND_SECRET_FILE,
        &ACTION,
        &CERTIFICATE_ID,
        &ORDER_ID,
        &CODE,
        &ACCOUNT_ID,
        &MSG_TIME,
        &LOG_ID,
        &CHALLENGE,
    ],
};

pub const REPRINT: Command = Command {
    id: CommandId::Reprint,
    name: "reprint",
    about:
        "Queue a reprint (marked 重打) of a coupon's latest receipt; the running daemon prints it",
    positional: Some("CERTIFICATE_ID"),
    flags: &[&CONFIG, &EXISTING_DB],
};

pub const REVERIFY: Command = Command {
    id: CommandId::Reverify,
    name: "reverify",
    about: "Re-check rejected pushes with the current secrets and record those that now verify",
    positional: None,
    // The output flags tell it which sinks the daemon has, for the recovered messages'
    // output jobs.
    flags: &[
        &CONFIG,
        &DB,
        &CLIENT_KEY,
        &SECRET_FILE,
        &PRINTER,
        &DISPLAY_LISTEN,
        &EXEC,
        &PRINT_ACTIONS,
        &MQTT,
        &MQTT_FORWARD,
        &SPEAKER,
        &SPEAKER_CMD,
        &SPEAK_ACTIONS,
    ],
};

pub const COMMANDS: &[&Command] = &[
    &SERVE,
    &CHECK,
    &STATUS,
    &SEND,
    &PRINT_TEST,
    &REPORT,
    &SPEAK_TEST,
    &REPRINT,
    &REVERIFY,
];

/// Where a value came from, to name it in an error. Precedence is the order here, flag
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// The text of each flag a command was given (or defaults to), not yet validated.
pub struct Args {
    command: &'static Command,
    values: HashMap<&'static str, (String, Source)>,
    /// The settings file that was read, if any.
    config: Option<PathBuf>,
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
/// values not given as flags through `env` (by their `COUPOND_<FLAG>` names), then from
/// the settings file (`--config`, `COUPOND_CONFIG`, or [`DEFAULT_CONFIG`] when it exists).
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
            return Err(ConfigError(format!(
                "unexpected argument {arg:?} for 'coupond {}' (see coupond {} --help)",
                command.name, command.name
            )));
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        let Some(f) = command.flags.iter().find(|f| f.name == name) else {
            return Err(ConfigError(format!(
                "unknown flag --{name} for 'coupond {}' (see coupond {} --help)",
                command.name, command.name
            )));
        };
        let value = match (inline, f.meta.is_empty()) {
            (Some(v), _) => v,
            (None, true) => "true".into(),
            (None, false) => match it.next() {
                Some(v) => v.clone(),
                None => return Err(ConfigError(format!("--{name} needs a value ({})", f.meta))),
            },
        };
        values.insert(f.name, (value, Source::Flag));
    }
    let config = settings_file(values.get(CONFIG.name).map(|(v, _)| v.as_str()), env)?;
    let file = match &config {
        Some(path) => read_settings(path)?,
        None => HashMap::new(),
    };
    for f in command.flags {
        if values.contains_key(f.name) {
            continue;
        }
        let name = env_name(f.name);
        if let Some(v) = env(&name).filter(|v| !v.is_empty()) {
            values.insert(f.name, (v, Source::Env));
        } else if let Some(v) = file.get(&name) {
            values.insert(f.name, (v.clone(), Source::File));
        } else if let Some(d) = f.default {
            values.insert(f.name, (d.to_string(), Source::Default));
        }
    }
    if let (Some(p), true) = (command.positional, positional.is_empty()) {
        return Err(ConfigError(format!("'coupond {}' needs {p}", command.name)));
    }
    Ok(Parsed::Run(Args {
        command,
        values,
        config,
        positional,
    }))
}

/// Which settings file to read: the one named by `--config` or `COUPOND_CONFIG` (which
/// must exist), else [`DEFAULT_CONFIG`] if it exists.
fn settings_file(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    let named = flag
        .map(|v| (v.to_string(), "--config".to_string()))
        .or_else(|| {
            env(&env_name(CONFIG.name))
                .filter(|v| !v.is_empty())
                .map(|v| (v, env_name(CONFIG.name)))
        });
    match named {
        Some((path, label)) => {
            let path = PathBuf::from(path);
            std::fs::metadata(&path).map_err(|e| {
                ConfigError(format!(
                    "cannot read {label} {}: {e} (see systemd/coupond.env.example)",
                    path.display()
                ))
            })?;
            Ok(Some(path))
        }
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists())),
    }
}

/// Every `COUPOND_*` name a setting can have, for any command: the settings file is
/// shared, so a name another command takes is not a typo.
fn known_names() -> Vec<String> {
    let mut names: Vec<String> = COMMANDS
        .iter()
        .flat_map(|c| c.flags.iter().map(|f| env_name(f.name)))
        .collect();
    names.push(SECRET_VARIABLE.to_string());
    names.sort();
    names.dedup();
    names
}

/// The environment variable that may hold the client secret (never a flag).
pub const SECRET_VARIABLE: &str = "COUPOND_CLIENT_SECRET";

/// The known name closest to `name` (fewest single-character edits; between two as
/// close, the longer: a dropped letter is the commonest typo, so `COUPOND_PRINTR` is
/// `COUPOND_PRINTER`, not `report`'s `COUPOND_PRINT`).
pub fn closest_name(name: &str) -> String {
    known_names()
        .into_iter()
        .min_by_key(|k| (edit_distance(name, k), std::cmp::Reverse(k.len())))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads a settings file: `COUPOND_NAME=value` lines, `#` comments and blank lines, an
/// optional `export ` and quotes around the value as a shell or systemd's
/// `EnvironmentFile=` would take them. An unknown name is an error naming the closest
/// known one: a typo must not go unnoticed.
pub fn read_settings(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let cannot =
        |e: String| ConfigError(format!("cannot read settings file {}: {e}", path.display()));
    let bytes =
        super::read_capped(path, super::SETTINGS_FILE_CAP).map_err(|e| cannot(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
    parse_settings(&text).map_err(|(line, why)| {
        ConfigError(format!(
            "settings file {} line {line}: {why}",
            path.display()
        ))
    })
}

/// The settings in `text`; an error is the line number and what is wrong with it.
pub fn parse_settings(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let known = known_names();
    let mut out = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            return Err((i + 1, format!("want NAME=value, not {line:?}")));
        };
        let name = name.trim();
        if name == SECRET_VARIABLE {
            return Err((
                i + 1,
                "the client secret does not go in the settings file (every user can read \
                 it): put it in /etc/coupond/client_secret and set COUPOND_SECRET_FILE"
                    .into(),
            ));
        }
        if name == env_name(CONFIG.name) || !known.iter().any(|k| k == name) {
            return Err((
                i + 1,
                format!(
                    "unknown setting {name} (did you mean {}?)",
                    closest_name(name)
                ),
            ));
        }
        out.insert(name.to_string(), unquote(value.trim()).to_string());
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Warnings for `COUPOND_*` variables in the environment that no setting has: only a
/// warning there, since hooks and scripts set variables of their own.
pub fn unknown_environment(names: impl Iterator<Item = String>) -> Vec<String> {
    let known = known_names();
    names
        .filter(|n| n.starts_with("COUPOND_") && !known.contains(n))
        .map(|n| {
            format!(
                "warning: environment variable {n} is no coupond setting and is ignored \
                 (did you mean {}?)",
                closest_name(&n)
            )
        })
        .collect()
}

impl Args {
    /// The command these arguments are for.
    pub fn command(&self) -> &'static Command {
        self.command
    }

    /// The flag's text and how to name it in an error (`--flag` or `COUPOND_FLAG`).
    fn get(&self, flag: &Flag) -> Option<(&str, String)> {
        let (v, src) = self.values.get(flag.name)?;
        let label = match (src, &self.config) {
            (Source::Env, _) => env_name(flag.name),
            (Source::File, Some(path)) => {
                format!("{} in {}", env_name(flag.name), path.display())
            }
            _ => format!("--{}", flag.name),
        };
        Some((v.as_str(), label))
    }

    /// Every flag's text, by `COUPOND_<FLAG>` name, sorted: to tell which settings a
    /// reload found changed.
    pub fn texts(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .values
            .iter()
            .map(|(name, (text, _))| (env_name(name), text.clone()))
            .collect();
        v.sort();
        v
    }

    /// The settings file these arguments read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The flag's text as given, if any.
    pub fn text(&self, flag: &Flag) -> Option<String> {
        self.get(flag).map(|(v, _)| v.to_string())
    }

    /// The flag's value parsed with `parse` (whose error says what a good value looks
    /// like), or `None` when it was not given and has no default.
    pub fn optional<T>(
        &self,
        flag: &Flag,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(flag) {
            None => Ok(None),
            Some((v, label)) => parse(v).map(Some).map_err(|why| invalid(&label, v, &why)),
        }
    }

    /// The flag's value parsed with `parse`: given, or its default. A flag with neither
    /// is a setting the user must supply, and the error says so.
    pub fn value<T>(
        &self,
        flag: &Flag,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.optional(flag, parse)?
            .ok_or_else(|| self.missing(flag))
    }

    /// The error for a setting the command needs and did not get.
    pub fn missing(&self, flag: &Flag) -> ConfigError {
        ConfigError(format!(
            "'coupond {}' needs --{} (or {})",
            self.command.name,
            flag.name,
            env_name(flag.name)
        ))
    }
}

fn invalid(label: &str, value: &str, why: &str) -> ConfigError {
    ConfigError(format!("invalid {label} {value:?}: {why}"))
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
    let left = |f: &Flag| match f.meta {
        "" => format!("--{}", f.name),
        meta => format!("--{} {meta}", f.name),
    };
    // One column for every flag's help, two spaces past the longest flag; the
    // variable and the default always on the line below.
    let width = command
        .flags
        .iter()
        .map(|f| left(f).chars().count())
        .max()
        .unwrap_or(0)
        .max("-h, --help".len());
    for f in command.flags {
        // A default that is no value ("as the port is set") is written in the help.
        let (help, described) = match f.help.split_once(" [default: ") {
            Some((h, d)) => (h, Some(d.trim_end_matches(']'))),
            None => (f.help, None),
        };
        s += &format!("  {:<width$}  {help}\n", left(f));
        let mut extra = format!("  {:width$}  [env: {}]", "", env_name(f.name));
        if let Some(d) = f.default.or(described) {
            extra += &format!(" [default: {d}]");
        }
        s += &extra;
        s.push('\n');
    }
    s += &format!("  {:<width$}  print this help\n", "-h, --help");
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
    s += &format!(
        "\nOptions:\n  {:<14} print this help\n  {:<14} print the version ({})\n",
        "-h, --help",
        "-V, --version",
        env!("CARGO_PKG_VERSION")
    );
    s += &format!(
        "\nEvery flag can also be set as COUPOND_<FLAG> in the environment or in the settings \
         file\n({DEFAULT_CONFIG}, or --config FILE), e.g. COUPOND_DB=/var/lib/coupond/coupond.db.\n\
         `coupond COMMAND --help` lists a command's flags.\n"
    );
    s
}

/// The bash completion script, from the flag table (`packaging/coupond.bash`, kept equal
/// to this by a test): commands, then each command's flags; file names after a flag
/// that takes a file, device or path.
pub fn bash_completion() -> String {
    let mut s = String::from(
        "# bash completion for coupond, generated from its flag table by\n\
         # coupond::config::flags::bash_completion (tests/docs.rs keeps this file equal to it).\n\
         _coupond() {\n\
         \x20   local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n\
         \x20   if [ \"$COMP_CWORD\" -eq 1 ]; then\n",
    );
    let commands: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    s += &format!(
        "        COMPREPLY=($(compgen -W \"{} --help --version\" -- \"$cur\"))\n        return\n    fi\n",
        commands.join(" ")
    );
    let mut file_flags: Vec<String> = COMMANDS
        .iter()
        .flat_map(|c| c.flags.iter())
        .filter(|f| matches!(f.meta, "FILE" | "DEST"))
        .map(|f| format!("--{}", f.name))
        .collect();
    file_flags.sort();
    file_flags.dedup();
    s += &format!(
        "    case \"$prev\" in\n        {})\n            COMPREPLY=($(compgen -f -- \"$cur\"))\n            return ;;\n    esac\n",
        file_flags.join("|")
    );
    s += "    case \"${COMP_WORDS[1]}\" in\n";
    for c in COMMANDS {
        let flags: Vec<String> = c.flags.iter().map(|f| format!("--{}", f.name)).collect();
        s += &format!(
            "        {}) COMPREPLY=($(compgen -W \"{} --help\" -- \"$cur\")) ;;\n",
            c.name,
            flags.join(" ")
        );
    }
    s += "    esac\n}\ncomplete -F _coupond coupond\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn settings_file_lines_and_typos() {
        let s = parse_settings(
            "\u{feff}# a comment\n\nCOUPOND_PRINTER=/dev/usb/lp0\nexport COUPOND_STORE_NAME=\"望京 店\"\n  COUPOND_DB = /var/lib/coupond/coupond.db \n",
        )
        .unwrap();
        assert_eq!(s["COUPOND_PRINTER"], "/dev/usb/lp0");
        assert_eq!(s["COUPOND_STORE_NAME"], "望京 店");
        assert_eq!(s["COUPOND_DB"], "/var/lib/coupond/coupond.db");
        let (line, why) = parse_settings("# x\nCOUPOND_PRINTR=/dev/usb/lp0\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(
            why.contains("unknown setting COUPOND_PRINTR (did you mean COUPOND_PRINTER?)"),
            "{why}"
        );
        let (_, why) = parse_settings("COUPOND_CLIENT_SECRET=x\n").unwrap_err();
        assert!(why.contains("/etc/coupond/client_secret"), "{why}");
        assert!(!why.contains("=x"));
        assert!(parse_settings("COUPOND_LISTEN\n").is_err());
        // A name another command takes is no typo: the file is shared.
        assert!(parse_settings("COUPOND_URL=http://127.0.0.1:8080/douyin/webhook\n").is_ok());
        assert_eq!(
            closest_name("COUPOND_DISPLAY_LISTN"),
            "COUPOND_DISPLAY_LISTEN"
        );
        assert_eq!(closest_name("COUPOND_SECRETFILE"), "COUPOND_SECRET_FILE");
    }

    #[test]
    fn unknown_environment_variables_are_warnings_naming_the_closest() {
        let w = unknown_environment(
            [
                "COUPOND_PRINTR",
                "COUPOND_PRINTER",
                "PATH",
                "COUPOND_CLIENT_SECRET",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("COUPOND_PRINTR") && w[0].contains("COUPOND_PRINTER?"));
    }

    #[test]
    fn help_puts_every_flags_text_in_one_column_and_every_default_beside_its_variable() {
        for c in COMMANDS {
            let h = help(c);
            let options = h.split("Options:\n").nth(1).unwrap();
            // Where the help text starts: past the flag and the spaces after it.
            let column = |l: &str| {
                let end = 2 + l[2..].find("  ").unwrap();
                end + l[end..].len() - l[end..].trim_start().len()
            };
            let flags: Vec<&str> = options.lines().filter(|l| l.starts_with("  -")).collect();
            let want = column(flags[0]);
            for l in &flags {
                assert_eq!(column(l), want, "{}: {l:?}", c.name);
                assert!(!l.contains("[default: "), "{}: {l:?}", c.name);
            }
            for l in options.lines().filter(|l| !l.starts_with("  -")) {
                assert_eq!(l.len() - l.trim_start().len(), want, "{}: {l:?}", c.name);
                assert!(l.trim_start().starts_with("[env: "), "{}: {l:?}", c.name);
            }
        }
    }

    #[test]
    fn no_command_lists_a_flag_twice() {
        for c in COMMANDS {
            for (i, f) in c.flags.iter().enumerate() {
                assert!(
                    c.flags[i + 1..].iter().all(|g| g.name != f.name),
                    "{} lists --{} twice",
                    c.name,
                    f.name
                );
            }
        }
    }
}
