//! Sends receipts to an ESC/POS printer: a raw TCP port or a device/file path.
//!
//! TCP (`tcp://HOST[:PORT]`, default 9100): when status checks are on, the printer is
//! asked for its paper sensor (`DLE EOT 4`) *before* the receipt is sent, so an empty
//! roll costs a retry, not a receipt stuck in the printer's buffer that would print twice
//! after reloading; after the receipt it is asked for its status (`DLE EOT 1`), whose
//! answer proves it has read every byte before it. A printer that accepts the
//! connection and never reads gets no answer: the attempt fails and is retried.
//! `--printer-status auto` (the default) checks like that once the printer has answered
//! a status request; one that never answers the first (most print servers and cheap
//! network modules are one-way) gets its receipts without asking, after one warning.
//!
//! Paths (`/dev/usb/lp0`, `/dev/ttyUSB0`, a FIFO, a file) are opened non-blocking; a
//! path in `/dev` is never created (a missing `/dev/usb/lp0` means the printer is
//! unplugged, and must not become a file in /dev), a file elsewhere is created when its
//! directory exists. A USB printer's paper and online state come from the kernel
//! (`LPGETSTATUS`, usblp) before each receipt; a serial one is set to `--serial-baud`.
//! A device that does not take the bytes before the time limit fails the attempt, so no
//! thread is left stuck in a blocking write.

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
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

/// `--printer-status`: whether to ask the printer for its state around each receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrinterStatus {
    /// Once the printer has answered a status request; blind if it never does.
    Auto,
    On,
    Off,
}

impl PrinterStatus {
    pub fn parse(v: &str) -> Result<PrinterStatus, String> {
        match v.to_ascii_lowercase().as_str() {
            "auto" => Ok(PrinterStatus::Auto),
            "on" | "true" | "yes" | "1" => Ok(PrinterStatus::On),
            "off" | "false" | "no" | "0" => Ok(PrinterStatus::Off),
            _ => Err("want auto, on or off".into()),
        }
    }
}

/// What `auto` has learnt about a network printer.
const UNKNOWN: u8 = 0;
const ANSWERS: u8 = 1;
const SILENT: u8 = 2;

pub struct Printer {
    pub dest: PrinterDest,
    pub status: PrinterStatus,
    /// `--serial-baud`, for a serial device.
    pub baud: Option<u32>,
    /// Under `auto`: [`UNKNOWN`], [`ANSWERS`] or [`SILENT`].
    learnt: AtomicU8,
}

impl Printer {
    pub fn new(dest: PrinterDest, status: PrinterStatus, baud: Option<u32>) -> Printer {
        Printer {
            dest,
            status,
            baud,
            learnt: AtomicU8::new(UNKNOWN),
        }
    }

    /// Sends one receipt from a command (no runtime of its own yet), within the time
    /// limit the outbox gives an attempt.
    pub fn send_now(&self, receipt: Vec<u8>) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        rt.block_on(async {
            timeout(TIME_LIMIT, self.send(receipt))
                .await
                .map_err(|_| "the printer did not take the receipt in time".to_string())?
        })
    }

    pub async fn send(&self, receipt: Vec<u8>) -> Result<(), String> {
        match &self.dest {
            PrinterDest::Tcp { host, port } => self.send_tcp(host, *port, &receipt).await,
            PrinterDest::Path(path) => {
                let path = path.clone();
                let (check, baud) = (self.status != PrinterStatus::Off, self.baud);
                tokio::task::spawn_blocking(move || write_path(&path, &receipt, SEND, check, baud))
                    .await
                    .map_err(|e| format!("printer task failed: {e}"))?
            }
        }
    }

    /// Asks for the paper sensor before a receipt, as the status setting says; `false`
    /// when this printer is to be printed to without asking.
    async fn paper_check(&self, s: &mut TcpStream, addr: &str) -> Result<bool, String> {
        let learnt = self.learnt.load(Ordering::Relaxed);
        match self.status {
            PrinterStatus::Off => return Ok(false),
            PrinterStatus::Auto if learnt == SILENT => return Ok(false),
            _ => {}
        }
        let paper = match status(s, STATUS_PAPER, addr).await {
            Ok(b) => b,
            Err(StatusError::NoAnswer(_))
                if self.status == PrinterStatus::Auto && learnt == UNKNOWN =>
            {
                self.learnt.store(SILENT, Ordering::Relaxed);
                log::warn!(
                    "printer {addr} does not answer status requests (DLE EOT), as many print \
                     servers do not: printing without paper or online checks \
                     (--printer-status off says so up front; on insists on them)"
                );
                return Ok(false);
            }
            Err(e) => return Err(e.to_string()),
        };
        if learnt == UNKNOWN && self.status == PrinterStatus::Auto {
            log::info!(
                "printer {addr} answers status requests: checking paper around each receipt"
            );
            self.learnt.store(ANSWERS, Ordering::Relaxed);
        }
        if paper & 0x60 != 0 {
            return Err(format!("printer {addr} is out of paper"));
        }
        Ok(true)
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
        let checked = self.paper_check(&mut s, &addr).await?;
        timeout(SEND, async {
            s.write_all(receipt).await?;
            s.flush().await
        })
        .await
        .map_err(|_| format!("printer {addr} did not take the receipt within {SEND:?} (stalled?)"))?
        .map_err(|e| format!("printer {addr}: {e}"))?;
        if checked {
            let st = status(&mut s, STATUS_PRINTER, &addr)
                .await
                .map_err(|e| e.to_string())?;
            if st & 0x08 != 0 {
                log::warn!("printer {addr} went offline while printing (cover open or paper out?); it resumes when fixed");
            }
        }
        let _ = s.shutdown().await;
        Ok(())
    }
}

