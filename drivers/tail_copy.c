/* tail_copy.c - the tail driver at a copy-truncate rotation: finds the
 * rotated copy of a truncated file (plain or gzipped, by the fingerprint of
 * its head and the bytes read last), reads gzipped copies through zlib, and
 * tells the core of what no copy holds with a gap marker.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tail.h"

/* gzseek() and gztell() take and give z_off_t: a zlib.h that disagrees with
 * the library about it (an unconfigured zconf.h on a 32-bit target) would
 * pass offsets that the library reads wrongly. */
_Static_assert(sizeof(z_off_t) == sizeof(off_t), "z_off_t is not off_t: zconf.h does not match zlib");

/* tail_pread_full() of f's content: through zlib for a gzipped copy (which
 * reads forward cheaply; a seek back decompresses from the start). */
ssize_t tail_file_pread(struct tail_file *f, void *p, size_t len, int64_t off)
{
	size_t got = 0;

	if (!f->gz)
		return tail_pread_full(f->fd, p, len, off);
	if (gztell(f->gz) != off && gzseek(f->gz, (z_off_t)off, SEEK_SET) != off)
		return -EIO;
	while (got < len) {
		int n = gzread(f->gz, (char *)p + got, (unsigned)(len - got > 1u << 30 ? 1u << 30 : len - got));

		if (n < 0)
			return -EIO;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Do the bytes of fd at off equal want[0..len)? */
static bool bytes_at(int fd, int64_t off, const unsigned char *want, size_t len)
{
	unsigned char now[FP_LEN];

	return len <= sizeof(now) && tail_pread_full(fd, now, len, off) == (ssize_t)len &&
	       !memcmp(now, want, len);
}

static bool has_ext(const char *name, const char *ext)
{
	size_t n = strlen(name), e = strlen(ext);

	return n > e && !strcmp(name + n - e, ext);
}

/* Compressed in a format the driver does not read. */
static bool is_unreadable_compressed(const char *name)
{
	static const char *const ext[] = { ".xz", ".bz2", ".zst", ".lz4", ".lzma", ".lzo", ".Z",
					   NULL };

	for (int i = 0; ext[i]; i++)
		if (has_ext(name, ext[i]))
			return true;
	return false;
}

/* Does the gzip file fd hold o's old generation (its head, and at least
 * up to o->off by the size in its trailer)? *gz is opened on a dup of fd. */
static bool gz_matches(int fd, const struct stat *st, const struct old_gen *o, gzFile *gz)
{
	unsigned char head[FP_LEN], tr[4];
	uint32_t isize;
	int dfd;

	if (st->st_size < 18 || tail_pread_full(fd, tr, 4, st->st_size - 4) != 4)
		return false;
	isize = (uint32_t)tr[0] | (uint32_t)tr[1] << 8 | (uint32_t)tr[2] << 16 | (uint32_t)tr[3] << 24;
	/* The trailer holds the size modulo 2^32. */
	if (o->off < ((int64_t)1 << 32) && isize < o->off)
		return false;
	dfd = dup(fd);
	if (dfd < 0)
		return false;
	*gz = gzdopen(dfd, "rb");
	if (!*gz) {
		close(dfd);
		return false;
	}
	if (gzread(*gz, head, (unsigned)o->fp_len) == (int)o->fp_len && !memcmp(head, o->fp, o->fp_len))
		return true;
	gzclose(*gz);
	*gz = NULL;
	return false;
}

/* A rotated copy of f's old generation in f's directory. */
struct copy {
	int fd;
	gzFile gz;                 /* a gzipped copy */
	char *path;
	int64_t size;              /* of its content; -1 unknown (gzip) */
	struct timespec mtime;
	bool unreadable;           /* a compressed file made since the last
				    * look exists, in a format not read */
};

static void copy_release(struct copy *c)
{
	if (c->gz)
		gzclose(c->gz);
	if (c->fd >= 0)
		close(c->fd);
	xfree(c->path);
	c->fd = -1;
	c->gz = NULL;
	c->path = NULL;
}

static bool newer(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/* Is the file dir/name (st, open as fd) a copy of o, and a better one
 * than *best (a plain copy before a gzipped one, then the newest)? */
static bool better_copy(int fd, const struct stat *st, const struct old_gen *o, const char *name,
			const struct copy *best, gzFile *gz)
{
	bool is_gz = has_ext(name, ".gz");

	*gz = NULL;
	if (best->fd >= 0 && ((!is_gz && best->gz) ? false : (is_gz && !best->gz) ? true
			      : !newer(&st->st_mtim, &best->mtime)))
		return false;
	if (is_gz)
		return gz_matches(fd, st, o, gz);
	return st->st_size >= o->off && st->st_size >= (int64_t)o->fp_len &&
	       bytes_at(fd, 0, o->fp, o->fp_len) &&
	       (!o->mark_len || (st->st_size >= o->mark_end &&
				 bytes_at(fd, o->mark_end - (int64_t)o->mark_len, o->mark, o->mark_len)));
}

/* The rotated copy of f's old generation: another regular file in f's
 * directory that begins with the old fingerprint, reaches at least to the
 * old offset and holds the bytes remembered before it; plain or gzipped;
 * the newest such file. Returns 1 with *c filled, 0 when there is none,
 * or -errno. */
static int find_copy(struct tail *t, const struct tail_file *f, const struct old_gen *o,
		     struct copy *c)
{
	const char *slash = strrchr(f->path, '/');
	const char *base = slash ? slash + 1 : f->path;
	char dir[4096], *path;
	struct dirent *de;
	DIR *d;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (!slash || !o->fp_len || (size_t)(slash - f->path) >= sizeof(dir))
		return 0;
	memcpy(dir, f->path, (size_t)(slash - f->path));
	dir[slash - f->path] = '\0';
	d = opendir(dir[0] ? dir : "/");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct stat st;
		gzFile gz;
		int fd;

		if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode) ||
		    ((uint64_t)st.st_dev == f->dev && (uint64_t)st.st_ino == f->ino) ||
		    tail_find_file(t, st.st_dev, st.st_ino))
			continue;
		if (is_unreadable_compressed(de->d_name)) {
			c->unreadable |= !strncmp(de->d_name, base, strlen(base)) &&
					 (o->looked.tv_sec || o->looked.tv_nsec) &&
					 newer(&st.st_ctim, &o->looked);
			continue;
		}
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
		if (fd < 0)
			continue;
		if (!better_copy(fd, &st, o, de->d_name, c, &gz) ||
		    !(path = xmalloc(strlen(dir) + strlen(de->d_name) + 2))) {
			if (gz)
				gzclose(gz);
			close(fd);
			continue;
		}
		sprintf(path, "%s/%s", dir, de->d_name);
		copy_release(c);
		c->fd = fd;
		c->gz = gz;
		c->path = path;
		c->mtime = st.st_mtim;
		c->size = gz ? -1 : st.st_size;
	}
	closedir(d);
	return c->fd >= 0;
}

