/* tail_watch.c - the tail driver's inotify watches on the directories of
 * its patterns and files: any change there wakes the driver at once, so data
 * is read as it arrives. Without inotify, the driver's timer polls.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "tail.h"

/* The calls whose failure switches the driver to polling, through a table
 * so that tests can make them fail (no inotify, watch limit reached). */
struct tail_syscalls {
	int (*inotify_init1)(int flags);
	int (*inotify_add_watch)(int fd, const char *path, uint32_t mask);
};
struct tail_syscalls tail_sys = { inotify_init1, inotify_add_watch };

/* Changes in a directory that may mean new data or another file. */
#define WATCH_MASK (IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | \
		    IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
/* ... of which these may change which files the patterns match. */
#define RESCAN_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | \
		     IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW | IN_IGNORED)

static void free_watches(struct tail *t)
{
	for (size_t i = 0; i < t->n_watches; i++)
		xfree(t->watches[i].dir);
	xfree(t->watches);
	t->watches = NULL;
	t->n_watches = t->cap_watches = 0;
}

/* Without inotify, changes are found by looking every poll_interval. */
static void poll_instead(struct tail *t, int err)
{
	if (t->polling)
		return;
	t->polling = true;
	if (err == ENOSPC)
		snprintf(t->poll_why, sizeof(t->poll_why),
			 "inotify watch limit reached, see fs.inotify.max_user_watches");
	else if (err == EMFILE)
		snprintf(t->poll_why, sizeof(t->poll_why),
			 "inotify instance limit reached, see fs.inotify.max_user_instances");
	else
		snprintf(t->poll_why, sizeof(t->poll_why), "inotify unavailable: %s", strerror(err));
	log_warn("input %s: %s; checking the files every poll_interval (%" PRId64 " ms) instead",
		 input_name(t->in), t->poll_why, t->conf->poll_interval_ms);
	tail_watch_stop(t);
	t->state_shown = false;
}

/* Watch a directory (dir[0..len)) for changes to the files in it. A
 * directory that cannot be watched yet (missing, no permission) is tried
 * again at the next scan. */
void tail_watch_dir(struct tail *t, const char *path, size_t len)
{
	char dir[4096];
	int wd;

	if (t->ino.fd < 0 || !len || len >= sizeof(dir))
		return;
	memcpy(dir, path, len);
	dir[len] = '\0';
	for (size_t i = 0; i < t->n_watches; i++)
		if (!strcmp(t->watches[i].dir, dir))
			return;
	wd = tail_sys.inotify_add_watch(t->ino.fd, dir, WATCH_MASK);
	if (wd < 0) {
		if (errno == ENOSPC || errno == ENOMEM)
			poll_instead(t, errno);
		return;
	}
	if (t->n_watches == t->cap_watches) {
		size_t n = t->cap_watches ? 2 * t->cap_watches : 4;
		struct watch *v = xrealloc(t->watches, n * sizeof(*v));

		if (!v)
			goto out_rm;
		t->watches = v;
		t->cap_watches = n;
	}
	t->watches[t->n_watches].dir = xstrdup(dir);
	if (!t->watches[t->n_watches].dir)
		goto out_rm;
	t->watches[t->n_watches++].wd = wd;
	return;

out_rm:
	inotify_rm_watch(t->ino.fd, wd);
}

void tail_watch_file_dir(struct tail *t, const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash)
		tail_watch_dir(t, path, slash == path ? 1 : (size_t)(slash - path));
}

static void drop_watch(struct tail *t, int wd)
{
	size_t j = 0;

	for (size_t i = 0; i < t->n_watches; i++) {
		if (t->watches[i].wd == wd)
			xfree(t->watches[i].dir);
		else
			t->watches[j++] = t->watches[i];
	}
	t->n_watches = j;
}

static void tail_event(const struct inotify_event *ev, void *arg)
{
	struct tail *t = arg;

	if (ev->mask & RESCAN_MASK)
		t->want_scan = true;
	if (ev->mask & IN_IGNORED)
		drop_watch(t, ev->wd);
}

/* Something changed in a watched directory: look now. */
static void tail_inotify(struct loop_fd *w, unsigned revents)
{
	struct tail *t = container_of(w, struct tail, ino);

	(void)revents;
	if (fs_inotify_read(w->fd, tail_event, t) && !t->blocked)
		loop_timer_set(t->loop, &t->timer, 0);
}

/* Watch with inotify, or say why the files are polled instead. */
void tail_watch_start(struct tail *t)
{
	int rc;

	t->ino.fd = tail_sys.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (t->ino.fd < 0) {
		poll_instead(t, errno);
		return;
	}
	t->ino.events = LOOP_READ;
	t->ino.cb = tail_inotify;
	rc = loop_fd_add(t->loop, &t->ino);
	if (rc) {
		close(t->ino.fd);
		t->ino.fd = -1;
		poll_instead(t, -rc);
	}
}

void tail_watch_stop(struct tail *t)
{
	if (t->ino.fd >= 0) {
		loop_fd_del(t->loop, &t->ino);
		close(t->ino.fd);
		t->ino.fd = -1;
	}
	free_watches(t);
}
