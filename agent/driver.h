/* driver.h - the input driver interface: the only header a driver includes.
 *
 * A driver is a const struct driver with designated initialisers, listed in
 * drivers/registry.c. Drivers never block and never own a loop: they ask the
 * core for timers and fd watches (struct loop_timer / loop_fd from loop.h,
 * embedded in the driver's state and recovered with container_of).
 *
 * A driver hands each raw record (e.g. one line without its newline) to
 * input_emit() together with its natural dedupe key. The core parses it per
 * the input's parser, validates it, stamps it and appends it to the queue, or
 * dead-letters it with the reason. The driver then saves its source position
 * with input_save_position(); the core commits records and positions in one
 * transaction, so a crash never separates them.
 */
#ifndef AGENT_DRIVER_H
#define AGENT_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "mem.h"

#define DRIVER_VERSION 1

struct input;

struct driver {
	int version;            /* DRIVER_VERSION */
	const char *name;       /* value of `driver =` */
	const char *help;       /* one line for the reference */
	const struct cfg_key *conf_keys; /* driver's own keys, {NULL}-terminated */
	size_t conf_size;       /* size of the struct those keys fill */
	/* Check the parsed config beyond per-key validation. 0 or -EINVAL with err. */
	int (*validate)(const void *conf, char *err, size_t errlen);
	/* Allocate state and start watching. 0 or -errno (logged by the driver
	 * through input_error()). */
	int (*start)(struct input *in, void **state);
	/* Called when inputs may flow again after input_emit() returned -EAGAIN. */
	void (*resume)(struct input *in, void *state);
	/* Stop watching and free state; accepts a half-started state. */
	void (*stop)(struct input *in, void *state);
};

/* The registry, NULL-terminated (drivers/registry.c). */
extern const struct driver *const driver_registry[];
const struct driver *driver_find(const char *name);

/* Services of the core to drivers. */
const char *input_name(const struct input *in);
const void *input_driver_conf(const struct input *in); /* the driver's struct */
int64_t input_max_record_bytes(const struct input *in);
struct loop *input_loop(struct input *in);

/* Hand one raw record to the core.
 * Returns 0 when accepted (appended, or dead-lettered with a count: either
 * way the driver moves on), -EAGAIN when the queue is full under
 * on_full = block (nothing taken: the driver keeps its position and waits for
 * resume()), or another -errno on a queue error (the driver keeps its
 * position and retries later). A duplicate key counts as accepted. */
int input_emit(struct input *in, const char *data, size_t len, const char *key);
/* Dead-letter a raw record the driver cannot hand over (e.g. longer than
 * max_record_bytes), with the reason. Returns like input_emit(). */
int input_reject(struct input *in, const char *data, size_t len,
		 const char *key, const char *reason);
/* Tell the lake that bytes [offset, offset + bytes) of `source` (a name
 * for people, e.g. a file path) were lost before the driver could read
 * them (bytes < 0: how many is not known), with a short machine-readable
 * reason. Appends a gap marker to the agent's own stream "_agent" in the
 * transaction of the records emitted so far; `key` is its dedupe key.
 * Returns like input_emit(). */
int input_gap(struct input *in, const char *source, int64_t offset, int64_t bytes,
	      const char *reason, const char *key);
/* Save the driver's position for one source, in the transaction that holds
 * the records emitted so far. Returns 0 or -errno. */
int input_save_position(struct input *in, const char *source,
			const void *state, size_t len);
/* Load a saved position (*state xmalloc'ed). 0, -ENOENT or -errno. */
int input_load_position(struct input *in, const char *source, void **state,
			size_t *len);
int input_forget_position(struct input *in, const char *source);
/* True when the input's parser needs each file's header line (csv). The
 * driver then hands the header of the file it reads from over with
 * input_set_header() before that file's records, again whenever it switches
 * files, and never emits the header line as a record. 0 or -ENOMEM. */
bool input_wants_header(const struct input *in);
int input_set_header(struct input *in, const char *data, size_t len);
/* True while the queue refuses records (on_full = block and full). */
bool input_blocked(const struct input *in);
/* Record a problem for status and the log (rate-limited per input). */
void input_error(struct input *in, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Clear the last error (e.g. the file became readable). */
void input_clear_error(struct input *in);
/* Describe what the driver is doing now, for status (e.g. "3 files"). */
void input_set_state(struct input *in, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
