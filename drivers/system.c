/* system.c - the `system` input: the gateway's own health (CPU, memory,
 * disk space and I/O, network, load, uptime, temperatures and the agent's
 * own footprint), one structured record per interval.
 *
 * Everything is read from small files under proc_root and sys_root, so a
 * sample never waits on a device, with one exception: statvfs(3) of a
 * mount point. A network filesystem whose server is gone can block it for
 * minutes, so network and FUSE filesystems are left out unless asked for.
 * Counters (CPU ticks, bytes, packets, I/Os) are shipped as what changed
 * since the previous sample; a counter that went backwards (a reboot, a
 * wrap, an interface created again) is null with quality "counter reset",
 * never a negative value.
 */
#include <ctype.h>
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

#include "driver.h"
#include "system.h"

/* Every file read here is small; /proc/stat may be longer (its interrupt
 * lines), but the CPU lines come first. */
#define READ_MAX (64 << 10)
#define MAX_CPUS 256
#define MAX_IFS 64
#define MAX_DISKS 64
#define MAX_MOUNTS 64
#define MAX_ZONES 32

const char *const sys_cpu_state_names[SYS_CPU_STATES] = {
	"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
};

int (*sys_statvfs)(const char *path, struct statvfs *st) = statvfs;

/* ---- reading and parsing ------------------------------------------------ */

/* Read at most size - 1 bytes of root/rel into buf, NUL-terminated.
 * *full: the buffer was filled (the file may go on). */
static int read_text(const char *root, const char *rel, char *buf, size_t size, size_t *len,
		     bool *full)
{
	char path[4096];
	size_t n = 0;
	int fd, rc = 0;

	if (snprintf(path, sizeof(path), *rel ? "%s/%s" : "%s", root, rel) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	while (n < size - 1) {
		ssize_t got = pread(fd, buf + n, size - 1 - n, (off_t)n);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out_close;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	buf[n] = '\0';
	*len = n;
	if (full)
		*full = n == size - 1;
out_close:
	close(fd);
	return rc;
}

static const char *skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* A decimal unsigned number after blanks; 0 or -EINVAL. */
static int parse_u64(const char **pp, uint64_t *v)
{
	const char *p = skip_blanks(*pp);
	char *end;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	errno = 0;
	*v = strtoull(p, &end, 10);
	if (errno || (*end && !isspace((unsigned char)*end)))
		return -EINVAL;
	*pp = end;
	return 0;
}

static int parse_double(const char **pp, double *v)
{
	const char *p = skip_blanks(*pp);
	char *end;

	if (!isdigit((unsigned char)*p) && *p != '-')
		return -EINVAL;
	errno = 0;
	*v = strtod(p, &end);
	if (errno || end == p || (*end && !isspace((unsigned char)*end)) || !isfinite(*v))
		return -EINVAL;
	*pp = end;
	return 0;
}

/* The next line of *pp (NUL-terminated in place); NULL at the end. */
static char *next_line(char **pp)
{
	char *s = *pp, *nl;

	if (!*s)
		return NULL;
	nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		*pp = nl + 1;
	} else {
		*pp = s + strlen(s);
	}
	return s;
}

static int parse_cpu_line(const char *p, struct sys_cpu *c)
{
	for (int i = 0; i < SYS_CPU_STATES; i++)
		if (parse_u64(&p, &c->t[i]))
			return -EINVAL;
	return 0;
}

int sys_read_stat(const char *proc_root, struct sys_cpu *total, struct sys_cpu *per,
		  unsigned *idx, size_t max, size_t *n)
{
	char *buf = xmalloc(READ_MAX), *p, *line;
	bool full, seen_total = false;
	size_t len;
	int rc;

	*n = 0;
	if (!buf)
		return -ENOMEM;
	rc = read_text(proc_root, "stat", buf, READ_MAX, &len, &full);
	if (rc)
		goto out_free;
	p = buf;
	while ((line = next_line(&p))) {
		/* A cut-off last line of a full buffer is not a CPU line. */
		if (full && !*p)
			break;
		if (strncmp(line, "cpu", 3))
			continue;
		if (line[3] == ' ') {
			if (parse_cpu_line(line + 3, total))
				goto out_inval;
			seen_total = true;
		} else if (isdigit((unsigned char)line[3])) {
			char *end;
			unsigned long cpu = strtoul(line + 3, &end, 10);

			if (!per || *n >= max)
				continue;
			if (*end != ' ' || parse_cpu_line(end, &per[*n]))
				goto out_inval;
			idx[*n] = (unsigned)cpu;
			(*n)++;
		}
	}
	if (!seen_total)
		goto out_inval;
	goto out_free;
out_inval:
	rc = -EINVAL;
out_free:
	xfree(buf);
	return rc;
}

int sys_cpu_percent(const struct sys_cpu *prev, const struct sys_cpu *cur,
		    double pct[SYS_CPU_STATES])
{
	uint64_t d[SYS_CPU_STATES], sum = 0;

	for (int i = 0; i < SYS_CPU_STATES; i++) {
		if (!sys_delta(prev->t[i], cur->t[i], &d[i]))
			return -ERANGE;
		sum += d[i];
	}
	if (!sum)
		return -EAGAIN;
	for (int i = 0; i < SYS_CPU_STATES; i++)
		pct[i] = 100.0 * (double)d[i] / (double)sum;
	return 0;
}

int sys_read_meminfo(const char *proc_root, struct sys_mem *m)
{
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
		{ "MemTotal", offsetof(struct sys_mem, total) },
		{ "MemFree", offsetof(struct sys_mem, free) },
		{ "MemAvailable", offsetof(struct sys_mem, available) },
		{ "Buffers", offsetof(struct sys_mem, buffers) },
		{ "Cached", offsetof(struct sys_mem, cached) },
		{ "SwapTotal", offsetof(struct sys_mem, swap_total) },
		{ "SwapFree", offsetof(struct sys_mem, swap_free) },
	};
	enum { AVAILABLE = 2, ALL = (1 << 7) - 1 };
	char buf[8192], *p = buf, *line;
	unsigned seen = 0;
	size_t len;
	int rc;

	memset(m, 0, sizeof(*m));
	rc = read_text(proc_root, "meminfo", buf, sizeof(buf), &len, NULL);
	if (rc)
		return rc;
	while ((line = next_line(&p))) {
		char *colon = strchr(line, ':');
		const char *v;
		uint64_t kb;

		if (!colon)
			continue;
		*colon = '\0';
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			if (strcmp(line, fields[i].name))
				continue;
			v = colon + 1;
			if (parse_u64(&v, &kb) || kb > UINT64_MAX / 1024)
				return -EINVAL;
			v = skip_blanks(v);
			if (*v && strcmp(v, "kB"))
				return -EINVAL;
			*(uint64_t *)((char *)m + fields[i].off) = kb * 1024;
			seen |= 1u << i;
		}
	}
	m->has_available = seen & (1u << AVAILABLE);
	if ((seen | (1u << AVAILABLE)) != ALL)
		return -EINVAL;
	return 0;
}

