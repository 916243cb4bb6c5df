/* outputs.h - the core's side of outputs: lifecycle, pumping and status.
 * Output types see only output.h. Functions return 0 or -errno.
 */
#ifndef AGENT_OUTPUTS_H
#define AGENT_OUTPUTS_H

#include "agent.h"
#include "output.h"
#include "status.h"

int output_create(struct agent *a, struct output_conf *conf, struct output **out);
int output_start(struct output *o);
/* Stop taking new batches; true once nothing is in flight or the deadline
 * (monotonic ms) has passed. Unacknowledged batches are simply sent again
 * after the next start: their records are still in the queue. */
bool output_drain(struct output *o, int64_t deadline_ms);
void output_free(struct output *o);
void output_tick(struct output *o, int64_t elapsed_ms);
void output_fill_status(struct output *o, struct status_output *st);

#endif
