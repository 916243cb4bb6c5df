/* lines.h - line framing for stream sources (serial lines, pipes, sockets):
 * bytes arrive in pieces of any size, records are lines. Drivers reach it
 * through driver.h.
 *
 * Memory stays bounded by max_line plus one read: a line longer than
 * max_line cannot be read again from a stream (tail reads its over-long
 * lines back from the file instead), so its first LINES_KEEP bytes are kept
 * for the dead-letter queue and the rest is dropped as it arrives, counted.
 *
 * Use: read into lines_space()/lines_added() (or lines_feed() a copy);
 * then while lines_next() returns 1, hand the line over and, once it is
 * taken, lines_consume() it; a line not consumed (the queue said -EAGAIN)
 * is returned again by the next lines_next(). Do not read more while a
 * line is waiting to be taken.
 */
#ifndef AGENT_LINES_H
#define AGENT_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LINES_KEEP 4096

struct lines_rec {
	const char *data;       /* without its newline (and '\r' if strip_cr) */
	size_t len;
	int64_t offset;         /* of its first byte in the stream */
	const char *too_long;   /* NULL, or why it is to be dead-lettered */
};

struct lines {
	size_t max_line;
	bool strip_cr;          /* "\r\n" ends a line as "\n" does */
	int64_t offset;         /* stream offset of buf[pos] */
	int64_t overlong;       /* over-long lines seen */
	/* private */
	char *buf;
	size_t len, cap, pos, scan, next_pos;
	bool pending;
	enum { LINES_NORMAL, LINES_LONG, LINES_LONG_DONE } state;
	size_t long_len, long_total;
	int64_t long_offset;
	char reason[128];
	char long_head[LINES_KEEP];
};

void lines_init(struct lines *lf, size_t max_line);
void lines_release(struct lines *lf);
/* Forget every buffered byte (a device reopened); offset is kept. */
void lines_reset(struct lines *lf);
/* Room for at least `want` more bytes: a pointer and *avail, or NULL on
 * out of memory. lines_added() says how many were written there. */
char *lines_space(struct lines *lf, size_t want, size_t *avail);
void lines_added(struct lines *lf, size_t n);
/* Copy bytes in. 0 or -ENOMEM. */
int lines_feed(struct lines *lf, const char *data, size_t len);
/* The next complete line: 1 (and *out, valid until the next call), or 0. */
int lines_next(struct lines *lf, struct lines_rec *out);
/* The line lines_next() returned was taken. */
void lines_consume(struct lines *lf);
/* The stream ended: the bytes after the last newline as a final line.
 * 1 (and *out), 0 when there are none, or -ENOMEM. */
int lines_flush(struct lines *lf, struct lines_rec *out);
/* Bytes buffered and not yet handed over. */
size_t lines_buffered(const struct lines *lf);

#endif