int sys_read_netdev(const char *proc_root, struct sys_netif *out, size_t max, size_t *n)
{
	char *buf = xmalloc(READ_MAX), *p, *line;
	size_t len;
	int rc;

	*n = 0;
	if (!buf)
		return -ENOMEM;
	rc = read_text(proc_root, "net/dev", buf, READ_MAX, &len, NULL);
	if (rc)
		goto out_free;
	p = buf;
	while ((line = next_line(&p))) {
		char *colon = strchr(line, ':'), *name;
		const char *v;
		uint64_t f[16];
		size_t nl;

		if (!colon)
			continue;       /* the two header lines */
		*colon = '\0';
		name = (char *)skip_blanks(line);
		nl = strlen(name);
		if (!nl || strchr(name, '|'))
			continue;
		v = colon + 1;
		for (int i = 0; i < 16; i++)
			if (parse_u64(&v, &f[i]))
				goto out_inval;
		if (nl >= sizeof(out->name) || *n >= max)
			continue;
		memcpy(out[*n].name, name, nl + 1);
		out[*n].rx_bytes = f[0];
		out[*n].rx_packets = f[1];
		out[*n].rx_errs = f[2];
		out[*n].rx_drop = f[3];
		out[*n].tx_bytes = f[8];
		out[*n].tx_packets = f[9];
		out[*n].tx_errs = f[10];
		out[*n].tx_drop = f[11];
		(*n)++;
	}
	if (!*n && !len)
		goto out_inval;
	goto out_free;
out_inval:
	rc = -EINVAL;
out_free:
	xfree(buf);
	return rc;
}

int sys_read_diskstats(const char *proc_root, struct sys_disk *out, size_t max, size_t *n)
{
	char *buf = xmalloc(READ_MAX), *p, *line;
	size_t len;
	int rc;

	*n = 0;
	if (!buf)
		return -ENOMEM;
	rc = read_text(proc_root, "diskstats", buf, READ_MAX, &len, NULL);
	if (rc)
		goto out_free;
	p = buf;
	while ((line = next_line(&p))) {
		const char *v = line, *name;
		uint64_t major, minor, f[11];
		size_t nl;

		if (!*skip_blanks(line))
			continue;
		if (parse_u64(&v, &major) || parse_u64(&v, &minor))
			goto out_inval;
		name = skip_blanks(v);
		nl = strcspn(name, " \t");
		if (!nl)
			goto out_inval;
		v = name + nl;
		for (int i = 0; i < 11; i++)
			if (parse_u64(&v, &f[i]))
				goto out_inval;
		if (!strncmp(name, "loop", 4) || !strncmp(name, "ram", 3))
			continue;
		if (nl >= sizeof(out->name) || *n >= max)
			continue;
		memcpy(out[*n].name, name, nl);
		out[*n].name[nl] = '\0';
		out[*n].reads = f[0];
		out[*n].read_sectors = f[2];
		out[*n].writes = f[4];
		out[*n].write_sectors = f[6];
		out[*n].io_ms = f[9];
		(*n)++;
	}
	if (!len)
		goto out_inval;
	goto out_free;
out_inval:
	rc = -EINVAL;
out_free:
	xfree(buf);
	return rc;
}

