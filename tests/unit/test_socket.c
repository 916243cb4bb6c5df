/* test_socket.c - the udp and unix drivers on the real input core and
 * queue, with real sockets on loopback and in a temporary directory, and
 * the test clock: lines and datagrams become records with keys that never
 * repeat, bad input of every kind is dead-lettered with its reason, a
 * flood beyond the receive buffer is counted to the datagram and reported
 * as a gap, and socket files are made, checked and removed as documented. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "input.h"
#include "loop.h"
#include "mem.h"
#include "queue.h"
#include "status.h"
#include "test.h"
#include "test_clock.h"
#include "crashvfs.h"

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#include "input_rig.h"
#include <sqlite3.h>

static char dir[] = "/tmp/test_socket.XXXXXX";
static char sock_path[100];

static int rig_init(struct rig *r, const char *driver, const char *keys)
{
	char text[2048], db[512];

	tc_now_ms = 1000000;
	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input sensors]\ndriver = %s\n%s[output lake]\ntype = mqtt\n", dir, driver, keys);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, true, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
}

/* The port from "listening on 127.0.0.1:PORT...". */
static int udp_port(const struct rig *r)
{
	struct status_input st = snapshot(r);
	const char *p = strstr(st.state, "]:");

	if (!p)
		p = strchr(st.state, ':');
	else
		p++;
	return p ? atoi(p + 1) : 0;
}

static int64_t state_number(const struct rig *r, const char *what)
{
	struct status_input st = snapshot(r);
	const char *p = strstr(st.state, what);

	if (!p)
		return 0;
	while (p > st.state && p[-1] == ' ')
		p--;
	while (p > st.state && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return atoll(p);
}

static int udp_client(void)
{
	return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void udp_send(int fd, int port, const char *data, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(fd, data, len, 0, (struct sockaddr *)&a, sizeof(a)) != (ssize_t)len)
		perror("sendto");
}

static void udp_sends(int fd, int port, const char *s)
{
	udp_send(fd, port, s, strlen(s));
}

struct ticket_wait {
	struct rig *r;
	uint64_t n;
};

static bool ticket_reached(void *arg)
{
	struct ticket_wait *w = arg;

	return input_ticket(w->r->in) >= w->n;
}

static bool wait_ticket(struct rig *r, uint64_t n)
{
	struct ticket_wait w = { r, n };

	return tc_wait_io(r->a.loop, ticket_reached, &w);
}

/* Let the commit timer fire. */
static void commit(struct rig *r)
{
	tc_advance(r->a.loop, 200);
}

struct seen {
	int n, gaps;
	char key[32][64];
	char data[32][256];
	char gap[8][512];
	char gap_key[8][64];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (!strcmp(q->stream, "_agent")) {
		if (s->gaps < 8) {
			snprintf(s->gap[s->gaps], sizeof(s->gap[0]), "%.*s", (int)q->len, q->data);
			snprintf(s->gap_key[s->gaps], sizeof(s->gap_key[0]), "%s", q->key);
		}
		s->gaps++;
		return 0;
	}
	if (s->n < 32) {
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key);
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

static void read_all(struct rig *r, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	queue_read(r->a.q, 0, 100000, collect, s);
}

struct dlq_seen {
	int n;
	char reason[16][256];
	char key[16][128];
	size_t len[16];
	char data[16][64];
};

static int dlq_collect(const struct dlq_entry *e, const void *data, void *arg)
{
	struct dlq_seen *d = arg;

	if (d->n < 16) {
		snprintf(d->reason[d->n], sizeof(d->reason[0]), "%s", e->reason);
		snprintf(d->key[d->n], sizeof(d->key[0]), "%s", e->key);
		d->len[d->n] = e->len;
		snprintf(d->data[d->n], sizeof(d->data[0]), "%.*s", (int)(e->len < 63 ? e->len : 63),
			 (const char *)data);
	}
	d->n++;
	return 0;
}

static void read_dlq(struct rig *r, struct dlq_seen *d)
{
	memset(d, 0, sizeof(*d));
	queue_dlq_list(r->a.q, 0, 100, dlq_collect, d);
}

/* ---- udp -------------------------------------------------------------- */

/* Each line of a datagram is a record, keyed by input and counter. */
TEST(test_udp_lines)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = json\n") == 0);
	port = udp_port(&r);
	REQUIRE(port > 0);
	st = snapshot(&r);
	CHECK(strstr(st.state, "listening on 127.0.0.1:") == st.state);
	udp_sends(fd, port, "{\"a\":1}");
	udp_sends(fd, port, "{\"a\":2}\n{\"a\":3}\n");
	udp_sends(fd, port, "{\"a\":4}\r\n\n{\"a\":5}");
	CHECK(wait_ticket(&r, 5));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 5);
	for (int i = 0; i < 5; i++) {
		char want[32], key[32];

		snprintf(want, sizeof(want), "{\"a\":%d}", i + 1);
		snprintf(key, sizeof(key), "sensors:%d", i);
		CHECK_EQ_STR(s.data[i], want);
		CHECK_EQ_STR(s.key[i], key);
	}
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 5);
	CHECK_EQ_INT(st.dlq, 0);
	CHECK(strstr(st.state, ": 3 datagrams") != NULL);
	close(fd);
	rig_release(&r);
}

