//! Sends receipts to an ESC/POS printer: a raw TCP port or a device/file path.
//!
//! TCP (`tcp://HOST[:PORT]`, default 9100): with `--printer-status on` (the default) the
//! printer is asked for its paper sensor (`DLE EOT 4`) *before* the receipt is sent, so
//! an empty roll costs a retry, not a receipt stuck in the printer's buffer that would
//! print twice after reloading; after the receipt it is asked for its status
//! (`DLE EOT 1`), whose answer proves it has read every byte before it. A printer that
//! accepts the connection and never reads gets no answer: the attempt fails and is
//! retried. `off` is for printers that do not answer real-time status requests.
//!
//! Paths (`/dev/usb/lp0`, `/dev/ttyUSB0`, a FIFO, a file) are opened non-blocking and
//! never created (a missing `/dev/usb/lp0` means the printer is unplugged, and must not
//! become a file in /dev); a device that does not take the bytes before the time limit
//! fails the attempt, so no thread is left stuck in a blocking write.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// DLE EOT 1: transmit printer status. Bit 3 set: offline.
const STATUS_PRINTER: &[u8] = b"\x10\x04\x01";
/// DLE EOT 4: transmit roll paper sensor status. Bits 5 and 6 set: paper end.
const STATUS_PAPER: &[u8] = b"\x10\x04\x04";

const CONNECT: Duration = Duration::from_secs(5);
const STATUS_WAIT: Duration = Duration::from_secs(3);
/// How long the printer may take to read a whole receipt.
const SEND: Duration = Duration::from_secs(10);
/// The whole attempt, as the outbox enforces it.
pub const TIME_LIMIT: Duration = Duration::from_secs(25);

/// Where receipts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterDest {
    /// A raw TCP port (JetDirect / port 9100).
    Tcp { host: String, port: u16 },
    /// A device (`/dev/usb/lp0`, `/dev/ttyUSB0`), a FIFO or a file, written as is.
    Path(PathBuf),
}

impl fmt::Display for PrinterDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterDest::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            PrinterDest::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl PrinterDest {
    pub fn parse(v: &str) -> Result<PrinterDest, String> {
        if let Some(rest) = v.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                    (h, p.parse().map_err(|_| format!("bad port {p:?}"))?)
                }
                _ => (rest, 9100),
            };
            if host.is_empty() {
                return Err("want tcp://HOST[:PORT]".into());
            }
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            return Ok(PrinterDest::Tcp { host, port });
        }
        if v.contains("://") {
            return Err("want a device path such as /dev/usb/lp0, or tcp://HOST[:PORT]".into());
        }
        if !v.starts_with('/') {
            return Err("want an absolute path such as /dev/usb/lp0, or tcp://HOST[:PORT]".into());
        }
        Ok(PrinterDest::Path(PathBuf::from(v)))
    }
}

pub struct Printer {
    pub dest: PrinterDest,
    pub status_check: bool,
}

impl Printer {
    pub async fn send(&self, receipt: Vec<u8>) -> Result<(), String> {
        match &self.dest {
            PrinterDest::Tcp { host, port } => self.send_tcp(host, *port, &receipt).await,
            PrinterDest::Path(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_path(&path, &receipt, SEND))
                    .await
                    .map_err(|e| format!("printer task failed: {e}"))?
            }
        }
    }

    async fn send_tcp(&self, host: &str, port: u16, receipt: &[u8]) -> Result<(), String> {
        let addr = format!("{host}:{port}");
        let mut s = match timeout(CONNECT, TcpStream::connect(&addr)).await {
            Err(_) => {
                return Err(format!(
                    "printer {addr} did not accept a connection within {CONNECT:?}"
                ))
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "printer {addr}: {e} (is it on and on the network?)"
                ))
            }
            Ok(Ok(s)) => s,
        };
        if self.status_check {
            let paper = status(&mut s, STATUS_PAPER, &addr).await?;
            if paper & 0x60 != 0 {
                return Err(format!("printer {addr} is out of paper"));
            }
        }
        timeout(SEND, async {
            s.write_all(receipt).await?;
            s.flush().await
        })
        .await
        .map_err(|_| format!("printer {addr} did not take the receipt within {SEND:?} (stalled?)"))?
        .map_err(|e| format!("printer {addr}: {e}"))?;
        if self.status_check {
            let st = status(&mut s, STATUS_PRINTER, &addr).await?;
            if st & 0x08 != 0 {
                log::warn!("printer {addr} went offline while printing (cover open or paper out?); it resumes when fixed");
            }
        }
        let _ = s.shutdown().await;
        Ok(())
    }
}

/// Sends a real-time status request and reads its one-byte answer.
async fn status(s: &mut TcpStream, request: &[u8], addr: &str) -> Result<u8, String> {
    s.write_all(request)
        .await
        .map_err(|e| format!("printer {addr}: {e}"))?;
    let mut b = [0u8; 1];
    match timeout(STATUS_WAIT, s.read_exact(&mut b)).await {
        Ok(Ok(_)) => Ok(b[0]),
        Ok(Err(e)) => Err(format!("printer {addr} closed the connection: {e}")),
        Err(_) => Err(format!(
            "printer {addr} did not answer a status request (DLE EOT) within {STATUS_WAIT:?}; \
             if it never does, use --printer-status off"
        )),
    }
}

/// Writes all of `data` to an existing device, FIFO or file without blocking a thread
/// for longer than `limit`.
fn write_path(path: &Path, data: &[u8], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => format!(
                "{}: no such device (is the printer plugged in?)",
                path.display()
            ),
            Some(libc::ENXIO) => format!("{}: nobody is reading (printer off?)", path.display()),
            _ => format!("{}: {e}", path.display()),
        })?;
    let mut rest = data;
    while !rest.is_empty() {
        match f.write(rest) {
            Ok(0) => return Err(format!("{}: the device took no bytes", path.display())),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{}: the printer took {} of {} bytes within {limit:?} (offline or out of paper?)",
                        path.display(),
                        data.len() - rest.len(),
                        data.len()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}
