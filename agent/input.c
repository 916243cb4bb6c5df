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
#include "rec.h"

/* Copies kept for a replay (DRIVER_REPLAY) stop growing here; what does
 * not fit is reported with a gap marker if the commit fails. Commit groups
 * are far smaller (commit_records, a 32nd of the budget). */
#define REPLAY_MAX_BYTES (8 << 20)

enum replay_kind { RP_RECORD, RP_BUILT, RP_REJECT, RP_GAP };

/* One copy in the replay buffer, followed by key, reason and data bytes. */
struct replay_hdr {
	uint32_t kind, key_len, reason_len, data_len;
	int64_t wall_ms, mono_ms;
};

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
	/* Tickets: last accepted, last durable, last told to the driver. */
	uint64_t ticket, durable, told;
	bool lost;                /* a commit failed: tickets above durable are gone */
	struct loop_timer notify_timer;
	struct buf replay;        /* DRIVER_REPLAY: copies since the last commit */
	size_t replay_pos;        /* bytes of it appended in the open transaction */
	int64_t replay_dropped;   /* records that did not fit in it */
	bool replaying;
	struct rec *rec;
	/* Device status (input_set_connected() was called). */
	bool device, connected;
	char conn_why[160];
	int64_t requests, errors[INPUT_ERR_KINDS];
	int64_t last_sample_mono_ms;
	int64_t missed;
};

_Static_assert(INPUT_ERR_KINDS == STATUS_ERR_KINDS, "status shows every kind of device error");

static int64_t notify_cb(struct loop_timer *t);
static bool replay_pending(const struct input *in);
static bool replay(struct input *in);

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
	in->notify_timer.cb = notify_cb;
	*out = in;
	return 0;
}

int input_start(struct input *in)
{
	int rc;

	/* A driver (re)started reads from its saved positions: what a failed
	 * commit lost is read again, not told. */
	in->lost = false;
	in->durable = in->told = in->ticket;
	rc = in->drv->start(in, &in->state);

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
	loop_timer_cancel(in->a->loop, &in->notify_timer);
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
	buf_release(&in->replay);
	rec_free(in->rec);
	xfree(in);
}