/* Line protocol through the influx parser. */
TEST(test_udp_influx)
{
	struct rig r;
	struct seen s;
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = influx\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "cpu,host=a usage=0.5,n=3i 1465839830100400200\nmem free=7u\n");
	CHECK(wait_ticket(&r, 2));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "{\"measurement\":\"cpu\",\"tags\":{\"host\":\"a\"},"
		     "\"fields\":{\"usage\":0.5,\"n\":3},\"time\":1465839830100400200}");
	CHECK_EQ_STR(s.data[1], "{\"measurement\":\"mem\",\"tags\":{},\"fields\":{\"free\":7}}");
	close(fd);
	rig_release(&r);
}

/* parser = csv: each datagram's first line is the header of its others. */
TEST(test_udp_csv)
{
	struct rig r;
	struct seen s;
	struct dlq_seen d;
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = csv\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "a,b\n1,2\n3,4\n");
	udp_sends(fd, port, "c\n9");
	udp_sends(fd, port, "only,a,header\n");
	CHECK(wait_ticket(&r, 4));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"a\":\"1\",\"b\":\"2\"}");
	CHECK_EQ_STR(s.data[1], "{\"a\":\"3\",\"b\":\"4\"}");
	CHECK_EQ_STR(s.data[2], "{\"c\":\"9\"}");
	read_dlq(&r, &d);
	REQUIRE(d.n == 1);
	CHECK_EQ_STR(d.reason[0], "empty datagram (a CSV header and no lines)");
	close(fd);
	rig_release(&r);
}

/* Bad JSON, invalid UTF-8, empty datagrams: dead-lettered with reasons,
 * counted; the good lines beside them are records. */
TEST(test_udp_garbage)
{
	struct rig r;
	struct seen s;
	struct dlq_seen d;
	struct status_input st;
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = json\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "not json\n{\"ok\":1}");
	udp_sends(fd, port, "\"\xff\"");
	udp_send(fd, port, "", 0);
	udp_sends(fd, port, "\n\r\n");
	CHECK(wait_ticket(&r, 5));
	commit(&r);
	read_all(&r, &s);
	CHECK_EQ_INT(s.n, 1);
	CHECK_EQ_STR(s.data[0], "{\"ok\":1}");
	read_dlq(&r, &d);
	REQUIRE(d.n == 4);
	CHECK(strstr(d.reason[0], "at byte") != NULL);
	CHECK_EQ_STR(d.data[0], "not json");
	CHECK_EQ_STR(d.key[0], "sensors:0");
	CHECK(strstr(d.reason[1], "UTF-8") != NULL);
	CHECK_EQ_STR(d.reason[2], "empty datagram");
	CHECK_EQ_INT(d.len[2], 0);
	CHECK_EQ_STR(d.reason[3], "empty datagram");
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 1);
	CHECK_EQ_INT(st.dlq, 4);
	CHECK(strstr(st.last_error, "dead-lettered") != NULL);
	close(fd);
	rig_release(&r);
}

