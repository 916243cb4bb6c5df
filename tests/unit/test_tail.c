/* test_tail.c - the tail driver against real files and the real event loop
 * (tail_fixture.h): following files from their start or end, rotation by
 * rename, truncation, deletion, globs, long lines, restarts without loss or
 * duplicates, a full queue, open and permission errors, csv headers.
 */
#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tail_fixture.h"

/* ---- tests ---------------------------------------------------------------- */

TEST(registry_and_key_table)
{
	char err[128];
	void *conf;

	CHECK(driver_find("tail") == drv);
	CHECK(driver_find("no-such-driver") == NULL);
	CHECK_EQ_INT(drv->version, DRIVER_VERSION);
	for (const struct cfg_key *k = drv->conf_keys; k->name; k++)
		CHECK(k->help && strlen(k->help) > 20);
	REQUIRE(key_of("path") && key_of("path")->required);
	conf = conf_new("relative/*.log");
	CHECK(drv->validate(conf, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "absolute") != NULL);
	conf_set(conf, "path", "/var/log/a.log, /var/log/b/*.log");
	CHECK(drv->validate(conf, err, sizeof(err)) == 0);
	conf_set(conf, "path", " , ");
	CHECK(drv->validate(conf, err, sizeof(err)) == -EINVAL);
	conf_free(conf);
	drv->stop(NULL, NULL);
}

TEST(every_line_once_in_order)
{
	struct fixture f;
	struct stat sb;
	char prefix[96];
	long at;
	uint64_t dev, ino, gen, gen0 = 0;
	int64_t off, want_off = 0;

	make_dir();
	append_lines(fpath("a.log"), "line ", 0, 25000);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 25000, 5000);
	append_lines(fpath("a.log"), "line ", 25000, 30000);
	run(&f.in, 30000, 5000);
	at = expect_lines(&f.in, 0, "line ", 0, 30000);
	CHECK_EQ_INT(at, 30000);
	CHECK_EQ_INT(f.in.n_recs, 30000);
	/* Keys: this file's identity, one generation, each line's offset. */
	REQUIRE(stat(fpath("a.log"), &sb) == 0);
	snprintf(prefix, sizeof(prefix), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)sb.st_dev,
		 (uint64_t)sb.st_ino);
	CHECK_EQ_INT(count_with_key(&f.in, prefix), 30000);
	for (size_t i = 0; i < f.in.n_recs; i++) {
		REQUIRE(parse_key(f.in.recs[i].key, &dev, &ino, &gen, &off));
		if (i == 0)
			gen0 = gen;
		CHECK(gen == gen0);
		if (off != want_off) {
			CHECK_EQ_INT(off, want_off);
			break;
		}
		want_off += (int64_t)f.in.recs[i].len + 1;
	}
	CHECK(strstr(f.in.state, "tailing 1 file") != NULL);
	CHECK_EQ_INT(f.in.errors, 0);
	/* The saved position points after the last line. */
	{
		const struct pos *p;
		char source[64];
		int64_t saved;

		snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)sb.st_dev,
			 (uint64_t)sb.st_ino);
		p = pos_get(f.in.pending, f.in.n_pending, source);
		REQUIRE(p && p->state);
		CHECK(sscanf(p->state, "2 %" SCNd64, &saved) == 1 && saved == sb.st_size);
		CHECK(strstr(p->state, fpath("a.log")) != NULL);
	}
	fixture_stop(&f);
}

TEST(start_at_end_skips_existing_content)
{
	struct fixture f;

	make_dir();
	append_lines(fpath("a.log"), "old ", 0, 100);
	append(fpath("a.log"), "par");
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	conf_set(f.conf, "start_at", "end");
	REQUIRE(fixture_start(&f) == 0);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 0);
	/* The line being written at start is read whole. */
	append(fpath("a.log"), "tial\n");
	append_lines(fpath("a.log"), "new ", 0, 3);
	run(&f.in, 4, 2000);
	REQUIRE(f.in.n_recs == 4);
	CHECK_EQ_STR(f.in.recs[0].data, "partial");
	CHECK_EQ_INT(expect_lines(&f.in, 1, "new ", 0, 3), 4);
	fixture_stop(&f);
}

