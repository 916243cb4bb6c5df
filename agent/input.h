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
/* Once a second: update the rate. */
void input_tick(struct input *in, int64_t elapsed_ms);
void input_fill_status(const struct input *in, struct status_input *st);

#endif
