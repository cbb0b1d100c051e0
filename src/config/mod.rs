//! Settings: command line and environment, parsed once into validated configurations.
//!
//! Three layers, each in its own file:
//! - [`flags`]: every flag once (name, `COUPOND_<FLAG>` variable, default, help), the
//!   tokenizer, the settings file and `--help`. Precedence: flag, then environment, then
//!   the settings file (`--config`, default `/etc/coupond/coupond.env` when it exists),
//!   then default.
//! - [`settings`]: one typed struct per command ([`ServeConfig`], [`SendConfig`], ...),
//!   built once from the flags; the rest of the program only sees these, and a bad
//!   value stops start-up with one [`ConfigError`] line naming the flag or variable.
//! - [`secrets`]: the client secrets, which are never flags.
//!
//! The daemon reads the settings file itself (not systemd's `EnvironmentFile=`, which
//! would freeze it into the environment), so a reload sees what changed in it.

pub mod flags;
pub mod secrets;
pub mod settings;

use std::fmt;

pub use flags::{
    env_name, help, parse, top_help, unknown_environment, Args, Command, CommandId, Flag, Parsed,
    COMMANDS,
};
pub use secrets::load_secrets;
pub use settings::{
    parse_actions, parse_size, CatchupConfig, PrintTestConfig, ReportConfig, ReprintConfig,
    ReverifyConfig, SendConfig, ServeConfig, SpeakTestConfig, StatusConfig,
};

/// A start-up error: one line that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}
