/* agent.c - the daemon's life: start, group commits, the one-second tick,
 * reload, orderly stop, and the status snapshot.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/timex.h>
#include <unistd.h>

#include "agent.h"
#include "control.h"
#include "fs.h"
#include "input.h"
#include "log.h"
#include "mem.h"
#include "outputs.h"

/* Queue stamps, retry deadlines and certificate dates are time_t: a 32-bit
 * time_t ends in 2038, within the life of a gateway installed today. musl
 * and 64-bit glibc have 64 bits; 32-bit glibc needs _TIME_BITS=64. */
_Static_assert(sizeof(time_t) >= 8, "time_t must have 64 bits (build with -D_TIME_BITS=64)");

#define TICK_MS 1000
/* 2025-01-01T00:00:00Z: a wall clock before this has never been set. */
#define CLOCK_FLOOR_MS 1735689600000LL

static bool clock_synced(const struct agent *a)
{
	struct timex tx;
	int st;

	if (loop_wall_ms() < CLOCK_FLOOR_MS)
		return false;
	if (a->cfg->agent.trust_clock)
		return true;
	memset(&tx, 0, sizeof(tx));
	st = adjtimex(&tx);
	return st != -1 && st != TIME_ERROR && !(tx.status & STA_UNSYNC);
}

void agent_kick_outputs(struct agent *a)
{
	for (size_t i = 0; i < a->n_outputs; i++)
		output_kick(a->outputs[i]);
}

/* Runs from the loop, never inside a driver's call: first stop every
 * input that re-reads its source, a second later start those again from
 * their durable positions, and replay or tell the others. */
static int64_t restart_cb(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, restart_timer);
	bool stopped = false;

	if (a->stopping)
		return -1;
	for (size_t i = 0; i < a->n_inputs; i++) {
		if (input_rereads(a->inputs[i]) && input_running(a->inputs[i])) {
			input_stop(a->inputs[i]);
			stopped = true;
		}
	}
	/* A second before records are taken again: a disk that stays full
	 * costs one attempt a second, whatever kind the inputs are. */
	if (stopped || !a->restart_waited) {
		a->restart_waited = true;
		return 1000;
	}
	a->restart_waited = false;
	a->inputs_suspended = false;
	for (size_t i = 0; i < a->n_inputs; i++) {
		if (input_rereads(a->inputs[i]))
			input_start(a->inputs[i]);
		else
			input_recover(a->inputs[i]);
	}
	return -1;
}

/* The transaction is gone: drivers must re-read from the positions that
 * are durable, or their lines would be lost. Until they restart, records
 * are refused, so nothing is appended behind the hole; a disk that stays
 * full costs one attempt a second. */
static void restart_inputs(struct agent *a, int err)
{
	char why[160];

	snprintf(why, sizeof(why), "queue commit failed (%s): reading again from the last saved "
		 "position in a second", strerror(-err));
	a->inputs_suspended = true;
	for (size_t i = 0; i < a->n_inputs; i++) {
		input_commit_failed(a->inputs[i]);
		input_suspend(a->inputs[i], why);
	}
	loop_timer_set(a->loop, &a->restart_timer, 0);
}

static int agent_commit(struct agent *a)
{
	int rc;

	loop_timer_cancel(a->loop, &a->commit_timer);
	/* Even with nothing pending: a transaction SQLite rolled back by
	 * itself (disk full, I/O error) is reported by this commit. */
	rc = queue_commit(a->q);
	if (rc) {
		log_error("queue commit failed: %s; inputs restart from their saved positions",
			  strerror(-rc));
		restart_inputs(a, rc);
		return rc;
	}
	for (size_t i = 0; i < a->n_inputs; i++)
		input_committed(a->inputs[i]);
	rc = queue_enforce_budget(a->q);
	if (!rc && queue_pending(a->q))
		rc = queue_commit(a->q);
	agent_kick_outputs(a);
	if (!queue_full(a->q))
		for (size_t i = 0; i < a->n_inputs; i++)
			input_resume(a->inputs[i]);
	return rc;
}

static int64_t commit_timer_cb(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, commit_timer);

	agent_commit(a);
	return -1;
}

void agent_wrote(struct agent *a)
{
	/* A commit group is also bounded in bytes, so the budget is checked
	 * (after each commit) before one group can overshoot it by much. */
	if (queue_pending(a->q) >= a->cfg->queue.commit_records ||
	    queue_pending_bytes(a->q) >= queue_budget(a->q) / 32)
		agent_commit(a);
	else if (!a->commit_timer.armed)
		loop_timer_set(a->loop, &a->commit_timer, a->cfg->queue.commit_interval_ms);
}

static int64_t tick_cb(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, tick_timer);
	bool synced = clock_synced(a);

	if (synced != a->clock_synced)
		log_info("wall clock is %s", synced ? "synchronised" : "NOT synchronised");
	a->clock_synced = synced;
	for (size_t i = 0; i < a->n_inputs; i++)
		input_tick(a->inputs[i], TICK_MS);
	for (size_t i = 0; i < a->n_outputs; i++)
		output_tick(a->outputs[i], TICK_MS);
	/* Trims by outputs free space; under block this is what lets inputs go on. */
	if (queue_full(a->q)) {
		queue_enforce_budget(a->q);
		agent_commit(a);
	}
	return TICK_MS;
}

