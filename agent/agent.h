/* agent.h - the daemon's state: one struct agent passed explicitly. */
#ifndef AGENT_AGENT_H
#define AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"
#include "queue.h"
#include "sdnotify.h"
#include "status.h"

struct input;
struct output;
struct control;

struct agent {
	struct config *cfg;
	struct loop *loop;
	struct queue *q;
	struct input **inputs;
	size_t n_inputs;
	struct output **outputs;
	size_t n_outputs;
	struct control *ctl;
	int64_t start_mono_ms;
	int64_t pipeline_start_mono_ms; /* inputs and outputs (re)started */
	bool stopping;
	bool clock_synced;
	bool inputs_suspended;  /* a commit failed: refuse records until restart */
	bool restart_waited;    /* restart_timer: the second's wait is done */
	struct loop_timer commit_timer;
	struct loop_timer tick_timer;
	struct loop_timer reload_timer;
	struct loop_timer restart_timer; /* inputs again after a failed commit */
	struct sdnotify sd;             /* readiness and watchdog for the service manager */
};

/* Set the callbacks of the agent's timers (agent_start() does; tests that
 * build a pipeline by hand call it). */
void agent_init_timers(struct agent *a);
/* Start the pipeline on config c (owned by the agent from now on).
 * Returns 0 or -errno. */
int agent_start(struct agent *a, struct config *c);
/* Replace the running pipeline by one built on nc (owned from now on). */
int agent_reload(struct agent *a, struct config *nc);
/* Stop inputs, commit, give outputs until deadline_ms (monotonic) to
 * finish in-flight batches. True once all are done. */
bool agent_drain(struct agent *a, int64_t deadline_ms);
/* Free everything agent_start() built. */
void agent_release(struct agent *a);

/* Fill st with a snapshot (st->inputs / st->outputs are xcalloc'ed).
 * Returns 0 or -errno. status_clear() frees what it allocated. */
int agent_status_fill(struct agent *a, struct status *st);
void status_clear(struct status *st);

/* Note a write to the queue's open transaction: commits when
 * commit_records are pending, else within commit_interval. */
void agent_wrote(struct agent *a);

/* Tell every output that new records may be waiting (e.g. after a DLQ
 * replay through the control socket). */
void agent_kick_outputs(struct agent *a);

/* Ask for a config reload (as SIGHUP does). */
void agent_request_reload(struct agent *a);

#endif
