/* test_sysfs.c - the sysfs driver on fake trees built in a temporary
 * directory: what it finds (hwmon, thermal, IIO, 1-wire, named files),
 * what each reading gives or why it gives none, and, through the input
 * core on a real queue and the test clock, the exact records it stores. */
#include <errno.h>
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
#include "../../drivers/sysfs.h"
#include <sqlite3.h>

static char dir[] = "/tmp/test_sysfs.XXXXXX";
static char root[256];
static int tree_no;

/* Write text to root/rel, making its directories. */
static void put(const char *rel, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		mkdir(p, 0755);
		*s = '/';
	}
	f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void del(const char *rel)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	unlink(p);
}

/* A fresh, empty root for each test. */
static void new_tree(void)
{
	snprintf(root, sizeof(root), "%s/t%d", dir, ++tree_no);
	mkdir(root, 0755);
}

static const struct sysfs_dev *dev(const struct sysfs_plan *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->dev[i].name, name))
			return &p->dev[i];
	return NULL;
}

static const struct sysfs_chan *chan(const struct sysfs_plan *p, const char *d, const char *f)
{
	const struct sysfs_dev *v = dev(p, d);

	for (size_t i = 0; v && i < v->n; i++)
		if (!strcmp(v->ch[i].name, f))
			return &v->ch[i];
	return NULL;
}

/* The value of d.f now, or NAN with *quality set. */
static double val(const struct sysfs_plan *p, const char *d, const char *f, const char **quality)
{
	const struct sysfs_chan *c = chan(p, d, f);
	struct sysfs_reading r;

	*quality = "(no such channel)";
	if (!c)
		return -1e300;
	sysfs_read_chan(c, &r);
	*quality = r.quality;
	return r.quality ? -1e300 : r.v;
}

#define CHECK_VAL(p, d, f, want)                                              \
	do {                                                                  \
		const char *q_;                                               \
		double v_ = val(p, d, f, &q_);                                \
		if (q_ || v_ != (want)) {                                     \
			fprintf(stderr, "%s:%d: %s.%s == %.17g (%s), expected %.17g\n", \
				__FILE__, __LINE__, d, f, v_, q_ ? q_ : "ok", (double)(want)); \
			test_failed_checks++;                                 \
		}                                                             \
	} while (0)

#define CHECK_QUALITY(p, d, f, want)                                          \
	do {                                                                  \
		const char *q_;                                               \
		val(p, d, f, &q_);                                            \
		CHECK_EQ_STR(q_, want);                                       \
	} while (0)

static int discover(unsigned classes, struct sysfs_plan *p)
{
	struct sysfs_opts o = { .root = root, .classes = classes };

	return sysfs_discover(&o, p);
}

TEST(test_parse_number)
{
	double v;

	CHECK_EQ_INT(sysfs_parse_number("42000\n", &v), 0);
	CHECK(v == 42000);
	CHECK_EQ_INT(sysfs_parse_number("  -1.5", &v), 0);
	CHECK(v == -1.5);
	CHECK_EQ_INT(sysfs_parse_number("0.52 0.58 0.59 1/389 12345\n", &v), 0);
	CHECK(v == 0.52);
	CHECK_EQ_INT(sysfs_parse_number("", &v), -ENODATA);
	CHECK_EQ_INT(sysfs_parse_number(" \n", &v), -ENODATA);
	CHECK_EQ_INT(sysfs_parse_number("hello\n", &v), -EINVAL);
	CHECK_EQ_INT(sysfs_parse_number("12abc", &v), -EINVAL);
	CHECK_EQ_INT(sysfs_parse_number("nan", &v), -EINVAL);
	CHECK_EQ_INT(sysfs_parse_number("-inf", &v), -EINVAL);
	CHECK_EQ_INT(sysfs_parse_number("0x1f", &v), -EINVAL);
	CHECK_EQ_INT(sysfs_parse_number("1e999", &v), -EINVAL);
}

/* hwmon: each *_input in its unit, named by its label when it has one,
 * by its file's stem when not; two chips of one name stay apart. */
