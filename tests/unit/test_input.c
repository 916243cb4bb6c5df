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
#include "status.h"
#include "test.h"

static char dir[] = "/tmp/test_input.XXXXXX";

struct rig {
	struct agent a;
	struct input *in;
};

static int rig_init(struct rig *r, const char *parser)
{
	static const char *const outputs[] = { "lake" };
	struct queue_opts o = { 0 };
	char text[512], err[512], db[128];
	int rc;

	memset(r, 0, sizeof(*r));
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n"
		 "[input sensors]\ndriver = tail\npath = %s/*.log\nparser = %s\n"
		 "[output lake]\ntype = mqtt\n", dir, dir, parser);
	rc = config_parse(text, strlen(text), "t.conf", &r->a.cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s\n", err);
		return rc;
	}
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	unlink(db);
	o.path = db;
	o.synchronous = r->a.cfg->queue.synchronous;
	o.max_bytes = r->a.cfg->queue.max_bytes;
	o.on_full = r->a.cfg->queue.on_full;
	rc = loop_init(&r->a.loop);
	if (!rc)
		rc = queue_open(&r->a.q, &o, outputs, 1);
	if (!rc)
		rc = input_create(&r->a, r->a.cfg->inputs, &r->in);
	return rc;
}

static void rig_release(struct rig *r)
{
	input_free(r->in);
	loop_timer_cancel(r->a.loop, &r->a.commit_timer);
	queue_close(r->a.q);
	loop_free(r->a.loop);
	config_free(r->a.cfg);
}

static struct status_input snapshot(const struct rig *r)
{
	struct status_input st;

	memset(&st, 0, sizeof(st));
	input_fill_status(r->in, &st);
	return st;
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
	RUN(test_no_leaks);
	{
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	TEST_END();
}
