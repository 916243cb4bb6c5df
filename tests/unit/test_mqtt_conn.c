/* test_mqtt_conn.c - the MQTT connection module on its own, on the test
 * clock: its key rows and validation, the probe against loopback listeners
 * (ready, refused, no answer), connect_timeout in each state, the backoff
 * and its reset, the password file, and mqtts through the TLS bridge to a
 * local TLS server.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"
#include "mqtt_conn.h"
#include "test.h"
#include "test_clock.h"

/* ---- a section of our own, built from the shared rows ------------------ */

struct sub_conf {
	struct mqtt_conn_conf conn;
	char *topic;
};

static const struct cfg_key sub_keys[] = {
	MQTT_CONN_KEYS(struct sub_conf, "mqtt://127.0.0.1:1883")
	{ .name = "topic", .type = CFG_STR, .offset = offsetof(struct sub_conf, topic),
	  .help = "Topic filter." },
	{ .name = NULL },
};

static int parse(struct sub_conf *c, const char *text, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	return cfg_parse_section(sub_keys, c, text, "t.conf", err, errlen);
}

/* ---- what the callbacks saw ------------------------------------------- */

struct rec {
	int nready, nstatus, nlost, ntimeout;
	int fd;
	char addr[128];
	int port;
	bool connected;
	char why[512];
	bool fail_in_timeout;
};

static void on_ready(struct mqtt_conn *c, void *arg, int fd, const char *addr, int port)
{
	struct rec *r = arg;

	r->nready++;
	r->fd = fd;
	snprintf(r->addr, sizeof(r->addr), "%s", addr);
	r->port = port;
}

static void on_lost(struct mqtt_conn *c, void *arg, const char *why)
{
	struct rec *r = arg;

	r->nlost++;
	snprintf(r->why, sizeof(r->why), "%s", why);
}

static void on_timeout(struct mqtt_conn *c, void *arg, const char *why)
{
	struct rec *r = arg;

	r->ntimeout++;
	snprintf(r->why, sizeof(r->why), "%s", why);
	if (r->fail_in_timeout)
		mqtt_conn_failed(c, why, false);
}

static void on_status(struct mqtt_conn *c, void *arg, bool connected, const char *why)
{
	struct rec *r = arg;

	r->nstatus++;
	r->connected = connected;
	snprintf(r->why, sizeof(r->why), "%s", why ? why : "");
}

static const struct mqtt_conn_ops ops = {
	.ready = on_ready, .lost = on_lost, .timeout = on_timeout, .status = on_status,
};
static const struct mqtt_conn_ops ops_no_timeout = {
	.ready = on_ready, .status = on_status,
};

/* ---- loopback sockets -------------------------------------------------- */

static int listener(int backlog, int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* A port nothing listens on: bound, its number read, closed. */
static int closed_port(void)
{
	int port, fd = listener(1, &port);

	if (fd < 0)
		return -1;
	close(fd);
	return port;
}

static int peer_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	if (getpeername(fd, (struct sockaddr *)&a, &len))
		return -1;
	return ntohs(a.sin_port);
}

/* ---- the fixture ------------------------------------------------------- */

struct fx {
	struct loop *l;
	struct sub_conf conf;
	struct mqtt_conn *c;
	struct rec r;
};

static bool fx_init(struct fx *f, const char *text)
{
	char err[256];

	memset(f, 0, sizeof(*f));
	f->r.fd = -1;
	tc_install(0);
	if (loop_init(&f->l))
		return false;
	if (parse(&f->conf, text, err, sizeof(err))) {
		fprintf(stderr, "config: %s\n", err);
		return false;
	}
	return true;
}

static bool fx_new(struct fx *f, const struct mqtt_conn_ops *o)
{
	char err[256];
	int rc = mqtt_conn_new(f->l, &f->conf.conn, "input sub", o, &f->r, &f->c, err,
			       sizeof(err));

	if (rc)
		fprintf(stderr, "mqtt_conn_new: %s\n", err);
	return rc == 0;
}

static void fx_free(struct fx *f)
{
	mqtt_conn_free(f->c);
	if (f->r.fd >= 0)
		close(f->r.fd);
	cfg_release(sub_keys, &f->conf);
	loop_free(f->l);
	tc_uninstall();
}

static bool got_ready(void *arg)
{
	return ((struct rec *)arg)->nready > 0;
}

static bool got_refused(void *arg)
{
	return strstr(((struct rec *)arg)->why, "connection refused") != NULL;
}

