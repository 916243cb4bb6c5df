/* test_system.c - the system driver: its readers of /proc and /sys against
 * fake trees with known values (exact percentages, bytes, deltas), garbage,
 * cut-off and missing files, counters that go backwards; then the driver on
 * the input core with a real queue and the test clock, record by record. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "config.h"
#include "input.h"
#include "loop.h"
#include "mem.h"
#include "queue.h"
#include "status.h"
#include "test.h"
#include "test_clock.h"
#include "input_rig.h"
#include "../../drivers/system.h"

static char dir[] = "/tmp/test_system.XXXXXX";
static char proc[128], sys_[128];

static void put(const char *root, const char *rel, const char *text)
{
	char path[512], cmd[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname %s)\"", path);
	if (system(cmd) != 0)
		exit(1);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void drop(const char *root, const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	unlink(path);
}

/* ---- readers ---------------------------------------------------------- */

/* Two samples with known deltas give exact percentages, for the whole
 * machine and per CPU; the interrupt lines after them are not read. */
TEST(test_cpu_percentages)
{
	struct sys_cpu a, b, per[4];
	unsigned idx[4];
	double pct[SYS_CPU_STATES];
	size_t n;

	put(proc, "stat", "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 60 0 20 400 5 0 0 0 0 0\n"
			  "cpu1 40 0 30 400 5 0 0 0 0 0\nintr 12345 1 2 3\nctxt 99\n");
	REQUIRE(sys_read_stat(proc, &a, per, idx, 4, &n) == 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(idx[1], 1);
	CHECK_EQ_INT(per[1].t[2], 30);
	put(proc, "stat", "cpu  110 0 70 860 15 0 5 0 0 0\n");
	REQUIRE(sys_read_stat(proc, &b, NULL, NULL, 0, &n) == 0);
	REQUIRE(sys_cpu_percent(&a, &b, pct) == 0);
	CHECK(pct[0] == 10.0);  /* user */
	CHECK(pct[1] == 0.0);
	CHECK(pct[2] == 20.0);  /* system */
	CHECK(pct[3] == 60.0);  /* idle */
	CHECK(pct[4] == 5.0);   /* iowait */
	CHECK(pct[6] == 5.0);   /* softirq */
	CHECK(pct[7] == 0.0);
	/* Backwards (a reboot between samples), or no time at all: nothing said. */
	CHECK_EQ_INT(sys_cpu_percent(&b, &a, pct), -ERANGE);
	CHECK_EQ_INT(sys_cpu_percent(&b, &b, pct), -EAGAIN);
}

TEST(test_stat_errors)
{
	struct sys_cpu a;
	size_t n;

	put(proc, "stat", "cpu  100 0 50\n");          /* cut short */
	CHECK_EQ_INT(sys_read_stat(proc, &a, NULL, NULL, 0, &n), -EINVAL);
	put(proc, "stat", "cpu  100 0 x0 800 10 0 0 0\n");
	CHECK_EQ_INT(sys_read_stat(proc, &a, NULL, NULL, 0, &n), -EINVAL);
	put(proc, "stat", "intr 1 2 3\n");              /* no cpu line */
	CHECK_EQ_INT(sys_read_stat(proc, &a, NULL, NULL, 0, &n), -EINVAL);
	put(proc, "stat", "");
	CHECK_EQ_INT(sys_read_stat(proc, &a, NULL, NULL, 0, &n), -EINVAL);
	drop(proc, "stat");
	CHECK_EQ_INT(sys_read_stat(proc, &a, NULL, NULL, 0, &n), -ENOENT);
}

TEST(test_meminfo)
{
	struct sys_mem m;

	put(proc, "meminfo", "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     600 kB\n"
			     "Buffers:           10 kB\nCached:           300 kB\nSwapCached:         0 kB\n"
			     "SwapTotal:        2048 kB\nSwapFree:         1024 kB\nHugePages_Total:   0\n");
	REQUIRE(sys_read_meminfo(proc, &m) == 0);
	CHECK_EQ_INT(m.total, 1024000);
	CHECK_EQ_INT(m.free, 204800);
	CHECK_EQ_INT(m.available, 614400);
	CHECK(m.has_available);
	CHECK_EQ_INT(m.buffers, 10240);
	CHECK_EQ_INT(m.cached, 307200);
	CHECK_EQ_INT(m.swap_total, 2097152);
	CHECK_EQ_INT(m.swap_free, 1048576);
	/* An old kernel without MemAvailable. */
	put(proc, "meminfo", "MemTotal: 1000 kB\nMemFree: 200 kB\nBuffers: 10 kB\nCached: 300 kB\n"
			     "SwapTotal: 0 kB\nSwapFree: 0 kB\n");
	REQUIRE(sys_read_meminfo(proc, &m) == 0);
	CHECK(!m.has_available);
	/* Cut short, garbage. */
	put(proc, "meminfo", "MemTotal: 1000 kB\nMemFree: 200 kB\nBuff");
	CHECK_EQ_INT(sys_read_meminfo(proc, &m), -EINVAL);
	put(proc, "meminfo", "MemTotal: lots kB\nMemFree: 200 kB\nBuffers: 10 kB\nCached: 300 kB\n"
			     "SwapTotal: 0 kB\nSwapFree: 0 kB\n");
	CHECK_EQ_INT(sys_read_meminfo(proc, &m), -EINVAL);
}

static const char netdev_head[] =
	"Inter-|   Receive                                                |  Transmit\n"
	" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
	"colls carrier compressed\n";

TEST(test_netdev)
{
	struct sys_netif ifs[4];
	char text[1024];
	size_t n;

	snprintf(text, sizeof(text), "%s"
		 "    lo:  5000  50 0 0 0 0 0 0  5000  50 0 0 0 0 0 0\n"
		 "  eth0: 123456 789 1 2 0 0 0 3 654321 987 4 5 0 0 0 0\n", netdev_head);
	put(proc, "net/dev", text);
	REQUIRE(sys_read_netdev(proc, ifs, 4, &n) == 0);
	REQUIRE(n == 2);
	CHECK_EQ_STR(ifs[0].name, "lo");
	CHECK_EQ_STR(ifs[1].name, "eth0");
	CHECK_EQ_INT(ifs[1].rx_bytes, 123456);
	CHECK_EQ_INT(ifs[1].rx_packets, 789);
	CHECK_EQ_INT(ifs[1].rx_errs, 1);
	CHECK_EQ_INT(ifs[1].rx_drop, 2);
	CHECK_EQ_INT(ifs[1].tx_bytes, 654321);
	CHECK_EQ_INT(ifs[1].tx_packets, 987);
	CHECK_EQ_INT(ifs[1].tx_errs, 4);
	CHECK_EQ_INT(ifs[1].tx_drop, 5);
	/* A line cut off in the middle. */
	snprintf(text, sizeof(text), "%s  eth0: 123456 789 1 2 0 0\n", netdev_head);
	put(proc, "net/dev", text);
	CHECK_EQ_INT(sys_read_netdev(proc, ifs, 4, &n), -EINVAL);
	put(proc, "net/dev", "");
	CHECK_EQ_INT(sys_read_netdev(proc, ifs, 4, &n), -EINVAL);
}

TEST(test_diskstats)
{
	struct sys_disk d[4];
	uint64_t delta;
	size_t n;

	put(proc, "diskstats",
	    "   7       0 loop0 5 0 10 0 0 0 0 0 0 1 1\n"
	    "   8       0 sda 100 3 2000 40 50 7 1000 60 0 300 400 0 0 0 0\n"
	    "   8       1 sda1 90 3 1800 40 50 7 1000 60 0 280 380\n");
	REQUIRE(sys_read_diskstats(proc, d, 4, &n) == 0);
	REQUIRE(n == 2);
	CHECK_EQ_STR(d[0].name, "sda");
	CHECK_EQ_INT(d[0].reads, 100);
	CHECK_EQ_INT(d[0].read_sectors, 2000);
	CHECK_EQ_INT(d[0].writes, 50);
	CHECK_EQ_INT(d[0].write_sectors, 1000);
	CHECK_EQ_INT(d[0].io_ms, 300);
	CHECK_EQ_STR(d[1].name, "sda1");
	/* Deltas never go negative. */
	CHECK(sys_delta(100, 110, &delta) && delta == 10);
	CHECK(!sys_delta(110, 100, &delta));
	put(proc, "diskstats", "   8       0 sda 100 3 2000\n");
	CHECK_EQ_INT(sys_read_diskstats(proc, d, 4, &n), -EINVAL);
	put(proc, "diskstats", "garbage\n");
	CHECK_EQ_INT(sys_read_diskstats(proc, d, 4, &n), -EINVAL);
}

TEST(test_load_and_uptime)
{
	struct sys_load l;
	double up;

	put(proc, "loadavg", "0.50 0.25 1.75 1/123 4567\n");
	REQUIRE(sys_read_loadavg(proc, &l) == 0);
	CHECK(l.l1 == 0.5 && l.l5 == 0.25 && l.l15 == 1.75);
	put(proc, "uptime", "3600.50 7000.00\n");
	REQUIRE(sys_read_uptime(proc, &up) == 0);
	CHECK(up == 3600.5);
	put(proc, "loadavg", "0.50 0.25\n");
	CHECK_EQ_INT(sys_read_loadavg(proc, &l), -EINVAL);
	put(proc, "loadavg", "nan nan nan\n");
	CHECK_EQ_INT(sys_read_loadavg(proc, &l), -EINVAL);
	put(proc, "uptime", "abc\n");
	CHECK_EQ_INT(sys_read_uptime(proc, &up), -EINVAL);
	drop(proc, "uptime");
	CHECK_EQ_INT(sys_read_uptime(proc, &up), -ENOENT);
}

TEST(test_self)
{
	uint64_t v = 0;

	put(proc, "self/status", "Name:\tagentd\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n");
	REQUIRE(sys_read_self_rss(proc, &v) == 0);
	CHECK_EQ_INT(v, 2097152);
	put(proc, "self/status", "Name:\tagentd\n");
	CHECK_EQ_INT(sys_read_self_rss(proc, &v), -EINVAL);
	put(proc, "self/fd/0", "");
	put(proc, "self/fd/1", "");
	put(proc, "self/fd/2", "");
	REQUIRE(sys_read_self_fds(proc, &v) == 0);
	CHECK_EQ_INT(v, 3);
	/* The real /proc: the reader's own descriptor is not counted. */
	{
		uint64_t a = 0, b = 0;
		int fd;

		REQUIRE(sys_read_self_fds("/proc", &a) == 0);
		fd = dup(0);
		REQUIRE(sys_read_self_fds("/proc", &b) == 0);
		close(fd);
		CHECK_EQ_INT(b, a + 1);
	}
}

TEST(test_thermal)
{
	struct sys_thermal z[4];
	size_t n;

	put(sys_, "class/thermal/thermal_zone10/temp", "-5500\n");
	put(sys_, "class/thermal/thermal_zone10/type", "outside\n");
	put(sys_, "class/thermal/thermal_zone2/temp", "45500\n");
	put(sys_, "class/thermal/thermal_zone2/type", "cpu-thermal\n");
	put(sys_, "class/thermal/thermal_zone3/temp", "hot\n");
	put(sys_, "class/thermal/cooling_device0/type", "fan\n");
	REQUIRE(sys_read_thermal(sys_, z, 4, &n) == 0);
	REQUIRE(n == 3);
	CHECK_EQ_STR(z[0].zone, "thermal_zone2");
	CHECK_EQ_STR(z[0].type, "cpu-thermal");
	CHECK(z[0].rc == 0 && z[0].celsius == 45.5);
	CHECK_EQ_STR(z[1].zone, "thermal_zone3");
	CHECK_EQ_INT(z[1].rc, -EINVAL);
	CHECK_EQ_STR(z[1].type, "");
	CHECK_EQ_STR(z[2].zone, "thermal_zone10");
	CHECK(z[2].rc == 0 && z[2].celsius == -5.5);
	CHECK_EQ_INT(sys_read_thermal("/nonexistent", z, 4, &n), -ENOENT);
}

TEST(test_mounts)
{
	static char *inc_v[] = { "/", "/data*" }, *exc_v[] = { "/data disk" };
	struct cfg_list inc = { inc_v, 2 }, exc = { exc_v, 1 };
	struct sys_mount_filter f = { 0 };
	struct sys_mount m[8];
	char path[256];
	size_t n;

	put(dir, "mounts",
	    "/dev/root / ext4 rw 0 0\n"
	    "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
	    "devpts /dev/pts devpts rw 0 0\ntmpfs /run tmpfs rw 0 0\n"
	    "srv:/x /mnt/nfs nfs4 rw 0 0\n//srv/s /mnt/smb cifs rw 0 0\nu@h: /mnt/ssh fuse.sshfs rw 0 0\n"
	    "/dev/sda1 /data\\040disk ext4 rw 0 0\n/dev/sdb1 /boot vfat rw 0 0\n"
	    "/dev/sdc1 /data\\040disk xfs rw 0 0\n");
	snprintf(path, sizeof(path), "%s/mounts", dir);
	REQUIRE(sys_read_mounts(path, &f, m, 8, &n) == 0);
	REQUIRE(n == 3);
	CHECK_EQ_STR(m[0].dir, "/");
	CHECK_EQ_STR(m[1].dir, "/data disk");
	CHECK_EQ_STR(m[1].type, "xfs");   /* mounted over: the last one */
	CHECK_EQ_STR(m[2].dir, "/boot");
	f.tmpfs = true;
	f.network = true;
	REQUIRE(sys_read_mounts(path, &f, m, 8, &n) == 0);
	CHECK_EQ_INT(n, 7);
	f = (struct sys_mount_filter){ .include = &inc, .exclude = &exc };
	REQUIRE(sys_read_mounts(path, &f, m, 8, &n) == 0);
	REQUIRE(n == 1);
	CHECK_EQ_STR(m[0].dir, "/");
	CHECK(sys_fs_network("fuse.rclone") && !sys_fs_network("fuseblk") && !sys_fs_network("ext4"));
	put(dir, "mounts", "/dev/root\n");
	CHECK_EQ_INT(sys_read_mounts(path, &f, m, 8, &n), -EINVAL);
}

/* ---- the driver on the input core -------------------------------------- */

static int fake_statvfs_calls;
static char fake_statvfs_seen[256];

static int fake_statvfs(const char *path, struct statvfs *st)
{
	fake_statvfs_calls++;
	snprintf(fake_statvfs_seen + strlen(fake_statvfs_seen),
		 sizeof(fake_statvfs_seen) - strlen(fake_statvfs_seen), "%s;", path);
	if (!strcmp(path, "/gone")) {
		errno = EIO;
		return -1;
	}
	memset(st, 0, sizeof(*st));
	st->f_frsize = 4096;
	st->f_blocks = 1000;
	st->f_bfree = 500;
	st->f_bavail = 400;
	st->f_files = 100;
	st->f_ffree = 50;
	return 0;
}

static int rig_init(struct rig *r, const char *extra)
{
	char text[1024], db[160];

	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input host]\ndriver = system\ninterval = 10s\nproc_root = %s\nsys_root = %s\n"
		 "mounts = %s/mounts\n%s"
		 "[output lake]\ntype = mqtt\n", dir, proc, sys_, dir, extra);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, false, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	tc_uninstall();
}

