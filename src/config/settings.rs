//! One validated struct per command, built once from [`Args`]; every default comes from
//! the flag table in [`flags`](super::flags), parsed by the same code as a given value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::flags::{self as f, Args, Flag};
use super::secrets::load_secrets;
use super::ConfigError;
use crate::coupon::Action;
use crate::douyin::ApiUrl;
use crate::intake::Apps;
use crate::model::{OutputPlan, SinkKind, StoreSinks};
use crate::mqtt::{self, Broker};
use crate::schedule::{Date, TimeOfDay};
use crate::sinks::mqtt::Publisher;
use crate::sinks::printer::{parse_baud, PrinterDest, PrinterStatus};
use crate::sinks::speaker::{self, Player};
use crate::sinks::{Outputs, Receipts};
use crate::sources::mqtt::Subscriber;
use crate::url::Url;

/// `coupond serve`, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `None`: `--listen off`, a store box that only takes pushes from MQTT.
    pub listen: Option<SocketAddr>,
    pub path: String,
    pub db: PathBuf,
    pub apps: Apps,
    pub max_body: usize,
    pub log_level: LevelFilter,
    /// What each sink needs, and so which sinks there are.
    pub outputs: Outputs,
    pub display_listen: Option<SocketAddr>,
    pub print_actions: Vec<Action>,
    pub output_attempts: i64,
    /// `None`: keep everything.
    pub keep_days: Option<u32>,
    /// `--account-id` given: catch-up from Douyin (SPEC §11).
    pub catchup: Option<CatchupConfig>,
    /// `--mqtt-source`.
    pub mqtt_source: Option<Subscriber>,
    /// The end-of-day report (SPEC §15): when business days start, and the local time
    /// to print it each day (`--report-at`, only with a printer).
    pub day_starts: TimeOfDay,
    pub report_at: Option<TimeOfDay>,
}

/// Catch-up's settings, validated. The token is asked for the first `--client-key`
/// with the secrets of `ServeConfig::apps`.
#[derive(Debug, Clone)]
pub struct CatchupConfig {
    pub account_id: String,
    pub poi_ids: Vec<String>,
    pub every: Duration,
    pub api: ApiUrl,
    pub ca: Option<PathBuf>,
    /// `--details on` (the default): coupons are looked up (SPEC §13); outputs of an
    /// applied verify wait this long for their details (`--details-wait`).
    pub details: Option<Duration>,
}

impl CatchupConfig {
    fn from_args(args: &Args) -> Result<Option<CatchupConfig>, ConfigError> {
        let poi_ids = args
            .optional(&f::POI_ID, |v| {
                comma_list(v, "want one or more Douyin POI ids, comma separated")
            })?
            .unwrap_or_default();
        let every = args.value(&f::RECONCILE_EVERY, parse_duration)?;
        let api = args.value(&f::DOUYIN_API, ApiUrl::parse)?;
        let ca = args.text(&f::DOUYIN_CA).map(PathBuf::from);
        let account = args
            .text(&f::CATCHUP_ACCOUNT_ID)
            .filter(|a| !a.trim().is_empty());
        let details = args.optional(&f::DETAILS, parse_on_off)?;
        let wait = args.value(&f::DETAILS_WAIT, parse_wait)?;
        let Some(account_id) = account else {
            if details == Some(true) {
                return Err(ConfigError(
                    "--details on needs --account-id: the lookup asks Douyin's API as the \
                     merchant's app (or leave --details off)"
                        .into(),
                ));
            }
            for flag in [&f::POI_ID, &f::DOUYIN_CA] {
                if args.text(flag).is_some() {
                    return Err(ConfigError(format!(
                        "--{} needs --account-id (catch-up is off without it)",
                        flag.name
                    )));
                }
            }
            return Ok(None);
        };
        Ok(Some(CatchupConfig {
            account_id: account_id.trim().to_string(),
            poi_ids,
            every,
            api,
            ca,
            details: details.unwrap_or(true).then_some(wait),
        }))
    }
}

