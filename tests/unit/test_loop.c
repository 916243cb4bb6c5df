/* test_loop.c - the loop's absolute-deadline timers, per-signal handlers
 * and child-process watches. Time is the test clock's; signals are raised
 * by the test itself, and children are the test's own. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"
#include "mem.h"
#include "test.h"
#include "test_clock.h"

/* ---- timers on absolute deadlines ------------------------------------- */

struct sampler {
	struct loop_timer t;
	int64_t fired_at[16];   /* the clock when each firing ran */
	int64_t due[16];        /* the deadline each firing was for */
	int n;
	int64_t work_ms;        /* each callback takes this long */
	int64_t ret;            /* what the callback returns */
};

static int64_t sampler_cb(struct loop_timer *t)
{
	struct sampler *s = container_of(t, struct sampler, t);

	if (s->n < 16) {
		s->fired_at[s->n] = tc_now_ms;
		s->due[s->n] = t->due;
		s->n++;
	}
	tc_now_ms += s->work_ms;   /* a slow device answering */
	return s->ret;
}

TEST(test_timer_at_fires_at_its_deadline)
{
	struct loop *l;
	struct sampler s = { .t.cb = sampler_cb, .ret = -1 };
	int64_t start;

	tc_install(0);
	REQUIRE(loop_init(&l) == 0);
	start = tc_now_ms;
	loop_timer_at(l, &s.t, start + 250);
	tc_advance(l, 249);
	CHECK_EQ_INT(s.n, 0);
	tc_advance(l, 1);
	CHECK_EQ_INT(s.n, 1);
	CHECK_EQ_INT(s.fired_at[0], start + 250);
	CHECK(!s.t.armed);
	loop_free(l);
	tc_uninstall();
}

/* Each firing takes 300 ms; the deadlines stay on the 1 s grid. A timer
 * re-armed with a relative delay from its callback would drift by 300 ms
 * a period. */
TEST(test_every_timer_does_not_drift)
{
	struct loop *l;
	struct sampler s = { .t.cb = sampler_cb, .work_ms = 300 };
	int64_t first;

	tc_install(0);
	REQUIRE(loop_init(&l) == 0);
	first = loop_next_multiple(tc_now_ms, 1000);
	CHECK_EQ_INT(first % 1000, 0);
	CHECK(first > tc_now_ms);
	loop_timer_every(l, &s.t, first, 1000);
	tc_advance(l, first - tc_now_ms + 4500);
	REQUIRE(s.n >= 5);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ_INT(s.due[i], first + i * 1000);
		CHECK_EQ_INT(s.fired_at[i], first + i * 1000);
	}
	CHECK_EQ_INT(s.t.missed, 0);
	loop_timer_cancel(l, &s.t);
	loop_free(l);
	tc_uninstall();
}

/* After a 3.5 s stall (the loop did not run), the timer fires once, late,
 * for the deadline it missed first, then goes on at the next deadline in
 * the future: no burst of catch-up firings, and the skipped ones counted. */
TEST(test_every_timer_skips_after_a_stall)
{
	struct loop *l;
	struct sampler s = { .t.cb = sampler_cb };
	int64_t first;

	tc_install(0);
	REQUIRE(loop_init(&l) == 0);
	first = loop_next_multiple(tc_now_ms, 1000);
	loop_timer_every(l, &s.t, first, 1000);
	tc_advance(l, first - tc_now_ms);
	CHECK_EQ_INT(s.n, 1);
	tc_now_ms += 3500;            /* stalled: nothing ran */
	loop_turn(l, 0);
	CHECK_EQ_INT(s.n, 2);
	CHECK_EQ_INT(s.due[1], first + 1000);
	loop_turn(l, 0);
	CHECK_EQ_INT(s.n, 2);         /* no catch-up */
	CHECK_EQ_INT(s.t.missed, 2);  /* first + 2000 and + 3000 */
	CHECK_EQ_INT(s.t.due, first + 4000);
	tc_advance(l, first + 4000 - tc_now_ms);
	CHECK_EQ_INT(s.n, 3);
	CHECK_EQ_INT(s.fired_at[2], first + 4000);
	loop_timer_cancel(l, &s.t);
	loop_free(l);
	tc_uninstall();
}

static int64_t stop_cb(struct loop_timer *t)
{
	struct sampler *s = container_of(t, struct sampler, t);

	s->n++;
	return -1;
}

TEST(test_every_timer_stops_on_minus_one)
{
	struct loop *l;
	struct sampler s = { .t.cb = stop_cb };

	tc_install(0);
	REQUIRE(loop_init(&l) == 0);
	loop_timer_every(l, &s.t, tc_now_ms + 10, 10);
	tc_advance(l, 100);
	CHECK_EQ_INT(s.n, 1);
	CHECK(!s.t.armed);
	loop_free(l);
	tc_uninstall();
}

/* ---- signals, each to its own handlers -------------------------------- */

struct sigcount {
	struct loop_signal s;
	int n;
};

static void count_cb(struct loop_signal *s)
{
	container_of(s, struct sigcount, s)->n++;
}

/* Drive the loop until cond holds or 2000 turns of up to 10 ms passed. */
#define TURN_UNTIL(l, cond) \
	do { \
		for (int _i = 0; _i < 2000 && !(cond); _i++) \
			loop_turn((l), 10); \
	} while (0)

