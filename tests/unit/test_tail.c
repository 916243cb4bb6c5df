/* test_tail.c - the tail driver against real files and the real event loop,
 * with the core's input services replaced by an in-memory recorder that can
 * commit (records and positions together) and crash (drop what was not).
 *
 * Every input_* function of driver.h is defined here, so the linker never
 * needs the core's input object from the library (it would clash).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "driver.h"
#include "test.h"

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

/* ---- tests ---------------------------------------------------------------- */

TEST(registry_and_key_table)
{
	char err[128];
	void *conf;

	CHECK(driver_find("tail") == drv);
	CHECK(driver_find("no-such-driver") == NULL);
	CHECK_EQ_INT(drv->version, DRIVER_VERSION);
	for (const struct cfg_key *k = drv->conf_keys; k->name; k++)
		CHECK(k->help && strlen(k->help) > 20);
	REQUIRE(key_of("path") && key_of("path")->required);
	conf = conf_new("relative/*.log");
	CHECK(drv->validate(conf, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "absolute") != NULL);
	conf_set(conf, "path", "/var/log/a.log, /var/log/b/*.log");
	CHECK(drv->validate(conf, err, sizeof(err)) == 0);
	conf_set(conf, "path", " , ");
	CHECK(drv->validate(conf, err, sizeof(err)) == -EINVAL);
	conf_free(conf);
	drv->stop(NULL, NULL);
}

TEST(every_line_once_in_order)
{
	struct loop *l;
	struct input in;
	void *conf;
	void *st = NULL;
	struct stat sb;
	char prefix[96];
	long at;
	uint64_t dev, ino, gen, gen0 = 0;
	int64_t off, want_off = 0;

	make_dir();
	append_lines(fpath("a.log"), "line ", 0, 25000);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 25000, 5000);
	append_lines(fpath("a.log"), "line ", 25000, 30000);
	run(&in, 30000, 5000);
	at = expect_lines(&in, 0, "line ", 0, 30000);
	CHECK_EQ_INT(at, 30000);
	CHECK_EQ_INT(in.n_recs, 30000);
	/* Keys: this file's identity, one generation, each line's offset. */
	REQUIRE(stat(fpath("a.log"), &sb) == 0);
	snprintf(prefix, sizeof(prefix), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)sb.st_dev,
		 (uint64_t)sb.st_ino);
	CHECK_EQ_INT(count_with_key(&in, prefix), 30000);
	for (size_t i = 0; i < in.n_recs; i++) {
		REQUIRE(parse_key(in.recs[i].key, &dev, &ino, &gen, &off));
		if (i == 0)
			gen0 = gen;
		CHECK(gen == gen0);
		if (off != want_off) {
			CHECK_EQ_INT(off, want_off);
			break;
		}
		want_off += (int64_t)in.recs[i].len + 1;
	}
	CHECK(strstr(in.state, "tailing 1 file") != NULL);
	CHECK_EQ_INT(in.errors, 0);
	/* The saved position points after the last line. */
	{
		const struct pos *p;
		char source[64];
		int64_t saved;

		snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)sb.st_dev,
			 (uint64_t)sb.st_ino);
		p = pos_get(in.pending, in.n_pending, source);
		REQUIRE(p && p->state);
		CHECK(sscanf(p->state, "2 %" SCNd64, &saved) == 1 && saved == sb.st_size);
		CHECK(strstr(p->state, fpath("a.log")) != NULL);
	}
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(start_at_end_skips_existing_content)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	append_lines(fpath("a.log"), "old ", 0, 100);
	append(fpath("a.log"), "par");
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	conf_set(conf, "start_at", "end");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 0);
	/* The line being written at start is read whole. */
	append(fpath("a.log"), "tial\n");
	append_lines(fpath("a.log"), "new ", 0, 3);
	run(&in, 4, 2000);
	REQUIRE(in.n_recs == 4);
	CHECK_EQ_STR(in.recs[0].data, "partial");
	CHECK_EQ_INT(expect_lines(&in, 1, "new ", 0, 3), 4);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(partial_last_line_waits)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	append(fpath("a.log"), "one\nabc");
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 1, 2000);
	drive(&in, st);
	REQUIRE(in.n_recs == 1);
	CHECK_EQ_STR(in.recs[0].data, "one");
	append(fpath("a.log"), "def");
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 1);
	append(fpath("a.log"), "\n");
	run(&in, 2, 2000);
	REQUIRE(in.n_recs == 2);
	CHECK_EQ_STR(in.recs[1].data, "abcdef");
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(rename_rotation_reads_old_file_to_its_end)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	struct stat old, cur;
	char pold[96], pnew[96], source[64];
	const struct pos *p;
	long at;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 10);
	REQUIRE(stat(fpath("app.log"), &old) == 0);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 10, 2000);
	REQUIRE(in.n_recs == 10);
	REQUIRE(rename(fpath("app.log"), fpath("app.log.1")) == 0);
	/* The writer has not reopened yet: its lines go to the old file. */
	append_lines(fpath("app.log.1"), "a", 10, 15);
	append_lines(fpath("app.log"), "b", 0, 5);
	run(&in, 20, 2000);
	/* The writer's unterminated last line comes after rotate_wait. */
	append(fpath("app.log.1"), "last words");
	run(&in, 21, 3000);
	REQUIRE(stat(fpath("app.log"), &cur) == 0);
	snprintf(pold, sizeof(pold), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	snprintf(pnew, sizeof(pnew), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)cur.st_dev,
		 (uint64_t)cur.st_ino);
	CHECK_EQ_INT(in.n_recs, 21);
	CHECK_EQ_INT(count_with_key(&in, pold), 16);
	CHECK_EQ_INT(count_with_key(&in, pnew), 5);
	/* Each file's lines in order. */
	{
		int a = 0, b = 0;
		char want[32];

		for (size_t i = 0; i < in.n_recs; i++) {
			bool is_old = !strncmp(in.recs[i].key, pold, strlen(pold));

			if (is_old && a == 15) {
				CHECK_EQ_STR(in.recs[i].data, "last words");
				a++;
				continue;
			}
			snprintf(want, sizeof(want), "%s%d", is_old ? "a" : "b", is_old ? a++ : b++);
			CHECK_EQ_STR(in.recs[i].data, want);
		}
	}
	/* The old file is finished: closed and its position forgotten. */
	drive(&in, st);
	snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	p = pos_get(in.pending, in.n_pending, source);
	CHECK(p && p->state == NULL);
	CHECK(strstr(in.state, "tailing 1 file, 0 rotated") != NULL);
	at = (long)in.n_recs;
	append_lines(fpath("app.log.1"), "late", 0, 1);
	append_lines(fpath("app.log"), "b", 5, 7);
	run(&in, 23, 2000);
	CHECK_EQ_INT(in.n_recs, at + 2);
	CHECK(!have_data(&in, "late0"));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

