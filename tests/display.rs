//! The counter display in a real browser: headless Chromium (Debian's `chromium`) loads
//! the page, a coupon is pushed over the webhook, and it appears by itself; when the
//! daemon dies, the page says so. Screenshots are kept in target/test-artifacts/.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _profile: Scratch,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let profile = Scratch::new("chromium-profile");
        let bin = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("the display test needs Debian's chromium: apt-get install chromium (./run-tests does it as root)");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Tests talk only to 127.0.0.1: no DNS, no DNS-over-HTTPS probes.
                "--disable-features=AsyncDns,DnsOverHttps,MediaRouter,OptimizationHints,Translate",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1280,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not start");
        let port: u16 = browser_ws
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let list = request(addr, "GET", "/json/list", &[], b"");
        let targets: Value = serde_json::from_str(&list.body).unwrap();
        let page_ws = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap()
            .to_string();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(page_ws.as_str(), stream).unwrap();
        Browser {
            child,
            ws,
            next_id: 1,
            _profile: profile,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    fn text(&mut self) -> String {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": "document.body.innerText", "returnByValue": true }),
        );
        r["result"]["value"].as_str().unwrap_or("").to_string()
    }

    fn wait_text(&mut self, needle: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let t = self.text();
            if t.contains(needle) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{needle:?} did not appear within {timeout:?}; page says:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

#[test]
fn a_pushed_coupon_appears_on_the_counter_display_by_itself() {
    let dir = Scratch::new("display");
    let mut d = Daemon::start_with(
        &dir.0,
        Opts::default().args(&["--display-listen", "127.0.0.1:0"]),
    );
    // One coupon from before the page was opened: the feed is seeded from the database.
    assert_eq!(
        d.push(&coupon("verify", 1_700_000_000, "7001000000000000001"))
            .status,
        200
    );
    let addr = d.display_addr();
    assert_ne!(addr, d.addr, "the display must not share the webhook port");
    // The JSON endpoint beside the page; the coupon arrives through its display job,
    // moments after the webhook's answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let api = loop {
        let api: Value =
            serde_json::from_str(&request(addr, "GET", "/api/coupons", &[], b"").body).unwrap();
        if api["coupons"][0]["certificate_id"] == "7001000000000000001" || Instant::now() > deadline
        {
            break api;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(api["coupons"][0]["certificate_id"], "7001000000000000001");
    assert_eq!(api["coupons"][0]["code"], "********5678");
    // The webhook port does not serve the page.
    assert_eq!(request(d.addr, "GET", "/", &[], b"").status, 404);

    let t0 = Instant::now();
    let mut b = Browser::start();
    eprintln!("chromium ready after {:?}", t0.elapsed());
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({ "url": format!("http://{addr}/") }));
    b.wait_text("已连接", Duration::from_secs(10));
    b.wait_text("7001000000000000001", Duration::from_secs(5));

    assert_eq!(
        d.push(&coupon("verify", 1_700_000_100, "7001000000000000002"))
            .status,
        200
    );
    let took = b.wait_text("7001000000000000002", Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(2),
        "the page took {took:?} to show the new coupon"
    );
    assert_eq!(
        d.push(&coupon(
            "refund_success",
            1_700_000_200,
            "7001000000000000001"
        ))
        .status,
        200
    );
    b.wait_text("退款成功", Duration::from_secs(5));
    let page = b.text();
    assert!(
        page.contains("核销成功") && page.contains("********5678"),
        "{page}"
    );
    let shot = b.screenshot("display.png");
    eprintln!("display screenshot: {}", shot.display());

    eprintln!("coupon shown after {:?}", t0.elapsed());
    d.kill9();
    b.wait_text("连接中断", Duration::from_secs(8));
    eprintln!("offline shown after {:?}", t0.elapsed());
    b.screenshot("display-offline.png");
}