TEST(partial_last_line_waits)
{
	struct fixture f;

	make_dir();
	append(fpath("a.log"), "one\nabc");
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 1, 2000);
	drive(&f.in, f.st);
	REQUIRE(f.in.n_recs == 1);
	CHECK_EQ_STR(f.in.recs[0].data, "one");
	append(fpath("a.log"), "def");
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 1);
	append(fpath("a.log"), "\n");
	run(&f.in, 2, 2000);
	REQUIRE(f.in.n_recs == 2);
	CHECK_EQ_STR(f.in.recs[1].data, "abcdef");
	fixture_stop(&f);
}

TEST(rename_rotation_reads_old_file_to_its_end)
{
	struct fixture f;
	struct stat old, cur;
	char pold[96], pnew[96], source[64];
	const struct pos *p;
	long at;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 10);
	REQUIRE(stat(fpath("app.log"), &old) == 0);
	REQUIRE(fixture_init(&f, fpath("app.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 10, 2000);
	REQUIRE(f.in.n_recs == 10);
	REQUIRE(rename(fpath("app.log"), fpath("app.log.1")) == 0);
	/* The writer has not reopened yet: its lines go to the old file. */
	append_lines(fpath("app.log.1"), "a", 10, 15);
	append_lines(fpath("app.log"), "b", 0, 5);
	run(&f.in, 20, 2000);
	/* The writer's unterminated last line comes after rotate_wait. */
	append(fpath("app.log.1"), "last words");
	run(&f.in, 21, 3000);
	REQUIRE(stat(fpath("app.log"), &cur) == 0);
	snprintf(pold, sizeof(pold), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	snprintf(pnew, sizeof(pnew), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)cur.st_dev,
		 (uint64_t)cur.st_ino);
	CHECK_EQ_INT(f.in.n_recs, 21);
	CHECK_EQ_INT(count_with_key(&f.in, pold), 16);
	CHECK_EQ_INT(count_with_key(&f.in, pnew), 5);
	/* Each file's lines in order. */
	{
		int a = 0, b = 0;
		char want[32];

		for (size_t i = 0; i < f.in.n_recs; i++) {
			bool is_old = !strncmp(f.in.recs[i].key, pold, strlen(pold));

			if (is_old && a == 15) {
				CHECK_EQ_STR(f.in.recs[i].data, "last words");
				a++;
				continue;
			}
			snprintf(want, sizeof(want), "%s%d", is_old ? "a" : "b", is_old ? a++ : b++);
			CHECK_EQ_STR(f.in.recs[i].data, want);
		}
	}
	/* The old file is finished: closed and its position forgotten. */
	drive(&f.in, f.st);
	snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	p = pos_get(f.in.pending, f.in.n_pending, source);
	CHECK(p && p->state == NULL);
	CHECK(strstr(f.in.state, "tailing 1 file, 0 rotated") != NULL);
	at = (long)f.in.n_recs;
	append_lines(fpath("app.log.1"), "late", 0, 1);
	append_lines(fpath("app.log"), "b", 5, 7);
	run(&f.in, 23, 2000);
	CHECK_EQ_INT(f.in.n_recs, at + 2);
	CHECK(!have_data(&f.in, "late0"));
	fixture_stop(&f);
}

/* The line at index i comes from generation gen and offset off? */
static bool key_is(const struct input *in, size_t i, uint64_t gen, int64_t off)
{
	uint64_t dev, ino, g;
	int64_t o;

	return i < in->n_recs && parse_key(in->recs[i].key, &dev, &ino, &g, &o) && g == gen &&
	       o == off;
}

TEST(truncation_restarts_with_new_generation)
{
	struct fixture f;
	uint64_t dev, ino, gen;
	int64_t off;

	make_dir();
	append_lines(fpath("a.log"), "first ", 0, 10);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 10, 2000);
	REQUIRE(f.in.n_recs == 10);
	REQUIRE(parse_key(f.in.recs[0].key, &dev, &ino, &gen, &off));
	REQUIRE(truncate(fpath("a.log"), 0) == 0);
	drive(&f.in, f.st);
	append_lines(fpath("a.log"), "second ", 0, 3);
	run(&f.in, 13, 2000);
	REQUIRE(f.in.n_recs == 13);
	CHECK_EQ_INT(expect_lines(&f.in, 10, "second ", 0, 3), 13);
	CHECK(key_is(&f.in, 10, gen + 1, 0));
	CHECK(key_is(&f.in, 11, gen + 1, 9));
	fixture_stop(&f);
}

TEST(copy_truncate_refilled_before_next_look)
{
	struct fixture f;
	uint64_t dev, ino, gen;
	int64_t off;

	make_dir();
	append_lines(fpath("a.log"), "x", 0, 5);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 5, 2000);
	REQUIRE(f.in.n_recs == 5);
	REQUIRE(parse_key(f.in.recs[0].key, &dev, &ino, &gen, &off));
	/* Loop not running: the driver only sees the refilled, longer file,
	 * whose head differs. */
	REQUIRE(truncate(fpath("a.log"), 0) == 0);
	append_lines(fpath("a.log"), "after copy ", 0, 20);
	run(&f.in, 25, 2000);
	CHECK_EQ_INT(f.in.n_recs, 25);
	CHECK_EQ_INT(expect_lines(&f.in, 5, "after copy ", 0, 20), 25);
	CHECK(key_is(&f.in, 5, gen + 1, 0));
	fixture_stop(&f);
}