TEST(test_hwmon)
{
	struct sysfs_plan p;

	new_tree();
	put("sys/class/hwmon/hwmon0/name", "coretemp\n");
	put("sys/class/hwmon/hwmon0/temp1_input", "45000\n");
	put("sys/class/hwmon/hwmon0/temp1_label", "Package id 0\n");
	put("sys/class/hwmon/hwmon0/temp2_input", "43500\n");
	put("sys/class/hwmon/hwmon0/temp2_max", "100000\n");        /* not a reading */
	put("sys/class/hwmon/hwmon1/name", "ina219\n");
	put("sys/class/hwmon/hwmon1/in0_input", "5012\n");
	put("sys/class/hwmon/hwmon1/curr1_input", "1250\n");
	put("sys/class/hwmon/hwmon1/power1_input", "6265000\n");
	put("sys/class/hwmon/hwmon1/fan1_input", "2400\n");
	put("sys/class/hwmon/hwmon1/temp10_input", "30000\n");
	put("sys/class/hwmon/hwmon1/temp9_input", "29000\n");
	put("sys/class/hwmon/hwmon2/name", "coretemp\n");
	put("sys/class/hwmon/hwmon2/temp1_input", "41000\n");
	put("sys/class/hwmon/hwmon3/device/temp1_input", "38000\n");  /* old layout, no name */
	put("sys/class/hwmon/hwmon4/name", "empty-chip\n");            /* no readings: left out */
	REQUIRE(discover(SYSFS_HWMON, &p) == 0);
	CHECK_EQ_INT(p.n, 4);
	CHECK_EQ_INT(p.n_chan, 10);
	REQUIRE(p.n == 4);
	CHECK_EQ_STR(p.dev[0].name, "coretemp");
	CHECK_EQ_STR(p.dev[1].name, "ina219");
	CHECK_EQ_STR(p.dev[2].name, "coretemp-hwmon2");
	CHECK_EQ_STR(p.dev[3].name, "hwmon3");
	REQUIRE(p.dev[0].n == 2);
	CHECK_EQ_STR(p.dev[0].ch[0].name, "Package id 0");
	CHECK_EQ_STR(p.dev[0].ch[1].name, "temp2");
	CHECK_EQ_STR(p.dev[0].ch[0].unit, "°C");
	CHECK_VAL(&p, "coretemp", "Package id 0", 45);
	CHECK_VAL(&p, "coretemp", "temp2", 43.5);
	CHECK_VAL(&p, "ina219", "in0", 5.012);
	CHECK_VAL(&p, "ina219", "curr1", 1.25);
	CHECK_VAL(&p, "ina219", "power1", 6.265);
	CHECK_VAL(&p, "ina219", "fan1", 2400);
	CHECK_EQ_STR(chan(&p, "ina219", "in0")->unit, "V");
	CHECK_EQ_STR(chan(&p, "ina219", "curr1")->unit, "A");
	CHECK_EQ_STR(chan(&p, "ina219", "power1")->unit, "W");
	CHECK_EQ_STR(chan(&p, "ina219", "fan1")->unit, "RPM");
	/* Natural order: temp9 before temp10. */
	CHECK_EQ_STR(p.dev[1].ch[4].name, "temp9");
	CHECK_EQ_STR(p.dev[1].ch[5].name, "temp10");
	CHECK_VAL(&p, "coretemp-hwmon2", "temp1", 41);
	CHECK_VAL(&p, "hwmon3", "temp1", 38);
	sysfs_plan_release(&p);
}

/* Two channels with the same label, and a label with a '.' (which would
 * split the field's path in units and quality). */
TEST(test_hwmon_label_clashes)
{
	struct sysfs_plan p;

	new_tree();
	put("sys/class/hwmon/hwmon0/name", "nct6775\n");
	put("sys/class/hwmon/hwmon0/in0_input", "1000\n");
	put("sys/class/hwmon/hwmon0/in0_label", "Vcore\n");
	put("sys/class/hwmon/hwmon0/in1_input", "1100\n");
	put("sys/class/hwmon/hwmon0/in1_label", "Vcore\n");
	put("sys/class/hwmon/hwmon0/in2_input", "3300\n");
	put("sys/class/hwmon/hwmon0/in2_label", "3.3V\n");
	put("sys/class/hwmon/hwmon0/in3_input", "5000\n");
	put("sys/class/hwmon/hwmon0/in3_label", "\n");              /* empty label: the stem */
	REQUIRE(discover(SYSFS_HWMON, &p) == 0);
	CHECK_VAL(&p, "nct6775", "Vcore", 1);
	CHECK_VAL(&p, "nct6775", "Vcore_in1", 1.1);
	CHECK_VAL(&p, "nct6775", "3_3V", 3.3);
	CHECK_VAL(&p, "nct6775", "in3", 5);
	sysfs_plan_release(&p);
}

