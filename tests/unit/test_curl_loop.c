/* test_curl_loop.c - libcurl transfers driven by the agent's event loop.
 *
 * A tiny HTTP/1.1 server of the test's own runs in a child process on a free
 * loopback port (one grandchild per connection, so slow answers overlap);
 * GET /hello answers at once, GET /slow once the test releases it (a byte on
 * a pipe), so nothing depends on how long anything takes. The tests show
 * that transfers complete while another one waits, that several run at once,
 * that a removed transfer never completes, that freeing the curl loop with
 * transfers running is clean, and the probe's connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "curl_loop.h"
#include "loop.h"
#include "test.h"

static pid_t server_pid = -1;
static int server_port;
static int release[2] = { -1, -1 };    /* a byte written lets one GET /slow answer */

/* ---- the server ------------------------------------------------------- */

static void serve_one(int c)
{
	char req[4096], resp[256];
	size_t len = 0;
	const char *body;
	ssize_t n;

	while (len < sizeof(req) - 1) {
		n = read(c, req + len, sizeof(req) - 1 - len);
		if (n <= 0)
			_exit(0);
		len += (size_t)n;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	if (!strncmp(req, "GET /slow ", 10)) {
		char b;

		if (read(release[0], &b, 1) != 1)
			_exit(0);
		body = "slow";
	} else if (!strncmp(req, "GET /hello ", 11)) {
		body = "hello";
	} else {
		body = "?";
	}
	n = snprintf(resp, sizeof(resp),
		     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		     strlen(body), body);
	if (write(c, resp, (size_t)n) < 0)
		_exit(1);
	_exit(0);
}

static int start_server(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (s < 0 || pipe2(release, O_CLOEXEC) < 0)
		return -errno;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 64) ||
	    getsockname(s, (struct sockaddr *)&a, &alen)) {
		close(s);
		return -errno;
	}
	server_port = ntohs(a.sin_port);
	server_pid = fork();
	if (server_pid < 0) {
		close(s);
		return -errno;
	}
	if (server_pid == 0) {
		close(release[1]);
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int c = accept(s, NULL, NULL);

			if (c < 0)
				continue;
			if (fork() == 0) {
				close(s);
				serve_one(c);
			}
			close(c);
		}
	}
	close(s);
	close(release[0]);
	return 0;
}

/* Let one GET /slow answer. */
static void release_slow(void)
{
	if (write(release[1], "x", 1) != 1)
		fprintf(stderr, "cannot release a slow answer\n");
}

static void stop_server(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = -1;
	}
}

/* A port nothing listens on: bound, never listened to, then closed. */
static int dead_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), port = 0;

	if (s >= 0 && !bind(s, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(s, (struct sockaddr *)&a, &alen))
		port = ntohs(a.sin_port);
	if (s >= 0)
		close(s);
	return port;
}

/* ---- transfers -------------------------------------------------------- */

struct req {
	CURL *easy;
	char body[64];
	size_t len;
	int ndone;
	CURLcode result;
	long status;
	int64_t done_at;
	int order;
};

static int done_counter;
static struct loop *lp;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct req *r = arg;
	size_t len = sz * n;

	if (r->len + len >= sizeof(r->body))
		len = sizeof(r->body) - 1 - r->len;
	memcpy(r->body + r->len, p, len);
	r->len += len;
	r->body[r->len] = '\0';
	return sz * n;
}

static void on_done(CURL *easy, CURLcode result, void *arg)
{
	struct req *r = arg;

	r->ndone++;
	r->result = result;
	r->done_at = loop_now_ms();
	r->order = ++done_counter;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
}

static void req_init(struct req *r, const char *path, int port)
{
	char url[128];

	memset(r, 0, sizeof(*r));
	r->easy = curl_easy_init();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 10000L);
}

/* A ticking timer proves the loop is not blocked; a deadline ends the run. */
struct ticker {
	struct loop_timer t;
	int ticks;
	int64_t stop_at;
	struct curl_loop *cl;
	struct req *remove;     /* removed at the first tick, if set */
	bool stop_when_idle;
	bool (*stop_when)(void *arg);
	void *arg;
};

static int64_t tick_cb(struct loop_timer *t)
{
	struct ticker *k = container_of(t, struct ticker, t);
	int64_t now = loop_now_ms();

	k->ticks++;
	if (k->remove) {
		curl_loop_remove(k->cl, k->remove->easy);
		k->remove = NULL;
	}
	if (now >= k->stop_at || (k->stop_when_idle && curl_loop_running(k->cl) == 0) ||
	    (k->stop_when && k->stop_when(k->arg))) {
		loop_stop(lp);
		return -1;
	}
	return 20;
}

