/* test_powercut.c - the queue under simulated power cuts (crashvfs.c):
 * a seq or a batch id is never given to two different records, at every
 * synchronous level.
 *
 * Two sources (think two growing files being tailed) append records and
 * save their positions in the same transactions; an output reads what is
 * committed, forms batches, remembers them as in flight and acknowledges
 * them now and then, writing down which record content each seq and each
 * batch range named. Then the power goes: the files keep what was synced
 * and a seeded random part of what was not. The queue is reopened, the
 * sources resume from their saved positions, the output resends its
 * in-flight batches, and the round goes on. Every fifth restart is a clean
 * one instead, which must not skip any seq.
 *
 * `test_powercut --torture ROUNDS [SEED]` runs many more rounds by hand
 * (make torture); it is not part of the suite.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "config.h"
#include "crashvfs.h"
#include "mem.h"
#include "queue.h"
#include "test.h"

/* ---- a map of 64-bit keys to 64-bit values (open addressing) ---- */

struct map {
	uint64_t *k, *v;        /* k stored + 1; 0 = empty */
	size_t cap, n;
};

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t *map_slot(struct map *m, uint64_t key, bool *found);

static void map_grow(struct map *m)
{
	struct map old = *m;
	bool found;

	m->cap = old.cap ? old.cap * 2 : 1024;
	m->n = 0;
	m->k = calloc(m->cap, sizeof(*m->k));
	m->v = calloc(m->cap, sizeof(*m->v));
	if (!m->k || !m->v) {
		perror("calloc");
		exit(1);
	}
	for (size_t i = 0; i < old.cap; i++) {
		if (!old.k[i])
			continue;
		*map_slot(m, old.k[i] - 1, &found) = old.v[i];
	}
	free(old.k);
	free(old.v);
}

/* The value slot of key, inserted (value 0) when absent. */
static uint64_t *map_slot(struct map *m, uint64_t key, bool *found)
{
	size_t i;

	if (2 * (m->n + 1) > m->cap)
		map_grow(m);
	for (i = mix(key) & (m->cap - 1); m->k[i]; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == key + 1) {
			*found = true;
			return &m->v[i];
		}
	}
	m->k[i] = key + 1;
	m->n++;
	*found = false;
	return &m->v[i];
}

static void map_free(struct map *m)
{
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ULL;
	return h;
}

/* ---- the run ---- */

struct figures {
	int cuts, clean;
	int64_t appended, shipped, batches;
	int64_t lost;           /* shipped records whose commit the cut took */
	int64_t skipped;        /* seqs skipped by clean restarts */
	int recovered;          /* restarts that found the file damaged */
	int64_t seq_reuse;      /* a seq shipped before named another record */
	int64_t batch_reuse;    /* a batch range shipped before held others */
	struct crashvfs_stats cs; /* fates of the unsynced writes */
};

struct batch {
	int64_t first, last;
};

struct run {
	struct queue *q;
	char dir[96], path[160];
	int level;
	uint64_t rnd;
	int64_t pos[2];         /* the sources' next record */
	int64_t last_given;     /* highest seq the queue returned */
	int64_t read_seq;       /* the output's last batched seq */
	struct batch *inflight;
	size_t n_inflight, cap_inflight;
	int64_t *recent;        /* records shipped since the last restart:
				 * source * 2^62 + index */
	size_t n_recent, cap_recent;
	struct map seqs;        /* seq -> hash of the record it named */
	struct map ranges;      /* hash of (first, last) -> hash of content */
	struct figures f;
};

/* The output's view of one batch being read. */
struct reading {
	struct run *r;
	int64_t first, last, limit, n;
	uint64_t h;
};

static uint64_t next_rand(struct run *r)
{
	return mix(r->rnd += 0x9e3779b97f4a7c15ULL);
}

