/* queue_sql.c - the queue's SQL: every statement it runs, prepared once
 * and kept, and the one place SQLite result codes become errnos. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue_int.h"

#define DLQ_COLS "id, ts_wall, origin, stream, seq, key, reason, data"
#define BLK_COLS "first_seq, last_seq, count, kind, first_wall, bytes, zbytes"
/* Blocks every output has passed, oldest first, at most ?2 of them. */
#define TRIM_SET "SELECT first_seq FROM blocks WHERE first_seq <= ?1 AND" \
		 " last_seq <= ?1 ORDER BY first_seq LIMIT ?2"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_BLK_ADD] = "INSERT INTO blocks(" BLK_COLS ")"
		       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_BLKDATA_ADD] = "INSERT INTO block_data(first_seq, data) VALUES(?1, ?2)",
	[ST_BLK_AT] = "SELECT " BLK_COLS " FROM blocks WHERE first_seq <= ?1"
		      " ORDER BY first_seq DESC LIMIT 1",
	[ST_BLK_NEXT] = "SELECT " BLK_COLS " FROM blocks WHERE first_seq > ?1"
			" ORDER BY first_seq LIMIT 1",
	[ST_BLK_DATA] = "SELECT data FROM block_data WHERE first_seq = ?1",
	[ST_BLK_DEL] = "DELETE FROM blocks WHERE first_seq = ?1",
	[ST_BLKDATA_DEL] = "DELETE FROM block_data WHERE first_seq = ?1",
	[ST_BLK_SUM] = "SELECT coalesce(sum(count), 0) FROM blocks"
		       " WHERE first_seq > ?1 AND first_seq <= ?2",
	[ST_BLK_LAST] = "SELECT last_seq FROM blocks ORDER BY first_seq DESC"
			" LIMIT 1",
	[ST_BLK_RECENT] = "SELECT first_seq, count FROM blocks"
			  " ORDER BY first_seq DESC",
	[ST_OLDEST_DATA] = "SELECT " BLK_COLS " FROM blocks WHERE kind = 0"
			   " ORDER BY first_seq LIMIT 1",
	[ST_SEQ] = "SELECT max((SELECT v FROM meta WHERE k = 'last_seq'),"
		   " coalesce((SELECT last_seq FROM blocks"
		   " ORDER BY first_seq DESC LIMIT 1), 0))",
	[ST_TRIM_DATA] = "DELETE FROM block_data WHERE first_seq IN (" TRIM_SET ")",
	[ST_TRIM_BLK] = "DELETE FROM blocks WHERE first_seq IN (" TRIM_SET ")",
	[ST_POS_SET] = "INSERT OR REPLACE INTO positions(input, source, state)"
		       " VALUES(?1, ?2, ?3)",
	[ST_POS_GET] = "SELECT state FROM positions WHERE input = ?1 AND"
		       " source = ?2",
	[ST_POS_DEL] = "DELETE FROM positions WHERE input = ?1 AND source = ?2",
	[ST_CUR_ALL] = "SELECT output FROM cursors ORDER BY output",
	[ST_CUR_GET] = "SELECT seq FROM cursors WHERE output = ?1",
	[ST_CUR_SET] = "UPDATE cursors SET seq = ?2 WHERE output = ?1",
	[ST_CUR_ADD] = "INSERT OR IGNORE INTO cursors(output, seq)"
		       " VALUES(?1, ?2)",
	[ST_CUR_DEL] = "DELETE FROM cursors WHERE output = ?1",
	[ST_INF_ADD] = "INSERT OR REPLACE INTO inflight(output, first_seq, last_seq)"
		       " VALUES(?1, ?2, ?3)",
	[ST_INF_TRIM] = "DELETE FROM inflight WHERE output = ?1 AND last_seq <= ?2",
	[ST_INF_LIST] = "SELECT first_seq, last_seq FROM inflight WHERE output = ?1"
			" ORDER BY first_seq",
	[ST_INF_DROP] = "DELETE FROM inflight WHERE output = ?1",
	[ST_META_GET] = "SELECT v FROM meta WHERE k = ?1",
	[ST_META_ADD] = "UPDATE meta SET v = v + ?2 WHERE k = ?1",
	[ST_META_SET] = "UPDATE meta SET v = ?2 WHERE k = ?1",
	[ST_DLQ_ADD] = "INSERT INTO dlq(ts_wall, origin, stream, seq, key,"
		       " reason, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_DLQ_LIST] = "SELECT " DLQ_COLS " FROM dlq WHERE id > ?1"
			" ORDER BY id LIMIT ?2",
	[ST_DLQ_GET] = "SELECT " DLQ_COLS " FROM dlq WHERE id = ?1",
	[ST_DLQ_REPLAY] = "SELECT id, coalesce(stream, ''), coalesce(key, ''),"
			  " coalesce(data, x'') FROM dlq"
			  " WHERE id >= ?1 AND id <= ?2 AND seq > 0 ORDER BY id",
	[ST_DLQ_DEL] = "DELETE FROM dlq WHERE id >= ?1 AND id <= ?2",
	[ST_DLQ_DEL_REPLAYED] = "DELETE FROM dlq WHERE id >= ?1 AND id <= ?2 AND seq > 0",
	[ST_DLQ_COUNT] = "SELECT count(*) FROM dlq",
	[ST_PAGE_COUNT] = "PRAGMA page_count",
	[ST_FREELIST] = "PRAGMA freelist_count",
};

