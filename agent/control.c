/* control.c - the control socket: one request line in, one response out.
 *
 * A connection sends one line of space-separated words and gets back "ok"
 * or "error <message>", then the body, then the server closes. Every
 * command is a row of one table; argument counts and the right to change
 * state are checked once, centrally, before any handler runs. Everything
 * happens on the agent's loop without blocking it: reads and writes are
 * non-blocking and a slow or silent client is dropped by a timer.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "control.h"
#include "log.h"
#include "mem.h"

#define CTL_MAX_LINE 4096
#define CTL_MAX_ARGS 16
/* A client has this long to send its request, and this long per write of
 * the response to make progress. */
#define CTL_TIMEOUT_MS 5000
/* Bounds memory and fds held by idle clients. */
#define CTL_MAX_CONNS 16
#define DLQ_LIST_DEFAULT 100
#define DLQ_LIST_MAX 10000

enum cmd_flags {
	CMD_CHANGES = 1 << 0,   /* changes state: root or agentd's own uid only */
	CMD_QUEUE = 1 << 1,     /* needs the queue */
	CMD_RUNNING = 1 << 2,   /* needs the running daemon, not just its queue */
};

struct ctl_req {
	struct agent *a;
	struct buf *body;
	char *err;
	size_t errlen;
};

struct ctl_cmd {
	const char *name;
	const char *sub;        /* second word ("dlq list"), NULL if none */
	int (*run)(struct ctl_req *r, int argc, char **argv);
	int min_args, max_args; /* words after name (and sub) */
	unsigned flags;
	const char *usage;
};

struct ctl_conn {
	struct control *c;
	struct ctl_conn *next;
	struct loop_fd w;
	struct loop_timer timer;
	uid_t uid;
	size_t rlen;
	struct buf out;
	size_t off;
	bool replying;
	char req[CTL_MAX_LINE + 1];
};

struct control {
	struct agent *a;
	char *path;
	struct loop_fd w;
	struct ctl_conn *conns;
	int n_conns;
};

static int fail(struct ctl_req *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Set the error message a handler returns with. */
static int fail(struct ctl_req *r, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, r->errlen, fmt, ap);
	va_end(ap);
	return err;
}

/* A positive decimal id, or "all" (0) when all_ok. */
static int parse_id(const char *s, bool all_ok, int64_t *id)
{
	char *end;
	long long v;

	if (all_ok && !strcmp(s, "all")) {
		*id = 0;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v <= 0)
		return -EINVAL;
	*id = v;
	return 0;
}