/* The line at index i comes from generation gen and offset off? */
static bool key_is(const struct input *in, size_t i, uint64_t gen, int64_t off)
{
	uint64_t dev, ino, g;
	int64_t o;

	return i < in->n_recs && parse_key(in->recs[i].key, &dev, &ino, &g, &o) && g == gen &&
	       o == off;
}

TEST(truncation_restarts_with_new_generation)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	uint64_t dev, ino, gen;
	int64_t off;

	make_dir();
	append_lines(fpath("a.log"), "first ", 0, 10);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 10, 2000);
	REQUIRE(in.n_recs == 10);
	REQUIRE(parse_key(in.recs[0].key, &dev, &ino, &gen, &off));
	REQUIRE(truncate(fpath("a.log"), 0) == 0);
	drive(&in, st);
	append_lines(fpath("a.log"), "second ", 0, 3);
	run(&in, 13, 2000);
	REQUIRE(in.n_recs == 13);
	CHECK_EQ_INT(expect_lines(&in, 10, "second ", 0, 3), 13);
	CHECK(key_is(&in, 10, gen + 1, 0));
	CHECK(key_is(&in, 11, gen + 1, 9));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(copy_truncate_refilled_before_next_look)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	uint64_t dev, ino, gen;
	int64_t off;

	make_dir();
	append_lines(fpath("a.log"), "x", 0, 5);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 5, 2000);
	REQUIRE(in.n_recs == 5);
	REQUIRE(parse_key(in.recs[0].key, &dev, &ino, &gen, &off));
	/* Loop not running: the driver only sees the refilled, longer file,
	 * whose head differs. */
	REQUIRE(truncate(fpath("a.log"), 0) == 0);
	append_lines(fpath("a.log"), "after copy ", 0, 20);
	run(&in, 25, 2000);
	CHECK_EQ_INT(in.n_recs, 25);
	CHECK_EQ_INT(expect_lines(&in, 5, "after copy ", 0, 20), 25);
	CHECK(key_is(&in, 5, gen + 1, 0));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

static bool one_file(const struct input *in)
{
	return strstr(in->state, "tailing 1 file,") != NULL;
}

