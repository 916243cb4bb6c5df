/* test_spool.c - the spool driver on the real input core and queue, with
 * real files in a temporary directory, inotify, and the test clock for
 * quiet_time: when a file counts as complete (quiet, rename), what its
 * records are (text, csv, binary), that a file is removed or moved only once
 * its records are committed (and not after a failed commit, whose records
 * come again), failed files with their reason, big files read in slices,
 * files that change while they are read, and the keys that make a file read
 * again recognisable.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#include "input_rig.h"
#include "../../drivers/spool.h"
#include <sqlite3.h>

#define NOBODY 65534

static char dir[64] = "/tmp/test_spool.XXXXXX";
static char base[256], in_dir[300], done_dir[300], failed_dir[300];
static int case_no;

/* Fresh directories for each case: base/in (the spool), base/done, base/failed. */
static void new_dirs(void)
{
	snprintf(base, sizeof(base), "%s/t%d", dir, ++case_no);
	snprintf(in_dir, sizeof(in_dir), "%s/in", base);
	snprintf(done_dir, sizeof(done_dir), "%s/done", base);
	snprintf(failed_dir, sizeof(failed_dir), "%s/failed", base);
	if (mkdir(base, 0755) || mkdir(in_dir, 0755)) {
		perror(base);
		exit(1);
	}
}

static const char *in_path(const char *name)
{
	static char p[4][512];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", in_dir, name);
	return p[k];
}

static void put_bytes(const char *path, const void *data, size_t len, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
		perror(path);
		exit(1);
	}
	close(fd);
}

static void put(const char *name, const char *text)
{
	put_bytes(in_path(name), text, strlen(text), O_TRUNC);
}

static void append(const char *name, const char *text)
{
	put_bytes(in_path(name), text, strlen(text), O_APPEND);
}

static bool exists(const char *d, const char *name)
{
	char p[600];

	snprintf(p, sizeof(p), "%s/%s", d, name);
	return access(p, F_OK) == 0;
}

static char *slurp(const char *d, const char *name, char *buf, size_t cap)
{
	char p[600];
	FILE *f;
	size_t n = 0;

	snprintf(p, sizeof(p), "%s/%s", d, name);
	f = fopen(p, "r");
	if (f) {
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static int rig_init_q(struct rig *r, const char *queue, const char *keys)
{
	char text[2048], db[512];

	tc_now_ms = 1000000;
	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\n%s"
		 "[input drop]\ndriver = spool\ndir = %s\nfailed_dir = %s\n%s"
		 "[output lake]\ntype = mqtt\n", base, queue, in_dir, failed_dir, keys);
	snprintf(db, sizeof(db), "%s/queue.db", base);
	return input_rig_init(r, text, db, true, NULL);
}

static int rig_init(struct rig *r, const char *keys)
{
	return rig_init_q(r, "commit_interval = 100ms\n", keys);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
}

#define MAX_SEEN 32768

struct seen {
	int n;
	char *key[MAX_SEEN];
	char *data[MAX_SEEN];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "drop"))
		return 0;
	if (s->n < MAX_SEEN) {
		s->key[s->n] = strdup(q->key ? q->key : "");
		s->data[s->n] = strndup(q->data, q->len);
	}
	s->n++;
	return 0;
}

static void seen_free(struct seen *s)
{
	for (int i = 0; i < s->n && i < MAX_SEEN; i++) {
		free(s->key[i]);
		free(s->data[i]);
	}
	s->n = 0;
}

static int find(const struct seen *s, const char *data)
{
	for (int i = 0; i < s->n && i < MAX_SEEN; i++)
		if (!strcmp(s->data[i], data))
			return i;
	fprintf(stderr, "    no record %s\n", data);
	return -1;
}

static void records(struct rig *r, struct seen *s)
{
	seen_free(s);
	CHECK(queue_read(r->a.q, 0, MAX_SEEN, collect, s) >= 0);
}

static int dlq_count_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	(void)e;
	(void)data;
	(*(int *)arg)++;
	return 0;
}

static int dlq_count(struct rig *r)
{
	int n = 0;

	queue_dlq_list(r->a.q, 0, 1000, dlq_count_cb, &n);
	return n;
}

/* Loop turns with the clock standing still until the input is idle. */
static void settle(struct rig *r)
{
	for (int i = 0; i < 100000 && loop_next_due(r->a.loop) >= 0 &&
			loop_next_due(r->a.loop) <= tc_now_ms; i++)
		loop_turn(r->a.loop, 0);
}

static const char *state_of(const struct rig *r)
{
	static char text[256];
	struct status_input st = snapshot(r);

	snprintf(text, sizeof(text), "%s", st.state);
	return text;
}

static bool has(const char *hay, const char *needle)
{
	if (!strstr(hay, needle)) {
		fprintf(stderr, "    \"%s\" does not contain \"%s\"\n", hay, needle);
		return false;
	}
	return true;
}

