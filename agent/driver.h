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
 *
 * A source that cannot be read again is acknowledged only once its records
 * are durable: every accepted record has a ticket (input_ticket()), and the
 * core tells the driver which tickets are committed, or that a commit
 * failed and which records it lost, so that nothing is lost without a
 * count. Sampling drivers hand over when each sample was taken, build their
 * records with the record builder below, and report per-device status.
 */
#ifndef AGENT_DRIVER_H
#define AGENT_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "fs.h"
#include "lines.h"
#include "log.h"
#include "loop.h"
#include "mem.h"
/* Services of the core to drivers: the MQTT connection and session of the
 * agent's own (mqtt_sub). */
#include "mqtt_client.h"
#include "mqtt_conn.h"

/* Version 2: flags, committed/rolled_back, sample times, the record
 * builder and device status. The core refuses a driver of another version. */
#define DRIVER_VERSION 2

struct input;

enum driver_flags {
	/* Records come from the record builder (or are JSON already): the
	 * input takes no `parser` key, and the config says so if one is set. */
	DRIVER_STRUCTURED = 1 << 0,
	/* The source cannot be read again and needs no acknowledgement
	 * (samples, datagrams): the core keeps a copy of every record emitted
	 * since the last commit and appends them again itself after a failed
	 * commit. Without this flag and without rolled_back(), a failed commit
	 * restarts the input from its saved positions (what tail wants). */
	DRIVER_REPLAY = 1 << 1,
};

struct driver {
	int version;            /* DRIVER_VERSION: checked; a mismatch is refused */
	const char *name;       /* value of `driver =` */
	const char *help;       /* one line for the reference */
	unsigned flags;         /* enum driver_flags */
	const char *parser;     /* default of `parser` (NULL: raw), e.g. "json" */
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
	/* Optional. Every record, reject and gap of this input whose ticket
	 * is <= upto is durable (except those rolled_back() reported lost
	 * before): acknowledge their source now. Called from the loop, never
	 * inside an emit. */
	void (*committed)(struct input *in, void *state, uint64_t upto);
	/* Optional. A commit failed: the records with tickets > after are
	 * gone; the driver must emit them again (or report them lost with
	 * input_gap()) once input_emit() accepts records again (resume() is
	 * called then). Called from the loop, never inside an emit. */
	void (*rolled_back)(struct input *in, void *state, uint64_t after);
};

/* The registry, NULL-terminated (drivers/registry.c). */
extern const struct driver *const driver_registry[];
const struct driver *driver_find(const char *name);

/* Services of the core to drivers. */
const char *input_name(const struct input *in);
/* The agent's id ([agent] id), e.g. for a default client identifier. */
const char *input_agent_id(const struct input *in);
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
/* When a sample was taken: wall-clock ms since the epoch, and ms since
 * boot (CLOCK_BOOTTIME, the records' mono_ms), both through the loop's
 * clock seam. */
struct sample_time {
	int64_t wall_ms, mono_ms;
};
void input_sample_now(struct input *in, struct sample_time *t);
/* Emit a raw record with the time its sample was taken (t NULL: now).
 * Returns like input_emit(). */
int input_emit_at(struct input *in, const char *data, size_t len, const char *key,
		  const struct sample_time *t);
/* The ticket of the last record, reject or gap this input had accepted
 * (0: none yet). Tickets grow by one per accepted record. */
uint64_t input_ticket(const struct input *in);
/* A ticket of its own for what the driver saved or forgot with
 * input_save_position()/input_forget_position() since its last record, for
 * a source acknowledged after a change of position alone (MQTT QoS 2: a
 * release must be durable before PUBCOMP): committed() reports it durable,
 * rolled_back() lost, like a record's. */
uint64_t input_take_ticket(struct input *in);

/* The record builder: a JSON object of named fields, so that no driver
 * writes JSON by hand. The calls never fail one by one: the first error
 * (out of memory, a record over max_record_bytes, a bad nesting) is kept
 * and returned by input_emit_rec(). Names are escaped; a non-finite number
 * becomes null with quality "nan". A unit adds "units":{"PATH":"unit"}, and
 * rec_null()/rec_quality() add "quality":{"PATH":"why"}, to the top level,
 * where PATH is the field's name after its enclosing objects' names and
 * '.' ("eth0.rx_bytes"). Those two objects come last, only when not empty:
 *   {"device":"meter","voltage":230.1,"current":null,
 *    "units":{"voltage":"V","current":"A"},"quality":{"current":"timeout"}} */
struct rec;
/* The input's own builder, emptied. */
struct rec *input_rec_begin(struct input *in);
void rec_str(struct rec *r, const char *name, const char *s);
void rec_strn(struct rec *r, const char *name, const char *s, size_t len);
void rec_num(struct rec *r, const char *name, double v, const char *unit);
void rec_int(struct rec *r, const char *name, int64_t v, const char *unit);
void rec_uint(struct rec *r, const char *name, uint64_t v, const char *unit);
void rec_bool(struct rec *r, const char *name, bool v);
/* Bytes as a base64 string (RFC 4648, padded): binary payloads. */
void rec_base64(struct rec *r, const char *name, const void *data, size_t len);
/* Raw data parsed by the input's own `parser` (raw, json, csv, ...) and
 * added as the value of field `name`, so a driver can wrap a payload in
 * fields of its own ({"topic":...,"payload":<parsed>}). 0, or -EINVAL
 * with the parser's reason in why (nothing added: dead-letter the raw data
 * with input_reject()), or -ENOMEM (kept as the builder's error). */
int input_rec_parsed(struct input *in, struct rec *r, const char *name, const char *data,
		     size_t len, char *why, size_t whylen);
/* A value that could not be read (null), and why. */
void rec_null(struct rec *r, const char *name, const char *unit, const char *quality);
/* Mark a field already added to the current object with a quality. */
void rec_quality(struct rec *r, const char *name, const char *quality);
void rec_obj_begin(struct rec *r, const char *name);
void rec_obj_end(struct rec *r);
/* Emit the built record with its sample time (t NULL: now). Returns like
 * input_emit(), or the builder's first error (-ENOMEM; -EMSGSIZE: larger
 * than max_record_bytes; -EINVAL: objects not closed, or none begun). */
int input_emit_rec(struct input *in, struct rec *r, const char *key,
		   const struct sample_time *t);

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

/* Device status: once a driver has called input_set_connected(), status
 * shows the input as a device, with whether it is connected and why not,
 * its requests and errors by kind, and the age of its last sample. */
enum input_err_kind {
	INPUT_ERR_TIMEOUT,    /* no answer in time */
	INPUT_ERR_EXCEPTION,  /* the device refused (e.g. a Modbus exception) */
	INPUT_ERR_CRC,        /* a frame or checksum was damaged */
	INPUT_ERR_PROTOCOL,   /* an answer that makes no sense */
	INPUT_ERR_CONNECT,    /* cannot connect to or open the device */
	INPUT_ERR_IO,         /* a read or write of the device or file failed */
	INPUT_ERR_VALUE,      /* not a valid reading (text, a power-on value) */
	INPUT_ERR_KINDS
};
/* why: "" when connected, the reason otherwise. */
void input_set_connected(struct input *in, bool connected, const char *why_fmt, ...)
	__attribute__((format(printf, 3, 4)));
void input_count_request(struct input *in);
/* Sampling deadlines skipped after a stall (loop_timer's missed growth). */
void input_count_missed(struct input *in, int64_t n);
/* Count one error of this kind and make it the last error (input_error()). */
void input_count_error(struct input *in, enum input_err_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
