//! Load generator for coupond (SPEC §10). Run with `bench/run` (builds the release
//! binary first), or:
//!
//! ```text
//! cargo run --release --example bench -- --bin target/release/coupond [--senders 8] [--seconds 10] [-- EXTRA SERVE FLAGS]
//! ```
//!
//! In one run, on the same file system, it measures:
//! 1. the disk's single-commit ceiling: a loop of one-row `synchronous=FULL` WAL commits;
//! 2. coupond under N concurrent keep-alive senders, each pushing distinct signed coupon
//!    messages: durable messages per second, ack latency p50/p99/max, the daemon's peak
//!    RSS (VmHWM), start-up time to the listening line, and CPU while idle afterwards.
//!
//! With `--catchup-records N` it also runs catch-up (SPEC §11): a fake Douyin API
//! (`tests/common/fake_douyin.rs`, plain HTTP on 127.0.0.1) holding N verify records of
//! the last day, and the daemon sweeping it at start while the same senders push; it
//! reports the sweep's time and pages, the daemon's peak RSS, and the webhook latency
//! while the sweep runs next to the run without catch-up.
//!
//! With `--fleet N` it measures the MQTT chain of SPEC §12 instead, side by side with the
//! HTTP path in the same run: N pushes by the same senders (a) straight to a store box
//! over HTTP (ack latency = its commit) and (b) to a relay (`--mqtt --mqtt-forward`) that
//! forwards them through a real mosquitto to a store box (`--mqtt-source`, and `--mqtt`
//! for its own events), end to end: from the relay's webhook request to the moment the
//! box's database shows the push (polled every millisecond). It reports throughput,
//! p50/p99 and each daemon's peak RSS and heap.
//!
//! With `--details` it measures the details lookup (SPEC §13) in one run: the same load
//! with a fake Douyin whose certificate query answers in 50 ms, `--details off` and then
//! on (throughput and p99 side by side), and the daemon's RSS with 1,000 lookups pending
//! while that Douyin is down.
//!
//! Numbers from a shared machine are noisy: compare the ratios printed in one run.

#[path = "../tests/common/fake_douyin.rs"]
mod fake_douyin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";
const KEY: &str = "bench-app";

