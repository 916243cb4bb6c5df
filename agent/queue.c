/* queue.c - the durable queue: a record log with output cursors, in SQLite. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "queue.h"

#define SCHEMA_VERSION 1
/* Rows deleted by one trim, so one cursor move never stalls the loop. */
#define TRIM_MAX_ROWS 10000
/* PRAGMA quick_check reads every page: about a second per 64 MB on an SD
 * card. Bigger files get a cheap check instead (header, schema and both
 * ends of the records b-tree, all of which the open touches anyway), so a
 * gateway with a large backlog still starts in seconds; deeper damage then
 * surfaces as SQLITE_CORRUPT on use. */
#define QUICK_CHECK_MAX_BYTES (64LL << 20)
#define WAL_LIMIT_MAX (4LL << 20)
#define CACHE_KIB 1024
#define BUSY_TIMEOUT_MS 5000

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_APPEND,
	ST_READ,
	ST_FIRST,
	ST_LAST,
	ST_SEQ,
	ST_FIRST_DATA,
	ST_LAST_DATA_UPTO,
	ST_DROP,
	ST_TRIM,
	ST_BACKLOG,
	ST_POS_SET,
	ST_POS_GET,
	ST_POS_DEL,
	ST_CUR_ALL,
	ST_CUR_GET,
	ST_CUR_SET,
	ST_CUR_ADD,
	ST_CUR_DEL,
	ST_META_GET,
	ST_META_ADD,
	ST_META_SET,
	ST_DLQ_ADD,
	ST_DLQ_LIST,
	ST_DLQ_GET,
	ST_DLQ_REPLAY,
	ST_DLQ_DEL,
	ST_DLQ_DEL_REPLAYED,
	ST_DLQ_COUNT,
	ST_PAGE_COUNT,
	ST_FREELIST,
	ST_COUNT
};

#define DLQ_COLS "id, ts_wall, origin, stream, seq, key, reason, data"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_APPEND] = "INSERT INTO records(kind, stream, key, ts_wall, ts_mono,"
		      " clock, data, seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7,"
		      " ?8)",
	[ST_READ] = "SELECT seq, kind, stream, key, ts_wall, ts_mono, clock,"
		    " data FROM records WHERE seq > ?1 AND seq <= ?2"
		    " ORDER BY seq LIMIT ?3",
	[ST_FIRST] = "SELECT seq, ts_wall FROM records ORDER BY seq LIMIT 1",
	[ST_LAST] = "SELECT seq FROM records ORDER BY seq DESC LIMIT 1",
	[ST_SEQ] = "SELECT max((SELECT v FROM meta WHERE k = 'last_seq'),"
		   " coalesce((SELECT max(seq) FROM records), 0))",
	[ST_FIRST_DATA] = "SELECT seq FROM records WHERE kind = 0"
			  " ORDER BY seq LIMIT 1",
	[ST_LAST_DATA_UPTO] = "SELECT seq FROM records WHERE seq <= ?1 AND"
			      " kind = 0 ORDER BY seq DESC LIMIT 1",
	[ST_DROP] = "DELETE FROM records WHERE seq >= ?1 AND seq <= ?2"
		    " AND kind = 0",
	[ST_TRIM] = "DELETE FROM records WHERE seq <= ?1",
	[ST_BACKLOG] = "SELECT count(*), (SELECT ts_wall FROM records WHERE"
		       " seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 1)"
		       " FROM records WHERE seq > ?1 AND seq <= ?2",
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
	[ST_META_GET] = "SELECT v FROM meta WHERE k = ?1",
	[ST_META_ADD] = "UPDATE meta SET v = v + ?2 WHERE k = ?1",
	[ST_META_SET] = "UPDATE meta SET v = ?2 WHERE k = ?1",
	[ST_DLQ_ADD] = "INSERT INTO dlq(ts_wall, origin, stream, seq, key,"
		       " reason, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_DLQ_LIST] = "SELECT " DLQ_COLS " FROM dlq WHERE id > ?1"
			" ORDER BY id LIMIT ?2",
	[ST_DLQ_GET] = "SELECT " DLQ_COLS " FROM dlq WHERE id = ?1",
	[ST_DLQ_REPLAY] = "INSERT INTO records(seq, kind, stream, key,"
			  " ts_wall, ts_mono, clock, data)"
			  " SELECT ?6 + row_number() OVER (ORDER BY id), 0,"
			  " coalesce(stream, ''),"
			  " coalesce(key, '') || ':replay:' || id, ?3, ?4, ?5,"
			  " coalesce(data, x'') FROM dlq"
			  " WHERE id >= ?1 AND id <= ?2 AND seq > 0 ORDER BY id",
	[ST_DLQ_DEL] = "DELETE FROM dlq WHERE id >= ?1 AND id <= ?2",
	[ST_DLQ_DEL_REPLAYED] = "DELETE FROM dlq WHERE id >= ?1 AND id <= ?2 AND seq > 0",
	[ST_DLQ_COUNT] = "SELECT count(*) FROM dlq",
	[ST_PAGE_COUNT] = "PRAGMA page_count",
	[ST_FREELIST] = "PRAGMA freelist_count",
};