static void fmt_time(char *dst, size_t len, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	if (wall_ms <= 0 || !gmtime_r(&t, &tm) ||
	    !strftime(dst, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(dst, len, "-");
}

/* Metadata strings may hold anything a source or remote sent; one line per
 * entry must stay one line. */
static void clean_field(char *dst, size_t len, const char *s)
{
	size_t n = strnlen(s, len - 1), off = 0, bad;

	memcpy(dst, s, n);
	dst[n] = '\0';
	while (off < n && !utf8_valid(dst + off, n - off, &bad)) {
		dst[off + bad] = '?';
		off += bad + 1;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
			dst[i] = '?';
	if (!n && len > 1)
		snprintf(dst, len, "-");
}

static int cmd_ping(struct ctl_req *r, int argc, char **argv)
{
	return buf_adds(r->body, "pong\n");
}

static int cmd_status(struct ctl_req *r, int argc, char **argv)
{
	struct status st;
	bool json = false;
	int rc;

	if (argc == 1) {
		if (strcmp(argv[0], "--json"))
			return fail(r, -EINVAL, "unknown option '%s' (usage: status [--json])",
				    argv[0]);
		json = true;
	}
	memset(&st, 0, sizeof(st));
	rc = agent_status_fill(r->a, &st);
	if (rc) {
		status_clear(&st);
		return fail(r, rc, "cannot collect status: %s", strerror(-rc));
	}
	rc = json ? status_render_json(&st, r->body) :
		    status_render_text(&st, r->body);
	status_clear(&st);
	return rc;
}

/* The file is checked here, so the caller hears at once when it is
 * refused; the reload itself runs from the loop. */
static int cmd_reload(struct ctl_req *r, int argc, char **argv)
{
	struct config *nc = NULL;
	char err[512];
	int rc;

	rc = config_load(r->a->cfg->path, &nc, err, sizeof(err));
	if (rc) {
		log_error("reload refused, keeping the running configuration: %s", err);
		return fail(r, rc, "reload refused, the running configuration stays: %s", err);
	}
	config_free(nc);
	agent_request_reload(r->a);
	return buf_adds(r->body, "reload requested\n");
}

struct dlq_list_ctx {
	struct buf *b;
	bool json;
	size_t limit, n;
	int64_t last_id;
	bool more;
	struct status_buf *w;
};

static int dlq_list_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	struct dlq_list_ctx *x = arg;
	char when[32], origin[64], stream[64], reason[256], key[128];

	if (x->n == x->limit) {
		x->more = true;
		return 1;
	}
	x->n++;
	x->last_id = e->id;
	fmt_time(when, sizeof(when), e->ts_wall_ms);
	clean_field(origin, sizeof(origin), e->origin);
	clean_field(stream, sizeof(stream), e->stream);
	clean_field(reason, sizeof(reason), e->reason);
	if (x->json) {
		clean_field(key, sizeof(key), e->key);
		jw_obj_begin(x->w, NULL);
		jw_int(x->w, "id", e->id);
		jw_int(x->w, "ts_wall_ms", e->ts_wall_ms);
		jw_str(x->w, "origin", origin);
		jw_str(x->w, "stream", stream);
		jw_int(x->w, "seq", e->seq);
		jw_str(x->w, "key", key);
		jw_str(x->w, "reason", reason);
		jw_int(x->w, "length", (int64_t)e->len);
		jw_obj_end(x->w);
		return x->w->err;
	}
	return buf_printf(x->b, "%-6" PRId64 " %-20s %-20s %-16s %-8" PRId64 " %-8zu %s\n",
			  e->id, when, origin, stream, e->seq, e->len, reason);
}

static int cmd_dlq_list(struct ctl_req *r, int argc, char **argv)
{
	struct dlq_list_ctx x = { .b = r->body, .limit = DLQ_LIST_DEFAULT };
	struct status_buf w;
	int64_t after = 0, v;
	int rc;

	for (int i = 0; i < argc; i++) {
		bool is_after = !strcmp(argv[i], "--after");

		if (!strcmp(argv[i], "--json")) {
			x.json = true;
			continue;
		}
		if (!is_after && strcmp(argv[i], "--limit"))
			return fail(r, -EINVAL, "unknown option '%s' (usage: dlq list [--after ID] [--limit N] [--json])",
				    argv[i]);
		if (i + 1 >= argc)
			return fail(r, -EINVAL, "%s needs a value", argv[i]);
		i++;
		if (is_after && !strcmp(argv[i], "0"))
			after = 0;
		else if (parse_id(argv[i], false, &v))
			return fail(r, -EINVAL, "bad value '%s' for %s (a positive number)",
				    argv[i], argv[i - 1]);
		else if (is_after)
			after = v;
		else if (v > DLQ_LIST_MAX)
			return fail(r, -EINVAL, "--limit %s is too large (at most %d)",
				    argv[i], DLQ_LIST_MAX);
		else
			x.limit = (size_t)v;
	}

	jw_init(&w);
	x.w = &w;
	if (x.json) {
		jw_obj_begin(&w, NULL);
		jw_arr_begin(&w, "entries");
	} else {
		rc = buf_printf(r->body, "%-6s %-20s %-20s %-16s %-8s %-8s %s\n",
				"ID", "TIME", "ORIGIN", "STREAM", "SEQ",
				"LENGTH", "REASON");
		if (rc)
			goto out_release;
	}
	/* One more than asked for tells whether there is a next page. */
	rc = queue_dlq_list(r->a->q, after, x.limit + 1, dlq_list_cb, &x);
	if (rc < 0) {
		rc = fail(r, rc, "cannot read the dead-letter queue: %s",
			  strerror(-rc));
		goto out_release;
	}
	rc = 0;
	if (x.json) {
		jw_arr_end(&w);
		jw_bool(&w, "more", x.more);
		jw_int(&w, "next_after", x.more ? x.last_id : 0);
		jw_obj_end(&w);
		rc = jw_finish(&w);
		if (!rc)
			rc = buf_add(r->body, w.b.p, w.b.len);
		if (!rc)
			rc = buf_addc(r->body, '\n');
	} else if (x.more) {
		rc = buf_printf(r->body, "(more: dlq list --after %" PRId64 ")\n",
				x.last_id);
	} else if (!x.n) {
		buf_reset(r->body);
		rc = buf_adds(r->body, after ? "(no entries after that id)\n" :
				       "(the dead-letter queue is empty)\n");
	}
out_release:
	buf_release(&w.b);
	return rc;
}

/* Classic 16 bytes per line, offset, hex, printable ASCII. */
static int hexdump(struct buf *b, const unsigned char *p, size_t len)
{
	int rc = 0;

	for (size_t off = 0; off < len && !rc; off += 16) {
		size_t n = len - off < 16 ? len - off : 16;

		rc |= buf_printf(b, "%08zx ", off);
		for (size_t i = 0; i < 16; i++) {
			if (i == 8)
				rc |= buf_addc(b, ' ');
			if (i < n)
				rc |= buf_printf(b, " %02x", p[off + i]);
			else
				rc |= buf_adds(b, "   ");
		}
		rc |= buf_adds(b, "  |");
		for (size_t i = 0; i < n; i++) {
			unsigned char c = p[off + i];

			rc |= buf_addc(b, c >= 0x20 && c < 0x7f ? (char)c : '.');
		}
		rc |= buf_adds(b, "|\n");
	}
	return rc ? -ENOMEM : 0;
}

/* Printable as is: valid UTF-8 without control characters that would
 * garble a terminal (newlines and tabs are fine). */
static bool is_text(const unsigned char *p, size_t len)
{
	size_t bad;

	for (size_t i = 0; i < len; i++)
		if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t' &&
		     p[i] != '\r') || p[i] == 0x7f)
			return false;
	return utf8_valid((const char *)p, len, &bad);
}

