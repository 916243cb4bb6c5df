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
	int64_t due;                          /* monotonic ms */
	bool armed;
	struct loop_timer *next;
};

/* Where time and randomness come from. A NULL member means the system's. */
struct loop_clock {
	int64_t (*now_ms)(void);   /* monotonic milliseconds */
	int64_t (*wall_ms)(void);  /* wall-clock milliseconds since the epoch */
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
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* Deliver these signals to cb from inside the loop (self-pipe).
 * Returns 0 or -errno. */
int loop_signals(struct loop *l, const int *signals, size_t n,
		 void (*cb)(struct loop *l, int signo, void *arg), void *arg);

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
