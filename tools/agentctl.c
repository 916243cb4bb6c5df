/* agentctl.c - the command line a field engineer uses to ask agentd how it
 * is doing and to handle the dead-letter queue.
 *
 * It sends one request line over the control socket and prints the answer.
 * When agentd is not running it reads (or, for dlq replay/purge, changes) the
 * queue database itself, so the box can still be diagnosed with the daemon
 * down. Exit codes: 0 ok, 1 error, 2 usage, 3 agentd not running (for
 * status: the screen was built from the database).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "certinfo.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "mem.h"
#include "queue.h"
#include "status.h"

#ifndef AGENT_VERSION
#define AGENT_VERSION "unknown"
#endif

#define DEFAULT_STATE_DIR "/var/lib/agentd"
/* agentd answers from its loop within milliseconds; this only bounds a
 * daemon that is wedged. */
#define REPLY_TIMEOUT_S 30

enum {
	EXIT_OK = 0,
	EXIT_ERROR = 1,
	EXIT_USAGE = 2,
	EXIT_NOT_RUNNING = 3,
};

struct ctl {
	const char *config_path;
	bool config_given;
	const char *socket_opt;
	char peek_socket[108];  /* from the [agent] section of a broken file */
	struct config *cfg;
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char state_dir[256];
	char db_path[300];
};

struct command {
	const char *name;
	int (*run)(struct ctl *x, int argc, char **argv);
	const char *usage;
	const char *help;
};

static int cmd_help(struct ctl *x, int argc, char **argv);

static void die_usage(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* A usage problem: what is wrong, then where to read more. */
static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("agentctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (agentctl help)\n", stderr);
}

/* Which config, socket and database to use. A missing default config is
 * normal on a box configured elsewhere; a broken one is reported, and what
 * can be done without it still is. */
static void ctl_setup(struct ctl *x)
{
	const char *dir = DEFAULT_STATE_DIR;
	char err[512];
	int rc;

	rc = config_load(x->config_path, &x->cfg, err, sizeof(err));
	if (rc && (x->config_given || rc != -ENOENT))
		fprintf(stderr, "agentctl: warning: %s\n", err[0] ? err :
			strerror(-rc));
	if (rc) {
		struct agent_conf ac;

		x->cfg = NULL;
		/* agentd may still run on the last valid version of the
		 * file: its [agent] section is enough to find it. */
		if (rc != -ENOENT && config_peek_agent(x->config_path, &ac) == 0) {
			snprintf(x->state_dir, sizeof(x->state_dir), "%s", ac.state_dir);
			if (ac.control_socket)
				snprintf(x->peek_socket, sizeof(x->peek_socket), "%s",
					 ac.control_socket);
			config_agent_release(&ac);
			dir = x->state_dir;
		}
	}
	if (x->cfg && x->cfg->agent.state_dir)
		dir = x->cfg->agent.state_dir;
	if (dir != x->state_dir)
		snprintf(x->state_dir, sizeof(x->state_dir), "%s", dir);
	snprintf(x->db_path, sizeof(x->db_path), "%s/queue.db", dir);
	if (x->socket_opt)
		snprintf(x->socket_path, sizeof(x->socket_path), "%s",
			 x->socket_opt);
	else if (x->cfg && x->cfg->agent.control_socket)
		snprintf(x->socket_path, sizeof(x->socket_path), "%s",
			 x->cfg->agent.control_socket);
	else if (x->peek_socket[0])
		snprintf(x->socket_path, sizeof(x->socket_path), "%s",
			 x->peek_socket);
	else
		/* A Unix socket path holds at most 107 bytes. */
		snprintf(x->socket_path, sizeof(x->socket_path), "%.*s/agentd.sock",
			 (int)(sizeof(x->socket_path) - sizeof("/agentd.sock")), dir);
	/* Without a config every path below is a guess: say which file was
	 * looked for and what is used instead, so a wrong guess is seen. */
	if (rc == -ENOENT)
		fprintf(stderr, "agentctl: no config file %s: using the defaults (socket %s, queue %s)\n",
			x->config_path, x->socket_path, x->db_path);
}

/* Send one line and read the whole answer. Returns 0, or -errno of the
 * connect (-ENOENT / -ECONNREFUSED: nobody is listening) or of the I/O. */
static int request(const struct ctl *x, const char *line, struct buf *resp)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = REPLY_TIMEOUT_S };
	size_t len = strlen(line), off = 0;
	char chunk[8192];
	ssize_t n;
	int fd, rc = 0;

	if (strlen(x->socket_path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, x->socket_path, strlen(x->socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		rc = -errno;
		goto out_close;
	}
	while (off < len) {
		n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out_close;
		}
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto out_close;
		}
		if (n == 0)
			break;
		if (buf_add(resp, chunk, (size_t)n)) {
			rc = -ENOMEM;
			goto out_close;
		}
	}
