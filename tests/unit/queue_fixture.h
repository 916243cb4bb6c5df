/* queue_fixture.h - what the queue's tests share: a fresh directory per
 * test, opening the queue, appending numbered records, and reading back
 * records and the raw SQLite file. Include it after test.h.
 */
#ifndef QUEUE_FIXTURE_H
#define QUEUE_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "config.h"
#include "log.h"
#include "mem.h"
#include "queue.h"

static char tmpdir[64];

static char dbpath[128];

static void teardown(void);

/* A test that stopped at a REQUIRE left its directory: clear it first. */
static void setup(void)
{
	if (tmpdir[0])
		teardown();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_queue.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(dbpath, sizeof(dbpath), "%s/queue.db", tmpdir);
}

static void rm_files(void)
{
	char p[512];
	struct dirent *de;
	DIR *d = opendir(tmpdir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
		unlink(p);
	}
	closedir(d);
}

static void teardown(void)
{
	rm_files();
	rmdir(tmpdir);
	tmpdir[0] = '\0';
}

static struct queue_opts opts_default(void)
{
	struct queue_opts o = {
		.path = dbpath,
		.synchronous = SYNC_NORMAL,
		.max_bytes = 0,
		.on_full = ON_FULL_DROP_OLDEST,
		.readonly = false,
	};
	return o;
}

static struct queue *open_q(const char *const *outs, size_t n)
{
	struct queue_opts o = opts_default();
	struct queue *q = NULL;
	int err = queue_open(&q, &o, outs, n);

	if (err)
		fprintf(stderr, "queue_open: %d\n", err);
	return q;
}

/* Letters that zstd cannot squeeze much, so sizes on disk stay real. */
static void fill_random(char *p, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		p[i] = (char)('a' + (x >> 24) % 26);
	}
}

static int append_n(struct queue *q, const char *stream, const char *keypfx,
		    int from, int n, size_t datalen)
{
	char key[64], data[4096];
	struct qrec_in r = { .stream = stream, .key = key, .clock = CLOCK_SYNCED,
			     .data = data };
	int err;

	if (datalen >= sizeof(data))
		datalen = sizeof(data) - 1;
	for (int i = from; i < from + n; i++) {
		snprintf(key, sizeof(key), "%s%d", keypfx, i);
		fill_random(data, datalen, (uint32_t)i);
		r.len = (size_t)snprintf(data, sizeof(data), "{\"i\":%d}", i);
		if (datalen > r.len)
			r.len = datalen;
		r.ts_wall_ms = 1700000000000LL + i;
		r.ts_mono_ms = 1000 + i;
		err = queue_append(q, &r, NULL);
		if (err)
			return err;
	}
	return 0;
}

struct collect {
	int n;
	int64_t seq[64];
	int kind[64];
	char key[64][64];
	char data[64][256];
	int64_t ts_wall[64];
	int64_t ts_mono[64];
	int clock[64];
	int stop_after;
};

static int collect_cb(const struct qrec *r, void *arg)
{
	struct collect *c = arg;
	size_t n = r->len < 255 ? r->len : 255;

	if (c->n < 64) {
		c->seq[c->n] = r->seq;
		c->kind[c->n] = r->kind;
		snprintf(c->key[c->n], sizeof(c->key[0]), "%s", r->key);
		memcpy(c->data[c->n], r->data, n);
		c->data[c->n][n] = '\0';
		c->ts_wall[c->n] = r->ts_wall_ms;
		c->ts_mono[c->n] = r->ts_mono_ms;
		c->clock[c->n] = r->clock;
	}
	c->n++;
	return c->stop_after && c->n >= c->stop_after ? 1 : 0;
}

static int64_t raw_int(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_open(dbpath, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

#endif
