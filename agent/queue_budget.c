/* queue_budget.c - the disk budget: what the queue's files take, the room
 * the filesystem has, the WAL's share, and eviction of the oldest blocks
 * under on_full = drop_oldest (leaving a gap marker). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "config.h"
#include "log.h"
#include "queue_int.h"

static int sys_statvfs(const char *path, struct statvfs *buf)
{
	return statvfs(path, buf);
}

static int sys_stat(const char *path, struct stat *buf)
{
	return stat(path, buf);
}

static struct queue_disk_ops disk_ops = { sys_statvfs, sys_stat };

void queue_set_disk_ops(const struct queue_disk_ops *ops)
{
	disk_ops.statvfs = ops && ops->statvfs ? ops->statvfs : sys_statvfs;
	disk_ops.stat = ops && ops->stat ? ops->stat : sys_stat;
}

int64_t qbudget_file_size(const char *path)
{
	struct stat sb;

	return disk_ops.stat(path, &sb) == 0 && sb.st_size > 0 ? (int64_t)sb.st_size : 0;
}

int64_t qbudget_disk_bytes(const struct queue *q)
{
	return qbudget_file_size(q->path) + qbudget_file_size(q->wal_path);
}

/* Room kept free on the filesystem for other programs on the box. */
#define DISK_RESERVE (2 << 20)
#define WAL_LIMIT_MIN (256 << 10)

static void qbudget_set_wal_limit(struct queue *q, int64_t lim)
{
	char sql[96];

	if (lim == q->wal_limit)
		return;
	q->wal_limit = lim;
	sqlite3_wal_autocheckpoint(q->db, (int)(lim / q->page_size));
	snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %" PRId64, lim);
	sqlite3_exec(q->db, sql, NULL, NULL, NULL);
}

/* The budget in force: max_bytes, or less when the filesystem cannot hold
 * that much (a 1 GiB budget on a card with 200 MB free). Counting free
 * space keeps the queue out of the disk-full path, where SQLite can only
 * refuse writes (even the deletes that would free space), and lets
 * on_full decide instead. On a small disk the WAL is kept small too, and
 * room for it to reach twice its limit is left outside the budget. */
/* Free bytes for unprivileged writers, or -1 when the filesystem gives no
 * size: FUSE and some network filesystems report zero blocks, which means
 * "unknown", not "full". Odd values are clamped rather than trusted. */
static int64_t fs_free_bytes(const struct statvfs *v)
{
	uint64_t unit = v->f_frsize ? v->f_frsize : v->f_bsize;
	uint64_t avail = v->f_bavail;

	if (v->f_blocks == 0 || unit == 0)
		return -1;
	if (avail > v->f_blocks)
		avail = v->f_blocks;
	if (avail > (uint64_t)INT64_MAX / 4 / unit)
		return INT64_MAX / 4;
	return (int64_t)(avail * unit);
}

/* The budget is max_bytes whatever the disk: once when the room is
 * unknown, again when it is known to be enough. */
static int64_t budget_is_max(struct queue *q)
{
	if (q->disk_limited)
		log_info("queue %s: the filesystem has room again: the budget is max_bytes", q->path);
	q->disk_limited = false;
	qbudget_set_wal_limit(q, q->base_wal_limit);
	return q->budget = q->max_bytes;
}

