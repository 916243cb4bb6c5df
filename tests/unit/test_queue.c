/* test_queue.c - unit tests of the durable queue (records in compressed
 * blocks) against real SQLite files: append, commit and read, sequence
 * numbers that never repeat, dedupe, positions that commit with their
 * records, blocks and big records, corruption and old schemas, read-only
 * opens, allocation and write failures. Cursors, the budget and dead
 * letters are in test_queue_budget.c.
 */
#include <signal.h>
#include <sys/wait.h>

#include "crashvfs.h"
#include "test.h"
#include "queue_fixture.h"

static int count_cb(const struct qrec *r, void *arg)
{
	(*(int64_t *)arg)++;
	return 0;
}

TEST(t_append_commit_read)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	struct collect c = { 0 };
	struct qrec_in r = { .stream = "s", .key = "k1", .ts_wall_ms = 11,
			     .ts_mono_ms = 22, .clock = CLOCK_SYNCED,
			     .data = "{\"v\":1}", .len = 7 };
	int64_t s1 = 0, s2 = 0, s3 = 0;

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_committed_seq(q), 0);
	CHECK_EQ_INT(queue_append(q, &r, &s1), 0);
	r.key = "k2";
	r.data = "{\"v\":2}";
	CHECK_EQ_INT(queue_append(q, &r, &s2), 0);
	r.key = "k3";
	r.data = "{\"v\":3}";
	r.clock = CLOCK_UNSYNCED;
	CHECK_EQ_INT(queue_append(q, &r, &s3), 0);
	CHECK(s1 > 0 && s2 == s1 + 1 && s3 == s2 + 1);
	CHECK_EQ_INT(queue_pending(q), 3);
	/* Not committed: invisible to readers. */
	CHECK_EQ_INT(queue_committed_seq(q), 0);
	CHECK_EQ_INT(queue_read(q, 0, 100, collect_cb, &c), 0);
	CHECK_EQ_INT(c.n, 0);

	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_pending(q), 0);
	CHECK_EQ_INT(queue_committed_seq(q), s3);
	CHECK_EQ_INT(queue_read(q, 0, 100, collect_cb, &c), 3);
	REQUIRE(c.n == 3);
	CHECK_EQ_INT(c.seq[0], s1);
	CHECK_EQ_INT(c.seq[2], s3);
	CHECK_EQ_STR(c.key[0], "k1");
	CHECK_EQ_STR(c.data[1], "{\"v\":2}");
	CHECK_EQ_INT(c.kind[0], REC_DATA);
	CHECK_EQ_INT(c.ts_wall[0], 11);
	CHECK_EQ_INT(c.ts_mono[0], 22);
	CHECK_EQ_INT(c.clock[0], CLOCK_SYNCED);
	CHECK_EQ_INT(c.clock[2], CLOCK_UNSYNCED);

	/* after_seq, max and early stop. */
	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(queue_read(q, s1, 1, collect_cb, &c), 1);
	CHECK_EQ_INT(c.seq[0], s2);
	memset(&c, 0, sizeof(c));
	c.stop_after = 1;
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &c), 1);

	/* An appended but uncommitted record stays invisible. */
	r.key = "k4";
	CHECK_EQ_INT(queue_append(q, &r, NULL), 0);
	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &c), 3);
	queue_close(q); /* commits */

	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_committed_seq(q), s3 + 1);
	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &c), 4);
	queue_close(q);
	queue_close(NULL);
	teardown();
}

static int cb_abort(const struct qrec *r, void *arg)
{
	return -ECANCELED;
}

TEST(t_read_cb_error)
{
	struct queue *q;

	setup();
	q = open_q(NULL, 0);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 3, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_read(q, 0, 10, cb_abort, NULL), -ECANCELED);
	queue_close(q);
	teardown();
}

