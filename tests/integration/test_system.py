"""test_system.py - the system driver in a running agentd: samples of a fake
proc tree reach the lake through the broker as structured records, with
exact CPU percentages once the counters moved, statvfs of a real directory,
network filesystems left out, and the input shown as a device in status."""

import os

import harness as h
from harness import Agent, Broker, Lake, test

NETDEV_HEAD = ("Inter-|   Receive                                                |  Transmit\n"
               " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
               "drop fifo colls carrier compressed\n")


def fake_proc(d):
    proc = os.path.join(d, "proc")
    for sub in ("net", "self/fd"):
        os.makedirs(os.path.join(proc, sub), exist_ok=True)
    h.write_file(os.path.join(proc, "stat"), "cpu  100 0 50 800 10 0 0 0 0 0\nintr 1\n")
    h.write_file(os.path.join(proc, "meminfo"),
                 "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\n"
                 "Cached: 300 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    h.write_file(os.path.join(proc, "net/dev"), NETDEV_HEAD +
                 "    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"
                 "  eth0: 1000 10 0 0 0 0 0 0 5000 20 0 0 0 0 0 0\n")
    h.write_file(os.path.join(proc, "diskstats"), "   8       0 sda 100 0 2000 0 50 0 1000 0 0 300 0\n")
    h.write_file(os.path.join(proc, "loadavg"), "0.50 0.25 0.10 1/100 1234\n")
    h.write_file(os.path.join(proc, "uptime"), "3600.50 7000.00\n")
    h.write_file(os.path.join(proc, "self/status"), "VmRSS:\t2048 kB\n")
    return proc


@test
def samples_reach_the_lake():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    proc = fake_proc(d)
    data = os.path.join(d, "data")
    os.makedirs(data)
    os.makedirs(os.path.join(d, "sys"))
    mounts = os.path.join(d, "mounts")
    # A real directory as a local filesystem, and one as NFS: statvfs of
    # the second would work here, but the driver must not even ask.
    h.write_file(mounts, "/dev/sda1 %s ext4 rw 0 0\nsrv:/x %s nfs4 rw 0 0\nproc /proc proc rw 0 0\n"
                 % (data, d))
    inputs = ("[input health]\ndriver = system\ninterval = 200ms\nproc_root = %s\nsys_root = %s/sys\n"
              "mounts = %s\n" % (proc, d, mounts))
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    lake.wait_count(1, timeout=30)
    first = lake.data_records("health")[0]
    rec = first["data"]
    assert first["key"].startswith("system:health:"), first
    assert rec["memory"]["total"] == 1024000 and rec["memory"]["available"] == 614400, rec
    assert list(rec["fs"].keys()) == [data], rec["fs"]
    fs = rec["fs"][data]
    assert fs["type"] == "ext4" and fs["total"] > 0 and fs["available"] <= fs["free"] <= fs["total"], fs
    assert list(rec["net"].keys()) == ["eth0"], rec["net"]          # lo left out
    assert rec["load"] == {"1m": 0.5, "5m": 0.25, "15m": 0.1}, rec["load"]
    assert rec["self"] == {"rss": 2097152, "fds": 0}, rec["self"]
    # No class/thermal under sys_root: said so.
    assert rec["temperature"] is None and rec["quality"]["temperature"] == "not available", rec
    # The counters move once: the sample after it has exact percentages.
    h.write_file(os.path.join(proc, "stat"), "cpu  110 0 70 860 15 0 5 0 0 0\nintr 1\n")

    def moved(r):
        return isinstance(r["data"].get("cpu"), dict)
    lake.wait_count(1, timeout=30, pred=moved)
    cpu = [r for r in lake.data_records("health") if moved(r)][0]["data"]["cpu"]
    assert cpu == {"user": 10, "nice": 0, "system": 20, "idle": 60, "iowait": 5, "irq": 0,
                   "softirq": 5, "steal": 0}, cpu
    # Later samples saw no tick: said so, never a made-up value.
    lake.wait_count(1, timeout=30,
                    pred=lambda r: r["data"].get("quality", {}).get("cpu") == "no time passed")
    inp = agent.input("health")
    text = agent.status_text()
    assert "sampling every 200 ms" in text and "device connected" in text, text
    assert inp, inp
    lake.check_duplicates(one_seq_per_id=True)
    agent.stop()


h.main()
