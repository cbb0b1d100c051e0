//! Test fixtures: the real `coupond` binary on a free port in a scratch directory, a
//! raw HTTP/1.1 client, Douyin-style signed bodies, and the SQLite file read directly.
#![allow(dead_code)]

pub mod escpos;
pub mod fake_douyin;
pub mod mosquitto;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_coupond");
pub const CLIENT_KEY: &str = "axxxxxxxxxxxxx";
pub const SECRET: &str = "test-client-secret-5f2b";
pub const PATH: &str = "/douyin/webhook";

/// Douyin's own example body (SPEC §2), byte for byte.
pub const DOUYIN_EXAMPLE: &str = r#"{ "event": "life_trade_certificate_notify", "client_key": "axxxxxxxxxxxxx", "from_user_id": "f6e35c98-1e53-4943-ad6d-f476f869deab", "content": "{\"action\": \"verify\",\"msg_time\": 1665991178,\"certificate\": {\"certificate_id\": \"456\",\"order_id\": \"123\",\"account_id\": \"1234\"}}", "log_id": "202210101930530102281180650970B5AF" }"#;

/// A command that runs the coupond binary under test. When the tests run for another
/// architecture under qemu-user (cross/test-arm), `COUPOND_TEST_RUNNER` holds the
/// emulator command (e.g. `qemu-arm -L /usr/arm-linux-gnueabihf`), since this machine
/// has no binfmt_misc to start foreign binaries by themselves.
///
/// The settings file is `/dev/null` (empty) unless a test names one, so that a
/// `/etc/coupond/coupond.env` on the machine never leaks into a test.
pub fn coupond() -> Command {
    let mut cmd = match test_runner() {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            // By its full path: a test may hand coupond a PATH of its own (one without
            // aplay, say), which must not lose the emulator.
            let mut cmd = Command::new(in_path(words.next().unwrap()));
            cmd.args(words).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    cmd.env_remove("COUPOND_TEST_RUNNER")
        .env("COUPOND_CONFIG", "/dev/null");
    cmd
}

/// `program` as found in this process's PATH (as it is), else unchanged.
fn in_path(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.into())
}

fn test_runner() -> Option<String> {
    std::env::var("COUPOND_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
}

/// Whether the daemon runs under an emulator (cross/test-arm). Every request then costs
/// tens of times what it does natively, so a timing budget meant for real hardware is
/// widened there, never natively.
pub fn emulated() -> bool {
    test_runner().is_some()
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("coupond-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("scratch directory kept: {}", self.0.display());
        }
    }
}

/// A running `coupond serve`.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How to start a daemon: extra flags and environment on top of the defaults.
#[derive(Clone, Default)]
pub struct Opts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub secret_file_contents: Option<String>,
}

