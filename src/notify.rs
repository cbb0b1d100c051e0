//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): datagrams to
//! `$NOTIFY_SOCKET`. A few lines of std instead of a crate.
//!
//! - `READY=1` once the database is open and the port bound, so `systemctl start`
//!   returns only when coupond can take a push;
//! - `WATCHDOG=1` every half `WatchdogSec`, but only after a round trip through the
//!   database thread: a hung runtime *or* a hung writer stops the pings and systemd
//!   restarts the service, which a merely alive process would not get;
//! - `STATUS=` a one-line summary for `systemctl status`;
//! - `STOPPING=1` when a stop begins.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Notifier {
        let socket = env("NOTIFY_SOCKET")
            .filter(|p| !p.is_empty())
            .and_then(|path| Some((UnixDatagram::unbound().ok()?, path)));
        let for_us =
            env("WATCHDOG_PID").map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let watchdog = env("WATCHDOG_USEC")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|us| *us > 0 && for_us && socket.is_some())
            .map(|us| Duration::from_micros(us / 2));
        Notifier { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1`, when systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`KEY=VALUE` lines). Failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let sent = match path.strip_prefix('@') {
            Some(name) => abstract_addr(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a)),
            None => sock.send_to(state.as_bytes(), path),
        };
        if let Err(e) = sent {
            log::warn!("cannot notify systemd at {path}: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket_and_halves_the_watchdog() {
        let dir = std::env::temp_dir().join(format!("coupond-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let p = path.to_string_lossy().to_string();
        let env = move |k: &str| match k {
            "NOTIFY_SOCKET" => Some(p.clone()),
            "WATCHDOG_USEC" => Some("10000000".into()),
            _ => None,
        };
        let n = Notifier::from_env(&env);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_sockets_work_and_other_pids_watchdogs_are_ignored() {
        let name = format!("coupond-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&abstract_addr(&name).unwrap()).unwrap();
        let sock = format!("@{name}");
        let env = move |k: &str| match k {
            "NOTIFY_SOCKET" => Some(sock.clone()),
            "WATCHDOG_USEC" => Some("2000000".into()),
            "WATCHDOG_PID" => Some("1".into()),
            _ => None,
        };
        let n = Notifier::from_env(&env);
        assert_eq!(n.watchdog_interval(), None);
        n.send("WATCHDOG=1");
        let mut buf = [0u8; 16];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let n = Notifier::from_env(&|_| None);
        assert_eq!(n.watchdog_interval(), None);
        n.send("READY=1");
    }
}