static bool one_file(const struct input *in)
{
	return strstr(in->state, "tailing 1 file,") != NULL;
}

TEST(deletion_and_recreation)
{
	struct fixture f;
	int fd;
	struct stat old;
	char source[64];
	const struct pos *p;

	make_dir();
	fd = open(fpath("a.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, "d0\nd1\n", 6) == 6);
	REQUIRE(fstat(fd, &old) == 0);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 2, 2000);
	REQUIRE(unlink(fpath("a.log")) == 0);
	CHECK(write(fd, "d2\nd3\n", 6) == 6);
	close(fd);
	drive(&f.in, f.st);
	append_lines(fpath("a.log"), "r", 0, 3);
	run(&f.in, 7, 2000);
	CHECK_EQ_INT(f.in.n_recs, 7);
	CHECK(have_data(&f.in, "d2") && have_data(&f.in, "d3"));
	CHECK(have_data(&f.in, "r0") && have_data(&f.in, "r2"));
	/* The deleted file is let go once quiet for rotate_wait. */
	CHECK(run_until(&f.in, one_file, 5000));
	snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	p = pos_get(f.in.pending, f.in.n_pending, source);
	/* Forgotten, unless the new file got the same inode back. */
	{
		struct stat now;

		REQUIRE(stat(fpath("a.log"), &now) == 0);
		if (now.st_ino != old.st_ino)
			CHECK(p && p->state == NULL);
	}
	CHECK(strstr(f.in.state, "tailing 1 file,") != NULL);
	fixture_stop(&f);
}

TEST(new_files_matching_glob_read_from_head)
{
	struct fixture f;
	char pat[256];

	make_dir();
	append_lines(fpath("a.log"), "a", 0, 3);
	snprintf(pat, sizeof(pat), "%s/*.log, %s/extra.txt", dir, dir);
	REQUIRE(fixture_init(&f, pat) == 0);
	conf_set(f.conf, "start_at", "end");
	REQUIRE(fixture_start(&f) == 0);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 0);
	append_lines(fpath("b.log"), "b", 0, 4);
	append_lines(fpath("c.txt"), "c", 0, 4);
	append_lines(fpath("extra.txt"), "e", 0, 2);
	append_lines(fpath("a.log"), "a", 3, 5);
	run(&f.in, 8, 2000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 8);
	CHECK(have_data(&f.in, "b0") && have_data(&f.in, "b3"));
	CHECK(have_data(&f.in, "e0") && have_data(&f.in, "e1"));
	CHECK(have_data(&f.in, "a3") && have_data(&f.in, "a4"));
	CHECK(!have_data(&f.in, "a0") && !have_data(&f.in, "c0"));
	CHECK(strstr(f.in.state, "tailing 3 files") != NULL);
	fixture_stop(&f);
}

