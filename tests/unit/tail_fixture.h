/* tail_fixture.h - what the tail driver's tests share: the core's input
 * services replaced by an in-memory recorder that can commit (records and
 * positions together) and crash (drop what was not), configuration through
 * the driver's own key table, files in a fresh directory, running the real
 * event loop, and a fixture that starts and stops the driver once per test.
 *
 * Every input_* function of driver.h is defined here, so the linker never
 * needs the core's input object from the library (it would clash): include
 * this header in exactly one file of a test program, after test.h.
 */
#ifndef TAIL_FIXTURE_H
#define TAIL_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"

/* ---- the recording fake of the core ------------------------------------ */

struct rec {
	char *data;
	size_t len;
	char *key;
	char *reason;           /* NULL: emitted; else dead-lettered */
	char *header;           /* csv header the core held at emit time */
	bool committed;
};

/* A gap marker the driver asked for. */
struct gap {
	char *source;
	int64_t off, bytes;
	char *reason;
	char *key;
	bool committed;
};

struct pos {
	char *source;
	char *state;            /* NULL: forgotten */
	size_t len;
};

struct input {
	const char *name;
	void *conf;
	int64_t max_record;
	struct loop *loop;
	bool wants_header;
	char *header;
	struct rec *recs;
	size_t n_recs, cap_recs;
	struct gap *gaps;
	size_t n_gaps;
	struct pos *committed, *pending;
	size_t n_committed, n_pending;
	size_t saves, commit_every;     /* 0: commit on demand only */
	long block_at;                  /* emit #N returns -EAGAIN; -1 never */
	long eio_at;                    /* emit #N returns -EIO once; -1 never */
	long attempts;
	size_t stop_at;                 /* stop the loop at this many records */
	bool blocked;
	char last_error[256];
	int errors;
	char state[128];
};

static void pos_put(struct pos **v, size_t *n, const char *source, const void *state, size_t len)
{
	struct pos *p = NULL;

	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*v)[i].source, source))
			p = &(*v)[i];
	if (!p) {
		*v = realloc(*v, (*n + 1) * sizeof(**v));
		p = &(*v)[(*n)++];
		p->source = strdup(source);
	} else {
		free(p->state);
	}
	p->state = NULL;
	p->len = len;
	if (state) {
		p->state = malloc(len + 1);
		memcpy(p->state, state, len);
		p->state[len] = '\0';
	}
}

static const struct pos *pos_get(const struct pos *v, size_t n, const char *source)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].source, source))
			return &v[i];
	return NULL;
}

static void pos_clear(struct pos **v, size_t *n)
{
	for (size_t i = 0; i < *n; i++) {
		free((*v)[i].source);
		free((*v)[i].state);
	}
	free(*v);
	*v = NULL;
	*n = 0;
}

static void fake_commit(struct input *in)
{
	for (size_t i = 0; i < in->n_recs; i++)
		in->recs[i].committed = true;
	for (size_t i = 0; i < in->n_gaps; i++)
		in->gaps[i].committed = true;
	for (size_t i = 0; i < in->n_pending; i++)
		pos_put(&in->committed, &in->n_committed, in->pending[i].source, in->pending[i].state,
			in->pending[i].len);
	pos_clear(&in->pending, &in->n_pending);
}

static void rec_free(struct rec *r)
{
	free(r->data);
	free(r->key);
	free(r->reason);
	free(r->header);
}

static void gap_free(struct gap *g)
{
	free(g->source);
	free(g->reason);
	free(g->key);
}

/* A power cut: whatever was not committed never happened. */
static void fake_crash(struct input *in)
{
	size_t j = 0;

	for (size_t i = 0; i < in->n_recs; i++) {
		if (in->recs[i].committed)
			in->recs[j++] = in->recs[i];
		else
			rec_free(&in->recs[i]);
	}
	in->n_recs = j;
	j = 0;
	for (size_t i = 0; i < in->n_gaps; i++) {
		if (in->gaps[i].committed)
			in->gaps[j++] = in->gaps[i];
		else
			gap_free(&in->gaps[i]);
	}
	in->n_gaps = j;
	pos_clear(&in->pending, &in->n_pending);
	free(in->header);
	in->header = NULL;
}

