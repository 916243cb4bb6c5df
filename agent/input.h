/* input.h - the core's side of inputs: lifecycle and status of struct input.
 * Drivers see only driver.h. Functions return 0 or -errno.
 */
#ifndef AGENT_INPUT_H
#define AGENT_INPUT_H

#include "agent.h"
#include "driver.h"
#include "status.h"

int input_create(struct agent *a, struct input_conf *conf, struct input **out);
int input_start(struct input *in);
/* Stop the driver (its positions stay in the queue). */
void input_stop(struct input *in);
void input_free(struct input *in);
bool input_running(const struct input *in);
/* Records are refused for a while (a commit failed): say why in status. */
void input_suspend(struct input *in, const char *why);
/* The queue has room again: resume drivers that were refused. */
void input_resume(struct input *in);
/* The open transaction committed: every ticket so far is durable (the
 * driver's committed() is called from the loop soon after). */
void input_committed(struct input *in);
/* Call a pending committed() now (before the input stops). */
void input_flush_committed(struct input *in);
/* The open transaction is gone: what it held must be appended again. */
void input_commit_failed(struct input *in);
/* True when the driver re-reads its source from saved positions after a
 * failed commit (it is restarted); false when it is told (rolled_back) or
 * the core replays its records (DRIVER_REPLAY): input_recover(). */
bool input_rereads(const struct input *in);
/* Records are accepted again after a failed commit: replay or tell. */
void input_recover(struct input *in);
/* Once a second: update the rate. */
void input_tick(struct input *in, int64_t elapsed_ms);
void input_fill_status(const struct input *in, struct status_input *st);

#endif
