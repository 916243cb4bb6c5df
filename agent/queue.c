/* queue.c - the durable queue's core: open and close, append, commit and
 * read. The rest of the queue lives in the queue_*.c files listed in
 * queue_int.h, behind the one API of queue.h. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "queue_int.h"

/* Fast: the commit path pays for it; the ratio is close to level 3. */
#define BLOCK_ZSTD_LEVEL 1
#define DEDUPE_WINDOW_DEFAULT 16384

int64_t queue_now_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void queue_copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src ? strlen(src) : 0;

	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

/* A failed statement may have rolled the whole transaction back (SQLite does
 * that on FULL, IOERR, NOMEM and some BUSY cases). Everything written since
 * the last commit is gone: forget it and let the next commit report it, so
 * the caller does not acknowledge sources whose records were lost. The seqs
 * they had stay given (last_seq is not moved back): a caller may hold them,
 * and a seq names one record only. */
void queue_txn_forget(struct queue *q)
{
	q->in_txn = false;
	q->pending = 0;
	q->pending_bytes = 0;
	q->pb.len = 0;
	q->pb.count = 0;
	dwin_rollback(&q->win);
	cache_invalidate(q, INT64_MIN);
	q->cursors_stale = true;
}

static int queue_setup(struct queue *q, const struct queue_opts *opts,
		       const char *const *outputs, size_t n_outputs)
{
	struct stat sb;
	int64_t window;
	int err;

	q->readonly = opts->readonly;
	q->synchronous = opts->synchronous;
	q->max_bytes = opts->max_bytes;
	q->on_full = opts->on_full;
	q->last_clock = CLOCK_UNSYNCED;
	q->path = xstrdup(opts->path);
	q->wal_path = xmalloc(strlen(opts->path) + 5);
	if (opts->vfs)
		q->vfs = xstrdup(opts->vfs);
	if (!q->path || !q->wal_path || (opts->vfs && !q->vfs))
		return -ENOMEM;
	sprintf(q->wal_path, "%s-wal", opts->path);
	q->dctx = ZSTD_createDCtx();
	if (!q->dctx)
		return -ENOMEM;
	if (!q->readonly) {
		window = opts->dedupe_window > 0 ? opts->dedupe_window :
						   DEDUPE_WINDOW_DEFAULT;
		if (window > UINT32_MAX / 4)
			return -EINVAL;
		q->pb.buf = xmalloc(BLOCK_MAX);
		q->zbuf = xmalloc(ZSTD_compressBound(BLOCK_MAX));
		if (!q->pb.buf || !q->zbuf)
			return -ENOMEM;
		q->pb.cap = BLOCK_MAX;
		q->zcap = ZSTD_compressBound(BLOCK_MAX);
		q->cctx = ZSTD_createCCtx();
		if (!q->cctx ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(q->cctx,
							ZSTD_c_compressionLevel,
							BLOCK_ZSTD_LEVEL)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(q->cctx,
							ZSTD_c_checksumFlag,
							1)))
			return -ENOMEM;
		err = dwin_init(&q->win, (size_t)window);
		if (err)
			return err;
	}

	if (q->readonly && stat(q->path, &sb) < 0)
		return -errno;
	err = qdb_setup(q);
	if (err && !q->readonly &&
	    (q->check_failed || q->old_schema || qsql_is_corrupt(q->last_rc))) {
		qdb_close(q);
		err = qdb_move_aside(q);
		if (err)
			return err;
		q->old_schema = false;
		err = qdb_setup(q);
	}
	/* Opened after the database, whose permissions it takes. */
	if (!err && !q->readonly)
		err = qseq_open(q);
	/* Above every seq the database holds and every one reserved: a power
	 * cut may have taken back commits whose seqs were shipped, and a
	 * damaged file moved aside had given seqs too. */
	if (!err && q->seq_reserved > q->last_seq)
		q->last_seq = q->seq_reserved;
	if (!err && !q->readonly)
		err = dwin_rebuild(q);
	if (err)
		return err;
	return cursors_init(q, outputs, n_outputs);
}

