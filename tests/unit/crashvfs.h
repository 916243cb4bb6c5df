/* crashvfs.h - a SQLite VFS that simulates power cuts, for tests.
 *
 * It wraps the default VFS under the name "crashsim". Writes to the main
 * database, its WAL and its journal go through to the real files at once,
 * but every write and truncate made since the file was last synced is
 * remembered, with the bytes it overwrote. A cut, like SQLite's own crash
 * simulator (src/test6.c), then decides the fate of each of those writes
 * from a seed: written, lost, or torn (some of its 512-byte sectors written,
 * the others not); what was synced always stays. The -shm file, which lives
 * in memory on a real system, is removed.
 *
 * Use: crashvfs_register() once; open the queue with vfs "crashsim"; to
 * cut the power, crashvfs_freeze() (from then on nothing reaches the disk),
 * close the queue (its last writes are lost, as in a real cut), then
 * crashvfs_cut(seed) rewrites the files to what the disk would hold.
 */
#ifndef CRASHVFS_H
#define CRASHVFS_H

#include <stdint.h>

#define CRASHVFS_NAME "crashsim"

struct crashvfs_stats {
	int64_t syncs;          /* xSync calls that reached the disk */
	int64_t kept, lost, torn; /* fates of unsynced writes at cuts */
};

/* 0 or a SQLite error code. */
int crashvfs_register(void);
/* Writes, truncates, syncs and deletes are ignored until the next cut. */
void crashvfs_freeze(void);
/* Apply a power cut to every file written through the VFS (all of them
 * closed by now), with the fates drawn from seed; remove the -shm files.
 * Returns 0 or -errno. */
int crashvfs_cut(uint64_t seed);
/* The next n writes to a tracked file fail with SQLite code rc (say
 * SQLITE_FULL), writing nothing. */
void crashvfs_fail_writes(int n, int rc);
/* Forget all files (after a test removed them) and zero the stats. */
void crashvfs_reset(void);
const struct crashvfs_stats *crashvfs_stats(void);

#endif
