"""test_https.py - the https output against a real TLS server and a test
receiver: delivery through nginx with mutual TLS and a bearer token, every
status the receiver can script (500, 429 and 503 with Retry-After, 413, 400,
slow answers, dropped connections) without loss and with the right DLQ
contents, gzip and plain bodies with basic authentication, and certificate
problems (unknown CA, expired, wrong host, no client certificate) refused
with a clear status."""

import email.utils
import os
import subprocess
import time

import harness as h
from harness import Agent, SensorWriter, test
from https_lake import Nginx, Receiver, TestCA

AGENT = "it-gw"


def config(d, inputs, outputs):
    """outputs: name -> text of its keys (type = https is added)."""
    text = "[agent]\nid = %s\nstate_dir = %s/state\ntrust_clock = true\n\n%s\n" % (
        AGENT, d, inputs)
    for name, keys in outputs.items():
        text += ("\n[output %s]\ntype = https\nlinger = 50ms\nretry_base = 200ms\n"
                 "retry_max = 1s\n%s\n" % (name, keys))
    return text


def start(d, outputs, stream="sensors"):
    path = os.path.join(d, "sensors.log")
    writer = SensorWriter(path, prefix="s")
    inputs = h.tail_input("sensors", path, extra="stream = %s\n" % stream)
    agent = Agent(d, config(d, inputs, outputs)).start()
    return agent, writer


def check_batch_headers(req, output="lake"):
    """The headers promised in docs/wire-format.md, against the body."""
    hd = req.headers
    recs = req.records
    assert req.error is None, req.error
    assert recs, "empty body"
    first, last = recs[0]["seq"], recs[-1]["seq"]
    want = h.batch_id(AGENT, output, first, last)
    assert hd.get("idempotency-key") == want, (hd.get("idempotency-key"), want)
    assert hd.get("x-batch-id") == want, hd
    assert hd.get("x-seq-first") == str(first) and hd.get("x-seq-last") == str(last), hd
    assert hd.get("x-record-count") == str(len(recs)), (hd.get("x-record-count"), len(recs))
    assert hd.get("x-agent-id") == AGENT, hd
    assert hd.get("x-stream") == recs[0]["stream"], hd
    assert hd.get("content-type") == "application/x-ndjson", hd
    assert [r["seq"] for r in recs] == sorted(r["seq"] for r in recs)


def retried(rcv, failed):
    """The first 2xx request with the same Idempotency-Key as failed."""
    for r in rcv.all():
        if r is not failed and r.key == failed.key and r.ok():
            return r
    return None


def no_duplicates(rcv):
    seqs = [rec["seq"] for r in rcv.delivered() for rec in r.records]
    assert len(seqs) == len(set(seqs)), "records delivered twice"


@test
def mutual_tls_delivery_with_headers():
    d = h.tmpdir()
    ca = TestCA(d)
    rcv = Receiver(d).start()
    nginx = Nginx(d, ca, rcv.port, {"good": ca.server}).start()
    token = "tok-%d-secret" % os.getpid()
    h.write_file(os.path.join(d, "token"), token + "\n")
    agent, writer = start(d, {"lake": """url = %s
ca_file = %s
client_cert = %s
client_key = %s
token_file = %s/token
headers = "X-Tenant: plant-7; X-Env: test #1"
batch_max_records = 40
""" % (nginx.url("good"), ca.ca, ca.client[0], ca.client[1], d)})
    writer.write(150)
    time.sleep(0.2)
    writer.write(150)
    rcv.wait_ids(writer.ids)
    no_duplicates(rcv)
    reqs = rcv.delivered()
    assert len(reqs) >= 300 // 40, len(reqs)
    for r in reqs:
        check_batch_headers(r)
        assert r.headers.get("content-encoding") == "zstd", r.headers
        assert r.headers.get("authorization") == "Bearer " + token, r.headers
        assert r.headers.get("x-tenant") == "plant-7", r.headers
        assert r.headers.get("x-env") == "test #1", r.headers
        assert r.path == "/ingest" and r.method == "POST"
        assert len(r.records) <= 40
    o = agent.output("lake")
    assert o["connected"] and o["endpoint"] == nginx.url("good") + " POST zstd", o
    agent.wait_drained()
    agent.stop()
    assert token not in agent.log_text(), "the token appears in the agent's log"


@test
def server_errors_and_refused_credentials_are_retried_with_the_same_key():
    d = h.tmpdir()
    rcv = Receiver(d).start()
    rcv.script = [("status", 500, "database on fire\n"), ("status", 503, "maintenance\n"),
                  ("status", 401, "token expired\n")]
    agent, writer = start(d, {"lake": "url = %s\n" % rcv.url()})
    writer.write(50)
    rcv.wait_ids(writer.ids)
    reqs = rcv.all()
    assert [r.status for r in reqs[:4]] == [500, 503, 401, 200], [r.status for r in reqs]
    assert reqs[0].key == reqs[1].key == reqs[2].key == reqs[3].key, \
        "a retry must carry the same Idempotency-Key"
    assert retried(rcv, reqs[0]).records == reqs[0].records
    no_duplicates(rcv)
    log = agent.log_text()
    assert "HTTP 503: maintenance" in log
    assert "HTTP 401: not authorised (check token_file" in log, log[-2000:]
    assert agent.dlq() == []
    agent.stop()