struct seen {
	int n;
	int64_t wall[4], mono[4];
	char key[4][96];
	char data[4][32768];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "host"))
		return 0;
	if (s->n < 4) {
		s->wall[s->n] = q->ts_wall_ms;
		s->mono[s->n] = q->ts_mono_ms;
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key);
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

static void tree_sample1(void)
{
	char text[1024], cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf %s/class/thermal", sys_);
	if (system(cmd) != 0)
		exit(1);

	put(proc, "stat", "cpu  100 0 50 800 10 0 0 0 0 0\nintr 1 2\n");
	put(proc, "meminfo", "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\n"
			     "Cached: 300 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n");
	snprintf(text, sizeof(text), "%s"
		 "    lo:  5000  50 0 0 0 0 0 0  5000  50 0 0 0 0 0 0\n"
		 "  eth0: 1000 10 0 0 0 0 0 0 5000 20 0 0 0 0 0 0\n", netdev_head);
	put(proc, "net/dev", text);
	put(proc, "diskstats", "   8       0 sda 100 0 2000 0 50 0 1000 0 0 300 0\n");
	put(proc, "loadavg", "0.50 0.25 0.10 1/100 1234\n");
	put(proc, "uptime", "3600.50 7000.00\n");
	put(proc, "self/status", "VmRSS:\t2048 kB\n");
	put(proc, "self/fd/0", "");
	put(proc, "self/fd/1", "");
	drop(proc, "self/fd/2");
	put(sys_, "class/thermal/thermal_zone0/temp", "45500\n");
	put(sys_, "class/thermal/thermal_zone0/type", "cpu-thermal\n");
	put(dir, "mounts", "/dev/sda1 /data ext4 rw 0 0\nproc /proc proc rw 0 0\n"
			   "tmpfs /run tmpfs rw 0 0\nsrv:/x /mnt/nfs nfs4 rw 0 0\n");
}

