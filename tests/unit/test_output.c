/* test_output.c - the core's batcher around a scripted output type:
 * batch limits, in-order cursors with out-of-order acks, retry with the
 * same batch id, split-and-dead-letter on permanent rejection, backoff by
 * rounds and the probe that ends it. Time is the test clock (test_clock.h):
 * every wait below is an explicit step of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <zstd.h>

#include "agent.h"
#include "curl_loop.h"
#include "mem.h"
#include "outputs.h"
#include "test.h"
#include "test_clock.h"

#define MAXB 64

static struct {
	struct batch *sent[MAXB];
	char ids[MAXB][48];
	int64_t first[MAXB], last[MAXB], count[MAXB];
	unsigned attempt[MAXB];
	int n;
	int inflight;
	int64_t max_count; /* -EMSGSIZE above this */
	struct output *o;
	/* The probe: a real TCP connect to 127.0.0.1:probe_port. */
	struct curl_loop *cl;
	int probe_port;
	int probes, probes_done, probe_err;
} fk;

static int fake_start(struct output *o, void **state)
{
	fk.o = o;
	*state = &fk;
	output_set_connected(o, true, NULL);
	return 0;
}

static bool fake_ready(void *state)
{
	return true;
}

static int fake_send(void *state, struct batch *b)
{
	if (fk.max_count && b->count > fk.max_count)
		return -EMSGSIZE;
	if (fk.n >= MAXB)
		return -ENOSPC;
	fk.sent[fk.n] = b;
	snprintf(fk.ids[fk.n], sizeof(fk.ids[0]), "%s", b->id);
	fk.first[fk.n] = b->first_seq;
	fk.last[fk.n] = b->last_seq;
	fk.count[fk.n] = b->count;
	fk.attempt[fk.n] = b->attempt;
	fk.n++;
	fk.inflight++;
	return 0;
}

static bool fake_drain(void *state, int64_t deadline)
{
	return true;
}

static void fake_stop(void *state)
{
	curl_loop_free(fk.cl);
	fk.cl = NULL;
}

static void fake_probe_done(void *arg, int err)
{
	fk.probes_done++;
	fk.probe_err = err;
	output_probe_done(fk.o, err);
}

static int fake_probe(void *state)
{
	int rc;

	fk.probes++;
	if (!fk.cl && (rc = curl_loop_init(&fk.cl, output_loop(fk.o))))
		return rc;
	return curl_loop_probe(fk.cl, "127.0.0.1", fk.probe_port, "", 5000, fake_probe_done, NULL);
}

static const struct output_type fake_type = {
	.version = OUTPUT_VERSION,
	.name = "fake",
	.start = fake_start,
	.ready = fake_ready,
	.send = fake_send,
	.drain = fake_drain,
	.stop = fake_stop,
};

/* The same with a probe. */
static const struct output_type fake_probing_type = {
	.version = OUTPUT_VERSION,
	.name = "fake",
	.start = fake_start,
	.ready = fake_ready,
	.send = fake_send,
	.drain = fake_drain,
	.stop = fake_stop,
	.probe = fake_probe,
};
static const struct output_type *use_type = &fake_type;

static struct agent a;
static struct config *cfg;
static const struct output_type *saved_type;
static char dir[64];

static int64_t commit_cb(struct loop_timer *t)
{
	queue_commit(a.q);
	return -1;
}

/* Let ms of test time pass. */
static void spin(int64_t ms)
{
	tc_advance(a.loop, ms);
}

