//! The command line: picks the subcommand, builds its validated configuration, runs it,
//! and turns the result into an exit status (0 done, 1 failed, 2 bad usage or setting).

use std::process::ExitCode;

use crate::commands::{
    check, print_test, report, reprint, reverify, send, serve, speak_test, status,
};
use crate::config::{self, Args, CommandId, ConfigError, Parsed, COMMANDS};
use crate::sanitize;

type Env = dyn Fn(&str) -> Option<String>;

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

pub fn main(argv: &[String]) -> ExitCode {
    let env = process_env;
    let Some(name) = argv.get(1) else {
        eprint!("{}", config::top_help());
        return ExitCode::from(2);
    };
    match name.as_str() {
        "-h" | "--help" | "help" => {
            print!("{}", config::top_help());
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" => {
            println!("coupond {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let Some(command) = COMMANDS.iter().copied().find(|c| c.name == name) else {
        eprintln!(
            "coupond: unknown command {name:?}; commands: {} (see coupond --help)",
            COMMANDS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    for warning in config::unknown_environment(names) {
        eprintln!("coupond: {warning}");
    }
    let args = match config::parse(command, &argv[2..], &env) {
        Ok(Parsed::Help(h)) => {
            print!("{h}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(args)) => args,
        // `check` reports a bad setting as one of its lines.
        Err(e) if command.id == CommandId::Check => {
            println!("{}", check::settings_failed(&e));
            return ExitCode::FAILURE;
        }
        Err(e) => return usage_error(&e),
    };
    match run(&args, &argv[2..], &env) {
        Ok(Ran::Done) => ExitCode::SUCCESS,
        Ok(Ran::NotDone) => ExitCode::FAILURE,
        Err(Failed::Usage(e)) => usage_error(&e),
        Err(Failed::Run(e)) => {
            log::error!("{e}");
            eprintln!("coupond: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a command that ran ended.
enum Ran {
    Done,
    /// Ran and reported its own failure (`send` that got no 200).
    NotDone,
}

/// Why a command did not run to the end.
enum Failed {
    /// A bad setting: exit status 2.
    Usage(ConfigError),
    /// A failure while running: exit status 1.
    Run(String),
}

impl From<ConfigError> for Failed {
    fn from(e: ConfigError) -> Failed {
        Failed::Usage(e)
    }
}

impl From<String> for Failed {
    fn from(e: String) -> Failed {
        Failed::Run(e)
    }
}

/// Validates the command's settings and runs it.
fn run(args: &Args, argv: &[String], env: &Env) -> Result<Ran, Failed> {
    match args.command().id {
        CommandId::Serve => {
            let cfg = config::ServeConfig::from_args(args, env)?;
            init_logging(cfg.log_level);
            // A reload reads the settings file and the secrets again, as at start, and
            // names the other settings that changed (they apply at the next start).
            let (command, argv) = (args.command(), argv.to_vec());
            let started = args.texts();
            let reload = move || match config::parse(command, &argv, &process_env) {
                Ok(Parsed::Run(a)) => {
                    let apps = config::ServeConfig::from_args(&a, &process_env)
                        .map(|c| c.apps)
                        .map_err(|e| e.to_string())?;
                    Ok((apps, changed(&started, &a.texts())))
                }
                Ok(Parsed::Help(_)) => Err("unexpected --help".into()),
                Err(e) => Err(e.to_string()),
            };
            serve::run(cfg, Box::new(reload))?;
        }
        CommandId::Check => {
            if !check::run(args, env)? {
                return Ok(Ran::NotDone);
            }
        }
        CommandId::PrintTest => print_test::run(&config::PrintTestConfig::from_args(args)?)?,
        CommandId::Report => report::run(&config::ReportConfig::from_args(args)?)?,
        CommandId::SpeakTest => speak_test::run(&config::SpeakTestConfig::from_args(args)?)?,
        CommandId::Status => status::run(&config::StatusConfig::from_args(args)?)?,
        CommandId::Send => {
            if !send::run(&config::SendConfig::from_args(args, env)?)? {
                return Ok(Ran::NotDone);
            }
        }
        CommandId::Reprint => reprint::run(&config::ReprintConfig::from_args(args)?)?,
        CommandId::Reverify => reverify::run(&config::ReverifyConfig::from_args(args, env)?)?,
    }
    Ok(Ran::Done)
}

/// The settings (by `COUPOND_<FLAG>` name) whose text differs between two readings,
/// but for those a reload applies: the client keys and the secrets.
fn changed(before: &[(String, String)], after: &[(String, String)]) -> Vec<String> {
    let live = [
        config::flags::CLIENT_KEY.name,
        config::flags::SECRET_FILE.name,
    ];
    let mut names: Vec<String> = before
        .iter()
        .filter(|b| !after.contains(b))
        .chain(after.iter().filter(|a| !before.contains(a)))
        .map(|(name, _)| name.clone())
        .filter(|name| !live.iter().any(|l| *name == config::env_name(l)))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn usage_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("coupond: {e}");
    ExitCode::from(2)
}

/// Log lines go to stderr. Under systemd (`JOURNAL_STREAM` set) the journal stamps the
/// time itself, so the line leaves it out. Every message passes through the sanitizer
/// ([`Sanitized`]), so no field it quotes can start a line or send an escape sequence.
fn init_logging(level: log::LevelFilter) {
    let mut cfg = simplelog::ConfigBuilder::new();
    cfg.set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .add_filter_allow_str("coupond");
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        cfg.set_time_level(log::LevelFilter::Off);
    } else {
        let _ = cfg.set_time_format_rfc3339();
    }
    // stderr is unbuffered and the logger writes a line in pieces (time, level, text):
    // a write system call each, about 20 a line, 40 per message at the default level
    // (strace). The line writer hands the kernel each whole line at its newline, so a
    // line is never held past its own `log` call (issue 22: CPU per message).
    let out = std::io::LineWriter::with_capacity(LOG_LINE_CAP * 2, std::io::stderr());
    let inner = simplelog::WriteLogger::new(level, cfg.build(), out);
    if log::set_boxed_logger(Box::new(Sanitized(inner))).is_ok() {
        log::set_max_level(level);
    }
}

/// The longest log line: a signed field can be as long as a body (a 10 KB certificate
/// id made 20 KB lines); what is past this is counted, not shown.
const LOG_LINE_CAP: usize = 2048;

/// A logger that shows every message through [`sanitize::text`]: one event, one line,
/// whatever a signed field (or a hook's output) holds.
struct Sanitized<L>(Box<L>);

impl<L: log::Log> log::Log for Sanitized<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let shown = sanitize::text(&message);
        self.0.log(
            &log::Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{}", sanitize::cap(&shown, LOG_LINE_CAP)))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush()
    }
}