static void tree_sample2(void)
{
	char text[1024];

	/* 10 s later: known deltas; eth0's transmit counter went backwards
	 * (the interface was created again) and a new wlan0 appeared. */
	put(proc, "stat", "cpu  110 0 70 860 15 0 5 0 0 0\nintr 1 2\n");
	snprintf(text, sizeof(text), "%s"
		 "    lo:  9000  90 0 0 0 0 0 0  9000  90 0 0 0 0 0 0\n"
		 "  eth0: 11000 30 1 2 0 0 0 0 100 1 0 0 0 0 0 0\n"
		 " wlan0: 7 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n", netdev_head);
	put(proc, "net/dev", text);
	put(proc, "diskstats", "   8       0 sda 110 0 2200 0 60 0 1100 0 0 1300 0\n");
	put(proc, "loadavg", "0.75 0.30 0.10 1/100 1234\n");
	put(proc, "uptime", "3610.50 7020.00\n");
}

/* Two samples on their deadlines: the first without rates, the second with
 * exact percentages, deltas and rates; a counter that went backwards is
 * null, never negative; network filesystems are never asked for. */
TEST(test_driver_records)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;

	tree_sample1();
	fake_statvfs_calls = 0;
	fake_statvfs_seen[0] = '\0';
	sys_statvfs = fake_statvfs;
	REQUIRE(rig_init(&r, "") == 0);
	/* The test clock starts at monotonic 1000000: the first deadline is
	 * the next multiple of 10 s. */
	tc_advance(r.a.loop, 10000 - 1);
	tc_advance(r.a.loop, 1 + 200);
	tree_sample2();
	tc_advance(r.a.loop, 10000);
	REQUIRE(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_INT(s.wall[0], tc_wall_base_ms + 1010000);
	CHECK_EQ_INT(s.mono[0], 1010000 + 5000);
	CHECK_EQ_STR(s.key[0], "system:host:1767226610000");
	CHECK_EQ_STR(s.key[1], "system:host:1767226620000");
	CHECK_EQ_STR(s.data[0],
		     "{\"cpu\":null,"
		     "\"memory\":{\"total\":1024000,\"available\":614400,\"free\":204800,\"buffers\":10240,"
		     "\"cached\":307200,\"swap_total\":0,\"swap_free\":0},"
		     "\"fs\":{\"/data\":{\"type\":\"ext4\",\"total\":4096000,\"free\":2048000,"
		     "\"available\":1638400,\"inodes\":100,\"inodes_free\":50}},"
		     "\"diskio\":{\"sda\":{\"reads\":null,\"writes\":null,\"read_bytes\":null,"
		     "\"read_bytes_per_s\":null,\"write_bytes\":null,\"write_bytes_per_s\":null,"
		     "\"io_ms\":null,\"busy\":null}},"
		     "\"net\":{\"eth0\":{\"rx_bytes\":null,\"rx_bytes_per_s\":null,\"rx_packets\":null,"
		     "\"rx_errs\":null,\"rx_drop\":null,\"tx_bytes\":null,\"tx_bytes_per_s\":null,"
		     "\"tx_packets\":null,\"tx_errs\":null,\"tx_drop\":null}},"
		     "\"load\":{\"1m\":0.5,\"5m\":0.25,\"15m\":0.1},\"uptime\":3600.5,"
		     "\"temperature\":{\"thermal_zone0\":{\"type\":\"cpu-thermal\",\"temp\":45.5}},"
		     "\"self\":{\"rss\":2097152,\"fds\":2},"
		     "\"units\":{\"memory.total\":\"B\",\"memory.available\":\"B\",\"memory.free\":\"B\","
		     "\"memory.buffers\":\"B\",\"memory.cached\":\"B\",\"memory.swap_total\":\"B\","
		     "\"memory.swap_free\":\"B\",\"fs./data.total\":\"B\",\"fs./data.free\":\"B\","
		     "\"fs./data.available\":\"B\",\"diskio.sda.read_bytes\":\"B\","
		     "\"diskio.sda.read_bytes_per_s\":\"B/s\",\"diskio.sda.write_bytes\":\"B\","
		     "\"diskio.sda.write_bytes_per_s\":\"B/s\",\"diskio.sda.io_ms\":\"ms\","
		     "\"diskio.sda.busy\":\"%\",\"net.eth0.rx_bytes\":\"B\",\"net.eth0.rx_bytes_per_s\":\"B/s\","
		     "\"net.eth0.tx_bytes\":\"B\",\"net.eth0.tx_bytes_per_s\":\"B/s\",\"uptime\":\"s\","
		     "\"temperature.thermal_zone0.temp\":\"C\",\"self.rss\":\"B\"},"
		     "\"quality\":{\"cpu\":\"first sample\",\"diskio.sda.reads\":\"first sample\","
		     "\"diskio.sda.writes\":\"first sample\",\"diskio.sda.read_bytes\":\"first sample\","
		     "\"diskio.sda.read_bytes_per_s\":\"first sample\","
		     "\"diskio.sda.write_bytes\":\"first sample\","
		     "\"diskio.sda.write_bytes_per_s\":\"first sample\",\"diskio.sda.io_ms\":\"first sample\","
		     "\"diskio.sda.busy\":\"first sample\",\"net.eth0.rx_bytes\":\"first sample\","
		     "\"net.eth0.rx_bytes_per_s\":\"first sample\",\"net.eth0.rx_packets\":\"first sample\","
		     "\"net.eth0.rx_errs\":\"first sample\",\"net.eth0.rx_drop\":\"first sample\","
		     "\"net.eth0.tx_bytes\":\"first sample\",\"net.eth0.tx_bytes_per_s\":\"first sample\","
		     "\"net.eth0.tx_packets\":\"first sample\",\"net.eth0.tx_errs\":\"first sample\","
		     "\"net.eth0.tx_drop\":\"first sample\"}}");
	CHECK_EQ_STR(s.data[1],
		     "{\"cpu\":{\"user\":10,\"nice\":0,\"system\":20,\"idle\":60,\"iowait\":5,\"irq\":0,"
		     "\"softirq\":5,\"steal\":0},"
		     "\"memory\":{\"total\":1024000,\"available\":614400,\"free\":204800,\"buffers\":10240,"
		     "\"cached\":307200,\"swap_total\":0,\"swap_free\":0},"
		     "\"fs\":{\"/data\":{\"type\":\"ext4\",\"total\":4096000,\"free\":2048000,"
		     "\"available\":1638400,\"inodes\":100,\"inodes_free\":50}},"
		     "\"diskio\":{\"sda\":{\"reads\":10,\"writes\":10,\"read_bytes\":102400,"
		     "\"read_bytes_per_s\":10240,\"write_bytes\":51200,\"write_bytes_per_s\":5120,"
		     "\"io_ms\":1000,\"busy\":10}},"
		     "\"net\":{\"eth0\":{\"rx_bytes\":10000,\"rx_bytes_per_s\":1000,\"rx_packets\":20,"
		     "\"rx_errs\":1,\"rx_drop\":2,\"tx_bytes\":null,\"tx_bytes_per_s\":null,"
		     "\"tx_packets\":null,\"tx_errs\":0,\"tx_drop\":0},"
		     "\"wlan0\":{\"rx_bytes\":null,\"rx_bytes_per_s\":null,\"rx_packets\":null,"
		     "\"rx_errs\":null,\"rx_drop\":null,\"tx_bytes\":null,\"tx_bytes_per_s\":null,"
		     "\"tx_packets\":null,\"tx_errs\":null,\"tx_drop\":null}},"
		     "\"load\":{\"1m\":0.75,\"5m\":0.3,\"15m\":0.1},"
		     "\"uptime\":3610.5,"
		     "\"temperature\":{\"thermal_zone0\":{\"type\":\"cpu-thermal\",\"temp\":45.5}},"
		     "\"self\":{\"rss\":2097152,\"fds\":2},"
		     "\"units\":{\"cpu.user\":\"%\",\"cpu.nice\":\"%\",\"cpu.system\":\"%\",\"cpu.idle\":\"%\","
		     "\"cpu.iowait\":\"%\",\"cpu.irq\":\"%\",\"cpu.softirq\":\"%\",\"cpu.steal\":\"%\","
		     "\"memory.total\":\"B\",\"memory.available\":\"B\",\"memory.free\":\"B\","
		     "\"memory.buffers\":\"B\",\"memory.cached\":\"B\",\"memory.swap_total\":\"B\","
		     "\"memory.swap_free\":\"B\",\"fs./data.total\":\"B\",\"fs./data.free\":\"B\","
		     "\"fs./data.available\":\"B\",\"diskio.sda.read_bytes\":\"B\","
		     "\"diskio.sda.read_bytes_per_s\":\"B/s\",\"diskio.sda.write_bytes\":\"B\","
		     "\"diskio.sda.write_bytes_per_s\":\"B/s\",\"diskio.sda.io_ms\":\"ms\","
		     "\"diskio.sda.busy\":\"%\",\"net.eth0.rx_bytes\":\"B\",\"net.eth0.rx_bytes_per_s\":\"B/s\","
		     "\"net.eth0.tx_bytes\":\"B\",\"net.eth0.tx_bytes_per_s\":\"B/s\","
		     "\"net.wlan0.rx_bytes\":\"B\",\"net.wlan0.rx_bytes_per_s\":\"B/s\","
		     "\"net.wlan0.tx_bytes\":\"B\",\"net.wlan0.tx_bytes_per_s\":\"B/s\",\"uptime\":\"s\","
		     "\"temperature.thermal_zone0.temp\":\"C\",\"self.rss\":\"B\"},"
		     "\"quality\":{\"net.eth0.tx_bytes\":\"counter reset\","
		     "\"net.eth0.tx_bytes_per_s\":\"counter reset\",\"net.eth0.tx_packets\":\"counter reset\","
		     "\"net.wlan0.rx_bytes\":\"first sample\",\"net.wlan0.rx_bytes_per_s\":\"first sample\","
		     "\"net.wlan0.rx_packets\":\"first sample\",\"net.wlan0.rx_errs\":\"first sample\","
		     "\"net.wlan0.rx_drop\":\"first sample\",\"net.wlan0.tx_bytes\":\"first sample\","
		     "\"net.wlan0.tx_bytes_per_s\":\"first sample\",\"net.wlan0.tx_packets\":\"first sample\","
		     "\"net.wlan0.tx_errs\":\"first sample\",\"net.wlan0.tx_drop\":\"first sample\"}}");
	/* Only the local filesystem was asked: never the NFS mount. */
	CHECK_EQ_INT(fake_statvfs_calls, 2);
	CHECK_EQ_STR(fake_statvfs_seen, "/data;/data;");
	memset(&st, 0, sizeof(st));
	input_fill_status(r.in, &st);
	CHECK(st.device && st.connected);
	CHECK_EQ_INT(st.requests, 2);
	CHECK_EQ_INT(st.errors[INPUT_ERR_IO] + st.errors[INPUT_ERR_VALUE], 0);
	rig_release(&r);
	sys_statvfs = statvfs;
}

