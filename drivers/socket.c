/* socket.c - the udp and unix input drivers: programs on the gateway push
 * lines (JSON, InfluxDB line protocol, CSV or raw text, per the input's
 * `parser`) at a socket the agent listens on.
 *
 * udp listens on an IP address and port (loopback by default); unix on a
 * socket file, as datagrams or as a stream. A datagram may hold several
 * lines, each a record; a stream is framed into lines per connection
 * (lines.h), with a limit on connections. Empty lines are skipped. With
 * parser = csv the first line of each datagram, or of each connection, is
 * the header of the lines after it. Nothing here blocks: the sockets
 * are non-blocking and read from the loop, at most `read_budget` reads per
 * wakeup so that a flood cannot starve the rest of the agent.
 *
 * What the agent cannot take is never lost silently:
 * - datagrams the kernel dropped because the receive buffer was full are
 *   counted from SO_RXQ_OVFL (the running drop count arrives with each
 *   datagram; SO_MEMINFO gives it once the socket is drained) and reported
 *   to the lake as a gap marker on the agent's own stream;
 * - a datagram larger than max_datagram (cut by the kernel: MSG_TRUNC) and a
 *   line longer than max_record_bytes are dead-lettered with their head;
 * - lines the parser refuses are dead-lettered by the core with the reason.
 *
 * A datagram cannot be read again and is acknowledged to nobody, so the
 * core keeps copies of what was emitted since the last commit and appends
 * them again after a failed commit (DRIVER_REPLAY). A stream sender gets
 * backpressure: while the queue refuses records the connections are not
 * read, and the sender's writes wait in the kernel.
 *
 * Keys: a datagram has no natural key, so each record's key is the input's
 * name and a counter that is saved as the input's position. The counter
 * is saved in blocks (SEQ_BLOCK keys are reserved at a time, in the
 * transaction of the records that use the first of them), and the agent
 * continues after the reserved block at start, so keys never repeat across
 * restarts and the save costs one upsert per SEQ_BLOCK records.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "driver.h"

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
/* linux/sock_diag.h: the slot of the drop count in SO_MEMINFO's answer. */
#define MEMINFO_DROPS 8
#define MEMINFO_VARS 9

/* Keys reserved by one save of the counter (a build with -DSEQ_BLOCK=1
 * saves it with every record: docs/performance.md compares the two). */
#ifndef SEQ_BLOCK
#define SEQ_BLOCK 4096
#endif
/* Bytes read from a stream connection at a time. */
#define STREAM_CHUNK 65536
/* After a queue error other than "full": try again this much later. */
#define RETRY_MS 1000

enum sock_type { SOCK_T_STREAM, SOCK_T_DGRAM };
static const char *const type_names[] = { "stream", "dgram", NULL };

struct sock_conf {
	char *listen;             /* udp */
	char *path;               /* unix */
	int type;                 /* unix: enum sock_type */
	char *mode;               /* unix: octal permissions */
	char *group;              /* unix: group name or gid */
	int64_t max_connections;  /* unix stream */
	int64_t receive_buffer;
	int64_t max_datagram;
	int64_t read_budget;
};

#define SK(f) offsetof(struct sock_conf, f)

#define COMMON_KEYS                                                                              \
	{ .name = "receive_buffer", .type = CFG_SIZE, .def = "1MiB", .offset = SK(receive_buffer), \
	  .min = 0, .max = 1 << 30,                                                               \
	  .help = "Size of the socket's receive buffer (SO_RCVBUF): how many bytes of datagrams "  \
		  "the kernel holds while the agent is busy. A UDP burst beyond it is dropped by "   \
		  "the kernel, counted and reported as a gap; a unix datagram sender waits instead. " \
		  "The kernel caps it at net.core.rmem_max unless the agent may raise that "         \
		  "(CAP_NET_ADMIN); the log says when it got less. 0 keeps the system's default." }, \
	{ .name = "max_datagram", .type = CFG_SIZE, .def = "64KiB", .offset = SK(max_datagram),   \
	  .min = 64, .max = 16 << 20,                                                              \
	  .help = "Largest datagram read whole. A larger one is cut by the kernel: its first "      \
		  "4 KiB are dead-lettered with the reason, nothing of it is stored as records." }, \
	{ .name = "read_budget", .type = CFG_INT, .def = "64", .offset = SK(read_budget),         \
	  .min = 1, .max = 1000000,                                                                \
	  .help = "Most datagrams (a unix stream: reads of 64 KiB from each connection) taken in "  \
		  "one turn of the event loop; the rest waits in the kernel for the next turn, so a " \
		  "flood cannot starve other inputs and outputs." }