/* seq is assigned here, not by AUTOINCREMENT: that costs a sqlite_sequence
 * lookup and update on every insert (a fifth of the append path). The
 * highest seq handed out is written to meta.last_seq in each commit, so a
 * seq never repeats even after the tail was deleted; seqs of a transaction
 * that never committed were never visible and may be handed out again. */
static const char schema_sql[] =
	"CREATE TABLE records(seq INTEGER PRIMARY KEY,"
	" kind INTEGER NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL,"
	" ts_wall INTEGER NOT NULL, ts_mono INTEGER NOT NULL,"
	" clock INTEGER NOT NULL, data BLOB NOT NULL);"
	"CREATE UNIQUE INDEX records_key ON records(key);"
	"CREATE TABLE cursors(output TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE TABLE positions(input TEXT NOT NULL, source TEXT NOT NULL,"
	" state BLOB NOT NULL, PRIMARY KEY(input, source)) WITHOUT ROWID;"
	"CREATE TABLE dlq(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" ts_wall INTEGER NOT NULL, origin TEXT, stream TEXT, seq INTEGER,"
	" key TEXT, reason TEXT, data BLOB);"
	"CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"INSERT INTO meta(k, v) VALUES('records', 0), ('evicted_records', 0),"
	" ('last_seq', 0);"
	"PRAGMA user_version = 1;";

struct qcursor {
	char *name;
	int64_t seq;
};

struct queue {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	char *path;
	char *wal_path;
	bool readonly;
	int synchronous;
	int on_full;
	int64_t max_bytes;
	bool disk_limited;      /* free disk space, not max_bytes, is the budget */
	int64_t wal_limit;      /* journal_size_limit: what the WAL settles at */
	int64_t base_wal_limit; /* wal_limit when the disk has room */
	int64_t budget;         /* the budget in force at the last check */
	int64_t page_size;

	bool in_txn;
	bool full;
	bool cursors_stale;     /* a lost transaction took cursor moves with it */
	bool check_failed;      /* the integrity check said no */
	int lost_err;           /* a rolled-back transaction, for the next commit */
	int last_rc;            /* last SQLite code seen by sql_fail() */
	int last_clock;         /* clock state of the newest append */
	int64_t pending;
	int64_t pending_bytes;  /* record bytes appended since the last commit */
	int64_t committed_seq;
	int64_t last_seq;       /* highest seq handed out, committed or not */
	int64_t txn_records;    /* row count change not yet folded into meta */

	struct qcursor *cur;
	size_t n_cur;

	int64_t recovered_at_ms;
	char recovered_path[256];
};

static int64_t now_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src ? strlen(src) : 0;

	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static bool rc_is_corrupt(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* A failed statement may have rolled the whole transaction back (SQLite does
 * that on FULL, IOERR, NOMEM and some BUSY cases). Everything written since
 * the last commit is gone: forget it and let the next commit report it, so
 * the caller does not acknowledge sources whose records were lost. */
static void txn_forget(struct queue *q)
{
	q->in_txn = false;
	q->pending = 0;
	q->pending_bytes = 0;
	q->last_seq = q->committed_seq;
	q->txn_records = 0;
	q->cursors_stale = true;
}

/* The one place SQLite codes become errnos; logs what it does not expect. */
static int sql_fail(struct queue *q, int rc, const char *what)
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
		txn_forget(q);
	}
	return err;
}

/* Prepared once, kept for the life of the connection, reset before use. */
static int prep(struct queue *q, enum stmt_id id, sqlite3_stmt **out)
{
	int rc;

	*out = NULL;
	if (!q->st[id]) {
		rc = sqlite3_prepare_v3(q->db, stmt_sql[id], -1,
					SQLITE_PREPARE_PERSISTENT, &q->st[id],
					NULL);
		if (rc != SQLITE_OK)
			return sql_fail(q, rc, "prepare");
	}
	*out = q->st[id];
	return 0;
}

