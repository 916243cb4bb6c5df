/* queue_cursor.c - what outputs and inputs keep in the queue: output
 * cursors and the trim they drive, in-flight batches, backlog counts, and
 * the inputs' source positions. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue_int.h"

/* Blocks fully passed by every output deleted by one trim, so one cursor
 * move never stalls the loop. */
#define TRIM_MAX_BLOCKS 64

static struct qcursor *cursor_find(struct queue *q, const char *name)
{
	for (size_t i = 0; i < q->n_cur; i++)
		if (!strcmp(q->cur[i].name, name))
			return &q->cur[i];
	return NULL;
}

static int cursor_load(struct queue *q, const char *name, int64_t *seq)
{
	sqlite3_stmt *st;
	bool found;
	int err;

	err = qsql_prep(q, ST_CUR_GET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	err = qsql_run_int(q, st, seq, &found, "cursor");
	if (!err && !found)
		err = -ENOENT;
	return err;
}

static int cursors_reload(struct queue *q)
{
	int err;

	if (!q->cursors_stale)
		return 0;
	for (size_t i = 0; i < q->n_cur; i++) {
		err = cursor_load(q, q->cur[i].name, &q->cur[i].seq);
		if (err)
			return err;
	}
	if (!q->readonly) {
		err = qsql_meta_get(q, "floor", &q->floor);
		if (err)
			return err;
	}
	q->cursors_stale = false;
	return 0;
}

/* Find a stored cursor whose output is no longer configured; *name is
 * xmalloc'ed, NULL when there is none. */
static int cursor_find_stale(struct queue *q, char **name)
{
	sqlite3_stmt *st;
	const char *s;
	int rc, err = 0;

	*name = NULL;
	err = qsql_prep(q, ST_CUR_ALL, &st);
	if (err)
		return err;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		s = (const char *)sqlite3_column_text(st, 0);
		if (s && !cursor_find(q, s)) {
			*name = xstrdup(s);
			if (!*name)
				err = -ENOMEM;
			break;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = qsql_fail(q, rc, "cursors");
	sqlite3_reset(st);
	return err;
}

int cursors_init(struct queue *q, const char *const *outputs,
		 size_t n_outputs)
{
	sqlite3_stmt *st;
	char *stale;
	int64_t first, wall;
	int err;

	q->cur = xcalloc(n_outputs ? n_outputs : 1, sizeof(*q->cur));
	if (!q->cur)
		return -ENOMEM;
	for (size_t i = 0; i < n_outputs; i++) {
		if (cursor_find(q, outputs[i]))
			continue;
		q->cur[q->n_cur].name = xstrdup(outputs[i]);
		if (!q->cur[q->n_cur].name)
			return -ENOMEM;
		q->n_cur++;
	}
	if (q->readonly) {
		q->cursors_stale = true;
		return 0;
	}

	err = qsql_begin(q);
	if (err)
		return err;
	for (;;) {
		err = cursor_find_stale(q, &stale);
		if (err || !stale)
			break;
		log_info("queue: dropping the cursor of output '%s', which is "
			 "no longer configured", stale);
		err = qsql_prep(q, ST_CUR_DEL, &st);
		if (!err) {
			sqlite3_bind_text(st, 1, stale, -1, SQLITE_STATIC);
			err = qsql_run(q, st, "drop cursor");
		}
		if (!err)
			err = qsql_prep(q, ST_INF_DROP, &st);
		if (!err) {
			sqlite3_bind_text(st, 1, stale, -1, SQLITE_STATIC);
			err = qsql_run(q, st, "drop in-flight batches");
		}
		xfree(stale);
		if (err)
			return err;
	}
	if (err)
		return err;
	/* A new output starts just before the oldest record: it gets the
	 * whole backlog. */
	err = block_first_after(q, q->floor, INT64_MAX, &first, &wall);
	if (err)
		return err;
	err = qsql_prep(q, ST_CUR_ADD, &st);
	for (size_t i = 0; !err && i < q->n_cur; i++) {
		sqlite3_bind_text(st, 1, q->cur[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, first ? first - 1 : 0);
		err = qsql_run(q, st, "add cursor");
	}
	if (err)
		return err;
	q->cursors_stale = true;
	err = cursors_reload(q);
	if (err)
		return err;
	return queue_commit(q);
}

/* The trim floor: records up to it are gone for readers and counts. */
int cursor_floor(struct queue *q, int64_t *floor)
{
	int err;

	if (q->readonly)
		return qsql_meta_get(q, "floor", floor);
	err = cursors_reload(q);
	*floor = q->floor;
	return err;
}

int queue_position_set(struct queue *q, const char *input, const char *source,
		       const void *state, size_t len)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_POS_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, input, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 3, state ? state : "", len, SQLITE_STATIC);
	err = qsql_run(q, st, "save position");
	if (!err)
		q->pending++;
	return err;
}

int queue_position_get(struct queue *q, const char *input, const char *source,
		       void **state, size_t *len)
{
	sqlite3_stmt *st;
	const void *blob;
	size_t n;
	int rc, err;

	*state = NULL;
	*len = 0;
	err = qsql_prep(q, ST_POS_GET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, input, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		blob = sqlite3_column_blob(st, 0);
		n = (size_t)sqlite3_column_bytes(st, 0);
		*state = xmalloc(n ? n : 1);
		if (!*state) {
			err = -ENOMEM;
		} else {
			if (n)
				memcpy(*state, blob, n);
			*len = n;
		}
	} else if (rc == SQLITE_DONE) {
		err = -ENOENT;
	} else {
		err = qsql_fail(q, rc, "load position");
	}
	sqlite3_reset(st);
	return err;
}

int queue_position_del(struct queue *q, const char *input, const char *source)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_POS_DEL, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, input, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
	err = qsql_run(q, st, "delete position");
	if (err)
		return err;
	if (sqlite3_changes(q->db) == 0)
		return -ENOENT;
	q->pending++;
	return 0;
}

