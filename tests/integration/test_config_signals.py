"""test_config_signals.py - configuration errors are refused with file, line
and key (by --check-config, at start and at reload), SIGTERM stops agentd
cleanly with everything acknowledged committed, and SIGHUP applies a changed
valid config while a broken one leaves the running config in place."""

import hashlib
import os
import re
import signal
import subprocess

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test

GOOD = """[agent]
id = cfg-gw
state_dir = {d}/state

[queue]
max_bytes = 64MiB

[input sensors]
driver = tail
path = {d}/logs/*.log
parser = json

[output lake]
type = mqtt
url = mqtt://127.0.0.1:1
topic = lake/{{agent}}/{{stream}}
"""

# (name, how to break GOOD, text on the line the message must name, words
# the message must contain)
BROKEN = [
    ("unknown key", lambda t: t.replace("id = cfg-gw\n", "id = cfg-gw\ncolour = blue\n"),
     "colour", ["colour"]),
    ("bad size", lambda t: t.replace("max_bytes = 64MiB", "max_bytes = lots"),
     "max_bytes", ["max_bytes", "lots"]),
    ("bad duration", lambda t: t.replace("type = mqtt\n", "type = mqtt\nlinger = soon\n"),
     "linger", ["linger", "soon"]),
    ("bad enum", lambda t: t.replace("parser = json", "parser = yaml"), "parser", ["parser", "yaml"]),
    ("unknown section", lambda t: t + "[frobnicate]\na = b\n", "[frobnicate]", ["frobnicate"]),
    ("unknown output key", lambda t: t.replace("type = mqtt\n", "type = mqtt\nfoo = 1\n"),
     "foo", ["foo"]),
    ("missing driver", lambda t: t.replace("driver = tail\n", ""), "[input sensors]", ["driver"]),
    ("unknown driver", lambda t: t.replace("driver = tail", "driver = nosuch"),
     "driver", ["driver", "nosuch"]),
    ("not key = value", lambda t: t.replace("[queue]\n", "[queue]\njust words\n"),
     "just words", []),
]


def line_of(text, marker):
    for n, l in enumerate(text.splitlines(), 1):
        if marker in l:
            return n
    raise AssertionError("%r not in the config" % marker)