int sys_read_loadavg(const char *proc_root, struct sys_load *l)
{
	char buf[256];
	const char *p = buf;
	size_t len;
	int rc = read_text(proc_root, "loadavg", buf, sizeof(buf), &len, NULL);

	if (rc)
		return rc;
	if (parse_double(&p, &l->l1) || parse_double(&p, &l->l5) || parse_double(&p, &l->l15))
		return -EINVAL;
	if (l->l1 < 0 || l->l5 < 0 || l->l15 < 0)
		return -EINVAL;
	return 0;
}

int sys_read_uptime(const char *proc_root, double *seconds)
{
	char buf[256];
	const char *p = buf;
	size_t len;
	int rc = read_text(proc_root, "uptime", buf, sizeof(buf), &len, NULL);

	if (rc)
		return rc;
	if (parse_double(&p, seconds) || *seconds < 0)
		return -EINVAL;
	return 0;
}

int sys_read_self_rss(const char *proc_root, uint64_t *bytes)
{
	char buf[8192], *p = buf, *line;
	size_t len;
	int rc = read_text(proc_root, "self/status", buf, sizeof(buf), &len, NULL);

	if (rc)
		return rc;
	while ((line = next_line(&p))) {
		const char *v;
		uint64_t kb;

		if (strncmp(line, "VmRSS:", 6))
			continue;
		v = line + 6;
		if (parse_u64(&v, &kb) || strcmp(skip_blanks(v), "kB") || kb > UINT64_MAX / 1024)
			return -EINVAL;
		*bytes = kb * 1024;
		return 0;
	}
	return -EINVAL;
}

int sys_read_self_fds(const char *proc_root, uint64_t *n)
{
	char path[4096];
	struct dirent *de;
	DIR *d;

	if (snprintf(path, sizeof(path), "%s/self/fd", proc_root) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	d = opendir(path);
	if (!d)
		return -errno;
	*n = 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		/* The descriptor reading the directory is not the agent's. */
		if (de->d_type == DT_LNK && atoi(de->d_name) == dirfd(d))
			continue;
		(*n)++;
	}
	closedir(d);
	return 0;
}

static int zone_cmp(const void *a, const void *b)
{
	return strverscmp(((const struct sys_thermal *)a)->zone, ((const struct sys_thermal *)b)->zone);
}

int sys_read_thermal(const char *sys_root, struct sys_thermal *out, size_t max, size_t *n)
{
	char path[4096], rel[128], buf[64];
	struct dirent *de;
	DIR *d;

	*n = 0;
	if (snprintf(path, sizeof(path), "%s/class/thermal", sys_root) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)) && *n < max) {
		struct sys_thermal *z = &out[*n];
		const char *p = buf;
		size_t len;
		uint64_t milli;
		bool neg;

		if (strncmp(de->d_name, "thermal_zone", 12) || strlen(de->d_name) >= sizeof(z->zone))
			continue;
		memset(z, 0, sizeof(*z));
		strcpy(z->zone, de->d_name);
		snprintf(rel, sizeof(rel), "%s/type", z->zone);
		if (!read_text(path, rel, buf, sizeof(buf), &len, NULL)) {
			buf[strcspn(buf, "\n")] = '\0';
			buf[sizeof(z->type) - 1] = '\0';
			memcpy(z->type, buf, strlen(buf) + 1);
		}
		snprintf(rel, sizeof(rel), "%s/temp", z->zone);
		z->rc = read_text(path, rel, buf, sizeof(buf), &len, NULL);
		if (!z->rc) {
			neg = *skip_blanks(buf) == '-';
			p = skip_blanks(buf) + neg;
			if (parse_u64(&p, &milli) || (*skip_blanks(p) && *skip_blanks(p) != '\n'))
				z->rc = -EINVAL;
			else
				z->celsius = (neg ? -(double)milli : (double)milli) / 1000.0;
		}
		(*n)++;
	}
	closedir(d);
	qsort(out, *n, sizeof(*out), zone_cmp);
	return 0;
}

bool sys_fs_pseudo(const char *type)
{
	static const char *const pseudo[] = {
		"proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs",
		"pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc",
		"rpc_pipefs", "nsfs", "efivarfs", "selinuxfs", "ramfs", "squashfs",
		NULL,
	};

	for (size_t i = 0; pseudo[i]; i++)
		if (!strcmp(type, pseudo[i]))
			return true;
	return false;
}

bool sys_fs_network(const char *type)
{
	static const char *const net[] = {
		"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "9p",
		"lustre", "gfs2", "ocfs2", "davfs", "fuse", "sshfs", NULL,
	};

	if (!strncmp(type, "fuse.", 5))
		return true;    /* sshfs, s3fs, rclone...: a user-space server that may hang */
	for (size_t i = 0; net[i]; i++)
		if (!strcmp(type, net[i]))
			return true;
	return false;
}

bool sys_match_list(const struct cfg_list *patterns, const char *name)
{
	for (size_t i = 0; patterns && i < patterns->n; i++)
		if (!fnmatch(patterns->v[i], name, 0))
			return true;
	return false;
}

/* Undo the octal escapes (\040 for a blank) of a mounts file field. */
static void unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
}