/* A datagram larger than max_datagram is cut by the kernel: its head is
 * dead-lettered; a line over max_record_bytes likewise, beside good lines. */
TEST(test_udp_truncated_and_oversized)
{
	struct rig r;
	struct seen s;
	struct dlq_seen d;
	char big[3000], dg[600];
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = raw\nmax_datagram = 1KiB\n"
			 "max_record_bytes = 100\n") == 0);
	port = udp_port(&r);
	memset(big, 'x', sizeof(big));
	udp_send(fd, port, big, sizeof(big));
	memset(dg, 'y', sizeof(dg));
	memcpy(dg, "first\n", 6);
	memcpy(dg + sizeof(dg) - 6, "\nlast\n", 6);
	udp_send(fd, port, dg, sizeof(dg));
	CHECK(wait_ticket(&r, 4));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "\"first\"");
	CHECK_EQ_STR(s.data[1], "\"last\"");
	read_dlq(&r, &d);
	REQUIRE(d.n == 2);
	CHECK_EQ_STR(d.reason[0], "datagram truncated: 3000 bytes, more than max_datagram (1024); "
		     "only the first 1024 kept");
	CHECK_EQ_INT(d.len[0], 1024);
	CHECK(strstr(d.reason[1], "longer than max_record_bytes (588 bytes") != NULL);
	CHECK(strstr(snapshot(&r).state, "1 truncated") != NULL);
	close(fd);
	rig_release(&r);
}

/* The driver's getsockopt for SO_MEMINFO (drivers/socket.c). */
extern int (*socket_getsockopt)(int fd, int level, int name, void *val, socklen_t *len);

static int no_meminfo(int fd, int level, int name, void *val, socklen_t *len)
{
	(void)fd, (void)level, (void)name, (void)val, (void)len;
	errno = ENOPROTOOPT;
	return -1;
}

/* The gap markers' counts, which must add up to what status shows. */
static int64_t gap_count(const struct seen *s)
{
	int64_t n = 0;

	for (int i = 0; i < s->gaps && i < 8; i++) {
		const char *p = strstr(s->gap[i], "\"reason\":\"kernel_dropped: ");

		CHECK(p != NULL);
		if (p)
			n += atoll(p + strlen("\"reason\":\"kernel_dropped: "));
		CHECK(strstr(s->gap[i], "\"bytes\":null") != NULL);
		CHECK(strstr(s->gap[i], "\"source\":\"127.0.0.1:") != NULL);
		CHECK(strstr(s->gap_key[i], "sensors:gap:") == s->gap_key[i]);
	}
	return n;
}

/* Whether this platform counts dropped datagrams at all: asked of a
 * socket of the test's own, apart from the driver. */
