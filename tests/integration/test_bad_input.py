"""test_bad_input.py - what cannot be delivered is never lost silently:
records that do not parse or are too long go to the dead-letter queue with
a reason at ingest; a path that cannot be opened shows as the input's error;
records the broker refuses for good are isolated by splitting batches and
dead-lettered alone, and the DLQ can be shown, replayed and purged."""

import base64
import json
import os
import random

import harness as h
from harness import Agent, Broker, Lake, test


def entries_by_origin(agent, origin):
    return [e for e in agent.dlq() if e["origin"] == origin]


@test
def bad_lines_go_to_the_dlq():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    rng = random.Random(5)

    # json input: good lines with bad ones between them.
    good, bad = [], {}
    huge = b'{"id":"huge","pad":"' + b"x" * 100000 + b'"}'
    garbage = b"\xff\xfe" + bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(200))
    bad_lines = [("garbage", garbage),
                 ("nul", b'{"id":"nul"}\x00\x00{"x":1}'),
                 ("utf8", b'{"id":"utf8","v":"caf\xc3\x28"}'),
                 ("huge", huge)]
    with open(os.path.join(logs, "j.log"), "wb") as f:
        n = 0
        for name, line in bad_lines:
            for _ in range(5):
                f.write(b'{"id":"g-%d","v":%d}\n' % (n, n))
                good.append("g-%d" % n)
                n += 1
            f.write(line + b"\n")
            bad[name] = line
        f.write(b'{"id":"g-last"}\n')
        good.append("g-last")

    # raw input: NUL is escaped and delivered, invalid UTF-8 is refused.
    raw_lines = [b"plain text line", b"with\x00nul\x00bytes", b"latin1 caf\xe9", b"last line"]
    with open(os.path.join(logs, "r.txt"), "wb") as f:
        f.write(b"\n".join(raw_lines) + b"\n")

    # A path under a regular file can never be opened, even by root.
    with open(os.path.join(d, "plainfile"), "w") as f:
        f.write("not a directory\n")

    inputs = (h.tail_input("jin", os.path.join(logs, "j.log")) +
              h.tail_input("rin", os.path.join(logs, "r.txt"), parser="raw") +
              h.tail_input("nowhere", os.path.join(d, "plainfile", "x.log")))
    agent = Agent(d, h.config(d, broker.port, inputs)).start()

    lake.wait_ids(good, timeout=30, stream="jin")
    lake.wait_data([("rin", "plain text line"), ("rin", "with\x00nul\x00bytes"), ("rin", "last line")])
    h.wait_until(lambda: len(agent.dlq()) >= 5, 15, "5 DLQ entries")
    assert lake.ids("jin") == set(good), sorted(lake.ids("jin") - set(good))
    raw_got = [r["data"] for r in lake.data_records("rin")]
    assert raw_got == ["plain text line", "with\x00nul\x00bytes", "last line"], raw_got

    jd = entries_by_origin(agent, "input:jin")
    rd = entries_by_origin(agent, "input:rin")
    print("   DLQ reasons: " + "; ".join("%s: %s" % (e["origin"], e["reason"]) for e in jd + rd))
    assert len(jd) == 4, jd
    assert len(rd) == 1, rd
    # Entries are in file order: garbage, nul, utf8, huge.
    lengths = [e["length"] for e in jd]
    assert lengths == [len(l) for _, l in bad_lines], lengths
    for e, (name, line) in zip(jd, bad_lines):
        assert e["stream"] == "jin" and e["seq"] == 0, e
        assert e["reason"], e
        rc, out, err = agent.ctl("dlq", "show", str(e["id"]))
        assert rc == 0, err
        assert "reason:  " + e["reason"] in out, out
        if name == "huge":
            assert "max_record_bytes" in e["reason"], e
            assert "x" * 1000 in out, "the huge line is not kept whole"
        elif name == "utf8":
            assert "UTF-8" in e["reason"], e
            assert "data (binary, hex dump):" in out, out
        else:
            assert "JSON" in e["reason"], e
        if name in ("garbage", "nul"):
            assert "data (binary, hex dump):" in out, out
    assert "UTF-8" in rd[0]["reason"] and rd[0]["length"] == len(raw_lines[2]), rd

    # Received + dead-lettered == written, per input.
    assert len(lake.ids("jin")) + len(jd) == len(good) + len(bad_lines)
    assert len(raw_got) + len(rd) == len(raw_lines)

    st = agent.status()
    ins = {i["name"]: i for i in st["inputs"]}
    assert ins["jin"]["dlq"] == 4 and ins["jin"]["records"] == len(good), ins["jin"]
    assert ins["rin"]["dlq"] == 1 and ins["rin"]["records"] == 3, ins["rin"]
    assert ins["jin"]["last_error"], ins["jin"]
    assert "Not a directory" in ins["nowhere"]["last_error"], ins["nowhere"]
    assert "plainfile" in ins["nowhere"]["last_error"], ins["nowhere"]
    assert ins["nowhere"]["last_error_wall_ms"] > 0, ins["nowhere"]
    assert any(l.startswith("PROBLEM: input nowhere:") for l in st["health"]["lines"]), st["health"]
    assert st["queue"]["dlq_records"] == 5, st["queue"]
    assert agent.alive()
    agent.stop()