static void fake_release(struct input *in)
{
	for (size_t i = 0; i < in->n_recs; i++)
		rec_free(&in->recs[i]);
	free(in->recs);
	for (size_t i = 0; i < in->n_gaps; i++)
		gap_free(&in->gaps[i]);
	free(in->gaps);
	pos_clear(&in->committed, &in->n_committed);
	pos_clear(&in->pending, &in->n_pending);
	free(in->header);
	memset(in, 0, sizeof(*in));
}

static int add_rec(struct input *in, const char *data, size_t len, const char *key,
		   const char *reason)
{
	struct rec *r;

	in->attempts++;
	if (in->block_at >= 0 && in->attempts >= in->block_at) {
		in->blocked = true;
		return -EAGAIN;
	}
	if (in->eio_at >= 0 && in->attempts == in->eio_at) {
		in->eio_at = -1;
		return -EIO;
	}
	if (in->n_recs == in->cap_recs) {
		in->cap_recs = in->cap_recs ? 2 * in->cap_recs : 256;
		in->recs = realloc(in->recs, in->cap_recs * sizeof(*in->recs));
	}
	r = &in->recs[in->n_recs++];
	r->data = malloc(len + 1);
	memcpy(r->data, data, len);
	r->data[len] = '\0';
	r->len = len;
	r->key = strdup(key);
	r->reason = reason ? strdup(reason) : NULL;
	r->header = in->header ? strdup(in->header) : NULL;
	r->committed = false;
	if (in->n_recs == in->stop_at)
		loop_stop(in->loop);
	return 0;
}

const char *input_name(const struct input *in)
{
	return in->name;
}

const void *input_driver_conf(const struct input *in)
{
	return in->conf;
}

int64_t input_max_record_bytes(const struct input *in)
{
	return in->max_record;
}

struct loop *input_loop(struct input *in)
{
	return in->loop;
}

int input_emit(struct input *in, const char *data, size_t len, const char *key)
{
	return add_rec(in, data, len, key, NULL);
}

int input_reject(struct input *in, const char *data, size_t len, const char *key,
		 const char *reason)
{
	return add_rec(in, data, len, key, reason);
}

int input_gap(struct input *in, const char *source, int64_t offset, int64_t bytes,
	      const char *reason, const char *key)
{
	struct gap *g;

	in->attempts++;
	if (in->block_at >= 0 && in->attempts >= in->block_at) {
		in->blocked = true;
		return -EAGAIN;
	}
	in->gaps = realloc(in->gaps, (in->n_gaps + 1) * sizeof(*in->gaps));
	g = &in->gaps[in->n_gaps++];
	g->source = strdup(source);
	g->off = offset;
	g->bytes = bytes;
	g->reason = strdup(reason);
	g->key = strdup(key);
	g->committed = false;
	return 0;
}

int input_save_position(struct input *in, const char *source, const void *state, size_t len)
{
	pos_put(&in->pending, &in->n_pending, source, state, len);
	if (in->commit_every && ++in->saves % in->commit_every == 0)
		fake_commit(in);
	return 0;
}

int input_load_position(struct input *in, const char *source, void **state, size_t *len)
{
	const struct pos *p = pos_get(in->pending, in->n_pending, source);

	if (!p)
		p = pos_get(in->committed, in->n_committed, source);
	if (!p || !p->state)
		return -ENOENT;
	*state = xmalloc(p->len + 1);
	memcpy(*state, p->state, p->len);
	*len = p->len;
	return 0;
}

int input_forget_position(struct input *in, const char *source)
{
	pos_put(&in->pending, &in->n_pending, source, NULL, 0);
	return 0;
}

bool input_blocked(const struct input *in)
{
	return in->blocked;
}

bool input_wants_header(const struct input *in)
{
	return in->wants_header;
}