out_close:
	close(fd);
	return rc;
}

/* "ok\n<body>" prints the body; "error <msg>" goes to stderr. */
static int print_response(const struct buf *resp)
{
	const char *p = resp->p ? resp->p : "";

	if (!strncmp(p, "ok\n", 3)) {
		fwrite(p + 3, 1, resp->len - 3, stdout);
		return fflush(stdout) ? EXIT_ERROR : EXIT_OK;
	}
	if (!strncmp(p, "error ", 6)) {
		fprintf(stderr, "agentctl: %s", p + 6);
		if (resp->len && p[resp->len - 1] != '\n')
			fputc('\n', stderr);
		return EXIT_ERROR;
	}
	fprintf(stderr, "agentctl: agentd sent no answer%s\n",
		resp->len ? " it understood" : " (did it stop?)");
	return EXIT_ERROR;
}

static bool not_running(int rc)
{
	return rc == -ENOENT || rc == -ECONNREFUSED;
}

static int report_connect_error(const struct ctl *x, int rc)
{
	if (rc == -EACCES)
		fprintf(stderr, "agentctl: permission denied on %s: run as root or as a member of agentd's group\n",
			x->socket_path);
	else
		fprintf(stderr, "agentctl: cannot talk to agentd on %s: %s\n",
			x->socket_path, strerror(-rc));
	return EXIT_ERROR;
}

/* Join the words into one request line; the protocol splits on spaces, so
 * a word may not hold any. */
static int join_request(struct buf *line, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (!argv[i][0] || strpbrk(argv[i], " \t\r\n")) {
			die_usage("argument '%s' may not be empty or contain spaces",
				  argv[i]);
			return EXIT_USAGE;
		}
		if ((i && buf_addc(line, ' ')) || buf_adds(line, argv[i]))
			return EXIT_ERROR;
	}
	return buf_addc(line, '\n') ? EXIT_ERROR : EXIT_OK;
}

/* Ask agentd. Returns an exit code, or -1 when agentd is not running. */
static int ask(struct ctl *x, int argc, char **argv)
{
	struct buf line = BUF_INIT, resp = BUF_INIT;
	int rc, ex;

	ex = join_request(&line, argc, argv);
	if (ex)
		goto out_release;
	rc = request(x, line.p, &resp);
	if (not_running(rc))
		ex = -1;
	else if (rc)
		ex = report_connect_error(x, rc);
	else
		ex = print_response(&resp);
out_release:
	buf_release(&line);
	buf_release(&resp);
	return ex;
}

static bool db_exists(const struct ctl *x)
{
	struct stat st;

	return stat(x->db_path, &st) == 0;
}

static int no_queue(const struct ctl *x)
{
	fprintf(stderr, "agentctl: agentd is not running and no queue exists at %s\n",
		x->db_path);
	return EXIT_ERROR;
}

static int open_queue(struct ctl *x, bool readonly, struct queue **q)
{
	struct queue_opts o = { .path = x->db_path, .readonly = readonly };
	const char **names = NULL;
	size_t n = 0;
	int rc;

	if (x->cfg) {
		o.synchronous = x->cfg->queue.synchronous;
		o.max_bytes = x->cfg->queue.max_bytes;
		o.on_full = x->cfg->queue.on_full;
	}
	if (!readonly) {
		/* Opening for writing drops the cursors of outputs it is not
		 * told about: without the config that would be all of them. */
		if (!x->cfg) {
			fprintf(stderr, "agentctl: cannot change %s without a valid config (-c)\n",
				x->db_path);
			return -EINVAL;
		}
		names = xcalloc(x->cfg->n_outputs + 1, sizeof(*names));
		if (!names)
			return -ENOMEM;
		for (struct output_conf *oc = x->cfg->outputs; oc; oc = oc->next)
			names[n++] = oc->name;
	}
	rc = queue_open(q, &o, names, n);
	xfree(names);
	if (rc)
		fprintf(stderr, "agentctl: cannot open %s: %s\n", x->db_path,
			strerror(-rc));
	return rc;
}

