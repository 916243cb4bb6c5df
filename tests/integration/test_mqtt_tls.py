"""test_mqtt_tls.py - the mqtt output over TLS (mqtts://) against mosquitto's
TLS listeners on loopback, with a test CA made by the openssl command:
delivery, mutual TLS enforced (no client certificate: refused, shown in
status), and certificate problems (unknown CA, expired, wrong host) and a
silent server (handshake timeout) each reported with their own status."""

import glob
import os
import socket
import time

import harness as h
from harness import Agent, Broker, Lake, SensorWriter, test
from https_lake import TestCA

AGENT = "tls-gw"


def tls_listener(port, ca, cert, require_cert=False):
    text = "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n" % (
        port, ca.ca, cert[0], cert[1])
    if require_cert:
        text += "require_certificate true\n"
    return text


def start_broker(d, listeners):
    """listeners: a list of (port, conf text). The broker's own plain
    listener is for the lake."""
    b = Broker(d, extra_conf="".join(text for _, text in listeners)).start()
    for port, _ in listeners:
        h.wait_until(lambda: h.port_open(port), 10, "mosquitto's TLS listener on %d" % port)
    return b


def start_agent(d, outputs):
    """outputs: name -> text of its keys (type = mqtt added)."""
    path = os.path.join(d, "sensors.log")
    writer = SensorWriter(path, prefix="t")
    text = "[agent]\nid = %s\nstate_dir = %s/state\ntrust_clock = true\n\n%s\n" % (
        AGENT, d, h.tail_input("sensors", path))
    for name, keys in outputs.items():
        text += ("\n[output %s]\ntype = mqtt\ntopic = lake/{output}/{stream}\nlinger = 50ms\n"
                 "retry_base = 200ms\nretry_max = 1s\nreconnect_base = 200ms\n"
                 "reconnect_max = 1s\nconnect_timeout = 2s\n%s\n" % (name, keys))
    agent = Agent(d, text).start()
    return agent, writer


def outputs_by_name(agent):
    return {o["name"]: o for o in agent.status()["outputs"]}


def wait_whys(agent, want, timeout=20):
    """Every output in want disconnected with a why starting with want[name]."""
    def all_refused():
        outs = outputs_by_name(agent)
        return all(not outs[n]["connected"] and outs[n]["why"].startswith(w)
                   for n, w in want.items()) and outs
    try:
        return h.wait_until(all_refused, timeout, "every output to report its TLS problem")
    except AssertionError:
        raise AssertionError("status: %r" % [(o["name"], o["connected"], o["why"])
                                             for o in agent.status()["outputs"]])


def one_tls_output():
    """A broker with one TLS listener, the lake, and an agent with one mqtts
    output "lake" to it."""
    d = h.tmpdir()
    ca = TestCA(d)
    port = h.free_port()
    broker = start_broker(d, [(port, tls_listener(port, ca, ca.server))])
    lake = Lake(broker, "lake/#").start()
    agent, writer = start_agent(d, {"lake": "url = mqtts://localhost:%d\nca_file = %s\n" % (
        port, ca.ca)})
    return port, broker, lake, agent, writer


@test
def delivery_over_tls():
    port, broker, lake, agent, writer = one_tls_output()
    writer.write(50)
    lake.wait_ids(writer.ids)
    o = agent.output("lake")
    assert o["connected"], o
    assert "mqtts://localhost:%d" % port in agent.status_text(), agent.status_text()
    # The connection stays up and carries more.
    writer.write(30)
    lake.wait_ids(writer.ids)
    assert not lake.check_duplicates(), "records delivered twice"
    assert "New client connected" in broker.log_text(), broker.log_text()
    # The broker restarts: the output notices, reconnects through a new
    # handshake and delivers what was written meanwhile.
    lake.stop()
    broker.stop()
    h.wait_until(lambda: not agent.output("lake")["connected"], 15, "the output to see the loss")
    writer.write(40)
    broker.start()
    h.wait_until(lambda: h.port_open(port), 10, "the TLS listener again")
    lake.start()
    lake.wait_ids(writer.ids)
    assert agent.output("lake")["connected"]
    agent.stop()


