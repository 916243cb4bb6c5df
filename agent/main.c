/* main.c - agentd: parse the command line, load the config, run the loop.
 *
 *   agentd -c FILE                 run
 *   agentd --check-config FILE     validate and exit (0 ok, 1 invalid)
 *   agentd --print-config-reference[=markdown|conf]
 *   agentd --version
 * A command line that cannot be right (unknown option, missing or
 * unexpected argument) is named and exits 2.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "mem.h"

#define DRAIN_MS 5000

struct main_state {
	struct agent a;
	struct loop_timer stop_timer;
	struct loop_signal sig[3];  /* SIGTERM, SIGINT, SIGHUP */
	int64_t deadline;
};

static int64_t stop_timer_cb(struct loop_timer *t)
{
	struct main_state *m = container_of(t, struct main_state, stop_timer);

	if (agent_drain(&m->a, m->deadline)) {
		log_info("stopping: nothing left in flight");
		loop_stop(m->a.loop);
		return -1;
	}
	if (loop_now_ms() >= m->deadline) {
		log_warn("stopping with batches still in flight after %d ms: "
			 "they are sent again at the next start", DRAIN_MS);
		loop_stop(m->a.loop);
		return -1;
	}
	return 50;
}

static void on_hup(struct loop_signal *s)
{
	struct main_state *m = container_of(s, struct main_state, sig[2]);

	log_info("SIGHUP: reloading configuration");
	agent_request_reload(&m->a);
}

static void on_stop_signal(struct main_state *m, int signo)
{
	struct loop *l = m->a.loop;

	if (m->a.stopping) {
		log_warn("second stop signal: stopping now");
		loop_stop(l);
		return;
	}
	log_info("%s: stopping (inputs stop, in-flight batches get %d ms)", strsignal(signo), DRAIN_MS);
	m->deadline = loop_now_ms() + DRAIN_MS;
	agent_drain(&m->a, m->deadline);
	loop_timer_set(l, &m->stop_timer, 0);
}

static void on_term(struct loop_signal *s)
{
	on_stop_signal(container_of(s, struct main_state, sig[0]), s->signo);
}

static void on_int(struct loop_signal *s)
{
	on_stop_signal(container_of(s, struct main_state, sig[1]), s->signo);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: agentd [-c FILE]              run with FILE (default " CONFIG_DEFAULT_PATH ",\n"
		"                                     or $AGENTD_CONFIG when set)\n"
		"       agentd --check-config FILE    validate FILE; exit 0 if valid, 1 if not\n"
		"       agentd --print-config-reference[=markdown|conf]\n"
		"       agentd --version\n");
}

/* A command line that cannot be right: say what is wrong, then how it is
 * used. Exit status 2. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "agentd: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	usage(stderr);
	return 2;
}

enum action { ACT_RUN, ACT_CHECK, ACT_REFERENCE, ACT_VERSION, ACT_HELP };

struct cmdline {
	enum action act;
	const char *path;       /* -c FILE or --check-config FILE */
	bool markdown;          /* --print-config-reference */
};

/* Parse the whole command line before doing anything, so a mistake
 * anywhere in it is named. Returns 0 or the exit status 2. */
static int parse_args(int argc, char **argv, struct cmdline *cl)
{
	static const char *const flags[] = { "--version", "--help", "-h", NULL };

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq = strchr(arg, '=');
		size_t n = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);

		for (int f = 0; flags[f]; f++)
			if (eq && n == strlen(flags[f]) && !strncmp(arg, flags[f], n))
				return bad_usage("option '%s' takes no argument", flags[f]);
		if (!strcmp(arg, "--version")) {
			cl->act = ACT_VERSION;
		} else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			cl->act = ACT_HELP;
		} else if (n == 24 && !strncmp(arg, "--print-config-reference", 24)) {
			if (eq && strcmp(eq + 1, "markdown") && strcmp(eq + 1, "conf"))
				return bad_usage("--print-config-reference takes markdown or conf, not '%s'",
						 eq + 1);
			cl->act = ACT_REFERENCE;
			cl->markdown = !eq || !strcmp(eq + 1, "markdown");
		} else if (n == 14 && !strncmp(arg, "--check-config", 14)) {
			if (!eq && i + 1 >= argc)
				return bad_usage("option '%s' needs a FILE argument", "--check-config");
			cl->act = ACT_CHECK;
			cl->path = eq ? eq + 1 : argv[++i];
		} else if (!strcmp(arg, "-c")) {
			if (i + 1 >= argc)
				return bad_usage("option '%s' needs a FILE argument", "-c");
			cl->path = argv[++i];
		} else if (arg[0] == '-' && arg[1]) {
			return bad_usage("unknown option '%s'", arg);
		} else {
			return bad_usage("unexpected argument '%s'", arg);
		}
		if (cl->path && !cl->path[0])
			return bad_usage("option '%.*s' needs a FILE argument, not an empty one", (int)n, arg);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cmdline cl = { ACT_RUN, NULL, true };
	const char *path;
	struct main_state m;
	struct config *c = NULL;
	char err[512];
	int rc;

	memset(&m, 0, sizeof(m));
	rc = parse_args(argc, argv, &cl);
	if (rc)
		return rc;
	path = cl.path ? cl.path : config_default_path();
	switch (cl.act) {
	case ACT_VERSION:
		printf("agentd %s\n", AGENT_VERSION);
		return 0;
	case ACT_HELP:
		usage(stdout);
		return 0;
	case ACT_REFERENCE:
		config_print_reference(stdout, cl.markdown);
		return 0;
	case ACT_CHECK:
		rc = config_load(path, &c, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "agentd: %s\n", err);
			return 1;
		}
		printf("%s: valid (%zu input(s), %zu output(s), sha256 %.12s)\n", path,
		       c->n_inputs, c->n_outputs, c->hash);
		config_free(c);
		return 0;
	case ACT_RUN:
		break;
	}
	rc = config_load(path, &c, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "agentd: %s\n", err);
		return 1;
	}
	log_set_level((enum log_level)c->agent.log_level);
	loop_random_seed_system();
	signal(SIGPIPE, SIG_IGN);
	rc = loop_init(&m.a.loop);
	if (rc) {
		fprintf(stderr, "agentd: cannot create the event loop: %s\n", strerror(-rc));
		config_free(c);
		return 1;
	}
	m.stop_timer.cb = stop_timer_cb;
	m.sig[0] = (struct loop_signal){ .signo = SIGTERM, .cb = on_term };
	m.sig[1] = (struct loop_signal){ .signo = SIGINT, .cb = on_int };
	m.sig[2] = (struct loop_signal){ .signo = SIGHUP, .cb = on_hup };
	for (int i = 0; i < 3 && !rc; i++)
		rc = loop_signal_add(m.a.loop, &m.sig[i]);
	if (!rc)
		rc = agent_start(&m.a, c);
	if (!rc)
		rc = loop_run(m.a.loop);
	agent_release(&m.a);
	loop_free(m.a.loop);
	if (rc) {
		log_error("agentd stopped on an error: %s", strerror(-rc));
		return 1;
	}
	log_info("agentd stopped cleanly");
	return 0;
}
