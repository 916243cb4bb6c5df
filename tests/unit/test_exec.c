/* test_exec.c - the exec driver on the real input core and queue, with real
 * children: small shell scripts written to a temporary directory. Deadlines
 * and timeouts come from the test clock; a run's end is waited for by
 * turning the loop until its child's exit is reported (bounded by a limit
 * only a broken build reaches), never by sleeping. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "input.h"
#include "loop.h"
#include "mem.h"
#include "queue.h"
#include "status.h"
#include "test.h"
#include "test_clock.h"
#include "crashvfs.h"
#include "input_rig.h"
#include <sqlite3.h>

#define WALL0 1767225600000LL   /* the test clock's wall time at monotonic 0 */

static char dir[] = "/tmp/test_exec.XXXXXX";

/* Write an executable script dir/name. */
static void script(const char *name, const char *body)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(1);
	}
	fprintf(f, "#!/bin/sh\n%s", body);
	fclose(f);
	chmod(p, 0755);
}

static void path_of(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* The pid written to dir/name, or 0. */
static int read_pid(const char *name)
{
	char p[512];
	FILE *f;
	int pid = 0;

	path_of(name, p, sizeof(p));
	f = fopen(p, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

/* A process that exists and is not a zombie (an orphan whose reaper is
 * slow is dead all the same). */
static bool alive(int pid)
{
	char p[64], buf[512], *rp;
	FILE *f;
	size_t n;

	snprintf(p, sizeof(p), "/proc/%d/stat", pid);
	f = fopen(p, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

static bool gone(void *arg)
{
	return !alive(*(int *)arg);
}

/* A killed process closes its files (the run's end) a moment before it is
 * dead: turn the loop until it is, bounded like every wait here. */
static bool dies(struct rig *r, int pid)
{
	return tc_wait_io(r->a.loop, gone, &pid);
}

static int rig_init(struct rig *r, const char *keys, const char *parser)
{
	char text[2048], db[512];

	tc_now_ms = 1000000;            /* every test starts at the same time */
	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input cmd]\ndriver = exec\nparser = %s\n%s"
		 "[output lake]\ntype = mqtt\n", dir, parser, keys);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, true, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
}

static bool run_over(void *arg)
{
	struct status_input st = snapshot(arg);

	return !strstr(st.state, " running");
}

static bool run_going(void *arg)
{
	struct status_input st = snapshot(arg);

	return strstr(st.state, " running") != NULL;
}

/* Turn the loop until the current run has ended. */
static bool wait_run(struct rig *r)
{
	return tc_wait_io(r->a.loop, run_over, r);
}

struct pidfile {
	struct rig *r;
	const char *name;
};

static bool pid_written(void *arg)
{
	struct pidfile *p = arg;

	return read_pid(p->name) > 0;
}

/* Turn the loop until the running script has written dir/name. */
static bool wait_pid(struct rig *r, const char *name)
{
	struct pidfile p = { r, name };

	return tc_wait_io(r->a.loop, pid_written, &p);
}

struct seen {
	int n;
	int64_t wall[64], mono[64];
	char key[64][96];
	char data[64][256];
	char stream[64][16];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (s->n < 64) {
		s->wall[s->n] = q->ts_wall_ms;
		s->mono[s->n] = q->ts_mono_ms;
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key ? q->key : "");
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
		snprintf(s->stream[s->n], sizeof(s->stream[0]), "%s", q->stream);
	}
	s->n++;
	return 0;
}

static void records(struct rig *r, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	tc_advance(r->a.loop, 200);             /* committed */
	CHECK(queue_read(r->a.q, 0, 1000, collect, s) >= 0);
}

static void rm(const char *name)
{
	char p[512];

	path_of(name, p, sizeof(p));
	unlink(p);
}

/* Each line a record, with a key of input, run and line and the run's
 * start as its time; the last line counts without its newline; `env`,
 * `working_dir` and stdin from /dev/null; run numbers go on after a
 * restart. */
TEST(test_records)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512];

	script("json.sh", "cat\necho '{\"n\":1}'\necho \"{\\\"dir\\\":\\\"$(pwd)\\\",\\\"foo\\\":\\\"$FOO\\\"}\"\n"
	       "printf '{\"n\":3}'\n");
	path_of("json.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 5s\nenv = FOO=bar baz, LANG=C\n"
		 "working_dir = %s\n", p, dir);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	st = snapshot(&r);
	CHECK_EQ_STR(st.state, "every 5s, no run yet");
	CHECK(st.device && st.connected);
	tc_advance(r.a.loop, 4999);
	CHECK_EQ_INT(snapshot(&r).requests, 0);
	tc_advance(r.a.loop, 1);                      /* the deadline: 1005000 */
	CHECK_EQ_INT(snapshot(&r).requests, 1);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_STR(st.state, "1 run; last: exit 0, 0 ms, 3 lines");
	CHECK_EQ_STR(st.last_error, "");
	records(&r, &s);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"n\":1}");
	{
		char want[600];

		snprintf(want, sizeof(want), "{\"dir\":\"%s\",\"foo\":\"bar baz\"}", dir);
		CHECK_EQ_STR(s.data[1], want);
	}
	CHECK_EQ_STR(s.data[2], "{\"n\":3}");
	CHECK_EQ_STR(s.key[0], "cmd:1:1");
	CHECK_EQ_STR(s.key[1], "cmd:1:2");
	CHECK_EQ_STR(s.key[2], "cmd:1:3");
	/* Every line has the time the run started, though read later. */
	for (int i = 0; i < 3; i++) {
		CHECK_EQ_INT(s.wall[i], WALL0 + 1005000);
		CHECK_EQ_INT(s.mono[i], 1005000 + 5000);
	}
	tc_advance(r.a.loop, 4800);                   /* the next deadline: run 2 */
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 6);
	CHECK_EQ_STR(s.key[3], "cmd:2:1");
	CHECK_EQ_INT(s.wall[3], WALL0 + 1010000);
	/* A restart goes on after the saved run number. */
	input_stop(r.in);
	REQUIRE(input_start(r.in) == 0);
	tc_advance(r.a.loop, 4800);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 9);
	CHECK_EQ_STR(s.key[6], "cmd:3:1");
	CHECK_EQ_INT(snapshot(&r).records, 9);
	rig_release(&r);
}