static int setup(const char *output_keys, int n_records, const char *const *streams)
{
	char text[1024], err[256], path[128];
	const char *names[] = { "lake" };
	struct queue_opts qo = { .path = path, .synchronous = SYNC_OFF };
	int rc;

	memset(&fk, 0, sizeof(fk));
	memset(&a, 0, sizeof(a));
	/* Every backoff at the bottom of its jitter range: d/2. */
	tc_install(0);
	snprintf(dir, sizeof(dir), "/tmp/test_output.XXXXXX");
	if (!mkdtemp(dir))
		return -errno;
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw\nstate_dir = %s\n[input s]\ndriver = tail\npath = /none\n"
		 "[output lake]\ntype = mqtt\n%s%s",
		 dir, strstr(output_keys, "retry_base") ? "" : "retry_base = 10ms\nretry_max = 20ms\n",
		 output_keys);
	rc = config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s\n", err);
		return rc;
	}
	saved_type = cfg->outputs->out_type;
	cfg->outputs->out_type = use_type;
	a.cfg = cfg;
	a.commit_timer.cb = commit_cb;
	if ((rc = loop_init(&a.loop)))
		return rc;
	snprintf(path, sizeof(path), "%s/queue.db", dir);
	if ((rc = queue_open(&a.q, &qo, names, 1)))
		return rc;
	for (int i = 0; i < n_records; i++) {
		char key[32], data[32];
		struct qrec_in r = { .stream = streams ? streams[i] : "s", .key = key, .data = data };

		snprintf(key, sizeof(key), "k%d", i);
		r.len = (size_t)snprintf(data, sizeof(data), "{\"i\":%d}", i + 1);
		if ((rc = queue_append(a.q, &r, NULL)))
			return rc;
	}
	if ((rc = queue_commit(a.q)))
		return rc;
	a.outputs = xcalloc(1, sizeof(*a.outputs));
	if ((rc = output_create(&a, cfg->outputs, &a.outputs[0])))
		return rc;
	a.n_outputs = 1;
	return output_start(a.outputs[0]);
}

static void teardown(void)
{
	char cmd[128];

	output_free(a.outputs[0]);
	xfree(a.outputs);
	queue_close(a.q);
	loop_free(a.loop);
	cfg->outputs->out_type = saved_type;
	config_free(cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "cleanup of %s failed\n", dir);
	tc_uninstall();
	use_type = &fake_type;
}

/* Lines in a batch body, after checking it is one zstd frame. */
static int64_t body_lines(const struct batch *b, int64_t *first_i)
{
	char out[1 << 16];
	size_t n = ZSTD_decompress(out, sizeof(out), b->body, b->body_len);
	int64_t lines = 0;

	if (ZSTD_isError(n))
		return -1;
	for (size_t i = 0; i < n; i++)
		lines += out[i] == '\n';
	if (first_i) {
		const char *p = strstr(out, "\"data\":{\"i\":");

		*first_i = p ? atoll(p + 12) : -1;
	}
	return lines;
}

static int64_t cursor(void)
{
	return queue_cursor(a.q, "lake");
}

TEST(test_limits_and_ordered_cursor)
{
	int64_t fi;

	REQUIRE(setup("linger = 0\nbatch_max_records = 10\nmax_inflight = 4\n", 25, NULL) == 0);
	spin(50);
	REQUIRE(fk.n == 3);
	CHECK_EQ_INT(fk.count[0], 10);
	CHECK_EQ_INT(fk.count[1], 10);
	CHECK_EQ_INT(fk.count[2], 5);
	CHECK_EQ_INT(fk.first[1], 11);
	CHECK_EQ_INT(body_lines(fk.sent[0], &fi), 10);
	CHECK_EQ_INT(fi, 1);
	CHECK_EQ_INT(body_lines(fk.sent[2], &fi), 5);
	CHECK_EQ_INT(fi, 21);
	/* The second batch is acknowledged first: the cursor must wait. */
	output_batch_done(fk.o, fk.sent[1], OUT_OK, NULL);
	spin(10);
	CHECK_EQ_INT(cursor(), 0);
	output_batch_done(fk.o, fk.sent[0], OUT_OK, NULL);
	spin(10);
	CHECK_EQ_INT(cursor(), 20);
	output_batch_done(fk.o, fk.sent[2], OUT_OK, NULL);
	spin(10);
	CHECK_EQ_INT(cursor(), 25);
	teardown();
}

TEST(test_inflight_window)
{
	REQUIRE(setup("linger = 0\nbatch_max_records = 1\nmax_inflight = 3\n", 10, NULL) == 0);
	spin(50);
	CHECK_EQ_INT(fk.n, 3);
	output_batch_done(fk.o, fk.sent[0], OUT_OK, NULL);
	spin(20);
	CHECK_EQ_INT(fk.n, 4);
	CHECK_EQ_INT(fk.first[3], 4);
	teardown();
}

