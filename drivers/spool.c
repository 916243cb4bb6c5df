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
 * beside it; a failed removal or move is retried with backoff.
 *
 * This file is the driver itself: its keys, the directory and its watch,
 * finding files and deciding they are complete, and the tick that takes
 * them one at a time. spool_file.c reads the file taken and removes or
 * moves it once committed (spool.h).
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
#include <unistd.h>

#include "driver.h"
#include "spool.h"

struct spool_syscalls spool_sys = { pread, inotify_init1 };

/* A binary record's fields besides the file name and the base64 data. */
#define BIN_OVERHEAD 160
/* The longest file name (NAME_MAX), escaped in JSON at worst. */
#define NAME_JSON_MAX (255 * 6 + 2)
/* Files known at once at most (about 700 bytes each); the others wait
 * until some are done. */
#define MAX_FILES 10000

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

/* ---- utilities ------------------------------------------------------- */

void spool_note_error(struct spool *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	input_error(s->in, "%s", s->err);
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

static void file_free(struct sfile *f)
{
	if (!f)
		return;
	spool_file_close(f);
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

/* ---- directories ----------------------------------------------------- */

/* Create done_dir or failed_dir if missing, and check it can take files
 * from dir by rename(2): a directory on the same filesystem, not dir. */
static int check_target(struct spool *s, const char *key, const char *path, ino_t *ino)
{
	struct stat st;
	int rc = fs_mkdir_p(path);

	if (rc) {
		spool_note_error(s, "%s %s cannot be created: %s", key, path, strerror(-rc));
		return rc;
	}
	if (stat(path, &st) < 0) {
		spool_note_error(s, "%s %s: %s", key, path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		spool_note_error(s, "%s %s is not a directory", key, path);
		return -ENOTDIR;
	}
	if (st.st_dev != s->dev) {
		spool_note_error(s, "%s %s is on another filesystem than dir %s: files are moved by rename, "
			   "which cannot cross filesystems; use a directory on the same filesystem",
			   key, path, s->conf->dir);
		return -EXDEV;
	}
	if (st.st_ino == s->dir_ino) {
		spool_note_error(s, "%s %s is dir itself", key, path);
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
		spool_note_error(s, "dir %s: %s", s->conf->dir, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		spool_note_error(s, "dir %s is not a directory", s->conf->dir);
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
	f->seen_mtime_ns = f->mtime_ns = spool_ns_of(&st->st_mtim);
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

/* A new entry: what its saved position says about it. */
static void file_place(struct spool *s, struct sfile *f, const struct stat *st)
{
	struct saved p;

	if (!S_ISREG(st->st_mode)) {
		const char *what = S_ISDIR(st->st_mode) ? "a directory" : S_ISLNK(st->st_mode) ? "a symbolic link" :
				   S_ISFIFO(st->st_mode) ? "a FIFO" : S_ISSOCK(st->st_mode) ? "a socket" :
				   "a device";

		spool_file_fail(s, f, "not a regular file (%s)", what);
		f->last_ticket = 0;
		return;
	}
	if (!spool_load_position(s, f, &p))
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
	    spool_path_of(path, sizeof(path), s->conf->dir, name))
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
		if (f->seen_size != (int64_t)st.st_size || f->seen_mtime_ns != spool_ns_of(&st.st_mtim)) {
			f->seen_size = (int64_t)st.st_size;
			f->seen_mtime_ns = spool_ns_of(&st.st_mtim);
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
		spool_note_error(s, "out of memory for %s", name);
		return NULL;
	}
	fs_birth_ns(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, &f->btime_ns);
	file_place(s, f, &st);
	return f;
}

static void scan(struct spool *s)
{
	DIR *d = opendir(s->conf->dir);
	struct dirent *e;

	s->last_scan = loop_now_ms();
	if (!d) {
		spool_note_error(s, "cannot list dir %s: %s", s->conf->dir, strerror(errno));
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

			if (!spool_path_of(path, sizeof(path), s->conf->dir, e->d_name))
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
	if (spool_path_of(path, sizeof(path), s->conf->dir, f->name) || lstat(path, &st) < 0) {
		f->state = SF_GONE;
		return false;
	}
	if ((uint64_t)st.st_ino != f->ino || (uint64_t)st.st_dev != f->dev) {
		f->state = SF_GONE;     /* the name is another file now: found by the next scan */
		s->want_scan = true;
		return false;
	}
	if ((int64_t)st.st_size != f->seen_size || spool_ns_of(&st.st_mtim) != f->seen_mtime_ns) {
		f->seen_size = (int64_t)st.st_size;
		f->seen_mtime_ns = spool_ns_of(&st.st_mtim);
		f->changed_at = now;
		return s->conf->ready == READY_RENAME;
	}
	return true;
}

/* ---- inotify --------------------------------------------------------- */

/* What spool_inotify() hands to each event. */
struct spool_events {
	struct spool *s;
	int64_t now;
};

static void spool_event(const struct inotify_event *ev, void *arg)
{
	struct spool_events *e = arg;
	struct spool *s = e->s;
	int64_t now = e->now;
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
		/* A look now, so that the next listing does not take this
		 * change for a later one. */
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
}

static void spool_inotify(struct loop_fd *w, unsigned revents)
{
	struct spool_events e = { container_of(w, struct spool, ino), loop_now_ms() };

	(void)revents;
	if (fs_inotify_read(w->fd, spool_event, &e))
		loop_timer_set(e.s->loop, &e.s->timer, 0);
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

/* ---- the tick -------------------------------------------------------- */

static void drop_gone(struct spool *s)
{
	size_t j = 0;

	for (size_t i = 0; i < s->n_files; i++) {
		if (s->files[i]->state == SF_GONE) {
			/* Gone from dir before it was finished: its position
			 * is of no use any more. */
			if (s->files[i]->has_pos)
				spool_forget_position(s, s->files[i]);
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
	spool_finish_files(s, now);
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
			if (cur && spool_file_open(s, cur)) {
				cur = NULL;
				more = true;
			}
		}
		if (cur && cur->state == SF_READING)
			more = spool_read_slice(s, cur) || more;
		if (cur && cur->state == SF_COMMITTING)
			spool_finish_files(s, now);
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
			spool_note_error(s, "chunk_size %" PRId64 " makes records of up to %" PRId64
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
		spool_finish_files(s, loop_now_ms());
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