struct Opts {
    bin: PathBuf,
    senders: usize,
    seconds: u64,
    dir: PathBuf,
    extra: Vec<String>,
    /// An LD_PRELOAD library (bench/slowsync.c) and its flush delay, for both the
    /// ceiling loop and the daemon.
    preload: Option<PathBuf>,
    flush_us: u64,
    ceiling_only: Option<PathBuf>,
    /// Attach a printer that accepts connections and never reads.
    stalled_printer: bool,
    /// Also run a catch-up sweep of this many records under the same load.
    catchup_records: usize,
    /// `--fleet N`: the MQTT chain against the HTTP path, N pushes each.
    fleet: Option<u64>,
    /// `--details`: the details lookup on against off, and memory with lookups pending.
    details: bool,
    /// The daemon's `--log-level` (default `info`, the daemon's own default: SPEC §10's
    /// CPU budget is measured there). Its log goes to `coupond.log` in the scratch dir.
    log_level: String,
    /// Also run the same load against `bench/reference.py`, the plain reference
    /// receiver, and compare CPU per message.
    reference: bool,
    /// How long to watch the idle daemon after the load (CPU and wake-ups).
    idle_seconds: u64,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        bin: PathBuf::from("target/release/coupond"),
        senders: 8,
        seconds: 10,
        dir: std::env::temp_dir().join(format!("coupond-bench-{}", std::process::id())),
        extra: Vec::new(),
        preload: None,
        flush_us: 0,
        ceiling_only: None,
        stalled_printer: false,
        catchup_records: 0,
        fleet: None,
        details: false,
        log_level: "info".to_string(),
        reference: false,
        idle_seconds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => o.bin = args.next().expect("--bin PATH").into(),
            "--senders" => {
                o.senders = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--senders N")
            }
            "--seconds" => {
                o.seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--dir" => o.dir = args.next().expect("--dir PATH").into(),
            "--preload" => o.preload = Some(args.next().expect("--preload LIB").into()),
            "--flush-us" => {
                o.flush_us = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--flush-us N")
            }
            "--ceiling-only" => {
                o.ceiling_only = Some(args.next().expect("--ceiling-only DB").into())
            }
            "--stalled-printer" => o.stalled_printer = true,
            "--details" => o.details = true,
            "--fleet" => {
                o.fleet = Some(args.next().and_then(|v| v.parse().ok()).expect("--fleet N"))
            }
            "--catchup-records" => {
                o.catchup_records = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--catchup-records N")
            }
            "--log-level" => o.log_level = args.next().expect("--log-level LEVEL"),
            "--reference" => o.reference = true,
            "--idle-seconds" => {
                o.idle_seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--idle-seconds N")
            }
            "--" => o.extra = args.by_ref().collect(),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = parse_opts();
    if let Some(db) = &o.ceiling_only {
        println!("{}", single_commit_ceiling(db, Duration::from_secs(3)));
        return;
    }
    std::fs::create_dir_all(&o.dir).unwrap();
    if let Some(n) = o.fleet {
        fleet(&o, n);
        let _ = std::fs::remove_dir_all(&o.dir);
        return;
    }
    if o.details {
        details(&o);
        let _ = std::fs::remove_dir_all(&o.dir);
        return;
    }
    println!(
        "coupond benchmark: {} senders, {} s, scratch {}",
        o.senders,
        o.seconds,
        o.dir.display()
    );

    // In a child process, so that the same LD_PRELOAD applies to it as to the daemon.
    let out = preloaded(&o, Command::new(std::env::current_exe().unwrap()))
        .arg("--ceiling-only")
        .arg(o.dir.join("ceiling.db"))
        .output()
        .unwrap();
    let ceiling: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the ceiling run prints commits per second");
    println!("single-commit ceiling   {ceiling:>10.0} commits/s   (one-row synchronous=FULL WAL commits, same disk)");

    let run = load(&o);
    println!(
        "daemon start to listen  {:>10.1} ms",
        run.startup.as_secs_f64() * 1e3
    );
    println!(
        "durable messages        {:>10.0} msg/s     ({} acknowledged, {} errors) = {:.1}x the single-commit ceiling",
        run.rate,
        run.acked,
        run.errors,
        run.rate / ceiling
    );
    println!(
        "ack latency             p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        run.lat.p50 * 1e3,
        run.lat.p99 * 1e3,
        run.lat.max * 1e3
    );
    println!(
        "peak RSS (VmHWM)        {:>10.1} MB",
        run.peak_rss_kb as f64 / 1024.0
    );
    let r = &run.end_rss;
    println!(
        "RSS at the end of load  {:>10.1} MB: {:.1} MB anonymous (heap, SQLite's cache, stacks), {:.1} MB file-backed (binary, libc; PSS of it all {:.1} MB)",
        (r.anon_kb + r.file_kb) as f64 / 1024.0,
        r.anon_kb as f64 / 1024.0,
        r.file_kb as f64 / 1024.0,
        r.pss_kb as f64 / 1024.0
    );
    println!(
        "CPU per message         {:>10.1} us        (user + system, at log level {})",
        run.cpu_us_per_msg, o.log_level
    );
    println!(
        "idle after load         {:>10.2} % CPU, {:.0} wake-ups a minute ({} s watched)",
        run.idle_cpu_pct, run.idle_wakeups_per_min, o.idle_seconds
    );
    println!("stored rows             {:>10}", run.stored);
    println!(
        "largest -wal file       {:>10.1} MB",
        run.wal_peak as f64 / 1048576.0
    );
    if o.reference {
        let r = load_reference(&o);
        println!(
            "reference receiver      {:>10.0} msg/s     p50 {:.2} ms   p99 {:.2} ms   peak RSS {:.1} MB   ({} acknowledged, {} stored; bench/reference.py)",
            r.rate,
            r.lat.p50 * 1e3,
            r.lat.p99 * 1e3,
            r.peak_rss_kb as f64 / 1024.0,
            r.acked,
            r.stored
        );
        println!(
            "CPU per message         {:>10.1} us coupond / {:.1} us reference = {:.2}x   (budget: under 0.33x)",
            run.cpu_us_per_msg,
            r.cpu_us_per_msg,
            run.cpu_us_per_msg / r.cpu_us_per_msg
        );
        println!(
            "peak RSS                {:>10.1} MB coupond / {:.1} MB reference",
            run.peak_rss_kb as f64 / 1024.0,
            r.peak_rss_kb as f64 / 1024.0
        );
    }
    if o.catchup_records > 0 {
        let c = catchup(&o);
        println!(
            "catch-up sweep          {} records in {} queries ({} token): {:.2} s, {:.0} records/s",
            c.recovered,
            c.queries,
            c.tokens,
            c.sweep.as_secs_f64(),
            c.recovered as f64 / c.sweep.as_secs_f64()
        );
        println!(
            "ack latency, no sweep   p50 {:.2} ms   p99 {:.2} ms   (the run above)",
            run.lat.p50 * 1e3,
            run.lat.p99 * 1e3
        );
        println!(
            "ack latency, sweeping   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} answers during the sweep) = p99 {:.2}x",
            c.lat.p50 * 1e3,
            c.lat.p99 * 1e3,
            c.lat.max * 1e3,
            c.during,
            c.lat.p99 / run.lat.p99
        );
        println!(
            "peak RSS, catch-up on   {:>10.1} MB (sweep and load together)",
            c.peak_rss_kb as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&o.dir);
}

struct Catchup {
    sweep: Duration,
    recovered: i64,
    queries: usize,
    tokens: u32,
    during: usize,
    lat: Latency,
    peak_rss_kb: u64,
}

/// The daemon with catch-up against a fake Douyin holding `records` verify records of
/// the last day, swept at start while `senders` push; latencies of the answers that
/// came while the sweep ran.
fn catchup(o: &Opts) -> Catchup {
    let dir = o.dir.join("catchup");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let fake = fake_douyin::FakeDouyin::start(KEY, SECRET);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let n = o.catchup_records as i64;
    for i in 0..n {
        // Spread over the last day, as a busy store's verifications would be.
        let at = now - 86_000 + i * 85_000 / n;
        fake.add(fake_douyin::FakeRecord::verified(
            &format!("sweep-{i:05}"),
            at,
        ));
    }
    let db = dir.join("bench.db");
    let started = Instant::now();
    let mut child = preloaded(o, Command::new(&o.bin))
        .args(["serve", "--listen", "127.0.0.1:0", "--client-key", KEY])
        .args(["--log-level", "warn", "--account-id", fake_douyin::ACCOUNT])
        .args(["--douyin-api", &fake.url(), "--reconcile-every", "1h"])
        .arg("--db")
        .arg(&db)
        .arg("--secret-file")
        .arg(&secret)
        .args(&o.extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coupond");
    let pid = child.id();
    let addr = wait_for_port(pid);
    // The sweep's end is its warning line: "catch-up: recovered N coupon event(s)".
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("catch-up: recovered") {
                let _ = done_tx.send(Instant::now());
            } else {
                eprintln!("coupond: {line}");
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..o.senders)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || sender(addr, t + 100, &stop, u64::MAX))
        })
        .collect();
    let done = done_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the sweep did not finish within 5 minutes");
    stop.store(true, Ordering::Relaxed);
    let mut during: Vec<f64> = Vec::new();
    for h in handles {
        let (l, _) = h.join().unwrap();
        during.extend(
            l.into_iter()
                .filter(|(_, sent, l)| *sent + Duration::from_secs_f64(*l) <= done)
                .map(|(_, _, l)| l),
        );
    }
    during.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let peak_rss_kb = proc_status_kb(pid, "VmHWM");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let c = rusqlite::Connection::open(&db).unwrap();
    let recovered: i64 = c
        .query_row(
            "SELECT count(*) FROM messages WHERE source = 'reconcile'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    Catchup {
        sweep: done - started,
        recovered,
        queries: fake.queries().len(),
        tokens: fake.tokens_issued(),
        during: during.len(),
        lat: Latency::of(&during),
        peak_rss_kb,
    }
}

