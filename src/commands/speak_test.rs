//! `coupond speak-test [--amount FEN]`: says 测试 抖音 核销成功 [AMOUNT 元] to check the
//! speaker, its volume and the voice pack (SPEC §14).
//!
//! As `print-test` does for the printer: when a daemon runs on the same database (it
//! holds the [`DaemonLock`]) the announcement goes through its outbox as a `speaker` job,
//! so two announcements never talk over each other, and this command waits to hear it
//! was said; otherwise it plays it straight away. It needs only the database, voice and
//! speaker settings (no client key).

use crate::config::SpeakTestConfig;
use crate::coupon::Action;
use crate::sinks::speaker::{self, Player};
use crate::voice::{self, VoicePack};

pub fn run(cfg: &SpeakTestConfig) -> Result<(), String> {
    let words = voice::announcement(true, Action::Verify, cfg.amount);
    let pack = VoicePack::load(&cfg.voice);
    for problem in &pack.problems {
        eprintln!("coupond: voice pack: {problem}; left out");
    }
    let pcm = pack.say(&words);
    if pcm.is_empty() {
        return Err(format!(
            "nothing to say: no usable clip in --voice {} (coupond check names them)",
            cfg.voice.display()
        ));
    }
    say_now(&cfg.player, &pcm)?;
    println!(
        "said {} on {} ({:.1} s)",
        voice::hanzi(&words),
        cfg.player.name(),
        speaker::duration(&pcm).as_secs_f64()
    );
    Ok(())
}

fn say_now(player: &Player, pcm: &[u8]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(player.play(pcm, speaker::PLAY_LIMIT))
}
