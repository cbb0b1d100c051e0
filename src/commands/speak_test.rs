//! `coupond speak-test [--amount FEN]`: says 测试 抖音 核销成功 [AMOUNT 元] to check the
//! speaker, its volume and the voice pack (SPEC §14).
//!
//! As `print-test` does for the printer: when a daemon runs on the same database (it
//! holds the [`DaemonLock`]) and has a speaker, the announcement goes through its outbox
//! as a `speaker` job about no message (`Task::SpeakTest`), said with the daemon's own
//! speaker and voice pack in turn with the coupons (two announcements never talk over
//! each other), and this command waits to hear it was said. Otherwise it says it
//! straight away with the speaker and voice pack given here. Either way it is recorded
//! as an output job when a database exists. It needs only the database, voice and
//! speaker settings (no client key).

use std::time::{Duration, Instant};

use crate::commands::serve::{DaemonLock, RunningDaemon};
use crate::config::SpeakTestConfig;
use crate::model::{Attempt, AttemptOutcome, OutputState, SinkKind, Task};
use crate::sinks::speaker::{self, Player};
use crate::store::Store;
use crate::voice::{self, VoicePack};

/// How long to wait for the running daemon to say it: the minute an announcement is
/// worth, retries included, after which the daemon drops it.
const WAIT: Duration = Duration::from_secs(75);

pub fn run(cfg: &SpeakTestConfig) -> Result<(), String> {
    crate::commands::reachable(&cfg.db, libc::R_OK | libc::W_OK, "record the test in")?;
    if !cfg.db.exists() {
        return say_now(cfg).map(|said| println!("{said} (not recorded: no database yet)"));
    }
    let Some(lock) = DaemonLock::take(&cfg.db)? else {
        let daemon = RunningDaemon::on(&cfg.db);
        if daemon
            .as_ref()
            .is_some_and(|d| d.known() && d.part("speaker").is_none())
        {
            let said = say_and_record(cfg)?;
            println!(
                "{said}: the running coupond has no speaker, so coupons are said nowhere (set \
                 COUPOND_SPEAKER and restart it)"
            );
            return Ok(());
        }
        return through_daemon(cfg);
    };
    let said = say_and_record(cfg);
    drop(lock);
    said.map(|said| println!("{said}"))
}

/// Says it here and records it as a done (or failed) job.
fn say_and_record(cfg: &SpeakTestConfig) -> Result<String, String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let id = store
        .queue_task(Task::SpeakTest(cfg.amount), SinkKind::Speaker)
        .map_err(|e| format!("cannot record the speak test: {e}"))?;
    let result = say_now(cfg);
    let outcome = match &result {
        Ok(_) => AttemptOutcome::Done,
        Err(e) => AttemptOutcome::GiveUp(e.clone()),
    };
    store
        .finish_jobs(&[Attempt { id, outcome }])
        .map_err(|e| format!("said, but cannot record it: {e}"))?;
    result
}

/// Says the test announcement with this command's own speaker and voice pack.
fn say_now(cfg: &SpeakTestConfig) -> Result<String, String> {
    let player = cfg.player.as_ref().ok_or(
        "'coupond speak-test' needs --speaker DEVICE or --speaker-cmd CMD (or COUPOND_SPEAKER, \
         COUPOND_SPEAKER_CMD) when no daemon with a speaker runs on the database",
    )?;
    let words = voice::speak_test(cfg.amount);
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
    play(player, &pcm)?;
    Ok(format!(
        "said {} on {} ({:.1} s)",
        voice::hanzi(&words),
        player.name(),
        speaker::duration(&pcm).as_secs_f64()
    ))
}

fn play(player: &Player, pcm: &[u8]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(player.play(pcm, speaker::PLAY_LIMIT))
}

/// Queues the announcement for the running daemon's speaker and waits for the result.
/// No need to cancel it at the end: the daemon drops it unsaid a minute after it was
/// queued.
fn through_daemon(cfg: &SpeakTestConfig) -> Result<(), String> {
    let mut store = Store::open_existing(&cfg.db, false)?;
    let id = store
        .queue_task(Task::SpeakTest(cfg.amount), SinkKind::Speaker)
        .map_err(|e| format!("cannot queue the speak test: {e}"))?;
    DaemonLock::knock(&cfg.db);
    println!(
        "a coupond daemon runs on {}: queued the test announcement ({}) for its speaker",
        cfg.db.display(),
        voice::hanzi(&voice::speak_test(cfg.amount))
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let (state, err) = store
            .output_state(id)
            .map_err(|e| e.to_string())?
            .ok_or("the speak test's job disappeared")?;
        match (state, err) {
            (OutputState::Done, None) => {
                println!("said by the running daemon");
                return Ok(());
            }
            // Done with a note: dropped, never said.
            (OutputState::Done, Some(note)) => {
                return Err(format!("the daemon did not say it: {note}"))
            }
            (OutputState::Failed, err) => {
                return Err(format!(
                    "the daemon could not say it: {}",
                    err.unwrap_or_default()
                ))
            }
            (_, err) if Instant::now() >= deadline => {
                return Err(format!(
                    "not said within {WAIT:?} (is --speaker set for the daemon? journalctl -u \
                     coupond){}",
                    err.map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