/* The attempt in progress ends at exactly ms from now, for the reason want. */
static void check_times_out(struct fx *f, int64_t ms, const char *want)
{
	tc_advance(f->l, ms - 1);
	CHECK_EQ_INT(mqtt_conn_attempt(f->c), 0);
	CHECK(strcmp(f->r.why, want) != 0);
	tc_advance(f->l, 1);
	CHECK_EQ_STR(f->r.why, want);
	CHECK_EQ_INT(mqtt_conn_attempt(f->c), 1);
	CHECK_EQ_INT(f->r.nready, 0);
}

/* ---- keys and validation ---------------------------------------------- */

TEST(shared_rows_parse_with_their_defaults)
{
	struct sub_conf c;
	char err[256];

	REQUIRE(parse(&c, "", err, sizeof(err)) == 0);
	CHECK_EQ_STR(c.conn.url, "mqtt://127.0.0.1:1883");
	CHECK_EQ_INT(c.conn.keepalive_ms, 30000);
	CHECK_EQ_INT(c.conn.connect_timeout_ms, 10000);
	CHECK_EQ_INT(c.conn.reconnect_base_ms, 1000);
	CHECK_EQ_INT(c.conn.reconnect_max_ms, 60000);
	CHECK(c.conn.username == NULL && c.conn.ca_file == NULL);
	cfg_release(sub_keys, &c);

	REQUIRE(parse(&c, "url = mqtts://broker.plant.example\nusername = gw\n"
		    "password_file = /etc/agentd/pw\nca_file = /etc/agentd/ca.pem\n"
		    "connect_timeout = 3s\nreconnect_max = 2m\ntopic = t/#\n", err, sizeof(err)) == 0);
	CHECK_EQ_STR(c.conn.url, "mqtts://broker.plant.example");
	CHECK_EQ_STR(c.conn.username, "gw");
	CHECK_EQ_STR(c.conn.password_file, "/etc/agentd/pw");
	CHECK_EQ_STR(c.conn.ca_file, "/etc/agentd/ca.pem");
	CHECK_EQ_INT(c.conn.connect_timeout_ms, 3000);
	CHECK_EQ_INT(c.conn.reconnect_max_ms, 120000);
	CHECK_EQ_STR(c.topic, "t/#");
	CHECK_EQ_INT(mqtt_conn_validate(&c.conn, err, sizeof(err)), 0);
	cfg_release(sub_keys, &c);

	/* The rows keep their bounds. */
	CHECK(parse(&c, "connect_timeout = 100ms\n", err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "connect_timeout") != NULL);
}

static void check_invalid(const char *text, const char *words)
{
	struct sub_conf c;
	char err[256] = "";

	if (parse(&c, text, err, sizeof(err))) {
		fprintf(stderr, "config: %s\n", err);
		CHECK(!"parses");
		return;
	}
	CHECK_EQ_INT(mqtt_conn_validate(&c.conn, err, sizeof(err)), -EINVAL);
	if (!strstr(err, words)) {
		fprintf(stderr, "for '%s': '%s' does not say '%s'\n", text, err, words);
		CHECK(!"the error names the problem");
	}
	cfg_release(sub_keys, &c);
}

TEST(validation_names_the_problem)
{
	struct mqtt_conn_conf none = { .reconnect_base_ms = 1, .reconnect_max_ms = 1 };
	char err[256];

	CHECK_EQ_INT(mqtt_conn_validate(&none, err, sizeof(err)), -EINVAL);
	CHECK_EQ_STR(err, "url is required");
	check_invalid("url = http://broker\n", "must look like mqtt://host:port");
	check_invalid("url = mqtt://broker:0\n", "the port must be 1 to 65535");
	check_invalid("url = mqtt://broker:1883/x\n", "must look like");
	check_invalid("url = mqtt://broker\nca_file = /ca.pem\n", "ca_file applies to mqtts:// urls only");
	check_invalid("url = mqtt://broker\ntls_server_name = b\n", "tls_server_name applies to mqtts");
	check_invalid("url = mqtts://broker\nclient_cert = /c.pem\n", "client_cert needs client_key");
	check_invalid("url = mqtts://broker\nclient_key = /k.pem\n", "client_key needs client_cert");
	check_invalid("url = mqtts://10.0.0.5\n", "names the broker by IP address: set tls_server_name");
	check_invalid("url = mqtts://[fd00::5]:8883\n", "set tls_server_name");
	check_invalid("url = mqtts://broker\ntls_server_name = \"\"\n", "tls_server_name must be a DNS name");
	check_invalid("password_file = /pw\n", "password_file needs username");
	check_invalid("reconnect_base = 2m\n", "reconnect_base (120000 ms) is longer than reconnect_max");
}

