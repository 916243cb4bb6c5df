/* test_serial.c - the serial driver on real pseudo-terminals made here
 * (posix_openpt), through the input core on a real queue and the test
 * clock: the port's settings as configured (read back from the terminal),
 * lines with CR LF or LF, over-long lines and bad NMEA sentences in the
 * DLQ, a hangup (the master closed) with its unfinished line
 * dead-lettered, the device found again at its path (a symlink re-pointed
 * to a new terminal), and line keys that go on after a restart and after
 * a failed commit. No test sleeps: fds are polled while the test clock
 * stands still, and timers fire as the test advances the clock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
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

static char dir[] = "/tmp/test_serial.XXXXXX";
static char link_path[64];

/* The series of keys numbered from the test clock's first wall time. */
#define SERIES "1767226600000"

struct pty {
	int master, slave;
	char name[128];
};

static bool pty_open(struct pty *p)
{
	p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->master < 0 || grantpt(p->master) || unlockpt(p->master) ||
	    ptsname_r(p->master, p->name, sizeof(p->name))) {
		perror("posix_openpt");
		return false;
	}
	p->slave = open(p->name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->slave < 0) {
		perror(p->name);
		return false;
	}
	return true;
}

/* The device unplugged: every end closed, its node gone. */
static void pty_close(struct pty *p)
{
	if (p->master >= 0)
		close(p->master);
	if (p->slave >= 0)
		close(p->slave);
	p->master = p->slave = -1;
}

/* Point the device's path at this terminal (atomically, as udev does). */
static void point_at(const char *target)
{
	char tmp[300];

	snprintf(tmp, sizeof(tmp), "%s.new", link_path);
	unlink(tmp);
	if (symlink(target, tmp) || rename(tmp, link_path)) {
		perror("symlink");
		exit(1);
	}
}

static void put(struct pty *p, const char *text)
{
	size_t len = strlen(text);

	if (write(p->master, text, len) != (ssize_t)len) {
		perror("write to the pty");
		exit(1);
	}
}

static int rig_init(struct rig *r, const char *keys)
{
	char text[1024], db[512];

	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input gps]\ndriver = serial\ndevice = %s\n%s"
		 "[output lake]\ntype = mqtt\n", dir, link_path, keys);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, true, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
	tc_now_ms = 1000000;
}

struct seen {
	int n;
	char key[32][96];
	char data[32][1024];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "gps"))
		return 0;
	if (s->n < 32) {
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key ? q->key : "");
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

struct dead {
	int n;
	char key[16][128];
	char reason[16][256];
	char data[16][128];
};

static int collect_dlq(const struct dlq_entry *e, const void *data, void *arg)
{
	struct dead *d = arg;

	if (d->n < 16) {
		snprintf(d->key[d->n], sizeof(d->key[0]), "%s", e->key);
		snprintf(d->reason[d->n], sizeof(d->reason[0]), "%s", e->reason);
		snprintf(d->data[d->n], sizeof(d->data[0]), "%.*s", (int)(e->len > 100 ? 100 : e->len),
			 (const char *)data);
	}
	d->n++;
	return 0;
}

/* Conditions polled with the test clock standing still. */
struct want {
	struct rig *r;
	uint64_t ticket;
	const char *state;
};

static bool ticket_reached(void *arg)
{
	struct want *w = arg;

	return input_ticket(w->r->in) >= w->ticket;
}

static bool state_has(void *arg)
{
	struct want *w = arg;

	return strstr(snapshot(w->r).state, w->state) != NULL;
}

static bool disconnected(void *arg)
{
	struct want *w = arg;

	return !snapshot(w->r).connected;
}

static bool wait_ticket(struct rig *r, uint64_t t)
{
	struct want w = { r, t, NULL };

	return tc_wait_io(r->a.loop, ticket_reached, &w);
}

#define GGA "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
#define RMC "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"

/* The terminal is set as configured; NMEA lines with CR LF or LF become
 * records, numbered; a bad checksum and an over-long line go to the DLQ
 * with their reasons and numbers. */