/* The status agentd would give, from what the database and config know. */
static int offline_status(struct ctl *x, struct queue *q, struct status *st)
{
	struct config *c = x->cfg;
	int i;

	memset(st, 0, sizeof(*st));
	snprintf(st->version, sizeof(st->version), "%s", AGENT_VERSION);
	st->now_wall_ms = loop_wall_ms();
	snprintf(st->state_dir, sizeof(st->state_dir), "%s", x->state_dir);
	if (queue_stats(q, &st->queue))
		fprintf(stderr, "agentctl: warning: cannot read queue statistics\n");
	if (!c)
		return 0;
	snprintf(st->agent_id, sizeof(st->agent_id), "%s",
		 c->agent.id ? c->agent.id : "");
	snprintf(st->config_path, sizeof(st->config_path), "%s", c->path);
	snprintf(st->config_hash, sizeof(st->config_hash), "%s", c->hash);
	st->on_full = c->queue.on_full;
	st->inputs = xcalloc(c->n_inputs + 1, sizeof(*st->inputs));
	st->outputs = xcalloc(c->n_outputs + 1, sizeof(*st->outputs));
	if (!st->inputs || !st->outputs)
		return -ENOMEM;
	i = 0;
	for (struct input_conf *ic = c->inputs; ic; ic = ic->next, i++) {
		struct status_input *in = &st->inputs[i];

		snprintf(in->name, sizeof(in->name), "%s", ic->name);
		snprintf(in->driver, sizeof(in->driver), "%s", ic->driver);
		snprintf(in->stream, sizeof(in->stream), "%s",
			 ic->stream ? ic->stream : ic->name);
		snprintf(in->state, sizeof(in->state), "agentd not running");
	}
	st->n_inputs = i;
	i = 0;
	for (struct output_conf *oc = c->outputs; oc; oc = oc->next, i++) {
		struct status_output *o = &st->outputs[i];

		snprintf(o->name, sizeof(o->name), "%s", oc->name);
		snprintf(o->type, sizeof(o->type), "%s", oc->type);
		snprintf(o->why, sizeof(o->why), "agentd not running");
		o->next_retry_in_ms = -1;
		o->cursor = queue_cursor(q, oc->name);
		if (queue_backlog(q, oc->name, &o->backlog_records,
				  &o->backlog_oldest_wall_ms)) {
			o->backlog_records = 0;
			o->backlog_oldest_wall_ms = 0;
		}
		o->backlog_bytes = queue_backlog_bytes(q, o->backlog_records);
		cert_status_fill(oc, o);
	}
	st->n_outputs = i;
	return 0;
}

static int cmd_status(struct ctl *x, int argc, char **argv)
{
	bool json = argc >= 2 && !strcmp(argv[1], "--json");
	struct buf out = BUF_INIT;
	struct queue *q = NULL;
	struct status st;
	int ex, rc;

	if (argc >= 2 && !json) {
		die_usage("status: %s '%s' (usage: status [--json])",
			  argv[1][0] == '-' ? "unknown option" : "unexpected argument", argv[1]);
		return EXIT_USAGE;
	}
	if (argc > 2) {
		die_usage("status: unexpected argument '%s' (usage: status [--json])", argv[2]);
		return EXIT_USAGE;
	}
	ex = ask(x, argc, argv);
	if (ex >= 0)
		return ex;

	if (!db_exists(x))
		return no_queue(x);
	if (open_queue(x, true, &q))
		return EXIT_ERROR;
	rc = offline_status(x, q, &st);
	if (!rc)
		rc = json ? status_render_json(&st, &out) :
			    status_render_text(&st, &out);
	if (rc) {
		fprintf(stderr, "agentctl: %s\n", strerror(-rc));
		ex = EXIT_ERROR;
	} else {
		fwrite(out.p, 1, out.len, stdout);
		ex = fflush(stdout) ? EXIT_ERROR : EXIT_NOT_RUNNING;
	}
	status_clear(&st);
	buf_release(&out);
	queue_close(q);
	return ex;
}

static int cmd_dlq(struct ctl *x, int argc, char **argv)
{
	static const char *const subs[] = { "list", "show", "replay", "purge" };
	struct agent a = { 0 };
	struct buf line = BUF_INIT, resp = BUF_INIT;
	bool changes, known = false;
	int ex;

	for (size_t i = 0; argc > 1 && i < 4; i++)
		known |= !strcmp(argv[1], subs[i]);
	if (!known) {
		die_usage("usage: %s", "dlq list|show|replay|purge ...");
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "list") && argc != 3) {
		fprintf(stderr, "agentctl: usage: dlq %s %s (agentctl help)\n",
			argv[1], strcmp(argv[1], "show") ? "ID|all" : "ID");
		return EXIT_USAGE;
	}
	ex = ask(x, argc, argv);
	if (ex >= 0)
		return ex;

	/* agentd is down: the same command, run on the database here. */
	if (!db_exists(x))
		return no_queue(x);
	changes = !strcmp(argv[1], "replay") || !strcmp(argv[1], "purge");
	if (open_queue(x, !changes, &a.q))
		return EXIT_ERROR;
	a.cfg = x->cfg;
	fprintf(stderr, "agentctl: agentd is not running; using %s directly\n",
		x->db_path);
	ex = join_request(&line, argc, argv);
	if (!ex && control_exec(&a, geteuid(), line.p, &resp)) {
		fprintf(stderr, "agentctl: out of memory\n");
		ex = EXIT_ERROR;
	} else if (!ex) {
		ex = print_response(&resp);
	}
	buf_release(&line);
	buf_release(&resp);
	queue_close(a.q);
	return ex;
}