static int raw_exec(const char *sql)
{
	sqlite3 *db;
	int rc = sqlite3_open(dbpath, &db);

	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

TEST(t_seq_never_repeats)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	int64_t seq;

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 5, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	/* The output finishes everything: the log is empty. */
	CHECK_EQ_INT(queue_cursor_set(q, "o1", 5), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);

	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "x", 0, 1, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_committed_seq(q), 6);
	CHECK_EQ_INT(append_n(q, "s", "x", 1, 2, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);

	/* Delete the tail behind the queue's back, then reopen. */
	CHECK_EQ_INT(raw_exec("DELETE FROM block_data WHERE first_seq > 6;"
			      "DELETE FROM blocks WHERE first_seq > 6"),
		     SQLITE_OK);
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_append(q, &(struct qrec_in){ .stream = "s",
							.key = "y",
							.data = "{}",
							.len = 2 },
				  &seq),
		     0);
	CHECK_EQ_INT(seq, 9);
	queue_close(q);
	teardown();
}

static struct queue *open_window(const char *const *outs, size_t n,
				 int64_t window)
{
	struct queue_opts o = opts_default();
	struct queue *q = NULL;

	o.dedupe_window = window;
	if (queue_open(&q, &o, outs, n))
		return NULL;
	return q;
}

TEST(t_dedupe)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	struct queue_stats st;
	struct qrec_in r = { .stream = "s", .key = "dup", .data = "{}",
			     .len = 2 };
	int64_t seq = 0, n = 0;

	setup();
	q = open_window(outs, 1, 8);
	REQUIRE(q);
	CHECK_EQ_INT(queue_append(q, &r, &seq), 0);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);
	CHECK_EQ_INT(queue_pending(q), 1);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);
	CHECK_EQ_INT(queue_pending(q), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_read(q, 0, 10, count_cb, &n), 1);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 1);

	/* Within the window the key stays refused even once delivered and
	 * trimmed, and after a restart (the window is rebuilt from the log). */
	CHECK_EQ_INT(append_n(q, "s", "w", 0, 6, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	q = open_window(outs, 1, 8);
	REQUIRE(q);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);
	CHECK_EQ_INT(append_n(q, "s", "w", 5, 1, 10), -EEXIST);
	CHECK_EQ_INT(queue_cursor_set(q, "o1", seq), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);

	/* Two more records push "dup" out of the 8-key window: accepted. */
	CHECK_EQ_INT(append_n(q, "s", "w", 6, 2, 10), 0);
	CHECK_EQ_INT(queue_append(q, &r, NULL), 0);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 9);
	queue_close(q);

	/* Rebuilt at open from the newest records only: w0 and w1 are out,
	 * w2..w7 and the second "dup" are in. */
	q = open_window(outs, 1, 7);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "w", 2, 1, 10), -EEXIST);
	CHECK_EQ_INT(append_n(q, "s", "w", 7, 1, 10), -EEXIST);
	CHECK_EQ_INT(queue_append(q, &r, NULL), -EEXIST);
	CHECK_EQ_INT(append_n(q, "s", "w", 0, 2, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	teardown();
}

TEST(t_dedupe_window_memory)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	size_t before = mem_in_use();
	size_t used;

	setup();
	q = open_window(outs, 1, 0);    /* the default, 16384 */
	REQUIRE(q);
	used = mem_in_use() - before;
	fprintf(stderr, "  queue open with a 16384-key window: %zu bytes\n",
		used);
	CHECK(used < (1u << 20));
	/* The window is real: a key 16000 records back is still refused. */
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 16001, 0), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 1, 0), -EEXIST);
	CHECK_EQ_INT(append_n(q, "s", "k", 16000, 1, 0), -EEXIST);
	CHECK_EQ_INT(append_n(q, "s", "k", 16001, 1, 0), 0);
	queue_close(q);
	CHECK_EQ_INT(mem_in_use(), before);
	teardown();
}

/* A child appends and saves a position, then dies without closing. */
static void crash_child(bool commit)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		q = open_q(outs, 1);
		if (!q)
			_exit(2);
		if (append_n(q, "s", "c", 0, 100, 100) ||
		    queue_position_set(q, "tail", "/var/log/x", "pos=100", 7))
			_exit(3);
		if (commit && queue_commit(q))
			_exit(4);
		raise(SIGKILL);
		_exit(5);
	}
	REQUIRE(pid > 0);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

