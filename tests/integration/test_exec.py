"""test_exec.py - the exec driver in agentd: a script run on an interval
ships each line of its output to the lake as a record, all lines of a run
with the run's time and keys that go on after a restart; a run that hangs
is killed at its timeout (its whole process group) and counted in
`agentctl status`; a command that does not exist is a PROBLEM line there."""

import os
import time

import harness as h
from harness import Agent, Broker, Lake, test


def script(d, name, body):
    path = os.path.join(d, name)
    h.write_file(path, "#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def alive(pid):
    """Exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def run_of(rec):
    name, run, line = rec["key"].split(":")
    return int(run), int(line)


@test
def records_reach_the_lake():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    cmd = script(d, "gauges.sh",
                 'echo "{\\"gauge\\":\\"a\\",\\"v\\":1}"\n'
                 'echo "{\\"gauge\\":\\"b\\",\\"v\\":2,\\"site\\":\\"$SITE\\"}"\n'
                 'echo "warming up" >&2\n'
                 "printf '{\"gauge\":\"c\",\"v\":3}'\n")
    inputs = ("[input gauges]\ndriver = exec\ncommand = %s\nparser = json\ninterval = 300ms\n"
              "env = SITE=north\n" % cmd)
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    lake.wait_count(6, pred=lambda r: r["stream"] == "gauges")
    recs = lake.data_records("gauges")
    runs = {}
    for r in recs:
        run, line = run_of(r)
        runs.setdefault(run, []).append((line, r))
    first = min(runs)
    lines = sorted(runs[first], key=lambda x: x[0])
    assert [l for l, _ in lines] == [1, 2, 3], lines
    assert [r["data"] for _, r in lines] == [
        {"gauge": "a", "v": 1}, {"gauge": "b", "v": 2, "site": "north"}, {"gauge": "c", "v": 3}]
    # All lines of a run carry the run's start time.
    for run, rl in runs.items():
        assert len({r["ts"] for _, r in rl}) == 1, rl
    assert "warming up" in agent.log_text()          # stderr to the log, not records
    st = agent.input("gauges")
    assert "runs" in st["state"] and "last: exit 0" in st["state"], st["state"]
    assert st["device"]["connected"] is True, st
    # A restart goes on with new run numbers: runs started after it (by
    # their boot-relative time) all have numbers above every run before.
    agent.stop()
    restart_ms = time.clock_gettime(time.CLOCK_BOOTTIME) * 1000
    agent.start()
    lake.wait_count(6, pred=lambda r: r["stream"] == "gauges" and r["mono_ms"] >= restart_ms)
    agent.wait_drained()
    lake.poll()
    recs = lake.data_records("gauges")
    old = [run_of(r)[0] for r in recs if r["mono_ms"] < restart_ms]
    new = [run_of(r)[0] for r in recs if r["mono_ms"] >= restart_ms]
    assert old and new and min(new) > max(old), (old, new)
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)), keys
    lake.check_duplicates(one_seq_per_id=True)
    agent.stop()


@test
def timeout_is_counted_in_status():
    d = h.tmpdir()
    broker = Broker(d).start()
    pidfile = os.path.join(d, "child.pid")
    cmd = script(d, "hang.sh", 'sleep 1000 &\necho $! > "%s.tmp"\nmv "%s.tmp" "%s"\nwait\n'
                 % (pidfile, pidfile, pidfile))
    inputs = ("[input hang]\ndriver = exec\ncommand = %s\ninterval = 1s\ntimeout = 300ms\n"
              "kill_grace = 100ms\n" % cmd)
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    h.wait_until(lambda: os.path.exists(pidfile), 15, "the script to start its child")
    with open(pidfile) as f:
        child = int(f.read())

    def timed_out():
        return agent.input("hang")["device"]["errors"].get("timeout", 0) >= 1
    h.wait_until(timed_out, 15, "a timeout in status")
    h.wait_until(lambda: not alive(child), 15, "the script's child to be killed with it")
    text = agent.status_text()
    assert "timed out" in text and "killed after timeout 300 ms" in text, text
    assert "timeout" in text, text
    agent.stop()


@test
def missing_command_is_a_problem():
    d = h.tmpdir()
    broker = Broker(d).start()
    inputs = "[input ghost]\ndriver = exec\ncommand = /nonexistent/read-meter -v\ninterval = 200ms\n"
    agent = Agent(d, h.config(d, broker.port, inputs)).start()

    def reported():
        return "command not found: /nonexistent/read-meter" in agent.status_text()
    h.wait_until(reported, 15, "the missing command in status")
    text = agent.status_text()
    assert "PROBLEM: input ghost: device not connected: command not found" in text, text
    agent.stop()


h.main()