static bool kernel_counts_drops(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
	bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* N datagrams sent at a small receive buffer before the loop turns: every
 * one is either a record or counted as dropped by the kernel, and the
 * drops reach the lake as gap markers. With SO_MEMINFO the count is read
 * once the socket is drained; without it (older kernels), from the
 * SO_RXQ_OVFL count the next datagram carries. */
static void flood(bool meminfo)
{
	enum { N = 400 };
	struct rig r;
	struct seen s;
	int fd = udp_client(), port;
	int64_t dropped;
	char line[128];

	socket_getsockopt = meminfo ? getsockopt : no_meminfo;
	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = json\nreceive_buffer = 4KiB\n"
			 "read_budget = 1000\n") == 0);
	port = udp_port(&r);
	for (int i = 0; i < N; i++) {
		snprintf(line, sizeof(line), "{\"i\":%d,\"pad\":\"%060d\"}", i, 0);
		udp_sends(fd, port, line);
	}
	loop_turn(r.a.loop, 0);         /* reads what the buffer held, to the end */
	dropped = state_number(&r, "dropped by the kernel");
	if (!kernel_counts_drops()) {
		/* A platform without SO_RXQ_OVFL (user-mode emulators, kernels
		 * before 2.6.33): status says drops are not counted, and no
		 * number is made up. */
		CHECK(strstr(snapshot(&r).state, "drops not counted") != NULL);
		CHECK_EQ_INT(dropped, 0);
		CHECK(snapshot(&r).records > 0 && snapshot(&r).records <= N);
		commit(&r);
		read_all(&r, &s);
		CHECK_EQ_INT(s.n, snapshot(&r).records);
		CHECK_EQ_INT(s.gaps, 0);
		close(fd);
		rig_release(&r);
		socket_getsockopt = getsockopt;
		return;
	}
	CHECK(strstr(snapshot(&r).state, "drops not counted") == NULL);
	if (meminfo) {
		CHECK(dropped > 0);
		CHECK_EQ_INT(snapshot(&r).records + dropped, N);
	} else {
		/* Not known until a datagram brings the count. */
		CHECK_EQ_INT(dropped, 0);
		udp_sends(fd, port, "{\"last\":true}");
		loop_turn(r.a.loop, 0);
		dropped = state_number(&r, "dropped by the kernel");
		CHECK(dropped > 0);
		CHECK_EQ_INT(snapshot(&r).records + dropped, N + 1);
	}
	commit(&r);
	read_all(&r, &s);
	CHECK_EQ_INT(s.n, snapshot(&r).records);
	CHECK(s.gaps >= 1);
	CHECK_EQ_INT(gap_count(&s), dropped);
	CHECK(strstr(snapshot(&r).last_error, "raise receive_buffer") != NULL);
	close(fd);
	rig_release(&r);
	socket_getsockopt = getsockopt;
}

TEST(test_udp_flood)
{
	flood(true);
}

TEST(test_udp_flood_without_meminfo)
{
	flood(false);
}

/* At most read_budget datagrams per turn of the loop. */
TEST(test_udp_read_budget)
{
	struct rig r;
	int fd = udp_client(), port;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = raw\nread_budget = 3\n") == 0);
	port = udp_port(&r);
	for (int i = 0; i < 10; i++)
		udp_sends(fd, port, "x");
	loop_turn(r.a.loop, 0);
	CHECK_EQ_INT(input_ticket(r.in), 3);
	loop_turn(r.a.loop, 0);
	CHECK_EQ_INT(input_ticket(r.in), 6);
	CHECK(wait_ticket(&r, 10));
	CHECK_EQ_INT(input_ticket(r.in), 10);
	close(fd);
	rig_release(&r);
}

/* Keys continue after the saved block when the input starts again, so a
 * restart never hands out a key twice. */
TEST(test_keys_across_restart)
{
	struct rig r;
	struct seen s;
	int fd = udp_client(), port;
	void *p = NULL;
	size_t len = 0;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = raw\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "a\nb");
	CHECK(wait_ticket(&r, 2));
	commit(&r);
	REQUIRE(queue_position_get(r.a.q, "sensors", "seq", &p, &len) == 0);
	CHECK(len == 4 && !memcmp(p, "4096", 4));
	xfree(p);
	input_stop(r.in);
	REQUIRE(input_start(r.in) == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "c");
	CHECK(wait_ticket(&r, 3));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.key[0], "sensors:0");
	CHECK_EQ_STR(s.key[1], "sensors:1");
	CHECK_EQ_STR(s.key[2], "sensors:4096");
	REQUIRE(queue_position_get(r.a.q, "sensors", "seq", &p, &len) == 0);
	CHECK(len == 4 && !memcmp(p, "8192", 4));
	xfree(p);
	close(fd);
	rig_release(&r);
}