/* ---- the probe --------------------------------------------------------- */

TEST(listening_broker_gets_ready_with_a_connected_fd)
{
	struct fx f;
	char text[128];
	int port, lfd = listener(4, &port), afd;

	REQUIRE(lfd >= 0);
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	snprintf(text, sizeof(text), "127.0.0.1:%d", port);
	CHECK_EQ_STR(mqtt_conn_hostport(f.c), text);
	CHECK(!mqtt_conn_is_tls(f.c));
	mqtt_conn_start(f.c, 0);
	CHECK_EQ_INT(f.r.nstatus, 1);
	CHECK(!f.r.connected);
	CHECK(strstr(f.r.why, "connecting to mqtt://127.0.0.1:") != NULL);
	REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
	CHECK_EQ_INT(f.r.nready, 1);
	CHECK(f.r.fd >= 0);
	CHECK_EQ_STR(f.r.addr, "127.0.0.1");
	CHECK_EQ_INT(f.r.port, port);
	CHECK_EQ_INT(peer_port(f.r.fd), port);
	afd = accept(lfd, NULL, NULL);
	CHECK(afd >= 0);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), -1);

	/* The session is up: connect_timeout no longer applies. */
	mqtt_conn_connected(f.c);
	CHECK(f.r.connected);
	CHECK_EQ_INT(f.r.nstatus, 2);
	tc_advance(f.l, 60000);
	CHECK_EQ_INT(f.r.ntimeout, 0);
	CHECK_EQ_INT(f.r.nready, 1);
	if (afd >= 0)
		close(afd);
	close(lfd);
	fx_free(&f);
}

/* Refused: the reason says so, and the next attempt comes after the backoff
 * (with the test's random value 0: the bottom of backoff_delay's jitter
 * range, base/2), capped by the probe cap since no broker answered. */
TEST(refused_port_reports_and_retries_after_the_backoff)
{
	struct fx f;
	char text[160], want[96];
	int port = closed_port();
	int64_t next;

	REQUIRE(port > 0);
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\nreconnect_base = 2s\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_start(f.c, 0);
	REQUIRE(tc_wait_io(f.l, got_refused, &f.r));
	snprintf(want, sizeof(want), "connection refused (is the broker running at 127.0.0.1:%d?)",
		 port);
	CHECK_EQ_STR(f.r.why, want);
	CHECK(!f.r.connected);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 1);
	next = mqtt_conn_next_attempt_ms(f.c);
	CHECK_EQ_INT(next, 1000);          /* [1000, 2000], random 0 */

	/* Nothing before the timer is due; the next attempt when it is. */
	f.r.why[0] = '\0';
	tc_advance(f.l, next - 1);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 1);
	CHECK(f.r.why[0] == '\0');
	tc_advance(f.l, 1);
	REQUIRE(tc_wait_io(f.l, got_refused, &f.r));
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 2);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 2000);  /* [2000, 4000] */

	/* The top of the jitter range, and the probe cap. */
	tc_random_value = UINT32_MAX;
	f.r.why[0] = '\0';
	tc_advance(f.l, 2000);
	REQUIRE(tc_wait_io(f.l, got_refused, &f.r));
	next = mqtt_conn_next_attempt_ms(f.c);
	CHECK(next >= 4000 && next <= 8000);
	mqtt_conn_set_probe_cap(f.c, 300);
	f.r.why[0] = '\0';
	tc_advance(f.l, next);
	REQUIRE(tc_wait_io(f.l, got_refused, &f.r));
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 300);
	CHECK_EQ_INT(f.r.nready, 0);
	fx_free(&f);
}

/* A listener whose accept queue is full drops further SYNs, so the probe's
 * connect stays pending; connect_timeout ends it. */
