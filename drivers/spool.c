/* spool.c - the spool input driver: takes whole files that other programs
 * drop into a directory (PLC CSV exports, camera images), hands their
 * content over as records, and removes each file (or moves it to done_dir)
 * only once the core has committed its records.
 *
 * A file is taken when it is complete: `ready = quiet` waits until inotify
 * has seen its writer close it and its size, mtime and inode stayed the same
 * for quiet_time on the loop's clock; `ready = rename` takes it as soon as it
 * has a name matching ready_pattern (writers write elsewhere and rename).
 * One file is read at a time, in bounded slices, one slice per loop turn, so
 * a large file never holds the loop. After each slice the file's position
 * (its identity, the offset reached, line and chunk counts) is saved through
 * the core in the transaction of the records, so a restart goes on after
 * what was committed. Every record's key is made of the file's identity as
 * taken (device, inode, size, mtime in ns) and the offset of its line or
 * chunk, so a file read again gives the same keys, and a changed file new
 * ones.
 *
 * A file that cannot be read goes to failed_dir with a `<name>.reason` file
 * beside it; a failed removal or move is retried with backoff. spool.h has
 * the tests' seam.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "spool.h"

struct spool_syscalls spool_sys = { pread, inotify_init1 };

/* Bytes of a file's head, and of what precedes the offset reached, kept to
 * tell whether a file that changed while it was read still holds what was
 * sent. */
#define FP_LEN 64
/* An over-long line goes to the dead-letter queue with this much of it. */
#define LONG_KEEP 4096
/* Bytes read at a time. */
#define READ_SIZE (64 << 10)
/* Records handed over in one loop turn at most, besides read_slice. */
#define TURN_RECORDS 4096
/* A binary record's fields besides the file name and the base64 data. */
#define BIN_OVERHEAD 160
/* The longest file name (NAME_MAX), escaped in JSON at worst. */
#define NAME_JSON_MAX (255 * 6 + 2)
/* Files known at once at most (about 700 bytes each); the others wait
 * until some are done. */
#define MAX_FILES 10000
/* A committed file is renamed to this (and its inode) in dir, then removed. */
#define REMOVE_PREFIX ".spool-remove-"
#define MOVE_RETRY_BASE_MS 1000
#define MOVE_RETRY_MAX_MS (5 * 60 * 1000)

enum { READY_QUIET, READY_RENAME };
enum { FMT_TEXT, FMT_BINARY };

struct spool_conf {
	char *dir;
	char *pattern;
	int ready;
	int64_t quiet_ms;
	char *ready_pattern;
	int format;
	int64_t chunk_size;
	char *done_dir;
	char *failed_dir;
	int64_t poll_ms;
	int64_t read_slice;
};

static const char *const ready_names[] = { "quiet", "rename", NULL };
static const char *const format_names[] = { "text", "binary", NULL };

#define SK(f) offsetof(struct spool_conf, f)
static const struct cfg_key spool_keys[] = {
	{ .name = "dir", .type = CFG_STR, .offset = SK(dir), .required = true,
	  .example = "/var/spool/plc",
	  .help = "Absolute path of the directory other programs drop files into. It must exist; until it "
		  "does, status says so and it is looked for every poll_interval." },
	{ .name = "pattern", .type = CFG_STR, .def = "*", .offset = SK(pattern), .example = "*.csv",
	  .help = "glob(7) pattern of the file names to take (names only, no '/'). Names beginning with '.' "
		  "match only a pattern that begins with '.', so hidden temporary files are left alone." },
	{ .name = "ready", .type = CFG_ENUM, .def = "quiet", .offset = SK(ready), .enums = ready_names,
	  .help = "When a file counts as complete. quiet: its writer closed it and its size, mtime and inode "
		  "stayed the same for quiet_time. rename: as soon as it has a name matching ready_pattern "
		  "(writers write under another name and rename when done)." },
	{ .name = "quiet_time", .type = CFG_DURATION, .def = "5s", .offset = SK(quiet_ms),
	  .min = 0, .max = 86400000,
	  .help = "ready = quiet: how long a file must stay unchanged before it is taken, also a file found "
		  "at start. Longer than the longest pause of a writer between two writes." },
	{ .name = "ready_pattern", .type = CFG_STR, .offset = SK(ready_pattern), .example = "*.csv",
	  .help = "ready = rename: glob(7) of the names that mark a file complete; a file matching pattern "
		  "but not this is being written and waits. Unset: every name matching pattern is complete." },
	{ .name = "format", .type = CFG_ENUM, .def = "text", .offset = SK(format), .enums = format_names,
	  .help = "text: one record per line, parsed by the input's parser (raw, json, csv; csv takes each "
		  "file's first line as its header). binary: the file in chunks of chunk_size bytes, base64." },
	{ .name = "chunk_size", .type = CFG_SIZE, .def = "32KiB", .offset = SK(chunk_size),
	  .min = 1, .max = 32 << 20,
	  .help = "format = binary: bytes of the file per record. Base64 makes a chunk 4/3 as large, so "
		  "chunk_size * 4/3 plus the record's other fields (about 1.7KiB at most) must fit in "
		  "max_record_bytes; otherwise the input reads nothing and status says which chunk_size fits." },
	{ .name = "done_dir", .type = CFG_STR, .offset = SK(done_dir), .example = "/var/spool/plc/done",
	  .help = "Where a file goes once its records are committed. Unset: the file is removed. Created at "
		  "start if missing; it must be on the same filesystem as dir (files are moved by rename)." },
	{ .name = "failed_dir", .type = CFG_STR, .offset = SK(failed_dir),
	  .help = "Where a file that cannot be read goes, with the reason in NAME.reason beside it (NAME "
		  "being the file's name). Unset: .failed in dir. Created at start if missing; same "
		  "filesystem as dir." },
	{ .name = "poll_interval", .type = CFG_DURATION, .def = "1s", .offset = SK(poll_ms),
	  .min = 10, .max = 3600000,
	  .help = "How often the directory is listed and its files looked at, besides what inotify reports "
		  "at once. Where inotify cannot be had, how long a new file may wait to be noticed." },
	{ .name = "read_slice", .type = CFG_SIZE, .def = "1MiB", .offset = SK(read_slice),
	  .min = 4096, .max = 1 << 30,
	  .help = "Most bytes read in one turn of the event loop, so a big file never holds up other inputs "
		  "and outputs." },
	{ .name = NULL },
};