TEST(t_position_atomic)
{
	static const char *const outs[] = { "o1" };
	struct queue *q;
	struct queue_stats st;
	void *state = NULL;
	size_t len = 0;
	int64_t n = 0;

	setup();
	crash_child(false);
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_position_get(q, "tail", "/var/log/x", &state, &len),
		     -ENOENT);
	CHECK_EQ_INT(queue_read(q, 0, 1000, count_cb, &n), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 0);
	queue_close(q);

	crash_child(true);
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_position_get(q, "tail", "/var/log/x", &state, &len),
		     0);
	CHECK_EQ_INT(len, 7);
	CHECK(state && memcmp(state, "pos=100", 7) == 0);
	xfree(state);
	CHECK_EQ_INT(queue_read(q, 0, 1000, count_cb, &n), 100);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, 100);

	/* Replace and delete. */
	CHECK_EQ_INT(queue_position_set(q, "tail", "/var/log/x", "p2", 2), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_position_get(q, "tail", "/var/log/x", &state, &len),
		     0);
	CHECK(len == 2 && memcmp(state, "p2", 2) == 0);
	xfree(state);
	CHECK_EQ_INT(queue_position_del(q, "tail", "/var/log/x"), 0);
	CHECK_EQ_INT(queue_position_del(q, "tail", "/var/log/x"), -ENOENT);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_position_get(q, "tail", "/var/log/x", &state, &len),
		     -ENOENT);
	queue_close(q);
	teardown();
}

struct seqcheck {
	int64_t next, n;
	bool bad;
};

/* Records come in seq order, without holes, each with its own data. */
static int seq_cb(const struct qrec *r, void *arg)
{
	struct seqcheck *c = arg;
	char want[32];
	int n = snprintf(want, sizeof(want), "{\"i\":%" PRId64 "}", r->seq);
	char key[32];

	snprintf(key, sizeof(key), "b%" PRId64, r->seq);
	if (r->seq != c->next || r->len < (size_t)n ||
	    memcmp(r->data, want, (size_t)n) || strcmp(r->key, key) ||
	    strcmp(r->stream, "s") || r->ts_wall_ms != 1700000000000LL + r->seq)
		c->bad = true;
	c->next = r->seq + 1;
	c->n++;
	return 0;
}

