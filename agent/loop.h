/* loop.h - the agent's single event loop: fd watches and timers on epoll.
 *
 * Handles are embedded in their owner and recovered with container_of().
 * A timer callback returns its next delay in milliseconds, or -1 to stop.
 * Signals are delivered through a self-pipe and handled inside the loop.
 *
 * Time and randomness go through one small replaceable table (struct
 * loop_clock), in the spirit of SQLite's aSyscall[]: every timer, backoff
 * and timestamp of the agent reads loop_now_ms(), loop_wall_ms() and
 * loop_random(), so a test sets a clock and a random source of its own and
 * advances time explicitly with loop_turn() instead of waiting for it.
 */
#ifndef AGENT_LOOP_H
#define AGENT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

enum { LOOP_READ = 1 << 0, LOOP_WRITE = 1 << 1, LOOP_ERROR = 1 << 2 };

struct loop;

struct loop_fd {
	int fd;
	unsigned events;                                  /* LOOP_READ|LOOP_WRITE */
	void (*cb)(struct loop_fd *w, unsigned revents);  /* revents may include LOOP_ERROR */
	bool added;
};

struct loop_timer {
	int64_t (*cb)(struct loop_timer *t);  /* returns next delay ms, or -1 */
	int64_t due;            /* monotonic ms: the deadline this firing is for */
	int64_t period;         /* > 0: armed with loop_timer_every() */
	int64_t missed;         /* deadlines skipped after stalls (every-timers) */
	bool armed;
	struct loop_timer *next;
};

/* One signal's handler, called from the loop (never in signal context).
 * Several handlers may watch the same signal; each is called. */
struct loop_signal {
	int signo;
	void (*cb)(struct loop_signal *s);
	bool added;
	struct loop_signal *next;
};

/* A child process's watch: once pid has exited, the loop reaps it and
 * calls cb with its wait status (see waitpid(2)); the watch is then
 * removed. Only the children watched here are reaped. */
struct loop_child {
	int pid;
	void (*cb)(struct loop_child *c, int status);
	bool added;
	struct loop_child *next;
};

/* Where time and randomness come from. A NULL member means the system's. */
struct loop_clock {
	int64_t (*now_ms)(void);   /* monotonic milliseconds */
	int64_t (*wall_ms)(void);  /* wall-clock milliseconds since the epoch */
	int64_t (*boot_ms)(void);  /* milliseconds since boot, suspend included */
	uint32_t (*random)(void);  /* uniformly distributed 32 bits */
};

/* Replace the clock and random source (NULL: the system's again). The
 * table is copied; call before timers are armed with the old clock. */
void loop_clock_set(const struct loop_clock *c);
/* Seed the built-in random source (a 64-bit generator; without a seed it
 * starts from a fixed state, so every run is the same). */
void loop_random_seed(uint64_t seed);
/* Seed it once from getrandom(), or time and pid where that fails: for the
 * daemon's start, so gateways that boot together do not retry in step. */
void loop_random_seed_system(void);

/* Monotonic milliseconds since an arbitrary point (CLOCK_MONOTONIC). */
int64_t loop_now_ms(void);
/* Wall-clock milliseconds since the epoch (CLOCK_REALTIME). */
int64_t loop_wall_ms(void);
/* Milliseconds since boot (CLOCK_BOOTTIME): records' mono_ms. */
int64_t loop_boot_ms(void);
/* 32 random bits from the current source. */
uint32_t loop_random(void);

/* Returns 0 or -errno. */
int loop_init(struct loop **l);
void loop_free(struct loop *l);

/* Watch w->fd for w->events. Returns 0 or -errno. */
int loop_fd_add(struct loop *l, struct loop_fd *w);
/* Change the event mask of a watched fd. Returns 0 or -errno. */
int loop_fd_update(struct loop *l, struct loop_fd *w, unsigned events);
/* Stop watching; safe on a watch that was never added. */
void loop_fd_del(struct loop *l, struct loop_fd *w);

/* Arm (or re-arm) a timer to fire after delay_ms (0 = next iteration). */
void loop_timer_set(struct loop *l, struct loop_timer *t, int64_t delay_ms);
/* Arm a timer at an absolute monotonic deadline (loop_now_ms() scale). */
void loop_timer_at(struct loop *l, struct loop_timer *t, int64_t due_ms);
/* Fire at first_due_ms, then at first_due_ms + k * period_ms for ever, so
 * interval sampling never drifts however long each callback takes. After a
 * stall the deadlines already past are skipped (counted in t->missed) and
 * the next one in the future is kept: never a burst of catch-up firings.
 * The callback's return value: -1 stops the timer, any other is ignored. */
void loop_timer_every(struct loop *l, struct loop_timer *t, int64_t first_due_ms,
		      int64_t period_ms);
/* The first deadline of an every-timer: the next multiple of period_ms
 * after now (monotonic), so that inputs with the same period sample in
 * step and a restart keeps the phase. */
int64_t loop_next_multiple(int64_t now_ms, int64_t period_ms);

/* Backoff after `attempt` failures in a row: base_ms doubled attempt
 * times, at most cap_ms, with jitter in [d/2, d] from loop_random() so
 * that many gateways do not retry in step. */
int64_t backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* Call s->cb from inside the loop whenever s->signo arrives (self-pipe).
 * Returns 0 or -errno. */
int loop_signal_add(struct loop *l, struct loop_signal *s);
/* Stop watching; the signal's default action is restored once no handler
 * watches it. Safe on a watch that was never added. */
void loop_signal_del(struct loop *l, struct loop_signal *s);
/* Watch child c->pid (SIGCHLD, from inside the loop). A child that has
 * already exited is reported on the next iteration. Returns 0 or -errno. */
int loop_child_add(struct loop *l, struct loop_child *c);
/* Stop watching (the child is no longer reaped by the loop). */
void loop_child_del(struct loop *l, struct loop_child *c);

/* Run until loop_stop(). Returns 0 or -errno on a fatal epoll error. */
int loop_run(struct loop *l);
/* One iteration: fire the due timers, then wait at most max_wait_ms (0: not
 * at all) for fds and dispatch them. For tests that drive a test clock.
 * Returns 0 or -errno on a fatal epoll error. */
int loop_turn(struct loop *l, int max_wait_ms);
/* Monotonic ms at which the earliest armed timer is due, or -1: none. */
int64_t loop_next_due(const struct loop *l);
void loop_stop(struct loop *l);

#endif
