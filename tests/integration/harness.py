"""harness.py - shared helpers for the integration tests: a mosquitto broker,
agentd and agentctl, the lake (agent-decode --sub), a sensor line writer and
a tiny test runner. Everything runs on 127.0.0.1 under a temporary directory
in /tmp, every process is started here and stopped by its PID, and every wait
has a deadline.

A test file defines functions decorated with @test and ends with
`harness.main()`, which runs them, prints one line per test and the summary
line "N passed, M failed, K skipped", and exits 1 when a test failed. A test
that cannot run here raises Skip("why") (or calls skip("why")): it is
reported as "SKIP: name: why", never as passed, and a file whose every test
was skipped exits 77, which tests/run-tests counts as skipped.
Environment: O (build directory, default build), KEEP=1 keeps the
temporary directories of failed tests.
"""

import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_O = os.environ.get("O", "build")
BUILD = _O if os.path.isabs(_O) else os.path.join(ROOT, _O)
# AGENT_BIN: where agentd and agentctl are (default: the build directory),
# e.g. build/static/aarch64; AGENT_RUN: a command that runs them, e.g.
# qemu-aarch64-static for another architecture's binaries. The lake's
# decoder (agent-decode) is always the build machine's own.
_BIN = os.environ.get("AGENT_BIN") or BUILD
_BIN = _BIN if os.path.isabs(_BIN) else os.path.join(ROOT, _BIN)
AGENTD = os.path.join(_BIN, "agentd")
AGENTCTL = os.path.join(_BIN, "agentctl")
RUN = shlex.split(os.environ.get("AGENT_RUN", ""))
AGENTD_CMD = RUN + [AGENTD]
AGENTCTL_CMD = RUN + [AGENTCTL]
DECODE = os.path.join(BUILD, "agent-decode")
MOSQUITTO = "/usr/sbin/mosquitto"

# ---------------------------------------------------------------- the runner

EXIT_SKIP = 77

_tests = []
_cleanups = []      # (description, callable), undone in reverse after each test
_logs = []          # (title, path) shown when a test fails


class Skip(Exception):
    """Raised by a test that cannot run on this machine; the message says why."""


def skip(why):
    raise Skip(why)


def test(fn):
    _tests.append(fn)
    return fn


def on_cleanup(what, fn):
    _cleanups.append((what, fn))


def show_log_on_failure(title, path):
    _logs.append((title, path))


def _tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return ["(cannot read %s: %s)" % (path, e)]
    return lines[-n:]


def _undo():
    while _cleanups:
        what, fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # a cleanup must not hide the test's result
            print("   cleanup of %s failed: %s" % (what, e))


def main():
    # Interrupted or terminated: still stop every process this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        _main()
    finally:
        _undo()


def _main():
    only = sys.argv[1:]
    passed = failed = skipped = 0
    why = []
    t_all = time.monotonic()
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        t0 = time.monotonic()
        outcome = "ok"
        try:
            fn()
        except Skip as e:
            outcome = "skip"
            why.append("skipped %s: %s" % (fn.__name__, str(e).strip()))
            print("SKIP: %s: %s" % (fn.__name__, str(e).strip()))
        except Exception:
            outcome = "fail"
            e = sys.exc_info()[1]
            last = "%s: %s" % (type(e).__name__, str(e).strip().replace("\n", " | "))
            why.append("FAIL %s: %s" % (fn.__name__, last[:400]))
            print("FAIL %s (%.1fs)" % (fn.__name__, time.monotonic() - t0))
            for line in traceback.format_exc().rstrip().splitlines():
                print("   | " + line)
            for title, path in _logs:
                print("   -- last lines of %s (%s):" % (title, path))
                for line in _tail(path, 15):
                    print("   | " + line)
            if os.environ.get("KEEP") == "1":
                _keep_dirs.update(_live_dirs)
        _undo()
        _logs.clear()
        _live_dirs.clear()
        if outcome == "ok":
            passed += 1
            print("ok   %s (%.1fs)" % (fn.__name__, time.monotonic() - t0))
        elif outcome == "skip":
            skipped += 1
        else:
            failed += 1
        sys.stdout.flush()
    print("(%.1fs)" % (time.monotonic() - t_all))
    for w in why:
        print(w)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if failed:
        sys.exit(1)
    sys.exit(EXIT_SKIP if skipped and not passed else 0)