TEST(test_retry_keeps_batch_id)
{
	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 7, NULL) == 0);
	spin(30);
	REQUIRE(fk.n == 1);
	output_batch_done(fk.o, fk.sent[0], OUT_RETRY, "broker busy");
	/* retry_base 10 ms at the bottom of its jitter: 5 ms. */
	spin(4);
	CHECK_EQ_INT(fk.n, 1); /* not before the backoff */
	spin(1);
	REQUIRE(fk.n == 2);
	CHECK_EQ_STR(fk.ids[1], fk.ids[0]);
	CHECK_EQ_INT(fk.first[1], 1);
	CHECK_EQ_INT(fk.last[1], 7);
	CHECK_EQ_INT(fk.attempt[1], 1);
	output_batch_done(fk.o, fk.sent[1], OUT_OK, NULL);
	spin(10);
	CHECK_EQ_INT(cursor(), 7);
	teardown();
}

static int dlq_seq_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	int64_t *seqs = arg;

	seqs[seqs[0] + 1] = e->seq;
	seqs[0]++;
	CHECK(strstr(e->reason, "payload format invalid") != NULL);
	CHECK_EQ_STR(e->origin, "output:lake");
	return 0;
}

/* The remote refuses any batch holding seq 5 or seq 6 for good. */
TEST(test_reject_isolates_records)
{
	int64_t seqs[16] = { 0 }, acked = 0;

	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 9, NULL) == 0);
	for (int round = 0; round < 40; round++) {
		spin(10);
		while (fk.inflight) {
			for (int i = 0; i < fk.n; i++) {
				struct batch *b = fk.sent[i];
				bool bad;

				if (!b)
					continue;
				bad = fk.first[i] <= 6 && fk.last[i] >= 5;
				fk.sent[i] = NULL;
				fk.inflight--;
				if (!bad)
					acked += fk.count[i];
				output_batch_done(fk.o, b, bad ? OUT_REJECT : OUT_OK,
						  "broker rejected publish: payload format invalid");
				break;
			}
		}
	}
	CHECK_EQ_INT(acked, 7);
	CHECK_EQ_INT(cursor(), 9);
	CHECK_EQ_INT(queue_dlq_list(a.q, 0, 10, dlq_seq_cb, seqs), 0);
	CHECK_EQ_INT(seqs[0], 2);
	CHECK_EQ_INT(seqs[1], 5);
	CHECK_EQ_INT(seqs[2], 6);
	teardown();
}

TEST(test_too_large_splits)
{
	int64_t total = 0;

	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 9, NULL) == 0);
	fk.max_count = 2;
	spin(50);
	for (int i = 0; i < fk.n; i++) {
		CHECK(fk.count[i] <= 2);
		total += fk.count[i];
		output_batch_done(fk.o, fk.sent[i], OUT_OK, NULL);
	}
	spin(20);
	CHECK_EQ_INT(total, 9);
	CHECK_EQ_INT(cursor(), 9);
	teardown();
}

TEST(test_one_stream_per_batch)
{
	static const char *const streams[] = { "a", "a", "a", "b", "b", "a" };

	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 6, streams) == 0);
	spin(50);
	REQUIRE(fk.n == 3);
	CHECK_EQ_INT(fk.count[0], 3);
	CHECK_EQ_INT(fk.count[1], 2);
	CHECK_EQ_INT(fk.count[2], 1);
	teardown();
}

TEST(test_linger_waits_for_more)
{
	REQUIRE(setup("batch_max_records = 100\nlinger = 300ms\n", 3, NULL) == 0);
	spin(100);
	CHECK_EQ_INT(fk.n, 0);
	spin(400);
	CHECK_EQ_INT(fk.n, 1);
	teardown();
}