@test
def retry_after_is_honoured():
    d = h.tmpdir()
    rcv = Receiver(d).start()

    def in_3s():
        return email.utils.formatdate(time.time() + 3, usegmt=True)
    rcv.script = [("status", 429, "slow down\n", {"Retry-After": "2"}),
                  ("status", 503, "busy\n", {"Retry-After": in_3s})]
    agent, writer = start(d, {"lake": "url = %s\n" % rcv.url()})
    writer.write(10)
    rcv.wait_ids(writer.ids, timeout=20)
    reqs = rcv.all()
    assert [r.status for r in reqs[:3]] == [429, 503, 200], [r.status for r in reqs]
    assert reqs[0].key == reqs[1].key == reqs[2].key
    # retry_max is 1s: only Retry-After explains these waits. The HTTP
    # date has whole seconds, so "3 s from now" is at least 2 s.
    assert reqs[1].t - reqs[0].t >= 1.9, reqs[1].t - reqs[0].t
    assert reqs[2].t - reqs[1].t >= 1.9, reqs[2].t - reqs[1].t
    agent.stop()


@test
def too_large_batches_are_split_and_a_too_large_record_dead_lettered():
    d = h.tmpdir()
    rcv = Receiver(d).start()
    rcv.max_records = 7
    rcv.max_line = 3000
    agent, writer = start(d, {"lake": "url = %s\nbatch_max_records = 40\n" % rcv.url()})
    writer.write(30)
    with open(writer.path, "a") as f:
        f.write('{"id":"big","pad":"%s"}\n' % ("y" * 5000))
    writer.write(30)
    rcv.wait_ids(writer.ids)
    h.wait_until(lambda: agent.dlq(), 10, "the big record in the DLQ")
    dl = agent.dlq()
    assert len(dl) == 1, dl
    assert "HTTP 413" in dl[0]["reason"] and "record too large" in dl[0]["reason"], dl
    rc, out, err = agent.ctl("dlq", "show", str(dl[0]["id"]))
    assert rc == 0 and '"id":"big"' in out.replace(" ", ""), out
    assert any(r.status == 413 for r in rcv.all())
    assert all(len(r.records) <= 7 for r in rcv.delivered())
    assert "big" not in rcv.ids()
    no_duplicates(rcv)
    agent.stop()


@test
def bad_request_dead_letters_the_batch():
    d = h.tmpdir()
    rcv = Receiver(d).start()
    rcv.script = [("status", 400, "bad tenant:\n\tfield \x01'plant' unknown\n" + "z" * 400)]
    agent, writer = start(d, {"lake": "url = %s\n" % rcv.url()})
    writer.write(20)
    first = rcv.wait_requests(1)[0]
    dead = {rec["seq"] for rec in first.records}
    h.wait_until(lambda: len(agent.dlq()) >= len(dead), 10, "%d DLQ entries" % len(dead))
    writer.write(10)
    rest = [rec["data"]["id"] for rec in first.records]
    rcv.wait_ids(set(writer.ids) - set(rest))
    dl = agent.dlq()
    assert {e["seq"] for e in dl} == dead, (dl, dead)
    for e in dl:
        assert e["reason"].startswith("HTTP 400: bad tenant: field 'plant' unknown zzz"), e
        assert len(e["reason"]) < 260, e
    assert agent.output("lake")["dlq_records"] == len(dead)
    agent.stop()


@test
def slow_answers_and_dropped_connections_are_retried():
    d = h.tmpdir()
    rcv = Receiver(d).start()
    rcv.script = [("slow", 2.5), ("drop",)]
    agent, writer = start(d, {"lake": "url = %s\ntimeout = 1s\nconnect_timeout = 500ms\n" %
                              rcv.url()})
    writer.write(30)
    rcv.wait_ids(writer.ids, timeout=20)
    reqs = rcv.all()
    assert len(reqs) >= 3
    assert reqs[0].key == reqs[1].key == reqs[2].key
    assert reqs[1].status is None and reqs[2].ok()
    log = agent.log_text()
    assert "timed out after 1 s" in log, log[-2000:]
    assert "closed the connection without answering" in log, log[-2000:]
    assert agent.dlq() == []
    # A request still running at shutdown is abandoned at the deadline and
    # its records stay queued: agentd stops promptly and cleanly.
    rcv.script = [("slow", 30)]
    writer.write(1)
    rcv.wait_requests(len(reqs) + 1)
    agent.stop(timeout=10)          # exit 0, within its 5 s grace
    # agentd did not wait for the answer (it comes 30 s after the request).
    assert rcv.requests[len(reqs)].status is None, rcv.requests[len(reqs)].status