/* Step a statement that returns no rows, then reset it. */
static int run(struct queue *q, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = sql_fail(q, rc, what);
	sqlite3_reset(st);
	return err;
}

/* Step a one-row, one-integer query; *found tells whether a row came. */
static int run_int(struct queue *q, sqlite3_stmt *st, int64_t *val,
		   bool *found, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	*found = false;
	if (rc == SQLITE_ROW) {
		*found = sqlite3_column_type(st, 0) != SQLITE_NULL;
		*val = sqlite3_column_int64(st, 0);
	} else if (rc != SQLITE_DONE) {
		err = sql_fail(q, rc, what);
	}
	sqlite3_reset(st);
	return err;
}

static int query_int(struct queue *q, enum stmt_id id, int64_t *val,
		     const char *what)
{
	sqlite3_stmt *st;
	bool found;
	int err;

	*val = 0;
	err = prep(q, id, &st);
	if (err)
		return err;
	err = run_int(q, st, val, &found, what);
	if (!err && !found)
		*val = 0;
	return err;
}

static int exec_sql(struct queue *q, const char *sql, const char *what)
{
	int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : sql_fail(q, rc, what);
}

/* A one-off single-integer query (open time only, so not kept prepared). */
static int once_int(struct queue *q, const char *sql, int64_t *val)
{
	sqlite3_stmt *st;
	bool found;
	int rc, err;

	*val = 0;
	rc = sqlite3_prepare_v2(q->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_fail(q, rc, sql);
	err = run_int(q, st, val, &found, sql);
	sqlite3_finalize(st);
	return err;
}

static int txn_begin(struct queue *q)
{
	sqlite3_stmt *st;
	int err;

	if (q->readonly)
		return -EROFS;
	if (q->in_txn)
		return 0;
	err = prep(q, ST_BEGIN, &st);
	if (!err)
		err = run(q, st, "begin");
	if (!err)
		q->in_txn = true;
	return err;
}

static int meta_get(struct queue *q, const char *k, int64_t *v)
{
	sqlite3_stmt *st;
	bool found;
	int err;

	*v = 0;
	err = prep(q, ST_META_GET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	return run_int(q, st, v, &found, "meta");
}

static int meta_add(struct queue *q, const char *k, int64_t delta)
{
	sqlite3_stmt *st;
	int err;

	err = prep(q, ST_META_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, delta);
	return run(q, st, "meta update");
}

static int meta_set(struct queue *q, const char *k, int64_t v)
{
	sqlite3_stmt *st;
	int err;

	err = prep(q, ST_META_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, v);
	return run(q, st, "meta update");
}

static int64_t file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static int64_t disk_bytes(const struct queue *q)
{
	return file_size(q->path) + file_size(q->wal_path);
}

/* Room kept free on the filesystem for other programs on the box. */
#define DISK_RESERVE (2 << 20)
#define WAL_LIMIT_MIN (256 << 10)

static void set_wal_limit(struct queue *q, int64_t lim)
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
static int64_t effective_budget(struct queue *q)
{
	char dir[PATH_MAX];
	struct statfs vfs;
	const char *slash = strrchr(q->path, '/');
	int64_t room, wal, budget;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - q->path ? slash - q->path : 1), q->path);
	if (statfs(dir, &vfs) < 0)
		return q->budget = q->max_bytes;
	room = disk_bytes(q) + (int64_t)vfs.f_bavail * (int64_t)vfs.f_bsize - DISK_RESERVE;
	if (q->max_bytes > 0 && q->max_bytes + q->base_wal_limit <= room) {
		if (q->disk_limited)
			log_info("queue %s: the filesystem has room again: the budget is max_bytes", q->path);
		q->disk_limited = false;
		set_wal_limit(q, q->base_wal_limit);
		return q->budget = q->max_bytes;
	}
	wal = room / 8;
	if (wal > q->base_wal_limit)
		wal = q->base_wal_limit;
	if (wal < WAL_LIMIT_MIN)
		wal = WAL_LIMIT_MIN;
	wal -= wal % q->page_size;
	set_wal_limit(q, wal);
	budget = room - 2 * wal;
	if (budget < (512 << 10))
		budget = 512 << 10;
	if (!q->disk_limited)
		log_warn("queue %s: the filesystem has room for %" PRId64 " bytes, less than "
			 "max_bytes: the budget is now %" PRId64 " bytes", q->path, room, budget);
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
static void wal_truncate(struct queue *q)
{
	if (q->in_txn || file_size(q->wal_path) <= q->wal_limit)
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
	int64_t wal = file_size(q->wal_path);

	return wal > q->wal_limit ? wal : q->wal_limit;
}

/* Bytes of pages in use: the file never shrinks, but its free pages are
 * reused before it grows, so this is what counts against the budget. */
static int live_bytes(struct queue *q, int64_t *live)
{
	int64_t pages, freel;
	int err;

	err = query_int(q, ST_PAGE_COUNT, &pages, "page_count");
	if (!err)
		err = query_int(q, ST_FREELIST, &freel, "freelist_count");
	if (!err)
		*live = (pages - freel) * q->page_size;
	return err;
}

static int first_seq(struct queue *q, int64_t *seq, int64_t *ts_wall)
{
	sqlite3_stmt *st;
	int rc, err;

	*seq = 0;
	if (ts_wall)
		*ts_wall = 0;
	err = prep(q, ST_FIRST, &st);
	if (err)
		return err;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*seq = sqlite3_column_int64(st, 0);
		if (ts_wall)
			*ts_wall = sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		err = sql_fail(q, rc, "first seq");
	}
	sqlite3_reset(st);
	return err;
}

