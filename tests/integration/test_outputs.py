"""test_outputs.py - several outputs at once: one output down does not hold
back another, and catches up without loss when it returns; records go to the
outputs whose `streams` patterns match, and leave the queue only when every
output they route to has them."""

import os

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test


def two_outputs_config(d, port_a, port_b, inputs, streams_a="*", streams_b="*"):
    out = ""
    for name, port, streams in (("a", port_a, streams_a), ("b", port_b, streams_b)):
        out += """
[output %s]
type = mqtt
url = mqtt://127.0.0.1:%d
topic = lake/{agent}/{stream}
streams = %s
linger = 50ms
retry_base = 200ms
retry_max = 1s
reconnect_base = 200ms
reconnect_max = 1s
""" % (name, port, streams)
    return """[agent]
id = multi-gw
state_dir = %s/state
trust_clock = true

%s
%s""" % (d, inputs, out)


def broker_in(d, name, persistent=False):
    sub = os.path.join(d, name)
    os.makedirs(sub)
    return Broker(sub, persistent=persistent)


def output(agent, name):
    for o in agent.status()["outputs"]:
        if o["name"] == name:
            return o
    raise AssertionError("no output %s" % name)


@test
def one_output_down_does_not_hold_back_the_other():
    d = h.tmpdir()
    ba = broker_in(d, "a").start()
    # b's lake keeps a session on its broker, which is then stopped: what
    # agentd sends once b returns is kept for the lake.
    bb = broker_in(d, "b", persistent=True).start()
    lake_a = Lake(ba, "lake/#").start()
    lake_b = Lake(bb, "lake/#", id="lake-b").start()
    lake_b.stop()
    bb.stop()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "s.log"), prefix="m")
    conf = two_outputs_config(d, ba.port, bb.port,
                              h.tail_input("s", os.path.join(d, "logs", "s.log")))
    agent = Agent(d, conf).start()
    w.write(20000)

    # a delivers everything while b is down.
    lake_a.wait_ids(w.ids, timeout=60)
    h.wait_until(lambda: output(agent, "a")["backlog_records"] == 0, 15, "a's backlog to empty")
    ob = output(agent, "b")
    assert ob["connected"] is False and ob["backlog_records"] == 20000, ob
    st = agent.status()
    # The records stay queued for b.
    assert st["queue"]["records"] >= 20000, st["queue"]
    text = agent.status_text()
    assert "PROBLEM: output b not connected" in text, text

    # More lines while b is still away, then b returns and catches up.
    w.write(5000)
    lake_a.wait_ids(w.ids, timeout=60)
    bb.start()
    lake_b.start()
    lake_b.wait_ids(w.ids, timeout=90)
    h.wait_until(lambda: output(agent, "b")["backlog_records"] == 0, 30, "b's backlog to empty")
    assert lake_a.ids() == set(w.ids) and lake_b.ids() == set(w.ids)
    lake_a.check_duplicates()
    lake_b.check_duplicates()
    # Both have everything: the queue lets the records go.
    h.wait_until(lambda: agent.status()["queue"]["records"] == 0, 30, "the queue to empty")
    agent.stop()


@test
def records_go_where_their_stream_is_routed():
    d = h.tmpdir()
    ba = broker_in(d, "a").start()
    bb = broker_in(d, "b").start()
    lake_a = Lake(ba, "lake/#").start()
    lake_b = Lake(bb, "lake/#").start()
    os.makedirs(os.path.join(d, "logs"))
    wt = SensorWriter(os.path.join(d, "logs", "temp.log"), prefix="t")
    wv = SensorWriter(os.path.join(d, "logs", "vib.log"), prefix="v")
    inputs = (h.tail_input("temp", os.path.join(d, "logs", "temp.log")) +
              h.tail_input("vib", os.path.join(d, "logs", "vib.log")))
    conf = two_outputs_config(d, ba.port, bb.port, inputs, streams_a="temp",
                              streams_b="vib, te*")
    agent = Agent(d, conf).start()
    for _ in range(10):
        wt.write(300)
        wv.write(200)
    lake_a.wait_ids(wt.ids, timeout=60)
    lake_b.wait_ids(set(wt.ids) | set(wv.ids), timeout=60)
    h.wait_until(lambda: output(agent, "a")["backlog_records"] == 0 and
                 output(agent, "b")["backlog_records"] == 0, 15, "both backlogs to empty")
    # a got temp only; b got both; nothing else anywhere.
    assert {r["stream"] for r in lake_a.data_records()} == {"temp"}
    assert lake_a.ids() == set(wt.ids)
    assert lake_b.ids() == set(wt.ids) | set(wv.ids)
    for b in lake_a.batches:
        assert b["meta"]["topic"] == "lake/multi-gw/temp", b["meta"]
    h.wait_until(lambda: agent.status()["queue"]["records"] == 0, 30, "the queue to empty")
    agent.stop()


if __name__ == "__main__":
    h.main()
