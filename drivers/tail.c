/* tail.c - the tail input driver: follows files matching glob patterns and
 * hands over each complete line, surviving rotation, truncation and restarts.
 *
 * Files are read as data arrives: inotify watches on their directories wake
 * the driver, which then reads with fstat/pread. Where inotify cannot be had
 * (not built in, or the watch limit is reached) a timer polls instead. Each
 * file is known by its device and inode; its position (offset after the last
 * handed-over line, a generation and a fingerprint of its first bytes) is
 * saved through the core together with the records, so a restart resumes
 * exactly where the queue stopped.
 *
 * A file truncated before it was read to its end (logrotate's copytruncate)
 * still has the unread part in its rotated copy: the driver finds that copy
 * in the same directory by the fingerprint and reads it from the saved offset
 * to its end, under the old file's keys, before going on with the live file.
 * What no copy holds is reported to the lake as a gap marker.
 *
 * This file is the driver itself; tail_watch.c holds the inotify watches and
 * tail_copy.c the search for and reading of rotated copies (tail.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tail.h"

/* A rejected over-long line is copied to the DLQ up to this size; beyond it
 * the DLQ keeps only its beginning and the reason says so. The line may be
 * any length (a runaway writer can produce gigabytes without a newline), so
 * some cap is needed; this one is far above any sane max_record_bytes. */
#define REJECT_KEEP_MAX (16 << 20)
/* How far back from the end "start_at = end" looks for the last newline. */
#define END_LOOKBACK (64 << 10)
#define DEFAULT_MAX_LINE (1 << 20)

static const char *const start_at_names[] = { "head", "end", NULL };

#define TK(f) offsetof(struct tail_conf, f)
static const struct cfg_key tail_keys[] = {
	{ .name = "path", .type = CFG_STR, .offset = TK(path), .required = true,
	  .example = "/var/log/sensors/*.log",
	  .help = "Absolute path or glob(7) pattern of the files to follow; several patterns may be separated "
		  "by commas. Match only the live file names (e.g. /var/log/app/*.log, not *.log*): a rotated "
		  "copy matched again is read again as a new file." },
	{ .name = "start_at", .type = CFG_ENUM, .def = "head", .offset = TK(start_at), .enums = start_at_names,
	  .help = "Where to begin in a file seen for the first time when the agent starts: head reads what it "
		  "already holds, end only what is written from now on. Files that appear later and files "
		  "with a saved position are always read completely." },
	{ .name = "poll_interval", .type = CFG_DURATION, .def = "250ms", .offset = TK(poll_interval_ms),
	  .min = 10, .max = 3600000,
	  .help = "How often the patterns are matched again and the files checked, besides the changes "
		  "inotify reports at once (new data is read as it arrives). Where inotify cannot be had "
		  "(its watch limit reached), this is how long new data may wait." },
	{ .name = "rotate_wait", .type = CFG_DURATION, .def = "5s", .offset = TK(rotate_wait_ms),
	  .min = 0, .max = 86400000,
	  .help = "How long a file that was renamed away or deleted is still followed after it stopped "
		  "growing, so the writer's last lines are not lost; its unterminated last line is then read "
		  "too." },
	{ .name = "read_chunk", .type = CFG_SIZE, .def = "64KiB", .offset = TK(read_chunk),
	  .min = 4096, .max = 16 << 20,
	  .help = "Bytes read from a file at a time. The read buffer of a file never exceeds "
		  "max_record_bytes plus this." },
	{ .name = "max_lines_per_tick", .type = CFG_INT, .def = "10000", .offset = TK(max_lines_per_tick),
	  .min = 1, .max = 10000000,
	  .help = "Most lines handed over in one turn of the event loop, so a fast file cannot starve other "
		  "inputs and outputs." },
	{ .name = "max_bytes_per_tick", .type = CFG_SIZE, .def = "1MiB", .offset = TK(max_bytes_per_tick),
	  .min = 4096, .max = 1 << 30,
	  .help = "Most bytes read in one turn of the event loop, for the same reason." },
	{ .name = NULL },
};

