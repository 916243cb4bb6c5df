/* bench-load.c - the load generator and reference measurements tools/bench
 * uses: writing sensor lines fast, the SQLite insert rate on the queue's own
 * schema and settings, and counting what a subscriber received.
 *
 *   bench-load gen FILE N
 *       Write N sensor-like JSON lines (about 125 bytes each) to FILE.
 *   bench-load sqlite DB FILE ROWS_PER_TXN schema|noindex|minimal|zblock
 *       Insert every line of FILE into a fresh SQLite database DB (WAL,
 *       synchronous = FULL, the queue's cache and checkpoint settings) in
 *       transactions of ROWS_PER_TXN rows: "schema" uses the queue's records
 *       table and dedupe-key index, "noindex" the same table without the
 *       index, "minimal" a table of (seq, data) only, "zblock" one row per
 *       64 KiB of lines compressed with zstd -3 (records stored in blocks).
 *       Prints one JSON object: rows, seconds, rows_per_s, write_bytes.
 *   bench-load sink SAMPLE MAX_BYTES
 *       Read `agent-decode --sub --meta` output on standard input; copy the
 *       first MAX_BYTES of record lines to SAMPLE; print one JSON object:
 *       batches, records, compressed bytes, uncompressed bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#include <zstd.h>

#define IO_CHUNK (1 << 20)
#define ZBLOCK (64 << 10)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: the values only need to look like sensor noise, and
 * rand() would cost more than the formatting. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static const char *const statuses[] = { "ok", "ok", "ok", "ok", "ok", "ok", "warn", "alarm" };

static int cmd_gen(const char *path, long n)
{
	static const char *const kinds[] = { "temp", "press", "flow", "level" };
	uint64_t s = 0x9E3779B97F4A7C15ULL;
	char *buf;
	size_t len = 0;
	FILE *f;
	int rc = 0;

	buf = malloc(IO_CHUNK + 512);
	f = fopen(path, "w");
	if (!buf || !f) {
		fprintf(stderr, "bench-load: %s: %s\n", path, strerror(errno));
		rc = 1;
		goto out_free;
	}
	for (long i = 0; i < n; i++) {
		uint64_t r = rng_next(&s);
		/* one reading every 10 ms from 2026-11-22T08:00:00Z */
		int64_t t = 8 * 3600000LL + i * 10;
		int64_t ms = t % 1000, sec = t / 1000;
		int sensor = (int)(r % 64), hh = (int)(sec / 3600 % 24);
		int mm = (int)(sec / 60 % 60), ss = (int)(sec % 60);
		int day = 22 + (int)(sec / 86400 % 8);
		int centi = 1800 + (int)((r >> 8) % 900);
		int rh = 300 + (int)((r >> 20) % 400);

		len += (size_t)snprintf(buf + len, 512,
					"{\"ts\":\"2026-11-%02dT%02d:%02d:%02d.%03dZ\",\"sensor\":\"%s-%02d\","
					"\"site\":\"plant-7-east\",\"n\":%ld,\"value\":%d.%02d,\"rh\":%d.%d,"
					"\"status\":\"%s\"}\n",
					day, hh, mm, ss, (int)ms, kinds[sensor & 3], sensor, i, centi / 100,
					centi % 100, rh / 10, rh % 10, statuses[(r >> 40) & 7]);
		if (len >= IO_CHUNK) {
			if (fwrite(buf, 1, len, f) != len)
				goto out_write;
			len = 0;
		}
	}
	if (len && fwrite(buf, 1, len, f) != len)
		goto out_write;
	if (fclose(f)) {
		f = NULL;
		goto out_write;
	}
	f = NULL;
	goto out_free;
out_write:
	fprintf(stderr, "bench-load: writing %s: %s\n", path, strerror(errno));
	rc = 1;
out_free:
	if (f)
		fclose(f);
	free(buf);
	return rc;
}

/* Bytes this process caused to be written to a block device so far. */
static int64_t write_bytes(void)
{
	char line[128];
	int64_t v = -1;
	FILE *f = fopen("/proc/self/io", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "write_bytes: %" SCNd64, &v) == 1)
			break;
	fclose(f);
	return v;
}

static int exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "bench-load: %s: %s\n", sql, err ? err : "?");
		sqlite3_free(err);
		return 1;
	}
	return 0;
}

/* The queue's pragmas (agent/queue.c db_configure) and, for "schema", its
 * records table and dedupe index, so the difference to agentd is the
 * agent's own work and not SQLite's. */
static const char setup_sql[] =
	"PRAGMA cache_size = -1024; PRAGMA mmap_size = 0; PRAGMA temp_store = MEMORY;"
	" PRAGMA secure_delete = FAST; PRAGMA journal_mode = WAL;"
	" PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 4194304;"
	" PRAGMA wal_autocheckpoint = 1024;";
