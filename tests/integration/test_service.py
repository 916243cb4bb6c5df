"""test_service.py - agentd under a service manager: it says READY once it
runs, pings the watchdog from its loop at half the interval, says RELOADING
and READY again on SIGHUP and STOPPING on SIGTERM, all as datagrams to the
socket named by $NOTIFY_SOCKET (what systemd's Type=notify expects)."""

import os
import signal
import socket
import subprocess
import time

import harness as h
from harness import Broker, test


def receive_until(sock, want, timeout):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want(got):
            return got
    raise AssertionError("service manager messages so far: %r" % got)


@test
def ready_watchdog_reload_and_stop_are_notified():
    d = h.tmpdir()
    broker = Broker(d).start()
    os.makedirs(os.path.join(d, "logs"))
    h.write_file(os.path.join(d, "logs", "a.log"), '{"a":1}\n')
    conf = os.path.join(d, "agentd.conf")
    h.write_file(conf, h.config(d, broker.port, h.tail_input("a", os.path.join(d, "logs", "*.log"))))
    path = os.path.join(d, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    h.on_cleanup("notify socket", sock.close)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    log = open(os.path.join(d, "agentd.log"), "wb")
    h.show_log_on_failure("agentd", os.path.join(d, "agentd.log"))
    proc = subprocess.Popen(h.AGENTD_CMD + ["-c", conf], env=env, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    log.close()
    h.on_cleanup("agentd", lambda: proc.poll() is None and (proc.kill(), proc.wait()))

    got = receive_until(sock, lambda g: any(m.startswith("READY=1") for m in g), 10)
    ready = [m for m in got if m.startswith("READY=1")][0]
    assert "STATUS=running: 1 input(s), 1 output(s)" in ready, ready
    # Watchdog pings every 100 ms (half of 200 ms): five come well within
    # the generous bound.
    receive_until(sock, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 5, 5)

    proc.send_signal(signal.SIGHUP)     # unchanged file: no reload needed
    h.write_file(conf, h.config(d, broker.port, h.tail_input("a", os.path.join(d, "logs", "*.log")),
                                topic="other/{agent}/{stream}"))
    proc.send_signal(signal.SIGHUP)
    got = receive_until(sock, lambda g: "RELOADING=1" in g and
                        any(m.startswith("READY=1") for m in g[g.index("RELOADING=1"):]), 10)

    proc.send_signal(signal.SIGTERM)
    got = receive_until(sock, lambda g: any(m.startswith("STOPPING=1") for m in g), 10)
    assert proc.wait(15) == 0


@test
def without_notify_socket_nothing_changes():
    d = h.tmpdir()
    broker = Broker(d).start()
    os.makedirs(os.path.join(d, "logs"))
    conf = h.config(d, broker.port, h.tail_input("a", os.path.join(d, "logs", "*.log")))
    agent = h.Agent(d, conf)
    env_before = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        agent.start()
        agent.stop()
    finally:
        if env_before is not None:
            os.environ["NOTIFY_SOCKET"] = env_before


if __name__ == "__main__":
    h.main()
