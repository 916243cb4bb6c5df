"""test_mqtt_sub.py - the mqtt_sub input in agentd against the real
mosquitto broker: QoS 1 and 2 streams reach the lake; agentd killed
(SIGKILL) between receipt and commit, at several points, and between commit
and acknowledgement (a relay of the test's own between agentd and the broker
stops passing agentd's bytes, so the PUBACKs after a commit never arrive)
loses nothing, and every duplicate is identifiable by key or
redelivery_of; over TLS through the bridge too. Publishers are written
here (MQTT 3.1.1 on a raw socket)."""

import os
import select
import socket
import struct
import threading

import harness as h
from harness import Agent, Broker, Lake, test

CLIENT = "it-gw-sens"


# ---------------------------------------------------------------- a publisher

def _str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _varint(n):
    out = b""
    while True:
        d = n & 0x7F
        n >>= 7
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


class Publisher:
    """A tiny MQTT 3.1.1 publisher: QoS 1 waits for PUBACK, QoS 2 completes
    PUBREC/PUBREL/PUBCOMP, so that a message it returns from is the broker's."""

    def __init__(self, port, cid="pub"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.mid = 0
        body = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _str(cid)
        self.s.sendall(_packet(0x10, body))
        t, b = self._read()
        assert t == 2 and b[1] == 0, "CONNACK %r" % (b,)
        h.on_cleanup("publisher", self.close)

    def _read(self):
        while True:
            if len(self.buf) >= 2:
                n, mul, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    n += (self.buf[i] & 0x7F) * mul
                    mul <<= 7
                    if not self.buf[i] & 0x80:
                        break
                    i += 1
                if i < len(self.buf) and len(self.buf) >= i + 1 + n:
                    t, body = self.buf[0] >> 4, self.buf[i + 1:i + 1 + n]
                    self.buf = self.buf[i + 1 + n:]
                    return t, body
            chunk = self.s.recv(4096)
            assert chunk, "broker closed the publisher's connection"
            self.buf += chunk

    def publish(self, topic, payload, qos=1):
        self.mid = self.mid % 65535 + 1
        body = _str(topic) + (struct.pack("!H", self.mid) if qos else b"") + payload.encode()
        self.s.sendall(_packet(0x30 | qos << 1, body))
        if qos == 1:
            t, _ = self._read()
            assert t == 4, "expected PUBACK, got type %d" % t
        elif qos == 2:
            t, _ = self._read()
            assert t == 5, "expected PUBREC, got type %d" % t
            self.s.sendall(_packet(0x62, struct.pack("!H", self.mid)))
            t, _ = self._read()
            assert t == 7, "expected PUBCOMP, got type %d" % t

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# ---------------------------------------------------------------- a relay

class Relay:
    """agentd -> relay -> broker. hold() makes it drop what agentd sends (its
    PUBACKs and PUBRECs never reach the broker) until release()."""

    def __init__(self, broker_port):
        self.broker_port = broker_port
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.holding = False
        self.dropped = 0
        self.connections = 0
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        h.on_cleanup("relay", self.close)

    def hold(self):
        self.holding = True

    def release(self):
        self.holding = False

    def _run(self):
        while not self._stop:
            r, _, _ = select.select([self.ls], [], [], 0.1)
            if not r:
                continue
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.broker_port))
            self.connections += 1
            self._pipe(a, b)

    def _pipe(self, a, b):
        try:
            while not self._stop:
                r, _, _ = select.select([a, b], [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is a:
                        if self.holding:
                            self.dropped += len(data)
                        else:
                            b.sendall(data)
                    else:
                        a.sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def close(self):
        self._stop = True
        self.t.join(5)
        self.ls.close()


# ---------------------------------------------------------------- helpers

def sub_input(port, extra=""):
    return ("[input sens]\ndriver = mqtt_sub\nurl = mqtt://127.0.0.1:%d\nclient_id = %s\n"
            "topic = filter=sensors/q1/# qos=1\ntopic = filter=sensors/q2/# qos=2\n"
            "parser = json\nreceive_maximum = 100\nreconnect_base = 200ms\n"
            "reconnect_max = 1s\n%s\n" % (port, CLIENT, extra))


BROKER_CONF = "max_inflight_messages 100\n"


def state(agent):
    return agent.input("sens")["state"]


def counter(agent, word):
    """A number of the input's state line: "..., 12 received, ..."."""
    text = state(agent)
    for part in text.replace(";", ",").split(","):
        part = part.strip().split()
        if len(part) >= 2 and part[1] == word:
            return int(part[0])
    raise AssertionError("no '%s' in %r" % (word, text))


def wait_connected(agent):
    h.wait_until(lambda: agent.input("sens")["device"]["connected"], 15,
                 "the input to be connected and subscribed")
    h.wait_until(lambda: "2 of 2 topics subscribed" in state(agent), 15, "both subscriptions")


def mqtt_records(lake):
    return [r for r in lake.data_records("sens")]


def by_id(lake):
    out = {}
    for r in mqtt_records(lake):
        out.setdefault(r["data"]["payload"]["id"], []).append(r)
    return out


def check_lake(lake, ids, qos2_ids=()):
    """Every id arrived; every id queued more than once (distinct seqs) is
    identifiable: all its records but one name that one's key in
    redelivery_of. QoS 2 ids are queued once. Returns (records, queued,
    redeliveries)."""
    def all_in():
        return set(ids) <= set(by_id(lake))
    try:
        h.wait_until(all_in, 30, "every published message at the lake", interval=0.1)
    except AssertionError:
        missing = set(ids) - set(by_id(lake))
        raise AssertionError("%d messages lost: %s" % (len(missing), sorted(missing)[:10]))
    lake.check_duplicates(one_seq_per_id=False)
    queued = redelivered = 0
    for i, recs in by_id(lake).items():
        seqs = {}
        for r in recs:
            seqs[r["seq"]] = r
        queued += len(seqs)
        originals = [r for r in seqs.values() if "redelivery_of" not in r["data"]]
        assert len(originals) == 1, "message %s queued as %d distinct messages: %r" % (
            i, len(originals), [r["key"] for r in seqs.values()])
        for r in seqs.values():
            if "redelivery_of" in r["data"]:
                redelivered += 1
                assert r["data"]["redelivery_of"] == originals[0]["key"], r
                assert r["key"].startswith(originals[0]["key"] + "/redelivered/"), r
                assert r["data"]["dup"] is True, r
        if i in qos2_ids:
            assert len(seqs) == 1, "QoS 2 message %s queued %d times" % (i, len(seqs))
    return len(mqtt_records(lake)), queued, redelivered


def pubacks_from_agent(broker):
    text = broker.log_text()
    return text.count("Received PUBACK from %s" % CLIENT) + \
        text.count("Received PUBREC from %s" % CLIENT)


# ---------------------------------------------------------------- the tests

@test
def qos1_and_qos2_reach_the_lake():
    d = h.tmpdir()
    broker = Broker(d, extra_conf=BROKER_CONF).start()
    lake = Lake(broker, "lake/#").start()
    agent = Agent(d, h.config(d, broker.port, sub_input(broker.port),
                              queue="commit_interval = 50ms")).start()
    wait_connected(agent)
    pub = Publisher(broker.port)
    ids1 = ["a1-%d" % i for i in range(100)]
    ids2 = ["a2-%d" % i for i in range(50)]
    for i in ids1:
        pub.publish("sensors/q1/t", '{"id":"%s","v":1.5}' % i, qos=1)
    for i in ids2:
        pub.publish("sensors/q2/t", '{"id":"%s","v":2}' % i, qos=2)
    pub.publish("sensors/q1/t", "not json", qos=1)
    n, queued, redelivered = check_lake(lake, ids1 + ids2, set(ids2))
    assert queued == 150 and redelivered == 0, (queued, redelivered)
    r = by_id(lake)["a2-7"][0]
    assert r["data"]["topic"] == "sensors/q2/t" and r["data"]["qos"] == 2, r
    assert r["data"]["payload"] == {"id": "a2-7", "v": 2}, r
    assert r["key"].startswith("mqtt/sens/"), r
    # Everything acknowledged, the bad payload in the DLQ (and acknowledged).
    h.wait_until(lambda: counter(agent, "acknowledged") == 201, 10, "every acknowledgement")
    assert counter(agent, "received") == 151
    dlq = agent.dlq()
    assert len(dlq) == 1 and "payload on topic sensors/q1/t" in dlq[0]["reason"], dlq
    print("   %d records at the lake, %d queued, 151 published (1 dead-lettered)" % (n, queued))
    agent.stop()


@test
def sigkill_between_receipt_and_commit_loses_nothing():
    """A long commit_interval keeps what agentd received uncommitted (and
    unacknowledged); agentd is killed, restarted, and the broker sends it
    all again. Three rounds, killed at a different point each time (with
    more held each time: the broker's in-flight window, 100, holds them
    all)."""
    d = h.tmpdir()
    broker = Broker(d, extra_conf=BROKER_CONF).start()
    lake = Lake(broker, "lake/#").start()
    slow = h.config(d, broker.port, sub_input(broker.port),
                    queue="commit_interval = 10s\ncommit_records = 100000")
    fast = h.config(d, broker.port, sub_input(broker.port), queue="commit_interval = 50ms")
    agent = Agent(d, slow).start()
    wait_connected(agent)
    pub = Publisher(broker.port)
    ids, ids2 = [], set()
    for rnd, n in enumerate((10, 25, 40)):
        before = counter(agent, "received")
        acks = pubacks_from_agent(broker)
        for k in range(n):
            i = "k%d-%d" % (rnd, k)
            q = 2 if k % 3 == 0 else 1
            pub.publish("sensors/q%d/x" % q, '{"id":"%s"}' % i, qos=q)
            ids.append(i)
            if q == 2:
                ids2.add(i)
        h.wait_until(lambda: counter(agent, "received") >= before + n, 15,
                     "agentd to receive round %d" % rnd)
        assert counter(agent, "awaiting") >= n, state(agent)
        assert pubacks_from_agent(broker) == acks, "acknowledged before its commit"
        agent.kill()
        agent.write_config(slow if rnd < 2 else fast)
        agent.start()
        wait_connected(agent)
    n, queued, redelivered = check_lake(lake, ids, ids2)
    h.wait_until(lambda: counter(agent, "awaiting") == 0, 10, "every acknowledgement sent")
    print("   %d published, killed 3 times before commit: %d records at the lake, %d queued, "
          "%d redeliveries" % (len(ids), n, queued, redelivered))
    agent.stop()


def kill_after_commit(protocol, rounds):
    d = h.tmpdir()
    broker = Broker(d, extra_conf=BROKER_CONF).start()
    lake = Lake(broker, "lake/#").start()
    relay = Relay(broker.port)
    agent = Agent(d, h.config(d, broker.port,
                              sub_input(relay.port, "protocol = %s\n" % protocol),
                              queue="commit_interval = 50ms")).start()
    wait_connected(agent)
    pub = Publisher(broker.port)
    ids, ids2 = [], set()
    for rnd in range(rounds):
        relay.hold()
        acked = counter(agent, "acknowledged")
        for k in range(30):
            i = "c%d-%d" % (rnd, k)
            q = 2 if k % 2 else 1
            pub.publish("sensors/q%d/y" % q, '{"id":"%s"}' % i, qos=q)
            ids.append(i)
            if q == 2:
                ids2.add(i)
        # Committed (at the lake) and "acknowledged" into the relay, which
        # drops the acknowledgements.
        h.wait_until(lambda: {"c%d-%d" % (rnd, k) for k in range(30)} <= set(by_id(lake)), 20,
                     "round %d committed and shipped" % rnd)
        h.wait_until(lambda: counter(agent, "acknowledged") >= acked + 30, 10,
                     "the acknowledgements sent into the relay")
        acks = pubacks_from_agent(broker)
        agent.kill()
        relay.release()
        agent.start()
        wait_connected(agent)
        # The broker sends the round again, every message with DUP: QoS 2
        # ones are acknowledged without a record, QoS 1 ones queued as
        # redeliveries.
        h.wait_until(lambda: counter(agent, "redeliveries") >= 30, 15,
                     "the round's 30 messages sent again")
        # Their acknowledgements through to the broker before the relay
        # holds again.
        h.wait_until(lambda: pubacks_from_agent(broker) >= acks + 30, 15,
                     "the broker to have the acknowledgements of the round")

    def redeliveries():
        return sum(1 for r in mqtt_records(lake) if "redelivery_of" in r["data"])
    want = 15 * rounds
    h.wait_until(lambda: redeliveries() >= want, 15, "the QoS 1 redeliveries at the lake")
    n, queued, redelivered = check_lake(lake, ids, ids2)
    h.wait_until(lambda: counter(agent, "awaiting") == 0, 10, "every acknowledgement sent")
    assert redelivered == want, "%d redeliveries recognised, expected %d" % (redelivered, want)
    assert relay.dropped > 0
    print("   %s: %d published, acknowledgements dropped and agentd killed %d times: %d records "
          "at the lake, %d queued, %d identified as redeliveries" % (
              protocol, len(ids), rounds, n, queued, redelivered))
    agent.stop()


@test
def sigkill_between_commit_and_acknowledgement_is_identifiable():
    """The relay drops agentd's bytes: the records commit, their PUBACKs and
    PUBRECs never arrive. After a SIGKILL the broker sends every message
    again, with DUP: QoS 1 copies are queued as redeliveries naming the
    original, QoS 2 ones not at all."""
    kill_after_commit("v5", 2)


@test
def the_same_with_mqtt_311():
    kill_after_commit("v311", 1)


@test
def mqtts_through_the_bridge():
    from https_lake import TestCA
    d = h.tmpdir()
    ca = TestCA(d)
    tls_port = h.free_port()
    broker = Broker(d, extra_conf=BROKER_CONF + "listener %d 127.0.0.1\ncafile %s\ncertfile %s\n"
                    "keyfile %s\n" % (tls_port, ca.ca, ca.server[0], ca.server[1])).start()
    h.wait_until(lambda: h.port_open(tls_port), 10, "the TLS listener")
    lake = Lake(broker, "lake/#").start()
    inp = sub_input(0).replace("mqtt://127.0.0.1:0", "mqtts://localhost:%d" % tls_port)
    agent = Agent(d, h.config(d, broker.port, inp + "ca_file = %s\n" % ca.ca,
                              queue="commit_interval = 50ms")).start()
    wait_connected(agent)
    pub = Publisher(broker.port)
    ids = ["t-%d" % i for i in range(40)]
    for k, i in enumerate(ids):
        pub.publish("sensors/q%d/z" % (1 + k % 2), '{"id":"%s"}' % i, qos=1 + k % 2)
    check_lake(lake, ids)
    h.wait_until(lambda: counter(agent, "acknowledged") >= 40, 10, "the acknowledgements")
    assert "mqtts://localhost:%d" % tls_port in agent.status_text() or \
        agent.input("sens")["device"]["connected"]
    agent.stop()


h.main()