/* A failed commit: the core appends the datagrams' records again, and the
 * saved block lost with the transaction is saved again. */
TEST(test_failed_commit)
{
	struct rig r;
	struct seen s;
	int fd = udp_client(), port;
	void *p = NULL;
	size_t len = 0;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = raw\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "a\nb");
	CHECK(wait_ticket(&r, 2));
	crashvfs_fail_writes(1, SQLITE_FULL);
	commit(&r);                              /* fails */
	udp_sends(fd, port, "c");                /* waits in the kernel */
	tc_advance(r.a.loop, 3000);
	CHECK(wait_ticket(&r, 3));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "\"a\"");
	CHECK_EQ_STR(s.data[1], "\"b\"");
	CHECK_EQ_STR(s.data[2], "\"c\"");
	CHECK_EQ_STR(s.key[0], "sensors:0");
	CHECK_EQ_STR(s.key[2], "sensors:2");
	REQUIRE(queue_position_get(r.a.q, "sensors", "seq", &p, &len) == 0);
	CHECK(len == 4 && !memcmp(p, "4096", 4));
	xfree(p);
	close(fd);
	rig_release(&r);
}

/* IPv6 loopback, where the system has it. */
TEST(test_udp_ipv6)
{
	struct rig r;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		SKIP("no IPv6 on this system");
	}
	a.sin6_addr = in6addr_loopback;
	if (rig_init(&r, "udp", "listen = [::1]:0\nparser = raw\n") != 0) {
		rig_release(&r);
		close(fd);
		SKIP("cannot bind [::1]");
	}
	CHECK(strstr(snapshot(&r).state, "listening on [::1]:") != NULL);
	port = udp_port(&r);
	a.sin6_port = htons((uint16_t)port);
	CHECK(sendto(fd, "v6", 2, 0, (struct sockaddr *)&a, sizeof(a)) == 2);
	CHECK(wait_ticket(&r, 1));
	close(fd);
	rig_release(&r);
}

/* ---- unix ------------------------------------------------------------- */

static void unix_addr(struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", sock_path);
}

static int unix_connect(int type)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	unix_addr(&sun);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		perror("connect");
		close(fd);
		return -1;
	}
	return fd;
}

static int unix_rig(struct rig *r, const char *keys)
{
	char text[1024];

	snprintf(text, sizeof(text), "path = %s\nparser = json\n%s", sock_path, keys);
	return rig_init(r, "unix", text);
}

TEST(test_unix_dgram)
{
	struct rig r;
	struct seen s;
	struct stat st;
	int fd;

	REQUIRE(unix_rig(&r, "type = dgram\n") == 0);
	REQUIRE(stat(sock_path, &st) == 0);
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ_INT(st.st_mode & 0777, 0660);
	fd = unix_connect(SOCK_DGRAM);
	REQUIRE(fd >= 0);
	CHECK(write(fd, "{\"u\":1}\n{\"u\":2}", 15) == 15);
	CHECK(write(fd, "nope", 4) == 4);
	CHECK(wait_ticket(&r, 3));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[1], "{\"u\":2}");
	CHECK_EQ_INT(snapshot(&r).dlq, 1);
	CHECK(strstr(snapshot(&r).state, "(dgram): 2 datagrams") != NULL);
	close(fd);
	rig_release(&r);
	/* Removed on stop. */
	CHECK(access(sock_path, F_OK) < 0 && errno == ENOENT);
}