TEST(test_thermal)
{
	struct sysfs_plan p;

	new_tree();
	put("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
	put("sys/class/thermal/thermal_zone0/temp", "51540\n");
	put("sys/class/thermal/thermal_zone1/temp", "-2500\n");     /* no type */
	put("sys/class/thermal/cooling_device0/type", "fan\n");     /* not a zone */
	REQUIRE(discover(SYSFS_THERMAL | SYSFS_HWMON, &p) == 0);
	CHECK_EQ_INT(p.n, 2);
	CHECK_VAL(&p, "cpu-thermal", "temp", 51.54);
	CHECK_VAL(&p, "thermal_zone1", "temp", -2.5);
	CHECK_EQ_STR(chan(&p, "cpu-thermal", "temp")->unit, "°C");
	sysfs_plan_release(&p);
}

/* IIO: (raw + offset) * scale with the channel's own scale or the type's
 * shared one, then to the unit shipped; _input wins over _raw. */
TEST(test_iio)
{
	struct sysfs_plan p;

	new_tree();
	put("sys/bus/iio/devices/iio:device0/name", "ads1015\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage0_raw", "1000\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage1_raw", "500\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage1_scale", "2\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage_scale", "3.000000000\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage_sampling_frequency", "1600\n");
	put("sys/bus/iio/devices/iio:device1/name", "bme280\n");
	put("sys/bus/iio/devices/iio:device1/in_temp_raw", "100\n");
	put("sys/bus/iio/devices/iio:device1/in_temp_offset", "-50\n");
	put("sys/bus/iio/devices/iio:device1/in_temp_scale", "250\n");
	put("sys/bus/iio/devices/iio:device1/in_humidityrelative_input", "45500\n");
	put("sys/bus/iio/devices/iio:device1/in_pressure_raw", "99\n");
	put("sys/bus/iio/devices/iio:device1/in_pressure_input", "101.325\n");
	put("sys/bus/iio/devices/iio:device1/in_accel_x_raw", "-16\n");
	put("sys/bus/iio/devices/iio:device1/in_accel_scale", "0.5\n");
	put("sys/bus/iio/devices/iio:device2/in_illuminance0_input", "321\n");
	put("sys/bus/iio/devices/trigger0/name", "t\n");
	REQUIRE(discover(SYSFS_IIO, &p) == 0);
	CHECK_EQ_INT(p.n, 3);
	CHECK_VAL(&p, "ads1015", "voltage0", 3);              /* 1000 * 3 mV */
	CHECK_VAL(&p, "ads1015", "voltage1", 1);              /* 500 * 2 mV */
	CHECK_EQ_STR(chan(&p, "ads1015", "voltage0")->unit, "V");
	CHECK_VAL(&p, "bme280", "temp", 12.5);                /* (100 - 50) * 250 m°C */
	CHECK_VAL(&p, "bme280", "humidityrelative", 45.5);
	CHECK_VAL(&p, "bme280", "pressure", 101.325);
	CHECK_VAL(&p, "bme280", "accel_x", -8);
	CHECK_EQ_STR(chan(&p, "bme280", "humidityrelative")->unit, "%");
	CHECK_EQ_STR(chan(&p, "bme280", "pressure")->unit, "kPa");
	CHECK_EQ_INT(dev(&p, "bme280")->n, 4);
	CHECK_VAL(&p, "iio:device2", "illuminance0", 321);
	/* A scale that turns to text later: the reading says so. */
	put("sys/bus/iio/devices/iio:device0/in_voltage_scale", "n/a\n");
	CHECK_QUALITY(&p, "ads1015", "voltage0", "not a number");
	sysfs_plan_release(&p);
}

/* 1-wire: the CRC line, the t= line, the power-on value, garbage. */
TEST(test_w1)
{
	struct sysfs_plan p;
	struct sysfs_reading r;

	new_tree();
	put("sys/bus/w1/devices/28-000000000001/w1_slave",
	    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n");
	put("sys/bus/w1/devices/28-000000000002/w1_slave",
	    "72 01 4b 46 7f ff 0e 10 57 : crc=58 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n");
	put("sys/bus/w1/devices/28-000000000003/w1_slave",
	    "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n");
	put("sys/bus/w1/devices/28-000000000004/w1_slave", "\x01garbage\n\n");
	put("sys/bus/w1/devices/28-000000000005/w1_slave", "");
	put("sys/bus/w1/devices/28-000000000006/w1_slave",
	    "ff ff ff ff ff ff ff ff ff : crc=c9 YES\nff ff ff ff ff ff ff ff ff t=-62\n");
	put("sys/bus/w1/devices/28-000000000007/w1_slave", "00 : crc=00 YES\n00 t=\n");
	put("sys/bus/w1/devices/w1_bus_master1/name", "w1_bus_master1\n");
	put("sys/bus/w1/devices/3a-000000000001/state", "x");      /* a switch, not a thermometer */
	REQUIRE(discover(SYSFS_W1, &p) == 0);
	CHECK_EQ_INT(p.n, 7);
	CHECK_VAL(&p, "28-000000000001", "temp", 23.125);
	CHECK_EQ_STR(chan(&p, "28-000000000001", "temp")->unit, "°C");
	CHECK_QUALITY(&p, "28-000000000002", "temp", "crc");
	CHECK_QUALITY(&p, "28-000000000003", "temp", "power-on reset");
	CHECK_QUALITY(&p, "28-000000000004", "temp", "garbage");
	CHECK_QUALITY(&p, "28-000000000005", "temp", "empty");
	CHECK_VAL(&p, "28-000000000006", "temp", -0.062);
	CHECK_QUALITY(&p, "28-000000000007", "temp", "garbage");
	/* The kinds of error counted. */
	sysfs_read_chan(chan(&p, "28-000000000002", "temp"), &r);
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_CRC);
	sysfs_read_chan(chan(&p, "28-000000000003", "temp"), &r);
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_VALUE);
	sysfs_read_chan(chan(&p, "28-000000000004", "temp"), &r);
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_PROTOCOL);
	/* The probe unplugged: its file is gone. */
	del("sys/bus/w1/devices/28-000000000001/w1_slave");
	sysfs_read_chan(chan(&p, "28-000000000001", "temp"), &r);
	CHECK_EQ_STR(r.quality, "missing");
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_IO);
	CHECK_EQ_INT(r.err, ENOENT);
	sysfs_plan_release(&p);
}