TEST(test_routing_by_stream)
{
	static const char *const streams[] = { "a1", "b", "b", "a2", "_agent", "b" };

	REQUIRE(setup("linger = 0\nbatch_max_records = 100\nstreams = x, a* \n", 6, streams) == 0);
	spin(50);
	/* a1 | a2 | _agent: one stream per batch, b never sent. */
	REQUIRE(fk.n == 3);
	CHECK_EQ_INT(fk.first[0], 1);
	CHECK_EQ_INT(fk.count[0], 1);
	CHECK_EQ_INT(fk.first[1], 4);
	CHECK_EQ_INT(fk.count[1], 1);
	CHECK_EQ_INT(fk.first[2], 5);
	for (int i = 0; i < fk.n; i++)
		output_batch_done(fk.o, fk.sent[i], OUT_OK, NULL);
	spin(20);
	/* The trailing b (seq 6) is passed too: the output is done with all. */
	CHECK_EQ_INT(cursor(), 6);
	teardown();
}

TEST(test_only_other_streams_moves_cursor)
{
	static const char *const streams[] = { "b", "b", "b" };

	REQUIRE(setup("linger = 0\nstreams = a\n", 3, streams) == 0);
	spin(50);
	CHECK_EQ_INT(fk.n, 0);
	CHECK_EQ_INT(cursor(), 3);
	teardown();
}

static int count_dlq_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	(*(int *)arg)++;
	CHECK(strstr(e->reason, "HTTP 400") != NULL);
	return 0;
}

TEST(test_dead_batch_goes_whole_to_dlq)
{
	int n = 0;

	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 5, NULL) == 0);
	spin(30);
	REQUIRE(fk.n == 1);
	output_batch_done(fk.o, fk.sent[0], OUT_DEAD, "HTTP 400: bad request");
	spin(20);
	CHECK_EQ_INT(fk.n, 1); /* no split, no retry */
	CHECK_EQ_INT(queue_dlq_list(a.q, 0, 10, count_dlq_cb, &n), 0);
	CHECK_EQ_INT(n, 5);
	CHECK_EQ_INT(cursor(), 5);
	teardown();
}

TEST(test_retry_after_is_honoured)
{
	REQUIRE(setup("linger = 0\nbatch_max_records = 100\n", 2, NULL) == 0);
	spin(30);
	REQUIRE(fk.n == 1);
	output_retry_after(fk.o, 400);
	output_batch_done(fk.o, fk.sent[0], OUT_RETRY, "HTTP 429");
	spin(200);
	CHECK_EQ_INT(fk.n, 1); /* retry_base is 10 ms, Retry-After 400 ms */
	spin(400);
	CHECK_EQ_INT(fk.n, 2);
	teardown();
}

static int append_more(int from, int n)
{
	for (int i = from; i < from + n; i++) {
		char key[32], data[32];
		struct qrec_in r = { .stream = "s", .key = key, .data = data };
		int rc;

		snprintf(key, sizeof(key), "k%d", i);
		r.len = (size_t)snprintf(data, sizeof(data), "{\"i\":%d}", i + 1);
		if ((rc = queue_append(a.q, &r, NULL)))
			return rc;
	}
	return queue_commit(a.q);
}

/* After a restart, an unfinished batch goes out again as the same records
 * with the same id, even though more records arrived meanwhile. */
TEST(test_unfinished_batches_keep_their_ids_across_restarts)
{
	char id0[48], id1[48];

	REQUIRE(setup("linger = 0\nbatch_max_records = 4\nmax_inflight = 2\n", 6, NULL) == 0);
	spin(30);
	REQUIRE(fk.n == 2);
	CHECK_EQ_INT(fk.last[0], 4);
	CHECK_EQ_INT(fk.last[1], 6);
	snprintf(id0, sizeof(id0), "%s", fk.ids[0]);
	snprintf(id1, sizeof(id1), "%s", fk.ids[1]);
	CHECK_EQ_INT(queue_commit(a.q), 0);
	/* agentd stops with both batches unacknowledged. */
	output_free(a.outputs[0]);
	memset(&fk, 0, sizeof(fk));
	REQUIRE(append_more(6, 3) == 0);
	REQUIRE(output_create(&a, cfg->outputs, &a.outputs[0]) == 0);
	REQUIRE(output_start(a.outputs[0]) == 0);
	spin(30);
	REQUIRE(fk.n == 2);
	CHECK_EQ_STR(fk.ids[0], id0);
	CHECK_EQ_INT(fk.first[0], 1);
	CHECK_EQ_INT(fk.last[0], 4);
	CHECK_EQ_STR(fk.ids[1], id1);
	CHECK_EQ_INT(fk.last[1], 6);   /* not 8: the same batch as before */
	output_batch_done(fk.o, fk.sent[0], OUT_OK, NULL);
	spin(30);
	REQUIRE(fk.n == 3);
	CHECK_EQ_INT(fk.first[2], 7);  /* then new batches */
	CHECK_EQ_INT(fk.last[2], 9);
	teardown();
}

