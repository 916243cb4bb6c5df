/* fs.h - file-system calls that the core and several drivers need, written
 * once: a file's birth time, creating a directory with its parents, a full
 * pread, and draining an inotify descriptor. Drivers get them through
 * driver.h.
 */
#ifndef AGENT_FS_H
#define AGENT_FS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct inotify_event;

/* The birth time of a file in ns since the epoch, where its file system
 * records one: statx(2) of `path` relative to `dirfd`, with statx's flags.
 * A path: fs_birth_ns(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, &ns); an open
 * file: fs_birth_ns(fd, "", AT_EMPTY_PATH, &ns).
 * Returns 0 with *ns set (> 0); -ENODATA when the file system records no
 * birth time, or one not after the epoch; -ERANGE for one too far ahead for
 * an int64_t of ns (after the year 2262); -ENOSYS where the build has no
 * statx; or the -errno of statx. *ns is 0 on every error.
 * ns / 1000000 is exactly the birth time's tv_sec * 1000 + tv_nsec / 1000000,
 * so a value kept in ms stays the same whichever is computed. */
int fs_birth_ns(int dirfd, const char *path, int flags, int64_t *ns);

/* Create `dir` and its missing parents (parents 0755, dir itself 0750), as
 * mkdir -p does. Returns 0 when each exists afterwards (what an existing
 * name is, the caller checks), -ENAMETOOLONG for a path of PATH_MAX bytes
 * or more, or the -errno of mkdir(2). */
int fs_mkdir_p(const char *dir);

/* Read len bytes at off through pread_fn (pread itself, or a driver's seam
 * for tests), going on after short reads and EINTR. Returns the bytes read,
 * fewer than len only at the end of the file, or -errno; the bytes read
 * before an error are lost to the caller. */
ssize_t fs_pread_full(ssize_t (*pread_fn)(int fd, void *buf, size_t count, off_t offset), int fd,
		      void *p, size_t len, int64_t off);

/* Read what waits on the non-blocking inotify descriptor fd and hand each
 * event to each(ev, arg) (ev borrowed for the call), in at most 16 reads,
 * so that a directory that never rests cannot hold the loop. Returns true
 * when anything was read. */
bool fs_inotify_read(int fd, void (*each)(const struct inotify_event *ev, void *arg), void *arg);

#endif