static const struct cfg_key udp_keys[] = {
	{ .name = "listen", .type = CFG_STR, .def = "127.0.0.1:8094", .offset = SK(listen),
	  .help = "Address and port to receive datagrams on: 127.0.0.1:8094, [::1]:8094, 0.0.0.0:8094 "
		  "(every IPv4 interface) or [::]:8094. Only IP addresses: a host name is refused. "
		  "Loopback by default; any other address lets every host that reaches it send records "
		  "to the agent, without authentication. Port 0 takes a free port, shown in status." },
	COMMON_KEYS,
	{ .name = NULL },
};

static const struct cfg_key unix_keys[] = {
	{ .name = "path", .type = CFG_STR, .offset = SK(path), .required = true,
	  .example = "/run/agentd/ingest.sock",
	  .help = "Absolute path of the socket file the agent creates. A socket file left by an earlier "
		  "run is replaced; a file that is not a socket, or a socket another process listens "
		  "on, is refused. The file is removed when the input stops." },
	{ .name = "type", .type = CFG_ENUM, .def = "stream", .offset = SK(type), .enums = type_names,
	  .help = "stream: connections of newline-separated lines (a sender is slowed down, never "
		  "dropped, while the agent cannot take records); dgram: datagrams of one or more "
		  "lines each." },
	{ .name = "mode", .type = CFG_STR, .def = "0660", .offset = SK(mode),
	  .help = "Permissions of the socket file, in octal. Sending needs write permission: 0660 lets "
		  "the agent's user and group send, 0666 every local user." },
	{ .name = "group", .type = CFG_STR, .offset = SK(group),
	  .help = "Group (name or number) given to the socket file, so that the senders' group may "
		  "write to it; default: the agent's group." },
	{ .name = "max_connections", .type = CFG_INT, .def = "64", .offset = SK(max_connections),
	  .min = 1, .max = 65536,
	  .help = "type = stream: most connections at once; one more is accepted and closed at once, "
		  "counted and shown in status." },
	COMMON_KEYS,
	{ .name = NULL },
};

/* ---- addresses -------------------------------------------------------- */

/* "127.0.0.1:8094" or "[::1]:8094" into a socket address. 0 or -EINVAL. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl, char *err,
			size_t errlen)
{
	char host[64];
	const char *colon, *p;
	size_t hl;
	long port = 0;
	bool v6 = false;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':') {
			snprintf(err, errlen, "'%s' is not [IPv6 address]:port", s);
			return -EINVAL;
		}
		hl = (size_t)(close - s - 1);
		p = s + 1;
		colon = close + 1;
		v6 = true;
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			snprintf(err, errlen, "'%s' has no port: give address:port, e.g. 127.0.0.1:8094", s);
			return -EINVAL;
		}
		hl = (size_t)(colon - s);
		p = s;
		if (memchr(s, ':', hl)) {
			snprintf(err, errlen, "'%s': an IPv6 address is written in brackets, e.g. [::1]:8094",
				 s);
			return -EINVAL;
		}
	}
	if (!hl) {
		snprintf(err, errlen, "'%s' has no address: give 127.0.0.1:PORT (loopback) or "
			 "0.0.0.0:PORT (every interface)", s);
		return -EINVAL;
	}
	if (hl >= sizeof(host)) {
		snprintf(err, errlen, "'%.40s...' is not an IP address", s);
		return -EINVAL;
	}
	memcpy(host, p, hl);
	host[hl] = '\0';
	p = colon + 1;
	if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p) ||
	    (port = strtol(p, NULL, 10)) > 65535) {
		snprintf(err, errlen, "'%s': the port must be a number from 0 to 65535", s);
		return -EINVAL;
	}
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
			snprintf(err, errlen, "'%s' is not an IPv6 address", host);
			return -EINVAL;
		}
		*sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
			snprintf(err, errlen, "'%s' is not an IP address: host names are not resolved "
				 "(give 127.0.0.1, 0.0.0.0, [::1] or [::])", host);
			return -EINVAL;
		}
		*sl = sizeof(*a);
	}
	return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(a->sin_port));
	}
}

static int parse_mode(const char *s, mode_t *mode, char *err, size_t errlen)
{
	char *end;
	long v;

	if (!s || !*s || strspn(s, "01234567") != strlen(s) || (v = strtol(s, &end, 8)) > 0777) {
		snprintf(err, errlen, "key 'mode': '%s' is not octal permissions such as 0660", s ? s : "");
		return -EINVAL;
	}
	*mode = (mode_t)v;
	return 0;
}

static int udp_validate(const void *conf, char *err, size_t errlen)
{
	const struct sock_conf *c = conf;
	struct sockaddr_storage ss;
	socklen_t sl;
	char why[200];

	if (parse_listen(c->listen, &ss, &sl, why, sizeof(why))) {
		snprintf(err, errlen, "key 'listen': %s", why);
		return -EINVAL;
	}
	return 0;
}

static int unix_validate(const void *conf, char *err, size_t errlen)
{
	const struct sock_conf *c = conf;
	struct sockaddr_un sun;
	mode_t m;

	if (c->path[0] != '/') {
		snprintf(err, errlen, "key 'path': '%s' is not an absolute path", c->path);
		return -EINVAL;
	}
	if (strlen(c->path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "key 'path': '%.60s...' is longer than a socket path may be "
			 "(%zu bytes)", c->path, sizeof(sun.sun_path) - 1);
		return -EINVAL;
	}
	return parse_mode(c->mode, &m, err, errlen);
}

/* ---- state ------------------------------------------------------------ */

