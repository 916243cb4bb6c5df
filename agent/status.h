/* status.h - one snapshot of the agent's state and its two renderings.
 *
 * agentd fills a struct status for the control socket's `status` command;
 * agentctl fills one itself from the queue database when agentd is not
 * running. Both render it with the same functions, so the screen a field
 * engineer sees is the same either way.
 */
#ifndef AGENT_STATUS_H
#define AGENT_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "queue.h"

/* Kinds of device errors, in the order of enum input_err_kind. */
#define STATUS_ERR_KINDS 7
extern const char *const status_err_names[STATUS_ERR_KINDS];

struct status_input {
	char name[64], driver[32], stream[64];
	char state[128];        /* driver's own words, e.g. "tailing 3 files" */
	char last_error[256];   /* "" when none */
	int64_t last_error_wall_ms;
	int64_t records, bytes, dlq, duplicates;
	double rate;            /* records/s, moving average (see status_rate) */
	int64_t last_read_wall_ms; /* 0 = never */
	bool blocked;           /* queue full under on_full = block */
	/* Device inputs (the driver reports a connection). */
	bool device;
	bool connected;
	char conn_why[160];     /* why not connected, "" when connected */
	int64_t requests;
	int64_t errors[STATUS_ERR_KINDS]; /* by kind, as status_err_names[] */
	int64_t last_sample_age_ms; /* -1 = no sample yet */
	int64_t missed_samples; /* deadlines skipped after stalls */
};

struct status_output {
	char name[64], type[32];
	char endpoint[256];     /* type's describe() line */
	bool connected;
	char why[256];          /* why not connected / last failure, "" if none */
	int64_t last_ack_wall_ms; /* 0 = never */
	int64_t cursor;
	int64_t backlog_records;
	int64_t backlog_bytes;  /* estimate: its share of the queue's disk use */
	int64_t backlog_oldest_wall_ms;
	int64_t inflight_batches;
	int64_t delivered_records, delivered_batches;
	int64_t dlq_records;
	int64_t retries;        /* total retries this run */
	int64_t next_retry_in_ms; /* -1 = none scheduled */
	double rate;            /* records/s acknowledged, moving average (see status_rate) */
	/* The configured client certificate ("" when none): its validity, or
	 * why it cannot be read. */
	char cert_path[256];
	int64_t cert_not_before_wall_ms, cert_not_after_wall_ms;
	char cert_error[160];
};

struct status {
	bool running;           /* false: read from the database, agentd down */
	char version[32];
	int pid;
	int64_t now_wall_ms;
	int64_t uptime_ms;
	/* How long the counters of inputs and outputs have counted (since
	 * start or the last reload); 0 = unknown. */
	int64_t counting_ms;
	char agent_id[64];
	char config_path[256];
	char config_hash[65];
	char state_dir[256];
	bool clock_synced;
	int64_t mem_bytes;
	struct queue_stats queue;
	int on_full;            /* enum on_full */
	struct status_input *inputs;
	int n_inputs;
	struct status_output *outputs;
	int n_outputs;
};

/* A rate is a short moving average over one-second intervals, which starts
 * from zero. Until counters have run this long, the rate shown is their
 * count over the time since they started instead, so a busy agent just
 * started does not read "0.0 rec/s" beside thousands of records. */
#define STATUS_RATE_WARMUP_MS 5000

/* The rate to show for `count` records counted for `counting_ms`, given
 * the moving average `avg` (what struct status_input/output hold). */
double status_rate(double avg, int64_t count, int64_t counting_ms);

/* Render for people (one screen) or as JSON. Append to out; 0 or -ENOMEM.
 * Rates are shown per status_rate(). */
int status_render_text(const struct status *s, struct buf *out);
int status_render_json(const struct status *s, struct buf *out);

#endif
