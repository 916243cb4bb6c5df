/* sdnotify.h - the service manager's notification protocol (readiness,
 * reload, stop, watchdog): a datagram to the Unix socket named by
 * $NOTIFY_SOCKET. Without that variable every call does nothing, so agentd
 * runs the same under systemd, under another supervisor or by hand.
 */
#ifndef AGENT_SDNOTIFY_H
#define AGENT_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

struct sdnotify {
	int fd;
	struct loop *loop;
	struct loop_timer watchdog;
	int64_t watchdog_ms;    /* ping interval, 0 = no watchdog */
};

/* Read $NOTIFY_SOCKET and $WATCHDOG_USEC; with a watchdog, ping it from a
 * loop timer (a stuck loop stops the pings, and the manager restarts us).
 * Returns 0 or -errno (a bad socket path is reported, not fatal). */
int sdnotify_init(struct sdnotify *n, struct loop *l);
/* Send one message, e.g. "READY=1\nSTATUS=delivering". Like release,
 * harmless on a zeroed struct that was never initialised. */
void sdnotify_send(struct sdnotify *n, const char *msg);
void sdnotify_release(struct sdnotify *n);

#endif
