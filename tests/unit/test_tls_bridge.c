/* test_tls_bridge.c - the TLS bridge's setup errors and handshake failures
 * against local servers that are not TLS; delivery through a real TLS broker
 * is covered by tests/integration/test_mqtt_tls.py. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "tls_bridge.h"
#include "test.h"

static char dir[64];
static char ca_path[128];

struct outcome {
	bool called;
	int rc;
	char why[512];
	struct loop *l;
};

static void on_result(void *arg, int rc, const char *why)
{
	struct outcome *o = arg;

	o->called = true;
	o->rc = rc;
	snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
	loop_stop(o->l);
}

struct deadline {
	struct loop_timer t;
	struct outcome *o;
};

static int64_t stop_cb(struct loop_timer *t)
{
	struct deadline *d = container_of(t, struct deadline, t);

	loop_stop(d->o->l);
	return -1;
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static void run_for(struct loop *l, struct outcome *o, int64_t ms)
{
	struct deadline d = { .t.cb = stop_cb, .o = o };

	loop_timer_set(l, &d.t, ms);
	loop_run(l);
	loop_timer_cancel(l, &d.t);
}

/* A loopback listener; returns its fd and port. */
static int listener(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	*port = ntohs(a.sin_port);
	return fd;
}

static int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool is_dir(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

TEST(setup_errors_name_the_key)
{
	struct tls_bridge_conf c = { .server_name = "localhost", .label = "localhost:8883" };
	struct tls_bridge *b = NULL;
	struct loop *l;
	char err[256], missing[160];

	REQUIRE(loop_init(&l) == 0);
	snprintf(missing, sizeof(missing), "%s/none.pem", dir);
	c.ca_file = missing;
	CHECK(tls_bridge_new(l, &c, on_result, NULL, &b, err, sizeof(err)) < 0);
	CHECK(b == NULL);
	CHECK(strstr(err, "ca_file") != NULL);

	c.ca_file = ca_path;
	c.client_cert = missing;
	c.client_key = missing;
	CHECK(tls_bridge_new(l, &c, on_result, NULL, &b, err, sizeof(err)) < 0);
	CHECK(strstr(err, "client_cert") != NULL);

	/* The CA's own certificate with a key that is not a key file. */
	c.client_cert = ca_path;
	c.client_key = ca_path;
	CHECK(tls_bridge_new(l, &c, on_result, NULL, &b, err, sizeof(err)) < 0);
	CHECK(strstr(err, "client_key") != NULL);

	c.client_cert = c.client_key = NULL;
	REQUIRE(tls_bridge_new(l, &c, on_result, NULL, &b, err, sizeof(err)) == 0);
	CHECK(strncmp(tls_bridge_path(b), "/tmp/agentd-tls-", 16) == 0);
	snprintf(missing, sizeof(missing), "%s", tls_bridge_path(b));
	*strrchr(missing, '/') = '\0';
	CHECK(is_dir(missing));
	tls_bridge_free(b);
	CHECK(!is_dir(missing));
	loop_free(l);
}

TEST(server_that_closes_is_reported)
{
	struct tls_bridge_conf c = { .ca_file = ca_path, .server_name = "localhost",
				     .label = "localhost:1" };
	struct outcome o = { 0 };
	struct tls_bridge *b;
	struct loop *l;
	char err[256];
	int lfd, port, fd, sfd;

	REQUIRE(loop_init(&l) == 0);
	o.l = l;
	REQUIRE(tls_bridge_new(l, &c, on_result, &o, &b, err, sizeof(err)) == 0);
	lfd = listener(&port);
	REQUIRE(lfd >= 0);
	fd = connect_to(port);
	REQUIRE(fd >= 0);
	sfd = accept(lfd, NULL, NULL);
	REQUIRE(sfd >= 0);
	close(sfd);
	CHECK_EQ_INT(tls_bridge_start(b, fd), 0);
	if (!o.called)
		run_for(l, &o, 3000);
	CHECK(o.called);
	CHECK(o.rc < 0);
	CHECK(strstr(o.why, "closed the connection during the handshake") != NULL);
	close(lfd);
	tls_bridge_free(b);
	loop_free(l);
}

TEST(silent_server_gets_no_result_and_reset_is_quiet)
{
	struct tls_bridge_conf c = { .ca_file = ca_path, .server_name = "localhost",
				     .label = "localhost:2" };
	struct outcome o = { 0 };
	struct tls_bridge *b;
	struct loop *l;
	char err[256], buf[64];
	int lfd, port, fd, sfd;
	ssize_t n;

	REQUIRE(loop_init(&l) == 0);
	o.l = l;
	REQUIRE(tls_bridge_new(l, &c, on_result, &o, &b, err, sizeof(err)) == 0);
	lfd = listener(&port);
	REQUIRE(lfd >= 0);
	fd = connect_to(port);
	REQUIRE(fd >= 0);
	sfd = accept(lfd, NULL, NULL);
	REQUIRE(sfd >= 0);
	CHECK_EQ_INT(tls_bridge_start(b, fd), 0);
	/* Until the ClientHello arrives, with a limit only a broken build
	 * reaches. */
	for (int i = 0; i < 2000 && !readable(sfd); i++)
		loop_turn(l, 10);
	CHECK(!o.called);
	/* The ClientHello arrived: a TLS handshake record (type 22). */
	n = recv(sfd, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n > 5 && buf[0] == 22 && buf[1] == 3);
	CHECK_EQ_INT(tls_bridge_attach(b), -ENOTCONN);
	tls_bridge_reset(b);
	run_for(l, &o, 50);
	CHECK(!o.called);
	/* The bridge closed its side: the rest of the hello, then the end. */
	while ((n = recv(sfd, buf, sizeof(buf), 0)) > 0)
		;
	CHECK_EQ_INT(n, 0);
	close(sfd);
	close(lfd);
	tls_bridge_free(b);
	loop_free(l);
}

static void make_ca(void)
{
	char cmd[512];

	snprintf(dir, sizeof(dir), "/tmp/test-tls-bridge-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", dir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt "
		 "ec_paramgen_curve:prime256v1 -nodes -keyout %s/ca.key -out %s -days 2 "
		 "-subj /CN=test-ca >/dev/null 2>&1", dir, ca_path);
	if (system(cmd) != 0) {
		fprintf(stderr, "openssl could not make a test CA\n");
		exit(1);
	}
}

static void remove_ca(void)
{
	char p[160];

	snprintf(p, sizeof(p), "%s/ca.key", dir);
	unlink(p);
	unlink(ca_path);
	rmdir(dir);
}

int main(void)
{
	make_ca();
	RUN(setup_errors_name_the_key);
	RUN(server_that_closes_is_reported);
	RUN(silent_server_gets_no_result_and_reset_is_quiet);
	remove_ca();
	TEST_END();
}
