"""test_socket.py - the udp and unix drivers in agentd: JSON and line
protocol datagrams sent to a loopback port, lines written to a socket file
as a stream and as datagrams, all reach the lake; garbage is in the DLQ
with its reason; agentctl status shows each input's counts and where it
listens; the socket file is made with its mode and removed at stop."""

import os
import socket
import stat

import harness as h
from harness import Agent, Broker, Lake, test


def send_udp(port, *datagrams):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))
    finally:
        s.close()


@test
def udp_json_and_influx_reach_the_lake():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    pj, pi = h.free_port(), h.free_port()
    inputs = ("[input uj]\ndriver = udp\nlisten = 127.0.0.1:%d\nparser = json\n\n"
              "[input ui]\ndriver = udp\nlisten = 127.0.0.1:%d\nparser = influx\n" % (pj, pi))
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    send_udp(pj, b'{"id":1}', b'{"id":2}\n{"id":3}\n', b"not json", b'"\xff"')
    send_udp(pi, b"cpu,host=gw1 usage=0.5,n=3i,ok=true,msg=\"x y\" 1465839830100400200\n"
                 b"mem free=7u\n", b"cpu usage=oops")
    lake.wait_ids({1, 2, 3}, stream="uj")
    lake.wait_data([
        ("ui", {"measurement": "cpu", "tags": {"host": "gw1"},
                "fields": {"usage": 0.5, "n": 3, "ok": True, "msg": "x y"},
                "time": 1465839830100400200}),
        ("ui", {"measurement": "mem", "tags": {}, "fields": {"free": 7}}),
    ])
    keys = [r["key"] for r in lake.data_records("uj")]
    assert len(set(keys)) == len(keys), keys

    def dlq_of(name):
        return [e for e in agent.dlq() if e["origin"] == "input:" + name]
    h.wait_until(lambda: len(dlq_of("uj")) == 2 and len(dlq_of("ui")) == 1, 15, "3 DLQ entries")
    reasons = [e["reason"] for e in dlq_of("uj")]
    assert "invalid JSON" in reasons[0] and "at byte" in reasons[0], reasons
    assert "UTF-8" in reasons[1], reasons
    assert "field 'usage': bad value 'oops' at byte 10" in dlq_of("ui")[0]["reason"], dlq_of("ui")

    st = agent.input("uj")
    assert st["driver"] == "udp", st
    assert st["records"] == 3 and st["dlq"] == 2, st
    assert st["state"].startswith("listening on 127.0.0.1:%d: 4 datagrams" % pj), st["state"]
    st = agent.input("ui")
    assert st["records"] == 2 and st["dlq"] == 1, st
    text = agent.status_text()
    assert "uj" in text and "udp" in text and "listening on 127.0.0.1:%d" % pj in text, text
    agent.stop()


@test
def unix_stream_and_dgram_reach_the_lake():
    d = h.tmpdir()
    broker = Broker(d).start()
    lake = Lake(broker, "lake/#").start()
    sp, dp = os.path.join(d, "stream.sock"), os.path.join(d, "dgram.sock")
    # A stale socket file from an earlier run is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sp)
    stale.close()
    inputs = ("[input us]\ndriver = unix\npath = %s\nparser = json\nmode = 0600\n\n"
              "[input ud]\ndriver = unix\npath = %s\ntype = dgram\nparser = json\n" % (sp, dp))
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    assert stat.S_ISSOCK(os.stat(sp).st_mode)
    assert stat.S_IMODE(os.stat(sp).st_mode) == 0o600, oct(os.stat(sp).st_mode)
    assert stat.S_IMODE(os.stat(dp).st_mode) == 0o660, oct(os.stat(dp).st_mode)

    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sp)
    c.sendall(b'{"id":10}\n{"id"')
    c.sendall(b':11}\n{broken\n{"id":12}')
    h.wait_until(lambda: agent.input("us")["state"].endswith("1 connection, 0 refused over "
                                                             "max_connections"),
                 15, "the connection in status")
    c.close()
    g = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    g.sendto(b'{"id":20}\n{"id":21}', dp)
    g.sendto(b"", dp)
    g.close()
    lake.wait_ids({10, 11, 12}, stream="us")
    lake.wait_ids({20, 21}, stream="ud")

    def dlq_of(name):
        return [e for e in agent.dlq() if e["origin"] == "input:" + name]
    h.wait_until(lambda: len(dlq_of("us")) == 1 and len(dlq_of("ud")) == 1, 15, "2 DLQ entries")
    assert dlq_of("ud")[0]["reason"] == "empty datagram", dlq_of("ud")
    rc, out, err = agent.ctl("dlq", "list")
    assert rc == 0 and "empty datagram" in out, (rc, out, err)
    st = agent.input("us")
    assert st["records"] == 3 and st["dlq"] == 1, st
    assert "0 connections" in st["state"], st["state"]
    st = agent.input("ud")
    assert st["records"] == 2 and st["dlq"] == 1, st
    assert st["state"] == "listening on %s (dgram): 2 datagrams" % dp, st["state"]
    agent.stop()
    assert not os.path.exists(sp) and not os.path.exists(dp)


@test
def a_regular_file_is_not_taken_over():
    d = h.tmpdir()
    broker = Broker(d).start()
    p = os.path.join(d, "data.txt")
    h.write_file(p, "precious\n")
    inputs = "[input us]\ndriver = unix\npath = %s\n" % p
    agent = Agent(d, h.config(d, broker.port, inputs)).start()
    st = agent.input("us")
    assert st["state"] == "not listening: %s exists and is not a socket: refusing to replace it" \
        % p, st["state"]
    assert "PROBLEM: input us" in agent.status_text()
    with open(p) as f:
        assert f.read() == "precious\n"
    agent.stop()


h.main()