struct sock;

struct sock_conn {
	struct sock *s;
	struct loop_fd w;
	struct lines lf;
	bool eof;
	/* parser = csv: the connection's first line is its header. */
	char *hdr;
	size_t hdr_len;
	bool have_hdr;
	struct sock_conn *next;
};

struct sock {
	struct input *in;
	const struct sock_conf *conf;
	struct loop *loop;
	bool is_unix, stream;
	struct loop_fd w;            /* the datagram socket or the listener */
	char where[160];             /* "127.0.0.1:8094", "/run/x.sock": messages, gap source */
	/* The datagram being handed over. */
	char *buf;
	size_t cap, dg_len, dg_pos, dg_lines;
	int64_t dg_real;             /* its length before the kernel cut it */
	bool dg_pending, dg_trunc;
	bool dg_hdr;                 /* parser = csv: its first line was the header */
	struct sock_conn *hdr_conn;  /* whose header the core holds */
	/* Kernel drops: the last running count seen, and how many reported. */
	uint32_t drops_seen;
	int64_t dropped, dropped_reported;
	int64_t datagrams, truncated, conns_refused;
	int rcvbuf;                  /* what the kernel gave (twice what it holds of data) */
	/* Keys: the next counter value, and the end of the saved block. */
	uint64_t seq, reserved;
	bool running;                /* started: drain at stop */
	bool paused;
	bool retrying;               /* paused by a queue error, said in status */
	int64_t drain_budget;        /* > 0 while stopping: reads allowed */
	struct loop_timer retry;
	struct sock_conn *conns;
	size_t n_conns;
	/* The socket file we made, to remove only ours. */
	bool made_file;
	dev_t dev;
	ino_t ino;
};

static void update_state(struct sock *s)
{
	char extra[160] = "";
	int n = 0;

	if (s->stream) {
		input_set_state(s->in, "listening on %s (stream): %zu connection%s, %" PRId64 " refused "
				"over max_connections", s->where, s->n_conns, s->n_conns == 1 ? "" : "s",
				s->conns_refused);
		return;
	}
	if (s->dropped)
		n += snprintf(extra + n, sizeof(extra) - (size_t)n, ", %" PRId64 " dropped by the kernel",
			      s->dropped);
	if (s->truncated && n >= 0 && (size_t)n < sizeof(extra))
		snprintf(extra + n, sizeof(extra) - (size_t)n, ", %" PRId64 " truncated", s->truncated);
	input_set_state(s->in, "listening on %s%s: %" PRId64 " datagrams%s", s->where,
			s->is_unix ? " (dgram)" : "", s->datagrams, extra);
}

/* ---- keys ------------------------------------------------------------- */

static int save_block(struct sock *s, uint64_t upto)
{
	char v[32];
	int n = snprintf(v, sizeof(v), "%" PRIu64, upto);
	int rc = input_save_position(s->in, "seq", v, (size_t)n);

	if (!rc)
		s->reserved = upto;
	return rc;
}

/* The key of the next record (s->seq), its block saved. 0 or -errno. */
static int next_key(struct sock *s, const char *kind, char *key, size_t len)
{
	int rc;

	if (s->seq >= s->reserved && (rc = save_block(s, s->seq + SEQ_BLOCK)))
		return rc;
	snprintf(key, len, "%s:%s%" PRIu64, input_name(s->in), kind, s->seq);
	return 0;
}

static void load_seq(struct sock *s)
{
	void *p = NULL;
	size_t len = 0;
	char v[32];
	int rc = input_load_position(s->in, "seq", &p, &len);

	if (!rc && len && len < sizeof(v)) {
		memcpy(v, p, len);
		v[len] = '\0';
		s->seq = strtoull(v, NULL, 10);
	} else if (rc && rc != -ENOENT) {
		input_error(s->in, "cannot read the saved key counter: %s", strerror(-rc));
	}
	xfree(p);
	/* The next record saves a new block first. */
	s->reserved = s->seq;
}

/* ---- pausing ---------------------------------------------------------- */