TEST(no_answer_within_connect_timeout)
{
	struct fx f;
	char text[160], want[128];
	int port, lfd = listener(0, &port), fill[2] = { -1, -1 };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	REQUIRE(lfd >= 0);
	a.sin_port = htons((uint16_t)port);
	fill[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fill[0] < 0 || connect(fill[0], (struct sockaddr *)&a, sizeof(a))) {
		close(lfd);
		SKIP("cannot fill a listener's accept queue");
	}
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\nconnect_timeout = 1500ms\n"
		 "reconnect_base = 5s\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_set_probe_cap(f.c, 700);
	mqtt_conn_start(f.c, 0);
	for (int i = 0; i < 20; i++)
		loop_turn(f.l, 5);
	if (f.r.nready) {
		fx_free(&f);
		close(fill[0]);
		close(lfd);
		SKIP("this kernel completes connects to a listener with a full queue");
	}
	snprintf(want, sizeof(want), "no answer from 127.0.0.1:%d within 1500 ms (network down or "
		 "port filtered?)", port);
	check_times_out(&f, 1500, want);
	/* No broker answered: the probe cap applies to the backoff. */
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 700);
	fx_free(&f);
	close(fill[0]);
	close(lfd);
}

/* After ready(), what is left of connect_timeout bounds the session's
 * start: the user's timeout() says so, or without one the module fails the
 * attempt itself. */
TEST(session_not_up_within_connect_timeout)
{
	struct fx f;
	char text[160], want[128];
	int port, lfd = listener(4, &port);

	REQUIRE(lfd >= 0);
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\nconnect_timeout = 2s\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_start(f.c, 0);
	REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
	tc_advance(f.l, 1999);
	CHECK_EQ_INT(f.r.ntimeout, 0);
	tc_advance(f.l, 1);
	CHECK_EQ_INT(f.r.ntimeout, 1);
	snprintf(want, sizeof(want), "broker at 127.0.0.1:%d did not answer CONNECT within 2 s", port);
	CHECK_EQ_STR(f.r.why, want);
	/* The attempt is the user's to end. */
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 0);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), -1);
	mqtt_conn_failed(f.c, want, false);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 1);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 500);
	close(f.r.fd);
	f.r.fd = -1;
	mqtt_conn_free(f.c);

	/* Without timeout(): failed by the module, reported through status(). */
	f.r = (struct rec){ .fd = -1 };
	REQUIRE(fx_new(&f, &ops_no_timeout));
	mqtt_conn_start(f.c, 0);
	REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
	tc_advance(f.l, 2000);
	CHECK_EQ_STR(f.r.why, want);
	CHECK(!f.r.connected);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 1);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 500);
	close(lfd);
	fx_free(&f);
}

/* The user's failures double the delay; a session that comes up resets it. */
TEST(failed_doubles_the_backoff_and_connected_resets_it)
{
	struct fx f;
	char text[160];
	int port, lfd = listener(8, &port);

	REQUIRE(lfd >= 0);
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\nreconnect_base = 1s\n"
		 "reconnect_max = 4s\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_set_probe_cap(f.c, 100);   /* not for a broker that answered */
	mqtt_conn_start(f.c, 0);
	for (unsigned i = 0; i < 4; i++) {
		static const int64_t want[] = { 500, 1000, 2000, 2000 };   /* max 4 s */

		REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
		f.r.nready = 0;
		close(f.r.fd);
		f.r.fd = -1;
		mqtt_conn_failed(f.c, "broker refused the connection: Not authorized", false);
		CHECK(!f.r.connected);
		CHECK_EQ_STR(f.r.why, "broker refused the connection: Not authorized");
		CHECK_EQ_INT(mqtt_conn_attempt(f.c), i + 1);
		CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), want[i]);
		tc_advance(f.l, want[i]);
	}
	REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
	f.r.nready = 0;
	mqtt_conn_connected(f.c);
	CHECK(f.r.connected);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 0);
	close(f.r.fd);
	f.r.fd = -1;
	mqtt_conn_failed(f.c, "connection to the broker lost", false);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 500);
	tc_advance(f.l, 500);
	REQUIRE(tc_wait_io(f.l, got_ready, &f.r));
	close(lfd);
	fx_free(&f);
}

/* close(): no further attempts; a failure afterwards is only reported. */
TEST(closed_connection_never_retries)
{
	struct fx f;
	char text[160];
	int port = closed_port();

	REQUIRE(port > 0);
	snprintf(text, sizeof(text), "url = mqtt://127.0.0.1:%d\n", port);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_start(f.c, 0);
	REQUIRE(tc_wait_io(f.l, got_refused, &f.r));
	CHECK(mqtt_conn_next_attempt_ms(f.c) >= 0);
	mqtt_conn_close(f.c);
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), -1);
	CHECK_EQ_INT(loop_next_due(f.l), -1);
	mqtt_conn_failed(f.c, "stopped", false);
	CHECK_EQ_STR(f.r.why, "stopped");
	CHECK_EQ_INT(loop_next_due(f.l), -1);
	CHECK_EQ_INT(mqtt_conn_attempt(f.c), 1);
	fx_free(&f);
}

