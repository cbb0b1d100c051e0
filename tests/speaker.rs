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

/// SPEC §14's clip names and the words they say, written out here rather than taken from
/// the code under test.
const CLIPS: [(&str, &str); 23] = [
    ("0.wav", "零"),
    ("1.wav", "一"),
    ("2.wav", "二"),
    ("3.wav", "三"),
    ("4.wav", "四"),
    ("5.wav", "五"),
    ("6.wav", "六"),
    ("7.wav", "七"),
    ("8.wav", "八"),
    ("9.wav", "九"),
    ("10.wav", "十"),
    ("100.wav", "百"),
    ("1000.wav", "千"),
    ("10000.wav", "万"),
    ("100000000.wav", "亿"),
    ("liang.wav", "两"),
    ("dian.wav", "点"),
    ("yuan.wav", "元"),
    ("douyin.wav", "抖音"),
    ("verify.wav", "核销成功"),
    ("verify_cancel.wav", "撤销核销"),
    ("refund_success.wav", "退款成功"),
    ("test.wav", "测试"),
];

/// A voice pack of distinct tones, one per clip, made by the test in `dir`: each clip
/// a sine of its own pitch and length, so the samples a player gets can be decoded
/// back to the words, exactly.
struct TonePack {
    clips: Vec<(&'static str, Vec<u8>)>,
}

impl TonePack {
    fn write(dir: &Path) -> TonePack {
        std::fs::create_dir_all(dir).unwrap();
        let clips = CLIPS
            .iter()
            .enumerate()
            .map(|(i, (file, word))| {
                let hz = 300.0 + 40.0 * i as f64;
                let n = 400 + 16 * i;
                let pcm: Vec<u8> = (0..n)
                    .flat_map(|k| {
                        let t = k as f64 / f64::from(wav::RATE);
                        let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
                        s.to_le_bytes()
                    })
                    .collect();
                // A LIST chunk, as recorders write, which the reader must skip.
                let file_bytes = wav::encode(&pcm, &[(b"LIST", b"INFOISFT\x04\0\0\0test")]);
                std::fs::write(dir.join(file), file_bytes).unwrap();
                (*word, pcm)
            })
            .collect();
        TonePack { clips }
    }