TEST(t_blocks)
{
	static const char *const outs[] = { "a", "b" };
	struct queue *q;
	struct queue_stats st;
	struct seqcheck sc;
	int64_t n, oldest, first_block_last, blocks;
	int64_t total = 3000;

	setup();
	q = open_q(outs, 2);
	REQUIRE(q);
	/* Three commit groups of 1000 records of 300 bytes: several blocks
	 * each, boundaries inside and between groups. */
	for (int g = 0; g < 3; g++) {
		CHECK_EQ_INT(append_n(q, "s", "b", 1 + g * 1000, 1000, 300), 0);
		CHECK_EQ_INT(queue_commit(q), 0);
	}
	blocks = raw_int("SELECT count(*) FROM blocks");
	CHECK(blocks >= 6);
	first_block_last = raw_int("SELECT last_seq FROM blocks ORDER BY first_seq LIMIT 1");
	CHECK(first_block_last > 10 && first_block_last < 1000);

	/* Reads across block boundaries, from every kind of start. */
	for (int64_t after = 0; after < total; after += 97) {
		sc = (struct seqcheck){ .next = after + 1 };
		CHECK_EQ_INT(queue_read(q, after, 700, seq_cb, &sc),
			     total - after < 700 ? total - after : 700);
		CHECK(!sc.bad);
	}
	sc = (struct seqcheck){ .next = 1 };
	CHECK_EQ_INT(queue_read(q, 0, 100000, seq_cb, &sc), total);
	CHECK(!sc.bad);
	CHECK_EQ_INT(sc.next, total + 1);

	/* A cursor inside the first block: nothing deleted yet, but those
	 * records are gone for readers and counts once both outputs pass. */
	CHECK_EQ_INT(queue_cursor_set(q, "a", first_block_last - 5), 0);
	CHECK_EQ_INT(queue_cursor_set(q, "b", 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM blocks"), blocks);
	CHECK_EQ_INT(queue_backlog(q, "a", &n, &oldest), 0);
	CHECK_EQ_INT(n, total - (first_block_last - 5));
	CHECK_EQ_INT(oldest, 1700000000000LL + first_block_last - 4);
	CHECK_EQ_INT(queue_backlog(q, "b", &n, &oldest), 0);
	CHECK_EQ_INT(n, total - 10);
	CHECK_EQ_INT(oldest, 1700000000011LL);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, total - 10);
	CHECK_EQ_INT(st.first_seq, 11);
	CHECK_EQ_INT(st.oldest_wall_ms, 1700000000011LL);
	CHECK_EQ_INT(st.last_seq, total);
	sc = (struct seqcheck){ .next = 11 };
	CHECK_EQ_INT(queue_read(q, 0, 5, seq_cb, &sc), 5);
	CHECK(!sc.bad);

	/* b passes the first block exactly: it goes; a's cursor is inside the
	 * second block, which stays. */
	CHECK_EQ_INT(queue_cursor_set(q, "b", first_block_last + 3), 0);
	CHECK_EQ_INT(queue_cursor_set(q, "a", first_block_last + 3), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM blocks"), blocks - 1);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, total - first_block_last - 3);
	CHECK_EQ_INT(st.first_seq, first_block_last + 4);
	CHECK_EQ_INT(queue_backlog(q, "a", &n, NULL), 0);
	CHECK_EQ_INT(n, total - first_block_last - 3);
	queue_close(q);

	/* Counts and the floor survive a restart; a new output starts at the
	 * first record still held, not at the start of its block. */
	{
		static const char *const three[] = { "a", "b", "c" };

		q = open_q(three, 3);
		REQUIRE(q);
		CHECK_EQ_INT(queue_cursor(q, "c"), first_block_last + 3);
		CHECK_EQ_INT(queue_backlog(q, "c", &n, NULL), 0);
		CHECK_EQ_INT(n, total - first_block_last - 3);
		queue_close(q);
	}
	teardown();
}

struct bigcheck {
	const char *want;
	size_t len;
	bool ok;
};

static int big_cb(const struct qrec *r, void *arg)
{
	struct bigcheck *bc = arg;

	bc->ok = r->seq == 4 && r->len == bc->len &&
		 memcmp(r->data, bc->want, bc->len) == 0;
	return 0;
}

TEST(t_big_record)
{
	struct bigcheck bc;
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct collect c = { 0 };
	struct qrec_in r = { .stream = "s", .key = "big", .clock = CLOCK_SYNCED };
	size_t len = 300 << 10;
	char *big = xmalloc(len);
	int64_t seq = 0;

	setup();
	REQUIRE(big);
	fill_random(big, len, 7);
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 1, 3, 10), 0);
	r.data = big;
	r.len = len;
	CHECK_EQ_INT(queue_append(q, &r, &seq), 0);
	CHECK_EQ_INT(append_n(q, "s", "k", 5, 3, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(seq, 4);
	CHECK_EQ_INT(raw_int("SELECT count(*) FROM blocks"), 3);
	CHECK_EQ_INT(raw_int("SELECT bytes FROM blocks WHERE first_seq = 4") > (int64_t)len, 1);
	CHECK_EQ_INT(queue_read(q, 0, 10, collect_cb, &c), 7);
	CHECK_EQ_INT(c.seq[3], 4);
	CHECK_EQ_STR(c.key[3], "big");
	CHECK_EQ_STR(c.key[4], "k5");
	memset(&bc, 0, sizeof(bc));
	bc.want = big;
	bc.len = len;
	CHECK_EQ_INT(queue_read(q, 3, 1, big_cb, &bc), 1);
	CHECK(bc.ok);
	queue_close(q);
	xfree(big);
	teardown();
}

static bool corrupt_file_exists(void)
{
	struct dirent *de;
	DIR *d = opendir(tmpdir);
	bool found = false;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (strstr(de->d_name, "queue.db.corrupt-") &&
		    !strstr(de->d_name, "-wal") && !strstr(de->d_name, "-shm"))
			found = true;
	closedir(d);
	return found;
}

static void write_at(off_t off, const char *buf, size_t len)
{
	int fd = open(dbpath, O_WRONLY | O_CREAT, 0600);

	if (fd < 0)
		return;
	if (pwrite(fd, buf, len, off) != (ssize_t)len)
		perror("pwrite");
	close(fd);
}

TEST(t_corrupt_garbage)
{
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct queue_stats st;
	char junk[8192];

	setup();
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	write_at(0, junk, sizeof(junk));
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK(corrupt_file_exists());
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.recovered_at_ms > 0);
	CHECK(strstr(st.recovered_path, "queue.db.corrupt-") != NULL);
	CHECK_EQ_INT(st.records, 0);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 3, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);

	/* The fresh file is fine on the next start. */
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.recovered_at_ms, 0);
	CHECK_EQ_INT(st.records, 3);
	queue_close(q);
	teardown();
}