/// Why a status request got no status.
#[derive(Debug)]
pub enum StatusError {
    /// The connection failed.
    Broken(String),
    /// Nothing came back in time.
    NoAnswer(String),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Broken(e) | StatusError::NoAnswer(e) => f.write_str(e),
        }
    }
}

/// Sends a real-time status request and reads its one-byte answer.
async fn status(s: &mut TcpStream, request: &[u8], addr: &str) -> Result<u8, StatusError> {
    s.write_all(request)
        .await
        .map_err(|e| StatusError::Broken(format!("printer {addr}: {e}")))?;
    let mut b = [0u8; 1];
    match timeout(STATUS_WAIT, s.read_exact(&mut b)).await {
        Ok(Ok(_)) => Ok(b[0]),
        Ok(Err(e)) => Err(StatusError::Broken(format!(
            "printer {addr} closed the connection: {e}"
        ))),
        Err(_) => Err(StatusError::NoAnswer(format!(
            "printer {addr} did not answer a status request (DLE EOT) within {STATUS_WAIT:?}; \
             if it never does, use --printer-status auto or off"
        ))),
    }
}

/// Connects to a network printer and asks for its paper sensor, for `coupond check`:
/// `Ok(Some(byte))` when it answered, `Ok(None)` when it accepted the connection and
/// stayed silent.
pub async fn probe_tcp(host: &str, port: u16) -> Result<Option<u8>, String> {
    let addr = format!("{host}:{port}");
    let mut s = match timeout(CONNECT, TcpStream::connect(&addr)).await {
        Err(_) => return Err(format!("no connection within {CONNECT:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(s)) => s,
    };
    match status(&mut s, STATUS_PAPER, &addr).await {
        Ok(b) => Ok(Some(b)),
        Err(StatusError::NoAnswer(_)) => Ok(None),
        Err(StatusError::Broken(e)) => Err(e),
    }
}

/// `LPGETSTATUS` (linux/lp.h): the parallel-port status byte, which usblp fills from
/// the printer's USB port status.
const LPGETSTATUS: libc::c_ulong = 0x060b;
const LP_PERRORP: libc::c_int = 0x08;
const LP_PSELECD: libc::c_int = 0x10;
const LP_POUTPA: libc::c_int = 0x20;

/// A USB printer's trouble as the kernel reports it, or `None` when all is well or the
/// device is no lp device (a serial port, a FIFO).
pub fn lp_trouble(f: &std::fs::File) -> Option<&'static str> {
    let mut st: libc::c_int = 0;
    // SAFETY: LPGETSTATUS writes one int through the pointer; other devices refuse it
    // with ENOTTY and write nothing.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LPGETSTATUS as _, &mut st) };
    if rc != 0 {
        return None;
    }
    if st & LP_POUTPA != 0 {
        Some("out of paper")
    } else if st & LP_PSELECD == 0 {
        Some("off-line")
    } else if st & LP_PERRORP == 0 {
        Some("in error (cover open?)")
    } else {
        None
    }
}

/// Sets a serial device to `baud`, 8 data bits, no parity, raw.
fn set_baud(f: &std::fs::File, baud: u32) -> Result<(), String> {
    let speed = match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        _ => return Err(format!("unsupported --serial-baud {baud}")),
    };
    // SAFETY: plain termios calls on an open descriptor; `t` is fully written by
    // tcgetattr before it is read.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) != 0 {
            return Ok(()); // not a terminal: nothing to set
        }
        libc::cfmakeraw(&mut t);
        libc::cfsetispeed(&mut t, speed);
        libc::cfsetospeed(&mut t, speed);
        if libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(format!(
                "cannot set the serial speed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Whether a printer path may be created: a plain file outside `/dev`.
pub fn creatable(path: &Path) -> bool {
    !path.starts_with("/dev")
}

/// The baud rates `--serial-baud` takes.
pub fn parse_baud(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n @ (1200 | 2400 | 4800 | 9600 | 19200 | 38400 | 57600 | 115200 | 230400)) => Ok(n),
        _ => Err("want a serial speed such as 9600, 19200, 38400 or 115200".into()),
    }
}

/// Writes all of `data` to a device, FIFO or file without blocking a thread for longer
/// than `limit`; a USB printer's kernel status is read first when `check`.
fn write_path(
    path: &Path,
    data: &[u8],
    limit: Duration,
    check: bool,
    baud: Option<u32>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(creatable(path))
        .mode(0o640)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) if creatable(path) => {
                format!("{}: its directory does not exist", path.display())
            }
            Some(libc::ENOENT) => format!(
                "{}: no such device (is the printer plugged in?)",
                path.display()
            ),
            Some(libc::ENXIO) => format!("{}: nobody is reading (printer off?)", path.display()),
            _ => format!("{}: {e}", path.display()),
        })?;
    let is_device = f.metadata().is_ok_and(|m| m.file_type().is_char_device());
    if is_device {
        if let Some(baud) = baud {
            set_baud(&f, baud).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if let Some(trouble) = lp_trouble(&f).filter(|_| check) {
            return Err(format!("{}: the printer is {trouble}", path.display()));
        }
    }
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
