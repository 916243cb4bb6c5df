/* sdnotify.c - the service manager's notification protocol (see sdnotify.h).
 * The protocol is a datagram of newline-separated VAR=value lines to a Unix
 * socket; no library is needed for it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

static struct sockaddr_un addr;
static socklen_t addr_len;

static int64_t watchdog_cb(struct loop_timer *t)
{
	struct sdnotify *n = container_of(t, struct sdnotify, watchdog);

	sdnotify_send(n, "WATCHDOG=1");
	return n->watchdog_ms;
}

int sdnotify_init(struct sdnotify *n, struct loop *l)
{
	const char *path = getenv("NOTIFY_SOCKET");
	const char *usec = getenv("WATCHDOG_USEC");
	const char *wpid = getenv("WATCHDOG_PID");
	size_t len;

	n->fd = -1;
	n->loop = l;
	n->watchdog_ms = 0;
	n->watchdog.cb = watchdog_cb;
	if (!path || !*path)
		return 0;
	len = strlen(path);
	if (len >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) {
		log_warn("NOTIFY_SOCKET %s is not a usable socket path: not notifying", path);
		return -EINVAL;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0';   /* abstract namespace */
	addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (n->fd < 0)
		return -errno;
	if (usec && (!wpid || atol(wpid) == (long)getpid())) {
		long long us = atoll(usec);

		/* Ping at half the interval, as the protocol recommends. */
		if (us > 0) {
			n->watchdog_ms = us / 2000 > 0 ? us / 2000 : 1;
			loop_timer_set(l, &n->watchdog, 0);
		}
	}
	return 0;
}

void sdnotify_send(struct sdnotify *n, const char *msg)
{
	/* A zeroed struct (never initialised) has no loop: nothing to do. */
	if (!n->loop || n->fd < 0)
		return;
	if (sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0)
		log_debug("service manager notification failed: %s", strerror(errno));
}

void sdnotify_release(struct sdnotify *n)
{
	if (!n->loop)
		return;
	loop_timer_cancel(n->loop, &n->watchdog);
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
	n->loop = NULL;
}
