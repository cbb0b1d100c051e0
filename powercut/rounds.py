#!/usr/bin/env python3
"""The power-cut rounds (SPEC §16), run by powercut/run once it has the kernel, the
initramfs, qemu, nbdkit and an empty ext4 image ready.

Each round boots coupond in a virtual machine on a fresh copy of the image, pushes
distinct signed coupons from 8 senders through qemu's port forward (127.0.0.1 only),
records every certificate id answered 200, cuts the power at a random moment 1-5 s into
the load (kill -9 of qemu, and of nbdkit for the volatile disk), boots again (coupond
must start, answer a push and stop), then checks on the host: `e2fsck -fn` of the image,
and on a copy of the database taken out of it with debugfs, `PRAGMA integrity_check`,
every acknowledged id in `messages` and `certificates`, and each one's printer job in
`outputs`.

Two disk models, alternating:
  cache=none   qemu writes straight to the image (O_DIRECT): what the guest sent to the
               disk survives the kill;
  volatile     nbdkit's cache filter in writeback mode in front of the image: writes stay
               in nbdkit's cache (a deleted file) until the guest flushes, and die with it.

The control rounds take the sync away and must see a loss, or the test proves nothing:
  eatmydata    fsync a no-op in coupond (libeatmydata), on cache=none: what sits in the
               guest's page cache is lost;
  barrier=0    ext4 mounted without flushes, on the volatile disk: what the disk was sent
               but never told to flush is lost (shows the volatile model drops it).

Prints one line per round and closes with `powercut: N passed, N failed`, where the
control rounds count as passed when they saw the loss.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

SECRET = b"powercut-secret"
CLIENT_KEY = "powercut-app"
WEBHOOK = "/douyin/webhook"
SENDERS = 8
BOOT_TIMEOUT = 240  # seconds from qemu's start to coupond's first answer (TCG, busy host)
# More kernel arguments for a look inside, e.g. "loglevel=7 printk.time=1".
EXTRA = os.environ.get("COUPOND_POWERCUT_APPEND", "")


def say(line):
    print(f"powercut: {line}", flush=True)


def signed_push(conn, cert_id):
    """One Douyin-style push (SPEC §2) of a verify for cert_id; returns the HTTP status."""
    content = json.dumps(
        {
            "action": "verify",
            "msg_time": int(time.time()),
            "certificate": {"certificate_id": cert_id, "order_id": "O-" + cert_id, "account_id": "1234"},
        }
    )
    body = json.dumps(
        {
            "event": "life_trade_certificate_notify",
            "client_key": CLIENT_KEY,
            "from_user_id": "powercut",
            "content": content,
            "log_id": "L-" + cert_id,
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Msg-Id": "M-" + cert_id,
        "X-Douyin-Signature": hashlib.sha1(SECRET + body).hexdigest(),
    }
    conn.request("POST", WEBHOOK, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machine:
    """One boot of the guest: nbdkit (volatile disk) and qemu, with the console in a file
    and the second serial port on a unix socket the host writes "stop" to."""

    def __init__(self, args, rdir, name, disk, mode, eatmydata=False, mountopts=""):
        self.args, self.rdir, self.name, self.disk = args, rdir, name, disk
        self.console = os.path.join(rdir, f"{name}.console")
        self.ctl = os.path.join(rdir, f"{name}.ctl")
        self.port = free_port()
        self.nbdkit = None
        env = dict(os.environ, LD_LIBRARY_PATH=args.libpath)
        image = os.path.join(rdir, "data.img")
        if disk == "volatile":
            sock = os.path.join(rdir, f"{name}.nbd")
            mods = args.nbdkit_modules
            # The cache filter keeps its cache in a deleted file under TMPDIR.
            with open(self.console + ".nbdkit", "w") as log:
                self.nbdkit = subprocess.Popen(
                    [args.nbdkit, "-f", "-U", sock, f"--filter={mods}/filters/nbdkit-cache-filter.so",
                     f"{mods}/plugins/nbdkit-file-plugin.so", f"file={image}", "cache=writeback"],
                    env=dict(env, TMPDIR=rdir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                )
            wait_for(lambda: os.path.exists(sock) or self.nbdkit.poll() is not None, 30)
            if self.nbdkit.poll() is not None:
                raise RuntimeError(f"nbdkit exited {self.nbdkit.returncode}: see {self.console}.nbdkit")
            drive = f"file=nbd:unix:{sock},format=raw,if=virtio,cache=writeback"
        else:
            drive = f"file={image},format=raw,if=virtio,cache=none,aio=threads"
        append = f"console=ttyS0 panic=-1 quiet loglevel=4 {EXTRA} pc.mode={mode} pc.eatmydata={int(eatmydata)}"
        if mountopts:
            append += f" pc.mount={mountopts}"
        cmd = [args.qemu, "-accel", args.accel, "-m", "256", "-smp", "1", "-nodefaults", "-display", "none",
               "-no-reboot", "-kernel", args.kernel, "-initrd", args.initrd, "-append", append,
               "-drive", drive,
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:8080",
               "-device", "virtio-net-pci,netdev=n0,romfile=",
               "-chardev", f"socket,id=ctl,path={self.ctl},server=on,wait=off",
               "-serial", f"file:{self.console}", "-serial", "chardev:ctl"]
        for d in args.datadir:
            if os.path.isdir(d):
                cmd[1:1] = ["-L", d]
        self.started = time.monotonic()
        with open(self.console + ".qemu", "w") as log:
            try:
                self.qemu = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
            except OSError:
                self.nbdkit and self.nbdkit.kill()
                raise

    def console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_daemon(self):
        """Waits until coupond answers HTTP through the forward; returns seconds since boot."""

        def answers():
            if self.qemu.poll() is not None:
                with open(self.console + ".qemu", errors="replace") as f:
                    raise RuntimeError(f"qemu exited {self.qemu.returncode} before coupond answered: {last_lines(f.read())}")
            console = self.console_text()
            if "powercut-guest: coupond exited" in console or "powercut-guest: FAIL" in console:
                raise RuntimeError("coupond stopped before it answered: " + last_lines(console))
            if "coupond started" not in console:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return True
            except (OSError, http.client.HTTPException):
                return False

        if not wait_for(answers, BOOT_TIMEOUT):
            raise RuntimeError(f"coupond did not answer within {BOOT_TIMEOUT} s")
        return time.monotonic() - self.started

    def cut(self):
        """The power cut: SIGKILL to qemu, and to nbdkit with its cache."""
        self.qemu.send_signal(signal.SIGKILL)
        if self.nbdkit:
            self.nbdkit.send_signal(signal.SIGKILL)
        self.reap()

    def stop(self):
        """Asks the guest to stop coupond, unmount and power off; waits for qemu to exit."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.ctl)
            s.sendall(b"stop\n")
            try:
                self.qemu.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise RuntimeError("the guest did not power off within 120 s of stop")
        if self.nbdkit:
            self.nbdkit.terminate()
        self.reap()

    def reap(self):
        for p in (self.qemu, self.nbdkit):
            if p and p.poll() is None:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def last_lines(text, n=3):
    return " | ".join(text.strip().splitlines()[-n:])


