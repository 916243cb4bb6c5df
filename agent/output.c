/* output.c - the core's batcher, retry and dead-letter logic around each
 * output type. Per output it keeps an ordered list of batches in flight,
 * reads new records after the last one batched, encodes and compresses
 * them with one reused zstd context, and moves the output's durable cursor
 * over the longest prefix of finished batches.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <fnmatch.h>
#include <string.h>

#include <zstd.h>

#include "agent.h"
#include "batch.h"
#include "certinfo.h"
#include "log.h"
#include "mem.h"
#include "outputs.h"

enum ob_state { OB_WAIT_SEND, OB_SENT, OB_RETRY_WAIT, OB_DONE };

struct obatch {
	struct batch b;
	void *body;
	char stream[64];
	int state;
	unsigned round;          /* o->round when it was last sent */
	struct obatch *next;
};

struct build {
	struct output *o;
	int64_t max_records, max_bytes, limit_seq;
	int64_t count, first, last;
	int64_t first_wall_ms;   /* ts_wall_ms of the first record */
	int64_t scan;            /* last seq looked at, routed here or not */
	char stream[64];
	bool full;
	int err;
};

struct output {
	struct agent *a;
	struct output_conf *conf;
	const struct output_type *t;
	void *state;
	bool started, draining, pumping, repump;
	ZSTD_CCtx *cctx;
	struct buf raw;
	struct obatch *head;
	int n_batches;
	int64_t read_seq;        /* last seq put into a batch */
	int64_t cursor;          /* last seq durably finished */
	int64_t linger_since;    /* monotonic ms a partial batch started waiting, 0 none */
	/* A batch that is not full yet, already encoded in raw: later wake-ups
	 * only add the records committed since, instead of reading and
	 * encoding the same ones again. */
	struct build part;
	bool part_active;
	/* Batches sent before a restart and not finished: sent again first,
	 * as the same ranges, so they keep their ids (and S3 keys). */
	int64_t replay[64][2];
	int n_replay, i_replay;
	/* Backoff counts failed rounds: a batch that fails after a round was
	 * counted since it was sent was in flight with the batch that failed
	 * first, and joins that round instead of doubling the delay again. */
	unsigned attempt;        /* failed rounds since the last success */
	unsigned round;          /* rounds counted so far */
	int64_t retry_at;        /* monotonic ms of the next retry, 0 none */
	int64_t not_before;      /* monotonic ms before which nothing is retried (Retry-After) */
	bool fail_unreachable;   /* the outcome being reported did not reach the remote */
	bool down;               /* backed off because the endpoint could not be reached */
	bool probing;            /* a probe() is running */
	struct loop_timer probe_timer;
	bool connected;
	char why[256];
	int64_t last_ack_wall_ms;
	int64_t delivered_records, delivered_batches, dlq_records, retries;
	int64_t rate_prev;
	double rate;
	struct loop_timer timer;
};

const struct output_type *const output_types[] = {
	&out_mqtt,
	&out_https,
	&out_s3,
	NULL,
};

const struct output_type *output_type_find(const char *name)
{
	for (int i = 0; output_types[i]; i++)
		if (!strcmp(output_types[i]->name, name))
			return output_types[i];
	return NULL;
}

const char *output_name(const struct output *o)
{
	return o->conf->name;
}

const void *output_type_conf(const struct output *o)
{
	return o->conf->typ;
}

const char *output_agent_id(const struct output *o)
{
	return o->a->cfg->agent.id;
}

struct loop *output_loop(struct output *o)
{
	return o->a->loop;
}

void output_set_connected(struct output *o, bool connected, const char *why)
{
	if (connected != o->connected)
		log_info("output %s: %s%s%s", o->conf->name, connected ? "connected" : "disconnected",
			 why ? ": " : "", why ? why : "");
	o->connected = connected;
	snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
}

static int64_t pump_timer_cb(struct loop_timer *t);
static int64_t probe_timer_cb(struct loop_timer *t);

