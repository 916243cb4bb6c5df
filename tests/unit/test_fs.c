/* test_fs.c - fs.c: the birth time of a file, as the tail driver's saved
 * generations need it, mkdir -p, the full pread and the inotify drain. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"
#include "test.h"

static char tmp[64];

static void tmp_dir(void)
{
	if (!tmp[0]) {
		snprintf(tmp, sizeof(tmp), "/tmp/test_fs.XXXXXX");
		if (!mkdtemp(tmp))
			tmp[0] = '\0';
	}
}

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The birth time in ms as the tail driver computed it before fs.c, from
 * statx(2) directly: tv_sec * 1000 + tv_nsec / 1000000, or 0 when none. */
static uint64_t raw_birth_ms(int fd)
{
#ifdef SYS_statx
	struct {
		uint32_t mask, blksize;
		uint64_t attributes;
		uint32_t nlink, uid, gid;
		uint16_t mode, spare0;
		uint64_t ino, size, blocks, attributes_mask;
		struct {
			int64_t tv_sec;
			uint32_t tv_nsec;
			int32_t reserved;
		} atime, btime, ctime, mtime;
		uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
		uint64_t spare2[14];
	} stx;

	memset(&stx, 0, sizeof(stx));
	if (!syscall(SYS_statx, fd, "", AT_EMPTY_PATH, 0x800U, &stx) && (stx.mask & 0x800U) &&
	    stx.btime.tv_sec > 0)
		return (uint64_t)stx.btime.tv_sec * 1000 + stx.btime.tv_nsec / 1000000;
#endif
	return 0;
}

TEST(birth_time_of_path_and_fd_agree_with_statx)
{
	char path[128];
	int64_t by_path = -1, by_fd = -1;
	uint64_t raw;
	int fd, a, b;

	tmp_dir();
	REQUIRE(tmp[0]);
	snprintf(path, sizeof(path), "%s/file", tmp);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0);
	raw = raw_birth_ms(fd);
	a = fs_birth_ns(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, &by_path);
	b = fs_birth_ns(fd, "", AT_EMPTY_PATH, &by_fd);
	close(fd);
	unlink(path);
	CHECK_EQ_INT(a, b);
	CHECK_EQ_INT(by_path, by_fd);
	if (!raw) {
		CHECK(a < 0);
		CHECK_EQ_INT(by_path, 0);
		SKIP("the file system of %s records no birth time", tmp);
	}
	CHECK_EQ_INT(a, 0);
	CHECK(by_fd > 0);
	/* The tail driver's generations: bit for bit what they were. */
	CHECK_EQ_INT((uint64_t)by_fd / 1000000, raw);
}

TEST(birth_time_of_missing_file_is_an_error)
{
	int64_t ns = 123;

	tmp_dir();
	REQUIRE(tmp[0]);
	CHECK_EQ_INT(fs_birth_ns(AT_FDCWD, "/nonexistent/test_fs/file", AT_SYMLINK_NOFOLLOW, &ns),
		     -ENOENT);
	CHECK_EQ_INT(ns, 0);
}

TEST(mkdir_p_makes_parents_and_takes_existing)
{
	char path[256];

	tmp_dir();
	REQUIRE(tmp[0]);
	snprintf(path, sizeof(path), "%s/a/b/c", tmp);
	CHECK_EQ_INT(fs_mkdir_p(path), 0);
	CHECK(is_dir(path));
	CHECK_EQ_INT(fs_mkdir_p(path), 0);
	snprintf(path, sizeof(path), "%s/a/b/c/", tmp);
	CHECK_EQ_INT(fs_mkdir_p(path), 0);
	CHECK_EQ_INT(fs_mkdir_p(""), -ENOENT);
}

TEST(mkdir_p_reports_a_file_in_the_way)
{
	char path[256];
	int fd;

	tmp_dir();
	REQUIRE(tmp[0]);
	snprintf(path, sizeof(path), "%s/plain", tmp);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/plain/sub", tmp);
	CHECK_EQ_INT(fs_mkdir_p(path), -ENOTDIR);
}

/* Paths up to PATH_MAX - 1 bytes, longer than the 512 bytes state_dir once
 * had; PATH_MAX bytes and more are refused without writing past a buffer. */