@test
def a_killed_agent_leaves_no_private_directory_behind():
    """The bridge's Unix socket lives in /tmp/agentd-tls-PID-XXXXXX. After a
    SIGKILL the directory stays; the next agentd removes it."""
    port, broker, lake, agent, writer = one_tls_output()
    writer.write(20)
    lake.wait_ids(writer.ids)
    pid = agent.proc.pid
    left = glob.glob("/tmp/agentd-tls-%d-*" % pid)
    assert len(left) == 1 and os.path.isdir(left[0]), left
    agent.kill()
    assert os.path.isdir(left[0]), "SIGKILL cannot clean up; the next start must"
    agent.start()
    writer.write(20)
    lake.wait_ids(writer.ids)
    assert not os.path.exists(left[0]), left
    assert "removed %s, left by a stopped agentd" % left[0] in agent.log_text()
    assert len(glob.glob("/tmp/agentd-tls-%d-*" % agent.proc.pid)) == 1
    agent.stop()
    assert glob.glob("/tmp/agentd-tls-%d-*" % pid) == []


@test
def large_batches_over_tls():
    """Batches far larger than a TLS record and the bridge's buffers."""
    d = h.tmpdir()
    ca = TestCA(d)
    port = h.free_port()
    broker = start_broker(d, [(port, tls_listener(port, ca, ca.server))])
    lake = Lake(broker, "lake/#").start()
    path = os.path.join(d, "big.log")
    writer = SensorWriter(path, prefix="b", pad=2000, random_pad=True, seed=7)
    text = ("[agent]\nid = %s\nstate_dir = %s/state\ntrust_clock = true\n\n%s\n"
            "[output lake]\ntype = mqtt\nurl = mqtts://localhost:%d\nca_file = %s\n"
            "topic = lake/{stream}\nlinger = 200ms\nreconnect_base = 200ms\n" % (
                AGENT, d, h.tail_input("big", path), port, ca.ca))
    agent = Agent(d, text).start()
    writer.write(3000)
    lake.wait_ids(writer.ids, timeout=60)
    assert not lake.check_duplicates(), "records delivered twice"
    sizes = [len(b["records"]) for b in lake.batches]
    assert max(sizes) > 50, sizes
    agent.stop()


@test
def mutual_tls_is_enforced():
    d = h.tmpdir()
    ca = TestCA(d)
    port = h.free_port()
    broker = start_broker(d, [(port, tls_listener(port, ca, ca.server, require_cert=True))])
    lake = Lake(broker, "lake/#").start()
    client = "client_cert = %s\nclient_key = %s\n" % ca.client
    agent, writer = start_agent(d, {
        "mtls": "url = mqtts://localhost:%d\nca_file = %s\n%s" % (port, ca.ca, client),
        "nocert": "url = mqtts://localhost:%d\nca_file = %s\n" % (port, ca.ca),
    })
    writer.write(20)
    lake.wait_ids(writer.ids)
    outs = wait_whys(agent, {"nocert": "TLS: localhost:%d refused the handshake" % port})
    assert "requires a client certificate" in outs["nocert"]["why"], outs["nocert"]
    assert outs["mtls"]["connected"], outs["mtls"]
    assert "output nocert not connected" in agent.status_text()
    assert outs["nocert"]["backlog_records"] == 20, outs["nocert"]
    assert agent.dlq() == []
    # The client certificate's end date, as openssl reads it, in status.
    end = ca.not_after(ca.client[0])
    cert = outs["mtls"]["client_cert"]
    assert cert["path"] == ca.client[0] and cert["error"] == "", cert
    assert cert["not_after_wall_ms"] == end * 1000, (cert, end)
    assert "client_cert" not in outs["nocert"], outs["nocert"]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    text = agent.status_text()
    assert "client certificate %s valid until %s" % (ca.client[0], date) in text, text
    agent.stop()
    # agentctl reads it from the config file when agentd is down.
    rc, out, _ = agent.ctl("status")
    assert rc == 3 and "client certificate %s valid until %s" % (ca.client[0], date) in out, out