enum sf_state {
	SF_WAITING,     /* not complete yet */
	SF_READY,       /* complete, waiting its turn */
	SF_READING,     /* the one file being read */
	SF_COMMITTING,  /* read (or failed): waiting for its records' commit */
	SF_MOVING,      /* committed; the removal or move failed: retried with backoff */
	SF_GONE,        /* to be freed */
};

struct sfile {
	char *name;
	uint64_t dev, ino;
	int64_t size, mtime_ns;             /* identity as taken: keys and position */
	int64_t btime_ns;                   /* birth time, 0 where the filesystem has none */
	int64_t seen_size, seen_mtime_ns;   /* at the last look */
	int64_t changed_at;                 /* loop ms of the last change seen */
	uint64_t ready_seq;                 /* order of taking */
	enum sf_state state;
	bool writing;                       /* inotify saw it written and not closed since */
	bool seen;                          /* in the last listing */
	bool verify;                        /* changed while read: check before going on */
	bool was_done;                      /* ... after it was read to its end */
	bool has_pos;                       /* a position of it is saved */
	bool done, failed, dirty;
	bool have_header;
	char why[256];                      /* failed: the reason */
	uint64_t last_ticket;               /* of its last record */
	unsigned attempts;
	int64_t retry_at;
	int fd;
	int64_t offset;                     /* the next byte to hand over */
	int64_t line_no;                    /* text: lines handed over, the header included */
	int64_t index;                      /* binary: chunks handed over */
	int64_t records;                    /* handed over since taken, for the reason file */
	unsigned char head[FP_LEN], mark[FP_LEN];
	size_t head_len, mark_len;
	char key[160];
	size_t key_len;
	/* text: bytes read and not handed over; buf[0] is at buf_off */
	char *buf;
	size_t cap, len, pos;
	int64_t buf_off;
	bool in_long;                       /* the line at `offset` is too long */
	bool long_nl;                       /* ... and ends with a newline at long_end */
	int64_t long_end;                   /* its end, -1 while not found */
	int64_t long_total;
	size_t long_len;                    /* of its head, in spool.long_head */
};

struct spool {
	struct input *in;
	const struct spool_conf *conf;
	struct loop *loop;
	struct loop_timer timer;
	struct loop_fd ino;
	int wd;
	bool polling, want_scan, blocked, set_up;
	char *failed_dir;
	dev_t dev;
	ino_t dir_ino, done_ino, failed_ino;  /* the targets, never taken as files */
	bool over_limit;                      /* more files than MAX_FILES */
	size_t max_line, max_rec;
	bool wants_header;
	struct sfile **files;
	size_t n_files, cap_files;
	uint64_t next_seq;
	uint64_t committed_upto;
	int64_t last_scan;
	int64_t n_done, n_failed;
	bool refused;                       /* set wrong: does nothing, says why */
	char err[256];                      /* what status shows */
	char state_text[512];
	char long_head[LONG_KEEP];          /* of the file read: an over-long line's head */
};

/* ---- utilities ------------------------------------------------------- */