static const struct rec *nth_reject(const struct input *in, int n)
{
	for (size_t i = 0; i < in->n_recs; i++)
		if (in->recs[i].reason && n-- == 0)
			return &in->recs[i];
	return NULL;
}

TEST(long_lines_are_rejected_whole)
{
	struct fixture f;
	size_t big = 50000, huge = (20u << 20) + 5;
	char *line = malloc(huge + 1);
	const struct rec *r;
	char want[160];
	bool same = true;
	size_t peak = 0;

	make_dir();
	for (size_t i = 0; i < huge; i++)
		line[i] = (char)('a' + i % 26);
	append(fpath("a.log"), "ok0\n");
	/* 150 bytes: over the limit but within one buffer. */
	write_at_end(fpath("a.log"), line, 150);
	append(fpath("a.log"), "\nok1\n");
	/* 50000 bytes, written in two parts read in different ticks. */
	write_at_end(fpath("a.log"), line, 30000);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	conf_set(f.conf, "read_chunk", "4096");
	f.in.max_record = 100;
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 3, 2000);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 3);
	write_at_end(fpath("a.log"), line + 30000, big - 30000);
	append(fpath("a.log"), "\nok2\n");
	write_at_end(fpath("a.log"), line, huge);
	append(fpath("a.log"), "\nok3\n");
	run_peak = &peak;
	run(&f.in, 7, 10000);
	run_peak = NULL;
	REQUIRE(f.in.n_recs == 7);
	CHECK_EQ_STR(f.in.recs[0].data, "ok0");
	CHECK_EQ_STR(f.in.recs[2].data, "ok1");
	CHECK_EQ_STR(f.in.recs[4].data, "ok2");
	CHECK_EQ_STR(f.in.recs[6].data, "ok3");
	r = nth_reject(&f.in, 0);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, 150);
	CHECK(!memcmp(r->data, line, 150));
	CHECK_EQ_STR(r->reason, "line longer than max_record_bytes (150 bytes)");
	{
		uint64_t dev, ino, gen;
		int64_t off;

		CHECK(parse_key(r->key, &dev, &ino, &gen, &off) && off == 4);
	}
	r = nth_reject(&f.in, 1);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, big);
	CHECK(!memcmp(r->data, line, big));
	CHECK_EQ_STR(r->reason, "line longer than max_record_bytes (50000 bytes)");
	r = nth_reject(&f.in, 2);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, 16 << 20);
	for (size_t i = 0; i < r->len && same; i++)
		same = r->data[i] == line[i];
	CHECK(same);
	snprintf(want, sizeof(want),
		 "line longer than max_record_bytes (%zu bytes; only the first %d bytes kept)", huge,
		 16 << 20);
	CHECK_EQ_STR(r->reason, want);
	/* Memory stayed bounded while a 20 MB line streamed through. */
	CHECK(peak > 0 && peak < (64u << 10));
	fixture_stop(&f);
	free(line);
}

TEST(restart_neither_loses_nor_duplicates)
{
	struct fixture f;
	size_t before_crash, committed;

	make_dir();
	append_lines(fpath("a.log"), "r", 0, 5000);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	conf_set(f.conf, "max_lines_per_tick", "37");
	REQUIRE(fixture_start(&f) == 0);
	/* Stop mid-tick, so the last positions saved lag the records. */
	committed = fixture_crash(&f, 1000, 2000, &before_crash);
	/* The uncommitted records were lost with the crash, and so was the
	 * position that went with them. */
	CHECK(before_crash > committed);
	CHECK_EQ_INT(f.in.n_recs, committed);
	append_lines(fpath("a.log"), "r", 5000, 6000);
	f.in.commit_every = 1;
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 6000, 5000);
	drive(&f.in, f.st);
	fake_commit(&f.in);
	CHECK_EQ_INT(f.in.n_recs, 6000);
	CHECK_EQ_INT(expect_lines(&f.in, 0, "r", 0, 6000), 6000);
	CHECK_EQ_INT(repeated_keys(&f.in), 0);
	drv->stop(&f.in, f.st);
	/* A restart with everything committed reads nothing again. */
	REQUIRE(fixture_start(&f) == 0);
	drive(&f.in, f.st);
	CHECK_EQ_INT(f.in.n_recs, 6000);
	fixture_stop(&f);
}