/// The benchmark's pushes name coupon `b-{sender}-{i}` of order `o-{i}`: the fake's
/// certificate query answers each order with its coupons (at most 64 senders).
fn bench_deals(order: &str) -> Vec<fake_douyin::FakeDeal> {
    let i = order.trim_start_matches("o-");
    (0..64)
        .map(|t| fake_douyin::FakeDeal::new(&format!("b-{t}-{i}"), order, "双人套餐", 9900, 12800))
        .collect()
}

/// SPEC §13 in one run: the load with details off and on against a fake Douyin whose
/// certificate query answers in 50 ms, then RSS with 1,000 lookups pending.
fn details(o: &Opts) {
    println!(
        "coupond details benchmark: {} senders, {} s each, scratch {}",
        o.senders,
        o.seconds,
        o.dir.display()
    );
    let fake = fake_douyin::FakeDouyin::start(KEY, SECRET);
    fake.state.lock().unwrap().deals_for = Some(bench_deals);
    fake.set_details_mode(fake_douyin::Mode::Slow(Duration::from_millis(50)));
    let douyin = |on: &str| {
        let mut extra = o.extra.clone();
        extra.extend(
            [
                "--account-id",
                fake_douyin::ACCOUNT,
                "--douyin-api",
                &fake.url(),
                "--reconcile-every",
                "1h",
                "--details",
                on,
            ]
            .map(String::from),
        );
        extra
    };
    // Off and on alternate, three rounds each, and the medians are compared: on a
    // shared machine the load of others drifts more between two runs than the lookup
    // costs.
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut p99s: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (k, on) in ["off", "on"].into_iter().enumerate() {
            let db = o.dir.join(format!("details-{on}-{round}.db"));
            let (child, addr, startup) = start_daemon(o, &db, &douyin(on));
            let run = measure(o, child, addr, startup, &db);
            let c = rusqlite::Connection::open(&db).unwrap();
            let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
            println!(
                "details {on:<3} round {round}     {:>8.0} msg/s   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   peak RSS {:.1} MB   ({} details fetched, {} lookups pending at the end)",
                run.rate,
                run.lat.p50 * 1e3,
                run.lat.p99 * 1e3,
                run.lat.max * 1e3,
                run.peak_rss_kb as f64 / 1024.0,
                count("SELECT count(*) FROM details"),
                count("SELECT count(*) FROM lookups WHERE state = 'pending'"),
            );
            rates[k].push(run.rate);
            p99s[k].push(run.lat.p99);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (rate_off, rate_on) = (median(&mut rates[0]), median(&mut rates[1]));
    let (p99_off, p99_on) = (median(&mut p99s[0]), median(&mut p99s[1]));
    println!(
        "details on / off        median throughput {rate_on:.0} / {rate_off:.0} msg/s = {:.2}x   median p99 {:.2} / {:.2} ms = {:.2}x   (budget: within 10%)",
        rate_on / rate_off,
        p99_on * 1e3,
        p99_off * 1e3,
        p99_on / p99_off
    );
    // Douyin down: 1,000 verifies, each with a lookup that keeps failing.
    fake.set_details_mode(fake_douyin::Mode::Down);
    let db = o.dir.join("details-pending.db");
    let (mut child, addr, _) = start_daemon(o, &db, &douyin("on"));
    let pid = child.id();
    let each = 1000 / o.senders as u64;
    let acked = push_all(addr, o.senders, each).len();
    let c = rusqlite::Connection::open(&db).unwrap();
    let pending = || -> i64 {
        c.query_row(
            "SELECT count(*) FROM lookups WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    // A few rounds of failing queries (10 a second) with every output delivered.
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "{} lookups pending       RSS {:.1} MB   peak RSS (VmHWM) {:.1} MB   ({acked} verifies acknowledged, Douyin down, {} queries tried)",
        pending(),
        proc_status_kb(pid, "VmRSS") as f64 / 1024.0,
        proc_status_kb(pid, "VmHWM") as f64 / 1024.0,
        fake.certificate_queries(),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
}

fn preloaded(o: &Opts, mut cmd: Command) -> Command {
    if let Some(lib) = &o.preload {
        cmd.env("LD_PRELOAD", lib)
            .env("COUPOND_BENCH_FLUSH_US", o.flush_us.to_string());
    }
    cmd
}

fn single_commit_ceiling(path: &Path, dur: Duration) -> f64 {
    let _ = std::fs::remove_file(path);
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch("PRAGMA synchronous = FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < dur {
        c.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {n}")])
            .unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

struct Run {
    startup: Duration,
    rate: f64,
    acked: usize,
    errors: usize,
    lat: Latency,
    peak_rss_kb: u64,
    /// Where the resident memory is at the end of the load.
    end_rss: Resident,
    /// The receiver's user + system CPU time during the load, per acknowledged message.
    cpu_us_per_msg: f64,
    idle_cpu_pct: f64,
    /// Context switches of all the receiver's threads while idle, per minute: each is a
    /// wake-up (a timer, a poll) that a box pays for in power and cache.
    idle_wakeups_per_min: f64,
    stored: i64,
    wal_peak: u64,
}

fn load(o: &Opts) -> Run {
    let db = o.dir.join("bench.db");
    let mut extra = o.extra.clone();
    if o.stalled_printer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        extra.extend([
            "--printer".to_string(),
            format!("tcp://{}", listener.local_addr().unwrap()),
        ]);
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().collect();
            drop(held);
        });
    }
    let (child, addr, startup) = start_daemon(o, &db, &extra);
    measure(o, child, addr, startup, &db)
}

/// The same load against `bench/reference.py` (see its docstring), in the same run.
fn load_reference(o: &Opts) -> Run {
    let db = o.dir.join("reference.db");
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference.py"))
        .arg(&db)
        .arg(SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3 bench/reference.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .expect("reference.py says where it listens");
    let startup = started.elapsed();
    measure(o, child, addr, startup, &db)
}

/// Runs the senders against a receiver for `o.seconds`, then watches it idle, stops it
/// and counts what it stored.
fn measure(
    o: &Opts,
    mut child: std::process::Child,
    addr: SocketAddr,
    startup: Duration,
    db: &Path,
) -> Run {
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_ticks(pid);
    let handles: Vec<_> = (0..o.senders)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || sender(addr, t, &stop, u64::MAX))
        })
        .collect();
    let load_started = Instant::now();
    // The -wal file's largest size during the load: checkpoints must keep it bounded.
    let wal = db.with_extension("db-wal");
    let mut wal_peak = 0u64;
    while load_started.elapsed() < Duration::from_secs(o.seconds) {
        wal_peak = wal_peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l.into_iter().map(|(_, _, l)| l));
        errors += e;
    }
    let elapsed = load_started.elapsed().as_secs_f64();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_us_per_msg =
        (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_sec * 1e6 / lat.len().max(1) as f64;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let peak_rss_kb = proc_status_kb(pid, "VmHWM");
    let end_rss = Resident::of(pid);
    // Let what the load left behind (a checkpoint, the outbox) settle first.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, switches0) = (cpu_ticks(pid), context_switches(pid));
    std::thread::sleep(Duration::from_secs(o.idle_seconds));
    let (cpu1, switches1) = (cpu_ticks(pid), context_switches(pid));
    let idle = o.idle_seconds.max(1) as f64;
    let idle_cpu_pct = (cpu1 - cpu0) as f64 / ticks_per_sec / idle * 100.0;
    let idle_wakeups_per_min = (switches1 - switches0) as f64 * 60.0 / idle;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let c = rusqlite::Connection::open(db).unwrap();
    let stored: i64 = c
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    Run {
        startup,
        rate: lat.len() as f64 / elapsed,
        acked: lat.len(),
        errors,
        lat: Latency::of(&lat),
        peak_rss_kb,
        end_rss,
        cpu_us_per_msg,
        idle_cpu_pct,
        idle_wakeups_per_min,
        stored,
        wal_peak,
    }
}