/* No fd of the agent leaks into the command: ls sees 0, 1, 2 and its own
 * directory fd. Words are split with quotes honoured, and no shell runs
 * the command. */
TEST(test_fds_and_words)
{
	struct rig r;
	struct seen s;
	char keys[1024], p[512];

	REQUIRE(rig_init(&r, "command = /bin/ls /proc/self/fd\ninterval = 1s\n", "raw") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.data[0], "\"0\"");
	CHECK_EQ_STR(s.data[1], "\"1\"");
	CHECK_EQ_STR(s.data[2], "\"2\"");
	CHECK_EQ_STR(s.data[3], "\"3\"");
	rig_release(&r);

	script("args.sh", "for a in \"$@\"; do echo \"$a\"; done\n");
	path_of("args.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s 'a  b' \"c \\\"d\\\"\" e\\ f '$HOME' \"*\"\n"
		 "interval = 1s\n", p);
	REQUIRE(rig_init(&r, keys, "raw") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 5);
	CHECK_EQ_STR(s.data[0], "\"a  b\"");
	CHECK_EQ_STR(s.data[1], "\"c \\\"d\\\"\"");
	CHECK_EQ_STR(s.data[2], "\"e f\"");
	CHECK_EQ_STR(s.data[3], "\"$HOME\"");
	CHECK_EQ_STR(s.data[4], "\"*\"");
	rig_release(&r);

	/* shell = true: a pipeline, through /bin/sh -c. */
	REQUIRE(rig_init(&r, "command = printf 'x\\ny\\nz\\n' | grep -v y | tr a-z A-Z\n"
			 "shell = true\ninterval = 1s\n", "raw") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "\"X\"");
	CHECK_EQ_STR(s.data[1], "\"Z\"");
	rig_release(&r);
}

