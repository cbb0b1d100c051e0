//! `coupond check`'s lines for the speaker (SPEC §14): the voice pack's clips, and the
//! player. Nothing is said: `coupond speak-test` does that.

use std::path::PathBuf;

use crate::commands::sandbox::Sandbox;
use crate::commands::verdict::{line, Level, Line};
use crate::sinks::speaker::{Player, Settings};
use crate::voice::{Token, VoicePack};

/// The voice and speaker lines, for a configuration with a speaker; `sandbox`: the
/// installed unit, to judge paths and devices as the service sees them.
pub fn lines(speaker: &Settings, sandbox: Option<&Sandbox>) -> Vec<Line> {
    let hidden = sandbox.and_then(|s| Some((s, s.visible(&speaker.voice).err()?)));
    let mut out = match hidden {
        Some((s, r)) => vec![line(
            Level::Fail,
            "voice",
            format!(
                "{} is {} ({} in {}): put the clips in /etc/coupond/voice",
                speaker.voice.display(),
                r.why,
                r.setting,
                s.source()
            ),
        )],
        None => voice(&VoicePack::load(&speaker.voice)),
    };
    out.push(player(&speaker.player, |p| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(p).is_file()))
    }));
    if let Player::Aplay(device) = &speaker.player {
        out.extend(sound_device(device, sandbox));
    }
    out
}

/// The `/dev/snd` playback node of an ALSA device named by card and device number
/// (`plughw:1,0`, `hw:1`); `None` for a name (`default`, `plughw:CARD=Speaker,DEV=0`),
/// which only ALSA's configuration resolves.
fn pcm_node(device: &str) -> Option<PathBuf> {
    let (_, numbers) = device.split_once(':')?;
    let (card, dev) = numbers.split_once(',').unwrap_or((numbers, "0"));
    let (card, dev): (u32, u32) = (card.parse().ok()?, dev.parse().ok()?);
    Some(PathBuf::from(format!("/dev/snd/pcmC{card}D{dev}p")))
}

/// A device named by number: it is there, the unit lets the service open it, and the
/// service's user may (group audio).
fn sound_device(device: &str, sandbox: Option<&Sandbox>) -> Option<Line> {
    let node = pcm_node(device)?;
    let fail = |why: String| Some(line(Level::Fail, "speaker", why));
    if !node.exists() {
        return fail(format!(
            "{device}: no {} on this box (aplay -l lists the cards and devices)",
            node.display()
        ));
    }
    let s = sandbox?;
    if let Err(why) = s.device(&node).and_then(|()| s.user_may_write(&node)) {
        return fail(format!("{device} ({}): {why}", node.display()));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_by_number_has_a_playback_node_and_a_name_has_none() {
        let node = |d| pcm_node(d).map(|p| p.display().to_string());
        assert_eq!(node("plughw:1,0").as_deref(), Some("/dev/snd/pcmC1D0p"));
        assert_eq!(node("hw:0,3").as_deref(), Some("/dev/snd/pcmC0D3p"));
        assert_eq!(node("plughw:2").as_deref(), Some("/dev/snd/pcmC2D0p"));
        for named in [
            "default",
            "null",
            "plughw:CARD=Speaker,DEV=0",
            "sysdefault:CARD=1",
            "hw:x,0",
        ] {
            assert_eq!(node(named), None, "{named}");
        }
    }
}
