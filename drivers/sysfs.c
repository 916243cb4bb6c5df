/* sysfs.c - the sysfs input driver: the gateway's own sensors, read from
 * files under /sys (and any named sysfs or procfs file) on a fixed
 * interval, one record per sample with a JSON object per device.
 *
 * It reads Linux hwmon chips, thermal zones, IIO devices and 1-wire
 * thermometers. The files are found once (and again every `rescan`), then
 * each is opened, read with one pread into a small buffer and closed at
 * every sample; sysfs answers from memory, so the loop is never held up
 * for long. A reading that fails (a vanished device, EIO, text where a
 * number belongs, a 1-wire CRC error or power-on value) is counted by kind
 * and shipped as null with a quality saying why, so nothing disappears.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sysfs.h"

/* Longest value file read: hwmon, IIO and w1_slave files are far shorter. */
#define READ_MAX 256
/* 1-wire thermometers report 85 °C until their first conversion. */
#define W1_POWER_ON 85000

ssize_t (*sysfs_pread)(int fd, void *buf, size_t n, off_t off) = pread;

/* ---- reading --------------------------------------------------------- */

int sysfs_parse_number(const char *s, double *v)
{
	char *end;
	double d;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	if (!*s)
		return -ENODATA;
	/* strtod() would take "nan", "inf" and hex too: not readings. */
	if (!(*s >= '0' && *s <= '9') && *s != '-' && *s != '+' && *s != '.')
		return -EINVAL;
	errno = 0;
	d = strtod(s, &end);
	if (end == s || errno == ERANGE || !isfinite(d))
		return -EINVAL;
	if (memchr(s, 'x', (size_t)(end - s)) || memchr(s, 'X', (size_t)(end - s)))
		return -EINVAL;
	if (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
		return -EINVAL;
	*v = d;
	return 0;
}

/* The file's text, NUL-terminated. 0 or -errno. */
static int read_small(const char *path, char *buf, size_t cap)
{
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = sysfs_pread(fd, buf, cap - 1, 0);
	if (n < 0) {
		rc = -errno;
		n = 0;
	}
	buf[n] = '\0';
	close(fd);
	return rc;
}

static void fail(struct sysfs_reading *out, const char *quality, int kind, int err)
{
	out->v = 0;
	out->quality = quality;
	out->err_kind = kind;
	out->err = err;
}

static void fail_errno(struct sysfs_reading *out, int err)
{
	if (err == ENOENT || err == ENODEV || err == ENXIO)
		fail(out, "missing", INPUT_ERR_IO, err);
	else
		fail(out, "io", INPUT_ERR_IO, err);
}

/* A number from a file; false with out filled when there is none. */
static bool read_number(const char *path, double *v, struct sysfs_reading *out)
{
	char buf[READ_MAX];
	int rc = read_small(path, buf, sizeof(buf));

	if (rc) {
		fail_errno(out, -rc);
		return false;
	}
	rc = sysfs_parse_number(buf, v);
	if (rc == -ENODATA) {
		fail(out, "empty", INPUT_ERR_VALUE, 0);
		return false;
	}
	if (rc) {
		fail(out, "not a number", INPUT_ERR_VALUE, 0);
		return false;
	}
	return true;
}

/* w1_slave:
 *   72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
 *   72 01 4b 46 7f ff 0e 10 57 t=23125 */
static void read_w1(const struct sysfs_chan *c, struct sysfs_reading *out)
{
	char buf[READ_MAX];
	const char *nl, *t;
	size_t l1;
	double v;
	int rc = read_small(c->path, buf, sizeof(buf));

	if (rc) {
		fail_errno(out, -rc);
		return;
	}
	if (!buf[0]) {
		fail(out, "empty", INPUT_ERR_VALUE, 0);
		return;
	}
	nl = strchr(buf, '\n');
	if (!nl) {
		fail(out, "garbage", INPUT_ERR_PROTOCOL, 0);
		return;
	}
	l1 = (size_t)(nl - buf);
	while (l1 && (buf[l1 - 1] == ' ' || buf[l1 - 1] == '\r'))
		l1--;
	if (l1 >= 2 && !memcmp(buf + l1 - 2, "NO", 2) && (l1 == 2 || buf[l1 - 3] == ' ')) {
		fail(out, "crc", INPUT_ERR_CRC, 0);
		return;
	}
	if (l1 < 3 || memcmp(buf + l1 - 3, "YES", 3) || (l1 > 3 && buf[l1 - 4] != ' ')) {
		fail(out, "garbage", INPUT_ERR_PROTOCOL, 0);
		return;
	}
	t = strstr(nl + 1, "t=");
	if (!t || sysfs_parse_number(t + 2, &v)) {
		fail(out, "garbage", INPUT_ERR_PROTOCOL, 0);
		return;
	}
	if (v == W1_POWER_ON) {
		fail(out, "power-on reset", INPUT_ERR_VALUE, 0);
		return;
	}
	out->v = v * c->mul / c->div;
}

void sysfs_read_chan(const struct sysfs_chan *c, struct sysfs_reading *out)
{
	double v, off = c->offset, scale = 1;

	memset(out, 0, sizeof(*out));
	if (c->kind == SYSFS_W1_SLAVE) {
		read_w1(c, out);
		return;
	}
	if (!read_number(c->path, &v, out))
		return;
	if (c->scale_path && !read_number(c->scale_path, &scale, out))
		return;
	if (c->offset_path && !read_number(c->offset_path, &off, out))
		return;
	out->v = (v + off) * scale * c->mul / c->div;
}

/* ---- discovery ------------------------------------------------------- */

static char *join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p;

	while (la && a[la - 1] == '/')
		la--;
	while (*b == '/')
		b++, lb--;
	p = xmalloc(la + lb + 2);
	if (!p)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

/* Whether dir/name exists. It allocates nothing, so that running out of
 * memory can never pass for a file that is not there. */
static bool exists(const char *dir, const char *name)
{
	char p[4096];
	int n = snprintf(p, sizeof(p), "%s/%s", dir, name);

	return n > 0 && (size_t)n < sizeof(p) && access(p, F_OK) == 0;
}

/* A name or label file's first line, without blanks at its ends; NULL when
 * missing or empty. Out of memory is noted in the plan, which then fails:
 * a fallback name would rename a field in the lake. A '.' would split the
 * field's path in units and quality: it becomes '_'. */
static char *read_name(struct sysfs_plan *p, const char *dir, const char *file)
{
	char buf[READ_MAX], *path = join(dir, file), *s, *e, *name;
	int rc;

	if (!path) {
		p->oom = true;
		return NULL;
	}
	rc = read_small(path, buf, sizeof(buf));
	xfree(path);
	if (rc)
		return NULL;
	s = buf;
	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strcspn(s, "\r\n");
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (e == s)
		return NULL;
	for (char *c = s; c < e; c++)
		if (*c == '.' || (unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '_';
	name = xstrndup(s, (size_t)(e - s));
	if (!name)
		p->oom = true;
	return name;
}

static void chan_release(struct sysfs_chan *c)
{
	xfree(c->name);
	xfree(c->path);
	xfree(c->scale_path);
	xfree(c->offset_path);
}

static void dev_release(struct sysfs_dev *d)
{
	for (size_t i = 0; i < d->n; i++)
		chan_release(&d->ch[i]);
	xfree(d->ch);
	xfree(d->name);
	xfree(d->dir);
}

void sysfs_plan_release(struct sysfs_plan *plan)
{
	for (size_t i = 0; i < plan->n; i++)
		dev_release(&plan->dev[i]);
	xfree(plan->dev);
	for (size_t i = 0; i < plan->n_bulk; i++)
		xfree(plan->bulk[i]);
	xfree(plan->bulk);
	memset(plan, 0, sizeof(*plan));
}

static bool name_taken(const struct sysfs_plan *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->dev[i].name, name))
			return true;
	return false;
}

static bool field_taken(const struct sysfs_dev *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->ch[i].name, name))
			return true;
	return false;
}

