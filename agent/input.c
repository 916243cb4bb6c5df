/* input.c - what the core does with a driver's records: parse, validate,
 * stamp, key and append them to the queue, or dead-letter them with a reason.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "input.h"
#include "log.h"
#include "mem.h"
#include "parse.h"

struct input {
	struct agent *a;
	struct input_conf *conf;
	const struct driver *drv;
	void *state;
	bool started, blocked;
	char origin[80];
	struct buf data;         /* parsed record, reused */
	struct buf header;       /* csv header of the current file */
	bool have_header;
	int64_t records, bytes, dlq, dups;
	int64_t last_read_wall_ms;
	int64_t rate_prev;
	double rate;
	char last_error[256];
	int64_t last_error_wall_ms;
	int64_t last_error_log_ms;
	char state_text[128];
	bool suspend_noted;
};

static int64_t boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int input_create(struct agent *a, struct input_conf *conf, struct input **out)
{
	struct input *in = xcalloc(1, sizeof(*in));

	if (!in)
		return -ENOMEM;
	in->a = a;
	in->conf = conf;
	in->drv = conf->drv_type;
	snprintf(in->origin, sizeof(in->origin), "input:%s", conf->name);
	snprintf(in->state_text, sizeof(in->state_text), "starting");
	*out = in;
	return 0;
}

int input_start(struct input *in)
{
	int rc = in->drv->start(in, &in->state);

	if (rc) {
		input_error(in, "driver %s failed to start: %s", in->drv->name, strerror(-rc));
		return rc;
	}
	in->started = true;
	return 0;
}

void input_stop(struct input *in)
{
	if (!in || !in->started)
		return;
	in->drv->stop(in, in->state);
	in->state = NULL;
	in->started = false;
	snprintf(in->state_text, sizeof(in->state_text), "stopped");
}

void input_suspend(struct input *in, const char *why)
{
	in->suspend_noted = false;
	input_error(in, "%s", why);
	in->suspend_noted = true;
}

bool input_running(const struct input *in)
{
	return in->started;
}

void input_free(struct input *in)
{
	if (!in)
		return;
	input_stop(in);
	buf_release(&in->data);
	buf_release(&in->header);
	xfree(in);
}

void input_resume(struct input *in)
{
	if (in->blocked && in->started) {
		in->blocked = false;
		if (in->drv->resume)
			in->drv->resume(in, in->state);
	}
}

void input_tick(struct input *in, int64_t elapsed_ms)
{
	double now = elapsed_ms > 0 ? (double)(in->records - in->rate_prev) * 1000.0 / elapsed_ms : 0;

	/* A short moving average: steady enough to read, quick to show a stop. */
	in->rate = in->rate * 0.5 + now * 0.5;
	if (in->rate < 0.05)
		in->rate = 0;
	in->rate_prev = in->records;
}

void input_fill_status(const struct input *in, struct status_input *st)
{
	snprintf(st->name, sizeof(st->name), "%s", in->conf->name);
	snprintf(st->driver, sizeof(st->driver), "%s", in->drv->name);
	snprintf(st->stream, sizeof(st->stream), "%s", in->conf->stream);
	snprintf(st->state, sizeof(st->state), "%s", in->state_text);
	snprintf(st->last_error, sizeof(st->last_error), "%s", in->last_error);
	st->last_error_wall_ms = in->last_error_wall_ms;
	st->records = in->records;
	st->bytes = in->bytes;
	st->dlq = in->dlq;
	st->duplicates = in->dups;
	st->rate = in->rate;
	st->last_read_wall_ms = in->last_read_wall_ms;
	st->blocked = in->blocked || (in->a->q && queue_full(in->a->q) &&
				      in->a->cfg->queue.on_full == ON_FULL_BLOCK);
}

const char *input_name(const struct input *in)
{
	return in->conf->name;
}

const void *input_driver_conf(const struct input *in)
{
	return in->conf->drv;
}

int64_t input_max_record_bytes(const struct input *in)
{
	return in->conf->max_record_bytes ? in->conf->max_record_bytes
					  : in->a->cfg->queue.max_record_bytes;
}

struct loop *input_loop(struct input *in)
{
	return in->a->loop;
}

bool input_blocked(const struct input *in)
{
	return in->blocked;
}

bool input_wants_header(const struct input *in)
{
	return in->conf->parser == PARSER_CSV;
}

int input_set_header(struct input *in, const char *data, size_t len)
{
	buf_reset(&in->header);
	in->have_header = true;
	return buf_add(&in->header, data, len);
}

/* Dead-letter with a count; the reason goes to status as the last error. */
static int dead_letter(struct input *in, const char *data, size_t len, const char *key,
		       const char *reason)
{
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	if (in->a->cfg->queue.on_full == ON_FULL_BLOCK && queue_full(in->a->q)) {
		in->blocked = true;
		return -EAGAIN;
	}
	rc = queue_dlq_add(in->a->q, in->origin, in->conf->stream, 0, key, reason, data, len);
	if (rc)
		return rc;
	in->dlq++;
	input_error(in, "record dead-lettered: %s", reason);
	agent_wrote(in->a);
	return 0;
}

