/* test_queue_budget.c - unit tests of what leaves the durable queue and
 * when, against real SQLite files: each output's cursor and the trim behind
 * the slowest, a new output's backlog, the disk budget (drop_oldest with its
 * gap markers, block, a filesystem that reports no size), and the dead-letter
 * queue.
 */
#include <sys/statvfs.h>

#include "test.h"
#include "queue_fixture.h"

TEST(t_cursors_two_outputs)
{
	static const char *const outs[] = { "a", "b" };
	struct queue *q;
	struct queue_stats st;
	struct collect c = { 0 };

	setup();
	q = open_q(outs, 2);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor(q, "a"), 0);
	CHECK_EQ_INT(queue_cursor(q, "nope"), -ENOENT);
	CHECK_EQ_INT(append_n(q, "s", "k", 1, 10, 10), 0);
	CHECK_EQ_INT(queue_cursor_set(q, "a", 3), -EINVAL); /* not durable yet */
	CHECK_EQ_INT(queue_commit(q), 0);

	CHECK_EQ_INT(queue_cursor_set(q, "a", 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 10); /* b has not passed anything */
	CHECK_EQ_INT(st.first_seq, 1);

	CHECK_EQ_INT(queue_cursor_set(q, "b", 4), 0);
	CHECK_EQ_INT(queue_cursor_set(q, "b", 2), 0); /* backwards: no-op */
	CHECK_EQ_INT(queue_cursor(q, "b"), 4);
	CHECK_EQ_INT(queue_cursor_set(q, "zz", 4), -ENOENT);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 6);
	CHECK_EQ_INT(st.first_seq, 5);
	CHECK_EQ_INT(st.last_seq, 10);
	CHECK_EQ_INT(queue_read(q, 0, 100, collect_cb, &c), 6);
	CHECK_EQ_INT(c.seq[0], 5);
	queue_close(q);

	/* Cursors are durable. */
	q = open_q(outs, 2);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor(q, "a"), 10);
	CHECK_EQ_INT(queue_cursor(q, "b"), 4);
	queue_close(q);
	teardown();
}