static void watch_all(struct sock *s, bool on)
{
	if (on) {
		if (loop_fd_add(s->loop, &s->w))
			input_error(s->in, "cannot watch %s", s->where);
		for (struct sock_conn *c = s->conns; c; c = c->next)
			if (loop_fd_add(s->loop, &c->w))
				input_error(s->in, "cannot watch a connection on %s", s->where);
	} else {
		loop_fd_del(s->loop, &s->w);
		for (struct sock_conn *c = s->conns; c; c = c->next)
			loop_fd_del(s->loop, &c->w);
	}
}

/* Stop reading until resume() (-EAGAIN: the queue refuses records) or a
 * retry a second later (another queue error). */
static void pause_reading(struct sock *s, int rc)
{
	if (!s->paused)
		watch_all(s, false);
	s->paused = true;
	if (rc != -EAGAIN) {
		input_error(s->in, "record not stored: %s; trying again in a second", strerror(-rc));
		s->retrying = true;
		loop_timer_set(s->loop, &s->retry, RETRY_MS);
	}
}

/* ---- handing records over --------------------------------------------- */

static int report_drops(struct sock *s)
{
	char key[128], why[96];
	int64_t n = s->dropped - s->dropped_reported;
	int rc;

	if (n <= 0)
		return 0;
	if ((rc = next_key(s, "gap:", key, sizeof(key))))
		return rc;
	snprintf(why, sizeof(why), "kernel_dropped: %" PRId64 " datagram%s", n, n == 1 ? "" : "s");
	rc = input_gap(s->in, s->where, (int64_t)s->seq, -1, why, key);
	if (rc)
		return rc;
	s->seq++;
	s->dropped_reported += n;
	return 0;
}

/* A new running drop count (it only grows, and wraps at 2^32). */
static void note_drops(struct sock *s, uint32_t count)
{
	uint32_t d = count - s->drops_seen;

	if (!d || d > UINT32_MAX / 2)
		return;
	s->drops_seen = count;
	s->dropped += d;
	input_error(s->in, "the kernel dropped %" PRIu32 " datagram%s on %s: the receive buffer "
		    "(%d bytes) was full; raise receive_buffer", d, d == 1 ? "" : "s", s->where,
		    s->rcvbuf / 2);
}

static int reject(struct sock *s, const char *data, size_t len, const char *reason)
{
	char key[128];
	int rc = next_key(s, "", key, sizeof(key));

	if (!rc)
		rc = input_reject(s->in, data, len < LINES_KEEP ? len : LINES_KEEP, key, reason);
	if (!rc)
		s->seq++;
	return rc;
}

/* One line: a record, or dead-lettered when too long. 0 or -errno. */
static int take_line(struct sock *s, const char *data, size_t len, const char *too_long)
{
	int64_t max = input_max_record_bytes(s->in);
	char key[128], why[160];
	int rc;

	if (too_long)
		return reject(s, data, len, too_long);
	if ((int64_t)len > max) {
		snprintf(why, sizeof(why), "line longer than max_record_bytes (%zu bytes; only the "
			 "first %zu kept)", len, len < LINES_KEEP ? len : (size_t)LINES_KEEP);
		return reject(s, data, len, why);
	}
	if ((rc = next_key(s, "", key, sizeof(key))))
		return rc;
	rc = input_emit(s->in, data, len, key);
	if (!rc)
		s->seq++;
	return rc;
}

/* Hand over what is left of the datagram in s->buf. 0 when it is all
 * taken, or -errno (it stays pending). */
static int take_datagram(struct sock *s)
{
	char why[160];
	int rc;

	if ((rc = report_drops(s)))
		return rc;
	if (s->dg_trunc) {
		snprintf(why, sizeof(why), "datagram truncated: %" PRId64 " bytes, more than "
			 "max_datagram (%zu); only the first %zu kept", s->dg_real, s->cap,
			 s->dg_len < LINES_KEEP ? s->dg_len : (size_t)LINES_KEEP);
		if ((rc = reject(s, s->buf, s->dg_len, why)))
			return rc;
		s->dg_pending = false;
		return 0;
	}
	while (s->dg_pos < s->dg_len) {
		const char *p = s->buf + s->dg_pos;
		const char *nl = memchr(p, '\n', s->dg_len - s->dg_pos);
		size_t len = nl ? (size_t)(nl - p) : s->dg_len - s->dg_pos;
		size_t next = s->dg_pos + len + (nl ? 1 : 0);
		size_t l = len;

		if (l && p[l - 1] == '\r')
			l--;
		if (l && input_wants_header(s->in) && !s->dg_hdr) {
			/* CSV: each datagram is a small file, its first line
			 * the header of the others. */
			if ((rc = input_set_header(s->in, p, l)))
				return rc;
			s->dg_hdr = true;
		} else if (l) {
			if ((rc = take_line(s, p, l, NULL)))
				return rc;
			s->dg_lines++;
		}
		s->dg_pos = next;
	}
	if (!s->dg_lines) {
		/* Nothing but newlines, or nothing at all: not a record, but
		 * never dropped without a trace. */
		if ((rc = reject(s, s->buf, s->dg_len, s->dg_hdr ? "empty datagram (a CSV header and "
				 "no lines)" : "empty datagram")))
			return rc;
	}
	s->dg_pending = false;
	return 0;
}