int sys_read_mounts(const char *path, const struct sys_mount_filter *f, struct sys_mount *out,
		    size_t max, size_t *n)
{
	char *buf = xmalloc(READ_MAX), *p, *line;
	size_t len;
	int rc;

	*n = 0;
	if (!buf)
		return -ENOMEM;
	rc = read_text(path, "", buf, READ_MAX, &len, NULL);
	if (rc)
		goto out_free;
	p = buf;
	while ((line = next_line(&p))) {
		char *dev, *dir, *type, *save;
		size_t i;

		dev = strtok_r(line, " \t", &save);
		dir = dev ? strtok_r(NULL, " \t", &save) : NULL;
		type = dir ? strtok_r(NULL, " \t", &save) : NULL;
		if (!dev)
			continue;
		if (!type || dir[0] != '/') {
			rc = -EINVAL;
			goto out_free;
		}
		unescape(dir);
		if (sys_fs_pseudo(type))
			continue;
		if (!f->tmpfs && (!strcmp(type, "tmpfs") || !strcmp(type, "devtmpfs")))
			continue;
		if (!f->network && sys_fs_network(type))
			continue;
		if (f->include && f->include->n && !sys_match_list(f->include, dir))
			continue;
		if (sys_match_list(f->exclude, dir))
			continue;
		if (strlen(dir) >= sizeof(out->dir) || strlen(type) >= sizeof(out->type))
			continue;
		/* Mounted over: the last one is what the path shows. */
		for (i = 0; i < *n; i++)
			if (!strcmp(out[i].dir, dir))
				break;
		if (i == *n) {
			if (*n >= max)
				continue;
			(*n)++;
		}
		strcpy(out[i].dir, dir);
		strcpy(out[i].type, type);
	}
out_free:
	xfree(buf);
	return rc;
}

/* ---- the driver --------------------------------------------------------- */

struct system_conf {
	int64_t interval_ms;
	bool cpu, per_cpu, memory, disk, diskio, net, load, temperature, self;
	bool loopback, tmpfs, network_fs;
	char *proc_root, *sys_root, *mounts;
	struct cfg_list interfaces, exclude_interfaces, filesystems, exclude_filesystems;
};

#define SK(f) offsetof(struct system_conf, f)
static const struct cfg_key system_keys[] = {
	{ .name = "interval", .type = CFG_DURATION, .def = "10s", .offset = SK(interval_ms),
	  .min = 100, .max = 86400000,
	  .help = "How often a sample is taken, on deadlines that are multiples of the interval (they "
		  "never drift; deadlines missed while the agent was stalled are counted, not caught up)." },
	{ .name = "cpu", .type = CFG_BOOL, .def = "true", .offset = SK(cpu),
	  .help = "CPU time per state in percent since the previous sample (from proc_root/stat)." },
	{ .name = "per_cpu", .type = CFG_BOOL, .def = "false", .offset = SK(per_cpu),
	  .help = "Also the CPU states of each CPU (object \"cpus\"); needs cpu = true." },
	{ .name = "memory", .type = CFG_BOOL, .def = "true", .offset = SK(memory),
	  .help = "Memory and swap in bytes (from proc_root/meminfo)." },
	{ .name = "disk", .type = CFG_BOOL, .def = "true", .offset = SK(disk),
	  .help = "Space and inodes of each mounted filesystem (statvfs), pseudo filesystems left out." },
	{ .name = "diskio", .type = CFG_BOOL, .def = "true", .offset = SK(diskio),
	  .help = "I/O of each block device since the previous sample (from proc_root/diskstats)." },
	{ .name = "net", .type = CFG_BOOL, .def = "true", .offset = SK(net),
	  .help = "Traffic of each network interface since the previous sample (from proc_root/net/dev)." },
	{ .name = "load", .type = CFG_BOOL, .def = "true", .offset = SK(load),
	  .help = "Load averages (proc_root/loadavg) and the uptime (proc_root/uptime)." },
	{ .name = "temperature", .type = CFG_BOOL, .def = "true", .offset = SK(temperature),
	  .help = "Temperatures of the thermal zones under sys_root/class/thermal." },
	{ .name = "self", .type = CFG_BOOL, .def = "true", .offset = SK(self),
	  .help = "The agent's own resident memory and open file descriptors (proc_root/self)." },
	{ .name = "interfaces", .type = CFG_LIST, .offset = SK(interfaces), .example = "eth*,wwan0",
	  .help = "Network interfaces to report: glob(7) patterns; unset: all." },
	{ .name = "exclude_interfaces", .type = CFG_LIST, .offset = SK(exclude_interfaces),
	  .example = "veth*,docker*",
	  .help = "Network interfaces left out: glob(7) patterns." },
	{ .name = "loopback", .type = CFG_BOOL, .def = "false", .offset = SK(loopback),
	  .help = "Report the loopback interface lo too." },
	{ .name = "filesystems", .type = CFG_LIST, .offset = SK(filesystems), .example = "/,/data*",
	  .help = "Mount points to report: glob(7) patterns; unset: all." },
	{ .name = "exclude_filesystems", .type = CFG_LIST, .offset = SK(exclude_filesystems),
	  .example = "/boot*",
	  .help = "Mount points left out: glob(7) patterns." },
	{ .name = "tmpfs", .type = CFG_BOOL, .def = "false", .offset = SK(tmpfs),
	  .help = "Report tmpfs and devtmpfs filesystems too (they live in RAM)." },
	{ .name = "network_fs", .type = CFG_BOOL, .def = "false", .offset = SK(network_fs),
	  .help = "Report network and FUSE filesystems too (nfs, cifs, fuse.sshfs, ...). Off by default: "
		  "statvfs of a mount whose server is gone can block the agent for minutes." },
	{ .name = "proc_root", .type = CFG_STR, .def = "/proc", .offset = SK(proc_root),
	  .help = "Where procfs is mounted (a host's /proc seen from a container, e.g. /host/proc)." },
	{ .name = "sys_root", .type = CFG_STR, .def = "/sys", .offset = SK(sys_root),
	  .help = "Where sysfs is mounted." },
	{ .name = "mounts", .type = CFG_STR, .offset = SK(mounts), .example = "/host/proc/1/mounts",
	  .help = "The mounts file listing the filesystems to report; unset: proc_root/self/mounts." },
	{ .name = NULL },
};

