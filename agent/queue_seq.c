/* queue_seq.c - seq reservations: no seq is used before a range holding it
 * is durable in <db>-seq, so no seq is ever given twice, whatever a power
 * cut takes back of the database.
 *
 * With synchronous = normal (or off) a commit returns before its WAL frames
 * are on disk, and outputs ship what was committed; a power cut then rolls
 * the database back and, without this, the seqs of the lost commits would
 * be handed to other records. So the queue reserves seqs ahead of use: the
 * commit that would first make visible a seq above the reservation first
 * writes a higher one here and syncs it. A restart begins above the
 * reservation. A clean close lowers it to the last seq given, so only a
 * crash or a power cut skips seqs (gaps are allowed; repeats are not).
 *
 * The file is apart from the database so that it survives what happens to
 * the database: a rollback at any synchronous level, and a damaged file
 * that is moved aside (the fresh queue goes on above the old one's seqs).
 * It is written through the same SQLite VFS as the database, so the power
 * cut simulator of the tests covers it. Two slots in separate sectors are
 * written in turn, each with a checksum: a write torn by a cut leaves the
 * other slot, whose reservation is still above every seq used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue_int.h"

/* Seqs reserved at a time; doubled while reservations come faster than
 * once a second, so a fast queue does not pay a sync for every few
 * commits. A power cut skips at most one range. */
#define SEQ_CHUNK_MIN (1LL << 16)
#define SEQ_CHUNK_MAX (1LL << 24)
#define SLOT_OFF(i) ((int64_t)(i) * 512)
#define SLOT_LEN 32
#define SLOT_MAGIC 0x51534741u  /* "AGSQ" */

static uint64_t slot_sum(const unsigned char *p)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (int i = 0; i < SLOT_LEN - 8; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Slot layout, little-endian: magic (u32), zero (u32), generation (u64),
 * reserved seq (i64), checksum of the 24 bytes before (u64). */
static bool slot_read(struct queue *q, int i, uint64_t *gen, int64_t *seq)
{
	unsigned char p[SLOT_LEN];
	int rc = q->seq_file->pMethods->xRead(q->seq_file, p, SLOT_LEN, SLOT_OFF(i));

	if (rc != SQLITE_OK)
		return false;
	if ((uint32_t)get64(p) != SLOT_MAGIC || get64(p + 24) != slot_sum(p))
		return false;
	*gen = get64(p + 8);
	*seq = (int64_t)get64(p + 16);
	return *seq >= 0;
}

int qseq_open(struct queue *q)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(q->vfs);
	uint64_t gen[2];
	int64_t seq[2];
	bool ok[2];
	int rc, flags;

	q->seq_chunk = SEQ_CHUNK_MIN;
	if (!vfs)
		return -ENOENT;
	/* Zeros after the name: SQLite names end with an empty list of URI
	 * parameters, which a VFS may look at. */
	q->seq_path = xcalloc(1, strlen(q->path) + 8);
	q->seq_file = xcalloc(1, (size_t)vfs->szOsFile);
	if (!q->seq_path || !q->seq_file)
		return -ENOMEM;
	sprintf(q->seq_path, "%s-seq", q->path);
	/* Opened as a journal: a new one gets the database's permissions and
	 * its directory entry is synced with its first sync. */
	rc = vfs->xOpen(vfs, q->seq_path, q->seq_file,
			SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				SQLITE_OPEN_MAIN_JOURNAL,
			&flags);
	if (rc != SQLITE_OK) {
		xfree(q->seq_file);
		q->seq_file = NULL;
		log_error("queue %s: cannot open %s (SQLite code %d)", q->path,
			  q->seq_path, rc);
		return -EIO;
	}
	for (int i = 0; i < 2; i++)
		ok[i] = slot_read(q, i, &gen[i], &seq[i]);
	if (ok[0] || ok[1]) {
		int i = ok[0] && (!ok[1] || gen[0] > gen[1]) ? 0 : 1;

		q->seq_gen = gen[i];
		q->seq_reserved = seq[i];
	}
	return 0;
}

void qseq_close(struct queue *q)
{
	if (q->seq_file) {
		if (q->seq_file->pMethods)
			q->seq_file->pMethods->xClose(q->seq_file);
		xfree(q->seq_file);
		q->seq_file = NULL;
	}
	xfree(q->seq_path);
	q->seq_path = NULL;
}

/* Write `upto` as the reservation and make it durable. */
static int seq_write(struct queue *q, int64_t upto)
{
	unsigned char p[SLOT_LEN] = { 0 };
	uint64_t gen = q->seq_gen + 1;
	int rc;

	put64(p, SLOT_MAGIC);
	put64(p + 8, gen);
	put64(p + 16, (uint64_t)upto);
	put64(p + 24, slot_sum(p));
	rc = q->seq_file->pMethods->xWrite(q->seq_file, p, SLOT_LEN,
					   SLOT_OFF(gen % 2));
	if (rc == SQLITE_OK)
		rc = q->seq_file->pMethods->xSync(q->seq_file, SQLITE_SYNC_NORMAL);
	if (rc != SQLITE_OK) {
		log_error("queue %s: cannot save the seq reservation in %s "
			  "(SQLite code %d)", q->path, q->seq_path, rc);
		return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
	}
	q->seq_gen = gen;
	q->seq_reserved = upto;
	return 0;
}

/* Before the seqs up to q->last_seq become visible. */
int qseq_reserve(struct queue *q)
{
	int64_t now = queue_now_ms(CLOCK_MONOTONIC), upto;
	int err;

	if (q->last_seq <= q->seq_reserved)
		return 0;
	if (!q->seq_file)
		return -EIO;
	if (q->seq_reserved_ms && now - q->seq_reserved_ms < 1000 &&
	    q->seq_chunk < SEQ_CHUNK_MAX)
		q->seq_chunk *= 2;
	upto = q->last_seq + q->seq_chunk;
	err = seq_write(q, upto);
	if (!err)
		q->seq_reserved_ms = now;
	return err;
}

/* At a clean close: the next start goes on right after the last seq given.
 * Safe whenever it lands: the value is above every seq ever used. */
void qseq_release(struct queue *q)
{
	if (q->seq_file && q->seq_reserved > q->last_seq)
		seq_write(q, q->last_seq);
}