/* Replaceable by tests, to play a kernel without SO_MEMINFO (before 4.13). */
int (*socket_getsockopt)(int fd, int level, int name, void *val, socklen_t *len) = getsockopt;

static void read_meminfo_drops(struct sock *s)
{
	uint32_t mi[MEMINFO_VARS];
	socklen_t l = sizeof(mi);

	if (!socket_getsockopt(s->w.fd, SOL_SOCKET, SO_MEMINFO, mi, &l) && l >= sizeof(mi))
		note_drops(s, mi[MEMINFO_DROPS]);
}

/* Read and hand over datagrams: at most read_budget per call. */
static void dgram_pump(struct sock *s)
{
	union {
		char b[CMSG_SPACE(sizeof(uint32_t))];
		struct cmsghdr align;
	} ctl;
	int64_t budget = s->drain_budget ? s->drain_budget : s->conf->read_budget;
	int rc;

	for (;;) {
		struct iovec iov = { s->buf, s->cap };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (s->dg_pending && (rc = take_datagram(s))) {
			pause_reading(s, rc);
			break;
		}
		if (budget-- <= 0)
			break;
		msg.msg_control = ctl.b;
		msg.msg_controllen = sizeof(ctl.b);
		n = recvmsg(s->w.fd, &msg, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				input_count_error(s->in, INPUT_ERR_IO, "reading %s: %s", s->where,
						  strerror(errno));
			/* Drained: drops after the last datagram are known now. */
			read_meminfo_drops(s);
			if ((rc = report_drops(s)))
				pause_reading(s, rc);
			break;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
				uint32_t v;

				memcpy(&v, CMSG_DATA(c), sizeof(v));
				note_drops(s, v);
			}
		}
		s->datagrams++;
		s->dg_real = n;
		s->dg_trunc = (msg.msg_flags & MSG_TRUNC) || (size_t)n > s->cap;
		s->dg_len = (size_t)n > s->cap ? s->cap : (size_t)n;
		s->dg_pos = s->dg_lines = 0;
		s->dg_hdr = false;
		s->dg_pending = true;
		if (s->dg_trunc)
			s->truncated++;
	}
	update_state(s);
}

static void dgram_cb(struct loop_fd *w, unsigned revents)
{
	struct sock *s = container_of(w, struct sock, w);

	(void)revents;
	if (!s->paused)
		dgram_pump(s);
}

/* ---- streams ---------------------------------------------------------- */

static void conn_close(struct sock *s, struct sock_conn *c)
{
	struct sock_conn **pp;

	for (pp = &s->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	loop_fd_del(s->loop, &c->w);
	close(c->w.fd);
	lines_release(&c->lf);
	if (s->hdr_conn == c)
		s->hdr_conn = NULL;
	xfree(c->hdr);
	xfree(c);
	s->n_conns--;
}

/* parser = csv: the connection's first line is its header, handed to the
 * core again whenever lines of another connection went in between. 1: the
 * line was the header; 0: hand it over; -ENOMEM. */
static int conn_header(struct sock *s, struct sock_conn *c, const struct lines_rec *r)
{
	int rc;

	if (!input_wants_header(s->in))
		return 0;
	if (!c->have_hdr) {
		c->have_hdr = true;
		/* An over-long header is dead-lettered as any long line;
		 * the lines after it then have no header (and say so). */
		if (r->too_long)
			return 0;
		c->hdr = xmalloc(r->len + 1);
		if (!c->hdr)
			return -ENOMEM;
		memcpy(c->hdr, r->data, r->len);
		c->hdr_len = r->len;
		s->hdr_conn = NULL;
		return 1;
	}
	if (s->hdr_conn != c) {
		if ((rc = input_set_header(s->in, c->hdr ? c->hdr : "", c->hdr_len)))
			return rc;
		s->hdr_conn = c;
	}
	return 0;
}

/* Hand over the connection's complete lines and read more, at most
 * read_budget reads; closes it at its end. false when reading paused. */
static bool conn_pump(struct sock *s, struct sock_conn *c)
{
	int64_t budget = s->drain_budget ? s->drain_budget : s->conf->read_budget;
	struct lines_rec r;
	int rc, got;

	for (;;) {
		while ((got = c->eof ? lines_flush(&c->lf, &r) : lines_next(&c->lf, &r)) == 1) {
			if (!r.len && !r.too_long) {
				lines_consume(&c->lf);  /* an empty line holds nothing */
				continue;
			}
			if ((rc = conn_header(s, c, &r)) == 1) {
				lines_consume(&c->lf);
				continue;
			}
			if (rc || (rc = take_line(s, r.data, r.len, r.too_long))) {
				pause_reading(s, rc);
				return false;
			}
			lines_consume(&c->lf);
		}
		if (got < 0) {
			input_error(s->in, "out of memory: a connection on %s closed", s->where);
			c->eof = true;
		}
		if (c->eof) {
			conn_close(s, c);
			update_state(s);
			return true;
		}
		if (budget-- <= 0)
			return true;
		{
			size_t avail;
			char *p = lines_space(&c->lf, STREAM_CHUNK, &avail);
			ssize_t n;

			if (!p) {
				input_error(s->in, "out of memory: a connection on %s closed", s->where);
				c->eof = true;
				continue;
			}
			n = read(c->w.fd, p, avail < STREAM_CHUNK ? avail : STREAM_CHUNK);
			if (n > 0) {
				lines_added(&c->lf, (size_t)n);
			} else if (n == 0) {
				c->eof = true;
			} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
				return true;
			} else if (errno != EINTR) {
				input_count_error(s->in, INPUT_ERR_IO, "reading a connection on %s: %s",
						  s->where, strerror(errno));
				c->eof = true;
			}
		}
	}
}