TEST(t_corrupt_pages)
{
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct queue_stats st;
	struct stat sb;
	char junk[4096];

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 2000, 200), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	REQUIRE(stat(dbpath, &sb) == 0 && sb.st_size > 16 * 4096);
	/* Keep the header valid; smash b-tree pages in the middle. */
	memset(junk, 0x5a, sizeof(junk));
	for (off_t p = 4; p < 12; p++)
		write_at(p * 4096, junk, sizeof(junk));
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK(corrupt_file_exists());
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.recovered_at_ms > 0);
	CHECK_EQ_INT(st.records, 0);
	queue_close(q);
	teardown();
}

struct corruptscan {
	int64_t n, data, gaps, gap_seq[4];
	char gap_data[4][200], gap_key[4][64];
	int64_t prev;
	bool bad;
};

static int corrupt_cb(const struct qrec *r, void *arg)
{
	struct corruptscan *c = arg;
	size_t n = r->len < 199 ? r->len : 199;

	if (r->seq <= c->prev)
		c->bad = true;
	c->prev = r->seq;
	c->n++;
	if (r->kind == REC_DATA) {
		c->data++;
		return 0;
	}
	if (c->gaps < 4) {
		c->gap_seq[c->gaps] = r->seq;
		memcpy(c->gap_data[c->gaps], r->data, n);
		c->gap_data[c->gaps][n] = '\0';
		snprintf(c->gap_key[c->gaps], sizeof(c->gap_key[0]), "%s", r->key);
	}
	c->gaps++;
	return 0;
}