static int cmd_simple(struct ctl *x, int argc, char **argv)
{
	int ex;

	if (argc != 1) {
		die_usage("'%s' takes no arguments", argv[0]);
		return EXIT_USAGE;
	}
	ex = ask(x, argc, argv);
	if (ex >= 0)
		return ex;
	fprintf(stderr, "agentctl: agentd is not running (nothing listens on %s)\n",
		x->socket_path);
	return EXIT_NOT_RUNNING;
}

static int cmd_version(struct ctl *x, int argc, char **argv)
{
	if (argc > 1) {
		die_usage("'%s' takes no arguments", argv[0]);
		return EXIT_USAGE;
	}
	printf("agentctl %s\n", AGENT_VERSION);
	return EXIT_OK;
}

static const struct command commands[] = {
	{ "status", cmd_status, "status [--json]",
	  "what agentd is doing; from the database if it is not running" },
	{ "dlq", cmd_dlq, "dlq list [--after ID] [--limit N] [--json]",
	  "list dead-lettered records (100 at a time)" },
	{ "dlq", cmd_dlq, "dlq show ID",
	  "one dead-lettered record with its data" },
	{ "dlq", cmd_dlq, "dlq replay ID|all",
	  "queue dead-lettered records again (needs root or agentd's user)" },
	{ "dlq", cmd_dlq, "dlq purge ID|all",
	  "delete dead-lettered records (needs root or agentd's user)" },
	{ "ping", cmd_simple, "ping", "check that agentd answers" },
	{ "reload", cmd_simple, "reload",
	  "reload the config file, as SIGHUP does (needs root or agentd's user)" },
	{ "version", cmd_version, "version", "print agentctl's version" },
	{ "help", cmd_help, "help", "this text" },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
	fprintf(f,
		"usage: agentctl [-c CONFIG] [-s SOCKET] COMMAND [ARGS]\n"
		"\n"
		"  -c CONFIG   config file (default %s, or $AGENTD_CONFIG when set)\n"
		"  -s SOCKET   control socket (default: agent.control_socket from the config)\n"
		"\n"
		"commands:\n", CONFIG_DEFAULT_PATH);
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %s\n      %s\n", commands[i].usage, commands[i].help);
	fprintf(f,
		"\n"
		"exit status: 0 ok, 1 error, 2 usage, 3 agentd not running\n"
		"(for status: the screen was built from the database)\n");
}

static int cmd_help(struct ctl *x, int argc, char **argv)
{
	if (argc > 1) {
		die_usage("'%s' takes no arguments", argv[0]);
		return EXIT_USAGE;
	}
	usage(stdout);
	return EXIT_OK;
}

/* What getopt refused, in words: which option, and what is wrong with it. */
static int bad_option(int opt, char **argv)
{
	const char *arg = argv[optind - 1];

	if (opt == ':')
		die_usage("option '-%c' needs an argument (%s)", optopt,
			  optopt == 'c' ? "a config file" : "a socket path");
	else if (optopt && !strncmp(arg, "--", 2))
		die_usage("option '%.*s' takes no argument", (int)strcspn(arg, "="), arg);
	else if (optopt)
		die_usage("unknown option '-%c'", optopt);
	else
		die_usage("unknown option '%s'", arg);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	struct ctl x = { .config_path = config_default_path() };
	const struct command *cmd = NULL;
	int opt, ex;

	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};

	log_set_level(LOGL_WARN);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:c:s:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
		case 's':
			if (!*optarg) {
				die_usage("option '-%c' needs %s, not an empty argument", opt,
					  opt == 'c' ? "a config file" : "a socket path");
				return EXIT_USAGE;
			}
			if (opt == 's') {
				x.socket_opt = optarg;
				break;
			}
			x.config_path = optarg;
			x.config_given = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			return cmd_version(&x, 0, NULL);
		default:
			return bad_option(opt, argv);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < N_COMMANDS && !cmd; i++)
		if (!strcmp(commands[i].name, argv[optind]))
			cmd = &commands[i];
	if (!cmd) {
		die_usage("unknown command '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (cmd->run != cmd_help && cmd->run != cmd_version)
		ctl_setup(&x);
	ex = cmd->run(&x, argc - optind, argv + optind);
	config_free(x.cfg);
	return ex;
}