/* Remember a loss of f's old generation, told to the core by tail_emit_gap(). */
void tail_set_gap(struct tail_file *f, const struct old_gen *o, int64_t off, int64_t len,
		    const char *reason)
{
	f->gap_pending = true;
	f->gap_off = off;
	f->gap_len = len;
	snprintf(f->gap_reason, sizeof(f->gap_reason), "%s", reason);
	snprintf(f->gap_key, sizeof(f->gap_key), "gap:tail:%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":%" PRId64,
		 f->dev, f->ino, o->gen, off);
}

/* f was found truncated (or changed while the agent was stopped) with its
 * old generation o: read what o's rotated copy holds past o->off first, and
 * count what no copy holds. f itself already starts its new generation. */
void tail_recover(struct tail *t, struct tail_file *f, const struct old_gen *o)
{
	struct tail_file *n;
	struct copy c;
	int rc = find_copy(t, f, o, &c);

	if (rc < 0)
		tail_note_error(t, "cannot look for the rotated copy of %s: %s", f->path, strerror(-rc));
	if (rc <= 0) {
		if (c.unreadable)
			tail_set_gap(f, o, o->off, o->size > o->off ? o->size - o->off : -1,
				"copy_compressed");
		else if (o->size > o->off)
			tail_set_gap(f, o, o->off, o->size - o->off, "truncated_unread");
		return;
	}
	if (c.size >= 0 && o->size > c.size)
		tail_set_gap(f, o, c.size, o->size - c.size, "written_after_copy");
	if (c.size == o->off) {
		/* Read to its end before it was cut: nothing to recover. */
		copy_release(&c);
		return;
	}
	n = xcalloc(1, sizeof(*n));
	if (!n) {
		tail_set_gap(f, o, o->off, c.size >= 0 ? c.size - o->off : -1, "truncated_unread");
		tail_note_error(t, "cannot read the rotated copy %s: %s", c.path, strerror(ENOMEM));
		copy_release(&c);
		return;
	}
	log_info("input %s: reading what %s held from offset %" PRId64 " on from its rotated copy %s",
		 input_name(t->in), f->path, o->off, c.path);
	n->t = t;
	n->fd = c.fd;
	n->gz = c.gz;
	n->path = c.path;
	n->dev = f->dev;
	n->ino = f->ino;
	n->gen = o->gen;
	n->offset = o->off;
	n->is_copy = true;
	/* The copy is complete before the truncation: read it to its end,
	 * unterminated last line included, without waiting. */
	n->gone = true;
	n->last_growth = INT64_MIN / 2;
	memcpy(n->fp, o->fp, o->fp_len);
	n->fp_len = o->fp_len;
	n->seen_size = c.size;
	n->max_size = o->size > c.size ? o->size : c.size;
	tail_file_set_key_prefix(n);
	tail_file_reset_buffer(n, n->offset);
	f->copy = n;
}