TEST(test_each_signal_reaches_its_own_handlers)
{
	struct loop *l;
	struct sigcount a = { .s = { .signo = SIGUSR1, .cb = count_cb } };
	struct sigcount b = { .s = { .signo = SIGUSR1, .cb = count_cb } };
	struct sigcount c = { .s = { .signo = SIGUSR2, .cb = count_cb } };

	REQUIRE(loop_init(&l) == 0);
	REQUIRE(loop_signal_add(l, &a.s) == 0);
	REQUIRE(loop_signal_add(l, &b.s) == 0);
	REQUIRE(loop_signal_add(l, &c.s) == 0);
	raise(SIGUSR1);
	TURN_UNTIL(l, a.n && b.n);
	CHECK_EQ_INT(a.n, 1);
	CHECK_EQ_INT(b.n, 1);
	CHECK_EQ_INT(c.n, 0);
	raise(SIGUSR2);
	TURN_UNTIL(l, c.n);
	CHECK_EQ_INT(c.n, 1);
	CHECK_EQ_INT(a.n, 1);
	/* Removing one handler leaves the other. */
	loop_signal_del(l, &a.s);
	raise(SIGUSR1);
	TURN_UNTIL(l, b.n == 2);
	CHECK_EQ_INT(b.n, 2);
	CHECK_EQ_INT(a.n, 1);
	loop_signal_del(l, &b.s);
	loop_signal_del(l, &c.s);
	CHECK_EQ_INT(loop_signal_add(l, &(struct loop_signal){ .signo = 0, .cb = count_cb }), -EINVAL);
	loop_free(l);
}

/* ---- child processes -------------------------------------------------- */

struct childw {
	struct loop_child c;
	int status, n;
};

static void child_cb(struct loop_child *c, int status)
{
	struct childw *w = container_of(c, struct childw, c);

	w->status = status;
	w->n++;
}

/* A child watch and a SIGTERM handler side by side: the child's exit goes
 * to its watch, SIGTERM to its handler, and neither takes the other's. */
TEST(test_child_watch_beside_a_signal_handler)
{
	struct loop *l;
	struct childw w = { .c.cb = child_cb };
	struct sigcount term = { .s = { .signo = SIGTERM, .cb = count_cb } };
	pid_t pid;

	REQUIRE(loop_init(&l) == 0);
	REQUIRE(loop_signal_add(l, &term.s) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(3);
	w.c.pid = pid;
	REQUIRE(loop_child_add(l, &w.c) == 0);
	TURN_UNTIL(l, w.n);
	CHECK_EQ_INT(w.n, 1);
	CHECK(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 3);
	CHECK(!w.c.added);
	CHECK_EQ_INT(term.n, 0);
	raise(SIGTERM);
	TURN_UNTIL(l, term.n);
	CHECK_EQ_INT(term.n, 1);
	CHECK_EQ_INT(w.n, 1);
	loop_signal_del(l, &term.s);
	loop_free(l);
}

/* A child that exited before its watch was added is still reported. */
TEST(test_child_that_exited_before_the_watch)
{
	struct loop *l;
	struct childw w = { .c.cb = child_cb };
	siginfo_t si;
	pid_t pid;

	REQUIRE(loop_init(&l) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(7);
	/* Wait for the exit without reaping it. */
	REQUIRE(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == 0);
	w.c.pid = pid;
	REQUIRE(loop_child_add(l, &w.c) == 0);
	TURN_UNTIL(l, w.n);
	CHECK_EQ_INT(w.n, 1);
	CHECK(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 7);
	loop_free(l);
}

/* Only watched children are reaped: another child of the process stays
 * for whoever started it. */
TEST(test_unwatched_children_are_left_alone)
{
	struct loop *l;
	struct childw w = { .c.cb = child_cb };
	pid_t mine, other;
	int st = 0;

	REQUIRE(loop_init(&l) == 0);
	other = fork();
	REQUIRE(other >= 0);
	if (other == 0)
		_exit(1);
	mine = fork();
	REQUIRE(mine >= 0);
	if (mine == 0)
		_exit(2);
	w.c.pid = mine;
	REQUIRE(loop_child_add(l, &w.c) == 0);
	TURN_UNTIL(l, w.n);
	CHECK_EQ_INT(w.n, 1);
	CHECK_EQ_INT(waitpid(other, &st, 0), other);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	loop_free(l);
}

TEST(test_backoff_schedule)
{
	tc_install(0);      /* the bottom of the jitter range */
	CHECK_EQ_INT(backoff_delay(1000, 60000, 0), 500);
	CHECK_EQ_INT(backoff_delay(1000, 60000, 3), 4000);
	CHECK_EQ_INT(backoff_delay(1000, 60000, 30), 30000);
	tc_install(0xffffffffu);
	CHECK(backoff_delay(1000, 60000, 3) <= 8000);
	tc_uninstall();
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	RUN(test_timer_at_fires_at_its_deadline);
	RUN(test_every_timer_does_not_drift);
	RUN(test_every_timer_skips_after_a_stall);
	RUN(test_every_timer_stops_on_minus_one);
	RUN(test_each_signal_reaches_its_own_handlers);
	RUN(test_child_watch_beside_a_signal_handler);
	RUN(test_child_that_exited_before_the_watch);
	RUN(test_unwatched_children_are_left_alone);
	RUN(test_backoff_schedule);
	RUN(test_no_leaks);
	TEST_END();
}
