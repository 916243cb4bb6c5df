"""test_delivery.py - lines tailed from files reach the lake decoded, across
rename rotation and copy-truncate rotation, at least once and with duplicates
identifiable by (agent, seq); batches carry the metadata the wire format
promises."""

import json
import os
import random
import re
import shutil
import time

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test


def setup(d):
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    return broker, lake, logs


@test
def rename_rotation_loses_nothing():
    d = h.tmpdir()
    broker, lake, logs = setup(d)
    live = os.path.join(logs, "sensors.log")
    w = SensorWriter(live, prefix="rn", seed=1)
    w.write(500)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("sensors", logs + "/*.log"))).start()
    rng = random.Random(7)
    for k in range(4):
        w.write(300)
        if k == 1:
            # Rotate only once the agent has read everything.
            lake.wait_ids(w.ids, timeout=30)
        # logrotate without copytruncate: the file is renamed to a name the
        # glob does not match, the writer still holds the old file and
        # writes its last lines there, then opens a new live file.
        os.rename(live, os.path.join(logs, "sensors.log.%d" % (k + 1)))
        w.write(rng.randint(10, 40))
        w.reopen()
        first_new = len(w.ids)
        w.write(200)
        # The agent finds files by matching names: the next rename must not
        # come before it has found the new live file (its first line has
        # arrived). The old file's last lines may still be unread.
        lake.wait_ids(w.ids[first_new:first_new + 1], timeout=30)
    w.write(100)
    lake.wait_ids(w.ids, timeout=40)
    got = lake.ids()
    assert got == set(w.ids), "received ids that were never written: %s" % sorted(got - set(w.ids))[:5]
    lake.check_duplicates(one_seq_per_id=True)
    for r in lake.data_records():
        assert r["stream"] == "sensors" and r["agent"] == "it-gw", r
        assert r["key"].startswith("tail:"), r
    agent.wait_drained()
    agent.stop()


@test
def copytruncate_rotation_loses_nothing():
    d = h.tmpdir()
    broker, lake, logs = setup(d)
    live = os.path.join(logs, "app.log")
    w = SensorWriter(live, prefix="ct", seed=2)
    w.write(300)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("app", logs + "/app.log"))).start()
    for k in range(3):
        w.write(400)
        # copytruncate loses whatever the tailer has not read when the file
        # is cut (the copy is not followed); so rotate once it has read all.
        lake.wait_ids(w.ids, timeout=30)
        shutil.copyfile(live, "%s.%d" % (live, k + 1))
        os.truncate(live, 0)
        # Fewer bytes than before the cut: the file is visibly shorter than
        # the agent's position, which is how a truncation is recognised.
        w.write(30)
        lake.wait_ids(w.ids, timeout=30)
        w.write(150)
    lake.wait_ids(w.ids, timeout=30)
    assert lake.ids() == set(w.ids)
    lake.check_duplicates(one_seq_per_id=True)
    n = agent.log_text().count("was truncated or replaced")
    assert n == 3, "agentd noticed %d truncations, not 3" % n
    agent.wait_drained()
    agent.stop()


@test
def several_files_and_late_files():
    """A glob with several live files, one created after the start."""
    d = h.tmpdir()
    broker, lake, logs = setup(d)
    a = SensorWriter(os.path.join(logs, "a.log"), prefix="a", seed=3)
    a.write(200)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("multi", logs + "/*.log"))).start()
    b = SensorWriter(os.path.join(logs, "b.log"), prefix="b", seed=4)
    for _ in range(5):
        a.write(50)
        b.write(70)
        time.sleep(0.05)
    want = set(a.ids) | set(b.ids)
    lake.wait_ids(want, timeout=30)
    assert lake.ids() == want
    lake.check_duplicates()
    agent.stop()


@test
def batches_carry_wire_metadata():
    d = h.tmpdir()
    broker, lake, logs = setup(d)
    w = SensorWriter(os.path.join(logs, "s.log"), prefix="wm", seed=5)
    w.write(1200)
    conf = h.config(d, broker.port, h.tail_input("meta", logs + "/s.log"),
                    output="batch_max_records = 500\n", agent_id="gw-wire")
    agent = Agent(d, conf).start()
    lake.wait_ids(w.ids, timeout=30)
    lake.poll()
    assert lake.batches, "no batch metadata line"
    key_order = ["agent", "stream", "seq", "key", "ts", "mono_ms", "clock", "data"]
    for b in lake.batches:
        m, recs = b["meta"], b["records"]
        assert m["topic"] == "lake/gw-wire/meta", m
        assert m["encoding"] == "ndjson+zstd", m
        assert m["agent"] == "gw-wire", m
        assert int(m["count"]) == len(recs), (m, len(recs))
        assert len(recs) <= 500, "batch of %d records > batch_max_records 500" % len(recs)
        seqs = [r["seq"] for r in recs]
        assert seqs == sorted(seqs), "records of a batch not in seq order"
        assert int(m["first_seq"]) == seqs[0] and int(m["last_seq"]) == seqs[-1], m
        assert m["batch_id"] == h.batch_id("gw-wire", "lake", seqs[0], seqs[-1]), m
        for r in recs:
            assert list(r.keys()) == key_order, list(r.keys())
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r["ts"]
            assert r["clock"] == "synced", r  # trust_clock = true
    # The data is the line unchanged.
    with open(w.path) as f:
        first = f.readline()
    by_id = {r["data"]["id"]: r for r in lake.data_records()}
    assert by_id["wm-0"]["data"] == json.loads(first)
    agent.stop()


if __name__ == "__main__":
    h.main()
