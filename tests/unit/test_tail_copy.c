/* test_tail_copy.c - the tail driver after copytruncate, against real
 * files and the real event loop (tail_fixture.h): the unread part read from
 * the rotated copy, plain or gzipped, across restarts; what no file holds
 * any more marked as a gap; reading as data arrives, and polling when inotify
 * cannot be had.
 */
#include <zlib.h>

#include "test.h"
#include "tail_fixture.h"

/* ---- copy-truncate: the unread part is read from the rotated copy -------- */

/* dst = the first len bytes of src (-1: all), as logrotate's copy makes it. */
static void copy_file(const char *src, const char *dst, int64_t len)
{
	char buf[65536];
	int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (in < 0 || out < 0)
		abort();
	while (len != 0 && (n = read(in, buf, len > 0 && len < (int64_t)sizeof(buf) ?
					   (size_t)len : sizeof(buf))) > 0) {
		if (write(out, buf, (size_t)n) != n)
			abort();
		if (len > 0)
			len -= n;
	}
	close(in);
	close(out);
}

static int64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Generation and offset of record i. */
static void key_of_rec(const struct input *in, size_t i, uint64_t *gen, int64_t *off)
{
	uint64_t dev, ino;

	*gen = 0;
	*off = -1;
	if (i < in->n_recs)
		parse_key(in->recs[i].key, &dev, &ino, gen, off);
}

TEST(copy_truncate_reads_the_unread_part_from_the_copy)
{
	struct fixture f;
	uint64_t gen0, gen;
	int64_t off, at100;
	struct stat sb;
	char prefix[96];

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 100);
	at100 = file_size(fpath("app.log"));
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 100, 5000);
	REQUIRE(f.in.n_recs == 100);
	key_of_rec(&f.in, 0, &gen0, &off);
	/* The loop does not run: these lines are not read when logrotate
	 * copies the file and truncates it, and the writer goes on. */
	append_lines(fpath("app.log"), "a", 100, 150);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 10);
	run(&f.in, 160, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 160);
	CHECK_EQ_INT(expect_lines(&f.in, 0, "a", 0, 150), 150);
	CHECK_EQ_INT(expect_lines(&f.in, 150, "b", 0, 10), 160);
	/* The copy's lines keep the keys they had in the live file. */
	REQUIRE(stat(fpath("app.log"), &sb) == 0);
	snprintf(prefix, sizeof(prefix), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)sb.st_dev,
		 (uint64_t)sb.st_ino);
	CHECK_EQ_INT(count_with_key(&f.in, prefix), 160);
	key_of_rec(&f.in, 100, &gen, &off);
	CHECK(gen == gen0 && off == at100);
	key_of_rec(&f.in, 150, &gen, &off);
	CHECK(gen == gen0 + 1 && off == 0);
	CHECK_EQ_INT(f.in.n_gaps, 0);
	CHECK_EQ_STR(f.in.last_error, "");
	CHECK(strstr(f.in.state, "lost") == NULL);
	fixture_stop(&f);
}

TEST(copy_truncate_loss_is_a_gap_marker)
{
	struct fixture f;
	int64_t at100, at150, at36, at40;
	uint64_t gen0;
	int64_t off;
	struct stat sb;
	char key[128];

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 100);
	at100 = file_size(fpath("app.log"));
	append_lines(fpath("app.log"), "a", 100, 150);
	at150 = file_size(fpath("app.log"));
	REQUIRE(stat(fpath("app.log"), &sb) == 0);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	/* The queue is full after 100 lines: the driver knows of 150. */
	f.in.block_at = 101;
	REQUIRE(fixture_start(&f) == 0);
	REQUIRE(run_until(&f.in, refused, 5000));
	REQUIRE(f.in.n_recs == 100);
	key_of_rec(&f.in, 0, &gen0, &off);
	/* Truncated with no copy made (not by logrotate). */
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 30);
	f.in.block_at = -1;
	f.in.blocked = false;
	drv->resume(&f.in, f.st);
	run(&f.in, 130, 5000);
	CHECK_EQ_INT(expect_lines(&f.in, 100, "b", 0, 30), 130);
	REQUIRE(f.in.n_gaps == 1);
	CHECK_EQ_STR(f.in.gaps[0].source, fpath("app.log"));
	CHECK_EQ_INT(f.in.gaps[0].off, at100);
	CHECK_EQ_INT(f.in.gaps[0].bytes, at150 - at100);
	CHECK_EQ_STR(f.in.gaps[0].reason, "truncated_unread");
	snprintf(key, sizeof(key), "gap:tail:%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":%" PRId64,
		 (uint64_t)sb.st_dev, (uint64_t)sb.st_ino, gen0, at100);
	CHECK_EQ_STR(f.in.gaps[0].key, key);
	CHECK(strstr(f.in.state, "lost: 1 gap, ") != NULL);
	CHECK(strstr(f.in.last_error, "are lost") != NULL);
	/* The loss stays shown while all goes well again. */
	append_lines(fpath("app.log"), "b", 30, 31);
	run(&f.in, 131, 5000);
	drive(&f.in, f.st);
	CHECK(strstr(f.in.last_error, "are lost") != NULL);

	/* logrotate copies, the writer adds lines, logrotate truncates: those
	 * lines are in no file. The driver knew of them (it saw the size). */
	f.in.block_at = f.in.attempts + 1;
	append_lines(fpath("app.log"), "b", 31, 36);
	at36 = file_size(fpath("app.log"));
	append_lines(fpath("app.log"), "b", 36, 40);
	at40 = file_size(fpath("app.log"));
	REQUIRE(run_until(&f.in, refused, 5000));
	copy_file(fpath("app.log"), fpath("app.log.1"), at36);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 3);
	f.in.block_at = -1;
	f.in.blocked = false;
	drv->resume(&f.in, f.st);
	run(&f.in, 139, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 139);
	CHECK_EQ_INT(expect_lines(&f.in, 131, "b", 31, 36), 136);
	CHECK_EQ_INT(expect_lines(&f.in, 136, "c", 0, 3), 139);
	REQUIRE(f.in.n_gaps == 2);
	CHECK_EQ_INT(f.in.gaps[1].off, at36);
	CHECK_EQ_INT(f.in.gaps[1].bytes, at40 - at36);
	CHECK_EQ_STR(f.in.gaps[1].reason, "written_after_copy");
	CHECK(strstr(f.in.state, "lost: 2 gaps, ") != NULL);
	fixture_stop(&f);
}