int input_set_header(struct input *in, const char *data, size_t len)
{
	free(in->header);
	in->header = strndup(data, len);
	return 0;
}

void input_error(struct input *in, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(in->last_error, sizeof(in->last_error), fmt, ap);
	va_end(ap);
	in->errors++;
}

void input_clear_error(struct input *in)
{
	in->last_error[0] = '\0';
}

void input_set_state(struct input *in, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(in->state, sizeof(in->state), fmt, ap);
	va_end(ap);
}

/* The rest of the driver interface, which tail does not use: here so that
 * the other drivers in the registry link against this fake core too. */
void input_sample_now(struct input *in, struct sample_time *t)
{
	t->wall_ms = loop_wall_ms();
	t->mono_ms = loop_boot_ms();
}

int input_emit_at(struct input *in, const char *data, size_t len, const char *key,
		  const struct sample_time *t)
{
	return add_rec(in, data, len, key, NULL);
}

uint64_t input_ticket(const struct input *in)
{
	return in->n_recs;
}

/* Services other drivers of the registry use. */
uint64_t input_take_ticket(struct input *in)
{
	return in->n_recs;
}

const char *input_agent_id(const struct input *in)
{
	return "gw-test";
}

struct rec *input_rec_begin(struct input *in)
{
	return NULL;
}

int input_emit_rec(struct input *in, struct rec *r, const char *key, const struct sample_time *t)
{
	return -ENOMEM;
}

int input_rec_parsed(struct input *in, struct rec *r, const char *name, const char *data,
		     size_t len, char *why, size_t whylen)
{
	return -ENOMEM;
}

void input_set_connected(struct input *in, bool connected, const char *why_fmt, ...)
{
}

void input_count_request(struct input *in)
{
}

void input_count_missed(struct input *in, int64_t n)
{
}

void input_count_error(struct input *in, enum input_err_kind kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(in->last_error, sizeof(in->last_error), fmt, ap);
	va_end(ap);
	in->errors++;
}

/* ---- configuration through the driver's own key table ------------------ */

static const struct driver *drv;