TEST(test_unix_mode)
{
	struct rig r;
	struct stat st;
	char keys[64];

	REQUIRE(unix_rig(&r, "mode = 0600\n") == 0);
	REQUIRE(stat(sock_path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0600);
	rig_release(&r);
	snprintf(keys, sizeof(keys), "mode = 0666\ngroup = %u\n", (unsigned)getgid());
	REQUIRE(unix_rig(&r, keys) == 0);
	REQUIRE(stat(sock_path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0666);
	CHECK_EQ_INT(st.st_gid, getgid());
	rig_release(&r);
	CHECK(unix_rig(&r, "group = no-such-group-here\n") != 0);
	CHECK(strstr(snapshot(&r).state, "not listening: group 'no-such-group-here' does not exist") != NULL);
	rig_release(&r);
}

/* Lines across writes, the last one without a newline at the end of the
 * connection; an over-long line dead-lettered with its head. */
TEST(test_unix_stream)
{
	struct rig r;
	struct seen s;
	struct dlq_seen d;
	char longl[300];
	int fd;

	REQUIRE(unix_rig(&r, "max_record_bytes = 64\n") == 0);
	fd = unix_connect(SOCK_STREAM);
	REQUIRE(fd >= 0);
	CHECK(write(fd, "{\"s\":1}\n{\"s\":", 13) == 13);
	tc_advance(r.a.loop, 10);
	CHECK(wait_ticket(&r, 1));
	CHECK_EQ_INT(input_ticket(r.in), 1);
	CHECK(write(fd, "2}\r\n{\"s\":3}", 11) == 11);
	CHECK(wait_ticket(&r, 2));
	memset(longl, 'z', sizeof(longl));
	longl[0] = '\n';
	longl[sizeof(longl) - 1] = '\n';
	CHECK(write(fd, longl, sizeof(longl)) == (ssize_t)sizeof(longl));
	CHECK(write(fd, "{\"s\":4}", 7) == 7);
	CHECK(wait_ticket(&r, 4));
	CHECK(strstr(snapshot(&r).state, "(stream): 1 connection,") != NULL);
	close(fd);
	CHECK(wait_ticket(&r, 5));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.data[0], "{\"s\":1}");
	CHECK_EQ_STR(s.data[1], "{\"s\":2}");
	CHECK_EQ_STR(s.data[2], "{\"s\":3}");
	CHECK_EQ_STR(s.data[3], "{\"s\":4}");
	read_dlq(&r, &d);
	REQUIRE(d.n == 1);
	CHECK(strstr(d.reason[0], "line longer than max_record_bytes (298 bytes") != NULL);
	CHECK(strstr(snapshot(&r).state, "0 connections") != NULL);
	rig_release(&r);
}

/* While records are refused (a failed commit), a stream connection is not
 * read: the sender's bytes wait in the kernel, and every line arrives once
 * records are taken again, the lost transaction's lines appended again by
 * the core. */
TEST(test_unix_stream_backpressure)
{
	struct rig r;
	struct seen s;
	int fd;

	REQUIRE(unix_rig(&r, "") == 0);
	fd = unix_connect(SOCK_STREAM);
	REQUIRE(fd >= 0);
	CHECK(write(fd, "{\"b\":1}\n", 8) == 8);
	CHECK(wait_ticket(&r, 1));
	crashvfs_fail_writes(1, SQLITE_FULL);
	commit(&r);                              /* fails: records refused */
	CHECK(write(fd, "{\"b\":2}\n{\"b\":3}\n", 16) == 16);
	for (int i = 0; i < 20; i++)
		loop_turn(r.a.loop, 1);
	CHECK_EQ_INT(input_ticket(r.in), 1);     /* not read while refused */
	tc_advance(r.a.loop, 3000);
	CHECK(wait_ticket(&r, 3));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"b\":1}");
	CHECK_EQ_STR(s.data[1], "{\"b\":2}");
	CHECK_EQ_STR(s.data[2], "{\"b\":3}");
	close(fd);
	rig_release(&r);
}

/* parser = csv on a stream: each connection's first line is its header,
 * whatever the other connections send in between; empty lines hold
 * nothing. */