static ssize_t pread_eio(int fd, void *buf, size_t n, off_t off)
{
	errno = EIO;
	return -1;
}

/* Named files with scale and offset; a file of text, an empty file, a
 * missing file, a read that fails with EIO. */
TEST(test_files)
{
	static const struct sysfs_file files[] = {
		{ .name = "load", .path = "/proc/loadavg", .scale = 1 },
		{ .name = "board_temp", .path = "/sys/devices/board/temp", .scale = 0.5, .offset = 10,
		  .unit = "°C" },
		{ .name = "rx", .path = "sys/class/net/eth0/statistics/rx_bytes", .scale = 1, .unit = "B" },
		{ .name = "text", .path = "/text", .scale = 1 },
		{ .name = "empty", .path = "/empty", .scale = 1 },
		{ .name = "missing", .path = "/not/there", .scale = 1 },
	};
	struct sysfs_opts o = { .classes = SYSFS_HWMON | SYSFS_THERMAL | SYSFS_IIO | SYSFS_W1,
				.files = files, .n_files = 6 };
	struct sysfs_plan p;
	struct sysfs_reading r;

	new_tree();
	o.root = root;
	put("proc/loadavg", "0.52 0.58 0.59 1/389 12345\n");
	put("sys/devices/board/temp", "50\n");
	put("sys/class/net/eth0/statistics/rx_bytes", "123456789\n");
	put("text", "hello\n");
	put("empty", "");
	put("sys/class/hwmon/hwmon0/name", "files\n");   /* "files" stays the named files' */
	put("sys/class/hwmon/hwmon0/temp1_input", "1000\n");
	REQUIRE(sysfs_discover(&o, &p) == 0);
	REQUIRE(p.n == 2);
	CHECK_EQ_STR(p.dev[0].name, "files");
	CHECK_EQ_STR(p.dev[1].name, "files-hwmon0");
	CHECK_EQ_INT(p.dev[0].n, 6);
	CHECK_VAL(&p, "files", "load", 0.52);
	CHECK_VAL(&p, "files", "board_temp", 30);        /* (50 + 10) * 0.5 */
	CHECK_EQ_STR(chan(&p, "files", "board_temp")->unit, "°C");
	CHECK(chan(&p, "files", "load")->unit == NULL);
	CHECK_VAL(&p, "files", "rx", 123456789);
	CHECK_QUALITY(&p, "files", "text", "not a number");
	CHECK_QUALITY(&p, "files", "empty", "empty");
	CHECK_QUALITY(&p, "files", "missing", "missing");
	sysfs_read_chan(chan(&p, "files", "text"), &r);
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_VALUE);
	sysfs_read_chan(chan(&p, "files", "missing"), &r);
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_IO);
	sysfs_pread = pread_eio;
	sysfs_read_chan(chan(&p, "files", "load"), &r);
	sysfs_pread = pread;
	CHECK_EQ_STR(r.quality, "io");
	CHECK_EQ_INT(r.err_kind, INPUT_ERR_IO);
	CHECK_EQ_INT(r.err, EIO);
	CHECK_VAL(&p, "files", "load", 0.52);            /* and well again */
	sysfs_plan_release(&p);
}