TEST(deletion_and_recreation)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	int fd;
	struct stat old;
	char source[64];
	const struct pos *p;

	make_dir();
	fd = open(fpath("a.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, "d0\nd1\n", 6) == 6);
	REQUIRE(fstat(fd, &old) == 0);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 2, 2000);
	REQUIRE(unlink(fpath("a.log")) == 0);
	CHECK(write(fd, "d2\nd3\n", 6) == 6);
	close(fd);
	drive(&in, st);
	append_lines(fpath("a.log"), "r", 0, 3);
	run(&in, 7, 2000);
	CHECK_EQ_INT(in.n_recs, 7);
	CHECK(have_data(&in, "d2") && have_data(&in, "d3"));
	CHECK(have_data(&in, "r0") && have_data(&in, "r2"));
	/* The deleted file is let go once quiet for rotate_wait. */
	CHECK(run_until(&in, one_file, 5000));
	snprintf(source, sizeof(source), "%" PRIu64 ":%" PRIu64, (uint64_t)old.st_dev,
		 (uint64_t)old.st_ino);
	p = pos_get(in.pending, in.n_pending, source);
	/* Forgotten, unless the new file got the same inode back. */
	{
		struct stat now;

		REQUIRE(stat(fpath("a.log"), &now) == 0);
		if (now.st_ino != old.st_ino)
			CHECK(p && p->state == NULL);
	}
	CHECK(strstr(in.state, "tailing 1 file,") != NULL);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(new_files_matching_glob_read_from_head)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	char pat[256];

	make_dir();
	append_lines(fpath("a.log"), "a", 0, 3);
	REQUIRE(loop_init(&l) == 0);
	snprintf(pat, sizeof(pat), "%s/*.log, %s/extra.txt", dir, dir);
	conf = conf_new(pat);
	conf_set(conf, "start_at", "end");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 0);
	append_lines(fpath("b.log"), "b", 0, 4);
	append_lines(fpath("c.txt"), "c", 0, 4);
	append_lines(fpath("extra.txt"), "e", 0, 2);
	append_lines(fpath("a.log"), "a", 3, 5);
	run(&in, 8, 2000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 8);
	CHECK(have_data(&in, "b0") && have_data(&in, "b3"));
	CHECK(have_data(&in, "e0") && have_data(&in, "e1"));
	CHECK(have_data(&in, "a3") && have_data(&in, "a4"));
	CHECK(!have_data(&in, "a0") && !have_data(&in, "c0"));
	CHECK(strstr(in.state, "tailing 3 files") != NULL);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

static bool refused(const struct input *in)
{
	return in->blocked;
}

static const struct rec *nth_reject(const struct input *in, int n)
{
	for (size_t i = 0; i < in->n_recs; i++)
		if (in->recs[i].reason && n-- == 0)
			return &in->recs[i];
	return NULL;
}

TEST(long_lines_are_rejected_whole)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	size_t big = 50000, huge = (20u << 20) + 5;
	char *line = malloc(huge + 1);
	const struct rec *r;
	char want[160];
	bool same = true;
	size_t peak = 0;

	make_dir();
	for (size_t i = 0; i < huge; i++)
		line[i] = (char)('a' + i % 26);
	append(fpath("a.log"), "ok0\n");
	/* 150 bytes: over the limit but within one buffer. */
	write_at_end(fpath("a.log"), line, 150);
	append(fpath("a.log"), "\nok1\n");
	/* 50000 bytes, written in two parts read in different ticks. */
	write_at_end(fpath("a.log"), line, 30000);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	conf_set(conf, "read_chunk", "4096");
	fake_init(&in, l, conf);
	in.max_record = 100;
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 3, 2000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 3);
	write_at_end(fpath("a.log"), line + 30000, big - 30000);
	append(fpath("a.log"), "\nok2\n");
	write_at_end(fpath("a.log"), line, huge);
	append(fpath("a.log"), "\nok3\n");
	run_peak = &peak;
	run(&in, 7, 10000);
	run_peak = NULL;
	REQUIRE(in.n_recs == 7);
	CHECK_EQ_STR(in.recs[0].data, "ok0");
	CHECK_EQ_STR(in.recs[2].data, "ok1");
	CHECK_EQ_STR(in.recs[4].data, "ok2");
	CHECK_EQ_STR(in.recs[6].data, "ok3");
	r = nth_reject(&in, 0);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, 150);
	CHECK(!memcmp(r->data, line, 150));
	CHECK_EQ_STR(r->reason, "line longer than max_record_bytes (150 bytes)");
	{
		uint64_t dev, ino, gen;
		int64_t off;

		CHECK(parse_key(r->key, &dev, &ino, &gen, &off) && off == 4);
	}
	r = nth_reject(&in, 1);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, big);
	CHECK(!memcmp(r->data, line, big));
	CHECK_EQ_STR(r->reason, "line longer than max_record_bytes (50000 bytes)");
	r = nth_reject(&in, 2);
	REQUIRE(r);
	CHECK_EQ_INT(r->len, 16 << 20);
	for (size_t i = 0; i < r->len && same; i++)
		same = r->data[i] == line[i];
	CHECK(same);
	snprintf(want, sizeof(want),
		 "line longer than max_record_bytes (%zu bytes; only the first %d bytes kept)", huge,
		 16 << 20);
	CHECK_EQ_STR(r->reason, want);
	/* Memory stayed bounded while a 20 MB line streamed through. */
	CHECK(peak > 0 && peak < (64u << 10));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
	free(line);
}

