/* queue_dlq.c - the dead-letter table: records an input or an output
 * refused for good, with the reason; listed, replayed into the log, purged. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "mem.h"
#include "queue_int.h"

int queue_dlq_add(struct queue *q, const char *origin, const char *stream,
		  int64_t seq, const char *key, const char *reason,
		  const void *data, size_t len)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_DLQ_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, queue_now_ms(CLOCK_REALTIME));
	sqlite3_bind_text(st, 2, origin, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, stream, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, seq);
	sqlite3_bind_text(st, 5, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 7, data ? data : "", len, SQLITE_STATIC);
	err = qsql_run(q, st, "dead-letter");
	if (!err)
		q->pending++;
	return err;
}

static void row_to_dlq(sqlite3_stmt *st, struct dlq_entry *e,
		       const void **data)
{
	e->id = sqlite3_column_int64(st, 0);
	e->ts_wall_ms = sqlite3_column_int64(st, 1);
	queue_copy_str(e->origin, sizeof(e->origin),
		       (const char *)sqlite3_column_text(st, 2));
	queue_copy_str(e->stream, sizeof(e->stream),
		       (const char *)sqlite3_column_text(st, 3));
	e->seq = sqlite3_column_int64(st, 4);
	queue_copy_str(e->key, sizeof(e->key),
		       (const char *)sqlite3_column_text(st, 5));
	queue_copy_str(e->reason, sizeof(e->reason),
		       (const char *)sqlite3_column_text(st, 6));
	*data = sqlite3_column_blob(st, 7);
	e->len = (size_t)sqlite3_column_bytes(st, 7);
	if (!*data)
		*data = "";
}

/* Shared by list and get: feed rows of a bound DLQ statement to cb. */
static int dlq_walk(struct queue *q, sqlite3_stmt *st, queue_dlq_cb cb,
		    void *arg, int64_t *n)
{
	struct dlq_entry e;
	const void *data;
	int rc, ret, err = 0;

	*n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_to_dlq(st, &e, &data);
		(*n)++;
		ret = cb(&e, data, arg);
		if (ret < 0) {
			err = ret;
			break;
		}
		if (ret > 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = qsql_fail(q, rc, "dead-letter queue");
	sqlite3_reset(st);
	return err;
}

int queue_dlq_list(struct queue *q, int64_t after_id, size_t max,
		   queue_dlq_cb cb, void *arg)
{
	sqlite3_stmt *st;
	int64_t n;
	int err;

	if (max == 0)
		return 0;
	err = qsql_prep(q, ST_DLQ_LIST, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after_id);
	sqlite3_bind_int64(st, 2, max > INT_MAX ? INT_MAX : (int64_t)max);
	return dlq_walk(q, st, cb, arg, &n);
}

int queue_dlq_get(struct queue *q, int64_t id, queue_dlq_cb cb, void *arg)
{
	sqlite3_stmt *st;
	int64_t n;
	int err;

	err = qsql_prep(q, ST_DLQ_GET, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, id);
	err = dlq_walk(q, st, cb, arg, &n);
	if (!err && n == 0)
		err = -ENOENT;
	return err;
}

static void bind_id_range(sqlite3_stmt *st, int64_t id)
{
	sqlite3_bind_int64(st, 1, id ? id : 1);
	sqlite3_bind_int64(st, 2, id ? id : INT64_MAX);
}

static int dlq_exists_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	return 1;
}

/* Replayed records are re-ingested now: they take the current time and the
 * clock state of the newest append. */
int queue_dlq_replay(struct queue *q, int64_t id, int64_t *count)
{
	struct qrec_in r = { .ts_wall_ms = queue_now_ms(CLOCK_REALTIME),
			     .ts_mono_ms = queue_now_ms(CLOCK_BOOTTIME),
			     .clock = q->last_clock };
	sqlite3_stmt *st;
	const char *key;
	char *rkey;
	int64_t n = 0, rid;
	int rc, err;

	*count = 0;
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_DLQ_REPLAY, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		rid = sqlite3_column_int64(st, 0);
		r.stream = (const char *)sqlite3_column_text(st, 1);
		key = (const char *)sqlite3_column_text(st, 2);
		r.data = sqlite3_column_blob(st, 3);
		r.len = (size_t)sqlite3_column_bytes(st, 3);
		if (!r.stream || !key) {
			err = -ENOMEM;
			break;
		}
		rkey = xmalloc(strlen(key) + 32);
		if (!rkey) {
			err = -ENOMEM;
			break;
		}
		sprintf(rkey, "%s:replay:%" PRId64, key, rid);
		r.key = rkey;
		err = queue_append_entry(q, REC_DATA, &r, false, NULL);
		xfree(rkey);
		if (err)
			break;
		n++;
	}
	if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = qsql_fail(q, rc, "replay dead letters");
	sqlite3_reset(st);
	if (err)
		return err;
	if (n == 0 && id) {
		/* Either no such entry, or one rejected at ingest (seq 0): its
		 * bytes never parsed, so they cannot enter the log as they are. */
		return queue_dlq_get(q, id, dlq_exists_cb, NULL) == 0 ? -EINVAL : -ENOENT;
	}
	if (n == 0)
		return 0;
	err = qsql_prep(q, ST_DLQ_DEL_REPLAYED, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	err = qsql_run(q, st, "delete replayed dead letters");
	if (!err)
		*count = n;
	return err;
}

int queue_dlq_purge(struct queue *q, int64_t id, int64_t *count)
{
	sqlite3_stmt *st;
	int64_t n;
	int err;

	*count = 0;
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_DLQ_DEL, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	err = qsql_run(q, st, "purge dead letters");
	if (err)
		return err;
	n = sqlite3_changes(q->db);
	if (n == 0)
		return id ? -ENOENT : 0;
	q->pending++;
	*count = n;
	return 0;
}
