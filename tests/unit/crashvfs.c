/* crashvfs.c - the power-cut simulator of crashvfs.h: a SQLite VFS that
 * remembers unsynced writes and, at a cut, keeps, loses or tears each. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "crashvfs.h"

#define SECTOR 512
#define MAX_TRACKS 32

enum op_type { OP_WRITE, OP_TRUNCATE };

struct op {
	int type;
	int64_t off;            /* OP_TRUNCATE: the new size */
	int64_t len;
	char *data;
};

struct orig {
	int64_t sector;
	char data[SECTOR];
};

/* What a file holds on disk: its content at the last sync (the real file
 * with the originals put back, cut to durable_size), then the ops since. */
struct track {
	char *path;
	bool main_db;
	int64_t durable_size;
	unsigned char *touched; /* one byte per sector: has an orig */
	size_t n_touched;
	struct orig *orig;
	size_t n_orig, cap_orig;
	struct op *ops;
	size_t n_ops, cap_ops;
};

struct cfile {
	sqlite3_file base;
	sqlite3_file *real;
	struct track *t;
};

static struct track *tracks[MAX_TRACKS];
static size_t n_tracks;
static bool frozen;
static int fail_n, fail_rc;
static sqlite3_vfs *real_vfs;
static struct crashvfs_stats stats;

static void track_clear(struct track *t, int64_t size)
{
	for (size_t i = 0; i < t->n_ops; i++)
		free(t->ops[i].data);
	t->n_ops = 0;
	t->n_orig = 0;
	if (t->touched)
		memset(t->touched, 0, t->n_touched);
	t->durable_size = size;
}

static void track_free(struct track *t)
{
	if (!t)
		return;
	track_clear(t, 0);
	free(t->ops);
	free(t->orig);
	free(t->touched);
	free(t->path);
	free(t);
}

static struct track *track_get(const char *path, bool main_db, int64_t size)
{
	struct track *t;

	for (size_t i = 0; i < n_tracks; i++)
		if (!strcmp(tracks[i]->path, path))
			return tracks[i];
	if (n_tracks == MAX_TRACKS)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->path = strdup(path))) {
		free(t);
		return NULL;
	}
	t->main_db = main_db;
	t->durable_size = size;
	tracks[n_tracks++] = t;
	return t;
}

static void track_drop(const char *path)
{
	for (size_t i = 0; i < n_tracks; i++) {
		if (strcmp(tracks[i]->path, path))
			continue;
		track_free(tracks[i]);
		tracks[i] = tracks[--n_tracks];
		return;
	}
}

/* Keep what sector s held at the last sync, before it is first changed. */
static int save_orig(struct cfile *f, int64_t s)
{
	struct track *t = f->t;
	struct orig *o;
	int rc;

	if ((size_t)s < t->n_touched && t->touched[s])
		return SQLITE_OK;
	if ((size_t)s >= t->n_touched) {
		size_t n = (size_t)s * 2 + 64;
		unsigned char *nt = realloc(t->touched, n);

		if (!nt)
			return SQLITE_NOMEM;
		memset(nt + t->n_touched, 0, n - t->n_touched);
		t->touched = nt;
		t->n_touched = n;
	}
	if (t->n_orig == t->cap_orig) {
		size_t n = t->cap_orig * 2 + 16;
		struct orig *no = realloc(t->orig, n * sizeof(*no));

		if (!no)
			return SQLITE_NOMEM;
		t->orig = no;
		t->cap_orig = n;
	}
	o = &t->orig[t->n_orig];
	o->sector = s;
	rc = f->real->pMethods->xRead(f->real, o->data, SECTOR, s * SECTOR);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
		return rc;
	t->n_orig++;
	t->touched[s] = 1;
	return SQLITE_OK;
}

static int add_op(struct track *t, int type, int64_t off, const void *data,
		  int64_t len)
{
	struct op *op;

	if (t->n_ops == t->cap_ops) {
		size_t n = t->cap_ops * 2 + 64;
		struct op *no = realloc(t->ops, n * sizeof(*no));

		if (!no)
			return SQLITE_NOMEM;
		t->ops = no;
		t->cap_ops = n;
	}
	op = &t->ops[t->n_ops];
	*op = (struct op){ .type = type, .off = off, .len = len };
	if (data) {
		op->data = malloc((size_t)len);
		if (!op->data)
			return SQLITE_NOMEM;
		memcpy(op->data, data, (size_t)len);
	}
	t->n_ops++;
	return SQLITE_OK;
}