struct system {
	struct input *in;
	const struct system_conf *conf;
	struct loop_timer timer;
	int64_t missed_seen;
	unsigned errors;                /* in this sample */
	bool had_errors;                /* in the previous one */
	char mounts_path[4096];
	/* The previous sample of each counter, and when it was taken (mono ms; 0: none). */
	struct sys_cpu cpu_prev;
	int64_t cpu_ms;
	struct sys_cpu *percpu_prev, *percpu_cur;
	unsigned *percpu_idx_prev, *percpu_idx;
	size_t n_percpu_prev;
	struct sys_netif *net_prev, *net_cur;
	size_t n_net_prev;
	int64_t net_ms;
	struct sys_disk *disk_prev, *disk_cur;
	size_t n_disk_prev;
	int64_t disk_ms;
	struct sys_mount *mounts;
	struct sys_thermal *zones;
};

static const char *quality_of(int rc)
{
	return rc == -EINVAL ? "bad value" : "read error";
}

/* A part that could not be read: counted, shown in status, and null in the record. */
static void part_failed(struct system *s, struct rec *r, const char *field, const char *root,
			const char *file, int rc)
{
	const char *sep = *file ? "/" : "";

	s->errors++;
	if (rc == -EINVAL)
		input_count_error(s->in, INPUT_ERR_VALUE, "%s%s%s: garbage or cut short", root, sep, file);
	else
		input_count_error(s->in, INPUT_ERR_IO, "%s%s%s: %s", root, sep, file, strerror(-rc));
	rec_null(r, field, NULL, quality_of(rc));
}

static void put_cpu(struct rec *r, const char *name, const struct sys_cpu *prev, const struct sys_cpu *cur)
{
	double pct[SYS_CPU_STATES];

	if (!prev) {
		rec_null(r, name, NULL, "first sample");
		return;
	}
	switch (sys_cpu_percent(prev, cur, pct)) {
	case 0:
		break;
	case -EAGAIN:
		rec_null(r, name, NULL, "no time passed");
		return;
	default:
		rec_null(r, name, NULL, "counter reset");
		return;
	}
	rec_obj_begin(r, name);
	for (int i = 0; i < SYS_CPU_STATES; i++)
		rec_num(r, sys_cpu_state_names[i], pct[i], "%");
	rec_obj_end(r);
}

static void sample_cpu(struct system *s, struct rec *r, int64_t now)
{
	struct sys_cpu cur;
	size_t n = 0, max = s->conf->per_cpu ? MAX_CPUS : 0;
	int rc = sys_read_stat(s->conf->proc_root, &cur, s->percpu_cur, s->percpu_idx, max, &n);

	if (rc) {
		part_failed(s, r, "cpu", s->conf->proc_root, "stat", rc);
		return;
	}
	put_cpu(r, "cpu", s->cpu_ms ? &s->cpu_prev : NULL, &cur);
	s->cpu_prev = cur;
	s->cpu_ms = now;
	if (!s->conf->per_cpu)
		return;
	rec_obj_begin(r, "cpus");
	for (size_t i = 0; i < n; i++) {
		const struct sys_cpu *prev = NULL;
		char name[24];

		for (size_t j = 0; j < s->n_percpu_prev; j++)
			if (s->percpu_idx_prev[j] == s->percpu_idx[i])
				prev = &s->percpu_prev[j];
		snprintf(name, sizeof(name), "cpu%u", s->percpu_idx[i]);
		put_cpu(r, name, prev, &s->percpu_cur[i]);
	}
	rec_obj_end(r);
	memcpy(s->percpu_prev, s->percpu_cur, n * sizeof(*s->percpu_cur));
	memcpy(s->percpu_idx_prev, s->percpu_idx, n * sizeof(*s->percpu_idx));
	s->n_percpu_prev = n;
}