static int64_t ns_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void note_error(struct spool *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Make a problem the input's last error (logged by the core, rate-limited). */
static void note_error(struct spool *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	input_error(s->in, "%s", s->err);
}

static int path_of(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Read len bytes at off (fewer at the end of the file). Bytes read, or
 * -errno; the bytes read before an error are lost to the caller. */
static ssize_t pread_full(int fd, void *p, size_t len, int64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = spool_sys.pread(fd, (char *)p + got, len - got, (off_t)(off + (int64_t)got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
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

static bool name_matches(const char *pat, const char *name)
{
	return fnmatch(pat, name, FNM_PERIOD) == 0;
}

static bool name_taken(const struct spool *s, const char *name)
{
	return name_matches(s->conf->pattern, name);
}

static bool name_complete(const struct spool *s, const char *name)
{
	return s->conf->ready != READY_RENAME || !s->conf->ready_pattern ||
	       name_matches(s->conf->ready_pattern, name);
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

static void file_close(struct sfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	xfree(f->buf);
	f->buf = NULL;
	f->cap = f->len = f->pos = 0;
	f->in_long = false;
}

static void file_free(struct sfile *f)
{
	if (!f)
		return;
	file_close(f);
	xfree(f->name);
	xfree(f);
}

static struct sfile *find_ino(struct spool *s, uint64_t dev, uint64_t ino)
{
	for (size_t i = 0; i < s->n_files; i++)
		if (s->files[i]->dev == dev && s->files[i]->ino == ino && s->files[i]->state != SF_GONE)
			return s->files[i];
	return NULL;
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

/* statx(2) as the kernel defines it, called through syscall(2) because not
 * every C library wraps it (musl before 1.2.5 does not). */
struct kstatx_time {
	int64_t tv_sec;
	uint32_t tv_nsec;
	int32_t reserved;
};
struct kstatx {
	uint32_t mask, blksize;
	uint64_t attributes;
	uint32_t nlink, uid, gid;
	uint16_t mode, spare0;
	uint64_t ino, size, blocks, attributes_mask;
	struct kstatx_time atime, btime, ctime, mtime;
	uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
	uint64_t spare2[14];
};
#define KSTATX_BTIME 0x800U
#define KAT_SYMLINK_NOFOLLOW 0x100

/* A file's birth time in ns, or 0: tells a new file that got the inode of
 * one read before from that one, whatever their sizes. */
static int64_t birth_ns(const char *path)
{
	struct kstatx stx;

	memset(&stx, 0, sizeof(stx));
#ifdef SYS_statx
	if (!syscall(SYS_statx, AT_FDCWD, path, KAT_SYMLINK_NOFOLLOW, KSTATX_BTIME, &stx) &&
	    (stx.mask & KSTATX_BTIME) && stx.btime.tv_sec > 0)
		return stx.btime.tv_sec * 1000000000 + stx.btime.tv_nsec;
#endif
	return 0;
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
		note_error(s, "cannot save the position of %s: %s", f->name, strerror(-rc));
	if (!rc) {
		f->dirty = false;
		f->has_pos = true;
	}
	return rc;
}

struct saved {
	int64_t size, mtime_ns, btime_ns, offset, line_no, index;
	int done;
	unsigned char head[FP_LEN], mark[FP_LEN];
	size_t head_len, mark_len;
	char name[256];
};

static bool load_position(struct spool *s, const struct sfile *f, struct saved *p)
{
	char source[48], text[512], head[2 * FP_LEN + 2], mark[2 * FP_LEN + 2];
	void *data = NULL;
	size_t len = 0;
	int rc, used = 0;

	source_of(f, source, sizeof(source));
	rc = input_load_position(s->in, source, &data, &len);
	if (rc) {
		if (rc != -ENOENT)
			note_error(s, "cannot load the position of %s: %s", f->name, strerror(-rc));
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

static void forget_position(struct spool *s, const struct sfile *f)
{
	char source[48];

	source_of(f, source, sizeof(source));
	input_forget_position(s->in, source);
}

/* ---- directories ----------------------------------------------------- */

static int mkdir_p(const char *dir)
{
	char tmp[4096];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Create done_dir or failed_dir if missing, and check it can take files
 * from dir by rename(2): a directory on the same filesystem, not dir. */
static int check_target(struct spool *s, const char *key, const char *path, ino_t *ino)
{
	struct stat st;
	int rc = mkdir_p(path);

	if (rc) {
		note_error(s, "%s %s cannot be created: %s", key, path, strerror(-rc));
		return rc;
	}
	if (stat(path, &st) < 0) {
		note_error(s, "%s %s: %s", key, path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		note_error(s, "%s %s is not a directory", key, path);
		return -ENOTDIR;
	}
	if (st.st_dev != s->dev) {
		note_error(s, "%s %s is on another filesystem than dir %s: files are moved by rename, "
			   "which cannot cross filesystems; use a directory on the same filesystem",
			   key, path, s->conf->dir);
		return -EXDEV;
	}
	if (st.st_ino == s->dir_ino) {
		note_error(s, "%s %s is dir itself", key, path);
		return -EINVAL;
	}
	*ino = st.st_ino;
	return 0;
}

#define WATCH_MASK (IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
		    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

static void watch_stop(struct spool *s)
{
	if (s->ino.fd >= 0) {
		loop_fd_del(s->loop, &s->ino);
		close(s->ino.fd);
		s->ino.fd = -1;
	}
	s->wd = -1;
}

/* The directory is there: check it and the targets, watch it. 0, or -errno
 * (retried every poll_interval when it may come right by itself). */
static int set_up(struct spool *s)
{
	struct stat st;
	int rc;

	if (stat(s->conf->dir, &st) < 0) {
		note_error(s, "dir %s: %s", s->conf->dir, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		note_error(s, "dir %s is not a directory", s->conf->dir);
		return -ENOTDIR;
	}
	s->dev = st.st_dev;
	s->dir_ino = st.st_ino;
	if (s->conf->done_dir) {
		rc = check_target(s, "done_dir", s->conf->done_dir, &s->done_ino);
		if (rc)
			return rc;
	}
	rc = check_target(s, "failed_dir", s->failed_dir, &s->failed_ino);
	if (rc)
		return rc;
	if (s->ino.fd >= 0 && s->wd < 0) {
		s->wd = inotify_add_watch(s->ino.fd, s->conf->dir, WATCH_MASK);
		if (s->wd < 0) {
			log_warn("input %s: cannot watch %s with inotify (%s); looking every poll_interval",
				 input_name(s->in), s->conf->dir, strerror(errno));
			watch_stop(s);
			s->polling = true;
		}
	}
	s->set_up = true;
	s->err[0] = '\0';
	input_clear_error(s->in);
	return 0;
}

/* ---- files: finding them, deciding they are complete ------------------ */

static struct sfile *file_add(struct spool *s, const char *name, const struct stat *st)
{
	struct sfile *f;

	if (s->n_files == s->cap_files) {
		size_t n = s->cap_files ? 2 * s->cap_files : 16;
		struct sfile **v = xrealloc(s->files, n * sizeof(*v));

		if (!v)
			return NULL;
		s->files = v;
		s->cap_files = n;
	}
	f = xcalloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->name = xstrdup(name);
	if (!f->name) {
		xfree(f);
		return NULL;
	}
	f->fd = -1;
	f->dev = (uint64_t)st->st_dev;
	f->ino = (uint64_t)st->st_ino;
	f->seen_size = f->size = (int64_t)st->st_size;
	f->seen_mtime_ns = f->mtime_ns = ns_of(&st->st_mtim);
	f->changed_at = loop_now_ms();
	f->seen = true;
	s->files[s->n_files++] = f;
	return f;
}

static void make_ready(struct spool *s, struct sfile *f)
{
	f->state = SF_READY;
	f->ready_seq = ++s->next_seq;
}

/* Fail a file: it goes to failed_dir once what was sent of it is committed. */
static void file_fail(struct spool *s, struct sfile *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void file_fail(struct spool *s, struct sfile *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
	file_close(f);
	f->failed = true;
	f->state = SF_COMMITTING;
	f->last_ticket = input_ticket(s->in);
	note_error(s, "%s: %s; it goes to %s", f->name, f->why, s->failed_dir);
}

/* A new entry: what its saved position says about it. */
static void file_place(struct spool *s, struct sfile *f, const struct stat *st)
{
	struct saved p;

	if (!S_ISREG(st->st_mode)) {
		const char *what = S_ISDIR(st->st_mode) ? "a directory" : S_ISLNK(st->st_mode) ? "a symbolic link" :
				   S_ISFIFO(st->st_mode) ? "a FIFO" : S_ISSOCK(st->st_mode) ? "a socket" :
				   "a device";

		file_fail(s, f, "not a regular file (%s)", what);
		f->last_ticket = 0;
		return;
	}
	if (!load_position(s, f, &p))
		return;
	f->has_pos = true;
	if (p.btime_ns && f->btime_ns && p.btime_ns != f->btime_ns) {
		/* Another file that got the inode of one read before. */
		log_info("input %s: %s is a new file in the inode of one read before", input_name(s->in),
			 f->name);
		return;
	}
	if (p.size == f->size && p.mtime_ns == f->mtime_ns) {
		f->offset = p.offset;
		f->line_no = p.line_no;
		f->index = p.index;
		memcpy(f->head, p.head, p.head_len);
		f->head_len = p.head_len;
		memcpy(f->mark, p.mark, p.mark_len);
		f->mark_len = p.mark_len;
		if (p.done) {
			/* Read to its end and committed (the position is
			 * durable only with the records): remove or move it. */
			f->done = true;
			f->state = SF_COMMITTING;
			f->last_ticket = 0;
		} else {
			make_ready(s, f);
		}
		return;
	}
	if (p.offset > 0 && !strcmp(p.name, f->name)) {
		/* Changed since a part of it was sent: go on only if that part
		 * is still as it was (appended to). */
		f->offset = p.offset;
		f->line_no = p.line_no;
		f->index = p.index;
		memcpy(f->head, p.head, p.head_len);
		f->head_len = p.head_len;
		memcpy(f->mark, p.mark, p.mark_len);
		f->mark_len = p.mark_len;
		f->verify = true;
		f->was_done = p.done != 0;
		return;
	}
	log_info("input %s: %s changed since its position was saved; taking it as a new file",
		 input_name(s->in), f->name);
}

/* Look at one directory entry; a new one is added. */
static struct sfile *look_at(struct spool *s, const char *name)
{
	char path[4096];
	struct stat st;
	struct sfile *f;

	if (!strncmp(name, REMOVE_PREFIX, strlen(REMOVE_PREFIX)) || !name_taken(s, name) ||
	    path_of(path, sizeof(path), s->conf->dir, name))
		return NULL;
	if (lstat(path, &st) < 0)
		return NULL;
	if (st.st_dev == s->dev && (st.st_ino == s->done_ino || st.st_ino == s->failed_ino))
		return NULL;
	f = find_ino(s, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
	if (f) {
		f->seen = true;
		if (strcmp(f->name, name)) {
			/* Renamed within dir (x.tmp to x.csv). */
			char *n = xstrdup(name);

			if (n) {
				xfree(f->name);
				f->name = n;
			}
			f->changed_at = loop_now_ms();
		}
		if (f->seen_size != (int64_t)st.st_size || f->seen_mtime_ns != ns_of(&st.st_mtim)) {
			f->seen_size = (int64_t)st.st_size;
			f->seen_mtime_ns = ns_of(&st.st_mtim);
			f->changed_at = loop_now_ms();
		}
		return f;
	}
	if (s->n_files >= MAX_FILES) {
		s->over_limit = true;
		return NULL;
	}
	f = file_add(s, name, &st);
	if (!f) {
		note_error(s, "out of memory for %s", name);
		return NULL;
	}
	f->btime_ns = birth_ns(path);
	file_place(s, f, &st);
	return f;
}

static void scan(struct spool *s)
{
	DIR *d = opendir(s->conf->dir);
	struct dirent *e;

	s->last_scan = loop_now_ms();
	if (!d) {
		note_error(s, "cannot list dir %s: %s", s->conf->dir, strerror(errno));
		return;
	}
	for (size_t i = 0; i < s->n_files; i++)
		s->files[i]->seen = false;
	s->over_limit = false;
	while ((e = readdir(d))) {
		if (!strncmp(e->d_name, REMOVE_PREFIX, strlen(REMOVE_PREFIX))) {
			/* Left by a stop between the rename and the removal
			 * of a committed file. */
			char path[4096];

			if (!path_of(path, sizeof(path), s->conf->dir, e->d_name))
				unlink(path);
			continue;
		}
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			look_at(s, e->d_name);
	}
	closedir(d);
	for (size_t i = 0; i < s->n_files; i++) {
		struct sfile *f = s->files[i];

		/* Gone before it was taken: not ours any more. A file being
		 * read is read to its end through its descriptor. */
		if (!f->seen && (f->state == SF_WAITING || f->state == SF_READY))
			f->state = SF_GONE;
	}
}

/* Complete now? A last look confirms what was seen. */
static bool is_complete(struct spool *s, struct sfile *f, int64_t now)
{
	char path[4096];
	struct stat st;

	if (!name_complete(s, f->name))
		return false;
	if (s->conf->ready == READY_QUIET && (f->writing || now - f->changed_at < s->conf->quiet_ms))
		return false;
	if (path_of(path, sizeof(path), s->conf->dir, f->name) || lstat(path, &st) < 0) {
		f->state = SF_GONE;
		return false;
	}
	if ((uint64_t)st.st_ino != f->ino || (uint64_t)st.st_dev != f->dev) {
		f->state = SF_GONE;     /* the name is another file now: found by the next scan */
		s->want_scan = true;
		return false;
	}
	if ((int64_t)st.st_size != f->seen_size || ns_of(&st.st_mtim) != f->seen_mtime_ns) {
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = ns_of(&st.st_mtim);
		f->changed_at = now;
		return s->conf->ready == READY_RENAME;
	}
	return true;
}

/* ---- inotify --------------------------------------------------------- */

static void spool_inotify(struct loop_fd *w, unsigned revents)
{
	struct spool *s = container_of(w, struct spool, ino);
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int64_t now = loop_now_ms();
	bool any = false;

	(void)revents;
	for (int round = 0; round < 16; round++) {
		ssize_t n = read(w->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		any = true;
		for (ssize_t i = 0; i + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const void *)(buf + i);
			struct sfile *f = NULL;

			if (ev->mask & IN_Q_OVERFLOW) {
				/* Closes may be lost: judge by quiet_time alone. */
				for (size_t k = 0; k < s->n_files; k++) {
					s->files[k]->writing = false;
					s->files[k]->changed_at = now;
				}
				s->want_scan = true;
			}
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
				s->set_up = false;
				s->wd = -1;
			}
			if (ev->len && ev->name[0]) {
				/* A look now, so that the next listing does not
				 * take this change for a later one. */
				if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
					s->want_scan = true;
				else
					f = look_at(s, ev->name);
			}
			if (f) {
				f->changed_at = now;
				if (ev->mask & (IN_MODIFY | IN_CREATE))
					f->writing = true;
				if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
					f->writing = false;
			}
			i += (ssize_t)(sizeof(*ev) + ev->len);
		}
	}
	if (any)
		loop_timer_set(s->loop, &s->timer, 0);
}

static void watch_start(struct spool *s)
{
	int rc;

	s->wd = -1;
	s->ino.fd = spool_sys.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->ino.fd < 0) {
		log_warn("input %s: inotify unavailable (%s); looking every poll_interval",
			 input_name(s->in), strerror(errno));
		s->polling = true;
		return;
	}
	s->ino.events = LOOP_READ;
	s->ino.cb = spool_inotify;
	rc = loop_fd_add(s->loop, &s->ino);
	if (rc) {
		close(s->ino.fd);
		s->ino.fd = -1;
		s->polling = true;
	}
}

/* ---- reading --------------------------------------------------------- */

/* Open the file taken, and check it is what was seen (or, after a change
 * while it was read, that what was sent of it is unchanged). 0, or the
 * file failed or went away. */
static int file_open(struct spool *s, struct sfile *f)
{
	char path[4096];
	struct stat st;
	int fd;

	if (path_of(path, sizeof(path), s->conf->dir, f->name)) {
		file_fail(s, f, "path too long");
		return -ENAMETOOLONG;
	}
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		if (err == ENOENT) {
			f->state = SF_GONE;
			return -ENOENT;
		}
		file_fail(s, f, "cannot open: %s", strerror(err));
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
				file_fail(s, f, "changed while being read: what was sent of it (bytes 0 to %" PRId64
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
	f->mtime_ns = ns_of(&st.st_mtim);
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
		file_fail(s, f, "read error at offset 0: %s", strerror((int)-n));
		rc = (int)n;
	} else if (!nl) {
		file_fail(s, f, "its header line is longer than max_record_bytes or missing");
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
		note_error(s, "cannot queue a record of %s: %s", f->name, strerror(-rc));
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
		file_fail(s, f, "its header line is longer than max_record_bytes");
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

/* Outcomes of a slice. */
enum { SLICE_DONE = 0, SLICE_MORE = 1, SLICE_CHANGED = 2 };

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
			file_fail(s, f, "read error at offset %" PRId64 ": %s", at, strerror((int)-n));
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
			file_fail(s, f, "read error at offset %" PRId64 ": %s", f->offset, strerror((int)-n));
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
	return (int64_t)st.st_size != f->size || ns_of(&st.st_mtim) != f->mtime_ns;
}

/* Changed while read: what was sent stays sent (committed like any); the
 * rest waits until the file is complete again, when it is read on from
 * where it stopped if what was sent is still in it, else it fails. */
static void file_changed(struct spool *s, struct sfile *f)
{
	struct stat st;

	if (fstat(f->fd, &st) == 0) {
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = ns_of(&st.st_mtim);
	}
	/* Start again at the last line handed over. */
	f->buf_off = f->offset;
	f->len = f->pos = 0;
	f->in_long = false;
	save_position(s, f);
	file_close(f);
	f->verify = true;
	f->state = SF_WAITING;
	f->changed_at = loop_now_ms();
	log_warn("input %s: %s changed while being read (%" PRId64 " bytes when taken, %" PRId64
		 " now); the rest is read once it is complete again", input_name(s->in), f->name, f->size,
		 f->seen_size);
}

/* Read one slice of the current file. true when there is more to do now. */
static bool read_slice(struct spool *s, struct sfile *f)
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
		file_close(f);
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
		note_error(s, "%s: a new file under this name was moved to %s by accident and cannot be put back: %s",
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

	if (path_of(path, sizeof(path), s->conf->dir, f->name))
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
	    ((int64_t)st.st_size != f->size || ns_of(&st.st_mtim) != f->mtime_ns)) {
		/* Written to after it was read (and its records committed):
		 * not removed. When it is complete again, it is read on if it
		 * was appended to, or read whole as a new file if rewritten. */
		log_warn("input %s: %s was written to after it was read; it is read again once complete",
			 input_name(s->in), f->name);
		f->done = false;
		f->verify = f->was_done = true;
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = ns_of(&st.st_mtim);
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

static void finish_files(struct spool *s, int64_t now)
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
			note_error(s, "%s: records committed, but it cannot be %s: %s; retried in %" PRId64 " s",
				   f->name, what, strerror(-rc), (f->retry_at - now + 999) / 1000);
			continue;
		}
		if (f->failed) {
			s->n_failed++;
			note_error(s, "%s: %s; moved to %s, the reason beside it", f->name, f->why, s->failed_dir);
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
		forget_position(s, f);
		f->has_pos = false;
		f->state = SF_GONE;
	}
}

/* ---- the tick -------------------------------------------------------- */

static void drop_gone(struct spool *s)
{
	size_t j = 0;

	for (size_t i = 0; i < s->n_files; i++) {
		if (s->files[i]->state == SF_GONE) {
			/* Gone from dir before it was finished: its position
			 * is of no use any more. */
			if (s->files[i]->has_pos)
				forget_position(s, s->files[i]);
			file_free(s->files[i]);
		} else
			s->files[j++] = s->files[i];
	}
	s->n_files = j;
}

static void update_state(struct spool *s)
{
	size_t waiting = 0, ready = 0, committing = 0, moving = 0;
	const struct sfile *reading = NULL;
	char text[512];
	size_t n = 0;

	for (size_t i = 0; i < s->n_files; i++) {
		const struct sfile *f = s->files[i];

		waiting += f->state == SF_WAITING;
		ready += f->state == SF_READY;
		committing += f->state == SF_COMMITTING;
		moving += f->state == SF_MOVING;
		if (f->state == SF_READING)
			reading = f;
	}
	/* Short enough for status (the zero counts left out but waiting). */
#define ADD(...)                                                                        \
	do {                                                                            \
		int w_ = snprintf(text + n, sizeof(text) - n, __VA_ARGS__);             \
		if (w_ > 0)                                                             \
			n = n + (size_t)w_ < sizeof(text) ? n + (size_t)w_ : sizeof(text) - 1; \
	} while (0)
	ADD("%zu waiting", waiting);
	if (ready)
		ADD(", %zu ready", ready);
	if (reading)
		ADD(", reading %.40s (%d%%)", reading->name,
		    reading->size ? (int)(reading->offset * 100 / reading->size) : 100);
	if (committing)
		ADD(", %zu to commit", committing);
	if (moving)
		ADD(", %zu not moved", moving);
	ADD("; done %" PRId64 ", failed %" PRId64, s->n_done, s->n_failed);
	if (s->over_limit)
		ADD(" (over %d files)", MAX_FILES);
	if (s->polling)
		ADD(", polling");
	if (s->blocked)
		ADD(", waiting for queue space");
#undef ADD
	if (strcmp(text, s->state_text)) {
		snprintf(s->state_text, sizeof(s->state_text), "%s", text);
		input_set_state(s->in, "%s", text);
	}
}

static int64_t spool_tick(struct loop_timer *timer)
{
	struct spool *s = container_of(timer, struct spool, timer);
	int64_t now = loop_now_ms(), next = now + s->conf->poll_ms;
	struct sfile *cur = NULL;
	bool more = false;

	if (s->refused)
		return -1;
	if (!s->set_up && set_up(s)) {
		update_state(s);
		return s->conf->poll_ms;
	}
	if (s->want_scan || now - s->last_scan >= s->conf->poll_ms) {
		s->want_scan = false;
		scan(s);
	}
	finish_files(s, now);
	for (size_t i = 0; i < s->n_files; i++) {
		struct sfile *f = s->files[i];

		if (f->state == SF_WAITING) {
			if (is_complete(s, f, now))
				make_ready(s, f);
			else if (f->state == SF_WAITING && s->conf->ready == READY_QUIET && !f->writing &&
				 f->changed_at + s->conf->quiet_ms < next)
				next = f->changed_at + s->conf->quiet_ms;
		}
		if (f->state == SF_READING)
			cur = f;
		if (f->state == SF_MOVING && f->retry_at < next)
			next = f->retry_at;
	}
	if (!s->blocked) {
		if (!cur) {
			for (size_t i = 0; i < s->n_files; i++) {
				struct sfile *f = s->files[i];

				/* The oldest first, so the lake gets them in order. */
				if (f->state == SF_READY &&
				    (!cur || f->seen_mtime_ns < cur->seen_mtime_ns ||
				     (f->seen_mtime_ns == cur->seen_mtime_ns && f->ready_seq < cur->ready_seq)))
					cur = f;
			}
			if (cur && file_open(s, cur)) {
				cur = NULL;
				more = true;
			}
		}
		if (cur && cur->state == SF_READING)
			more = read_slice(s, cur) || more;
		if (cur && cur->state == SF_COMMITTING)
			finish_files(s, now);
	}
	drop_gone(s);
	update_state(s);
	if (more && !s->blocked)
		return 0;
	return next > now ? next - now : 0;
}

/* ---- the driver ------------------------------------------------------ */

static int spool_validate(const void *conf, char *err, size_t errlen)
{
	const struct spool_conf *c = conf;

	if (!c->dir || c->dir[0] != '/') {
		snprintf(err, errlen, "key 'dir': '%s' is not an absolute path", c->dir ? c->dir : "");
		return -EINVAL;
	}
	if (c->done_dir && c->done_dir[0] != '/') {
		snprintf(err, errlen, "key 'done_dir': '%s' is not an absolute path", c->done_dir);
		return -EINVAL;
	}
	if (c->failed_dir && c->failed_dir[0] != '/') {
		snprintf(err, errlen, "key 'failed_dir': '%s' is not an absolute path", c->failed_dir);
		return -EINVAL;
	}
	if (!c->pattern || !c->pattern[0] || strchr(c->pattern, '/')) {
		snprintf(err, errlen, "key 'pattern': a pattern of file names, without '/'");
		return -EINVAL;
	}
	if (c->ready_pattern && (!c->ready_pattern[0] || strchr(c->ready_pattern, '/'))) {
		snprintf(err, errlen, "key 'ready_pattern': a pattern of file names, without '/'");
		return -EINVAL;
	}
	if (c->ready_pattern && c->ready != READY_RENAME) {
		snprintf(err, errlen, "key 'ready_pattern': used only with ready = rename");
		return -EINVAL;
	}
	return 0;
}

static void spool_stop(struct input *in, void *state)
{
	struct spool *s = state;

	(void)in;
	if (!s)
		return;
	if (s->loop)
		loop_timer_cancel(s->loop, &s->timer);
	watch_stop(s);
	for (size_t i = 0; i < s->n_files; i++)
		file_free(s->files[i]);
	xfree(s->files);
	xfree(s->failed_dir);
	xfree(s);
}

static int spool_start(struct input *in, void **state)
{
	struct spool *s = xcalloc(1, sizeof(*s));
	int64_t max;
	int rc;

	if (!s)
		return -ENOMEM;
	s->ino.fd = -1;
	s->wd = -1;
	s->in = in;
	s->conf = input_driver_conf(in);
	s->loop = input_loop(in);
	s->timer.cb = spool_tick;
	s->committed_upto = input_ticket(in);
	max = input_max_record_bytes(in);
	s->max_rec = max > 0 ? (size_t)max : 64 << 10;
	/* Room for the record's own fields around a line. */
	s->max_line = s->max_rec > NAME_JSON_MAX + 64 ? s->max_rec - NAME_JSON_MAX - 64 : s->max_rec;
	s->wants_header = s->conf->format == FMT_TEXT && input_wants_header(in);
	if (s->conf->format == FMT_BINARY) {
		int64_t need = (s->conf->chunk_size + 2) / 3 * 4 + NAME_JSON_MAX + BIN_OVERHEAD;

		if (need > (int64_t)s->max_rec) {
			int64_t fit = ((int64_t)s->max_rec - NAME_JSON_MAX - BIN_OVERHEAD) / 4 * 3;

			/* Refused, and said so in status: nothing is read. */
			s->refused = true;
			note_error(s, "chunk_size %" PRId64 " makes records of up to %" PRId64
				   " bytes, more than max_record_bytes (%zu): use chunk_size = %" PRId64
				   " or less, or raise max_record_bytes; nothing is read", s->conf->chunk_size,
				   need, s->max_rec, fit > 0 ? fit : 0);
			input_set_state(in, "refused: chunk_size too large for max_record_bytes");
			*state = s;
			return 0;
		}
	}
	if (s->conf->failed_dir) {
		s->failed_dir = xstrdup(s->conf->failed_dir);
	} else {
		size_t n = strlen(s->conf->dir) + sizeof("/.failed");

		s->failed_dir = xmalloc(n);
		if (s->failed_dir)
			snprintf(s->failed_dir, n, "%s/.failed", s->conf->dir);
	}
	if (!s->failed_dir) {
		rc = -ENOMEM;
		goto out_stop;
	}
	watch_start(s);
	/* What is wrong (dir missing, done_dir on another filesystem) is
	 * shown in status and looked at again every poll_interval. */
	set_up(s);
	update_state(s);
	loop_timer_set(s->loop, &s->timer, 0);
	*state = s;
	return 0;

out_stop:
	spool_stop(in, s);
	return rc;
}

static void spool_resume(struct input *in, void *state)
{
	struct spool *s = state;

	(void)in;
	s->blocked = false;
	loop_timer_set(s->loop, &s->timer, 0);
}

/* Every record up to upto is durable: the files whose last record is among
 * them may go. */
static void spool_committed(struct input *in, void *state, uint64_t upto)
{
	struct spool *s = state;

	(void)in;
	s->committed_upto = upto;
	/* At once, not at the next turn: before a clean stop the core tells
	 * the driver what is committed, and the files go then. */
	if (!s->refused) {
		finish_files(s, loop_now_ms());
		drop_gone(s);
		update_state(s);
	}
	loop_timer_set(s->loop, &s->timer, 0);
}

const struct driver spool_driver = {
	.version = DRIVER_VERSION,
	.name = "spool",
	.help = "Takes whole files dropped into a directory (text lines or binary chunks) and removes or "
		"moves each once its records are committed.",
	.conf_keys = spool_keys,
	.conf_size = sizeof(struct spool_conf),
	.validate = spool_validate,
	.start = spool_start,
	.resume = spool_resume,
	.stop = spool_stop,
	.committed = spool_committed,
};