static void run_until(struct ticker *k, struct curl_loop *cl, int64_t max_ms, bool idle)
{
	k->t.cb = tick_cb;
	k->cl = cl;
	k->stop_at = loop_now_ms() + max_ms;
	k->stop_when_idle = idle;
	loop_timer_set(lp, &k->t, 20);
	loop_run(lp);
	loop_timer_cancel(lp, &k->t);
}

TEST(one_transfer_completes)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req r;

	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&r, "/hello", server_port);
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), 0);
	CHECK_EQ_INT(curl_loop_running(cl), 1);
	/* The same handle cannot run twice at once. */
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), -EALREADY);
	run_until(&k, cl, 5000, true);
	CHECK_EQ_INT(r.ndone, 1);
	CHECK_EQ_INT(r.result, CURLE_OK);
	CHECK_EQ_INT(r.status, 200);
	CHECK_EQ_STR(r.body, "hello");
	CHECK_EQ_INT(curl_loop_running(cl), 0);

	/* The handle belongs to the caller again and can be reused. */
	r.len = 0;
	r.body[0] = '\0';
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), 0);
	run_until(&k, cl, 5000, true);
	CHECK_EQ_INT(r.ndone, 2);
	CHECK_EQ_STR(r.body, "hello");
	curl_loop_free(cl);
	curl_easy_cleanup(r.easy);
}

static bool fast_all_done(void *arg)
{
	struct req *fast = arg;

	for (int i = 0; i < 4; i++)
		if (!fast[i].ndone)
			return false;
	return true;
}

TEST(slow_transfer_does_not_block)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req slow, fast[4];

	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&slow, "/slow", server_port);
	CHECK_EQ_INT(curl_loop_add(cl, slow.easy, on_done, &slow), 0);
	for (int i = 0; i < 4; i++) {
		req_init(&fast[i], "/hello", server_port);
		CHECK_EQ_INT(curl_loop_add(cl, fast[i].easy, on_done, &fast[i]), 0);
	}
	CHECK_EQ_INT(curl_loop_running(cl), 5);
	/* The fast ones finish while the slow one waits for its answer. */
	k.stop_when = fast_all_done;
	k.arg = fast;
	run_until(&k, cl, 10000, false);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ_INT(fast[i].ndone, 1);
		CHECK_EQ_STR(fast[i].body, "hello");
		curl_easy_cleanup(fast[i].easy);
	}
	CHECK_EQ_INT(slow.ndone, 0);
	CHECK_EQ_INT(curl_loop_running(cl), 1);
	release_slow();
	k.stop_when = NULL;
	run_until(&k, cl, 10000, true);
	CHECK_EQ_INT(slow.ndone, 1);
	CHECK_EQ_INT(slow.result, CURLE_OK);
	CHECK_EQ_STR(slow.body, "slow");
	for (int i = 0; i < 4; i++)
		CHECK(fast[i].order < slow.order);
	curl_loop_free(cl);
	curl_easy_cleanup(slow.easy);
}

TEST(removed_transfer_never_completes)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req slow, fast;

	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&slow, "/slow", server_port);
	req_init(&fast, "/hello", server_port);
	CHECK_EQ_INT(curl_loop_add(cl, slow.easy, on_done, &slow), 0);
	k.remove = &slow;
	run_until(&k, cl, 10000, true);
	CHECK_EQ_INT(curl_loop_running(cl), 0);
	/* Its answer may come now; the fast transfer below is the barrier. */
	release_slow();
	/* Removing again, or something never added, does nothing. */
	curl_loop_remove(cl, slow.easy);
	curl_loop_remove(cl, fast.easy);
	/* The loop and the multi handle still work. */
	CHECK_EQ_INT(curl_loop_add(cl, fast.easy, on_done, &fast), 0);
	run_until(&k, cl, 5000, true);
	CHECK_EQ_INT(fast.ndone, 1);
	CHECK_EQ_STR(fast.body, "hello");
	curl_loop_free(cl);
	curl_easy_cleanup(slow.easy);
	curl_easy_cleanup(fast.easy);
}

TEST(connection_refused_is_reported)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req r;
	int port = dead_port();

	REQUIRE(port > 0);
	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&r, "/hello", port);
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), 0);
	run_until(&k, cl, 5000, true);
	CHECK_EQ_INT(r.ndone, 1);
	CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
	CHECK_EQ_INT(r.status, 0);
	curl_loop_free(cl);
	curl_easy_cleanup(r.easy);
}

