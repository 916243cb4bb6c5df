"""test_s3.py - the s3 output against a real S3-compatible server that
verifies AWS Signature V4: @20minutes/s3rver, run from tests/integration/
s3rver.js with Node. The npm package is installed (pinned) into <build>/npm
on first use.

Proves: objects land under the Hive-style keys of the documented layout and
are zstd NDJSON readable with zstd and jq; a batch the server stored but
answered with an error is sent again to the same key (overwritten, never
duplicated); Retry-After of a 503 SlowDown is honoured; a wrong secret or
access key is refused, shown in status, keeps the records queued (no
dead letters) and they arrive once the credentials are fixed (by a reload,
or by fixing the file in place); 400 dead-letters the batch; EntityTooLarge
splits it down to the one record that goes to the DLQ.

DuckDB, which reads such a layout with read_json(..., hive_partitioning =
true), is not in Debian bookworm's archive, so the layout is checked here
directly instead.
"""

import json
import os
import re
import signal
import subprocess
import time

import harness
from harness import test

HERE = os.path.dirname(os.path.abspath(__file__))
S3RVER_JS = os.path.join(HERE, "s3rver.js")
S3RVER_PKG = "@20minutes/s3rver@5.0.0"
ACCESS_KEY = "AKIDAGENTTEST"
SECRET = "agent-test-secret/With+Symbols"
BUCKET = "sensor-lake"
AGENT_ID = "it-gw"


def module_dir():
    """The installed package, installed now if it is not there yet. The
    sanitizer build (<O>-san) uses the plain build's copy when it has one."""
    cands = [os.path.join(harness.BUILD, "npm")]
    if harness.BUILD.endswith("-san"):
        cands.insert(0, os.path.join(harness.BUILD[:-4], "npm"))
    for prefix in cands:
        d = os.path.join(prefix, "node_modules", "@20minutes", "s3rver")
        if os.path.exists(os.path.join(d, "package.json")):
            return d
    prefix = cands[-1]
    os.makedirs(prefix, exist_ok=True)
    p = subprocess.run(["npm", "install", "--prefix", prefix, "--no-audit", "--no-fund",
                        "--loglevel", "error", S3RVER_PKG],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                       stdin=subprocess.DEVNULL)
    d = os.path.join(prefix, "node_modules", "@20minutes", "s3rver")
    assert p.returncode == 0 and os.path.exists(os.path.join(d, "package.json")), \
        "npm install %s failed:\n%s" % (S3RVER_PKG, p.stdout.decode("utf-8", "replace"))
    return d