static int c_close(sqlite3_file *file)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xClose(f->real);
}

static int c_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xRead(f->real, buf, n, off);
}

static int c_write(sqlite3_file *file, const void *buf, int n,
		   sqlite3_int64 off)
{
	struct cfile *f = (struct cfile *)file;
	int rc;

	if (frozen)
		return SQLITE_OK;
	if (f->t && fail_n > 0) {
		fail_n--;
		return fail_rc;
	}
	if (f->t && n > 0) {
		for (int64_t s = off / SECTOR; s <= (off + n - 1) / SECTOR; s++) {
			rc = save_orig(f, s);
			if (rc)
				return rc;
		}
		rc = add_op(f->t, OP_WRITE, off, buf, n);
		if (rc)
			return rc;
	}
	return f->real->pMethods->xWrite(f->real, buf, n, off);
}

static int c_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct cfile *f = (struct cfile *)file;
	sqlite3_int64 cur;
	int rc;

	if (frozen)
		return SQLITE_OK;
	if (f->t) {
		rc = f->real->pMethods->xFileSize(f->real, &cur);
		if (rc)
			return rc;
		for (int64_t s = size / SECTOR; s * SECTOR < cur; s++) {
			rc = save_orig(f, s);
			if (rc)
				return rc;
		}
		rc = add_op(f->t, OP_TRUNCATE, size, NULL, 0);
		if (rc)
			return rc;
	}
	return f->real->pMethods->xTruncate(f->real, size);
}

static int c_sync(sqlite3_file *file, int flags)
{
	struct cfile *f = (struct cfile *)file;
	sqlite3_int64 size;
	int rc;

	if (frozen)
		return SQLITE_OK;
	rc = f->real->pMethods->xSync(f->real, flags);
	if (rc == SQLITE_OK && f->t) {
		rc = f->real->pMethods->xFileSize(f->real, &size);
		if (rc == SQLITE_OK)
			track_clear(f->t, size);
		stats.syncs++;
	}
	return rc;
}

static int c_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xFileSize(f->real, size);
}

static int c_lock(sqlite3_file *file, int lock)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xLock(f->real, lock);
}

static int c_unlock(sqlite3_file *file, int lock)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xUnlock(f->real, lock);
}

static int c_check_lock(sqlite3_file *file, int *out)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int c_file_control(sqlite3_file *file, int op, void *arg)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int c_sector_size(sqlite3_file *file)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xSectorSize(f->real);
}

static int c_device(sqlite3_file *file)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int c_shm_map(sqlite3_file *file, int pg, int pgsz, int extend,
		     void volatile **pp)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int c_shm_lock(sqlite3_file *file, int off, int n, int flags)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xShmLock(f->real, off, n, flags);
}

static void c_shm_barrier(sqlite3_file *file)
{
	struct cfile *f = (struct cfile *)file;

	f->real->pMethods->xShmBarrier(f->real);
}

static int c_shm_unmap(sqlite3_file *file, int del)
{
	struct cfile *f = (struct cfile *)file;

	return f->real->pMethods->xShmUnmap(f->real, del);
}

/* Version 2: no xFetch, so SQLite never maps the file and every write
 * comes through xWrite. */
static const sqlite3_io_methods c_methods = {
	.iVersion = 2,
	.xClose = c_close,
	.xRead = c_read,
	.xWrite = c_write,
	.xTruncate = c_truncate,
	.xSync = c_sync,
	.xFileSize = c_file_size,
	.xLock = c_lock,
	.xUnlock = c_unlock,
	.xCheckReservedLock = c_check_lock,
	.xFileControl = c_file_control,
	.xSectorSize = c_sector_size,
	.xDeviceCharacteristics = c_device,
	.xShmMap = c_shm_map,
	.xShmLock = c_shm_lock,
	.xShmBarrier = c_shm_barrier,
	.xShmUnmap = c_shm_unmap,
};

#define TRACKED (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
		  int flags, int *out_flags)
{
	struct cfile *f = (struct cfile *)file;
	sqlite3_int64 size = 0;
	int rc;

	f->real = (sqlite3_file *)(f + 1);
	f->t = NULL;
	rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		file->pMethods = NULL;
		return rc;
	}
	file->pMethods = &c_methods;
	if (name && (flags & TRACKED)) {
		f->real->pMethods->xFileSize(f->real, &size);
		f->t = track_get(name, flags & SQLITE_OPEN_MAIN_DB, size);
	}
	return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	if (frozen)
		return SQLITE_OK;
	track_drop(name);
	return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int v_full_path(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
	return real_vfs->xSleep(real_vfs, us);
}