static bool wanted(const struct sysfs_opts *o, const char *dev, const char *field)
{
	char path[512];
	bool in = o->n_include == 0;

	snprintf(path, sizeof(path), "%s.%s", dev, field);
	for (size_t i = 0; !in && i < o->n_include; i++)
		in = fnmatch(o->include[i], path, 0) == 0;
	for (size_t i = 0; in && i < o->n_exclude; i++)
		in = fnmatch(o->exclude[i], path, 0) != 0;
	return in;
}

/* Start a device named `name` (its own `name` file's text, NULL: none)
 * found in dir; a name already used by another device gets "-<entry>",
 * the directory's last component, added. */
static struct sysfs_dev *dev_add(struct sysfs_plan *p, char *name, const char *dir,
				 const char *entry)
{
	struct sysfs_dev *v, *d;

	if (name && name_taken(p, name)) {
		size_t n = strlen(name) + strlen(entry) + 2;
		char *u = xmalloc(n);

		if (u)
			snprintf(u, n, "%s-%s", name, entry);
		xfree(name);
		name = u;
		if (!name)
			return NULL;
	}
	if (!name)
		name = xstrdup(entry);
	v = name ? xrealloc(p->dev, (p->n + 1) * sizeof(*v)) : NULL;
	if (!v) {
		xfree(name);
		return NULL;
	}
	p->dev = v;
	d = &p->dev[p->n];
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->dir = xstrdup(dir);
	if (!d->dir) {
		xfree(name);
		return NULL;
	}
	p->n++;
	return d;
}

/* Add a channel; name is taken over (NULL: out of memory). A field name
 * already in the device gets "_<fallback>" added. Returns the channel,
 * NULL on out of memory; *skipped says it was filtered out instead. */
static struct sysfs_chan *chan_add(const struct sysfs_opts *o, struct sysfs_plan *p,
				   struct sysfs_dev *d, char *name, const char *fallback,
				   const char *path, bool *skipped)
{
	struct sysfs_chan *v, *c;

	*skipped = false;
	if (!name)
		name = xstrdup(fallback);
	if (!name)
		return NULL;
	if (field_taken(d, name)) {
		size_t n = strlen(name) + strlen(fallback) + 2;
		char *u = xmalloc(n);

		if (u)
			snprintf(u, n, "%s_%s", name, fallback);
		xfree(name);
		name = u;
		if (!name)
			return NULL;
	}
	if (!wanted(o, d->name, name)) {
		xfree(name);
		*skipped = true;
		return NULL;
	}
	v = xrealloc(d->ch, (d->n + 1) * sizeof(*v));
	if (!v) {
		xfree(name);
		return NULL;
	}
	d->ch = v;
	c = &d->ch[d->n];
	memset(c, 0, sizeof(*c));
	c->name = name;
	c->mul = 1;
	c->div = 1;
	c->path = xstrdup(path);
	if (!c->path) {
		xfree(name);
		return NULL;
	}
	d->n++;
	p->n_chan++;
	return c;
}

