/* curl_loop.c - libcurl's multi socket interface on the agent's event loop.
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * it next needs a call without socket activity (CURLMOPT_TIMERFUNCTION); the
 * loop calls curl_multi_socket_action() for either, and finished transfers are
 * collected with curl_multi_info_read() after each such call. libcurl forbids
 * calling back into the multi handle from those two callbacks, so they only
 * record what to watch: the actual work always starts from a loop callback.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "curl_loop.h"
#include "log.h"
#include "mem.h"

/* One socket libcurl asked us to watch. */
struct curl_sock {
	struct loop_fd w;
	struct curl_loop *cl;
	struct curl_sock *next;
};

struct xfer {
	CURL *easy;
	curl_done_cb done;
	void *arg;
};

struct curl_loop {
	struct loop *loop;
	CURLM *multi;
	struct loop_timer timer;
	struct curl_sock *socks;
	struct xfer *xfers;
	size_t nxfers, cap;
	CURL *probe;            /* the running probe's handle, or NULL */
	void (*probe_done)(void *arg, int err);
	void *probe_arg;
};

static bool global_ready;

static unsigned poll_to_loop(int what)
{
	switch (what) {
	case CURL_POLL_IN:
		return LOOP_READ;
	case CURL_POLL_OUT:
		return LOOP_WRITE;
	case CURL_POLL_INOUT:
		return LOOP_READ | LOOP_WRITE;
	default:
		return 0;
	}
}

static void sock_free(struct curl_loop *cl, struct curl_sock *s)
{
	struct curl_sock **pp;

	loop_fd_del(cl->loop, &s->w);
	for (pp = &cl->socks; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	xfree(s);
}

static ssize_t xfer_find(const struct curl_loop *cl, const CURL *easy)
{
	for (size_t i = 0; i < cl->nxfers; i++)
		if (cl->xfers[i].easy == easy)
			return (ssize_t)i;
	return -1;
}

static void xfer_drop(struct curl_loop *cl, size_t i)
{
	cl->xfers[i] = cl->xfers[--cl->nxfers];
}

static int probe_errno(CURL *easy, CURLcode rc)
{
	long oserr = 0;

	if (rc == CURLE_OK)
		return 0;
	curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &oserr);
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return oserr > 0 ? -(int)oserr : -ECONNREFUSED;
	}
}

static void probe_finish(struct curl_loop *cl, CURL *easy, CURLcode rc)
{
	void (*done)(void *arg, int err) = cl->probe_done;
	int err = probe_errno(easy, rc);

	cl->probe = NULL;
	curl_easy_cleanup(easy);
	done(cl->probe_arg, err);
}

/* Hand every finished transfer back to its owner. A done callback may add
 * or remove transfers; the message queue stays valid across that. */
static void collect_done(struct curl_loop *cl)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(cl->multi, &left))) {
		CURL *easy = msg->easy_handle;
		CURLcode result = msg->data.result;
		struct xfer x;
		ssize_t i;

		if (msg->msg != CURLMSG_DONE)
			continue;
		i = xfer_find(cl, easy);
		curl_multi_remove_handle(cl->multi, easy);
		if (easy == cl->probe) {
			probe_finish(cl, easy, result);
			continue;
		}
		if (i < 0)
			continue;
		x = cl->xfers[i];
		xfer_drop(cl, (size_t)i);
		x.done(easy, result, x.arg);
	}
}

static void sock_cb(struct loop_fd *w, unsigned revents)
{
	struct curl_sock *s = container_of(w, struct curl_sock, w);
	struct curl_loop *cl = s->cl;
	int mask = 0, running;

	if (revents & LOOP_READ)
		mask |= CURL_CSELECT_IN;
	if (revents & LOOP_WRITE)
		mask |= CURL_CSELECT_OUT;
	if (revents & LOOP_ERROR)
		mask |= CURL_CSELECT_ERR;
	/* s may be freed inside this call (CURL_POLL_REMOVE). */
	curl_multi_socket_action(cl->multi, w->fd, mask, &running);
	collect_done(cl);
}

static int64_t timer_cb(struct loop_timer *t)
{
	struct curl_loop *cl = container_of(t, struct curl_loop, timer);
	int running;

	curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	collect_done(cl);
	/* libcurl re-arms the timer itself through on_timer(). */
	return -1;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct curl_loop *cl = userp;
	struct curl_sock *s = socketp;
	int rc;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(cl->multi, fd, NULL);
			sock_free(cl, s);
		}
		return 0;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->cl = cl;
		s->w.fd = fd;
		s->w.cb = sock_cb;
		s->next = cl->socks;
		cl->socks = s;
		curl_multi_assign(cl->multi, fd, s);
	}
	rc = loop_fd_update(cl->loop, &s->w, poll_to_loop(what));
	if (rc) {
		log_warn("curl: cannot watch socket %d: %s", (int)fd, strerror(-rc));
		return -1;
	}
	return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct curl_loop *cl = userp;

	if (timeout_ms < 0)
		loop_timer_cancel(cl->loop, &cl->timer);
	else
		loop_timer_set(cl->loop, &cl->timer, timeout_ms);
	return 0;
}