TEST(test_unix_stream_csv)
{
	struct rig r;
	struct seen s;
	int a, b;
	char text[200];

	snprintf(text, sizeof(text), "path = %s\nparser = csv\n", sock_path);
	REQUIRE(rig_init(&r, "unix", text) == 0);
	a = unix_connect(SOCK_STREAM);
	b = unix_connect(SOCK_STREAM);
	REQUIRE(a >= 0 && b >= 0);
	CHECK(write(a, "x,y\n1,2\n", 8) == 8);
	CHECK(wait_ticket(&r, 1));
	CHECK(write(b, "z\n\n7\n", 6) == 6);
	CHECK(wait_ticket(&r, 2));
	CHECK(write(a, "3,4\n", 4) == 4);
	CHECK(wait_ticket(&r, 3));
	commit(&r);
	read_all(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"x\":\"1\",\"y\":\"2\"}");
	CHECK_EQ_STR(s.data[1], "{\"z\":\"7\"}");
	CHECK_EQ_STR(s.data[2], "{\"x\":\"3\",\"y\":\"4\"}");
	CHECK_EQ_INT(snapshot(&r).dlq, 0);
	close(a);
	close(b);
	rig_release(&r);
}

struct conns_wait {
	struct rig *r;
	const char *text;
};

static bool state_has(void *arg)
{
	struct conns_wait *w = arg;

	return strstr(snapshot(w->r).state, w->text) != NULL;
}

/* One connection more than max_connections is closed at once, counted. */
TEST(test_unix_connection_limit)
{
	struct rig r;
	struct conns_wait w = { &r, "2 connections, 1 refused" };
	int a, b, c;
	char ch;

	REQUIRE(unix_rig(&r, "max_connections = 2\n") == 0);
	a = unix_connect(SOCK_STREAM);
	b = unix_connect(SOCK_STREAM);
	c = unix_connect(SOCK_STREAM);
	REQUIRE(a >= 0 && b >= 0 && c >= 0);
	CHECK(tc_wait_io(r.a.loop, state_has, &w));
	CHECK(read(c, &ch, 1) == 0);       /* closed by the agent */
	CHECK(strstr(snapshot(&r).last_error, "max_connections (2) reached") != NULL);
	CHECK(write(a, "{\"c\":1}\n", 8) == 8);
	CHECK(wait_ticket(&r, 1));
	close(a);
	close(b);
	close(c);
	w.text = "0 connections";
	CHECK(tc_wait_io(r.a.loop, state_has, &w));
	rig_release(&r);
}

/* A socket file nobody listens on is replaced; a regular file and a live
 * socket are refused and left alone. */