/* base64 (RFC 4648) decoded into out; its length, or -1. */
static long unbase64(const char *s, size_t n, unsigned char *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	long len = 0;
	unsigned v = 0;
	int bits = 0;

	for (size_t i = 0; i < n && s[i] != '='; i++) {
		const char *p = strchr(al, s[i]);

		if (!p || !s[i])
			return -1;
		v = (v << 6) | (unsigned)(p - al);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (unsigned char)(v >> bits);
		}
	}
	return len;
}

/* The string value of "name" in a flat JSON record (no escapes in it). */
static bool field(const char *rec, const char *name, const char **v, size_t *n)
{
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof(pat), "\"%s\":\"", name);
	p = strstr(rec, pat);
	if (!p)
		return false;
	p += strlen(pat);
	e = strchr(p, '"');
	if (!e)
		return false;
	*v = p;
	*n = (size_t)(e - p);
	return true;
}

static int64_t int_field(const char *rec, const char *name)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(rec, pat);
	return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The prefix of a key: "spool:<dev>:<ino>:<size>:<mtime_ns>:". */
static void key_prefix(const char *path, char *out, size_t cap)
{
	struct stat st;

	if (stat(path, &st)) {
		snprintf(out, cap, "(no %s)", path);
		return;
	}
	snprintf(out, cap, "spool:%" PRIu64 ":%" PRIu64 ":%" PRId64 ":%" PRId64 ":", (uint64_t)st.st_dev,
		 (uint64_t)st.st_ino, (int64_t)st.st_size,
		 (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
}

/* ---- tests ----------------------------------------------------------- */

TEST(test_keys_and_validation)
{
	const struct driver *d = driver_find("spool");
	struct config *c = NULL;
	char err[512];
	static const char *const bad[][2] = {
		{ "dir = relative\n", "absolute" },
		{ "dir = /x\npattern = a/b\n", "pattern" },
		{ "dir = /x\nready_pattern = *.csv\n", "only with ready = rename" },
		{ "dir = /x\ndone_dir = done\n", "done_dir" },
	};

	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->version, DRIVER_VERSION);
	CHECK(d->committed != NULL);
	CHECK(!(d->flags & DRIVER_REPLAY));
	for (const struct cfg_key *k = d->conf_keys; k->name; k++)
		CHECK(k->help && strlen(k->help) > 30);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[512];

		snprintf(text, sizeof(text), "[agent]\nid = a\n[input x]\ndriver = spool\n%s"
			 "[output lake]\ntype = mqtt\n", bad[i][0]);
		CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &c, err, sizeof(err)), -EINVAL);
		CHECK(has(err, bad[i][1]));
	}
}

/* ready = quiet: a file its writer keeps open is not taken however long it
 * rests; once closed it is taken quiet_time after its last change, and a
 * change restarts the wait. */
TEST(test_quiet_growing_file)
{
	struct rig r;
	struct seen s = { 0 };
	int fd;

	new_dirs();
	REQUIRE(rig_init(&r, "quiet_time = 5s\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 100);
	fd = open(in_path("a.log"), O_WRONLY | O_CREAT, 0644);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, "one\ntw", 6) == 6);
	tc_advance(r.a.loop, 60000);                 /* open for writing: not taken */
	CHECK_EQ_INT(input_ticket(r.in), 0);
	CHECK(has(state_of(&r), "1 waiting"));
	REQUIRE(write(fd, "o\n", 2) == 2);
	close(fd);                                   /* closed: the quiet time starts */
	tc_advance(r.a.loop, 3000);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	append("a.log", "three\n");                  /* changed: it starts again */
	tc_advance(r.a.loop, 4000);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	CHECK(exists(in_dir, "a.log"));
	tc_advance(r.a.loop, 1100);                  /* 5.1 s after the last change */
	CHECK_EQ_INT(input_ticket(r.in), 3);
	tc_advance(r.a.loop, 200);                   /* committed: removed */
	CHECK(!exists(in_dir, "a.log"));
	records(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"file\":\"a.log\",\"line\":1,\"data\":\"one\"}");
	CHECK_EQ_STR(s.data[1], "{\"file\":\"a.log\",\"line\":2,\"data\":\"two\"}");
	CHECK_EQ_STR(s.data[2], "{\"file\":\"a.log\",\"line\":3,\"data\":\"three\"}");
	CHECK(has(state_of(&r), "done 1, failed 0"));
	seen_free(&s);
	rig_release(&r);
}

