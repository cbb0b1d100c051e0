//! The broker is the internet too (SPEC §12): whoever can publish on it, a compromised
//! relay, a flapping link or a cloned box must never stop a store box or a relay. Each
//! test is one attack against the real binary and a real mosquitto: an oversized
//! publish, a burst, a relay's largest forward, a publish the broker refuses, a
//! duplicate client id, replays, forgeries, a push signed for another account, a
//! retained push, a flapping broker, and a secret rotated under the MQTT source.

mod common;

use common::mosquitto::{Mosquitto, Subscriber};
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn box_opts(url: &str, id: &str) -> Opts {
    Opts::default().args(&["--mqtt-source", url, "--mqtt-client-id", id])
}

fn relay_opts(url: &str, id: &str) -> Opts {
    Opts::default().args(&["--mqtt", url, "--mqtt-client-id", id, "--mqtt-forward"])
}

/// A forwarded push as a relay publishes it.
fn forwarded(body: &str, signature: &str) -> String {
    serde_json::json!({"body": body, "signature": signature, "msg_id": "m-1"}).to_string()
}

fn signed_forward(body: &str) -> String {
    forwarded(body, &sign(SECRET, body.as_bytes()))
}

fn topic(account: &str) -> String {
    format!("coupond/push/{CLIENT_KEY}/{account}")
}

fn applied(d: &Daemon, cert: &str) -> bool {
    query_one::<i64>(
        &d.sql(),
        "SELECT count(*) FROM certificates WHERE certificate_id = ?1",
        cert,
    ) == 1
}

fn lines_with(d: &Daemon, needle: &str) -> usize {
    d.log_text().lines().filter(|l| l.contains(needle)).count()
}