static int dlq_show_cb(const struct dlq_entry *e, const void *data, void *arg)
{
	struct buf *b = arg;
	char when[32], origin[64], stream[64], key[128], reason[256];
	bool text = is_text(data, e->len);
	int rc = 0;

	fmt_time(when, sizeof(when), e->ts_wall_ms);
	clean_field(origin, sizeof(origin), e->origin);
	clean_field(stream, sizeof(stream), e->stream);
	clean_field(key, sizeof(key), e->key);
	clean_field(reason, sizeof(reason), e->reason);
	rc |= buf_printf(b, "id:      %" PRId64 "\n", e->id);
	rc |= buf_printf(b, "time:    %s\n", when);
	rc |= buf_printf(b, "origin:  %s\n", origin);
	rc |= buf_printf(b, "stream:  %s\n", stream);
	rc |= buf_printf(b, "seq:     %" PRId64 "\n", e->seq);
	rc |= buf_printf(b, "key:     %s\n", key);
	rc |= buf_printf(b, "reason:  %s\n", reason);
	rc |= buf_printf(b, "length:  %zu bytes\n", e->len);
	rc |= buf_printf(b, "data (%s):\n", text ? "text" : "binary, hex dump");
	if (rc)
		return -ENOMEM;
	if (!text)
		return hexdump(b, data, e->len);
	rc = buf_add(b, data, e->len);
	if (!rc && e->len && ((const char *)data)[e->len - 1] != '\n')
		rc = buf_addc(b, '\n');
	return rc;
}

static int cmd_dlq_show(struct ctl_req *r, int argc, char **argv)
{
	int64_t id;
	int rc;

	if (parse_id(argv[0], false, &id))
		return fail(r, -EINVAL, "bad id '%s' (a number from dlq list)",
			    argv[0]);
	rc = queue_dlq_get(r->a->q, id, dlq_show_cb, r->body);
	if (rc == -ENOENT)
		return fail(r, rc, "no dead-letter entry %" PRId64, id);
	if (rc < 0)
		return fail(r, rc, "cannot read dead-letter entry %" PRId64 ": %s",
			    id, strerror(-rc));
	return 0;
}