/* How many entries of dir match pattern (*out: them, in natural order).
 * A directory that cannot be listed has none (its class is not there);
 * -ENOMEM when memory ran short. */
static int list_dir(const char *dir, const char *pattern, struct dirent ***out)
{
	struct dirent **v;
	int n = scandir(dir, &v, NULL, versionsort), k = 0;

	*out = NULL;
	if (n < 0)
		return errno == ENOMEM ? -ENOMEM : 0;
	for (int i = 0; i < n; i++) {
		if (fnmatch(pattern, v[i]->d_name, 0) == 0)
			v[k++] = v[i];
		else
			free(v[i]);
	}
	*out = v;
	return k;
}

static void list_free(struct dirent **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Drop a device that ended up with no channel (filtered, or none found). */
static void dev_drop_if_empty(struct sysfs_plan *p)
{
	if (p->n && !p->dev[p->n - 1].n) {
		p->n--;
		dev_release(&p->dev[p->n]);
	}
}

static const struct {
	const char *prefix;
	double div;
	const char *unit;
} hwmon_types[] = {
	{ "temp", 1000, "°C" },      /* millidegrees Celsius */
	{ "in", 1000, "V" },         /* millivolts */
	{ "fan", 1, "RPM" },
	{ "power", 1000000, "W" },   /* microwatts */
	{ "curr", 1000, "A" },       /* milliamperes */
};

/* The hwmon type of "temp1_input" (index into hwmon_types[]), or -1. */
static int hwmon_type(const char *file)
{
	for (size_t i = 0; i < sizeof(hwmon_types) / sizeof(hwmon_types[0]); i++) {
		size_t l = strlen(hwmon_types[i].prefix);
		const char *s = file + l;

		if (strncmp(file, hwmon_types[i].prefix, l) || !(*s >= '0' && *s <= '9'))
			continue;
		while (*s >= '0' && *s <= '9')
			s++;
		if (!strcmp(s, "_input"))
			return (int)i;
	}
	return -1;
}

/* The channels of one hwmon directory (the chip's own, or its device/ for
 * old drivers that keep them there). */
static int hwmon_chans(const struct sysfs_opts *o, struct sysfs_plan *p, struct sysfs_dev *d,
		       const char *dir)
{
	struct dirent **v;
	int n = list_dir(dir, "*_input", &v), rc = 0;

	if (n < 0)
		return n;
	for (int i = 0; !rc && i < n; i++) {
		const char *f = v[i]->d_name;
		int t = hwmon_type(f);
		char stem[64], label[80], *path;
		struct sysfs_chan *c;
		bool skipped = false;

		if (t < 0 || strlen(f) >= sizeof(stem))
			continue;
		snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(f) - strlen("_input")), f);
		snprintf(label, sizeof(label), "%s_label", stem);
		path = join(dir, f);
		c = path ? chan_add(o, p, d, read_name(p, dir, label), stem, path, &skipped) : NULL;
		xfree(path);
		if (!c && !skipped) {
			rc = -ENOMEM;
			break;
		}
		if (c) {
			c->div = hwmon_types[t].div;
			c->unit = hwmon_types[t].unit;
		}
	}
	list_free(v, n);
	return rc;
}

static int discover_hwmon(const struct sysfs_opts *o, struct sysfs_plan *p)
{
	char *base = join(o->root, "sys/class/hwmon");
	struct dirent **v;
	int n, rc = 0;

	if (!base)
		return -ENOMEM;
	n = list_dir(base, "hwmon*", &v);
	for (int i = 0; n > 0 && !rc && i < n; i++) {
		char *dir = join(base, v[i]->d_name), *sub;
		struct sysfs_dev *d = dir ? dev_add(p, read_name(p, dir, "name"), dir, v[i]->d_name) : NULL;

		if (!d) {
			rc = -ENOMEM;
		} else {
			rc = hwmon_chans(o, p, d, dir);
			sub = rc ? NULL : join(dir, "device");
			if (!rc && !sub)
				rc = -ENOMEM;
			if (!rc && !d->n)
				rc = hwmon_chans(o, p, d, sub);
			xfree(sub);
			dev_drop_if_empty(p);
		}
		xfree(dir);
	}
	list_free(v, n);
	xfree(base);
	return n < 0 ? n : rc;
}

static int discover_thermal(const struct sysfs_opts *o, struct sysfs_plan *p)
{
	char *base = join(o->root, "sys/class/thermal");
	struct dirent **v;
	int n, rc = 0;

	if (!base)
		return -ENOMEM;
	n = list_dir(base, "thermal_zone*", &v);
	for (int i = 0; n > 0 && !rc && i < n; i++) {
		char *dir = join(base, v[i]->d_name), *path = NULL;
		struct sysfs_dev *d = NULL;
		struct sysfs_chan *c = NULL;
		bool skipped = false;

		if (dir && exists(dir, "temp")) {
			d = dev_add(p, read_name(p, dir, "type"), dir, v[i]->d_name);
			path = join(dir, "temp");
			c = d && path ? chan_add(o, p, d, NULL, "temp", path, &skipped) : NULL;
			if (c) {
				c->div = 1000;
				c->unit = "°C";
			} else if (!skipped) {
				rc = -ENOMEM;
			}
			if (d)
				dev_drop_if_empty(p);
		} else if (!dir) {
			rc = -ENOMEM;
		}
		xfree(path);
		xfree(dir);
	}
	list_free(v, n);
	xfree(base);
	return n < 0 ? n : rc;
}