static void sample_memory(struct system *s, struct rec *r)
{
	struct sys_mem m;
	int rc = sys_read_meminfo(s->conf->proc_root, &m);

	if (rc) {
		part_failed(s, r, "memory", s->conf->proc_root, "meminfo", rc);
		return;
	}
	rec_obj_begin(r, "memory");
	rec_uint(r, "total", m.total, "B");
	if (m.has_available)
		rec_uint(r, "available", m.available, "B");
	else
		rec_null(r, "available", "B", "not available");
	rec_uint(r, "free", m.free, "B");
	rec_uint(r, "buffers", m.buffers, "B");
	rec_uint(r, "cached", m.cached, "B");
	rec_uint(r, "swap_total", m.swap_total, "B");
	rec_uint(r, "swap_free", m.swap_free, "B");
	rec_obj_end(r);
}

/* A counter's change since the previous sample, never negative; and,
 * for byte counters (rate_name), its rate per second. */
static void put_delta(struct rec *r, const char *name, const char *unit, bool have_prev, uint64_t prev,
		      uint64_t cur, uint64_t scale, const char *rate_name, double secs)
{
	uint64_t d;

	if (!have_prev) {
		rec_null(r, name, unit, "first sample");
		if (rate_name)
			rec_null(r, rate_name, "B/s", "first sample");
		return;
	}
	if (!sys_delta(prev, cur, &d)) {
		rec_null(r, name, unit, "counter reset");
		if (rate_name)
			rec_null(r, rate_name, "B/s", "counter reset");
		return;
	}
	rec_uint(r, name, d * scale, unit);
	if (rate_name)
		rec_num(r, rate_name, secs > 0 ? (double)(d * scale) / secs : 0, "B/s");
}

static void sample_net(struct system *s, struct rec *r, int64_t now)
{
	const struct system_conf *c = s->conf;
	double secs = (double)(now - s->net_ms) / 1000.0;
	struct sys_netif *tmp;
	size_t n;
	int rc = sys_read_netdev(c->proc_root, s->net_cur, MAX_IFS, &n);

	if (rc) {
		part_failed(s, r, "net", c->proc_root, "net/dev", rc);
		return;
	}
	rec_obj_begin(r, "net");
	for (size_t i = 0; i < n; i++) {
		const struct sys_netif *cur = &s->net_cur[i], *prev = NULL;

		if (!strcmp(cur->name, "lo") ? !c->loopback :
		    (c->interfaces.n && !sys_match_list(&c->interfaces, cur->name)))
			continue;
		if (sys_match_list(&c->exclude_interfaces, cur->name))
			continue;
		for (size_t j = 0; s->net_ms && j < s->n_net_prev; j++)
			if (!strcmp(s->net_prev[j].name, cur->name))
				prev = &s->net_prev[j];
		rec_obj_begin(r, cur->name);
#define D(f, unit, rate) put_delta(r, #f, unit, prev, prev ? prev->f : 0, cur->f, 1, rate, secs)
		D(rx_bytes, "B", "rx_bytes_per_s");
		D(rx_packets, NULL, NULL);
		D(rx_errs, NULL, NULL);
		D(rx_drop, NULL, NULL);
		D(tx_bytes, "B", "tx_bytes_per_s");
		D(tx_packets, NULL, NULL);
		D(tx_errs, NULL, NULL);
		D(tx_drop, NULL, NULL);
#undef D
		rec_obj_end(r);
	}
	rec_obj_end(r);
	tmp = s->net_prev;
	s->net_prev = s->net_cur;
	s->net_cur = tmp;
	s->n_net_prev = n;
	s->net_ms = now;
}

static void sample_diskio(struct system *s, struct rec *r, int64_t now)
{
	double secs = (double)(now - s->disk_ms) / 1000.0;
	struct sys_disk *tmp;
	size_t n;
	int rc = sys_read_diskstats(s->conf->proc_root, s->disk_cur, MAX_DISKS, &n);

	if (rc) {
		part_failed(s, r, "diskio", s->conf->proc_root, "diskstats", rc);
		return;
	}
	rec_obj_begin(r, "diskio");
	for (size_t i = 0; i < n; i++) {
		const struct sys_disk *cur = &s->disk_cur[i], *prev = NULL;
		uint64_t d;

		for (size_t j = 0; s->disk_ms && j < s->n_disk_prev; j++)
			if (!strcmp(s->disk_prev[j].name, cur->name))
				prev = &s->disk_prev[j];
		rec_obj_begin(r, cur->name);
		put_delta(r, "reads", NULL, prev, prev ? prev->reads : 0, cur->reads, 1, NULL, secs);
		put_delta(r, "writes", NULL, prev, prev ? prev->writes : 0, cur->writes, 1, NULL, secs);
		put_delta(r, "read_bytes", "B", prev, prev ? prev->read_sectors : 0, cur->read_sectors, 512,
			  "read_bytes_per_s", secs);
		put_delta(r, "write_bytes", "B", prev, prev ? prev->write_sectors : 0, cur->write_sectors,
			  512, "write_bytes_per_s", secs);
		put_delta(r, "io_ms", "ms", prev, prev ? prev->io_ms : 0, cur->io_ms, 1, NULL, secs);
		if (!prev)
			rec_null(r, "busy", "%", "first sample");
		else if (!sys_delta(prev->io_ms, cur->io_ms, &d))
			rec_null(r, "busy", "%", "counter reset");
		else
			rec_num(r, "busy", secs > 0 ? fmin(100.0, (double)d / (secs * 10.0)) : 0, "%");
		rec_obj_end(r);
	}
	rec_obj_end(r);
	tmp = s->disk_prev;
	s->disk_prev = s->disk_cur;
	s->disk_cur = tmp;
	s->n_disk_prev = n;
	s->disk_ms = now;
}