int input_reject(struct input *in, const char *data, size_t len, const char *key, const char *reason)
{
	return dead_letter(in, data, len, key, reason);
}

int input_emit(struct input *in, const char *data, size_t len, const char *key)
{
	struct qrec_in r;
	char why[200];
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	in->last_read_wall_ms = loop_wall_ms();
	buf_reset(&in->data);
	rc = parse_record(in->conf->parser, data, len, in->have_header ? in->header.p : NULL,
			  in->header.len, &in->data, why, sizeof(why));
	if (rc == -EINVAL)
		return dead_letter(in, data, len, key, why);
	if (rc)
		return rc;
	r.stream = in->conf->stream;
	r.key = key;
	r.ts_wall_ms = in->last_read_wall_ms;
	r.ts_mono_ms = boot_ms();
	r.clock = in->a->clock_synced ? CLOCK_SYNCED : CLOCK_UNSYNCED;
	r.data = in->data.p;
	r.len = in->data.len;
	rc = queue_append(in->a->q, &r, NULL);
	if (rc == -EEXIST) {
		in->dups++;
		return 0;
	}
	if (rc == -ENOSPC) {
		if (!in->blocked)
			log_warn("input %s: queue full (on_full = block): reading paused", in->conf->name);
		in->blocked = true;
		return -EAGAIN;
	}
	if (rc)
		return rc;
	in->records++;
	in->bytes += (int64_t)len;
	agent_wrote(in->a);
	return 0;
}

int input_save_position(struct input *in, const char *source, const void *state, size_t len)
{
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	rc = queue_position_set(in->a->q, in->conf->name, source, state, len);
	if (!rc)
		agent_wrote(in->a);
	return rc;
}

int input_load_position(struct input *in, const char *source, void **state, size_t *len)
{
	return queue_position_get(in->a->q, in->conf->name, source, state, len);
}

int input_forget_position(struct input *in, const char *source)
{
	int rc = queue_position_del(in->a->q, in->conf->name, source);

	if (!rc)
		agent_wrote(in->a);
	return rc;
}

void input_error(struct input *in, const char *fmt, ...)
{
	int64_t now = loop_now_ms();
	va_list ap;

	/* While records are refused after a failed commit, the refusals the
	 * driver reports are effects: keep the cause (input_suspend) shown. */
	if (in->a->inputs_suspended && in->suspend_noted)
		return;
	va_start(ap, fmt);
	vsnprintf(in->last_error, sizeof(in->last_error), fmt, ap);
	va_end(ap);
	in->last_error_wall_ms = loop_wall_ms();
	/* A flood of bad lines must not flood the log: at most one a second. */
	if (now - in->last_error_log_ms >= 1000 || !in->last_error_log_ms) {
		log_warn("input %s: %s", in->conf->name, in->last_error);
		in->last_error_log_ms = now;
	}
}

void input_clear_error(struct input *in)
{
	in->last_error[0] = '\0';
	in->last_error_wall_ms = 0;
}

void input_set_state(struct input *in, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(in->state_text, sizeof(in->state_text), fmt, ap);
	va_end(ap);
}

/* A gap marker for bytes of a source lost before they were read. It goes on
 * the agent's own stream, like the queue's eviction markers, so every output
 * ships it; the driver's key makes a marker repeated after a crash a
 * duplicate. */
int input_gap(struct input *in, const char *source, int64_t offset, int64_t bytes,
	      const char *reason, const char *key)
{
	struct buf d = BUF_INIT;
	struct qrec_in r;
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	rc = buf_adds(&d, "{\"gap\":{\"input\":");
	rc = rc ? rc : json_add_str(&d, in->conf->name, strlen(in->conf->name));
	rc = rc ? rc : buf_adds(&d, ",\"stream\":");
	rc = rc ? rc : json_add_str(&d, in->conf->stream, strlen(in->conf->stream));
	rc = rc ? rc : buf_adds(&d, ",\"source\":");
	rc = rc ? rc : json_add_str(&d, source, strlen(source));
	rc = rc ? rc : buf_printf(&d, ",\"offset\":%" PRId64 ",\"bytes\":", offset);
	rc = rc ? rc : bytes < 0 ? buf_adds(&d, "null") : buf_printf(&d, "%" PRId64, bytes);
	rc = rc ? rc : buf_adds(&d, ",\"reason\":");
	rc = rc ? rc : json_add_str(&d, reason, strlen(reason));
	rc = rc ? rc : buf_adds(&d, "}}");
	if (rc)
		goto out_release;
	r.stream = "_agent";
	r.key = key;
	r.ts_wall_ms = loop_wall_ms();
	r.ts_mono_ms = boot_ms();
	r.clock = in->a->clock_synced ? CLOCK_SYNCED : CLOCK_UNSYNCED;
	r.data = d.p;
	r.len = d.len;
	rc = queue_append_gap(in->a->q, &r, NULL);
	if (rc == -EEXIST) {
		rc = 0;
	} else if (rc == -ENOSPC) {
		in->blocked = true;
		rc = -EAGAIN;
	} else if (!rc) {
		agent_wrote(in->a);
	}
out_release:
	buf_release(&d);
	return rc;
}