/* A file already there at start is taken quiet_time after the start. */
TEST(test_quiet_existing_file)
{
	struct rig r;

	new_dirs();
	put("old.log", "x\ny\n");
	REQUIRE(rig_init(&r, "quiet_time = 2s\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 1900);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	tc_advance(r.a.loop, 200);
	CHECK_EQ_INT(input_ticket(r.in), 2);
	tc_advance(r.a.loop, 200);
	CHECK(!exists(in_dir, "old.log"));
	rig_release(&r);
}

/* ready = rename: a name matching ready_pattern is complete at once; the
 * file being written under another name is left alone. */
TEST(test_rename_mode)
{
	struct rig r;
	struct seen s = { 0 };
	char path[600];

	new_dirs();
	REQUIRE(rig_init(&r, "ready = rename\npattern = batch-*\nready_pattern = *.csv\nparser = raw\n"
			 "quiet_time = 1h\n") == 0);
	put("batch-1.tmp", "a\nb\n");
	put("other.csv", "not ours\n");
	tc_advance(r.a.loop, 10000);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	CHECK(has(state_of(&r), "1 waiting"));
	snprintf(path, sizeof(path), "%s", in_path("batch-1.csv"));
	REQUIRE(rename(in_path("batch-1.tmp"), path) == 0);
	tc_advance(r.a.loop, 1);                      /* taken at once, no quiet time */
	CHECK_EQ_INT(input_ticket(r.in), 2);
	tc_advance(r.a.loop, 200);
	CHECK(!exists(in_dir, "batch-1.csv"));
	CHECK(exists(in_dir, "other.csv"));
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "{\"file\":\"batch-1.csv\",\"line\":1,\"data\":\"a\"}");
	seen_free(&s);
	rig_release(&r);
}

/* csv: each file's first line is its header, not a record; line numbers
 * count it; a line that does not parse goes to the DLQ; CRLF is a newline;
 * the last line needs no newline. */
TEST(test_csv)
{
	struct rig r;
	struct seen s = { 0 };

	new_dirs();
	put("a.csv", "t,v\r\n1,20.5\r\n2,\"x\r\n");
	put("b.csv", "id\n7\n8");
	REQUIRE(rig_init(&r, "ready = rename\npattern = *.csv\nparser = csv\n") == 0);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "a.csv") && !exists(in_dir, "b.csv"));
	records(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"file\":\"a.csv\",\"line\":2,\"data\":{\"t\":\"1\",\"v\":\"20.5\"}}");
	CHECK_EQ_STR(s.data[1], "{\"file\":\"b.csv\",\"line\":2,\"data\":{\"id\":\"7\"}}");
	CHECK_EQ_STR(s.data[2], "{\"file\":\"b.csv\",\"line\":3,\"data\":{\"id\":\"8\"}}");
	CHECK_EQ_INT(dlq_count(&r), 1);              /* 2,"x : an open quote */
	seen_free(&s);
	rig_release(&r);
}

/* binary: chunks of chunk_size with name, index, count, offset and size;
 * the base64 decodes back to the file's bytes. */
TEST(test_binary)
{
	struct rig r;
	struct seen s = { 0 };
	size_t size = 100000;
	unsigned char *bytes = malloc(size), *back = malloc(size + 64);
	long got = 0;
	char prefix[200];

	new_dirs();
	REQUIRE(bytes && back);
	srand(7);
	for (size_t i = 0; i < size; i++)
		bytes[i] = (unsigned char)rand();
	put_bytes(in_path("img.bin"), bytes, size, O_TRUNC);
	key_prefix(in_path("img.bin"), prefix, sizeof(prefix));
	{
		char keys[600];

		snprintf(keys, sizeof(keys), "ready = rename\nformat = binary\nchunk_size = 32KiB\ndone_dir = %s\n",
			 done_dir);
		REQUIRE(rig_init(&r, keys) == 0);
	}
	tc_advance(r.a.loop, 300);
	records(&r, &s);
	REQUIRE(s.n == 4);
	for (int i = 0; i < s.n; i++) {
		const char *v;
		size_t n;
		long k;
		char want[240];

		CHECK(has(s.data[i], "\"file\":\"img.bin\""));
		CHECK_EQ_INT(int_field(s.data[i], "index"), i);
		CHECK_EQ_INT(int_field(s.data[i], "count"), 4);
		CHECK_EQ_INT(int_field(s.data[i], "offset"), i * 32768);
		CHECK_EQ_INT(int_field(s.data[i], "size"), (long long)size);
		snprintf(want, sizeof(want), "%s%d", prefix, i * 32768);
		CHECK_EQ_STR(s.key[i], want);
		REQUIRE(field(s.data[i], "data", &v, &n));
		k = unbase64(v, n, back + got);
		REQUIRE(k > 0);
		got += k;
	}
	CHECK_EQ_INT(got, (long)size);
	CHECK(memcmp(bytes, back, size) == 0);
	/* Moved to done_dir, whole. */
	CHECK(!exists(in_dir, "img.bin"));
	CHECK(exists(done_dir, "img.bin"));
	free(bytes);
	free(back);
	seen_free(&s);
	rig_release(&r);
}

/* A chunk_size whose records cannot fit in max_record_bytes is refused,
 * and status says what would fit. */