    /// The words `pcm` is made of, joined; panics naming the offset where no clip fits.
    fn decode(&self, pcm: &[u8]) -> String {
        let mut words = String::new();
        let mut at = 0;
        while at < pcm.len() {
            let (word, clip) = self
                .clips
                .iter()
                .find(|(_, clip)| pcm[at..].starts_with(clip))
                .unwrap_or_else(|| panic!("no clip at byte {at} of {} (after {words})", pcm.len()));
            words += word;
            at += clip.len();
        }
        words
    }
}

/// `coupond speak-test` with `args`, its samples captured by `--speaker-cmd`.
fn speak_test(dir: &Path, args: &[&str]) -> (std::process::Output, Vec<u8>) {
    let heard = dir.join("heard.raw");
    let _ = std::fs::remove_file(&heard);
    let cmd = format!("cat > '{}'", heard.display());
    let mut all = vec!["speak-test", "--speaker-cmd", &cmd];
    all.extend_from_slice(args);
    let out = common::run(&all, &[]);
    (out, std::fs::read(&heard).unwrap_or_default())
}

#[test]
fn speak_test_says_test_douyin_verify_and_the_amount_read_as_mandarin() {
    let dir = common::Scratch::new("speak-test");
    let pack = TonePack::write(&dir.path("voice"));
    let voice = dir.path("voice");
    let voice = voice.to_str().unwrap();
    let db = dir.path("coupond.db");
    let db = db.to_str().unwrap();
    for (fen, said) in [
        (None, ""),
        (Some("9900"), "九十九元"),
        (Some("0"), "零元"),
        (Some("1"), "零点零一元"),
        (Some("50"), "零点五元"),
        (Some("1005"), "十点零五元"),
        (Some("12350"), "一百二十三点五元"),
        (Some("20000"), "两百元"),
        (Some("200500"), "两千零五元"),
        (Some("220000"), "两千两百元"),
        (Some("2000000"), "两万元"),
        (Some("12000000"), "十二万元"),
        (Some("1000005"), "一万点零五元"),
        (Some("200020000"), "两百万零两百元"),
        (Some("10000000000"), "一亿元"),
        (
            Some("123456789012"),
            "十二亿三千四百五十六万七千八百九十点一二元",
        ),
    ] {
        let mut args = vec!["--voice", voice, "--db", db];
        if let Some(fen) = fen {
            args.extend(["--amount", fen]);
        }
        let (out, heard) = speak_test(&dir.0, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{fen:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("测试抖音核销成功{said}");
        assert_eq!(pack.decode(&heard), want, "{fen:?}");
        assert!(stdout.contains(&want), "{stdout}");
    }
}

#[test]
fn a_missing_or_malformed_clip_is_named_and_left_out_when_spoken() {
    let dir = common::Scratch::new("speak-test-gaps");
    let pack = TonePack::write(&dir.path("voice"));
    std::fs::remove_file(dir.path("voice/yuan.wav")).unwrap();
    // 44.1 kHz stereo: a common recording that must be converted first.
    let mut stereo = std::fs::read(dir.path("voice/9.wav")).unwrap();
    stereo[22] = 2;
    stereo[24..28].copy_from_slice(&44100u32.to_le_bytes());
    std::fs::write(dir.path("voice/9.wav"), stereo).unwrap();
    let voice = dir.path("voice");
    let db = dir.path("coupond.db");
    let (out, heard) = speak_test(
        &dir.0,
        &[
            "--voice",
            voice.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--amount",
            "9900",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(pack.decode(&heard), "测试抖音核销成功十");
    assert!(
        stderr.contains("9.wav (九): ") && stderr.contains("44100 Hz"),
        "{stderr}"
    );
    assert!(stderr.contains("yuan.wav (元): missing"), "{stderr}");
}

#[test]
fn speak_test_plays_through_aplay_on_alsas_null_device() {
    // ./run-tests installs alsa-utils; ALSA's null device needs no sound card.
    let dir = common::Scratch::new("speak-test-aplay");
    let db = dir.path("coupond.db");
    let voice = repo_voice();
    let out = common::run(
        &[
            "speak-test",
            "--speaker",
            "null",
            "--voice",
            voice.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--amount",
            "9900",
        ],
        &[],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("said 测试抖音核销成功九十九元 on aplay -D null"),
        "{text}"
    );
}

#[test]
fn aplay_is_given_raw_16_khz_mono_s16le_for_the_device_and_a_failure_is_an_error() {
    let dir = common::Scratch::new("speak-test-fake-aplay");
    let pack = TonePack::write(&dir.path("voice"));
    // A stand-in aplay first on PATH: it records its arguments and what it was given.
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}/args'\ncat > '{0}/heard.raw'\n[ -e '{0}/fail' ] || exit 0\necho 'aplay: main:831: audio open error: Device or resource busy' >&2\nexit 1\n",
        dir.0.display()
    );
    std::fs::write(bin.join("aplay"), script).unwrap();
    std::fs::set_permissions(
        bin.join("aplay"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let voice = dir.path("voice");
    let db = dir.path("coupond.db");
    let args = [
        "speak-test",
        "--speaker",
        "plughw:CARD=Speaker,DEV=0",
        "--voice",
        voice.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    let out = common::run(&args, &[("PATH", &path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let argv = std::fs::read_to_string(dir.path("args")).unwrap();
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        [
            "-q",
            "-t",
            "raw",
            "-f",
            "S16_LE",
            "-r",
            "16000",
            "-c",
            "1",
            "-D",
            "plughw:CARD=Speaker,DEV=0"
        ]
    );
    assert_eq!(
        pack.decode(&std::fs::read(dir.path("heard.raw")).unwrap()),
        "测试抖音核销成功"
    );
    std::fs::write(dir.path("fail"), "").unwrap();
    let out = common::run(&args, &[("PATH", &path)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Device or resource busy"), "{stderr}");
}

/// `coupond check` with the speaker's settings, and the environment `env`.
fn check(dir: &Path, speaker: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{}\n", common::SECRET)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (db, secret) = (dir.join("coupond.db"), secret.to_str().unwrap().to_string());
    let mut args = vec![
        "check",
        "--client-key",
        common::CLIENT_KEY,
        "--secret-file",
        &secret,
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(speaker);
    let out = common::run(&args, env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_names_each_missing_or_malformed_clip_and_a_missing_aplay() {
    let dir = common::Scratch::new("check-voice");
    let voice = repo_voice();
    let (ok, text) = check(
        &dir.0,
        &["--speaker", "null", "--voice", voice.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{text}");
    assert!(text.contains("ok    voice     23 clips in"), "{text}");
    assert!(
        text.contains("ok    speaker   aplay on ALSA device null"),
        "{text}"
    );

    TonePack::write(&dir.path("voice"));
    std::fs::remove_file(dir.path("voice/liang.wav")).unwrap();
    std::fs::write(
        dir.path("voice/douyin.wav"),
        b"ID3\x04 an mp3 saved as .wav",
    )
    .unwrap();
    let voice = dir.path("voice");
    let empty = dir.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, text) = check(
        &dir.0,
        &[
            "--speaker",
            "plughw:CARD=Speaker,DEV=0",
            "--voice",
            voice.to_str().unwrap(),
        ],
        &[("PATH", empty.to_str().unwrap())],
    );
    assert!(!ok, "{text}");
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 3, "{text}");
    assert!(fails[0].contains("liang.wav (两): missing"), "{text}");
    assert!(
        fails[1].contains("douyin.wav (抖音): not a WAV file"),
        "{text}"
    );
    assert!(
        fails[2].contains("aplay is not installed: apt-get install alsa-utils"),
        "{text}"
    );

    // A voice directory that is not there is one line, not one per clip.
    let (ok, text) = check(
        &dir.0,
        &["--speaker-cmd", "cat", "--voice", "/nonexistent"],
        &[],
    );
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(!ok && fails.len() == 1, "{text}");
    assert!(
        fails[0].contains("/nonexistent: no such directory"),
        "{text}"
    );

    // Without a speaker the voice pack is not looked at.
    let (ok, text) = check(&dir.0, &["--voice", "/nonexistent"], &[]);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.get(6..15).unwrap_or("").trim())
        .collect();
    assert!(
        ok && !lines.contains(&"voice") && !lines.contains(&"speaker"),
        "{text}"
    );
}

/// A `--speaker-cmd` that keeps each announcement it is given, in order, as
/// `NNNN.raw` in `dir` (written under another name first, so a file that shows is whole).
struct Ears {
    dir: std::path::PathBuf,
}

impl Ears {
    fn new(dir: std::path::PathBuf) -> Ears {
        std::fs::create_dir_all(&dir).unwrap();
        Ears { dir }
    }

    fn cmd(&self) -> String {
        let d = self.dir.display();
        format!(
            "n=$(printf %04d $(ls '{d}' | grep -c 'raw$')); cat > '{d}/part' && mv '{d}/part' '{d}/'$n.raw"
        )
    }

    fn heard(&self, pack: &TonePack) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "raw"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| pack.decode(&std::fs::read(p).unwrap()))
            .collect()
    }
}

/// A daemon whose speaker is `Ears`, with a tone voice pack, and `extra` flags.
fn speaking_daemon(dir: &common::Scratch, extra: &[&str]) -> (common::Daemon, Ears, TonePack) {
    let pack = TonePack::write(&dir.path("voice"));
    let ears = Ears::new(dir.path("heard"));
    let voice = dir.path("voice");
    let opts = common::Opts::default()
        .args(&[
            "--speaker-cmd",
            &ears.cmd(),
            "--voice",
            voice.to_str().unwrap(),
        ])
        .args(extra);
    (common::Daemon::start_with(&dir.0, opts), ears, pack)
}

/// `(state, attempts, last_error)` of each speaker job, oldest first.
fn speaker_jobs(d: &common::Daemon) -> Vec<(String, i64, Option<String>)> {
    common::outputs(d, "speaker")
}

#[test]
fn applied_verifies_are_said_in_order_and_nothing_else_is() {
    let dir = common::Scratch::new("speaker-verifies");
    let (d, ears, pack) = speaking_daemon(&dir, &["--print-actions", "refund_success"]);
    let t = 1_700_000_000;
    for (action, at, cert) in [
        ("verify", t, "S-1"),
        ("verify", t + 1, "S-2"),
        ("verify_cancel", t + 2, "S-1"),
        // Stale (older than the cancel): recorded, never said.
        ("verify", t - 10, "S-1"),
        ("refund_success", t + 3, "S-2"),
        ("verify", t + 4, "S-3"),
    ] {
        assert_eq!(d.push(&common::coupon(action, at, cert)).status, 200);
    }
    // A redelivery is no new announcement.
    assert_eq!(d.push(&common::coupon("verify", t + 4, "S-3")).status, 200);
    common::wait_until(
        "three announcements",
        std::time::Duration::from_secs(20),
        || speaker_jobs(&d).iter().filter(|j| j.0 == "done").count() == 3,
    );
    assert_eq!(ears.heard(&pack), ["抖音核销成功"; 3]);
    assert_eq!(speaker_jobs(&d).len(), 3, "{}", d.log_text());
    assert!(
        d.log_text().contains("speaker: said 抖音核销成功"),
        "{}",
        d.log_text()
    );
}

#[test]
fn speak_actions_choose_what_is_said_and_a_test_push_says_test_first() {
    let dir = common::Scratch::new("speaker-actions");
    let (d, ears, pack) =
        speaking_daemon(&dir, &["--speak-actions", "verify_cancel,refund_success"]);
    let secret = d.dir.join("secret");
    let url = d.url();
    for args in [
        vec!["--certificate-id", "T-1"],
        vec!["--certificate-id", "T-1", "--action", "verify_cancel"],
        vec!["--certificate-id", "T-2", "--action", "refund_success"],
    ] {
        let out = common::send(&url, &secret, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    common::wait_until(
        "two announcements",
        std::time::Duration::from_secs(20),
        || ears.heard(&pack).len() == 2,
    );
    assert_eq!(ears.heard(&pack), ["测试抖音撤销核销", "测试抖音退款成功"]);
}

#[test]
fn a_speaker_that_hangs_or_fails_never_delays_a_webhook_answer_and_is_retried() {
    let dir = common::Scratch::new("speaker-hangs");
    let pack = TonePack::write(&dir.path("voice"));
    let ears = Ears::new(dir.path("heard"));
    let (started, release) = (dir.path("started"), dir.path("release"));
    // The first announcement hangs until the test releases it; the next attempt of
    // the one after fails once; then everything is heard.
    let cmd = format!(
        "if [ ! -e '{s}' ]; then touch '{s}'; while [ ! -e '{r}' ]; do sleep 0.05; done; exit 1; fi; \
         if [ ! -e '{s}.2' ]; then touch '{s}.2'; echo 'Device or resource busy' >&2; exit 1; fi; {}",
        ears.cmd(),
        s = started.display(),
        r = release.display()
    );
    let voice = dir.path("voice");
    let opts =
        common::Opts::default().args(&["--speaker-cmd", &cmd, "--voice", voice.to_str().unwrap()]);
    let d = common::Daemon::start_with(&dir.0, opts);
    assert_eq!(
        d.push(&common::coupon("verify", 1_700_000_000, "H-1"))
            .status,
        200
    );
    common::wait_until(
        "the speaker to hang",
        std::time::Duration::from_secs(20),
        || started.exists(),
    );
    // While it hangs, pushes are answered, and their announcements wait their turn.
    for (i, cert) in ["H-2", "H-3"].iter().enumerate() {
        let r = d.push(&common::coupon("verify", 1_700_000_001 + i as i64, cert));
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(!release.exists() && ears.heard(&pack).is_empty());
    std::fs::write(&release, "").unwrap();
    common::wait_until(
        "every announcement said",
        std::time::Duration::from_secs(30),
        || speaker_jobs(&d).iter().all(|j| j.0 == "done"),
    );
    assert_eq!(ears.heard(&pack), ["抖音核销成功"; 3]);
    let jobs = speaker_jobs(&d);
    assert_eq!(jobs[0].1, 3, "hung, busy, said: {jobs:?}");
    let log = d.log_text();
    assert!(log.contains("Device or resource busy"), "{log}");
    assert_eq!((jobs[1].1, jobs[2].1), (1, 1), "{jobs:?}");
}

#[test]
fn an_announcement_not_said_within_a_minute_of_its_commit_is_dropped_with_a_note() {
    let dir = common::Scratch::new("speaker-late");
    let pack = TonePack::write(&dir.path("voice"));
    let ears = Ears::new(dir.path("heard"));
    let unplugged = dir.path("unplugged");
    std::fs::write(&unplugged, "").unwrap();
    let cmd = format!(
        "if [ -e '{u}' ]; then echo 'aplay: main:831: audio open error: No such file or directory' >&2; exit 1; fi; {}",
        ears.cmd(),
        u = unplugged.display()
    );
    let voice = dir.path("voice");
    let opts =
        common::Opts::default().args(&["--speaker-cmd", &cmd, "--voice", voice.to_str().unwrap()]);
    let d = common::Daemon::start_with(&dir.0, opts);
    assert_eq!(
        d.push(&common::coupon("verify", 1_700_000_000, "L-1"))
            .status,
        200
    );
    common::wait_until(
        "a failed attempt",
        std::time::Duration::from_secs(20),
        || speaker_jobs(&d).first().is_some_and(|j| j.1 >= 1),
    );
    // A minute passes (the job's commit moved back), then the speaker is plugged in:
    // the old news is not said, the job is done with a note.
    d.sql()
        .execute(
            "UPDATE outputs SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-61 seconds')
             WHERE sink = 'speaker'",
            [],
        )
        .unwrap();
    std::fs::remove_file(&unplugged).unwrap();
    common::wait_until(
        "the late job dropped",
        std::time::Duration::from_secs(30),
        || speaker_jobs(&d).first().is_some_and(|j| j.0 == "done"),
    );
    let (_, _, note) = &speaker_jobs(&d)[0];
    assert!(
        note.as_deref().unwrap_or("").contains("not said: 6"),
        "{note:?}"
    );
    assert!(ears.heard(&pack).is_empty());
    // The next one is said.
    assert_eq!(
        d.push(&common::coupon("verify", 1_700_000_001, "L-2"))
            .status,
        200
    );
    common::wait_until("the next said", std::time::Duration::from_secs(20), || {
        ears.heard(&pack).len() == 1
    });
}

#[test]
fn a_coupon_recovered_by_catch_up_is_never_said() {
    use common::fake_douyin::{FakeDouyin, FakeRecord};
    let fake = FakeDouyin::start(common::CLIENT_KEY, common::SECRET);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Catch-up sweeps up to a minute ago.
    fake.add(FakeRecord::verified("7001000000000000009", t - 300));
    let dir = common::Scratch::new("speaker-catchup");
    let catchup = common::catchup_opts(&fake);
    let (d, ears, pack) = speaking_daemon(
        &dir,
        &catchup.args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    common::wait_until(
        "the recovered coupon logged",
        std::time::Duration::from_secs(20),
        || common::outputs(&d, "log").iter().any(|j| j.0 == "done"),
    );
    // A push after it is said: the speaker works, and the recovered one had no job.
    assert_eq!(d.push(&common::coupon("verify", t, "R-2")).status, 200);
    common::wait_until("the push said", std::time::Duration::from_secs(20), || {
        ears.heard(&pack).len() == 1
    });
    assert_eq!(speaker_jobs(&d).len(), 1, "{}", d.log_text());
    assert_eq!(
        common::query_i64(
            &d.sql(),
            "SELECT count(*) FROM outputs o JOIN messages m ON m.id = o.message_id
             WHERE o.sink = 'speaker' AND m.source = 'reconcile'"
        ),
        0
    );
}

#[test]
fn speak_test_goes_through_the_running_daemons_speaker_and_is_recorded_either_way() {
    let dir = common::Scratch::new("speak-test-daemon");
    let (mut d, ears, pack) = speaking_daemon(&dir, &[]);
    let db = d.db.to_str().unwrap().to_string();
    // No speaker flag: the daemon's own speaker and voice pack say it.
    let out = common::run(&["speak-test", "--db", &db, "--amount", "9900"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("queued the test announcement (测试抖音核销成功九十九元)"),
        "{stdout}"
    );
    assert!(stdout.contains("said by the running daemon"), "{stdout}");
    assert_eq!(ears.heard(&pack), ["测试抖音核销成功九十九元"]);
    // A push queued behind it is said after it.
    assert_eq!(
        d.push(&common::coupon("verify", 1_700_000_000, "ST-1"))
            .status,
        200
    );
    common::wait_until("the push said", std::time::Duration::from_secs(20), || {
        ears.heard(&pack).len() == 2
    });
    assert_eq!(d.terminate(), Some(0));

    // With no daemon, it is said directly and recorded as a job about no message.
    let voice = dir.path("voice");
    let (out, heard) = speak_test(
        &dir.0,
        &[
            "--db",
            &db,
            "--voice",
            voice.to_str().unwrap(),
            "--amount",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pack.decode(&heard), "测试抖音核销成功零点零一元");
    let c = common::open_db(std::path::Path::new(&db));
    let rows: Vec<(Option<i64>, Option<String>, String, String)> = c
        .prepare(
            "SELECT message_id, work, state, sink FROM outputs WHERE work IS NOT NULL ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want = |w: &str| {
        (
            None,
            Some(w.to_string()),
            "done".to_string(),
            "speaker".to_string(),
        )
    };
    assert_eq!(rows, [want("speak_test:9900"), want("speak_test:1")]);
}

#[test]
fn speak_test_without_a_daemon_or_a_speaker_says_what_it_needs() {
    let dir = common::Scratch::new("speak-test-none");
    let db = dir.path("coupond.db");
    let out = common::run(&["speak-test", "--db", db.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs --speaker DEVICE or --speaker-cmd CMD"),
        "{stderr}"
    );
}

#[test]
fn the_daemon_says_a_verify_through_aplay_on_alsas_null_device() {
    // ./run-tests installs alsa-utils; ALSA's null device needs no sound card.
    let dir = common::Scratch::new("speaker-aplay");
    let voice = repo_voice();
    let opts =
        common::Opts::default().args(&["--speaker", "null", "--voice", voice.to_str().unwrap()]);
    let d = common::Daemon::start_with(&dir.0, opts);
    assert_eq!(
        d.push(&common::coupon("verify", 1_700_000_000, "A-1"))
            .status,
        200
    );
    common::wait_until(
        "the announcement played",
        std::time::Duration::from_secs(20),
        || speaker_jobs(&d).first().is_some_and(|j| j.0 == "done"),
    );
    assert_eq!(
        speaker_jobs(&d)[0],
        ("done".to_string(), 1, None),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.contains("speaker: aplay -D null with the voice pack in")
            && log.contains("(23 of 23 clips)"),
        "{log}"
    );
    assert!(log.contains("speaker: said 抖音核销成功"), "{log}");
}

#[test]
fn speak_test_beside_a_daemon_without_a_speaker_says_it_directly_and_says_so() {
    let dir = common::Scratch::new("speak-test-no-speaker");
    let d = common::Daemon::start(&dir.0);
    let pack = TonePack::write(&dir.path("voice"));
    let voice = dir.path("voice");
    let db = d.db.to_str().unwrap().to_string();
    let (out, heard) = speak_test(&dir.0, &["--db", &db, "--voice", voice.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the running coupond has no speaker"),
        "{stdout}"
    );
    assert_eq!(pack.decode(&heard), "测试抖音核销成功");
}

#[test]
fn check_judges_the_voice_pack_and_the_sound_device_as_the_installed_unit_sees_them() {
    let dir = common::Scratch::new("check-speaker-unit");
    let secret = dir.path("secret");
    std::fs::write(&secret, format!("{}\n", common::SECRET)).unwrap();
    let config = dir.path("coupond.env");
    std::fs::write(
        &config,
        format!(
            "COUPOND_CLIENT_KEY={}\nCOUPOND_SECRET_FILE={}\nCOUPOND_LISTEN=127.0.0.1:0\n\
             COUPOND_SPEAKER=plughw:7,0\nCOUPOND_VOICE=/tmp/coupond-voice-{}\n",
            common::CLIENT_KEY,
            secret.display(),
            std::process::id()
        ),
    )
    .unwrap();
    // The repository's unit, reading this settings file.
    let units = dir.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/coupond.service"),
    )
    .unwrap()
    .replace(
        "ExecStart=/usr/bin/coupond serve",
        &format!(
            "ExecStart=/usr/bin/coupond serve --config {}",
            config.display()
        ),
    );
    std::fs::write(units.join("coupond.service"), unit).unwrap();
    let out = common::run(
        &["check", "--config", config.to_str().unwrap()],
        &[("SYSTEMD_UNIT_PATH", units.to_str().unwrap())],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let voice = text
        .lines()
        .find(|l| l.starts_with("FAIL  voice"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        voice.contains("private /tmp") && voice.contains("/etc/coupond/voice"),
        "{voice}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("FAIL  voice"))
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  speaker")
                && l.contains("plughw:7,0: no /dev/snd/pcmC7D0p")),
        "{text}"
    );
}

#[test]
fn the_amount_said_is_what_the_customer_paid_from_the_coupons_details() {
    use common::fake_douyin::{FakeDeal, FakeDouyin, ACCOUNT};
    let fake = FakeDouyin::start(common::CLIENT_KEY, common::SECRET);
    let deals = [
        ("D-1", 9900, "九十九元"),
        ("D-2", 1005, "十点零五元"),
        ("D-3", 20_020_000, "二十万零两百元"),
    ];
    for (cert, pay, _) in deals {
        fake.sell(FakeDeal::new(
            cert,
            &format!("O-{cert}"),
            "套餐",
            pay,
            pay + 100,
        ));
    }
    let dir = common::Scratch::new("speaker-details");
    let catchup = common::catchup_opts(&fake);
    let (d, ears, pack) = speaking_daemon(
        &dir,
        &catchup.args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let push = |cert: &str, at: i64| {
        let content = serde_json::json!({
            "action": "verify", "msg_time": at,
            "certificate": {"certificate_id": cert, "order_id": format!("O-{cert}"), "account_id": ACCOUNT},
        });
        let body = format!(
            r#"{{"event":"life_trade_certificate_notify","client_key":"{}","content":{}}}"#,
            common::CLIENT_KEY,
            serde_json::Value::String(content.to_string())
        );
        assert_eq!(d.push(&body).status, 200);
    };
    for (i, (cert, _, _)) in deals.iter().enumerate() {
        push(cert, 1_700_000_000 + i as i64);
    }
    // Douyin does not know this one: said without an amount once the answer is in.
    push("D-4", 1_700_000_010);
    common::wait_until(
        "four announcements",
        std::time::Duration::from_secs(60),
        || ears.heard(&pack).len() == 4,
    );
    let mut want: Vec<String> = deals
        .iter()
        .map(|(_, _, said)| format!("抖音核销成功{said}"))
        .collect();
    want.push("抖音核销成功".into());
    assert_eq!(ears.heard(&pack), want, "{}", d.log_text());
}