static void conn_cb(struct loop_fd *w, unsigned revents)
{
	struct sock_conn *c = container_of(w, struct sock_conn, w);

	(void)revents;
	if (!c->s->paused)
		conn_pump(c->s, c);
}

static void accept_cb(struct loop_fd *w, unsigned revents)
{
	struct sock *s = container_of(w, struct sock, w);
	int64_t budget = s->conf->read_budget;

	(void)revents;
	while (!s->paused && budget-- > 0) {
		int fd = accept4(s->w.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct sock_conn *c;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				input_count_error(s->in, INPUT_ERR_IO, "accepting on %s: %s", s->where,
						  strerror(errno));
			break;
		}
		if ((int64_t)s->n_conns >= s->conf->max_connections) {
			close(fd);
			s->conns_refused++;
			input_error(s->in, "connection on %s refused: max_connections (%" PRId64 ") reached",
				    s->where, s->conf->max_connections);
			continue;
		}
		c = xcalloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			s->conns_refused++;
			input_error(s->in, "connection on %s refused: out of memory", s->where);
			continue;
		}
		c->s = s;
		c->w.fd = fd;
		c->w.events = LOOP_READ;
		c->w.cb = conn_cb;
		lines_init(&c->lf, (size_t)input_max_record_bytes(s->in));
		c->lf.strip_cr = true;
		if (loop_fd_add(s->loop, &c->w)) {
			close(fd);
			xfree(c);
			input_error(s->in, "cannot watch a connection on %s", s->where);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->n_conns++;
	}
	update_state(s);
}

/* ---- start and stop --------------------------------------------------- */

/* Take everything pending again after a pause; false if paused again. */
static bool pump_all(struct sock *s)
{
	if (!s->stream) {
		dgram_pump(s);
		return !s->paused;
	}
	for (struct sock_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (!conn_pump(s, c))
			return false;
	}
	return true;
}

static void sock_resume(struct input *in, void *state)
{
	struct sock *s = state;

	(void)in;
	if (!s)
		return;
	/* After a failed commit the core has appended the records of the
	 * lost transaction again, but not the block saved in it: save it
	 * again, or a restart would hand their keys out once more. (Should
	 * this fail, the next record saves a new block first.) */
	if (s->reserved > s->seq && save_block(s, s->reserved))
		s->reserved = s->seq;
	if (!s->paused)
		return;
	loop_timer_cancel(s->loop, &s->retry);
	s->paused = false;
	if (pump_all(s) && !s->paused) {
		watch_all(s, true);
		if (s->retrying)
			input_clear_error(s->in);
		s->retrying = false;
	}
}

static int64_t retry_cb(struct loop_timer *t)
{
	struct sock *s = container_of(t, struct sock, retry);

	sock_resume(s->in, s);
	return -1;
}