TEST(test_binary_chunk_too_big)
{
	struct rig r;
	struct status_input st;

	new_dirs();
	put("x.bin", "data");
	REQUIRE(rig_init(&r, "format = binary\nchunk_size = 60KiB\nready = rename\n") == 0);
	tc_advance(r.a.loop, 300);
	st = snapshot(&r);
	CHECK(has(st.last_error, "chunk_size 61440 makes records of up to"));
	CHECK(has(st.last_error, "use chunk_size = 47"));
	CHECK(has(st.state, "refused"));
	CHECK_EQ_INT(input_ticket(r.in), 0);
	CHECK(exists(in_dir, "x.bin"));
	rig_release(&r);
}

/* The file stays until its records are committed; after a failed commit
 * it is not removed, its records come again (read from the saved
 * position), and it goes once they are committed. */
TEST(test_removed_only_after_commit)
{
	struct rig r;
	struct seen s = { 0 };
	char prefix[200];

	new_dirs();
	put("a.log", "1\n2\n3\n");
	key_prefix(in_path("a.log"), prefix, sizeof(prefix));
	REQUIRE(rig_init_q(&r, "commit_interval = 2s\n", "ready = rename\nparser = json\n") == 0);
	tc_advance(r.a.loop, 10);
	CHECK_EQ_INT(input_ticket(r.in), 3);
	CHECK(has(state_of(&r), "1 to commit"));
	tc_advance(r.a.loop, 1900);                   /* not committed yet: still there */
	CHECK(exists(in_dir, "a.log"));
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 200);                    /* the commit fails */
	CHECK(exists(in_dir, "a.log"));
	records(&r, &s);
	CHECK_EQ_INT(s.n, 0);
	tc_advance(r.a.loop, 1500);                   /* restarted: read again */
	CHECK(exists(in_dir, "a.log"));
	tc_advance(r.a.loop, 2500);                   /* committed this time */
	CHECK(!exists(in_dir, "a.log"));
	records(&r, &s);
	REQUIRE(s.n == 3);
	for (int i = 0; i < 3; i++) {
		char want[240];

		snprintf(want, sizeof(want), "%s%d", prefix, i * 2);
		CHECK_EQ_STR(s.key[i], want);
	}
	CHECK_EQ_STR(s.data[2], "{\"file\":\"a.log\",\"line\":3,\"data\":3}");
	seen_free(&s);
	rig_release(&r);
}

/* The move to done_dir fails (done_dir replaced by a file): status says
 * the records are committed and the file is not moved, and it is retried
 * with backoff, not in a loop. A restart then (as after a crash between
 * commit and move) moves it without reading it again. */
TEST(test_move_fails_then_restart)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;
	char keys[600];
	int64_t ticket;

	new_dirs();
	put("a.log", "1\n2\n");
	snprintf(keys, sizeof(keys), "ready = rename\nparser = json\ndone_dir = %s\n", done_dir);
	REQUIRE(rig_init(&r, keys) == 0);
	REQUIRE(rmdir(done_dir) == 0);
	put_bytes(done_dir, "", 0, O_TRUNC);          /* a file where the directory was */
	tc_advance(r.a.loop, 300);
	CHECK(exists(in_dir, "a.log"));
	st = snapshot(&r);
	CHECK(has(st.last_error, "a.log: records committed, but it cannot be moved to done_dir: Not a directory"));
	CHECK(has(st.state, "1 not moved"));
	/* Backoff: far fewer tries than loop turns. */
	tc_advance(r.a.loop, 400);
	CHECK(exists(in_dir, "a.log"));
	ticket = input_ticket(r.in);
	/* agentd stops here (a crash would be the same: the position that
	 * says the file was read to its end is committed with its records). */
	input_stop(r.in);
	REQUIRE(unlink(done_dir) == 0 && mkdir(done_dir, 0755) == 0);
	REQUIRE(input_start(r.in) == 0);
	tc_advance(r.a.loop, 10);
	CHECK(!exists(in_dir, "a.log"));
	CHECK(exists(done_dir, "a.log"));
	CHECK_EQ_INT(input_ticket(r.in), ticket);     /* not read again */
	records(&r, &s);
	CHECK_EQ_INT(s.n, 2);
	seen_free(&s);
	rig_release(&r);
}

/* Read again (its position lost: a new queue), a file gives the same keys,
 * which the queue and the lake recognise; written again (another size),
 * it gives new ones. */
TEST(test_keys_repeat_and_change)
{
	struct rig r;
	struct seen s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
	const char *keys = "ready = rename\nparser = raw\ndone_dir = ";
	char conf[600];

	new_dirs();
	snprintf(conf, sizeof(conf), "%s%s\n", keys, done_dir);
	put("a.log", "x\ny\n");
	REQUIRE(rig_init(&r, conf) == 0);
	tc_advance(r.a.loop, 300);
	records(&r, &s1);
	rig_release(&r);
	/* Put it back as it was (same inode, size and mtime) and read it
	 * with no saved position. */
	{
		char from[600], to[600];

		snprintf(from, sizeof(from), "%s/a.log", done_dir);
		snprintf(to, sizeof(to), "%s", in_path("a.log"));
		REQUIRE(rename(from, to) == 0);
	}
	REQUIRE(rig_init(&r, conf) == 0);
	tc_advance(r.a.loop, 300);
	records(&r, &s2);
	rig_release(&r);
	REQUIRE(s1.n == 2 && s2.n == 2);
	CHECK_EQ_STR(s1.key[0], s2.key[0]);
	CHECK_EQ_STR(s1.key[1], s2.key[1]);
	/* Changed: new keys. */
	put("a.log", "x\ny\nz\n");
	REQUIRE(rig_init(&r, conf) == 0);
	tc_advance(r.a.loop, 300);
	records(&r, &s3);
	REQUIRE(s3.n == 3);
	CHECK(strcmp(s3.key[0], s1.key[0]) != 0);
	seen_free(&s1);
	seen_free(&s2);
	seen_free(&s3);
	rig_release(&r);
}

