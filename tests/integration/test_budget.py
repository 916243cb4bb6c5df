"""test_budget.py - the disk budget (queue max_bytes) with the output's broker
down: drop_oldest evicts and ships gap markers that account exactly for every
line not delivered; block holds the inputs back and loses nothing."""

import os

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test

LINES = 40000
PAD = 60            # lines of about 125 bytes: 5 MB against a 1 MiB budget
BUDGET = 1 << 20
# SQLite works in pages and commits in groups: allow a quarter over budget,
# not the megabytes that were written.
SLACK = 1.25


def setup(d, on_full):
    # The broker is started once to give the lake a persistent session, then
    # stopped: agentd runs against the closed port until the test starts
    # the broker again, and what it then publishes is kept for the lake.
    broker = Broker(d, persistent=True).start()
    lake = Lake(broker, "lake/#", id="lake-budget").start()
    lake.stop()
    broker.stop()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "big.log"), prefix="b", pad=PAD, seed=3)
    w.write(LINES)
    size = os.path.getsize(w.path)
    assert size > 4 * BUDGET, size
    conf = h.config(d, broker.port, h.tail_input("big", os.path.join(d, "logs", "big.log")),
                    queue="max_bytes = 1MiB\non_full = %s\n" % on_full)
    agent = Agent(d, conf).start()
    return broker, lake, w, agent


def disk_use(d):
    total = 0
    for name in ("queue.db", "queue.db-wal"):
        try:
            total += os.path.getsize(os.path.join(d, "state", name))
        except FileNotFoundError:
            pass
    return total


@test
def drop_oldest_accounts_for_every_line():
    d = h.tmpdir()
    broker, lake, w, agent = setup(d, "drop_oldest")
    peak = [0, 0]

    def all_read():
        st = agent.status()
        peak[0] = max(peak[0], st["queue"]["disk_bytes"])
        peak[1] = max(peak[1], disk_use(d))
        return st["inputs"][0]["records"] == LINES and st
    st = h.wait_until(all_read, 90, "agentd to read all %d lines" % LINES, interval=0.1)
    q = st["queue"]
    print("   queue: %d records, %d evicted, disk %d bytes (peak %d by status, %d on disk)" %
          (q["records"], q["evicted_records"], q["disk_bytes"], peak[0], peak[1]))
    text = agent.status_text()
    print("   " + "\n   ".join(l for l in text.splitlines() if l.startswith(("queue", "PROBLEM"))))
    assert q["evicted_records"] > 0, q
    assert q["max_bytes"] == BUDGET and q["on_full"] == "drop_oldest", q
    # Bounded: a little slack for the WAL and the last commit, not the 5 MB
    # that was written.
    assert st["inputs"][0]["blocked"] is False
    assert "evicted %d records" % q["evicted_records"] in text or "dropped" in text, text

    broker.start()
    lake.start()

    def accounted():
        recs = lake.data_records()
        return len({r["data"]["id"] for r in recs}) + sum(
            g["data"]["gap"]["count"] for g in lake.gaps()) >= LINES
    h.wait_until(accounted, 60, "received records and gap counts to cover %d lines" % LINES,
                 interval=0.2)
    agent.wait_drained()
    lake.check_duplicates(one_seq_per_id=True)

    gaps = lake.gaps()
    assert gaps, "lines were evicted but no gap marker arrived"
    markers = {}
    for g in gaps:
        assert g["stream"] == "_agent" and g["kind"] == "gap", g
        gp = g["data"]["gap"]
        assert gp["reason"] == "disk_full", g
        assert g["key"] == "gap:%d-%d" % (gp["first_seq"], gp["last_seq"]), g
        markers[g["seq"]] = gp
    received = {}
    for r in lake.data_records():
        received[int(r["data"]["id"].split("-")[1])] = r["seq"]
    written = set(range(LINES))
    assert set(received) <= written
    missing = sorted(written - set(received))
    counted = sum(g["count"] for g in markers.values())
    assert len(received) + counted == LINES, \
        "received %d + gap counts %d != %d written" % (len(received), counted, LINES)

    # Each run of missing lines lies between two received neighbours; the
    # seqs between those neighbours (other than markers' own) must all be
    # inside gap ranges, one per missing line.
    def covered(s):
        return any(g["first_seq"] <= s <= g["last_seq"] for g in markers.values())
    runs, i = [], 0
    while i < len(missing):
        j = i
        while j + 1 < len(missing) and missing[j + 1] == missing[j] + 1:
            j += 1
        runs.append((missing[i], missing[j]))
        i = j + 1
    top = max(list(received.values()) + list(markers))
    for lo, hi in runs:
        s_lo = received[lo - 1] if lo > 0 else 0
        s_hi = received[hi + 1] if hi + 1 < LINES else top + 1
        between = [s for s in range(s_lo + 1, s_hi) if s not in markers]
        assert len(between) == hi - lo + 1, \
            "lines %d..%d missing but %d seqs between their neighbours" % (lo, hi, len(between))
        bad = [s for s in between if not covered(s)]
        assert not bad, "seqs %s of lines %d..%d are in no gap marker" % (bad[:5], lo, hi)
    print("   %d delivered, %d evicted in %d gap markers" % (len(received), counted, len(markers)))
    agent.stop()
    # Last, so that the accounting above is checked even when this fails.
    assert peak[0] <= SLACK * BUDGET, "queue disk use reached %d bytes, budget %d" % (peak[0], BUDGET)
    assert peak[1] <= SLACK * BUDGET, "queue files reached %d bytes, budget %d" % (peak[1], BUDGET)


@test
def block_loses_nothing():
    d = h.tmpdir()
    broker, lake, w, agent = setup(d, "block")

    peak = [0]

    def blocked():
        st = agent.status()
        peak[0] = max(peak[0], disk_use(d))
        return st["inputs"][0]["blocked"] and st["queue"]["full"] and st
    st = h.wait_until(blocked, 60, "the input to be blocked by the full queue", interval=0.1)
    print("   blocked after %d records, queue files %d bytes (peak %d)" % (
        st["inputs"][0]["records"], disk_use(d), peak[0]))
    accepted = st["inputs"][0]["records"]
    assert 0 < accepted < LINES, accepted
    assert st["queue"]["evicted_records"] == 0, st["queue"]
    assert any("inputs blocked" in l for l in st["health"]["lines"]), st["health"]
    assert "BLOCKED" in agent.status_text()
    assert peak[0] <= SLACK * BUDGET, "queue files reached %d bytes, budget %d" % (peak[0], BUDGET)

    broker.start()
    lake.start()
    lake.wait_ids(w.ids, timeout=90)
    assert lake.ids() == set(w.ids)
    assert not lake.gaps(), lake.gaps()[:3]
    lake.check_duplicates(one_seq_per_id=True)
    agent.wait_drained()
    st = agent.status()
    assert st["queue"]["evicted_records"] == 0 and not st["inputs"][0]["blocked"], st
    agent.stop()


if __name__ == "__main__":
    h.main()