static void rm_dir(const char *dir)
{
	char p[512];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int open_queue(struct run *r)
{
	static const char *const outs[] = { "lake" };
	struct queue_opts o = {
		.path = r->path,
		.synchronous = r->level,
		/* Small: the WAL is checkpointed (and synced) often, as on a
		 * gateway with a modest budget. */
		.max_bytes = 512 << 10,
		.on_full = ON_FULL_DROP_OLDEST,
		.vfs = CRASHVFS_NAME,
	};
	static const char *const names[] = { "a", "b" };
	void *state;
	size_t len;
	int err;

	err = queue_open(&r->q, &o, outs, 1);
	if (err) {
		fprintf(stderr, "queue_open: %d\n", err);
		return err;
	}
	for (int s = 0; s < 2; s++) {
		r->pos[s] = 0;
		if (queue_position_get(r->q, "tail", names[s], &state, &len) == 0) {
			if (len == sizeof(int64_t))
				memcpy(&r->pos[s], state, len);
			xfree(state);
		}
	}
	return 0;
}

/* The content of record idx of source s: the same whenever it is read. */
static size_t make_record(int s, int64_t idx, char *key, size_t ksize, char *data)
{
	uint64_t h = mix((uint64_t)idx * 2 + (uint64_t)s);
	size_t n = (size_t)snprintf(data, 64, "%c:%" PRId64 ":", 'A' + s, idx);
	size_t len = n + 40 + h % 300;

	for (size_t i = n; i < len; i++) {
		h = mix(h);
		data[i] = (char)('a' + h % 6);
	}
	snprintf(key, ksize, "%c:%" PRId64, 'A' + s, idx);
	return len;
}

static int append_some(struct run *r)
{
	static const char *const names[] = { "a", "b" };
	char key[64], data[512];
	int64_t n = 1 + (int64_t)(next_rand(r) % 30), seq;
	int err;

	for (int64_t i = 0; i < n; i++) {
		int s = (int)(next_rand(r) & 1);
		struct qrec_in in = { .stream = names[s], .key = key, .data = data,
				      .ts_wall_ms = 1000, .ts_mono_ms = 1000 };

		in.len = make_record(s, r->pos[s], key, sizeof(key), data);
		err = queue_append(r->q, &in, &seq);
		if (err && err != -EEXIST)
			return err;
		if (!err) {
			r->f.appended++;
			if (seq > r->last_given)
				r->last_given = seq;
		}
		r->pos[s]++;
	}
	for (int s = 0; s < 2; s++) {
		err = queue_position_set(r->q, "tail", names[s], &r->pos[s], sizeof(r->pos[s]));
		if (err)
			return err;
	}
	return queue_commit(r->q);
}

/* Note what the lake now holds under seq; a seq that named something else
 * before is a reuse. */
static void ship(struct run *r, const struct qrec *rec, uint64_t h)
{
	bool found;
	uint64_t *v = map_slot(&r->seqs, (uint64_t)rec->seq, &found);

	if (found && *v != h)
		r->f.seq_reuse++;
	*v = h;
	if (r->n_recent == r->cap_recent) {
		r->cap_recent = r->cap_recent * 2 + 1024;
		r->recent = realloc(r->recent, r->cap_recent * sizeof(*r->recent));
		if (!r->recent) {
			perror("realloc");
			exit(1);
		}
	}
	if (rec->key[0] == 'A' || rec->key[0] == 'B')
		r->recent[r->n_recent++] = (int64_t)(rec->key[0] - 'A') << 62 |
					   strtoll(rec->key + 2, NULL, 10);
	r->f.shipped++;
}

static int read_cb(const struct qrec *rec, void *arg)
{
	struct reading *x = arg;
	uint64_t h = 0xcbf29ce484222325ULL;

	if (rec->seq > x->limit)
		return 1;
	h = fnv(h, rec->key, strlen(rec->key) + 1);
	h = fnv(h, rec->data, rec->len);
	ship(x->r, rec, h);
	if (!x->n)
		x->first = rec->seq;
	x->last = rec->seq;
	x->n++;
	x->h = fnv(x->h, &rec->seq, sizeof(rec->seq));
	x->h = fnv(x->h, &h, sizeof(h));
	return 0;
}

/* A batch range is its id (the id is a hash of agent, output and range). */
static void note_batch(struct run *r, const struct reading *x)
{
	bool found;
	uint64_t id = mix((uint64_t)x->first) ^ (uint64_t)x->last;
	uint64_t *v = map_slot(&r->ranges, id, &found);

	if (found && *v != x->h)
		r->f.batch_reuse++;
	*v = x->h;
}

static int form_batch(struct run *r)
{
	struct reading x = { .r = r, .limit = INT64_MAX, .h = 0xcbf29ce484222325ULL };
	int n, err;

	n = queue_read(r->q, r->read_seq, 1 + next_rand(r) % 50, read_cb, &x);
	if (n <= 0)
		return n;
	note_batch(r, &x);
	err = queue_inflight_add(r->q, "lake", x.first, x.last);
	if (err)
		return err;
	if (r->n_inflight == r->cap_inflight) {
		r->cap_inflight = r->cap_inflight * 2 + 16;
		r->inflight = realloc(r->inflight, r->cap_inflight * sizeof(*r->inflight));
		if (!r->inflight) {
			perror("realloc");
			exit(1);
		}
	}
	r->inflight[r->n_inflight++] = (struct batch){ x.first, x.last };
	r->read_seq = x.last;
	r->f.batches++;
	return 0;
}

static int ack_oldest(struct run *r)
{
	int err;

	if (!r->n_inflight)
		return 0;
	err = queue_cursor_set(r->q, "lake", r->inflight[0].last);
	if (err)
		return err;
	memmove(r->inflight, r->inflight + 1, (r->n_inflight - 1) * sizeof(*r->inflight));
	r->n_inflight--;
	return queue_commit(r->q);
}

static int resend_cb(int64_t first, int64_t last, void *arg)
{
	struct run *r = arg;
	struct reading x = { .r = r, .limit = last, .h = 0xcbf29ce484222325ULL };
	int n = queue_read(r->q, first - 1, (size_t)(last - first + 1), read_cb, &x);

	if (n < 0)
		return n;
	if (x.n) {
		note_batch(r, &x);
		r->f.batches++;
	}
	if (last > r->read_seq)
		r->read_seq = last;
	return 0;
}

/* After a restart the output starts from its durable cursor and resends
 * the batches the queue kept as in flight, as they were. */
static int output_restart(struct run *r)
{
	int64_t cur = queue_cursor(r->q, "lake");

	if (cur < 0)
		return (int)cur;
	r->read_seq = cur;
	r->n_inflight = 0;
	return queue_inflight_list(r->q, "lake", resend_cb, r);
}

/* Power cut (or clean stop) and restart. */
static int restart(struct run *r, bool clean, uint64_t seed)
{
	int64_t before = r->last_given, seq;
	struct queue_stats st;
	char key[64], data[512];
	struct qrec_in in = { .stream = "probe", .key = key, .data = data,
			      .ts_wall_ms = 1000, .ts_mono_ms = 1000 };
	int err;

	if (!clean)
		crashvfs_freeze();
	queue_close(r->q);
	r->q = NULL;
	if (!clean) {
		err = crashvfs_cut(seed);
		if (err)
			return err;
	}
	err = open_queue(r);
	if (err)
		return err;
	if (queue_stats(r->q, &st) == 0 && st.recovered_at_ms)
		r->f.recovered++;
	/* A shipped record whose commit the cut took is read again by its
	 * source, whose position went back with it. */
	for (size_t i = 0; i < r->n_recent; i++) {
		int s = (int)(r->recent[i] >> 62);

		r->f.lost += (r->recent[i] & ((1LL << 62) - 1)) >= r->pos[s];
	}
	r->n_recent = 0;
	if (clean) {
		/* The next seq follows the last one given: nothing skipped. */
		snprintf(key, sizeof(key), "probe:%d", r->f.clean);
		snprintf(data, sizeof(data), "probe %d", r->f.clean);
		in.len = strlen(data);
		err = queue_append(r->q, &in, &seq);
		if (!err)
			err = queue_commit(r->q);
		if (err)
			return err;
		r->f.skipped += seq - before - 1;
		r->last_given = seq;
		r->f.clean++;
	} else {
		r->f.cuts++;
	}
	return output_restart(r);
}

static int run_rounds(int level, int rounds, uint64_t seed, struct figures *out)
{
	struct run *r = calloc(1, sizeof(*r));
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	int err = 0;

	if (!r)
		return -ENOMEM;
	r->level = level;
	r->rnd = seed;
	snprintf(r->dir, sizeof(r->dir), "%s/test_powercut.XXXXXX", base);
	if (!mkdtemp(r->dir)) {
		free(r);
		return -errno;
	}
	snprintf(r->path, sizeof(r->path), "%s/queue.db", r->dir);
	crashvfs_reset();
	err = open_queue(r);
	for (int round = 0; !err && round < rounds; round++) {
		int steps = 4 + (int)(next_rand(r) % 12);

		for (int s = 0; !err && s < steps; s++) {
			err = append_some(r);
			if (!err && next_rand(r) % 4)
				err = form_batch(r);
			if (!err && (next_rand(r) & 1))
				err = ack_oldest(r);
			if (!err)
				err = queue_commit(r->q);
		}
		if (!err)
			err = restart(r, round % 5 == 4, seed ^ mix((uint64_t)round + 1));
	}
	if (err)
		fprintf(stderr, "power-cut run failed: %d\n", err);
	queue_close(r->q);
	r->f.cs = *crashvfs_stats();
	crashvfs_reset();
	rm_dir(r->dir);
	*out = r->f;
	map_free(&r->seqs);
	map_free(&r->ranges);
	free(r->inflight);
	free(r->recent);
	free(r);
	return err;
}

static void print_figures(const char *what, const struct figures *f)
{
	const struct crashvfs_stats *cs = &f->cs;

	fprintf(stderr,
		"%s: %d cuts, %d clean restarts, %d damaged files moved aside, %" PRId64
		" records appended, %" PRId64
		" shipped in %" PRId64 " batches; %" PRId64 " shipped records lost with"
		" their commits; %" PRId64 " seqs skipped by clean restarts; %" PRId64
		" seq reuses, %" PRId64 " batch range reuses (unsynced writes at the cuts:"
		" %" PRId64 " kept, %" PRId64 " lost, %" PRId64 " torn)\n",
		what, f->cuts, f->clean, f->recovered, f->appended, f->shipped, f->batches, f->lost,
		f->skipped, f->seq_reuse, f->batch_reuse, cs->kept, cs->lost, cs->torn);
}

#define ROUNDS 40

TEST(powercut_normal)
{
	struct figures f;

	REQUIRE(run_rounds(SYNC_NORMAL, ROUNDS, 0x5eed0001, &f) == 0);
	print_figures("synchronous = normal", &f);
	CHECK_EQ_INT(f.seq_reuse, 0);
	CHECK_EQ_INT(f.batch_reuse, 0);
	CHECK_EQ_INT(f.skipped, 0);
	CHECK_EQ_INT(f.cuts, ROUNDS - ROUNDS / 5);
	/* The cuts bite: under normal, shipped commits are lost... */
	CHECK(f.lost > 0);
	CHECK(f.shipped > 1000);
}

TEST(powercut_full)
{
	struct figures f;

	REQUIRE(run_rounds(SYNC_FULL, ROUNDS, 0x5eed0002, &f) == 0);
	print_figures("synchronous = full", &f);
	CHECK_EQ_INT(f.seq_reuse, 0);
	CHECK_EQ_INT(f.batch_reuse, 0);
	CHECK_EQ_INT(f.skipped, 0);
	/* ...under full, never. */
	CHECK_EQ_INT(f.lost, 0);
	CHECK(f.shipped > 1000);
}

TEST(powercut_off)
{
	struct figures f;

	REQUIRE(run_rounds(SYNC_OFF, ROUNDS, 0x5eed0003, &f) == 0);
	print_figures("synchronous = off", &f);
	CHECK_EQ_INT(f.seq_reuse, 0);
	CHECK_EQ_INT(f.batch_reuse, 0);
}

static int torture(int rounds, uint64_t seed)
{
	static const struct { int level; const char *name; } levels[] = {
		{ SYNC_OFF, "synchronous = off" },
		{ SYNC_NORMAL, "synchronous = normal" },
		{ SYNC_FULL, "synchronous = full" },
	};
	struct figures f;
	int bad = 0;

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (run_rounds(levels[i].level, rounds, seed + i, &f))
			return 1;
		print_figures(levels[i].name, &f);
		bad |= f.seq_reuse || f.batch_reuse;
	}
	return bad;
}

int main(int argc, char **argv)
{
	if (crashvfs_register() != SQLITE_OK) {
		fprintf(stderr, "cannot register the crash VFS\n");
		return 1;
	}
	if (argc >= 3 && !strcmp(argv[1], "--torture"))
		return torture(atoi(argv[2]), argc >= 4 ? strtoull(argv[3], NULL, 0) : 1);
	RUN(powercut_normal);
	RUN(powercut_full);
	RUN(powercut_off);
	TEST_END();
}