impl ServeConfig {
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = ServeConfig::without_secrets(args)?;
        cfg.apps = apps(args, env)?;
        Ok(cfg)
    }

    /// Everything but the secrets (`apps.secrets` is empty): `coupond check` loads
    /// those on their own, to report them on their own line.
    pub fn without_secrets(args: &Args) -> Result<Self, ConfigError> {
        let listen = args.value(&f::LISTEN, |v| match v {
            "off" => Ok(None),
            _ => parse_addr(v).map(Some),
        })?;
        let display_listen = args.optional(&f::DISPLAY_LISTEN, parse_addr)?;
        if display_listen.is_some_and(|d| d.port() != 0 && Some(d) == listen) {
            return Err(ConfigError(
                "--display-listen must differ from --listen: the webhook port is reachable \
                 through the tunnel, the display must not be"
                    .into(),
            ));
        }
        let mqtt = broker(args, &f::MQTT)?;
        let forward = args
            .optional(&f::MQTT_FORWARD, parse_on_off)?
            .unwrap_or(false);
        if forward && mqtt.is_none() {
            return Err(ConfigError(
                "--mqtt-forward publishes to the --mqtt broker: set --mqtt too".into(),
            ));
        }
        let mqtt_source = match broker(args, &f::MQTT_SOURCE)? {
            Some(broker) => Some(Subscriber {
                broker,
                accounts: args.value(&f::MQTT_ACCOUNTS, parse_accounts)?,
                max_body: args.value(&f::MAX_BODY, parse_size)?,
            }),
            None => None,
        };
        let receipts = receipts(args)?;
        let report_at = args.optional(&f::REPORT_AT, TimeOfDay::parse)?;
        if report_at.is_some() && receipts.printer.is_none() {
            return Err(ConfigError(
                "--report-at prints the end-of-day report: set --printer too".into(),
            ));
        }
        if listen.is_none() && mqtt_source.is_none() {
            return Err(ConfigError(
                "--listen off leaves no way in: set --mqtt-source, or a --listen address".into(),
            ));
        }
        Ok(ServeConfig {
            listen,
            path: args.value(&f::PATH, parse_path)?,
            db: db(args)?,
            apps: Apps {
                client_keys: client_keys(args)?,
                secrets: Vec::new(),
            },
            max_body: args.value(&f::MAX_BODY, parse_size)?,
            log_level: args.value(&f::LOG_LEVEL, parse_log_level)?,
            outputs: Outputs {
                receipts,
                display: display_listen.is_some(),
                exec: args.optional(&f::EXEC, parse_command)?,
                exec_timeout: Duration::from_secs(args.value(&f::EXEC_TIMEOUT, parse_positive)?),
                mqtt: mqtt.map(|broker| Publisher { broker, forward }),
                speaker: speaker(args)?,
            },
            display_listen,
            print_actions: args.value(&f::PRINT_ACTIONS, parse_actions)?,
            output_attempts: args.value(&f::OUTPUT_ATTEMPTS, parse_positive)? as i64,
            keep_days: Some(args.value(&f::KEEP_DAYS, parse_days)?).filter(|d| *d > 0),
            catchup: CatchupConfig::from_args(args)?,
            mqtt_source,
            day_starts: args.value(&f::DAY_STARTS, TimeOfDay::parse)?,
            report_at,
        })
    }
}

/// `coupond print-test`, validated.
#[derive(Debug, Clone)]
pub struct PrintTestConfig {
    pub db: PathBuf,
    pub receipts: Receipts,
    /// How long to wait for the running daemon to print it.
    pub wait: Duration,
}

impl PrintTestConfig {
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let receipts = receipts(args)?;
        if receipts.printer.is_none() {
            return Err(args.missing(&f::PRINTER));
        }
        Ok(PrintTestConfig {
            db: db(args)?,
            receipts,
            wait: Duration::from_secs(args.value(&f::WAIT, parse_positive)?),
        })
    }
}

/// `coupond report`, validated.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub db: PathBuf,
    /// `None`: the business day in progress.
    pub date: Option<Date>,
    pub json: bool,
    pub print: bool,
    pub day_starts: TimeOfDay,
    /// `None`: everything is kept.
    pub keep_days: Option<u32>,
    pub receipts: Receipts,
    /// `--print` through a running daemon: how long to wait for it.
    pub wait: Duration,
}