static void set_rcvbuf(struct sock *s)
{
	int want = (int)s->conf->receive_buffer;
	socklen_t l = sizeof(s->rcvbuf);

	if (want > 0 && setsockopt(s->w.fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) < 0)
		setsockopt(s->w.fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
	if (getsockopt(s->w.fd, SOL_SOCKET, SO_RCVBUF, &s->rcvbuf, &l) < 0)
		s->rcvbuf = 0;
	/* Linux reports twice what was asked (bookkeeping included). */
	if (want > 0 && s->rcvbuf < want)
		log_warn("input %s: receive buffer is %d bytes, not the %d asked for: raise "
			 "net.core.rmem_max", input_name(s->in), s->rcvbuf / 2, want);
}

/* Starting failed: the reason goes to status as the input's state, which
 * the core's own "failed to start" line does not replace. */
static void cannot_listen(struct sock *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cannot_listen(struct sock *s, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	input_count_error(s->in, INPUT_ERR_CONNECT, "%s", msg);
	input_set_state(s->in, "not listening: %s", msg);
}

static int open_udp(struct sock *s)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char why[200];
	int one = 1;

	if (parse_listen(s->conf->listen, &ss, &sl, why, sizeof(why))) {
		cannot_listen(s, "%s", why);
		return -EINVAL;
	}
	s->w.fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->w.fd < 0)
		goto out_err;
	set_rcvbuf(s);
	if (setsockopt(s->w.fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) < 0)
		log_warn("input %s: the kernel cannot count dropped datagrams (SO_RXQ_OVFL: %s)",
			 input_name(s->in), strerror(errno));
	if (bind(s->w.fd, (struct sockaddr *)&ss, sl) < 0)
		goto out_err;
	sl = sizeof(ss);
	getsockname(s->w.fd, (struct sockaddr *)&ss, &sl);
	format_addr(&ss, s->where, sizeof(s->where));
	if (!is_loopback(&ss))
		log_warn("input %s: listening on %s, not loopback: every host that reaches this address "
			 "can send records", input_name(s->in), s->where);
	return 0;

out_err: {
		int err = errno;

		cannot_listen(s, "cannot listen on %s: %s", s->conf->listen,
				  strerror(err));
		return -err;
	}
}

/* A socket file at path: replace it if nobody listens on it; refuse
 * anything else. 0 or -errno. */