TEST(mkdir_p_takes_long_paths_and_refuses_too_long_ones)
{
	char *path = malloc(PATH_MAX + 16);
	size_t n;

	tmp_dir();
	REQUIRE(tmp[0]);
	REQUIRE(path);
	n = (size_t)snprintf(path, PATH_MAX, "%s", tmp);
	while (n < 700) {
		n += (size_t)snprintf(path + n, PATH_MAX - n, "/%.100s",
				      "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	}
	CHECK_EQ_INT(fs_mkdir_p(path), 0);
	CHECK(is_dir(path));
	memset(path, 'x', PATH_MAX + 8);
	path[0] = '/';
	path[PATH_MAX + 8] = '\0';
	CHECK_EQ_INT(fs_mkdir_p(path), -ENAMETOOLONG);
	path[PATH_MAX] = '\0';
	CHECK_EQ_INT(fs_mkdir_p(path), -ENAMETOOLONG);
	free(path);
}

/* A pread that gives at most 3 bytes a call, is interrupted every other
 * call, and fails with EIO from byte fail_at on. */
static const char fake_data[] = "0123456789abcdef";
static int fake_calls;
static int64_t fake_fail_at = -1;

static ssize_t fake_pread(int fd, void *buf, size_t count, off_t offset)
{
	size_t size = sizeof(fake_data) - 1, n;

	(void)fd;
	if (fake_calls++ % 2) {
		errno = EINTR;
		return -1;
	}
	if (fake_fail_at >= 0 && offset >= fake_fail_at) {
		errno = EIO;
		return -1;
	}
	if ((size_t)offset >= size)
		return 0;
	n = size - (size_t)offset < count ? size - (size_t)offset : count;
	if (n > 3)
		n = 3;
	memcpy(buf, fake_data + offset, n);
	return (ssize_t)n;
}

TEST(pread_full_goes_on_after_short_reads_and_eintr)
{
	char buf[32];

	fake_calls = 0;
	fake_fail_at = -1;
	memset(buf, 0, sizeof(buf));
	CHECK_EQ_INT(fs_pread_full(fake_pread, 0, buf, 10, 2), 10);
	CHECK(!memcmp(buf, "23456789ab", 10));
	/* Fewer only at the end of the file. */
	CHECK_EQ_INT(fs_pread_full(fake_pread, 0, buf, sizeof(buf), 10), 6);
	CHECK(!memcmp(buf, "abcdef", 6));
	CHECK_EQ_INT(fs_pread_full(fake_pread, 0, buf, 4, 16), 0);
	fake_fail_at = 6;
	CHECK_EQ_INT(fs_pread_full(fake_pread, 0, buf, 10, 0), -EIO);
	fake_fail_at = -1;
}

struct seen_events {
	int n;
	bool created;
};

static void note_event(const struct inotify_event *ev, void *arg)
{
	struct seen_events *e = arg;

	e->n++;
	if ((ev->mask & IN_CREATE) && ev->len && !strcmp(ev->name, "new"))
		e->created = true;
}

TEST(inotify_read_hands_over_each_event)
{
	struct seen_events e = { 0 };
	char path[128];
	int fd, ino;

	tmp_dir();
	REQUIRE(tmp[0]);
	snprintf(path, sizeof(path), "%s/ino", tmp);
	REQUIRE(mkdir(path, 0755) == 0);
	ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino < 0)
		SKIP("no inotify here: %s", strerror(errno));
	REQUIRE(inotify_add_watch(ino, path, IN_CREATE | IN_CLOSE_WRITE) >= 0);
	/* Nothing waiting: nothing read, and no wait. */
	CHECK(!fs_inotify_read(ino, note_event, &e));
	CHECK_EQ_INT(e.n, 0);
	snprintf(path, sizeof(path), "%s/ino/new", tmp);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0);
	close(fd);
	/* The events of a creation are queued by the time open() returns. */
	CHECK(fs_inotify_read(ino, note_event, &e));
	CHECK_EQ_INT(e.n, 2);
	CHECK(e.created);
	close(ino);
}

int main(void)
{
	RUN(birth_time_of_path_and_fd_agree_with_statx);
	RUN(birth_time_of_missing_file_is_an_error);
	RUN(mkdir_p_makes_parents_and_takes_existing);
	RUN(mkdir_p_reports_a_file_in_the_way);
	RUN(mkdir_p_takes_long_paths_and_refuses_too_long_ones);
	RUN(pread_full_goes_on_after_short_reads_and_eintr);
	RUN(inotify_read_hands_over_each_event);
	if (tmp[0]) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmp);
	}
	TEST_END();
}
