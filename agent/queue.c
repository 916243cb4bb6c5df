/* queue.c - the durable queue: a record log in zstd-compressed blocks, with
 * output cursors, source positions and a dead-letter table, in SQLite. */
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
#include <zstd.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "queue.h"

/* 1: one row per record (no longer read: moved aside). 2: blocks. */
#define SCHEMA_VERSION 2
#define SCHEMA_ROWS 1
/* Blocks fully passed by every output deleted by one trim, so one cursor
 * move never stalls the loop. */
#define TRIM_MAX_BLOCKS 64
/* Uncompressed size a block is cut at. Records are stored a block per row:
 * a row per record cost three quarters of the agent's CPU and most of its
 * disk writes (the insert, its index entry, the delete, the checkpoints).
 * A record larger than this gets a block of its own. */
#define BLOCK_MAX (128 << 10)
/* Fast: the commit path pays for it; the ratio is close to level 3. */
#define BLOCK_ZSTD_LEVEL 1
/* Fixed part of an entry in a block: lengths of data, key and stream (u32
 * each), kind, clock, two bytes of padding, seq, ts_wall, ts_mono (i64). */
#define ENTRY_HDR 40
#define DEDUPE_WINDOW_DEFAULT 16384
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
#define BUSY_TIMEOUT_MS 5000

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_BLK_ADD,
	ST_BLKDATA_ADD,
	ST_BLK_AT,
	ST_BLK_NEXT,
	ST_BLK_DATA,
	ST_BLK_DEL,
	ST_BLKDATA_DEL,
	ST_BLK_SUM,
	ST_BLK_LAST,
	ST_BLK_RECENT,
	ST_OLDEST_DATA,
	ST_SEQ,
	ST_TRIM_DATA,
	ST_TRIM_BLK,
	ST_POS_SET,
	ST_POS_GET,
	ST_POS_DEL,
	ST_CUR_ALL,
	ST_CUR_GET,
	ST_CUR_SET,
	ST_CUR_ADD,
	ST_CUR_DEL,
	ST_INF_ADD,
	ST_INF_TRIM,
	ST_INF_LIST,
	ST_INF_DROP,
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

/* Records live in blocks: the records appended between two commits (cut
 * at BLOCK_MAX), zstd-compressed into one block_data row, described by one
 * small blocks row (kept apart so that counting a backlog reads a few
 * pages, not every block's first page). A block holds records of one kind:
 * gap markers get blocks of their own, so evicting data never takes one.
 *
 * seq is assigned here. The highest seq handed out is written to
 * meta.last_seq in each commit, so a seq never repeats even after the tail
 * was deleted; seqs of a transaction that never committed were never
 * visible and may be handed out again.
 *
 * meta.floor is the highest seq every output had passed at the last trim:
 * records up to it are gone for readers and counts, even while the block
 * holding them stays because it also holds later records. */
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

struct qcursor {
	char *name;
	int64_t seq;
};

/* A blocks row. */
struct blk {
	int64_t first, last, count;
	int kind;
	int64_t first_wall;
	int64_t bytes, zbytes;
};

/* A decompressed block: the entries and where each starts. */
struct bcache {
	struct blk b;
	char *buf;
	size_t cap;
	uint32_t *off;
	size_t off_cap;
	uint64_t used;          /* for least-recently-used replacement */
	bool valid;
	bool pinned;            /* a read is walking it */
};

#define N_BCACHE 2

/* The records appended since the last block was written. */
struct pending_block {
	char *buf;
	size_t len, cap;
	int64_t count, first, last, first_wall;
	int kind;
};

/* The dedupe window: 96 bits of hash of the newest `cap` keys, in a ring,
 * found through an open-addressing index of ring positions (linear
 * probing, at most half full). Full keys are not kept (65536 keys of ~40
 * bytes would cost more than the rest of the agent). A new key is refused
 * falsely only if both hashes of some key in the window match: about
 * cap / 2^96 per append, 2^-80 for 65536 keys; appending 250,000 records a
 * second for 20 years makes that about 1e-10 for the whole time. */
struct dwin {
	uint64_t *h;
	uint32_t *c;
	uint32_t *slot;         /* ring position + 1; 0 = empty */
	size_t cap, mask;
	size_t head, n;
	size_t txn;             /* entries added since the last commit */
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
	bool disk_limited;      /* free disk space is below max_bytes: it is the budget */
	int64_t wal_limit;      /* journal_size_limit: what the WAL settles at */
	int64_t base_wal_limit; /* wal_limit when the disk has room */
	int64_t budget;         /* the budget in force at the last check */
	int64_t page_size;

