"""test_faults.py - nothing accepted is lost when agentd is killed at random
moments while a writer appends lines, or when the broker goes away for a
while: after recovery every line is at the lake (duplicates allowed, and
identifiable by (agent, seq)) and the queue drains."""

import os
import random
import time

import harness as h
from harness import Agent, BackgroundWriter, Broker, Lake, SensorWriter, test


@test
def sigkill_loop_loses_nothing():
    # A fixed seed: every run makes the same schedule of kills (SEED=N tries
    # another one by hand).
    seed = int(os.environ.get("SEED", "20261202"))
    print("   seed %d (SEED=%d reproduces the kill schedule)" % (seed, seed))
    rng = random.Random(seed)
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "crash.log"), prefix="k", seed=seed)
    w.write(300)
    agent = Agent(d, h.config(d, broker.port,
                              h.tail_input("crash", os.path.join(d, "logs", "*.log")))).start()
    bg = BackgroundWriter(w, per_tick=20, tick=0.01).start()
    kills = rng.randint(5, 8)
    for i in range(kills):
        time.sleep(rng.uniform(0.2, 1.0))
        agent.kill()
        # Sometimes come back at once, sometimes after a pause; the next
        # kill may hit it before it even answers on its socket.
        time.sleep(rng.choice([0, 0, rng.uniform(0.05, 0.3)]))
        agent.start(wait=(i % 2 == 0))
    bg.stop()
    # The final clean run: every line written must arrive.
    h.wait_until(lambda: agent.ctl("ping")[0] == 0, 15, "agentd to answer ping")
    lake.wait_ids(w.ids, timeout=60)
    assert lake.ids() == set(w.ids)
    # The queue holds each line once (position and records commit together),
    # so a line re-sent after a crash is the same (agent, seq).
    dups = lake.check_duplicates(one_seq_per_id=True)
    print("   %d kills, %d lines, %d duplicate deliveries" % (kills, len(w.ids), dups))
    agent.wait_drained(timeout=30)
    st = agent.status()
    assert st["outputs"][0]["backlog_records"] == 0, st["outputs"][0]
    agent.stop()


@test
def broker_outage_loses_nothing():
    d = h.tmpdir()
    # Broker persistence keeps the lake's session and the messages queued
    # for it across the broker's restart, so what the lake misses could only
    # be the agent's fault.
    broker = Broker(d, persistent=True).start()
    lake = Lake(broker, "lake/#", id="lake-outage").start()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "out.log"), prefix="o", seed=11)
    w.write(300)
    agent = Agent(d, h.config(d, broker.port,
                              h.tail_input("plant", os.path.join(d, "logs", "out.log")))).start()
    lake.wait_ids(w.ids, timeout=30)
    assert agent.output()["connected"] is True

    lake.stop()
    broker.stop()
    outage_start = len(w.ids)
    bg = BackgroundWriter(w, per_tick=10, tick=0.02).start()

    def down():
        o = agent.output()
        return not o["connected"] and "refused" in o["why"]
    # First the lost connection, then a reconnect attempt that was refused.
    h.wait_until(down, 15, "status to show the output's reconnect refused")
    h.wait_until(lambda: len(w.ids) - outage_start >= 50, 15,
                 "lines to be written during the outage")
    bg.stop()
    n_outage = len(w.ids) - outage_start
    assert n_outage > 0
    h.wait_until(lambda: agent.output()["backlog_records"] == n_outage, 15,
                 "backlog to hold the %d lines written during the outage" % n_outage)
    st = agent.status()
    o = st["outputs"][0]
    assert o["connected"] is False and "refused" in o["why"], o
    # The next reconnect attempt is shown (reconnect_max is 1 s here).
    assert 0 <= o["next_retry_in_ms"] <= 1000, o
    assert st["health"]["ok"] is False, st["health"]
    assert any(l.startswith("PROBLEM: output lake not connected") for l in st["health"]["lines"]), \
        st["health"]
    text = agent.status_text()
    assert "DISCONNECTED" in text, text
    assert "connection refused" in text, text

    broker.start()
    lake.start()
    lake.wait_ids(w.ids, timeout=30)
    assert lake.ids() == set(w.ids)
    lake.check_duplicates(one_seq_per_id=True)
    agent.wait_drained()
    st = agent.status()
    assert st["outputs"][0]["connected"] is True, st["outputs"][0]
    assert st["health"]["ok"] is True, st["health"]
    agent.stop()


@test
def decoder_reconnects_after_broker_restart():
    """The lake tool (agent-decode --sub --id) waits for a broker that went
    away and resumes its persistent session when the broker is back: the
    batches agentd then publishes reach it."""
    d = h.tmpdir()
    broker = Broker(d, persistent=True).start()
    lake = Lake(broker, "lake/#", id="lake-decoder").start()
    broker.stop()
    # stop() returns once the broker has exited: agent-decode has lost its
    # connection and must make a new one by itself.
    assert lake.proc.poll() is None, "agent-decode exited when the broker went away"
    broker.start()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "x.log"), prefix="x", seed=1)
    w.write(20)
    agent = Agent(d, h.config(d, broker.port, h.tail_input("x", os.path.join(d, "logs", "x.log"))))
    agent.start()
    agent.wait_drained()
    lake.wait_ids(w.ids, timeout=10)
    assert lake.proc.poll() is None
    agent.stop()


if __name__ == "__main__":
    h.main()
