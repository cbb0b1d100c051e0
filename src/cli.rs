//! The command line: picks the subcommand, builds its validated configuration, runs it,
//! and turns the result into an exit status (0 done, 1 failed, 2 bad usage or setting).

use std::process::ExitCode;

use crate::config::{self, Parsed, COMMANDS};
use crate::{reprint, reverify, send, serve, status};

pub fn main(argv: &[String]) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
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
            "coupond: unknown command {name:?}; commands: serve, status, send, reprint, reverify (see coupond --help)"
        );
        return ExitCode::from(2);
    };
    let args = match config::parse(command, &argv[2..], &env) {
        Ok(Parsed::Help(h)) => {
            print!("{h}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(args)) => args,
        Err(e) => return usage_error(&e),
    };
    let result = match command.name {
        "serve" => match config::ServeConfig::from_args(&args, &env) {
            Ok(cfg) => {
                init_logging(cfg.log_level);
                serve::run(cfg)
            }
            Err(e) => return usage_error(&e),
        },
        "status" => match config::StatusConfig::from_args(&args) {
            Ok(cfg) => status::run(&cfg),
            Err(e) => return usage_error(&e),
        },
        "send" => match config::SendConfig::from_args(&args, &env) {
            Ok(cfg) => match send::run(&cfg) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            },
            Err(e) => return usage_error(&e),
        },
        "reprint" => match config::ReprintConfig::from_args(&args) {
            Ok(cfg) => reprint::run(&cfg),
            Err(e) => return usage_error(&e),
        },
        "reverify" => match config::ReverifyConfig::from_args(&args, &env) {
            Ok(cfg) => reverify::run(&cfg),
            Err(e) => return usage_error(&e),
        },
        _ => unreachable!("every command in COMMANDS is dispatched"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("coupond: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("coupond: {e}");
    ExitCode::from(2)
}

/// Log lines go to stderr. Under systemd (`JOURNAL_STREAM` set) the journal stamps the
/// time itself, so the line leaves it out.
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
    let _ = simplelog::WriteLogger::init(level, cfg.build(), std::io::stderr());
}