/* Lost data stays shown: the last error ages, the state does not. */
static void show_loss(struct tail *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void show_loss(struct tail *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->reported, sizeof(t->reported), fmt, ap);
	va_end(ap);
	input_error(t->in, "%s", t->reported);
	t->error_sticky = true;
}

static const char *gap_why(const char *reason)
{
	if (!strcmp(reason, "written_after_copy"))
		return "written after logrotate's copy was made and before the truncation";
	if (!strcmp(reason, "copy_compressed"))
		return "truncated before it was read; its rotated copy is compressed in a format agentd does not read";
	if (!strcmp(reason, "copy_unreadable"))
		return "its gzipped rotated copy ends early or is damaged";
	return "truncated before it was read, and no rotated copy holds it";
}

/* Tell the core of f's pending gap. 0, -EAGAIN or -errno. */
int tail_emit_gap(struct tail *t, struct tail_file *f)
{
	int rc;

	if (!f->gap_pending)
		return 0;
	rc = input_gap(t->in, f->path, f->gap_off, f->gap_len, f->gap_reason, f->gap_key);
	if (rc == -EAGAIN) {
		t->blocked = true;
		return rc;
	}
	if (rc) {
		tail_note_error(t, "cannot queue the gap marker of %s: %s", f->path, strerror(-rc));
		return rc;
	}
	f->gap_pending = false;
	f->dirty = true;
	t->gaps++;
	if (f->gap_len >= 0)
		t->lost_bytes += f->gap_len;
	else
		t->unknown_gaps++;
	if (f->gap_len >= 0)
		show_loss(t, "%" PRId64 " bytes of %s from offset %" PRId64 " are lost (%s); a gap marker tells the lake",
			  f->gap_len, f->path, f->gap_off, gap_why(f->gap_reason));
	else
		show_loss(t, "what %s held from offset %" PRId64 " on is lost (%s); a gap marker tells the lake",
			  f->path, f->gap_off, gap_why(f->gap_reason));
	return 0;
}

/* The next bytes of a gzipped copy, as file_read() does for a plain file. */
ssize_t tail_gz_read(struct tail *t, struct tail_file *f, size_t want)
{
	ssize_t n;

	int64_t at = f->buf_off + (int64_t)f->len, now = gztell(f->gz);

	/* Decompress up to where reading starts one chunk at a time
	 * (counted as read), so a long copy does not hold the loop. */
	if (now >= 0 && now < at) {
		n = gzread(f->gz, f->buf + f->len,
			   (unsigned)(at - now < (int64_t)want ? at - now : (int64_t)want));
		if (n < 0) {
			tail_note_error(t, "cannot read %s: %s", f->path, gzerror(f->gz, NULL));
			return -EIO;
		}
		return n;
	}
	n = tail_file_pread(f, f->buf + f->len, want, at);
	if (n < 0) {
		tail_note_error(t, "cannot read %s: %s", f->path, gzerror(f->gz, NULL));
		return n;
	}
	f->len += (size_t)n;
	return n;
}

void tail_gz_close(struct tail_file *f)
{
	gzclose(f->gz);
	f->gz = NULL;
}