/* csv: the first line of each run's output is its header. */
TEST(test_csv)
{
	struct rig r;
	struct seen s;
	char keys[1024], p[512];

	script("csv.sh", "echo 'sensor,value'\necho 't1,21.5'\necho 't2,19'\n");
	path_of("csv.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\n", p);
	REQUIRE(rig_init(&r, keys, "csv") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 4);
	CHECK(strstr(s.data[0], "\"sensor\":\"t1\"") != NULL);
	CHECK(strstr(s.data[0], "\"value\":") != NULL);
	CHECK(strstr(s.data[1], "\"sensor\":\"t2\"") != NULL);
	CHECK(strstr(s.data[2], "\"sensor\":\"t1\"") != NULL);
	CHECK_EQ_STR(s.key[0], "cmd:1:2");           /* line 1 was the header */
	CHECK_EQ_STR(s.key[1], "cmd:1:3");
	CHECK_EQ_STR(s.key[2], "cmd:2:2");
	CHECK_EQ_INT(snapshot(&r).dlq, 0);
	CHECK_EQ_STR(snapshot(&r).state, "2 runs; last: exit 0, 0 ms, 3 lines");
	rig_release(&r);
}

/* A run that hangs, with a child of its own: at the timeout the whole
 * group gets SIGTERM, and neither process is left. */
TEST(test_timeout_kills_group)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512];
	int sh, gc;

	rm("sh.pid");
	rm("gc.pid");
	script("hang.sh", "sleep 1000 &\n"
	       "echo $! > \"$(dirname \"$0\")/gc.pid.tmp\"; mv \"$(dirname \"$0\")/gc.pid.tmp\" \"$(dirname \"$0\")/gc.pid\"\n"
	       "echo '{\"started\":true}'\n"
	       "echo $$ > \"$(dirname \"$0\")/sh.pid\"\nwait\n");
	path_of("hang.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 60s\ntimeout = 5s\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 20000);                  /* the deadline: 1020000 */
	REQUIRE(wait_pid(&r, "gc.pid"));
	REQUIRE(wait_pid(&r, "sh.pid"));
	sh = read_pid("sh.pid");
	gc = read_pid("gc.pid");
	CHECK(alive(sh) && alive(gc));
	tc_advance(r.a.loop, 4999);
	CHECK(tc_wait_io(r.a.loop, run_going, &r));
	CHECK(alive(sh) && alive(gc));
	tc_advance(r.a.loop, 1);                      /* the timeout: SIGTERM */
	REQUIRE(wait_run(&r));
	CHECK(dies(&r, sh));
	CHECK(dies(&r, gc));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_TIMEOUT], 1);
	CHECK_EQ_STR(st.last_error, "run 1 killed after timeout 5s");
	CHECK_EQ_STR(st.state, "1 run, 1 timed out; last: timed out, 5s, 1 line");
	records(&r, &s);
	REQUIRE(s.n == 1);                            /* what it wrote before is kept */
	CHECK_EQ_STR(s.data[0], "{\"started\":true}");
	rig_release(&r);
}

/* A group that ignores SIGTERM gets SIGKILL kill_grace later. */
TEST(test_timeout_sigkill_after_grace)
{
	struct rig r;
	struct status_input st;
	char keys[1024], p[512];
	int sh, gc;

	rm("sh.pid");
	rm("gc.pid");
	script("stubborn.sh", "trap '' TERM\nsleep 1000 &\n"
	       "echo $! > \"$(dirname \"$0\")/gc.pid.tmp\"; mv \"$(dirname \"$0\")/gc.pid.tmp\" \"$(dirname \"$0\")/gc.pid\"\n"
	       "echo $$ > \"$(dirname \"$0\")/sh.pid\"\nwait\n");
	path_of("stubborn.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 60s\ntimeout = 2s\nkill_grace = 3s\n", p);
	REQUIRE(rig_init(&r, keys, "raw") == 0);
	tc_advance(r.a.loop, 20000);
	REQUIRE(wait_pid(&r, "gc.pid"));
	REQUIRE(wait_pid(&r, "sh.pid"));
	sh = read_pid("sh.pid");
	gc = read_pid("gc.pid");
	tc_advance(r.a.loop, 2000);                   /* SIGTERM: ignored */
	/* Give a (wrong) death every chance to be seen before looking. */
	for (int i = 0; i < 20; i++)
		loop_turn(r.a.loop, 5);
	CHECK(alive(sh) && alive(gc));
	CHECK(strstr(snapshot(&r).state, "running") != NULL);
	tc_advance(r.a.loop, 2999);
	CHECK(alive(sh) && alive(gc));
	tc_advance(r.a.loop, 1);                      /* SIGKILL */
	REQUIRE(wait_run(&r));
	CHECK(dies(&r, sh));
	CHECK(dies(&r, gc));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_TIMEOUT], 1);
	CHECK(strstr(st.last_error, "killed after timeout 2s (SIGKILL: still running 3s after SIGTERM)")
	      != NULL);
	rig_release(&r);
}

