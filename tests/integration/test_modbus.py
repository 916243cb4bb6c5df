"""test_modbus.py - agentd polls a real Modbus slave (tests/servers/
modbus_server.c on libmodbus) and the records reach the lake: every type and
byte order with scale and offset right; a refused range gives the good
values and a quality for the refused ones; slow answers, lost answers and
damaged frames are counted in status and their values shipped as null with
a quality; a server that goes away and comes back is polled again; RTU over
a pty pair made by socat; a device answering garbage is a clear error and
nothing accepted is lost. Every wait is on a condition with a deadline."""

import os
import shutil
import signal
import subprocess

import harness as h
from harness import Agent, Broker, Lake, test

SERVER = os.path.join(h.BUILD, "tests", "modbus_server")
SOCAT = shutil.which("socat")

# The map of tests/servers/modbus_server.c's fill_map() and what it reads as.
MAP = [
    ("u16", "holding", 0, "uint16", "abcd", "", 1234),
    ("i16", "holding", 1, "int16", "abcd", "", -1234),
    ("u32", "holding", 2, "uint32", "abcd", "", 0x12345678),
    ("i32", "holding", 4, "int32", "abcd", "", -123456),
    ("f_abcd", "holding", 6, "float32", "abcd", "", 230.5),
    ("f_cdab", "holding", 8, "float32", "cdab", "", 230.5),
    ("f_badc", "holding", 10, "float32", "badc", "", 230.5),
    ("f_dcba", "holding", 12, "float32", "dcba", "", 230.5),
    ("u64", "holding", 14, "uint64", "abcd", "", 0x0102030405060708),
    ("i64", "holding", 18, "int64", "abcd", "", -5),
    ("d_abcd", "holding", 22, "float64", "abcd", "", -1.5),
    ("d_cdab", "holding", 26, "float64", "cdab", "", 12345.678),
    ("model", "holding", 30, "string", "abcd", "count=3", "SDM630"),
    ("bit0", "holding", 33, "bit", "abcd", "bit=0", True),
    ("bit1", "holding", 33, "bit", "abcd", "bit=1", False),
    ("bit9", "holding", 33, "bit", "abcd", "bit=9", True),
    ("temp", "holding", 34, "int16", "abcd", "scale=0.1 offset=-40 unit=C", 190.5),
    ("u32_dcba", "holding", 35, "uint32", "dcba", "", 0x12345678),
    ("u32_badc", "holding", 37, "uint32", "badc", "", 0x12345678),
    ("coil0", "coil", 0, "auto", "abcd", "", True),
    ("coil1", "coil", 1, "auto", "abcd", "", False),
    ("coil3", "coil", 3, "bool", "abcd", "", True),
    ("di0", "discrete", 0, "auto", "abcd", "", False),
    ("di1", "discrete", 1, "auto", "abcd", "", True),
    ("voltage", "input", 0, "float32", "abcd", "unit=V", 230.5),
    ("current", "input", 6, "float32", "abcd", "unit=A", 5.25),
    ("power", "input", 12, "float32", "abcd", "unit=W", 1210.125),
    ("energy", "input", 342, "float32", "abcd", "unit=kWh scale=1000", 12345500.0),
]


def need_server():
    if not os.access(SERVER, os.X_OK):
        h.skip("the test server %s is not built (make tests)" % SERVER)


class Server:
    """modbus_server on a port (TCP) or a tty (RTU), its faults in a control file."""

    def __init__(self, d, tcp_port=None, tty=None, name="mbs"):
        self.d = d
        self.port = tcp_port
        self.tty = tty
        self.control = os.path.join(d, name + ".faults")
        self.log = os.path.join(d, name + ".log")
        self.proc = None
        h.write_file(self.control, "")
        h.show_log_on_failure(name, self.log)
        h.on_cleanup(name, self.stop)

    def start(self):
        args = [SERVER, "--control", self.control]
        args += ["--tcp", str(self.port)] if self.port else ["--rtu", self.tty]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", "modbus_server did not start: %r" % line
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def faults(self, text):
        tmp = self.control + ".new"
        h.write_file(tmp, text)
        os.rename(tmp, self.control)