int queue_open(struct queue **qp, const struct queue_opts *opts,
	       const char *const *outputs, size_t n_outputs)
{
	struct queue *q;
	int err;

	*qp = NULL;
	if (!opts || !opts->path)
		return -EINVAL;
	q = xcalloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	err = queue_setup(q, opts, outputs, n_outputs);
	if (err) {
		q->in_txn = false;
		queue_close(q);
		return err;
	}
	q->opened = true;
	*qp = q;
	return 0;
}

void queue_close(struct queue *q)
{
	if (!q)
		return;
	if (q->in_txn)
		queue_commit(q);
	if (q->opened)
		qseq_release(q);
	qdb_close(q);
	qseq_close(q);
	for (size_t i = 0; i < q->n_cur; i++)
		xfree(q->cur[i].name);
	xfree(q->cur);
	for (int i = 0; i < N_BCACHE; i++) {
		xfree(q->cache[i].buf);
		xfree(q->cache[i].off);
	}
	dwin_release(&q->win);
	xfree(q->pb.buf);
	xfree(q->zbuf);
	ZSTD_freeCCtx(q->cctx);
	ZSTD_freeDCtx(q->dctx);
	xfree(q->path);
	xfree(q->wal_path);
	xfree(q->vfs);
	xfree(q);
}

/* Records go into the pending block; no SQL per record. */
int queue_append_entry(struct queue *q, int kind, const struct qrec_in *r,
		       bool dedupe, int64_t *seq_out)
{
	uint64_t h1;
	uint32_t h2;
	int err;

	dwin_key_hash(r->key, &h1, &h2);
	if (dedupe && dwin_has(&q->win, h1, h2))
		return -EEXIST;
	err = qsql_begin(q);
	if (!err)
		err = pb_add(q, kind, r, q->last_seq + 1);
	if (err)
		return err;
	dwin_add(&q->win, h1, h2);
	q->last_seq++;
	q->pending++;
	q->pending_bytes += (int64_t)(r->len + strlen(r->key));
	if (seq_out)
		*seq_out = q->last_seq;
	return 0;
}

/* What an append from outside the queue is refused for. */
static int append_check(const struct queue *q, const struct qrec_in *r)
{
	if (q->readonly)
		return -EROFS;
	if (!r->key || !r->stream)
		return -EINVAL;
	if (q->full && q->on_full == ON_FULL_BLOCK)
		return -ENOSPC;
	return 0;
}

int queue_append(struct queue *q, const struct qrec_in *r, int64_t *seq_out)
{
	int err = append_check(q, r);

	if (err)
		return err;
	q->last_clock = r->clock;
	return queue_append_entry(q, REC_DATA, r, true, seq_out);
}

int queue_append_gap(struct queue *q, const struct qrec_in *r, int64_t *seq_out)
{
	int err = append_check(q, r);

	return err ? err : queue_append_entry(q, REC_GAP, r, true, seq_out);
}

int queue_commit(struct queue *q)
{
	sqlite3_stmt *st;
	int err = 0;

	if (q->readonly)
		return 0;
	if (q->in_txn) {
		err = pb_flush(q);
		if (err)
			goto out_rollback;
		if (q->last_seq != q->committed_seq) {
			err = qsql_meta_set(q, "last_seq", q->last_seq);
			if (err)
				goto out_rollback;
		}
		/* Outputs may ship these seqs as soon as this returns, and
		 * this commit may not be on disk yet (synchronous = normal):
		 * the seqs must be reserved durably first. */
		err = qseq_reserve(q);
		if (err)
			goto out_rollback;
		err = qsql_prep(q, ST_COMMIT, &st);
		if (!err)
			err = qsql_run(q, st, "commit");
		if (err)
			goto out_rollback;
		q->in_txn = false;
		q->pending = 0;
		q->pending_bytes = 0;
		q->committed_seq = q->last_seq;
		q->win.txn = 0;
		if (qbudget_file_size(q->wal_path) > 2 * q->wal_limit)
			qbudget_wal_truncate(q);
	}
	err = q->lost_err;
	q->lost_err = 0;
	return err;

out_rollback:
	/* A commit that failed must not half-stand: drop the whole group so
	 * no source is acknowledged for records that are not durable. */
	if (q->in_txn && !sqlite3_get_autocommit(q->db) &&
	    !qsql_prep(q, ST_ROLLBACK, &st))
		qsql_run(q, st, "rollback");
	if (q->in_txn)
		queue_txn_forget(q);
	q->lost_err = 0;
	return err;
}

