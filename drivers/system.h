/* system.h - the system driver's readers of /proc and /sys, private to
 * drivers/system.c and its unit tests.
 *
 * Every reader takes the root it reads under (proc_root or sys_root), so
 * the tests read fake trees. Each returns 0, or -ENOENT/-EACCES/-EIO when
 * the file cannot be read (an I/O error for status), or -EINVAL when it
 * holds garbage or is cut short (a value error).
 */
#ifndef DRIVERS_SYSTEM_H
#define DRIVERS_SYSTEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>

struct cfg_list;

/* The CPU states of /proc/stat, in its order. */
enum { SYS_CPU_STATES = 8 };
extern const char *const sys_cpu_state_names[SYS_CPU_STATES];

struct sys_cpu {
	uint64_t t[SYS_CPU_STATES];     /* clock ticks per state, cumulative */
};

/* The "cpu" line into *total and up to max "cpuN" lines into per[] (the
 * N of each in idx[], NULL per: none); *n is how many per-CPU lines. */
int sys_read_stat(const char *proc_root, struct sys_cpu *total, struct sys_cpu *per,
		  unsigned *idx, size_t max, size_t *n);
/* Percent per state between two samples. -ERANGE when a counter went
 * backwards, -EAGAIN when no tick passed (nothing is said then). */
int sys_cpu_percent(const struct sys_cpu *prev, const struct sys_cpu *cur,
		    double pct[SYS_CPU_STATES]);

struct sys_mem {
	uint64_t total, available, free, buffers, cached, swap_total, swap_free; /* bytes */
	bool has_available;             /* MemAvailable: kernels since 3.14 */
};
int sys_read_meminfo(const char *proc_root, struct sys_mem *m);

struct sys_netif {
	char name[32];
	uint64_t rx_bytes, rx_packets, rx_errs, rx_drop;
	uint64_t tx_bytes, tx_packets, tx_errs, tx_drop;
};
/* Up to max interfaces of /proc/net/dev into out; *n how many. */
int sys_read_netdev(const char *proc_root, struct sys_netif *out, size_t max, size_t *n);

struct sys_disk {
	char name[32];
	uint64_t reads, writes;         /* completed */
	uint64_t read_sectors, write_sectors; /* of 512 bytes, whatever the device's */
	uint64_t io_ms;                 /* time spent doing I/O */
};
/* Up to max block devices of /proc/diskstats (loop and ram devices left
 * out) into out; *n how many. */
int sys_read_diskstats(const char *proc_root, struct sys_disk *out, size_t max, size_t *n);

struct sys_load {
	double l1, l5, l15;
};
int sys_read_loadavg(const char *proc_root, struct sys_load *l);
/* Seconds since boot (the first number of /proc/uptime). */
int sys_read_uptime(const char *proc_root, double *seconds);

/* The agent's own resident memory in bytes (VmRSS of self/status). */
int sys_read_self_rss(const char *proc_root, uint64_t *bytes);
/* Its open file descriptors (entries of self/fd). */
int sys_read_self_fds(const char *proc_root, uint64_t *n);

struct sys_thermal {
	char zone[32];                  /* thermal_zone0 */
	char type[32];                  /* what it measures ("x86_pkg_temp"), "" if unknown */
	int rc;                         /* 0, or why temp is not known */
	double celsius;
};
/* The zones of sys_root/class/thermal, sorted by name, up to max. 0 (no
 * zones at all is 0 with *n = 0), or -errno when the directory cannot be read. */
int sys_read_thermal(const char *sys_root, struct sys_thermal *out, size_t max, size_t *n);

/* One filesystem to report: a line of the mounts file that passed the filters. */
struct sys_mount {
	char dir[256];                  /* mount point, octal escapes undone */
	char type[32];
};
struct sys_mount_filter {
	bool tmpfs;                     /* report tmpfs and devtmpfs too */
	bool network;                   /* report network filesystems (statvfs may hang) */
	const struct cfg_list *include; /* fnmatch(3) patterns of mount points; NULL or none: all */
	const struct cfg_list *exclude; /* the same, left out; NULL or none: none */
};
int sys_read_mounts(const char *path, const struct sys_mount_filter *f, struct sys_mount *out,
		    size_t max, size_t *n);
/* Pseudo filesystems never reported, and network ones only when asked. */
bool sys_fs_pseudo(const char *type);
bool sys_fs_network(const char *type);
/* Does name match one of the fnmatch(3) patterns (none: false)? */
bool sys_match_list(const struct cfg_list *patterns, const char *name);

/* statvfs(3) of the reports goes through here, so tests can answer for it. */
extern int (*sys_statvfs)(const char *path, struct statvfs *st);

/* Counter delta that never goes negative: false when cur < prev (a reboot,
 * a wrap, a device created again). */
static inline bool sys_delta(uint64_t prev, uint64_t cur, uint64_t *d)
{
	if (cur < prev)
		return false;
	*d = cur - prev;
	return true;
}

#endif