TEST(test_unix_stale_and_refused)
{
	struct rig r;
	struct sockaddr_un sun;
	struct stat st;
	int fd;
	FILE *f;

	/* Stale: bound, then closed without removing the file. */
	unix_addr(&sun);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	REQUIRE(bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	close(fd);
	REQUIRE(unix_rig(&r, "") == 0);
	fd = unix_connect(SOCK_STREAM);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	rig_release(&r);

	/* A regular file. */
	f = fopen(sock_path, "w");
	REQUIRE(f != NULL);
	fputs("keep me\n", f);
	fclose(f);
	CHECK(unix_rig(&r, "") == -EEXIST);
	CHECK(strstr(snapshot(&r).state, "exists and is not a socket: refusing to replace it") != NULL);
	rig_release(&r);
	REQUIRE(stat(sock_path, &st) == 0);
	CHECK(S_ISREG(st.st_mode) && st.st_size == 8);
	unlink(sock_path);

	/* A live socket of another process (of this test), of either type. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	REQUIRE(bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	REQUIRE(listen(fd, 4) == 0);
	CHECK(unix_rig(&r, "") == -EADDRINUSE);
	CHECK(strstr(snapshot(&r).state, "not listening: another process listens on") != NULL);
	rig_release(&r);
	CHECK(unix_rig(&r, "type = dgram\n") == -EADDRINUSE);
	rig_release(&r);
	CHECK(access(sock_path, F_OK) == 0);
	close(fd);
	unlink(sock_path);
}

/* Stopping (agent stop, reload) takes what the kernel already holds: the
 * datagrams waiting, the connections waiting to be accepted and their
 * lines; a line not finished is dead-lettered, not dropped. */
TEST(test_stop_drains)
{
	struct rig r;
	struct seen s;
	struct dlq_seen d;
	int fd = udp_client(), port, c;

	REQUIRE(rig_init(&r, "udp", "listen = 127.0.0.1:0\nparser = raw\n") == 0);
	port = udp_port(&r);
	udp_sends(fd, port, "a\nb");
	udp_sends(fd, port, "c");
	input_stop(r.in);
	commit(&r);
	read_all(&r, &s);
	CHECK_EQ_INT(s.n, 3);
	close(fd);
	rig_release(&r);

	REQUIRE(unix_rig(&r, "") == 0);
	c = unix_connect(SOCK_STREAM);
	REQUIRE(c >= 0);
	CHECK(write(c, "{\"d\":1}\n{\"d\":2}\n{\"d\":", 21) == 21);
	input_stop(r.in);                       /* never accepted before */
	commit(&r);
	read_all(&r, &s);
	CHECK_EQ_INT(s.n, 2);
	read_dlq(&r, &d);
	REQUIRE(d.n == 1);
	CHECK_EQ_STR(d.data[0], "{\"d\":");
	CHECK(strstr(d.reason[0], "incomplete line: the input stopped while it was being sent (5 bytes")
	      != NULL);
	close(c);
	rig_release(&r);
}

/* ---- configuration ---------------------------------------------------- */

TEST(test_config_refused)
{
	static const char *const bad[][3] = {
		{ "udp", "listen = localhost:8094\n", "host names are not resolved" },
		{ "udp", "listen = 127.0.0.1\n", "has no port" },
		{ "udp", "listen = 127.0.0.1:70000\n", "the port must be a number" },
		{ "udp", "listen = ::1:8094\n", "in brackets" },
		{ "udp", "listen = [::1]\n", "is not [IPv6 address]:port" },
		{ "udp", "listen = :8094\n", "has no address" },
		{ "udp", "listen = [fe80::zz]:1\n", "is not an IPv6 address" },
		{ "udp", "max_datagram = 10\n", "max_datagram" },
		{ "unix", "path = relative.sock\n", "not an absolute path" },
		{ "unix", "path = /tmp/x.sock\nmode = 999\n", "not octal permissions" },
		{ "unix", "path = /tmp/x.sock\nmode = 01777\n", "not octal permissions" },
		{ "unix", "path = /tmp/x.sock\ntype = seqpacket\n", "type" },
		{ "unix", "", "path" },
	};
	struct config *cfg = NULL;
	char text[1024], err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = %s\n"
			 "%s[output lake]\ntype = mqtt\n", dir, bad[i][0], bad[i][1]);
		CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i][2]))
			fprintf(stderr, "row %zu: %s\n", i, err);
		CHECK(strstr(err, bad[i][2]) != NULL);
	}
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = udp\n"
		 "listen = [::]:8094\nparser = influx\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), 0);
	config_free(cfg);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	char cmd[160];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock_path, sizeof(sock_path), "%s/in.sock", dir);
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_udp_lines);
	RUN(test_udp_influx);
	RUN(test_udp_csv);
	RUN(test_udp_garbage);
	RUN(test_udp_truncated_and_oversized);
	RUN(test_udp_flood);
	RUN(test_udp_flood_without_meminfo);
	RUN(test_udp_read_budget);
	RUN(test_keys_across_restart);
	RUN(test_failed_commit);
	RUN(test_udp_ipv6);
	RUN(test_unix_dgram);
	RUN(test_unix_mode);
	RUN(test_unix_stream);
	RUN(test_unix_stream_backpressure);
	RUN(test_unix_stream_csv);
	RUN(test_unix_connection_limit);
	RUN(test_unix_stale_and_refused);
	RUN(test_stop_drains);
	RUN(test_config_refused);
	RUN(test_no_leaks);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_END();
}
