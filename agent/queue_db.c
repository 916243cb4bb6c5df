/* queue_db.c - the queue's database file: open it (read-write, or read-only
 * without creating anything), configure the connection, check the file,
 * create or check the schema, and move a damaged file aside. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "queue_int.h"

/* 1: one row per record (no longer read: moved aside). 2: blocks. */
#define SCHEMA_VERSION 2
#define SCHEMA_ROWS 1
/* PRAGMA quick_check reads every page: about a second per 64 MB on an SD
 * card. Bigger files get a cheap check instead (header, schema and both
 * ends of the blocks b-tree, all of which the open touches anyway), so a
 * gateway with a large backlog still starts in seconds; deeper damage then
 * surfaces as SQLITE_CORRUPT on use, and a damaged block as a gap marker. */
#define QUICK_CHECK_MAX_BYTES (64LL << 20)
#define WAL_LIMIT_MAX (4LL << 20)
/* Records are a few large rows now: a small cache holds every page a
 * commit or a read touches. */
#define CACHE_KIB 256

/* Batches an output sent and has not finished, so that after a restart it
 * sends the same records as the same batches (same ids, same S3 keys).
 * Added within schema version 2: created when missing. */
#define INFLIGHT_SQL                                                        \
	"CREATE TABLE IF NOT EXISTS inflight(output TEXT NOT NULL,"          \
	" first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"            \
	" PRIMARY KEY(output, first_seq)) WITHOUT ROWID;"

static const char schema_sql[] =
	"CREATE TABLE blocks(first_seq INTEGER PRIMARY KEY,"
	" last_seq INTEGER NOT NULL, count INTEGER NOT NULL,"
	" kind INTEGER NOT NULL, first_wall INTEGER NOT NULL,"
	" bytes INTEGER NOT NULL, zbytes INTEGER NOT NULL);"
	"CREATE TABLE block_data(first_seq INTEGER PRIMARY KEY,"
	" data BLOB NOT NULL);"
	"CREATE TABLE cursors(output TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE TABLE positions(input TEXT NOT NULL, source TEXT NOT NULL,"
	" state BLOB NOT NULL, PRIMARY KEY(input, source)) WITHOUT ROWID;"
	"CREATE TABLE dlq(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" ts_wall INTEGER NOT NULL, origin TEXT, stream TEXT, seq INTEGER,"
	" key TEXT, reason TEXT, data BLOB);"
	"CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	INFLIGHT_SQL
	"INSERT INTO meta(k, v) VALUES('evicted_records', 0),"
	" ('last_seq', 0), ('floor', 0);"
	"PRAGMA user_version = 2;";

void qdb_close(struct queue *q)
{
	qsql_finalize(q);
	sqlite3_close(q->db);
	q->db = NULL;
	q->in_txn = false;
}