TEST(free_with_transfers_running)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req slow;

	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&slow, "/slow", server_port);
	CHECK_EQ_INT(curl_loop_add(cl, slow.easy, on_done, &slow), 0);
	run_until(&k, cl, 100, false);
	CHECK_EQ_INT(curl_loop_running(cl), 1);
	curl_loop_free(cl);
	/* Nothing of the freed curl loop may fire any more, even once the
	 * server answers: a transfer on a new one is the barrier. */
	release_slow();
	{
		struct req fast;

		REQUIRE(curl_loop_init(&cl, lp) == 0);
		req_init(&fast, "/hello", server_port);
		CHECK_EQ_INT(curl_loop_add(cl, fast.easy, on_done, &fast), 0);
		run_until(&k, cl, 10000, true);
		CHECK_EQ_INT(fast.ndone, 1);
		curl_loop_free(cl);
		curl_easy_cleanup(fast.easy);
	}
	CHECK_EQ_INT(slow.ndone, 0);
	curl_easy_cleanup(slow.easy);
	curl_loop_free(NULL);
	CHECK_EQ_INT(curl_loop_running(NULL), 0);
}

struct probe_rx {
	int n, err;
};

static void probe_cb(void *arg, int err)
{
	struct probe_rx *p = arg;

	p->n++;
	p->err = err;
}

static bool probe_seen(void *arg)
{
	return ((struct probe_rx *)arg)->n > 0;
}

TEST(probe_connects_or_says_why)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct probe_rx p = { 0 };
	int port = dead_port();

	REQUIRE(port > 0);
	REQUIRE(curl_loop_init(&cl, lp) == 0);
	k.stop_when = probe_seen;
	k.arg = &p;
	CHECK_EQ_INT(curl_loop_probe(cl, "127.0.0.1", port, "", 5000, probe_cb, &p), 0);
	CHECK_EQ_INT(curl_loop_probe(cl, "127.0.0.1", port, "", 5000, probe_cb, &p), -EBUSY);
	CHECK_EQ_INT(curl_loop_running(cl), 0);
	run_until(&k, cl, 10000, false);
	CHECK_EQ_INT(p.n, 1);
	CHECK_EQ_INT(p.err, -ECONNREFUSED);
	/* The test server listens: a connect, and no request (no answer). */
	p.n = 0;
	CHECK_EQ_INT(curl_loop_probe(cl, "127.0.0.1", server_port, "", 5000, probe_cb, &p), 0);
	run_until(&k, cl, 10000, false);
	CHECK_EQ_INT(p.n, 1);
	CHECK_EQ_INT(p.err, 0);
	/* Freed with a probe running: it never reports. */
	p.n = 0;
	CHECK_EQ_INT(curl_loop_probe(cl, "127.0.0.1", server_port, "", 5000, probe_cb, &p), 0);
	curl_loop_free(cl);
	CHECK_EQ_INT(p.n, 0);
}

TEST(unreachable_is_a_failed_connect)
{
	struct curl_loop *cl;
	struct ticker k = { 0 };
	struct req r;
	int port = dead_port();

	REQUIRE(curl_loop_init(&cl, lp) == 0);
	req_init(&r, "/hello", port);
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), 0);
	run_until(&k, cl, 10000, true);
	CHECK_EQ_INT(r.ndone, 1);
	CHECK(curl_loop_unreachable(r.easy, r.result));
	/* An answer, whatever its status, came from a reachable server. */
	curl_easy_cleanup(r.easy);
	req_init(&r, "/hello", server_port);
	CHECK_EQ_INT(curl_loop_add(cl, r.easy, on_done, &r), 0);
	run_until(&k, cl, 10000, true);
	CHECK_EQ_INT(r.result, CURLE_OK);
	CHECK(!curl_loop_unreachable(r.easy, r.result));
	CHECK(!curl_loop_unreachable(r.easy, CURLE_RECV_ERROR));
	curl_loop_free(cl);
	curl_easy_cleanup(r.easy);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (start_server() || loop_init(&lp)) {
		fprintf(stderr, "cannot start the test server or the loop\n");
		stop_server();
		return 1;
	}
	RUN(one_transfer_completes);
	RUN(slow_transfer_does_not_block);
	RUN(removed_transfer_never_completes);
	RUN(connection_refused_is_reported);
	RUN(free_with_transfers_running);
	RUN(probe_connects_or_says_why);
	RUN(unreachable_is_a_failed_connect);
	loop_free(lp);
	stop_server();
	curl_global_cleanup();
	TEST_END();
}