/* A big file is read in slices, one per loop turn, and other work runs
 * between them. */
TEST(test_big_file_in_slices)
{
	struct rig r;
	struct seen s = { 0 };
	char line[64];
	FILE *f;
	int turns = 0, lines = 20000;
	uint64_t prev = 0;
	bool grew_by_slices = true;

	new_dirs();
	f = fopen(in_path("big.log"), "w");
	REQUIRE(f);
	for (int i = 0; i < lines; i++)
		fprintf(f, "%08d\n", i);             /* 9 bytes a line, 180000 bytes */
	fclose(f);
	REQUIRE(rig_init_q(&r, "commit_interval = 100ms\ncommit_records = 100000\nmax_bytes = 256MiB\n",
			   "ready = rename\nparser = raw\nread_slice = 8KiB\n") == 0);
	for (; turns < 1000 && input_ticket(r.in) < (uint64_t)lines; turns++) {
		uint64_t t;

		loop_turn(r.a.loop, 0);
		t = input_ticket(r.in);
		/* At most a slice (8 KiB) a turn. */
		if (t - prev > 8192 / 9 + 1)
			grew_by_slices = false;
		prev = t;
		if (turns == 2) {
			snprintf(line, sizeof(line), "%s", state_of(&r));
			CHECK(has(line, "reading big.log ("));
		}
	}
	CHECK(grew_by_slices);
	CHECK(turns > 2);
	CHECK_EQ_INT(input_ticket(r.in), lines);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "big.log"));
	records(&r, &s);
	CHECK_EQ_INT(s.n, lines);
	if (s.n == lines)
		CHECK_EQ_STR(s.data[lines - 1], "{\"file\":\"big.log\",\"line\":20000,\"data\":\"00019999\"}");
	seen_free(&s);
	rig_release(&r);
}

/* Appended to while it is read (taken too early): reading stops, goes on
 * where it stopped once the file is quiet again (the part sent is still in
 * it), and every line arrives once; the rest under the new identity. */
TEST(test_changed_while_read_grows)
{
	struct rig r;
	struct seen s = { 0 };
	FILE *f;
	int lines = 5000, more = 0;
	char old_prefix[200], new_prefix[200];

	new_dirs();
	f = fopen(in_path("g.log"), "w");
	REQUIRE(f);
	for (int i = 0; i < lines; i++)
		fprintf(f, "%08d\n", i);
	fclose(f);
	key_prefix(in_path("g.log"), old_prefix, sizeof(old_prefix));
	REQUIRE(rig_init(&r, "quiet_time = 1s\nparser = raw\nread_slice = 4KiB\n") == 0);
	tc_advance(r.a.loop, 999);
	tc_now_ms += 2;
	while (input_ticket(r.in) == 0 && more++ < 10)
		loop_turn(r.a.loop, 0);               /* taken, a first slice read */
	REQUIRE(input_ticket(r.in) > 0 && input_ticket(r.in) < (uint64_t)lines);
	f = fopen(in_path("g.log"), "a");
	REQUIRE(f);
	for (int i = lines; i < lines + 10; i++)
		fprintf(f, "%08d\n", i);
	fclose(f);
	key_prefix(in_path("g.log"), new_prefix, sizeof(new_prefix));
	tc_advance(r.a.loop, 0);
	settle(&r);
	CHECK(input_ticket(r.in) < (uint64_t)lines);  /* stopped */
	CHECK(has(state_of(&r), "1 waiting"));
	tc_advance(r.a.loop, 1100);                   /* quiet again: goes on */
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "g.log"));
	records(&r, &s);
	REQUIRE(s.n == lines + 10);
	for (int i = 0; i < s.n; i++) {
		char want[80];

		snprintf(want, sizeof(want), "{\"file\":\"g.log\",\"line\":%d,\"data\":\"%08d\"}", i + 1, i);
		if (strcmp(s.data[i], want)) {
			CHECK_EQ_STR(s.data[i], want);
			break;
		}
	}
	CHECK(!strncmp(s.key[0], old_prefix, strlen(old_prefix)));
	CHECK(!strncmp(s.key[s.n - 1], new_prefix, strlen(new_prefix)));
	seen_free(&s);
	rig_release(&r);
}