def wait_for(cond, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Load:
    """8 senders, each pushing its own fresh coupons over one keep-alive connection,
    recording the ids answered 200, until the connection dies with the machine."""

    def __init__(self, port, tag):
        self.port, self.tag = port, tag
        self.acked, self.other, self.errors = [], {}, []
        self.lock = threading.Lock()
        # Set just before the kill: errors after it are the power cut's, not failures.
        self.cut = threading.Event()
        self.threads = [threading.Thread(target=self.sender, args=(i,), daemon=True) for i in range(SENDERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def sender(self, i):
        # Generous: software emulation on a busy machine is slow.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = failures = 0
        while not self.cut.is_set():
            cert = f"{self.tag}-s{i}-{n}"
            n += 1
            try:
                status = signed_push(conn, cert)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if self.cut.is_set():
                    return
                # A server may close a kept-alive connection; twice in a row is a failure.
                failures += 1
                if failures > 1:
                    with self.lock:
                        self.errors.append(f"{cert}: {e!r}")
                    time.sleep(0.05)
                continue
            failures = 0
            with self.lock:
                if status == 200:
                    self.acked.append(cert)
                else:
                    self.other[status] = self.other.get(status, 0) + 1

    def stop(self):
        for t in self.threads:
            t.join(timeout=15)
        with self.lock:
            return list(self.acked)


def inspect(rdir, image, acked):
    """The host's checks on the image after the second boot. Returns (problems, lost):
    problems are lines for the round's report; lost counts acknowledged ids missing."""
    problems = []
    fsck = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True)
    if fsck.returncode != 0:
        problems.append(f"e2fsck -fn exited {fsck.returncode}: {fsck.stdout.strip().splitlines()[-1:]}")
    out = os.path.join(rdir, "db")
    os.makedirs(out, exist_ok=True)
    # `ls -p`: /inode/mode/uid/gid/name/size/ for each entry of the root directory.
    listing = subprocess.run(["debugfs", "-R", "ls -p /", image], capture_output=True, text=True).stdout
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    for name in ("coupond.db", "coupond.db-wal"):
        if name in names:
            subprocess.run(["debugfs", "-R", f"dump /{name} {out}/{name}", image], capture_output=True, check=True)
    if "coupond.db" not in names:
        problems.append("no coupond.db on the disk")
        return problems, len(acked)
    try:
        con = sqlite3.connect(os.path.join(out, "coupond.db"))
        integrity = [r[0] for r in con.execute("PRAGMA integrity_check")]
        messages = {c: (i, o) for c, i, o in con.execute("SELECT certificate_id, id, outcome FROM messages")}
        certificates = {r[0] for r in con.execute("SELECT certificate_id FROM certificates")}
        printed = {r[0] for r in con.execute("SELECT message_id FROM outputs WHERE sink = 'printer'")}
        con.close()
    except sqlite3.DatabaseError as e:
        problems.append(f"the database copy cannot be read: {e}")
        return problems, len(acked)
    if integrity != ["ok"]:
        problems.append(f"PRAGMA integrity_check: {'; '.join(integrity[:3])}")
    missing = {"messages": 0, "applied": 0, "certificates": 0, "printer jobs": 0}
    lost = 0
    for cert in acked:
        row = messages.get(cert)
        gone = [
            row is None and "messages",
            row is not None and row[1] != "applied" and "applied",
            cert not in certificates and "certificates",
            (row is None or row[0] not in printed) and "printer jobs",
        ]
        for g in filter(None, gone):
            missing[g] += 1
        lost += any(gone)
    if lost:
        problems.append(
            f"{lost} acknowledged id(s) lost: "
            + ", ".join(f"{n} not in {what}" if what != "applied" else f"{n} not applied" for what, n in missing.items() if n)
        )
    return problems, lost


class Round:
    """One round: a boot under load cut short, a boot again, the checks, one report."""

    def __init__(self, args, number, disk, control=None):
        self.args, self.number, self.disk, self.control = args, number, disk, control
        self.tag = f"PC{number}" + (f"-{control.split('=')[0]}" if control else "")
        self.rdir = os.path.join(args.work, "rounds", self.tag)
        shutil.rmtree(self.rdir, ignore_errors=True)
        os.makedirs(self.rdir)
        self.image = os.path.join(self.rdir, "data.img")
        subprocess.run(["cp", "--sparse=always", args.image, self.image], check=True)
        self.cut_after = random.uniform(1.0, 5.0)
        self.problems, self.notes, self.acked = [], [], []
        self.boot = self.reboot = 0.0

    def run(self):
        """Returns (line, passed, acknowledged, lost)."""
        try:
            self.power_cut()
            self.boot_again()
        except (RuntimeError, OSError, http.client.HTTPException) as e:
            self.problems.append(f"{type(e).__name__}: {e} (files: {self.rdir})")
        data_problems, lost = inspect(self.rdir, self.image, self.acked)
        self.problems += data_problems
        if self.control:
            # The control must see the loss in the data, not merely fail to boot.
            passed = lost > 0 or any(p.startswith(("PRAGMA", "the database", "no coupond.db")) for p in data_problems)
            verdict = "loss seen, as it must be" if passed else "FAIL: no loss seen, the test could not tell"
        else:
            passed = not self.problems
            verdict = "ok" if passed else "FAIL"
        model = f"control {self.control} ({self.disk})" if self.control else self.disk
        line = (f"round {self.number} {model}: acked {len(self.acked)}, lost {lost}, cut at {self.cut_after:.2f} s "
                f"into the load (boot {self.boot:.1f} s, reboot {self.reboot:.1f} s): {verdict}")
        if passed:
            line += "".join(f"\n    (seen: {p})" for p in self.problems)
        else:
            line += "".join(f"\n    {p}" for p in self.problems)
            for name in ("load", "verify"):
                path = os.path.join(self.rdir, f"{name}.console")
                if os.path.exists(path):
                    with open(path, errors="replace") as f:
                        line += f"\n    {name} console, last lines: {last_lines(f.read(), 5)}"
        line += "".join(f"\n    (note: {n})" for n in self.notes)
        if passed and not self.args.keep:
            shutil.rmtree(self.rdir, ignore_errors=True)
        return line, passed, len(self.acked), lost

    def power_cut(self):
        """Boots, pushes from 8 senders and cuts the power cut_after seconds in."""
        m = Machine(self.args, self.rdir, "load", self.disk, "load", eatmydata=self.control == "eatmydata",
                    mountopts="barrier=0" if self.control == "barrier=0" else "")
        try:
            self.boot = m.wait_daemon()
            load = Load(m.port, self.tag)
            load.start()
            time.sleep(self.cut_after)
            load.cut.set()
        finally:
            m.cut()
        self.acked = load.stop()
        if load.errors:
            self.problems.append(f"{len(load.errors)} push(es) failed before the cut, first: {load.errors[0]}")
        if load.other:
            # Not a durability failure (Douyin would deliver again), but worth a look.
            self.notes.append(f"answers other than 200 before the cut: {load.other}")
        if not self.acked:
            self.problems.append("nothing was acknowledged before the cut")

    def boot_again(self):
        """Boots on the same disk: coupond must start, answer a push and stop cleanly."""
        m = Machine(self.args, self.rdir, "verify", self.disk, "verify")
        try:
            self.reboot = m.wait_daemon()
            conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
            status = signed_push(conn, f"{self.tag}-after")
            conn.close()
            if status != 200:
                self.problems.append(f"after the reboot a push got {status}")
            else:
                self.acked.append(f"{self.tag}-after")
            m.stop()
        except BaseException:
            m.cut()
            raise
        console = m.console_text()
        for want in ("coupond exited 0", "unmounted"):
            if f"powercut-guest: {want}" not in console:
                self.problems.append(f"the second boot did not say '{want}'")


def children_cpu():
    """Processor seconds of the children reaped so far (this process was powercut/run's
    shell before its exec, so the preparation's count too: take differences)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--control-rounds", type=int, default=2)
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--nbdkit", required=True)
    ap.add_argument("--nbdkit-modules", required=True)
    ap.add_argument("--libpath", default="")
    ap.add_argument("--datadir", action="append", default=[])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--work", required=True)
    ap.add_argument("--keep", action="store_true", help="keep every round's files, not only a failed one's")
    args = ap.parse_args()
    seed = int(os.environ.get("COUPOND_POWERCUT_SEED", random.SystemRandom().randrange(1 << 30)))
    random.seed(seed)
    say(f"{args.rounds} round(s) and {args.control_rounds} control round(s), {SENDERS} senders, "
        f"accelerator {args.accel}, seed {seed} (COUPOND_POWERCUT_SEED repeats the cut times)")
    t0 = time.monotonic()
    cpu0 = children_cpu()
    passed = failed = total_acked = total_lost = 0
    plan = [(i + 1, ("cache=none", "volatile")[i % 2], None) for i in range(args.rounds)]
    controls = [("eatmydata", "cache=none"), ("barrier=0", "volatile")]
    plan += [(i + 1, controls[i % 2][1], controls[i % 2][0]) for i in range(args.control_rounds)]
    control_seen = 0
    for number, disk, control in plan:
        line, ok, acked, lost = Round(args, number, disk, control).run()
        say(line)
        passed += ok
        failed += not ok
        if control:
            control_seen += ok
        else:
            total_acked += acked
            total_lost += lost
    # The processor time of qemu, nbdkit and the checks tells the cost on an idle machine
    # better than the wall clock of a busy one.
    cpu = children_cpu() - cpu0
    say(f"{args.rounds} round(s): {total_acked} acknowledged, {total_lost} lost; control: "
        f"{control_seen} of {args.control_rounds} saw the loss; {time.monotonic() - t0:.0f} s "
        f"({cpu:.0f} s of processor time in qemu, nbdkit and the checks)")
    print(f"powercut: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