bool qsql_is_corrupt(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* The one place SQLite codes become errnos; logs what it does not expect. */
int qsql_fail(struct queue *q, int rc, const char *what)
{
	int err;

	q->last_rc = rc;
	switch (rc & 0xff) {
	case SQLITE_FULL:
		err = -ENOSPC;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		err = -EBUSY;
		break;
	case SQLITE_NOMEM:
		err = -ENOMEM;
		break;
	case SQLITE_READONLY:
		err = -EROFS;
		break;
	case SQLITE_CONSTRAINT:
		err = rc == SQLITE_CONSTRAINT_UNIQUE ? -EEXIST : -EIO;
		break;
	default:
		err = -EIO;
		break;
	}
	if (err != -EEXIST)
		log_error("queue %s: %s: %s", q->path, what,
			  q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
	if (q->in_txn && q->db && sqlite3_get_autocommit(q->db)) {
		log_error("queue %s: transaction rolled back, %" PRId64
			  " uncommitted writes lost", q->path, q->pending);
		q->lost_err = err;
		queue_txn_forget(q);
	}
	return err;
}

/* Prepared once, kept for the life of the connection, reset before use. */
int qsql_prep(struct queue *q, enum stmt_id id, sqlite3_stmt **out)
{
	int rc;

	*out = NULL;
	if (!q->st[id]) {
		rc = sqlite3_prepare_v3(q->db, stmt_sql[id], -1,
					SQLITE_PREPARE_PERSISTENT, &q->st[id],
					NULL);
		if (rc != SQLITE_OK)
			return qsql_fail(q, rc, "prepare");
	}
	*out = q->st[id];
	return 0;
}

/* Step a statement that returns no rows, then reset it. */
int qsql_run(struct queue *q, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = qsql_fail(q, rc, what);
	sqlite3_reset(st);
	return err;
}

/* Step a one-row, one-integer query; *found tells whether a row came. */
int qsql_run_int(struct queue *q, sqlite3_stmt *st, int64_t *val,
		 bool *found, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	*found = false;
	if (rc == SQLITE_ROW) {
		*found = sqlite3_column_type(st, 0) != SQLITE_NULL;
		*val = sqlite3_column_int64(st, 0);
	} else if (rc != SQLITE_DONE) {
		err = qsql_fail(q, rc, what);
	}
	sqlite3_reset(st);
	return err;
}

int qsql_query_int(struct queue *q, enum stmt_id id, int64_t *val,
		   const char *what)
{
	sqlite3_stmt *st;
	bool found;
	int err;

	*val = 0;
	err = qsql_prep(q, id, &st);
	if (err)
		return err;
	err = qsql_run_int(q, st, val, &found, what);
	if (!err && !found)
		*val = 0;
	return err;
}

int qsql_exec(struct queue *q, const char *sql, const char *what)
{
	int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : qsql_fail(q, rc, what);
}

/* A one-off single-integer query (open time only, so not kept prepared). */
int qsql_once_int(struct queue *q, const char *sql, int64_t *val)
{
	sqlite3_stmt *st;
	bool found;
	int rc, err;

	*val = 0;
	rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return qsql_fail(q, rc, sql);
	err = qsql_run_int(q, st, val, &found, sql);
	sqlite3_finalize(st);
	return err;
}

int qsql_begin(struct queue *q)
{
	sqlite3_stmt *st;
	int err;

	if (q->readonly)
		return -EROFS;
	if (q->in_txn)
		return 0;
	err = qsql_prep(q, ST_BEGIN, &st);
	if (!err)
		err = qsql_run(q, st, "begin");
	if (!err)
		q->in_txn = true;
	return err;
}

int qsql_meta_get(struct queue *q, const char *k, int64_t *v)
{
	sqlite3_stmt *st;
	bool found;
	int err;

	*v = 0;
	err = qsql_prep(q, ST_META_GET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	return qsql_run_int(q, st, v, &found, "meta");
}

int qsql_meta_add(struct queue *q, const char *k, int64_t delta)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_prep(q, ST_META_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, delta);
	return qsql_run(q, st, "meta update");
}

int qsql_meta_set(struct queue *q, const char *k, int64_t v)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_prep(q, ST_META_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, v);
	return qsql_run(q, st, "meta update");
}

void qsql_finalize(struct queue *q)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(q->st[i]);
		q->st[i] = NULL;
	}
}