/// Waits for `f`, printing the daemon's log when it times out.
fn eventually(what: &str, d: &Daemon, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", d.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A store box connected to `broker`.
fn store_box(dir: &Scratch, broker: &Mosquitto, extra: &[&str]) -> Daemon {
    let d = Daemon::start_with(&dir.0, box_opts(&broker.url(), "box-1").args(extra));
    assert!(
        d.wait_log("mqtt-source: connected", WAIT),
        "{}",
        d.log_text()
    );
    d
}

#[test]
fn an_oversized_publish_never_stops_the_store_box_and_a_body_over_max_body_is_a_413_row() {
    let dir = Scratch::new("mqtt-oversized");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-oversized-box");
    let store = store_box(&box_dir, &broker, &[]);
    // 2 MB: over the Maximum Packet Size the box declares for --max-body 64 KiB.
    let huge = dir.path("huge");
    std::fs::write(&huge, vec![b'x'; 2 << 20]).unwrap();
    broker.publish_file(&topic("acct-9"), &huge, false);
    // 100 KB of body: within the packet size, over --max-body.
    let over = dir.path("over");
    std::fs::write(&over, forwarded(&"y".repeat(100_000), "ab")).unwrap();
    broker.publish_file(&topic("acct-9"), &over, false);
    let real = coupon("verify", 1_700_000_000, "after-huge");
    broker.publish(&topic("acct-9"), &signed_forward(&real));
    eventually("the push behind them", &store, || {
        applied(&store, "after-huge")
    });
    let rejected: Vec<String> = query_column(
        &store.sql(),
        "SELECT status || ' ' || source FROM rejected ORDER BY id",
    );
    assert_eq!(rejected, ["413 mqtt"]);
    assert_eq!(lines_with(&store, "mqtt-source: connected"), 1);
    assert_eq!(
        lines_with(&store, "reconnecting"),
        0,
        "{}",
        store.log_text()
    );
    // Restarted, the box gets nothing of it again: each was acknowledged or dropped.
    drop(store);
    let store = store_box(&box_dir, &broker, &[]);
    let next = coupon("verify", 1_700_000_001, "after-restart");
    broker.publish(&topic("acct-9"), &signed_forward(&next));
    eventually("the next push", &store, || applied(&store, "after-restart"));
    assert_eq!(query_i64(&store.sql(), "SELECT count(*) FROM rejected"), 1);
    assert_eq!(
        lines_with(&store, "reconnecting"),
        0,
        "{}",
        store.log_text()
    );
}

#[test]
fn a_burst_of_publishes_waits_on_the_broker_and_every_valid_push_is_stored_on_one_connection() {
    let dir = Scratch::new("mqtt-burst");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-burst-box");
    let store = store_box(&box_dir, &broker, &[]);
    let (forged, valid) = if emulated() {
        (2_000, 50)
    } else {
        (20_000, 200)
    };
    let mut payloads = Vec::new();
    for i in 0..forged {
        let body = coupon("verify", 1_700_000_000 + i, &format!("forged-{i}"));
        payloads.push(forwarded(&body, &sign("a-guess", body.as_bytes())));
        if i % (forged / valid) == 0 {
            let body = coupon("verify", 1_700_000_000 + i, &format!("valid-{i}"));
            payloads.push(signed_forward(&body));
        }
    }
    let started = Instant::now();
    broker.publish_lines(&topic("acct-9"), &payloads);
    eprintln!(
        "{} publishes sent in {:?}",
        payloads.len(),
        started.elapsed()
    );
    eventually("every valid push", &store, || {
        query_i64(&store.sql(), "SELECT count(*) FROM certificates") == valid
    });
    eprintln!("all valid stored after {:?}", started.elapsed());
    assert_eq!(lines_with(&store, "mqtt-source: connected"), 1);
    assert_eq!(
        lines_with(&store, "reconnecting"),
        0,
        "{}",
        store.log_text()
    );
    assert_eq!(
        query_i64(&store.sql(), "SELECT count(*) FROM messages"),
        valid
    );
    // The forgeries cost a bounded number of rows and lines.
    let rows = query_i64(&store.sql(), "SELECT count(*) FROM rejected");
    assert!(rows <= 40, "{rows} rejected rows");
}

#[test]
fn a_relays_largest_forward_fits_and_a_publish_the_broker_refuses_is_given_up_not_retried() {
    let dir = Scratch::new("mqtt-large-forward");
    let broker = Mosquitto::start(&dir.0);
    let hq = Subscriber::start(&broker, "hq-large", "coupond/push/#");
    let relay_dir = Scratch::new("mqtt-large-relay");
    let relay = Daemon::start_with(&relay_dir.0, relay_opts(&broker.url(), "relay-large"));
    // 60 KB of 0x01: stored invalid, forwarded; escaped it is six times that.
    let ones = "\u{1}".repeat(60_000);
    assert_eq!(relay.push(&ones).status, 200);
    assert_eq!(
        relay
            .push(&coupon("verify", 1_700_000_000, "behind"))
            .status,
        200
    );
    let lines = hq.wait_for(2, WAIT);
    assert_eq!(lines.len(), 2, "{}", relay.log_text());
    assert!(lines[0].len() > 360_000, "{}", lines[0].len());
    eventually("both jobs done", &relay, || {
        outputs(&relay, "mqtt").iter().all(|(s, _, _)| s == "done")
    });

    // A broker that takes at most 10 KB: the large forward can never go, the next does.
    let small_dir = Scratch::new("mqtt-small-broker");
    let small = Mosquitto::start_with(&small_dir.0, "message_size_limit 10000\n");
    let hq = Subscriber::start(&small, "hq-small", "coupond/push/#");
    let relay_dir = Scratch::new("mqtt-small-relay");
    let relay = Daemon::start_with(&relay_dir.0, relay_opts(&small.url(), "relay-small"));
    assert_eq!(relay.push(&ones).status, 200);
    assert_eq!(
        relay
            .push(&coupon("verify", 1_700_000_000, "behind"))
            .status,
        200
    );
    let lines = hq.wait_for(1, WAIT);
    assert_eq!(lines.len(), 1, "{}", relay.log_text());
    assert!(lines[0].contains("behind"), "{}", lines[0]);
    eventually("the refused job given up", &relay, || {
        let jobs = outputs(&relay, "mqtt");
        jobs.len() == 2 && jobs[0].0 == "failed" && jobs[1].0 == "done"
    });
    let (_, attempts, error) = outputs(&relay, "mqtt").remove(0);
    assert_eq!(attempts, 1);
    assert!(error.unwrap().contains("too large"));
}

#[test]
fn two_boxes_with_one_client_id_are_named_in_the_log_the_links_row_and_check() {
    let dir = Scratch::new("mqtt-dup");
    let broker = Mosquitto::start(&dir.0);
    let (a_dir, b_dir) = (Scratch::new("mqtt-dup-a"), Scratch::new("mqtt-dup-b"));
    let a = Daemon::start_with(&a_dir.0, box_opts(&broker.url(), "cloned"));
    let b = Daemon::start_with(&b_dir.0, box_opts(&broker.url(), "cloned"));
    for d in [&a, &b] {
        assert!(
            d.wait_log(
                "client id cloned-sub is most likely in use by another client",
                WAIT
            ),
            "{}",
            d.log_text()
        );
    }
    let state = |d: &Daemon| {
        query_str(
            &d.sql(),
            "SELECT state FROM links WHERE name = 'mqtt-source'",
        )
    };
    eventually("the links row", &a, || state(&a) == "duplicate-client-id");
    assert!(a.log_text().contains("/etc/machine-id"));
    let db = a.db.to_str().unwrap().to_string();
    let url = broker.url();
    let out = run(
        &[
            "check",
            "--db",
            &db,
            "--client-key",
            CLIENT_KEY,
            "--listen",
            "127.0.0.1:0",
            "--mqtt-source",
            &url,
            "--mqtt-client-id",
            "cloned",
        ],
        &[("COUPOND_CLIENT_SECRET", SECRET)],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("FAIL") && l.contains("cloned-sub")),
        "{text}"
    );
}