static int claim_path(struct sock *s, const struct sockaddr_un *sun, int type)
{
	const char *path = sun->sun_path;
	struct stat st;
	int fd, rc, err;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		err = errno;
		cannot_listen(s, "cannot check %s: %s", path, strerror(err));
		return -err;
	}
	if (!S_ISSOCK(st.st_mode)) {
		cannot_listen(s, "%s exists and is not a socket: refusing to "
				  "replace it", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	err = rc < 0 ? errno : 0;
	close(fd);
	if (err == ECONNREFUSED) {
		/* Nobody listens: a file left by an earlier run. */
		if (unlink(path) < 0 && errno != ENOENT) {
			err = errno;
			cannot_listen(s, "cannot remove the stale socket %s: %s",
					  path, strerror(err));
			return -err;
		}
		log_info("input %s: replaced the stale socket file %s", input_name(s->in), path);
		return 0;
	}
	if (!err || err == EAGAIN || err == EINPROGRESS || err == EPROTOTYPE) {
		cannot_listen(s, "another process listens on %s: refusing "
				  "to take it over", path);
		return -EADDRINUSE;
	}
	cannot_listen(s, "cannot check %s: %s", path, strerror(err));
	return -err;
}

static int find_group(const char *g, gid_t *gid)
{
	struct group *gr;
	char *end;
	unsigned long v;

	if (strspn(g, "0123456789") == strlen(g) && *g) {
		v = strtoul(g, &end, 10);
		*gid = (gid_t)v;
		return 0;
	}
	gr = getgrnam(g);
	if (!gr)
		return -ENOENT;
	*gid = gr->gr_gid;
	return 0;
}

static int open_unix(struct sock *s)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int type = s->stream ? SOCK_STREAM : SOCK_DGRAM, one = 1, rc, err;
	struct stat st;
	char why[120];
	mode_t mode;
	gid_t gid = 0;

	if (parse_mode(s->conf->mode, &mode, why, sizeof(why))) {
		input_error(s->in, "%s", why);
		return -EINVAL;
	}
	if (s->conf->group && find_group(s->conf->group, &gid)) {
		cannot_listen(s, "group '%s' does not exist", s->conf->group);
		return -ENOENT;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", s->conf->path);
	snprintf(s->where, sizeof(s->where), "%s", s->conf->path);
	if ((rc = claim_path(s, &sun, type)))
		return rc;
	s->w.fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->w.fd < 0)
		goto out_err;
	if (!s->stream) {
		set_rcvbuf(s);
		setsockopt(s->w.fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
	}
	if (bind(s->w.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		goto out_err;
	s->made_file = true;
	if (stat(sun.sun_path, &st) == 0) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
	}
	/* Until chmod the file has the umask's permissions, which never
	 * let more users write than mode does with the usual umask 022. */
	if (chmod(sun.sun_path, mode) < 0)
		goto out_err;
	if (s->conf->group && chown(sun.sun_path, (uid_t)-1, gid) < 0)
		goto out_err;
	if (s->stream && listen(s->w.fd, 128) < 0)
		goto out_err;
	return 0;

out_err:
	err = errno;
	cannot_listen(s, "cannot listen on %s: %s", s->conf->path,
			  strerror(err));
	return -err;
}

/* Stopping (agent stop, reload): take what the kernel already holds, so
 * that a sender's lines written before the stop are not lost with the
 * socket. Bounded, so a sender that goes on sending cannot hold the stop
 * up. A line a stream sender had not finished is dead-lettered. */
static void drain(struct sock *s)
{
	struct lines_rec r;

	if (s->paused) {
		log_warn("input %s: stopped while the queue refused records: what was still unread on "
			 "%s is lost", input_name(s->in), s->where);
		return;
	}
	if (!s->stream) {
		s->drain_budget = s->rcvbuf / 256 + s->conf->read_budget;
		dgram_pump(s);
		return;
	}
	s->drain_budget = 64;   /* reads of 64 KiB per connection */
	accept_cb(&s->w, LOOP_READ);
	for (struct sock_conn *c = s->conns, *next; c && !s->paused; c = next) {
		next = c->next;
		conn_pump(s, c);        /* may close c at its end */
	}
	for (struct sock_conn *c = s->conns; c && !s->paused; c = c->next) {
		size_t n = lines_buffered(&c->lf);
		char why[160];

		if (!n || lines_flush(&c->lf, &r) != 1)
			continue;
		snprintf(why, sizeof(why), "incomplete line: the input stopped while it was being "
			 "sent (%zu bytes, no newline yet)", n);
		if (take_line(s, r.data, r.len, r.too_long ? r.too_long : why) == 0)
			lines_consume(&c->lf);
	}
}

static void sock_stop(struct input *in, void *state)
{
	struct sock *s = state;
	struct stat st;

	(void)in;
	if (!s)
		return;
	if (s->running)
		drain(s);
	/* After the drain, which may have armed it. */
	if (s->loop)
		loop_timer_cancel(s->loop, &s->retry);
	while (s->conns)
		conn_close(s, s->conns);
	if (s->w.fd >= 0) {
		if (s->loop)
			loop_fd_del(s->loop, &s->w);
		close(s->w.fd);
	}
	/* Remove the socket file, if it is still the one made here. */
	if (s->made_file && stat(s->conf->path, &st) == 0 && st.st_dev == s->dev &&
	    st.st_ino == s->ino)
		unlink(s->conf->path);
	xfree(s->buf);
	xfree(s);
}

static int sock_start(struct input *in, void **state, bool is_unix)
{
	struct sock *s = xcalloc(1, sizeof(*s));
	int rc;

	if (!s)
		return -ENOMEM;
	s->in = in;
	s->conf = input_driver_conf(in);
	s->loop = input_loop(in);
	s->is_unix = is_unix;
	s->stream = is_unix && s->conf->type == SOCK_T_STREAM;
	s->w.fd = -1;
	s->w.events = LOOP_READ;
	s->w.cb = s->stream ? accept_cb : dgram_cb;
	s->retry.cb = retry_cb;
	if (!s->stream) {
		s->cap = (size_t)s->conf->max_datagram;
		s->buf = xmalloc(s->cap);
		if (!s->buf) {
			rc = -ENOMEM;
			input_error(in, "cannot start: %s", strerror(-rc));
			goto out_stop;
		}
	}
	load_seq(s);
	rc = is_unix ? open_unix(s) : open_udp(s);
	if (rc)
		goto out_stop;
	if ((rc = loop_fd_add(s->loop, &s->w))) {
		input_error(in, "cannot watch %s: %s", s->where, strerror(-rc));
		goto out_stop;
	}
	update_state(s);
	log_info("input %s: listening on %s", input_name(in), s->where);
	s->running = true;
	*state = s;
	return 0;

out_stop:
	sock_stop(in, s);
	return rc;
}

static int udp_start(struct input *in, void **state)
{
	return sock_start(in, state, false);
}

static int unix_start(struct input *in, void **state)
{
	return sock_start(in, state, true);
}

const struct driver udp_driver = {
	.version = DRIVER_VERSION,
	.name = "udp",
	.help = "Receives datagrams of lines (JSON, InfluxDB line protocol, CSV or text) on a UDP port, "
		"loopback by default; each line is a record, datagrams the kernel dropped are counted and "
		"reported as a gap.",
	.flags = DRIVER_REPLAY,
	.parser = "json",
	.conf_keys = udp_keys,
	.conf_size = sizeof(struct sock_conf),
	.validate = udp_validate,
	.start = udp_start,
	.resume = sock_resume,
	.stop = sock_stop,
};

const struct driver unix_driver = {
	.version = DRIVER_VERSION,
	.name = "unix",
	.help = "Receives lines (JSON, InfluxDB line protocol, CSV or text) on a local socket file, as a "
		"stream (senders are slowed down, never dropped) or as datagrams.",
	.flags = DRIVER_REPLAY,
	.parser = "json",
	.conf_keys = unix_keys,
	.conf_size = sizeof(struct sock_conf),
	.validate = unix_validate,
	.start = unix_start,
	.resume = sock_resume,
	.stop = sock_stop,
};
