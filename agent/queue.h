/* queue.h - the durable write-ahead queue: one SQLite database in WAL mode.
 *
 * Records form a log keyed by a seq that is never given twice, whatever a
 * crash or a power cut takes back at any synchronous level (seqs are
 * reserved durably in <path>-seq before use). Seqs increase but are not
 * dense: a restart after a crash, or a failed commit, leaves a hole.
 * Records are stored in zstd-compressed blocks of up to 128 KiB, one row
 * per block.
 * Every output has a durable cursor (the highest seq it has finished:
 * acknowledged or dead-lettered). A record is gone (for reads and counts)
 * once every output's cursor has passed it; its block is deleted once all
 * of the block is passed. A record whose dedupe key is among the keys of
 * the newest dedupe_window records appended (kept in memory and rebuilt
 * from the log at open) is refused; an older duplicate is accepted.
 *
 * Writes are grouped: the first write opens a transaction, queue_commit()
 * commits it. Appends, source positions, cursor moves and DLQ entries made
 * between two commits become durable together, so a source position is never
 * durable without the records read up to it, nor the reverse.
 * Readers (outputs) only see records with seq <= queue_committed_seq().
 *
 * Unless stated, functions return 0 or a negative errno:
 *   -EEXIST   dedupe key within the dedupe window (queue_append)
 *   -ENOSPC   disk budget full and on_full = block (queue_append)
 *   -ENOENT   no such row
 *   -EIO      SQLite error (logged with SQLite's message)
 *   -ENOMEM   out of memory
 */
#ifndef AGENT_QUEUE_H
#define AGENT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue;
struct stat;
struct statvfs;

enum clock_state { CLOCK_UNSYNCED = 0, CLOCK_SYNCED = 1 };
enum rec_kind { REC_DATA = 0, REC_GAP = 1 };

struct queue_opts {
	const char *path;       /* database file, e.g. <state_dir>/queue.db */
	int synchronous;        /* enum sync_level from config.h */
	int64_t max_bytes;      /* disk budget for the database + WAL; 0 = none */
	int on_full;            /* enum on_full from config.h */
	bool readonly;          /* agentctl: open for reading, never create */
	int64_t dedupe_window;  /* keys remembered for dedupe; 0 = 16384 */
	const char *vfs;        /* SQLite VFS to open the file with; NULL = the
				 * default (tests name a fault-injecting one) */
};

/* A record handed to queue_append(); all pointers borrowed for the call. */
struct qrec_in {
	const char *stream;
	const char *key;        /* dedupe key, never NULL */
	int64_t ts_wall_ms;     /* wall clock at ingest */
	int64_t ts_mono_ms;     /* CLOCK_BOOTTIME-like stamp at ingest */
	int clock;              /* enum clock_state at ingest */
	const char *data;       /* the record as JSON text (already encoded) */
	size_t len;
};

/* A record read back; pointers valid only during the callback. */
struct qrec {
	int64_t seq;
	int kind;               /* enum rec_kind */
	const char *stream;
	const char *key;
	int64_t ts_wall_ms;
	int64_t ts_mono_ms;
	int clock;
	const char *data;
	size_t len;
};

struct dlq_entry {
	int64_t id;
	int64_t ts_wall_ms;     /* when it was dead-lettered */
	char origin[64];        /* "input:NAME" or "output:NAME" */
	char stream[64];
	int64_t seq;            /* 0 when it never got one (rejected at ingest) */
	char key[128];
	char reason[256];
	size_t len;             /* full length of data */
};

struct queue_stats {
	int64_t records;        /* records in the log */
	int64_t first_seq, last_seq; /* 0 when empty */
	int64_t oldest_wall_ms; /* ts of the oldest row, 0 when empty */
	int64_t disk_bytes;     /* database + WAL file sizes */
	int64_t max_bytes;      /* the budget in force */
	bool disk_limited;      /* free disk space is below max_bytes: it is the budget */
	bool disk_size_unknown; /* the filesystem reports no size (FUSE, some
				 * network filesystems): its room is unknown and
				 * the budget is max_bytes */
	int64_t dlq_records;
	int64_t evicted_records; /* total ever dropped by drop_oldest */
	bool full;              /* over budget now */
	int64_t recovered_at_ms; /* wall time a corrupt file was moved aside this run, 0 if none */
	char recovered_path[256];
};

/* Open (creating if needed) and check the database. A file that fails its
 * integrity check is renamed to <path>.corrupt-<time> and a fresh one is
 * created; stats.recovered_* tells. `outputs` names the current outputs;
 * cursors for new ones start at the current first seq - 1 (they receive the
 * whole backlog), cursors of outputs no longer configured are dropped.
 * With opts->readonly, outputs may be NULL and nothing is written. */
int queue_open(struct queue **q, const struct queue_opts *opts,
	       const char *const *outputs, size_t n_outputs);
/* Commits anything pending and closes. Accepts NULL. */
void queue_close(struct queue *q);

/* Append one record. Returns 0, -EEXIST (key within the dedupe window,
 * nothing written),
 * -ENOSPC (budget full under block, nothing written), -EIO, -ENOMEM.
 * On success *seq_out (if not NULL) holds its seq. */