/* ---- credentials ------------------------------------------------------- */

TEST(password_file_is_read_and_a_missing_one_named)
{
	char dir[] = "/tmp/test-mqtt-conn-XXXXXX", path[64], text[256], err[256];
	struct fx f;
	size_t len = 0;
	FILE *fp;

	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/pw", dir);
	fp = fopen(path, "w");
	REQUIRE(fp);
	fputs("s3cret pass\n", fp);
	fclose(fp);
	snprintf(text, sizeof(text), "username = gw-01\npassword_file = %s\n", path);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	CHECK_EQ_STR(mqtt_conn_username(f.c), "gw-01");
	CHECK_EQ_STR(mqtt_conn_password(f.c, &len), "s3cret pass");
	CHECK_EQ_INT(len, 11);
	fx_free(&f);

	/* A user name alone: no password. */
	REQUIRE(fx_init(&f, "username = gw-01\n"));
	REQUIRE(fx_new(&f, &ops));
	CHECK(mqtt_conn_password(f.c, &len) == NULL);
	CHECK_EQ_INT(len, 0);
	fx_free(&f);

	unlink(path);
	rmdir(dir);
	REQUIRE(fx_init(&f, text));
	CHECK_EQ_INT(mqtt_conn_new(f.l, &f.conf.conn, "input sub", &ops, &f.r, &f.c, err,
				   sizeof(err)), -ENOENT);
	CHECK(f.c == NULL);
	CHECK(strstr(err, "cannot read password_file ") != NULL);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "No such file") != NULL);
	fx_free(&f);
}

/* ---- mqtts ------------------------------------------------------------- */

static char tls_dir[64];

static bool make_cert(char *cert, char *key, size_t len)
{
	char cmd[768];

	snprintf(tls_dir, sizeof(tls_dir), "/tmp/test-mqtt-conn-tls-XXXXXX");
	if (!mkdtemp(tls_dir))
		return false;
	snprintf(cert, len, "%s/server.crt", tls_dir);
	snprintf(key, len, "%s/server.key", tls_dir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt "
		 "ec_paramgen_curve:prime256v1 -nodes -keyout %s -out %s -days 2 "
		 "-subj /CN=broker.test -addext subjectAltName=DNS:broker.test "
		 ">/dev/null 2>&1", key, cert);
	return system(cmd) == 0;
}

static void remove_cert(const char *cert, const char *key)
{
	unlink(cert);
	unlink(key);
	rmdir(tls_dir);
}

/* A TLS server that handshakes and then reads: openssl s_server, its stdin
 * a pipe held open (at its end it would close the connection). */
static pid_t tls_server(const char *cert, const char *key, int port, int *stdin_w)
{
	char p[16];
	int pfd[2];
	pid_t pid;

	if (pipe(pfd))
		return -1;
	snprintf(p, sizeof(p), "%d", port);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(pfd[0], 0);
		dup2(null, 1);
		dup2(null, 2);
		close(pfd[1]);
		execlp("openssl", "openssl", "s_server", "-quiet", "-accept", p, "-cert", cert,
		       "-key", key, (char *)NULL);
		_exit(127);
	}
	close(pfd[0]);
	*stdin_w = pfd[1];
	return pid;
}