/* A crash: counted as a death by signal, the lines before it kept. */
TEST(test_signal)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512];

	script("crash.sh", "echo '{\"a\":1}'\necho 'about to crash' >&2\nkill -SEGV $$\n");
	path_of("crash.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_EXCEPTION], 1);
	CHECK_EQ_STR(st.last_error, "run 1 killed by signal 11 (SIGSEGV): about to crash");
	CHECK_EQ_STR(st.state, "1 run, 1 by signal (last SIGSEGV); last: killed by SIGSEGV, 0 ms, 1 line");
	records(&r, &s);
	CHECK_EQ_INT(s.n, 1);
	rig_release(&r);
}

/* A non-zero exit: counted with its status and the last stderr line; a
 * clean run after it clears the error. */
TEST(test_exit_status)
{
	struct rig r;
	struct status_input st;
	char keys[1024], p[512], flag[512];

	path_of("fail.flag", flag, sizeof(flag));
	close(open(flag, O_CREAT | O_WRONLY, 0644));
	script("fail.sh", "echo '{\"a\":1}'\nif [ -e \"$(dirname \"$0\")/fail.flag\" ]; then\n"
	       "  echo 'warming up' >&2; echo 'sensor bus not ready' >&2; exit 3\nfi\n");
	path_of("fail.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_EXCEPTION], 1);
	CHECK_EQ_STR(st.last_error, "run 1 exited with status 3: sensor bus not ready");
	CHECK_EQ_STR(st.state, "1 run, 1 exit!=0 (last 3); last: exit 3, 0 ms, 1 line");
	CHECK(st.connected);
	unlink(flag);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_STR(st.last_error, "");
	CHECK_EQ_STR(st.state, "2 runs, 1 exit!=0 (last 3); last: exit 0, 0 ms, 1 line");
	CHECK_EQ_INT(st.records, 2);
	rig_release(&r);
}

/* Thousands of stderr lines: stderr_lines of them reach the log, the rest
 * are counted; none becomes a record. */
TEST(test_noisy_stderr)
{
	struct rig r;
	struct seen s;
	char keys[1024], p[512], logp[512], line[1024];
	int saved, fd, logged = 0, summary = 0;
	FILE *f;

	script("noisy.sh", "i=0\nwhile [ $i -lt 5000 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n"
	       "echo '{\"done\":1}'\n");
	path_of("noisy.sh", p, sizeof(p));
	path_of("log.txt", logp, sizeof(logp));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\nstderr_lines = 5\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	fflush(stderr);
	saved = dup(2);
	fd = open(logp, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	REQUIRE(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	f = fopen(logp, "r");
	REQUIRE(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "input cmd: run 1 stderr: noise "))
			logged++;
		if (strstr(line, "input cmd: run 1: 4995 more stderr lines not logged (stderr_lines = 5)"))
			summary++;
	}
	fclose(f);
	CHECK_EQ_INT(logged, 5);
	CHECK_EQ_INT(summary, 1);
	CHECK(strstr(snapshot(&r).state, "exit 0") != NULL);
	records(&r, &s);
	REQUIRE(s.n == 1);
	CHECK_EQ_STR(s.data[0], "{\"done\":1}");
	rig_release(&r);
}

/* Commands that cannot be started are named in status as such. */
TEST(test_cannot_start)
{
	static const struct {
		const char *cmd, *why;
	} cases[] = {
		{ "/nonexistent/sensor-read -j", "command not found: /nonexistent/sensor-read" },
		{ "no-such-program-anywhere", "command not found: no-such-program-anywhere" },
		{ "@/noexec.sh", "permission denied: @/noexec.sh" },      /* no x bit */
		{ "@/garbage.bin", "not an executable: @/garbage.bin" },  /* x bit, no format */
	};
	struct rig r;
	struct status_input st;
	char keys[1024], p[512], cmd[512], why[600];
	FILE *f;

	path_of("noexec.sh", p, sizeof(p));
	f = fopen(p, "w");
	REQUIRE(f != NULL);
	fputs("#!/bin/sh\necho hi\n", f);
	fclose(f);
	chmod(p, 0644);
	path_of("garbage.bin", p, sizeof(p));
	f = fopen(p, "w");
	REQUIRE(f != NULL);
	fputs("\x01\x02\x03 not a program\n", f);
	fclose(f);
	chmod(p, 0755);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *at = cases[i].cmd[0] == '@' ? cases[i].cmd + 1 : NULL;
		const char *wat = strchr(cases[i].why, '@');

		if (at)
			snprintf(cmd, sizeof(cmd), "%s%s", dir, at);
		else
			snprintf(cmd, sizeof(cmd), "%s", cases[i].cmd);
		if (wat)
			snprintf(why, sizeof(why), "%.*s%s%s", (int)(wat - cases[i].why), cases[i].why, dir,
				 wat + 1);
		else
			snprintf(why, sizeof(why), "%s", cases[i].why);
		snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\n", cmd);
		REQUIRE(rig_init(&r, keys, "raw") == 0);
		tc_advance(r.a.loop, 1000);
		REQUIRE(wait_run(&r));
		st = snapshot(&r);
		CHECK(st.device && !st.connected);
		CHECK_EQ_STR(st.conn_why, why);
		CHECK_EQ_STR(st.last_error, why);
		CHECK_EQ_INT(st.errors[INPUT_ERR_CONNECT], 1);
		CHECK_EQ_INT(st.requests, 1);
		CHECK_EQ_INT(st.records, 0);
		CHECK(strstr(st.state, "last: not started") != NULL);
		rig_release(&r);
	}

	/* A working_dir that is not there. */
	snprintf(keys, sizeof(keys), "command = /bin/true\nworking_dir = %s/nowhere\ninterval = 1s\n", dir);
	REQUIRE(rig_init(&r, keys, "raw") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK(!st.connected);
	snprintf(why, sizeof(why), "cannot enter working_dir %s/nowhere: No such file or directory", dir);
	CHECK_EQ_STR(st.conn_why, why);
	rig_release(&r);
}

/* Output beyond max_output: the run is killed and counted, the lines
 * before the limit are records, the line it cut is dead-lettered and the
 * rest is a gap; memory never holds more. */
TEST(test_max_output)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512];
	int recs = 0, gaps = 0;

	/* 20 bytes a line; 510 bytes allowed: 25 lines and 10 bytes of the 26th. */
	script("flood.sh", "i=0\nwhile [ $i -lt 1000 ]; do echo '{\"n\":1234567890123}'; i=$((i+1)); done\n");
	path_of("flood.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\nmax_output = 510\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_VALUE], 1);
	CHECK_EQ_INT(st.dlq, 1);
	CHECK(strstr(st.state, "1 over max_output; last: killed at max_output") != NULL);
	records(&r, &s);
	for (int i = 0; i < s.n && i < 64; i++) {
		if (!strcmp(s.stream[i], "cmd")) {
			recs++;
		} else if (!strcmp(s.stream[i], "_agent")) {
			gaps++;
			CHECK(strstr(s.data[i], "\"reason\":\"max_output\"") != NULL);
			CHECK(strstr(s.data[i], "\"offset\":510") != NULL);
			CHECK_EQ_STR(s.key[i], "cmd:1:cut");
		}
	}
	CHECK_EQ_INT(recs, 25);
	CHECK_EQ_INT(gaps, 1);
	rig_release(&r);
}

