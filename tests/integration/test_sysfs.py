"""test_sysfs.py - the sysfs driver in agentd: sensors of a fake sysfs tree
sampled on an interval reach the lake as one record per sample, with their
units, a failed reading as null with its quality, and the device's state in
agentctl status."""

import os

import harness as h
from harness import Agent, Broker, Lake, test


def fake_tree(root):
    files = {
        "sys/class/hwmon/hwmon0/name": "cpu_thermal\n",
        "sys/class/hwmon/hwmon0/temp1_input": "48312\n",
        "sys/bus/iio/devices/iio:device0/name": "ads1015\n",
        "sys/bus/iio/devices/iio:device0/in_voltage0_raw": "1000\n",
        "sys/bus/iio/devices/iio:device0/in_voltage_scale": "3\n",
        "sys/bus/w1/devices/28-0316a2799aff/w1_slave":
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        "sys/bus/w1/devices/28-0316a279aaaa/w1_slave":
            "72 01 4b 46 7f ff 0e 10 57 : crc=58 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
    }
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        h.write_file(path, text)


@test
def samples_reach_the_lake():
    d = h.tmpdir()
    root = os.path.join(d, "root")
    fake_tree(root)
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    inputs = "[input board]\ndriver = sysfs\nroot = %s\ninterval = 200ms\nthermal = no\n" \
             "w1_conversion = 0\n" % root
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    lake.wait_count(3, pred=lambda r: r["stream"] == "board")
    want = {
        "cpu_thermal": {"temp1": 48.312},
        "ads1015": {"voltage0": 3},
        "28-0316a279aaaa": {"temp": None},
        "28-0316a2799aff": {"temp": 23.125},
        "units": {"cpu_thermal.temp1": "°C", "ads1015.voltage0": "V",
                  "28-0316a279aaaa.temp": "°C", "28-0316a2799aff.temp": "°C"},
        "quality": {"28-0316a279aaaa.temp": "crc"},
    }
    recs = lake.data_records("board")
    for r in recs:
        assert r["data"] == want, r["data"]
    # One record per sample: distinct keys and sample times.
    assert len({r["key"] for r in recs}) == len(recs), [r["key"] for r in recs]
    st = agent.input("board")
    assert st["state"] == "4 sensors on 4 devices", st["state"]
    assert st["device"]["connected"] is True, st["device"]
    assert st["device"]["errors"]["crc"] >= 3, st["device"]
    agent.stop()


h.main()