/* IIO channel types by what their scaled value is in (the kernel's IIO
 * ABI), shipped in the SI-ish unit people read. */
static const struct {
	const char *type;
	double div;
	const char *unit;
} iio_types[] = {
	{ "temp", 1000, "°C" },           /* millidegrees Celsius */
	{ "voltage", 1000, "V" },         /* millivolts */
	{ "current", 1000, "A" },         /* milliamperes */
	{ "power", 1000, "W" },           /* milliwatts */
	{ "humidityrelative", 1000, "%" },/* milli percent */
	{ "pressure", 1, "kPa" },
	{ "illuminance", 1, "lx" },
	{ "accel", 1, "m/s²" },
	{ "anglvel", 1, "rad/s" },
	{ "magn", 1, "G" },
	{ "resistance", 1, "Ω" },
	{ "concentration", 1, "%" },
};

/* Add an IIO channel's scale or offset file: in_<chan>_<what>, else the
 * type's shared in_<type>_<what>. 0, or -ENOMEM. */
static int iio_side(const char *dir, const char *chan, const char *type, const char *what,
		    char **out)
{
	char f[128];

	snprintf(f, sizeof(f), "in_%s_%s", chan, what);
	if (!exists(dir, f)) {
		snprintf(f, sizeof(f), "in_%s_%s", type, what);
		if (!exists(dir, f))
			return 0;
	}
	*out = join(dir, f);
	return *out ? 0 : -ENOMEM;
}

static int iio_chans(const struct sysfs_opts *o, struct sysfs_plan *p, struct sysfs_dev *d,
		     const char *dir)
{
	struct dirent **v;
	int n = list_dir(dir, "in_*", &v), rc = 0;

	for (int i = 0; n > 0 && !rc && i < n; i++) {
		const char *f = v[i]->d_name, *us = strrchr(f, '_');
		char chan[96], type[32], other[128], *path;
		size_t cl, tl = 0;
		bool raw, skipped = false;
		struct sysfs_chan *c;

		if (!us)
			continue;
		raw = !strcmp(us, "_raw");
		if (!raw && strcmp(us, "_input"))
			continue;
		cl = (size_t)(us - f) - 3;
		if (cl == 0 || cl >= sizeof(chan))
			continue;
		memcpy(chan, f + 3, cl);
		chan[cl] = '\0';
		/* Processed values win over raw ones of the same channel. */
		snprintf(other, sizeof(other), "in_%s_input", chan);
		if (raw && exists(dir, other))
			continue;
		while (tl < sizeof(type) - 1 && chan[tl] >= 'a' && chan[tl] <= 'z') {
			type[tl] = chan[tl];
			tl++;
		}
		type[tl] = '\0';
		path = join(dir, f);
		c = path ? chan_add(o, p, d, xstrdup(chan), chan, path, &skipped) : NULL;
		xfree(path);
		if (!c) {
			if (!skipped)
				rc = -ENOMEM;
			continue;
		}
		for (size_t k = 0; k < sizeof(iio_types) / sizeof(iio_types[0]); k++) {
			if (!strcmp(type, iio_types[k].type)) {
				c->div = iio_types[k].div;
				c->unit = iio_types[k].unit;
			}
		}
		if (raw) {
			rc = iio_side(dir, chan, type, "scale", &c->scale_path);
			if (!rc)
				rc = iio_side(dir, chan, type, "offset", &c->offset_path);
		}
	}
	list_free(v, n);
	return n < 0 ? n : rc;
}

static int discover_iio(const struct sysfs_opts *o, struct sysfs_plan *p)
{
	char *base = join(o->root, "sys/bus/iio/devices");
	struct dirent **v;
	int n, rc = 0;

	if (!base)
		return -ENOMEM;
	n = list_dir(base, "iio:device*", &v);
	for (int i = 0; n > 0 && !rc && i < n; i++) {
		char *dir = join(base, v[i]->d_name);
		struct sysfs_dev *d = dir ? dev_add(p, read_name(p, dir, "name"), dir, v[i]->d_name) : NULL;

		if (!d) {
			rc = -ENOMEM;
		} else {
			rc = iio_chans(o, p, d, dir);
			dev_drop_if_empty(p);
		}
		xfree(dir);
	}
	list_free(v, n);
	xfree(base);
	return n < 0 ? n : rc;
}

/* 1-wire thermometer families whose w1_slave has the DS18B20's format:
 * DS18S20 (10), DS1822 (22), DS18B20 (28), DS1825 (3b), DS28EA00 (42). */
static bool w1_thermometer(const char *entry)
{
	static const char *const fam[] = { "10-", "22-", "28-", "3b-", "42-" };

	for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++)
		if (!strncmp(entry, fam[i], 3))
			return true;
	return false;
}

/* The bus masters that convert all their probes at once on "trigger"
 * (therm_bulk_read, kernels from 5.9): a probe's w1_slave is then read from
 * its memory at once, instead of holding the read ~750 ms for a
 * conversion of its own. */