/* Records every output has passed are gone at once for readers and
 * counts (the floor moves); blocks holding only such records are deleted,
 * at most TRIM_MAX_BLOCKS per call. */
int cursor_trim(struct queue *q)
{
	sqlite3_stmt *st;
	struct blk b;
	bool found;
	int64_t min, n;
	int err;

	if (q->n_cur == 0)
		return 0;
	err = cursors_reload(q);
	if (err)
		return err;
	min = q->cur[0].seq;
	for (size_t i = 1; i < q->n_cur; i++)
		if (q->cur[i].seq < min)
			min = q->cur[i].seq;
	if (min > q->committed_seq)
		min = q->committed_seq;
	if (min > q->floor) {
		err = qsql_begin(q);
		if (!err)
			err = qsql_meta_set(q, "floor", min);
		if (err)
			return err;
		q->floor = min;
		q->pending++;
	}
	err = qsql_prep(q, ST_BLK_NEXT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, INT64_MIN);
	err = blk_step(q, st, &b, &found, "oldest block");
	if (err || !found || b.last > q->floor)
		return err;
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_TRIM_DATA, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, q->floor);
	sqlite3_bind_int(st, 2, TRIM_MAX_BLOCKS);
	err = qsql_run(q, st, "trim");
	if (!err)
		err = qsql_prep(q, ST_TRIM_BLK, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, q->floor);
	sqlite3_bind_int(st, 2, TRIM_MAX_BLOCKS);
	err = qsql_run(q, st, "trim");
	if (err)
		return err;
	n = sqlite3_changes(q->db);
	if (n)
		q->pending++;
	return 0;
}

/* For the writer: the in-memory cursor, or -ENOENT for an unknown output.
 * For a read-only opener: the stored cursor, read fresh. */
int64_t queue_cursor(struct queue *q, const char *output)
{
	struct qcursor *c;
	int64_t seq;
	int err;

	if (q->readonly) {
		err = cursor_load(q, output, &seq);
		return err ? err : seq;
	}
	err = cursors_reload(q);
	if (err)
		return err;
	c = cursor_find(q, output);
	return c ? c->seq : -ENOENT;
}

/* Moving back is a no-op (acks may arrive out of order); moving past what
 * is durable is a caller's bug and refused with -EINVAL. */
int queue_cursor_set(struct queue *q, const char *output, int64_t seq)
{
	sqlite3_stmt *st;
	struct qcursor *c;
	int err;

	if (q->readonly)
		return -EROFS;
	err = cursors_reload(q);
	if (err)
		return err;
	c = cursor_find(q, output);
	if (!c)
		return -ENOENT;
	if (seq <= c->seq)
		return 0;
	if (seq > q->committed_seq)
		return -EINVAL;
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_CUR_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	err = qsql_run(q, st, "move cursor");
	if (!err)
		err = qsql_prep(q, ST_INF_TRIM, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	err = qsql_run(q, st, "forget finished batches");
	if (err)
		return err;
	c->seq = seq;
	q->pending++;
	return cursor_trim(q);
}

int queue_inflight_add(struct queue *q, const char *output, int64_t first, int64_t last)
{
	sqlite3_stmt *st;
	int err;

	if (q->readonly)
		return -EROFS;
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_INF_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, first);
	sqlite3_bind_int64(st, 3, last);
	err = qsql_run(q, st, "remember a batch");
	if (!err)
		q->pending++;
	return err;
}

int queue_inflight_list(struct queue *q, const char *output,
			int (*cb)(int64_t first, int64_t last, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int rc, err;

	err = qsql_prep(q, ST_INF_LIST, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = cb(sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), arg);
		if (err)
			break;
	}
	if (!err && rc != SQLITE_DONE)
		err = qsql_fail(q, rc, "list in-flight batches");
	sqlite3_reset(st);
	return err < 0 ? err : 0;
}

/* O(blocks) at worst: a sum over the small blocks rows and, when the cursor
 * is inside a block, that block's part (arithmetic, or one cached
 * decompression for a block with holes). */
int queue_backlog(struct queue *q, const char *output, int64_t *records,
		  int64_t *oldest_wall_ms)
{
	int64_t cur = queue_cursor(q, output);
	int64_t upto = q->readonly ? INT64_MAX : q->committed_seq;
	int64_t floor, seq, wall;
	int err;

	*records = 0;
	if (oldest_wall_ms)
		*oldest_wall_ms = 0;
	if (cur < 0)
		return (int)cur;
	err = cursor_floor(q, &floor);
	if (err)
		return err;
	if (cur < floor)
		cur = floor;
	err = block_count_after(q, cur, upto, records);
	if (!err && oldest_wall_ms && *records) {
		err = block_first_after(q, cur, upto, &seq, &wall);
		*oldest_wall_ms = wall;
	}
	return err;
}

int64_t queue_backlog_bytes(struct queue *q, int64_t records)
{
	struct queue_stats st;

	if (records <= 0 || queue_stats(q, &st) || st.records <= 0)
		return 0;
	return (int64_t)((double)st.disk_bytes * (double)records / (double)st.records);
}