impl Opts {
    pub fn arg(mut self, a: &str) -> Opts {
        self.args.push(a.to_string());
        self
    }
    pub fn args(mut self, a: &[&str]) -> Opts {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Opts {
        self.env.push((k.into(), v.into()));
        self
    }
}

impl Daemon {
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, Opts::default())
    }

    /// Starts the daemon on `127.0.0.1:0` with the database in `dir`, and waits for its
    /// "listening on" line to learn the port.
    pub fn start_with(dir: &Path, opts: Opts) -> Daemon {
        let secret_file = dir.join("secret");
        if !secret_file.exists() || opts.secret_file_contents.is_some() {
            let contents = opts
                .secret_file_contents
                .clone()
                .unwrap_or_else(|| format!("{SECRET}\n"));
            std::fs::write(&secret_file, contents).unwrap();
        }
        let db = dir.join("coupond.db");
        let mut cmd = coupond();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--client-key", CLIENT_KEY])
            .arg("--db")
            .arg(&db)
            .arg("--secret-file")
            .arg(&secret_file)
            .args(&opts.args)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start coupond");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                } else if line.contains("(--listen off)") {
                    // A store box without a webhook port: started, nothing to address.
                    if let Some(tx) = tx.take() {
                        let _ = tx.send("0.0.0.0:0".to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("coupond did not start: {:#?}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            db,
            dir: dir.to_path_buf(),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// POSTs `body` signed with the test secret.
    pub fn push(&self, body: &str) -> Response {
        self.push_with(body, Some(&sign(SECRET, body.as_bytes())), None)
    }

    pub fn push_with(&self, body: &str, signature: Option<&str>, msg_id: Option<&str>) -> Response {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(s) = signature {
            headers.push(("X-Douyin-Signature".into(), s.into()));
        }
        if let Some(m) = msg_id {
            headers.push(("Msg-Id".into(), m.into()));
        }
        request(self.addr, "POST", PATH, &headers, body.as_bytes())
    }

    /// The counter display's address (`--display-listen 127.0.0.1:0`), from its log line.
    pub fn display_addr(&self) -> SocketAddr {
        assert!(self.wait_log("display on http://", Duration::from_secs(5)));
        let log = self.log_text();
        log.split("display on http://")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn sql(&self) -> rusqlite::Connection {
        open_db(&self.db)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("coupond did not stop on SIGTERM: {}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn open_db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    coupond::signature::sign(secret, body)
}

/// A coupon message body in Douyin's shape (`content` as a JSON string).
pub fn coupon(action: &str, msg_time: i64, certificate_id: &str) -> String {
    coupon_with(action, msg_time, certificate_id, "")
}

/// Like [`coupon`], with `extra` appended inside the envelope (e.g. `,"log_id":"x"`).
pub fn coupon_with(action: &str, msg_time: i64, certificate_id: &str, extra: &str) -> String {
    let content = serde_json::json!({
        "action": action,
        "msg_time": msg_time,
        "certificate": {"certificate_id": certificate_id, "order_id": "order-1", "account_id": "acct-9", "code": "CODE12345678"},
    })
    .to_string();
    format!(
        r#"{{"event":"life_trade_certificate_notify","client_key":"{CLIENT_KEY}","content":{}{extra}}}"#,
        serde_json::Value::String(content)
    )
}

/// An HTTP response, as read off the socket.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub elapsed: Duration,
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_response(&mut s, started)
}

/// Reads one response: up to `Content-Length` when the server sends one, else until
/// the server closes the connection.
pub fn read_response(s: &mut TcpStream, started: Instant) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw, started.elapsed())
}

pub fn parse_response(raw: &[u8], elapsed: Duration) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
        elapsed,
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `coupond ARGS` to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    coupond()
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("COUPOND_CLIENT_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn query_i64(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn query_str(c: &rusqlite::Connection, sql: &str) -> String {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The one value of a query with one parameter (`?1`).
pub fn query_one<T: rusqlite::types::FromSql>(
    c: &rusqlite::Connection,
    sql: &str,
    param: &str,
) -> T {
    c.query_row(sql, [param], |r| r.get(0)).unwrap()
}

/// Every value of a one-column query, in order.
pub fn query_column<T: rusqlite::types::FromSql>(c: &rusqlite::Connection, sql: &str) -> Vec<T> {
    c.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Polls `f` every 50 ms until it holds; fails the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `coupond send` to `url` as the test app, signing with the secret in `secret_file`,
/// with `extra` flags (`--certificate-id ...` or `--challenge N`).
pub fn send(url: &str, secret_file: &Path, extra: &[&str]) -> std::process::Output {
    let secret = secret_file.to_str().unwrap();
    let mut args = vec![
        "send",
        "--url",
        url,
        "--client-key",
        CLIENT_KEY,
        "--secret-file",
        secret,
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

/// `(state, attempts, last_error)` of every output job of `sink`, oldest first.
pub fn outputs(d: &Daemon, sink: &str) -> Vec<(String, i64, Option<String>)> {
    d.sql()
        .prepare("SELECT state, attempts, last_error FROM outputs WHERE sink = ?1 ORDER BY id")
        .unwrap()
        .query_map([sink], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A daemon with catch-up against `fake`, sweeping every second.
pub fn catchup_opts(fake: &fake_douyin::FakeDouyin) -> Opts {
    Opts::default().args(&[
        "--account-id",
        fake_douyin::ACCOUNT,
        "--douyin-api",
        &fake.url(),
        "--reconcile-every",
        "1s",
    ])
}
