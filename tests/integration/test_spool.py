"""test_spool.py - the spool driver in agentd: files dropped into a directory
(written, then renamed) reach the lake and are removed once committed; a
SIGKILL before the commit loses nothing and the file is removed after the
restart; a SIGKILL after the commit but before the file could be moved (its
done_dir made unusable first, so the moment is known from status, not
guessed) loses nothing, and a record that comes again carries the same key;
a file the agent may not read goes to failed_dir with the reason beside it
(agentd runs as nobody for that one when the suite runs as root)."""

import base64
import os
import shutil
import signal

import harness as h
from harness import Agent, Broker, Lake, test

NOBODY = 65534


def spool_input(name, spool, extra=""):
    return ("[input %s]\ndriver = spool\ndir = %s\npattern = *.csv\nready = rename\n"
            "parser = csv\npoll_interval = 100ms\n%s\n") % (name, spool, extra)


def drop(spool, name, rows, header="id,v"):
    """Write a csv file as writers should: under a name the pattern does not
    match, then rename it into place. Returns the (file, line, id) rows."""
    tmp = os.path.join(spool, "." + name + ".tmp")
    h.write_file(tmp, header + "\n" + "".join("%s,%d\n" % (r, i) for i, r in enumerate(rows)))
    os.rename(tmp, os.path.join(spool, name))
    return {(name, i + 2, r) for i, r in enumerate(rows)}


def got_rows(lake, stream):
    return {(r["data"]["file"], r["data"]["line"], r["data"]["data"]["id"])
            for r in lake.data_records(stream)}


def wait_gone(path, what):
    h.wait_until(lambda: not os.path.exists(path), 30, what)


@test
def files_are_shipped_and_removed():
    d = h.tmpdir()
    spool = os.path.join(d, "spool")
    images = os.path.join(d, "images")
    os.makedirs(spool)
    os.makedirs(images)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    inputs = spool_input("plc", spool) + (
        "[input cam]\ndriver = spool\ndir = %s\nready = rename\npattern = *.jpg\nformat = binary\n"
        "chunk_size = 4KiB\npoll_interval = 100ms\n" % images)
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    want = set()
    for n in range(3):
        want |= drop(spool, "export-%d.csv" % n, ["r%d-%d" % (n, i) for i in range(50)])
    blob = os.urandom(10000)
    with open(os.path.join(images, ".a.tmp"), "wb") as f:
        f.write(blob)
    os.rename(os.path.join(images, ".a.tmp"), os.path.join(images, "a.jpg"))
    h.wait_until(lambda: want <= got_rows(lake, "plc"), 30, "every row at the lake")
    for n in range(3):
        wait_gone(os.path.join(spool, "export-%d.csv" % n), "export-%d.csv removed" % n)
    h.wait_until(lambda: len(lake.data_records("cam")) >= 3, 30, "the image's 3 chunks")
    wait_gone(os.path.join(images, "a.jpg"), "a.jpg removed")
    chunks = sorted(lake.data_records("cam"), key=lambda r: r["data"]["index"])
    assert [c["data"]["index"] for c in chunks] == [0, 1, 2], chunks
    assert all(c["data"]["count"] == 3 and c["data"]["size"] == 10000 for c in chunks)
    assert b"".join(base64.b64decode(c["data"]["data"]) for c in chunks) == blob
    # No row twice, each with its own key.
    recs = lake.data_records("plc")
    assert len({r["key"] for r in recs}) == len(want), len(recs)
    st = agent.input("plc")
    assert "done 3, failed 0" in st["state"], st["state"]
    agent.stop()


@test
def sigkill_before_the_commit_loses_nothing():
    d = h.tmpdir()
    spool = os.path.join(d, "spool")
    os.makedirs(spool)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    slow = "commit_interval = 10s\ncommit_records = 1000000\n"
    agent = Agent(d, h.config(d, broker.port, spool_input("plc", spool), queue=slow)).start()
    want = drop(spool, "a.csv", ["k%d" % i for i in range(200)])
    h.wait_until(lambda: "1 to commit" in agent.input("plc")["state"], 9,
                 "a.csv read and its records waiting for the commit")
    agent.kill()
    # What was read was not committed: nothing shipped, the file still there.
    assert os.path.exists(os.path.join(spool, "a.csv"))
    assert not lake.data_records("plc"), "records were committed before the kill"
    agent.write_config(h.config(d, broker.port, spool_input("plc", spool)))
    agent.start()
    h.wait_until(lambda: want <= got_rows(lake, "plc"), 30, "every row after the restart")
    wait_gone(os.path.join(spool, "a.csv"), "a.csv removed after the restart")
    agent.stop()


