/* output.h - outputs: the type interface and the core's batcher around it.
 *
 * The core reads records from the queue per output, encodes a batch (one zstd
 * frame of NDJSON, see batch.h), and hands it to the output type's send().
 * The type later reports the batch's outcome with output_batch_done():
 *   OUT_OK      acknowledged by the remote: the records are finished
 *   OUT_RETRY   transient failure: the core retries the same batch (same id)
 *               after exponential backoff with jitter. The backoff counts
 *               the output's failed rounds, not batches: the failures of
 *               batches that were in flight together raise it once
 *   OUT_REJECT  permanent rejection: the core splits the batch to isolate
 *               the offending records and dead-letters only those
 *   OUT_DEAD    permanent rejection of the whole batch (e.g. HTTP 400): all
 *               its records go to the DLQ with the reason, without splitting
 * The core owns backoff, the in-flight window, cursors and the DLQ.
 */
#ifndef AGENT_OUTPUT_H
#define AGENT_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "loop.h"

#define OUTPUT_VERSION 1

struct output;
struct batch;

enum out_result { OUT_OK = 0, OUT_RETRY = 1, OUT_REJECT = 2, OUT_DEAD = 3 };

struct output_type {
	int version;            /* OUTPUT_VERSION */
	const char *name;       /* value of `type =` */
	const char *help;
	const struct cfg_key *conf_keys;
	size_t conf_size;
	int (*validate)(const void *conf, char *err, size_t errlen);
	/* Allocate state and start connecting. 0 or -errno. */
	int (*start)(struct output *o, void **state);
	/* Can a batch be sent now (connected, window open on the wire)? */
	bool (*ready)(void *state);
	/* Start sending b (borrowed until output_batch_done() for it).
	 * Returns 0 (outcome reported later), -EAGAIN (not now: the core tries
	 * again later), -EMSGSIZE (too large for the remote: the core splits),
	 * or another -errno (treated as OUT_RETRY). */
	int (*send)(void *state, struct batch *b);
	/* One line for status: endpoint and protocol details, e.g.
	 * "mqtt://127.0.0.1:1883 v5 topic agents/gw-01/{stream}". */
	void (*describe)(void *state, char *buf, size_t len);
	/* Optional: milliseconds until the next connection attempt while
	 * disconnected, or -1 (shown in status as the next retry). */
	int64_t (*next_attempt_ms)(void *state);
	/* Shut down: give in-flight batches up to deadline_ms (monotonic) to
	 * finish, then disconnect. Returns true when fully stopped. */
	bool (*drain)(void *state, int64_t deadline_ms);
	/* Free state; accepts NULL and a half-started state. */
	void (*stop)(void *state);
	/* Optional: path of the client certificate in the type's conf, or
	 * NULL (its dates are shown in status). */
	const char *(*client_cert)(const void *conf);
	/* Optional: start a cheap check that the endpoint can be reached (a
	 * TCP connect, no request), reported later with output_probe_done().
	 * Called only while the output is backed off, one at a time.
	 * Returns 0 or -errno (then the check counts as failed). */
	int (*probe)(void *state);
};

extern const struct output_type *const output_types[];
const struct output_type *output_type_find(const char *name);

/* What a type sees of a batch. */
struct batch {
	char id[48];            /* stable across retries of the same records */
	const char *stream;
	int64_t first_seq, last_seq;
	int64_t count;
	const void *body;       /* zstd frame */
	size_t body_len;
	size_t raw_len;         /* uncompressed NDJSON length */
	const char *encoding;   /* "ndjson+zstd" */
	int64_t first_wall_ms;  /* ts_wall_ms of the first record (stable across retries) */
	unsigned attempt;       /* 0 on the first send */
	void *type_data;        /* free for the type (e.g. its message id) */
};

/* Services of the core to output types. */
const char *output_name(const struct output *o);
const void *output_type_conf(const struct output *o);
const char *output_agent_id(const struct output *o);
struct loop *output_loop(struct output *o);
void output_batch_done(struct output *o, struct batch *b, int result,
		       const char *reason);
/* The remote asked to be left alone (HTTP Retry-After): no retry of this
 * output before delay_ms from now. Call before output_batch_done(). */
void output_retry_after(struct output *o, int64_t delay_ms);
/* The attempt whose outcome follows did not reach the remote (connection
 * refused, connect timed out, name not resolved), as opposed to a remote
 * that answered with an error. Call before output_batch_done(); while
 * backed off after such a failure, the core probes for the endpoint's
 * return every retry_probe and retries at once when it is back. */
void output_unreachable(struct output *o);
/* Outcome of the type's probe(): 0 (a connection was made) or -errno. */
void output_probe_done(struct output *o, int err);
/* The output's retry_probe in ms (0: no probing), for types that check
 * the endpoint themselves (the mqtt output's reconnect attempts). */
int64_t output_retry_probe_ms(const struct output *o);
/* The type's connection state for status; `why` says what is wrong when
 * not connected (e.g. "connection refused", "not authorised"). */
void output_set_connected(struct output *o, bool connected, const char *why);
/* Ask the core to try sending (e.g. after connecting). */
void output_kick(struct output *o);
/* backoff_delay() is in loop.h, shared with the drivers. */

/* The output types, listed in output_types[]. */
extern const struct output_type out_mqtt;
extern const struct output_type out_https;
extern const struct output_type out_s3;

#endif