static void stmts_finalize(struct queue *q)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(q->st[i]);
		q->st[i] = NULL;
	}
}

static void db_close(struct queue *q)
{
	stmts_finalize(q);
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
	err = exec_sql(q, sql, "configure");
	if (!err)
		err = once_int(q, "PRAGMA page_size", &ps);
	if (err)
		return err;
	q->page_size = ps > 0 ? ps : 4096;
	if (q->readonly)
		return 0;

	rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode = WAL", -1, &st,
				NULL);
	if (rc != SQLITE_OK)
		return sql_fail(q, rc, "journal_mode");
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		mode = sqlite3_column_text(st, 0);
		if (!mode || strcmp((const char *)mode, "wal") != 0)
			log_warn("queue %s: WAL mode unavailable here (%s): "
				 "commits will be slower", q->path,
				 mode ? (const char *)mode : "?");
	} else {
		err = sql_fail(q, rc, "journal_mode");
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
	return exec_sql(q, sql, "configure");
}

static int db_check(struct queue *q)
{
	sqlite3_stmt *st;
	const unsigned char *res;
	int64_t n;
	int rc, err = 0;

	if (file_size(q->path) > QUICK_CHECK_MAX_BYTES)
		return once_int(q, "SELECT count(*) FROM sqlite_master", &n);

	rc = sqlite3_prepare_v2(q->db, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_fail(q, rc, "quick_check");
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
		err = sql_fail(q, rc, "quick_check");
	}
	sqlite3_finalize(st);
	return err;
}

static int db_schema(struct queue *q)
{
	int64_t version;
	int err;

	err = txn_begin(q);
	if (err)
		return err;
	err = once_int(q, "PRAGMA user_version", &version);
	if (err)
		goto out_rollback;
	if (version == 0) {
		err = exec_sql(q, schema_sql, "create schema");
		if (err)
			goto out_rollback;
	} else if (version != SCHEMA_VERSION) {
		log_error("queue %s: schema version %" PRId64
			  " is not %d; refusing to touch it", q->path, version,
			  SCHEMA_VERSION);
		err = -EPROTO;
		goto out_rollback;
	}
	err = exec_sql(q, "COMMIT", "commit schema");
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
				       NULL);
	uri = immutable_uri(q->path);
	if (!uri)
		return SQLITE_NOMEM;
	rc = sqlite3_open_v2(uri, &q->db,
			     SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
				     SQLITE_OPEN_URI,
			     NULL);
	xfree(uri);
	return rc;
}

/* Open the connection and make it usable; -errno, with q->last_rc and
 * q->check_failed telling whether the file is damaged. */
static int db_setup(struct queue *q)
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
				     NULL);
	if (rc == SQLITE_NOMEM && !q->db)
		return -ENOMEM;
	if (rc != SQLITE_OK)
		return sql_fail(q, rc, "open");
	err = db_configure(q);
	if (!err && !q->readonly)
		err = db_check(q);
	if (!err && !q->readonly)
		err = db_schema(q);
	if (!err && q->readonly) {
		err = once_int(q, "PRAGMA user_version", &seq);
		if (!err && seq != SCHEMA_VERSION) {
			log_error("queue %s: no queue of schema version %d here",
				  q->path, SCHEMA_VERSION);
			err = seq == 0 ? -ENOENT : -EPROTO;
		}
	}
	if (!err)
		err = query_int(q, ST_SEQ, &q->committed_seq, "sequence");
	q->last_seq = q->committed_seq;
	if (!err)
		err = first_seq(q, &seq, NULL);
	return err;
}