#[test]
fn replays_of_a_stored_push_cost_a_count_in_memory_not_a_write_and_a_line_each() {
    let box_dir = Scratch::new("replay-http");
    let mut d = Daemon::start(&box_dir.0);
    let body = coupon("verify", 1_700_000_000, "replayed");
    let n = if emulated() { 300 } else { 3_000 };
    for _ in 0..n {
        let r = d.push(&body);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, r#"{"outcome":"applied"}"#)
        );
    }
    let lines = lines_with(&d, "redelivery");
    assert!(lines <= 3, "{lines} redelivery lines for {n} replays");
    assert_eq!(d.terminate(), Some(0));
    assert_eq!(
        query_i64(&d.sql(), "SELECT deliveries FROM messages"),
        n,
        "every replay counted"
    );

    // Over MQTT: the same, on one connection.
    let dir = Scratch::new("replay-mqtt");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("replay-mqtt-box");
    let mut store = store_box(&box_dir, &broker, &[]);
    let payloads = vec![signed_forward(&body); n as usize];
    broker.publish_lines(&topic("acct-9"), &payloads);
    let marker = coupon("verify", 1_700_000_000, "after-replays");
    broker.publish(&topic("acct-9"), &signed_forward(&marker));
    eventually("the push after the replays", &store, || {
        applied(&store, "after-replays")
    });
    let lines = lines_with(&store, "redelivery");
    assert!(lines <= 3, "{lines} redelivery lines for {n} replays");
    assert_eq!(lines_with(&store, "reconnecting"), 0);
    assert_eq!(store.terminate(), Some(0));
    assert_eq!(
        query_i64(
            &store.sql(),
            "SELECT deliveries FROM messages WHERE certificate_id = 'replayed'"
        ),
        n
    );
}

#[test]
fn forged_mqtt_pushes_are_throttled_like_the_webhooks_rejects() {
    let dir = Scratch::new("mqtt-forgeries");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-forgeries-box");
    let store = store_box(&box_dir, &broker, &[]);
    let n = if emulated() { 300 } else { 3_000 };
    let payloads: Vec<String> = (0..n)
        .map(|i| {
            let body = coupon("verify", 1_700_000_000 + i, &format!("f-{i}"));
            forwarded(&body, &sign("a-guess", body.as_bytes()))
        })
        .collect();
    broker.publish_lines(&topic("acct-9"), &payloads);
    let real = coupon("verify", 1_700_000_000, "real");
    broker.publish(&topic("acct-9"), &signed_forward(&real));
    eventually("the real push", &store, || applied(&store, "real"));
    let rows = query_i64(&store.sql(), "SELECT count(*) FROM rejected");
    assert!(rows <= 35, "{rows} rows for {n} forgeries");
    let lines = lines_with(&store, "rejected a publish");
    assert!(lines <= 3, "{lines} lines for {n} forgeries");
}

