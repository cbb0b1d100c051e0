//! The spoken announcement (SPEC §14): the default voice pack as shipped, and the
//! speaker sink of the real daemon, its samples captured by `--speaker-cmd` and decoded
//! back to words.

mod common;

use std::path::Path;
use std::process::Command;

use coupond::voice::{wav, Token, VoicePack};

fn repo_voice() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("voice")
}

/// Root mean square and peak of little-endian 16-bit samples.
fn loudness(pcm: &[u8]) -> (f64, i32) {
    let samples: Vec<i32> = pcm
        .chunks_exact(2)
        .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
        .collect();
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len().max(1) as f64).sqrt();
    (rms, samples.iter().map(|s| s.abs()).max().unwrap_or(0))
}

#[test]
fn the_default_voice_pack_has_every_clip_in_the_right_format_short_and_not_silent() {
    let dir = repo_voice();
    let pack = VoicePack::load(&dir);
    assert!(pack.problems.is_empty(), "{:#?}", pack.problems);
    for token in Token::ALL {
        let path = dir.join(token.file_name());
        let pcm = wav::samples(&std::fs::read(&path).unwrap()).unwrap();
        let seconds = pcm.len() as f64 / f64::from(wav::RATE * 2);
        // A syllable takes a tenth of a second at least; a four-syllable phrase less
        // than two.
        assert!(
            (0.1..2.0).contains(&seconds),
            "{}: {seconds} s",
            path.display()
        );
        let (rms, peak) = loudness(&pcm);
        assert!(
            rms > 1000.0 && peak > 8000,
            "{}: sounds like silence (rms {rms:.0}, peak {peak})",
            path.display()
        );
    }
}

/// The installed version of `tool`, as make-voice writes it in VERSIONS.
fn version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = match tool {
        "espeak-ng" => text
            .split("text-to-speech: ")
            .nth(1)?
            .split_whitespace()
            .next()?,
        _ => text.split("SoX v").nth(1)?.trim(),
    };
    Some(format!("{tool} {v}"))
}

#[test]
fn the_voice_pack_is_what_make_voice_makes() {
    let dir = repo_voice();
    let recorded = std::fs::read_to_string(dir.join("VERSIONS")).unwrap();
    let tools: Vec<Option<String>> = ["espeak-ng", "sox"].map(version).into();
    if tools
        .iter()
        .any(|t| t.as_ref().is_none_or(|t| !recorded.contains(t.as_str())))
    {
        // Another espeak-ng or sox may make other bytes; the format test above still
        // holds the pack to SPEC.
        eprintln!("SKIPPED: the voice pack was made with\n{recorded}here: {tools:?}");
        return;
    }
    let out = common::Scratch::new("make-voice");
    let status = Command::new(dir.join("make-voice"))
        .arg(&out.0)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for token in Token::ALL {
        let name = token.file_name();
        let made = std::fs::read(out.path(name)).unwrap();
        let shipped = std::fs::read(dir.join(name)).unwrap();
        assert!(
            made == shipped,
            "voice/{name} differs from what make-voice makes"
        );
    }
}

#[test]
fn the_package_ships_the_voice_pack_and_recommends_alsa_utils() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for line in [
        r#"recommends = "alsa-utils""#,
        r#"["voice/*.wav", "usr/share/coupond/voice/", "644"]"#,
        r#"["voice/make-voice", "usr/share/coupond/voice/make-voice", "755"]"#,
    ] {
        assert!(manifest.contains(line), "Cargo.toml lacks {line}");
    }
    assert_eq!(coupond::voice::DEFAULT_DIR, "/usr/share/coupond/voice");
}