/* include/exclude globs of DEVICE.FIELD; a device left with nothing goes. */
TEST(test_include_exclude)
{
	char *inc[] = { "coretemp.*", "28-*" }, *exc[] = { "*.temp2", "28-*2.*" };
	struct sysfs_opts o = { .classes = SYSFS_HWMON | SYSFS_THERMAL | SYSFS_W1, .include = inc,
				.n_include = 2, .exclude = exc, .n_exclude = 2 };
	struct sysfs_plan p;

	new_tree();
	o.root = root;
	put("sys/class/hwmon/hwmon0/name", "coretemp\n");
	put("sys/class/hwmon/hwmon0/temp1_input", "45000\n");
	put("sys/class/hwmon/hwmon0/temp2_input", "43500\n");
	put("sys/class/hwmon/hwmon1/name", "nvme\n");
	put("sys/class/hwmon/hwmon1/temp1_input", "35000\n");
	put("sys/class/thermal/thermal_zone0/temp", "51540\n");
	put("sys/bus/w1/devices/28-000000000001/w1_slave", "x : crc=57 YES\nx t=1000\n");
	put("sys/bus/w1/devices/28-000000000002/w1_slave", "x : crc=57 YES\nx t=2000\n");
	REQUIRE(sysfs_discover(&o, &p) == 0);
	REQUIRE(p.n == 2);
	CHECK_EQ_STR(p.dev[0].name, "coretemp");
	CHECK_EQ_INT(p.dev[0].n, 1);
	CHECK_EQ_STR(p.dev[0].ch[0].name, "temp1");
	CHECK_EQ_STR(p.dev[1].name, "28-000000000001");
	CHECK_EQ_INT(p.n_chan, 2);
	sysfs_plan_release(&p);
}

/* A root with none of the classes: an empty plan, not an error. */
TEST(test_empty_root)
{
	struct sysfs_plan p;

	new_tree();
	REQUIRE(discover(SYSFS_HWMON | SYSFS_THERMAL | SYSFS_IIO | SYSFS_W1, &p) == 0);
	CHECK_EQ_INT(p.n, 0);
	CHECK_EQ_INT(p.n_chan, 0);
	sysfs_plan_release(&p);
}

/* Out of memory at any allocation of discovery: -ENOMEM, nothing leaked. */
TEST(test_discover_out_of_memory)
{
	struct sysfs_plan p;
	size_t before = mem_in_use();
	int ok = 0, failed = 0;

	new_tree();
	put("sys/class/hwmon/hwmon0/name", "coretemp\n");
	put("sys/class/hwmon/hwmon0/temp1_input", "45000\n");
	put("sys/class/hwmon/hwmon0/temp1_label", "Core 0\n");
	put("sys/class/thermal/thermal_zone0/temp", "51540\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage0_raw", "1\n");
	put("sys/bus/iio/devices/iio:device0/in_voltage_scale", "1\n");
	put("sys/bus/w1/devices/28-000000000001/w1_slave", "x : crc=57 YES\nx t=1000\n");
	for (long n = 0; n < 400 && !ok; n++) {
		int rc;

		mem_fail_after(n);
		rc = discover(SYSFS_HWMON | SYSFS_THERMAL | SYSFS_IIO | SYSFS_W1, &p);
		mem_fail_after(-1);
		if (rc == 0) {
			/* Never a partial plan: memory that ran short is -ENOMEM. */
			CHECK_EQ_INT(p.n, 4);
			CHECK_EQ_INT(p.n_chan, 4);
			ok = p.n == 4 && p.n_chan == 4;
			CHECK_EQ_STR(p.dev[0].name, "coretemp");
			CHECK_EQ_STR(p.dev[0].ch[0].name, "Core 0");
			sysfs_plan_release(&p);
		} else {
			CHECK_EQ_INT(rc, -ENOMEM);
			CHECK_EQ_INT(p.n, 0);
			failed++;
		}
		CHECK_EQ_INT(mem_in_use(), before);
	}
	CHECK(ok);
	CHECK(failed > 10);
}

/* ---- the driver through the input core, on a real queue -------------- */

static int rig_init(struct rig *r, const char *keys)
{
	char text[1024], db[512];

	tc_now_ms = 1000000;            /* every test starts at the same time */
	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input sensors]\ndriver = sysfs\nroot = %s\n%s"
		 "[output lake]\ntype = mqtt\n", dir, root, keys);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, true, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
}

