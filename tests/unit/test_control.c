/* test_control.c - the control socket: the command table's central checks,
 * the dlq commands on a real queue, and the socket itself on a real loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "control.h"
#include "loop.h"
#include "mem.h"
#include "queue.h"
#include "test.h"

static char dir[64];

static void tmpdir_make(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_control.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
}

static void tmpdir_remove(void)
{
	static const char *const names[] = {
		"queue.db", "queue.db-wal", "queue.db-shm", "ctl.sock",
		"plain-file",
	};
	char p[128];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Run one request as peer uid and return the response (static buffer). */
static const char *exec_as(struct agent *a, uid_t uid, const char *line)
{
	static char resp[65536];
	struct buf out = BUF_INIT;

	if (control_exec(a, uid, line, &out)) {
		snprintf(resp, sizeof(resp), "(control_exec failed)");
	} else {
		snprintf(resp, sizeof(resp), "%s", out.p ? out.p : "");
	}
	buf_release(&out);
	return resp;
}

static const char *exec(struct agent *a, const char *line)
{
	return exec_as(a, geteuid(), line);
}

TEST(test_table_checks)
{
	struct agent a = { 0 };

	CHECK_EQ_STR(exec(&a, "ping"), "ok\npong\n");
	CHECK_EQ_STR(exec(&a, "  ping \r\n"), "ok\npong\n");
	CHECK_EQ_STR(exec(&a, "ping now"),
		     "error wrong number of arguments (usage: ping)\n");
	CHECK_EQ_STR(exec(&a, "status --json extra"),
		     "error wrong number of arguments (usage: status [--json])\n");
	CHECK_EQ_STR(exec(&a, "dlq show"),
		     "error wrong number of arguments (usage: dlq show ID)\n");
	CHECK_EQ_STR(exec(&a, "dlq replay 1 2"),
		     "error wrong number of arguments (usage: dlq replay ID|all)\n");
	CHECK_EQ_STR(exec(&a, "dlq list --after 1 --limit 2 --json x"),
		     "error wrong number of arguments (usage: dlq list [--after ID] [--limit N] [--json])\n");
	CHECK_EQ_STR(exec(&a, "frobnicate"), "error unknown command 'frobnicate'\n");
	CHECK_EQ_STR(exec(&a, "dlq eat 1"),
		     "error unknown dlq command 'eat' (try: list, show, replay, purge)\n");
	CHECK_EQ_STR(exec(&a, "dlq"),
		     "error unknown dlq command '' (try: list, show, replay, purge)\n");
	CHECK_EQ_STR(exec(&a, ""), "error empty request (try: ping)\n");
	CHECK_EQ_STR(exec(&a, "a b c d e f g h i j k l m n o p q"),
		     "error too many words in the request\n");
	/* Checks come before the handler: no queue is needed to be told. */
	CHECK_EQ_STR(exec(&a, "dlq list"), "error the queue is not open\n");
	CHECK_EQ_STR(exec(&a, "status"), "error agentd is not running\n");
}

TEST(test_changes_need_owner_or_root)
{
	struct agent a = { 0 };
	uid_t other = geteuid() + 1;
	char want[256];

	snprintf(want, sizeof(want),
		 "error permission denied: 'dlq purge' changes state; run it as root or as uid %u\n",
		 (unsigned)geteuid());
	CHECK_EQ_STR(exec_as(&a, other, "dlq purge all"), want);
	snprintf(want, sizeof(want),
		 "error permission denied: 'dlq replay' changes state; run it as root or as uid %u\n",
		 (unsigned)geteuid());
	CHECK_EQ_STR(exec_as(&a, other, "dlq replay 3"), want);
	/* Reading is open to anyone who can connect. */
	CHECK_EQ_STR(exec_as(&a, other, "ping"), "ok\npong\n");
	CHECK_EQ_STR(exec_as(&a, other, "dlq list"), "error the queue is not open\n");
	/* Root and the owner get past the permission check (and stop at the
	 * missing queue, which proves they got that far). */
	CHECK_EQ_STR(exec_as(&a, 0, "dlq purge all"), "error the queue is not open\n");
	CHECK_EQ_STR(exec_as(&a, geteuid(), "dlq purge all"),
		     "error the queue is not open\n");
}