class S3Server:
    """s3rver on 127.0.0.1 with one bucket and one key pair, storing under
    <dir>/s3data. script: see s3rver.js."""

    def __init__(self, d, script=""):
        self.dir = d
        self.data = os.path.join(d, "s3data")
        self.port = harness.free_port()
        self.script = script
        self.proc = None
        self.log = os.path.join(d, "s3rver.log")
        harness.show_log_on_failure("s3rver", self.log)
        harness.on_cleanup("s3rver", self._cleanup)

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        out = os.path.join(self.dir, "s3rver.out")
        with open(out, "wb") as o, open(self.log, "ab") as e:
            self.proc = subprocess.Popen(
                ["node", S3RVER_JS, module_dir(), str(self.port), self.data, BUCKET, ACCESS_KEY,
                 SECRET, self.script], stdout=o, stderr=e, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("s3rver exited with %d" % self.proc.returncode)
            with open(out) as f:
                return "listening" in f.read()
        harness.wait_until(up, 30, "s3rver to listen on port %d" % self.port)
        return self

    def stop(self):
        if self.proc:
            harness._stop_pid(self.proc, signal.SIGTERM, 10)
            self.proc = None

    def _cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def requests(self):
        """[(ms, method, path, status, rest)] from the log."""
        out = []
        try:
            with open(self.log) as f:
                for line in f:
                    m = re.match(r"(\d+) (\S+) (\S+) -> (\d+)(.*)", line)
                    if m:
                        out.append((int(m.group(1)), m.group(2), m.group(3), int(m.group(4)),
                                    m.group(5)))
        except OSError:
            pass
        return out

    def objects(self):
        """{key: (bytes, metadata)} of every object in the bucket, from disk."""
        root = os.path.join(self.data, BUCKET)
        out = {}
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not f.endswith("._S3rver_object"):
                    continue
                path = os.path.join(dirpath, f)
                key = os.path.relpath(path, root)[:-len("._S3rver_object")]
                with open(path, "rb") as fh:
                    body = fh.read()
                with open(path[:-len("object")] + "metadata.json") as fh:
                    meta = json.load(fh)
                out[key] = (body, meta)
        return out

    def signed_get(self, key):
        """GET an object through the S3 API, signed like any client does."""
        url = "%s/%s/%s" % (self.endpoint(), BUCKET,
                            "/".join(_quote(s) for s in key.split("/")))
        p = subprocess.run(["curl", "-sS", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3",
                            "-u", "%s:%s" % (ACCESS_KEY, SECRET),
                            "-H", "x-amz-content-sha256: " + EMPTY_SHA256, url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        assert p.returncode == 0, "signed GET %s failed: %s" % (url, p.stderr.decode())
        return p.stdout


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _quote(s):
    ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(c if c in ok else "%%%02X" % ord(c) for c in s)


def zstd_jq(body):
    """The record lines of an object, decoded by the standard tools."""
    p = subprocess.run("zstd -dc | jq -c .", shell=True, input=body, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    assert p.returncode == 0, "zstd -dc | jq failed: %s" % p.stderr.decode()
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def write_keys(d, access=ACCESS_KEY, secret=SECRET, suffix=""):
    ak = os.path.join(d, "access-key" + suffix)
    sk = os.path.join(d, "secret-key" + suffix)
    harness.write_file(ak, access + "\n")
    harness.write_file(sk, secret + "\n")
    os.chmod(sk, 0o600)
    return ak, sk


def s3_config(d, s3, log, ak, sk, extra="", batch=10):
    return """[agent]
id = %s
state_dir = %s/state
trust_clock = true

%s
[output lake]
type = s3
endpoint = %s
bucket = %s
path_style = true
access_key_file = %s
secret_key_file = %s
linger = 50ms
retry_base = 100ms
retry_max = 500ms
batch_max_records = %d
%s
""" % (AGENT_ID, d, harness.tail_input("sensors", log), s3.endpoint(), BUCKET, ak, sk, batch, extra)


def setup(script="", extra="", secret=SECRET, access=ACCESS_KEY, batch=10):
    d = harness.tmpdir("agentd-s3")
    s3 = S3Server(d, script).start()
    ak, sk = write_keys(d, access=access, secret=secret)
    log = os.path.join(d, "sensors.log")
    w = harness.SensorWriter(log, prefix="s")
    a = harness.Agent(d, s3_config(d, s3, log, ak, sk, extra, batch))
    return d, s3, w, a, ak, sk


def all_records(s3):
    recs = []
    for key, (body, _) in sorted(s3.objects().items()):
        recs += zstd_jq(body)
    return recs


def wait_ids(s3, ids, timeout=30):
    want = set(ids)

    def got():
        return want <= {r["data"]["id"] for r in all_records(s3) if r["stream"] == "sensors"}
    harness.wait_until(got, timeout, "%d records in the bucket" % len(want), interval=0.2)


KEY_RE = re.compile(r"^lake/agent=%s/stream=(?P<stream>[^/]+)/dt=(?P<dt>\d{4}-\d\d-\d\d)/"
                    r"hour=(?P<hour>\d\d)/(?P<id>[0-9a-f]{32})\.ndjson\.zst$" % AGENT_ID)


@test
def objects_land_under_hive_keys():
    d, s3, w, a, _, _ = setup()
    a.start()
    w.write(35)
    wait_ids(s3, w.ids)
    a.wait_drained()
    objs = s3.objects()
    seen = []
    for key, (body, meta) in objs.items():
        m = KEY_RE.match(key)
        assert m, "object key %r does not follow the layout" % key
        recs = zstd_jq(body)
        assert recs, "empty object %s" % key
        first, last = recs[0], recs[-1]
        assert m.group("stream") == first["stream"] == "sensors"
        assert m.group("dt") == first["ts"][:10] and m.group("hour") == first["ts"][11:13], \
            "partition of %s is not the first record's date and hour (%s)" % (key, first["ts"])
        assert m.group("id") == harness.batch_id(AGENT_ID, "lake", first["seq"], last["seq"])
        assert [r["seq"] for r in recs] == list(range(first["seq"], last["seq"] + 1))
        assert meta.get("content-type") == "application/zstd", meta
        assert "content-encoding" not in meta, meta
        want = {"x-amz-meta-agent": AGENT_ID, "x-amz-meta-stream": "sensors",
                "x-amz-meta-batch-id": m.group("id"), "x-amz-meta-encoding": "ndjson+zstd",
                "x-amz-meta-first-seq": str(first["seq"]), "x-amz-meta-last-seq": str(last["seq"]),
                "x-amz-meta-count": str(len(recs))}
        for k, v in want.items():
            assert meta.get(k) == v, "%s: metadata %s is %r, not %r" % (key, k, meta.get(k), v)
        seen += [r["data"]["id"] for r in recs]
    assert sorted(seen) == sorted(w.ids), "records missing or duplicated across objects"
    assert len(objs) >= 4, "35 records with batch_max_records = 10 made only %d objects" % len(objs)
    # Read back through the S3 API, signed: the same bytes.
    key = sorted(objs)[0]
    assert s3.signed_get(key) == objs[key][0]
    # Every PUT was signed with a payload hash, and the '=' of the key went
    # percent-encoded (s3rver checks both: the signature would not match).
    puts = [r for r in s3.requests() if r[1] == "PUT"]
    assert puts and all(r[3] == 200 for r in puts), puts
    assert all("%3D" in r[2] and re.search(r"sha256=[0-9a-f]{64}", r[4]) for r in puts), puts
    st = a.output()
    assert st["type"] == "s3" and st["connected"], st
    assert "bucket %s" % BUCKET in st["endpoint"] and "lake/agent=%s/" % AGENT_ID in st["endpoint"], st
    assert a.dlq() == []
    a.stop()


@test
def retried_batch_overwrites_its_object():
    # The first two PUTs are stored but answered 500, then one 503 SlowDown
    # with Retry-After: 1 is not stored.
    d, s3, w, a, _, _ = setup(script="store-500,store-500,503", extra="max_inflight = 1")
    w.write(25)
    a.start()
    wait_ids(s3, w.ids)
    a.wait_drained()
    puts = [r for r in s3.requests() if r[1] == "PUT"]
    scripted = [r for r in puts if "scripted" in r[4]]
    assert len(scripted) == 3, puts
    # Each failed PUT was followed by a successful PUT of the same key.
    for ms, _, path, status, _ in scripted:
        later = [r for r in puts if r[0] >= ms and r[2] == path and r[3] == 200 and "scripted" not in r[4]]
        assert later, "the batch PUT to %s was never retried to the same key" % path
    # Retry-After: 1 held the retry back although retry_base is 100ms.
    slow = scripted[2]
    nxt = puts[puts.index(slow) + 1][0]
    assert nxt - slow[0] >= 900, "retried %d ms after a 503 with Retry-After: 1" % (nxt - slow[0])
    objs = s3.objects()
    recs = all_records(s3)
    ids = [r["data"]["id"] for r in recs]
    assert sorted(ids) == sorted(w.ids), "duplicated or missing records: %d objects, %d records" % (
        len(objs), len(ids))
    assert len(objs) == len({p for _, _, p, _, _ in puts}), "retries made extra objects"
    assert a.output()["retries"] >= 3
    assert a.dlq() == []
    a.stop()


@test
def wrong_secret_is_shown_and_nothing_is_lost():
    d, s3, w, a, ak, sk = setup(secret="not-the-secret")
    a.start()
    w.write(12)

    def refused():
        o = a.output()
        return not o["connected"] and "SignatureDoesNotMatch" in o["why"] and o
    o = harness.wait_until(refused, 20, "status to show SignatureDoesNotMatch")
    assert "secret_key_file" in o["why"], o["why"]
    text = a.status_text()
    assert "SignatureDoesNotMatch" in text, text
    assert "not-the-secret" not in text and "not-the-secret" not in a.log_text()
    assert s3.objects() == {}
    assert any(r[3] == 403 and "SignatureDoesNotMatch" in r[4] for r in s3.requests())
    harness.wait_until(lambda: a.output()["backlog_records"] == 12, 10, "12 records queued")
    assert a.dlq() == [], "a credentials problem dead-lettered records"
    # The fix: a new secret file named in the config, and a reload.
    _, sk2 = write_keys(d, suffix=".new")
    a.write_config(open(a.conf).read().replace(sk, sk2))
    a.signal(signal.SIGHUP)
    wait_ids(s3, w.ids)
    a.wait_drained()
    assert sorted(r["data"]["id"] for r in all_records(s3)) == sorted(w.ids)
    assert a.output()["connected"]
    assert a.dlq() == []
    a.stop()


@test
def wrong_access_key_file_fixed_in_place():
    d, s3, w, a, ak, sk = setup(access="AKIDUNKNOWN")
    a.start()
    w.write(5)
    harness.wait_until(lambda: "InvalidAccessKeyId" in a.output()["why"], 20,
                       "status to show InvalidAccessKeyId")
    assert "access_key_file" in a.output()["why"]
    # Fixed without a reload: the files are read again after a refusal.
    harness.write_file(ak, ACCESS_KEY + "\n")
    wait_ids(s3, w.ids)
    assert a.dlq() == []
    a.stop()


@test
def bad_request_dead_letters_and_too_large_splits():
    # 400 InvalidArgument for the first batch: its 4 records go to the DLQ.
    # Then every PUT over 1000 bytes is refused with EntityTooLarge: the
    # second batch, holding one large record, is split (4 -> 2+2 -> 1+1)
    # until that record is alone, and only it goes to the DLQ.
    d, s3, w, a, _, _ = setup(script="400,max=1000", extra="max_inflight = 1", batch=4)
    w.write(5)
    harness.write_file(w.path, json.dumps({"id": "big-0", "pad": os.urandom(3000).hex()}) + "\n",
                       "a")
    w.write(2)
    a.start()

    def settled():
        o = a.output()
        return (o["delivered_records"] + o["dlq_records"] == 8 and o["backlog_records"] == 0
                and o["inflight_batches"] == 0)
    harness.wait_until(settled, 30, "all 8 records delivered or dead-lettered")
    reasons = {e["seq"]: e["reason"] for e in a.dlq()}
    assert len(reasons) == 5, reasons
    assert all("400 InvalidArgument" in reasons.get(seq, "") for seq in (1, 2, 3, 4)), reasons
    assert "EntityTooLarge" in reasons.get(6, ""), reasons
    stored = sorted(r["data"]["id"] for r in all_records(s3))
    assert stored == ["s-4", "s-5", "s-6"], stored
    a.stop()


harness.main()