TEST(restart_neither_loses_nor_duplicates)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	size_t before_crash, committed;

	make_dir();
	append_lines(fpath("a.log"), "r", 0, 5000);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	conf_set(conf, "max_lines_per_tick", "37");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	/* Stop mid-tick, so the last positions saved lag the records. */
	in.stop_at = 1000;
	run(&in, 1000, 5000);
	fake_commit(&in);
	committed = in.n_recs;
	in.stop_at = 2000;
	run(&in, 2000, 5000);
	in.stop_at = 0;
	before_crash = in.n_recs;
	drv->stop(&in, st);
	fake_crash(&in);
	/* The uncommitted records were lost with the crash, and so was the
	 * position that went with them. */
	CHECK(before_crash > committed);
	CHECK_EQ_INT(in.n_recs, committed);
	append_lines(fpath("a.log"), "r", 5000, 6000);
	st = NULL;
	in.commit_every = 1;
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 6000, 5000);
	drive(&in, st);
	fake_commit(&in);
	CHECK_EQ_INT(in.n_recs, 6000);
	CHECK_EQ_INT(expect_lines(&in, 0, "r", 0, 6000), 6000);
	for (size_t i = 1; i < in.n_recs; i++)
		if (!strcmp(in.recs[i].key, in.recs[i - 1].key))
			CHECK(!"duplicate key");
	drv->stop(&in, st);
	/* A restart with everything committed reads nothing again. */
	st = NULL;
	REQUIRE(drv->start(&in, &st) == 0);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 6000);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(full_queue_blocks_and_resume_continues)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	append_lines(fpath("a.log"), "q", 0, 500);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("a.log"));
	fake_init(&in, l, conf);
	in.block_at = 101;
	REQUIRE(drv->start(&in, &st) == 0);
	REQUIRE(run_until(&in, refused, 5000));
	/* Stopped at the refused line: no retry until resume(), however
	 * the loop turns (the driver has no timer armed). */
	append_lines(fpath("a.log"), "q", 500, 501);
	spin(&in);
	spin(&in);
	CHECK_EQ_INT(in.n_recs, 100);
	CHECK_EQ_INT(in.attempts, 101);
	CHECK(strstr(in.state, "waiting") != NULL);
	in.block_at = -1;
	in.blocked = false;
	/* Another error is retried on a later tick without loss. */
	in.eio_at = 200;
	drv->resume(&in, st);
	run(&in, 501, 2000);
	CHECK_EQ_INT(in.n_recs, 501);
	CHECK_EQ_INT(expect_lines(&in, 0, "q", 0, 501), 501);
	CHECK(in.errors >= 1);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(open_errors_are_reported_and_cleared)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	char want[160];

	make_dir();
	append(fpath("sub"), "not a directory\n");
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("sub/x.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	drive(&in, st);
	snprintf(want, sizeof(want), "cannot open %s: Not a directory", fpath("sub"));
	CHECK_EQ_STR(in.last_error, want);
	REQUIRE(unlink(fpath("sub")) == 0);
	REQUIRE(mkdir(fpath("sub"), 0755) == 0);
	append_lines(fpath("sub/x.log"), "s", 0, 2);
	run(&in, 2, 2000);
	CHECK_EQ_INT(in.n_recs, 2);
	CHECK_EQ_STR(in.last_error, "");
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);

	loop_free(l);
	remove_dir();
}

/* A file the user may not read is shown as the input's error until it may
 * (run as a user that permission bits stop). */