TEST(test_settings_and_lines)
{
	struct rig r;
	struct pty p;
	struct termios t;
	struct status_input st;
	struct seen s = { 0 };
	struct dead d = { 0 };
	char longline[2100], state[160];

	REQUIRE(pty_open(&p));
	point_at(p.name);
	REQUIRE(rig_init(&r, "baud = 4800\nstop_bits = 2\nflow_control = rtscts\nparser = nmea\n"
			 "max_record_bytes = 1KiB\n") == 0);
	st = snapshot(&r);
	CHECK(st.device && st.connected);
	snprintf(state, sizeof(state), "reading %s at 4800 8N2 rtscts, 0 lines", link_path);
	CHECK_EQ_STR(st.state, state);
	REQUIRE(tcgetattr(p.slave, &t) == 0);
	CHECK(cfgetispeed(&t) == B4800 && cfgetospeed(&t) == B4800);
	CHECK_EQ_INT(t.c_cflag & CSIZE, CS8);
	CHECK(!(t.c_cflag & PARENB));
	CHECK(t.c_cflag & CSTOPB);
	CHECK(t.c_cflag & CRTSCTS);
	CHECK(t.c_cflag & CREAD);
	CHECK(!(t.c_lflag & (ICANON | ECHO | ISIG)));
	CHECK(!(t.c_iflag & (ICRNL | IXON)));
	CHECK(!(t.c_oflag & OPOST));

	memset(longline, 'x', sizeof(longline) - 2);
	longline[sizeof(longline) - 2] = '\n';
	longline[sizeof(longline) - 1] = '\0';
	put(&p, GGA "\r\n" RMC "\n");
	put(&p, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n");
	put(&p, longline);
	put(&p, "31.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n" GGA "\r\n");
	REQUIRE(wait_ticket(&r, 6));
	tc_advance(r.a.loop, 200);                  /* committed */
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.key[0], "serial:gps:" SERIES ":1");
	CHECK_EQ_STR(s.key[1], "serial:gps:" SERIES ":2");
	CHECK_EQ_STR(s.key[2], "serial:gps:" SERIES ":6");
	CHECK(strncmp(s.data[0], "{\"talker\":\"GP\",\"type\":\"GGA\",", 28) == 0);
	CHECK(strstr(s.data[0], "\"lat\":48.1173,\"lon\":11.51666667") != NULL);
	CHECK(strstr(s.data[1], "\"datetime\":\"1994-03-23T12:35:19Z\"") != NULL);
	CHECK_EQ_STR(s.data[2], s.data[0]);
	CHECK(queue_dlq_list(r.a.q, 0, 100, collect_dlq, &d) >= 0);
	REQUIRE(d.n == 3);
	CHECK_EQ_STR(d.key[0], "serial:gps:" SERIES ":3");
	CHECK(strstr(d.reason[0], "NMEA checksum mismatch: the sentence says 48, its bytes give 47"));
	CHECK_EQ_STR(d.key[1], "serial:gps:" SERIES ":4");
	CHECK(strstr(d.reason[1], "line longer than max_record_bytes (2098 bytes") != NULL);
	CHECK(strncmp(d.data[1], "xxxxxxxx", 8) == 0);
	CHECK(strstr(d.reason[2], "does not start with '$' or '!'") != NULL);
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 3);
	CHECK_EQ_INT(st.dlq, 3);
	snprintf(state, sizeof(state), "reading %s at 4800 8N2 rtscts, 6 lines", link_path);
	CHECK_EQ_STR(st.state, state);
	rig_release(&r);

	/* Software flow control, at a speed every termios layer knows
	 * (user-mode emulators translate only the common rates). */
	REQUIRE(rig_init(&r, "baud = 115200\nflow_control = xonxoff\n") == 0);
	CHECK(snapshot(&r).connected);
	REQUIRE(tcgetattr(p.slave, &t) == 0);
	CHECK(cfgetispeed(&t) == B115200);
	CHECK((t.c_iflag & (IXON | IXOFF)) == (IXON | IXOFF));
	CHECK(!(t.c_cflag & CRTSCTS) && !(t.c_cflag & CSTOPB));
	rig_release(&r);
	pty_close(&p);
}