TEST(t_corrupt_block)
{
	static const char *const outs[] = { "o" };
	struct queue_opts o = opts_default();
	struct queue *q, *ro = NULL;
	struct queue_stats st;
	struct corruptscan cs = { 0 };
	int64_t f2, l2, n2, f3, l3, n3, cnt = 0, total = 3000;
	char want[200];

	setup();
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "b", 1, (int)total, 300), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	REQUIRE(raw_int("SELECT count(*) FROM blocks") >= 4);
	f2 = raw_int("SELECT first_seq FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 1");
	l2 = raw_int("SELECT last_seq FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 1");
	n2 = raw_int("SELECT count FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 1");
	f3 = raw_int("SELECT first_seq FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 2");
	l3 = raw_int("SELECT last_seq FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 2");
	n3 = raw_int("SELECT count FROM blocks ORDER BY first_seq LIMIT 1 OFFSET 2");
	/* Block 2: garbage bytes. Block 3: valid zstd, but its row does not
	 * match what it holds. */
	CHECK_EQ_INT(raw_exec("UPDATE block_data SET data = randomblob(500) WHERE"
			      " first_seq = (SELECT first_seq FROM blocks ORDER BY"
			      " first_seq LIMIT 1 OFFSET 1)"),
		     SQLITE_OK);
	CHECK_EQ_INT(raw_exec("UPDATE blocks SET count = count - 1 WHERE"
			      " first_seq = (SELECT first_seq FROM blocks ORDER BY"
			      " first_seq LIMIT 1 OFFSET 2)"),
		     SQLITE_OK);
	n3--;

	/* A read-only opener cannot repair: a clear error, no crash. */
	o.readonly = true;
	REQUIRE(queue_open(&ro, &o, NULL, 0) == 0);
	CHECK_EQ_INT(queue_read(ro, 0, 100000, count_cb, &cnt), -EIO);
	CHECK_EQ_INT(cnt, f2 - 1);
	queue_close(ro);

	/* The writer drops each damaged block, reads on, and appends a gap
	 * marker for it, with a new seq: the block's seqs named its records. */
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(queue_read(q, 0, 100000, corrupt_cb, &cs),
		     total - n2 - (l3 - f3 + 1));
	CHECK_EQ_INT(cs.gaps, 0);
	CHECK(queue_pending(q) > 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_read(q, cs.prev, 100000, corrupt_cb, &cs), 2);
	CHECK(!cs.bad);
	CHECK_EQ_INT(cs.gaps, 2);
	CHECK_EQ_INT(cs.data, total - n2 - (l3 - f3 + 1));
	CHECK(cs.gap_seq[0] > total);
	CHECK_EQ_INT(cs.gap_seq[1], cs.gap_seq[0] + 1);
	snprintf(want, sizeof(want),
		 "{\"gap\":{\"first_seq\":%" PRId64 ",\"last_seq\":%" PRId64
		 ",\"count\":%" PRId64 ",\"reason\":\"corrupt_block\"}}",
		 f2, l2, n2);
	CHECK_EQ_STR(cs.gap_data[0], want);
	snprintf(want, sizeof(want), "gap:%" PRId64 "-%" PRId64, f2, l2);
	CHECK_EQ_STR(cs.gap_key[0], want);
	snprintf(want, sizeof(want),
		 "{\"gap\":{\"first_seq\":%" PRId64 ",\"last_seq\":%" PRId64
		 ",\"count\":%" PRId64 ",\"reason\":\"corrupt_block\"}}",
		 f3, l3, n3);
	CHECK_EQ_STR(cs.gap_data[1], want);
	/* Still usable: appends, counts, cursor moves. */
	CHECK_EQ_INT(append_n(q, "s", "z", 0, 5, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK_EQ_INT(st.records, cs.n + 5);
	CHECK_EQ_INT(queue_cursor_set(q, "o", l3), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);

	/* The repair is durable: the same records and markers again. */
	q = open_q(outs, 1);
	REQUIRE(q);
	memset(&cs, 0, sizeof(cs));
	CHECK_EQ_INT(queue_read(q, 0, 100000, corrupt_cb, &cs), total - l3 + 2 + 5);
	CHECK_EQ_INT(cs.gaps, 2);
	CHECK(!corrupt_file_exists());
	queue_close(q);
	teardown();
}

TEST(t_old_schema)
{
	static const char *const outs[] = { "o" };
	struct queue *q;
	struct queue_stats st;

	setup();
	CHECK_EQ_INT(raw_exec("CREATE TABLE records(seq INTEGER PRIMARY KEY,"
			      " data BLOB); INSERT INTO records VALUES(1, 'x');"
			      " PRAGMA user_version = 1;"),
		     SQLITE_OK);
	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK(corrupt_file_exists());
	CHECK_EQ_INT(queue_stats(q, &st), 0);
	CHECK(st.recovered_at_ms > 0);
	CHECK_EQ_INT(st.records, 0);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 3, 10), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	queue_close(q);
	teardown();
}