static void sample_disk(struct system *s, struct rec *r)
{
	const struct system_conf *c = s->conf;
	struct sys_mount_filter f = { .tmpfs = c->tmpfs, .network = c->network_fs,
				      .include = &c->filesystems, .exclude = &c->exclude_filesystems };
	size_t n;
	int rc = sys_read_mounts(s->mounts_path, &f, s->mounts, MAX_MOUNTS, &n);

	if (rc) {
		part_failed(s, r, "fs", s->mounts_path, "", rc);
		return;
	}
	rec_obj_begin(r, "fs");
	for (size_t i = 0; i < n; i++) {
		const struct sys_mount *m = &s->mounts[i];
		struct statvfs st;
		uint64_t bs;

		if (sys_statvfs(m->dir, &st)) {
			rc = -errno;
			s->errors++;
			input_count_error(s->in, INPUT_ERR_IO, "statvfs %s: %s", m->dir, strerror(-rc));
			rec_null(r, m->dir, NULL, "read error");
			continue;
		}
		bs = st.f_frsize ? st.f_frsize : st.f_bsize;
		rec_obj_begin(r, m->dir);
		rec_str(r, "type", m->type);
		rec_uint(r, "total", (uint64_t)st.f_blocks * bs, "B");
		rec_uint(r, "free", (uint64_t)st.f_bfree * bs, "B");
		rec_uint(r, "available", (uint64_t)st.f_bavail * bs, "B");
		rec_uint(r, "inodes", st.f_files, NULL);
		rec_uint(r, "inodes_free", st.f_ffree, NULL);
		rec_obj_end(r);
	}
	rec_obj_end(r);
}

static void sample_load(struct system *s, struct rec *r)
{
	struct sys_load l;
	double up;
	int rc = sys_read_loadavg(s->conf->proc_root, &l);

	if (rc) {
		part_failed(s, r, "load", s->conf->proc_root, "loadavg", rc);
	} else {
		rec_obj_begin(r, "load");
		rec_num(r, "1m", l.l1, NULL);
		rec_num(r, "5m", l.l5, NULL);
		rec_num(r, "15m", l.l15, NULL);
		rec_obj_end(r);
	}
	rc = sys_read_uptime(s->conf->proc_root, &up);
	if (rc) {
		part_failed(s, r, "uptime", s->conf->proc_root, "uptime", rc);
		return;
	}
	rec_num(r, "uptime", up, "s");
}

static void sample_temperature(struct system *s, struct rec *r)
{
	size_t n;
	int rc = sys_read_thermal(s->conf->sys_root, s->zones, MAX_ZONES, &n);

	if (rc == -ENOENT) {
		rec_null(r, "temperature", NULL, "not available");  /* no thermal zones here */
		return;
	}
	if (rc) {
		part_failed(s, r, "temperature", s->conf->sys_root, "class/thermal", rc);
		return;
	}
	rec_obj_begin(r, "temperature");
	for (size_t i = 0; i < n; i++) {
		const struct sys_thermal *z = &s->zones[i];

		rec_obj_begin(r, z->zone);
		rec_str(r, "type", z->type);
		if (z->rc) {
			s->errors++;
			if (z->rc == -EINVAL)
				input_count_error(s->in, INPUT_ERR_VALUE, "%s/class/thermal/%s/temp: not a "
						  "temperature", s->conf->sys_root, z->zone);
			else
				input_count_error(s->in, INPUT_ERR_IO, "%s/class/thermal/%s/temp: %s",
						  s->conf->sys_root, z->zone, strerror(-z->rc));
			rec_null(r, "temp", "C", quality_of(z->rc));
		} else {
			rec_num(r, "temp", z->celsius, "C");
		}
		rec_obj_end(r);
	}
	rec_obj_end(r);
}

static void sample_self(struct system *s, struct rec *r)
{
	uint64_t rss, fds;
	int rc;

	rec_obj_begin(r, "self");
	rc = sys_read_self_rss(s->conf->proc_root, &rss);
	if (rc) {
		part_failed(s, r, "rss", s->conf->proc_root, "self/status", rc);
	} else {
		rec_uint(r, "rss", rss, "B");
	}
	rc = sys_read_self_fds(s->conf->proc_root, &fds);
	if (rc)
		part_failed(s, r, "fds", s->conf->proc_root, "self/fd", rc);
	else
		rec_uint(r, "fds", fds, NULL);
	rec_obj_end(r);
}