def check_config(path):
    p = subprocess.run(h.AGENTD_CMD + ["--check-config", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


@test
def check_config_names_file_line_and_key():
    d = h.tmpdir()
    os.makedirs(os.path.join(d, "logs"))
    good = os.path.join(d, "good.conf")
    h.write_file(good, GOOD.format(d=d))
    rc, out = check_config(good)
    assert rc == 0, out
    assert "valid" in out, out
    failures = []
    for name, breaker, marker, words in BROKEN:
        path = os.path.join(d, name.replace(" ", "_") + ".conf")
        text = breaker(GOOD.format(d=d))
        line = line_of(text, marker)
        h.write_file(path, text)
        rc, out = check_config(path)
        where = "%s:%d:" % (path, line)
        if rc == 0 or where not in out or not all(w in out for w in words):
            failures.append("%s: exit %d, wanted '%s' and %s in: %s" % (name, rc, where, words,
                                                                       out.strip()))
    # No output at all: nowhere to send data. Names the file and the section.
    path = os.path.join(d, "no_output.conf")
    h.write_file(path, GOOD.format(d=d).split("[output lake]")[0])
    rc, out = check_config(path)
    if rc == 0 or path not in out or "output" not in out:
        failures.append("missing output: exit %d: %s" % (rc, out.strip()))
    rc, out = check_config(os.path.join(d, "absent.conf"))
    if rc == 0 or "absent.conf" not in out:
        failures.append("absent file: exit %d: %s" % (rc, out.strip()))
    assert not failures, "\n".join(failures)


@test
def agentd_refuses_to_start_with_a_broken_config():
    d = h.tmpdir()
    os.makedirs(os.path.join(d, "logs"))
    for name, breaker, marker, words in BROKEN[:3]:
        path = os.path.join(d, "broken.conf")
        text = breaker(GOOD.format(d=d))
        line = line_of(text, marker)
        h.write_file(path, text)
        p = subprocess.run(h.AGENTD_CMD + ["-c", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20, stdin=subprocess.DEVNULL)
        err = p.stderr.decode()
        assert p.returncode != 0, "%s: agentd started (exit %d)" % (name, p.returncode)
        assert "%s:%d:" % (path, line) in err and all(w in err for w in words), (name, err)
    assert not os.path.exists(os.path.join(d, "state", "agentd.sock"))


def running_agent(d, broker, topic="lake/{agent}/{stream}"):
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    text = h.config(d, broker.port, h.tail_input("sensors", os.path.join(d, "logs", "*.log")),
                    topic=topic, agent_id="sig-gw")
    return Agent(d, text), text


@test
def sigterm_commits_what_was_acknowledged():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent, _ = running_agent(d, broker)
    w = SensorWriter(os.path.join(d, "logs", "s.log"), prefix="t", seed=1)
    w.write(2000)
    agent.start()
    lake.wait_ids(w.ids, timeout=30)
    agent.wait_drained()
    before = len(lake.records)
    agent.stop(timeout=10)          # asserts exit 0
    # Nothing was in flight: agentd stopped at once, not at the end of its
    # grace for in-flight batches.
    log = agent.log_text()
    assert "stopping: nothing left in flight" in log, log[-2000:]
    assert "still in flight" not in log, log[-2000:]
    assert not os.path.exists(os.path.join(d, "state", "agentd.sock")), "control socket left behind"

    # The restart resumes at the committed positions and cursor: nothing
    # already delivered is read or sent again.
    agent.start()
    h.wait_until(lambda: agent.input("sensors")["state"].startswith("tailing"), 10,
                 "the input to be tailing")
    # 100 new lines are the barrier: records go out in seq order, so a
    # re-read or re-sent old record would be queued and sent before them.
    w.write(100)
    lake.wait_ids(w.ids, timeout=20)
    agent.wait_drained()
    st = agent.status()
    assert st["inputs"][0]["records"] == 100, st["inputs"][0]
    assert st["outputs"][0]["delivered_records"] == 100, st["outputs"][0]
    assert st["outputs"][0]["backlog_records"] == 0, st["outputs"][0]
    lake.poll()
    assert len(lake.records) == before + 100, "%d records sent again after a clean restart" % (
        len(lake.records) - before - 100)
    assert lake.check_duplicates() == 0
    agent.stop()


@test
def sigterm_with_batches_in_flight_loses_nothing():
    """SIGTERM in the middle of a stream of lines: exit 0 within the 5 s
    grace, and after a restart every line is there (re-sends allowed)."""
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent, _ = running_agent(d, broker)
    w = SensorWriter(os.path.join(d, "logs", "s.log"), prefix="f", seed=2)
    agent.start()
    bg = h.BackgroundWriter(w, per_tick=50, tick=0.005).start()
    # Stop in mid-stream: once the lake has some records and more are coming.
    h.wait_until(lambda: lake.poll() or len(lake.records) >= 500, 20,
                 "the first records at the lake")
    agent.stop(timeout=10)          # exit 0 within the grace (plus margin)
    bg.stop()
    agent.start()
    lake.wait_ids(w.ids, timeout=30)
    lake.check_duplicates(one_seq_per_id=True)
    agent.stop()


@test
def sighup_applies_a_changed_config_and_refuses_a_broken_one():
    d = h.tmpdir()
    broker = Broker(d).start()
    # Both topics, but not the agent's status topic agents/sig-gw/status.
    lake = Lake(broker, "+/sig-gw/sensors").start()
    agent, text = running_agent(d, broker)
    w = SensorWriter(os.path.join(d, "logs", "s.log"), prefix="h", seed=3)
    w.write(50)
    agent.start()
    lake.wait_ids(w.ids, timeout=20)

    def sha(t):
        return hashlib.sha256(t.encode()).hexdigest()
    assert agent.status()["config_hash"] == sha(text)

    # A valid change: a new topic.
    new = text.replace("topic = lake/{agent}/{stream}", "topic = plant2/{agent}/{stream}")
    assert new != text
    agent.write_config(new)
    agent.signal(signal.SIGHUP)
    h.wait_until(lambda: agent.status()["config_hash"] == sha(new), 10, "the new config to be loaded")
    first_new = len(w.ids)
    w.write(50)
    lake.wait_ids(w.ids, timeout=20)
    topics = {}
    for b in lake.batches:
        for r in b["records"]:
            topics[r["data"]["id"]] = b["meta"]["topic"]
    late = [topics[i] for i in w.ids[first_new:]]
    assert set(late) == {"plant2/sig-gw/sensors"}, set(late)

    # A broken change: refused, logged with file and line, old config kept.
    broken = new.replace("linger = 50ms", "linger = 50 parsecs")
    line = broken.splitlines().index("linger = 50 parsecs") + 1
    agent.write_config(broken)
    agent.signal(signal.SIGHUP)
    h.wait_until(lambda: "%s:%d:" % (agent.conf, line) in agent.log_text(), 10,
                 "the reload error in the log")
    assert agent.alive(), "agentd died on a broken reload"
    assert re.search(r"linger", agent.log_text()), agent.log_text()[-500:]
    st = agent.status()
    assert st["config_hash"] == sha(new), "the broken config replaced the running one"
    first_after = len(w.ids)
    w.write(50)
    lake.wait_ids(w.ids, timeout=20)
    lake.poll()
    for b in lake.batches:
        for r in b["records"]:
            topics[r["data"]["id"]] = b["meta"]["topic"]
    assert {topics[i] for i in w.ids[first_after:]} == {"plant2/sig-gw/sensors"}
    # agentctl reload checks the file first: it fails (exit 1) naming file,
    # line and key, and the refusal is logged again.
    n = agent.log_text().count("%s:%d:" % (agent.conf, line))
    rc, out, err = agent.ctl("reload")
    assert rc == 1, (rc, out, err)
    assert "reload refused" in err and "%s:%d:" % (agent.conf, line) in err, (rc, out, err)
    h.wait_until(lambda: agent.log_text().count("%s:%d:" % (agent.conf, line)) > n, 10,
                 "the refusal of agentctl reload in the log")
    assert agent.alive() and agent.status()["config_hash"] == sha(new)
    assert lake.check_duplicates() == 0
    agent.stop()


@test
def agentctl_reaches_agentd_after_a_broken_edit():
    """A field engineer mistypes a value in the config of a running agentd:
    agentctl -c that file must still find agentd through [agent] state_dir
    (the daemon keeps running with its old config) instead of saying it is
    not running."""
    d = h.tmpdir()
    broker = Broker(d).start()
    agent, text = running_agent(d, broker)
    agent.start()
    agent.write_config(text.replace("linger = 50ms", "linger = 50 parsecs"))
    rc, out, err = agent.ctl("ping", sock=False)
    assert rc == 0 and "pong" in out, "agentctl -c BROKEN ping: exit %d: %s%s" % (rc, out, err)
    rc, out, err = agent.ctl("status", "--json", sock=False)
    assert rc == 0 and '"running":true' in out.replace(" ", ""), \
        "agentctl -c BROKEN status: exit %d: %s%s" % (rc, out[:200], err)
    agent.stop()


if __name__ == "__main__":
    h.main()