static int discover_w1_bulk(struct sysfs_plan *p, const char *base)
{
	struct dirent **v;
	int n = list_dir(base, "w1_bus_master*", &v), rc = 0;

	for (int i = 0; n > 0 && !rc && i < n; i++) {
		char *dir = join(base, v[i]->d_name), *path = dir ? join(dir, "therm_bulk_read") : NULL;
		char **nv;

		if (!path) {
			rc = -ENOMEM;
		} else if (access(path, W_OK) == 0) {
			nv = xrealloc(p->bulk, (p->n_bulk + 1) * sizeof(*nv));
			if (nv) {
				p->bulk = nv;
				p->bulk[p->n_bulk++] = path;
				path = NULL;
			} else {
				rc = -ENOMEM;
			}
		}
		xfree(path);
		xfree(dir);
	}
	list_free(v, n);
	return n < 0 ? n : rc;
}

int sysfs_w1_trigger(const struct sysfs_plan *p, int *err)
{
	static const char cmd[] = "trigger\n";
	int done = 0;

	*err = 0;
	for (size_t i = 0; i < p->n_bulk; i++) {
		int fd = open(p->bulk[i], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		ssize_t n = fd < 0 ? -1 : write(fd, cmd, sizeof(cmd) - 1);

		if (n == (ssize_t)sizeof(cmd) - 1)
			done++;
		else if (!*err)
			*err = n < 0 ? errno : EIO;
		if (fd >= 0)
			close(fd);
	}
	return done;
}

static int discover_w1(const struct sysfs_opts *o, struct sysfs_plan *p)
{
	char *base = join(o->root, "sys/bus/w1/devices");
	struct dirent **v;
	int n, rc = 0;
	size_t probes = 0;

	if (!base)
		return -ENOMEM;
	n = list_dir(base, "*-*", &v);
	for (int i = 0; n > 0 && !rc && i < n; i++) {
		char *dir, *path;
		struct sysfs_dev *d;
		struct sysfs_chan *c;
		bool skipped = false;

		if (!w1_thermometer(v[i]->d_name))
			continue;
		dir = join(base, v[i]->d_name);
		path = dir ? join(dir, "w1_slave") : NULL;
		d = path ? dev_add(p, NULL, dir, v[i]->d_name) : NULL;
		c = d ? chan_add(o, p, d, NULL, "temp", path, &skipped) : NULL;
		if (c) {
			c->kind = SYSFS_W1_SLAVE;
			c->div = 1000;
			c->unit = "°C";
		} else if (!d || !skipped) {
			rc = -ENOMEM;
		}
		if (d)
			dev_drop_if_empty(p);
		if (c)
			probes++;
		xfree(path);
		xfree(dir);
	}
	list_free(v, n);
	if (!rc && probes)
		rc = discover_w1_bulk(p, base);
	xfree(base);
	return n < 0 ? n : rc;
}

static int discover_files(const struct sysfs_opts *o, struct sysfs_plan *p)
{
	struct sysfs_dev *d;

	if (!o->n_files)
		return 0;
	d = dev_add(p, xstrdup("files"), o->root, "files");
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < o->n_files; i++) {
		const struct sysfs_file *f = &o->files[i];
		char *path = join(o->root, f->path);
		struct sysfs_chan *c;
		bool skipped = false;

		c = path ? chan_add(o, p, d, xstrdup(f->name), f->name, path, &skipped) : NULL;
		xfree(path);
		if (!c && !skipped)
			return -ENOMEM;
		if (c) {
			c->mul = f->scale;
			c->offset = f->offset;
			c->unit = f->unit && f->unit[0] ? f->unit : NULL;
		}
	}
	dev_drop_if_empty(p);
	return 0;
}

int sysfs_discover(const struct sysfs_opts *opts, struct sysfs_plan *plan)
{
	int rc;

	memset(plan, 0, sizeof(*plan));
	/* The named files first: their object "files" keeps its name. */
	rc = discover_files(opts, plan);
	if (!rc && (opts->classes & SYSFS_HWMON))
		rc = discover_hwmon(opts, plan);
	if (!rc && (opts->classes & SYSFS_THERMAL))
		rc = discover_thermal(opts, plan);
	if (!rc && (opts->classes & SYSFS_IIO))
		rc = discover_iio(opts, plan);
	if (!rc && (opts->classes & SYSFS_W1))
		rc = discover_w1(opts, plan);
	if (!rc && plan->oom)
		rc = -ENOMEM;
	if (rc)
		sysfs_plan_release(plan);
	return rc;
}

/* ---- the driver ------------------------------------------------------ */

/* A `file` row. scale and offset are text: config values have no
 * floating-point type, so validate() parses them. */
struct sysfs_file_row {
	char *name, *path, *scale, *offset, *unit;
};

struct sysfs_conf {
	char *root;
	int64_t interval_ms;
	int64_t rescan_ms;
	int64_t w1_conversion_ms;
	bool hwmon, thermal, iio, w1;
	struct cfg_list include, exclude;
	struct cfg_table file;
};

