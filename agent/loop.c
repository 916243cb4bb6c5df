/* loop.c - the single event loop: epoll for fds, a short list for timers.
 *
 * Timers are few (one or two per input and output), so an unsorted list
 * scanned once per iteration is simpler than a heap and just as fast.
 * Signals are turned into bytes on a self-pipe by the handler and dispatched
 * from the loop to each signal's own handlers, so no real work ever runs in
 * signal context and a driver watching SIGCHLD takes nothing from main.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "mem.h"

#define MAX_EVENTS 64

struct loop {
	int epfd;
	bool stop;
	struct loop_timer *timers;
	struct loop_timer *due;   /* unlinked for firing in this pass */
	int sigpipe[2];
	struct loop_fd sigwatch;
	struct loop_signal *signals;
	struct loop_child *children;
	struct loop_signal chld;      /* SIGCHLD, while children are watched */
	struct loop_timer child_check; /* a child may have exited before its watch */
	/* Events of the current iteration, so a watch deleted by an earlier
	 * callback of the same batch is not dispatched after it was freed. */
	struct epoll_event *cur;
	int ncur;
};

/* The write end of the self-pipe, for the async-signal-safe handler. */
static int sig_write_fd = -1;

static int64_t sys_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64: tiny, fast and good enough for jitter; not for secrets. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t sys_random(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static const struct loop_clock sys_clock = {
	.now_ms = sys_now_ms,
	.wall_ms = sys_wall_ms,
	.boot_ms = sys_boot_ms,
	.random = sys_random,
};

static struct loop_clock clock_now = {
	.now_ms = sys_now_ms,
	.wall_ms = sys_wall_ms,
	.boot_ms = sys_boot_ms,
	.random = sys_random,
};

void loop_clock_set(const struct loop_clock *c)
{
	clock_now = sys_clock;
	if (!c)
		return;
	if (c->now_ms)
		clock_now.now_ms = c->now_ms;
	if (c->wall_ms)
		clock_now.wall_ms = c->wall_ms;
	if (c->boot_ms)
		clock_now.boot_ms = c->boot_ms;
	if (c->random)
		clock_now.random = c->random;
}

void loop_random_seed(uint64_t seed)
{
	rng_state = seed;
}

void loop_random_seed_system(void)
{
	uint64_t seed;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = (uint64_t)sys_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)sys_now_ms();
	loop_random_seed(seed);
}

int64_t loop_now_ms(void)
{
	return clock_now.now_ms();
}

int64_t loop_wall_ms(void)
{
	return clock_now.wall_ms();
}

int64_t loop_boot_ms(void)
{
	return clock_now.boot_ms();
}

uint32_t loop_random(void)
{
	return clock_now.random();
}

int loop_init(struct loop **out)
{
	struct loop *l = xcalloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->sigpipe[0] = l->sigpipe[1] = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int err = -errno;

		xfree(l);
		return err;
	}
	*out = l;
	return 0;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	if (l->sigpipe[0] >= 0) {
		sig_write_fd = -1;
		close(l->sigpipe[0]);
		close(l->sigpipe[1]);
	}
	close(l->epfd);
	xfree(l);
}

static uint32_t to_epoll(unsigned events)
{
	return (events & LOOP_READ ? EPOLLIN : 0) |
	       (events & LOOP_WRITE ? EPOLLOUT : 0);
}

int loop_fd_add(struct loop *l, struct loop_fd *w)
{
	struct epoll_event ev = { .events = to_epoll(w->events), .data.ptr = w };

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	w->added = true;
	return 0;
}

int loop_fd_update(struct loop *l, struct loop_fd *w, unsigned events)
{
	struct epoll_event ev = { .events = to_epoll(events), .data.ptr = w };

	if (w->added && w->events == events)
		return 0;
	w->events = events;
	if (!w->added)
		return loop_fd_add(l, w);
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_fd_del(struct loop *l, struct loop_fd *w)
{
	if (!w->added)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->added = false;
	for (int i = 0; i < l->ncur; i++)
		if (l->cur[i].data.ptr == w)
			l->cur[i].data.ptr = NULL;
}

/* Take t off the list of timers firing in this pass; true if it was there. */
static bool unlink_due(struct loop *l, struct loop_timer *t)
{
	for (struct loop_timer **pp = &l->due; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			t->next = NULL;
			return true;
		}
	}
	return false;
}

