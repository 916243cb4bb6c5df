/* fs.c - file-system calls shared by the core and the drivers (fs.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"

/* statx(2) as the kernel defines it (a fixed, versioned layout), called
 * through syscall(2) because not every C library wraps it (musl before
 * 1.2.5 does not), and every build must compute the same birth times: the
 * tail driver's saved positions hold generations made of them. */
struct kstatx_time {
	int64_t tv_sec;
	uint32_t tv_nsec;
	int32_t reserved;
};
struct kstatx {
	uint32_t mask, blksize;
	uint64_t attributes;
	uint32_t nlink, uid, gid;
	uint16_t mode, spare0;
	uint64_t ino, size, blocks, attributes_mask;
	struct kstatx_time atime, btime, ctime, mtime;
	uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
	uint64_t spare2[14];
};
#define KSTATX_BTIME 0x800U

int fs_birth_ns(int dirfd, const char *path, int flags, int64_t *ns)
{
	*ns = 0;
#ifdef SYS_statx
	struct kstatx stx;

	memset(&stx, 0, sizeof(stx));
	if (syscall(SYS_statx, dirfd, path, flags, KSTATX_BTIME, &stx) < 0)
		return -errno;
	if (!(stx.mask & KSTATX_BTIME) || stx.btime.tv_sec <= 0)
		return -ENODATA;
	if (stx.btime.tv_sec > (INT64_MAX - (int64_t)UINT32_MAX) / 1000000000)
		return -ERANGE;
	*ns = stx.btime.tv_sec * 1000000000 + stx.btime.tv_nsec;
	return 0;
#else
	(void)dirfd;
	(void)path;
	(void)flags;
	return -ENOSYS;
#endif
}

int fs_mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	size_t len = strlen(dir);

	if (!len)
		return -ENOENT;         /* as mkdir("") */
	if (len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

ssize_t fs_pread_full(ssize_t (*pread_fn)(int fd, void *buf, size_t count, off_t offset), int fd,
		      void *p, size_t len, int64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread_fn(fd, (char *)p + got, len - got, (off_t)(off + (int64_t)got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

bool fs_inotify_read(int fd, void (*each)(const struct inotify_event *ev, void *arg), void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool any = false;

	for (int round = 0; round < 16; round++) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		any = true;
		for (ssize_t i = 0; i + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const void *)(buf + i);

			each(ev, arg);
			i += (ssize_t)(sizeof(*ev) + ev->len);
		}
	}
	return any;
}