static char *slurp(const char *rel, char *buf, size_t cap)
{
	char p[512];
	FILE *f;
	size_t n = 0;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	f = fopen(p, "r");
	if (f) {
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

struct seen {
	int n;
	int64_t wall[16], mono[16];
	char key[16][96];
	char data[16][1024];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "sensors"))
		return 0;
	if (s->n < 16) {
		s->wall[s->n] = q->ts_wall_ms;
		s->mono[s->n] = q->ts_mono_ms;
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key ? q->key : "");
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

static void gateway_tree(void)
{
	new_tree();
	put("sys/class/hwmon/hwmon0/name", "cpu_thermal\n");
	put("sys/class/hwmon/hwmon0/temp1_input", "48312\n");
	put("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
	put("sys/class/thermal/thermal_zone0/temp", "48312\n");
	put("sys/bus/w1/devices/28-0316a2799aff/w1_slave",
	    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n");
	put("sys/bus/w1/devices/28-0316a279aaaa/w1_slave",
	    "72 01 4b 46 7f ff 0e 10 57 : crc=58 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n");
}

/* One record per interval, on the deadlines of the monotonic clock, with
 * its sample time and a key of input and sample time; a failed reading is
 * null with a quality and counted by kind; status names the sensors. */
TEST(test_records)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;

	gateway_tree();
	REQUIRE(rig_init(&r, "interval = 5s\n") == 0);
	st = snapshot(&r);
	CHECK(st.device && st.connected);
	CHECK_EQ_STR(st.state, "4 sensors on 4 devices");
	/* The test clock is at 1000000 ms: the first deadline is 1000000 + 5000. */
	tc_advance(r.a.loop, 4999);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	tc_advance(r.a.loop, 1);
	CHECK_EQ_INT(input_ticket(r.in), 1);
	put("sys/bus/w1/devices/28-0316a2799aff/w1_slave",
	    "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n");
	tc_advance(r.a.loop, 5000 + 200);
	CHECK_EQ_INT(input_ticket(r.in), 2);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.data[0],
		     "{\"cpu_thermal\":{\"temp1\":48.312},\"cpu-thermal\":{\"temp\":48.312},"
		     "\"28-0316a279aaaa\":{\"temp\":null},\"28-0316a2799aff\":{\"temp\":23.125},"
		     "\"units\":{\"cpu_thermal.temp1\":\"°C\",\"cpu-thermal.temp\":\"°C\","
		     "\"28-0316a279aaaa.temp\":\"°C\",\"28-0316a2799aff.temp\":\"°C\"},"
		     "\"quality\":{\"28-0316a279aaaa.temp\":\"crc\"}}");
	CHECK_EQ_STR(s.data[1],
		     "{\"cpu_thermal\":{\"temp1\":48.312},\"cpu-thermal\":{\"temp\":48.312},"
		     "\"28-0316a279aaaa\":{\"temp\":null},\"28-0316a2799aff\":{\"temp\":null},"
		     "\"units\":{\"cpu_thermal.temp1\":\"°C\",\"cpu-thermal.temp\":\"°C\","
		     "\"28-0316a279aaaa.temp\":\"°C\",\"28-0316a2799aff.temp\":\"°C\"},"
		     "\"quality\":{\"28-0316a279aaaa.temp\":\"crc\","
		     "\"28-0316a2799aff.temp\":\"power-on reset\"}}");
	/* Sample times: wall = base + monotonic, boot = monotonic + 5000. */
	CHECK_EQ_INT(s.wall[0], 1767225600000 + 1005000);
	CHECK_EQ_INT(s.wall[1], 1767225600000 + 1010000);
	CHECK_EQ_INT(s.mono[0], 1010000);
	CHECK_EQ_STR(s.key[0], "sensors:1767226605000:1010000");
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 2);
	CHECK_EQ_INT(st.requests, 8);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CRC], 2);
	CHECK_EQ_INT(st.errors[INPUT_ERR_VALUE], 1);
	CHECK(strstr(st.last_error, "28-0316a2799aff.temp") != NULL);
	CHECK(strstr(st.last_error, "power-on reset") != NULL);
	rig_release(&r);
}

/* A device that vanishes: null with quality "missing" until the next
 * rescan, then it is gone from the records; one that appears is read. */