impl ReportConfig {
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let print = args.optional(&f::PRINT, parse_on_off)?.unwrap_or(false);
        let receipts = receipts(args)?;
        if print && receipts.printer.is_none() {
            return Err(ConfigError(
                "--print needs --printer (or COUPOND_PRINTER in the settings file)".into(),
            ));
        }
        Ok(ReportConfig {
            db: db(args)?,
            date: args.optional(&f::DATE, Date::parse_arg)?,
            json: args.optional(&f::JSON, parse_on_off)?.unwrap_or(false),
            print,
            day_starts: args.value(&f::DAY_STARTS, TimeOfDay::parse)?,
            keep_days: Some(args.value(&f::REPORT_KEEP_DAYS, parse_days)?).filter(|d| *d > 0),
            receipts,
            wait: Duration::from_secs(args.value(&f::WAIT, parse_positive)?),
        })
    }
}

/// `coupond speak-test`, validated.
#[derive(Debug, Clone)]
pub struct SpeakTestConfig {
    pub db: PathBuf,
    /// Needed only to say it directly (no daemon runs on the database).
    pub player: Option<Player>,
    pub voice: PathBuf,
    /// `--amount`, in fen.
    pub amount: Option<u64>,
}

impl SpeakTestConfig {
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        Ok(SpeakTestConfig {
            db: db(args)?,
            player: player(args)?,
            voice: PathBuf::from(args.value(&f::VOICE, parse_dir)?),
            amount: args.optional(&f::AMOUNT, parse_fen)?,
        })
    }
}

/// `ID=NAME,ID=NAME`: a name for each Douyin store id.
pub fn parse_poi_names(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut names: Vec<(String, String)> = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, name) = pair
            .split_once('=')
            .map(|(i, n)| (i.trim(), n.trim()))
            .filter(|(i, n)| !i.is_empty() && !n.is_empty())
            .ok_or_else(|| format!("{pair:?} is not ID=NAME, such as 7001=望京店"))?;
        if names.iter().any(|(i, _)| i == id) {
            return Err(format!("poi id {id} is named twice"));
        }
        names.push((id.to_string(), name.to_string()));
    }
    Ok(names)
}

/// The speaker's settings (SPEC §14), when `--speaker` or `--speaker-cmd` turns it on.
fn speaker(args: &Args) -> Result<Option<speaker::Settings>, ConfigError> {
    let voice = args.value(&f::VOICE, parse_dir)?;
    let actions = args.value(&f::SPEAK_ACTIONS, parse_actions)?;
    Ok(player(args)?.map(|player| speaker::Settings {
        player,
        voice: PathBuf::from(voice),
        actions,
    }))
}

fn player(args: &Args) -> Result<Option<Player>, ConfigError> {
    let device = args.optional(&f::SPEAKER, parse_device)?;
    let command = args.optional(&f::SPEAKER_CMD, parse_command)?;
    match (device, command) {
        (Some(_), Some(_)) => Err(ConfigError(
            "--speaker and --speaker-cmd are two ways to play the announcement: set one".into(),
        )),
        (Some(device), None) => Ok(Some(Player::Aplay(device))),
        (None, Some(command)) => Ok(Some(Player::Command(command))),
        (None, None) => Ok(None),
    }
}

