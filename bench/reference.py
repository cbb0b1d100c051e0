#!/usr/bin/env python3
"""A plain reference receiver for the benchmark (SPEC §10), Python standard library only.

It does the durable part of coupond's work and nothing more: checks the signature
(sha1 of secret and body), parses the envelope and its `content`, and inserts the
message (unique on the body's sha1) and the certificate's state in one SQLite
transaction in WAL mode with synchronous=FULL, committed before the 200. One commit per
request: no group commit, no outputs, no rate limits. `examples/bench.rs --reference`
runs the same load against it and compares CPU per message, RSS and latency.

Usage: reference.py DB SECRET   (prints "listening on 127.0.0.1:PORT", then serves)
"""

import hashlib
import http.server
import json
import sqlite3
import sys
import threading


def main():
    db, secret = sys.argv[1], sys.argv[2].encode()
    conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY, received_at TEXT, msg_id TEXT, log_id TEXT,
            event TEXT, client_key TEXT, action TEXT, certificate_id TEXT,
            msg_time INTEGER, outcome TEXT, body TEXT, body_sha1 TEXT UNIQUE,
            deliveries INTEGER DEFAULT 1);
        CREATE TABLE IF NOT EXISTS certificates (
            certificate_id TEXT PRIMARY KEY, order_id TEXT, account_id TEXT,
            status TEXT, status_msg_time INTEGER);
        """
    )
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            sig = self.headers.get("X-Douyin-Signature", "")
            if hashlib.sha1(secret + body).hexdigest() != sig:
                return self.answer(401)
            try:
                env = json.loads(body)
                content = json.loads(env["content"])
                cert = content["certificate"]
            except (ValueError, KeyError, TypeError):
                return self.answer(400)
            digest = hashlib.sha1(body).hexdigest()
            with lock:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    cur = conn.execute(
                        "INSERT INTO messages (received_at, msg_id, log_id, event, client_key,"
                        " action, certificate_id, msg_time, outcome, body, body_sha1)"
                        " VALUES (strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?, ?, ?, ?, ?, ?, ?,"
                        " 'applied', ?, ?) ON CONFLICT (body_sha1) DO UPDATE SET"
                        " deliveries = deliveries + 1",
                        (self.headers.get("Msg-Id"), env.get("log_id"), env.get("event"),
                         env.get("client_key"), content.get("action"),
                         str(cert["certificate_id"]), int(content["msg_time"]),
                         body.decode("utf-8", "replace"), digest),
                    )
                    conn.execute(
                        "INSERT INTO certificates VALUES (?, ?, ?, ?, ?) ON CONFLICT"
                        " (certificate_id) DO UPDATE SET status = excluded.status,"
                        " status_msg_time = excluded.status_msg_time",
                        (str(cert["certificate_id"]), str(cert.get("order_id")),
                         str(cert.get("account_id")), content.get("action"),
                         int(content["msg_time"])),
                    )
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    conn.execute("ROLLBACK")
                    return self.answer(503)
            self.answer(200, b'{"outcome":"applied"}')

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