/* Rewritten while it is read (what was sent is not in it any more): it
 * goes to failed_dir with the reason, once the records sent are committed. */
TEST(test_changed_while_read_rewritten)
{
	struct rig r;
	char buf[2048];
	FILE *f;

	new_dirs();
	f = fopen(in_path("w.log"), "w");
	REQUIRE(f);
	for (int i = 0; i < 3000; i++)
		fprintf(f, "%08d\n", i);
	fclose(f);
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\nread_slice = 4KiB\n") == 0);
	loop_turn(r.a.loop, 0);
	REQUIRE(input_ticket(r.in) > 0 && input_ticket(r.in) < 3000);
	f = fopen(in_path("w.log"), "r+");
	REQUIRE(f);
	fprintf(f, "XXXXXXXX\n");                     /* the first line, sent, changed */
	fclose(f);
	tc_advance(r.a.loop, 300);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "w.log"));
	CHECK(exists(failed_dir, "w.log"));
	CHECK(has(slurp(failed_dir, "w.log.reason", buf, sizeof(buf)), "changed while being read"));
	CHECK(has(state_of(&r), "failed 1"));
	rig_release(&r);
}

/* Written to after it was read, before its records were committed: it is
 * not removed. Appended to, it is read on from where it stopped; written
 * anew, it is read whole as a new file (new keys). */