static int dlq_count_cb(const struct dlq_entry *e, const void *data,
			void *arg)
{
	(*(int64_t *)arg)++;
	return 0;
}

TEST(t_readonly)
{
	static const char *const outs[] = { "o" };
	struct queue_opts o = opts_default();
	struct queue *q = NULL, *ro = NULL;
	struct queue_stats st;
	int64_t n = 0, oldest = 0, cnt = 0;
	void *state;
	size_t len;
	char side[160];

	setup();
	o.readonly = true;
	CHECK_EQ_INT(queue_open(&ro, &o, NULL, 0), -ENOENT);
	CHECK(ro == NULL);
	CHECK(access(dbpath, F_OK) != 0);

	q = open_q(outs, 1);
	REQUIRE(q);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 10, 10), 0);
	CHECK_EQ_INT(queue_position_set(q, "in", "src", "st", 2), 0);
	CHECK_EQ_INT(queue_dlq_add(q, "input:in", "s", 0, "bad", "parse", "x",
				   1),
		     0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_cursor_set(q, "o", 3), 0);
	CHECK_EQ_INT(queue_commit(q), 0);

	/* Beside a live writer. */
	REQUIRE(queue_open(&ro, &o, NULL, 0) == 0);
	CHECK_EQ_INT(queue_stats(ro, &st), 0);
	CHECK_EQ_INT(st.records, 7);
	CHECK_EQ_INT(st.dlq_records, 1);
	CHECK_EQ_INT(queue_backlog(ro, "o", &n, &oldest), 0);
	CHECK_EQ_INT(n, 7);
	CHECK_EQ_INT(queue_cursor(ro, "o"), 3);
	/* The writer moves on; the reader sees it. */
	CHECK_EQ_INT(queue_cursor_set(q, "o", 5), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	CHECK_EQ_INT(queue_backlog(ro, "o", &n, &oldest), 0);
	CHECK_EQ_INT(n, 5);
	queue_close(ro);
	queue_close(q);

	/* With the daemon down. */
	REQUIRE(queue_open(&ro, &o, NULL, 0) == 0);
	CHECK_EQ_INT(queue_stats(ro, &st), 0);
	CHECK_EQ_INT(st.records, 5);
	CHECK_EQ_INT(st.first_seq, 6);
	CHECK_EQ_INT(queue_read(ro, 0, 100, count_cb, &cnt), 5);
	CHECK_EQ_INT(queue_dlq_list(ro, 0, 10, dlq_count_cb, &cnt), 0);
	CHECK_EQ_INT(cnt, 6);
	CHECK_EQ_INT(queue_dlq_get(ro, 1, dlq_count_cb, &cnt), 0);
	CHECK_EQ_INT(queue_position_get(ro, "in", "src", &state, &len), 0);
	xfree(state);
	CHECK_EQ_INT(append_n(ro, "s", "z", 0, 1, 10), -EROFS);
	CHECK_EQ_INT(queue_position_set(ro, "in", "src", "x", 1), -EROFS);
	CHECK_EQ_INT(queue_cursor_set(ro, "o", 9), -EROFS);
	CHECK_EQ_INT(queue_dlq_add(ro, "o", "s", 0, "k", "r", "", 0), -EROFS);
	CHECK_EQ_INT(queue_dlq_purge(ro, 0, &cnt), -EROFS);
	CHECK_EQ_INT(queue_dlq_replay(ro, 0, &cnt), -EROFS);
	CHECK_EQ_INT(queue_enforce_budget(ro), -EROFS);
	queue_close(ro);
	/* Reading a stopped daemon's queue leaves no -wal or -shm behind. */
	snprintf(side, sizeof(side), "%s-wal", dbpath);
	CHECK(access(side, F_OK) != 0);
	snprintf(side, sizeof(side), "%s-shm", dbpath);
	CHECK(access(side, F_OK) != 0);
	teardown();
}

