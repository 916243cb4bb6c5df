/* main.c - agentd: parse the command line, load the config, run the loop.
 *
 *   agentd -c FILE                 run
 *   agentd --check-config FILE     validate and exit (0 ok, 1 invalid)
 *   agentd --print-config-reference[=markdown|conf]
 *   agentd --version
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "mem.h"

#define DEFAULT_CONFIG "/etc/agentd/agentd.conf"
#define DRAIN_MS 5000

struct main_state {
	struct agent a;
	struct loop_timer stop_timer;
	int64_t deadline;
};

static int64_t stop_timer_cb(struct loop_timer *t)
{
	struct main_state *m = container_of(t, struct main_state, stop_timer);

	if (agent_drain(&m->a, m->deadline) || loop_now_ms() >= m->deadline) {
		loop_stop(m->a.loop);
		return -1;
	}
	return 50;
}

static void on_signal(struct loop *l, int signo, void *arg)
{
	struct main_state *m = arg;

	if (signo == SIGHUP) {
		log_info("SIGHUP: reloading configuration");
		agent_request_reload(&m->a);
		return;
	}
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

static void usage(FILE *f)
{
	fprintf(f,
		"usage: agentd [-c FILE]              run with FILE (default " DEFAULT_CONFIG ")\n"
		"       agentd --check-config FILE    validate FILE; exit 0 if valid, 1 if not\n"
		"       agentd --print-config-reference[=markdown|conf]\n"
		"       agentd --version\n");
}

int main(int argc, char **argv)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	const char *path = DEFAULT_CONFIG;
	struct main_state m;
	struct config *c = NULL;
	char err[512];
	int rc;

	memset(&m, 0, sizeof(m));
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (!strcmp(arg, "--version")) {
			printf("agentd %s\n", AGENT_VERSION);
			return 0;
		} else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strncmp(arg, "--print-config-reference", 24)) {
			config_print_reference(stdout, strcmp(arg + 24, "=conf") != 0);
			return 0;
		} else if (!strcmp(arg, "--check-config") && i + 1 < argc) {
			rc = config_load(argv[i + 1], &c, err, sizeof(err));
			if (rc) {
				fprintf(stderr, "agentd: %s\n", err);
				return 1;
			}
			printf("%s: valid (%zu input(s), %zu output(s), sha256 %.12s)\n", argv[i + 1],
			       c->n_inputs, c->n_outputs, c->hash);
			config_free(c);
			return 0;
		} else if (!strcmp(arg, "-c") && i + 1 < argc) {
			path = argv[++i];
		} else {
			usage(stderr);
			return 2;
		}
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
	rc = loop_signals(m.a.loop, sigs, sizeof(sigs) / sizeof(sigs[0]), on_signal, &m);
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
