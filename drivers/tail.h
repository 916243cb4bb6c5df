/* tail.h - the tail driver's own parts, shared by its files: tail.c (the
 * driver: patterns, files, lines, positions), tail_watch.c (inotify on the
 * directories, or polling) and tail_copy.c (the rotated copy of a
 * copy-truncated file, and what is lost). Nothing outside drivers/tail*.c
 * includes it.
 */
#ifndef DRIVERS_TAIL_H
#define DRIVERS_TAIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "driver.h"

/* Bytes of a file's head that identify it across restarts and reveal a
 * truncation or an inode reused by another file. */
#define FP_LEN 64

enum { START_HEAD, START_END };

struct tail_conf {
	char *path;
	int start_at;
	int64_t poll_interval_ms;
	int64_t rotate_wait_ms;
	int64_t read_chunk;
	int64_t max_lines_per_tick;
	int64_t max_bytes_per_tick;
};

struct tail_file {
	struct tail *t;
	char *path;
	int fd;
	uint64_t dev, ino, gen;
	char source[48];          /* "<dev>:<ino>", the position's name */
	char key[96];             /* "tail:<dev>:<ino>:<gen>:", offset appended */
	size_t key_len;
	int64_t offset;           /* start of the next line to hand over */
	/* Bytes read and not yet handed over: buf[0] is at file offset
	 * buf_off; buf[pos] is at `offset` except inside an over-long line,
	 * where the buffer only scans for that line's end. */
	char *buf;
	size_t cap, len, pos, scan;
	int64_t buf_off;
	bool in_long;             /* the line at `offset` exceeds the limit */
	bool long_nl;             /* ... and ends with a newline at long_end */
	int64_t long_end;         /* its end (newline or EOF), -1 while unknown */
	unsigned char fp[FP_LEN];
	size_t fp_len;
	int64_t seen_size;
	int64_t max_size;         /* largest size seen in this generation */
	struct timespec seen_mtime, seen_ctime;
	/* The bytes just before mark_end (<= offset), to tell the right
	 * rotated copy from another with the same head. */
	unsigned char mark[FP_LEN];
	size_t mark_len;
	int64_t mark_end;
	/* Copy-truncate: the rotated copy read first (its own fd, path and
	 * buffer; this file's identity and old generation in its keys). */
	struct tail_file *copy;
	struct gzFile_s *gz;      /* a gzipped copy, read through zlib */
	bool is_copy;
	bool retruncated;         /* truncated again while its copy is read */
	/* A gap marker not yet accepted by the core. */
	bool gap_pending;
	int64_t gap_off, gap_len;
	char gap_reason[32];
	char gap_key[112];
	int64_t last_growth;      /* monotonic ms */
	char *header;             /* csv header line, without newline */
	size_t header_len;
	bool have_header;
	bool seen;                /* matched by the current scan */
	bool gone;                /* no longer matched, or deleted */
	bool deleted;
	bool dirty;               /* position changed since last saved */
	bool finished;            /* gone and read to its end: close it */
};

struct tail {
	struct input *in;
	const struct tail_conf *conf;
	struct loop *loop;
	struct loop_timer timer;
	char **patterns;
	size_t n_patterns;
	struct tail_file **files;
	size_t n_files, cap_files;
	size_t rr;                /* first file served next tick, for fairness */
	size_t max_line, chunk, cap_max;
	bool wants_header;
	const struct tail_file *header_owner; /* whose header the core holds */
	bool blocked;
	int64_t last_scan;
	char err[256];            /* first problem of this tick */
	char scan_err[256];       /* ... of the last scan, shown until the next */
	char reported[256];       /* the error the core currently shows */
	size_t shown_files, shown_gone;
	bool shown_blocked, state_shown;
	bool error_sticky;        /* a loss is shown: ticks without errors keep it */
	int64_t lost_bytes;
	size_t gaps, shown_gaps, unknown_gaps;
	/* inotify on the directories of the patterns and of the files read */
	struct loop_fd ino;
	bool polling;
	char poll_why[80];
	struct watch {
		int wd;
		char *dir;
	} *watches;
	size_t n_watches, cap_watches;
	bool want_scan;
};

struct budget {
	int64_t lines, bytes;
};

/* What is known of a file's previous generation when it is found
 * truncated: where reading stopped, how it began and how long it was. */
struct old_gen {
	int64_t off;               /* the first byte not handed over */
	uint64_t gen;
	unsigned char fp[FP_LEN];
	size_t fp_len;
	unsigned char mark[FP_LEN]; /* the bytes before mark_end, if known */
	size_t mark_len;
	int64_t mark_end;
	int64_t size;              /* largest size seen; -1 unknown */
	struct timespec looked;    /* its ctime when last looked at; 0 unknown */
};

/* tail.c */
void tail_note_error(struct tail *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ssize_t tail_pread_full(int fd, void *p, size_t len, int64_t off);
struct tail_file *tail_find_file(struct tail *t, uint64_t dev, uint64_t ino);
void tail_file_set_key_prefix(struct tail_file *f);
void tail_file_reset_buffer(struct tail_file *f, int64_t off);

/* tail_watch.c: watch the directory path[0..len) / of the file path.
 * Without inotify these do nothing; the timer polls. */
void tail_watch_start(struct tail *t);
void tail_watch_stop(struct tail *t);
void tail_watch_dir(struct tail *t, const char *path, size_t len);
void tail_watch_file_dir(struct tail *t, const char *path);

/* tail_copy.c */
/* f was found truncated with its old generation o: read what o's rotated
 * copy holds first (f->copy), count what no copy holds (a pending gap). */
void tail_recover(struct tail *t, struct tail_file *f, const struct old_gen *o);
/* Remember a loss of bytes [off, off + len) of o (len -1: unknown). */
void tail_set_gap(struct tail_file *f, const struct old_gen *o, int64_t off, int64_t len,
		  const char *reason);
/* Tell the core of f's pending gap: 0, -EAGAIN or -errno. */
int tail_emit_gap(struct tail *t, struct tail_file *f);
/* Read f's content (gzipped or not) like pread. Bytes, or -errno. */
ssize_t tail_file_pread(struct tail_file *f, void *p, size_t len, int64_t off);
/* The next bytes of a gzipped copy, for file_read(). */
ssize_t tail_gz_read(struct tail *t, struct tail_file *f, size_t want);
void tail_gz_close(struct tail_file *f);

#endif