static int db_configure(struct queue *q)
{
	static const char *const sync_names[] = { "OFF", "NORMAL", "FULL" };
	sqlite3_stmt *st;
	const unsigned char *mode;
	char sql[160];
	int64_t ps;
	int rc, err;

	sqlite3_extended_result_codes(q->db, 1);
	sqlite3_busy_timeout(q->db, BUSY_TIMEOUT_MS);
	/* A small cache and no mmap keep RSS flat however big the backlog.
	 * Full secure_delete (Debian's default) zeroes every freed page,
	 * doubling the writes of a trim on flash; FAST only clears what is
	 * written anyway. */
	snprintf(sql, sizeof(sql),
		 "PRAGMA cache_size = -%d; PRAGMA mmap_size = 0;"
		 " PRAGMA temp_store = MEMORY; PRAGMA secure_delete = FAST;",
		 CACHE_KIB);
	err = qsql_exec(q, sql, "configure");
	if (!err)
		err = qsql_once_int(q, "PRAGMA page_size", &ps);
	if (err)
		return err;
	q->page_size = ps > 0 ? ps : 4096;
	if (q->readonly)
		return 0;

	rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode = WAL", -1, &st,
				NULL);
	if (rc != SQLITE_OK)
		return qsql_fail(q, rc, "journal_mode");
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		mode = sqlite3_column_text(st, 0);
		if (!mode || strcmp((const char *)mode, "wal") != 0)
			log_warn("queue %s: WAL mode unavailable here (%s): "
				 "commits will be slower", q->path,
				 mode ? (const char *)mode : "?");
	} else {
		err = qsql_fail(q, rc, "journal_mode");
	}
	sqlite3_finalize(st);
	if (err)
		return err;

	if (q->synchronous < SYNC_OFF || q->synchronous > SYNC_FULL)
		q->synchronous = SYNC_NORMAL;
	/* The WAL is truncated back to this after checkpoints, and an
	 * automatic checkpoint runs when it reaches it, so the WAL costs a
	 * bounded, known share of the disk budget. */
	q->wal_limit = WAL_LIMIT_MAX;
	if (q->max_bytes > 0 && q->max_bytes / 4 < q->wal_limit)
		q->wal_limit = q->max_bytes / 4;
	if (q->wal_limit < 16 * q->page_size)
		q->wal_limit = 16 * q->page_size;
	q->base_wal_limit = q->wal_limit;
	snprintf(sql, sizeof(sql),
		 "PRAGMA synchronous = %s; PRAGMA journal_size_limit = %" PRId64
		 "; PRAGMA wal_autocheckpoint = %" PRId64 ";",
		 sync_names[q->synchronous], q->wal_limit,
		 q->wal_limit / q->page_size);
	return qsql_exec(q, sql, "configure");
}

static int db_check(struct queue *q)
{
	sqlite3_stmt *st;
	const unsigned char *res;
	int64_t n;
	int rc, err = 0;

	if (qbudget_file_size(q->path) > QUICK_CHECK_MAX_BYTES)
		return qsql_once_int(q, "SELECT count(*) FROM sqlite_master", &n);

	rc = sqlite3_prepare_v2(q->db, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return qsql_fail(q, rc, "quick_check");
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		res = sqlite3_column_text(st, 0);
		if (!res || strcmp((const char *)res, "ok") != 0) {
			log_error("queue %s: integrity check: %s", q->path,
				  res ? (const char *)res : "(no result)");
			q->check_failed = true;
			err = -EIO;
		}
	} else {
		err = qsql_fail(q, rc, "quick_check");
	}
	sqlite3_finalize(st);
	return err;
}

static int db_schema(struct queue *q)
{
	int64_t version;
	int err;

	err = qsql_begin(q);
	if (err)
		return err;
	err = qsql_once_int(q, "PRAGMA user_version", &version);
	if (err)
		goto out_rollback;
	if (version == 0) {
		err = qsql_exec(q, schema_sql, "create schema");
		if (err)
			goto out_rollback;
	} else if (version == SCHEMA_ROWS) {
		log_error("queue %s: schema version %d (a row per record) is "
			  "not read by this version", q->path, SCHEMA_ROWS);
		q->old_schema = true;
		err = -EPROTO;
		goto out_rollback;
	} else if (version != SCHEMA_VERSION) {
		log_error("queue %s: schema version %" PRId64
			  " is not %d; refusing to touch it", q->path, version,
			  SCHEMA_VERSION);
		err = -EPROTO;
		goto out_rollback;
	}
	err = qsql_exec(q, INFLIGHT_SQL, "create inflight table");
	if (err)
		goto out_rollback;
	err = qsql_exec(q, "COMMIT", "commit schema");
	if (err)
		goto out_rollback;
	q->in_txn = false;
	return 0;

out_rollback:
	if (q->in_txn && !sqlite3_get_autocommit(q->db))
		sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
	q->in_txn = false;
	return err;
}

/* "file:<path>?immutable=1", with the characters URIs reserve escaped. */
static char *immutable_uri(const char *path)
{
	static const char tail[] = "?immutable=1";
	char *uri = xmalloc(5 + 3 * strlen(path) + sizeof(tail));
	char *p = uri;

	if (!uri)
		return NULL;
	p += sprintf(p, "file:");
	for (; *path; path++) {
		if (*path == '%' || *path == '?' || *path == '#')
			p += sprintf(p, "%%%02X", (unsigned char)*path);
		else
			*p++ = *path;
	}
	memcpy(p, tail, sizeof(tail));
	return uri;
}