/* A part that cannot be read is null with its quality and counted as an
 * I/O or value error; the rest of the sample ships. */
TEST(test_driver_bad_input)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;

	tree_sample1();
	drop(proc, "stat");
	put(proc, "meminfo", "MemTotal: 1000 kB\nMemFr");
	put(proc, "loadavg", "garbage\n");
	put(sys_, "class/thermal/thermal_zone0/temp", "\n");
	put(dir, "mounts", "/dev/sda1 /gone ext4 rw 0 0\n");
	put(proc, "self/status", "VmRSS:\tlots kB\n");
	sys_statvfs = fake_statvfs;
	REQUIRE(rig_init(&r, "net = false\ndiskio = false\n") == 0);
	tc_advance(r.a.loop, 10000 + 200);
	REQUIRE(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 1);
	CHECK_EQ_STR(s.data[0],
		     "{\"cpu\":null,\"memory\":null,\"fs\":{\"/gone\":null},\"load\":null,\"uptime\":3600.5,"
		     "\"temperature\":{\"thermal_zone0\":{\"type\":\"cpu-thermal\",\"temp\":null}},"
		     "\"self\":{\"rss\":null,\"fds\":2},"
		     "\"units\":{\"uptime\":\"s\",\"temperature.thermal_zone0.temp\":\"C\"},"
		     "\"quality\":{\"cpu\":\"read error\",\"memory\":\"bad value\",\"fs./gone\":\"read error\","
		     "\"load\":\"bad value\",\"temperature.thermal_zone0.temp\":\"bad value\","
		     "\"self.rss\":\"bad value\"}}");
	memset(&st, 0, sizeof(st));
	input_fill_status(r.in, &st);
	CHECK_EQ_INT(st.errors[INPUT_ERR_IO], 2);     /* stat, statvfs */
	CHECK_EQ_INT(st.errors[INPUT_ERR_VALUE], 4);  /* meminfo, loadavg, temp, status */
	{
		char want[256];

		snprintf(want, sizeof(want), "%s/self/status: garbage or cut short", proc);
		CHECK(strstr(st.last_error, want));
	}
	/* Readable again: the next sample is whole and the problem is gone. */
	tree_sample1();
	tc_advance(r.a.loop, 10000);
	memset(&st, 0, sizeof(st));
	input_fill_status(r.in, &st);
	CHECK_EQ_STR(st.last_error, "");
	CHECK_EQ_INT(st.errors[INPUT_ERR_IO], 2);
	s.n = 0;
	REQUIRE(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK(strstr(s.data[1], "\"quality\":{\"cpu\":\"first sample\"}}"));
	/* The mounts file itself gone: named as it is. */
	drop(dir, "mounts");
	tc_advance(r.a.loop, 10000);
	memset(&st, 0, sizeof(st));
	input_fill_status(r.in, &st);
	{
		char want[256];

		snprintf(want, sizeof(want), "%s/mounts: No such file or directory", dir);
		CHECK(strstr(st.last_error, want));
	}
	rig_release(&r);
	sys_statvfs = statvfs;
}