TEST(test_vanished_and_new_devices)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;
	char rm[600];

	gateway_tree();
	REQUIRE(rig_init(&r, "interval = 1s\nrescan = 10s\nhwmon = no\nthermal = false\n") == 0);
	CHECK_EQ_STR(snapshot(&r).state, "2 sensors on 2 devices");
	tc_advance(r.a.loop, 1000);
	snprintf(rm, sizeof(rm), "rm -rf %s/sys/bus/w1/devices/28-0316a279aaaa", root);
	REQUIRE(system(rm) == 0);
	put("sys/bus/w1/devices/28-000000000042/w1_slave", "x : crc=57 YES\nx t=-10500\n");
	tc_advance(r.a.loop, 1000);
	tc_advance(r.a.loop, 9000);         /* the rescan at +10 s */
	tc_advance(r.a.loop, 200);          /* committed */
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n >= 3);
	CHECK_EQ_STR(s.data[1],
		     "{\"28-0316a279aaaa\":{\"temp\":null},\"28-0316a2799aff\":{\"temp\":23.125},"
		     "\"units\":{\"28-0316a279aaaa.temp\":\"°C\",\"28-0316a2799aff.temp\":\"°C\"},"
		     "\"quality\":{\"28-0316a279aaaa.temp\":\"missing\"}}");
	/* Samples at 1 s .. 9 s from the first plan, at 10 s and 11 s after
	 * the rescan. */
	REQUIRE(s.n == 11);
	CHECK_EQ_STR(s.data[8], s.data[1]);
	CHECK_EQ_STR(s.data[10], s.data[9]);
	CHECK_EQ_STR(s.data[9],
		     "{\"28-000000000042\":{\"temp\":-10.5},\"28-0316a2799aff\":{\"temp\":23.125},"
		     "\"units\":{\"28-000000000042.temp\":\"°C\",\"28-0316a2799aff.temp\":\"°C\"}}");
	st = snapshot(&r);
	CHECK(st.errors[INPUT_ERR_IO] >= 1);
	CHECK_EQ_STR(st.state, "2 sensors on 2 devices");
	rig_release(&r);
}

/* A root that is not there: not connected, with the reason; connected
 * and sampling once it appears. */
TEST(test_root_missing)
{
	struct rig r;
	struct status_input st;
	char mv[600];

	gateway_tree();
	snprintf(mv, sizeof(mv), "mv %s %s.away", root, root);
	REQUIRE(system(mv) == 0);
	REQUIRE(rig_init(&r, "interval = 1s\n") == 0);
	st = snapshot(&r);
	CHECK(st.device && !st.connected);
	CHECK(strstr(st.conn_why, "No such file") != NULL);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CONNECT], 1);
	tc_advance(r.a.loop, 3000);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	snprintf(mv, sizeof(mv), "mv %s.away %s", root, root);
	REQUIRE(system(mv) == 0);
	tc_advance(r.a.loop, 1000);
	st = snapshot(&r);
	CHECK(st.connected);
	CHECK_EQ_INT(input_ticket(r.in), 1);
	CHECK_EQ_STR(st.state, "4 sensors on 4 devices");
	rig_release(&r);
}

/* A 1-wire bus that converts all its probes at once: each sample starts
 * the conversion, and the probes are read w1_conversion later, so no read
 * waits for a conversion; the record has the time the sample started. */
TEST(test_w1_bulk_conversion)
{
	struct rig r;
	struct seen s = { 0 };
	char buf[64];

	gateway_tree();
	put("sys/bus/w1/devices/w1_bus_master1/therm_bulk_read", "0\n");
	REQUIRE(rig_init(&r, "interval = 2s\nhwmon = no\nthermal = no\nw1_conversion = 800ms\n") == 0);
	tc_advance(r.a.loop, 2000);
	CHECK_EQ_STR(slurp("sys/bus/w1/devices/w1_bus_master1/therm_bulk_read", buf, sizeof(buf)),
		     "trigger\n");
	CHECK_EQ_INT(input_ticket(r.in), 0);          /* converting */
	tc_advance(r.a.loop, 799);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	tc_advance(r.a.loop, 1);
	CHECK_EQ_INT(input_ticket(r.in), 1);
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 1);
	CHECK_EQ_INT(s.wall[0], 1767225600000 + 1002000);
	CHECK(strstr(s.data[0], "\"28-0316a2799aff\":{\"temp\":23.125}") != NULL);
	rig_release(&r);

	/* w1_conversion = 0: read at once, as without therm_bulk_read. */
	put("sys/bus/w1/devices/w1_bus_master1/therm_bulk_read", "0\n");
	REQUIRE(rig_init(&r, "interval = 2s\nhwmon = no\nthermal = no\nw1_conversion = 0\n") == 0);
	tc_advance(r.a.loop, 2000);
	CHECK_EQ_INT(input_ticket(r.in), 1);
	CHECK_EQ_STR(slurp("sys/bus/w1/devices/w1_bus_master1/therm_bulk_read", buf, sizeof(buf)),
		     "0\n");
	rig_release(&r);
}

/* A commit that fails: the samples it held are appended again with their
 * own times (the core's replay), and the samples the queue refused while
 * it recovered are counted as skipped, not shipped late. */
