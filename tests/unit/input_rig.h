/* input_rig.h - one input on the real input core, a real queue and the
 * agent's own commit logic, for drivers' unit tests: the config text is
 * parsed as agentd would (its first input is the one driven), the queue is
 * opened at `db` (through the power-cut VFS when `crash` is set, so a test
 * can fail a commit with crashvfs_fail_writes()), and the input started.
 * Time is whatever clock the test installed (test_clock.h). Include in one
 * test file only.
 */
#ifndef INPUT_RIG_H
#define INPUT_RIG_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "crashvfs.h"
#include "input.h"
#include "loop.h"
#include "queue.h"
#include "status.h"

struct rig {
	struct agent a;
	struct input *in;
	const struct driver *real;   /* the parsed driver, when replaced */
};

/* 0 or -errno; `drv` (NULL: as configured) replaces the input's driver. */
static inline int input_rig_init(struct rig *r, const char *text, const char *db, bool crash,
				 const struct driver *drv)
{
	static const char *const outputs[] = { "lake" };
	struct queue_opts o = { 0 };
	char err[512];
	int rc;

	memset(r, 0, sizeof(*r));
	rc = config_parse(text, strlen(text), "t.conf", &r->a.cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s\n", err);
		return rc;
	}
	if (drv) {
		/* The parsed driver's keys free the values config_free() sees. */
		r->real = r->a.cfg->inputs->drv_type;
		r->a.cfg->inputs->drv_type = drv;
	}
	unlink(db);
	if (crash)
		crashvfs_reset();
	o.path = db;
	o.vfs = crash ? CRASHVFS_NAME : NULL;
	o.synchronous = r->a.cfg->queue.synchronous;
	o.max_bytes = r->a.cfg->queue.max_bytes;
	o.on_full = r->a.cfg->queue.on_full;
	rc = loop_init(&r->a.loop);
	if (!rc)
		rc = queue_open(&r->a.q, &o, outputs, 1);
	if (!rc)
		rc = input_create(&r->a, r->a.cfg->inputs, &r->in);
	if (rc)
		return rc;
	agent_init_timers(&r->a);
	r->a.inputs = &r->in;
	r->a.n_inputs = 1;
	return input_start(r->in);
}

static inline void input_rig_release(struct rig *r)
{
	if (r->real)
		r->a.cfg->inputs->drv_type = r->real;
	r->a.inputs = NULL;
	r->a.n_inputs = 0;
	input_free(r->in);
	loop_timer_cancel(r->a.loop, &r->a.commit_timer);
	loop_timer_cancel(r->a.loop, &r->a.restart_timer);
	queue_close(r->a.q);
	loop_free(r->a.loop);
	config_free(r->a.cfg);
}

/* What status shows of the rig's input now. */
static inline struct status_input snapshot(const struct rig *r)
{
	struct status_input st;

	memset(&st, 0, sizeof(st));
	input_fill_status(r->in, &st);
	return st;
}

#endif