void input_resume(struct input *in)
{
	if (!in->blocked || !in->started || in->a->inputs_suspended)
		return;
	if (replay_pending(in) && !replay(in))
		return;
	in->blocked = false;
	if (in->drv->resume)
		in->drv->resume(in, in->state);
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
	st->device = in->device;
	st->connected = in->connected;
	snprintf(st->conn_why, sizeof(st->conn_why), "%s", in->conn_why);
	st->requests = in->requests;
	for (int k = 0; k < INPUT_ERR_KINDS && k < STATUS_ERR_KINDS; k++)
		st->errors[k] = in->errors[k];
	st->last_sample_age_ms = in->last_sample_mono_ms ? loop_now_ms() - in->last_sample_mono_ms : -1;
	st->missed_samples = in->missed;
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

void input_sample_now(struct input *in, struct sample_time *t)
{
	(void)in;
	t->wall_ms = loop_wall_ms();
	t->mono_ms = loop_boot_ms();
}

uint64_t input_ticket(const struct input *in)
{
	return in->ticket;
}

uint64_t input_take_ticket(struct input *in)
{
	in->ticket++;
	agent_wrote(in->a);
	return in->ticket;
}

const char *input_agent_id(const struct input *in)
{
	return in->a->cfg->agent.id;
}

static bool replay_pending(const struct input *in)
{
	return in->replay_pos < in->replay.len;
}

/* Keep a copy for a replay after a failed commit (DRIVER_REPLAY). */
static void keep_copy(struct input *in, enum replay_kind kind, const char *key, const char *reason,
		      const char *data, size_t len, const struct sample_time *t)
{
	/* Key and reason are kept with their NUL, to be used in place. */
	struct replay_hdr h = { (uint32_t)kind, (uint32_t)strlen(key) + 1,
				reason ? (uint32_t)strlen(reason) + 1 : 0, (uint32_t)len,
				t->wall_ms, t->mono_ms };

	if (!(in->drv->flags & DRIVER_REPLAY) || in->replaying)
		return;
	if (in->replay.len + sizeof(h) + h.key_len + h.reason_len + len > REPLAY_MAX_BYTES ||
	    buf_reserve(&in->replay, sizeof(h) + h.key_len + h.reason_len + len)) {
		in->replay_dropped++;
		return;
	}
	buf_add(&in->replay, &h, sizeof(h));
	buf_add(&in->replay, key, h.key_len);
	if (reason)
		buf_add(&in->replay, reason, h.reason_len);
	buf_add(&in->replay, data, len);
	in->replay_pos = in->replay.len;    /* everything kept is in the transaction */
}

/* Refused for now: say so once, and let input_resume() call the driver. */
static int refuse(struct input *in)
{
	in->blocked = true;
	return -EAGAIN;
}

/* Dead-letter with a count; the reason goes to status as the last error. */
static int dead_letter(struct input *in, const char *data, size_t len, const char *key,
		       const char *reason, const struct sample_time *t)
{
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	if (!in->replaying && replay_pending(in))
		return refuse(in);
	if (in->a->cfg->queue.on_full == ON_FULL_BLOCK && queue_full(in->a->q))
		return refuse(in);
	rc = queue_dlq_add(in->a->q, in->origin, in->conf->stream, 0, key, reason, data, len);
	if (rc)
		return rc;
	if (!in->replaying) {
		in->dlq++;
		in->ticket++;
	}
	keep_copy(in, RP_REJECT, key, reason, data, len, t);
	input_error(in, "record dead-lettered: %s", reason);
	agent_wrote(in->a);
	return 0;
}

int input_reject(struct input *in, const char *data, size_t len, const char *key, const char *reason)
{
	struct sample_time now;

	input_sample_now(in, &now);
	return dead_letter(in, data, len, key, reason, &now);
}

/* The parser of this input: structured drivers hand over JSON. */
static int parser_of(const struct input *in)
{
	return in->drv->flags & DRIVER_STRUCTURED ? PARSER_JSON : in->conf->parser;
}

/* Append one record; `built` data is JSON from the record builder and is
 * not parsed again. */
static int emit(struct input *in, const char *data, size_t len, const char *key,
		const struct sample_time *t, bool built)
{
	struct sample_time now;
	struct qrec_in r;
	char why[200];
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	if (!in->replaying && replay_pending(in))
		return refuse(in);
	if (!t) {
		input_sample_now(in, &now);
		t = &now;
	}
	in->last_read_wall_ms = loop_wall_ms();
	in->last_sample_mono_ms = loop_now_ms();
	r.data = data;
	r.len = len;
	if (!built) {
		buf_reset(&in->data);
		rc = parse_record(parser_of(in), data, len, in->have_header ? in->header.p : NULL,
				  in->header.len, &in->data, why, sizeof(why));
		if (rc == -EINVAL)
			return dead_letter(in, data, len, key, why, t);
		if (rc)
			return rc;
		r.data = in->data.p;
		r.len = in->data.len;
	}
	r.stream = in->conf->stream;
	r.key = key;
	r.ts_wall_ms = t->wall_ms;
	r.ts_mono_ms = t->mono_ms;
	r.clock = in->a->clock_synced ? CLOCK_SYNCED : CLOCK_UNSYNCED;
	rc = queue_append(in->a->q, &r, NULL);
	if (rc == -EEXIST) {
		in->dups++;
		if (!in->replaying)
			in->ticket++;
		return 0;
	}
	if (rc == -ENOSPC) {
		if (!in->blocked)
			log_warn("input %s: queue full (on_full = block): reading paused", in->conf->name);
		return refuse(in);
	}
	if (rc)
		return rc;
	if (!in->replaying) {
		in->records++;
		in->bytes += (int64_t)len;
		in->ticket++;
	}
	keep_copy(in, built ? RP_BUILT : RP_RECORD, key, NULL, data, len, t);
	agent_wrote(in->a);
	return 0;
}

int input_emit(struct input *in, const char *data, size_t len, const char *key)
{
	return emit(in, data, len, key, NULL, false);
}

int input_emit_at(struct input *in, const char *data, size_t len, const char *key,
		  const struct sample_time *t)
{
	return emit(in, data, len, key, t, false);
}

struct rec *input_rec_begin(struct input *in)
{
	if (!in->rec)
		in->rec = rec_new();
	/* NULL: the builder's calls do nothing and input_emit_rec() says
	 * -ENOMEM, so drivers need not check. */
	if (!in->rec)
		return NULL;
	rec_reset(in->rec, (size_t)input_max_record_bytes(in));
	return in->rec;
}

int input_rec_parsed(struct input *in, struct rec *r, const char *name, const char *data,
		     size_t len, char *why, size_t whylen)
{
	int rc;

	if (!r)
		return -ENOMEM;
	buf_reset(&in->data);
	rc = parse_record(parser_of(in), data, len, in->have_header ? in->header.p : NULL,
			  in->header.len, &in->data, why, whylen);
	if (rc == -EINVAL)
		return rc;
	if (rc) {
		rec_set_error(r, rc);
		return rc;
	}
	rec_json(r, name, in->data.p, in->data.len);
	return 0;
}

int input_emit_rec(struct input *in, struct rec *r, const char *key, const struct sample_time *t)
{
	const char *data;
	size_t len;
	int rc;

	if (!r)
		return -ENOMEM;
	rc = rec_finish(r, &data, &len);
	if (rc)
		return rc;
	return emit(in, data, len, key, t, true);
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
static int append_gap(struct input *in, const char *data, size_t len, const char *key,
		      const struct sample_time *t)
{
	struct qrec_in r;
	int rc;

	if (in->a->inputs_suspended)
		return -EAGAIN;
	if (!in->replaying && replay_pending(in))
		return refuse(in);
	r.stream = "_agent";
	r.key = key;
	r.ts_wall_ms = t->wall_ms;
	r.ts_mono_ms = t->mono_ms;
	r.clock = in->a->clock_synced ? CLOCK_SYNCED : CLOCK_UNSYNCED;
	r.data = data;
	r.len = len;
	rc = queue_append_gap(in->a->q, &r, NULL);
	if (rc == -ENOSPC)
		return refuse(in);
	if (rc && rc != -EEXIST)
		return rc;
	if (!in->replaying)
		in->ticket++;
	if (!rc) {
		keep_copy(in, RP_GAP, key, NULL, data, len, t);
		agent_wrote(in->a);
	}
	return 0;
}

int input_gap(struct input *in, const char *source, int64_t offset, int64_t bytes,
	      const char *reason, const char *key)
{
	struct buf d = BUF_INIT;
	struct sample_time now;
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
	if (!rc) {
		input_sample_now(in, &now);
		rc = append_gap(in, d.p, d.len, key, &now);
	}
	buf_release(&d);
	return rc;
}

/* ---- commits: tell drivers, replay what a failed commit lost ---------- */

static int64_t notify_cb(struct loop_timer *t)
{
	struct input *in = container_of(t, struct input, notify_timer);

	if (in->started && in->drv->committed && in->durable > in->told) {
		in->told = in->durable;
		in->drv->committed(in, in->state, in->durable);
	}
	return -1;
}

void input_committed(struct input *in)
{
	/* Lost tickets are never told committed: until the driver is told
	 * they are gone, nothing of this input moves. */
	if (in->lost)
		return;
	if (replay_pending(in)) {
		/* Only the replayed part is durable now: keep the rest. */
		size_t rest = in->replay.len - in->replay_pos;

		memmove(in->replay.p, in->replay.p + in->replay_pos, rest);
		in->replay.len = rest;
		in->replay_pos = 0;
		return;
	}
	in->durable = in->ticket;
	buf_reset(&in->replay);
	in->replay_pos = 0;
	in->replay_dropped = 0;
	if (in->started && in->drv->committed && in->durable > in->told)
		loop_timer_set(in->a->loop, &in->notify_timer, 0);
}

void input_flush_committed(struct input *in)
{
	if (in->notify_timer.armed) {
		loop_timer_cancel(in->a->loop, &in->notify_timer);
		notify_cb(&in->notify_timer);
	}
}

void input_commit_failed(struct input *in)
{
	/* Everything of the lost transaction is to be appended again. */
	in->replay_pos = 0;
	if (in->ticket > in->durable)
		in->lost = true;
}

bool input_rereads(const struct input *in)
{
	return !(in->drv->flags & DRIVER_REPLAY) && !in->drv->rolled_back;
}

/* Append the kept copies again, from replay_pos; true when all are in. */
static bool replay(struct input *in)
{
	int rc = 0;

	in->replaying = true;
	while (replay_pending(in)) {
		struct replay_hdr h;
		const char *p = in->replay.p + in->replay_pos, *key, *reason, *data;
		struct sample_time t;

		memcpy(&h, p, sizeof(h));
		key = p + sizeof(h);
		reason = key + h.key_len;
		data = reason + h.reason_len;
		t.wall_ms = h.wall_ms;
		t.mono_ms = h.mono_ms;
		switch (h.kind) {
		case RP_REJECT:
			rc = dead_letter(in, data, h.data_len, key, reason, &t);
			break;
		case RP_GAP:
			rc = append_gap(in, data, h.data_len, key, &t);
			break;
		default:
			rc = emit(in, data, h.data_len, key, &t, h.kind == RP_BUILT);
			break;
		}
		if (rc)
			break;
		in->replay_pos += sizeof(h) + h.key_len + h.reason_len + h.data_len;
	}
	in->replaying = false;
	return !replay_pending(in);
}

/* After a failed commit, once records are accepted again (from the loop). */
static void recover(struct input *in)
{
	if (in->drv->rolled_back) {
		uint64_t after = in->durable;

		/* The lost tickets are told as lost, never as committed. */
		in->lost = false;
		in->durable = in->told = in->ticket;
		in->drv->rolled_back(in, in->state, after);
	} else if (in->drv->flags & DRIVER_REPLAY) {
		if (!replay(in))
			return;
		in->lost = false;
		if (in->replay_dropped) {
			char key[96], why[160];

			snprintf(key, sizeof(key), "replay-lost:%s:%" PRIu64, in->conf->name, in->ticket);
			snprintf(why, sizeof(why), "commit_failed: %" PRId64 " records did not fit in "
				 "the replay buffer", in->replay_dropped);
			if (!input_gap(in, in->conf->name, 0, -1, why, key))
				in->replay_dropped = 0;
		}
	}
	in->blocked = false;
	if (in->drv->resume)
		in->drv->resume(in, in->state);
}

void input_recover(struct input *in)
{
	if (in->started)
		recover(in);
}

/* ---- device status ---------------------------------------------------- */

void input_set_connected(struct input *in, bool connected, const char *fmt, ...)
{
	va_list ap;

	in->device = true;
	in->connected = connected;
	in->conn_why[0] = '\0';
	if (!fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(in->conn_why, sizeof(in->conn_why), fmt, ap);
	va_end(ap);
}

void input_count_request(struct input *in)
{
	in->requests++;
}

void input_count_missed(struct input *in, int64_t n)
{
	in->missed += n;
}

void input_count_error(struct input *in, enum input_err_kind kind, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if ((unsigned)kind < INPUT_ERR_KINDS)
		in->errors[kind]++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	input_error(in, "%s", msg);
}