static int cmd_dlq_change(struct ctl_req *r, int argc, char **argv,
			  bool replay)
{
	const char *verb = replay ? "replay" : "purge";
	int64_t id, count = 0;
	int rc;

	if (parse_id(argv[0], true, &id))
		return fail(r, -EINVAL, "bad id '%s' (a number from dlq list, or all)",
			    argv[0]);
	rc = replay ? queue_dlq_replay(r->a->q, id, &count) :
		      queue_dlq_purge(r->a->q, id, &count);
	if (rc == -ENOENT)
		return fail(r, rc, "no dead-letter entry %" PRId64, id);
	if (rc == -EINVAL && replay)
		return fail(r, rc,
			    "entry %" PRId64 " was rejected at ingest (it never parsed): fix the "
			    "source, then purge it; only records an output rejected can be replayed",
			    id);
	if (rc)
		return fail(r, rc, "cannot %s: %s", verb, strerror(-rc));
	/* Commit before answering: "ok" means the change is durable. */
	rc = queue_commit(r->a->q);
	if (rc)
		return fail(r, rc, "cannot commit the %s: %s", verb,
			    strerror(-rc));
	if (replay && count && r->a->n_outputs)
		agent_kick_outputs(r->a);
	if (replay)
		return buf_printf(r->body, "replayed %" PRId64 " record%s\n",
				  count, count == 1 ? "" : "s");
	return buf_printf(r->body, "purged %" PRId64 " entr%s\n", count,
			  count == 1 ? "y" : "ies");
}

static int cmd_dlq_replay(struct ctl_req *r, int argc, char **argv)
{
	return cmd_dlq_change(r, argc, argv, true);
}

static int cmd_dlq_purge(struct ctl_req *r, int argc, char **argv)
{
	return cmd_dlq_change(r, argc, argv, false);
}

static const struct ctl_cmd commands[] = {
	{ "ping", NULL, cmd_ping, 0, 0, 0, "ping" },
	{ "status", NULL, cmd_status, 0, 1, CMD_RUNNING, "status [--json]" },
	{ "reload", NULL, cmd_reload, 0, 0, CMD_CHANGES | CMD_RUNNING, "reload" },
	{ "dlq", "list", cmd_dlq_list, 0, 5, CMD_QUEUE,
	  "dlq list [--after ID] [--limit N] [--json]" },
	{ "dlq", "show", cmd_dlq_show, 1, 1, CMD_QUEUE, "dlq show ID" },
	{ "dlq", "replay", cmd_dlq_replay, 1, 1, CMD_CHANGES | CMD_QUEUE,
	  "dlq replay ID|all" },
	{ "dlq", "purge", cmd_dlq_purge, 1, 1, CMD_CHANGES | CMD_QUEUE,
	  "dlq purge ID|all" },
};

static const struct ctl_cmd *cmd_find(int argc, char **argv, int *used,
				      bool *name_known)
{
	*name_known = false;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct ctl_cmd *c = &commands[i];

		if (strcmp(c->name, argv[0]))
			continue;
		*name_known = true;
		if (!c->sub) {
			*used = 1;
			return c;
		}
		if (argc > 1 && !strcmp(c->sub, argv[1])) {
			*used = 2;
			return c;
		}
	}
	return NULL;
}

/* Split in place on spaces and tabs. Returns the count, or -E2BIG. */
static int split_words(char *line, char **argv)
{
	int argc = 0;
	char *p = line;

	for (;;) {
		p += strspn(p, " \t");
		if (!*p)
			return argc;
		if (argc == CTL_MAX_ARGS)
			return -E2BIG;
		argv[argc++] = p;
		p += strcspn(p, " \t");
		if (*p)
			*p++ = '\0';
	}
}

static int respond_error(struct buf *out, const char *msg)
{
	char clean[512];

	clean_field(clean, sizeof(clean), msg);
	return buf_printf(out, "error %s\n", clean);
}

int control_exec(struct agent *a, uid_t peer_uid, const char *line,
		 struct buf *out)
{
	char copy[CTL_MAX_LINE + 1], *argv[CTL_MAX_ARGS], err[384];
	struct buf body = BUF_INIT;
	struct ctl_req r = { .a = a, .body = &body, .err = err,
			     .errlen = sizeof(err) };
	const struct ctl_cmd *c;
	int argc, used = 0, nargs, rc;
	bool known;
	uid_t owner = geteuid();

	if (strlen(line) > CTL_MAX_LINE)
		return respond_error(out, "request too long");
	snprintf(copy, sizeof(copy), "%s", line);
	copy[strcspn(copy, "\r\n")] = '\0';
	argc = split_words(copy, argv);
	if (argc == -E2BIG)
		return respond_error(out, "too many words in the request");
	if (argc == 0)
		return respond_error(out, "empty request (try: ping)");