void loop_timer_set(struct loop *l, struct loop_timer *t, int64_t delay_ms)
{
	if (!t->armed)
		unlink_due(l, t);
	if (delay_ms < 0)
		delay_ms = 0;
	t->due = loop_now_ms() + delay_ms;
	t->period = 0;
	if (!t->armed) {
		t->next = l->timers;
		l->timers = t;
		t->armed = true;
	}
}

void loop_timer_at(struct loop *l, struct loop_timer *t, int64_t due_ms)
{
	loop_timer_set(l, t, 0);
	t->due = due_ms;
	t->period = 0;
}

void loop_timer_every(struct loop *l, struct loop_timer *t, int64_t first_due_ms,
		      int64_t period_ms)
{
	loop_timer_at(l, t, first_due_ms);
	t->period = period_ms > 0 ? period_ms : 1;
}

int64_t loop_next_multiple(int64_t now_ms, int64_t period_ms)
{
	if (period_ms <= 0)
		return now_ms;
	return (now_ms / period_ms + 1) * period_ms;
}

/* The next deadline of an every-timer that fired for t->due: the first of
 * due + k * period that is not in the past. */
static void rearm_every(struct loop *l, struct loop_timer *t, int64_t now)
{
	int64_t next = t->due + t->period;

	if (next < now) {
		int64_t skip = (now - next) / t->period;

		next += skip * t->period;
		t->missed += skip;
		if (next < now) {
			next += t->period;
			t->missed++;
		}
	}
	loop_timer_every(l, t, next, t->period);
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	struct loop_timer **pp;

	/* A timer due in the current pass is on l->due: a callback may
	 * cancel (and free) another timer that is due in the same pass. */
	if (unlink_due(l, t) || !t->armed)
		return;
	for (pp = &l->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->armed = false;
	t->next = NULL;
}

static void on_signal(int signo)
{
	int saved = errno;
	unsigned char b = (unsigned char)signo;

	if (sig_write_fd >= 0 && write(sig_write_fd, &b, 1) < 0) {
		/* Pipe full: a signal of this burst is already pending. */
	}
	errno = saved;
}

static void sigpipe_cb(struct loop_fd *w, unsigned revents)
{
	struct loop *l = container_of(w, struct loop, sigwatch);
	unsigned char buf[32];
	ssize_t n;

	(void)revents;
	while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			struct loop_signal *s = l->signals, *next;

			/* A handler may delete itself (or the next one). */
			for (; s; s = next) {
				next = s->next;
				if (s->signo == buf[i])
					s->cb(s);
			}
		}
	}
}

static bool watched(const struct loop *l, int signo)
{
	for (const struct loop_signal *s = l->signals; s; s = s->next)
		if (s->signo == signo)
			return true;
	return false;
}