int queue_append(struct queue *q, const struct qrec_in *r, int64_t *seq_out);
/* Append a gap marker that an input reports (bytes of a source that are
 * lost): like queue_append(), but of kind REC_GAP, so it ships with
 * "kind":"gap" and evicting data never takes it. */
int queue_append_gap(struct queue *q, const struct qrec_in *r, int64_t *seq_out);

/* Source positions, written in the same transaction as appends. */
int queue_position_set(struct queue *q, const char *input, const char *source,
		       const void *state, size_t len);
/* *state is xmalloc'ed (caller xfree's); -ENOENT when none saved. */
int queue_position_get(struct queue *q, const char *input, const char *source,
		       void **state, size_t *len);
int queue_position_del(struct queue *q, const char *input, const char *source);

/* Commit the open transaction, if any. */
int queue_commit(struct queue *q);
/* Records/changes written since the last commit. */
int64_t queue_pending(const struct queue *q);
/* Bytes of record data and keys appended since the last commit. */
int64_t queue_pending_bytes(const struct queue *q);
/* Highest seq that is durable (committed). */
int64_t queue_committed_seq(const struct queue *q);

/* Call cb for records with after_seq < seq <= queue_committed_seq(), in seq
 * order, at most max_records. cb returns 0 to continue, 1 to stop early, or a
 * negative errno to abort (returned). Returns the number of records visited or
 * -errno. Memory use is independent of the backlog (the last two blocks read
 * are kept decompressed). A block that does not decode is dropped, logged,
 * skipped, and a gap marker (reason "corrupt_block") naming its range is
 * appended with a new seq, readable after the next commit; a read-only
 * opener gets -EIO instead. cb must not call queue_read(). */
typedef int (*queue_read_cb)(const struct qrec *r, void *arg);
int queue_read(struct queue *q, int64_t after_seq, size_t max_records,
	       queue_read_cb cb, void *arg);

/* An output's durable cursor. queue_cursor_set() moves it forward only and
 * deletes blocks every output has passed (at most a bounded number per call;
 * the rest goes on later calls). */
int64_t queue_cursor(struct queue *q, const char *output);
int queue_cursor_set(struct queue *q, const char *output, int64_t seq);
/* Batches an output has formed and not finished, kept with the records so
 * that after a restart it sends the same ranges as the same batches:
 * remember one (in the open transaction); list them in seq order (cb
 * returns 0 to go on, non-zero to stop). Moving the cursor forgets the
 * batches it passes. */
int queue_inflight_add(struct queue *q, const char *output, int64_t first, int64_t last);
int queue_inflight_list(struct queue *q, const char *output,
			int (*cb)(int64_t first, int64_t last, void *arg), void *arg);

/* Records with seq > the output's cursor: count and oldest wall time. */
int queue_backlog(struct queue *q, const char *output, int64_t *records,
		  int64_t *oldest_wall_ms);

/* Disk bytes that `records` of the backlog occupy, estimated from the
 * queue's average (for status; no scan). */
int64_t queue_backlog_bytes(struct queue *q, int64_t records);

/* Dead-letter a record (seq 0 if it has none). */
int queue_dlq_add(struct queue *q, const char *origin, const char *stream,
		  int64_t seq, const char *key, const char *reason,
		  const void *data, size_t len);
/* List up to max entries with id > after_id; cb returns 0 / 1 stop / -errno. */
typedef int (*queue_dlq_cb)(const struct dlq_entry *e, const void *data, void *arg);
int queue_dlq_list(struct queue *q, int64_t after_id, size_t max,
		   queue_dlq_cb cb, void *arg);
/* One entry with its data; -ENOENT if absent. */
int queue_dlq_get(struct queue *q, int64_t id, queue_dlq_cb cb, void *arg);
/* Move entries back into the log as new records (new seq, same stream, key
 * suffixed ":replay:<id>"); id 0 = all. *count gets how many. Only entries
 * an output dead-lettered (seq > 0) can be replayed: a record rejected at
 * ingest never parsed, so replaying id returns -EINVAL for one of those
 * and "all" leaves them in place. */
int queue_dlq_replay(struct queue *q, int64_t id, int64_t *count);
/* Delete entries; id 0 = all. *count gets how many. */
int queue_dlq_purge(struct queue *q, int64_t id, int64_t *count);

/* Apply the disk budget: under drop_oldest, delete the oldest blocks of
 * records until under budget and append one gap marker (kind REC_GAP, stream
 * "_agent", key "gap:A-B") whose data is
 * {"gap":{"first_seq":A,"last_seq":B,"count":N,"reason":"disk_full"}}.
 * Gap markers themselves are never evicted.
 * Under block it only updates the full flag. Call after commits. */
int queue_enforce_budget(struct queue *q);
bool queue_full(const struct queue *q);
/* The disk budget in force: max_bytes, or less when the filesystem has
 * less room (see queue_stats.disk_limited). */
int64_t queue_budget(const struct queue *q);

int queue_stats(struct queue *q, struct queue_stats *st);

/* The disk calls the budget depends on, in one table so that tests can
 * feed it odd filesystems (like SQLite's aSyscall[]). A NULL member, or a
 * NULL table, means the real call. Process-wide. */
struct queue_disk_ops {
	int (*statvfs)(const char *path, struct statvfs *buf);
	int (*stat)(const char *path, struct stat *buf);
};
void queue_set_disk_ops(const struct queue_disk_ops *ops);

#endif