int64_t qbudget_effective(struct queue *q)
{
	char dir[PATH_MAX];
	struct statvfs vfs;
	const char *slash = strrchr(q->path, '/');
	int64_t free_bytes, room, wal, budget;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - q->path ? slash - q->path : 1), q->path);
	if (disk_ops.statvfs(dir, &vfs) < 0)
		return q->budget = q->max_bytes;
	free_bytes = fs_free_bytes(&vfs);
	if (free_bytes < 0) {
		if (!q->disk_size_unknown)
			log_warn("queue %s: the filesystem reports no size (FUSE or a network "
				 "filesystem?): its free space is unknown; the budget stays "
				 "max_bytes, %" PRId64 " bytes", q->path, q->max_bytes);
		q->disk_size_unknown = true;
		return budget_is_max(q);
	}
	if (q->disk_size_unknown)
		log_info("queue %s: the filesystem reports its size again", q->path);
	q->disk_size_unknown = false;
	room = qbudget_disk_bytes(q) + free_bytes - DISK_RESERVE;
	if (room < 0)
		room = 0;
	if (q->max_bytes > 0 && q->max_bytes + q->base_wal_limit <= room)
		return budget_is_max(q);
	wal = room / 8;
	if (wal > q->base_wal_limit)
		wal = q->base_wal_limit;
	if (wal < WAL_LIMIT_MIN)
		wal = WAL_LIMIT_MIN;
	wal -= wal % q->page_size;
	qbudget_set_wal_limit(q, wal);
	budget = room - 2 * wal;
	if (budget < (512 << 10))
		budget = 512 << 10;
	if (!q->disk_limited) {
		if (room > 0)
			log_warn("queue %s: the filesystem has room for %" PRId64 " bytes, less than "
				 "max_bytes: the budget is now %" PRId64 " bytes", q->path, room, budget);
		else
			log_warn("queue %s: the filesystem is full (%" PRId64 " bytes free, %d kept "
				 "for other programs): the budget is now %" PRId64 " bytes", q->path,
				 free_bytes, DISK_RESERVE, budget);
	}
	q->disk_limited = true;
	return q->budget = budget;
}

int64_t queue_budget(const struct queue *q)
{
	return q->budget ? q->budget : q->max_bytes;
}

/* Copy the WAL into the file and cut it to zero. Automatic checkpoints
 * copy it but leave the file at its high-water mark, which a large
 * transaction (a long trim, a replay) can push far past wal_limit. A reader
 * holding an old snapshot makes this fail at once rather than wait: the
 * next call tries again. */
void qbudget_wal_truncate(struct queue *q)
{
	if (q->in_txn || qbudget_file_size(q->wal_path) <= q->wal_limit)
		return;
	sqlite3_busy_timeout(q->db, 0);
	sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
				  NULL, NULL);
	sqlite3_busy_timeout(q->db, BUSY_TIMEOUT_MS);
}

/* What the WAL takes of the budget: it settles at wal_limit after each
 * checkpoint, so that much is always set aside even when it is smaller
 * right now; otherwise the file would grow into room the WAL needs. */
static int64_t wal_share(const struct queue *q)
{
	int64_t wal = qbudget_file_size(q->wal_path);

	return wal > q->wal_limit ? wal : q->wal_limit;
}

/* Bytes of pages in use: the file never shrinks, but its free pages are
 * reused before it grows, so this is what counts against the budget. */
static int qbudget_live_bytes(struct queue *q, int64_t *live)
{
	int64_t pages, freel;
	int err;

	err = qsql_query_int(q, ST_PAGE_COUNT, &pages, "page_count");
	if (!err)
		err = qsql_query_int(q, ST_FREELIST, &freel, "freelist_count");
	if (!err)
		*live = (pages - freel) * q->page_size;
	return err;
}

/* Gap markers are written like records, but into blocks of their own (a
 * block holds one kind), so that evicting data never takes one. */
static int qbudget_append_gap(struct queue *q, int64_t first, int64_t last,
			      int64_t count)
{
	char key[64], data[160];
	struct qrec_in r = {
		.stream = "_agent",
		.key = key,
		.ts_wall_ms = queue_now_ms(CLOCK_REALTIME),
		.ts_mono_ms = queue_now_ms(CLOCK_BOOTTIME),
		.clock = q->last_clock,
		.data = data,
	};
	int n;

	snprintf(key, sizeof(key), "gap:%" PRId64 "-%" PRId64, first, last);
	n = snprintf(data, sizeof(data),
		     "{\"gap\":{\"first_seq\":%" PRId64 ",\"last_seq\":%" PRId64
		     ",\"count\":%" PRId64 ",\"reason\":\"disk_full\"}}",
		     first, last, count);
	r.len = (size_t)n;
	return queue_append_entry(q, REC_GAP, &r, false, NULL);
}

/* Delete the oldest committed data blocks, whatever the cursors, until the
 * pages in use fit target; gap blocks stay so the lake hears of every gap.
 * Records of an evicted block that every output had already passed (below
 * the floor) were not lost and are not counted. */
