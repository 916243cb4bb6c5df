/* test_input.c - the core's side of inputs on a real queue: what a driver's
 * records become (stored, refused as duplicates, dead-lettered) and the
 * counts status shows for them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "input.h"
#include "loop.h"
#include "mem.h"
#include "queue.h"
#include "rec.h"
#include "status.h"
#include "test.h"
#include "test_clock.h"
#include "crashvfs.h"
#include "input_rig.h"
#include <sqlite3.h>

static char dir[] = "/tmp/test_input.XXXXXX";


static int rig_init(struct rig *r, const char *parser)
{
	char text[512], db[128];

	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n"
		 "[input sensors]\ndriver = tail\npath = %s/*.log\nparser = %s\n"
		 "[output lake]\ntype = mqtt\n", dir, dir, parser);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, false, NULL);
}

static void rig_release(struct rig *r)
{
	input_rig_release(r);
}

/* A record whose dedupe key the queue already holds is not stored again,
 * is acknowledged to the driver (0, so it moves on), and is counted as a
 * duplicate: the one sign in status that a source sent something twice. */
TEST(test_duplicates_are_counted)
{
	struct rig r;
	struct status_input st;

	REQUIRE(rig_init(&r, "raw") == 0);
	CHECK_EQ_INT(input_emit(r.in, "a", 1, "f1:0"), 0);
	CHECK_EQ_INT(input_emit(r.in, "b", 1, "f1:2"), 0);
	CHECK_EQ_INT(input_emit(r.in, "a", 1, "f1:0"), 0);
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 2);
	CHECK_EQ_INT(st.duplicates, 1);
	CHECK_EQ_INT(st.dlq, 0);

	/* Also once the first copy is committed. */
	REQUIRE(queue_commit(r.a.q) == 0);
	CHECK_EQ_INT(input_emit(r.in, "b", 1, "f1:2"), 0);
	CHECK_EQ_INT(input_emit(r.in, "c", 1, "f1:4"), 0);
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 3);
	CHECK_EQ_INT(st.duplicates, 2);
	CHECK_EQ_INT(st.bytes, 3);
	REQUIRE(queue_commit(r.a.q) == 0);
	CHECK_EQ_INT(queue_committed_seq(r.a.q), 3);
	rig_release(&r);
}

/* A record that does not parse is dead-lettered, counted apart from the
 * stored records and the duplicates. */
TEST(test_invalid_records_are_dead_lettered)
{
	struct rig r;
	struct status_input st;

	REQUIRE(rig_init(&r, "json") == 0);
	CHECK_EQ_INT(input_emit(r.in, "{\"t\":1}", 7, "k1"), 0);
	CHECK_EQ_INT(input_emit(r.in, "not json", 8, "k2"), 0);
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 1);
	CHECK_EQ_INT(st.dlq, 1);
	CHECK_EQ_INT(st.duplicates, 0);
	CHECK(strstr(st.last_error, "dead-lettered") != NULL);
	rig_release(&r);
}

/* A driver wraps a payload parsed by the input's own parser in fields of
 * its own; a payload the parser refuses adds nothing and says why. */
TEST(test_parsed_payload_in_a_built_record)
{
	struct rig r;
	struct rec *b;
	char why[128];
	const char *d;
	size_t n;

	REQUIRE(rig_init(&r, "json") == 0);
	b = input_rec_begin(r.in);
	rec_str(b, "topic", "t/1");
	CHECK_EQ_INT(input_rec_parsed(r.in, b, "payload", " {\"v\": 1} ", 10, why, sizeof(why)), 0);
	CHECK_EQ_INT(input_rec_parsed(r.in, b, "bad", "{v", 2, why, sizeof(why)), -EINVAL);
	CHECK(why[0] != '\0');
	rec_base64(b, "raw", "\x00\xff" "ab", 4);
	REQUIRE(rec_finish(b, &d, &n) == 0);
	CHECK_EQ_STR(d, "{\"topic\":\"t/1\",\"payload\":{\"v\": 1},\"raw\":\"AP9hYg==\"}");
	rig_release(&r);
	REQUIRE(rig_init(&r, "raw") == 0);
	b = input_rec_begin(r.in);
	CHECK_EQ_INT(input_rec_parsed(r.in, b, "line", "a\"b", 3, why, sizeof(why)), 0);
	REQUIRE(rec_finish(b, &d, &n) == 0);
	CHECK_EQ_STR(d, "{\"line\":\"a\\\"b\"}");
	rig_release(&r);
}

/* ---- driver interface v2: commits told, rollbacks replayed or told ---- */

struct fake {
	struct input *in;
	int committed_calls, rolled_calls, resumes;
	uint64_t upto, after;
	bool in_emit, called_in_emit;
};