def modbus_input(name, url, rows, extra=""):
    regs = "".join("register = name=%s function=%s address=%d type=%s order=%s %s\n" %
                   (n, f, a, t, o, x) for n, f, a, t, o, x, _ in rows)
    return ("[input %s]\ndriver = modbus\nurl = %s\nunit = 1\ninterval = 200ms\ntimeout = 300ms\n"
            "retries = 0\nretry_base = 100ms\nretry_max = 400ms\n%s%s\n" % (name, url, extra, regs))


def setup(d, inputs):
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    return broker, lake, agent


def recs(lake, stream, pred=None):
    return [r for r in lake.data_records(stream) if pred is None or pred(r["data"])]


def wait_rec(lake, stream, pred, what, timeout=30, since=0):
    """The first record of stream after the first `since` ones that pred accepts."""
    return h.wait_until(lambda: [r for r in recs(lake, stream)[since:] if pred(r["data"])],
                        timeout, what)[0]


def mark(lake, stream):
    return len(recs(lake, stream))


def device(agent, name):
    return agent.input(name)["device"]


@test
def every_type_and_order_reaches_the_lake():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port()).start()
    broker, lake, agent = setup(d, modbus_input("meter", "tcp://127.0.0.1:%d" % srv.port, MAP))
    r = wait_rec(lake, "meter", lambda x: "u16" in x, "a record of meter")
    data = r["data"]
    assert data["device"] == "meter", data
    for name, _, _, _, _, _, want in MAP:
        got = data[name]
        if isinstance(want, float):
            assert abs(got - want) < 1e-6 * max(1, abs(want)), (name, got, want)
        else:
            assert got == want and type(got) == type(want), (name, got, want)
    assert data["units"]["voltage"] == "V" and data["units"]["temp"] == "C", data
    assert "quality" not in data, data
    # Dedupe key: device + group + sample time; requests merged.
    assert r["key"].startswith("modbus:meter::"), r["key"]
    st = agent.input("meter")
    assert st["device"]["connected"] is True, st
    assert "polling 28 values in 5 requests" in st["state"], st["state"]
    # One record per poll, on the interval: more keep coming.
    n = len(recs(lake, "meter"))
    h.wait_until(lambda: len(recs(lake, "meter")) >= n + 3, 30, "more polls")
    assert len({x["key"] for x in recs(lake, "meter")}) == len(recs(lake, "meter"))


@test
def groups_have_records_and_intervals_of_their_own():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port()).start()
    rows = [("voltage", "input", 0, "float32", "abcd", "unit=V group=fast", 230.5),
            ("current", "input", 6, "float32", "abcd", "unit=A group=fast", 5.25),
            ("energy", "input", 342, "float32", "abcd", "unit=kWh group=slow interval=3s", 12345.5)]
    broker, lake, agent = setup(d, modbus_input("meter", "tcp://127.0.0.1:%d" % srv.port, rows))
    fast = wait_rec(lake, "meter", lambda x: x.get("group") == "fast", "a fast record")
    slow = wait_rec(lake, "meter", lambda x: x.get("group") == "slow", "a slow record")
    assert fast["data"] == {"device": "meter", "group": "fast", "voltage": 230.5, "current": 5.25,
                            "units": {"voltage": "V", "current": "A"}}, fast
    assert slow["data"] == {"device": "meter", "group": "slow", "energy": 12345.5,
                            "units": {"energy": "kWh"}}, slow
    assert fast["key"].startswith("modbus:meter:fast:") and slow["key"].startswith("modbus:meter:slow:")

    def counts():
        return (len(recs(lake, "meter", lambda x: x.get("group") == "fast")),
                len(recs(lake, "meter", lambda x: x.get("group") == "slow")))
    # Each group runs on deadlines of its own interval. However slow the
    # machine, the slow group (3 s) can have no more samples than 3 s
    # deadlines fit between the first and the last fast sample (plus the one
    # that fired late for a deadline before them): a bound from the
    # schedule, not from how fast this run happened to be.
    h.wait_until(lambda: counts()[0] >= 10, 30, "ten fast records")
    fast_ms = sorted(x["mono_ms"] for x in recs(lake, "meter", lambda x: x.get("group") == "fast"))
    slow_ms = [x["mono_ms"] for x in recs(lake, "meter", lambda x: x.get("group") == "slow")]
    a, b = fast_ms[0], fast_ms[-1]
    inside = [t for t in slow_ms if a <= t <= b]
    assert len(inside) <= (b - a) // 3000 + 2, (len(inside), a, b, slow_ms)
    assert len(fast_ms) >= 10