/// An ALSA device name as aplay takes it (`plughw:0,0`, `default`, `null`).
fn parse_device(v: &str) -> Result<String, String> {
    if v.is_empty() || v.starts_with('-') || v.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err("want an ALSA device such as plughw:0,0 or default (aplay -L lists them)".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_dir(v: &str) -> Result<String, String> {
    non_empty(v, "want a directory")
}

/// An amount in fen: a whole number, 0 or more.
fn parse_fen(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| "want a whole number of fen, such as 9900 for 99 yuan".into())
}

/// The printer settings, shared by `serve`, `print-test` and `report` (`--poi-names`
/// only where the command takes it).
fn receipts(args: &Args) -> Result<Receipts, ConfigError> {
    Ok(Receipts {
        printer: args.optional(&f::PRINTER, PrinterDest::parse)?,
        paper_columns: args.value(&f::PAPER_WIDTH, parse_paper_width)?,
        store_name: args.text(&f::STORE_NAME).filter(|s| !s.trim().is_empty()),
        printer_status: args.value(&f::PRINTER_STATUS, PrinterStatus::parse)?,
        serial_baud: args.optional(&f::SERIAL_BAUD, parse_baud)?,
        poi_names: args
            .optional(&f::POI_NAMES, parse_poi_names)?
            .unwrap_or_default(),
    })
}

/// `--details-wait`: a duration, or `0`/`0s` for none.
fn parse_wait(v: &str) -> Result<Duration, String> {
    match v.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
}

/// A broker from `url` and the shared MQTT settings; the password is read here, once.
fn broker(args: &Args, url: &Flag) -> Result<Option<Broker>, ConfigError> {
    let Some((host, port, tls)) = args.optional(url, mqtt::parse_url)? else {
        return Ok(None);
    };
    let ca = args.text(&f::MQTT_CA).map(PathBuf::from);
    let tls = match (tls, ca) {
        (true, ca) => Some(
            crate::tls::client_config(ca.as_deref())
                .map_err(|e| ConfigError(format!("--mqtt-ca: {e}")))?,
        ),
        (false, Some(_)) => {
            return Err(ConfigError(format!(
                "--mqtt-ca is for mqtts:// brokers, and --{} is plain mqtt://",
                url.name
            )))
        }
        (false, None) => None,
    };
    let client_id = match args.optional(&f::MQTT_CLIENT_ID, parse_client_id)? {
        Some(id) => id,
        None => {
            let path = "/etc/machine-id";
            let text = std::fs::read_to_string(path).unwrap_or_default();
            mqtt::default_client_id(&text).ok_or_else(|| {
                ConfigError(format!(
                    "no usable {path} for the MQTT client id: set --mqtt-client-id \
                     (one stable id per box)"
                ))
            })?
        }
    };
    let password = match args.text(&f::MQTT_PASSWORD_FILE) {
        Some(path) => Some(read_password(&path)?),
        None => None,
    };
    Ok(Some(Broker {
        host,
        port,
        client_id,
        username: args.text(&f::MQTT_USERNAME).filter(|u| !u.is_empty()),
        password,
        prefix: args.value(&f::MQTT_TOPIC, parse_topic_prefix)?,
        tls,
        max_packet: mqtt::max_packet(args.value(&f::MAX_BODY, parse_size)?),
    }))
}

fn read_password(path: &str) -> Result<String, ConfigError> {
    let cannot = |e: String| ConfigError(format!("cannot read --mqtt-password-file {path}: {e}"));
    let bytes = super::read_capped(std::path::Path::new(path), super::SECRET_FILE_CAP)
        .map_err(|e| cannot(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
    let line = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    let password = line.trim_end_matches('\r');
    if password.is_empty() {
        return Err(ConfigError(format!(
            "--mqtt-password-file {path} is empty: put the password on its first line"
        )));
    }
    Ok(password.to_string())
}

fn parse_client_id(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 100 || !v.chars().all(|c| c.is_ascii_graphic()) {
        Err("want a stable id of printable ASCII characters, such as coupond-store-12".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_topic_prefix(v: &str) -> Result<String, String> {
    let v = v.trim_end_matches('/');
    if v.is_empty() || v.contains(['+', '#', '\0']) || v.starts_with('/') {
        Err("want a topic prefix without wildcards, such as coupond or chain/coupond".into())
    } else {
        Ok(v.to_string())
    }
}

/// `+` or account ids, comma separated.
fn parse_accounts(v: &str) -> Result<Vec<String>, String> {
    const WANT: &str = "want + (every account) or account ids, ID[,ID]";
    let ids = comma_list(v, WANT)?;
    if ids
        .iter()
        .any(|a| a != "+" && mqtt::level(Some(a)) != a.as_str())
    {
        Err(WANT.into())
    } else {
        Ok(ids)
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
            db: db(args)?,
            certificate_id: args.positional[0].clone(),
        })
    }
}

/// `coupond reverify`, validated.
#[derive(Debug, Clone)]
pub struct ReverifyConfig {
    pub db: PathBuf,
    pub apps: Apps,
    /// The daemon's output plan (from the same settings), for the recovered messages'
    /// output jobs: the one `serve` builds, so both queue the same jobs.
    pub plan: OutputPlan,
}

impl ReverifyConfig {
    pub fn from_args(
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let printer = args.optional(&f::PRINTER, PrinterDest::parse)?;
        let display = args.optional(&f::DISPLAY_LISTEN, parse_addr)?;
        let exec = args.optional(&f::EXEC, parse_command)?;
        // Only whether the broker is set matters here: nothing connects to it.
        let mqtt = args.optional(&f::MQTT, mqtt::parse_url)?;
        let forward = args
            .optional(&f::MQTT_FORWARD, parse_on_off)?
            .unwrap_or(false);
        let plan = OutputPlan::new(
            SinkKind::configured(StoreSinks {
                printer: printer.is_some(),
                display: display.is_some(),
                exec: exec.is_some(),
            }),
            args.value(&f::PRINT_ACTIONS, parse_actions)?,
            mqtt.map(|_| forward),
        );
        // A recovered push is said only within a minute of its first arrival, which is
        // to say almost never; but its job is queued as the daemon would queue it.
        let plan = match player(args)? {
            Some(_) => plan.speaking(args.value(&f::SPEAK_ACTIONS, parse_actions)?),
            None => plan,
        };
        Ok(ReverifyConfig {
            db: db(args)?,
            apps: apps(args, env)?,
            plan,
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
        Ok(StatusConfig { db: db(args)? })
    }
}

/// `coupond send`, validated.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub url: Url,
    /// The path the daemon serves (`--path`), to explain a 404.
    pub served_path: String,
    pub client_key: String,
    pub secret: String,
    /// Where the secret came from, to explain a 401.
    pub secret_from: String,
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
        let served_path = args.value(&f::SEND_PATH, parse_path)?;
        let url = match args.optional(&f::URL, Url::parse)? {
            Some(url) => url,
            None => own_url(args, &served_path)?,
        };
        let challenge = args.optional(&f::CHALLENGE, |v| {
            v.parse::<i64>()
                .map_err(|_| "want a whole number".to_string())
        })?;
        // A fresh test coupon unless one is named, so that a second test push prints
        // too rather than being a silent duplicate. A URL check carries no coupon.
        let certificate_id = match (challenge, args.text(&f::CERTIFICATE_ID)) {
            (_, Some(id)) => id,
            (Some(_), None) => String::new(),
            (None, None) => format!("TEST-{}", crate::time::now_millis()),
        };
        let apps = apps(args, env)?;
        let secret_from = match args.text(&f::SEND_SECRET_FILE) {
            Some(file) => file,
            None => "$CREDENTIALS_DIRECTORY/client_secret or COUPOND_CLIENT_SECRET".into(),
        };
        Ok(SendConfig {
            url,
            served_path,
            client_key: apps.client_keys[0].clone(),
            secret: apps.secrets[0].clone(),
            secret_from,
            action: args.value(&f::ACTION, parse_action)?,
            certificate_id,
            order_id: args.text(&f::ORDER_ID),
            code: args.text(&f::CODE),
            account_id: args.text(&f::ACCOUNT_ID),
            msg_time: args.optional(&f::MSG_TIME, |v| {
                v.parse::<i64>()
                    .map_err(|_| "want seconds since the epoch".to_string())
            })?,
            log_id: args.text(&f::LOG_ID),
            challenge,
            timeout: Duration::from_secs(3),
            retries: 3,
            retry_delay: Duration::from_millis(500),
        })
    }
}

/// The daemon's own webhook URL, from its `--listen` and `--path` (on the box, the
/// settings file's): an address that listens everywhere is asked on loopback.
fn own_url(args: &Args, path: &str) -> Result<Url, ConfigError> {
    let addr = args.value(&f::SEND_LISTEN, |v| match v {
        "off" => Err("the daemon takes no pushes over HTTP (--listen off): give --url".into()),
        _ => parse_addr(v),
    })?;
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    Url::parse(&format!("http://{host}:{}{path}", addr.port())).map_err(ConfigError)
}

fn db(args: &Args) -> Result<PathBuf, ConfigError> {
    args.value(&f::DB, |v| {
        // No path can hold a NUL: SQLite would open what comes before it.
        if v.is_empty() || v.contains('\0') {
            return Err("want a file path (with no NUL character)".into());
        }
        Ok(PathBuf::from(v))
    })
}

/// The configured apps: `--client-key` and the secrets (never from a flag).
fn apps(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Apps, ConfigError> {
    Ok(Apps {
        client_keys: client_keys(args)?,
        secrets: secrets(args, env)?,
    })
}

/// The client secrets the settings point to.
pub fn secrets(
    args: &Args,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    load_secrets(args.text(&f::SECRET_FILE).as_deref(), env)
}

fn client_keys(args: &Args) -> Result<Vec<String>, ConfigError> {
    args.value(&f::CLIENT_KEY, |v| {
        comma_list(v, "want the Douyin app id (client_key)")
    })
}

/// `A,B, C` as `[A, B, C]`; `want` when that leaves nothing.
fn comma_list(v: &str, want: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if items.is_empty() {
        Err(want.to_string())
    } else {
        Ok(items)
    }
}

/// `30s`, `10m`, `1h`, `2h30m` or plain seconds; at least one second.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    const WANT: &str = "want a duration such as 30s, 10m or 1h";
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return (secs > 0)
            .then(|| Duration::from_secs(secs))
            .ok_or(WANT.into());
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(WANT.into()),
        };
        let n: u64 = digits.parse().map_err(|_| WANT.to_string())?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(WANT.into());
    }
    Ok(Duration::from_secs(total))
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "want IP:PORT, such as 127.0.0.1:8080 or 0.0.0.0:8080".into())
}

fn parse_path(v: &str) -> Result<String, String> {
    if v.starts_with('/') && !v.contains(char::is_whitespace) {
        Ok(v.to_string())
    } else {
        Err("want a URL path starting with /, such as /douyin/webhook".into())
    }
}

fn parse_command(v: &str) -> Result<String, String> {
    non_empty(v, "want a command")
}

fn non_empty(v: &str, want: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err(want.into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_log_level(v: &str) -> Result<LevelFilter, String> {
    v.parse::<LevelFilter>()
        .map_err(|_| "want error, warn, info, debug or trace".into())
}

/// Paper width in millimetres, as printer columns.
fn parse_paper_width(v: &str) -> Result<usize, String> {
    match v.trim_end_matches("mm") {
        "58" => Ok(32),
        "80" => Ok(48),
        _ => Err("want 58 or 80 (millimetres)".into()),
    }
}

fn parse_days(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| "want a whole number of days (0 keeps everything)".into())
}

fn parse_action(v: &str) -> Result<Action, String> {
    Action::parse(v).ok_or_else(|| "want verify, verify_cancel or refund_success".into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flags::{parse, Command, Parsed, SERVE};

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
    fn the_speaker_is_on_with_a_device_or_a_command_and_not_both() {
        let serve = |argv: &[&str]| {
            let mut all = vec!["--client-key", "k"];
            all.extend_from_slice(argv);
            ServeConfig::without_secrets(&args(&SERVE, &all, &no_env)?).map(|c| c.outputs.speaker)
        };
        assert_eq!(serve(&[]).unwrap(), None);
        assert_eq!(
            serve(&["--speaker", "plughw:1,0"]).unwrap(),
            Some(speaker::Settings {
                player: Player::Aplay("plughw:1,0".into()),
                voice: PathBuf::from("/usr/share/coupond/voice"),
                actions: vec![Action::Verify],
            })
        );
        let s = serve(&[
            "--speaker-cmd",
            "cat >/dev/null",
            "--speak-actions",
            "refund_success,verify",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.player, Player::Command("cat >/dev/null".into()));
        assert_eq!(s.actions, [Action::RefundSuccess, Action::Verify]);
        let both = serve(&["--speaker", "default", "--speaker-cmd", "cat"]).unwrap_err();
        assert!(both.0.contains("set one"), "{both}");
        for bad in ["-Dnull", "plug hw", ""] {
            let e = serve(&["--speaker", bad]).unwrap_err();
            assert!(e.0.contains("aplay -L"), "{bad}: {e}");
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
        assert_eq!(c.listen.unwrap().to_string(), "0.0.0.0:9000");
        assert_eq!(c.path, "/hook");
        assert_eq!(c.apps.client_keys, ["k1", "k2"]);
        assert_eq!(c.apps.secrets, ["s"]);
        assert_eq!(c.max_body, 65536);
        assert_eq!(c.db, PathBuf::from("./coupond.db"));
    }

    #[test]
    fn flags_beat_environment_beat_the_settings_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("coupond-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("coupond.env");
        std::fs::write(
            &file,
            "COUPOND_LISTEN=127.0.0.1:7000\nCOUPOND_PATH=/from-file\nCOUPOND_DB=/from/file.db\n\
             COUPOND_CLIENT_KEY=app\nCOUPOND_MAX_BODY=lots\n",
        )
        .unwrap();
        let f = file.to_string_lossy().to_string();
        let env = move |k: &str| match k {
            "COUPOND_CONFIG" => Some(f.clone()),
            "COUPOND_PATH" => Some("/from-env".to_string()),
            "COUPOND_DB" => Some("/from/env.db".to_string()),
            "COUPOND_CLIENT_SECRET" => Some("s".to_string()),
            _ => None,
        };
        let a = args(&SERVE, &["--db", "/from/flag.db"], &env).unwrap();
        assert_eq!(a.config_file(), Some(file.as_path()));
        let e = ServeConfig::from_args(&a, &env).unwrap_err().0;
        assert!(
            e.starts_with(&format!("invalid COUPOND_MAX_BODY in {}", file.display())),
            "{e}"
        );
        let a = args(
            &SERVE,
            &["--db", "/from/flag.db", "--max-body", "1MiB"],
            &env,
        )
        .unwrap();
        let c = ServeConfig::from_args(&a, &env).unwrap();
        assert_eq!(c.db, PathBuf::from("/from/flag.db"));
        assert_eq!(c.path, "/from-env");
        assert_eq!(c.listen.unwrap().to_string(), "127.0.0.1:7000");
        assert_eq!(c.apps.client_keys, ["app"]);
        assert_eq!(c.keep_days, Some(90));
        std::fs::write(&file, "COUPOND_PRINTR=/dev/usb/lp0\n").unwrap();
        let e = args(&SERVE, &[], &env).err().unwrap().0;
        assert!(
            e.contains("line 1: unknown setting COUPOND_PRINTR (did you mean COUPOND_PRINTER?)"),
            "{e}"
        );
        let e = args(&SERVE, &["--config", "/nonexistent/coupond.env"], &env)
            .err()
            .unwrap()
            .0;
        assert!(
            e.starts_with("cannot read --config /nonexistent/coupond.env"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn output_settings() {
        let secret = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "s".to_string());
        let serve = |argv: &[&str]| {
            let mut all = vec!["--client-key", "k"];
            all.extend_from_slice(argv);
            args(&SERVE, &all, &secret).and_then(|a| ServeConfig::from_args(&a, &secret))
        };
        let c = serve(&[]).unwrap();
        assert_eq!(
            (
                c.outputs.receipts.printer.clone(),
                c.outputs.receipts.paper_columns,
                c.outputs.receipts.printer_status
            ),
            (None, 32, PrinterStatus::Auto)
        );
        assert_eq!(c.print_actions, Action::ALL);
        assert_eq!(
            (c.output_attempts, c.outputs.exec_timeout.as_secs()),
            (60, 30)
        );
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
            c.outputs.receipts.printer,
            Some(PrinterDest::Tcp {
                host: "10.0.0.5".into(),
                port: 9100
            })
        );
        assert_eq!(c.outputs.receipts.paper_columns, 48);
        assert_eq!(c.print_actions, [Action::Verify, Action::RefundSuccess]);
        let c = serve(&["--printer", "/dev/usb/lp0", "--printer-status", "off"]).unwrap();
        assert_eq!(
            c.outputs.receipts.printer,
            Some(PrinterDest::Path("/dev/usb/lp0".into()))
        );
        assert_eq!(c.outputs.receipts.printer_status, PrinterStatus::Off);
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
    fn mqtt_settings() {
        let secret = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "s".to_string());
        let serve = |argv: &[&str]| {
            let mut all = vec!["--client-key", "k", "--mqtt-client-id", "box-1"];
            all.extend_from_slice(argv);
            args(&SERVE, &all, &secret).and_then(|a| ServeConfig::from_args(&a, &secret))
        };
        let c = serve(&[]).unwrap();
        assert!(c.outputs.mqtt.is_none() && c.mqtt_source.is_none());
        let dir = std::env::temp_dir().join(format!("coupond-mqtt-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "\u{feff}s3cret\r\nignored\n").unwrap();
        let c = serve(&[
            "--mqtt",
            "mqtt://hq:1884",
            "--mqtt-forward",
            "--mqtt-source",
            "mqtt://hq",
            "--mqtt-accounts",
            "1234, 5678",
            "--mqtt-username",
            "store-7",
            "--mqtt-password-file",
            pw.to_str().unwrap(),
            "--listen",
            "off",
        ])
        .unwrap();
        let p = c.outputs.mqtt.unwrap();
        assert!(p.forward);
        assert_eq!(
            (p.broker.port, p.broker.password.as_deref()),
            (1884, Some("s3cret"))
        );
        assert_eq!(p.broker.prefix, "coupond");
        let s = c.mqtt_source.unwrap();
        assert_eq!(s.accounts, ["1234", "5678"]);
        assert_eq!(c.listen, None);
        std::fs::remove_dir_all(&dir).unwrap();
        for (argv, want) in [
            (&["--mqtt-forward"][..], "set --mqtt too"),
            (&["--mqtt", "tcp://hq"][..], "invalid --mqtt"),
            (
                &["--mqtt", "mqtt://hq", "--mqtt-ca", "/x.pem"][..],
                "--mqtt-ca is for mqtts://",
            ),
            (
                &["--mqtt", "mqtts://hq", "--mqtt-ca", "/nonexistent.pem"][..],
                "--mqtt-ca: cannot read",
            ),
            (
                &["--mqtt", "mqtt://hq", "--mqtt-topic", "a/#"][..],
                "invalid --mqtt-topic",
            ),
            (
                &["--mqtt-source", "mqtt://hq", "--mqtt-accounts", "a/b"][..],
                "invalid --mqtt-accounts",
            ),
            (
                &[
                    "--mqtt",
                    "mqtt://hq",
                    "--mqtt-password-file",
                    "/nonexistent/pw",
                ][..],
                "cannot read --mqtt-password-file",
            ),
            (&["--listen", "off"][..], "--listen off leaves no way in"),
        ] {
            let e = serve(argv).expect_err(&format!("{argv:?}")).0;
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("64Q").is_err());
    }

    #[test]
    fn catch_up_settings() {
        let secret = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "s".to_string());
        let serve = |argv: &[&str]| {
            let mut all = vec!["--client-key", "k"];
            all.extend_from_slice(argv);
            args(&SERVE, &all, &secret).and_then(|a| ServeConfig::from_args(&a, &secret))
        };
        assert!(serve(&[]).unwrap().catchup.is_none());
        let c = serve(&["--account-id", "6900", "--poi-id", "7001, 7002"])
            .unwrap()
            .catchup
            .unwrap();
        assert_eq!(c.account_id, "6900");
        assert_eq!(c.poi_ids, ["7001", "7002"]);
        assert_eq!(c.every, Duration::from_secs(600));
        assert_eq!(c.api.to_string(), "https://open.douyin.com:443");
        assert_eq!(c.ca, None);
        assert_eq!(c.details, Some(Duration::from_secs(3)));
        let c = serve(&["--account-id", "1", "--details", "off"]).unwrap();
        assert_eq!(c.catchup.unwrap().details, None);
        let c = serve(&["--account-id", "1", "--details-wait", "0s"]).unwrap();
        assert_eq!(c.catchup.unwrap().details, Some(Duration::ZERO));
        let c = serve(&["--poi-names", "71=望京店, 72 = 国贸店"]).unwrap();
        assert_eq!(
            c.outputs.receipts.poi_names,
            [
                ("71".to_string(), "望京店".to_string()),
                ("72".to_string(), "国贸店".to_string())
            ]
        );
        for (argv, want) in [
            (&["--poi-id", "1"][..], "--poi-id needs --account-id"),
            (&["--douyin-ca", "/x"][..], "--douyin-ca needs --account-id"),
            (&["--details", "on"][..], "--details on needs --account-id"),
            (
                &["--account-id", "1", "--details", "maybe"][..],
                "invalid --details",
            ),
            (&["--poi-names", "71"][..], "invalid --poi-names"),
            (&["--poi-names", "=x"][..], "invalid --poi-names"),
            (
                &["--account-id", "1", "--reconcile-every", "0s"][..],
                "invalid --reconcile-every",
            ),
            (
                &["--account-id", "1", "--douyin-api", "ftp://x"][..],
                "invalid --douyin-api",
            ),
        ] {
            let e = serve(argv).expect_err(&format!("{argv:?}")).0;
            assert!(e.contains(want), "{argv:?}: {e}");
        }
        let cases = [
            ("3s", Some(3)),
            ("10m", Some(600)),
            ("1h", Some(3600)),
            ("2h30m", Some(9000)),
            ("90", Some(90)),
            ("0", None),
            ("5x", None),
            ("m", None),
            ("10m5", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_duration(v).ok().map(|d| d.as_secs()), want, "{v}");
        }
    }
}
