/* control.h - the Unix control socket that agentctl talks to.
 *
 * Returns 0 or -errno.
 */
#ifndef AGENT_CONTROL_H
#define AGENT_CONTROL_H

#include <sys/types.h>

struct agent;
struct buf;
struct control;

/* Listen on path (a stale socket file is replaced; mode 0660).
 * -EADDRINUSE when another agentd answers on it. */
int control_open(struct control **c, struct agent *a, const char *path);
/* Close the socket and remove its file. Accepts NULL. */
void control_close(struct control *c);

/* Run one request line for a peer with uid peer_uid and append the response
 * ("ok\n" then the body, or "error <message>\n") to out. The socket runs
 * every request through it; agentctl runs dlq commands through it on the
 * database when agentd is down (a->q open, no loop, no outputs).
 * Returns 0 or -ENOMEM. */
int control_exec(struct agent *a, uid_t peer_uid, const char *line,
		 struct buf *out);

#endif