TEST(full_queue_blocks_and_resume_continues)
{
	struct fixture f;

	make_dir();
	append_lines(fpath("a.log"), "q", 0, 500);
	REQUIRE(fixture_init(&f, fpath("a.log")) == 0);
	f.in.block_at = 101;
	REQUIRE(fixture_start(&f) == 0);
	REQUIRE(run_until(&f.in, refused, 5000));
	/* Stopped at the refused line: no retry until resume(), however
	 * the loop turns (the driver has no timer armed). */
	append_lines(fpath("a.log"), "q", 500, 501);
	spin(&f.in);
	spin(&f.in);
	CHECK_EQ_INT(f.in.n_recs, 100);
	CHECK_EQ_INT(f.in.attempts, 101);
	CHECK(strstr(f.in.state, "waiting") != NULL);
	f.in.block_at = -1;
	f.in.blocked = false;
	/* Another error is retried on a later tick without loss. */
	f.in.eio_at = 200;
	drv->resume(&f.in, f.st);
	run(&f.in, 501, 2000);
	CHECK_EQ_INT(f.in.n_recs, 501);
	CHECK_EQ_INT(expect_lines(&f.in, 0, "q", 0, 501), 501);
	CHECK(f.in.errors >= 1);
	fixture_stop(&f);
}