static void stop_pipeline(struct agent *a)
{
	for (size_t i = 0; i < a->n_inputs; i++)
		input_free(a->inputs[i]);
	xfree(a->inputs);
	a->inputs = NULL;
	a->n_inputs = 0;
	if (a->q)
		agent_commit(a);
	for (size_t i = 0; i < a->n_outputs; i++)
		output_free(a->outputs[i]);
	xfree(a->outputs);
	a->outputs = NULL;
	a->n_outputs = 0;
	loop_timer_cancel(a->loop, &a->commit_timer);
	loop_timer_cancel(a->loop, &a->restart_timer);
	queue_close(a->q);
	a->q = NULL;
}

static int start_pipeline(struct agent *a)
{
	struct config *c = a->cfg;
	const char **names = NULL;
	struct queue_opts qo = { 0 };
	char path[512];
	size_t i;
	int rc;

	a->pipeline_start_mono_ms = loop_now_ms();
	rc = fs_mkdir_p(c->agent.state_dir);
	if (rc) {
		log_error("cannot create state_dir %s: %s", c->agent.state_dir, strerror(-rc));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/queue.db", c->agent.state_dir);
	names = xcalloc(c->n_outputs, sizeof(*names));
	a->inputs = xcalloc(c->n_inputs, sizeof(*a->inputs));
	a->outputs = xcalloc(c->n_outputs, sizeof(*a->outputs));
	if (!names || !a->inputs || !a->outputs) {
		rc = -ENOMEM;
		goto out;
	}
	i = 0;
	for (struct output_conf *oc = c->outputs; oc; oc = oc->next)
		names[i++] = oc->name;
	qo.path = path;
	qo.synchronous = c->queue.synchronous;
	qo.max_bytes = c->queue.max_bytes;
	qo.on_full = c->queue.on_full;
	qo.dedupe_window = c->queue.dedupe_window;
	rc = queue_open(&a->q, &qo, names, c->n_outputs);
	if (rc) {
		log_error("cannot open the queue %s: %s", path, strerror(-rc));
		goto out;
	}
	for (struct output_conf *oc = c->outputs; oc; oc = oc->next) {
		rc = output_create(a, oc, &a->outputs[a->n_outputs]);
		if (rc)
			goto out;
		a->n_outputs++;
	}
	for (struct input_conf *ic = c->inputs; ic; ic = ic->next) {
		rc = input_create(a, ic, &a->inputs[a->n_inputs]);
		if (rc)
			goto out;
		a->n_inputs++;
	}
	/* An output that cannot start (or an input that cannot) shows it in
	 * status; the others go on. */
	for (i = 0; i < a->n_outputs; i++)
		output_start(a->outputs[i]);
	for (i = 0; i < a->n_inputs; i++)
		input_start(a->inputs[i]);
	rc = 0;
out:
	xfree(names);
	return rc;
}

static int64_t reload_cb(struct loop_timer *t);

static void notify_ready(struct agent *a)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=running: %zu input(s), %zu output(s)",
		 a->n_inputs, a->n_outputs);
	sdnotify_send(&a->sd, msg);
}

void agent_init_timers(struct agent *a)
{
	a->commit_timer.cb = commit_timer_cb;
	a->tick_timer.cb = tick_cb;
	a->reload_timer.cb = reload_cb;
	a->restart_timer.cb = restart_cb;
}

int agent_start(struct agent *a, struct config *c)
{
	int rc;

	a->cfg = c;
	a->start_mono_ms = loop_now_ms();
	agent_init_timers(a);
	a->clock_synced = clock_synced(a);
	if (!a->clock_synced)
		log_warn("wall clock is NOT synchronised: records are marked \"clock\":\"unsynced\"");
	rc = fs_mkdir_p(c->agent.state_dir);
	if (rc) {
		log_error("cannot create state_dir %s: %s", c->agent.state_dir, strerror(-rc));
		return rc;
	}
	/* The socket first: a second agentd on the same state must stop
	 * before it touches the queue. */
	rc = control_open(&a->ctl, a, c->agent.control_socket);
	if (rc) {
		log_error("cannot open control socket %s: %s", c->agent.control_socket,
			  rc == -EADDRINUSE ? "another agentd is running with this state" : strerror(-rc));
		return rc;
	}
	rc = start_pipeline(a);
	if (rc)
		return rc;
	loop_timer_set(a->loop, &a->tick_timer, TICK_MS);
	log_info("agentd %s started: %zu input(s), %zu output(s), queue in %s", AGENT_VERSION,
		 a->n_inputs, a->n_outputs, c->agent.state_dir);
	sdnotify_init(&a->sd, a->loop);
	notify_ready(a);
	return 0;
}