static int drop_oldest(struct queue *q, int64_t target)
{
	sqlite3_stmt *st;
	struct blk b;
	bool found, done = false;
	int64_t live, freed, lo, n, deleted = 0;
	int64_t gap_first = 0, gap_last = 0, count = 0;
	int err = 0;

	for (int iter = 0; !done && iter < 100000; iter++) {
		err = qbudget_live_bytes(q, &live);
		if (err || live <= target)
			break;
		for (freed = 0; freed < live - target;) {
			err = qsql_prep(q, ST_OLDEST_DATA, &st);
			if (!err)
				err = blk_step(q, st, &b, &found, "oldest block");
			if (err)
				break;
			if (!found || b.first > q->committed_seq) {
				done = true;
				break;
			}
			err = qsql_begin(q);
			if (!err)
				err = qsql_prep(q, ST_BLKDATA_DEL, &st);
			if (!err) {
				sqlite3_bind_int64(st, 1, b.first);
				err = qsql_run(q, st, "drop oldest");
			}
			if (!err)
				err = qsql_prep(q, ST_BLK_DEL, &st);
			if (!err) {
				sqlite3_bind_int64(st, 1, b.first);
				err = qsql_run(q, st, "drop oldest");
			}
			if (err)
				break;
			cache_invalidate(q, b.first);
			deleted++;
			freed += b.zbytes + 64;
			lo = b.first > q->floor ? b.first : q->floor + 1;
			n = b.last < lo ? 0 : blk_dense(&b) ? b.last - lo + 1 : b.count;
			if (n) {
				if (!gap_first)
					gap_first = lo;
				gap_last = b.last;
				count += n;
			}
		}
		if (err)
			break;
	}
	if (err || deleted == 0)
		return err;
	q->pending++;
	if (count == 0)
		return 0;
	err = qsql_meta_add(q, "evicted_records", count);
	if (!err)
		err = qbudget_append_gap(q, gap_first, gap_last, count);
	if (!err)
		log_warn("queue %s: over its disk budget of %" PRId64
			 " bytes: dropped %" PRId64 " oldest records (seq %"
			 PRId64 "-%" PRId64 ")", q->path, queue_budget(q), count,
			 gap_first, gap_last);
	return err;
}

/* Usage is the pages in use plus the WAL's share. The budget is a trigger;
 * once it trips, space is freed down to a low-water mark (a tenth below it,
 * with room for the WAL to settle at its limit) so that a queue at its
 * budget does not drop a sliver, and emit a gap marker, on every commit.
 * Under block the same low-water mark lifts the flag, so inputs do not
 * flap between refused and accepted record by record. */
int queue_enforce_budget(struct queue *q)
{
	int64_t live, used, low, max;
	int err;

	if (q->readonly)
		return -EROFS;
	max = qbudget_effective(q);
	if (max <= 0) {
		q->full = false;
		return cursor_trim(q);
	}
	/* A WAL above its settling size counts against the budget for no
	 * data: cut it first, which alone may bring usage under. */
	if (qbudget_disk_bytes(q) > max - max / 10)
		qbudget_wal_truncate(q);
	err = cursor_trim(q);
	if (!err)
		err = qbudget_live_bytes(q, &live);
	if (err)
		return err;
	used = live + wal_share(q);
	low = max - max / 10;
	if (used <= low) {
		q->full = false;
		return 0;
	}
	if (used <= max) {
		/* Between low water and the budget: keep the flag as it is. */
		return 0;
	}
	if (q->on_full == ON_FULL_BLOCK) {
		if (!q->full)
			log_warn("queue %s: over its disk budget of %" PRId64
				 " bytes: refusing new records until outputs "
				 "catch up", q->path, max);
		q->full = true;
		return 0;
	}
	err = drop_oldest(q, low - q->wal_limit);
	if (err)
		return err;
	err = qbudget_live_bytes(q, &live);
	if (err)
		return err;
	q->full = live + wal_share(q) > max;
	return 0;
}

bool queue_full(const struct queue *q)
{
	return q->full;
}