TEST(open_errors_are_reported_and_cleared)
{
	struct fixture f;
	char want[160];

	make_dir();
	append(fpath("sub"), "not a directory\n");
	REQUIRE(fixture_init(&f, fpath("sub/x.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	drive(&f.in, f.st);
	snprintf(want, sizeof(want), "cannot open %s: Not a directory", fpath("sub"));
	CHECK_EQ_STR(f.in.last_error, want);
	REQUIRE(unlink(fpath("sub")) == 0);
	REQUIRE(mkdir(fpath("sub"), 0755) == 0);
	append_lines(fpath("sub/x.log"), "s", 0, 2);
	run(&f.in, 2, 2000);
	CHECK_EQ_INT(f.in.n_recs, 2);
	CHECK_EQ_STR(f.in.last_error, "");
	fixture_stop(&f);
}

/* A file the user may not read is shown as the input's error until it may
 * (run as a user that permission bits stop). */
static void permission_case(void)
{
	struct fixture f;
	char want[160];

	append_lines(fpath("secret.log"), "p", 0, 1);
	REQUIRE(chmod(fpath("secret.log"), 0) == 0);
	REQUIRE(fixture_init(&f, fpath("secret.log")) == 0);
	REQUIRE(fixture_start(&f) == 0);
	drive(&f.in, f.st);
	snprintf(want, sizeof(want), "cannot open %s: Permission denied", fpath("secret.log"));
	CHECK_EQ_STR(f.in.last_error, want);
	CHECK_EQ_INT(f.in.n_recs, 0);
	REQUIRE(chmod(fpath("secret.log"), 0644) == 0);
	run(&f.in, 1, 2000);
	CHECK_EQ_INT(f.in.n_recs, 1);
	CHECK_EQ_STR(f.in.last_error, "");
	fixture_release(&f);
}

#define NOBODY 65534

/* Permission bits do not stop root: as root, the case runs in a child that
 * has become nobody, in a directory nobody owns; the parent checks how it
 * ended. A child that cannot drop its privileges makes the case a skip. */
TEST(permission_denied_is_reported_and_cleared)
{
	char sub[sizeof(dir)];
	pid_t pid;
	int status;

	make_dir();
	if (geteuid() != 0) {
		permission_case();
		remove_dir();
		return;
	}
	if (snprintf(sub, sizeof(sub), "%s/u", dir) >= (int)sizeof(sub))
		abort();
	REQUIRE(chmod(dir, 0711) == 0);
	REQUIRE(mkdir(sub, 0755) == 0);
	REQUIRE(chown(sub, NOBODY, NOBODY) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		int before = test_failed_checks;

		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0) {
			fprintf(stderr, "cannot become uid %d: %s\n", NOBODY, strerror(errno));
			_exit(77);
		}
		if (geteuid() != NOBODY || setuid(0) == 0)
			_exit(77);
		memcpy(dir, sub, sizeof(dir));
		permission_case();
		fflush(stdout);
		fflush(stderr);
		_exit(test_failed_checks != before ? 1 : 0);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	remove_dir();
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		SKIP("running as root and cannot drop to uid %d", NOBODY);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(csv_header_per_file)
{
	struct fixture f;
	char pat[256];

	make_dir();
	append(fpath("a.csv"), "h1,h2\n1,2\n3,4\n");
	snprintf(pat, sizeof(pat), "%s/*.csv", dir);
	REQUIRE(fixture_init(&f, pat) == 0);
	f.in.wants_header = true;
	f.in.commit_every = 1;
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 2, 2000);
	append(fpath("b.csv"), "x,y\n5,6\n");
	run(&f.in, 3, 2000);
	append(fpath("a.csv"), "7,8\n");
	run(&f.in, 4, 2000);
	REQUIRE(f.in.n_recs == 4);
	CHECK_EQ_STR(f.in.recs[0].data, "1,2");
	CHECK_EQ_STR(f.in.recs[0].header, "h1,h2");
	CHECK_EQ_STR(f.in.recs[1].data, "3,4");
	CHECK_EQ_STR(f.in.recs[1].header, "h1,h2");
	CHECK_EQ_STR(f.in.recs[2].data, "5,6");
	CHECK_EQ_STR(f.in.recs[2].header, "x,y");
	CHECK_EQ_STR(f.in.recs[3].data, "7,8");
	CHECK_EQ_STR(f.in.recs[3].header, "h1,h2");
	CHECK(!have_data(&f.in, "h1,h2") && !have_data(&f.in, "x,y"));
	drv->stop(&f.in, f.st);
	fake_crash(&f.in);

	/* Restarted mid-file: the header is read back from the file's head. */
	append(fpath("a.csv"), "9,10\n");
	REQUIRE(fixture_start(&f) == 0);
	run(&f.in, 5, 2000);
	REQUIRE(f.in.n_recs == 5);
	CHECK_EQ_STR(f.in.recs[4].data, "9,10");
	CHECK_EQ_STR(f.in.recs[4].header, "h1,h2");

	/* Truncated and rewritten: the new first line is the new header. */
	REQUIRE(truncate(fpath("a.csv"), 0) == 0);
	append(fpath("a.csv"), "k1,k2,k3\nu,v,w\n");
	run(&f.in, 6, 2000);
	REQUIRE(f.in.n_recs == 6);
	CHECK_EQ_STR(f.in.recs[5].data, "u,v,w");
	CHECK_EQ_STR(f.in.recs[5].header, "k1,k2,k3");
	fixture_stop(&f);
}

int main(void)
{
	log_set_level(LOGL_WARN);
	drv = driver_find("tail");
	if (!drv) {
		fprintf(stderr, "tail driver not registered\n");
		return 1;
	}
	RUN(registry_and_key_table);
	RUN(every_line_once_in_order);
	RUN(start_at_end_skips_existing_content);
	RUN(partial_last_line_waits);
	RUN(rename_rotation_reads_old_file_to_its_end);
	RUN(truncation_restarts_with_new_generation);
	RUN(copy_truncate_refilled_before_next_look);
	RUN(deletion_and_recreation);
	RUN(new_files_matching_glob_read_from_head);
	RUN(long_lines_are_rejected_whole);
	RUN(restart_neither_loses_nor_duplicates);
	RUN(full_queue_blocks_and_resume_continues);
	RUN(open_errors_are_reported_and_cleared);
	RUN(permission_denied_is_reported_and_cleared);
	RUN(csv_header_per_file);
	TEST_END();
}