/* A read-only opener of a WAL database normally creates the -wal and -shm
 * files. When the daemon is down there is no -wal (a clean close folds it
 * into the file), and files created now, say by root running agentctl,
 * could later lock out a daemon running as another user. So in that case
 * the file is opened immutable: nothing is created or locked. If the daemon
 * starts during the read, the read may fail; it is a status read, retried
 * by running the command again. */
static int db_open_readonly(struct queue *q)
{
	char *uri;
	int rc;

	if (access(q->wal_path, F_OK) == 0 || errno != ENOENT)
		return sqlite3_open_v2(q->path, &q->db,
				       SQLITE_OPEN_READONLY |
					       SQLITE_OPEN_NOMUTEX,
				       q->vfs);
	uri = immutable_uri(q->path);
	if (!uri)
		return SQLITE_NOMEM;
	rc = sqlite3_open_v2(uri, &q->db,
			     SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
				     SQLITE_OPEN_URI,
			     q->vfs);
	xfree(uri);
	return rc;
}

/* Open the connection and make it usable; -errno, with q->last_rc and
 * q->check_failed telling whether the file is damaged. */
int qdb_setup(struct queue *q)
{
	int rc, err;
	int64_t seq;

	q->last_rc = 0;
	q->check_failed = false;
	if (q->readonly)
		rc = db_open_readonly(q);
	else
		rc = sqlite3_open_v2(q->path, &q->db,
				     SQLITE_OPEN_READWRITE |
					     SQLITE_OPEN_CREATE |
					     SQLITE_OPEN_NOMUTEX,
				     q->vfs);
	if (rc == SQLITE_NOMEM && !q->db)
		return -ENOMEM;
	if (rc != SQLITE_OK)
		return qsql_fail(q, rc, "open");
	err = db_configure(q);
	if (!err && !q->readonly)
		err = db_check(q);
	if (!err && !q->readonly)
		err = db_schema(q);
	if (!err && q->readonly) {
		err = qsql_once_int(q, "PRAGMA user_version", &seq);
		if (!err && seq != SCHEMA_VERSION) {
			log_error("queue %s: no queue of schema version %d here",
				  q->path, SCHEMA_VERSION);
			err = seq == 0 ? -ENOENT : -EPROTO;
		}
	}
	if (!err)
		err = qsql_query_int(q, ST_SEQ, &q->committed_seq, "sequence");
	q->last_seq = q->committed_seq;
	if (!err)
		err = qsql_meta_get(q, "floor", &q->floor);
	/* Touches the newest end of the blocks b-tree, like every append. */
	if (!err)
		err = qsql_query_int(q, ST_BLK_LAST, &seq, "newest block");
	return err;
}

int qdb_move_aside(struct queue *q)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	size_t n = strlen(q->path) + 48;
	char *from, *to;
	long long t = (long long)time(NULL);
	int err = 0;

	from = xmalloc(n);
	to = xmalloc(n);
	if (!from || !to) {
		err = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(from, n, "%s%s", q->path, sfx[i]);
		snprintf(to, n, "%s.corrupt-%lld%s", q->path, t, sfx[i]);
		if (rename(from, to) < 0 && (i == 0 || errno != ENOENT)) {
			err = -errno;
			log_error("queue %s: cannot move damaged file to %s: %s",
				  q->path, to, strerror(errno));
			goto out_free;
		}
		if (i == 0)
			queue_copy_str(q->recovered_path, sizeof(q->recovered_path),
				       to);
	}
	q->recovered_at_ms = queue_now_ms(CLOCK_REALTIME);
	log_error("queue %s is %s: moved it to %s and started an empty "
		  "queue; records in it are not shipped", q->path,
		  q->old_schema ? "of an older format" : "damaged",
		  q->recovered_path);
out_free:
	xfree(from);
	xfree(to);
	return err;
}