#define FK(f) offsetof(struct sysfs_file_row, f)
static const struct cfg_key file_cols[] = {
	{ .name = "name", .type = CFG_STR, .offset = FK(name), .required = true,
	  .help = "The value's name in the record's object \"files\"." },
	{ .name = "path", .type = CFG_STR, .offset = FK(path), .required = true,
	  .help = "Absolute path of the file (read under root); its first word must be a number." },
	{ .name = "scale", .type = CFG_STR, .def = "1", .offset = FK(scale),
	  .help = "Factor the number is multiplied by, after adding offset (e.g. 0.001)." },
	{ .name = "offset", .type = CFG_STR, .def = "0", .offset = FK(offset),
	  .help = "Added to the number before scaling." },
	{ .name = "unit", .type = CFG_STR, .offset = FK(unit),
	  .help = "Unit of the scaled value, shipped under units; none when not given." },
	{ .name = NULL },
};

#define SK(f) offsetof(struct sysfs_conf, f)
static const struct cfg_key sysfs_keys[] = {
	{ .name = "root", .type = CFG_STR, .def = "/", .offset = SK(root),
	  .help = "Directory under which sys/class/hwmon, sys/class/thermal, sys/bus/iio and sys/bus/w1 "
		  "are looked for, and under which the paths of `file` rows are read. \"/\" on a gateway; "
		  "a copy of a tree for tests." },
	{ .name = "interval", .type = CFG_DURATION, .def = "10s", .offset = SK(interval_ms),
	  .min = 100, .max = 86400000,
	  .help = "Time between two samples: one record each, taken on fixed deadlines of the agent's "
		  "monotonic clock (a 10s interval samples at :00, :10, :20, ...) so the schedule never drifts." },
	{ .name = "rescan", .type = CFG_DURATION, .def = "1m", .offset = SK(rescan_ms),
	  .min = 0, .max = 86400000,
	  .help = "How often the sensors are looked for again, so a device that appears (a USB sensor, a "
		  "1-wire probe plugged in) is read and one that is gone is dropped; 0: only at start. Until "
		  "then a vanished sensor is shipped as null with quality \"missing\"." },
	{ .name = "hwmon", .type = CFG_BOOL, .def = "true", .offset = SK(hwmon),
	  .help = "Read the hwmon chips (/sys/class/hwmon): temperatures, voltages, fans, power, currents." },
	{ .name = "thermal", .type = CFG_BOOL, .def = "true", .offset = SK(thermal),
	  .help = "Read the thermal zones (/sys/class/thermal/thermal_zone*)." },
	{ .name = "iio", .type = CFG_BOOL, .def = "true", .offset = SK(iio),
	  .help = "Read the IIO devices (/sys/bus/iio/devices/iio:device*): ADCs, environment sensors." },
	{ .name = "w1", .type = CFG_BOOL, .def = "true", .offset = SK(w1),
	  .help = "Read the 1-wire thermometers (/sys/bus/w1/devices/28-* and the other DS18x20 families)." },
	{ .name = "w1_conversion", .type = CFG_DURATION, .def = "750ms", .offset = SK(w1_conversion_ms),
	  .min = 0, .max = 60000,
	  .help = "Where the 1-wire bus can convert all its probes at once (therm_bulk_read, kernels from "
		  "5.9), each sample starts that conversion and reads the probes this much later, instead of "
		  "waiting ~750 ms per probe in the read. 750ms suits 12-bit resolution; 0: no bulk "
		  "conversion. Must be shorter than interval." },
	{ .name = "include", .type = CFG_LIST, .offset = SK(include), .example = "coretemp.*, 28-*",
	  .help = "Only the sensors whose DEVICE.FIELD name matches one of these glob(7) patterns "
		  "(comma-separated, or on several lines), as in the record: e.g. coretemp.Core 0, "
		  "28-0316a2799aff.temp, files.load; unset: all." },
	{ .name = "exclude", .type = CFG_LIST, .offset = SK(exclude), .example = "*.fan*",
	  .help = "Leave out the sensors whose DEVICE.FIELD name matches one of these glob(7) patterns "
		  "(comma-separated, or on several lines), after include." },
	{ .name = "file", .type = CFG_TABLE, .offset = SK(file), .cols = file_cols,
	  .row_size = sizeof(struct sysfs_file_row),
	  .example = "name=board_temp path=/sys/bus/i2c/devices/1-0048/temp scale=0.001 unit=°C",
	  .help = "Any sysfs or procfs file read as a number, one per line: columns name, path, and "
		  "optionally scale, offset and unit; shipped as (number + offset) * scale in the object "
		  "\"files\"." },
	{ .name = NULL },
};

struct sysfs {
	struct input *in;
	const struct sysfs_conf *conf;
	struct loop *loop;
	struct loop_timer timer;
	struct loop_timer conv_timer;  /* reads a sample after a 1-wire bulk conversion */
	struct sample_time conv_t;     /* that sample's time */
	bool converting;
	struct sysfs_opts opts;
	struct sysfs_file *files;      /* the `file` rows, scale and offset parsed */
	struct sysfs_plan plan;
	int64_t next_scan;       /* monotonic ms of the next discovery */
	int64_t missed_seen;     /* timer.missed already counted */
	bool scanned;
	bool connected, told;    /* told: input_set_connected() called once */
	bool blocked;            /* the queue refused a sample: wait for resume() */
};