static const char schema_sql[] =
	"CREATE TABLE records(seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL,"
	" stream TEXT NOT NULL, key TEXT NOT NULL, ts_wall INTEGER NOT NULL,"
	" ts_mono INTEGER NOT NULL, clock INTEGER NOT NULL, data BLOB NOT NULL);"
	"CREATE UNIQUE INDEX records_key ON records(key);";
static const char noindex_sql[] =
	"CREATE TABLE records(seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL,"
	" stream TEXT NOT NULL, key TEXT NOT NULL, ts_wall INTEGER NOT NULL,"
	" ts_mono INTEGER NOT NULL, clock INTEGER NOT NULL, data BLOB NOT NULL);";
static const char minimal_sql[] = "CREATE TABLE records(seq INTEGER PRIMARY KEY, data BLOB NOT NULL);";

static int cmd_sqlite(const char *dbpath, const char *path, long per_txn, const char *kind)
{
	bool full = strcmp(kind, "minimal") != 0;
	const char *create = !full ? minimal_sql : !strcmp(kind, "noindex") ? noindex_sql : schema_sql;
	const char *ins = full ? "INSERT INTO records(seq, kind, stream, key, ts_wall, ts_mono,"
				 " clock, data) VALUES(?1, 0, 'sensors', ?2, ?3, ?4, 1, ?5)"
			       : "INSERT INTO records(seq, data) VALUES(?1, ?5)";
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *line = NULL, key[96];
	size_t cap = 0;
	ssize_t n;
	long rows = 0;
	int64_t off = 0, wb0;
	double t0, t;
	FILE *f;
	int rc = 1;

	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "bench-load: %s: %s\n", path, strerror(errno));
		return 1;
	}
	wb0 = write_bytes();
	t0 = now_s();
	if (sqlite3_open(dbpath, &db) != SQLITE_OK) {
		fprintf(stderr, "bench-load: %s: %s\n", dbpath, sqlite3_errmsg(db));
		goto out_close;
	}
	if (exec(db, setup_sql) || exec(db, create))
		goto out_close;
	if (sqlite3_prepare_v2(db, ins, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "bench-load: prepare: %s\n", sqlite3_errmsg(db));
		goto out_close;
	}
	if (exec(db, "BEGIN IMMEDIATE"))
		goto out_close;
	while ((n = getline(&line, &cap, f)) > 0) {
		int64_t len = n - (line[n - 1] == '\n');

		sqlite3_bind_int64(st, 1, rows + 1);
		if (full) {
			snprintf(key, sizeof(key), "tail:2049:1311:0:%" PRId64, off);
			sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, 1795334400000LL + rows);
			sqlite3_bind_int64(st, 4, 81234567LL + rows);
		}
		sqlite3_bind_blob(st, 5, line, (int)len, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE) {
			fprintf(stderr, "bench-load: insert: %s\n", sqlite3_errmsg(db));
			goto out_close;
		}
		sqlite3_reset(st);
		off += n;
		if (++rows % per_txn == 0 && (exec(db, "COMMIT") || exec(db, "BEGIN IMMEDIATE")))
			goto out_close;
	}
	if (exec(db, "COMMIT"))
		goto out_close;
	sqlite3_finalize(st);
	st = NULL;
	/* Closing checkpoints the WAL into the database, as agentd's running
	 * checkpoints do: those writes belong to the cost. */
	sqlite3_close(db);
	db = NULL;
	t = now_s() - t0;
	printf("{\"rows\":%ld,\"seconds\":%.3f,\"rows_per_s\":%.0f,\"input_bytes\":%" PRId64
	       ",\"write_bytes\":%" PRId64 "}\n",
	       rows, t, (double)rows / t, off, write_bytes() - wb0);
	rc = 0;
out_close:
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(line);
	fclose(f);
	return rc;
}

static const char zblock_sql[] =
	"CREATE TABLE blocks(first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,"
	" data BLOB NOT NULL);";

/* Store one compressed block of lines; *first is the seq of its first. */
static int put_block(sqlite3 *db, sqlite3_stmt *st, ZSTD_CCtx *cc, void *z, size_t zcap,
		     const char *raw, size_t len, long first, long last)
{
	size_t n = ZSTD_compressCCtx(cc, z, zcap, raw, len, 3);

	if (ZSTD_isError(n)) {
		fprintf(stderr, "bench-load: zstd: %s\n", ZSTD_getErrorName(n));
		return 1;
	}
	sqlite3_bind_int64(st, 1, first);
	sqlite3_bind_int64(st, 2, last);
	sqlite3_bind_blob(st, 3, z, (int)n, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		fprintf(stderr, "bench-load: insert: %s\n", sqlite3_errmsg(db));
		return 1;
	}
	sqlite3_reset(st);
	return 0;
}