def b64(rng, n):
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(n * 3 // 4))).decode()[:n]


def rejecting_broker():
    """agentd shipping 60 records to a broker that refuses packets over
    4000 bytes. Random base64 hardly compresses: 60 lines of 300 characters
    are far over it as one batch, the 2 lines of 8000 characters are over
    it alone. Returns once the others arrived and the two are in the DLQ."""
    d = h.tmpdir()
    broker = Broker(d, extra_conf="max_packet_size 4000").start()
    lake = Lake(broker, "lake/#").start()
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    rng = random.Random(9)
    ids, big = [], []
    with open(os.path.join(logs, "p.log"), "w") as f:
        for i in range(60):
            if i in (20, 45):
                rid = "big-%d" % i
                big.append(rid)
                f.write(json.dumps({"id": rid, "blob": b64(rng, 8000)}) + "\n")
            rid = "s-%d" % i
            ids.append(rid)
            f.write(json.dumps({"id": rid, "blob": b64(rng, 300)}) + "\n")
    agent = Agent(d, h.config(d, broker.port, h.tail_input("plc", os.path.join(logs, "p.log")))).start()
    lake.wait_ids(ids, timeout=30)
    h.wait_until(lambda: len(agent.dlq()) >= 2, 20, "2 DLQ entries")
    agent.wait_drained()
    assert not (lake.ids() & set(big)), "a record over the broker's limit arrived"
    assert lake.ids() == set(ids)
    lake.check_duplicates()
    for b in lake.batches:
        assert b["meta"]["bytes"] <= 4000, b["meta"]
    dl = agent.dlq()
    assert len(dl) == 2, dl
    for e in dl:
        assert e["origin"] == "output:lake" and e["stream"] == "plc", e
        assert e["seq"] > 0 and e["reason"], e
    return broker, lake, agent, dl


def fix_broker_and_replay(broker, lake, agent, entry, restart_agent=False):
    lake.stop()
    if restart_agent:
        agent.stop()
    broker.restart(extra_conf="")     # no packet limit any more
    lake = Lake(broker, "lake/#").start()
    if restart_agent:
        agent.start()
    h.wait_until(lambda: agent.output()["connected"], 20, "agentd to (re)connect")
    rc, out, err = agent.ctl("dlq", "replay", str(entry["id"]))
    assert rc == 0 and "replayed 1 record" in out, (rc, out, err)
    def replayed_dead():
        return [e for e in agent.dlq() if e["key"].endswith(":replay:%d" % entry["id"])]
    h.wait_until(lambda: "big-20" in lake.ids() or replayed_dead(), 20,
                 "the replayed record at the lake or in the DLQ again")
    again = replayed_dead()
    assert not again, "the replayed record was dead-lettered again: %s" % again
    lake.wait_ids(["big-20"], timeout=5)
    rec = [r for r in lake.data_records() if r["data"]["id"] == "big-20"][0]
    assert rec["key"].endswith(":replay:%d" % entry["id"]), rec["key"]
    assert rec["seq"] > entry["seq"], rec["seq"]
    return lake


@test
def rejected_records_are_split_out_and_dead_lettered():
    broker, lake, agent, dl = rejecting_broker()
    print("   DLQ reason: " + dl[0]["reason"])
    assert "larger" in dl[0]["reason"] or "too large" in dl[0]["reason"], dl[0]
    st = agent.status()
    assert st["outputs"][0]["dlq_records"] == 2, st["outputs"][0]
    assert st["queue"]["dlq_records"] == 2, st["queue"]
    assert st["outputs"][0]["delivered_records"] == 60, st["outputs"][0]

    first = dl[0]
    rc, out, err = agent.ctl("dlq", "show", str(first["id"]))
    assert rc == 0, err
    assert "origin:  output:lake" in out and "reason:  " + first["reason"] in out, out
    assert '"id":"big-20"' in out.replace(" ", ""), out[:300]
    rc, out, err = agent.ctl("dlq", "show", "9999")
    assert rc != 0, out

    rc, out, err = agent.ctl("dlq", "purge", str(first["id"]))
    assert rc == 0 and "purged 1 entr" in out, (rc, out, err)
    assert [e["id"] for e in agent.dlq()] == [dl[1]["id"]]
    rc, out, err = agent.ctl("dlq", "purge", "all")
    assert rc == 0 and "purged 1 entr" in out, (rc, out, err)
    assert agent.dlq() == []
    assert agent.status()["queue"]["dlq_records"] == 0
    agent.stop()


@test
def replay_after_agentd_restart():
    """Replay once the broker is fixed, with agentd restarted meanwhile."""
    broker, lake, agent, dl = rejecting_broker()
    lake = fix_broker_and_replay(broker, lake, agent, dl[0], restart_agent=True)
    assert [e["id"] for e in agent.dlq()] == [dl[1]["id"]]
    assert "big-45" not in lake.ids()
    agent.stop()


@test
def replay_after_the_broker_is_fixed():
    """Replay to the same running agentd once the broker's limit is gone:
    the broker's CONNACK no longer announces a maximum packet size."""
    broker, lake, agent, dl = rejecting_broker()
    lake = fix_broker_and_replay(broker, lake, agent, dl[0])
    assert [e["id"] for e in agent.dlq()] == [dl[1]["id"]]
    rc, out, err = agent.ctl("dlq", "purge", "all")
    assert rc == 0 and "purged 1 entr" in out, (rc, out, err)
    assert agent.dlq() == []
    assert "big-45" not in lake.ids()
    agent.stop()


if __name__ == "__main__":
    h.main()