@test
def gzip_and_plain_bodies_with_basic_auth():
    d = h.tmpdir()
    rcv = Receiver(d).start()
    h.write_file(os.path.join(d, "pw"), "pa55word\n")
    agent, writer = start(d, {
        "gz": "url = %s\ncontent_encoding = gzip\nusername = gw\npassword_file = %s/pw\n" % (
            rcv.url("/gz"), d),
        "plain": "url = %s\ncontent_encoding = none\n" % rcv.url("/plain")})
    writer.write(100)

    def ids(path):
        return {rec["data"]["id"] for r in rcv.delivered() if r.path == path for rec in r.records}
    h.wait_until(lambda: ids("/gz") >= set(writer.ids) and ids("/plain") >= set(writer.ids),
                 20, "every record through both outputs")
    for r in rcv.delivered():
        check_batch_headers(r, output=r.path[1:])
        if r.path == "/gz":
            assert r.headers["content-encoding"] == "gzip", r.headers
            assert r.body[:2] == b"\x1f\x8b"
            assert r.headers["authorization"] == "Basic Z3c6cGE1NXdvcmQ=", r.headers
        else:
            assert "content-encoding" not in r.headers, r.headers
            assert r.body.startswith(b'{"agent":"it-gw"')
    assert "pa55word" not in agent.log_text()
    agent.stop()
    assert "pa55word" not in agent.log_text()


@test
def certificate_problems_are_refused_with_a_clear_status():
    d = h.tmpdir()
    ca = TestCA(d)
    rcv = Receiver(d).start()
    nginx = Nginx(d, ca, rcv.port, {"good": ca.server, "expired": ca.expired,
                                    "future": ca.future, "wronghost": ca.wrong_host}).start()
    client = "client_cert = %s\nclient_key = %s\n" % ca.client
    agent, writer = start(d, {
        "unknownca": "url = %s\nca_file = %s\n%s" % (nginx.url("good"), ca.other_ca, client),
        "expired": "url = %s\nca_file = %s\n%s" % (nginx.url("expired"), ca.ca, client),
        "wronghost": "url = %s\nca_file = %s\n%s" % (nginx.url("wronghost"), ca.ca, client),
        "future": "url = %s\nca_file = %s\n%s" % (nginx.url("future"), ca.ca, client),
        "nocert": "url = %s\nca_file = %s\n" % (nginx.url("good"), ca.ca),
    })
    writer.write(5)
    want = {
        "unknownca": "TLS: server certificate not trusted (unknown CA; check ca_file)",
        "expired": "TLS: certificate of localhost has expired",
        "future": "TLS: certificate of localhost is not yet valid",
        "wronghost": "TLS: certificate does not match host localhost",
        "nocert": "HTTP 400: the server requires a client certificate it accepts",
    }

    def all_refused():
        outs = {o["name"]: o for o in agent.status()["outputs"]}
        return all(not outs[n]["connected"] and outs[n]["why"].startswith(w)
                   for n, w in want.items()) and outs
    try:
        outs = h.wait_until(all_refused, 15, "every output to report its TLS problem")
    except AssertionError:
        raise AssertionError("status: %r" % [(o["name"], o["connected"], o["why"])
                                             for o in agent.status()["outputs"]])
    assert "No required SSL certificate was sent" in outs["nocert"]["why"], outs["nocert"]
    assert rcv.all() == [], "nothing may pass nginx"
    assert agent.dlq() == [], "certificate problems must not dead-letter records"
    text = agent.status_text()
    for n in want:
        assert "output %s not connected" % n in text, text
    # The records wait in the queue for every output.
    assert all(o["backlog_records"] == 5 for o in outs.values()), outs
    agent.stop()


@test
def bad_configuration_is_refused():
    d = h.tmpdir()
    cases = [
        ("url = ftp://x/\n", "must start with https://"),
        ("url = https://user:pw@x/\n", "must not hold credentials"),
        ("url = https://x/\nheaders = Content-Type: text/plain\n", "set by the agent"),
        ("url = https://x/\nheaders = Bad Name: 1\n", "not a valid header name"),
        ("url = https://x/\nheaders = NoColon\n", "must look like 'Name: value'"),
        ("url = https://x/\nclient_cert = /c.pem\n", "client_cert needs client_key"),
        ("url = https://x/\nusername = u\n", "username needs password_file"),
        ("url = https://x/\ncontent_encoding = br\n", "content_encoding"),
    ]
    for i, (keys, msg) in enumerate(cases):
        path = os.path.join(d, "c%d.conf" % i)
        h.write_file(path, config(d, "", {"lake": keys}))
        p = subprocess.run(h.AGENTD_CMD + ["--check-config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        out = p.stdout.decode()
        assert p.returncode == 1 and msg in out, (keys, p.returncode, out)


h.main()