TEST(test_failed_commit)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;

	gateway_tree();
	REQUIRE(rig_init(&r, "interval = 1s\nhwmon = no\nthermal = no\n") == 0);
	tc_advance(r.a.loop, 1000);                   /* sample 1 */
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 100);                    /* its commit fails */
	tc_advance(r.a.loop, 900);                    /* sample 2: refused */
	st = snapshot(&r);
	CHECK(st.missed_samples >= 1);
	CHECK_EQ_STR(st.state, "waiting: the queue is full");
	tc_advance(r.a.loop, 3000);
	tc_advance(r.a.loop, 200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n >= 2);
	CHECK_EQ_INT(s.wall[0], 1767225600000 + 1001000);   /* replayed, with its time */
	for (int i = 1; i < s.n && i < 16; i++)
		CHECK(s.wall[i] > s.wall[i - 1]);
	st = snapshot(&r);
	CHECK_EQ_INT(st.records + st.missed_samples, 5);
	CHECK_EQ_STR(st.state, "2 sensors on 2 devices");
	rig_release(&r);
}

/* include and exclude from the config: comma-separated or repeated. */
TEST(test_include_from_config)
{
	struct rig r;

	gateway_tree();
	REQUIRE(rig_init(&r, "include = 28-*, hwmon0.*\ninclude = cpu-thermal.*\n"
			 "exclude = *aaaa.*\n") == 0);
	CHECK_EQ_STR(snapshot(&r).state, "2 sensors on 2 devices");
	rig_release(&r);
}

/* `file` rows from the config: numbers from any file, scaled, in the
 * object "files"; a file of text is null with its quality. */
TEST(test_file_rows)
{
	struct rig r;
	struct seen s = { 0 };

	new_tree();
	put("proc/loadavg", "0.52 0.58 0.59 1/389 12345\n");
	put("sys/devices/board/temp", "50\n");
	put("sys/devices/board/mode", "auto\n");
	REQUIRE(rig_init(&r, "interval = 1s\n"
			 "file = name=load path=/proc/loadavg\n"
			 "file = name=board_temp path=/sys/devices/board/temp scale=0.5 offset=10 unit=°C\n"
			 "file = name=mode path=/sys/devices/board/mode\n") == 0);
	CHECK_EQ_STR(snapshot(&r).state, "3 sensors on 1 device");
	tc_advance(r.a.loop, 1200);
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 1);
	CHECK_EQ_STR(s.data[0], "{\"files\":{\"load\":0.52,\"board_temp\":30,\"mode\":null},"
		     "\"units\":{\"files.board_temp\":\"°C\"},\"quality\":{\"files.mode\":\"not a number\"}}");
	CHECK_EQ_INT(snapshot(&r).errors[INPUT_ERR_VALUE], 1);
	rig_release(&r);
}

/* The config refuses what cannot work, with the key's name. */
TEST(test_config_refused)
{
	struct config *cfg = NULL;
	char text[512], err[512];

	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = sysfs\n"
		 "root = sys\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "root") != NULL);
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = sysfs\n"
		 "hwmon = no\nthermal = no\niio = no\nw1 = no\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "nothing to read") != NULL);
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = sysfs\n"
		 "interval = 500ms\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "w1_conversion") != NULL);
	{
		static const char *const bad[][2] = {
			{ "file = name=a path=proc/loadavg\n", "is not absolute" },
			{ "file = name=a path=/proc/loadavg scale=x\n", "scale 'x' is not a number" },
			{ "file = name=a path=/proc/loadavg offset=\"1 2\"\n", "offset '1 2' is not a number" },
			{ "file = name=a.b path=/proc/loadavg\n", "has a '.'" },
			{ "file = name=a path=/a\nfile = name=a path=/b\n", "is also row 1's" },
			{ "file = path=/a\n", "name" },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\n"
				 "driver = sysfs\n%s[output lake]\ntype = mqtt\n", dir, bad[i][0]);
			CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)),
				     -EINVAL);
			if (!strstr(err, bad[i][1]))
				fprintf(stderr, "row %zu: %s\n", i, err);
			CHECK(strstr(err, bad[i][1]) != NULL);
		}
	}
	snprintf(text, sizeof(text), "[agent]\nid = g\nstate_dir = %s\n[input s]\ndriver = sysfs\n"
		 "parser = json\n[output lake]\ntype = mqtt\n", dir);
	CHECK_EQ_INT(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "parser") != NULL);
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
	RUN(test_parse_number);
	RUN(test_hwmon);
	RUN(test_hwmon_label_clashes);
	RUN(test_thermal);
	RUN(test_iio);
	RUN(test_w1);
	RUN(test_files);
	RUN(test_include_exclude);
	RUN(test_empty_root);
	RUN(test_discover_out_of_memory);
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_records);
	RUN(test_vanished_and_new_devices);
	RUN(test_root_missing);
	RUN(test_w1_bulk_conversion);
	RUN(test_failed_commit);
	RUN(test_include_from_config);
	RUN(test_file_rows);
	RUN(test_config_refused);
	RUN(test_no_leaks);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_END();
}