/* per_cpu without cpu is refused when the config is read. */
TEST(test_validate)
{
	struct config *cfg = NULL;
	char text[512], err[512];

	snprintf(text, sizeof(text), "[agent]\nid = gw-01\nstate_dir = %s\n"
		 "[input host]\ndriver = system\ncpu = false\nper_cpu = true\n"
		 "[output lake]\ntype = mqtt\n", dir);
	err[0] = '\0';
	CHECK(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)) != 0);
	CHECK(strstr(err, "per_cpu = true needs cpu = true"));
	config_free(cfg);
}

/* The include and exclude lists of interfaces and mount points, given as
 * lists on one or several lines; lo only when asked for. */
TEST(test_driver_filters)
{
	struct rig r;
	struct seen s = { 0 };
	char text[1024];

	tree_sample1();
	snprintf(text, sizeof(text), "%s"
		 "    lo:  5000  50 0 0 0 0 0 0  5000  50 0 0 0 0 0 0\n"
		 "  eth0: 1000 10 0 0 0 0 0 0 5000 20 0 0 0 0 0 0\n"
		 "  eth1: 1000 10 0 0 0 0 0 0 5000 20 0 0 0 0 0 0\n"
		 " wlan0: 7 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n"
		 " wwan0: 7 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n", netdev_head);
	put(proc, "net/dev", text);
	put(dir, "mounts", "/dev/sda1 /data ext4 rw 0 0\n/dev/sda2 /srv ext4 rw 0 0\n"
			   "/dev/sda3 /srv/tmp ext4 rw 0 0\n/dev/sda4 /var ext4 rw 0 0\n");
	sys_statvfs = fake_statvfs;
	REQUIRE(rig_init(&r, "cpu = false\nmemory = false\ndiskio = false\nload = false\n"
			 "temperature = false\nself = false\nloopback = true\n"
			 "interfaces = eth*, wlan0\ninterfaces = wwan0\nexclude_interfaces = eth1\n"
			 "filesystems = /srv*, /var\nexclude_filesystems = */tmp\n") == 0);
	tc_advance(r.a.loop, 10000 + 200);
	REQUIRE(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 1);
	CHECK(!strncmp(s.data[0], "{\"fs\":{\"/srv\":{", 15));
	CHECK(strstr(s.data[0], "},\"/var\":{"));
	CHECK(!strstr(s.data[0], "/data") && !strstr(s.data[0], "/srv/tmp"));
	CHECK(strstr(s.data[0], "\"net\":{\"lo\":{"));
	CHECK(strstr(s.data[0], "},\"eth0\":{"));
	CHECK(strstr(s.data[0], "},\"wlan0\":{"));
	CHECK(strstr(s.data[0], "},\"wwan0\":{"));
	CHECK(!strstr(s.data[0], "eth1"));
	rig_release(&r);
	sys_statvfs = statvfs;
}

