/* queue_dedupe.c - the dedupe window: hashes of the newest keys appended,
 * checked on every append and rebuilt from the log at open. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue_int.h"

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

void dwin_key_hash(const char *key, uint64_t *h1, uint32_t *h2)
{
	size_t n = strlen(key);

	*h1 = hash64(key, n, 0x9e3779b97f4a7c15ULL);
	*h2 = (uint32_t)(hash64(key, n, 0x2545f4914f6cdd1dULL) >> 32);
}

int dwin_init(struct dwin *w, size_t cap)
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

void dwin_release(struct dwin *w)
{
	xfree(w->h);
	xfree(w->c);
	xfree(w->slot);
	memset(w, 0, sizeof(*w));
}

bool dwin_has(const struct dwin *w, uint64_t h1, uint32_t h2)
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

void dwin_add(struct dwin *w, uint64_t h1, uint32_t h2)
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
void dwin_rollback(struct dwin *w)
{
	for (; w->txn && w->n; w->txn--, w->n--) {
		w->head = (w->head + w->cap - 1) % w->cap;
		dwin_unindex(w, w->head);
	}
	w->txn = 0;
}

/* Fill the dedupe window with the keys of the newest records, so that a
 * restart refuses what the last run had just taken in. */
int dwin_rebuild(struct queue *q)
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
	err = qsql_prep(q, ST_BLK_RECENT, &st);
	if (err)
		return err;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		start = sqlite3_column_int64(st, 0);
		total += sqlite3_column_int64(st, 1);
		if (total >= (int64_t)q->win.cap)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = qsql_fail(q, rc, "dedupe window");
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
			dwin_key_hash(r.key, &h1, &h2);
			dwin_add(&q->win, h1, h2);
		}
	}
	q->win.txn = 0;
	return err;
}
