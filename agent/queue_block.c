/* queue_block.c - records in blocks: the entry codec, zstd compression of
 * a commit group into one row, the cache of decoded blocks, counting and
 * finding records across blocks, and the repair of a damaged block. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue_int.h"

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

void cache_invalidate(struct queue *q, int64_t first)
{
	for (int i = 0; i < N_BCACHE; i++)
		if (first == INT64_MIN || q->cache[i].b.first == first)
			q->cache[i].valid = false;
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
int blk_step(struct queue *q, sqlite3_stmt *st, struct blk *b,
	     bool *found, const char *what)
{
	int rc = sqlite3_step(st), err = 0;

	*found = false;
	if (rc == SQLITE_ROW) {
		row_to_blk(st, b);
		*found = true;
	} else if (rc != SQLITE_DONE) {
		err = qsql_fail(q, rc, what);
	}
	sqlite3_reset(st);
	return err;
}

/* The block holding seq, or else the first one after it. */
int block_find(struct queue *q, int64_t seq, struct blk *b,
	       bool *found)
{
	sqlite3_stmt *st;
	int err;

	err = qsql_prep(q, ST_BLK_AT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, seq);
	err = blk_step(q, st, b, found, "find block");
	if (err || (*found && b->last >= seq))
		return err;
	err = qsql_prep(q, ST_BLK_NEXT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, seq);
	return blk_step(q, st, b, found, "find block");
}

/* Blocks written from one commit group hold consecutive seqs; only the
 * rewrite of a damaged block makes one that does not. */
bool blk_dense(const struct blk *b)
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

void entry_to_qrec(const struct bcache *c, int64_t i, struct qrec *r)
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
int64_t entry_index(const struct bcache *c, int64_t seq)
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
int block_load(struct queue *q, const struct blk *b,
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
	err = qsql_prep(q, ST_BLK_DATA, &st);
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
		err = qsql_fail(q, rc, "read block");
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
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_BLK_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, b->first);
	sqlite3_bind_int64(st, 2, b->last);
	sqlite3_bind_int64(st, 3, b->count);
	sqlite3_bind_int(st, 4, b->kind);
	sqlite3_bind_int64(st, 5, b->first_wall);
	sqlite3_bind_int64(st, 6, (int64_t)len);
	sqlite3_bind_int64(st, 7, (int64_t)n);
	err = qsql_run(q, st, "write block");
	if (!err)
		err = qsql_prep(q, ST_BLKDATA_ADD, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, b->first);
	sqlite3_bind_blob64(st, 2, q->zbuf, n, SQLITE_STATIC);
	err = qsql_run(q, st, "write block");
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
int pb_flush(struct queue *q)
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
int pb_add(struct queue *q, int kind, const struct qrec_in *r,
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
int block_count_after(struct queue *q, int64_t after, int64_t upto,
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
	err = qsql_prep(q, ST_BLK_AT, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after);
	err = blk_step(q, st, &b, &found, "count");
	if (err)
		return err;
	if (found && b.last > after)
		*n += entries_after(q, &b, after);
	err = qsql_prep(q, ST_BLK_SUM, &st);
	if (err)
		return err;
	sqlite3_bind_int64(st, 1, after);
	sqlite3_bind_int64(st, 2, upto);
	err = qsql_run_int(q, st, &sum, &found, "count");
	if (!err)
		*n += sum;
	return err;
}

/* The first record with after < seq <= upto: its seq and wall time, both
 * 0 when there is none. */
int block_first_after(struct queue *q, int64_t after, int64_t upto,
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

/* A block whose bytes do not decode: its records cannot be shipped, so the
 * lake is told with a gap marker naming the block's range. The marker gets
 * a new seq, like any record appended now (the block's own seqs named its
 * records, which an output may have shipped before the damage; a seq names
 * one record only), so outputs meet it after the next commit, whatever
 * their cursor. A read-only opener cannot repair: it reports -EIO. */
int block_corrupt(struct queue *q, const struct blk *b)
{
	char key[64], data[192];
	struct qrec_in r = { .stream = "_agent", .key = key, .data = data,
			     .clock = q->last_clock,
			     .ts_wall_ms = queue_now_ms(CLOCK_REALTIME),
			     .ts_mono_ms = queue_now_ms(CLOCK_BOOTTIME) };
	sqlite3_stmt *st;
	int err;

	log_error("queue %s: the block of seq %" PRId64 "-%" PRId64 " (%"
		  PRId64 " records) is damaged%s", q->path, b->first, b->last,
		  b->count, q->readonly ? "" :
		  ": its records are lost; a gap marker tells the lake");
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
	err = qsql_begin(q);
	if (!err)
		err = qsql_prep(q, ST_BLKDATA_DEL, &st);
	if (!err) {
		sqlite3_bind_int64(st, 1, b->first);
		err = qsql_run(q, st, "drop damaged block");
	}
	if (!err)
		err = qsql_prep(q, ST_BLK_DEL, &st);
	if (!err) {
		sqlite3_bind_int64(st, 1, b->first);
		err = qsql_run(q, st, "drop damaged block");
	}
	if (!err)
		err = queue_append_entry(q, REC_GAP, &r, false, NULL);
	return err;
}