TEST(t_new_output_backlog)
{
	static const char *const one[] = { "a" };
	static const char *const two[] = { "a", "c" };
	static const char *const only_c[] = { "c" };
	struct queue *q;
	struct queue_stats st;
	int64_t n = -1, oldest = -1;

	setup();
	q = open_q(one, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 1, 10, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_backlog(q, "a", &n, &oldest), 0);
	CHECK_EQ_INT(n, 10);
	CHECK_EQ_INT(oldest, 1700000000001LL);
	CHECK_EQ_INT(queue_cursor_set(q, "a", 4), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_backlog(q, "a", &n, &oldest), 0);
	CHECK_EQ_INT(n, 6);
	CHECK_EQ_INT(oldest, 1700000000005LL);
	queue_close(q);

	q = open_q(two, 2);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor(q, "c"), 4);
	CHECK_EQ_INT(queue_backlog(q, "c", &n, &oldest), 0);
	CHECK_EQ_INT(n, 6);
	CHECK_EQ_INT(queue_cursor_set(q, "a", 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_backlog(q, "a", &n, &oldest), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(oldest, 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 6); /* c holds them */
	CHECK_EQ_INT(queue_backlog(q, "zz", &n, &oldest), -ENOENT);
	queue_close(q);

	/* Output a removed from the config: its cursor goes, c alone rules. */
	q = open_q(only_c, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor(q, "a"), -ENOENT);
	CHECK_EQ_INT(queue_cursor_set(q, "c", 7), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 3);
	queue_close(q);

	/* A new output on an empty queue starts at 0. */
	q = open_q(only_c, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor_set(q, "c", 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	q = open_q(two, 2);
	REQUIRE(q);
	CHECK_EQ_INT(queue_cursor(q, "a"), 0);
	queue_close(q);
	teardown();
}

TEST(t_trim_bounded)
{
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct queue_stats st;
	int64_t blocks, left;

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	/* About 90 blocks of 128 KiB. */
	CHECK_EQ_INT(append_n(q, "s", "k", 1, 12000, 1000), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	blocks = raw_int("SELECT count(*) FROM blocks");
	CHECK(blocks > 80);
	CHECK_EQ_INT(raw_int("SELECT sum(count) FROM blocks"), 12000);
	CHECK_EQ_INT(queue_cursor_set(q, "o", 12000), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	/* Gone for readers and counts at once... */
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 0);
	CHECK_EQ_INT(st.first_seq, 0);
	CHECK_EQ_INT(st.last_seq, 0);
	/* ...but deleted a bounded number of blocks per call. */
	left = raw_int("SELECT count(*) FROM blocks");
	CHECK(left > 0 && left < blocks);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM block_data"), left);
	/* The rest goes on later calls. */
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK(queue_pending(q) > 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM blocks"), 0);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM block_data"), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 0);
	queue_close(q);
	teardown();
}

struct gapscan {
	int64_t data, gaps, gap_count, first, last;
	int64_t max_seq, first_data;
	bool bad;
};

static int gap_cb(const struct qrec *r, void *arg)
{
	struct gapscan *g = arg;
	long long a, b, n;
	char buf[256];
	size_t len = r->len < sizeof(buf) - 1 ? r->len : sizeof(buf) - 1;

	if (r->seq > g->max_seq)
		g->max_seq = r->seq;
	if (r->kind != REC_GAP) {
		if (!g->first_data)
			g->first_data = r->seq;
		g->data++;
		return 0;
	}
	memcpy(buf, r->data, len);
	buf[len] = '\0';
	if (strcmp(r->stream, "_agent") != 0 ||
	    sscanf(buf,
		   "{\"gap\":{\"first_seq\":%lld,\"last_seq\":%lld,\"count\":%lld,"
		   "\"reason\":\"disk_full\"}}",
		   &a, &b, &n) != 3) {
		g->bad = true;
		return 0;
	}
	snprintf(buf, sizeof(buf), "gap:%lld-%lld", a, b);
	if (strcmp(r->key, buf) != 0)
		g->bad = true;
	/* Each gap starts after the previous one and is well formed. */
	if ((g->gaps && a <= g->last) || b < a || n < 1 || n > b - a + 1)
		g->bad = true;
	if (!g->gaps)
		g->first = a;
	g->last = b;
	g->gaps++;
	g->gap_count += n;
	return 0;
}

TEST(t_budget_drop_oldest)
{
	static const char *const outs[] = { "dead" };
	struct queue_opts o = opts_default();
	struct queue *q = NULL;
	struct queue_stats st;
	struct gapscan g = { 0 };
	int64_t max_disk = 0, total = 0;

	setup();
	o.max_bytes = 2 << 20;
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	/* 8 MB through a 2 MB budget with an output that never acks. */
	for (int i = 0; i < 80; i++) {
		CHECK_EQ_INT(append_n(q, "s", "k", i * 100, 100, 1000), 0);
		total += 100;
		CHECK_EQ_INT(queue_commit(q), 0);
		CHECK_EQ_INT(queue_enforce_budget(q), 0);
		CHECK_EQ_INT(queue_commit(q), 0);
		CHECK(!queue_full(q));
		CHECK_EQ_INT(queue_stats(q, &st), 0);
		if (st.disk_bytes > max_disk)
			max_disk = st.disk_bytes;
	}
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.evicted_records > 0);
	CHECK(max_disk < o.max_bytes + o.max_bytes / 2);
	CHECK_EQ_INT(queue_read(q, 0, 100000, gap_cb, &g), st.records);
	CHECK(!g.bad);
	CHECK(g.gaps > 0);
	/* The first gap starts at the first record ever; together the gaps
	 * account for every evicted record, and survivors plus evicted are
	 * all that was appended. */
	CHECK_EQ_INT(g.first, 1);
	CHECK_EQ_INT(g.gap_count, st.evicted_records);
	CHECK_EQ_INT(g.data + g.gap_count, total);
	CHECK(g.first_data > g.last);
	CHECK_EQ_INT(g.max_seq, total + g.gaps);
	fprintf(stderr, "  drop_oldest: %" PRId64 " evicted in %" PRId64
		" gaps, %" PRId64 " kept, max disk %" PRId64 " bytes\n",
		st.evicted_records, g.gaps, g.data, max_disk);
	queue_close(q);

	/* The evicted count is durable. */
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	{
		int64_t ev = st.evicted_records;

		CHECK_EQ_INT(queue_stats(q, &st), 0);
		CHECK_EQ_INT(st.evicted_records, ev);
	}
	queue_close(q);
	teardown();
}

TEST(t_budget_block)
{
	static const char *const outs[] = { "o" };
	struct queue_opts o = opts_default();
	struct queue *q = NULL;
	struct queue_stats st;
	int err = 0, i;
	int64_t last = 0;

	setup();
	o.max_bytes = 1 << 20;
	o.on_full = ON_FULL_BLOCK;
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	for (i = 0; i < 100 && !err; i++) {
		err = append_n(q, "s", "k", i * 50, 50, 1000);
		CHECK_EQ_INT(queue_commit(q), 0);
		CHECK_EQ_INT(queue_enforce_budget(q), 0);
	}
	CHECK_EQ_INT(err, -ENOSPC);
	CHECK(queue_full(q));
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.full);
	CHECK_EQ_INT(st.evicted_records, 0);
	last = st.last_seq;
	CHECK_EQ_INT(append_n(q, "s", "again", 0, 1, 10), -ENOSPC);

	/* The output catches up: trimming frees pages and lifts the block. */
	CHECK_EQ_INT(queue_cursor_set(q, "o", last), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK(!queue_full(q));
	CHECK_EQ_INT(append_n(q, "s", "again", 0, 1, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	teardown();
}

/* A fake filesystem for the budget: what statvfs reports. */
static struct statvfs fake_vfs;

static int fake_statvfs(const char *path, struct statvfs *buf)
{
	*buf = fake_vfs;
	return 0;
}

/* Run fn with stderr (where the log goes) in a file; returns its text. */
static char *capture_log(void (*fn)(void *), void *arg)
{
	char path[160], *text;
	int fd, saved;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/log.txt", tmpdir);
	fflush(stderr);
	log_set_level(LOGL_INFO);
	saved = dup(2);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (saved < 0 || fd < 0)
		return NULL;
	dup2(fd, 2);
	close(fd);
	fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	log_set_level(LOGL_ERROR);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	if (text && fread(text, 1, (size_t)n, f) != (size_t)n)
		text[0] = '\0';
	fclose(f);
	unlink(path);
	return text;
}

static int count_str(const char *s, const char *needle)
{
	int n = 0;

	for (; s && (s = strstr(s, needle)); s++)
		n++;
	return n;
}

static void fill_and_enforce(void *arg)
{
	static int round;
	struct queue *q = arg;

	round++;
	for (int i = 0; i < 20; i++) {
		CHECK_EQ_INT(append_n(q, "s", round == 1 ? "k" : "l", i * 100, 100, 500), 0);
		CHECK_EQ_INT(queue_commit(q), 0);
		CHECK_EQ_INT(queue_enforce_budget(q), 0);
		CHECK_EQ_INT(queue_commit(q), 0);
	}
}

/* FUSE and some network filesystems report zero blocks: the room is
 * unknown, not zero. The budget stays max_bytes, nothing is evicted, and
 * the log and status say so (once). */
TEST(t_budget_fs_without_size)
{
	static const char *const outs[] = { "o" };
	struct queue_opts o = opts_default();
	struct queue_disk_ops ops = { .statvfs = fake_statvfs };
	struct queue_stats st;
	struct queue *q = NULL;
	char *log;

	setup();
	memset(&fake_vfs, 0, sizeof(fake_vfs));
	fake_vfs.f_bsize = fake_vfs.f_frsize = 4096;
	queue_set_disk_ops(&ops);
	o.max_bytes = 64 << 20;
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	log = capture_log(fill_and_enforce, q);
	CHECK_EQ_INT(queue_budget(q), 64 << 20);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.disk_size_unknown);
	CHECK(!st.disk_limited);
	CHECK(!st.full);
	CHECK_EQ_INT(st.max_bytes, 64 << 20);
	CHECK_EQ_INT(st.evicted_records, 0);
	CHECK_EQ_INT(st.records, 2000);
	CHECK_EQ_INT(count_str(log, "reports no size"), 1);
	CHECK_EQ_INT(count_str(log, "room for -"), 0);
	free(log);

	/* Odd values are clamped, not trusted: more available than there
	 * is, a unit of zero, a count that overflows. None shows a negative
	 * size. */
	fake_vfs.f_blocks = 1000;
	fake_vfs.f_bavail = 5000;
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(!st.disk_size_unknown);
	CHECK(st.disk_limited);
	CHECK(queue_budget(q) > 0);
	fake_vfs.f_bsize = fake_vfs.f_frsize = 0;
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK_EQ_INT(queue_budget(q), 64 << 20);
	fake_vfs.f_bsize = fake_vfs.f_frsize = 1 << 20;
	fake_vfs.f_blocks = fake_vfs.f_bavail = (fsblkcnt_t)-1;
	CHECK_EQ_INT(queue_enforce_budget(q), 0);
	CHECK_EQ_INT(queue_budget(q), 64 << 20);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(!st.disk_limited);

	/* A filesystem that is really full: the budget falls to its floor
	 * and the message names no negative room. */
	fake_vfs.f_bsize = fake_vfs.f_frsize = 4096;
	fake_vfs.f_blocks = 1000;
	fake_vfs.f_bavail = 0;
	queue_close(q);
	q = NULL;
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	log = capture_log(fill_and_enforce, q);
	CHECK_EQ_INT(queue_budget(q), 512 << 10);
	CHECK_EQ_INT(count_str(log, "filesystem is full"), 1);
	CHECK_EQ_INT(count_str(log, "for -"), 0);
	CHECK_EQ_INT(count_str(log, "of -"), 0);
	free(log);
	queue_close(q);
	queue_set_disk_ops(NULL);
	teardown();
}

struct dlqcol {
	int n;
	int64_t id[16];
	char key[16][128];
	char reason[16][256];
	char origin[16][64];
	int64_t seq[16];
	char data[16][64];
};

static int dlq_col_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	struct dlqcol *c = arg;

	if (c->n < 16) {
		c->id[c->n] = e->id;
		strcpy(c->key[c->n], e->key);
		strcpy(c->reason[c->n], e->reason);
		strcpy(c->origin[c->n], e->origin);
		c->seq[c->n] = e->seq;
		memcpy(c->data[c->n], data, e->len < 63 ? e->len : 63);
		c->data[c->n][e->len < 63 ? e->len : 63] = '\0';
	}
	c->n++;
	return 0;
}

TEST(t_dlq)
{
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct queue_stats st;
	struct dlqcol c = { 0 };
	struct collect rc = { 0 };
	int64_t cnt = 0;
	char longreason[600];

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	memset(longreason, 'r', sizeof(longreason) - 1);
	longreason[sizeof(longreason) - 1] = '\0';
	CHECK_EQ_INT(queue_dlq_add(q, "input:t", "s", 0, "k1", "bad json",
				   "{x", 2),
		     0);
	CHECK_EQ_INT(queue_dlq_add(q, "output:m", "s", 42, "k2", longreason,
				   "{\"a\":1}", 7),
		     0);
	CHECK_EQ_INT(queue_dlq_add(q, "output:m", "s", 43, "k3", "413",
				   "{\"a\":2}", 7),
		     0);
	CHECK_EQ_INT(queue_pending(q), 3);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.dlq_records, 3);

	CHECK_EQ_INT(queue_dlq_list(q, 0, 2, dlq_col_cb, &c), 0);
	REQUIRE(c.n == 2);
	CHECK_EQ_STR(c.key[0], "k1");
	CHECK_EQ_STR(c.origin[0], "input:t");
	CHECK_EQ_STR(c.data[0], "{x");
	CHECK_EQ_INT(c.seq[1], 42);
	CHECK_EQ_INT(strlen(c.reason[1]), 255);
	/* Next page. */
	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(queue_dlq_list(q, 2, 10, dlq_col_cb, &c), 0);
	CHECK_EQ_INT(c.n, 1);
	CHECK_EQ_STR(c.key[0], "k3");

	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(queue_dlq_get(q, 2, dlq_col_cb, &c), 0);
	CHECK_EQ_INT(c.n, 1);
	CHECK_EQ_STR(c.data[0], "{\"a\":1}");
	CHECK_EQ_INT(queue_dlq_get(q, 99, dlq_col_cb, &c), -ENOENT);

	/* Replay one: back in the log with a new seq and a suffixed key. */
	CHECK_EQ_INT(queue_dlq_replay(q, 2, &cnt), 0);
	CHECK_EQ_INT(cnt, 1);
	CHECK_EQ_INT(queue_dlq_replay(q, 2, &cnt), -ENOENT);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &rc), 1);
	CHECK_EQ_STR(rc.key[0], "k2:replay:2");
	CHECK_EQ_STR(rc.data[0], "{\"a\":1}");
	CHECK_EQ_INT(rc.kind[0], REC_DATA);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.dlq_records, 2);
	CHECK_EQ_INT(st.records, 1);

	/* Purge one, then replay all that is left. */
	CHECK_EQ_INT(queue_dlq_purge(q, 1, &cnt), 0);
	CHECK_EQ_INT(cnt, 1);
	CHECK_EQ_INT(queue_dlq_purge(q, 1, &cnt), -ENOENT);
	CHECK_EQ_INT(queue_dlq_replay(q, 0, &cnt), 0);
	CHECK_EQ_INT(cnt, 1);
	CHECK_EQ_INT(queue_commit(q), 0);
	memset(&rc, 0, sizeof(rc));
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &rc), 2);
	CHECK_EQ_STR(rc.key[1], "k3:replay:3");
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.dlq_records, 0);
	CHECK_EQ_INT(st.records, 2);

	/* Purge all. */
	CHECK_EQ_INT(queue_dlq_add(q, "o", NULL, 0, NULL, "r", NULL, 0), 0);
	CHECK_EQ_INT(queue_dlq_add(q, "o", "s", 0, "k", "r", "", 0), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_dlq_purge(q, 0, &cnt), 0);
	CHECK_EQ_INT(cnt, 2);
	CHECK_EQ_INT(queue_dlq_purge(q, 0, &cnt), 0);
	CHECK_EQ_INT(cnt, 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	teardown();
}

int main(void)
{
	log_set_level(LOGL_ERROR);
	RUN(t_cursors_two_outputs);
	RUN(t_new_output_backlog);
	RUN(t_trim_bounded);
	RUN(t_budget_drop_oldest);
	RUN(t_budget_block);
	RUN(t_budget_fs_without_size);
	RUN(t_dlq);
	if (tmpdir[0])
		teardown();
	TEST_END();
}