static int open_queue(struct queue **q)
{
	char path[128];
	struct queue_opts o = { .path = path };
	const char *outs[] = { "lake" };

	snprintf(path, sizeof(path), "%s/queue.db", dir);
	return queue_open(q, &o, outs, 1);
}

TEST(test_dlq_commands)
{
	struct agent a = { 0 };
	const char *r;
	char why[128];
	int64_t n = 0;

	REQUIRE(open_queue(&a.q) == 0);
	CHECK_EQ_STR(exec(&a, "dlq list"), "ok\n(the dead-letter queue is empty)\n");
	CHECK_EQ_INT(queue_dlq_add(a.q, "input:sensors", "sensors", 0, "f:1:0",
				   "invalid JSON at byte 5", "{\"a\":", 5), 0);
	CHECK_EQ_INT(queue_dlq_add(a.q, "output:lake", "sensors", 7, "k7",
				   "rejected\n by lake", "\x01\x02zz", 4), 0);
	CHECK_EQ_INT(queue_dlq_add(a.q, "input:sensors", "sensors", 0, "f:1:9",
				   "too long", "x", 1), 0);
	CHECK_EQ_INT(queue_commit(a.q), 0);

	r = exec(&a, "dlq list");
	CHECK(!strncmp(r, "ok\nID ", 6));
	CHECK(strstr(r, "invalid JSON at byte 5\n") != NULL);
	/* A newline in a reason cannot split an entry over two lines. */
	CHECK(strstr(r, "rejected? by lake\n") != NULL);
	r = exec(&a, "dlq list --limit 2");
	CHECK(strstr(r, "(more: dlq list --after 2)\n") != NULL);
	CHECK(strstr(r, "too long") == NULL);
	r = exec(&a, "dlq list --after 2 --limit 2");
	CHECK(strstr(r, "too long") != NULL);
	CHECK(strstr(r, "(more") == NULL);
	CHECK_EQ_STR(exec(&a, "dlq list --after 3"), "ok\n(no entries after that id)\n");
	CHECK_EQ_STR(exec(&a, "dlq list --limit 0"),
		     "error bad value '0' for --limit (a positive number)\n");
	CHECK_EQ_STR(exec(&a, "dlq list --limit"), "error --limit needs a value\n");
	r = exec(&a, "dlq list --json");
	CHECK(!strncmp(r, "ok\n{\"entries\":[{\"id\":1,", 22));
	CHECK(json_valid(r + 3, strlen(r + 3), why, sizeof(why)));

	r = exec(&a, "dlq show 1");
	CHECK(strstr(r, "reason:  invalid JSON at byte 5\n") != NULL);
	CHECK(strstr(r, "data (text):\n{\"a\":\n") != NULL);
	r = exec(&a, "dlq show 2");
	CHECK(strstr(r, "data (binary, hex dump):\n00000000  01 02 7a 7a") != NULL);
	CHECK(strstr(r, "|..zz|\n") != NULL);
	CHECK_EQ_STR(exec(&a, "dlq show 99"), "error no dead-letter entry 99\n");
	CHECK_EQ_STR(exec(&a, "dlq show x1"),
		     "error bad id 'x1' (a number from dlq list)\n");
	CHECK_EQ_STR(exec(&a, "dlq show all"),
		     "error bad id 'all' (a number from dlq list)\n");

	/* An ingest reject never parsed: it cannot enter the log as it is. */
	r = exec(&a, "dlq replay 1");
	CHECK(!strncmp(r, "error entry 1 was rejected at ingest", 36));
	CHECK_EQ_STR(exec(&a, "dlq replay 2"), "ok\nreplayed 1 record\n");
	CHECK_EQ_STR(exec(&a, "dlq replay 2"), "error no dead-letter entry 2\n");
	CHECK_EQ_STR(exec(&a, "dlq replay all"), "ok\nreplayed 0 records\n");
	CHECK_EQ_STR(exec(&a, "dlq purge 1"), "ok\npurged 1 entry\n");
	CHECK_EQ_STR(exec(&a, "dlq purge all"), "ok\npurged 1 entry\n");
	CHECK_EQ_STR(exec(&a, "dlq list"), "ok\n(the dead-letter queue is empty)\n");
	/* The replayed record is back in the log, durably. */
	CHECK_EQ_INT(queue_backlog(a.q, "lake", &n, NULL), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(queue_pending(a.q), 0);
	queue_close(a.q);
}

/* ---- the socket on a real loop ----------------------------------------- */

struct client {
	struct loop *l;
	struct loop_timer t;
	int fd;
	char resp[4096];
	size_t len;
	int ticks;
};

/* Poll the client side until agentd's side closes (or give up). */
static int64_t client_poll(struct loop_timer *t)
{
	struct client *c = container_of(t, struct client, t);
	ssize_t n;

	while ((n = recv(c->fd, c->resp + c->len, sizeof(c->resp) - 1 - c->len,
			 MSG_DONTWAIT)) > 0)
		c->len += (size_t)n;
	c->resp[c->len] = '\0';
	if (n == 0 || ++c->ticks > 500 || (n < 0 && errno != EAGAIN)) {
		loop_stop(c->l);
		return -1;
	}
	return 10;
}

static int connect_to(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One request over the socket; returns the response. */
static const char *roundtrip(struct agent *a, const char *path,
			     const char *req, size_t len)
{
	static struct client c;

	memset(&c, 0, sizeof(c));
	c.l = a->loop;
	c.t.cb = client_poll;
	c.fd = connect_to(path);
	if (c.fd < 0)
		return "(connect failed)";
	if (write(c.fd, req, len) != (ssize_t)len) {
		close(c.fd);
		return "(write failed)";
	}
	loop_timer_set(a->loop, &c.t, 0);
	loop_run(a->loop);
	close(c.fd);
	return c.resp;
}

TEST(test_socket)
{
	struct agent a = { 0 };
	struct control *c = NULL, *c2 = NULL;
	char path[96], plain[96], big[5000];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/ctl.sock", dir);
	snprintf(plain, sizeof(plain), "%s/plain-file", dir);
	REQUIRE(loop_init(&a.loop) == 0);

	/* A stale socket file (nobody listening) is replaced. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	{
		struct sockaddr_un addr = { .sun_family = AF_UNIX };

		snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
		CHECK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	}
	close(fd);
	REQUIRE(control_open(&c, &a, path) == 0);
	REQUIRE(stat(path, &st) == 0);
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ_INT(st.st_mode & 0777, 0660);

	/* A live one is not: that is another agentd. */
	CHECK_EQ_INT(control_open(&c2, &a, path), -EADDRINUSE);
	CHECK(c2 == NULL);
	/* Nor is a file that is not a socket. */
	fd = open(plain, O_CREAT | O_WRONLY, 0600);
	close(fd);
	CHECK_EQ_INT(control_open(&c2, &a, plain), -EEXIST);

	CHECK_EQ_STR(roundtrip(&a, path, "ping\n", 5), "ok\npong\n");
	/* No newline: the request ends when the client shuts down writing. */
	{
		int cfd = connect_to(path);
		struct client cl = { .l = a.loop, .t.cb = client_poll, .fd = cfd };

		REQUIRE(cfd >= 0);
		CHECK(write(cfd, "ping", 4) == 4);
		shutdown(cfd, SHUT_WR);
		loop_timer_set(a.loop, &cl.t, 0);
		loop_run(a.loop);
		close(cfd);
		CHECK_EQ_STR(cl.resp, "ok\npong\n");
	}
	CHECK_EQ_STR(roundtrip(&a, path, "dlq show 1\n", 11),
		     "error the queue is not open\n");
	memset(big, 'x', sizeof(big));
	CHECK_EQ_STR(roundtrip(&a, path, big, sizeof(big)),
		     "error request too long (limit 4096 bytes)\n");

	control_close(c);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	control_close(NULL);
	loop_free(a.loop);
}

static size_t mem_before;

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), mem_before);
}

int main(void)
{
	mem_before = mem_in_use();
	tmpdir_make();
	RUN(test_table_checks);
	RUN(test_changes_need_owner_or_root);
	RUN(test_dlq_commands);
	RUN(test_socket);
	RUN(test_no_leaks);
	tmpdir_remove();
	TEST_END();
}