/* Four batches in flight fail together: one round, so the delay is that of
 * one failure (retry_base), not of four (8 x retry_base). */
TEST(test_one_round_of_failures_backs_off_once)
{
	REQUIRE(setup("linger = 0\nbatch_max_records = 1\nmax_inflight = 4\n"
		      "retry_base = 1s\nretry_max = 60s\n", 8, NULL) == 0);
	spin(1);
	REQUIRE(fk.n == 4);
	for (int i = 0; i < 4; i++)
		output_batch_done(fk.o, fk.sent[i], OUT_RETRY, "HTTP 503");
	/* 1 s at the bottom of its jitter: 500 ms. Nothing new meanwhile. */
	spin(499);
	CHECK_EQ_INT(fk.n, 4);
	spin(1);
	REQUIRE(fk.n == 8);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ_STR(fk.ids[4 + i], fk.ids[i]);   /* the same batches, in seq order */
		CHECK_EQ_INT(fk.attempt[4 + i], 1);
	}
	/* The retries fail again: the second round doubles the delay once. */
	for (int i = 4; i < 8; i++)
		output_batch_done(fk.o, fk.sent[i], OUT_RETRY, "HTTP 503");
	spin(999);
	CHECK_EQ_INT(fk.n, 8);
	spin(1);
	REQUIRE(fk.n == 12);
	for (int i = 8; i < 12; i++)
		output_batch_done(fk.o, fk.sent[i], OUT_OK, NULL);
	spin(1);
	CHECK_EQ_INT(fk.first[12], 5);    /* then the rest */
	teardown();
}

/* A loopback port that refuses connections until listen_port() is called. */
static int bind_port(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		close(fd);
		return -1;
	}
	fk.probe_port = ntohs(sa.sin_port);
	return fd;
}

static bool probes_done_reach(void *arg)
{
	return fk.probes_done >= *(int *)arg;
}

/* Let the next probe run: step the test clock to it, then wait for its
 * real connect to finish. */
static bool next_probe(int64_t step)
{
	int want = fk.probes_done + 1;

	spin(step);
	return tc_wait_io(a.loop, probes_done_reach, &want);
}

/* The endpoint refuses connections, then listens again: the probe (a real
 * connect every retry_probe) ends the backoff long before it would end. */
TEST(test_probe_ends_backoff_when_endpoint_returns)
{
	int fd = bind_port(0), port = fk.probe_port;

	REQUIRE(fd >= 0);
	use_type = &fake_probing_type;
	REQUIRE(setup("linger = 0\nbatch_max_records = 100\nretry_base = 10s\nretry_max = 60s\n"
		      "retry_probe = 1s\n", 3, NULL) == 0);
	fk.probe_port = port;
	spin(1);
	REQUIRE(fk.n == 1);
	output_unreachable(fk.o);
	output_batch_done(fk.o, fk.sent[0], OUT_RETRY, "connection refused");
	/* The retry is due in 5 s; the first probe comes after 1 s. */
	spin(999);
	CHECK_EQ_INT(fk.probes, 0);
	REQUIRE(next_probe(1));
	CHECK_EQ_INT(fk.probe_err, -ECONNREFUSED);
	CHECK_EQ_INT(fk.n, 1);
	/* The endpoint is back. */
	REQUIRE(listen(fd, 8) == 0);
	REQUIRE(next_probe(1000));
	CHECK_EQ_INT(fk.probe_err, 0);
	spin(0);
	REQUIRE(fk.n == 2);             /* at 2 s, not 5 s */
	CHECK_EQ_STR(fk.ids[1], fk.ids[0]);
	output_batch_done(fk.o, fk.sent[1], OUT_OK, NULL);
	spin(1);
	CHECK_EQ_INT(cursor(), 3);
	/* No probing once delivered. */
	spin(5000);
	CHECK_EQ_INT(fk.probes, 2);
	teardown();
	close(fd);
}

