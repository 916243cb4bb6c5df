/* test_modbus_link.c - the Modbus transports against a real slave
 * (tests/servers/modbus_server.c on libmodbus), on loopback and on a pty
 * pair made by socat: answers, exceptions, timeouts, damaged frames,
 * garbage, a server that goes away and comes back, and two devices sharing
 * one RTU bus. Every wait is on a condition with a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../drivers/modbus.h"
#include "test.h"

static char server_bin[512];
static char dir[] = "/tmp/mblink-XXXXXX";
static char control[600];

struct done {
	bool called;
	int result, exception;
	uint8_t data[256];
	size_t dlen;
	struct mb_xact x;
};

static void on_done(struct mb_xact *x, int result)
{
	struct done *d = container_of(x, struct done, x);

	d->called = true;
	d->result = result;
	d->exception = x->exception;
	d->dlen = result == MB_R_OK ? x->dlen : 0;
	if (d->dlen)
		memcpy(d->data, x->data, d->dlen);
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &l);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* Start a program, wait (deadline 10 s) for "ready" on its stdout. */
static pid_t start(char *const argv[], bool wait_ready)
{
	int p[2];
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (!pid) {
		dup2(p[1], 1);
		close(p[0]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	if (wait_ready) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		char buf[64] = "";

		if (poll(&pf, 1, 10000) != 1 || read(p[0], buf, sizeof(buf) - 1) <= 0 ||
		    !strstr(buf, "ready")) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			pid = -1;
		}
	}
	close(p[0]);
	return pid;
}

static void stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

static pid_t start_tcp(int port)
{
	char ps[16];
	char *argv[] = { server_bin, "--tcp", ps, "--control", control, NULL };

	snprintf(ps, sizeof(ps), "%d", port);
	return start(argv, true);
}

static void set_faults(const char *text)
{
	FILE *f = fopen(control, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Run the loop until d is done, at most 10 s. */
static bool run_until(struct loop *l, struct done *d)
{
	for (int i = 0; i < 1000 && !d->called; i++)
		loop_turn(l, 10);
	return d->called;
}

static bool request(struct loop *l, struct mb_bus *b, struct done *d, int func, uint16_t addr,
		    uint16_t count, int64_t timeout)
{
	memset(d, 0, sizeof(*d));
	d->x.unit = 1;
	d->x.func = func;
	d->x.addr = addr;
	d->x.count = count;
	d->x.timeout_ms = timeout;
	d->x.done = on_done;
	mb_bus_submit(b, &d->x);
	return run_until(l, d);
}

/* The test slave is a program of the build machine, like the broker:
 * $MODBUS_SERVER when set (the static builds' tests, whose own build has
 * no libmodbus), else $O/tests/modbus_server. */
static bool have_server(void)
{
	const char *o = getenv("O"), *srv = getenv("MODBUS_SERVER");

	if (srv && *srv)
		snprintf(server_bin, sizeof(server_bin), "%s", srv);
	else
		snprintf(server_bin, sizeof(server_bin), "%s/tests/modbus_server", o && *o ? o : "build");
	if (access(server_bin, X_OK))
		return false;
	if (!mkdtemp(dir))
		return false;
	snprintf(control, sizeof(control), "%s/faults", dir);
	set_faults("");
	return true;
}

TEST(test_tcp_answers_faults_and_restart)
{
	struct mb_link_conf c;
	struct loop *l;
	struct mb_bus *b;
	struct done d;
	char url[64], err[128];
	int port = free_port();
	pid_t srv;

	REQUIRE(!loop_init(&l));
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	REQUIRE(!mb_url_parse(url, &c, err, sizeof(err)));
	REQUIRE(!mb_bus_get(l, &c, &b));
	srv = start_tcp(port);
	REQUIRE(srv > 0);

	/* Holding 0-1: 1234 and -1234. */
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 2, 2000));
	CHECK_EQ_INT(d.result, MB_R_OK);
	CHECK_EQ_INT(d.dlen, 4);
	CHECK(d.data[0] == 0x04 && d.data[1] == 0xd2 && d.data[2] == 0xfb && d.data[3] == 0x2e);
	CHECK(mb_bus_connected(b));

	set_faults("exception 3 100 101 2\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 99, 4, 2000));
	CHECK_EQ_INT(d.result, MB_R_EXCEPTION);
	CHECK_EQ_INT(d.exception, 2);

	set_faults("drop\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 200));
	CHECK_EQ_INT(d.result, MB_R_TIMEOUT);

	/* The late answer to a timed-out request is not taken for the next. */
	set_faults("delay 400\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 100));
	CHECK_EQ_INT(d.result, MB_R_TIMEOUT);
	set_faults("");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 1, 1, 3000));
	CHECK_EQ_INT(d.result, MB_R_OK);
	CHECK(d.dlen == 2 && d.data[0] == 0xfb && d.data[1] == 0x2e);

	set_faults("crc\n");    /* TCP: a byte count that lies */
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 2000));
	CHECK_EQ_INT(d.result, MB_R_PROTOCOL);
	set_faults("garbage\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 2000));
	CHECK(d.result == MB_R_PROTOCOL || d.result == MB_R_TIMEOUT);
	set_faults("");

	/* The server goes away: the request fails; it comes back: it works. */
	stop(srv);
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 1000));
	CHECK(d.result == MB_R_IO || d.result == MB_R_CONNECT);
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 1, 1000));
	CHECK_EQ_INT(d.result, MB_R_CONNECT);
	CHECK(!mb_bus_connected(b));
	CHECK(strstr(mb_bus_why(b), "cannot connect to 127.0.0.1:") != NULL);
	srv = start_tcp(port);
	REQUIRE(srv > 0);
	REQUIRE(request(l, b, &d, MB_FC_INPUT, 0, 2, 2000));
	CHECK_EQ_INT(d.result, MB_R_OK);
	CHECK(d.data[0] == 0x43 && d.data[1] == 0x66 && d.data[2] == 0x80);

	stop(srv);
	mb_bus_put(b);
	mb_link_conf_release(&c);
	loop_free(l);
}