static void permission_case(void)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	char want[160];

	REQUIRE(loop_init(&l) == 0);
	append_lines(fpath("secret.log"), "p", 0, 1);
	REQUIRE(chmod(fpath("secret.log"), 0) == 0);
	conf = conf_new(fpath("secret.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	drive(&in, st);
	snprintf(want, sizeof(want), "cannot open %s: Permission denied", fpath("secret.log"));
	CHECK_EQ_STR(in.last_error, want);
	CHECK_EQ_INT(in.n_recs, 0);
	REQUIRE(chmod(fpath("secret.log"), 0644) == 0);
	run(&in, 1, 2000);
	CHECK_EQ_INT(in.n_recs, 1);
	CHECK_EQ_STR(in.last_error, "");
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
}

#define NOBODY 65534

/* Permission bits do not stop root: as root, the case runs in a child that
 * has become nobody, in a directory nobody owns; the parent checks how it
 * ended. A child that cannot drop its privileges makes the case a skip. */
TEST(permission_denied_is_reported_and_cleared)
{
	char sub[sizeof(dir)];
	pid_t pid;
	int status;

	make_dir();
	if (geteuid() != 0) {
		permission_case();
		remove_dir();
		return;
	}
	if (snprintf(sub, sizeof(sub), "%s/u", dir) >= (int)sizeof(sub))
		abort();
	REQUIRE(chmod(dir, 0711) == 0);
	REQUIRE(mkdir(sub, 0755) == 0);
	REQUIRE(chown(sub, NOBODY, NOBODY) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		int before = test_failed_checks;

		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0) {
			fprintf(stderr, "cannot become uid %d: %s\n", NOBODY, strerror(errno));
			_exit(77);
		}
		if (geteuid() != NOBODY || setuid(0) == 0)
			_exit(77);
		memcpy(dir, sub, sizeof(dir));
		permission_case();
		fflush(stdout);
		fflush(stderr);
		_exit(test_failed_checks != before ? 1 : 0);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	remove_dir();
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		SKIP("running as root and cannot drop to uid %d", NOBODY);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- copy-truncate: the unread part is read from the rotated copy -------- */

/* dst = the first len bytes of src (-1: all), as logrotate's copy makes it. */
static void copy_file(const char *src, const char *dst, int64_t len)
{
	char buf[65536];
	int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (in < 0 || out < 0)
		abort();
	while (len != 0 && (n = read(in, buf, len > 0 && len < (int64_t)sizeof(buf) ?
					   (size_t)len : sizeof(buf))) > 0) {
		if (write(out, buf, (size_t)n) != n)
			abort();
		if (len > 0)
			len -= n;
	}
	close(in);
	close(out);
}

static int64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Generation and offset of record i. */
static void key_of_rec(const struct input *in, size_t i, uint64_t *gen, int64_t *off)
{
	uint64_t dev, ino;

	*gen = 0;
	*off = -1;
	if (i < in->n_recs)
		parse_key(in->recs[i].key, &dev, &ino, gen, off);
}

TEST(copy_truncate_reads_the_unread_part_from_the_copy)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	uint64_t gen0, gen;
	int64_t off, at100;
	struct stat sb;
	char prefix[96];

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 100);
	at100 = file_size(fpath("app.log"));
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 100, 5000);
	REQUIRE(in.n_recs == 100);
	key_of_rec(&in, 0, &gen0, &off);
	/* The loop does not run: these lines are not read when logrotate
	 * copies the file and truncates it, and the writer goes on. */
	append_lines(fpath("app.log"), "a", 100, 150);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 10);
	run(&in, 160, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 160);
	CHECK_EQ_INT(expect_lines(&in, 0, "a", 0, 150), 150);
	CHECK_EQ_INT(expect_lines(&in, 150, "b", 0, 10), 160);
	/* The copy's lines keep the keys they had in the live file. */
	REQUIRE(stat(fpath("app.log"), &sb) == 0);
	snprintf(prefix, sizeof(prefix), "tail:%" PRIu64 ":%" PRIu64 ":", (uint64_t)sb.st_dev,
		 (uint64_t)sb.st_ino);
	CHECK_EQ_INT(count_with_key(&in, prefix), 160);
	key_of_rec(&in, 100, &gen, &off);
	CHECK(gen == gen0 && off == at100);
	key_of_rec(&in, 150, &gen, &off);
	CHECK(gen == gen0 + 1 && off == 0);
	CHECK_EQ_INT(in.n_gaps, 0);
	CHECK_EQ_STR(in.last_error, "");
	CHECK(strstr(in.state, "lost") == NULL);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(copy_truncate_loss_is_a_gap_marker)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	int64_t at100, at150, at36, at40;
	uint64_t gen0;
	int64_t off;
	struct stat sb;
	char key[128];

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 100);
	at100 = file_size(fpath("app.log"));
	append_lines(fpath("app.log"), "a", 100, 150);
	at150 = file_size(fpath("app.log"));
	REQUIRE(stat(fpath("app.log"), &sb) == 0);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	fake_init(&in, l, conf);
	/* The queue is full after 100 lines: the driver knows of 150. */
	in.block_at = 101;
	REQUIRE(drv->start(&in, &st) == 0);
	REQUIRE(run_until(&in, refused, 5000));
	REQUIRE(in.n_recs == 100);
	key_of_rec(&in, 0, &gen0, &off);
	/* Truncated with no copy made (not by logrotate). */
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 30);
	in.block_at = -1;
	in.blocked = false;
	drv->resume(&in, st);
	run(&in, 130, 5000);
	CHECK_EQ_INT(expect_lines(&in, 100, "b", 0, 30), 130);
	REQUIRE(in.n_gaps == 1);
	CHECK_EQ_STR(in.gaps[0].source, fpath("app.log"));
	CHECK_EQ_INT(in.gaps[0].off, at100);
	CHECK_EQ_INT(in.gaps[0].bytes, at150 - at100);
	CHECK_EQ_STR(in.gaps[0].reason, "truncated_unread");
	snprintf(key, sizeof(key), "gap:tail:%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":%" PRId64,
		 (uint64_t)sb.st_dev, (uint64_t)sb.st_ino, gen0, at100);
	CHECK_EQ_STR(in.gaps[0].key, key);
	CHECK(strstr(in.state, "lost: 1 gap, ") != NULL);
	CHECK(strstr(in.last_error, "are lost") != NULL);
	/* The loss stays shown while all goes well again. */
	append_lines(fpath("app.log"), "b", 30, 31);
	run(&in, 131, 5000);
	drive(&in, st);
	CHECK(strstr(in.last_error, "are lost") != NULL);

	/* logrotate copies, the writer adds lines, logrotate truncates: those
	 * lines are in no file. The driver knew of them (it saw the size). */
	in.block_at = in.attempts + 1;
	append_lines(fpath("app.log"), "b", 31, 36);
	at36 = file_size(fpath("app.log"));
	append_lines(fpath("app.log"), "b", 36, 40);
	at40 = file_size(fpath("app.log"));
	REQUIRE(run_until(&in, refused, 5000));
	copy_file(fpath("app.log"), fpath("app.log.1"), at36);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 3);
	in.block_at = -1;
	in.blocked = false;
	drv->resume(&in, st);
	run(&in, 139, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 139);
	CHECK_EQ_INT(expect_lines(&in, 131, "b", 31, 36), 136);
	CHECK_EQ_INT(expect_lines(&in, 136, "c", 0, 3), 139);
	REQUIRE(in.n_gaps == 2);
	CHECK_EQ_INT(in.gaps[1].off, at36);
	CHECK_EQ_INT(in.gaps[1].bytes, at40 - at36);
	CHECK_EQ_STR(in.gaps[1].reason, "written_after_copy");
	CHECK(strstr(in.state, "lost: 2 gaps, ") != NULL);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(copy_truncate_survives_restarts)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	size_t committed;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 1000);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	conf_set(conf, "max_lines_per_tick", "37");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 1000, 5000);
	fake_commit(&in);
	drv->stop(&in, st);
	/* Rotated while agentd is stopped. */
	append_lines(fpath("app.log"), "a", 1000, 1500);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 100);
	st = NULL;
	REQUIRE(drv->start(&in, &st) == 0);
	/* A power cut while the copy is being read ... */
	in.stop_at = 1200;
	run(&in, 1200, 5000);
	fake_commit(&in);
	committed = in.n_recs;
	in.stop_at = 1400;
	run(&in, 1400, 5000);
	in.stop_at = 0;
	drv->stop(&in, st);
	fake_crash(&in);
	CHECK_EQ_INT(in.n_recs, committed);
	/* ... and the next start goes on in the copy where the commit was. */
	st = NULL;
	in.commit_every = 1;
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 1600, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 1600);
	CHECK_EQ_INT(expect_lines(&in, 0, "a", 0, 1500), 1500);
	CHECK_EQ_INT(expect_lines(&in, 1500, "b", 0, 100), 1600);
	for (size_t i = 1; i < in.n_recs; i++)
		if (!strcmp(in.recs[i].key, in.recs[i - 1].key))
			CHECK(!"duplicate key");
	CHECK_EQ_INT(in.n_gaps, 0);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

