//! SPEC §12 against a real broker (Debian's mosquitto, persistence on): events to
//! headquarters once each and in order, across broker outages and daemon restarts; a
//! relay forwarding pushes to a store box that was stopped, across a broker restart; a
//! forged publish that never applies; a store box killed between commit and PUBACK.

mod common;

use common::mosquitto::{Mosquitto, Subscriber};
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `--mqtt URL` with a client id of its own (several daemons share this machine).
fn sink_opts(url: &str, id: &str) -> Opts {
    Opts::default().args(&["--mqtt", url, "--mqtt-client-id", id])
}

/// The certificate and action of each event line (`topic payload`), in order.
fn events(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            let (_, payload) = l.split_once(' ').unwrap();
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            (
                v["certificate_id"].as_str().unwrap().to_string(),
                v["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(cert: &str, action: &str) -> (String, String) {
    (cert.to_string(), action.to_string())
}

/// Like `wait_until`, with the daemons' logs when it times out.
fn eventually(what: &str, daemons: &[&Daemon], mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        if std::time::Instant::now() > deadline {
            for d in daemons {
                eprintln!("---- {}\n{}", d.dir.display(), d.log_text());
            }
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pending_mqtt(d: &Daemon) -> i64 {
    query_i64(
        &d.sql(),
        "SELECT count(*) FROM outputs WHERE sink = 'mqtt' AND state = 'pending'",
    )
}

#[test]
fn applied_events_reach_headquarters_once_each_in_order_and_nothing_else_does() {
    let dir = Scratch::new("mqtt-events");
    let broker = Mosquitto::start(&dir.0);
    let hq = Subscriber::start(&broker, "hq-1", "coupond/event/#");
    let box_dir = Scratch::new("mqtt-events-box");
    let d = Daemon::start_with(&box_dir.0, sink_opts(&broker.url(), "box-1"));

    let verify = coupon("verify", 1_700_000_000, "ev-1");
    assert_eq!(d.push(&verify).status, 200);
    assert_eq!(d.push(&verify).status, 200, "redelivery");
    let duplicate = coupon_with("verify", 1_700_000_000, "ev-1", r#","log_id":"again""#);
    assert_eq!(d.push(&duplicate).status, 200);
    assert_eq!(
        d.push(&coupon("verify_cancel", 1_700_000_100, "ev-1"))
            .status,
        200
    );
    assert_eq!(
        d.push(&coupon("verify", 1_700_000_050, "ev-1")).status,
        200,
        "stale"
    );
    assert_eq!(d.push(&coupon("verify", 1_700_000_000, "ev-2")).status, 200);

    let lines = hq.wait_for(3, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let lines = hq.wait_for(lines.len() + 1, Duration::from_millis(1));
    assert_eq!(
        events(&lines),
        [
            pair("ev-1", "verify"),
            pair("ev-1", "verify_cancel"),
            pair("ev-2", "verify")
        ],
        "{lines:#?}"
    );
    let (topic, payload) = lines[0].split_once(' ').unwrap();
    assert_eq!(topic, format!("coupond/event/{CLIENT_KEY}/acct-9"));
    let v: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(v["body"], verify.as_str());
    assert_eq!(v["signature"], sign(SECRET, verify.as_bytes()).as_str());
    assert_eq!(v["code"], "CODE12345678");
    wait_until("every mqtt job done", WAIT, || pending_mqtt(&d) == 0);
    let status = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("mqtt       connected since"), "{text}");
    assert!(text.contains("0 queued; last publish 20"), "{text}");
    assert!(text.contains("mqtt: 3 done"), "{text}");
}

#[test]
fn events_pushed_while_the_broker_is_down_arrive_in_order_after_it_returns_across_a_restart() {
    let dir = Scratch::new("mqtt-outage");
    let mut broker = Mosquitto::start(&dir.0);
    // Headquarters' persistent session exists; then the broker goes away.
    Subscriber::start(&broker, "hq-2", "coupond/event/#").stop();
    broker.down();

    let box_dir = Scratch::new("mqtt-outage-box");
    let opts = sink_opts(&broker.url(), "box-2");
    let mut d = Daemon::start_with(&box_dir.0, opts.clone());
    for i in 0..3 {
        let r = d.push(&coupon("verify", 1_700_000_000, &format!("out-{i}")));
        assert_eq!(
            r.status, 200,
            "a broker outage never delays or fails an answer"
        );
        assert!(r.elapsed < Duration::from_secs(1), "{:?}", r.elapsed);
    }
    assert!(
        d.wait_log("mqtt: mqtt://127.0.0.1", WAIT),
        "{}",
        d.log_text()
    );
    assert_eq!(pending_mqtt(&d), 3);
    assert_eq!(d.terminate(), Some(0));

    let d = Daemon::start_with(&box_dir.0, opts);
    for i in 3..5 {
        assert_eq!(
            d.push(&coupon("verify", 1_700_000_000, &format!("out-{i}")))
                .status,
            200
        );
    }
    let status = run(&["status", "--db", d.db.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("mqtt       connecting since"), "{text}");
    assert!(text.contains("5 queued"), "{text}");
    broker.up();
    wait_until("the backlog published", WAIT, || pending_mqtt(&d) == 0);
    let hq = Subscriber::start(&broker, "hq-2", "coupond/event/#");
    let lines = hq.wait_for(5, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let lines = hq.wait_for(lines.len() + 1, Duration::from_millis(1));
    let want: Vec<_> = (0..5)
        .map(|i| pair(&format!("out-{i}"), "verify"))
        .collect();
    assert_eq!(events(&lines), want, "{lines:#?}");
    assert_eq!(
        query_i64(
            &d.sql(),
            "SELECT count(*) FROM outputs WHERE state = 'failed'"
        ),
        0,
        "no attempt limit for the broker"
    );
}

/// A relay (`--mqtt --mqtt-forward`) and a store box (`--mqtt-source`).
fn relay_opts(url: &str) -> Opts {
    sink_opts(url, "relay").arg("--mqtt-forward")
}

fn box_opts(url: &str) -> Opts {
    Opts::default().args(&["--mqtt-source", url, "--mqtt-client-id", "store-7"])
}

fn status_of(d: &Daemon, cert: &str) -> Option<String> {
    d.sql()
        .query_row(
            "SELECT status FROM certificates WHERE certificate_id = ?1",
            [cert],
            |r| r.get(0),
        )
        .ok()
}

#[test]
fn relay_to_broker_to_store_box_including_while_the_box_was_stopped_and_across_a_broker_restart() {
    let dir = Scratch::new("mqtt-relay");
    let mut broker = Mosquitto::start(&dir.0);
    let (relay_dir, box_dir) = (Scratch::new("relay"), Scratch::new("store-box"));
    let relay = Daemon::start_with(&relay_dir.0, relay_opts(&broker.url()));
    let mut store = Daemon::start_with(&box_dir.0, box_opts(&broker.url()));
    assert!(
        store.wait_log("mqtt-source: connected", WAIT),
        "{}",
        store.log_text()
    );

    assert_eq!(
        relay.push(&coupon("verify", 1_700_000_000, "rl-1")).status,
        200
    );
    wait_until("rl-1 on the box", WAIT, || {
        status_of(&store, "rl-1").is_some()
    });
    assert_eq!(status_of(&store, "rl-1").as_deref(), Some("verified"));
    assert_eq!(
        query_str(
            &store.sql(),
            "SELECT source || ' ' || outcome FROM messages"
        ),
        "mqtt applied"
    );
    assert!(
        store.wait_log("coupon rl-1 verify", WAIT),
        "the box's own sink told the store"
    );

    // The box is off: the broker keeps its session.
    assert_eq!(store.terminate(), Some(0));
    assert_eq!(
        relay.push(&coupon("verify", 1_700_000_010, "rl-2")).status,
        200
    );
    assert_eq!(
        relay
            .push(&coupon("verify_cancel", 1_700_000_020, "rl-1"))
            .status,
        200
    );
    // A stale push at the relay is forwarded all the same: the box decides for itself.
    assert_eq!(
        relay.push(&coupon("verify", 1_700_000_005, "rl-1")).status,
        200
    );
    wait_until("the relay's forwards published", WAIT, || {
        pending_mqtt(&relay) == 0
    });
    // Back without a webhook port at all: MQTT is its only way in.
    let store = Daemon::start_with(
        &box_dir.0,
        box_opts(&broker.url()).args(&["--listen", "off"]),
    );
    wait_until("what the box missed", WAIT, || {
        status_of(&store, "rl-1").as_deref() == Some("cancelled")
            && status_of(&store, "rl-2").is_some()
    });

    // The broker restarts under both of them.
    broker.down();
    assert_eq!(
        relay.push(&coupon("verify", 1_700_000_030, "rl-3")).status,
        200
    );
    std::thread::sleep(Duration::from_secs(1));
    broker.up();
    eventually("rl-3 after the broker's restart", &[&relay, &store], || {
        status_of(&store, "rl-3").is_some()
    });
    wait_until("all five pushes on the box", WAIT, || {
        query_i64(&store.sql(), "SELECT count(*) FROM messages") == 5
    });
    let outcomes: Vec<String> = query_column(
        &store.sql(),
        "SELECT certificate_id || ' ' || outcome FROM messages ORDER BY msg_time",
    );
    assert_eq!(
        outcomes,
        [
            "rl-1 applied",
            "rl-1 stale",
            "rl-2 applied",
            "rl-1 applied",
            "rl-3 applied"
        ]
    );
    assert_eq!(
        query_i64(
            &store.sql(),
            "SELECT count(*) FROM messages WHERE source != 'mqtt'"
        ),
        0
    );
    // Nothing that came from MQTT goes back out: the box has no --mqtt at all, and the
    // relay's queue holds only its own forwards.
    assert_eq!(
        query_i64(
            &relay.sql(),
            "SELECT count(*) FROM outputs WHERE sink = 'mqtt'"
        ),
        5
    );
}

/// A forwarded push as a relay publishes it.
fn forwarded(body: &str, signature: &str) -> String {
    serde_json::json!({"body": body, "signature": signature, "msg_id": "m-1"}).to_string()
}

#[test]
fn a_forged_push_published_straight_to_the_broker_never_applies_and_does_not_stop_later_ones() {
    let dir = Scratch::new("mqtt-forged");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-forged-box");
    let store = Daemon::start_with(&box_dir.0, box_opts(&broker.url()));
    assert!(
        store.wait_log("mqtt-source: connected", WAIT),
        "{}",
        store.log_text()
    );
    let topic = format!("coupond/push/{CLIENT_KEY}/acct-9");

    let forged = coupon("verify", 1_700_000_000, "forged-1");
    broker.publish(
        &topic,
        &forwarded(&forged, &sign("a-guess", forged.as_bytes())),
    );
    broker.publish(&topic, "not a forwarded push");
    broker.publish(&topic, &forwarded(&forged, ""));
    let real = coupon("verify", 1_700_000_000, "real-1");
    broker.publish(&topic, &forwarded(&real, &sign(SECRET, real.as_bytes())));

    wait_until("the real push applied", WAIT, || {
        status_of(&store, "real-1").is_some()
    });
    assert_eq!(status_of(&store, "forged-1"), None);
    let rejected: Vec<String> = query_column(
        &store.sql(),
        "SELECT status || ' ' || source FROM rejected ORDER BY id",
    );
    assert_eq!(rejected, ["401 mqtt", "400 mqtt", "401 mqtt"]);
    // Every one was acknowledged: a new session gets nothing again.
    drop(store);
    let store = Daemon::start_with(&box_dir.0, box_opts(&broker.url()));
    assert!(store.wait_log("mqtt-source: connected", WAIT));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(query_i64(&store.sql(), "SELECT count(*) FROM rejected"), 3);
    assert_eq!(
        query_i64(&store.sql(), "SELECT sum(deliveries) FROM messages"),
        1
    );
}

#[test]
fn sigkill_of_the_store_box_between_commit_and_puback_loses_nothing_and_applies_nothing_twice() {
    let dir = Scratch::new("mqtt-kill");
    let broker = Mosquitto::start(&dir.0);
    let box_dir = Scratch::new("mqtt-kill-box");
    let mut store = Daemon::start_with(&box_dir.0, box_opts(&broker.url()));
    assert!(store.wait_log("mqtt-source: connected", WAIT));
    let topic = format!("coupond/push/{CLIENT_KEY}/acct-9");
    let n = 600;
    let payloads: Vec<String> = (0..n)
        .map(|i| {
            let body = coupon("verify", 1_700_000_000 + i, &format!("k-{i}"));
            forwarded(&body, &sign(SECRET, body.as_bytes()))
        })
        .collect();
    let publisher = {
        let (port, topic) = (broker.port, topic.clone());
        std::thread::spawn(move || {
            let m = Mosquitto::attach(port);
            m.publish_lines(&topic, &payloads);
        })
    };
    // Kill it while pushes are still coming: some are committed and not yet PUBACK'd.
    wait_until("some committed", WAIT, || {
        query_i64(&store.sql(), "SELECT count(*) FROM messages") > 50
    });
    store.kill9();
    publisher.join().unwrap();
    let store = Daemon::start_with(&box_dir.0, box_opts(&broker.url()));
    wait_until("every push on the box", Duration::from_secs(60), || {
        query_i64(
            &store.sql(),
            "SELECT count(DISTINCT certificate_id) FROM certificates",
        ) == n
    });
    let c = store.sql();
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM messages"),
        n,
        "one row per push"
    );
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'applied'"
        ),
        n
    );
    assert_eq!(
        query_i64(&c, "SELECT count(*) FROM outputs"),
        n,
        "applied once each"
    );
    let redelivered = query_i64(&c, "SELECT sum(deliveries) - count(*) FROM messages");
    eprintln!("redelivered after the kill: {redelivered}");
}

#[test]
fn over_mqtts_a_relay_and_a_store_box_trust_the_broker_through_mqtt_ca_and_nothing_else() {
    let dir = Scratch::new("mqtt-tls");
    let broker = Mosquitto::start_tls(&dir.0);
    let url = format!("mqtts://127.0.0.1:{}", broker.tls_port.unwrap());
    let ca = broker.ca();
    let ca = ca.to_str().unwrap();
    let hq = Subscriber::start(&broker, "hq-tls", "coupond/event/#");

    // Without the private CA the web-PKI roots do not vouch for the broker: nothing goes.
    let untrusting_dir = Scratch::new("mqtt-tls-untrusting");
    let untrusting = Daemon::start_with(&untrusting_dir.0, sink_opts(&url, "untrusting"));
    assert_eq!(
        untrusting
            .push(&coupon("verify", 1_700_000_000, "tls-0"))
            .status,
        200
    );
    assert!(
        untrusting.wait_log("mqtt: mqtts://127.0.0.1", WAIT),
        "{}",
        untrusting.log_text()
    );
    let refused = untrusting.log_text();
    let refused = refused
        .lines()
        .find(|l| l.contains("mqtt: mqtts://"))
        .unwrap();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert_eq!(pending_mqtt(&untrusting), 1);

    let (relay_dir, box_dir) = (Scratch::new("tls-relay"), Scratch::new("tls-box"));
    let relay = Daemon::start_with(&relay_dir.0, relay_opts(&url).args(&["--mqtt-ca", ca]));
    let store = Daemon::start_with(
        &box_dir.0,
        box_opts(&url).args(&["--mqtt-ca", ca, "--mqtt", &url]),
    );
    assert!(
        store.wait_log("mqtt-source: connected to mqtts://", WAIT),
        "{}",
        store.log_text()
    );
    assert_eq!(
        relay.push(&coupon("verify", 1_700_000_000, "tls-1")).status,
        200
    );
    eventually("tls-1 on the box", &[&relay, &store], || {
        status_of(&store, "tls-1").is_some()
    });
    // Both the relay and the box tell headquarters, each through TLS.
    let lines = hq.wait_for(2, WAIT);
    assert_eq!(
        events(&lines),
        [pair("tls-1", "verify"), pair("tls-1", "verify")],
        "{lines:#?}"
    );
    assert_eq!(pending_mqtt(&untrusting), 1, "still refused");
}

/// A broker address nothing listens on: jobs for it stay pending, which is all the
/// output plan's tests need to see.
fn dead_broker() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("mqtt://{}", l.local_addr().unwrap())
}

fn sinks_of_jobs(db: &std::path::Path) -> Vec<String> {
    query_column(&open_db(db), "SELECT sink FROM outputs ORDER BY id")
}

#[test]
fn a_coupond_send_test_push_on_a_relay_queues_no_mqtt_job_and_a_real_push_does() {
    let dir = Scratch::new("plan-test-push");
    let url = dead_broker();
    let d = Daemon::start_with(&dir.0, relay_opts(&url));
    let out = send(
        &d.url(),
        &dir.path("secret"),
        &["--certificate-id", "plan-t"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        query_str(
            &d.sql(),
            "SELECT source FROM messages WHERE certificate_id = 'plan-t'"
        ),
        "test"
    );
    // Neither forwarded (a store box would take it for a real one) nor an event for
    // headquarters: no job at all, rather than one that publishes nothing.
    assert_eq!(sinks_of_jobs(&d.db), ["log"]);
    assert_eq!(d.push(&coupon("verify", 1, "plan-real")).status, 200);
    assert_eq!(sinks_of_jobs(&d.db), ["log", "log", "mqtt"]);
}

#[test]
fn coupond_reverify_queues_the_same_jobs_as_the_daemons_own_reverify_pass() {
    let url = dead_broker();
    let push = coupon("verify", 1, "plan-rv");
    let reject = |name: &str| {
        let dir = Scratch::new(name);
        let wrong = Opts {
            secret_file_contents: Some("a-wrong-secret\n".into()),
            ..relay_opts(&url)
        };
        let mut d = Daemon::start_with(&dir.0, wrong);
        assert_eq!(d.push(&push).status, 401);
        assert_eq!(d.terminate(), Some(0));
        std::fs::write(dir.path("secret"), format!("{SECRET}\n")).unwrap();
        dir
    };
    // The daemon's pass, at its next start (the same one SIGHUP runs).
    let by_daemon = reject("plan-rv-daemon");
    let mut d = Daemon::start_with(&by_daemon.0, relay_opts(&url));
    assert!(
        d.wait_log("reverify: 1 of 1 rejected", Duration::from_secs(10)),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(), Some(0));
    // `coupond reverify` with the daemon's settings.
    let by_command = reject("plan-rv-command");
    let db = by_command.path("coupond.db");
    let secret = by_command.path("secret");
    let o = run(
        &[
            "reverify",
            "--db",
            db.to_str().unwrap(),
            "--client-key",
            CLIENT_KEY,
            "--secret-file",
            secret.to_str().unwrap(),
            "--mqtt",
            &url,
            "--mqtt-forward",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sinks_of_jobs(&by_daemon.path("coupond.db")),
        ["log", "mqtt"]
    );
    assert_eq!(sinks_of_jobs(&db), ["log", "mqtt"]);
}
