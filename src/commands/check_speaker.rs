//! `coupond check`'s lines for the speaker (SPEC §14): the voice pack's clips, and the
//! player. Nothing is said: `coupond speak-test` does that.

use crate::commands::check::{line, Level, Line};
use crate::sinks::speaker::{Player, Settings};
use crate::voice::{Token, VoicePack};

/// The voice and speaker lines, for a configuration with a speaker.
pub fn lines(speaker: &Settings) -> Vec<Line> {
    let mut out = voice(&VoicePack::load(&speaker.voice));
    out.push(player(&speaker.player, |p| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(p).is_file()))
    }));
    out
}

/// The voice pack: one FAIL line per clip that is missing or malformed (it would be
/// left out of every announcement), else one ok line.
fn voice(pack: &VoicePack) -> Vec<Line> {
    if pack.problems.is_empty() {
        return vec![line(
            Level::Ok,
            "voice",
            format!("{} clips in {}", Token::ALL.len(), pack.dir.display()),
        )];
    }
    let effect = match pack.usable() {
        0 => "nothing can be said",
        _ => "that word is left out when spoken",
    };
    pack.problems
        .iter()
        .map(|p| line(Level::Fail, "voice", format!("{p}: {effect}")))
        .collect()
}

/// The player: aplay is installed (the device itself is only opened to speak: a check
/// says nothing aloud), or the command that stands in for it.
fn player(player: &Player, on_path: impl Fn(&str) -> bool) -> Line {
    match player {
        Player::Aplay(device) if on_path("aplay") => line(
            Level::Ok,
            "speaker",
            format!("aplay on ALSA device {device} (coupond speak-test says a test announcement)"),
        ),
        Player::Aplay(_) => line(
            Level::Fail,
            "speaker",
            "aplay is not installed: apt-get install alsa-utils",
        ),
        Player::Command(cmd) => line(
            Level::Ok,
            "speaker",
            format!("--speaker-cmd {cmd} (its stdin: raw 16 kHz mono S16LE)"),
        ),
    }
}