/* A server that answers 503 still accepts connections: that says nothing
 * new and must not shorten the wait. Once it stops accepting connections
 * (seen by a probe) and then accepts them again, the wait ends. */
TEST(test_probe_after_an_answer_waits_until_endpoint_was_down)
{
	int fd = bind_port(0), port;

	REQUIRE(fd >= 0);
	REQUIRE(listen(fd, 8) == 0);
	port = fk.probe_port;
	use_type = &fake_probing_type;
	REQUIRE(setup("linger = 0\nbatch_max_records = 100\nretry_base = 10s\nretry_max = 60s\n"
		      "retry_probe = 1s\n", 3, NULL) == 0);
	fk.probe_port = port;
	spin(1);
	REQUIRE(fk.n == 1);
	output_batch_done(fk.o, fk.sent[0], OUT_RETRY, "HTTP 503: busy");
	/* Probes at 1 s and 2 s connect; no early attempt. */
	REQUIRE(next_probe(1000));
	CHECK_EQ_INT(fk.probe_err, 0);
	REQUIRE(next_probe(1000));
	CHECK_EQ_INT(fk.probe_err, 0);
	spin(0);
	CHECK_EQ_INT(fk.n, 1);
	/* The server goes away: refused at 3 s. */
	close(fd);
	fd = bind_port(port);
	REQUIRE(fd >= 0);
	REQUIRE(next_probe(1000));
	CHECK_EQ_INT(fk.probe_err, -ECONNREFUSED);
	CHECK_EQ_INT(fk.n, 1);
	/* Back at 4 s: the wait (until 5 s) ends. */
	REQUIRE(listen(fd, 8) == 0);
	REQUIRE(next_probe(1000));
	CHECK_EQ_INT(fk.probe_err, 0);
	spin(0);
	CHECK_EQ_INT(fk.n, 2);
	teardown();
	close(fd);
}

/* Without a probe the same answered failure waits the whole delay. */
TEST(test_answered_failure_waits_whole_delay)
{
	int fd = bind_port(0), port;

	REQUIRE(fd >= 0);
	REQUIRE(listen(fd, 8) == 0);
	port = fk.probe_port;
	use_type = &fake_probing_type;
	REQUIRE(setup("linger = 0\nbatch_max_records = 100\nretry_base = 4s\nretry_max = 60s\n"
		      "retry_probe = 1s\n", 3, NULL) == 0);
	fk.probe_port = port;
	spin(1);
	REQUIRE(fk.n == 1);
	output_batch_done(fk.o, fk.sent[0], OUT_RETRY, "HTTP 503: busy");
	/* 2 s: the probe at 1 s connects, and the retry still waits. */
	REQUIRE(next_probe(1000));
	spin(999);
	CHECK_EQ_INT(fk.n, 1);
	spin(1);
	CHECK_EQ_INT(fk.n, 2);
	CHECK_EQ_INT(fk.probes, 1);     /* capped by the backoff: none at 2 s */
	teardown();
	close(fd);
}

int main(void)
{
	RUN(test_limits_and_ordered_cursor);
	RUN(test_inflight_window);
	RUN(test_retry_keeps_batch_id);
	RUN(test_reject_isolates_records);
	RUN(test_too_large_splits);
	RUN(test_one_stream_per_batch);
	RUN(test_linger_waits_for_more);
	RUN(test_routing_by_stream);
	RUN(test_only_other_streams_moves_cursor);
	RUN(test_dead_batch_goes_whole_to_dlq);
	RUN(test_retry_after_is_honoured);
	RUN(test_unfinished_batches_keep_their_ids_across_restarts);
	RUN(test_one_round_of_failures_backs_off_once);
	RUN(test_probe_ends_backoff_when_endpoint_returns);
	RUN(test_probe_after_an_answer_waits_until_endpoint_was_down);
	RUN(test_answered_failure_waits_whole_delay);
	TEST_END();
}