static int sysfs_validate(const void *conf, char *err, size_t errlen)
{
	const struct sysfs_conf *c = conf;

	if (!c->root || c->root[0] != '/') {
		snprintf(err, errlen, "key 'root': '%s' is not an absolute path", c->root ? c->root : "");
		return -EINVAL;
	}
	if (!c->hwmon && !c->thermal && !c->iio && !c->w1 && !c->file.n) {
		snprintf(err, errlen, "keys 'hwmon', 'thermal', 'iio', 'w1' are all off and no 'file' is "
			 "given: nothing to read");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->file.n; i++) {
		const struct sysfs_file_row *f = CFG_ROW(&c->file, struct sysfs_file_row, i);
		double v;

		if (f->path[0] != '/') {
			snprintf(err, errlen, "key 'file': row %zu: path '%s' is not absolute", i + 1, f->path);
			return -EINVAL;
		}
		if (strchr(f->name, '.')) {
			snprintf(err, errlen, "key 'file': row %zu: name '%s' has a '.', which would split it "
				 "in units and quality", i + 1, f->name);
			return -EINVAL;
		}
		if (sysfs_parse_number(f->scale, &v) || strcspn(f->scale, " \t") != strlen(f->scale)) {
			snprintf(err, errlen, "key 'file': row %zu: scale '%s' is not a number", i + 1, f->scale);
			return -EINVAL;
		}
		if (sysfs_parse_number(f->offset, &v) || strcspn(f->offset, " \t") != strlen(f->offset)) {
			snprintf(err, errlen, "key 'file': row %zu: offset '%s' is not a number", i + 1,
				 f->offset);
			return -EINVAL;
		}
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(CFG_ROW(&c->file, struct sysfs_file_row, k)->name, f->name)) {
				snprintf(err, errlen, "key 'file': row %zu: name '%s' is also row %zu's", i + 1,
					 f->name, k + 1);
				return -EINVAL;
			}
		}
	}
	if (c->w1 && c->w1_conversion_ms >= c->interval_ms) {
		snprintf(err, errlen, "key 'w1_conversion': %" PRId64 " ms is not shorter than interval "
			 "(%" PRId64 " ms)", c->w1_conversion_ms, c->interval_ms);
		return -EINVAL;
	}
	return 0;
}

static void update_state(struct sysfs *s)
{
	size_t devs = s->plan.n;

	if (s->blocked)
		input_set_state(s->in, "waiting: the queue is full");
	else if (!s->connected)
		input_set_state(s->in, "waiting for %s", s->conf->root);
	else
		input_set_state(s->in, "%zu sensor%s on %zu device%s", s->plan.n_chan,
				s->plan.n_chan == 1 ? "" : "s", devs, devs == 1 ? "" : "s");
}

/* Is the root there and readable? Tells status when that changes. */
static bool check_root(struct sysfs *s)
{
	bool ok = access(s->conf->root, R_OK | X_OK) == 0;
	int err = errno;

	if (ok != s->connected || !s->told) {
		if (ok) {
			input_set_connected(s->in, true, "%s", "");
			input_clear_error(s->in);
		} else {
			input_set_connected(s->in, false, "%s: %s", s->conf->root, strerror(err));
			input_count_error(s->in, INPUT_ERR_CONNECT, "cannot read %s: %s", s->conf->root,
					  strerror(err));
		}
		s->told = true;
		s->connected = ok;
		s->scanned = false;     /* look again once it is back */
	}
	return ok;
}

static void scan(struct sysfs *s)
{
	struct sysfs_plan p;
	int rc = sysfs_discover(&s->opts, &p);

	if (rc) {
		/* Keep the old plan: better than none. */
		input_error(s->in, "cannot look for sensors: %s", strerror(-rc));
		return;
	}
	sysfs_plan_release(&s->plan);
	s->plan = p;
	s->scanned = true;
	if (!p.n_chan)
		input_error(s->in, "no sensors found under %s", s->conf->root);
}

static void sample(struct sysfs *s, const struct sample_time *st)
{
	struct sample_time t = *st;
	struct rec *r;
	char key[128];
	int rc;

	r = input_rec_begin(s->in);
	for (size_t i = 0; i < s->plan.n; i++) {
		const struct sysfs_dev *d = &s->plan.dev[i];

		rec_obj_begin(r, d->name);
		for (size_t k = 0; k < d->n; k++) {
			const struct sysfs_chan *c = &d->ch[k];
			struct sysfs_reading rd;

			input_count_request(s->in);
			sysfs_read_chan(c, &rd);
			if (!rd.quality) {
				rec_num(r, c->name, rd.v, c->unit);
				continue;
			}
			rec_null(r, c->name, c->unit, rd.quality);
			if (rd.err)
				input_count_error(s->in, (enum input_err_kind)rd.err_kind, "%s.%s: %s: %s",
						  d->name, c->name, c->path, strerror(rd.err));
			else
				input_count_error(s->in, (enum input_err_kind)rd.err_kind, "%s.%s: %s: %s",
						  d->name, c->name, c->path, rd.quality);
		}
		rec_obj_end(r);
	}
	snprintf(key, sizeof(key), "%s:%" PRId64 ":%" PRId64, input_name(s->in), t.wall_ms, t.mono_ms);
	rc = input_emit_rec(s->in, r, key, &t);
	if (rc == -EAGAIN) {
		/* Nothing taken: this sample is not shipped, and says so. */
		s->blocked = true;
		input_count_missed(s->in, 1);
	} else if (rc) {
		input_count_missed(s->in, 1);
		input_error(s->in, "sample not stored: %s", strerror(-rc));
	}
}