/* Bad lines: one longer than max_record_bytes and one that is not JSON
 * are dead-lettered with the reason, and the lines around them go on. */
TEST(test_bad_lines)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512];

	script("bad.sh", "echo '{\"n\":1}'\nhead -c 5000 /dev/zero | tr '\\0' x; echo\n"
	       "echo 'not json'\necho '{\"n\":4}'\n");
	path_of("bad.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\nmax_record_bytes = 100\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK_EQ_INT(st.dlq, 2);
	CHECK_EQ_INT(st.records, 2);
	CHECK(strstr(st.state, "exit 0, 0 ms, 4 lines") != NULL);
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.key[0], "cmd:1:1");
	CHECK_EQ_STR(s.key[1], "cmd:1:4");
	rig_release(&r);
}

/* A run still going at the next deadlines: they are skipped and counted,
 * never a second run at once. */
TEST(test_overlap)
{
	struct rig r;
	struct status_input st;
	char keys[1024], p[512];
	int pid;

	rm("slow.pid");
	script("slow.sh", "echo $$ > \"$(dirname \"$0\")/slow.pid\"\nexec sleep 1000\n");
	path_of("slow.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 1s\ntimeout = 3500ms\nkill_grace = 0\n", p);
	REQUIRE(rig_init(&r, keys, "raw") == 0);
	tc_advance(r.a.loop, 1000);
	REQUIRE(wait_pid(&r, "slow.pid"));
	pid = read_pid("slow.pid");
	tc_advance(r.a.loop, 1000);
	tc_advance(r.a.loop, 1000);
	tc_advance(r.a.loop, 1000);
	st = snapshot(&r);
	CHECK_EQ_INT(st.requests, 1);
	CHECK_EQ_INT(st.missed_samples, 3);
	CHECK(alive(pid));
	tc_advance(r.a.loop, 500);                    /* timeout, SIGKILL at once */
	REQUIRE(wait_run(&r));
	CHECK(dies(&r, pid));
	st = snapshot(&r);
	CHECK_EQ_STR(st.state, "1 run, 1 timed out, 3 skipped; last: timed out, 3.5s, 0 lines");
	CHECK_EQ_STR(st.last_error, "run 1 killed after timeout 3.5s");
	rm("slow.pid");
	tc_advance(r.a.loop, 500);                    /* the next deadline runs again */
	CHECK_EQ_INT(snapshot(&r).requests, 2);
	REQUIRE(wait_pid(&r, "slow.pid"));
	rig_release(&r);                              /* stop kills and reaps it */
	CHECK(!alive(read_pid("slow.pid")));
}