/* Of the files that begin like the truncated one, the one that also holds
 * the bytes read last is its copy, even if another is newer. */
TEST(copy_truncate_finds_the_right_copy)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	char head[80];
	struct timespec later[2] = { { 0, UTIME_NOW }, { 0, 0 } };
	struct stat sb;

	make_dir();
	memset(head, 'H', 70);
	head[70] = '\0';
	append(fpath("app.log"), "%s\n", head);
	append_lines(fpath("app.log"), "a", 1, 100);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 100, 5000);
	REQUIRE(in.n_recs == 100);
	append_lines(fpath("app.log"), "a", 100, 150);
	copy_file(fpath("app.log"), fpath("app.log.1"), -1);
	/* A look-alike: same head, long enough, newer. */
	append(fpath("app.log.bak"), "%s\n", head);
	append_lines(fpath("app.log.bak"), "z", 1, 200);
	REQUIRE(stat(fpath("app.log.1"), &sb) == 0);
	later[1].tv_sec = sb.st_mtim.tv_sec + 100;
	REQUIRE(utimensat(AT_FDCWD, fpath("app.log.bak"), later, 0) == 0);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 5);
	run(&in, 155, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 155);
	CHECK_EQ_INT(expect_lines(&in, 100, "a", 100, 150), 150);
	CHECK_EQ_INT(expect_lines(&in, 150, "b", 0, 5), 155);
	CHECK(!have_data(&in, "z150"));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