@test
def certificate_problems_have_clear_status():
    d = h.tmpdir()
    ca = TestCA(d)
    good, expired, wrong, future = h.free_port(), h.free_port(), h.free_port(), h.free_port()
    h.write_file(os.path.join(d, "empty"), "")
    # A server that accepts TCP connections and never says anything.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    h.on_cleanup("silent server", silent.close)
    silent_port = silent.getsockname()[1]
    start_broker(d, [(good, tls_listener(good, ca, ca.server)),
                     (expired, tls_listener(expired, ca, ca.expired)),
                     (wrong, tls_listener(wrong, ca, ca.wrong_host)),
                     (future, tls_listener(future, ca, ca.future))])
    agent, writer = start_agent(d, {
        "unknownca": "url = mqtts://localhost:%d\nca_file = %s\n" % (good, ca.other_ca),
        "expired": "url = mqtts://localhost:%d\nca_file = %s\n" % (expired, ca.ca),
        "wronghost": "url = mqtts://localhost:%d\nca_file = %s\n" % (wrong, ca.ca),
        "future": "url = mqtts://localhost:%d\nca_file = %s\n" % (future, ca.ca),
        "silent": "url = mqtts://127.0.0.1:%d\nca_file = %s\ntls_server_name = localhost\n" % (
                      silent_port, ca.ca),
    })
    writer.write(5)
    want = {
        "unknownca": "TLS: server certificate not trusted (unknown CA; check ca_file)",
        "expired": "TLS: certificate of localhost has expired",
        "wronghost": "TLS: certificate does not match host localhost",
        "future": "TLS: certificate of localhost is not yet valid",
        "silent": "TLS: no handshake with 127.0.0.1:%d within 2 s" % silent_port,
    }
    outs = wait_whys(agent, want)
    assert all(o["backlog_records"] == 5 for o in outs.values()), outs
    assert agent.dlq() == [], "TLS problems must not dead-letter records"
    text = agent.status_text()
    for n in want:
        assert "output %s not connected" % n in text, text
    log = agent.log_text()
    assert "unknown CA" in log and "has expired" in log and "does not match host" in log, log
    assert "is not yet valid" in log, log
    agent.stop()


@test
def client_certificate_problems_in_status():
    """An expired or not-yet-valid client certificate is a PROBLEM line in
    status, even while the server (which asks for none) lets the agent in."""
    d = h.tmpdir()
    ca = TestCA(d)
    port = h.free_port()
    broker = start_broker(d, [(port, tls_listener(port, ca, ca.server))])
    lake = Lake(broker, "lake/#").start()
    agent, writer = start_agent(d, {
        "old": "url = mqtts://localhost:%d\nca_file = %s\nclient_cert = %s\nclient_key = %s\n"
               % ((port, ca.ca) + ca.expired),
        "early": "url = mqtts://localhost:%d\nca_file = %s\nclient_cert = %s\nclient_key = %s\n"
                 % ((port, ca.ca) + ca.future),
    })
    writer.write(10)
    lake.wait_ids(writer.ids)
    text = agent.status_text()
    assert "PROBLEM: output old: client certificate %s expired on" % ca.expired[0] in text, text
    assert ("PROBLEM: output early: client certificate %s is not valid until 2035-01-01 00:00 UTC"
            % ca.future[0]) in text, text
    assert "NOT YET VALID: valid from 2035-01-01 00:00 UTC" in text, text
    assert not agent.status()["health"]["ok"]
    assert "client_cert %s expired on" % ca.expired[0] in agent.log_text()
    agent.stop()


@test
def tls_settings_are_checked_at_start():
    d = h.tmpdir()
    ca = TestCA(d)
    cases = [
        ("url = mqtts://127.0.0.1:8883\nca_file = %s\n" % ca.ca, "set tls_server_name"),
        ("url = mqtt://127.0.0.1:1883\nca_file = %s\n" % ca.ca, "applies to mqtts:// urls only"),
        ("url = mqtts://localhost:8883\nclient_cert = %s\n" % ca.client[0],
         "client_cert needs client_key"),
    ]
    for i, (keys, words) in enumerate(cases):
        sub = os.path.join(d, "c%d" % i)
        os.makedirs(sub)
        conf = os.path.join(sub, "agentd.conf")
        h.write_file(conf, "[agent]\nid = x\nstate_dir = %s/state\n\n%s\n[output lake]\n"
                     "type = mqtt\n%s" % (sub, h.tail_input("s", os.path.join(sub, "in.log")),
                                           keys))
        p = h.subprocess.run(h.AGENTD_CMD + ["-c", conf], stdout=h.subprocess.PIPE,
                             stderr=h.subprocess.STDOUT, timeout=20,
                             stdin=h.subprocess.DEVNULL)
        out = p.stdout.decode("utf-8", "replace")
        assert p.returncode != 0, (keys, out)
        assert words in out, (keys, words, out)


if __name__ == "__main__":
    h.main()