static int v_current_time(sqlite3_vfs *vfs, double *t)
{
	return real_vfs->xCurrentTime(real_vfs, t);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	return real_vfs->xGetLastError(real_vfs, n, out);
}

static int v_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
	return real_vfs->xCurrentTimeInt64(real_vfs, t);
}

static sqlite3_vfs c_vfs = {
	.iVersion = 2,
	.zName = CRASHVFS_NAME,
	.xOpen = v_open,
	.xDelete = v_delete,
	.xAccess = v_access,
	.xFullPathname = v_full_path,
	.xRandomness = v_randomness,
	.xSleep = v_sleep,
	.xCurrentTime = v_current_time,
	.xGetLastError = v_last_error,
	.xCurrentTimeInt64 = v_current_time64,
};

int crashvfs_register(void)
{
	if (real_vfs)
		return SQLITE_OK;
	real_vfs = sqlite3_vfs_find(NULL);
	if (!real_vfs || real_vfs->iVersion < 2)
		return SQLITE_ERROR;
	c_vfs.mxPathname = real_vfs->mxPathname;
	c_vfs.szOsFile = (int)((sizeof(struct cfile) + 7) / 8 * 8) + real_vfs->szOsFile;
	return sqlite3_vfs_register(&c_vfs, 0);
}

void crashvfs_fail_writes(int n, int rc)
{
	fail_n = n;
	fail_rc = rc;
}

void crashvfs_freeze(void)
{
	frozen = true;
}

/* splitmix64: the fates must follow from the seed alone. */
static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void tracks_free(void)
{
	for (size_t i = 0; i < n_tracks; i++)
		track_free(tracks[i]);
	n_tracks = 0;
}

static int pwrite_all(int fd, const char *p, int64_t len, int64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, (size_t)len, off);

		if (n < 0)
			return -errno;
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

/* Write the sectors of op that survive: all, none, or a torn subset. */
static int apply_write(int fd, const struct op *op, uint64_t *rnd)
{
	unsigned fate = (unsigned)(next_rand(rnd) % 8);
	int64_t pos, end = op->off + op->len, cut;
	int err;

	if (fate < 3) {
		stats.lost++;
		return 0;
	}
	if (fate < 6) {
		stats.kept++;
		return pwrite_all(fd, op->data, op->len, op->off);
	}
	stats.torn++;
	for (pos = op->off; pos < end; pos = cut) {
		cut = (pos / SECTOR + 1) * SECTOR;
		if (cut > end)
			cut = end;
		if (next_rand(rnd) & 1)
			continue;
		err = pwrite_all(fd, op->data + (pos - op->off), cut - pos, pos);
		if (err)
			return err;
	}
	return 0;
}

static int track_cut(struct track *t, uint64_t *rnd)
{
	int fd = open(t->path, O_RDWR), err = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	/* Back to what the last sync left on disk... */
	for (size_t i = 0; !err && i < t->n_orig; i++)
		err = pwrite_all(fd, t->orig[i].data, SECTOR,
				 t->orig[i].sector * SECTOR);
	if (!err && ftruncate(fd, t->durable_size) < 0)
		err = -errno;
	/* ...then whatever of the later writes the cut let through. */
	for (size_t i = 0; !err && i < t->n_ops; i++) {
		const struct op *op = &t->ops[i];

		if (op->type == OP_WRITE)
			err = apply_write(fd, op, rnd);
		else if ((next_rand(rnd) & 1) && ftruncate(fd, op->off) < 0)
			err = -errno;
	}
	if (close(fd) < 0 && !err)
		err = -errno;
	return err;
}

int crashvfs_cut(uint64_t seed)
{
	uint64_t rnd = seed;
	char shm[1024];
	int err = 0;

	for (size_t i = 0; i < n_tracks; i++) {
		struct track *t = tracks[i];
		int e;

		e = track_cut(t, &rnd);

		if (e && !err)
			err = e;
		if (t->main_db && strlen(t->path) + 5 < sizeof(shm)) {
			strcpy(shm, t->path);
			strcat(shm, "-shm");
			unlink(shm);
		}
	}
	/* Everything on disk now is what a restart finds: start afresh. */
	tracks_free();
	frozen = false;
	return err;
}

void crashvfs_reset(void)
{
	tracks_free();
	memset(&stats, 0, sizeof(stats));
	fail_n = 0;
	frozen = false;
}

const struct crashvfs_stats *crashvfs_stats(void)
{
	return &stats;
}
