/* test_clock.h - a test clock and random source for the loop (loop_clock_set):
 * time stands still until a test advances it, and "random" values are the
 * ones the test chose. Timers fire in order as the clock passes their due
 * time; fds are polled without waiting. Include in one test file only.
 */
#ifndef TEST_CLOCK_H
#define TEST_CLOCK_H

#include <time.h>

#include "loop.h"

static int64_t tc_now_ms = 1000000;                /* monotonic */
static int64_t tc_wall_base_ms = 1767225600000;    /* 2026-01-01T00:00:00Z */
static uint32_t tc_random_value;                   /* what loop_random() returns */

static int64_t tc_now(void)
{
	return tc_now_ms;
}

static int64_t tc_wall(void)
{
	return tc_wall_base_ms + tc_now_ms;
}

static int64_t tc_boot(void)
{
	return tc_now_ms + 5000;                    /* booted 5 s before monotonic 0 */
}

static uint32_t tc_random(void)
{
	return tc_random_value;
}

/* Install the test clock; rnd is what every loop_random() returns (0 puts
 * every backoff at the bottom of its jitter range, d/2). */
static inline void tc_install(uint32_t rnd)
{
	static const struct loop_clock c = { .now_ms = tc_now, .wall_ms = tc_wall,
					     .boot_ms = tc_boot, .random = tc_random };

	tc_random_value = rnd;
	loop_clock_set(&c);
}

static inline void tc_uninstall(void)
{
	loop_clock_set(NULL);
}

/* Advance the test clock by ms, firing every timer that falls due on the
 * way at its due time, and dispatching ready fds (without waiting). */
static inline void tc_advance(struct loop *l, int64_t ms)
{
	int64_t end = tc_now_ms + ms;

	for (int guard = 0; guard < 100000; guard++) {
		int64_t next;

		loop_turn(l, 0);
		next = loop_next_due(l);
		if (next < 0 || next > end)
			break;
		if (next > tc_now_ms)
			tc_now_ms = next;
	}
	tc_now_ms = end;
	loop_turn(l, 0);
}

/* Real monotonic ms, for the generous limits of waits on real sockets. */
static inline int64_t tc_real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll fds (the test clock standing still) until cond(arg) holds or a
 * generous real limit passes, which only a broken build reaches. Returns
 * whether cond holds. */
static inline bool tc_wait_io(struct loop *l, bool (*cond)(void *arg), void *arg)
{
	int64_t limit = tc_real_ms() + 20000;

	while (!cond(arg)) {
		if (tc_real_ms() > limit)
			return false;
		loop_turn(l, 10);
	}
	return true;
}

#endif