/* A commit that fails: the run's records are appended again by the core
 * with their keys and time, and the run number is saved again with them. */
TEST(test_failed_commit)
{
	struct rig r;
	struct seen s;
	char keys[1024], p[512];

	script("two.sh", "echo '{\"a\":1}'\necho '{\"a\":2}'\n");
	path_of("two.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 10s\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 10000);
	REQUIRE(wait_run(&r));
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 100);                    /* its commit fails */
	tc_advance(r.a.loop, 3000);                   /* replayed */
	records(&r, &s);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.key[0], "cmd:1:1");
	CHECK_EQ_STR(s.key[1], "cmd:1:2");
	CHECK_EQ_INT(s.wall[0], WALL0 + 1010000);
	input_stop(r.in);
	REQUIRE(input_start(r.in) == 0);
	tc_advance(r.a.loop, 10000);
	REQUIRE(wait_run(&r));
	records(&r, &s);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.key[2], "cmd:2:1");
	rig_release(&r);
}

static bool waits_for_queue(void *arg)
{
	return strstr(snapshot(arg).state, "its output waiting for the queue") != NULL;
}

static bool first_taken(void *arg)
{
	return input_ticket(((struct rig *)arg)->in) >= 1;
}

/* The queue refuses records in the middle of a run (its commit failed):
 * the output waits in the pipe, and once records are taken again the lines
 * already taken are appended again and the rest read on, each once. */
