"""test_disk_full.py - a queue on a small, really full filesystem (a tmpfs
mounted for the test): a budget larger than the disk is cut to the free
space and on_full applies before SQLite ever meets a full disk; and when
another program fills the disk under a running agent, inputs wait and
nothing is lost once space comes back."""

import os
import subprocess

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test

FS_BYTES = 8 << 20


def small_fs(d):
    """Mount an 8 MiB tmpfs at d/state; skip the test (reported as skipped,
    never as passed) if this machine does not allow it: mounting needs root."""
    state = os.path.join(d, "state")
    os.makedirs(state, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % FS_BYTES, "tmpfs", state],
                       capture_output=True, text=True)
    if r.returncode != 0:
        h.skip("cannot mount a tmpfs here (mounting needs root): %s" % r.stderr.strip())
    # Registered before agentd, so it is undone after agentd has stopped.
    h.on_cleanup("tmpfs " + state, lambda: subprocess.run(["umount", "-l", state]))
    return state


def setup(d, lines, pad=60, random_pad=False):
    broker = Broker(d, persistent=True).start()
    lake = Lake(broker, "lake/#", id="lake-full").start()
    lake.stop()
    broker.stop()
    os.makedirs(os.path.join(d, "logs"))
    w = SensorWriter(os.path.join(d, "logs", "s.log"), prefix="f", pad=pad, seed=5,
                     random_pad=random_pad)
    w.write(lines)
    return broker, lake, w


@test
def budget_larger_than_the_disk_is_cut_to_fit():
    d = h.tmpdir()
    small_fs(d)
    # About 18 MB of lines whose hex pads compress to half at best: more
    # than the 8 MiB disk holds even as the queue stores them.
    broker, lake, w = setup(d, 80000, pad=160, random_pad=True)
    conf = h.config(d, broker.port, h.tail_input("s", w.path),
                    queue="max_bytes = 1GiB\non_full = block\n")
    agent = Agent(d, conf).start()

    def blocked():
        st = agent.status()
        return st["inputs"][0]["blocked"] and st
    st = h.wait_until(blocked, 60, "the input to be blocked by the full disk", interval=0.1)
    q = st["queue"]
    print("   blocked after %d records; budget in force %d of %d configured bytes" % (
        st["inputs"][0]["records"], q["max_bytes"], 1 << 30))
    assert q["disk_limited"] is True, q
    assert q["max_bytes"] < FS_BYTES, q
    assert "budget cut to the free disk space" in agent.status_text()
    assert agent.alive()
    # The agent saw no write fail: it stopped before the disk did.
    assert "No space left" not in agent.log_text() and "disk is full" not in agent.log_text()

    broker.start()
    lake.start()
    lake.wait_ids(w.ids, timeout=120)
    assert lake.ids() == set(w.ids)
    assert not lake.gaps()
    lake.check_duplicates(one_seq_per_id=True)
    agent.wait_drained(timeout=60)
    agent.stop()


@test
def disk_filled_by_another_program_loses_nothing():
    d = h.tmpdir()
    state = small_fs(d)
    broker, lake, w = setup(d, 2000)
    conf = h.config(d, broker.port, h.tail_input("s", w.path),
                    queue="max_bytes = 1GiB\non_full = block\n")
    agent = Agent(d, conf).start()
    h.wait_until(lambda: agent.status()["inputs"][0]["records"] == 2000, 30,
                 "the first 2000 lines to be queued")
    # Another program takes every free byte of the filesystem.
    filler = os.path.join(state, "filler")
    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"], capture_output=True)
    w.write(30000)

    def stalled():
        st = agent.status()
        return (st["inputs"][0]["blocked"] or st["inputs"][0]["last_error"]) and st
    st = h.wait_until(stalled, 30, "the input to stop at the full disk", interval=0.1)
    print("   stalled at %d records: blocked=%s, last error: %s" % (
        st["inputs"][0]["records"], st["inputs"][0]["blocked"], st["inputs"][0]["last_error"]))
    assert agent.alive(), "agentd died on a full disk"

    os.unlink(filler)
    broker.start()
    lake.start()
    lake.wait_ids(w.ids, timeout=120)
    assert lake.ids() == set(w.ids)
    lake.check_duplicates(one_seq_per_id=False)
    agent.wait_drained(timeout=60)
    agent.stop()


if __name__ == "__main__":
    h.main()