# ---------------------------------------------------------------- basics

_live_dirs = set()
_keep_dirs = set()


def tmpdir(tag="agentd-it"):
    d = tempfile.mkdtemp(prefix=tag + ".", dir="/tmp")
    _live_dirs.add(d)

    def rm():
        if d in _keep_dirs:
            print("   kept %s" % d)
            return
        shutil.rmtree(d, ignore_errors=True)
    on_cleanup("temporary directory " + d, rm)
    return d


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_open(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # e.g. agentctl not answering yet
            last_exc = e
        if time.monotonic() >= deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def write_file(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)


def _stop_pid(proc, sig, timeout):
    """Send sig to proc (a Popen) and reap it; returns its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise AssertionError("pid %d did not exit within %.0fs of signal %d" % (proc.pid, timeout, sig))


# ---------------------------------------------------------------- the broker

class Broker:
    """mosquitto on 127.0.0.1:port with a generated config.

    persistent=True keeps sessions (and the messages queued for them) across
    a clean stop and start, so a lake with a session id (Lake(id=...))
    receives what was published while it was away."""

    def __init__(self, d, extra_conf="", port=None, persistent=False):
        self.dir = d
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.persistent = persistent
        self.proc = None
        self.conf = os.path.join(d, "mosquitto.conf")
        self.log = os.path.join(d, "mosquitto.log")
        show_log_on_failure("mosquitto", self.log)
        on_cleanup("mosquitto", self._cleanup)

    def _write_conf(self):
        lines = ["listener %d 127.0.0.1" % self.port,
                 "allow_anonymous true",
                 "log_dest file %s" % self.log,
                 "log_type all",
                 "max_queued_messages 100000"]
        if os.geteuid() == 0:
            # Otherwise it drops to user mosquitto, who cannot write here.
            lines.append("user root")
        if self.persistent:
            lines += ["persistence true",
                      "persistence_location %s/" % self.dir,
                      "persistence_file mosquitto.db",
                      "autosave_interval 0"]
        else:
            lines.append("persistence false")
        write_file(self.conf, "\n".join(lines) + "\n" + self.extra_conf + "\n")

    def start(self, extra_conf=None):
        if extra_conf is not None:
            self.extra_conf = extra_conf
        self._write_conf()
        out = open(os.path.join(self.dir, "mosquitto.out"), "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL)
        out.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited with %d" % self.proc.returncode)
            return port_open(self.port)
        # The port may still be in TIME_WAIT from the previous run: wait.
        wait_until(up, 10, "mosquitto to listen on port %d" % self.port)
        return self

    def stop(self):
        if self.proc:
            _stop_pid(self.proc, signal.SIGTERM, 10)
            self.proc = None

    def kill(self):
        if self.proc:
            _stop_pid(self.proc, signal.SIGKILL, 10)
            self.proc = None

    def restart(self, extra_conf=None):
        self.stop()
        return self.start(extra_conf)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def subacks(self):
        return self.log_text().count("Sending SUBACK to ")

    def _cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ---------------------------------------------------------------- the lake

class Lake:
    """The lake: agent-decode --sub on topic, collecting record lines and
    batch metadata. With id it keeps a persistent session on the broker.
    It can be stopped and started again; what it received accumulates."""

    def __init__(self, broker, topic="#", id=None):
        self.broker = broker
        self.topic = topic
        self.id = id
        self.proc = None
        self.records = []       # every record line received, parsed, in order
        self.lines = []         # the same as text (for comparing duplicates)
        self.batches = []       # {"meta": {...}, "records": [...]}
        self._n = 0
        self._out = None
        self._off = 0
        self._partial = b""
        self._runs = 0
        on_cleanup("lake", self._cleanup)

    def start(self):
        self._runs += 1
        d = self.broker.dir
        self._out = os.path.join(d, "lake.%d.out" % self._runs)
        self._off = 0
        self._partial = b""
        err = os.path.join(d, "lake.%d.err" % self._runs)
        show_log_on_failure("lake stderr", err)
        args = [DECODE, "--sub", "127.0.0.1:%d" % self.broker.port, self.topic, "--meta",
                "--idle", "3600"]
        if self.id:
            args += ["--id", self.id]
        before = self.broker.subacks()
        with open(self._out, "wb") as o, open(err, "wb") as e:
            self.proc = subprocess.Popen(args, stdout=o, stderr=e, stdin=subprocess.DEVNULL)

        def subscribed():
            if self.proc.poll() is not None:
                raise AssertionError("agent-decode exited with %d" % self.proc.returncode)
            return self.broker.subacks() > before
        wait_until(subscribed, 10, "the lake's subscription (SUBACK in the broker log)")
        return self

    def stop(self):
        if self.proc:
            self.poll()
            _stop_pid(self.proc, signal.SIGTERM, 5)
            self.proc = None
        self.poll()

    def _cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def poll(self):
        """Read what agent-decode printed since the last call."""
        if not self._out:
            return
        with open(self._out, "rb") as f:
            f.seek(self._off)
            chunk = f.read()
        self._off += len(chunk)
        data = self._partial + chunk
        parts = data.split(b"\n")
        self._partial = parts.pop()
        for raw in parts:
            if not raw:
                continue
            line = raw.decode("utf-8")
            obj = json.loads(line)
            if "batch" in obj and len(obj) == 1:
                self.batches.append({"meta": obj["batch"], "records": []})
                continue
            self.records.append(obj)
            self.lines.append(line)
            if self.batches:
                self.batches[-1]["records"].append(obj)

    # --- views of what arrived

    def data_records(self, stream=None):
        self.poll()
        return [r for r in self.records
                if r.get("stream") != "_agent" and (stream is None or r.get("stream") == stream)]

    def ids(self, stream=None):
        out = set()
        for r in self.data_records(stream):
            d = r.get("data")
            if isinstance(d, dict) and "id" in d:
                out.add(d["id"])
        return out

    def gaps(self):
        self.poll()
        return [r for r in self.records if r.get("kind") == "gap"]

    def wait_ids(self, expected, timeout=30, stream=None):
        """Wait until every id in expected has been received."""
        expected = set(expected)

        def done():
            return expected <= self.ids(stream)
        try:
            wait_until(done, timeout, "%d records at the lake" % len(expected), interval=0.1)
        except AssertionError:
            missing = expected - self.ids(stream)
            raise AssertionError("%d of %d expected records never arrived: %s" %
                                 (len(missing), len(expected), id_ranges(missing)))

    def wait_data(self, expected, timeout=30):
        """Wait until every (stream, data) in expected has been received;
        data is compared as JSON values."""
        want = {(st, json.dumps(dt, sort_keys=True)) for st, dt in expected}

        def got():
            return {(r["stream"], json.dumps(r.get("data"), sort_keys=True))
                    for r in self.data_records()}
        try:
            wait_until(lambda: want <= got(), timeout, "%d records at the lake" % len(want),
                       interval=0.1)
        except AssertionError:
            missing = want - got()
            raise AssertionError("%d of %d expected records never arrived, e.g. %s" %
                                 (len(missing), len(want), sorted(missing)[:3]))

    def wait_count(self, n, timeout=30, pred=None):
        def done():
            return len([r for r in self.data_records() if pred is None or pred(r)]) >= n
        wait_until(done, timeout, "%d records at the lake" % n, interval=0.1)

    def check_duplicates(self, one_seq_per_id=True):
        """At-least-once: a record delivered twice carries the same (agent,
        seq) and the identical line; with one_seq_per_id, a source line was
        also queued only once (one seq per id). Returns the number of
        duplicate deliveries."""
        self.poll()
        by_seq = {}
        seq_of_id = {}
        dups = 0
        for r, line in zip(self.records, self.lines):
            k = (r["agent"], r["seq"])
            if k in by_seq:
                dups += 1
                assert by_seq[k] == line, "seq %r delivered twice with different content:\n%s\n%s" % (
                    k, by_seq[k], line)
            by_seq[k] = line
            d = r.get("data")
            if one_seq_per_id and isinstance(d, dict) and "id" in d:
                s = seq_of_id.setdefault(d["id"], r["seq"])
                assert s == r["seq"], "line %s was queued twice: seq %d and %d" % (d["id"], s, r["seq"])
        return dups


# ---------------------------------------------------------------- agentd

def agentctl(args, conf=None, timeout=20, sock=None):
    cmd = list(AGENTCTL_CMD)
    if conf:
        cmd += ["-c", conf]
    if sock:
        cmd += ["-s", sock]
    cmd += list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def config(d, port, inputs, queue="", output="", agent_id="it-gw", topic="lake/{agent}/{stream}",
           agent_extra=""):
    """A config with state under d, the given input sections (text) and one
    MQTT output "lake" to 127.0.0.1:port with quick reconnects."""
    return """[agent]
id = %s
state_dir = %s/state
trust_clock = true
%s
[queue]
%s

%s

[output lake]
type = mqtt
url = mqtt://127.0.0.1:%d
topic = %s
linger = 50ms
retry_base = 200ms
retry_max = 1s
reconnect_base = 200ms
reconnect_max = 1s
%s
""" % (agent_id, d, agent_extra, queue, inputs, port, topic, output)


def tail_input(name, path, parser="json", extra=""):
    return "[input %s]\ndriver = tail\npath = %s\nparser = %s\npoll_interval = 50ms\n%s\n" % (
        name, path, parser, extra)


class Agent:
    def __init__(self, d, config_text, name="agentd"):
        self.dir = d
        self.conf = os.path.join(d, name + ".conf")
        self.log = os.path.join(d, name + ".log")
        self.sock = os.path.join(d, "state", "agentd.sock")
        os.makedirs(os.path.join(d, "state"), exist_ok=True)
        self.proc = None
        self.write_config(config_text)
        show_log_on_failure(name, self.log)
        on_cleanup(name, self._cleanup)

    def write_config(self, text):
        write_file(self.conf, text)

    def start(self, wait=True):
        with open(self.log, "ab") as log:
            log.write(b"==== start\n")
            log.flush()
            self.proc = subprocess.Popen(AGENTD_CMD + ["-c", self.conf], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        if wait:
            def up():
                if self.proc.poll() is not None:
                    raise AssertionError("agentd exited with %d" % self.proc.returncode)
                return self.ctl("ping")[0] == 0
            wait_until(up, 15, "agentd to answer ping")
        return self

    def stop(self, timeout=10):
        """SIGTERM; agentd must exit 0 within timeout."""
        rc = _stop_pid(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        assert rc == 0, "agentd exited with %d on SIGTERM" % rc

    def kill(self):
        _stop_pid(self.proc, signal.SIGKILL, 10)
        self.proc = None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *args, timeout=20, sock=True):
        """agentctl -c CONF [-s SOCK] ARGS. The socket is named too, so that
        a test that breaks the config file can still talk to agentd."""
        return agentctl(args, conf=self.conf, timeout=timeout, sock=self.sock if sock else None)

    def status(self):
        rc, out, err = self.ctl("status", "--json")
        assert rc in (0, 3), "agentctl status --json: exit %d: %s" % (rc, err)
        return json.loads(out)

    def status_text(self):
        return self.ctl("status")[1]

    def output(self, name="lake"):
        for o in self.status()["outputs"]:
            if o["name"] == name:
                return o
        raise AssertionError("no output %s in status" % name)

    def input(self, name):
        for i in self.status()["inputs"]:
            if i["name"] == name:
                return i
        raise AssertionError("no input %s in status" % name)

    def dlq(self):
        """All DLQ entries (agentctl dlq list --json, every page)."""
        out, after = [], 0
        while True:
            rc, text, err = self.ctl("dlq", "list", "--json", "--limit", "10000", "--after", str(after))
            assert rc == 0, "dlq list: exit %d: %s" % (rc, err)
            page = json.loads(text)
            out += page["entries"]
            if not page.get("more"):
                return out
            after = page["next_after"]

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_drained(self, timeout=30, name="lake"):
        def drained():
            o = self.output(name)
            return o["backlog_records"] == 0 and o["inflight_batches"] == 0
        wait_until(drained, timeout, "output %s backlog 0" % name, interval=0.1)

    def _cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ---------------------------------------------------------------- sources

class SensorWriter:
    """Appends JSON sensor lines, each with a unique id, to a file."""

    def __init__(self, path, prefix="r", pad=0, seed=None, random_pad=False):
        self.path = path
        self.prefix = prefix
        self.pad = pad
        # Random letters instead of "xxx...": the queue stores records
        # compressed, so only these fill a disk budget as fast as the text.
        self.random_pad = random_pad
        self.n = 0
        self.ids = []
        self.rng = random.Random(seed)
        self.f = open(path, "a")
        self.lock = threading.Lock()
        on_cleanup("writer " + path, self.close)

    def line(self):
        i = "%s-%d" % (self.prefix, self.n)
        self.n += 1
        rec = {"id": i, "sensor": "temp-%02d" % (self.n % 8),
               "celsius": round(20 + self.rng.random() * 5, 3)}
        if self.pad and self.random_pad:
            rec["pad"] = "%0*x" % (self.pad, self.rng.getrandbits(4 * self.pad))
        elif self.pad:
            rec["pad"] = "x" * self.pad
        self.ids.append(i)
        return json.dumps(rec, separators=(",", ":")) + "\n"

    def write(self, n=1):
        with self.lock:
            self.f.write("".join(self.line() for _ in range(n)))
            self.f.flush()
        return self

    def reopen(self, path=None):
        """Start writing to a (new) file at path, as a writer does after rotation."""
        with self.lock:
            self.f.close()
            if path:
                self.path = path
            self.f = open(self.path, "a")

    def close(self):
        if not self.f.closed:
            self.f.close()


class BackgroundWriter:
    """A thread appending lines through a SensorWriter at a steady rate."""

    def __init__(self, writer, per_tick=20, tick=0.01):
        self.w = writer
        self.per_tick = per_tick
        self.tick = tick
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        on_cleanup("background writer", self.stop)

    def _run(self):
        while not self._stop.is_set():
            self.w.write(self.per_tick)
            self._stop.wait(self.tick)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self._stop.set()
        if self.t.is_alive():
            self.t.join(10)


def id_ranges(ids):
    """'p-3..p-7, q-1' for ids of the form PREFIX-N (for messages)."""
    by = {}
    for i in ids:
        p, _, n = i.rpartition("-")
        by.setdefault(p, []).append(int(n))
    out = []
    for p in sorted(by):
        ns = sorted(by[p])
        start = prev = ns[0]
        for n in ns[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            out.append("%s-%d" % (p, start) if start == prev else "%s-%d..%d" % (p, start, prev))
            if n is not None:
                start = prev = n
    s = ", ".join(out)
    return s if len(s) < 400 else s[:400] + "..."


def batch_id(agent, output, first, last):
    """The batch id the wire format promises (docs/wire-format.md)."""
    return hashlib.sha256(("%s/%s/%d/%d" % (agent, output, first, last)).encode()).hexdigest()[:32]