TEST(test_written_after_read)
{
	struct rig r;
	struct seen s = { 0 };

	new_dirs();
	put("a.log", "1\n2\n");
	put("b.log", "x\n");
	REQUIRE(rig_init_q(&r, "commit_interval = 2s\n", "quiet_time = 1s\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 1100);                   /* both read, not committed */
	CHECK_EQ_INT(input_ticket(r.in), 3);
	append("a.log", "3\n");
	put("b.log", "yy\nzz\n");
	tc_advance(r.a.loop, 2000);                   /* committed: neither removed */
	CHECK(exists(in_dir, "a.log") && exists(in_dir, "b.log"));
	CHECK_EQ_INT(input_ticket(r.in), 3);
	tc_advance(r.a.loop, 1200);                   /* quiet again: read on, read anew */
	CHECK_EQ_INT(input_ticket(r.in), 6);
	tc_advance(r.a.loop, 2100);
	CHECK(!exists(in_dir, "a.log") && !exists(in_dir, "b.log"));
	records(&r, &s);
	REQUIRE(s.n == 6);
	{
		static const char *const want[] = {
			"{\"file\":\"a.log\",\"line\":1,\"data\":\"1\"}", "{\"file\":\"a.log\",\"line\":2,\"data\":\"2\"}",
			"{\"file\":\"a.log\",\"line\":3,\"data\":\"3\"}", "{\"file\":\"b.log\",\"line\":1,\"data\":\"x\"}",
			"{\"file\":\"b.log\",\"line\":1,\"data\":\"yy\"}", "{\"file\":\"b.log\",\"line\":2,\"data\":\"zz\"}",
		};
		int x = find(&s, want[3]), yy = find(&s, want[4]);

		for (int i = 0; i < 6; i++)
			CHECK(find(&s, want[i]) >= 0);
		/* a.log's third line after its first two; the new b.log has
		 * new keys, its first line too (offset 0 both). */
		CHECK(find(&s, want[2]) > find(&s, want[1]));
		REQUIRE(x >= 0 && yy >= 0);
		CHECK(strcmp(s.key[x], s.key[yy]) != 0);
	}
	seen_free(&s);
	rig_release(&r);
}

/* Replaced under its name (a writer renames a new file onto it) after it
 * was read: the new file is not removed with the old one but read in its
 * turn. What a stop left between renaming a committed file aside and
 * removing it is removed. */
TEST(test_replaced_before_commit)
{
	struct rig r;
	struct seen s = { 0 };
	char tmp[600];

	new_dirs();
	put("a.log", "old\n");
	put(".spool-remove-42", "committed before a stop\n");
	REQUIRE(rig_init_q(&r, "commit_interval = 2s\n", "ready = rename\npattern = *.log\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 10);
	CHECK_EQ_INT(input_ticket(r.in), 1);
	CHECK(!exists(in_dir, ".spool-remove-42"));
	snprintf(tmp, sizeof(tmp), "%s", in_path("a.tmp"));
	put("a.tmp", "new\n");
	REQUIRE(rename(tmp, in_path("a.log")) == 0);
	tc_advance(r.a.loop, 2100);                   /* the old one committed and gone */
	tc_advance(r.a.loop, 2100);                   /* the new one read and committed */
	CHECK(!exists(in_dir, "a.log"));
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "{\"file\":\"a.log\",\"line\":1,\"data\":\"old\"}");
	CHECK_EQ_STR(s.data[1], "{\"file\":\"a.log\",\"line\":1,\"data\":\"new\"}");
	CHECK(has(state_of(&r), "done 2"));
	seen_free(&s);
	rig_release(&r);
}

/* A line longer than max_record_bytes goes to the DLQ (its head), the
 * lines around it are records. */
TEST(test_long_line)
{
	struct rig r;
	struct seen s = { 0 };
	size_t n = 200000;
	char *big = malloc(n + 16);

	new_dirs();
	REQUIRE(big);
	memcpy(big, "a\n", 2);
	memset(big + 2, 'x', n);
	memcpy(big + 2 + n, "\nb\n", 3);
	put_bytes(in_path("l.log"), big, n + 5, O_TRUNC);
	free(big);
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\nread_slice = 16KiB\n") == 0);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "l.log"));
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[1], "{\"file\":\"l.log\",\"line\":3,\"data\":\"b\"}");
	CHECK_EQ_INT(dlq_count(&r), 1);
	CHECK(has(snapshot(&r).last_error, "line longer than max_record_bytes (200000 bytes"));
	seen_free(&s);
	rig_release(&r);
}

static int64_t eio_after;        /* bytes the failing pread still gives */

static ssize_t failing_pread(int fd, void *buf, size_t n, off_t off)
{
	if (off + (off_t)n <= eio_after)
		return pread(fd, buf, n, off);
	if (off < eio_after)
		return pread(fd, buf, (size_t)(eio_after - off), off);
	errno = EIO;
	return -1;
}

/* An I/O error in the middle of a file: what was read before it is sent
 * (and committed), the file goes to failed_dir with the reason, and the
 * next file is read. */
TEST(test_read_error)
{
	struct rig r;
	struct seen s = { 0 };
	char want[128];
	char buf[2048];
	FILE *f;

	new_dirs();
	f = fopen(in_path("bad.log"), "w");
	REQUIRE(f);
	for (int i = 0; i < 2000; i++)
		fprintf(f, "%08d\n", i);
	fclose(f);
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\nread_slice = 4KiB\n") == 0);
	eio_after = 9000;
	spool_sys.pread = failing_pread;
	tc_advance(r.a.loop, 300);
	spool_sys.pread = pread;
	put("next.log", "n\n");
	tc_advance(r.a.loop, 1300);
	CHECK(!exists(in_dir, "bad.log") && exists(failed_dir, "bad.log"));
	snprintf(want, sizeof(want), "read error at offset 9000: %s", strerror(EIO));
	CHECK(has(slurp(failed_dir, "bad.log.reason", buf, sizeof(buf)), want));
	CHECK(has(buf, "sent: 1000 records (bytes 0 to 9000)"));
	CHECK(!exists(in_dir, "next.log"));
	records(&r, &s);
	CHECK_EQ_INT(s.n, 1001);
	CHECK(has(state_of(&r), "done 1, failed 1"));
	seen_free(&s);
	rig_release(&r);
}

/* Removed by another program while it is read: read to its end through
 * the open descriptor, nothing lost, nothing left to remove. */
TEST(test_vanished_mid_read)
{
	struct rig r;
	struct seen s = { 0 };
	FILE *f;

	new_dirs();
	f = fopen(in_path("v.log"), "w");
	REQUIRE(f);
	for (int i = 0; i < 3000; i++)
		fprintf(f, "%08d\n", i);
	fclose(f);
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\nread_slice = 4KiB\n") == 0);
	loop_turn(r.a.loop, 0);
	REQUIRE(input_ticket(r.in) > 0 && input_ticket(r.in) < 3000);
	REQUIRE(unlink(in_path("v.log")) == 0);
	tc_advance(r.a.loop, 300);
	records(&r, &s);
	CHECK_EQ_INT(s.n, 3000);
	CHECK(has(state_of(&r), "done 1, failed 0"));
	seen_free(&s);
	rig_release(&r);
}

static int no_inotify(int flags)
{
	(void)flags;
	errno = EMFILE;
	return -1;
}

/* Without inotify: files are found by listing dir every poll_interval,
 * quiet_time alone decides (a file open for writing cannot be seen), and
 * status says so. */
TEST(test_polling)
{
	struct rig r;

	new_dirs();
	spool_sys.inotify_init1 = no_inotify;
	REQUIRE(rig_init(&r, "quiet_time = 2s\npoll_interval = 500ms\nparser = raw\n") == 0);
	spool_sys.inotify_init1 = inotify_init1;
	tc_advance(r.a.loop, 100);
	put("a.log", "1\n");
	tc_advance(r.a.loop, 300);
	CHECK(has(state_of(&r), "0 waiting"));        /* not listed yet */
	CHECK(has(state_of(&r), "polling"));
	tc_advance(r.a.loop, 200);                    /* listed at 500 ms */
	CHECK(has(state_of(&r), "1 waiting"));
	append("a.log", "2\n");                       /* at 600 ms, seen at 1000 ms */
	tc_advance(r.a.loop, 2300);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	tc_advance(r.a.loop, 200);                    /* 2 s after the change was seen */
	CHECK_EQ_INT(input_ticket(r.in), 2);
	tc_advance(r.a.loop, 200);
	CHECK(!exists(in_dir, "a.log"));
	rig_release(&r);
}

/* What cannot be read as a file (a directory, a FIFO) goes to failed_dir
 * with its reason beside it; the other files go on. */
TEST(test_not_regular_files_fail)
{
	struct rig r;
	char buf[2048];
	struct status_input st;

	new_dirs();
	REQUIRE(mkdir(in_path("d.log"), 0755) == 0);
	REQUIRE(mkfifo(in_path("p.log"), 0644) == 0);
	put("ok.log", "fine\n");
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "ok.log"));
	CHECK(exists(failed_dir, "d.log") && exists(failed_dir, "p.log"));
	CHECK(has(slurp(failed_dir, "d.log.reason", buf, sizeof(buf)), "not a regular file (a directory)"));
	CHECK(has(slurp(failed_dir, "p.log.reason", buf, sizeof(buf)), "not a regular file (a FIFO)"));
	CHECK(has(buf, "file: "));
	st = snapshot(&r);
	CHECK(has(st.state, "done 1, failed 2"));
	CHECK(has(st.last_error, "not a regular file"));
	/* A second file of the same name does not overwrite the first. */
	REQUIRE(mkdir(in_path("d.log"), 0755) == 0);
	tc_advance(r.a.loop, 1100);
	CHECK(exists(failed_dir, "d.log.1") && exists(failed_dir, "d.log.1.reason"));
	rig_release(&r);
}

