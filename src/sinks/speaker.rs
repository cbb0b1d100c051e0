//! `--speaker DEVICE` / `--speaker-cmd CMD`: says applied verifies aloud at the counter
//! (SPEC §14), the way the payment speakers stores already trust do.
//!
//! The words come from [`crate::voice`]; the sound is the voice pack's clips, their
//! samples joined with nothing between them, handed to a player: `aplay` on an ALSA
//! device (Debian's `alsa-utils`; no audio library is linked into coupond, which keeps
//! the binary small and its glibc floor low), or any command that reads raw 16 kHz mono
//! S16LE on its stdin. The player runs contained like a hook (`exec::contained`: a
//! clean environment, its own process group killed whole), and an announcement is done
//! when it exits 0. It is killed at [`PLAY_LIMIT`]: a player stuck on a device held by
//! another program must not hold the queue.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::coupon::Action;
use crate::model::{Job, Task, Work};
use crate::sinks::{exec, Delivered};
use crate::time;
use crate::voice::{self, wav, Token, VoicePack};

/// The longest one announcement may take to be said, and how late after its commit it
/// may still be: a late voice confuses.
pub const PLAY_LIMIT: Duration = Duration::from_secs(60);

/// The speaker's settings: `--speaker` or `--speaker-cmd`, `--voice`, `--speak-actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub player: Player,
    pub voice: PathBuf,
    /// What is said; `--print-actions` does not gate it.
    pub actions: Vec<Action>,
}

/// What plays the samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Player {
    /// `--speaker DEVICE`: `aplay` on that ALSA device.
    Aplay(String),
    /// `--speaker-cmd CMD`: `/bin/sh -c CMD` with the samples on its stdin.
    Command(String),
}

impl Player {
    fn command(&self) -> Command {
        match self {
            Player::Aplay(device) => {
                let mut c = Command::new("aplay");
                c.args([
                    "-q", "-t", "raw", "-f", "S16_LE", "-r", "16000", "-c", "1", "-D",
                ])
                .arg(device);
                c
            }
            Player::Command(cmd) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(cmd);
                c
            }
        }
    }

    /// The player as the log and errors name it.
    pub fn name(&self) -> String {
        match self {
            Player::Aplay(device) => format!("aplay -D {device}"),
            Player::Command(_) => "--speaker-cmd".into(),
        }
    }

    /// Plays `pcm` (16 kHz mono S16LE): done when the player exits 0 within `limit`
    /// (at most [`PLAY_LIMIT`]).
    pub async fn play(&self, pcm: &[u8], limit: Duration) -> Result<(), String> {
        let name = self.name();
        let env = exec::passed_on(|k| std::env::var_os(k));
        let run = exec::contained(self.command(), env, pcm, limit.min(PLAY_LIMIT))
            .await
            .map_err(|e| match (self, e.kind()) {
                (Player::Aplay(_), std::io::ErrorKind::NotFound) => {
                    "cannot start aplay: not installed (apt-get install alsa-utils)".to_string()
                }
                _ => format!("cannot start {name}: {e}"),
            })?;
        run.result(&name, "its limit").map(drop)
    }
}

/// The sink: the player and the voice pack, read once at start.
pub struct Speaker {
    player: Player,
    pack: VoicePack,
}

impl Speaker {
    /// Reads the voice pack, naming each clip it cannot use once, here.
    pub fn new(settings: &Settings) -> Speaker {
        let pack = VoicePack::load(&settings.voice);
        for problem in &pack.problems {
            log::warn!("speaker: voice pack: {problem}; this word is left out when spoken");
        }
        log::info!(
            "speaker: {} with the voice pack in {} ({} of {} clips)",
            settings.player.name(),
            settings.voice.display(),
            pack.usable(),
            Token::ALL.len()
        );
        Speaker {
            player: settings.player.clone(),
            pack,
        }
    }

    /// The outbox's limit for one attempt: over [`PLAY_LIMIT`], so that the player's own
    /// limit (which kills its process group) always acts first.
    pub fn time_limit(&self) -> Duration {
        PLAY_LIMIT + Duration::from_secs(2)
    }

    /// The wait before retry number `attempt`: short, since the announcement is only
    /// worth saying within [`PLAY_LIMIT`] of its commit.
    pub fn retry_wait(attempt: i64) -> Duration {
        const WAITS: [u64; 4] = [1, 2, 4, 8];
        Duration::from_secs(WAITS[(attempt.clamp(1, 4) - 1) as usize])
    }