#[test]
fn mqtt_accounts_hold_for_the_signed_body_and_a_retained_push_counts_once() {
    let dir = Scratch::new("mqtt-accounts");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-accounts-box");
    let store = store_box(&box_dir, &broker, &["--mqtt-accounts", "1111"]);
    // Signed for account acct-9 (the body says so), published on the box's topic.
    let other = coupon("verify", 1_700_000_000, "other-account");
    broker.publish(&topic("1111"), &signed_forward(&other));
    let mine = coupon("verify", 1_700_000_000, "mine").replace("acct-9", "1111");
    assert!(mine.contains("1111"));
    // Retained: the broker hands it to every new subscription.
    let retained = dir.path("retained");
    std::fs::write(&retained, signed_forward(&mine)).unwrap();
    broker.publish_file(&topic("1111"), &retained, true);
    eventually("the box's own push", &store, || applied(&store, "mine"));
    assert!(!applied(&store, "other-account"));
    let why = query_str(
        &store.sql(),
        "SELECT outcome || ': ' || error FROM messages WHERE outcome = 'invalid'",
    );
    assert!(
        why.starts_with("invalid") && why.contains("--mqtt-accounts"),
        "{why}"
    );
    // Reconnect twice (clean stops, so nothing is owed): the retained push is not
    // delivered again.
    let mut store = store;
    assert_eq!(store.terminate(), Some(0));
    let mut store = store_box(&box_dir, &broker, &["--mqtt-accounts", "1111"]);
    assert_eq!(store.terminate(), Some(0));
    let store = store_box(&box_dir, &broker, &["--mqtt-accounts", "1111"]);
    let later = coupon("verify", 1_700_000_001, "later").replace("acct-9", "1111");
    broker.publish(&topic("1111"), &signed_forward(&later));
    eventually("a later push", &store, || applied(&store, "later"));
    let mut store = store;
    assert_eq!(store.terminate(), Some(0));
    assert_eq!(
        query_i64(
            &store.sql(),
            "SELECT deliveries FROM messages WHERE certificate_id = 'mine'"
        ),
        1
    );
}

/// A TCP relay to `to` that cuts every connection after `life`; counts connections.
fn flapping_proxy(
    to: u16,
    life: Duration,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(client, server);
            pipe(s2, c2.try_clone().unwrap());
            std::thread::spawn(move || {
                std::thread::sleep(life);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, count)
}

#[test]
fn a_flapping_broker_is_retried_less_and_less_often_with_a_line_a_minute_at_most() {
    let dir = Scratch::new("mqtt-flapping");
    let broker = Mosquitto::start(&dir.0);
    let (port, connections) = flapping_proxy(broker.port, Duration::from_secs(1));
    let box_dir = Scratch::new("mqtt-flapping-box");
    let url = format!("mqtt://127.0.0.1:{port}");
    let store = Daemon::start_with(&box_dir.0, box_opts(&url, "flap"));
    let watch = Duration::from_secs(25);
    std::thread::sleep(watch);
    let n = connections.load(std::sync::atomic::Ordering::SeqCst);
    let log = store.log_text();
    let lines = log.lines().filter(|l| l.contains("mqtt-source:")).count();
    eprintln!("{n} connections and {lines} lines in {watch:?}");
    // 1 s up, then 1, 2, 4, 8 s of backoff: about 5 connections in 25 s, not 12; the
    // lines: connected, the first failure, and the one naming the likely cause.
    assert!((2..=7).contains(&n), "{n} connections\n{log}");
    assert!(lines <= 3, "{lines} lines\n{log}");
}

#[test]
fn sighup_gives_the_mqtt_source_the_new_secret() {
    let dir = Scratch::new("mqtt-reload");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-reload-box");
    let store = store_box(&box_dir, &broker, &[]);
    let new_secret = "rotated-secret-77";
    std::fs::write(box_dir.path("secret"), format!("{new_secret}\n")).unwrap();
    unsafe_kill(store.child.id(), "HUP");
    assert!(
        store.wait_log("SIGHUP: reloaded", WAIT),
        "{}",
        store.log_text()
    );
    let body = coupon("verify", 1_700_000_000, "after-rotation");
    broker.publish(
        &topic("acct-9"),
        &forwarded(&body, &sign(new_secret, body.as_bytes())),
    );
    eventually("the push signed with the new secret", &store, || {
        applied(&store, "after-rotation")
    });
    assert_eq!(query_i64(&store.sql(), "SELECT count(*) FROM rejected"), 0);
}