	bool in_txn;
	bool full;
	bool cursors_stale;     /* a lost transaction took cursor moves with it */
	bool check_failed;      /* the integrity check said no */
	bool old_schema;        /* a queue of schema version 1 */
	int lost_err;           /* a rolled-back transaction, for the next commit */
	int last_rc;            /* last SQLite code seen by sql_fail() */
	int last_clock;         /* clock state of the newest append */
	int64_t pending;
	int64_t pending_bytes;  /* record bytes appended since the last commit */
	int64_t committed_seq;
	int64_t last_seq;       /* highest seq handed out, committed or not */
	int64_t floor;          /* meta.floor as this transaction sees it */

	struct pending_block pb;
	char *zbuf;             /* compressed block on its way to SQLite */
	size_t zcap;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	struct bcache cache[N_BCACHE];
	uint64_t cache_tick;
	struct dwin win;

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

/* Entries are stored little-endian whatever the host, so a queue file
 * moved to another machine still reads. */
static void put_u32(char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (char)(v >> (8 * i));
}

static void put_i64(char *p, int64_t v)
{
	uint64_t u = (uint64_t)v;

	for (int i = 0; i < 8; i++)
		p[i] = (char)(u >> (8 * i));
}

static uint32_t get_u32(const char *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)(unsigned char)p[i] << (8 * i);
	return v;
}

static int64_t get_i64(const char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)(unsigned char)p[i] << (8 * i);
	return (int64_t)v;
}

/* MurmurHash64A: fast on short keys and well mixed; the window only lives
 * in memory, so the byte order it reads in does not matter. */
static uint64_t hash64(const char *s, size_t n, uint64_t seed)
{
	const uint64_t m = 0xc6a4a7935bd1e995ULL;
	uint64_t h = seed ^ ((uint64_t)n * m), k;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&k, s, 8);
		k *= m;
		k ^= k >> 47;
		k *= m;
		h ^= k;
		h *= m;
	}
	if (n) {
		k = 0;
		memcpy(&k, s, n);
		h ^= k;
		h *= m;
	}
	h ^= h >> 47;
	h *= m;
	h ^= h >> 47;
	return h;
}

static void key_hash(const char *key, uint64_t *h1, uint32_t *h2)
{
	size_t n = strlen(key);

	*h1 = hash64(key, n, 0x9e3779b97f4a7c15ULL);
	*h2 = (uint32_t)(hash64(key, n, 0x2545f4914f6cdd1dULL) >> 32);
}

static int dwin_init(struct dwin *w, size_t cap)
{
	size_t slots = 2;

	memset(w, 0, sizeof(*w));
	if (cap == 0)
		return 0;
	while (slots < 2 * cap)
		slots <<= 1;
	w->h = xmalloc(cap * sizeof(*w->h));
	w->c = xmalloc(cap * sizeof(*w->c));
	w->slot = xcalloc(slots, sizeof(*w->slot));
	if (!w->h || !w->c || !w->slot)
		return -ENOMEM;
	w->cap = cap;
	w->mask = slots - 1;
	return 0;
}

static void dwin_release(struct dwin *w)
{
	xfree(w->h);
	xfree(w->c);
	xfree(w->slot);
	memset(w, 0, sizeof(*w));
}

static bool dwin_has(const struct dwin *w, uint64_t h1, uint32_t h2)
{
	uint32_t e;

	if (!w->cap)
		return false;
	for (size_t i = h1 & w->mask; (e = w->slot[i]); i = (i + 1) & w->mask)
		if (w->h[e - 1] == h1 && w->c[e - 1] == h2)
			return true;
	return false;
}

/* Take ring position e out of the index (backward-shift deletion, so no
 * tombstones pile up). */