static int move_aside(struct queue *q)
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
			copy_str(q->recovered_path, sizeof(q->recovered_path),
				 to);
	}
	q->recovered_at_ms = now_ms(CLOCK_REALTIME);
	log_error("queue %s is damaged: moved it to %s and started an empty "
		  "queue; records in it are not shipped", q->path,
		  q->recovered_path);
out_free:
	xfree(from);
	xfree(to);
	return err;
}

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

	err = prep(q, ST_CUR_GET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	err = run_int(q, st, seq, &found, "cursor");
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
	err = prep(q, ST_CUR_ALL, &st);
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
		err = sql_fail(q, rc, "cursors");
	sqlite3_reset(st);
	return err;
}

static int cursors_init(struct queue *q, const char *const *outputs,
			size_t n_outputs)
{
	sqlite3_stmt *st;
	char *stale;
	int64_t first;
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

	err = txn_begin(q);
	if (err)
		return err;
	for (;;) {
		err = cursor_find_stale(q, &stale);
		if (err || !stale)
			break;
		log_info("queue: dropping the cursor of output '%s', which is "
			 "no longer configured", stale);
		err = prep(q, ST_CUR_DEL, &st);
		if (!err) {
			sqlite3_bind_text(st, 1, stale, -1, SQLITE_STATIC);
			err = run(q, st, "drop cursor");
		}
		xfree(stale);
		if (err)
			return err;
	}
	if (err)
		return err;
	/* A new output starts just before the oldest record: it gets the
	 * whole backlog. */
	err = first_seq(q, &first, NULL);
	if (err)
		return err;
	err = prep(q, ST_CUR_ADD, &st);
	for (size_t i = 0; !err && i < q->n_cur; i++) {
		sqlite3_bind_text(st, 1, q->cur[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, first ? first - 1 : 0);
		err = run(q, st, "add cursor");
	}
	if (err)
		return err;
	q->cursors_stale = true;
	err = cursors_reload(q);
	if (err)
		return err;
	return queue_commit(q);
}

static int queue_setup(struct queue *q, const struct queue_opts *opts,
		       const char *const *outputs, size_t n_outputs)
{
	struct stat sb;
	int err;

	q->readonly = opts->readonly;
	q->synchronous = opts->synchronous;
	q->max_bytes = opts->max_bytes;
	q->on_full = opts->on_full;
	q->last_clock = CLOCK_UNSYNCED;
	q->path = xstrdup(opts->path);
	q->wal_path = xmalloc(strlen(opts->path) + 5);
	if (!q->path || !q->wal_path)
		return -ENOMEM;
	sprintf(q->wal_path, "%s-wal", opts->path);

	if (q->readonly && stat(q->path, &sb) < 0)
		return -errno;
	err = db_setup(q);
	if (err && !q->readonly && (q->check_failed || rc_is_corrupt(q->last_rc))) {
		db_close(q);
		err = move_aside(q);
		if (err)
			return err;
		err = db_setup(q);
	}
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
	*qp = q;
	return 0;
}

void queue_close(struct queue *q)
{
	if (!q)
		return;
	if (q->in_txn)
		queue_commit(q);
	db_close(q);
	for (size_t i = 0; i < q->n_cur; i++)
		xfree(q->cur[i].name);
	xfree(q->cur);
	xfree(q->path);
	xfree(q->wal_path);
	xfree(q);
}

static int append_row(struct queue *q, int kind, const struct qrec_in *r,
		      int64_t *seq_out)
{
	sqlite3_stmt *st;
	int rc, err;

	err = txn_begin(q);
	if (err)
		return err;
	err = prep(q, ST_APPEND, &st);
	if (err)
		return err;
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_text(st, 2, r->stream, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, r->ts_wall_ms);
	sqlite3_bind_int64(st, 5, r->ts_mono_ms);
	sqlite3_bind_int(st, 6, r->clock);
	sqlite3_bind_blob64(st, 7, r->data ? r->data : "", r->len,
			    SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, q->last_seq + 1);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		err = sql_fail(q, rc, "append");
	sqlite3_reset(st);
	if (err)
		return err;
	q->last_seq++;
	q->txn_records++;
	q->pending++;
	q->pending_bytes += (int64_t)(r->len + strlen(r->key));
	if (seq_out)
		*seq_out = q->last_seq;
	return 0;
}

int queue_append(struct queue *q, const struct qrec_in *r, int64_t *seq_out)
{
	if (q->readonly)
		return -EROFS;
	if (!r->key || !r->stream)
		return -EINVAL;
	if (q->full && q->on_full == ON_FULL_BLOCK)
		return -ENOSPC;
	q->last_clock = r->clock;
	return append_row(q, REC_DATA, r, seq_out);
}

int queue_position_set(struct queue *q, const char *input, const char *source,
		       const void *state, size_t len)
{
	sqlite3_stmt *st;
	int err;

	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_POS_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, input, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 3, state ? state : "", len, SQLITE_STATIC);
	err = run(q, st, "save position");
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
	err = prep(q, ST_POS_GET, &st);
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
		err = sql_fail(q, rc, "load position");
	}
	sqlite3_reset(st);
	return err;
}