/* Take one sample and emit it. */
static void sample(struct system *s)
{
	const struct system_conf *c = s->conf;
	struct sample_time t;
	struct rec *r;
	char key[160];
	int rc;

	if (input_blocked(s->in))
		return;         /* the queue refuses records: the next sample spans the gap */
	input_sample_now(s->in, &t);
	input_count_request(s->in);
	s->errors = 0;
	r = input_rec_begin(s->in);
	if (c->cpu)
		sample_cpu(s, r, t.mono_ms);
	if (c->memory)
		sample_memory(s, r);
	if (c->disk)
		sample_disk(s, r);
	if (c->diskio)
		sample_diskio(s, r, t.mono_ms);
	if (c->net)
		sample_net(s, r, t.mono_ms);
	if (c->load)
		sample_load(s, r);
	if (c->temperature)
		sample_temperature(s, r);
	if (c->self)
		sample_self(s, r);
	/* A sample read whole again clears the last problem from status. */
	if (!s->errors && s->had_errors)
		input_clear_error(s->in);
	s->had_errors = s->errors;
	snprintf(key, sizeof(key), "system:%s:%" PRId64, input_name(s->in), t.wall_ms);
	rc = input_emit_rec(s->in, r, key, &t);
	if (rc && rc != -EAGAIN)
		input_error(s->in, "cannot hand the sample over: %s", strerror(-rc));
}

static int64_t on_timer(struct loop_timer *t)
{
	struct system *s = container_of(t, struct system, timer);

	if (t->missed > s->missed_seen) {
		input_count_missed(s->in, t->missed - s->missed_seen);
		s->missed_seen = t->missed;
	}
	sample(s);
	return 0;
}

static int system_validate(const void *conf, char *err, size_t errlen)
{
	const struct system_conf *c = conf;

	if (c->per_cpu && !c->cpu) {
		snprintf(err, errlen, "per_cpu = true needs cpu = true");
		return -EINVAL;
	}
	return 0;
}

static void system_stop(struct input *in, void *state)
{
	struct system *s = state;

	if (!s)
		return;
	loop_timer_cancel(input_loop(in), &s->timer);
	xfree(s->percpu_prev);
	xfree(s->percpu_cur);
	xfree(s->percpu_idx_prev);
	xfree(s->percpu_idx);
	xfree(s->net_prev);
	xfree(s->net_cur);
	xfree(s->disk_prev);
	xfree(s->disk_cur);
	xfree(s->mounts);
	xfree(s->zones);
	xfree(s);
}

static int system_start(struct input *in, void **state)
{
	const struct system_conf *c = input_driver_conf(in);
	struct system *s = xcalloc(1, sizeof(*s));

	*state = s;
	if (!s)
		return -ENOMEM;
	s->in = in;
	s->conf = c;
	s->timer.cb = on_timer;
	if (c->mounts)
		snprintf(s->mounts_path, sizeof(s->mounts_path), "%s", c->mounts);
	else
		snprintf(s->mounts_path, sizeof(s->mounts_path), "%s/self/mounts", c->proc_root);
	if (c->per_cpu) {
		s->percpu_prev = xcalloc(MAX_CPUS, sizeof(*s->percpu_prev));
		s->percpu_cur = xcalloc(MAX_CPUS, sizeof(*s->percpu_cur));
		s->percpu_idx_prev = xcalloc(MAX_CPUS, sizeof(*s->percpu_idx_prev));
		s->percpu_idx = xcalloc(MAX_CPUS, sizeof(*s->percpu_idx));
	}
	s->net_prev = xcalloc(MAX_IFS, sizeof(*s->net_prev));
	s->net_cur = xcalloc(MAX_IFS, sizeof(*s->net_cur));
	s->disk_prev = xcalloc(MAX_DISKS, sizeof(*s->disk_prev));
	s->disk_cur = xcalloc(MAX_DISKS, sizeof(*s->disk_cur));
	s->mounts = xcalloc(MAX_MOUNTS, sizeof(*s->mounts));
	s->zones = xcalloc(MAX_ZONES, sizeof(*s->zones));
	if ((c->per_cpu && (!s->percpu_prev || !s->percpu_cur || !s->percpu_idx_prev ||
			    !s->percpu_idx)) ||
	    !s->net_prev || !s->net_cur || !s->disk_prev || !s->disk_cur || !s->mounts || !s->zones) {
		input_error(in, "out of memory");
		return -ENOMEM;
	}
	input_set_connected(in, true, "%s", "");
	if (c->interval_ms % 1000)
		input_set_state(in, "sampling every %" PRId64 " ms", c->interval_ms);
	else
		input_set_state(in, "sampling every %" PRId64 " s", c->interval_ms / 1000);
	loop_timer_every(input_loop(in), &s->timer, loop_next_multiple(loop_now_ms(), c->interval_ms),
			 c->interval_ms);
	return 0;
}

static void system_resume(struct input *in, void *state)
{
	/* Nothing waits: the next deadline takes the next sample. */
}

const struct driver system_driver = {
	.version = DRIVER_VERSION,
	.name = "system",
	.help = "The gateway's own health (CPU, memory, disks, network, load, temperatures, the agent "
		"itself), one record per interval.",
	.flags = DRIVER_STRUCTURED | DRIVER_REPLAY,
	.conf_keys = system_keys,
	.conf_size = sizeof(struct system_conf),
	.validate = system_validate,
	.start = system_start,
	.resume = system_resume,
	.stop = system_stop,
};