int curl_loop_init(struct curl_loop **out, struct loop *l)
{
	struct curl_loop *cl;

	*out = NULL;
	if (!global_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -EIO;
		global_ready = true;
	}
	cl = xcalloc(1, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	cl->loop = l;
	cl->timer.cb = timer_cb;
	cl->multi = curl_multi_init();
	if (!cl->multi) {
		xfree(cl);
		return -ENOMEM;
	}
	curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
	curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
	*out = cl;
	return 0;
}

void curl_loop_free(struct curl_loop *cl)
{
	if (!cl)
		return;
	while (cl->nxfers) {
		curl_multi_remove_handle(cl->multi, cl->xfers[cl->nxfers - 1].easy);
		cl->nxfers--;
	}
	if (cl->probe) {
		curl_multi_remove_handle(cl->multi, cl->probe);
		curl_easy_cleanup(cl->probe);
	}
	/* Cleanup closes cached connections, reporting their sockets removed. */
	curl_multi_cleanup(cl->multi);
	while (cl->socks)
		sock_free(cl, cl->socks);
	loop_timer_cancel(cl->loop, &cl->timer);
	xfree(cl->xfers);
	xfree(cl);
}

int curl_loop_add(struct curl_loop *cl, CURL *easy, curl_done_cb done, void *arg)
{
	CURLMcode mc;

	if (!easy || !done)
		return -EINVAL;
	if (xfer_find(cl, easy) >= 0)
		return -EALREADY;
	if (cl->nxfers == cl->cap) {
		size_t cap = cl->cap ? cl->cap * 2 : 8;
		struct xfer *x = xrealloc(cl->xfers, cap * sizeof(*x));

		if (!x)
			return -ENOMEM;
		cl->xfers = x;
		cl->cap = cap;
	}
	/* Adding arms the timer (through on_timer) to start the transfer
	 * from the loop. */
	mc = curl_multi_add_handle(cl->multi, easy);
	if (mc != CURLM_OK) {
		log_warn("curl: cannot start transfer: %s", curl_multi_strerror(mc));
		return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
	}
	cl->xfers[cl->nxfers++] = (struct xfer){ .easy = easy, .done = done, .arg = arg };
	return 0;
}

void curl_loop_remove(struct curl_loop *cl, CURL *easy)
{
	ssize_t i;

	if (!cl || !easy)
		return;
	i = xfer_find(cl, easy);
	if (i < 0)
		return;
	xfer_drop(cl, (size_t)i);
	curl_multi_remove_handle(cl->multi, easy);
}

int curl_loop_running(const struct curl_loop *cl)
{
	return cl ? (int)cl->nxfers : 0;
}

int curl_loop_probe(struct curl_loop *cl, const char *host, int port, const char *proxy,
		    int64_t timeout_ms, void (*done)(void *arg, int err), void *arg)
{
	char url[300];
	CURLMcode mc;
	CURL *easy;

	if (cl->probe)
		return -EBUSY;
	/* http:// only makes libcurl stop after the TCP connect; the real
	 * transfers use their own scheme and TLS. */
	snprintf(url, sizeof(url), strchr(host, ':') ? "http://[%s]:%d/" : "http://%s:%d/", host,
		 port);
	easy = curl_easy_init();
	if (!easy)
		return -ENOMEM;
	if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms) != CURLE_OK ||
	    (proxy && curl_easy_setopt(easy, CURLOPT_PROXY, proxy) != CURLE_OK) ||
	    (proxy && *proxy && curl_easy_setopt(easy, CURLOPT_HTTPPROXYTUNNEL, 1L) != CURLE_OK)) {
		curl_easy_cleanup(easy);
		return -ENOMEM;
	}
	mc = curl_multi_add_handle(cl->multi, easy);
	if (mc != CURLM_OK) {
		curl_easy_cleanup(easy);
		return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
	}
	cl->probe = easy;
	cl->probe_done = done;
	cl->probe_arg = arg;
	return 0;
}

bool curl_loop_unreachable(CURL *easy, CURLcode rc)
{
	curl_off_t connect_us = 0;

	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return true;
	case CURLE_OPERATION_TIMEDOUT:
		/* Timed out before the connection was made, not waiting for
		 * an answer to a request that was sent. */
		return curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect_us) == CURLE_OK &&
		       connect_us <= 0;
	default:
		return false;
	}
}
