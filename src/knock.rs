//! Work another process queues wakes the daemon at once, and an idle daemon never polls
//! for it (SPEC §10: no idle wake-ups beyond its timers).
//!
//! `coupond reprint`, `print-test`, `speak-test`, `report --print` and `reverify` write
//! output jobs into the database beside the running daemon. After their commit they
//! knock ([`knock`]): they open the daemon's lock file (`DB.lock`), which needs read
//! access only and no permission to signal the daemon (it runs as its own user, the
//! command often as root). The daemon watches that file with inotify (`IN_OPEN`) and,
//! at a knock, wakes its sinks, which read their queues once. Other opens of the file
//! (`coupond status`, `check`) wake them too: one read of each queue, nothing more.
//!
//! Where inotify cannot be had (no watches left, a file system without it), the daemon
//! says so once and looks every [`POLL`] instead, as it did before.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

use crate::shutdown::{self, Stop};

/// How often the sinks look for queued work when the lock file cannot be watched.
pub const POLL: Duration = Duration::from_secs(5);

/// Tells the daemon running on `lock` (its lock file) that work is queued for it. A
/// missing file (no daemon ever ran there) is no error: nobody is there to wake.
pub fn knock(lock: &Path) {
    let _ = std::fs::File::open(lock);
}

/// The watch on the lock file, made before READY so that no knock after it is missed.
pub struct Knocks {
    /// `None`: the file could not be watched; the sinks are woken every [`POLL`].
    fd: Option<AsyncFd<OwnedFd>>,
    lock: PathBuf,
}

impl Knocks {
    /// Watches `lock`; when that fails, says why and falls back to polling.
    pub fn watch(lock: &Path) -> Knocks {
        let fd = match inotify(lock) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!(
                    "cannot watch {} for work queued by other commands ({e}); looking every {} s instead",
                    lock.display(),
                    POLL.as_secs()
                );
                None
            }
        };
        Knocks {
            fd,
            lock: lock.to_path_buf(),
        }
    }

    /// Whether the file is watched (false: polling).
    pub fn watching(&self) -> bool {
        self.fd.is_some()
    }

    /// Bumps `wake` at each knock (or every [`POLL`] without a watch) until `stop`.
    pub async fn run(mut self, wake: watch::Sender<u64>, mut stop: Stop) {
        loop {
            let knocked = tokio::select! {
                k = self.next() => k,
                _ = shutdown::stopped(&mut stop) => return,
            };
            if let Err(e) = knocked {
                log::warn!(
                    "stopped watching {} ({e}); looking every {} s instead",
                    self.lock.display(),
                    POLL.as_secs()
                );
                self.fd = None;
            }
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Resolves at the next knock (all the events that came, read at once).
    async fn next(&mut self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            tokio::time::sleep(POLL).await;
            return Ok(());
        };
        loop {
            let mut ready = fd.readable().await?;
            let mut buf = [0u8; 4096];
            let read = ready.try_io(|fd| {
                // SAFETY: reads into a buffer we own, of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(0)) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(Ok(n)) => return ignored(&buf[..n]),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// An inotify descriptor watching `lock` for opens.
fn inotify(lock: &Path) -> io::Result<AsyncFd<OwnedFd>> {
    let path = CString::new(lock.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain system calls; the descriptor is owned at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_OPEN) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is owned by the AsyncFd from here on: open, the same file, until
    // it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// `Err` when the events read say the watch is gone (the file was deleted or its file
/// system unmounted): from then on nothing would ever knock.
fn ignored(events: &[u8]) -> io::Result<()> {
    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
    let mut rest = events;
    while rest.len() >= 16 {
        let mask = u32::from_ne_bytes(rest[4..8].try_into().unwrap_or_default());
        let len = u32::from_ne_bytes(rest[12..16].try_into().unwrap_or_default()) as usize;
        if mask & libc::IN_IGNORED != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the file was removed",
            ));
        }
        rest = rest.get(16 + len..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_of_the_lock_file_is_a_knock_and_nothing_else_is() {
        let dir = std::env::temp_dir().join(format!("coupond-knock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("coupond.db.lock");
        std::fs::write(&lock, b"").unwrap();
        let mut knocks = Knocks::watch(&lock);
        assert!(knocks.watching());
        let quiet = tokio::time::timeout(Duration::from_millis(300), knocks.next()).await;
        assert!(quiet.is_err(), "no knock without an open");
        knock(&lock);
        let knocked = tokio::time::timeout(Duration::from_secs(5), knocks.next()).await;
        assert!(matches!(knocked, Ok(Ok(()))), "{knocked:?}");
        // A removed file ends the watch, said as an error (the caller then polls).
        std::fs::remove_file(&lock).unwrap();
        let gone = tokio::time::timeout(Duration::from_secs(5), knocks.next()).await;
        assert!(matches!(gone, Ok(Err(_))), "{gone:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