@test
def clean_stop_removes_what_it_committed():
    d = h.tmpdir()
    spool = os.path.join(d, "spool")
    os.makedirs(spool)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    slow = "commit_interval = 10s\ncommit_records = 1000000\n"
    agent = Agent(d, h.config(d, broker.port, spool_input("plc", spool), queue=slow)).start()
    want = drop(spool, "a.csv", ["c%d" % i for i in range(20)])
    h.wait_until(lambda: "1 to commit" in agent.input("plc")["state"], 9, "a.csv waiting for the commit")
    # SIGTERM commits, tells the driver, and the file goes before agentd exits.
    agent.stop()
    assert not os.path.exists(os.path.join(spool, "a.csv"))
    agent.start()
    h.wait_until(lambda: want <= got_rows(lake, "plc"), 30, "every row after the restart")
    agent.stop()


@test
def sigkill_after_the_commit_before_the_move():
    d = h.tmpdir()
    spool = os.path.join(d, "spool")
    done = os.path.join(d, "done")
    os.makedirs(spool)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent = Agent(d, h.config(d, broker.port, spool_input("plc", spool, "done_dir = %s\n" % done))).start()
    # The move must fail: a file where done_dir was (rename gets ENOTDIR).
    os.rmdir(done)
    h.write_file(done, "")
    want = drop(spool, "a.csv", ["m%d" % i for i in range(100)])

    def stuck():
        st = agent.input("plc")
        return "1 not moved" in st["state"] and "records committed" in st["last_error"]
    h.wait_until(stuck, 30, "status: a.csv committed but not moved")
    h.wait_until(lambda: want <= got_rows(lake, "plc"), 30, "every row shipped before the kill")
    agent.kill()
    assert os.path.exists(os.path.join(spool, "a.csv"))
    os.unlink(done)
    os.makedirs(done)
    agent.start()
    h.wait_until(lambda: os.path.exists(os.path.join(done, "a.csv")), 30, "a.csv moved to done_dir")
    assert not os.path.exists(os.path.join(spool, "a.csv"))
    agent.wait_drained()
    # Nothing lost, and any row that came again has the key it had.
    assert want <= got_rows(lake, "plc")
    keys = {}
    for r in lake.data_records("plc"):
        keys.setdefault(r["data"]["line"], set()).add(r["key"])
    assert all(len(k) == 1 for k in keys.values()), keys
    assert len(keys) == 100
    agent.stop()


@test
def unreadable_file_goes_to_failed_dir():
    d = h.tmpdir()
    spool = os.path.join(d, "spool")
    failed = os.path.join(d, "failed")
    os.makedirs(spool)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    as_root = os.geteuid() == 0
    if as_root:
        if not shutil.which("setpriv"):
            h.skip("running as root without setpriv to run agentd as an unprivileged user")
        # Permission bits do not stop root: agentd runs as nobody.
        old = h.AGENTD_CMD
        h.AGENTD_CMD = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups"] + old

        def restore():
            h.AGENTD_CMD = old
        h.on_cleanup("agentd command", restore)
    agent = Agent(d, h.config(d, broker.port, spool_input("plc", spool, "failed_dir = %s\n" % failed)))
    want = drop(spool, "ok.csv", ["a", "b"])
    drop(spool, "secret.csv", ["s"])
    os.chmod(os.path.join(spool, "secret.csv"), 0)
    if as_root:
        os.chmod(d, 0o755)
        for root, dirs, files in os.walk(d):
            for n in dirs + files:
                os.lchown(os.path.join(root, n), NOBODY, NOBODY)
        os.chown(d, NOBODY, NOBODY)
    agent.start()
    h.wait_until(lambda: os.path.exists(os.path.join(failed, "secret.csv.reason")), 30,
                 "secret.csv in failed_dir with its reason")
    with open(os.path.join(failed, "secret.csv.reason")) as f:
        reason = f.read()
    assert reason.startswith("cannot open: Permission denied"), reason
    assert os.path.exists(os.path.join(failed, "secret.csv"))
    assert not os.path.exists(os.path.join(spool, "secret.csv"))
    h.wait_until(lambda: want <= got_rows(lake, "plc"), 30, "the readable file's rows")
    st = agent.input("plc")
    assert "secret.csv: cannot open: Permission denied" in st["last_error"], st["last_error"]
    h.wait_until(lambda: "failed 1" in agent.input("plc")["state"], 10, "status counting the failed file")
    agent.stop()


h.main()