int queue_position_del(struct queue *q, const char *input, const char *source)
{
	sqlite3_stmt *st;
	int err;

	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_POS_DEL, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, input, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
	err = run(q, st, "delete position");
	if (err)
		return err;
	if (sqlite3_changes(q->db) == 0)
		return -ENOENT;
	q->pending++;
	return 0;
}

int queue_commit(struct queue *q)
{
	sqlite3_stmt *st;
	int err = 0;

	if (q->readonly)
		return 0;
	if (q->in_txn) {
		if (q->txn_records) {
			err = meta_add(q, "records", q->txn_records);
			if (err)
				goto out_rollback;
			q->txn_records = 0;
		}
		if (q->last_seq != q->committed_seq) {
			err = meta_set(q, "last_seq", q->last_seq);
			if (err)
				goto out_rollback;
		}
		err = prep(q, ST_COMMIT, &st);
		if (!err)
			err = run(q, st, "commit");
		if (err)
			goto out_rollback;
		q->in_txn = false;
		q->pending = 0;
		q->pending_bytes = 0;
		q->committed_seq = q->last_seq;
		if (file_size(q->wal_path) > 2 * q->wal_limit)
			wal_truncate(q);
	}
	err = q->lost_err;
	q->lost_err = 0;
	return err;

out_rollback:
	/* A commit that failed must not half-stand: drop the whole group so
	 * no source is acknowledged for records that are not durable. */
	if (q->in_txn && !sqlite3_get_autocommit(q->db) &&
	    !prep(q, ST_ROLLBACK, &st))
		run(q, st, "rollback");
	if (q->in_txn)
		txn_forget(q);
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

static void row_to_qrec(sqlite3_stmt *st, struct qrec *r)
{
	r->seq = sqlite3_column_int64(st, 0);
	r->kind = sqlite3_column_int(st, 1);
	r->stream = (const char *)sqlite3_column_text(st, 2);
	r->key = (const char *)sqlite3_column_text(st, 3);
	r->ts_wall_ms = sqlite3_column_int64(st, 4);
	r->ts_mono_ms = sqlite3_column_int64(st, 5);
	r->clock = sqlite3_column_int(st, 6);
	r->data = sqlite3_column_blob(st, 7);
	r->len = (size_t)sqlite3_column_bytes(st, 7);
	if (!r->stream)
		r->stream = "";
	if (!r->key)
		r->key = "";
	if (!r->data)
		r->data = "";
}

/* The callback must not call queue_read() itself: the statement is shared. */
int queue_read(struct queue *q, int64_t after_seq, size_t max_records,
	       queue_read_cb cb, void *arg)
{
	/* A read-only opener sees only what another process committed. */
	int64_t upto = q->readonly ? INT64_MAX : q->committed_seq;
	sqlite3_stmt *st;
	struct qrec r;
	int rc, ret, n = 0, err;

	if (after_seq >= upto || max_records == 0)
		return 0;
	err = prep(q, ST_READ, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after_seq);
	sqlite3_bind_int64(st, 2, upto);
	sqlite3_bind_int64(st, 3, max_records > INT_MAX ? INT_MAX :
				  (int64_t)max_records);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_to_qrec(st, &r);
		n++;
		ret = cb(&r, arg);
		if (ret < 0) {
			err = ret;
			break;
		}
		if (ret > 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = sql_fail(q, rc, "read");
	sqlite3_reset(st);
	return err ? err : n;
}

/* Delete what every output has passed, at most TRIM_MAX_ROWS per call. */
static int trim(struct queue *q)
{
	sqlite3_stmt *st;
	int64_t min, first, hi, n;
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
	err = first_seq(q, &first, NULL);
	if (err || first == 0 || first > min)
		return err;
	hi = first + TRIM_MAX_ROWS - 1 < min ? first + TRIM_MAX_ROWS - 1 : min;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_TRIM, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, hi);
	err = run(q, st, "trim");
	if (err)
		return err;
	n = sqlite3_changes(q->db);
	q->txn_records -= n;
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
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_CUR_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	err = run(q, st, "move cursor");
	if (err)
		return err;
	c->seq = seq;
	q->pending++;
	return trim(q);
}

int queue_backlog(struct queue *q, const char *output, int64_t *records,
		  int64_t *oldest_wall_ms)
{
	int64_t cur = queue_cursor(q, output);
	int64_t upto = q->readonly ? INT64_MAX : q->committed_seq;
	sqlite3_stmt *st;
	int rc, err;

	*records = 0;
	if (oldest_wall_ms)
		*oldest_wall_ms = 0;
	if (cur < 0)
		return (int)cur;
	err = prep(q, ST_BACKLOG, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, cur);
	sqlite3_bind_int64(st, 2, upto);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*records = sqlite3_column_int64(st, 0);
		if (oldest_wall_ms)
			*oldest_wall_ms = sqlite3_column_int64(st, 1);
	} else {
		err = sql_fail(q, rc, "backlog");
	}
	sqlite3_reset(st);
	return err;
}