/// Ack latencies (s) of a run.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    /// From latencies sorted in ascending order.
    fn of(sorted: &[f64]) -> Latency {
        let pct = |p: f64| {
            let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
            sorted.get(i).copied().unwrap_or(0.0)
        };
        Latency {
            p50: pct(0.50),
            p99: pct(0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Starts `coupond serve` on a free port with the bench app, at log level warn, with
/// `extra` flags; returns it, its address and how long it took to listen.
fn start_daemon(
    o: &Opts,
    db: &Path,
    extra: &[String],
) -> (std::process::Child, SocketAddr, Duration) {
    let secret = o.dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    // The log goes to a file, as it would to the journal: at the default level (info)
    // every push is a line, which is part of the cost being measured.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(o.dir.join("coupond.log"))
        .unwrap();
    let started = Instant::now();
    let child = preloaded(o, Command::new(&o.bin))
        .args(["serve", "--listen", "127.0.0.1:0", "--client-key", KEY])
        .args(["--log-level", &o.log_level])
        .arg("--db")
        .arg(db)
        .arg("--secret-file")
        .arg(&secret)
        .args(extra)
        .stderr(log)
        .spawn()
        .expect("start coupond (build it with cargo build --release)");
    // The port is read off /proc rather than off the "listening on" line, which a
    // quieter log level leaves out.
    let addr = wait_for_port(child.id());
    let startup = started.elapsed();
    (child, addr, startup)
}

fn stop_daemon(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The MQTT chain against the HTTP path, `n` pushes each (see the top of this file).
fn fleet(o: &Opts, n: u64) {
    let per_sender = n.div_ceil(o.senders as u64);
    let total = per_sender * o.senders as u64;
    println!(
        "coupond fleet benchmark: {total} pushes from {} senders, scratch {}",
        o.senders,
        o.dir.display()
    );

    // (a) The HTTP path: the same pushes straight to a store box.
    let (child, addr, _) = start_daemon(o, &o.dir.join("http.db"), &o.extra);
    let started = Instant::now();
    let sent = push_all(addr, o.senders, per_sender);
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = sent.iter().map(|(_, _, l)| *l).collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let http_rss = proc_status_kb(child.id(), "VmHWM");
    // The peak counts the binary's and libc's mapped pages too; the heap is this part.
    let http_anon = proc_status_kb(child.id(), "RssAnon");
    stop_daemon(child);
    let http = {
        let l = Latency::of(&lat);
        (lat.len() as f64 / elapsed, l.p50, l.p99)
    };

    // (b) relay -> mosquitto -> store box.
    let broker = Broker::start(&o.dir.join("broker"));
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut relay_flags = vec!["--mqtt".to_string(), url.clone(), "--mqtt-forward".into()];
    relay_flags.extend(["--mqtt-client-id".into(), "bench-relay".into()]);
    relay_flags.extend(o.extra.iter().cloned());
    let box_db = o.dir.join("box.db");
    let mut box_flags = vec![
        "--mqtt-source".to_string(),
        url.clone(),
        "--mqtt".into(),
        url,
    ];
    box_flags.extend(["--mqtt-client-id".into(), "bench-box".into()]);
    box_flags.extend(o.extra.iter().cloned());
    let (store, _, _) = start_daemon(o, &box_db, &box_flags);
    let (relay, relay_addr, _) = start_daemon(o, &o.dir.join("relay.db"), &relay_flags);
    // Both connected before the clock starts.
    std::thread::sleep(Duration::from_secs(2));
    let seen = watch_commits(&box_db, total as usize);
    let started = Instant::now();
    let sent = push_all(relay_addr, o.senders, per_sender);
    let seen = seen.join().unwrap();
    let elapsed = seen
        .values()
        .max()
        .map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(cert, at, _)| Some(seen.get(cert)?.duration_since(*at).as_secs_f64()))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let box_rss = proc_status_kb(store.id(), "VmHWM");
    let box_anon = proc_status_kb(store.id(), "RssAnon");
    let relay_rss = proc_status_kb(relay.id(), "VmHWM");
    stop_daemon(relay);
    stop_daemon(store);
    drop(broker);
    let chain = {
        let l = Latency::of(&lat);
        (lat.len() as f64 / elapsed, l.p50, l.p99)
    };

    println!("| path | pushes | throughput | p50 | p99 | peak RSS (anonymous at the end) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| HTTP: webhook -> box commit (ack) | {} | {:.0} msg/s | {:.2} ms | {:.2} ms | box {:.1} MB ({:.1} MB) |",
        sent.len(),
        http.0,
        http.1 * 1e3,
        http.2 * 1e3,
        http_rss as f64 / 1024.0,
        http_anon as f64 / 1024.0
    );
    println!(
        "| MQTT: relay webhook -> broker -> box commit | {} of {} | {:.0} msg/s ({:.2}x) | {:.2} ms | {:.2} ms | box {:.1} MB ({:.1} MB), relay {:.1} MB |",
        lat.len(),
        sent.len(),
        chain.0,
        chain.0 / http.0,
        chain.1 * 1e3,
        chain.2 * 1e3,
        box_rss as f64 / 1024.0,
        box_anon as f64 / 1024.0,
        relay_rss as f64 / 1024.0
    );
}

/// `senders` keep-alive senders, `each` distinct pushes each: (certificate, sent at,
/// ack latency) per acknowledged push.
fn push_all(addr: SocketAddr, senders: usize, each: u64) -> Vec<(String, Instant, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..senders)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || sender(addr, t, &stop, each))
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap().0)
        .collect()
}