/* Remember the first problem of this tick; reported once at its end. */
void tail_note_error(struct tail *t, const char *fmt, ...)
{
	va_list ap;

	if (t->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

static void report_errors(struct tail *t)
{
	/* Ticks between two scans do not retry what the scan found. */
	if (!t->err[0])
		memcpy(t->err, t->scan_err, sizeof(t->err));
	if (t->err[0]) {
		if (strcmp(t->err, t->reported)) {
			input_error(t->in, "%s", t->err);
			snprintf(t->reported, sizeof(t->reported), "%s", t->err);
		}
		t->error_sticky = false;
	} else if (t->reported[0] && !t->error_sticky) {
		input_clear_error(t->in);
		t->reported[0] = '\0';
	}
	t->err[0] = '\0';
}

static void update_state(struct tail *t)
{
	size_t gone = 0;
	char lost[64] = "", poll[96] = "";

	for (size_t i = 0; i < t->n_files; i++)
		gone += t->files[i]->gone;
	if (t->state_shown && gone == t->shown_gone && t->n_files == t->shown_files &&
	    t->blocked == t->shown_blocked && t->gaps == t->shown_gaps)
		return;
	if (t->gaps)
		snprintf(lost, sizeof(lost), ", lost: %zu gap%s, %" PRId64 " bytes%s", t->gaps,
			 t->gaps == 1 ? "" : "s", t->lost_bytes, t->unknown_gaps ? " and more" : "");
	if (t->polling)
		snprintf(poll, sizeof(poll), ", polling (%s)", t->poll_why);
	input_set_state(t->in, "tailing %zu file%s, %zu rotated%s%s%s", t->n_files,
			t->n_files == 1 ? "" : "s", gone, lost, poll,
			t->blocked ? ", waiting for queue space" : "");
	t->shown_gaps = t->gaps;
	t->shown_files = t->n_files;
	t->shown_gone = gone;
	t->shown_blocked = t->blocked;
	t->state_shown = true;
}

/* Decimal digits of v at the end of a 24-byte scratch; returns the start. */
static char *u64_digits(uint64_t v, char *end)
{
	*--end = '\0';
	do {
		*--end = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return end;
}

void tail_file_set_key_prefix(struct tail_file *f)
{
	int n = snprintf(f->key, sizeof(f->key), "tail:%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":",
			 f->dev, f->ino, f->gen);

	f->key_len = (size_t)n;
}

/* The dedupe key of the line starting at off. */
static const char *file_key(struct tail_file *f, int64_t off)
{
	char digits[24];
	const char *d = u64_digits((uint64_t)off, digits + sizeof(digits));

	memcpy(f->key + f->key_len, d, strlen(d) + 1);
	return f->key;
}

ssize_t tail_pread_full(int fd, void *p, size_t len, int64_t off)
{
	return fs_pread_full(pread, fd, p, len, off);
}

/* Fingerprint of the file as it is now. */
static int read_fp(const struct tail_file *f, unsigned char *fp, size_t *len)
{
	ssize_t n = tail_pread_full(f->fd, fp, FP_LEN, 0);

	if (n < 0)
		return (int)n;
	*len = (size_t)n;
	return 0;
}

/* Does the file still begin with the fingerprint (saved[0..len))? */
static bool fp_matches(const struct tail_file *f, const unsigned char *saved, size_t len)
{
	unsigned char now[FP_LEN];
	size_t n = 0;

	if (read_fp(f, now, &n))
		return false;
	return n >= len && !memcmp(now, saved, len);
}

/* The first generation of a file: its birth time in ms where the file
 * system records one, else the time it was first seen. A file that reuses
 * the inode of a forgotten one then never repeats the old file's keys,
 * while the same file keeps its keys even if its position was lost. */
static uint64_t first_gen(const struct tail_file *f)
{
	int64_t ns;

	/* ns / 1000000: the birth time's tv_sec * 1000 + tv_nsec / 1000000,
	 * as generations saved by earlier versions were computed (fs.h). */
	if (!fs_birth_ns(f->fd, "", AT_EMPTY_PATH, &ns))
		return (uint64_t)ns / 1000000;
	return (uint64_t)loop_wall_ms();
}

/* Offset just after the last complete line, so "start_at = end" still reads
 * the line being written whole. */
static int64_t end_offset(const struct tail_file *f, int64_t size)
{
	int64_t from = size > END_LOOKBACK ? size - END_LOOKBACK : 0;
	size_t want = (size_t)(size - from);
	char *p;
	ssize_t n;
	int64_t off = size;

	if (!want)
		return 0;
	p = xmalloc(want);
	if (!p)
		return size;
	n = tail_pread_full(f->fd, p, want, from);
	if (n > 0) {
		char *nl = memrchr(p, '\n', (size_t)n);

		if (nl)
			off = from + (nl - p) + 1;
		else if (from == 0)
			off = 0;
	}
	xfree(p);
	return off;
}

void tail_file_reset_buffer(struct tail_file *f, int64_t off)
{
	f->buf_off = off;
	f->len = f->pos = f->scan = 0;
	f->in_long = false;
	f->long_end = -1;
}

static void file_drop_header(struct tail_file *f)
{
	xfree(f->header);
	f->header = NULL;
	f->header_len = 0;
	f->have_header = false;
	if (f->t->header_owner == f)
		f->t->header_owner = NULL;
}

static void file_free(struct tail_file *f)
{
	if (!f)
		return;
	if (f->t && f->t->header_owner == f)
		f->t->header_owner = NULL;
	file_free(f->copy);
	if (f->gz)
		tail_gz_close(f);
	if (f->fd >= 0)
		close(f->fd);
	xfree(f->buf);
	xfree(f->header);
	xfree(f->path);
	xfree(f);
}

/* Position state: "2 <offset> <gen> <fingerprint hex or -> <size> <path>",
 * size being the largest the file was seen at (what is known lost if the
 * file is found truncated at the next start). While a rotated copy is read,
 * the copy's progress is saved instead: the old generation, offset and
 * fingerprint, which at the next start no longer match the live file and so
 * lead to the copy again. Text, so it survives a change of architecture
 * and is readable in the queue. */
static int save_position(struct tail *t, struct tail_file *f)
{
	const struct tail_file *p = f->copy ? f->copy : f;
	char text[80 + 2 * FP_LEN + 4096];
	int n, rc;

	n = snprintf(text, sizeof(text), "2 %" PRId64 " %" PRIu64 " ", p->offset, p->gen);
	if (!p->fp_len)
		text[n++] = '-';
	for (size_t i = 0; i < p->fp_len; i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%02x", p->fp[i]);
	n += snprintf(text + n, sizeof(text) - (size_t)n, " %" PRId64 " %s", p->max_size, f->path);
	if (n >= (int)sizeof(text))
		n = (int)sizeof(text) - 1;
	rc = input_save_position(t->in, f->source, text, (size_t)n);
	if (rc) {
		tail_note_error(t, "cannot save position of %s: %s", f->path, strerror(-rc));
		return rc;
	}
	f->dirty = false;
	if (f->copy)
		f->copy->dirty = false;
	return 0;
}

/* Version 1 (no size) is what earlier versions saved. */
static bool parse_position(const char *data, size_t len, struct old_gen *o)
{
	char text[256], hex[2 * FP_LEN + 2];
	int version, used = 0;

	memset(o, 0, sizeof(*o));
	if (len >= sizeof(text))
		len = sizeof(text) - 1;
	memcpy(text, data, len);
	text[len] = '\0';
	if (sscanf(text, "%d %" SCNd64 " %" SCNu64 " %129s%n", &version, &o->off, &o->gen, hex,
		   &used) != 4 || (version != 1 && version != 2) || o->off < 0)
		return false;
	o->size = -1;
	if (version == 2 && (sscanf(text + used, " %" SCNd64, &o->size) != 1 || o->size < -1))
		return false;
	if (!strcmp(hex, "-"))
		return true;
	if (strlen(hex) % 2 || strlen(hex) > 2 * FP_LEN)
		return false;
	for (size_t i = 0; hex[2 * i]; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return false;
		o->fp[i] = (unsigned char)b;
		o->fp_len++;
	}
	return true;
}

/* Decide where a newly opened file starts: its saved position if it still
 * is the same file, else per start_at (first scan) or its head. */
static int file_place(struct tail *t, struct tail_file *f, int64_t size, bool first_scan)
{
	void *data = NULL;
	size_t len = 0;
	struct old_gen o;
	int rc = input_load_position(t->in, f->source, &data, &len);

	if (rc && rc != -ENOENT) {
		tail_note_error(t, "cannot load position of %s: %s", f->path, strerror(-rc));
		return rc;
	}
	if (!rc && parse_position(data, len, &o)) {
		if (size >= o.off && fp_matches(f, o.fp, o.fp_len)) {
			f->offset = o.off;
			f->gen = o.gen;
		} else {
			/* Truncated while agentd was stopped, or while it read
			 * the rotated copy: that copy still has the rest. */
			log_info("input %s: %s changed since its position was saved; reading it from the start",
				 input_name(t->in), f->path);
			f->offset = 0;
			f->gen = o.gen + 1;
			tail_recover(t, f, &o);
		}
	} else {
		if (!rc)
			log_warn("input %s: unreadable saved position of %s; treating it as a new file",
				 input_name(t->in), f->path);
		f->gen = first_gen(f);
		f->offset = first_scan && t->conf->start_at == START_END ? end_offset(f, size) : 0;
	}
	xfree(data);
	return 0;
}

struct tail_file *tail_find_file(struct tail *t, uint64_t dev, uint64_t ino)
{
	for (size_t i = 0; i < t->n_files; i++)
		if (t->files[i]->dev == dev && t->files[i]->ino == ino)
			return t->files[i];
	return NULL;
}

static void file_seen(struct tail_file *f, const char *path)
{
	f->seen = true;
	if (strcmp(f->path, path)) {
		char *p = xstrdup(path);

		/* Renamed within the pattern: the new name is for messages
		 * only, so keeping the old one on ENOMEM is harmless. */
		if (p) {
			xfree(f->path);
			f->path = p;
			f->dirty = true;
		}
	}
}

static int open_file(struct tail *t, const char *path, bool first_scan)
{
	struct tail_file *f;
	struct stat st;
	int fd, rc;

	/* O_NONBLOCK: a FIFO matched by the pattern must not block the loop. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno != ENOENT)
			tail_note_error(t, "cannot open %s: %s", path, strerror(errno));
		return errno == ENOENT ? 0 : -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return 0;
	}
	/* Renamed between stat and open: known under its new identity. */
	f = tail_find_file(t, st.st_dev, st.st_ino);
	if (f) {
		close(fd);
		file_seen(f, path);
		return 0;
	}
	if (t->n_files == t->cap_files) {
		size_t n = t->cap_files ? 2 * t->cap_files : 8;
		struct tail_file **v = xrealloc(t->files, n * sizeof(*v));

		if (!v) {
			rc = -ENOMEM;
			goto out_close;
		}
		t->files = v;
		t->cap_files = n;
	}
	f = xcalloc(1, sizeof(*f));
	if (!f) {
		rc = -ENOMEM;
		goto out_close;
	}
	f->t = t;
	f->fd = fd;
	f->path = xstrdup(path);
	if (!f->path) {
		rc = -ENOMEM;
		goto out_free;
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	snprintf(f->source, sizeof(f->source), "%" PRIu64 ":%" PRIu64, f->dev, f->ino);
	rc = read_fp(f, f->fp, &f->fp_len);
	if (rc) {
		tail_note_error(t, "cannot read %s: %s", path, strerror(-rc));
		goto out_free;
	}
	rc = file_place(t, f, st.st_size, first_scan);
	if (rc)
		goto out_free;
	tail_file_set_key_prefix(f);
	tail_file_reset_buffer(f, f->offset);
	f->seen_size = st.st_size;
	if (st.st_size > f->max_size)
		f->max_size = st.st_size;
	f->seen_mtime = st.st_mtim;
	f->seen_ctime = st.st_ctim;
	f->last_growth = loop_now_ms();
	f->seen = true;
	f->dirty = true;
	t->files[t->n_files++] = f;
	tail_watch_file_dir(t, path);
	log_info("input %s: following %s from offset %" PRId64, input_name(t->in), path, f->offset);
	return 0;

out_free:
	fd = -1;
	file_free(f);
out_close:
	if (fd >= 0)
		close(fd);
	return rc;
}

static bool has_magic(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* The fixed directory a pattern lives in must exist: a missing or
 * unreadable one is a configuration or permission problem worth showing,
 * while a missing file is only a file not written yet. */
static bool pattern_dir_ok(struct tail *t, const char *pat)
{
	const char *magic = strpbrk(pat, "*?[");
	size_t n = magic ? (size_t)(magic - pat) : strlen(pat);
	char dir[4096];
	struct stat st;
	DIR *d;

	while (n > 0 && pat[n - 1] != '/')
		n--;
	if (n > 1)
		n--;
	if (n == 0 || n >= sizeof(dir))
		return true;
	memcpy(dir, pat, n);
	dir[n] = '\0';
	tail_watch_dir(t, dir, n);
	if (!magic) {
		/* A fixed name needs only search permission on its directory. */
		int err = stat(dir, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;

		if (err)
			tail_note_error(t, "cannot open %s: %s", dir, strerror(err));
		return !err;
	}
	d = opendir(dir);
	if (!d) {
		tail_note_error(t, "cannot open %s: %s", dir, strerror(errno));
		return false;
	}
	closedir(d);
	return true;
}

static void scan_path(struct tail *t, const char *path, bool first_scan)
{
	struct stat st;
	struct tail_file *f;

	if (stat(path, &st) < 0) {
		if (errno != ENOENT)
			tail_note_error(t, "cannot open %s: %s", path, strerror(errno));
		return;
	}
	if (!S_ISREG(st.st_mode))
		return;
	f = tail_find_file(t, st.st_dev, st.st_ino);
	if (f)
		file_seen(f, path);
	else
		open_file(t, path, first_scan);
}

/* Match the patterns again: open new files, notice files renamed away. */
static void scan(struct tail *t, bool first_scan)
{
	for (size_t i = 0; i < t->n_files; i++)
		t->files[i]->seen = false;
	for (size_t p = 0; p < t->n_patterns; p++) {
		const char *pat = t->patterns[p];
		glob_t g;

		if (!pattern_dir_ok(t, pat))
			continue;
		if (!has_magic(pat)) {
			scan_path(t, pat, first_scan);
			continue;
		}
		memset(&g, 0, sizeof(g));
		if (glob(pat, 0, NULL, &g) == 0)
			for (size_t i = 0; i < g.gl_pathc; i++)
				scan_path(t, g.gl_pathv[i], first_scan);
		globfree(&g);
	}
	for (size_t i = 0; i < t->n_files; i++) {
		struct tail_file *f = t->files[i];

		if (!f->seen && !f->gone) {
			log_info("input %s: %s was renamed away or deleted; reading it to its end",
				 input_name(t->in), f->path);
			f->gone = true;
			f->last_growth = loop_now_ms();
		} else if (f->seen && f->gone && !f->deleted) {
			/* Renamed back into the pattern: follow it again. */
			f->gone = false;
		}
	}
	t->last_scan = loop_now_ms();
	memcpy(t->scan_err, t->err, sizeof(t->scan_err));
}

/* Start f's next generation from its head, looking for what the old one
 * had not handed over in its rotated copy. */
static void file_truncated(struct tail *t, struct tail_file *f)
{
	struct old_gen o;
	int64_t read_to = f->buf_off + (int64_t)f->len;

	o.off = f->offset;
	o.gen = f->gen;
	memcpy(o.fp, f->fp, f->fp_len);
	o.fp_len = f->fp_len;
	memcpy(o.mark, f->mark, f->mark_len);
	o.mark_len = f->mark_len;
	o.mark_end = f->mark_end;
	o.size = f->max_size > read_to ? f->max_size : read_to;
	o.looked = f->seen_ctime;
	log_info("input %s: %s was truncated or replaced; reading it again from the start",
		 input_name(t->in), f->path);
	f->gen++;
	tail_file_set_key_prefix(f);
	f->offset = 0;
	f->mark_len = 0;
	f->mark_end = 0;
	f->max_size = f->seen_size;
	tail_file_reset_buffer(f, 0);
	file_drop_header(f);
	if (read_fp(f, f->fp, &f->fp_len))
		f->fp_len = 0;
	f->dirty = true;
	tail_recover(t, f, &o);
}

/* Keep the bytes before the position, which tell f's rotated copy apart. */
static void keep_mark(struct tail_file *f)
{
	int64_t end = f->offset - f->buf_off;
	size_t k;

	if (f->in_long || end <= 0 || end > (int64_t)f->len)
		return;
	k = end > FP_LEN ? FP_LEN : (size_t)end;
	memcpy(f->mark, f->buf + end - (int64_t)k, k);
	f->mark_len = k;
	f->mark_end = f->offset;
}

/* Notice growth, deletion and truncation since the last look. */
static int file_check(struct tail *t, struct tail_file *f)
{
	struct stat st;
	unsigned char now[FP_LEN];
	size_t n = 0;

	if (fstat(f->fd, &st) < 0) {
		tail_note_error(t, "cannot stat %s: %s", f->path, strerror(errno));
		return -errno;
	}
	if (st.st_nlink == 0 && !f->deleted) {
		log_info("input %s: %s was deleted; reading it to its end", input_name(t->in), f->path);
		if (!f->gone)
			f->last_growth = loop_now_ms();
		f->gone = f->deleted = true;
	}
	/* Truncated again while the copy of the last truncation is read:
	 * handled when that is done, with this generation as it was. */
	if (f->retruncated)
		return 0;
	if (st.st_size == f->seen_size && st.st_mtim.tv_sec == f->seen_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == f->seen_mtime.tv_nsec)
		return 0;
	if (st.st_size > f->seen_size)
		f->last_growth = loop_now_ms();
	f->seen_size = st.st_size;
	f->seen_mtime = st.st_mtim;
	/* Shorter than what was read, or a different head: copy-truncate or
	 * truncation, possibly already refilled by the writer. */
	if (st.st_size < f->buf_off + (int64_t)f->len || read_fp(f, now, &n) ||
	    n < f->fp_len || memcmp(now, f->fp, f->fp_len)) {
		if (f->copy)
			f->retruncated = true;
		else
			file_truncated(t, f);
		return 0;
	}
	if (st.st_size > f->max_size)
		f->max_size = st.st_size;
	f->seen_ctime = st.st_ctim;
	if (n > f->fp_len) {
		memcpy(f->fp, now, n);
		f->fp_len = n;
		f->dirty = true;
	}
	return 0;
}

/* Read the header line of a file whose reading starts past it.
 * 0 when read, 1 when the file has no complete first line yet, -errno. */
static int file_load_header(struct tail *t, struct tail_file *f)
{
	size_t cap = 4096, len = 0;
	char *p = NULL, *nl = NULL;
	int rc = 0;

	while (!nl) {
		ssize_t n;

		if (len == cap || !p) {
			char *np;

			if (p)
				cap *= 2;
			if (cap > t->max_line + 1)
				cap = t->max_line + 1;
			if (len == cap) {
				tail_note_error(t, "header line of %s is longer than max_record_bytes (%zu bytes)",
					   f->path, t->max_line);
				rc = -EMSGSIZE;
				goto out_free;
			}
			np = xrealloc(p, cap);
			if (!np) {
				rc = -ENOMEM;
				goto out_free;
			}
			p = np;
		}
		n = tail_file_pread(f, p + len, cap - len, (int64_t)len);
		if (n < 0) {
			tail_note_error(t, "cannot read %s: %s", f->path, strerror((int)-n));
			rc = (int)n;
			goto out_free;
		}
		if (n == 0) {
			rc = 1;
			goto out_free;
		}
		nl = memchr(p + len, '\n', (size_t)n);
		len += (size_t)n;
	}
	f->header = p;
	f->header_len = (size_t)(nl - p);
	f->have_header = true;
	return 0;

out_free:
	xfree(p);
	return rc;
}

/* Hand one complete line (at f->offset) to the core. */
static int hand_over(struct tail *t, struct tail_file *f, const char *data, size_t len,
		     const char *reason)
{
	const char *key;
	int rc;

	if (t->wants_header && f->offset == 0 && !reason) {
		/* The file's first line is its header, not a record. */
		char *h = xmalloc(len + 1);

		if (!h)
			return -ENOMEM;
		memcpy(h, data, len);
		file_drop_header(f);
		f->header = h;
		f->header_len = len;
		f->have_header = true;
		return 0;
	}
	if (t->wants_header && !reason && t->header_owner != f) {
		if (!f->have_header)
			return -ENODATA;
		rc = input_set_header(t->in, f->header, f->header_len);
		if (rc)
			return rc;
		t->header_owner = f;
	}
	key = file_key(f, f->offset);
	if (reason)
		rc = input_reject(t->in, data, len, key, reason);
	else
		rc = input_emit(t->in, data, len, key);
	if (rc == -EAGAIN)
		t->blocked = true;
	else if (rc)
		tail_note_error(t, "cannot queue a line of %s: %s", f->path, strerror(-rc));
	return rc;
}

/* Dead-letter the over-long line [offset, long_end). It is not in memory
 * (only max_record_bytes + read_chunk ever are), so it is read back from the
 * file, which still holds it. */
static int reject_long(struct tail *t, struct tail_file *f)
{
	int64_t total = f->long_end - f->offset;
	size_t keep = total > REJECT_KEEP_MAX ? REJECT_KEEP_MAX : (size_t)total;
	char reason[200];
	char *p = xmalloc(keep ? keep : 1);
	ssize_t n = 0;
	int rc;

	if (p) {
		n = tail_file_pread(f, p, keep, f->offset);
		if (n < 0) {
			tail_note_error(t, "cannot read %s: %s", f->path, strerror((int)-n));
			xfree(p);
			return (int)n;
		}
	}
	if (p && (size_t)n == (size_t)total)
		snprintf(reason, sizeof(reason), "line longer than max_record_bytes (%" PRId64 " bytes)",
			 total);
	else
		snprintf(reason, sizeof(reason),
			 "line longer than max_record_bytes (%" PRId64 " bytes; only the first %zd bytes kept)",
			 total, n);
	rc = hand_over(t, f, p ? p : "", (size_t)n, reason);
	xfree(p);
	if (rc)
		return rc;
	f->offset = f->long_end + (f->long_nl ? 1 : 0);
	f->in_long = false;
	f->long_end = -1;
	f->dirty = true;
	return 0;
}

/* Hand over the complete lines in the buffer. 0 when none is left, 1 when
 * the line budget ran out, or an error of hand_over(). */
static int hand_over_lines(struct tail *t, struct tail_file *f, struct budget *b)
{
	char reason[96];

	while (b->lines > 0) {
		char *start, *nl;
		size_t len;
		int rc;

		if (f->scan >= f->len)
			return 0;
		start = f->buf + f->pos;
		nl = memchr(f->buf + f->scan, '\n', f->len - f->scan);

		if (!nl) {
			f->scan = f->len;
			return 0;
		}
		len = (size_t)(nl - start);
		if (len > t->max_line) {
			snprintf(reason, sizeof(reason), "line longer than max_record_bytes (%zu bytes)", len);
			rc = hand_over(t, f, start, len, reason);
		} else {
			rc = hand_over(t, f, start, len, NULL);
		}
		if (rc) {
			f->scan = f->pos;
			return rc;
		}
		f->pos = f->scan = (size_t)(nl - f->buf) + 1;
		f->offset = f->buf_off + (int64_t)f->pos;
		f->dirty = true;
		b->lines--;
	}
	return 1;
}

/* Look for the end of the over-long line in what was just read; what
 * precedes it is dropped (it is read back from the file when rejected). */
static void scan_long(struct tail_file *f)
{
	char *nl = memchr(f->buf, '\n', f->len);

	if (nl) {
		f->long_end = f->buf_off + (nl - f->buf);
		f->long_nl = true;
		f->pos = f->scan = (size_t)(nl - f->buf) + 1;
	} else {
		f->buf_off += (int64_t)f->len;
		f->len = f->pos = f->scan = 0;
	}
}

/* Read the next chunk after the buffered bytes. Bytes read, 0 at EOF, -errno. */
static ssize_t file_read(struct tail *t, struct tail_file *f)
{
	size_t want;
	ssize_t n;

	if (f->pos) {
		memmove(f->buf, f->buf + f->pos, f->len - f->pos);
		f->buf_off += (int64_t)f->pos;
		f->len -= f->pos;
		f->scan -= f->pos;
		f->pos = 0;
	}
	if (f->cap - f->len < t->chunk && f->cap < t->cap_max) {
		size_t cap = f->cap ? 2 * f->cap : 2 * t->chunk;
		char *p;

		if (cap < f->len + t->chunk)
			cap = f->len + t->chunk;
		if (cap > t->cap_max)
			cap = t->cap_max;
		p = xrealloc(f->buf, cap);
		if (!p)
			return -ENOMEM;
		f->buf = p;
		f->cap = cap;
	}
	want = f->cap - f->len < t->chunk ? f->cap - f->len : t->chunk;
	if (f->gz)
		return tail_gz_read(t, f, want);
	do {
		n = pread(f->fd, f->buf + f->len, want, (off_t)(f->buf_off + (int64_t)f->len));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		tail_note_error(t, "cannot read %s: %s", f->path, strerror(errno));
		return -errno;
	}
	f->len += (size_t)n;
	return n;
}

/* At the end of a file that is gone and quiet: its unterminated last line
 * will never be completed, so hand it over as it is. */
static int file_finish(struct tail *t, struct tail_file *f, struct budget *b)
{
	int rc;

	if (f->in_long) {
		f->long_end = f->buf_off + (int64_t)f->len;
		f->long_nl = false;
		rc = reject_long(t, f);
	} else if (f->len > f->pos) {
		rc = hand_over(t, f, f->buf + f->pos, f->len - f->pos, NULL);
		if (!rc) {
			f->pos = f->scan = f->len;
			f->offset = f->buf_off + (int64_t)f->len;
			f->dirty = true;
		}
	} else {
		rc = 0;
	}
	if (!rc) {
		b->lines--;
		f->finished = true;
	}
	return rc;
}

static int file_pump(struct tail *t, struct tail_file *f, struct budget *b);

/* Read f's rotated copy before f. 0 when the copy is done (f goes on),
 * 1 while it is not, or an error of file_pump(). */
static int pump_copy(struct tail *t, struct tail_file *f, struct budget *b)
{
	struct tail_file *c = f->copy;
	int rc = file_pump(t, c, b);

	if (rc == -EIO && c->gz) {
		/* A gzip file cut short (still being written, or damaged):
		 * what it does not give is lost. */
		struct old_gen o = { .gen = c->gen };
		int64_t at = c->buf_off + (int64_t)c->len;

		tail_set_gap(f, &o, c->offset, c->max_size > at ? c->max_size - c->offset : -1,
			"copy_unreadable");
		c->finished = true;
		rc = 0;
	}
	if (rc)
		return rc;
	/* Drained but not finished: a csv copy without a complete header
	 * line, which will not get one. */
	if (!c->finished)
		tail_note_error(t, "%s has no complete header line; its lines from offset %" PRId64 " are not read",
			   c->path, c->offset);
	else
		log_info("input %s: finished reading %s", input_name(t->in), c->path);
	f->copy = NULL;
	file_free(c);
	f->dirty = true;
	if (f->retruncated) {
		f->retruncated = false;
		file_truncated(t, f);
		rc = tail_emit_gap(t, f);
		if (rc)
			return rc;
		return f->copy ? 1 : 0;
	}
	return 0;
}

/* Hand over what f has. 0 when it is drained, 1 when the budget ran out,
 * -EAGAIN when the queue is full, or another -errno (retried next tick). */
static int file_pump(struct tail *t, struct tail_file *f, struct budget *b)
{
	int rc;

	rc = tail_emit_gap(t, f);
	if (rc)
		return rc;
	if (!f->is_copy) {
		rc = file_check(t, f);
		if (!rc)
			rc = tail_emit_gap(t, f);
		if (rc)
			return rc;
	}
	if (f->copy) {
		rc = pump_copy(t, f, b);
		if (rc)
			return rc;
	}
	if (t->wants_header && !f->have_header && f->offset > 0) {
		rc = file_load_header(t, f);
		if (rc)
			return rc > 0 ? 0 : rc;
	}
	for (;;) {
		ssize_t n;

		if (f->in_long && f->long_end >= 0) {
			rc = reject_long(t, f);
			if (rc)
				return rc;
			b->lines--;
		}
		if (!f->in_long) {
			rc = hand_over_lines(t, f, b);
			keep_mark(f);
			if (rc)
				return rc;
			if (f->len - f->pos > t->max_line) {
				f->in_long = true;
				f->long_end = -1;
				f->buf_off += (int64_t)f->len;
				f->len = f->pos = f->scan = 0;
			}
		}
		if (b->bytes <= 0 || b->lines <= 0)
			return 1;
		n = file_read(t, f);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		b->bytes -= n;
		if (f->in_long)
			scan_long(f);
	}
	if (f->gone && loop_now_ms() - f->last_growth >= t->conf->rotate_wait_ms)
		return file_finish(t, f, b);
	if (f->pos == f->len && !f->in_long) {
		/* Idle: give the buffer back until data comes. */
		xfree(f->buf);
		f->buf = NULL;
		f->cap = 0;
		tail_file_reset_buffer(f, f->offset);
	}
	return 0;
}

static void remove_finished(struct tail *t)
{
	size_t j = 0;

	for (size_t i = 0; i < t->n_files; i++) {
		struct tail_file *f = t->files[i];

		if (!f->finished || f->dirty) {
			t->files[j++] = f;
			continue;
		}
		log_info("input %s: finished %s", input_name(t->in), f->path);
		input_forget_position(t->in, f->source);
		file_free(f);
	}
	t->n_files = j;
}

static int64_t tail_tick(struct loop_timer *timer)
{
	struct tail *t = container_of(timer, struct tail, timer);
	struct budget b = { t->conf->max_lines_per_tick, t->conf->max_bytes_per_tick };
	bool more = false;
	size_t n;

	if (t->want_scan || loop_now_ms() - t->last_scan >= t->conf->poll_interval_ms) {
		t->want_scan = false;
		scan(t, false);
	}
	n = t->n_files;
	for (size_t i = 0; i < n && !t->blocked; i++) {
		struct tail_file *f = t->files[(t->rr + i) % n];
		int rc = f->fd >= 0 ? file_pump(t, f, &b) : 0;

		/* A loss not yet told keeps the old position, so a
		 * restart finds and tells it again. */
		if ((f->dirty || (f->copy && f->copy->dirty)) && !f->gap_pending)
			save_position(t, f);
		if (rc == 1) {
			more = true;
			break;
		}
	}
	if (n)
		t->rr = (t->rr + 1) % n;
	remove_finished(t);
	report_errors(t);
	update_state(t);
	if (t->blocked)
		return -1;
	return more ? 0 : t->conf->poll_interval_ms;
}

static void free_patterns(struct tail *t)
{
	for (size_t i = 0; i < t->n_patterns; i++)
		xfree(t->patterns[i]);
	xfree(t->patterns);
	t->patterns = NULL;
	t->n_patterns = 0;
}

/* Split "a, b" into trimmed, non-empty patterns. 0 or -ENOMEM. */
static int split_patterns(const char *spec, char ***out, size_t *nout)
{
	size_t n = 1, k = 0;
	char **v;
	const char *s = spec;

	for (const char *c = spec; *c; c++)
		n += *c == ',';
	v = xcalloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	while (*s) {
		const char *e = strchr(s, ',');
		const char *end = e ? e : s + strlen(s);

		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end > s) {
			v[k] = xstrndup(s, (size_t)(end - s));
			if (!v[k])
				goto out_free;
			k++;
		}
		if (!e)
			break;
		s = e + 1;
	}
	*out = v;
	*nout = k;
	return 0;

out_free:
	for (size_t i = 0; i < k; i++)
		xfree(v[i]);
	xfree(v);
	return -ENOMEM;
}

static int tail_validate(const void *conf, char *err, size_t errlen)
{
	const struct tail_conf *c = conf;
	char **pats;
	size_t n;
	int rc = 0;

	if (!c->path) {
		snprintf(err, errlen, "key 'path': missing");
		return -EINVAL;
	}
	if (split_patterns(c->path, &pats, &n))
		return -ENOMEM;
	if (!n) {
		snprintf(err, errlen, "key 'path': no file pattern given");
		rc = -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!rc && pats[i][0] != '/') {
			snprintf(err, errlen, "key 'path': '%s' is not an absolute path", pats[i]);
			rc = -EINVAL;
		}
		xfree(pats[i]);
	}
	xfree(pats);
	return rc;
}

static void tail_stop(struct input *in, void *state)
{
	struct tail *t = state;

	if (!t)
		return;
	if (t->loop)
		loop_timer_cancel(t->loop, &t->timer);
	tail_watch_stop(t);
	for (size_t i = 0; i < t->n_files; i++)
		file_free(t->files[i]);
	xfree(t->files);
	free_patterns(t);
	xfree(t);
}

static int tail_start(struct input *in, void **state)
{
	struct tail *t = xcalloc(1, sizeof(*t));
	int64_t max;
	int rc;

	if (!t)
		return -ENOMEM;
	t->ino.fd = -1;
	t->in = in;
	t->conf = input_driver_conf(in);
	rc = split_patterns(t->conf->path, &t->patterns, &t->n_patterns);
	if (rc) {
		input_error(in, "cannot start: %s", strerror(-rc));
		goto out_stop;
	}
	max = input_max_record_bytes(in);
	t->max_line = max > 0 ? (size_t)max : DEFAULT_MAX_LINE;
	t->chunk = (size_t)t->conf->read_chunk;
	t->cap_max = t->max_line + t->chunk + 1;
	t->wants_header = input_wants_header(in);
	t->timer.cb = tail_tick;
	t->loop = input_loop(in);
	tail_watch_start(t);
	scan(t, true);
	report_errors(t);
	update_state(t);
	loop_timer_set(t->loop, &t->timer, 0);
	*state = t;
	return 0;

out_stop:
	tail_stop(in, t);
	return rc;
}

static void tail_resume(struct input *in, void *state)
{
	struct tail *t = state;

	t->blocked = false;
	update_state(t);
	loop_timer_set(t->loop, &t->timer, 0);
}

const struct driver tail_driver = {
	.version = DRIVER_VERSION,
	.name = "tail",
	.help = "Follows text files (a path or glob), one record per line, across rotation, truncation "
		"and restarts.",
	.conf_keys = tail_keys,
	.conf_size = sizeof(struct tail_conf),
	.validate = tail_validate,
	.start = tail_start,
	.resume = tail_resume,
	.stop = tail_stop,
};