int64_t queue_pending(const struct queue *q)
{
	return q->pending;
}

int64_t queue_pending_bytes(const struct queue *q)
{
	return q->pending_bytes;
}

int64_t queue_committed_seq(const struct queue *q)
{
	return q->committed_seq;
}

/* The callback must not call queue_read() itself: the block it walks is
 * borrowed from the cache. */
int queue_read(struct queue *q, int64_t after_seq, size_t max_records,
	       queue_read_cb cb, void *arg)
{
	/* A read-only opener sees only what another process committed. */
	int64_t upto = q->readonly ? INT64_MAX : q->committed_seq;
	int64_t floor, target, i;
	struct bcache *c;
	struct qrec r;
	struct blk b;
	bool found, stop = false;
	int ret, n = 0, err, repairs = 0;

	err = cursor_floor(q, &floor);
	if (err)
		return err;
	if (after_seq < floor)
		after_seq = floor;
	if (after_seq >= upto || max_records == 0)
		return 0;
	if (max_records > INT_MAX)
		max_records = INT_MAX;
	target = after_seq + 1;
	while (!stop && (size_t)n < max_records) {
		err = block_find(q, target, &b, &found);
		if (err || !found || b.first > upto)
			break;
		err = block_load(q, &b, &c);
		if (err == -EBADMSG && repairs++ < 64) {
			err = block_corrupt(q, &b);
			if (err)
				break;
			continue;
		}
		if (err)
			break;
		c->pinned = true;
		for (i = entry_index(c, target); i < c->b.count; i++) {
			if ((size_t)n >= max_records) {
				stop = true;
				break;
			}
			entry_to_qrec(c, i, &r);
			if (r.seq > upto) {
				stop = true;
				break;
			}
			n++;
			ret = cb(&r, arg);
			if (ret < 0)
				err = ret;
			if (ret) {
				stop = true;
				break;
			}
		}
		c->pinned = false;
		target = b.last + 1;
	}
	return err ? err : n;
}

int queue_stats(struct queue *q, struct queue_stats *st)
{
	int64_t floor, last;
	int err;

	memset(st, 0, sizeof(*st));
	err = qsql_meta_get(q, "evicted_records", &st->evicted_records);
	if (!err)
		err = cursor_floor(q, &floor);
	/* The writer counts its own uncommitted records too. */
	if (!err)
		err = block_count_after(q, floor, INT64_MAX, &st->records);
	if (!err)
		err = block_first_after(q, floor, INT64_MAX, &st->first_seq,
					&st->oldest_wall_ms);
	if (!err)
		err = qsql_query_int(q, ST_BLK_LAST, &last, "newest record");
	if (!err)
		err = qsql_query_int(q, ST_DLQ_COUNT, &st->dlq_records, "dlq count");
	if (err)
		return err;
	if (q->pb.count) {
		if (!st->first_seq) {
			st->first_seq = q->pb.first;
			st->oldest_wall_ms = q->pb.first_wall;
		}
		st->records += q->pb.count;
		last = q->pb.last;
	}
	st->last_seq = last > floor ? last : 0;
	st->disk_bytes = qbudget_disk_bytes(q);
	st->max_bytes = q->readonly ? q->max_bytes : qbudget_effective(q);
	st->disk_limited = q->disk_limited;
	st->disk_size_unknown = q->disk_size_unknown;
	/* A read-only opener cannot see the daemon's flag; judge by size. */
	st->full = q->readonly ? q->max_bytes > 0 &&
					 st->disk_bytes > q->max_bytes :
				 q->full;
	st->recovered_at_ms = q->recovered_at_ms;
	queue_copy_str(st->recovered_path, sizeof(st->recovered_path),
		       q->recovered_path);
	return 0;
}