static void dwin_unindex(struct dwin *w, size_t e)
{
	size_t i = w->h[e] & w->mask, j, k;

	while (w->slot[i] != e + 1)
		i = (i + 1) & w->mask;
	for (j = i;;) {
		j = (j + 1) & w->mask;
		if (!w->slot[j])
			break;
		k = w->h[w->slot[j] - 1] & w->mask;
		/* An entry whose home lies cyclically in (i, j] stays put. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		w->slot[i] = w->slot[j];
		i = j;
	}
	w->slot[i] = 0;
}

static void dwin_add(struct dwin *w, uint64_t h1, uint32_t h2)
{
	size_t i;

	if (!w->cap)
		return;
	if (w->n == w->cap)
		dwin_unindex(w, w->head);
	else
		w->n++;
	w->h[w->head] = h1;
	w->c[w->head] = h2;
	for (i = h1 & w->mask; w->slot[i]; i = (i + 1) & w->mask)
		;
	w->slot[i] = (uint32_t)(w->head + 1);
	w->head = (w->head + 1) % w->cap;
	w->txn++;
}

/* Forget the keys of a transaction that was lost, newest first, so that
 * the records, read again, are not refused as duplicates of themselves.
 * Older keys they pushed out of a full window stay out. */
static void dwin_rollback(struct dwin *w)
{
	for (; w->txn && w->n; w->txn--, w->n--) {
		w->head = (w->head + w->cap - 1) % w->cap;
		dwin_unindex(w, w->head);
	}
	w->txn = 0;
}

static void cache_invalidate(struct queue *q, int64_t first)
{
	for (int i = 0; i < N_BCACHE; i++)
		if (first == INT64_MIN || q->cache[i].b.first == first)
			q->cache[i].valid = false;
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
	q->pb.len = 0;
	q->pb.count = 0;
	dwin_rollback(&q->win);
	cache_invalidate(q, INT64_MIN);
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
	err = exec_sql(q, INFLIGHT_SQL, "create inflight table");
	if (err)
		goto out_rollback;
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
		err = meta_get(q, "floor", &q->floor);
	/* Touches the newest end of the blocks b-tree, like every append. */
	if (!err)
		err = query_int(q, ST_BLK_LAST, &seq, "newest block");
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
	log_error("queue %s is %s: moved it to %s and started an empty "
		  "queue; records in it are not shipped", q->path,
		  q->old_schema ? "of an older format" : "damaged",
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
	if (!q->readonly) {
		err = meta_get(q, "floor", &q->floor);
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

static void row_to_blk(sqlite3_stmt *st, struct blk *b)
{
	b->first = sqlite3_column_int64(st, 0);
	b->last = sqlite3_column_int64(st, 1);
	b->count = sqlite3_column_int64(st, 2);
	b->kind = sqlite3_column_int(st, 3);
	b->first_wall = sqlite3_column_int64(st, 4);
	b->bytes = sqlite3_column_int64(st, 5);
	b->zbytes = sqlite3_column_int64(st, 6);
}

/* Step a statement that returns at most one blocks row, then reset it. */
static int blk_step(struct queue *q, sqlite3_stmt *st, struct blk *b,
		    bool *found, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	*found = false;
	if (rc == SQLITE_ROW) {
		row_to_blk(st, b);
		*found = true;
	} else if (rc != SQLITE_DONE) {
		err = sql_fail(q, rc, what);
	}
	sqlite3_reset(st);
	return err;
}

/* The block holding seq, or else the first one after it. */
static int block_find(struct queue *q, int64_t seq, struct blk *b,
		      bool *found)
{
	sqlite3_stmt *st;
	int err;

	err = prep(q, ST_BLK_AT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, seq);
	err = blk_step(q, st, b, found, "find block");
	if (err || (*found && b->last >= seq))
		return err;
	err = prep(q, ST_BLK_NEXT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, seq);
	return blk_step(q, st, b, found, "find block");
}

/* Blocks written from one commit group hold consecutive seqs; only the
 * rewrite of a damaged block makes one that does not. */
static bool blk_dense(const struct blk *b)
{
	return b->count == b->last - b->first + 1;
}

static bool blk_same(const struct blk *a, const struct blk *b)
{
	return a->first == b->first && a->last == b->last &&
	       a->count == b->count && a->bytes == b->bytes;
}

static int64_t entry_seq(const struct bcache *c, int64_t i)
{
	return get_i64(c->buf + c->off[i] + 16);
}

static void entry_to_qrec(const struct bcache *c, int64_t i, struct qrec *r)
{
	const char *p = c->buf + c->off[i];
	uint32_t len = get_u32(p), klen = get_u32(p + 4), slen = get_u32(p + 8);

	r->kind = (unsigned char)p[12];
	r->clock = (unsigned char)p[13];
	r->seq = get_i64(p + 16);
	r->ts_wall_ms = get_i64(p + 24);
	r->ts_mono_ms = get_i64(p + 32);
	r->stream = p + ENTRY_HDR;
	r->key = r->stream + slen + 1;
	r->data = r->key + klen + 1;
	r->len = len;
}

/* Index of the first entry with seq >= seq (count if none). */
static int64_t entry_index(const struct bcache *c, int64_t seq)
{
	int64_t lo = 0, hi = c->b.count, mid;

	if (seq <= c->b.first)
		return 0;
	if (blk_dense(&c->b))
		return seq > c->b.last ? c->b.count : seq - c->b.first;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (entry_seq(c, mid) < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t entry_size(size_t slen, size_t klen, size_t len)
{
	return ENTRY_HDR + slen + 1 + klen + 1 + len;
}

static void entry_encode(char *p, int kind, const struct qrec_in *r,
			 int64_t seq, size_t slen, size_t klen)
{
	put_u32(p, (uint32_t)r->len);
	put_u32(p + 4, (uint32_t)klen);
	put_u32(p + 8, (uint32_t)slen);
	p[12] = (char)kind;
	p[13] = (char)r->clock;
	p[14] = p[15] = 0;
	put_i64(p + 16, seq);
	put_i64(p + 24, r->ts_wall_ms);
	put_i64(p + 32, r->ts_mono_ms);
	p += ENTRY_HDR;
	memcpy(p, r->stream, slen + 1);
	p += slen + 1;
	memcpy(p, r->key, klen + 1);
	p += klen + 1;
	if (r->len)
		memcpy(p, r->data, r->len);
}

/* Check every entry of a decompressed block against its row and note where
 * each starts; a block that was damaged in a way its checksum missed is
 * refused here rather than handed to an output. */
static int block_index(struct bcache *c)
{
	const char *p = c->buf;
	uint64_t pos = 0, len = (uint64_t)c->b.bytes, need;
	uint32_t dlen, klen, slen;
	int64_t i = 0, seq, prev = INT64_MIN;

	while (pos < len) {
		if (i >= c->b.count || len - pos < ENTRY_HDR)
			return -EBADMSG;
		dlen = get_u32(p + pos);
		klen = get_u32(p + pos + 4);
		slen = get_u32(p + pos + 8);
		seq = get_i64(p + pos + 16);
		need = (uint64_t)ENTRY_HDR + slen + 1 + klen + 1 + dlen;
		if (need > len - pos || p[pos + ENTRY_HDR + slen] ||
		    p[pos + ENTRY_HDR + slen + 1 + klen] ||
		    (unsigned char)p[pos + 12] != c->b.kind ||
		    seq <= prev || seq < c->b.first || seq > c->b.last ||
		    (i == 0 && seq != c->b.first))
			return -EBADMSG;
		c->off[i++] = (uint32_t)pos;
		prev = seq;
		pos += need;
	}
	return i == c->b.count && prev == c->b.last ? 0 : -EBADMSG;
}

/* Make sure c can hold a block of `bytes` and `count` entries; buffers
 * grown for an outsized block are given back when a normal one comes. */
static int cache_reserve(struct bcache *c, size_t bytes, size_t count)
{
	size_t want = bytes > BLOCK_MAX ? bytes : BLOCK_MAX;
	size_t offs = count > BLOCK_MAX / ENTRY_HDR ? count : BLOCK_MAX / ENTRY_HDR;

	if (c->cap < bytes || c->cap > want) {
		xfree(c->buf);
		c->cap = 0;
		c->buf = xmalloc(want);
		if (!c->buf)
			return -ENOMEM;
		c->cap = want;
	}
	if (c->off_cap < count || c->off_cap > offs) {
		xfree(c->off);
		c->off_cap = 0;
		c->off = xmalloc(offs * sizeof(*c->off));
		if (!c->off)
			return -ENOMEM;
		c->off_cap = offs;
	}
	return 0;
}

/* The block decompressed, from the cache when it is there. -EBADMSG: its
 * bytes do not decode (or its data row is missing). Readers walk the
 * batches of one output forward, so the block just read is usually the
 * next one wanted; two slots keep two outputs from evicting each other. */
static int block_load(struct queue *q, const struct blk *b,
		      struct bcache **out)
{
	struct bcache *c = NULL;
	sqlite3_stmt *st;
	const void *z;
	size_t zlen, n;
	int rc, err;

	*out = NULL;
	for (int i = 0; i < N_BCACHE; i++) {
		struct bcache *s = &q->cache[i];

		if (s->valid && blk_same(&s->b, b)) {
			s->used = ++q->cache_tick;
			*out = s;
			return 0;
		}
		if (!s->pinned && (!c || !s->valid ||
				   (c->valid && s->used < c->used)))
			c = s;
	}
	if (!c)
		return -EBUSY;
	c->valid = false;
	if (b->count < 1 || b->bytes < ENTRY_HDR ||
	    b->count > b->bytes / ENTRY_HDR || b->bytes > (INT32_MAX / 2))
		return -EBADMSG;
	err = cache_reserve(c, (size_t)b->bytes, (size_t)b->count);
	if (err)
		return err;
	err = prep(q, ST_BLK_DATA, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, b->first);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		z = sqlite3_column_blob(st, 0);
		zlen = (size_t)sqlite3_column_bytes(st, 0);
		if (!z || ZSTD_getFrameContentSize(z, zlen) !=
				  (unsigned long long)b->bytes) {
			err = -EBADMSG;
		} else {
			n = ZSTD_decompressDCtx(q->dctx, c->buf, (size_t)b->bytes,
						z, zlen);
			if (ZSTD_isError(n) || n != (size_t)b->bytes)
				err = -EBADMSG;
		}
	} else if (rc == SQLITE_DONE) {
		err = -EBADMSG;
	} else {
		err = sql_fail(q, rc, "read block");
	}
	sqlite3_reset(st);
	if (err)
		return err;
	c->b = *b;
	err = block_index(c);
	if (err)
		return err;
	c->valid = true;
	c->used = ++q->cache_tick;
	*out = c;
	return 0;
}

/* Compress one block and insert its two rows (into the open transaction). */
static int block_store(struct queue *q, const char *raw, size_t len,
		       const struct blk *b)
{
	size_t bound = ZSTD_compressBound(len), n;
	sqlite3_stmt *st;
	char *nz;
	int err;

	if (bound > q->zcap) {
		nz = xmalloc(bound);
		if (!nz)
			return -ENOMEM;
		xfree(q->zbuf);
		q->zbuf = nz;
		q->zcap = bound;
	}
	n = ZSTD_compress2(q->cctx, q->zbuf, q->zcap, raw, len);
	if (ZSTD_isError(n)) {
		log_error("queue %s: zstd: %s", q->path, ZSTD_getErrorName(n));
		return -EIO;
	}
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_BLK_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, b->first);
	sqlite3_bind_int64(st, 2, b->last);
	sqlite3_bind_int64(st, 3, b->count);
	sqlite3_bind_int(st, 4, b->kind);
	sqlite3_bind_int64(st, 5, b->first_wall);
	sqlite3_bind_int64(st, 6, (int64_t)len);
	sqlite3_bind_int64(st, 7, (int64_t)n);
	err = run(q, st, "write block");
	if (!err)
		err = prep(q, ST_BLKDATA_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, b->first);
	sqlite3_bind_blob64(st, 2, q->zbuf, n, SQLITE_STATIC);
	err = run(q, st, "write block");
	if (q->zcap > 2 * ZSTD_compressBound(BLOCK_MAX)) {
		/* Give back what an outsized record made it grow to. */
		nz = xmalloc(ZSTD_compressBound(BLOCK_MAX));
		if (nz) {
			xfree(q->zbuf);
			q->zbuf = nz;
			q->zcap = ZSTD_compressBound(BLOCK_MAX);
		}
	}
	return err;
}

/* Write the pending records as a block (still inside the transaction). */
static int pb_flush(struct queue *q)
{
	struct pending_block *pb = &q->pb;
	struct blk b;
	char *nb;
	int err;

	if (!pb->count)
		return 0;
	b = (struct blk){ .first = pb->first, .last = pb->last,
			  .count = pb->count, .kind = pb->kind,
			  .first_wall = pb->first_wall };
	err = block_store(q, pb->buf, pb->len, &b);
	if (err)
		return err;
	pb->len = 0;
	pb->count = 0;
	if (pb->cap > BLOCK_MAX) {
		nb = xmalloc(BLOCK_MAX);
		if (nb) {
			xfree(pb->buf);
			pb->buf = nb;
			pb->cap = BLOCK_MAX;
		}
	}
	return 0;
}

/* Add a record to the pending block, writing out the block first when the
 * record does not fit or is of the other kind. */
static int pb_add(struct queue *q, int kind, const struct qrec_in *r,
		  int64_t seq)
{
	struct pending_block *pb = &q->pb;
	size_t slen = strlen(r->stream), klen = strlen(r->key), need;
	char *nb;
	int err;

	if (slen > UINT32_MAX / 4 || klen > UINT32_MAX / 4 ||
	    r->len > UINT32_MAX / 4)
		return -EINVAL;
	need = entry_size(slen, klen, r->len);
	if (pb->count && (pb->kind != kind || pb->len + need > BLOCK_MAX)) {
		err = pb_flush(q);
		if (err)
			return err;
	}
	if (need > pb->cap - pb->len) {
		nb = xrealloc(pb->buf, pb->len + need);
		if (!nb)
			return -ENOMEM;
		pb->buf = nb;
		pb->cap = pb->len + need;
	}
	entry_encode(pb->buf + pb->len, kind, r, seq, slen, klen);
	if (!pb->count) {
		pb->first = seq;
		pb->first_wall = r->ts_wall_ms;
		pb->kind = kind;
	}
	pb->last = seq;
	pb->count++;
	pb->len += need;
	return 0;
}

/* The records of a block that are newer than `after`. */
static int64_t entries_after(struct queue *q, const struct blk *b,
			     int64_t after)
{
	struct bcache *c;

	if (after < b->first)
		return b->count;
	if (after >= b->last)
		return 0;
	if (blk_dense(b))
		return b->last - after;
	if (block_load(q, b, &c))
		return b->count;        /* damaged: reading it will say */
	return c->b.count - entry_index(c, after + 1);
}

/* Records with after < seq <= upto: one indexed sum over the blocks rows,
 * plus the part of a block the seq falls in. */
static int count_after(struct queue *q, int64_t after, int64_t upto,
		       int64_t *n)
{
	sqlite3_stmt *st;
	struct blk b;
	bool found;
	int64_t sum;
	int err;

	*n = 0;
	if (after >= upto)
		return 0;
	err = prep(q, ST_BLK_AT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after);
	err = blk_step(q, st, &b, &found, "count");
	if (err)
		return err;
	if (found && b.last > after)
		*n += entries_after(q, &b, after);
	err = prep(q, ST_BLK_SUM, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int64(st, 2, upto);
	err = run_int(q, st, &sum, &found, "count");
	if (!err)
		*n += sum;
	return err;
}

/* The first record with after < seq <= upto: its seq and wall time, both
 * 0 when there is none. */
static int first_after(struct queue *q, int64_t after, int64_t upto,
		       int64_t *seq, int64_t *wall)
{
	struct bcache *c;
	struct qrec r;
	struct blk b;
	bool found;
	int64_t i;
	int err;

	*seq = 0;
	*wall = 0;
	err = block_find(q, after + 1, &b, &found);
	if (err || !found || b.first > upto)
		return err;
	if (b.first > after || block_load(q, &b, &c)) {
		*seq = b.first > after ? b.first : after + 1;
		*wall = b.first_wall;
		return 0;
	}
	i = entry_index(c, after + 1);
	if (i >= c->b.count)
		return 0;
	entry_to_qrec(c, i, &r);
	if (r.seq <= upto) {
		*seq = r.seq;
		*wall = r.ts_wall_ms;
	}
	return 0;
}

/* Fill the dedupe window with the keys of the newest records, so that a
 * restart refuses what the last run had just taken in. */
static int dwin_rebuild(struct queue *q)
{
	sqlite3_stmt *st;
	struct bcache *c;
	struct qrec r;
	struct blk b;
	bool found;
	int64_t total = 0, start = 0, skip, target;
	uint64_t h1;
	uint32_t h2;
	int rc, err;

	if (!q->win.cap)
		return 0;
	err = prep(q, ST_BLK_RECENT, &st);
	if (err)
		return err;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		start = sqlite3_column_int64(st, 0);
		total += sqlite3_column_int64(st, 1);
		if (total >= (int64_t)q->win.cap)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = sql_fail(q, rc, "dedupe window");
	sqlite3_reset(st);
	if (err || !total)
		return err;
	skip = total - (int64_t)q->win.cap;
	for (target = start;; target = b.last + 1) {
		err = block_find(q, target, &b, &found);
		if (err || !found)
			break;
		err = block_load(q, &b, &c);
		if (err == -EBADMSG) {
			log_warn("queue %s: block of seq %" PRId64 "-%" PRId64
				 " does not decode; its keys are not in the "
				 "dedupe window", q->path, b.first, b.last);
			skip -= b.count;
			continue;
		}
		if (err)
			break;
		for (int64_t i = 0; i < c->b.count; i++) {
			if (skip > 0) {
				skip--;
				continue;
			}
			entry_to_qrec(c, i, &r);
			key_hash(r.key, &h1, &h2);
			dwin_add(&q->win, h1, h2);
		}
	}
	q->win.txn = 0;
	return err;
}

static int cursors_init(struct queue *q, const char *const *outputs,
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
		if (!err)
			err = prep(q, ST_INF_DROP, &st);
		if (!err) {
			sqlite3_bind_text(st, 1, stale, -1, SQLITE_STATIC);
			err = run(q, st, "drop in-flight batches");
		}
		xfree(stale);
		if (err)
			return err;
	}
	if (err)
		return err;
	/* A new output starts just before the oldest record: it gets the
	 * whole backlog. */
	err = first_after(q, q->floor, INT64_MAX, &first, &wall);
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

/* The trim floor: records up to it are gone for readers and counts. */
static int get_floor(struct queue *q, int64_t *floor)
{
	int err;

	if (q->readonly)
		return meta_get(q, "floor", floor);
	err = cursors_reload(q);
	*floor = q->floor;
	return err;
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
	if (!q->path || !q->wal_path)
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
	err = db_setup(q);
	if (err && !q->readonly &&
	    (q->check_failed || q->old_schema || rc_is_corrupt(q->last_rc))) {
		db_close(q);
		err = move_aside(q);
		if (err)
			return err;
		q->old_schema = false;
		err = db_setup(q);
	}
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
	xfree(q);
}

/* Records go into the pending block; no SQL per record. */
static int append_entry(struct queue *q, int kind, const struct qrec_in *r,
			bool dedupe, int64_t *seq_out)
{
	uint64_t h1;
	uint32_t h2;
	int err;

	key_hash(r->key, &h1, &h2);
	if (dedupe && dwin_has(&q->win, h1, h2))
		return -EEXIST;
	err = txn_begin(q);
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

int queue_append(struct queue *q, const struct qrec_in *r, int64_t *seq_out)
{
	if (q->readonly)
		return -EROFS;
	if (!r->key || !r->stream)
		return -EINVAL;
	if (q->full && q->on_full == ON_FULL_BLOCK)
		return -ENOSPC;
	q->last_clock = r->clock;
	return append_entry(q, REC_DATA, r, true, seq_out);
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
		err = pb_flush(q);
		if (err)
			goto out_rollback;
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
		q->win.txn = 0;
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

/* A block whose bytes do not decode: its records cannot be shipped, so the
 * lake is told with a gap marker that takes the block's place (its seq is
 * the block's last, so every output still meets it in order). A read-only
 * opener cannot repair: it reports -EIO. */
static int block_corrupt(struct queue *q, const struct blk *b)
{
	char key[64], data[192], raw[ENTRY_HDR + 8 + 64 + 192];
	struct qrec_in r = { .stream = "_agent", .key = key, .data = data,
			     .clock = q->last_clock,
			     .ts_wall_ms = now_ms(CLOCK_REALTIME),
			     .ts_mono_ms = now_ms(CLOCK_BOOTTIME) };
	struct blk g = { .first = b->last, .last = b->last, .count = 1,
			 .kind = REC_GAP };
	sqlite3_stmt *st;
	size_t klen, len;
	int err;

	log_error("queue %s: the block of seq %" PRId64 "-%" PRId64 " (%"
		  PRId64 " records) is damaged%s", q->path, b->first, b->last,
		  b->count, q->readonly ? "" :
		  ": its records are lost; a gap marker takes its place");
	if (q->readonly)
		return -EIO;
	cache_invalidate(q, b->first);
	snprintf(key, sizeof(key), "gap:%" PRId64 "-%" PRId64, b->first,
		 b->last);
	r.len = (size_t)snprintf(data, sizeof(data),
				 "{\"gap\":{\"first_seq\":%" PRId64
				 ",\"last_seq\":%" PRId64 ",\"count\":%" PRId64
				 ",\"reason\":\"corrupt_block\"}}",
				 b->first, b->last, b->count);
	klen = strlen(key);
	len = entry_size(strlen(r.stream), klen, r.len);
	entry_encode(raw, REC_GAP, &r, g.first, strlen(r.stream), klen);
	g.first_wall = r.ts_wall_ms;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_BLKDATA_DEL, &st);
	if (!err) {
		sqlite3_bind_int64(st, 1, b->first);
		err = run(q, st, "drop damaged block");
	}
	if (!err)
		err = prep(q, ST_BLK_DEL, &st);
	if (!err) {
		sqlite3_bind_int64(st, 1, b->first);
		err = run(q, st, "drop damaged block");
	}
	if (!err)
		err = block_store(q, raw, len, &g);
	if (!err)
		q->pending++;
	return err;
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

	err = get_floor(q, &floor);
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

/* Records every output has passed are gone at once for readers and
 * counts (the floor moves); blocks holding only such records are deleted,
 * at most TRIM_MAX_BLOCKS per call. */
static int trim(struct queue *q)
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
		err = txn_begin(q);
		if (!err)
			err = meta_set(q, "floor", min);
		if (err)
			return err;
		q->floor = min;
		q->pending++;
	}
	err = prep(q, ST_BLK_NEXT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, INT64_MIN);
	err = blk_step(q, st, &b, &found, "oldest block");
	if (err || !found || b.last > q->floor)
		return err;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_TRIM_DATA, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, q->floor);
	sqlite3_bind_int(st, 2, TRIM_MAX_BLOCKS);
	err = run(q, st, "trim");
	if (!err)
		err = prep(q, ST_TRIM_BLK, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, q->floor);
	sqlite3_bind_int(st, 2, TRIM_MAX_BLOCKS);
	err = run(q, st, "trim");
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
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_CUR_SET, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	err = run(q, st, "move cursor");
	if (!err)
		err = prep(q, ST_INF_TRIM, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	err = run(q, st, "forget finished batches");
	if (err)
		return err;
	c->seq = seq;
	q->pending++;
	return trim(q);
}

int queue_inflight_add(struct queue *q, const char *output, int64_t first, int64_t last)
{
	sqlite3_stmt *st;
	int err;

	if (q->readonly)
		return -EROFS;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_INF_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, first);
	sqlite3_bind_int64(st, 3, last);
	err = run(q, st, "remember a batch");
	if (!err)
		q->pending++;
	return err;
}

int queue_inflight_list(struct queue *q, const char *output,
			int (*cb)(int64_t first, int64_t last, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int rc, err;

	err = prep(q, ST_INF_LIST, &st);
	if (err)
		return err;
	sqlite3_bind_text(st, 1, output, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = cb(sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), arg);
		if (err)
			break;
	}
	if (!err && rc != SQLITE_DONE)
		err = sql_fail(q, rc, "list in-flight batches");
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
	err = get_floor(q, &floor);
	if (err)
		return err;
	if (cur < floor)
		cur = floor;
	err = count_after(q, cur, upto, records);
	if (!err && oldest_wall_ms && *records) {
		err = first_after(q, cur, upto, &seq, &wall);
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
	struct qrec_in r = { .ts_wall_ms = now_ms(CLOCK_REALTIME),
			     .ts_mono_ms = now_ms(CLOCK_BOOTTIME),
			     .clock = q->last_clock };
	sqlite3_stmt *st;
	const char *key;
	char *rkey;
	int64_t n = 0, rid;
	int rc, err;

	*count = 0;
	err = txn_begin(q);
	if (!err)
		err = prep(q, ST_DLQ_REPLAY, &st);
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
		err = append_entry(q, REC_DATA, &r, false, NULL);
		xfree(rkey);
		if (err)
			break;
		n++;
	}
	if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = sql_fail(q, rc, "replay dead letters");
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

/* Gap markers are written like records, but into blocks of their own (a
 * block holds one kind), so that evicting data never takes one. */
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
	return append_entry(q, REC_GAP, &r, false, NULL);
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
		err = live_bytes(q, &live);
		if (err || live <= target)
			break;
		for (freed = 0; freed < live - target;) {
			err = prep(q, ST_OLDEST_DATA, &st);
			if (!err)
				err = blk_step(q, st, &b, &found, "oldest block");
			if (err)
				break;
			if (!found || b.first > q->committed_seq) {
				done = true;
				break;
			}
			err = txn_begin(q);
			if (!err)
				err = prep(q, ST_BLKDATA_DEL, &st);
			if (!err) {
				sqlite3_bind_int64(st, 1, b.first);
				err = run(q, st, "drop oldest");
			}
			if (!err)
				err = prep(q, ST_BLK_DEL, &st);
			if (!err) {
				sqlite3_bind_int64(st, 1, b.first);
				err = run(q, st, "drop oldest");
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
	int64_t floor, last;
	int err;

	memset(st, 0, sizeof(*st));
	err = meta_get(q, "evicted_records", &st->evicted_records);
	if (!err)
		err = get_floor(q, &floor);
	/* The writer counts its own uncommitted records too. */
	if (!err)
		err = count_after(q, floor, INT64_MAX, &st->records);
	if (!err)
		err = first_after(q, floor, INT64_MAX, &st->first_seq,
				  &st->oldest_wall_ms);
	if (!err)
		err = query_int(q, ST_BLK_LAST, &last, "newest record");
	if (!err)
		err = query_int(q, ST_DLQ_COUNT, &st->dlq_records, "dlq count");
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