static struct fake fk;

static int fake_start(struct input *in, void **state)
{
	fk.in = in;
	*state = &fk;
	return 0;
}

static void fake_stop(struct input *in, void *state)
{
}

static void fake_resume(struct input *in, void *state)
{
	fk.resumes++;
}

static void fake_committed(struct input *in, void *state, uint64_t upto)
{
	fk.called_in_emit |= fk.in_emit;
	fk.committed_calls++;
	fk.upto = upto;
}

static void fake_rolled_back(struct input *in, void *state, uint64_t after)
{
	fk.called_in_emit |= fk.in_emit;
	fk.rolled_calls++;
	fk.after = after;
}

static const struct driver fake_replay = {
	.version = DRIVER_VERSION, .name = "fake", .flags = DRIVER_STRUCTURED | DRIVER_REPLAY,
	.start = fake_start, .stop = fake_stop, .resume = fake_resume, .committed = fake_committed,
};

static const struct driver fake_told = {
	.version = DRIVER_VERSION, .name = "fake", .flags = DRIVER_STRUCTURED,
	.start = fake_start, .stop = fake_stop, .resume = fake_resume,
	.committed = fake_committed, .rolled_back = fake_rolled_back,
};

/* One input with a driver of the test's own, on a real queue (through the
 * power-cut VFS, to fail a commit on purpose) and the agent's own commit
 * logic, on the test clock. */
static int rig2_init(struct rig *r, const struct driver *d)
{
	char text[512], db[128];

	memset(&fk, 0, sizeof(fk));
	tc_install(0);
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 100ms\n"
		 "[input meter]\ndriver = tail\npath = %s/*.log\n"
		 "[output lake]\ntype = mqtt\n", dir, dir);
	snprintf(db, sizeof(db), "%s/queue2.db", dir);
	return input_rig_init(r, text, db, true, d);
}

static void rig2_release(struct rig *r)
{
	input_rig_release(r);
	crashvfs_reset();
	tc_uninstall();
}

static int emit_sample(struct rig *r, const char *key, double v, int64_t wall_ms)
{
	struct sample_time t = { wall_ms, wall_ms - 1000 };
	struct rec *b = input_rec_begin(r->in);
	int rc;

	rec_num(b, "v", v, "V");
	fk.in_emit = true;
	rc = input_emit_rec(r->in, b, key, &t);
	fk.in_emit = false;
	return rc;
}