int loop_signal_add(struct loop *l, struct loop_signal *s)
{
	struct sigaction sa;
	int err;

	if (s->added)
		return 0;
	if (s->signo <= 0 || s->signo > 255)
		return -EINVAL;
	if (l->sigpipe[0] < 0) {
		if (pipe2(l->sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
			return -errno;
		l->sigwatch.fd = l->sigpipe[0];
		l->sigwatch.events = LOOP_READ;
		l->sigwatch.cb = sigpipe_cb;
		err = loop_fd_add(l, &l->sigwatch);
		if (err)
			return err;
		sig_write_fd = l->sigpipe[1];
	}
	if (!watched(l, s->signo)) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sa.sa_flags = SA_RESTART | (s->signo == SIGCHLD ? SA_NOCLDSTOP : 0);
		sigemptyset(&sa.sa_mask);
		if (sigaction(s->signo, &sa, NULL) < 0)
			return -errno;
	}
	s->next = l->signals;
	l->signals = s;
	s->added = true;
	return 0;
}

void loop_signal_del(struct loop *l, struct loop_signal *s)
{
	if (!s->added)
		return;
	for (struct loop_signal **pp = &l->signals; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->added = false;
	s->next = NULL;
	if (!watched(l, s->signo))
		signal(s->signo, SIG_DFL);
}

/* Reap the watched children that have exited; each watch ends with its
 * callback. Children nobody watches are left to whoever started them. */
static void reap_children(struct loop *l)
{
	struct loop_child **pp = &l->children;

	while (*pp) {
		struct loop_child *c = *pp;
		int st = 0;
		pid_t r = waitpid(c->pid, &st, WNOHANG);

		if (r == c->pid || (r < 0 && errno == ECHILD)) {
			*pp = c->next;
			c->next = NULL;
			c->added = false;
			if (!l->children)
				loop_signal_del(l, &l->chld);
			/* ECHILD: reaped elsewhere, status unknown. */
			c->cb(c, r == c->pid ? st : -1);
			pp = &l->children; /* the callback may have changed the list */
			continue;
		}
		pp = &c->next;
	}
}

static void sigchld_cb(struct loop_signal *s)
{
	reap_children(container_of(s, struct loop, chld));
}

static int64_t child_check_cb(struct loop_timer *t)
{
	reap_children(container_of(t, struct loop, child_check));
	return -1;
}

int loop_child_add(struct loop *l, struct loop_child *c)
{
	int rc;

	if (c->added)
		return 0;
	if (c->pid <= 0)
		return -EINVAL;
	l->chld.signo = SIGCHLD;
	l->chld.cb = sigchld_cb;
	rc = loop_signal_add(l, &l->chld);
	if (rc)
		return rc;
	c->next = l->children;
	l->children = c;
	c->added = true;
	/* It may have exited before SIGCHLD was caught. */
	l->child_check.cb = child_check_cb;
	loop_timer_set(l, &l->child_check, 0);
	return 0;
}

void loop_child_del(struct loop *l, struct loop_child *c)
{
	if (!c->added)
		return;
	for (struct loop_child **pp = &l->children; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->added = false;
	c->next = NULL;
	if (!l->children) {
		loop_signal_del(l, &l->chld);
		loop_timer_cancel(l, &l->child_check);
	}
}

/* Fire every due timer once; returns the wait until the next one (-1: none). */
static int run_timers(struct loop *l)
{
	int64_t now = loop_now_ms(), next = -1;
	struct loop_timer *t, **pp;

	/* Unlink due timers first: callbacks may set or cancel any timer. */
	pp = &l->timers;
	while ((t = *pp)) {
		if (t->due <= now) {
			*pp = t->next;
			t->armed = false;
			t->next = l->due;
			l->due = t;
		} else {
			pp = &t->next;
		}
	}
	while (l->due) {
		int64_t d;

		t = l->due;
		l->due = t->next;
		t->next = NULL;
		d = t->cb(t);
		if (d >= 0 && !t->armed) {
			if (t->period > 0)
				rearm_every(l, t, loop_now_ms());
			else
				loop_timer_set(l, t, d);
		}
		if (l->stop)
			break;
	}
	/* Timers unlinked but not run because of a stop are re-armed as due. */
	while (l->due) {
		t = l->due;
		l->due = t->next;
		t->next = NULL;
		{
			int64_t due = t->due, period = t->period;

			loop_timer_at(l, t, due);
			t->period = period;
		}
	}
	now = loop_now_ms();
	for (t = l->timers; t; t = t->next) {
		int64_t w = t->due > now ? t->due - now : 0;

		if (next < 0 || w < next)
			next = w;
	}
	if (next > 60000)
		next = 60000;
	return (int)next;
}

/* Wait up to timeout ms (-1: forever) for fds and dispatch them. */
static int poll_fds(struct loop *l, int timeout)
{
	struct epoll_event evs[MAX_EVENTS];
	int n;

	n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		log_error("event loop: epoll_wait: %s", strerror(errno));
		return -errno;
	}
	l->cur = evs;
	l->ncur = n;
	for (int i = 0; i < n && !l->stop; i++) {
		struct loop_fd *w = evs[i].data.ptr;
		unsigned re = 0;

		if (!w)
			continue;
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
			re |= LOOP_READ;
		if (evs[i].events & EPOLLOUT)
			re |= LOOP_WRITE;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			re |= LOOP_ERROR;
		w->cb(w, re);
	}
	l->ncur = 0;
	l->cur = NULL;
	return 0;
}

int loop_run(struct loop *l)
{
	l->stop = false;
	while (!l->stop) {
		int timeout = run_timers(l);
		int rc;

		if (l->stop)
			break;
		rc = poll_fds(l, timeout);
		if (rc)
			return rc;
	}
	return 0;
}

int loop_turn(struct loop *l, int max_wait_ms)
{
	int timeout;

	l->stop = false;
	timeout = run_timers(l);
	if (l->stop)
		return 0;
	if (timeout < 0 || timeout > max_wait_ms)
		timeout = max_wait_ms;
	return poll_fds(l, timeout);
}

int64_t loop_next_due(const struct loop *l)
{
	int64_t next = -1;

	for (const struct loop_timer *t = l->timers; t; t = t->next)
		if (next < 0 || t->due < next)
			next = t->due;
	return next;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}