void output_kick(struct output *o)
{
	/* Pump from the loop, never from inside a type's callback. */
	if (o->started)
		loop_timer_set(o->a->loop, &o->timer, 0);
}

int output_create(struct agent *a, struct output_conf *conf, struct output **out)
{
	struct output *o = xcalloc(1, sizeof(*o));

	if (!o)
		return -ENOMEM;
	o->a = a;
	o->conf = conf;
	o->t = conf->out_type;
	o->timer.cb = pump_timer_cb;
	o->probe_timer.cb = probe_timer_cb;
	snprintf(o->why, sizeof(o->why), "not started");
	o->cctx = ZSTD_createCCtx();
	/* A 128 KiB window and tables to match: NDJSON repeats itself
	 * within a few lines, and the context stays a few hundred KiB
	 * instead of megabytes. */
	if (!o->cctx ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_compressionLevel,
						(int)conf->compression_level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_windowLog, 17)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_hashLog, 15)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_chainLog, 15)) ||
	    buf_presize(&o->raw, (size_t)conf->batch_max_bytes + (size_t)a->cfg->queue.max_record_bytes + 512)) {
		ZSTD_freeCCtx(o->cctx);
		buf_release(&o->raw);
		xfree(o);
		return -ENOMEM;
	}
	*out = o;
	return 0;
}

static int replay_cb(int64_t first, int64_t last, void *arg)
{
	struct output *o = arg;

	if (last <= o->cursor)
		return 0;
	if (o->n_replay == (int)(sizeof(o->replay) / sizeof(o->replay[0])))
		return 1;
	o->replay[o->n_replay][0] = first;
	o->replay[o->n_replay][1] = last;
	o->n_replay++;
	return 0;
}

int output_start(struct output *o)
{
	const char *agent = output_agent_id(o);
	char why[256];
	int rc;

	o->cursor = queue_cursor(o->a->q, o->conf->name);
	o->read_seq = o->cursor;
	o->n_replay = o->i_replay = 0;
	if (queue_inflight_list(o->a->q, o->conf->name, replay_cb, o))
		o->n_replay = 0;
	if (o->n_replay)
		log_info("output %s: sending %d unfinished batch%s again as they were", o->conf->name,
			 o->n_replay, o->n_replay == 1 ? "" : "es");
	/* The config loader has checked both already; this guards a start
	 * from anywhere else, once for every output type. */
	if (!agent || !*agent) {
		log_error("output %s: the agent id is not set", o->conf->name);
		rc = -EINVAL;
	} else if (o->t->validate && o->t->validate(o->conf->typ, why, sizeof(why))) {
		log_error("output %s: %s", o->conf->name, why);
		rc = -EINVAL;
	} else {
		rc = o->t->start(o, &o->state);
	}
	if (rc) {
		log_error("output %s: cannot start: %s", o->conf->name, strerror(-rc));
		snprintf(o->why, sizeof(o->why), "cannot start: %s", strerror(-rc));
		return rc;
	}
	o->started = true;
	output_kick(o);
	return 0;
}

static void free_batch(struct obatch *ob)
{
	if (!ob)
		return;
	xfree(ob->body);
	xfree(ob);
}

void output_free(struct output *o)
{
	if (!o)
		return;
	if (o->started) {
		loop_timer_cancel(o->a->loop, &o->timer);
		loop_timer_cancel(o->a->loop, &o->probe_timer);
	}
	if (o->t && o->state)
		o->t->stop(o->state);
	while (o->head) {
		struct obatch *n = o->head->next;

		free_batch(o->head);
		o->head = n;
	}
	ZSTD_freeCCtx(o->cctx);
	buf_release(&o->raw);
	xfree(o);
}