/// Watches the store box's database: when each certificate first showed up, until
/// `n` did (or 120 s passed).
fn watch_commits(
    db: &Path,
    n: usize,
) -> std::thread::JoinHandle<std::collections::HashMap<String, Instant>> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut seen = std::collections::HashMap::new();
        let mut last = 0i64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < n && Instant::now() < deadline {
            let mut stmt = c
                .prepare_cached("SELECT id, certificate_id FROM messages WHERE id > ?1 ORDER BY id")
                .unwrap();
            let rows: Vec<(i64, String)> = stmt
                .query_map([last], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .filter_map(Result::ok)
                .collect();
            let now = Instant::now();
            for (id, cert) in rows {
                last = last.max(id);
                seen.entry(cert).or_insert(now);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    })
}

/// A mosquitto of its own (Debian's package), persistence on as a real one would have.
struct Broker {
    port: u16,
    child: std::process::Child,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n\
                 persistence_location {}/\nmax_queued_messages 0\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { port, child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the TCP port the daemon listens on, from /proc/net/tcp and its socket inodes.
fn wait_for_port(pid: u32) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter_map(|l| {
                        l.to_str()?
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        for line in tcp.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st == 0A (LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = u16::from_str_radix(f[1].split(':').nth(1).unwrap(), 16).unwrap();
                return SocketAddr::from(([127, 0, 0, 1], port));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("coupond did not start listening");
}

/// A process's resident memory split by kind (`/proc/PID/status`, `smaps_rollup`).
struct Resident {
    anon_kb: u64,
    file_kb: u64,
    /// Proportional: pages shared with other processes (libc) count by their share.
    pss_kb: u64,
}

impl Resident {
    fn of(pid: u32) -> Resident {
        let pss_kb = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        Resident {
            anon_kb: proc_status_kb(pid, "RssAnon"),
            file_kb: proc_status_kb(pid, "RssFile"),
            pss_kb,
        }
    }
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Voluntary and involuntary context switches of every thread of `pid`.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// One keep-alive sender: distinct messages back to back, until the stop or `limit` were
/// sent; returns each acknowledged one's certificate, when it was sent and its latency
/// (s), and the errors.
fn sender(
    addr: SocketAddr,
    t: usize,
    stop: &AtomicBool,
    limit: u64,
) -> (Vec<(String, Instant, f64)>, usize) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && i < limit {
        let content = format!(
            r#"{{"action":"verify","msg_time":{},"certificate":{{"certificate_id":"b-{t}-{i}","order_id":"o-{i}","account_id":"1234"}}}}"#,
            1_700_000_000 + i
        );
        let body = format!(
            r#"{{"event":"life_trade_certificate_notify","client_key":"{KEY}","content":{},"log_id":"BENCH{t}x{i}"}}"#,
            serde_json::Value::String(content)
        );
        let sig = coupond::signature::sign(SECRET, body.as_bytes());
        let req = format!(
            "POST /douyin/webhook HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Douyin-Signature: {sig}\r\nMsg-Id: bench-{t}-{i}\r\n\r\n{body}",
            body.len()
        );
        let s = match conn.as_mut() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                conn.insert(BufReader::new(s))
            }
        };
        let started = Instant::now();
        let ok = s.get_mut().write_all(req.as_bytes()).is_ok() && read_status(s) == Some(200);
        if ok {
            lat.push((
                format!("b-{t}-{i}"),
                started,
                started.elapsed().as_secs_f64(),
            ));
        } else {
            errors += 1;
            conn = None;
        }
        i += 1;
    }
    (lat, errors)
}

/// Reads one response on a keep-alive connection; returns its status.
fn read_status(s: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut text = String::new();
    while !text.ends_with("\r\n\r\n") {
        if s.read_line(&mut text).ok()? == 0 {
            return None;
        }
    }
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(status)
}
