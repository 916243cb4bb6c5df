/* spool.h - the spool driver's seam for tests: the read that durability
 * depends on, and the start of inotify, go through this table, so a test
 * can make them fail (EIO the way a dying SD card does; no inotify). Nothing
 * outside drivers/spool.c and its tests includes it.
 */
#ifndef DRIVERS_SPOOL_H
#define DRIVERS_SPOOL_H

#include <sys/types.h>

struct spool_syscalls {
	ssize_t (*pread)(int fd, void *buf, size_t count, off_t offset);
	int (*inotify_init1)(int flags);
};
extern struct spool_syscalls spool_sys;

#endif