int agent_reload(struct agent *a, struct config *nc)
{
	bool same_socket = !strcmp(nc->agent.control_socket, a->cfg->agent.control_socket);
	int rc;

	/* Batches in flight are abandoned: their records stay in the queue
	 * behind the outputs' durable cursors and are sent again. */
	stop_pipeline(a);
	if (!same_socket) {
		control_close(a->ctl);
		a->ctl = NULL;
	}
	config_free(a->cfg);
	a->cfg = nc;
	log_set_level((enum log_level)nc->agent.log_level);
	rc = start_pipeline(a);
	if (!rc && !same_socket)
		rc = control_open(&a->ctl, a, nc->agent.control_socket);
	if (!rc)
		log_info("configuration %s reloaded (sha256 %.12s)", nc->path, nc->hash);
	return rc;
}

bool agent_drain(struct agent *a, int64_t deadline_ms)
{
	bool done = true;

	if (!a->stopping)
		sdnotify_send(&a->sd, "STOPPING=1\nSTATUS=stopping: finishing batches in flight");
	a->stopping = true;
	/* Sources that wait for their records to be durable are told before
	 * their drivers stop, so a clean stop acknowledges what it took. */
	if (!agent_commit(a))
		for (size_t i = 0; i < a->n_inputs; i++)
			input_flush_committed(a->inputs[i]);
	for (size_t i = 0; i < a->n_inputs; i++)
		input_stop(a->inputs[i]);
	agent_commit(a);
	for (size_t i = 0; i < a->n_outputs; i++)
		done &= output_drain(a->outputs[i], deadline_ms);
	return done;
}

void agent_release(struct agent *a)
{
	sdnotify_release(&a->sd);
	loop_timer_cancel(a->loop, &a->tick_timer);
	stop_pipeline(a);
	control_close(a->ctl);
	a->ctl = NULL;
	config_free(a->cfg);
	a->cfg = NULL;
}

int agent_status_fill(struct agent *a, struct status *st)
{
	memset(st, 0, sizeof(*st));
	st->running = true;
	snprintf(st->version, sizeof(st->version), "%s", AGENT_VERSION);
	st->pid = (int)getpid();
	st->now_wall_ms = loop_wall_ms();
	st->uptime_ms = loop_now_ms() - a->start_mono_ms;
	/* Inputs and outputs, and their counters, are new since the last
	 * (re)start of the pipeline. */
	st->counting_ms = loop_now_ms() - a->pipeline_start_mono_ms;
	if (st->counting_ms < 1)
		st->counting_ms = 1;
	snprintf(st->agent_id, sizeof(st->agent_id), "%s", a->cfg->agent.id);
	snprintf(st->config_path, sizeof(st->config_path), "%s", a->cfg->path);
	snprintf(st->config_hash, sizeof(st->config_hash), "%s", a->cfg->hash);
	snprintf(st->state_dir, sizeof(st->state_dir), "%s", a->cfg->agent.state_dir);
	st->clock_synced = a->clock_synced;
	st->mem_bytes = (int64_t)mem_in_use();
	st->on_full = a->cfg->queue.on_full;
	if (a->q)
		queue_stats(a->q, &st->queue);
	st->inputs = xcalloc(a->n_inputs ? a->n_inputs : 1, sizeof(*st->inputs));
	st->outputs = xcalloc(a->n_outputs ? a->n_outputs : 1, sizeof(*st->outputs));
	if (!st->inputs || !st->outputs) {
		status_clear(st);
		return -ENOMEM;
	}
	for (size_t i = 0; i < a->n_inputs; i++)
		input_fill_status(a->inputs[i], &st->inputs[i]);
	for (size_t i = 0; i < a->n_outputs; i++)
		output_fill_status(a->outputs[i], &st->outputs[i]);
	st->n_inputs = (int)a->n_inputs;
	st->n_outputs = (int)a->n_outputs;
	return 0;
}

void status_clear(struct status *st)
{
	xfree(st->inputs);
	xfree(st->outputs);
	st->inputs = NULL;
	st->outputs = NULL;
	st->n_inputs = st->n_outputs = 0;
}

static int64_t reload_cb(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, reload_timer);
	struct config *nc = NULL;
	char err[512];
	int rc;

	if (a->stopping)
		return -1;
	rc = config_load(a->cfg->path, &nc, err, sizeof(err));
	if (rc) {
		log_error("reload refused, keeping the running configuration: %s", err);
		return -1;
	}
	if (!strcmp(nc->hash, a->cfg->hash)) {
		log_info("reload: %s unchanged", nc->path);
		config_free(nc);
		return -1;
	}
	sdnotify_send(&a->sd, "RELOADING=1");
	rc = agent_reload(a, nc);
	if (rc)
		log_error("reload: the new configuration failed to start: %s", strerror(-rc));
	notify_ready(a);
	return -1;
}

void agent_request_reload(struct agent *a)
{
	loop_timer_set(a->loop, &a->reload_timer, 0);
}
