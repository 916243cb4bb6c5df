/* control.h - the Unix control socket that agentctl talks to.
 *
 * Returns 0 or -errno.
 */
#ifndef AGENT_CONTROL_H
#define AGENT_CONTROL_H

struct agent;
struct control;

/* Listen on path (a stale socket file is replaced; mode 0660). */
int control_open(struct control **c, struct agent *a, const char *path);
/* Close the socket and remove its file. Accepts NULL. */
void control_close(struct control *c);

#endif