TEST(copy_truncate_survives_restarts)
{
	struct fixture f;
	size_t committed;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 1000);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	conf_set(f.conf, "max_lines_per_tick", "37");
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 1000, 5000);
	fake_commit(&f.in);
	drv->stop(&f.in, f.st);
	/* Rotated while agentd is stopped. */
	append_lines(fpath("app.log"), "a", 1000, 1500);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 100);
	REQUIRE(fixture_start(&f) == 0);
	/* A power cut while the copy is being read ... */
	committed = fixture_crash(&f, 1200, 1400, NULL);
	CHECK_EQ_INT(f.in.n_recs, committed);
	/* ... and the next start goes on in the copy where the commit was. */
	f.in.commit_every = 1;
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 1600, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 1600);
	CHECK_EQ_INT(expect_lines(&f.in, 0, "a", 0, 1500), 1500);
	CHECK_EQ_INT(expect_lines(&f.in, 1500, "b", 0, 100), 1600);
	CHECK_EQ_INT(repeated_keys(&f.in), 0);
	CHECK_EQ_INT(f.in.n_gaps, 0);
	fixture_stop(&f);
}

/* Of the files that begin like the truncated one, the one that also holds
 * the bytes read last is its copy, even if another is newer. */
TEST(copy_truncate_finds_the_right_copy)
{
	struct fixture f;
	char head[80];
	struct timespec later[2] = { { 0, UTIME_NOW }, { 0, 0 } };
	struct stat sb;

	make_dir();
	memset(head, 'H', 70);
	head[70] = '\0';
	append(fpath("app.log"), "%s\n", head);
	append_lines(fpath("app.log"), "a", 1, 100);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 100, 5000);
	REQUIRE(f.in.n_recs == 100);
	append_lines(fpath("app.log"), "a", 100, 150);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	/* A look-alike: same head, long enough, newer. */
	append(fpath("app.log.bak"), "%s\n", head);
	append_lines(fpath("app.log.bak"), "z", 1, 200);
	REQUIRE(stat(fpath("app.log.1"), &sb) == 0);
	later[1].tv_sec = sb.st_mtim.tv_sec + 100;
	REQUIRE(utimensat(AT_FDCWD, fpath("app.log.bak"), later, 0) == 0);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 5);
	run(&f.in, 155, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 155);
	CHECK_EQ_INT(expect_lines(&f.in, 100, "a", 100, 150), 150);
	CHECK_EQ_INT(expect_lines(&f.in, 150, "b", 0, 5), 155);
	CHECK(!have_data(&f.in, "z150"));
	fixture_stop(&f);
}

/* dst = src gzipped, as logrotate's compress makes it. */
static void gzip_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY);
	gzFile out = gzopen(dst, "wb6");
	ssize_t n;

	if (in < 0 || !out)
		abort();
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (gzwrite(out, buf, (unsigned)n) != n)
			abort();
	close(in);
	gzclose(out);
}

