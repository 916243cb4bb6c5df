/* spool.h - the spool driver's own parts, shared by its files: spool.c (the
 * driver: its keys, start and stop, the directory, finding files and
 * deciding they are complete, the tick) and spool_file.c (one file taken:
 * reading it into records, its saved position, and removing it or moving
 * it to done_dir or failed_dir with the reason). Nothing outside
 * drivers/spool*.c and their tests includes it.
 *
 * It also holds the seam for tests: the read that durability depends on,
 * and the start of inotify, go through spool_sys, so a test can make them
 * fail (EIO the way a dying SD card does; no inotify).
 */
#ifndef DRIVERS_SPOOL_H
#define DRIVERS_SPOOL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "driver.h"

struct spool_syscalls {
	ssize_t (*pread)(int fd, void *buf, size_t count, off_t offset);
	int (*inotify_init1)(int flags);
};
extern struct spool_syscalls spool_sys;

/* Bytes of a file's head, and of what precedes the offset reached, kept to
 * tell whether a file that changed while it was read still holds what was
 * sent. */
#define FP_LEN 64
/* An over-long line goes to the dead-letter queue with this much of it. */
#define LONG_KEEP 4096
/* A committed file is renamed to this (and its inode) in dir, then removed. */
#define REMOVE_PREFIX ".spool-remove-"

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

/* A file's saved position (spool_load_position()). */
struct saved {
	int64_t size, mtime_ns, btime_ns, offset, line_no, index;
	int done;
	unsigned char head[FP_LEN], mark[FP_LEN];
	size_t head_len, mark_len;
	char name[256];
};

static inline int64_t spool_ns_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* dir/name into out: 0, or -ENAMETOOLONG. */
static inline int spool_path_of(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* spool.c */
/* Make a problem the input's last error (logged by the core, rate-limited). */
void spool_note_error(struct spool *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* spool_file.c */
/* Fail a file: it goes to failed_dir once what was sent of it is committed. */
void spool_file_fail(struct spool *s, struct sfile *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Close a file's descriptor and drop what was read of it and not handed over. */
void spool_file_close(struct sfile *f);
/* A saved position of f: true with *p filled, false when there is none
 * that can be used (a problem is noted or logged). */
bool spool_load_position(struct spool *s, const struct sfile *f, struct saved *p);
void spool_forget_position(struct spool *s, const struct sfile *f);
/* Open the file taken and check it is the one seen: 0, or it failed or
 * went away (its state says which). */
int spool_file_open(struct spool *s, struct sfile *f);
/* Read one slice of the file being read: true when there is more to do now. */
bool spool_read_slice(struct spool *s, struct sfile *f);
/* Remove or move the files whose records are committed; retry with backoff
 * those that could not be. */
void spool_finish_files(struct spool *s, int64_t now);

#endif