int64_t queue_backlog_bytes(struct queue *q, int64_t records)
{
	struct queue_stats st;

	if (records <= 0 || queue_stats(q, &st) || st.records <= 0)
		return 0;
	return (int64_t)((double)st.disk_bytes * (double)records / (double)st.records);
}

int queue_dlq_add(struct queue *q, const char *origin, const char *stream,
		  int64_t seq, const char *key, const char *reason,
		  const void *data, size_t len)
{
	sqlite3_stmt *st;
	int err;

	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_DLQ_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, now_ms(CLOCK_REALTIME));
	sqlite3_bind_text(st, 2, origin, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, stream, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, seq);
	sqlite3_bind_text(st, 5, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 7, data ? data : "", len, SQLITE_STATIC);
	err = run(q, st, "dead-letter");
	if (!err)
		q->pending++;
	return err;
}

static void row_to_dlq(sqlite3_stmt *st, struct dlq_entry *e,
		       const void **data)
{
	e->id = sqlite3_column_int64(st, 0);
	e->ts_wall_ms = sqlite3_column_int64(st, 1);
	copy_str(e->origin, sizeof(e->origin),
		 (const char *)sqlite3_column_text(st, 2));
	copy_str(e->stream, sizeof(e->stream),
		 (const char *)sqlite3_column_text(st, 3));
	e->seq = sqlite3_column_int64(st, 4);
	copy_str(e->key, sizeof(e->key),
		 (const char *)sqlite3_column_text(st, 5));
	copy_str(e->reason, sizeof(e->reason),
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
		err = sql_fail(q, rc, "dead-letter queue");
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
	err = prep(q, ST_DLQ_LIST, &st);
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

	err = prep(q, ST_DLQ_GET, &st);
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
	sqlite3_stmt *st;
	int64_t n;
	int err;

	*count = 0;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_DLQ_REPLAY, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	sqlite3_bind_int64(st, 3, now_ms(CLOCK_REALTIME));
	sqlite3_bind_int64(st, 4, now_ms(CLOCK_BOOTTIME));
	sqlite3_bind_int(st, 5, q->last_clock);
	sqlite3_bind_int64(st, 6, q->last_seq);
	err = run(q, st, "replay dead letters");
	if (err)
		return err;
	n = sqlite3_changes(q->db);
	if (n == 0 && id) {
		/* Either no such entry, or one rejected at ingest (seq 0): its
		 * bytes never parsed, so they cannot enter the log as they are. */
		return queue_dlq_get(q, id, dlq_exists_cb, NULL) == 0 ? -EINVAL : -ENOENT;
	}
	if (n == 0)
		return 0;
	q->last_seq += n;
	q->txn_records += n;
	q->pending += n;
	err = prep(q, ST_DLQ_DEL_REPLAYED, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	err = run(q, st, "delete replayed dead letters");
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
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_DLQ_DEL, &st);
	if (err)
		return err;
	bind_id_range(st, id);
	err = run(q, st, "purge dead letters");
	if (err)
		return err;
	n = sqlite3_changes(q->db);
	if (n == 0)
		return id ? -ENOENT : 0;
	q->pending++;
	*count = n;
	return 0;
}

static int append_gap(struct queue *q, int64_t first, int64_t last,
		      int64_t count)
{
	char key[64], data[160];
	struct qrec_in r = {
		.stream = "_agent",
		.key = key,
		.ts_wall_ms = now_ms(CLOCK_REALTIME),
		.ts_mono_ms = now_ms(CLOCK_BOOTTIME),
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
	return append_row(q, REC_GAP, &r, NULL);
}

/* Delete the oldest committed data records, chunk by chunk, until the pages
 * in use fit target; gap markers stay so the lake hears of every gap. */
static int drop_oldest(struct queue *q, int64_t target)
{
	sqlite3_stmt *st;
	int64_t live, first, last, hi, top, n, avg, chunk;
	int64_t gap_first = 0, gap_last = 0, count = 0;
	bool found;
	int err;

	for (int iter = 0; iter < 100000; iter++) {
		err = live_bytes(q, &live);
		if (err || live <= target)
			break;
		err = query_int(q, ST_FIRST_DATA, &first, "oldest record");
		if (!err)
			err = query_int(q, ST_LAST, &last, "newest record");
		if (err || first == 0 || first > q->committed_seq)
			break;
		avg = live / (last - first + 1);
		if (avg < 1)
			avg = 1;
		chunk = (live - target) / avg + 1;
		if (chunk < 16)
			chunk = 16;
		if (chunk > TRIM_MAX_ROWS)
			chunk = TRIM_MAX_ROWS;
		hi = first + chunk - 1;
		if (hi > q->committed_seq)
			hi = q->committed_seq;
		err = prep(q, ST_LAST_DATA_UPTO, &st);
		if (err)
			break;
		sqlite3_bind_int64(st, 1, hi);
		err = run_int(q, st, &top, &found, "drop range");
		if (err)
			break;
		err = txn_begin(q);
		if (!err)
			err = prep(q, ST_DROP, &st);
		if (err)
			break;
		sqlite3_bind_int64(st, 1, first);
		sqlite3_bind_int64(st, 2, hi);
		err = run(q, st, "drop oldest");
		if (err)
			break;
		n = sqlite3_changes(q->db);
		if (n == 0)
			break;
		if (!gap_first)
			gap_first = first;
		gap_last = top;
		count += n;
		q->txn_records -= n;
	}
	if (err || count == 0)
		return err;
	q->pending++;
	err = meta_add(q, "evicted_records", count);
	if (!err)
		err = append_gap(q, gap_first, gap_last, count);
	if (!err)
		log_warn("queue %s: over its disk budget of %" PRId64
			 " bytes: dropped %" PRId64 " oldest records (seq %"
			 PRId64 "-%" PRId64 ")", q->path, q->max_bytes, count,
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
	max = effective_budget(q);
	if (max <= 0) {
		q->full = false;
		return trim(q);
	}
	/* A WAL above its settling size counts against the budget for no
	 * data: cut it first, which alone may bring usage under. */
	if (disk_bytes(q) > max - max / 10)
		wal_truncate(q);
	err = trim(q);
	if (!err)
		err = live_bytes(q, &live);
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
	err = live_bytes(q, &live);
	if (err)
		return err;
	q->full = live + wal_share(q) > max;
	return 0;
}

bool queue_full(const struct queue *q)
{
	return q->full;
}

int queue_stats(struct queue *q, struct queue_stats *st)
{
	int64_t last;
	int err;

	memset(st, 0, sizeof(*st));
	err = meta_get(q, "records", &st->records);
	if (!err)
		err = meta_get(q, "evicted_records", &st->evicted_records);
	if (!err)
		err = first_seq(q, &st->first_seq, &st->oldest_wall_ms);
	if (!err)
		err = query_int(q, ST_LAST, &last, "newest record");
	if (!err)
		err = query_int(q, ST_DLQ_COUNT, &st->dlq_records, "dlq count");
	if (err)
		return err;
	st->records += q->txn_records;
	st->last_seq = last;
	st->disk_bytes = disk_bytes(q);
	st->max_bytes = q->readonly ? q->max_bytes : effective_budget(q);
	st->disk_limited = q->disk_limited;
	/* A read-only opener cannot see the daemon's flag; judge by size. */
	st->full = q->readonly ? q->max_bytes > 0 &&
					 st->disk_bytes > q->max_bytes :
				 q->full;
	st->recovered_at_ms = q->recovered_at_ms;
	copy_str(st->recovered_path, sizeof(st->recovered_path),
		 q->recovered_path);
	return 0;
}
