/* sysfs.h - the sysfs driver's plan of sensors and how each is read, apart
 * from the driver glue so the unit tests can run them on a fake tree.
 *
 * Discovery walks a root (normally "/") for hwmon chips, thermal zones, IIO
 * devices and 1-wire thermometers and makes a plan: devices, each with the
 * channels (one value file each) to read every interval. Reading a channel
 * never fails as a whole: it gives a value, or a quality saying why there
 * is none and the kind of error to count.
 */
#ifndef DRIVERS_SYSFS_H
#define DRIVERS_SYSFS_H

#include <sys/types.h>

#include "driver.h"

enum sysfs_class {
	SYSFS_HWMON = 1 << 0,
	SYSFS_THERMAL = 1 << 1,
	SYSFS_IIO = 1 << 2,
	SYSFS_W1 = 1 << 3,
};

enum sysfs_read_kind {
	SYSFS_NUMBER,   /* (value + offset) * scale * mul / div */
	SYSFS_W1_SLAVE, /* a w1_slave file: CRC line, then t=<millidegrees> */
};

struct sysfs_chan {
	char *name;         /* field name in the device's object */
	char *path;         /* the value file */
	char *scale_path;   /* NULL: scale 1 (IIO in_*_scale) */
	char *offset_path;  /* NULL: the fixed offset (IIO in_*_offset) */
	double offset;      /* added to the value before scaling */
	double mul, div;    /* to the unit shipped (e.g. div 1000: m°C -> °C);
			     * a division, so 23125 m°C is 23.125 exactly */
	const char *unit;   /* static text or NULL */
	int kind;           /* enum sysfs_read_kind */
};

struct sysfs_dev {
	char *name;         /* the object's name in the record */
	char *dir;          /* where it was found, for messages */
	struct sysfs_chan *ch;
	size_t n;
};

struct sysfs_plan {
	struct sysfs_dev *dev;
	size_t n;
	size_t n_chan;      /* channels over all devices */
	char **bulk;        /* 1-wire bus masters' therm_bulk_read files */
	size_t n_bulk;
	bool oom;           /* discovery ran short of memory on the way */
};

/* A named file read as a number (a `file` row). */
struct sysfs_file {
	const char *name, *path, *unit;
	double scale, offset;
};

struct sysfs_opts {
	const char *root;               /* prefix of every path; "/" on a gateway */
	unsigned classes;               /* enum sysfs_class */
	char **include, **exclude;      /* fnmatch(3) globs of "device.field" */
	size_t n_include, n_exclude;
	const struct sysfs_file *files; /* shipped in the object "files" */
	size_t n_files;
};

/* Build the plan of what opts->root holds now. Devices and channels come in
 * a stable order (natural sort of directory names). A device that cannot be
 * listed is left out; a channel file that exists is kept even when it does
 * not read well (it is shipped as null with a quality). Returns 0 or
 * -ENOMEM; on error the plan is empty. */
int sysfs_discover(const struct sysfs_opts *opts, struct sysfs_plan *plan);
void sysfs_plan_release(struct sysfs_plan *plan);

struct sysfs_reading {
	double v;
	const char *quality;   /* NULL: v is good; else why there is none */
	int err_kind;          /* enum input_err_kind, when quality is set */
	int err;               /* errno of a failed open or read, else 0 */
};

/* Read one channel now. Never blocks for long (O_NONBLOCK, one pread). */
void sysfs_read_chan(const struct sysfs_chan *c, struct sysfs_reading *out);

/* Start a conversion of every 1-wire probe on the buses that can
 * (plan->bulk); reading their w1_slave conversion time later then does
 * not wait. Returns how many buses took the command; *err: the first
 * errno of those that did not (0: none failed). */
int sysfs_w1_trigger(const struct sysfs_plan *p, int *err);

/* Parse text as a number: optional blanks, a decimal number, then the end
 * or a blank (what follows is ignored, as in /proc/loadavg). 0, -ENODATA
 * (empty or only blanks) or -EINVAL (text). */
int sysfs_parse_number(const char *s, double *v);

/* Test seam: the pread the driver calls (tests inject EIO). */
extern ssize_t (*sysfs_pread)(int fd, void *buf, size_t n, off_t off);

#endif
