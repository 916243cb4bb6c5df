"""test_rotate.py - Debian's logrotate rotates a file agentd tails. With
copytruncate every line on disk arrives at the lake, also the lines agentd
had not read when logrotate cut the file (it reads them from the rotated
copy, plain or gzipped); with create every line written arrives. A copy that
is gone before agentd could read it becomes a gap marker and a problem in
`agentctl status`.

agentd is held with SIGSTOP while the test writes and rotates, so it has not
read what logrotate cuts, whatever the machine's speed: no outcome depends
on timing, every wait is for a condition."""

import gzip
import json
import os
import signal
import subprocess

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test

LOGROTATE = "/usr/sbin/logrotate"
ROTATIONS = 6
LINES = 400           # written while agentd is stopped, before each rotation
AFTER = 50            # written after each rotation


def ids_in(path):
    """Ids of the complete lines in one file (gzip files decompressed)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    out = set()
    for raw in data.split(b"\n")[:-1]:
        try:
            out.add(json.loads(raw)["id"])
        except ValueError:
            pass
    return out


def ids_on_disk(logs):
    out = set()
    for name in os.listdir(logs):
        out |= ids_in(os.path.join(logs, name))
    return out


def source_gaps(lake):
    """The gap markers of lost source bytes the lake received."""
    lake.poll()
    return [r["data"]["gap"] for r in lake.records
            if r.get("stream") == "_agent" and r.get("kind") == "gap"
            and r.get("key", "").startswith("gap:tail:")]


class Rotation:
    """logrotate -f with a state file and a config for one log file."""

    def __init__(self, d, live, options):
        self.state = os.path.join(d, "logrotate.state")
        self.conf = os.path.join(d, "logrotate.conf")
        body = "\n".join("    " + o for o in ["rotate 100", "nomail", "missingok"] + options)
        h.write_file(self.conf, "%s {\n%s\n}\n" % (live, body))
        # logrotate refuses a config that others may write.
        os.chmod(self.conf, 0o644)

    def run(self):
        p = subprocess.run([LOGROTATE, "-f", "-s", self.state, self.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 0, "logrotate: exit %d: %s" % (p.returncode, p.stdout.decode())


def scenario(options, copytruncate, seed, rotations=ROTATIONS):
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    live = os.path.join(logs, "app.log")
    w = SensorWriter(live, prefix="lr", seed=seed)
    w.write(AFTER)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("app", live))).start()
    h.on_cleanup("SIGCONT agentd", lambda: agent.alive() and agent.signal(signal.SIGCONT))
    rot = Rotation(d, live, options)
    lake.wait_ids(w.ids, timeout=30)
    for k in range(rotations):
        agent.signal(signal.SIGSTOP)
        w.write(LINES)
        rot.run()
        if not copytruncate:
            # The writer still holds the renamed file for a moment.
            w.write(AFTER)
            w.reopen()
        w.write(AFTER)
        agent.signal(signal.SIGCONT)
        want = ids_on_disk(logs) if copytruncate else set(w.ids)
        lake.wait_ids(want, timeout=60)
    on_disk = ids_on_disk(logs)
    got = lake.ids()
    written = set(w.ids)
    assert got <= written, "ids never written arrived: %s" % sorted(got - written)[:5]
    missing = on_disk - got
    assert not missing, "%d lines on disk never arrived: %s" % (len(missing), h.id_ranges(missing))
    if not copytruncate:
        assert got == written, "%d lines written never arrived" % len(written - got)
    gaps = source_gaps(lake)
    assert not gaps, "gap markers although nothing was lost: %s" % gaps
    lake.check_duplicates(one_seq_per_id=True)
    st = agent.input("app")
    assert "lost" not in st["state"], st
    print("     %-40s written %d, on disk %d, arrived %d, gap-marked 0" % (
        " ".join(options), len(written), len(on_disk), len(got)))
    agent.wait_drained()
    agent.stop()


@test
def copytruncate_every_line_on_disk_arrives():
    scenario(["copytruncate"], True, 1)


@test
def copytruncate_delaycompress_every_line_on_disk_arrives():
    scenario(["copytruncate", "compress", "delaycompress"], True, 2)


@test
def copytruncate_compress_every_line_on_disk_arrives():
    # The copy is gzipped before agentd looks: read through zlib.
    scenario(["copytruncate", "compress"], True, 3)


@test
def copytruncate_dateext_every_line_on_disk_arrives():
    # Copies are named by the second: one rotation, or they would collide.
    scenario(["copytruncate", "dateext", "dateformat -%Y%m%d-%s"], True, 4, rotations=1)


@test
def create_every_line_arrives():
    scenario(["create"], False, 5)


@test
def create_delaycompress_every_line_arrives():
    scenario(["create", "compress", "delaycompress"], False, 6)


@test
def unreadable_copy_is_a_gap_marker_and_a_problem():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    live = os.path.join(logs, "app.log")
    w = SensorWriter(live, prefix="gp", seed=7)
    w.write(AFTER)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("app", live))).start()
    h.on_cleanup("SIGCONT agentd", lambda: agent.alive() and agent.signal(signal.SIGCONT))
    # The copy is compressed at once, in a format agentd does not read.
    rot = Rotation(d, live, ["copytruncate", "compress", "compresscmd /usr/bin/zstd",
                             "compressext .zst", "compressoptions -q"])
    lake.wait_ids(w.ids, timeout=30)
    read_to = os.path.getsize(live)
    agent.signal(signal.SIGSTOP)
    w.write(LINES)
    lost = set(w.ids[AFTER:])
    rot.run()
    assert os.path.exists(live + ".1.zst") and not os.path.exists(live + ".1"), os.listdir(logs)
    w.write(AFTER)
    agent.signal(signal.SIGCONT)
    lake.wait_ids(w.ids[-AFTER:], timeout=30)
    h.wait_until(lambda: source_gaps(lake), 30, "a gap marker at the lake")
    gaps = source_gaps(lake)
    assert len(gaps) == 1, gaps
    g = gaps[0]
    # agentd never saw the lines written while it was stopped: the marker
    # says from where the file was not read, and that how much is unknown.
    assert g == {"input": "app", "stream": "app", "source": live, "offset": read_to,
                 "bytes": None, "reason": "copy_compressed"}, g
    assert not (lake.ids() & lost), "lines of the unreadable copy arrived"
    rc, text, _ = agent.ctl("status")
    assert rc == 0 and "PROBLEM: input app" in text and "lost" in text, text
    st = agent.input("app")
    assert "lost: 1 gap, 0 bytes and more" in st["state"], st
    print("     %-40s written %d, on disk %d (%d in app.log.1.zst), arrived %d, gap-marked %d (bytes unknown)" % (
        "copytruncate compress (zstd)", len(w.ids), len(w.ids), len(lost), len(lake.ids()), len(lost)))
    agent.wait_drained()
    agent.stop()


h.main()