TEST(t_alloc_failure)
{
	static const char *const outs[] = { "a", "b" };
	struct queue_opts o = opts_default();
	struct queue *q = NULL;
	size_t before = mem_in_use();
	void *state = NULL;
	size_t len = 0;
	int err = -ENOMEM, i;

	setup();
	/* Every allocation the open makes, failed in turn. */
	for (i = 0; i < 50 && err == -ENOMEM; i++) {
		mem_fail_after(i);
		err = queue_open(&q, &o, outs, 2);
		mem_fail_after(-1);
		if (err) {
			CHECK_EQ_INT(err, -ENOMEM);
			CHECK(q == NULL);
			CHECK_EQ_INT(mem_in_use(), before);
		}
	}
	CHECK(i > 3);
	REQUIRE(err == 0 && q);
	CHECK_EQ_INT(queue_position_set(q, "in", "src", "abc", 3), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	mem_fail_after(0);
	CHECK_EQ_INT(queue_position_get(q, "in", "src", &state, &len), -ENOMEM);
	mem_fail_after(-1);
	CHECK(state == NULL);
	/* The append path does not allocate. */
	mem_fail_after(0);
	CHECK_EQ_INT(append_n(q, "s", "k", 0, 100, 100), 0);
	CHECK_EQ_INT(queue_commit(q), 0);
	mem_fail_after(-1);
	queue_close(q);
	CHECK_EQ_INT(mem_in_use(), before);
	teardown();
}

/* A commit that fails takes its records with it, but not their seqs: the
 * caller may have been told them, and a seq names one record only. */
TEST(t_rollback_keeps_seqs)
{
	static const char *const outs[] = { "o" };
	struct queue_opts o = opts_default();
	char data[32];
	struct qrec_in r = { .stream = "s", .key = "late", .data = data };
	struct collect c = { 0 };
	struct queue *q;
	int64_t seq, lost = 0;

	setup();
	REQUIRE(crashvfs_register() == SQLITE_OK);
	crashvfs_reset();
	o.vfs = CRASHVFS_NAME;
	REQUIRE(queue_open(&q, &o, outs, 1) == 0);
	REQUIRE(append_n(q, "s", "a", 0, 3, 20) == 0);
	REQUIRE(queue_commit(q) == 0);
	REQUIRE(append_n(q, "s", "b", 0, 4, 20) == 0);
	REQUIRE(queue_append(q, &(struct qrec_in){ .stream = "s", .key = "b4",
						    .data = "{}", .len = 2 },
			     &lost) == 0);
	CHECK_EQ_INT(lost, 8);
	crashvfs_fail_writes(1 << 20, SQLITE_FULL);
	CHECK(queue_commit(q) < 0);
	crashvfs_fail_writes(0, 0);
	r.len = (size_t)snprintf(data, sizeof(data), "{\"late\":1}");
	REQUIRE(queue_append(q, &r, &seq) == 0);
	CHECK(seq > lost);
	REQUIRE(queue_commit(q) == 0);
	CHECK_EQ_INT(queue_read(q, 0, 64, collect_cb, &c), 4);
	CHECK_EQ_INT(c.seq[2], 3);
	CHECK_EQ_INT(c.seq[3], seq);
	CHECK_EQ_STR(c.key[3], "late");
	queue_close(q);
	crashvfs_reset();
	teardown();
}

int main(void)
{
	log_set_level(LOGL_ERROR);
	RUN(t_append_commit_read);
	RUN(t_read_cb_error);
	RUN(t_seq_never_repeats);
	RUN(t_dedupe);
	RUN(t_dedupe_window_memory);
	RUN(t_position_atomic);
	RUN(t_blocks);
	RUN(t_big_record);
	RUN(t_corrupt_garbage);
	RUN(t_corrupt_pages);
	RUN(t_corrupt_block);
	RUN(t_old_schema);
	RUN(t_readonly);
	RUN(t_alloc_failure);
	RUN(t_rollback_keeps_seqs);
	if (tmpdir[0])
		teardown();
	TEST_END();
}