@test
def refused_range_ships_good_values_and_quality():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port())
    # Registers 102-103 are refused; 100, 101, 104, 105 still read.
    srv.faults("exception 3 102 103 2\n")
    srv.start()
    rows = [("r%d" % a, "holding", a, "uint16", "abcd", "", a * 10) for a in range(100, 106)]
    broker, lake, agent = setup(d, modbus_input("plc", "tcp://127.0.0.1:%d" % srv.port, rows,
                                                "refused_retry = 1000000\n"))
    r = wait_rec(lake, "plc", lambda x: x.get("r100") is not None, "a record with good values")
    data = r["data"]
    for a in (100, 101, 104, 105):
        assert data["r%d" % a] == a * 10, data
    for a in (102, 103):
        assert data["r%d" % a] is None and data["quality"]["r%d" % a] == "exception 2", data
    st = agent.input("plc")
    assert "refused (exception 2)" in st["state"] and "r102@102" in st["state"], st["state"]
    assert st["device"]["errors"]["exception"] >= 2, st
    # Remembered: later polls do not ask for the refused ones again.
    before = device(agent, "plc")["errors"]["exception"]
    n = len(recs(lake, "plc"))
    h.wait_until(lambda: len(recs(lake, "plc")) >= n + 5, 30, "five more polls")
    assert device(agent, "plc")["errors"]["exception"] == before
    last = recs(lake, "plc")[-1]["data"]
    assert last["r101"] == 1010 and last["quality"] == {"r102": "exception 2", "r103": "exception 2"}


@test
def refused_registers_are_tried_again_now_and_then():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port())
    srv.faults("exception 3 102 102 2\n")
    srv.start()
    rows = [("r%d" % a, "holding", a, "uint16", "abcd", "", a * 10) for a in range(100, 104)]
    broker, lake, agent = setup(d, modbus_input("plc", "tcp://127.0.0.1:%d" % srv.port, rows,
                                                "refused_retry = 3\n"))
    wait_rec(lake, "plc", lambda x: x.get("quality", {}).get("r102") == "exception 2",
             "r102 refused")
    srv.faults("")      # the device's map changed
    wait_rec(lake, "plc", lambda x: x.get("r102") == 1020 and "quality" not in x,
             "r102 read again", since=mark(lake, "plc"))
    h.wait_until(lambda: "refused" not in agent.input("plc")["state"], 10, "state without refused")


@test
def slow_lost_and_damaged_answers_are_counted_and_shipped_with_quality():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port()).start()
    rows = MAP[:2]
    broker, lake, agent = setup(d, modbus_input("m", "tcp://127.0.0.1:%d" % srv.port, rows))
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234, "a good record")
    # Slower than the timeout: timeouts, null with quality "timeout".
    srv.faults("delay 600\n")
    wait_rec(lake, "m", lambda x: x.get("quality", {}).get("u16") == "timeout", "quality timeout",
             since=mark(lake, "m"))
    h.wait_until(lambda: device(agent, "m")["errors"]["timeout"] >= 1, 10, "timeouts counted")
    # Slow but within the timeout: values arrive.
    srv.faults("delay 100\n")
    n = mark(lake, "m")
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234, "good again", since=n)
    # No answer at all.
    n = mark(lake, "m")
    srv.faults("drop\n")
    t0 = device(agent, "m")["errors"]["timeout"]
    h.wait_until(lambda: device(agent, "m")["errors"]["timeout"] > t0, 10, "more timeouts")
    h.wait_until(lambda: not device(agent, "m")["connected"], 10, "not connected")
    assert "no answer from unit 1" in device(agent, "m")["why"]
    wait_rec(lake, "m", lambda x: x.get("quality", {}).get("u16") == "timeout", "quality timeout",
             since=n)
    # A damaged answer (a byte count that lies).
    srv.faults("crc\n")
    wait_rec(lake, "m", lambda x: x.get("quality", {}).get("u16") == "protocol", "quality protocol",
             since=mark(lake, "m"))
    assert device(agent, "m")["errors"]["protocol"] >= 1
    srv.faults("")
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234 and "quality" not in x, "good once more",
             since=mark(lake, "m"))
    h.wait_until(lambda: device(agent, "m")["connected"], 10, "connected again")
    assert device(agent, "m")["requests"] > 5