struct seen {
	int n;
	int64_t wall[8];
	char data[8][64];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "meter"))
		return 0;
	if (s->n < 8) {
		s->wall[s->n] = q->ts_wall_ms;
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

/* The driver is told, from the loop and never inside an emit, which
 * tickets are durable once the commit holding them is done. */
TEST(test_committed_is_told_after_the_commit)
{
	struct rig r;

	REQUIRE(rig2_init(&r, &fake_told) == 0);
	CHECK_EQ_INT(input_ticket(r.in), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:1", 1, 1000), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:2", 2, 2000), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:2", 2, 2000), 0);   /* a duplicate is accepted too */
	CHECK_EQ_INT(input_ticket(r.in), 3);
	tc_advance(r.a.loop, 99);
	CHECK_EQ_INT(fk.committed_calls, 0);                 /* not durable yet */
	tc_advance(r.a.loop, 1);
	CHECK_EQ_INT(fk.committed_calls, 1);
	CHECK_EQ_INT(fk.upto, 3);
	CHECK_EQ_INT(emit_sample(&r, "m:3", 3, 3000), 0);
	tc_advance(r.a.loop, 200);
	CHECK_EQ_INT(fk.committed_calls, 2);
	CHECK_EQ_INT(fk.upto, 4);
	tc_advance(r.a.loop, 1000);                          /* nothing new: not told again */
	CHECK_EQ_INT(fk.committed_calls, 2);
	CHECK(!fk.called_in_emit);
	rig2_release(&r);
}

/* A commit that fails (the disk refuses a write) loses the transaction.
 * A driver with rolled_back() is told which tickets are gone, and emits
 * them again after resume(); it is not told they were committed. */
TEST(test_rolled_back_is_told)
{
	struct rig r;

	REQUIRE(rig2_init(&r, &fake_told) == 0);
	CHECK_EQ_INT(emit_sample(&r, "m:1", 1, 1000), 0);
	tc_advance(r.a.loop, 100);
	CHECK_EQ_INT(fk.upto, 1);
	CHECK_EQ_INT(emit_sample(&r, "m:2", 2, 2000), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:3", 3, 3000), 0);
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 100);
	/* Refused until the queue accepts again. */
	CHECK_EQ_INT(emit_sample(&r, "m:4", 4, 4000), -EAGAIN);
	tc_advance(r.a.loop, 1000);
	CHECK_EQ_INT(fk.rolled_calls, 1);
	CHECK_EQ_INT(fk.after, 1);
	CHECK(fk.resumes >= 1);
	CHECK_EQ_INT(fk.committed_calls, 1);
	CHECK(!fk.called_in_emit);
	/* The driver emits them again: they are committed and told. */
	CHECK_EQ_INT(emit_sample(&r, "m:2", 2, 2000), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:3", 3, 3000), 0);
	tc_advance(r.a.loop, 200);
	CHECK_EQ_INT(fk.committed_calls, 2);
	CHECK_EQ_INT(fk.upto, input_ticket(r.in));
	rig2_release(&r);
}

/* DRIVER_REPLAY: the core keeps what was emitted since the last commit
 * and appends it again itself, with the samples' own times, so samples
 * that cannot be taken again are not lost to a failed commit. */
TEST(test_replay_after_a_failed_commit)
{
	struct rig r;
	struct seen s = { 0 };
	struct status_input st;

	REQUIRE(rig2_init(&r, &fake_replay) == 0);
	CHECK_EQ_INT(emit_sample(&r, "m:1", 1.5, 1767225601000), 0);
	tc_advance(r.a.loop, 100);
	CHECK_EQ_INT(emit_sample(&r, "m:2", 2.5, 1767225602000), 0);
	CHECK_EQ_INT(emit_sample(&r, "m:3", 3.5, 1767225603000), 0);
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 100);            /* the commit fails */
	tc_advance(r.a.loop, 2000);           /* replayed and committed */
	CHECK(queue_read(r.a.q, 0, 100, collect, &s) >= 0);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.data[0], "{\"v\":1.5,\"units\":{\"v\":\"V\"}}");
	CHECK_EQ_STR(s.data[1], "{\"v\":2.5,\"units\":{\"v\":\"V\"}}");
	CHECK_EQ_STR(s.data[2], "{\"v\":3.5,\"units\":{\"v\":\"V\"}}");
	/* Sample time, not the time the record reached the queue. */
	CHECK_EQ_INT(s.wall[0], 1767225601000);
	CHECK_EQ_INT(s.wall[2], 1767225603000);
	/* Counted once, and the driver was resumed. */
	st = snapshot(&r);
	CHECK_EQ_INT(st.records, 3);
	CHECK(fk.resumes >= 1);
	CHECK_EQ_INT(fk.upto, 3);
	rig2_release(&r);
}

/* Device status: connection, requests, errors by kind, last sample age. */
TEST(test_device_status)
{
	struct rig r;
	struct status_input st;

	REQUIRE(rig2_init(&r, &fake_replay) == 0);
	st = snapshot(&r);
	CHECK(!st.device);
	input_set_connected(r.in, false, "connect: %s", "connection refused");
	input_count_request(r.in);
	input_count_request(r.in);
	input_count_error(r.in, INPUT_ERR_TIMEOUT, "no answer in %d ms", 500);
	input_count_error(r.in, INPUT_ERR_CRC, "bad CRC");
	st = snapshot(&r);
	CHECK(st.device && !st.connected);
	CHECK_EQ_STR(st.conn_why, "connect: connection refused");
	CHECK_EQ_INT(st.requests, 2);
	CHECK_EQ_INT(st.errors[INPUT_ERR_TIMEOUT], 1);
	CHECK_EQ_INT(st.errors[INPUT_ERR_CRC], 1);
	CHECK_EQ_INT(st.last_sample_age_ms, -1);
	CHECK_EQ_STR(st.last_error, "bad CRC");
	input_set_connected(r.in, true, NULL);
	CHECK_EQ_INT(emit_sample(&r, "m:1", 1, 1000), 0);
	tc_advance(r.a.loop, 1500);
	st = snapshot(&r);
	CHECK(st.connected);
	CHECK_EQ_STR(st.conn_why, "");
	CHECK_EQ_INT(st.last_sample_age_ms, 1500);
	rig2_release(&r);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_duplicates_are_counted);
	RUN(test_invalid_records_are_dead_lettered);
	RUN(test_parsed_payload_in_a_built_record);
	if (crashvfs_register() != 0) {
		fprintf(stderr, "cannot register the power-cut VFS\n");
		return 1;
	}
	RUN(test_committed_is_told_after_the_commit);
	RUN(test_rolled_back_is_told);
	RUN(test_replay_after_a_failed_commit);
	RUN(test_device_status);
	RUN(test_no_leaks);
	{
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	TEST_END();
}