/* dst = src gzipped, as logrotate's compress makes it. */
static void gzip_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY);
	gzFile out = gzopen(dst, "wb6");
	ssize_t n;

	if (in < 0 || !out)
		abort();
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (gzwrite(out, buf, (unsigned)n) != n)
			abort();
	close(in);
	gzclose(out);
}

TEST(copy_truncate_reads_a_gzipped_copy)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 2000);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	/* Small chunks: reaching the offset in the copy takes many turns. */
	conf_set(conf, "read_chunk", "4096");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 2000, 5000);
	REQUIRE(in.n_recs == 2000);
	append_lines(fpath("app.log"), "a", 2000, 2500);
	/* An older gzipped copy that begins otherwise, and the copy itself,
	 * compressed before the driver looks (compress without delaycompress). */
	append_lines(fpath("older"), "o", 0, 3000);
	gzip_file(fpath("older"), fpath("app.log.2.gz"));
	REQUIRE(unlink(fpath("older")) == 0);
	gzip_file(fpath("app.log"), fpath("app.log.1.gz"));
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "b", 0, 10);
	run(&in, 2510, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 2510);
	CHECK_EQ_INT(expect_lines(&in, 2000, "a", 2000, 2500), 2500);
	CHECK_EQ_INT(expect_lines(&in, 2500, "b", 0, 10), 2510);
	CHECK_EQ_INT(in.n_gaps, 0);

	/* A copy compressed in a format the driver does not read: the lines
	 * are marked lost, how many is not known (never seen). */
	append_lines(fpath("app.log"), "b", 10, 20);
	run(&in, 2520, 5000);
	append_lines(fpath("app.log"), "b", 20, 30);
	append(fpath("app.log.1.zst"), "(zstd data)\n");
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 3);
	run(&in, 2523, 5000);
	drive(&in, st);
	CHECK_EQ_INT(in.n_recs, 2523);
	CHECK_EQ_INT(expect_lines(&in, 2520, "c", 0, 3), 2523);
	REQUIRE(in.n_gaps == 1);
	CHECK_EQ_STR(in.gaps[0].reason, "copy_compressed");
	CHECK_EQ_INT(in.gaps[0].bytes, -1);
	CHECK(strstr(in.last_error, "compressed") != NULL);
	CHECK(strstr(in.state, "lost: 1 gap, 0 bytes and more") != NULL);
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

/* ---- reading as data arrives, and polling when that cannot be had ------- */

TEST(lines_are_read_as_they_arrive)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	append_lines(fpath("app.log"), "a", 0, 3);
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	/* The timer alone would look again only in an hour. */
	conf_set(conf, "poll_interval", "3600s");
	fake_init(&in, l, conf);
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 3, 5000);
	REQUIRE(in.n_recs == 3);
	CHECK(strstr(in.state, "polling") == NULL);
	append_lines(fpath("app.log"), "a", 3, 10);
	run(&in, 10, 5000);
	CHECK_EQ_INT(in.n_recs, 10);
	/* A rename rotation: the new file is found at once too. */
	REQUIRE(rename(fpath("app.log"), fpath("app.log.1")) == 0);
	append_lines(fpath("app.log"), "b", 0, 4);
	run(&in, 14, 5000);
	CHECK_EQ_INT(in.n_recs, 14);
	CHECK_EQ_INT(expect_lines(&in, 10, "b", 0, 4), 14);
	/* A copy truncation as well. */
	append_lines(fpath("app.log"), "b", 4, 8);
	REQUIRE(truncate(fpath("app.log"), 0) == 0);
	append_lines(fpath("app.log"), "c", 0, 2);
	run(&in, 16, 5000);
	CHECK(have_data(&in, "c1"));
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

extern struct tail_syscalls {
	int (*inotify_init1)(int flags);
	int (*inotify_add_watch)(int fd, const char *path, uint32_t mask);
} tail_sys;

static int no_instances(int flags)
{
	(void)flags;
	errno = EMFILE;
	return -1;
}

static int no_watches(int fd, const char *path, uint32_t mask)
{
	(void)fd;
	(void)path;
	(void)mask;
	errno = ENOSPC;
	return -1;
}