static const struct cfg_key *key_of(const char *name)
{
	for (const struct cfg_key *k = drv->conf_keys; k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

/* Just enough of the config grammar for the values used here. */
static void conf_set(void *conf, const char *name, const char *v)
{
	const struct cfg_key *k = key_of(name);
	char *end;
	int64_t n;

	if (!k) {
		fprintf(stderr, "no key %s\n", name);
		abort();
	}
	switch (k->type) {
	case CFG_STR:
		xfree(*(char **)((char *)conf + k->offset));
		*(char **)((char *)conf + k->offset) = v ? xstrdup(v) : NULL;
		break;
	case CFG_ENUM:
		for (int i = 0; k->enums[i]; i++)
			if (!strcmp(k->enums[i], v))
				*(int *)((char *)conf + k->offset) = i;
		break;
	case CFG_BOOL:
		*(bool *)((char *)conf + k->offset) = !strcmp(v, "true");
		break;
	default:
		n = strtoll(v, &end, 10);
		if (!strcmp(end, "s"))
			n *= 1000;
		else if (!strcmp(end, "KiB"))
			n <<= 10;
		else if (!strcmp(end, "MiB"))
			n <<= 20;
		*(int64_t *)((char *)conf + k->offset) = n;
		break;
	}
}

static void *conf_new(const char *path)
{
	void *conf = calloc(1, drv->conf_size);

	for (const struct cfg_key *k = drv->conf_keys; k->name; k++)
		if (k->def)
			conf_set(conf, k->name, k->def);
	conf_set(conf, "path", path);
	conf_set(conf, "poll_interval", "20");
	conf_set(conf, "rotate_wait", "150");
	return conf;
}

static void conf_free(void *conf)
{
	for (const struct cfg_key *k = drv->conf_keys; k->name; k++)
		if (k->type == CFG_STR)
			xfree(*(char **)((char *)conf + k->offset));
	free(conf);
}

/* ---- files, the loop, and running the driver ---------------------------- */

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_tail.XXXXXX");
	if (!mkdtemp(dir))
		abort();
}

static void remove_dir(void)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", dir, dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static char *fpath(const char *name)
{
	static char p[4][256];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void write_at_end(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		abort();
	close(fd);
}

static void append(const char *path, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void append(const char *path, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	write_at_end(path, buf, (size_t)n);
}

/* Lines "<prefix><i>\n" for i in [from, to). */
static void append_lines(const char *path, const char *prefix, int from, int to)
{
	size_t cap = (size_t)(to - from) * (strlen(prefix) + 12) + 1, len = 0;
	char *b = malloc(cap);

	for (int i = from; i < to; i++)
		len += (size_t)snprintf(b + len, cap - len, "%s%d\n", prefix, i);
	write_at_end(path, b, len);
	free(b);
}

struct runner {
	struct loop_timer t;
	struct input *in;
	size_t want;            /* stop once this many records exist */
	size_t *peak;           /* highest mem_in_use() between ticks */
	int64_t deadline;
};

static int64_t runner_cb(struct loop_timer *t)
{
	struct runner *r = container_of(t, struct runner, t);

	if (r->peak && mem_in_use() > *r->peak)
		*r->peak = mem_in_use();

	if ((r->want && r->in->n_recs >= r->want) || loop_now_ms() >= r->deadline) {
		loop_stop(r->in->loop);
		return -1;
	}
	return 5;
}

/* Run the loop until `want` records exist (0: just for ms), at most ms. */
static size_t *run_peak;

static void run(struct input *in, size_t want, int64_t ms)
{
	struct runner r = { .t.cb = runner_cb, .in = in, .want = want, .peak = run_peak,
			    .deadline = loop_now_ms() + ms };

	loop_timer_set(in->loop, &r.t, 0);
	loop_run(in->loop);
	loop_timer_cancel(in->loop, &r.t);
}

/* One full pass of the driver, after every change made so far: resume()
 * makes its timer due now; the runner lets one whole loop pass run (the
 * driver's timer and any pending inotify event in it) and stops in the
 * next. Nothing waits for the clock. */
struct driver_pass {
	struct loop_timer t;
	struct loop *l;
	int fired;
};

static int64_t pass_cb(struct loop_timer *t)
{
	struct driver_pass *d = container_of(t, struct driver_pass, t);

	if (++d->fired >= 3) {
		loop_stop(d->l);
		return -1;
	}
	return 0;
}

static void spin(struct input *in)
{
	struct driver_pass d = { .t.cb = pass_cb, .l = in->loop };

	loop_timer_set(in->loop, &d.t, 0);
	loop_run(in->loop);
	loop_timer_cancel(in->loop, &d.t);
}

static void drive(struct input *in, void *st)
{
	drv->resume(in, st);
	spin(in);
	spin(in);
}

/* Run the loop until pred(in) holds, at most ms (which only a broken build
 * reaches). Returns pred(in). */
struct until {
	struct loop_timer t;
	struct input *in;
	bool (*pred)(const struct input *in);
	int64_t deadline;
};

static int64_t until_cb(struct loop_timer *t)
{
	struct until *u = container_of(t, struct until, t);

	if (u->pred(u->in) || loop_now_ms() >= u->deadline) {
		loop_stop(u->in->loop);
		return -1;
	}
	return 5;
}

static bool run_until(struct input *in, bool (*pred)(const struct input *in), int64_t ms)
{
	struct until u = { .t.cb = until_cb, .in = in, .pred = pred,
			   .deadline = loop_now_ms() + ms };

	loop_timer_set(in->loop, &u.t, 0);
	loop_run(in->loop);
	loop_timer_cancel(in->loop, &u.t);
	return pred(in);
}

static void fake_init(struct input *in, struct loop *l, void *conf)
{
	memset(in, 0, sizeof(*in));
	in->name = "test";
	in->conf = conf;
	in->loop = l;
	in->max_record = 1 << 20;
	in->block_at = -1;
	in->eio_at = -1;
}

/* Do the records, in order, hold exactly "<prefix><i>" for i in [from, to)
 * starting at index at? Returns the index after them, or -1. */
static long expect_lines(const struct input *in, size_t at, const char *prefix, int from, int to)
{
	char want[64];

	for (int i = from; i < to; i++, at++) {
		snprintf(want, sizeof(want), "%s%d", prefix, i);
		if (at >= in->n_recs || in->recs[at].reason || strcmp(in->recs[at].data, want)) {
			fprintf(stderr, "record %zu: \"%s\", expected \"%s\"\n", at,
				at < in->n_recs ? in->recs[at].data : "(none)", want);
			return -1;
		}
	}
	return (long)at;
}

/* Records of one file, in order, by key prefix. */
static size_t count_with_key(const struct input *in, const char *prefix)
{
	size_t n = 0;

	for (size_t i = 0; i < in->n_recs; i++)
		n += !strncmp(in->recs[i].key, prefix, strlen(prefix));
	return n;
}

static bool parse_key(const char *key, uint64_t *dev, uint64_t *ino, uint64_t *gen, int64_t *off)
{
	int n = 0;

	return sscanf(key, "tail:%" SCNu64 ":%" SCNu64 ":%" SCNu64 ":%" SCNd64 "%n", dev, ino, gen,
		      off, &n) == 4 && key[n] == '\0';
}

static bool have_data(const struct input *in, const char *data)
{
	for (size_t i = 0; i < in->n_recs; i++)
		if (!strcmp(in->recs[i].data, data))
			return true;
	return false;
}

/* Records whose key is the one before's: read twice. */
static size_t repeated_keys(const struct input *in)
{
	size_t n = 0;

	for (size_t i = 1; i < in->n_recs; i++)
		n += !strcmp(in->recs[i].key, in->recs[i - 1].key);
	return n;
}

/* The queue refused a record. */
static bool refused(const struct input *in)
{
	return in->blocked;
}

/* ---- one test's loop, configuration, fake input and driver -------------- */

struct fixture {
	struct loop *l;
	struct input in;
	void *conf;
	void *st;               /* the driver's state while started */
};

/* The loop, a configuration tailing path and the fake input: a test sets
 * keys in f->conf and knobs in f->in before fixture_start(). */
static int fixture_init(struct fixture *f, const char *path)
{
	int err = loop_init(&f->l);

	if (err)
		return err;
	f->conf = conf_new(path);
	fake_init(&f->in, f->l, f->conf);
	f->st = NULL;
	return 0;
}

/* Start the driver with no state of its own: after drv->stop(), a restart
 * that finds only what the fake core kept. */
static int fixture_start(struct fixture *f)
{
	f->st = NULL;
	return drv->start(&f->in, &f->st);
}

/* Stop the driver and free what fixture_init() made. */
static void fixture_release(struct fixture *f)
{
	drv->stop(&f->in, f->st);
	fake_release(&f->in);
	conf_free(f->conf);
	loop_free(f->l);
}

/* A power cut between commits: run to commit_at records (stopping the loop
 * mid-tick) and commit, run on to crash_at, stop the driver and drop what
 * was not committed. Returns how many records were committed; *n_read
 * (unless NULL) how many had been read before the cut. */
static size_t fixture_crash(struct fixture *f, size_t commit_at, size_t crash_at,
			    size_t *n_read)
{
	size_t committed;

	f->in.stop_at = commit_at;
	run(&f->in, commit_at, 5000);
	fake_commit(&f->in);
	committed = f->in.n_recs;
	f->in.stop_at = crash_at;
	run(&f->in, crash_at, 5000);
	f->in.stop_at = 0;
	if (n_read)
		*n_read = f->in.n_recs;
	drv->stop(&f->in, f->st);
	fake_crash(&f->in);
	return committed;
}

/* fixture_release(), and remove the directory make_dir() made. */
static void fixture_stop(struct fixture *f)
{
	fixture_release(f);
	remove_dir();
}

#endif
