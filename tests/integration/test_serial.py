"""test_serial.py - the serial driver in agentd, on pseudo-terminal pairs
made by socat (one end is the "device" the agent reads, the other the
feeder the test writes into, like a GPS receiver or a CSV sensor would):
NMEA and CSV lines reach the lake decoded; sentences with a bad checksum
are in the DLQ with the reason; unplugging (socat stopped: the links
vanish) shows the input not connected with why; replugging (socat again
at the same links) makes data flow again, and nothing written after the
replug is lost. Every wait is on a condition with a deadline."""

import functools
import os
import shutil
import signal
import subprocess

import harness as h
from harness import Agent, Broker, Lake, test

SOCAT = shutil.which("socat")


def nmea(body):
    """A sentence with its checksum, CR LF ended, as receivers send them."""
    return "$%s*%02X\r\n" % (body, functools.reduce(lambda a, c: a ^ ord(c), body, 0))


class Line:
    """A serial line: socat joins a pty at `device` (what the agent opens)
    to a pty at `feeder` (what the test writes into)."""

    def __init__(self, d, name):
        if not SOCAT:
            h.skip("socat is not installed (tools/install-deps dev)")
        self.device = os.path.join(d, name)
        self.feeder = os.path.join(d, name + ".feeder")
        self.log_path = os.path.join(d, name + ".socat.log")
        self.proc = None
        self.fd = None
        h.show_log_on_failure("socat " + name, self.log_path)
        h.on_cleanup("socat " + name, self.unplug)

    def plug(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SOCAT, "-d", "-d", "pty,raw,echo=0,link=" + self.device,
                 "pty,raw,echo=0,link=" + self.feeder],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        h.wait_until(lambda: os.path.exists(self.device) and os.path.exists(self.feeder), 10,
                     "socat's links")
        # Held open for the whole session: socat ends when its last user closes.
        self.fd = os.open(self.feeder, os.O_WRONLY | os.O_NOCTTY)
        return self

    def unplug(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None
        h.wait_until(lambda: not os.path.lexists(self.device), 10, "the device link to vanish")

    def write(self, text):
        data = text.encode()
        while data:
            data = data[os.write(self.fd, data):]


def serial_input(name, device, parser, extra=""):
    return ("[input %s]\ndriver = serial\ndevice = %s\nbaud = 9600\nparser = %s\n"
            "reopen_interval = 100ms\nreopen_max = 400ms\n%s\n" % (name, device, parser, extra))


def records(lake, stream, pred=lambda d: True):
    return [r for r in lake.data_records(stream) if pred(r["data"])]


def device(agent, name):
    return agent.input(name)["device"]


GGA = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
RMC = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
BAD = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n"


@test
def nmea_and_csv_reach_the_lake_and_bad_sentences_the_dlq():
    d = h.tmpdir()
    gps, sensor = Line(d, "gps").plug(), Line(d, "sensor").plug()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    inputs = serial_input("gps", gps.device, "nmea") + \
        serial_input("sensor", sensor.device, "csv", "header = time,temp,humidity\n")
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    h.wait_until(lambda: device(agent, "gps")["connected"] and device(agent, "sensor")["connected"],
                 15, "both devices connected")
    gps.write(GGA + BAD + RMC)
    sensor.write("time,temp,humidity\r\n12:00:00,21.5,40\r\n12:00:10,21.6,41\r\n")
    gga = h.wait_until(lambda: records(lake, "gps", lambda x: x["type"] == "GGA"), 30, "the GGA")[0]
    rmc = h.wait_until(lambda: records(lake, "gps", lambda x: x["type"] == "RMC"), 30, "the RMC")[0]
    g = gga["data"]
    assert g["talker"] == "GP" and g["fields"][:3] == ["123519", "4807.038", "N"], g
    assert g["lat"] == 48.1173 and abs(g["lon"] - 11.516666667) < 1e-8, g
    assert g["fix_quality"] == 1 and g["satellites"] == 8 and g["altitude_m"] == 545.4, g
    assert g["dgps_age_s"] is None, g
    r = rmc["data"]
    assert r["valid"] is True and r["speed_kn"] == 22.4 and r["date"] == "1994-03-23", r
    assert r["datetime"] == "1994-03-23T12:35:19Z" and r["magnetic_variation_deg"] == -3.1, r
    assert gga["key"].startswith("serial:gps:") and gga["key"] != rmc["key"], (gga, rmc)
    lake.wait_data([("sensor", {"time": "12:00:00", "temp": "21.5", "humidity": "40"}),
                    ("sensor", {"time": "12:00:10", "temp": "21.6", "humidity": "41"})])
    # The header line the device printed again is not a record.
    assert len(records(lake, "sensor")) == 2, records(lake, "sensor")
    dlq = h.wait_until(lambda: [e for e in agent.dlq() if e["origin"] == "input:gps"], 15,
                       "the bad sentence in the DLQ")
    assert len(dlq) == 1 and "NMEA checksum mismatch" in dlq[0]["reason"], dlq
    st = agent.input("gps")
    assert st["dlq"] == 1 and st["records"] == 2, st
    assert st["state"].startswith("reading %s at 9600 8N1, 3 lines" % gps.device), st["state"]
    rc, out, err = agent.ctl("dlq", "list")
    assert rc == 0 and "checksum mismatch" in out, (rc, out, err)
    agent.stop()


@test
def unplug_and_replug():
    d = h.tmpdir()
    gps = Line(d, "gps").plug()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent = Agent(d, h.config(d, broker.port, serial_input("gps", gps.device, "nmea"))).start()
    h.wait_until(lambda: device(agent, "gps")["connected"], 15, "connected")

    def fix(i):
        return nmea("GPGGA,1200%02d,4807.038,N,01131.000,E,1,08,0.9,%d.0,M,46.9,M,," % (i, 500 + i))

    def alts():
        return {r["data"]["altitude_m"] for r in records(lake, "gps")}
    gps.write(fix(0) + fix(1))
    h.wait_until(lambda: {500.0, 501.0} <= alts(), 30, "two fixes")

    gps.unplug()
    h.wait_until(lambda: not device(agent, "gps")["connected"], 15, "not connected")
    why = device(agent, "gps")["why"]
    assert gps.device in why and "unplugged?" in why, why
    assert "PROBLEM" in agent.status_text()
    assert "waiting for %s" % gps.device in agent.input("gps")["state"]
    h.wait_until(lambda: device(agent, "gps")["errors"]["connect"] >= 1, 15,
                 "failed attempts to open it counted")
    assert "is gone (unplugged?)" in device(agent, "gps")["why"]

    # Replugged: what the device sends from now on reaches the lake, what
    # it sends before the agent has it open too (the terminal keeps it).
    gps.plug()
    gps.write("".join(fix(i) for i in range(2, 6)))
    h.wait_until(lambda: device(agent, "gps")["connected"], 15, "connected again")
    gps.write("".join(fix(i) for i in range(6, 10)))
    h.wait_until(lambda: {500.0 + i for i in range(10)} <= alts(), 30, "every fix after the replug")
    recs = records(lake, "gps")
    assert len({r["key"] for r in recs}) == len(recs) == 10, [r["key"] for r in recs]
    lake.check_duplicates()
    agent.stop()


@test
def a_device_not_there_at_start_is_waited_for():
    d = h.tmpdir()
    path = os.path.join(d, "gps")
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    agent = Agent(d, h.config(d, broker.port, serial_input("gps", path, "raw"))).start()
    h.wait_until(lambda: device(agent, "gps")["errors"]["connect"] >= 1, 15, "a failed open")
    dev = device(agent, "gps")
    assert not dev["connected"] and "%s does not exist" % path in dev["why"], dev
    gps = Line(d, "gps").plug()
    h.wait_until(lambda: device(agent, "gps")["connected"], 15, "connected")
    gps.write("hello\r\n")
    lake.wait_data([("gps", "hello")])
    agent.stop()


@test
def a_bad_speed_is_refused_with_the_reason():
    d = h.tmpdir()
    conf = os.path.join(d, "bad.conf")
    h.write_file(conf, h.config(d, 1, "[input gps]\ndriver = serial\ndevice = /dev/ttyUSB0\n"
                                "baud = 9601\n"))
    p = subprocess.run(h.AGENTD_CMD + ["--check-config", conf], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=20)
    out = p.stdout.decode()
    assert p.returncode != 0 and "9601 is not a standard speed" in out, out


if __name__ == "__main__":
    h.main()
