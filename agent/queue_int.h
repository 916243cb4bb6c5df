/* queue_int.h - what the files of the queue share behind queue.h: the
 * queue's state, its blocks and caches, the prepared statements, and the
 * helpers each file offers the others. Nothing outside agent/queue*.c
 * includes it.
 *
 * The queue is split by concern, like SQLite's pager, WAL and b-tree behind
 * one API:
 *   queue.c         open, close, append, commit, read: the core
 *   queue_sql.c     prepared statements, SQLite codes turned into errnos
 *   queue_db.c      opening the file, its check, its schema, quarantine
 *   queue_dedupe.c  the dedupe window
 *   queue_block.c   the block codec and the cache of decoded blocks
 *   queue_seq.c     seq reservations, so no seq is given twice
 *   queue_cursor.c  output cursors, in-flight batches, source positions
 *   queue_dlq.c     the dead-letter table
 *   queue_budget.c  the disk budget and eviction
 */
#ifndef AGENT_QUEUE_INT_H
#define AGENT_QUEUE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sqlite3.h>
#include <zstd.h>

#include "queue.h"

/* Uncompressed size a block is cut at. Records are stored a block per row:
 * a row per record cost three quarters of the agent's CPU and most of its
 * disk writes (the insert, its index entry, the delete, the checkpoints).
 * A record larger than this gets a block of its own. */
#define BLOCK_MAX (128 << 10)
/* Fixed part of an entry in a block: lengths of data, key and stream (u32
 * each), kind, clock, two bytes of padding, seq, ts_wall, ts_mono (i64). */
#define ENTRY_HDR 40
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

/* Records live in blocks: the records appended between two commits (cut
 * at BLOCK_MAX), zstd-compressed into one block_data row, described by one
 * small blocks row (kept apart so that counting a backlog reads a few
 * pages, not every block's first page). A block holds records of one kind:
 * gap markers get blocks of their own, so evicting data never takes one.
 *
 * seq is assigned here, never twice: the highest seq handed out is written
 * to meta.last_seq in each commit (so a seq does not repeat after the tail
 * was deleted), seqs are reserved in <db>-seq before they are made visible
 * (so none repeats after a power cut took commits back, queue_seq.c), and
 * the seqs of a transaction that was rolled back stay given. Seqs are
 * therefore unique and increasing, not dense: blocks hold consecutive seqs,
 * but there may be holes between them.
 *
 * meta.floor is the highest seq every output had passed at the last trim:
 * records up to it are gone for readers and counts, even while the block
 * holding them stays because it also holds later records. */

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
	char *vfs;              /* queue_opts.vfs, or NULL */
	bool readonly;
	int synchronous;
	int on_full;
	int64_t max_bytes;
	bool disk_limited;      /* free disk space is below max_bytes: it is the budget */
	bool disk_size_unknown; /* statvfs reports no size: room unknown */
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
	bool opened;            /* queue_open() succeeded */
	/* Seq reservations (queue_seq.c): no seq above seq_reserved is used
	 * before seq_reserved is durable in <db>-seq. */
	sqlite3_file *seq_file;
	char *seq_path;
	uint64_t seq_gen;
	int64_t seq_reserved;
	int64_t seq_reserved_ms; /* CLOCK_MONOTONIC of the last reservation */
	int64_t seq_chunk;

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

/* queue_sql.c */
bool qsql_is_corrupt(int rc);
int qsql_fail(struct queue *q, int rc, const char *what);
int qsql_prep(struct queue *q, enum stmt_id id, sqlite3_stmt **out);
int qsql_run(struct queue *q, sqlite3_stmt *st, const char *what);
int qsql_run_int(struct queue *q, sqlite3_stmt *st, int64_t *val,
		 bool *found, const char *what);
int qsql_query_int(struct queue *q, enum stmt_id id, int64_t *val,
		   const char *what);
int qsql_exec(struct queue *q, const char *sql, const char *what);
int qsql_once_int(struct queue *q, const char *sql, int64_t *val);
int qsql_begin(struct queue *q);
int qsql_meta_get(struct queue *q, const char *k, int64_t *v);
int qsql_meta_add(struct queue *q, const char *k, int64_t delta);
int qsql_meta_set(struct queue *q, const char *k, int64_t v);
void qsql_finalize(struct queue *q);

/* queue_dedupe.c */
void dwin_key_hash(const char *key, uint64_t *h1, uint32_t *h2);
int dwin_init(struct dwin *w, size_t cap);
void dwin_release(struct dwin *w);
bool dwin_has(const struct dwin *w, uint64_t h1, uint32_t h2);
void dwin_add(struct dwin *w, uint64_t h1, uint32_t h2);
void dwin_rollback(struct dwin *w);
int dwin_rebuild(struct queue *q);

/* queue_budget.c */
int64_t qbudget_file_size(const char *path);
int64_t qbudget_disk_bytes(const struct queue *q);
int64_t qbudget_effective(struct queue *q);
void qbudget_wal_truncate(struct queue *q);

/* queue.c */
int64_t queue_now_ms(clockid_t id);
void queue_copy_str(char *dst, size_t size, const char *src);
void queue_txn_forget(struct queue *q);
int queue_append_entry(struct queue *q, int kind, const struct qrec_in *r,
		       bool dedupe, int64_t *seq_out);

/* queue_block.c */
void cache_invalidate(struct queue *q, int64_t first);
int blk_step(struct queue *q, sqlite3_stmt *st, struct blk *b,
	     bool *found, const char *what);
int block_find(struct queue *q, int64_t seq, struct blk *b,
	       bool *found);
bool blk_dense(const struct blk *b);
void entry_to_qrec(const struct bcache *c, int64_t i, struct qrec *r);
int64_t entry_index(const struct bcache *c, int64_t seq);
int block_load(struct queue *q, const struct blk *b,
	       struct bcache **out);
int pb_flush(struct queue *q);
int pb_add(struct queue *q, int kind, const struct qrec_in *r,
	   int64_t seq);
int block_count_after(struct queue *q, int64_t after, int64_t upto,
		      int64_t *n);
int block_first_after(struct queue *q, int64_t after, int64_t upto,
		      int64_t *seq, int64_t *wall);
int block_corrupt(struct queue *q, const struct blk *b);

/* queue_seq.c */
int qseq_open(struct queue *q);
void qseq_close(struct queue *q);
int qseq_reserve(struct queue *q);
void qseq_release(struct queue *q);

/* queue_db.c */
void qdb_close(struct queue *q);
int qdb_setup(struct queue *q);
int qdb_move_aside(struct queue *q);

/* queue_cursor.c */
int cursors_init(struct queue *q, const char *const *outputs,
		 size_t n_outputs);
int cursor_floor(struct queue *q, int64_t *floor);
int cursor_trim(struct queue *q);

#endif