    /// Says what `job` is about: its coupon's action (and amount, once its details are
    /// known), with 测试 first for a test push; or `coupond speak-test`'s announcement.
    pub async fn deliver(&self, job: &Job) -> Result<Delivered, String> {
        let words = match &job.work {
            Work::Coupon(e) => {
                // What the customer paid, once the details are known (SPEC §13); the
                // outbox holds the job up to --details-wait for them.
                let paid = e.details.as_ref().and_then(|d| d.pay_amount);
                let paid = paid.and_then(|fen| u64::try_from(fen).ok());
                voice::announcement(e.test(), e.action, paid)
            }
            Work::Task(Task::SpeakTest(amount)) => voice::speak_test(*amount),
            // Never queued for the speaker: nothing to say.
            Work::Task(Task::PrintTest | Task::Report) | Work::Report(_) | Work::Relayed => {
                return Ok(Delivered::Done)
            }
        };
        let age = time::now_millis().saturating_sub(job.since_ms).max(0);
        self.say(&words, Duration::from_millis(age as u64)).await
    }

    /// Says `words` for a message committed `age` ago. Past [`PLAY_LIMIT`] it is
    /// dropped unsaid; a player still waiting for a busy device is stopped soon after
    /// the window closes, so a late voice never starts long after it.
    pub async fn say(&self, words: &[Token], age: Duration) -> Result<Delivered, String> {
        let said = voice::hanzi(words);
        if age >= PLAY_LIMIT {
            return Ok(Delivered::Dropped(format!(
                "not said: {}s after the commit, past the {}s an announcement is worth",
                age.as_secs(),
                PLAY_LIMIT.as_secs()
            )));
        }
        let pcm = self.pack.say(words);
        if pcm.is_empty() {
            return Ok(Delivered::Dropped(format!(
                "not said: no clip of {said} could be read (coupond check names them)"
            )));
        }
        let limit = PLAY_LIMIT - age + duration(&pcm) + Duration::from_secs(1);
        self.player.play(&pcm, limit).await?;
        log::info!("speaker: said {said}");
        Ok(Delivered::Done)
    }
}

/// How long `pcm` takes to say.
pub fn duration(pcm: &[u8]) -> Duration {
    Duration::from_millis(pcm.len() as u64 * 1000 / u64::from(wav::RATE * 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_command_gets_exactly_the_samples_on_its_stdin() {
        let dir = std::env::temp_dir().join(format!("coupond-player-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("heard.raw");
        let player = Player::Command(format!("cat > '{}'", out.display()));
        let pcm: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        block_on(player.play(&pcm, PLAY_LIMIT)).unwrap();
        let heard = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(heard == pcm, "{} bytes heard of {}", heard.len(), pcm.len());
    }

    #[test]
    fn a_failing_or_hanging_player_is_an_error_that_names_it() {
        let fail = Player::Command("echo 'Device or resource busy' >&2; exit 1".into());
        let e = block_on(fail.play(b"ab", PLAY_LIMIT)).unwrap_err();
        assert_eq!(
            e,
            "--speaker-cmd exited with status 1: Device or resource busy"
        );
        let hang = Player::Command("sleep 30".into());
        let e = block_on(hang.play(b"ab", Duration::from_millis(200))).unwrap_err();
        assert!(e.contains("ran past its limit"), "{e}");
    }

    #[test]
    fn an_announcement_is_said_within_a_minute_of_its_commit_or_dropped_with_a_note() {
        let dir = std::env::temp_dir().join(format!("coupond-speaker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, t) in Token::ALL.iter().enumerate() {
            std::fs::write(dir.join(t.file_name()), wav::encode(&[i as u8, 1], &[])).unwrap();
        }
        let heard = dir.join("heard");
        let speaker = Speaker::new(&Settings {
            player: Player::Command(format!("cat >> '{}'", heard.display())),
            voice: dir.clone(),
            actions: vec![Action::Verify],
        });
        let words = [Token::Douyin, Token::Verify, Token::Digit(2), Token::Yuan];
        let said = block_on(speaker.say(&words, Duration::from_secs(59)));
        let late = block_on(speaker.say(&words, PLAY_LIMIT));
        let bytes = std::fs::read(&heard).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(said, Ok(Delivered::Done));
        assert_eq!(bytes, [18, 1, 19, 1, 2, 1, 17, 1]);
        let Ok(Delivered::Dropped(note)) = late else {
            panic!("{late:?}")
        };
        assert!(note.contains("not said: 60s after the commit"), "{note}");
        // A pack with no clip at all says nothing, and that is no reason to retry.
        let empty = Speaker::new(&Settings {
            player: Player::Command("exit 1".into()),
            voice: dir.join("none"),
            actions: vec![],
        });
        let nothing = block_on(empty.say(&words, Duration::ZERO));
        assert!(
            matches!(nothing, Ok(Delivered::Dropped(n)) if n.contains("no clip of 抖音核销成功二元"))
        );
    }

    #[test]
    fn retries_come_soon_since_the_window_is_a_minute() {
        let waits: Vec<u64> = (0..7).map(|a| Speaker::retry_wait(a).as_secs()).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn the_length_of_samples_is_16000_two_byte_samples_a_second() {
        assert_eq!(duration(&[0; 32_000]), Duration::from_secs(1));
        assert_eq!(duration(&[0; 8_000]), Duration::from_millis(250));
    }
}
