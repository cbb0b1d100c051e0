//! Hostile input: garbage, huge, truncated, slow and idle clients. The daemon keeps
//! answering valid pushes within Douyin's 3 s, stores nothing for the unsigned, and never
//! falls over.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn idle_half_open_and_garbage_connections_do_not_delay_valid_pushes() {
    let dir = Scratch::new("hostile");
    let d = Daemon::start(&dir.0);
    // 64 connections that send half a request line and then nothing.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            s.write_all(b"POST /douyin/webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
                .unwrap();
            s
        })
        .collect();
    // 8 connections that trickle a body one byte a second.
    let trickle: Vec<_> = (0..8)
        .map(|_| {
            let addr = d.addr;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(
                    b"POST /douyin/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                )
                .unwrap();
                for _ in 0..30 {
                    if s.write_all(b"{").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    let garbage: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"POST /douyin/webhook HTTP/1.1\r\nContent-Length: 999999999998000\r\n\r\n",
        b"POST /douyin/webhook HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /douyin/webhook HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"truncated\":",
        b"POST /douyin/webhook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /douyin/webhook HTTP/9.9\r\n\r\n",
    ];
    for g in garbage {
        let _ = raw(d.addr, g);
    }
    let huge_header = format!(
        "POST /douyin/webhook HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = raw(d.addr, huge_header.as_bytes());
    // A signed body that is not even UTF-8: stored as invalid, byte for byte.
    let binary: Vec<u8> = vec![0xff, 0xfe, 0x00, b'{', 0x80];
    let hdr = vec![("X-Douyin-Signature".to_string(), sign(SECRET, &binary))];
    assert_eq!(request(d.addr, "POST", PATH, &hdr, &binary).status, 200);

    // With all of that going on, valid pushes are answered fast.
    for i in 0..20 {
        let r = d.push(&coupon("verify", 1, &format!("valid-{i}")));
        assert_eq!(r.status, 200);
        assert!(r.elapsed < Duration::from_secs(3), "took {:?}", r.elapsed);
    }
    let c = d.sql();
    assert_eq!(query_i64(&c, "SELECT count(*) FROM certificates"), 20);
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM messages WHERE outcome = 'invalid'"
        ),
        1
    );
    let stored: Vec<u8> = c
        .query_row(
            "SELECT body FROM messages WHERE outcome = 'invalid'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, binary);

    // Idle connections are closed by the server's header timeout, not held forever.
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(
        started.elapsed() < Duration::from_secs(16),
        "idle connections held {:?}",
        started.elapsed()
    );
    for t in trickle {
        t.join().unwrap();
    }
    assert!(
        d.log_text().contains("408 body not received"),
        "{}",
        d.log_text()
    );
    // Still alive and serving.
    assert_eq!(d.push(&coupon("verify", 1, "after-all")).status, 200);
}

#[test]
fn many_concurrent_valid_senders_are_all_answered_and_all_stored() {
    let dir = Scratch::new("concurrent");
    let d = Daemon::start(&dir.0);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let addr = d.addr;
            std::thread::spawn(move || {
                for i in 0..50 {
                    let body = coupon("verify", 1, &format!("conc-{t}-{i}"));
                    let hdr = vec![(
                        "X-Douyin-Signature".to_string(),
                        sign(SECRET, body.as_bytes()),
                    )];
                    assert_eq!(
                        request(addr, "POST", PATH, &hdr, body.as_bytes()).status,
                        200
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        query_i64(&d.sql(), "SELECT count(*) FROM certificates"),
        800
    );
}