/* Settings the terminal does not take are refused with the reason, not
 * read as garbage: a pseudo-terminal, like some USB adapters, keeps 8
 * data bits without parity whatever it is told. */
TEST(test_settings_refused_by_the_device)
{
	struct rig r;
	struct pty p;
	struct status_input st;
	char want[400];

	REQUIRE(pty_open(&p));
	point_at(p.name);
	REQUIRE(rig_init(&r, "baud = 19200\ndata_bits = 7\nparity = even\n") == 0);
	st = snapshot(&r);
	CHECK(st.device && !st.connected);
	snprintf(want, sizeof(want), "%s refused the settings 19200 7E1 (the adapter cannot do them)",
		 link_path);
	CHECK_EQ_STR(st.conn_why, want);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CONNECT], 1);
	rig_release(&r);
	REQUIRE(rig_init(&r, "baud = 19200\nparity = odd\n") == 0);
	CHECK(strstr(snapshot(&r).conn_why, "refused the settings 19200 8O1") != NULL);
	rig_release(&r);
	pty_close(&p);
}

/* Unplugged: the master closes, the driver sees the hangup, says so, and
 * dead-letters the line the device was in the middle of; while the path
 * is gone it says that; once a new terminal is at the path it reads again,
 * the numbering going on. */
TEST(test_unplug_and_replug)
{
	struct rig r;
	struct pty p, q;
	struct status_input st;
	struct seen s = { 0 };
	struct dead d = { 0 };
	struct want w;
	char want[400];

	REQUIRE(pty_open(&p));
	point_at(p.name);
	REQUIRE(rig_init(&r, "reopen_interval = 1s\nreopen_max = 4s\n") == 0);
	put(&p, "first\r\n");
	REQUIRE(wait_ticket(&r, 1));
	put(&p, "$GPGGA,1235");
	w = (struct want){ &r, 0, "11 bytes of an unfinished line" };
	REQUIRE(tc_wait_io(r.a.loop, state_has, &w));
	pty_close(&p);
	REQUIRE(tc_wait_io(r.a.loop, disconnected, &w));
	st = snapshot(&r);
	snprintf(want, sizeof(want), "%s hung up (unplugged?)", link_path);
	if (!strstr(st.conn_why, "hung up"))      /* the kernel may say EIO first */
		snprintf(want, sizeof(want), "%s is gone (unplugged?): read: %s", link_path,
			 strerror(EIO));
	CHECK_EQ_STR(st.conn_why, want);
	CHECK_EQ_INT(st.errors[INPUT_ERR_IO], 1);
	CHECK_EQ_INT(input_ticket(r.in), 2);         /* the unfinished line, dead-lettered */
	tc_advance(r.a.loop, 200);
	CHECK(queue_dlq_list(r.a.q, 0, 100, collect_dlq, &d) >= 0);
	REQUIRE(d.n == 1);
	CHECK_EQ_STR(d.data[0], "$GPGGA,1235");
	CHECK_EQ_STR(d.key[0], "serial:gps:" SERIES ":2");
	snprintf(want, sizeof(want), "unfinished line: %s", st.conn_why);
	CHECK_EQ_STR(d.reason[0], want);

	/* Looked for again: the path now leads nowhere. */
	tc_advance(r.a.loop, 1000);
	st = snapshot(&r);
	CHECK(!st.connected);
	snprintf(want, sizeof(want), "%s is gone (unplugged?)", link_path);
	CHECK_EQ_STR(st.conn_why, want);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CONNECT], 1);
	snprintf(want, sizeof(want), "waiting for %s (9600 8N1), 2 lines", link_path);
	CHECK_EQ_STR(st.state, want);
	tc_advance(r.a.loop, 2000);                  /* backoff: 1-2 s, then 2-4 s */
	CHECK(snapshot(&r).errors[INPUT_ERR_CONNECT] >= 2);

	/* Plugged in again: a new terminal at the same path. */
	REQUIRE(pty_open(&q));
	point_at(q.name);
	tc_advance(r.a.loop, 4000);
	st = snapshot(&r);
	CHECK(st.connected);
	CHECK_EQ_STR(st.conn_why, "");
	put(&q, "second\n");
	REQUIRE(wait_ticket(&r, 3));
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "\"first\"");
	CHECK_EQ_STR(s.key[0], "serial:gps:" SERIES ":1");
	CHECK_EQ_STR(s.data[1], "\"second\"");
	CHECK_EQ_STR(s.key[1], "serial:gps:" SERIES ":3");
	rig_release(&r);
	pty_close(&q);
}

