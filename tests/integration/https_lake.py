"""https_lake.py - the HTTP side of the integration tests: a test receiver
that records every request and answers scripted statuses, a test CA made
with the openssl command, and Debian's nginx terminating TLS (with required
client certificates) in front of the receiver.

Everything listens on 127.0.0.1 on free ports, lives in a test's temporary
directory and is stopped by the test (nginx by its PID). Python's standard
library only; zstd bodies are decoded with the zstd command.
"""

import calendar
import gzip
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import harness as h

NGINX = "/usr/sbin/nginx"


def decode_body(body, encoding):
    if encoding == "zstd":
        p = subprocess.run(["zstd", "-dcq"], input=body, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        if p.returncode:
            raise ValueError("zstd -d: " + p.stderr.decode("utf-8", "replace"))
        return p.stdout
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding in (None, "", "identity"):
        return body
    raise ValueError("unknown Content-Encoding %r" % encoding)


class Request:
    """One request as the receiver saw it, and what it answered."""

    def __init__(self, method, path, headers, body, t):
        self.method = method
        self.path = path
        self.headers = headers          # lower-case name -> value
        self.body = body
        self.t = t                      # monotonic seconds at arrival
        self.status = None              # answer; None: connection dropped
        self.error = None
        try:
            self.raw = decode_body(body, headers.get("content-encoding"))
            self.records = [json.loads(l) for l in self.raw.decode("utf-8").splitlines() if l]
        except Exception as e:  # kept for the test to report
            self.raw = b""
            self.records = []
            self.error = "%s: %s" % (type(e).__name__, e)

    @property
    def key(self):
        return self.headers.get("idempotency-key")

    def ok(self):
        return self.status is not None and 200 <= self.status < 300


class Receiver:
    """HTTP/1.1 on 127.0.0.1:port. Each request takes the next scripted
    action, if any; otherwise the rules decide, otherwise 200.

    Actions (tuples): ("status", code[, body[, headers]]), ("slow", seconds)
    (then 200), ("drop",) (close the connection without an answer).
    Rules: max_records (413 above it), max_line (413 for any record line
    longer than this many bytes)."""

    def __init__(self, d):
        self.dir = d
        self.port = h.free_port()
        self.requests = []
        self.script = []
        self.max_records = None
        self.max_line = None
        self.lock = threading.Lock()
        self.server = None
        h.on_cleanup("receiver", self.stop)

    def start(self):
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                req = Request(self.command, self.path,
                              {k.lower(): v for k, v in self.headers.items()}, body,
                              time.monotonic())
                with rcv.lock:
                    rcv.requests.append(req)
                    action = rcv.script.pop(0) if rcv.script else None
                if action and action[0] == "drop":
                    # Close at once, without a response.
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if action and action[0] == "slow":
                    time.sleep(action[1])
                    action = None
                code, text, extra = 200, "ok\n", {}
                if action and action[0] == "status":
                    code = action[1]
                    text = action[2] if len(action) > 2 else "status %d\n" % code
                    extra = action[3] if len(action) > 3 else {}
                elif req.error:
                    code, text = 400, "cannot decode body: %s\n" % req.error
                elif rcv.max_records is not None and len(req.records) > rcv.max_records:
                    code, text = 413, "too many records: %d\n" % len(req.records)
                elif rcv.max_line is not None and any(
                        len(l) > rcv.max_line for l in req.raw.split(b"\n")):
                    code, text = 413, "record too large\n"
                req.status = code
                data = text.encode()
                self.send_response(code)
                for k, v in extra.items():
                    # A callable value is computed when answering (dates).
                    self.send_header(k, v() if callable(v) else v)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    # The client gave up (a timeout test): nothing to answer.
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path="/ingest"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def all(self):
        with self.lock:
            return list(self.requests)

    def delivered(self):
        """Requests answered 2xx."""
        return [r for r in self.all() if r.ok()]

    def ids(self):
        out = []
        for r in self.delivered():
            for rec in r.records:
                d = rec.get("data")
                if isinstance(d, dict) and "id" in d:
                    out.append(d["id"])
        return out

    def wait_ids(self, expected, timeout=20):
        expected = set(expected)
        try:
            h.wait_until(lambda: expected <= set(self.ids()), timeout,
                         "%d records at the receiver" % len(expected), interval=0.1)
        except AssertionError:
            missing = expected - set(self.ids())
            raise AssertionError("%d of %d records never arrived: %s" % (
                len(missing), len(expected), h.id_ranges(missing)))

    def wait_requests(self, n, timeout=20):
        h.wait_until(lambda: len(self.all()) >= n, timeout, "%d requests at the receiver" % n,
                     interval=0.05)
        return self.all()


class TestCA:
    """A CA and certificates made with the openssl command (EC P-256):
    server (DNS:localhost), client (valid 400 days), expired server,
    not-yet-valid server (valid from 2035), wrong-host server, and a second,
    unrelated CA."""

    def __init__(self, d):
        self.dir = os.path.join(d, "pki")
        os.makedirs(self.dir)
        self.ca = self._ca("ca", "agentd test CA")
        self.other_ca = self._ca("other-ca", "unrelated test CA")
        self.server = self._cert("server", "localhost", "DNS:localhost,IP:127.0.0.1", 30)
        self.client = self._cert("client", "it-gw", None, 400, client=True)
        self.expired = self._cert("expired", "localhost", "DNS:localhost", -1)
        self.future = self._cert("future", "localhost", "DNS:localhost", None,
                                 start="20350101000000Z", end="20360101000000Z")
        self.wrong_host = self._cert("wrong-host", "elsewhere.example", "DNS:elsewhere.example", 30)

    def _run(self, *args):
        p = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=self.dir, timeout=30)
        if p.returncode:
            raise AssertionError("openssl %s: %s" % (" ".join(args), p.stdout.decode()))

    def _ca(self, name, cn):
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", name + ".key", "-out", name + ".crt", "-days", "30",
                  "-subj", "/CN=" + cn)
        return os.path.join(self.dir, name + ".crt")

    def not_after(self, cert):
        """The certificate's notAfter as Unix seconds, read by openssl."""
        p = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601",
                            "-in", cert], stdout=subprocess.PIPE, check=True, timeout=30)
        text = p.stdout.decode().strip().split("=", 1)[1]  # 2027-12-27 10:00:00Z
        return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%SZ"))

    def _cert(self, name, cn, san, days, client=False, start=None, end=None):
        ext = os.path.join(self.dir, name + ".ext")
        lines = ["basicConstraints=CA:FALSE",
                 "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
        if san:
            lines.append("subjectAltName=" + san)
        h.write_file(ext, "\n".join(lines) + "\n")
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        if start:
            # openssl x509 cannot set a start date; openssl ca can.
            self._ca_sign(name, ext, start, end)
        else:
            # days -1 ends the validity before it starts: an expired certificate.
            self._run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-CAcreateserial", "-out", name + ".crt", "-days", str(days),
                      "-extfile", ext)
        return (os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key"))


    def _ca_sign(self, name, ext, start, end):
        cnf = os.path.join(self.dir, "ca.cnf")
        if not os.path.exists(cnf):
            h.write_file(cnf, "[ca]\ndefault_ca = test\n[test]\ndir = .\n"
                         "database = index.txt\nnew_certs_dir = .\nserial = ca.serial\n"
                         "certificate = ca.crt\nprivate_key = ca.key\ndefault_md = sha256\n"
                         "policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n")
            h.write_file(os.path.join(self.dir, "index.txt"), "")
            h.write_file(os.path.join(self.dir, "ca.serial"), "1000\n")
        self._run("ca", "-batch", "-config", "ca.cnf", "-notext", "-in", name + ".csr",
                  "-out", name + ".crt", "-startdate", start, "-enddate", end,
                  "-extfile", ext)


class Nginx:
    """nginx in the foreground as one process (no master), with its config,
    logs and temporary files in the test's directory. One TLS server per
    entry of `servers` (name -> (cert, key)), each on its own port,
    requiring a client certificate signed by ca.ca, proxying to backend_port."""

    def __init__(self, d, ca, backend_port, servers):
        self.dir = os.path.join(d, "nginx")
        os.makedirs(self.dir)
        self.ca = ca
        self.backend = backend_port
        self.ports = {name: h.free_port() for name in servers}
        self.servers = servers
        self.proc = None
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        h.show_log_on_failure("nginx error log", self.error_log)
        h.on_cleanup("nginx", self._cleanup)

    def _write_conf(self):
        d = self.dir
        blocks = []
        for name, (cert, key) in self.servers.items():
            blocks.append("""
    server {
        listen 127.0.0.1:%d ssl;
        server_name localhost;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate %s;
        ssl_verify_client on;
        location / {
            proxy_pass http://127.0.0.1:%d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 30s;
        }
    }""" % (self.ports[name], cert, key, self.ca.ca, self.backend))
        h.write_file(self.conf, """daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 256; }
http {
    access_log %(d)s/access.log;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    client_max_body_size 64m;
%(blocks)s
}
""" % {"d": d, "blocks": "\n".join(blocks)})

    def start(self):
        self._write_conf()
        out = open(os.path.join(self.dir, "nginx.out"), "ab")
        # -e: the error log before the config is read (not /var/log/nginx).
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf, "-e",
                                      self.error_log], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL)
        out.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %d" % self.proc.returncode)
            return all(h.port_open(p) for p in self.ports.values())
        h.wait_until(up, 10, "nginx to listen")
        return self

    def url(self, name, path="/ingest", host="localhost"):
        return "https://%s:%d%s" % (host, self.ports[name], path)

    def stop(self):
        if self.proc:
            h._stop_pid(self.proc, 15, 10)
            self.proc = None

    def _cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