@test
def server_goes_away_and_comes_back():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port()).start()
    broker, lake, agent = setup(d, modbus_input("m", "tcp://127.0.0.1:%d" % srv.port, MAP[:1]))
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234, "a good record")
    n = mark(lake, "m")
    srv.stop()
    h.wait_until(lambda: not device(agent, "m")["connected"], 15, "not connected")
    dev = device(agent, "m")
    assert "127.0.0.1:%d" % srv.port in dev["why"], dev
    assert dev["errors"]["connect"] + dev["errors"]["io"] >= 1, dev
    assert "PROBLEM" in agent.status_text()
    wait_rec(lake, "m", lambda x: x.get("quality", {}).get("u16") in ("connect", "io"),
             "a record with quality connect", since=n)
    n = mark(lake, "m")
    srv.start()
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234, "polling to resume", since=n)
    h.wait_until(lambda: device(agent, "m")["connected"], 10, "connected again")


def pty_pair(d):
    if not SOCAT:
        h.skip("socat is not installed")
    a, b = os.path.join(d, "ttyA"), os.path.join(d, "ttyB")
    log = open(os.path.join(d, "socat.log"), "wb")
    p = subprocess.Popen([SOCAT, "-d", "-d", "pty,raw,echo=0,link=" + a, "pty,raw,echo=0,link=" + b],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def stop():
        if p.poll() is None:
            p.terminate()
            p.wait(10)
        log.close()
    h.on_cleanup("socat", stop)
    h.wait_until(lambda: os.path.exists(a) and os.path.exists(b), 10, "the pty pair")
    return a, b


@test
def rtu_over_a_pty_pair():
    need_server()
    d = h.tmpdir()
    a, b = pty_pair(d)
    srv = Server(d, tty=b).start()
    rows = [x for x in MAP if x[1] == "input"] + MAP[:3]
    broker, lake, agent = setup(d, modbus_input("rtu", "rtu://" + a, rows, "baud = 19200\n"))
    r = wait_rec(lake, "rtu", lambda x: x.get("voltage") is not None, "an RTU record")["data"]
    for name, _, _, _, _, _, want in rows:
        assert abs(r[name] - want) < 1e-6 * max(1, abs(want)), (name, r[name], want)
    srv.faults("crc\n")
    wait_rec(lake, "rtu", lambda x: x.get("quality", {}).get("voltage") == "crc", "quality crc",
             since=mark(lake, "rtu"))
    h.wait_until(lambda: device(agent, "rtu")["errors"]["crc"] >= 1, 10, "crc errors counted")
    srv.faults("")
    wait_rec(lake, "rtu", lambda x: x.get("voltage") == 230.5 and "quality" not in x, "good again",
             since=mark(lake, "rtu"))


@test
def a_silent_device_on_a_shared_line_does_not_stop_the_other():
    need_server()
    d = h.tmpdir()
    a, b = pty_pair(d)
    Server(d, tty=b).start()     # answers unit 1 only
    good = modbus_input("good", "rtu://" + a, MAP[:2])
    silent = modbus_input("silent", "rtu://" + a, MAP[:2]).replace("unit = 1", "unit = 2")
    broker, lake, agent = setup(d, good + silent)
    h.wait_until(lambda: device(agent, "silent")["errors"]["timeout"] >= 2, 30, "unit 2 timing out")
    h.wait_until(lambda: not device(agent, "silent")["connected"], 10, "unit 2 not connected")
    n = len(recs(lake, "good", lambda x: x.get("u16") == 1234))
    h.wait_until(lambda: len(recs(lake, "good", lambda x: x.get("u16") == 1234)) >= n + 5, 30,
                 "unit 1 still polled")
    n = len(recs(lake, "good", lambda x: x.get("u16") == 1234))
    h.wait_until(lambda: len(recs(lake, "good", lambda x: x.get("u16") == 1234)) >= n + 5, 30,
                 "unit 1 polled more")
    # Five more good polls of unit 1 while unit 2 kept timing out.
    assert device(agent, "good")["connected"]
    assert device(agent, "silent")["errors"]["timeout"] > 2
    assert "no answer from unit 2" in device(agent, "silent")["why"]


@test
def rtu_over_tcp_through_a_converter():
    need_server()
    if not SOCAT:
        h.skip("socat is not installed")
    d = h.tmpdir()
    tty, port = os.path.join(d, "ttyC"), h.free_port()
    log = open(os.path.join(d, "socat.log"), "wb")
    p = subprocess.Popen([SOCAT, "pty,raw,echo=0,link=" + tty,
                          "tcp-listen:%d,bind=127.0.0.1,reuseaddr" % port],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def stop():
        if p.poll() is None:
            p.terminate()
            p.wait(10)
        log.close()
    h.on_cleanup("socat", stop)
    h.wait_until(lambda: os.path.exists(tty), 10, "the converter's pty")
    Server(d, tty=tty).start()
    rows = [x for x in MAP if x[1] == "input"]
    broker, lake, agent = setup(d, modbus_input("conv", "rtu+tcp://127.0.0.1:%d" % port, rows))
    r = wait_rec(lake, "conv", lambda x: x.get("voltage") is not None, "a record via the converter")
    assert r["data"]["voltage"] == 230.5 and r["data"]["energy"] == 12345500.0, r


@test
def garbage_is_a_clear_error_and_nothing_accepted_is_lost():
    need_server()
    d = h.tmpdir()
    srv = Server(d, tcp_port=h.free_port()).start()
    broker, lake, agent = setup(d, modbus_input("m", "tcp://127.0.0.1:%d" % srv.port, MAP[:1]))
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234, "a good record")
    srv.faults("garbage\n")
    wait_rec(lake, "m", lambda x: x.get("quality", {}).get("u16") == "protocol", "quality protocol",
             since=mark(lake, "m"))
    h.wait_until(lambda: device(agent, "m")["errors"]["protocol"] >= 1, 10, "protocol errors")
    st = agent.input("m")
    assert "answer makes no sense" in st["last_error"], st
    srv.faults("")
    wait_rec(lake, "m", lambda x: x.get("u16") == 1234 and x.get("quality") is None, "good again",
             since=mark(lake, "m"))
    # Everything the queue accepted reaches the lake, once per key.
    agent.wait_drained()
    accepted = agent.input("m")["records"]
    h.wait_until(lambda: len({r["key"] for r in recs(lake, "m")}) >= accepted, 30,
                 "every accepted record at the lake")
    lake.check_duplicates()


@test
def a_bad_register_map_is_refused_with_the_reason():
    d = h.tmpdir()
    conf = os.path.join(d, "bad.conf")
    bad = [
        ("register = name=x function=coil address=0 type=float32\n", "coils and discrete inputs"),
        ("register = name=x address=0 type=string\n", "count=N"),
        ("register = name=x address=0 scale=abc\n", "not a number"),
        ("register = name=x address=0\nregister = name=x address=1\n", "given twice"),
    ]
    for regs, why in bad:
        h.write_file(conf, h.config(d, 1, "[input m]\ndriver = modbus\nurl = tcp://127.0.0.1:1\n" + regs))
        p = subprocess.run(h.AGENTD_CMD + ["--check-config", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=20)
        out = p.stdout.decode()
        assert p.returncode != 0 and why in out, (regs, out)


if __name__ == "__main__":
    h.main()