/* A file the agent may not read goes to failed_dir with the reason. */
static void permission_case(void)
{
	struct rig r;
	char buf[2048];

	new_dirs();
	put("secret.log", "s\n");
	REQUIRE(chmod(in_path("secret.log"), 0) == 0);
	put("open.log", "o\n");
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\n") == 0);
	tc_advance(r.a.loop, 300);
	CHECK(!exists(in_dir, "secret.log") && !exists(in_dir, "open.log"));
	CHECK(exists(failed_dir, "secret.log"));
	CHECK(has(slurp(failed_dir, "secret.log.reason", buf, sizeof(buf)), "cannot open: Permission denied"));
	CHECK_EQ_INT(input_ticket(r.in), 1);
	rig_release(&r);
}

/* Permission bits do not stop root: as root, the case runs in a child that
 * has become nobody, in a directory nobody owns. */
TEST(test_permission_denied)
{
	char sub[sizeof(dir) + 8];
	pid_t pid;
	int status;

	if (geteuid() != 0) {
		permission_case();
		return;
	}
	snprintf(sub, sizeof(sub), "%s/u", dir);
	REQUIRE(chmod(dir, 0711) == 0);
	REQUIRE(mkdir(sub, 0755) == 0);
	REQUIRE(chown(sub, NOBODY, NOBODY) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		int before = test_failed_checks;

		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(77);
		if (geteuid() != NOBODY || setuid(0) == 0)
			_exit(77);
		memcpy(dir, sub, strlen(sub) + 1 < sizeof(dir) ? strlen(sub) + 1 : sizeof(dir));
		if (strlen(sub) + 1 > sizeof(dir))
			_exit(78);
		permission_case();
		fflush(stdout);
		fflush(stderr);
		_exit(test_failed_checks != before ? 1 : 0);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		SKIP("running as root and cannot drop to uid %d", NOBODY);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A done_dir on another filesystem cannot take files by rename: status
 * says so, and nothing is removed. */
TEST(test_done_dir_other_filesystem)
{
	struct rig r;
	struct stat a, b;
	struct status_input st;

	new_dirs();
	if (stat(base, &a) || stat("/dev/shm", &b) || a.st_dev == b.st_dev)
		SKIP("no second filesystem (/dev/shm) here");
	put("a.log", "1\n");
	REQUIRE(rig_init(&r, "ready = rename\nparser = raw\ndone_dir = /dev/shm\n") == 0);
	tc_advance(r.a.loop, 300);
	st = snapshot(&r);
	CHECK(has(st.last_error, "on another filesystem"));
	CHECK(exists(in_dir, "a.log"));
	CHECK_EQ_INT(input_ticket(r.in), 0);
	rig_release(&r);
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
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_keys_and_validation);
	RUN(test_quiet_growing_file);
	RUN(test_quiet_existing_file);
	RUN(test_rename_mode);
	RUN(test_csv);
	RUN(test_binary);
	RUN(test_binary_chunk_too_big);
	RUN(test_removed_only_after_commit);
	RUN(test_move_fails_then_restart);
	RUN(test_keys_repeat_and_change);
	RUN(test_big_file_in_slices);
	RUN(test_changed_while_read_grows);
	RUN(test_changed_while_read_rewritten);
	RUN(test_written_after_read);
	RUN(test_replaced_before_commit);
	RUN(test_long_line);
	RUN(test_read_error);
	RUN(test_vanished_mid_read);
	RUN(test_polling);
	RUN(test_not_regular_files_fail);
	RUN(test_permission_denied);
	RUN(test_done_dir_other_filesystem);
	RUN(test_no_leaks);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_END();
}