TEST(polling_when_inotify_cannot_be_had)
{
	struct tail_syscalls saved = tail_sys;
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;

	make_dir();
	REQUIRE(loop_init(&l) == 0);
	conf = conf_new(fpath("app.log"));
	for (int k = 0; k < 2; k++) {
		if (k == 0)
			tail_sys.inotify_init1 = no_instances;
		else
			tail_sys.inotify_add_watch = no_watches;
		fake_init(&in, l, conf);
		REQUIRE(drv->start(&in, &st) == 0);
		CHECK(strstr(in.state, k == 0 ? "polling (inotify instance limit reached"
					    : "polling (inotify watch limit reached") != NULL);
		append_lines(fpath("app.log"), k ? "b" : "a", 0, 5);
		run(&in, 5, 5000);
		CHECK_EQ_INT(in.n_recs, 5);
		drv->stop(&in, st);
		st = NULL;
		fake_release(&in);
		tail_sys = saved;
		REQUIRE(unlink(fpath("app.log")) == 0);
	}
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

TEST(csv_header_per_file)
{
	struct loop *l;
	struct input in;
	void *conf, *st = NULL;
	char pat[256];

	make_dir();
	append(fpath("a.csv"), "h1,h2\n1,2\n3,4\n");
	REQUIRE(loop_init(&l) == 0);
	snprintf(pat, sizeof(pat), "%s/*.csv", dir);
	conf = conf_new(pat);
	fake_init(&in, l, conf);
	in.wants_header = true;
	in.commit_every = 1;
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 2, 2000);
	append(fpath("b.csv"), "x,y\n5,6\n");
	run(&in, 3, 2000);
	append(fpath("a.csv"), "7,8\n");
	run(&in, 4, 2000);
	REQUIRE(in.n_recs == 4);
	CHECK_EQ_STR(in.recs[0].data, "1,2");
	CHECK_EQ_STR(in.recs[0].header, "h1,h2");
	CHECK_EQ_STR(in.recs[1].data, "3,4");
	CHECK_EQ_STR(in.recs[1].header, "h1,h2");
	CHECK_EQ_STR(in.recs[2].data, "5,6");
	CHECK_EQ_STR(in.recs[2].header, "x,y");
	CHECK_EQ_STR(in.recs[3].data, "7,8");
	CHECK_EQ_STR(in.recs[3].header, "h1,h2");
	CHECK(!have_data(&in, "h1,h2") && !have_data(&in, "x,y"));
	drv->stop(&in, st);
	fake_crash(&in);

	/* Restarted mid-file: the header is read back from the file's head. */
	append(fpath("a.csv"), "9,10\n");
	st = NULL;
	REQUIRE(drv->start(&in, &st) == 0);
	run(&in, 5, 2000);
	REQUIRE(in.n_recs == 5);
	CHECK_EQ_STR(in.recs[4].data, "9,10");
	CHECK_EQ_STR(in.recs[4].header, "h1,h2");

	/* Truncated and rewritten: the new first line is the new header. */
	REQUIRE(truncate(fpath("a.csv"), 0) == 0);
	append(fpath("a.csv"), "k1,k2,k3\nu,v,w\n");
	run(&in, 6, 2000);
	REQUIRE(in.n_recs == 6);
	CHECK_EQ_STR(in.recs[5].data, "u,v,w");
	CHECK_EQ_STR(in.recs[5].header, "k1,k2,k3");
	drv->stop(&in, st);
	fake_release(&in);
	conf_free(conf);
	loop_free(l);
	remove_dir();
}

int main(void)
{
	log_set_level(LOGL_WARN);
	drv = driver_find("tail");
	if (!drv) {
		fprintf(stderr, "tail driver not registered\n");
		return 1;
	}
	RUN(registry_and_key_table);
	RUN(every_line_once_in_order);
	RUN(start_at_end_skips_existing_content);
	RUN(partial_last_line_waits);
	RUN(rename_rotation_reads_old_file_to_its_end);
	RUN(truncation_restarts_with_new_generation);
	RUN(copy_truncate_refilled_before_next_look);
	RUN(deletion_and_recreation);
	RUN(new_files_matching_glob_read_from_head);
	RUN(long_lines_are_rejected_whole);
	RUN(restart_neither_loses_nor_duplicates);
	RUN(full_queue_blocks_and_resume_continues);
	RUN(open_errors_are_reported_and_cleared);
	RUN(permission_denied_is_reported_and_cleared);
	RUN(csv_header_per_file);
	RUN(copy_truncate_reads_the_unread_part_from_the_copy);
	RUN(copy_truncate_loss_is_a_gap_marker);
	RUN(copy_truncate_survives_restarts);
	RUN(copy_truncate_finds_the_right_copy);
	RUN(copy_truncate_reads_a_gzipped_copy);
	RUN(lines_are_read_as_they_arrive);
	RUN(polling_when_inotify_cannot_be_had);
	TEST_END();
}