	c = cmd_find(argc, argv, &used, &known);
	if (!c && known) {
		snprintf(err, sizeof(err),
			 "unknown %s command '%s' (try: list, show, replay, purge)",
			 argv[0], argc > 1 ? argv[1] : "");
		return respond_error(out, err);
	}
	if (!c) {
		snprintf(err, sizeof(err), "unknown command '%s'", argv[0]);
		return respond_error(out, err);
	}
	nargs = argc - used;
	if (nargs < c->min_args || nargs > c->max_args) {
		snprintf(err, sizeof(err),
			 "wrong number of arguments (usage: %s)", c->usage);
		return respond_error(out, err);
	}
	if ((c->flags & CMD_CHANGES) && peer_uid != 0 && peer_uid != owner) {
		snprintf(err, sizeof(err),
			 "permission denied: '%s%s%s' changes state; run it as root or as uid %u",
			 c->name, c->sub ? " " : "", c->sub ? c->sub : "",
			 (unsigned)owner);
		log_warn("control: uid %u refused '%s%s%s'", (unsigned)peer_uid,
			 c->name, c->sub ? " " : "", c->sub ? c->sub : "");
		return respond_error(out, err);
	}
	if ((c->flags & CMD_QUEUE) && !a->q)
		return respond_error(out, "the queue is not open");
	if ((c->flags & CMD_RUNNING) && !a->loop)
		return respond_error(out, "agentd is not running");

	err[0] = '\0';
	rc = c->run(&r, nargs, argv + used);
	if (rc == -ENOMEM && !err[0]) {
		buf_release(&body);
		return respond_error(out, "out of memory");
	}
	if (rc) {
		buf_release(&body);
		return respond_error(out, err[0] ? err : strerror(-rc));
	}
	if (c->flags & CMD_CHANGES) {
		clean_field(err, sizeof(err), nargs ? argv[used] : "");
		log_info("control: uid %u ran '%s%s%s%s%s'", (unsigned)peer_uid,
			 c->name, c->sub ? " " : "", c->sub ? c->sub : "",
			 nargs ? " " : "", nargs ? err : "");
	}
	rc = buf_adds(out, "ok\n");
	if (!rc && body.len)
		rc = buf_add(out, body.p, body.len);
	buf_release(&body);
	return rc;
}

/* ---- the socket -------------------------------------------------------- */

static void conn_free(struct ctl_conn *k)
{
	struct control *c = k->c;
	struct ctl_conn **pp;

	for (pp = &c->conns; *pp; pp = &(*pp)->next) {
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	}
	c->n_conns--;
	loop_fd_del(c->a->loop, &k->w);
	loop_timer_cancel(c->a->loop, &k->timer);
	close(k->w.fd);
	buf_release(&k->out);
	xfree(k);
}

static int64_t conn_timeout(struct loop_timer *t)
{
	struct ctl_conn *k = container_of(t, struct ctl_conn, timer);

	log_debug("control: client uid %u timed out", (unsigned)k->uid);
	conn_free(k);
	return -1;
}

