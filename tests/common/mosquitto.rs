//! A real broker for the fleet tests: Debian's `mosquitto` on a free loopback port with
//! persistence on (sessions and queued messages survive a restart), and its command
//! line clients as headquarters and as a forger.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{unsafe_kill, wait_until};

pub struct Mosquitto {
    pub port: u16,
    /// A second listener with TLS, when started with [`Mosquitto::start_tls`].
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
    /// More lines for its configuration ([`Mosquitto::start_with`]).
    extra: String,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// Starts a broker with its persistence in `dir`.
    pub fn start(dir: &std::path::Path) -> Mosquitto {
        Mosquitto::start_with(dir, "")
    }

    /// Starts a broker with `extra` lines in its configuration (`message_size_limit`).
    pub fn start_with(dir: &std::path::Path, extra: &str) -> Mosquitto {
        let mut m = Mosquitto {
            port: free_port(),
            tls_port: None,
            dir: dir.to_path_buf(),
            child: None,
            extra: extra.to_string(),
        };
        m.up();
        m
    }

    /// Starts a broker that also listens with TLS, its certificate (for 127.0.0.1) from
    /// a test CA made here with `openssl`; the CA is [`Mosquitto::ca`].
    pub fn start_tls(dir: &std::path::Path) -> Mosquitto {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian package openssl; ./run-tests installs it)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=coupond test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let mut m = Mosquitto {
            port: free_port(),
            tls_port: Some(free_port()),
            dir: dir.to_path_buf(),
            child: None,
            extra: String::new(),
        };
        m.up();
        m
    }

    /// The test CA of [`Mosquitto::start_tls`].
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A handle on a broker another handle runs, to publish from another thread.
    pub fn attach(port: u16) -> Mosquitto {
        Mosquitto {
            port,
            tls_port: None,
            dir: PathBuf::new(),
            child: None,
            extra: String::new(),
        }
    }

    /// The broker's `mqtt://` URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, with the same persistence. (`user root`: as
    /// root, mosquitto would otherwise switch to its own user, which cannot write the
    /// scratch directory; as anyone else the line does nothing.)
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let conf = self.dir.join("mosquitto.conf");
        let tls = match self.tls_port {
            Some(port) => format!(
                "listener {port} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = self.dir.display()
            ),
            None => String::new(),
        };
        std::fs::write(
            &conf,
            tls + &format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n\
                 persistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n",
                self.port,
                self.dir.display()
            ) + &self.extra,
        )
        .unwrap();
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (Debian package mosquitto; ./run-tests installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it cleanly (it writes its persistence file on the way out).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Publishes `payload` with QoS 1, as anyone who can reach the broker could.
    pub fn publish(&self, topic: &str, payload: &str) {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1"])
            .args(["-t", topic, "-m", payload])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// Publishes the contents of `file` with QoS 1 (any size), retained when `retain`.
    pub fn publish_file(&self, topic: &str, file: &std::path::Path, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1"])
            .args(["-t", topic, "-f"])
            .arg(file);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// Publishes each of `payloads` with QoS 1 from one connection, in order.
    pub fn publish_lines(&self, topic: &str, payloads: &[String]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1"])
            .args(["-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for p in payloads {
            assert!(!p.contains('\n'));
            writeln!(stdin, "{p}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Headquarters: `mosquitto_sub` with a persistent session (QoS 1, clean session off),
/// collecting `topic payload` lines.
pub struct Subscriber {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    pub fn start(broker: &Mosquitto, id: &str, filter: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-q", "1", "-c", "-i", id, "-v", "-t", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // Its subscription must be in place before anything is published.
        std::thread::sleep(Duration::from_millis(300));
        Subscriber { child, lines }
    }

    /// Waits for `n` lines (at most `timeout`) and returns all there are.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.lines.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lines.lock().unwrap().clone()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
