/* lines.c - line framing for stream sources (see lines.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lines.h"
#include "mem.h"

void lines_init(struct lines *lf, size_t max_line)
{
	memset(lf, 0, sizeof(*lf));
	lf->max_line = max_line ? max_line : 1;
}

void lines_release(struct lines *lf)
{
	xfree(lf->buf);
	lf->buf = NULL;
	lf->len = lf->cap = lf->pos = lf->scan = 0;
	lf->pending = false;
}

void lines_reset(struct lines *lf)
{
	lf->len = lf->pos = lf->scan = 0;
	lf->pending = false;
	lf->state = LINES_NORMAL;
}

size_t lines_buffered(const struct lines *lf)
{
	return lf->len - lf->pos;
}

/* Move unread bytes to the front, so the buffer stays within its bound. */
static void compact(struct lines *lf)
{
	if (!lf->pos || lf->pending)
		return;
	memmove(lf->buf, lf->buf + lf->pos, lf->len - lf->pos);
	lf->len -= lf->pos;
	lf->scan -= lf->pos;
	lf->pos = 0;
}

/* Eat the over-long line in progress up to its newline, keeping its head.
 * Past the newline, the line is ready to be reported (LINES_LONG_DONE). */
static void eat_long(struct lines *lf)
{
	char *start = lf->buf + lf->pos;
	size_t n = lf->len - lf->pos;
	char *nl = memchr(start, '\n', n);
	size_t part = nl ? (size_t)(nl - start) : n;
	size_t room = LINES_KEEP - lf->long_len;
	size_t keep = part < room ? part : room;

	memcpy(lf->long_head + lf->long_len, start, keep);
	lf->long_len += keep;
	lf->long_total += part;
	part += nl ? 1 : 0;
	lf->pos += part;
	lf->scan = lf->pos;
	lf->offset += (int64_t)part;
	if (nl)
		lf->state = LINES_LONG_DONE;
}

static void start_long(struct lines *lf)
{
	lf->state = LINES_LONG;
	lf->long_len = lf->long_total = 0;
	lf->long_offset = lf->offset;
	eat_long(lf);
}

/* New bytes are in: an over-long line in progress is eaten at once, so
 * the buffer never holds more than max_line + one read. */
static void arrived(struct lines *lf)
{
	if (lf->state == LINES_LONG) {
		eat_long(lf);
	} else if (lf->state == LINES_NORMAL && !lf->pending &&
		   lf->len - lf->pos > lf->max_line &&
		   !memchr(lf->buf + lf->pos, '\n', lf->max_line + 1)) {
		start_long(lf);
	}
}

char *lines_space(struct lines *lf, size_t want, size_t *avail)
{
	size_t need;

	compact(lf);
	need = lf->len + (want ? want : 1);
	if (need > lf->cap) {
		size_t cap = lf->cap ? lf->cap : 256;
		char *nb;

		while (cap < need)
			cap *= 2;
		nb = xrealloc(lf->buf, cap);
		if (!nb)
			return NULL;
		lf->buf = nb;
		lf->cap = cap;
	}
	*avail = lf->cap - lf->len;
	return lf->buf + lf->len;
}

void lines_added(struct lines *lf, size_t n)
{
	lf->len += n;
	arrived(lf);
}

int lines_feed(struct lines *lf, const char *data, size_t len)
{
	while (len) {
		size_t avail, n;
		char *p = lines_space(lf, len < 4096 ? len : 4096, &avail);

		if (!p)
			return -ENOMEM;
		n = len < avail ? len : avail;
		memcpy(p, data, n);
		lines_added(lf, n);
		data += n;
		len -= n;
	}
	return 0;
}

int lines_next(struct lines *lf, struct lines_rec *out)
{
	char *start, *nl;
	size_t len;

	if (lf->state == LINES_LONG_DONE) {
		snprintf(lf->reason, sizeof(lf->reason),
			 "line longer than max_record_bytes (%zu bytes; only the first %zu kept)",
			 lf->long_total, lf->long_len);
		out->data = lf->long_head;
		out->len = lf->long_len;
		out->offset = lf->long_offset;
		out->too_long = lf->reason;
		lf->pending = true;
		return 1;
	}
	if (lf->state == LINES_LONG || lf->pos >= lf->len)
		return 0;
	start = lf->buf + lf->pos;
	if (lf->scan < lf->pos)
		lf->scan = lf->pos;
	nl = memchr(lf->buf + lf->scan, '\n', lf->len - lf->scan);
	if (!nl) {
		lf->scan = lf->len;
		return 0;
	}
	len = (size_t)(nl - start);
	out->offset = lf->offset;
	out->data = start;
	out->too_long = NULL;
	if (len > lf->max_line) {
		/* Complete in the buffer, but too long: its head is dead-lettered. */
		snprintf(lf->reason, sizeof(lf->reason),
			 "line longer than max_record_bytes (%zu bytes; only the first %zu kept)", len,
			 len < LINES_KEEP ? len : (size_t)LINES_KEEP);
		out->too_long = lf->reason;
		out->len = len < LINES_KEEP ? len : LINES_KEEP;
	} else {
		out->len = len;
		if (lf->strip_cr && len && start[len - 1] == '\r')
			out->len--;
	}
	lf->next_pos = (size_t)(nl - lf->buf) + 1;
	lf->pending = true;
	return 1;
}

void lines_consume(struct lines *lf)
{
	if (!lf->pending)
		return;
	lf->pending = false;
	if (lf->state == LINES_LONG_DONE) {
		lf->state = LINES_NORMAL;
		lf->overlong++;
		arrived(lf);
		return;
	}
	if (lf->next_pos - lf->pos - 1 > lf->max_line)
		lf->overlong++;
	lf->offset += (int64_t)(lf->next_pos - lf->pos);
	lf->pos = lf->scan = lf->next_pos;
	arrived(lf);
}

int lines_flush(struct lines *lf, struct lines_rec *out)
{
	if (lf->pending || lf->state == LINES_LONG_DONE)
		return lines_next(lf, out);
	if (lf->state == LINES_NORMAL && lf->pos >= lf->len)
		return 0;
	if (lines_feed(lf, "\n", 1))
		return -ENOMEM;
	return lines_next(lf, out);
}