/* Does a record of this stream go to this output? Gap markers go to all. */
static bool routes(const struct output *o, const char *stream)
{
	const char *p = o->conf->streams;

	if (!p || !strcmp(p, "*") || !strcmp(stream, "_agent"))
		return true;
	while (*p) {
		char pat[128];
		size_t n, m;

		while (*p == ' ')
			p++;
		n = m = strcspn(p, ",");
		while (m && p[m - 1] == ' ')
			m--;
		if (m < sizeof(pat)) {
			memcpy(pat, p, m);
			pat[m] = '\0';
			if (fnmatch(pat, stream, 0) == 0)
				return true;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

static int build_cb(const struct qrec *r, void *arg)
{
	struct build *bd = arg;
	struct output *o = bd->o;
	size_t before = o->raw.len;

	if (r->seq > bd->limit_seq)
		return 1;
	if (!routes(o, r->stream)) {
		bd->scan = r->seq;
		return 0;
	}
	if (bd->count && strcmp(r->stream, bd->stream)) {
		bd->full = true;
		return 1;
	}
	if (batch_encode_line(&o->raw, o->a->cfg->agent.id, r)) {
		bd->err = -ENOMEM;
		return -ENOMEM;
	}
	if (bd->count && (int64_t)o->raw.len > bd->max_bytes) {
		o->raw.len = before;
		bd->full = true;
		return 1;
	}
	if (!bd->count) {
		bd->first = r->seq;
		bd->first_wall_ms = r->ts_wall_ms;
		snprintf(bd->stream, sizeof(bd->stream), "%s", r->stream);
	}
	bd->last = bd->scan = r->seq;
	if (++bd->count >= bd->max_records) {
		bd->full = true;
		return 1;
	}
	return 0;
}

/* Add records after `after` to the batch being built in o->raw.
 * Returns 0 or -errno. */
static int read_more(struct output *o, struct build *bd, int64_t after)
{
	int rc = queue_read(o->a->q, after, (size_t)(bd->max_records - bd->count), build_cb, bd);

	if (rc < 0)
		return bd->err ? bd->err : rc;
	return 0;
}

/* Read records after `after` into an empty o->raw. */
static int read_records(struct output *o, struct build *bd, int64_t after)
{
	/* Whatever partial batch raw held is gone: it is read again later. */
	o->part_active = false;
	buf_reset(&o->raw);
	return read_more(o, bd, after);
}

static struct obatch *make_batch(struct output *o, const struct build *bd)
{
	struct obatch *ob = xcalloc(1, sizeof(*ob));
	size_t bound = ZSTD_compressBound(o->raw.len), n;

	if (!ob)
		return NULL;
	ob->body = xmalloc(bound);
	if (!ob->body) {
		xfree(ob);
		return NULL;
	}
	n = ZSTD_compress2(o->cctx, ob->body, bound, o->raw.p, o->raw.len);
	if (ZSTD_isError(n)) {
		log_error("output %s: zstd: %s", o->conf->name, ZSTD_getErrorName(n));
		free_batch(ob);
		return NULL;
	}
	{
		/* The bound is the raw size; the frame is a tenth of it. A
		 * batch in flight keeps only what it needs. */
		void *small = xrealloc(ob->body, n ? n : 1);

		if (small)
			ob->body = small;
	}
	snprintf(ob->stream, sizeof(ob->stream), "%s", bd->stream);
	batch_make_id(ob->b.id, o->a->cfg->agent.id, o->conf->name, bd->first, bd->last);
	ob->b.stream = ob->stream;
	ob->b.first_seq = bd->first;
	ob->b.last_seq = bd->last;
	ob->b.count = bd->count;
	ob->b.body = ob->body;
	ob->b.body_len = n;
	ob->b.raw_len = o->raw.len;
	ob->b.encoding = "ndjson+zstd";
	ob->b.first_wall_ms = bd->first_wall_ms;
	ob->state = OB_WAIT_SEND;
	return ob;
}

static void handle_reject(struct output *o, struct obatch *ob, const char *reason);

void output_retry_after(struct output *o, int64_t delay_ms)
{
	o->not_before = loop_now_ms() + delay_ms;
}

void output_unreachable(struct output *o)
{
	o->fail_unreachable = true;
}

int64_t output_retry_probe_ms(const struct output *o)
{
	return o->conf->retry_probe_ms;
}

/* Arm the next probe if it comes before the retry itself. */
static void arm_probe(struct output *o)
{
	int64_t p = o->conf->retry_probe_ms;

	if (!p || !o->t->probe || !o->retry_at || o->probing || o->draining)
		return;
	if (loop_now_ms() + p < o->retry_at)
		loop_timer_set(o->a->loop, &o->probe_timer, p);
	else
		loop_timer_cancel(o->a->loop, &o->probe_timer);
}

static int64_t probe_timer_cb(struct loop_timer *t)
{
	struct output *o = container_of(t, struct output, probe_timer);
	int rc;

	if (!o->started || !o->retry_at || o->retry_at <= loop_now_ms() || o->probing)
		return -1;
	o->probing = true;
	rc = o->t->probe(o->state);
	if (rc)
		output_probe_done(o, rc);
	return -1;
}

void output_probe_done(struct output *o, int err)
{
	o->probing = false;
	if (!o->retry_at || o->retry_at <= loop_now_ms())
		return;         /* the backoff ended meanwhile */
	if (err) {
		/* Seen down now, even if the last attempt had an answer: its
		 * return is what ends the wait. */
		o->down = true;
		arm_probe(o);
		return;
	}
	if (!o->down) {
		/* The server answered the last attempt with an error: that it
		 * still accepts connections says nothing new. */
		arm_probe(o);
		return;
	}
	log_info("output %s: the endpoint accepts connections again: retrying now", o->conf->name);
	o->down = false;
	o->retry_at = loop_now_ms();
	output_kick(o);
}

static void schedule_retry(struct output *o, struct obatch *ob, const char *reason)
{
	int64_t now = loop_now_ms(), d;
	bool unreachable = o->fail_unreachable;

	o->fail_unreachable = false;
	ob->state = OB_RETRY_WAIT;
	ob->b.attempt++;
	o->retries++;
	snprintf(o->why, sizeof(o->why), "%s", reason ? reason : "send failed");
	if (ob->round != o->round) {
		/* In flight with a batch whose failure was counted already:
		 * it waits for that round's retry. */
		if (o->not_before > o->retry_at)
			o->retry_at = o->not_before;
		o->not_before = 0;
		o->down |= unreachable;
		d = o->retry_at > now ? o->retry_at - now : 0;
		log_debug("output %s: batch %s (seq %" PRId64 "-%" PRId64 ") failed too: %s; retry in %"
			  PRId64 " ms", o->conf->name, ob->b.id, ob->b.first_seq, ob->b.last_seq, o->why, d);
		return;
	}
	d = backoff_delay(o->conf->retry_base_ms, o->conf->retry_max_ms, o->attempt);
	if (o->not_before > now + d)
		d = o->not_before - now;
	o->not_before = 0;
	if (o->attempt < 64)
		o->attempt++;
	o->round++;
	o->down = unreachable;
	o->retry_at = now + d;
	arm_probe(o);
	log_warn("output %s: batch %s (seq %" PRId64 "-%" PRId64 ") failed: %s; retry in %" PRId64 " ms",
		 o->conf->name, ob->b.id, ob->b.first_seq, ob->b.last_seq, o->why, d);
}

static void send_batch(struct output *o, struct obatch *ob)
{
	int rc;

	ob->state = OB_SENT;
	ob->round = o->round;
	rc = o->t->send(o->state, &ob->b);
	if (rc == 0)
		return;
	if (rc == -EAGAIN)
		ob->state = OB_WAIT_SEND;
	else if (rc == -EMSGSIZE)
		handle_reject(o, ob, "batch larger than the remote accepts");
	else
		schedule_retry(o, ob, strerror(-rc));
}

struct one_rec {
	struct output *o;
	const char *origin;
	const char *reason;
	int rc;
	bool found;
};

static int dlq_one_cb(const struct qrec *r, void *arg)
{
	struct one_rec *x = arg;

	x->found = true;
	x->rc = queue_dlq_add(x->o->a->q, x->origin, r->stream, r->seq, r->key, x->reason, r->data, r->len);
	return 1;
}

/* Replace ob by the batches that hold its first `n` records and the rest. */
static int split_batch(struct output *o, struct obatch *ob, struct obatch **prev_next)
{
	struct obatch *parts[2] = { NULL, NULL };
	int64_t after = ob->b.first_seq - 1, left = ob->b.count;

	for (int i = 0; i < 2 && left > 0; i++) {
		struct build bd = { .o = o, .max_bytes = INT64_MAX, .limit_seq = ob->b.last_seq };
		int rc;

		bd.max_records = i == 0 ? left / 2 : left;
		rc = read_records(o, &bd, after);
		if (rc || !bd.count)
			break;
		parts[i] = make_batch(o, &bd);
		if (!parts[i]) {
			free_batch(parts[0]);
			return -ENOMEM;
		}
		after = bd.last;
		left -= bd.count;
	}
	if (!parts[0]) {
		/* Its records left the queue meanwhile (evicted): nothing to send. */
		ob->state = OB_DONE;
		return 0;
	}
	if (parts[1]) {
		parts[0]->next = parts[1];
		parts[1]->next = ob->next;
	} else {
		parts[0]->next = ob->next;
	}
	*prev_next = parts[0];
	o->n_batches += parts[1] ? 1 : 0;
	free_batch(ob);
	return 0;
}

static void handle_reject(struct output *o, struct obatch *ob, const char *reason)
{
	struct obatch **pp;
	char origin[80];

	snprintf(o->why, sizeof(o->why), "%s", reason ? reason : "rejected");
	if (ob->b.count > 1) {
		for (pp = &o->head; *pp && *pp != ob; pp = &(*pp)->next)
			;
		if (*pp && !split_batch(o, ob, pp)) {
			log_warn("output %s: batch rejected (%s); split to isolate the records", o->conf->name,
				 o->why);
			output_kick(o);
			return;
		}
		/* Could not split (out of memory): try the whole batch later. */
		schedule_retry(o, ob, "could not split a rejected batch");
		return;
	}
	{
		struct one_rec x = { .o = o, .origin = origin, .reason = o->why };
		int rc;

		snprintf(origin, sizeof(origin), "output:%s", o->conf->name);
		rc = queue_read(o->a->q, ob->b.first_seq - 1, 1, dlq_one_cb, &x);
		if (rc < 0 || x.rc) {
			schedule_retry(o, ob, "could not write the dead-letter queue");
			return;
		}
		if (x.found) {
			o->dlq_records++;
			log_warn("output %s: record seq %" PRId64 " dead-lettered: %s", o->conf->name,
				 ob->b.first_seq, o->why);
		}
		ob->state = OB_DONE;
		agent_wrote(o->a);
	}
}

struct dlq_range {
	struct output *o;
	const char *origin, *reason;
	int64_t last, n;
	int rc;
};

static int dlq_range_cb(const struct qrec *r, void *arg)
{
	struct dlq_range *x = arg;

	if (r->seq > x->last)
		return 1;
	if (!routes(x->o, r->stream))
		return 0;
	x->rc = queue_dlq_add(x->o->a->q, x->origin, r->stream, r->seq, r->key, x->reason, r->data,
			      r->len);
	if (x->rc)
		return x->rc;
	x->n++;
	return 0;
}

/* Every record of the batch to the DLQ, with the reason. */
static void dead_letter_batch(struct output *o, struct obatch *ob, const char *reason)
{
	char origin[80];
	struct dlq_range x = { .o = o, .origin = origin, .last = ob->b.last_seq };
	int rc;

	snprintf(o->why, sizeof(o->why), "%s", reason ? reason : "rejected");
	x.reason = o->why;
	snprintf(origin, sizeof(origin), "output:%s", o->conf->name);
	rc = queue_read(o->a->q, ob->b.first_seq - 1, (size_t)(ob->b.last_seq - ob->b.first_seq + 1),
			dlq_range_cb, &x);
	if (rc < 0 || x.rc) {
		schedule_retry(o, ob, "could not write the dead-letter queue");
		return;
	}
	o->dlq_records += x.n;
	log_warn("output %s: batch %s (seq %" PRId64 "-%" PRId64 ", %" PRId64 " records) dead-lettered: %s",
		 o->conf->name, ob->b.id, ob->b.first_seq, ob->b.last_seq, x.n, o->why);
	ob->state = OB_DONE;
	agent_wrote(o->a);
}

static void advance_cursor(struct output *o)
{
	int64_t c = o->cursor;

	while (o->head && o->head->state == OB_DONE) {
		struct obatch *ob = o->head;

		c = ob->b.last_seq;
		o->head = ob->next;
		o->n_batches--;
		free_batch(ob);
	}
	if (!o->head && o->read_seq > c)
		c = o->read_seq;
	if (c > o->cursor) {
		if (queue_cursor_set(o->a->q, o->conf->name, c) == 0) {
			o->cursor = c;
			agent_wrote(o->a);
		}
	}
}

void output_batch_done(struct output *o, struct batch *b, int result, const char *reason)
{
	struct obatch *ob = container_of(b, struct obatch, b);

	switch (result) {
	case OUT_OK:
		ob->state = OB_DONE;
		o->attempt = 0;
		o->retry_at = 0;
		o->down = false;
		o->fail_unreachable = false;
		o->why[0] = '\0';
		o->delivered_records += b->count;
		o->delivered_batches++;
		o->last_ack_wall_ms = loop_wall_ms();
		break;
	case OUT_REJECT:
		handle_reject(o, ob, reason);
		break;
	case OUT_DEAD:
		dead_letter_batch(o, ob, reason);
		break;
	default:
		schedule_retry(o, ob, reason);
		break;
	}
	o->fail_unreachable = false;
	advance_cursor(o);
	output_kick(o);
}

static int64_t pump(struct output *o)
{
	int64_t now = loop_now_ms(), wait = -1;
	struct obatch *ob;

	/* Batches waiting to be (re)sent go first, in seq order. */
	for (ob = o->head; ob; ob = ob->next) {
		if (ob->state == OB_RETRY_WAIT && o->retry_at > now)
			continue;
		if (ob->state != OB_WAIT_SEND && ob->state != OB_RETRY_WAIT)
			continue;
		if (!o->t->ready(o->state))
			break;
		send_batch(o, ob);
		/* A synchronous outcome may have changed the list: start over. */
		return 0;
	}
	/* While backed off nothing new is sent either: the retries go first,
	 * in seq order, when the wait is over. */
	while (!o->draining && o->n_batches < o->conf->max_inflight && o->retry_at <= now &&
	       o->t->ready(o->state) && !o->a->stopping) {
		struct build *bd = &o->part;
		struct obatch **tail;
		int64_t after;

		if (o->i_replay < o->n_replay) {
			int64_t first = o->replay[o->i_replay][0], last = o->replay[o->i_replay][1];
			struct build rb = { .o = o, .max_records = last - first + 1,
					    .max_bytes = INT64_MAX, .limit_seq = last };

			o->i_replay++;
			if (read_records(o, &rb, first - 1)) {
				wait = 1000;
				break;
			}
			if (last > o->read_seq)
				o->read_seq = last;
			if (!rb.count) {
				advance_cursor(o);
				continue;
			}
			ob = make_batch(o, &rb);
			if (!ob) {
				wait = 1000;
				break;
			}
			for (tail = &o->head; *tail; tail = &(*tail)->next)
				;
			*tail = ob;
			o->n_batches++;
			send_batch(o, ob);
			continue;
		}

		if (!o->part_active) {
			memset(bd, 0, sizeof(*bd));
			bd->o = o;
			bd->max_records = o->conf->batch_max_records;
			bd->max_bytes = o->conf->batch_max_bytes;
			bd->limit_seq = INT64_MAX;
			buf_reset(&o->raw);
			o->part_active = true;
			after = o->read_seq;
		} else {
			after = bd->scan;
		}
		if (read_more(o, bd, after)) {
			o->part_active = false;
			wait = 1000;
			break;
		}
		if (!bd->count) {
			o->part_active = false;
			o->linger_since = 0;
			if (bd->scan > o->read_seq) {
				/* Only records routed elsewhere: pass them. */
				o->read_seq = bd->scan;
				advance_cursor(o);
				continue;
			}
			break;
		}
		if (!bd->full) {
			if (!o->linger_since)
				o->linger_since = now;
			if (now - o->linger_since < o->conf->linger_ms) {
				wait = o->conf->linger_ms - (now - o->linger_since);
				break;
			}
		}
		o->linger_since = 0;
		o->part_active = false;
		ob = make_batch(o, bd);
		if (!ob) {
			wait = 1000;
			break;
		}
		for (tail = &o->head; *tail; tail = &(*tail)->next)
			;
		*tail = ob;
		o->n_batches++;
		o->read_seq = bd->scan;
		/* Remembered with the records: a restart sends the same batch. */
		if (queue_inflight_add(o->a->q, o->conf->name, ob->b.first_seq, ob->b.last_seq) == 0)
			agent_wrote(o->a);
		send_batch(o, ob);
	}
	for (ob = o->head; ob; ob = ob->next) {
		if (ob->state == OB_RETRY_WAIT) {
			int64_t w = o->retry_at > now ? o->retry_at - now : 0;

			if (wait < 0 || w < wait)
				wait = w;
			break;
		}
	}
	return wait;
}

static int64_t pump_timer_cb(struct loop_timer *t)
{
	struct output *o = container_of(t, struct output, timer);

	if (!o->started)
		return -1;
	return pump(o);
}

bool output_drain(struct output *o, int64_t deadline_ms)
{
	bool sent = false;

	o->draining = true;
	if (!o->started)
		return true;
	for (struct obatch *ob = o->head; ob; ob = ob->next)
		sent |= ob->state == OB_SENT;
	if (o->t->drain(o->state, sent ? deadline_ms : 0) && !sent)
		return true;
	return loop_now_ms() >= deadline_ms;
}

void output_tick(struct output *o, int64_t elapsed_ms)
{
	double now = elapsed_ms > 0
			     ? (double)(o->delivered_records - o->rate_prev) * 1000.0 / elapsed_ms
			     : 0;

	o->rate = o->rate * 0.5 + now * 0.5;
	if (o->rate < 0.05)
		o->rate = 0;
	o->rate_prev = o->delivered_records;
	/* New records committed by inputs, and linger deadlines, are picked up
	 * by kicks; the tick is the safety net. */
	output_kick(o);
}

void output_fill_status(struct output *o, struct status_output *st)
{
	int64_t now = loop_now_ms(), inflight = 0;

	snprintf(st->name, sizeof(st->name), "%s", o->conf->name);
	snprintf(st->type, sizeof(st->type), "%s", o->t->name);
	if (o->state && o->t->describe)
		o->t->describe(o->state, st->endpoint, sizeof(st->endpoint));
	st->connected = o->connected;
	snprintf(st->why, sizeof(st->why), "%s", o->why);
	st->last_ack_wall_ms = o->last_ack_wall_ms;
	st->cursor = o->cursor;
	queue_backlog(o->a->q, o->conf->name, &st->backlog_records, &st->backlog_oldest_wall_ms);
	st->backlog_bytes = queue_backlog_bytes(o->a->q, st->backlog_records);
	for (struct obatch *ob = o->head; ob; ob = ob->next)
		inflight += ob->state != OB_DONE;
	st->inflight_batches = inflight;
	st->delivered_records = o->delivered_records;
	st->delivered_batches = o->delivered_batches;
	st->dlq_records = o->dlq_records;
	st->retries = o->retries;
	st->next_retry_in_ms = o->retry_at ? (o->retry_at > now ? o->retry_at - now : 0) : -1;
	if (st->next_retry_in_ms < 0 && !o->connected && o->state && o->t->next_attempt_ms)
		st->next_retry_in_ms = o->t->next_attempt_ms(o->state);
	st->rate = o->rate;
	cert_status_fill(o->conf, st);
}
