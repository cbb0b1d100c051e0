//! The command line's vocabulary: every flag once, its `COUPOND_<FLAG>` variable, its
//! default and its help line; the tokenizer; and `--help`, generated from the same table
//! so that help, parsing and the README (checked by `tests/docs.rs`) cannot drift apart.
//!
//! This layer knows no types. [`parse`] turns `argv` and the outside values (the
//! environment today, the settings file of SPEC §7 beside it) into [`Args`]: for each
//! flag of the command, its text and where it came from. The typed, validated settings
//! are built from them once, in [`super::settings`], by naming the flag constants
//! (never a string key), and a flag's default is only ever written here.

use std::collections::HashMap;

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

// Shared by several commands.
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
    "on|off",
    Some("on"),
    "ask a tcp:// printer for paper and online status (DLE EOT) around each receipt",
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
pub const OUTPUT_ATTEMPTS: Flag = flag(
    "output-attempts",
    "N",
    Some("60"),
    "delivery attempts per output before it is marked failed (backoff 1 s doubling to 60 s)",
);
pub const KEEP_DAYS: Flag = flag(
    "keep-days",
    "DAYS",
    Some("90"),
    "prune message bodies, delivered outputs and rejects older than this (0: keep all); \
     coupon state and pending work are never pruned",
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

// `coupond send`.
pub const URL: Flag = flag(
    "url",
    "URL",
    None,
    "webhook URL, http://HOST[:PORT]/PATH (required)",
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
    "coupon (certificate) id (required)",
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

pub const SERVE: Command = Command {
    id: CommandId::Serve,
    name: "serve",
    about: "Receive Douyin coupon webhooks, record them in SQLite and tell the store",
    positional: None,
    flags: &[
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
        &DISPLAY_LISTEN,
        &EXEC,
        &EXEC_TIMEOUT,
        &PRINT_ACTIONS,
        &OUTPUT_ATTEMPTS,
        &KEEP_DAYS,
        &CATCHUP_ACCOUNT_ID,
        &POI_ID,
        &RECONCILE_EVERY,
        &DOUYIN_API,
        &DOUYIN_CA,
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
    ],
};

pub const STATUS: Command = Command {
    id: CommandId::Status,
    name: "status",
    about: "Summarise the database: coupons, messages, outputs, rejects (read-only)",
    positional: None,
    flags: &[&DB],
};

pub const SEND: Command = Command {
    id: CommandId::Send,
    name: "send",
    about: "Push one signed coupon message the way Douyin does, to test a box and its tunnel",
    positional: None,
    flags: &[
        &URL,
        &CLIENT_KEY,
        &SECRET_FILE,
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
    flags: &[&DB],
};

pub const REVERIFY: Command = Command {
    id: CommandId::Reverify,
    name: "reverify",
    about: "Re-check rejected pushes with the current secrets and record those that now verify",
    positional: None,
    // The output flags tell it which sinks the daemon has, for the recovered messages'
    // output jobs.
    flags: &[
        &DB,
        &CLIENT_KEY,
        &SECRET_FILE,
        &PRINTER,
        &DISPLAY_LISTEN,
        &EXEC,
        &PRINT_ACTIONS,
    ],
};

pub const COMMANDS: &[&Command] = &[&SERVE, &STATUS, &SEND, &REPRINT, &REVERIFY];

/// Where a value came from, to name it in an error. Precedence is the order here, flag
/// first; a settings file would be one more layer between the environment and the
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    Default,
}

/// The text of each flag a command was given (or defaults to), not yet validated.
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
/// values not given as flags through `env` (by their `COUPOND_<FLAG>` names).
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
        return Err(ConfigError(format!("'coupond {}' needs {p}", command.name)));
    }
    Ok(Parsed::Run(Args {
        command,
        values,
        positional,
    }))
}

impl Args {
    /// The command these arguments are for.
    pub fn command(&self) -> &'static Command {
        self.command
    }

    /// The flag's text and how to name it in an error (`--flag` or `COUPOND_FLAG`).
    fn get(&self, flag: &Flag) -> Option<(&str, String)> {
        let (v, src) = self.values.get(flag.name)?;
        let label = match src {
            Source::Env => env_name(flag.name),
            Source::Flag | Source::Default => format!("--{}", flag.name),
        };
        Some((v.as_str(), label))
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