static int64_t conv_done(struct loop_timer *tm)
{
	struct sysfs *s = container_of(tm, struct sysfs, conv_timer);

	s->converting = false;
	sample(s, &s->conv_t);
	return -1;
}

/* Take a sample now, or start the 1-wire buses' conversion and read once
 * it is done, with the time it was started. */
static void start_sample(struct sysfs *s)
{
	struct sample_time t;
	int err;

	input_sample_now(s->in, &t);
	if (s->converting) {
		/* Cannot happen with w1_conversion < interval, but a stall
		 * could: the conversion's sample goes first. */
		loop_timer_cancel(s->loop, &s->conv_timer);
		conv_done(&s->conv_timer);
	}
	if (s->plan.n_bulk && s->conf->w1_conversion_ms > 0) {
		if (sysfs_w1_trigger(&s->plan, &err) > 0) {
			if (err)
				input_count_error(s->in, INPUT_ERR_IO, "1-wire bulk conversion: %s",
						  strerror(err));
			s->conv_t = t;
			s->converting = true;
			loop_timer_at(s->loop, &s->conv_timer, loop_now_ms() + s->conf->w1_conversion_ms);
			return;
		}
		input_count_error(s->in, INPUT_ERR_IO, "1-wire bulk conversion: %s", strerror(err));
	}
	sample(s, &t);
}

static int64_t sysfs_tick(struct loop_timer *tm)
{
	struct sysfs *s = container_of(tm, struct sysfs, timer);
	int64_t now = loop_now_ms();

	if (tm->missed > s->missed_seen) {
		input_count_missed(s->in, tm->missed - s->missed_seen);
		s->missed_seen = tm->missed;
	}
	if (s->blocked) {
		input_count_missed(s->in, 1);
		return 0;
	}
	if (check_root(s)) {
		if (!s->scanned || (s->conf->rescan_ms > 0 && now >= s->next_scan)) {
			scan(s);
			s->next_scan = now + s->conf->rescan_ms;
		}
		if (s->plan.n_chan)
			start_sample(s);
	}
	update_state(s);
	return 0;
}

static void sysfs_stop(struct input *in, void *state)
{
	struct sysfs *s = state;

	if (!s)
		return;
	if (s->loop) {
		loop_timer_cancel(s->loop, &s->timer);
		loop_timer_cancel(s->loop, &s->conv_timer);
	}
	sysfs_plan_release(&s->plan);
	xfree(s->files);
	xfree(s);
}

static int sysfs_start(struct input *in, void **state)
{
	struct sysfs *s = xcalloc(1, sizeof(*s));
	int64_t now, first;
	int rc;

	if (!s)
		return -ENOMEM;
	s->in = in;
	s->conf = input_driver_conf(in);
	s->opts.root = s->conf->root;
	s->opts.classes = (s->conf->hwmon ? SYSFS_HWMON : 0) | (s->conf->thermal ? SYSFS_THERMAL : 0) |
			  (s->conf->iio ? SYSFS_IIO : 0) | (s->conf->w1 ? SYSFS_W1 : 0);
	if (s->conf->file.n) {
		s->files = xcalloc(s->conf->file.n, sizeof(*s->files));
		if (!s->files) {
			rc = -ENOMEM;
			input_error(in, "cannot start: %s", strerror(-rc));
			goto out_stop;
		}
	}
	for (size_t i = 0; i < s->conf->file.n; i++) {
		const struct sysfs_file_row *f = CFG_ROW(&s->conf->file, struct sysfs_file_row, i);

		s->files[i].name = f->name;
		s->files[i].path = f->path;
		s->files[i].unit = f->unit;
		/* Both checked by validate(). */
		sysfs_parse_number(f->scale, &s->files[i].scale);
		sysfs_parse_number(f->offset, &s->files[i].offset);
	}
	s->opts.files = s->files;
	s->opts.n_files = s->conf->file.n;
	s->opts.include = s->conf->include.v;
	s->opts.n_include = s->conf->include.n;
	s->opts.exclude = s->conf->exclude.v;
	s->opts.n_exclude = s->conf->exclude.n;
	s->loop = input_loop(in);
	if (check_root(s)) {
		scan(s);
		s->next_scan = loop_now_ms() + s->conf->rescan_ms;
	}
	update_state(s);
	/* The first sample on the next whole interval of the monotonic clock. */
	now = loop_now_ms();
	first = (now / s->conf->interval_ms + 1) * s->conf->interval_ms;
	s->timer.cb = sysfs_tick;
	s->conv_timer.cb = conv_done;
	loop_timer_every(s->loop, &s->timer, first, s->conf->interval_ms);
	*state = s;
	return 0;

out_stop:
	sysfs_stop(in, s);
	return rc;
}

static void sysfs_resume(struct input *in, void *state)
{
	struct sysfs *s = state;

	s->blocked = false;
	update_state(s);
}

const struct driver sysfs_driver = {
	.version = DRIVER_VERSION,
	.name = "sysfs",
	.help = "Samples the gateway's sensors from sysfs (hwmon, thermal zones, IIO, 1-wire "
		"thermometers) on a fixed interval, one record per sample.",
	.flags = DRIVER_STRUCTURED | DRIVER_REPLAY,
	.conf_keys = sysfs_keys,
	.conf_size = sizeof(struct sysfs_conf),
	.validate = sysfs_validate,
	.start = sysfs_start,
	.resume = sysfs_resume,
	.stop = sysfs_stop,
};