static bool port_listens(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

static bool ready_or_failed(void *arg)
{
	struct rec *r = arg;

	return r->nready > 0 || strstr(r->why, "TLS") != NULL;
}

static bool got_lost(void *arg)
{
	return ((struct rec *)arg)->nlost > 0;
}

/* The probe's connection becomes the TLS connection; once the handshake is
 * done ready() gives the bridge's path, and mqtt_conn_connect_bridge()
 * connects a socket of the user's own to it. The server's end is lost(). */
TEST(mqtts_handshake_then_ready_with_the_bridge_path)
{
	char cert[128], key[128], text[512];
	struct fx f;
	int port = closed_port(), fd, status, stdin_w = -1;
	pid_t pid;
	int64_t limit;

	REQUIRE(port > 0);
	if (!make_cert(cert, key, sizeof(cert)))
		SKIP("openssl could not make a test certificate");
	pid = tls_server(cert, key, port, &stdin_w);
	REQUIRE(pid > 0);
	limit = tc_real_ms() + 10000;
	while (!port_listens(port) && tc_real_ms() < limit)
		usleep(10000);
	if (!port_listens(port)) {
		kill(pid, SIGTERM);
		waitpid(pid, &status, 0);
		close(stdin_w);
		remove_cert(cert, key);
		SKIP("openssl s_server did not listen");
	}
	snprintf(text, sizeof(text), "url = mqtts://127.0.0.1:%d\ntls_server_name = broker.test\n"
		 "ca_file = %s\n", port, cert);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	mqtt_conn_start(f.c, 0);
	CHECK(tc_wait_io(f.l, ready_or_failed, &f.r));
	CHECK_EQ_INT(f.r.nready, 1);
	CHECK_EQ_INT(f.r.fd, -1);
	CHECK_EQ_INT(f.r.port, 0);
	CHECK(strncmp(f.r.addr, "/tmp/agentd-tls-", 16) == 0);
	if (f.r.nready) {
		fd = mqtt_conn_connect_bridge(f.c);
		CHECK(fd >= 0);
		f.r.fd = fd;
		CHECK(fd >= 0 && write(fd, "ping\n", 5) == 5);
		mqtt_conn_connected(f.c);
		CHECK(f.r.connected);
		CHECK_EQ_INT(f.r.nlost, 0);
		/* The server goes away: the bridge sees the TLS connection end. */
		kill(pid, SIGKILL);
		CHECK(tc_wait_io(f.l, got_lost, &f.r));
		CHECK(f.r.why[0] != '\0');
		/* lost() alone changes nothing: the user fails the attempt. */
		CHECK(f.r.connected);
		CHECK_EQ_INT(mqtt_conn_attempt(f.c), 0);
	} else {
		fprintf(stderr, "status: %s\n", f.r.why);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(stdin_w);
	fx_free(&f);
	remove_cert(cert, key);
}

/* mqtts to a listener that never speaks TLS: connect_timeout bounds the
 * handshake, from the moment the TCP connect succeeded. */
TEST(mqtts_silent_listener_times_out_in_the_handshake)
{
	char cert[128], key[128], text[512], want[160];
	struct fx f;
	int port, lfd = listener(4, &port), afd;

	REQUIRE(lfd >= 0);
	if (!make_cert(cert, key, sizeof(cert))) {
		close(lfd);
		SKIP("openssl could not make a test certificate");
	}
	snprintf(text, sizeof(text), "url = mqtts://127.0.0.1:%d\ntls_server_name = broker.test\n"
		 "ca_file = %s\nconnect_timeout = 3s\n", port, cert);
	REQUIRE(fx_init(&f, text));
	REQUIRE(fx_new(&f, &ops));
	CHECK(mqtt_conn_is_tls(f.c));
	fcntl(lfd, F_SETFL, O_NONBLOCK);
	mqtt_conn_start(f.c, 0);
	/* The TCP connect completes at once on loopback; the accept proves it. */
	for (int i = 0; i < 50 && (afd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) < 0; i++)
		loop_turn(f.l, 10);
	CHECK(afd >= 0);
	snprintf(want, sizeof(want), "TLS: no handshake with 127.0.0.1:%d within 3 s (is it a TLS "
		 "listener?)", port);
	check_times_out(&f, 3000, want);
	/* A broker answered the TCP connect: no probe cap, the full backoff. */
	CHECK_EQ_INT(mqtt_conn_next_attempt_ms(f.c), 500);
	if (afd >= 0)
		close(afd);
	close(lfd);
	fx_free(&f);
	remove_cert(cert, key);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(shared_rows_parse_with_their_defaults);
	RUN(validation_names_the_problem);
	RUN(listening_broker_gets_ready_with_a_connected_fd);
	RUN(refused_port_reports_and_retries_after_the_backoff);
	RUN(no_answer_within_connect_timeout);
	RUN(session_not_up_within_connect_timeout);
	RUN(failed_doubles_the_backoff_and_connected_resets_it);
	RUN(closed_connection_never_retries);
	RUN(password_file_is_read_and_a_missing_one_named);
	RUN(mqtts_silent_listener_times_out_in_the_handshake);
	RUN(mqtts_handshake_then_ready_with_the_bridge_path);
	TEST_END();
}