TEST(test_queue_refuses_mid_run)
{
	struct rig r;
	struct seen s;
	struct status_input st;
	char keys[1024], p[512], gate[512];

	path_of("gate", gate, sizeof(gate));
	unlink(gate);
	script("gated.sh", "echo '{\"n\":1}'\n"
	       "while [ ! -e \"$(dirname \"$0\")/gate\" ]; do sleep 0.01; done\n"
	       "echo '{\"n\":2}'\necho '{\"n\":3}'\n");
	path_of("gated.sh", p, sizeof(p));
	snprintf(keys, sizeof(keys), "command = %s\ninterval = 60s\ntimeout = 30s\n", p);
	REQUIRE(rig_init(&r, keys, "json") == 0);
	tc_advance(r.a.loop, 20000);                  /* the deadline: 1020000 */
	REQUIRE(tc_wait_io(r.a.loop, first_taken, &r));
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 100);                    /* the commit fails: refused */
	close(open(gate, O_CREAT | O_WRONLY, 0644));
	REQUIRE(tc_wait_io(r.a.loop, waits_for_queue, &r));
	tc_advance(r.a.loop, 3000);                   /* taken again */
	REQUIRE(wait_run(&r));
	st = snapshot(&r);
	CHECK(!strncmp(st.state, "1 run; last: exit 0, ", 21));   /* its duration: when it was read */
	CHECK(strstr(st.state, ", 3 lines") != NULL);
	records(&r, &s);
	REQUIRE(s.n == 3);
	for (int i = 0; i < 3; i++) {
		char want[32];

		snprintf(want, sizeof(want), "cmd:1:%d", i + 1);
		CHECK_EQ_STR(s.key[i], want);
		CHECK_EQ_INT(s.wall[i], WALL0 + 1020000);
	}
	CHECK_EQ_STR(s.data[2], "{\"n\":3}");
	rig_release(&r);
}

/* The config refuses what cannot work, with the key's name. */
TEST(test_config_refused)
{
	static const char *const bad[][2] = {
		{ "command = cat /var/log/x | grep y\n", "'|' is shell syntax" },
		{ "command = /bin/echo 'open\n", "a quote is not closed" },
		{ "command = /bin/echo $HOME\n", "set shell = true" },
		{ "command = /bin/true\nenv = 1X=2\n", "key 'env': '1X=2' is not NAME=value" },
		{ "command = /bin/true\nenv = NOVALUE\n", "is not NAME=value" },
		{ "command = /bin/true\nworking_dir = tmp\n", "key 'working_dir'" },
		{ "shell = true\n", "command" },
		{ "command = /bin/true\ninterval = 10ms\n", "interval" },
		{ "command = /bin/true\nmax_output = 0\n", "max_output" },
	};
	struct config *cfg = NULL;
	char text[1024], err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = exec\n"
			 "%s[output lake]\ntype = mqtt\n", dir, bad[i][0]);
		CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i][1]))
			fprintf(stderr, "row %zu: %s\n", i, err);
		CHECK(strstr(err, bad[i][1]) != NULL);
	}
	/* Shell syntax is fine inside quotes, and with shell = true. */
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = exec\n"
		 "command = /bin/echo 'a|b' \"$x\"\n[input t]\ndriver = exec\nshell = true\n"
		 "command = ls | wc -l\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), 0);
	config_free(cfg);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	char cmd[160];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_records);
	RUN(test_fds_and_words);
	RUN(test_csv);
	RUN(test_timeout_kills_group);
	RUN(test_timeout_sigkill_after_grace);
	RUN(test_signal);
	RUN(test_exit_status);
	RUN(test_noisy_stderr);
	RUN(test_cannot_start);
	RUN(test_max_output);
	RUN(test_bad_lines);
	RUN(test_overlap);
	RUN(test_failed_commit);
	RUN(test_queue_refuses_mid_run);
	RUN(test_config_refused);
	RUN(test_no_leaks);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_END();
}