/* The real /proc and /sys of this machine: a sample that is valid JSON
 * with the parts a Linux host always has. */
TEST(test_driver_real_host)
{
	struct rig r;
	struct seen s = { 0 };

	snprintf(proc, sizeof(proc), "/proc");
	snprintf(sys_, sizeof(sys_), "/sys");
	put(dir, "mounts", "/dev/root / ext4 rw 0 0\n");
	REQUIRE(rig_init(&r, "per_cpu = true\n") == 0);
	tc_advance(r.a.loop, 20000 + 200);
	REQUIRE(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	CHECK_EQ_INT(s.n, 2);
	/* The test clock stands still in real time: the CPUs may not have
	 * ticked between the two samples. */
	CHECK(strstr(s.data[1], "\"cpu\":{\"user\":") || strstr(s.data[1], "\"cpu\":\"no time passed\""));
	CHECK(strstr(s.data[1], "\"cpus\":{\"cpu0\":"));
	CHECK(!strstr(s.data[1], "counter reset"));
	CHECK(json_valid(s.data[1], strlen(s.data[1]), NULL, 0));
	CHECK(strstr(s.data[1], "\"memory\":{\"total\":"));
	CHECK(strstr(s.data[1], "\"self\":{\"rss\":"));
	rig_release(&r);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(proc, sizeof(proc), "%s/proc", dir);
	snprintf(sys_, sizeof(sys_), "%s/sys", dir);
	RUN(test_cpu_percentages);
	RUN(test_stat_errors);
	RUN(test_meminfo);
	RUN(test_netdev);
	RUN(test_diskstats);
	RUN(test_load_and_uptime);
	RUN(test_self);
	RUN(test_thermal);
	RUN(test_mounts);
	RUN(test_driver_records);
	RUN(test_driver_bad_input);
	RUN(test_driver_filters);
	RUN(test_validate);
	RUN(test_driver_real_host);
	RUN(test_no_leaks);
	{
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	TEST_END();
}