static bool wait_file(const char *p)
{
	struct stat st;

	for (int i = 0; i < 1000; i++) {
		if (!stat(p, &st))
			return true;
		usleep(10000);
	}
	return false;
}

TEST(test_rtu_on_a_pty_shared_bus)
{
	char a[700], bpath[700], sa[720], sb[720], url[720], err[128];
	char *socat_argv[] = { "/usr/bin/socat", "-d", "-d", sa, sb, NULL };
	struct mb_link_conf c;
	struct loop *l;
	struct mb_bus *b1, *b2;
	struct done d1, d2;
	pid_t socat, srv;

	if (access("/usr/bin/socat", X_OK))
		SKIP("socat is not installed");
	snprintf(a, sizeof(a), "%s/ttyA", dir);
	snprintf(bpath, sizeof(bpath), "%s/ttyB", dir);
	snprintf(sa, sizeof(sa), "pty,raw,echo=0,link=%s", a);
	snprintf(sb, sizeof(sb), "pty,raw,echo=0,link=%s", bpath);
	socat = start(socat_argv, false);
	REQUIRE(socat > 0);
	REQUIRE(wait_file(a) && wait_file(bpath));
	{
		char *argv[] = { server_bin, "--rtu", bpath, "--baud", "19200", "--control", control, NULL };

		srv = start(argv, true);
	}
	REQUIRE(srv > 0);
	REQUIRE(!loop_init(&l));
	snprintf(url, sizeof(url), "rtu://%s", a);
	REQUIRE(!mb_url_parse(url, &c, err, sizeof(err)));
	REQUIRE(!mb_bus_get(l, &c, &b1));
	REQUIRE(!mb_bus_get(l, &c, &b2));
	CHECK(b1 == b2);        /* one bus for the device */
	c.baud = 9600;
	{
		struct mb_bus *b3 = NULL;

		CHECK_EQ_INT(mb_bus_get(l, &c, &b3), -EINVAL);
	}

	/* Two requests at once on one bus: one after the other, both right. */
	memset(&d1, 0, sizeof(d1));
	memset(&d2, 0, sizeof(d2));
	d1.x = (struct mb_xact){ .unit = 1, .func = MB_FC_HOLDING, .addr = 0, .count = 2,
				 .timeout_ms = 2000, .done = on_done };
	d2.x = (struct mb_xact){ .unit = 1, .func = MB_FC_INPUT, .addr = 6, .count = 2,
				 .timeout_ms = 2000, .done = on_done };
	mb_bus_submit(b1, &d1.x);
	mb_bus_submit(b2, &d2.x);
	REQUIRE(run_until(l, &d1) && run_until(l, &d2));
	CHECK_EQ_INT(d1.result, MB_R_OK);
	CHECK(d1.dlen == 4 && d1.data[0] == 0x04 && d1.data[1] == 0xd2);
	CHECK_EQ_INT(d2.result, MB_R_OK);
	CHECK(d2.dlen == 4 && d2.data[0] == 0x40 && d2.data[1] == 0xa8);   /* 5.25 */

	set_faults("crc\n");
	REQUIRE(request(l, b1, &d1, MB_FC_HOLDING, 0, 2, 1000));
	CHECK_EQ_INT(d1.result, MB_R_CRC);
	set_faults("exception 4 0 10 2\n");
	REQUIRE(request(l, b1, &d1, MB_FC_INPUT, 0, 2, 1000));
	CHECK_EQ_INT(d1.result, MB_R_EXCEPTION);
	CHECK_EQ_INT(d1.exception, 2);
	set_faults("drop\n");
	REQUIRE(request(l, b1, &d1, MB_FC_INPUT, 0, 2, 200));
	CHECK_EQ_INT(d1.result, MB_R_TIMEOUT);
	set_faults("garbage\n");
	REQUIRE(request(l, b1, &d1, MB_FC_INPUT, 0, 2, 500));
	CHECK(d1.result == MB_R_PROTOCOL || d1.result == MB_R_CRC);
	set_faults("");
	REQUIRE(request(l, b1, &d1, MB_FC_INPUT, 12, 2, 2000));
	CHECK_EQ_INT(d1.result, MB_R_OK);
	CHECK(d1.dlen == 4 && d1.data[0] == 0x44 && d1.data[1] == 0x97);   /* 1210.125 */

	mb_bus_put(b2);
	mb_bus_put(b1);
	mb_link_conf_release(&c);
	loop_free(l);
	stop(srv);
	stop(socat);
}