/* Unplugged and another device plugged in under the name before any
 * hangup was seen: the path check notices and the new one is read. */
TEST(test_path_points_elsewhere)
{
	struct rig r;
	struct pty p, q;
	struct status_input st;
	struct seen s = { 0 };

	REQUIRE(pty_open(&p));
	REQUIRE(pty_open(&q));
	point_at(p.name);
	REQUIRE(rig_init(&r, "reopen_interval = 500ms\n") == 0);
	put(&p, "on p\n");
	REQUIRE(wait_ticket(&r, 1));
	point_at(q.name);
	tc_advance(r.a.loop, 500);
	st = snapshot(&r);
	CHECK(!st.connected);
	CHECK(strstr(st.conn_why, "now names another device") != NULL);
	tc_advance(r.a.loop, 500);
	CHECK(snapshot(&r).connected);
	put(&q, "on q\n");
	REQUIRE(wait_ticket(&r, 2));
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[1], "\"on q\"");
	rig_release(&r);
	pty_close(&p);
	pty_close(&q);
}

/* Not there at start: not connected with the reason, read once it is. */
TEST(test_missing_at_start)
{
	struct rig r;
	struct pty p;
	struct status_input st;
	char want[400];

	unlink(link_path);
	REQUIRE(rig_init(&r, "reopen_interval = 1s\nreopen_max = 1s\n") == 0);
	st = snapshot(&r);
	CHECK(st.device && !st.connected);
	snprintf(want, sizeof(want), "%s does not exist (not plugged in, or another name: "
		 "ls /dev/serial/by-id/)", link_path);
	CHECK_EQ_STR(st.conn_why, want);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CONNECT], 1);
	REQUIRE(pty_open(&p));
	point_at(p.name);
	tc_advance(r.a.loop, 1000);
	CHECK(snapshot(&r).connected);
	put(&p, "x\n");
	REQUIRE(wait_ticket(&r, 1));
	rig_release(&r);
	pty_close(&p);

	/* A path that is not a terminal. */
	point_at("/dev/null");
	REQUIRE(rig_init(&r, "") == 0);
	st = snapshot(&r);
	CHECK(!st.connected);
	CHECK(strstr(st.conn_why, "is not a serial port (tcgetattr: ") != NULL);
	rig_release(&r);
}

/* csv: the device's first line is its header, or the configured one,
 * which is not shipped when the device prints it again. */
TEST(test_csv_header)
{
	struct rig r;
	struct pty p;
	struct seen s = { 0 };

	REQUIRE(pty_open(&p));
	point_at(p.name);
	REQUIRE(rig_init(&r, "parser = csv\n") == 0);
	put(&p, "time,temp\r\n1,20.5\r\n2,20.6\r\n");
	REQUIRE(wait_ticket(&r, 2));
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "{\"time\":\"1\",\"temp\":\"20.5\"}");
	CHECK_EQ_STR(s.key[1], "serial:gps:" SERIES ":2");
	rig_release(&r);

	s.n = 0;
	REQUIRE(rig_init(&r, "parser = csv\nheader = t,v\n") == 0);
	put(&p, "3,4\nt,v\n5,6\n");
	REQUIRE(wait_ticket(&r, 2));
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0], "{\"t\":\"3\",\"v\":\"4\"}");
	CHECK_EQ_STR(s.data[1], "{\"t\":\"5\",\"v\":\"6\"}");
	rig_release(&r);
	pty_close(&p);
}