/* Write what the socket takes; true when the connection is finished. */
static bool conn_write(struct ctl_conn *k)
{
	while (k->off < k->out.len) {
		ssize_t n = send(k->w.fd, k->out.p + k->off, k->out.len - k->off,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return false;
		if (n < 0)
			return true; /* the client went away */
		k->off += (size_t)n;
		/* Progress: give the client a fresh period for the rest. */
		loop_timer_set(k->c->a->loop, &k->timer, CTL_TIMEOUT_MS);
	}
	return true;
}

static void conn_reply(struct ctl_conn *k, bool too_long)
{
	int rc;

	if (too_long) {
		rc = respond_error(&k->out, "request too long (limit 4096 bytes)");
	} else {
		k->req[k->rlen] = '\0';
		rc = control_exec(k->c->a, k->uid, k->req, &k->out);
	}
	if (rc) {
		/* Nothing useful fits: a short fixed answer, or just close. */
		buf_reset(&k->out);
		if (buf_adds(&k->out, "error out of memory\n")) {
			conn_free(k);
			return;
		}
	}
	k->replying = true;
	k->off = 0;
	shutdown(k->w.fd, SHUT_RD);
	loop_timer_set(k->c->a->loop, &k->timer, CTL_TIMEOUT_MS);
	if (conn_write(k)) {
		conn_free(k);
		return;
	}
	if (loop_fd_update(k->c->a->loop, &k->w, LOOP_WRITE))
		conn_free(k);
}

static void conn_cb(struct loop_fd *w, unsigned revents)
{
	struct ctl_conn *k = container_of(w, struct ctl_conn, w);
	char *nl;
	ssize_t n;

	if (k->replying) {
		if (conn_write(k) || (revents & LOOP_ERROR))
			conn_free(k);
		return;
	}
	for (;;) {
		n = recv(w->fd, k->req + k->rlen, CTL_MAX_LINE + 1 - k->rlen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (revents & LOOP_ERROR)
				conn_free(k);
			return;
		}
		if (n < 0) {
			conn_free(k);
			return;
		}
		if (n == 0) {
			/* A client that shuts down its side without a newline
			 * still gets its request run. */
			if (!k->rlen)
				conn_free(k);
			else
				conn_reply(k, false);
			return;
		}
		nl = memchr(k->req + k->rlen, '\n', (size_t)n);
		k->rlen += (size_t)n;
		if (nl) {
			k->rlen = (size_t)(nl - k->req);
			conn_reply(k, false);
			return;
		}
		if (k->rlen > CTL_MAX_LINE) {
			conn_reply(k, true);
			return;
		}
	}
}

static void accept_cb(struct loop_fd *w, unsigned revents)
{
	struct control *c = container_of(w, struct control, w);
	struct ucred cred;
	socklen_t clen;
	struct ctl_conn *k;
	int fd;

	for (;;) {
		clen = sizeof(cred);
		fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_warn("control: accept: %s", strerror(errno));
			return;
		}
		if (c->n_conns >= CTL_MAX_CONNS) {
			log_warn("control: %d clients connected, refusing another",
				 c->n_conns);
			goto out_close;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
			log_warn("control: SO_PEERCRED: %s", strerror(errno));
			goto out_close;
		}
		k = xcalloc(1, sizeof(*k));
		if (!k)
			goto out_close;
		k->c = c;
		k->uid = cred.uid;
		k->w.fd = fd;
		k->w.events = LOOP_READ;
		k->w.cb = conn_cb;
		k->timer.cb = conn_timeout;
		if (loop_fd_add(c->a->loop, &k->w)) {
			xfree(k);
			goto out_close;
		}
		k->next = c->conns;
		c->conns = k;
		c->n_conns++;
		loop_timer_set(c->a->loop, &k->timer, CTL_TIMEOUT_MS);
		continue;
out_close:
		close(fd);
	}
}

/* Is someone listening on path? Decides between "stale" and "in use". */
static bool socket_alive(const struct sockaddr_un *addr)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool alive;

	if (fd < 0)
		return false;
	alive = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 ||
		errno == EAGAIN;
	close(fd);
	return alive;
}

int control_open(struct control **out, struct agent *a, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct control *c;
	struct stat st;
	mode_t old_mask;
	int fd, err;

	*out = NULL;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		log_error("control socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("control socket path %s exists and is not a socket",
				  path);
			return -EEXIST;
		}
		if (socket_alive(&addr)) {
			log_error("another agentd is listening on %s", path);
			return -EADDRINUSE;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			err = -errno;
			log_error("cannot remove stale socket %s: %s", path,
				  strerror(errno));
			return err;
		}
	}

	c = xcalloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->a = a;
	c->w.fd = -1;
	c->path = xstrdup(path);
	if (!c->path) {
		err = -ENOMEM;
		goto out_free;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		log_error("control socket: %s", strerror(errno));
		goto out_free;
	}
	c->w.fd = fd;
	/* The mode is set at creation so there is no window in which the
	 * socket is open to everyone. */
	old_mask = umask(0117);
	err = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? -errno : 0;
	umask(old_mask);
	if (err) {
		log_error("cannot bind control socket %s: %s", path,
			  strerror(-err));
		goto out_close;
	}
	if (listen(fd, 8) < 0) {
		err = -errno;
		log_error("cannot listen on %s: %s", path, strerror(errno));
		goto out_unlink;
	}
	c->w.events = LOOP_READ;
	c->w.cb = accept_cb;
	err = loop_fd_add(a->loop, &c->w);
	if (err)
		goto out_unlink;
	*out = c;
	return 0;

out_unlink:
	unlink(path);
out_close:
	close(fd);
out_free:
	xfree(c->path);
	xfree(c);
	return err;
}

void control_close(struct control *c)
{
	if (!c)
		return;
	while (c->conns)
		conn_free(c->conns);
	loop_fd_del(c->a->loop, &c->w);
	close(c->w.fd);
	unlink(c->path);
	xfree(c->path);
	xfree(c);
}