/* RTU framing on a TCP stream: socat bridges a TCP port to a pty on which
 * the slave speaks RTU, as a serial-to-Ethernet converter does. */
TEST(test_rtu_over_tcp)
{
	char bpath[700], sa[720], sb[64], url[64], err[128];
	char *socat_argv[] = { "/usr/bin/socat", sa, sb, NULL };
	struct mb_link_conf c;
	struct loop *l;
	struct mb_bus *b;
	struct done d;
	int port = free_port();
	pid_t socat, srv;

	if (access("/usr/bin/socat", X_OK))
		SKIP("socat is not installed");
	snprintf(bpath, sizeof(bpath), "%s/ttyC", dir);
	snprintf(sa, sizeof(sa), "pty,raw,echo=0,link=%s", bpath);
	snprintf(sb, sizeof(sb), "tcp-listen:%d,bind=127.0.0.1,reuseaddr", port);
	socat = start(socat_argv, false);
	REQUIRE(socat > 0);
	REQUIRE(wait_file(bpath));
	{
		char *argv[] = { server_bin, "--rtu", bpath, "--control", control, NULL };

		srv = start(argv, true);
	}
	REQUIRE(srv > 0);
	REQUIRE(!loop_init(&l));
	snprintf(url, sizeof(url), "rtu+tcp://127.0.0.1:%d", port);
	REQUIRE(!mb_url_parse(url, &c, err, sizeof(err)));
	REQUIRE(!mb_bus_get(l, &c, &b));
	/* socat listens once the pty is made: retry the connect until it does. */
	for (int i = 0; i < 100; i++) {
		REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 2, 1000));
		if (d.result != MB_R_CONNECT)
			break;
		usleep(20000);
	}
	CHECK_EQ_INT(d.result, MB_R_OK);
	CHECK(d.dlen == 4 && d.data[0] == 0x04 && d.data[1] == 0xd2);
	set_faults("crc\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 2, 1000));
	CHECK_EQ_INT(d.result, MB_R_CRC);
	set_faults("exception 3 0 0 2\n");
	REQUIRE(request(l, b, &d, MB_FC_HOLDING, 0, 2, 1000));
	CHECK_EQ_INT(d.result, MB_R_EXCEPTION);
	set_faults("");
	REQUIRE(request(l, b, &d, MB_FC_INPUT, 342, 2, 1000));
	CHECK_EQ_INT(d.result, MB_R_OK);
	CHECK(d.dlen == 4 && d.data[0] == 0x46 && d.data[1] == 0x40);   /* 12345.5 */
	mb_bus_put(b);
	mb_link_conf_release(&c);
	loop_free(l);
	stop(srv);
	stop(socat);
}

TEST(test_urls)
{
	struct mb_link_conf c;
	char err[160];

	CHECK_EQ_INT(mb_url_parse("tcp://10.0.0.5", &c, err, sizeof(err)), 0);
	CHECK(c.proto == MB_TCP && !strcmp(c.host, "10.0.0.5") && !strcmp(c.port, "502"));
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("rtu+tcp://[::1]:4001", &c, err, sizeof(err)), 0);
	CHECK(c.proto == MB_RTU_TCP && !strcmp(c.host, "::1") && !strcmp(c.port, "4001"));
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("rtu:///dev/ttyUSB0", &c, err, sizeof(err)), 0);
	CHECK(c.proto == MB_RTU && !strcmp(c.path, "/dev/ttyUSB0"));
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("rtu+tcp://gw", &c, err, sizeof(err)), -EINVAL);
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("tcp://h:99999", &c, err, sizeof(err)), -EINVAL);
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("modbus://h", &c, err, sizeof(err)), -EINVAL);
	mb_link_conf_release(&c);
	CHECK_EQ_INT(mb_url_parse("rtu://ttyUSB0", &c, err, sizeof(err)), -EINVAL);
	mb_link_conf_release(&c);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_urls);
	if (!have_server()) {
		printf("SKIP: the test server (make tests builds $O/tests/modbus_server) is missing\n");
		TEST_END();
	}
	RUN(test_tcp_answers_faults_and_restart);
	RUN(test_rtu_on_a_pty_shared_bus);
	RUN(test_rtu_over_tcp);
	unlink(control);
	{
		char p[700];

		snprintf(p, sizeof(p), "rm -rf %s", dir);
		if (system(p))
			perror("rm");
	}
	TEST_END();
}