/* Keys go on after a restart of the input, and after a failed commit
 * (its records replayed by the core, the counter saved again), so no
 * line's key is ever given twice; a line read while the queue refuses
 * records waits, and reading pauses until it is taken. */
TEST(test_keys_survive_restart_and_failed_commit)
{
	struct rig r;
	struct pty p;
	struct seen s = { 0 };
	struct want w;

	REQUIRE(pty_open(&p));
	point_at(p.name);
	REQUIRE(rig_init(&r, "") == 0);
	put(&p, "a\nb\n");
	REQUIRE(wait_ticket(&r, 2));
	tc_advance(r.a.loop, 200);
	input_stop(r.in);
	REQUIRE(input_start(r.in) == 0);
	put(&p, "c\n");
	REQUIRE(wait_ticket(&r, 3));
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 200);                  /* this commit fails */
	/* A line while the queue refuses records: it waits, reading pauses. */
	put(&p, "c2\n");
	w = (struct want){ &r, 0, "waiting for queue space" };
	REQUIRE(tc_wait_io(r.a.loop, state_has, &w));
	tc_advance(r.a.loop, 3000);                 /* replayed, c2 taken, committed */
	CHECK_EQ_INT(input_ticket(r.in), 4);
	input_stop(r.in);
	REQUIRE(input_start(r.in) == 0);
	put(&p, "d\n");
	REQUIRE(wait_ticket(&r, 5));
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 5);
	CHECK_EQ_STR(s.data[2], "\"c\"");
	CHECK_EQ_STR(s.data[3], "\"c2\"");
	CHECK_EQ_STR(s.data[4], "\"d\"");
	for (int i = 0; i < 5; i++) {
		char want[64];

		snprintf(want, sizeof(want), "serial:gps:" SERIES ":%d", i + 1);
		CHECK_EQ_STR(s.key[i], want);
	}
	CHECK_EQ_INT(snapshot(&r).duplicates, 0);
	rig_release(&r);
	pty_close(&p);
}

/* The config refuses what cannot work, naming the key. */
TEST(test_config_refused)
{
	static const char *const bad[][2] = {
		{ "device = /dev/ttyUSB0\nbaud = 12345\n", "key 'baud': 12345 is not a standard speed" },
		{ "device = /dev/ttyUSB0\nbaud = 5000000\n", "baud" },
		{ "device = ttyUSB0\n", "is not an absolute path" },
		{ "device = /dev/ttyUSB0\ndata_bits = 9\n", "data_bits" },
		{ "device = /dev/ttyUSB0\nstop_bits = 3\n", "stop_bits" },
		{ "device = /dev/ttyUSB0\nparity = mark\n", "parity" },
		{ "device = /dev/ttyUSB0\nflow_control = dtr\n", "flow_control" },
		{ "device = /dev/ttyUSB0\nreopen_interval = 5s\nreopen_max = 1s\n", "reopen_max" },
		{ "baud = 9600\n", "device" },
	};
	struct config *cfg = NULL;
	char text[512], err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = serial\n"
			 "%s[output lake]\ntype = mqtt\n", dir, bad[i][0]);
		CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i][1]))
			fprintf(stderr, "row %zu: %s\n", i, err);
		CHECK(strstr(err, bad[i][1]) != NULL);
	}
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = serial\n"
		 "device = /dev/ttyACM0\nbaud = 4000000\nparser = nmea\n[output lake]\ntype = mqtt\n", dir);
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
	snprintf(link_path, sizeof(link_path), "%s/gps", dir);
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_settings_and_lines);
	RUN(test_settings_refused_by_the_device);
	RUN(test_unplug_and_replug);
	RUN(test_path_points_elsewhere);
	RUN(test_missing_at_start);
	RUN(test_csv_header);
	RUN(test_keys_survive_restart_and_failed_commit);
	RUN(test_config_refused);
	RUN(test_no_leaks);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_END();
}
