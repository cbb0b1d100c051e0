//! A test-side ESC/POS decoder and a fake network printer (raw port 9100 style).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One receipt as the paper would show it.
#[derive(Debug, Default, Clone)]
pub struct Receipt {
    pub lines: Vec<String>,
    pub chinese_mode: bool,
    pub cut: bool,
}

impl Receipt {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Decodes a byte stream into receipts: each starts with ESC @ and ends with a cut.
/// Panics on a command it does not know or text that is not valid GB18030, so a test
/// fails on anything a printer would misprint.
pub fn decode(bytes: &[u8]) -> Vec<Receipt> {
    let mut out = Vec::new();
    let mut cur: Option<Receipt> = None;
    let mut text = Vec::new();
    let mut i = 0;
    let flush_line = |cur: &mut Option<Receipt>, text: &mut Vec<u8>| {
        let (s, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(text);
        assert!(!had_errors, "not GB18030: {text:x?}");
        cur.as_mut()
            .expect("text before ESC @")
            .lines
            .push(s.into_owned());
        text.clear();
    };
    while i < bytes.len() {
        let b = bytes[i];
        let next = |k: usize| bytes.get(i + k).copied();
        match (b, next(1)) {
            (0x1b, Some(b'@')) => {
                assert!(cur.is_none(), "ESC @ inside a receipt");
                cur = Some(Receipt::default());
                i += 2;
            }
            (0x1c, Some(b'&')) => {
                cur.as_mut().expect("FS & before ESC @").chinese_mode = true;
                i += 2;
            }
            (0x1b, Some(b'a' | b'E' | b'd' | b'R' | b't'))
            | (0x1d, Some(b'!'))
            | (0x10, Some(0x04)) => i += 3,
            (0x1d, Some(b'V')) => {
                let len = if matches!(next(2), Some(b'A' | b'B')) {
                    4
                } else {
                    3
                };
                let mut r = cur.take().expect("cut before ESC @");
                r.cut = true;
                out.push(r);
                i += len;
            }
            (0x1b | 0x1c | 0x1d | 0x10, _) => panic!(
                "unknown command at {i}: {:x?}",
                &bytes[i..bytes.len().min(i + 4)]
            ),
            (b'\n', _) => {
                flush_line(&mut cur, &mut text);
                i += 1;
            }
            _ => {
                text.push(b);
                i += 1;
            }
        }
    }
    assert!(cur.is_none() && text.is_empty(), "a receipt without a cut");
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads everything and answers status requests: paper present, online.
    Ready,
    /// Answers the paper request with "paper end".
    NoPaper,
    /// Accepts connections and never reads a byte.
    Stalled,
    /// Reads and prints everything, never answers a status request (a one-way print
    /// server or network module).
    OneWay,
}

/// A network printer on 127.0.0.1 that records every byte it reads.
pub struct FakePrinter {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<u8>>>,
    pub connections: Arc<Mutex<usize>>,
    mode: Arc<Mutex<Mode>>,
}

impl FakePrinter {
    pub fn start(mode: Mode) -> FakePrinter {
        FakePrinter::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), mode)
    }

    pub fn start_on(listener: TcpListener, mode: Mode) -> FakePrinter {
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let (r, c, m) = (received.clone(), connections.clone(), mode.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                *c.lock().unwrap() += 1;
                if *m.lock().unwrap() == Mode::Stalled {
                    held.push(s);
                    continue;
                }
                let (r, m) = (r.clone(), m.clone());
                std::thread::spawn(move || serve(s, &r, &m));
            }
        });
        FakePrinter {
            addr,
            received,
            connections,
            mode,
        }
    }

    /// Changes how the printer behaves from now on (paper put back in, say).
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn dest(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    pub fn receipts(&self) -> Vec<Receipt> {
        decode(&self.received.lock().unwrap())
    }

    /// Waits until at least `n` complete receipts arrived.
    pub fn wait_receipts(&self, n: usize, timeout: Duration) -> Vec<Receipt> {
        let deadline = Instant::now() + timeout;
        loop {
            let bytes = self.received.lock().unwrap().clone();
            let complete = bytes.windows(2).filter(|w| w == b"\x1dV").count();
            if complete >= n || Instant::now() > deadline {
                return decode(&bytes);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(mut s: TcpStream, received: &Mutex<Vec<u8>>, mode: &Mutex<Mode>) {
    let mut conn = Vec::new();
    let mut scanned = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        conn.extend_from_slice(&buf[..n]);
        if *mode.lock().unwrap() == Mode::OneWay {
            continue;
        }
        // Answer real-time status requests (DLE EOT n) as a printer does.
        while let Some(pos) = conn[scanned..]
            .windows(3)
            .position(|w| w[0] == 0x10 && w[1] == 0x04)
        {
            let at = scanned + pos;
            let reply = match (conn[at + 2], *mode.lock().unwrap()) {
                (4, Mode::NoPaper) => 0x72,
                _ => 0x12,
            };
            let _ = s.write_all(&[reply]);
            scanned = at + 3;
        }
        scanned = scanned.max(conn.len().saturating_sub(2));
    }
    // Keep only what a printer prints: drop the status requests.
    let mut printed = Vec::new();
    let mut i = 0;
    while i < conn.len() {
        if conn[i] == 0x10 && conn.get(i + 1) == Some(&0x04) {
            i += 3;
        } else {
            printed.push(conn[i]);
            i += 1;
        }
    }
    received.lock().unwrap().extend_from_slice(&printed);
}
