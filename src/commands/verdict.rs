//! One line of `coupond check`'s report (`ok`, `warn` or `FAIL`, what was checked, what
//! to do), shared by the checks in `check`, `check_links` and `check_speaker`.

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

/// A line of the report.
pub(crate) fn line(level: Level, what: &'static str, text: impl Into<String>) -> Line {
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