static int cmd_zblock(const char *dbpath, const char *path, long per_txn)
{
	size_t zcap = ZSTD_compressBound(ZBLOCK), cap = 0, len = 0;
	char *raw = malloc(ZBLOCK), *z = malloc(zcap), *line = NULL;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long rows = 0, first = 1, since_commit = 0;
	int64_t off = 0, wb0 = write_bytes();
	double t0 = now_s(), t;
	ssize_t n;
	FILE *f = fopen(path, "r");
	int rc = 1;

	if (!f || !raw || !z || !cc) {
		fprintf(stderr, "bench-load: %s: %s\n", path, strerror(errno));
		goto out_free;
	}
	if (sqlite3_open(dbpath, &db) != SQLITE_OK || exec(db, setup_sql) || exec(db, zblock_sql) ||
	    sqlite3_prepare_v2(db, "INSERT INTO blocks VALUES(?1, ?2, ?3)", -1, &st, NULL) != SQLITE_OK ||
	    exec(db, "BEGIN IMMEDIATE"))
		goto out_free;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (len + (size_t)n > ZBLOCK) {
			if (put_block(db, st, cc, z, zcap, raw, len, first, rows))
				goto out_free;
			first = rows + 1;
			len = 0;
			if (since_commit >= per_txn) {
				if (exec(db, "COMMIT") || exec(db, "BEGIN IMMEDIATE"))
					goto out_free;
				since_commit = 0;
			}
		}
		memcpy(raw + len, line, (size_t)n);
		len += (size_t)n;
		off += n;
		rows++;
		since_commit++;
	}
	if (len && put_block(db, st, cc, z, zcap, raw, len, first, rows))
		goto out_free;
	if (exec(db, "COMMIT"))
		goto out_free;
	sqlite3_finalize(st);
	st = NULL;
	sqlite3_close(db);
	db = NULL;
	t = now_s() - t0;
	printf("{\"rows\":%ld,\"seconds\":%.3f,\"rows_per_s\":%.0f,\"input_bytes\":%" PRId64
	       ",\"write_bytes\":%" PRId64 "}\n",
	       rows, t, (double)rows / t, off, write_bytes() - wb0);
	rc = 0;
out_free:
	sqlite3_finalize(st);
	sqlite3_close(db);
	ZSTD_freeCCtx(cc);
	if (f)
		fclose(f);
	free(line);
	free(z);
	free(raw);
	return rc;
}

/* Pulls an integer that follows name (e.g. "\"bytes\":") in a meta line;
 * user properties are strings, so an opening quote is skipped. */
static int64_t meta_int(const char *s, const char *name)
{
	const char *p = strstr(s, name);

	if (!p)
		return 0;
	p += strlen(name);
	if (*p == '"')
		p++;
	return strtoll(p, NULL, 10);
}

static int cmd_sink(const char *sample_path, int64_t max_sample)
{
	int64_t batches = 0, records = 0, zbytes = 0, rbytes = 0, counted = 0, sampled = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *sample = fopen(sample_path, "w");

	if (!sample) {
		fprintf(stderr, "bench-load: %s: %s\n", sample_path, strerror(errno));
		return 1;
	}
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (!strncmp(line, "{\"batch\":", 9)) {
			batches++;
			zbytes += meta_int(line, "\"bytes\":");
			counted += meta_int(line, "\"count\":");
			continue;
		}
		records++;
		rbytes += n;
		if (sampled < max_sample) {
			fwrite(line, 1, (size_t)n, sample);
			sampled += n;
		}
	}
	free(line);
	fclose(sample);
	printf("{\"batches\":%" PRId64 ",\"records\":%" PRId64 ",\"count_property\":%" PRId64
	       ",\"compressed_bytes\":%" PRId64 ",\"uncompressed_bytes\":%" PRId64
	       ",\"sample_bytes\":%" PRId64 "}\n",
	       batches, records, counted, zbytes, rbytes, sampled);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: bench-load gen FILE N\n"
			"       bench-load sqlite DB FILE ROWS_PER_TXN schema|noindex|minimal|zblock\n"
			"       bench-load sink SAMPLE MAX_BYTES\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "gen"))
		return cmd_gen(argv[2], atol(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "sqlite") && atol(argv[4]) > 0 &&
	    (!strcmp(argv[5], "schema") || !strcmp(argv[5], "noindex") || !strcmp(argv[5], "minimal")))
		return cmd_sqlite(argv[2], argv[3], atol(argv[4]), argv[5]);
	if (argc == 6 && !strcmp(argv[1], "sqlite") && atol(argv[4]) > 0 && !strcmp(argv[5], "zblock"))
		return cmd_zblock(argv[2], argv[3], atol(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return cmd_sink(argv[2], atoll(argv[3]));
	return usage();
}
