/* spool_file.c - the spool driver (spool.h) with one file taken: reading it
 * in bounded slices into records (lines of text, or base64 chunks), saving
 * its position with them, noticing that it changed while it was read, and,
 * once its records are committed, removing it or moving it to done_dir, or
 * to failed_dir with a NAME.reason file beside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "spool.h"

/* Bytes read at a time. */
#define READ_SIZE (64 << 10)
/* Records handed over in one loop turn at most, besides read_slice. */
#define TURN_RECORDS 4096
#define MOVE_RETRY_BASE_MS 1000
#define MOVE_RETRY_MAX_MS (5 * 60 * 1000)

/* Outcomes of a slice. */
enum { SLICE_DONE = 0, SLICE_MORE = 1, SLICE_CHANGED = 2 };

/* Read len bytes at off (fewer at the end of the file). Bytes read, or
 * -errno; the bytes read before an error are lost to the caller. */
static ssize_t pread_full(int fd, void *p, size_t len, int64_t off)
{
	return fs_pread_full(spool_sys.pread, fd, p, len, off);
}

/* One read of up to len bytes at off: bytes read (0 at the end), or -errno. */
static ssize_t pread_some(int fd, void *p, size_t len, int64_t off)
{
	ssize_t n;

	do {
		n = spool_sys.pread(fd, p, len, (off_t)off);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static void set_key_prefix(struct sfile *f)
{
	int n = snprintf(f->key, sizeof(f->key), "spool:%" PRIu64 ":%" PRIu64 ":%" PRId64 ":%" PRId64 ":",
			 f->dev, f->ino, f->size, f->mtime_ns);

	f->key_len = n > 0 && (size_t)n < sizeof(f->key) ? (size_t)n : 0;
}

/* The key of the line or chunk at off: the same for the same file, read
 * again, and different for a changed one. */
static const char *key_at(struct sfile *f, int64_t off)
{
	snprintf(f->key + f->key_len, sizeof(f->key) - f->key_len, "%" PRId64, off);
	return f->key;
}

static void source_of(const struct sfile *f, char *out, size_t cap)
{
	snprintf(out, cap, "%" PRIu64 ":%" PRIu64, f->dev, f->ino);
}

void spool_file_close(struct sfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	xfree(f->buf);
	f->buf = NULL;
	f->cap = f->len = f->pos = 0;
	f->in_long = false;
}

static void hex_put(char *out, const unsigned char *p, size_t n)
{
	if (!n) {
		strcpy(out, "-");
		return;
	}
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

static bool hex_get(const char *hex, unsigned char *p, size_t *n)
{
	size_t len = strlen(hex);

	*n = 0;
	if (!strcmp(hex, "-"))
		return true;
	if (len % 2 || len > 2 * FP_LEN)
		return false;
	for (size_t i = 0; i < len / 2; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return false;
		p[i] = (unsigned char)b;
	}
	*n = len / 2;
	return true;
}

/* The FP_LEN bytes before f->offset (fewer near the head), from the open file. */
static void keep_mark(struct sfile *f)
{
	int64_t from = f->offset > FP_LEN ? f->offset - FP_LEN : 0;
	ssize_t n = f->fd >= 0 ? pread_full(f->fd, f->mark, (size_t)(f->offset - from), from) : -EBADF;

	f->mark_len = n > 0 ? (size_t)n : 0;
}

/* ---- positions ------------------------------------------------------- */

/* "1 <size> <mtime_ns> <btime_ns> <offset> <line_no> <index> <done> <head hex> <mark hex> <name>":
 * text, readable in the queue and the same on every architecture. */
static int save_position(struct spool *s, struct sfile *f)
{
	char text[96 + 4 * FP_LEN + 300], head[2 * FP_LEN + 2], mark[2 * FP_LEN + 2], source[48];
	int n, rc;

	keep_mark(f);
	hex_put(head, f->head, f->head_len);
	hex_put(mark, f->mark, f->mark_len);
	n = snprintf(text, sizeof(text), "1 %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
		     " %d %s %s %s", f->size, f->mtime_ns, f->btime_ns, f->offset, f->line_no, f->index,
		     f->done ? 1 : 0, head, mark, f->name);
	if (n < 0 || (size_t)n >= sizeof(text))
		n = (int)sizeof(text) - 1;
	source_of(f, source, sizeof(source));
	rc = input_save_position(s->in, source, text, (size_t)n);
	if (rc && rc != -EAGAIN)
		spool_note_error(s, "cannot save the position of %s: %s", f->name, strerror(-rc));
	if (!rc) {
		f->dirty = false;
		f->has_pos = true;
	}
	return rc;
}

bool spool_load_position(struct spool *s, const struct sfile *f, struct saved *p)
{
	char source[48], text[512], head[2 * FP_LEN + 2], mark[2 * FP_LEN + 2];
	void *data = NULL;
	size_t len = 0;
	int rc, used = 0;

	source_of(f, source, sizeof(source));
	rc = input_load_position(s->in, source, &data, &len);
	if (rc) {
		if (rc != -ENOENT)
			spool_note_error(s, "cannot load the position of %s: %s", f->name, strerror(-rc));
		return false;
	}
	if (len >= sizeof(text))
		len = sizeof(text) - 1;
	memcpy(text, data, len);
	text[len] = '\0';
	xfree(data);
	memset(p, 0, sizeof(*p));
	if (sscanf(text, "1 %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64
		   " %d %129s %129s %n", &p->size, &p->mtime_ns, &p->btime_ns, &p->offset, &p->line_no,
		   &p->index, &p->done, head, mark, &used) != 9 || p->offset < 0 || p->offset > p->size || !hex_get(head, p->head, &p->head_len) ||
	    !hex_get(mark, p->mark, &p->mark_len)) {
		log_warn("input %s: unreadable saved position of %s; taking it as a new file",
			 input_name(s->in), f->name);
		return false;
	}
	snprintf(p->name, sizeof(p->name), "%s", text + used);
	return true;
}

void spool_forget_position(struct spool *s, const struct sfile *f)
{
	char source[48];

	source_of(f, source, sizeof(source));
	input_forget_position(s->in, source);
}

void spool_file_fail(struct spool *s, struct sfile *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
	spool_file_close(f);
	f->failed = true;
	f->state = SF_COMMITTING;
	f->last_ticket = input_ticket(s->in);
	spool_note_error(s, "%s: %s; it goes to %s", f->name, f->why, s->failed_dir);
}

/* ---- reading --------------------------------------------------------- */

/* Open the file taken, and check it is what was seen (or, after a change
 * while it was read, that what was sent of it is unchanged). 0, or the
 * file failed or went away. */
int spool_file_open(struct spool *s, struct sfile *f)
{
	char path[4096];
	struct stat st;
	int fd;

	if (spool_path_of(path, sizeof(path), s->conf->dir, f->name)) {
		spool_file_fail(s, f, "path too long");
		return -ENAMETOOLONG;
	}
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		if (err == ENOENT) {
			f->state = SF_GONE;
			return -ENOENT;
		}
		spool_file_fail(s, f, "cannot open: %s", strerror(err));
		return -err;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_ino != f->ino ||
	    (uint64_t)st.st_dev != f->dev) {
		/* Replaced between the look and the open. */
		close(fd);
		f->state = SF_GONE;
		s->want_scan = true;
		return -ESTALE;
	}
	f->fd = fd;
	if (f->verify) {
		unsigned char now_head[FP_LEN], now_mark[FP_LEN];
		int64_t from = f->offset > FP_LEN ? f->offset - FP_LEN : 0;
		size_t hl = f->head_len < (size_t)f->offset ? f->head_len : (size_t)f->offset;
		ssize_t a = pread_full(fd, now_head, hl, 0);
		ssize_t b = pread_full(fd, now_mark, (size_t)(f->offset - from), from);

		if ((int64_t)st.st_size < f->offset || a != (ssize_t)hl || memcmp(now_head, f->head, hl) ||
		    b != (ssize_t)f->mark_len || memcmp(now_mark, f->mark, f->mark_len)) {
			if (!f->was_done) {
				spool_file_fail(s, f, "changed while being read: what was sent of it (bytes 0 to %" PRId64
					  ") is not in it any more", f->offset);
				return -ESTALE;
			}
			/* Written anew after all of it was sent and committed:
			 * a new file, read whole, with new keys. */
			log_info("input %s: %s was written anew after it was read; reading it as a new file",
				 input_name(s->in), f->name);
			f->offset = f->line_no = f->index = 0;
			f->head_len = 0;
		} else {
			log_info("input %s: %s grew after it was taken and is complete again; going on at offset %" PRId64,
				 input_name(s->in), f->name, f->offset);
		}
		f->verify = f->was_done = false;
	}
	/* The identity it is read as (keys, position). */
	f->size = (int64_t)st.st_size;
	f->mtime_ns = spool_ns_of(&st.st_mtim);
	f->seen_size = f->size;
	f->seen_mtime_ns = f->mtime_ns;
	set_key_prefix(f);
	if (!f->head_len || f->offset == 0) {
		ssize_t n = pread_full(fd, f->head, FP_LEN, 0);

		f->head_len = n > 0 ? (size_t)n : 0;
	}
	f->buf_off = f->offset;
	f->len = f->pos = 0;
	f->in_long = false;
	f->have_header = false;
	f->records = 0;
	f->state = SF_READING;
	f->dirty = true;
	return 0;
}

/* Read the header of a csv file whose reading starts past it. 0, or the
 * file failed. */
static int load_header(struct spool *s, struct sfile *f)
{
	size_t cap = s->max_line + 1;
	char *p = xmalloc(cap);
	ssize_t n;
	char *nl;
	int rc;

	if (!p)
		return -ENOMEM;
	n = pread_full(f->fd, p, cap, 0);
	nl = n > 0 ? memchr(p, '\n', (size_t)n) : NULL;
	if (n < 0) {
		spool_file_fail(s, f, "read error at offset 0: %s", strerror((int)-n));
		rc = (int)n;
	} else if (!nl) {
		spool_file_fail(s, f, "its header line is longer than max_record_bytes or missing");
		rc = -EMSGSIZE;
	} else {
		size_t len = (size_t)(nl - p);

		if (len && p[len - 1] == '\r')
			len--;
		rc = input_set_header(s->in, p, len);
		if (!rc)
			f->have_header = true;
	}
	xfree(p);
	return rc;
}

/* Note an emit's outcome: 0 taken; -EAGAIN wait for resume(); else retried. */
static int emitted(struct spool *s, struct sfile *f, int rc)
{
	if (rc == -EAGAIN) {
		s->blocked = true;
	} else if (rc) {
		spool_note_error(s, "cannot queue a record of %s: %s", f->name, strerror(-rc));
	} else {
		f->records++;
		f->dirty = true;
	}
	return rc;
}

/* One line of a text file, at off, number f->line_no + 1. */
static int hand_line(struct spool *s, struct sfile *f, const char *data, size_t len, int64_t off,
		     const char *too_long)
{
	char why[200];
	struct rec *r;
	int rc;

	if (len && data[len - 1] == '\r' && !too_long)
		len--;
	if (s->wants_header && f->line_no == 0 && !too_long) {
		rc = input_set_header(s->in, data, len);
		if (rc)
			return rc;
		f->have_header = true;
		return 0;
	}
	if (too_long && s->wants_header && f->line_no == 0) {
		spool_file_fail(s, f, "its header line is longer than max_record_bytes");
		return -ECANCELED;
	}
	if (too_long)
		return emitted(s, f, input_reject(s->in, data, len, key_at(f, off), too_long));
	r = input_rec_begin(s->in);
	rec_str(r, "file", f->name);
	rec_int(r, "line", f->line_no + 1, NULL);
	rc = input_rec_parsed(s->in, r, "data", data, len, why, sizeof(why));
	if (rc == -EINVAL)
		return emitted(s, f, input_reject(s->in, data, len, key_at(f, off), why));
	rc = input_emit_rec(s->in, r, key_at(f, off), NULL);
	if (rc == -EMSGSIZE) {
		snprintf(why, sizeof(why), "record larger than max_record_bytes (line of %zu bytes)", len);
		return emitted(s, f, input_reject(s->in, data, len, key_at(f, off), why));
	}
	return emitted(s, f, rc);
}

/* The over-long line at f->offset, whose end is known, to the DLQ. */
static int hand_long(struct spool *s, struct sfile *f)
{
	char why[160];
	int rc;

	snprintf(why, sizeof(why), "line longer than max_record_bytes (%" PRId64 " bytes; only the first %zu kept)",
		 f->long_total, f->long_len);
	rc = hand_line(s, f, s->long_head, f->long_len, f->offset, why);
	if (rc)
		return rc;
	f->in_long = false;
	f->line_no++;
	f->offset = f->long_end + (f->long_nl ? 1 : 0);
	return 0;
}

/* Hand over the complete lines buffered. 0, or an error of hand_line(). */
static int text_lines(struct spool *s, struct sfile *f, int *records)
{
	while (*records > 0) {
		char *start, *nl;
		size_t len;
		int rc;

		if (f->in_long && f->long_end >= 0) {
			rc = hand_long(s, f);
			if (rc)
				return rc;
			(*records)--;
			continue;
		}
		if (f->pos >= f->len)
			return 0;
		start = f->buf + f->pos;
		nl = memchr(start, '\n', f->len - f->pos);
		if (f->in_long) {
			/* Look for its end, keeping its head. */
			size_t part = nl ? (size_t)(nl - start) : f->len - f->pos;
			size_t room = LONG_KEEP - f->long_len;
			size_t keep = part < room ? part : room;

			memcpy(s->long_head + f->long_len, start, keep);
			f->long_len += keep;
			f->long_total += (int64_t)part;
			if (!nl) {
				f->pos = f->len;
				return 0;
			}
			f->long_end = f->buf_off + (int64_t)(nl - f->buf);
			f->long_nl = true;
			f->pos = (size_t)(nl - f->buf) + 1;
			continue;
		}
		if (!nl)
			return 0;
		len = (size_t)(nl - start);
		if (len > s->max_line) {
			char why[160];

			snprintf(why, sizeof(why), "line longer than max_record_bytes (%zu bytes; only the first %d kept)",
				 len, LONG_KEEP);
			rc = hand_line(s, f, start, len < LONG_KEEP ? len : LONG_KEEP, f->offset, why);
		} else {
			rc = hand_line(s, f, start, len, f->offset, NULL);
		}
		if (rc)
			return rc;
		f->line_no++;
		f->pos = (size_t)(nl - f->buf) + 1;
		f->offset = f->buf_off + (int64_t)f->pos;
		(*records)--;
	}
	return 0;
}

/* Read and hand over the next part of a text file: SLICE_*, or -errno of
 * the queue (retried) or of the file (it failed). */
static int text_slice(struct spool *s, struct sfile *f, int64_t budget, int records)
{
	int rc;

	if (s->wants_header && f->line_no > 0 && !f->have_header) {
		rc = load_header(s, f);
		if (rc)
			return rc;
	}
	for (;;) {
		int64_t at;
		size_t want;
		ssize_t n;

		rc = text_lines(s, f, &records);
		if (rc)
			return rc;
		if (records <= 0)
			return SLICE_MORE;
		at = f->buf_off + (int64_t)f->len;
		if (at >= f->size)
			break;
		if (budget <= 0)
			return SLICE_MORE;
		if (f->pos) {
			memmove(f->buf, f->buf + f->pos, f->len - f->pos);
			f->buf_off += (int64_t)f->pos;
			f->len -= f->pos;
			f->pos = 0;
		}
		if (!f->in_long && f->len > s->max_line) {
			/* No newline within max_record_bytes: keep the head only. */
			f->in_long = true;
			f->long_end = -1;
			f->long_len = f->len < LONG_KEEP ? f->len : LONG_KEEP;
			memcpy(s->long_head, f->buf, f->long_len);
			f->long_total = (int64_t)f->len;
			f->buf_off += (int64_t)f->len;
			f->len = 0;
		}
		if (f->cap - f->len < READ_SIZE) {
			size_t cap = f->len + READ_SIZE;
			char *p = xrealloc(f->buf, cap);

			if (!p)
				return -ENOMEM;
			f->buf = p;
			f->cap = cap;
		}
		want = budget < READ_SIZE ? (size_t)budget : READ_SIZE;
		if ((int64_t)want > f->size - at)
			want = (size_t)(f->size - at);
		/* What a read gives before an I/O error is handed over. */
		n = pread_some(f->fd, f->buf + f->len, want, at);
		if (n < 0) {
			spool_file_fail(s, f, "read error at offset %" PRId64 ": %s", at, strerror((int)-n));
			return (int)n;
		}
		if (n == 0)
			return SLICE_CHANGED;   /* shorter than when taken */
		f->len += (size_t)n;
		budget -= n;
	}
	return SLICE_DONE;
}

/* The rest of a text file at its end: its last line without a newline. */
static int text_finish(struct spool *s, struct sfile *f)
{
	int rc = 0;

	if (f->in_long) {
		if (f->long_end < 0) {
			f->long_end = f->buf_off + (int64_t)f->len;
			f->long_nl = false;
		}
		rc = hand_long(s, f);
	} else if (f->len > f->pos) {
		size_t len = f->len - f->pos;

		if (len > s->max_line) {
			char why[160];

			snprintf(why, sizeof(why), "line longer than max_record_bytes (%zu bytes; only the first %d kept)",
				 len, LONG_KEEP);
			rc = hand_line(s, f, f->buf + f->pos, len < LONG_KEEP ? len : LONG_KEEP, f->offset, why);
		} else {
			rc = hand_line(s, f, f->buf + f->pos, len, f->offset, NULL);
		}
		if (!rc) {
			f->line_no++;
			f->offset = f->size;
		}
	}
	if (!rc)
		f->pos = f->len;
	return rc;
}

/* The next chunks of a binary file. */
static int binary_slice(struct spool *s, struct sfile *f, int64_t budget, int records)
{
	int64_t chunk = s->conf->chunk_size;
	int64_t count = (f->size + chunk - 1) / chunk;

	if (!f->buf) {
		f->buf = xmalloc((size_t)chunk);
		if (!f->buf)
			return -ENOMEM;
		f->cap = (size_t)chunk;
	}
	while (f->offset < f->size) {
		size_t want = (size_t)(f->size - f->offset < chunk ? f->size - f->offset : chunk);
		ssize_t n;
		struct rec *r;
		int rc;

		if (budget <= 0 || records <= 0)
			return SLICE_MORE;
		n = pread_full(f->fd, f->buf, want, f->offset);
		if (n < 0) {
			spool_file_fail(s, f, "read error at offset %" PRId64 ": %s", f->offset, strerror((int)-n));
			return (int)n;
		}
		if ((size_t)n < want)
			return SLICE_CHANGED;
		r = input_rec_begin(s->in);
		rec_str(r, "file", f->name);
		rec_int(r, "index", f->index, NULL);
		rec_int(r, "count", count, NULL);
		rec_int(r, "offset", f->offset, NULL);
		rec_int(r, "size", f->size, NULL);
		rec_base64(r, "data", f->buf, (size_t)n);
		rc = emitted(s, f, input_emit_rec(s->in, r, key_at(f, f->offset), NULL));
		if (rc)
			return rc;
		f->offset += n;
		f->index++;
		budget -= n;
		records--;
	}
	return SLICE_DONE;
}

/* Has the file changed since it was taken? */
static bool changed_under(const struct sfile *f)
{
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return true;
	return (int64_t)st.st_size != f->size || spool_ns_of(&st.st_mtim) != f->mtime_ns;
}

/* Changed while read: what was sent stays sent (committed like any); the
 * rest waits until the file is complete again, when it is read on from
 * where it stopped if what was sent is still in it, else it fails. */
static void file_changed(struct spool *s, struct sfile *f)
{
	struct stat st;

	if (fstat(f->fd, &st) == 0) {
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = spool_ns_of(&st.st_mtim);
	}
	/* Start again at the last line handed over. */
	f->buf_off = f->offset;
	f->len = f->pos = 0;
	f->in_long = false;
	save_position(s, f);
	spool_file_close(f);
	f->verify = true;
	f->state = SF_WAITING;
	f->changed_at = loop_now_ms();
	log_warn("input %s: %s changed while being read (%" PRId64 " bytes when taken, %" PRId64
		 " now); the rest is read once it is complete again", input_name(s->in), f->name, f->size,
		 f->seen_size);
}

/* Read one slice of the current file. true when there is more to do now. */
bool spool_read_slice(struct spool *s, struct sfile *f)
{
	int rc;

	if (s->conf->format == FMT_BINARY)
		rc = binary_slice(s, f, s->conf->read_slice, TURN_RECORDS);
	else
		rc = text_slice(s, f, s->conf->read_slice, TURN_RECORDS);
	if (f->state != SF_READING)
		return true;                    /* it failed */
	if (rc == SLICE_CHANGED || ((rc == SLICE_DONE || rc == SLICE_MORE) && changed_under(f))) {
		file_changed(s, f);
		return true;
	}
	if (rc == SLICE_DONE && s->conf->format == FMT_TEXT) {
		rc = text_finish(s, f);
		if (f->state != SF_READING)
			return true;
	}
	if (rc == SLICE_DONE) {
		f->done = true;
		f->offset = f->size;
		save_position(s, f);
		spool_file_close(f);
		f->state = SF_COMMITTING;
		f->last_ticket = input_ticket(s->in);
		log_info("input %s: read %s (%" PRId64 " bytes, %" PRId64 " records)", input_name(s->in),
			 f->name, f->size, f->records);
		return true;
	}
	if (f->dirty)
		save_position(s, f);
	if (rc == SLICE_MORE)
		return true;
	return false;                           /* a queue error or -EAGAIN: wait */
}

/* ---- after the commit: remove, move, or say why not ------------------- */

/* renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it, so a
 * file of the same name in the target is never overwritten. */
static int move_noreplace(const char *from, const char *to)
{
#ifdef SYS_renameat2
	if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1U /* RENAME_NOREPLACE */) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
#endif
	if (access(to, F_OK) == 0)
		return -EEXIST;
	return rename(from, to) < 0 ? -errno : 0;
}

/* Move `from` (this file's name in dir) to `to`, and check that what moved
 * is this file: if a writer renamed another file onto the name in the
 * meantime, that one is put back. 0 moved, 1 the name held another file
 * (this one is gone), or -errno. */
static int move_verified(struct spool *s, const struct sfile *f, const char *from, const char *to)
{
	struct stat st;
	int rc = move_noreplace(from, to);

	if (rc)
		return rc;
	if (lstat(to, &st) < 0 || ((uint64_t)st.st_ino == f->ino && (uint64_t)st.st_dev == f->dev))
		return 0;
	s->want_scan = true;
	rc = move_noreplace(to, from);
	if (rc)
		spool_note_error(s, "%s: a new file under this name was moved to %s by accident and cannot be put back: %s",
			   f->name, to, strerror(-rc));
	return 1;
}

static void write_reason(struct spool *s, const struct sfile *f, const char *moved_to)
{
	char path[4200], when[40], text[1024];
	int64_t wall = loop_wall_ms();
	time_t secs = (time_t)(wall / 1000);
	struct tm tm;
	int fd, n;

	if (snprintf(path, sizeof(path), "%s.reason", moved_to) >= (int)sizeof(path))
		return;
	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(text, sizeof(text),
		     "%s\nfile: %s/%s\ninput: %s\nwhen: %s\nsize: %" PRId64 "\ninode: %" PRIu64 ":%" PRIu64
		     "\nsent: %" PRId64 " records (bytes 0 to %" PRId64 ")\n",
		     f->why, s->conf->dir, f->name, input_name(s->in), when, f->seen_size, f->dev, f->ino,
		     f->records, f->offset);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(text))
		n = (int)sizeof(text) - 1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)n) != n)
		log_warn("input %s: cannot write %s: %s", input_name(s->in), path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Remove or move a committed file. 0 when it is gone from dir, -errno to retry. */
static int file_finish(struct spool *s, struct sfile *f)
{
	char path[4096], to[4200];
	const char *target = f->failed ? s->failed_dir : s->conf->done_dir;
	struct stat st;
	int rc = 0;

	if (spool_path_of(path, sizeof(path), s->conf->dir, f->name))
		return -ENAMETOOLONG;
	if (lstat(path, &st) < 0) {
		if (errno != ENOENT)
			return -errno;
		log_info("input %s: %s was removed by another program after it was read", input_name(s->in),
			 f->name);
		return 0;
	}
	if ((uint64_t)st.st_ino != f->ino || (uint64_t)st.st_dev != f->dev) {
		s->want_scan = true;    /* the name is another file now: leave that one */
		return 0;
	}
	if (!f->failed && S_ISREG(st.st_mode) &&
	    ((int64_t)st.st_size != f->size || spool_ns_of(&st.st_mtim) != f->mtime_ns)) {
		/* Written to after it was read (and its records committed):
		 * not removed. When it is complete again, it is read on if it
		 * was appended to, or read whole as a new file if rewritten. */
		log_warn("input %s: %s was written to after it was read; it is read again once complete",
			 input_name(s->in), f->name);
		f->done = false;
		f->verify = f->was_done = true;
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = spool_ns_of(&st.st_mtim);
		f->changed_at = loop_now_ms();
		f->state = SF_WAITING;
		return 1;
	}
	if (!target) {
		/* Renamed aside first, then removed once it is known to be
		 * this file: a writer may put a new file under the name at
		 * any moment, and that one must not go. */
		if (snprintf(to, sizeof(to), "%s/" REMOVE_PREFIX "%" PRIu64, s->conf->dir, f->ino) >= (int)sizeof(to))
			return -ENAMETOOLONG;
		unlink(to);
		rc = move_verified(s, f, path, to);
		if (rc == 0 && unlink(to) < 0 && errno != ENOENT)
			rc = -errno;
		return rc > 0 ? 0 : rc;
	}
	for (int n = 0; n < 1000; n++) {
		int w = n ? snprintf(to, sizeof(to), "%s/%s.%d", target, f->name, n)
			  : snprintf(to, sizeof(to), "%s/%s", target, f->name);

		if (w < 0 || (size_t)w >= sizeof(to))
			return -ENAMETOOLONG;
		/* A failed file's reason goes beside it, written first so it is
		 * there as soon as the file is. */
		if (f->failed) {
			char rpath[4300];

			snprintf(rpath, sizeof(rpath), "%s.reason", to);
			if (access(to, F_OK) == 0 || access(rpath, F_OK) == 0)
				continue;
			write_reason(s, f, to);
		}
		rc = move_verified(s, f, path, to);
		if (rc != -EEXIST)
			break;
	}
	if (rc > 0) {
		/* Not this file after all: it is gone already. */
		if (f->failed) {
			char rpath[4300];

			snprintf(rpath, sizeof(rpath), "%s.reason", to);
			unlink(rpath);
		}
		return 0;
	}
	if (rc && f->failed) {
		char rpath[4300];

		snprintf(rpath, sizeof(rpath), "%s.reason", to);
		unlink(rpath);
	}
	return rc;
}

void spool_finish_files(struct spool *s, int64_t now)
{
	for (size_t i = 0; i < s->n_files; i++) {
		struct sfile *f = s->files[i];
		int rc;

		if (f->state == SF_COMMITTING && f->last_ticket <= s->committed_upto)
			f->state = SF_MOVING;
		if (f->state != SF_MOVING || f->retry_at > now)
			continue;
		rc = file_finish(s, f);
		if (rc == 1)
			continue;
		if (rc) {
			const char *what = f->failed ? "moved to failed_dir" :
					   s->conf->done_dir ? "moved to done_dir" : "removed";

			f->attempts++;
			f->retry_at = now + backoff_delay(MOVE_RETRY_BASE_MS, MOVE_RETRY_MAX_MS, f->attempts);
			spool_note_error(s, "%s: records committed, but it cannot be %s: %s; retried in %" PRId64 " s",
				   f->name, what, strerror(-rc), (f->retry_at - now + 999) / 1000);
			continue;
		}
		if (f->failed) {
			s->n_failed++;
			spool_note_error(s, "%s: %s; moved to %s, the reason beside it", f->name, f->why, s->failed_dir);
		} else {
			s->n_done++;
			log_info("input %s: %s committed and %s", input_name(s->in), f->name,
				 s->conf->done_dir ? "moved to done_dir" : "removed");
			if (f->attempts && !strncmp(s->err, f->name, strlen(f->name))) {
				/* The problem shown was this file's. */
				s->err[0] = '\0';
				input_clear_error(s->in);
			}
		}
		spool_forget_position(s, f);
		f->has_pos = false;
		f->state = SF_GONE;
	}
}