TEST(copy_truncate_reads_a_gzipped_copy)
{
	struct fixture f;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 2000);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	/* Small chunks: reaching the offset in the copy takes many turns. */
	conf_set(f.conf, "read_chunk", "4096");
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 2000, 5000);
	REQUIRE(f.in.n_recs == 2000);
	append_lines(fpath("app.log"), "a", 2000, 2500);
	/* An older gzipped copy that begins otherwise, and the copy itself,
	 * compressed before the driver looks (compress without delaycompress). */
	append_lines(fpath("older"), "o", 0, 3000);
	gzip_file(fpath("older"), fpath("app.log.2.gz"));
	REQUIRE(unlink(fpath("older")) == 0);
	gzip_file(fpath("app.log"), fpath("app.log.1.gz"));
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 10);
	run(&f.in, 2510, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 2510);
	CHECK_EQ_INT(expect_lines(&f.in, 2000, "a", 2000, 2500), 2500);
	CHECK_EQ_INT(expect_lines(&f.in, 2500, "b", 0, 10), 2510);
	CHECK_EQ_INT(f.in.n_gaps, 0);

	/* A copy compressed in a format the driver does not read: the lines
	 * are marked lost, how many is not known (never seen). */
	append_lines(fpath("app.log"), "b", 10, 20);
	run(&f.in, 2520, 5000);
	append_lines(fpath("app.log"), "b", 20, 30);
	append(fpath("app.log.1.zst"), "(zstd data)\n");
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 3);
	run(&f.in, 2523, 5000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 2523);
	CHECK_EQ_INT(expect_lines(&f.in, 2520, "c", 0, 3), 2523);
	REQUIRE(f.in.n_gaps == 1);
	CHECK_EQ_STR(f.in.gaps[0].reason, "copy_compressed");
	CHECK_EQ_INT(f.in.gaps[0].bytes, -1);
	CHECK(strstr(f.in.last_error, "compressed") != NULL);
	CHECK(strstr(f.in.state, "lost: 1 gap, 0 bytes and more") != NULL);
	fixture_stop(&f);
}

/* ---- reading as data arrives, and polling when that cannot be had ------- */

TEST(lines_are_read_as_they_arrive)
{
	struct fixture f;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 3);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	/* The timer alone would look again only in an hour. */
	conf_set(f.conf, "poll_interval", "3600s");
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 3, 5000);
	REQUIRE(f.in.n_recs == 3);
	CHECK(strstr(f.in.state, "polling") == NULL);
	append_lines(fpath("app.log"), "a", 3, 10);
	run(&f.in, 10, 5000);
	CHECK_EQ_INT(f.in.n_recs, 10);
	/* A rename rotation: the new file is found at once too. */
	REQUIRE(rename(fpath("app.log"), fpath("app.log.1")) == 0);
	append_lines(fpath("app.log"), "b", 0, 4);
	run(&f.in, 14, 5000);
	CHECK_EQ_INT(f.in.n_recs, 14);
	CHECK_EQ_INT(expect_lines(&f.in, 10, "b", 0, 4), 14);
	/* A copy truncation as well. */
	append_lines(fpath("app.log"), "b", 4, 8);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 2);
	run(&f.in, 16, 5000);
	CHECK(have_data(&f.in, "c1"));
	fixture_stop(&f);
}

extern struct tail_syscalls {
	int (*inotify_init1)(int flags);
	int (*inotify_add_watch)(int fd, const char *path, uint32_t mask);
} tail_sys;

static int no_instances(int flags)
{
	(void)flags;
	errno = EMFILE;
	return -1;
}

static int no_watches(int fd, const char *path, uint32_t mask)
{
	(void)fd;
	(void)path;
	(void)mask;
	errno = ENOSPC;
	return -1;
}

TEST(polling_when_inotify_cannot_be_had)
{
	struct tail_syscalls saved = tail_sys;
	struct fixture f;

	make_dir();
	for (int k = 0; k < 2; k++) {
		if (k == 0)
			tail_sys.inotify_init1 = no_instances;
		else
			tail_sys.inotify_add_watch = no_watches;
		REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
		REQUIRE(fixture_start(&f) == 0);
		CHECK(strstr(f.in.state, k == 0 ? "polling (inotify instance limit reached"
					    : "polling (inotify watch limit reached") != NULL);
		append_lines(fpath("app.log"), k ? "b" : "a", 0, 5);
		run(&f.in, 5, 5000);
		CHECK_EQ_INT(f.in.n_recs, 5);
		fixture_release(&f);
		tail_sys = saved;
		REQUIRE(unlink(fpath("app.log")) == 0);
	}
	remove_dir();
}

int main(void)
{
	log_set_level(LOGL_WARN);
	drv = driver_find("tail");
	if (!drv) {
		fprintf(stderr, "tail driver not registered\n");
		return 1;
	}
	RUN(copy_truncate_reads_the_unread_part_from_the_copy);
	RUN(copy_truncate_loss_is_a_gap_marker);
	RUN(copy_truncate_survives_restarts);
	RUN(copy_truncate_finds_the_right_copy);
	RUN(copy_truncate_reads_a_gzipped_copy);
	RUN(lines_are_read_as_they_arrive);
	RUN(polling_when_inotify_cannot_be_had);
	TEST_END();
}
