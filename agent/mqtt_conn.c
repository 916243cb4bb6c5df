/* mqtt_conn.c - the connection to an MQTT broker shared by every MQTT user
 * of the agent (see mqtt_conn.h): keys, validation, and the transport state
 * machine on the agent loop.
 *
 * The probe. Each attempt opens a non-blocking TCP connection of its own to
 * the broker, bounded by connect_timeout, trying each address of the host in
 * turn. libmosquitto 2.0 sends CONNECT properties only from
 * mosquitto_connect_bind_v5(), whose TCP connect blocks: handed the numeric
 * address the probe reached, that connect costs one round trip instead of
 * hanging for minutes on a host that drops packets. A client of the agent's
 * own keeps the probe's socket instead.
 *
 * mqtts. The probe's connection is handed to the TLS bridge (tls_bridge.c),
 * which does the handshake within connect_timeout and then listens on a Unix
 * socket; the user's client connects there without TLS of its own, and the
 * bridge relays. A failed handshake becomes the status reason; so does a TLS
 * error on a relayed connection, through lost().
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "mqtt_conn.h"
#include "secret.h"
#include "url.h"

#define WHY_LEN 512

enum conn_state {
	MC_WAIT,       /* timer starts the next attempt (when armed) */
	MC_PROBING,    /* our own non-blocking TCP connect is in progress */
	MC_HANDSHAKE,  /* mqtts: the TLS bridge is doing the handshake */
	MC_SESSION,    /* ready() was called; waiting for connected() */
	MC_UP,         /* the user's session is established */
	MC_CLOSED,     /* mqtt_conn_close(): never reconnects */
};

struct mqtt_conn {
	struct loop *loop;
	const struct mqtt_conn_conf *conf;
	const struct mqtt_conn_ops *ops;
	void *arg;
	char *label;
	char host[256];
	char hostport[272];
	int port;
	bool tls;
	struct tls_bridge *bridge;  /* mqtts only */
	char *password;
	size_t password_len;
	enum conn_state state;
	unsigned attempt;       /* failed attempts since the last connected() */
	int64_t probe_cap_ms;
	char logged_why[WHY_LEN];
	struct addrinfo *ai_list, *ai_cur;
	int probe_err;
	struct loop_fd probe_w;
	struct loop_timer timer;   /* next attempt, or the attempt's timeout */
};

/* ---- configuration ---------------------------------------------------- */

static int parse_url(const char *url, char *host, size_t hostlen, int *port, bool *tls,
		     char *err, size_t errlen)
{
	const char *h, *rest;
	int rc;

	*tls = !strncmp(url, "mqtts://", 8);
	if (!*tls && strncmp(url, "mqtt://", 7))
		goto bad;
	h = url + (*tls ? 8 : 7);
	*port = *tls ? MQTTS_DEFAULT_PORT : MQTT_DEFAULT_PORT;
	rc = url_host_port(h, host, hostlen, port, &rest);
	if (rc == -ERANGE) {
		snprintf(err, errlen, "url '%s': " URL_PORT_RANGE, url);
		return -EINVAL;
	}
	if (rc)
		goto bad;
	if (*rest == '/')
		rest++;
	if (*rest)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "url '%s' must look like mqtt://host:port or mqtts://host:port", url);
	return -EINVAL;
}

int mqtt_conn_validate(const struct mqtt_conn_conf *c, char *err, size_t errlen)
{
	unsigned char ip[16];
	char host[256];
	bool tls;
	int port;

	if (!c->url || parse_url(c->url, host, sizeof(host), &port, &tls, err, errlen)) {
		if (!c->url)
			snprintf(err, errlen, "url is required");
		return -EINVAL;
	}
	if (!tls && (c->ca_file || c->client_cert || c->client_key || c->tls_server_name)) {
		snprintf(err, errlen, "%s applies to mqtts:// urls only",
			 c->ca_file ? "ca_file" : c->client_cert ? "client_cert" :
			 c->client_key ? "client_key" : "tls_server_name");
		return -EINVAL;
	}
	if (!c->client_cert != !c->client_key) {
		snprintf(err, errlen, "%s", c->client_cert ? "client_cert needs client_key"
			 : "client_key needs client_cert");
		return -EINVAL;
	}
	if (c->tls_server_name && (!*c->tls_server_name || strlen(c->tls_server_name) > 253)) {
		snprintf(err, errlen, "tls_server_name must be a DNS name");
		return -EINVAL;
	}
	if (tls && !c->tls_server_name &&
	    (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)) {
		snprintf(err, errlen, "url '%s' names the broker by IP address: set tls_server_name "
			 "to the DNS name in its certificate (IP addresses are not matched)", c->url);
		return -EINVAL;
	}
	if (c->password_file && !c->username) {
		snprintf(err, errlen, "password_file needs username");
		return -EINVAL;
	}
	if (c->reconnect_base_ms > c->reconnect_max_ms) {
		snprintf(err, errlen, "reconnect_base (%" PRId64 " ms) is longer than reconnect_max (%"
			 PRId64 " ms)", c->reconnect_base_ms, c->reconnect_max_ms);
		return -EINVAL;
	}
	return 0;
}

/* ---- helpers ---------------------------------------------------------- */

const char *mqtt_conn_fmt_ms(char *buf, size_t len, int64_t ms)
{
	if (ms % 1000)
		snprintf(buf, len, "%" PRId64 " ms", ms);
	else
		snprintf(buf, len, "%" PRId64 " s", ms / 1000);
	return buf;
}

const char *mqtt_conn_strerror(const struct mqtt_conn *c, int err, char *buf, size_t len)
{
	if (err == ECONNREFUSED)
		snprintf(buf, len, "connection refused (is the broker running at %s?)", c->hostport);
	else if (err == EHOSTUNREACH || err == ENETUNREACH)
		snprintf(buf, len, "broker %s is unreachable: %s (network down?)", c->hostport,
			 strerror(err));
	else
		snprintf(buf, len, "cannot connect to %s: %s", c->hostport, strerror(err));
	return buf;
}

static void close_probe(struct mqtt_conn *c)
{
	loop_fd_del(c->loop, &c->probe_w);
	if (c->probe_w.fd >= 0)
		close(c->probe_w.fd);
	c->probe_w.fd = -1;
}

static void free_addrs(struct mqtt_conn *c)
{
	if (c->ai_list)
		freeaddrinfo(c->ai_list);
	c->ai_list = c->ai_cur = NULL;
}

static void report(struct mqtt_conn *c, bool connected, const char *why)
{
	if (c->ops->status)
		c->ops->status(c, c->arg, connected, why);
}

/* ---- the state machine ------------------------------------------------ */

void mqtt_conn_failed(struct mqtt_conn *c, const char *why, bool unreachable)
{
	int64_t d;

	close_probe(c);
	free_addrs(c);
	tls_bridge_reset(c->bridge);
	if (c->state == MC_CLOSED) {
		loop_timer_cancel(c->loop, &c->timer);
		report(c, false, why);
		return;
	}
	c->state = MC_WAIT;
	report(c, false, why);
	if (strcmp(why, c->logged_why)) {
		log_warn("%s: %s", c->label, why);
		snprintf(c->logged_why, sizeof(c->logged_why), "%s", why);
	}
	d = backoff_delay(c->conf->reconnect_base_ms, c->conf->reconnect_max_ms, c->attempt);
	/* No broker answered (refused, unreachable, no answer to the TCP
	 * connect): the next attempt begins with a TCP connect, so it is the
	 * cheap probe of the owner's retry_probe and comes at least that often.
	 * A broker that answered (a refused CONNACK, a failed handshake, a
	 * dropped connection) waits for the full backoff. */
	if (unreachable && c->probe_cap_ms > 0 && d > c->probe_cap_ms)
		d = c->probe_cap_ms;
	if (c->attempt < 32)
		c->attempt++;
	log_debug("%s: next connection attempt in %" PRId64 " ms", c->label, d);
	loop_timer_set(c->loop, &c->timer, d);
}

static void connect_failed(struct mqtt_conn *c, int err, bool unreachable)
{
	char why[WHY_LEN];

	mqtt_conn_failed(c, mqtt_conn_strerror(c, err, why, sizeof(why)), unreachable);
}

/* The transport is the user's now; the connect_timeout armed by the
 * attempt keeps running until connected(). */
static void hand_over(struct mqtt_conn *c, int fd, const char *addr, int port)
{
	c->state = MC_SESSION;
	c->ops->ready(c, c->arg, fd, addr, port);
}

/* The probe reached the broker over plain TCP: hand over the socket and the
 * numeric address it reached. */
static void tcp_ready(struct mqtt_conn *c, int fd, const struct addrinfo *ai)
{
	char addr[NI_MAXHOST];
	int rc;

	rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
	free_addrs(c);
	if (rc) {
		close(fd);
		connect_failed(c, EINVAL, false);
		return;
	}
	hand_over(c, fd, addr, c->port);
}

/* mqtts: the probe's connection becomes the TLS connection; the handshake
 * gets a connect_timeout of its own. */
static void start_tls(struct mqtt_conn *c, int fd)
{
	char why[WHY_LEN];
	int rc;

	free_addrs(c);
	c->state = MC_HANDSHAKE;
	loop_timer_set(c->loop, &c->timer, c->conf->connect_timeout_ms);
	rc = tls_bridge_start(c->bridge, fd);
	if (rc) {
		snprintf(why, sizeof(why), "TLS: cannot start a connection to %s: %s", c->hostport,
			 strerror(-rc));
		mqtt_conn_failed(c, why, false);
	}
}

/* Handshake outcome, or the end of a relayed connection. */
static void tls_cb(void *arg, int rc, const char *why)
{
	struct mqtt_conn *c = arg;

	if (c->state == MC_HANDSHAKE) {
		if (rc)
			mqtt_conn_failed(c, why, false);
		else
			hand_over(c, -1, tls_bridge_path(c->bridge), 0);
		return;
	}
	if (rc && (c->state == MC_SESSION || c->state == MC_UP) && c->ops->lost)
		c->ops->lost(c, c->arg, why);
}

static void probe_next(struct mqtt_conn *c)
{
	for (; c->ai_cur; c->ai_cur = c->ai_cur->ai_next) {
		const struct addrinfo *ai = c->ai_cur;
		int fd, rc;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			c->probe_err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			if (c->tls)
				start_tls(c, fd);
			else
				tcp_ready(c, fd, ai);
			return;
		}
		if (errno != EINPROGRESS) {
			c->probe_err = errno;
			close(fd);
			continue;
		}
		c->probe_w.fd = fd;
		c->probe_w.events = LOOP_WRITE;
		rc = loop_fd_add(c->loop, &c->probe_w);
		if (rc == 0)
			return;
		c->probe_err = -rc;
		close_probe(c);
	}
	/* No address took the TCP connect. */
	connect_failed(c, c->probe_err ? c->probe_err : EHOSTUNREACH, true);
}

static void probe_cb(struct loop_fd *w, unsigned revents)
{
	struct mqtt_conn *c = container_of(w, struct mqtt_conn, probe_w);
	socklen_t len = sizeof(int);
	int err = 0, fd = w->fd;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (!err) {
		loop_fd_del(c->loop, w);
		w->fd = -1;
		if (c->tls)
			start_tls(c, fd);
		else
			tcp_ready(c, fd, c->ai_cur);
		return;
	}
	close_probe(c);
	/* Try the host's next address, as libmosquitto would. */
	c->probe_err = err;
	c->ai_cur = c->ai_cur->ai_next;
	probe_next(c);
}

static void begin_connect(struct mqtt_conn *c)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	char port[8], why[WHY_LEN];
	int rc;

	snprintf(port, sizeof(port), "%d", c->port);
	free_addrs(c);
	rc = getaddrinfo(c->host, port, &hints, &c->ai_list);
	if (rc) {
		c->ai_list = NULL;
		snprintf(why, sizeof(why), "cannot resolve the broker host '%s': %s", c->host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		mqtt_conn_failed(c, why, true);
		return;
	}
	c->ai_cur = c->ai_list;
	c->probe_err = 0;
	c->state = MC_PROBING;
	loop_timer_set(c->loop, &c->timer, c->conf->connect_timeout_ms);
	probe_next(c);
}

static int64_t timer_cb(struct loop_timer *t)
{
	struct mqtt_conn *c = container_of(t, struct mqtt_conn, timer);
	char why[WHY_LEN], dur[32];

	mqtt_conn_fmt_ms(dur, sizeof(dur), c->conf->connect_timeout_ms);
	switch (c->state) {
	case MC_WAIT:
		begin_connect(c);
		break;
	case MC_PROBING:
		snprintf(why, sizeof(why), "no answer from %s within %s (network down or port "
			 "filtered?)", c->hostport, dur);
		mqtt_conn_failed(c, why, true);
		break;
	case MC_HANDSHAKE:
		snprintf(why, sizeof(why), "TLS: no handshake with %s within %s (is it a TLS "
			 "listener?)", c->hostport, dur);
		mqtt_conn_failed(c, why, false);
		break;
	case MC_SESSION:
		snprintf(why, sizeof(why), "broker at %s did not answer CONNECT within %s",
			 c->hostport, dur);
		if (c->ops->timeout)
			c->ops->timeout(c, c->arg, why);
		else
			mqtt_conn_failed(c, why, false);
		break;
	default:
		break;
	}
	return -1;
}

void mqtt_conn_start(struct mqtt_conn *c, int64_t delay_ms)
{
	char why[WHY_LEN];

	c->state = MC_WAIT;
	snprintf(why, sizeof(why), "connecting to %s", c->conf->url);
	report(c, false, why);
	loop_timer_set(c->loop, &c->timer, delay_ms);
}

void mqtt_conn_connected(struct mqtt_conn *c)
{
	loop_timer_cancel(c->loop, &c->timer);
	if (c->state != MC_CLOSED)
		c->state = MC_UP;
	c->attempt = 0;
	c->logged_why[0] = '\0';
	report(c, true, NULL);
}

void mqtt_conn_close(struct mqtt_conn *c)
{
	bool live = c->state == MC_SESSION || c->state == MC_UP;

	if (c->state == MC_CLOSED)
		return;
	c->state = MC_CLOSED;
	loop_timer_cancel(c->loop, &c->timer);
	close_probe(c);
	free_addrs(c);
	/* A live TLS connection stays up to carry a last DISCONNECT. */
	if (!live)
		tls_bridge_reset(c->bridge);
}

void mqtt_conn_set_probe_cap(struct mqtt_conn *c, int64_t cap_ms)
{
	c->probe_cap_ms = cap_ms > 0 ? cap_ms : 0;
}

int mqtt_conn_attach(struct mqtt_conn *c)
{
	char why[WHY_LEN];
	int rc;

	rc = c->bridge ? tls_bridge_attach(c->bridge) : -EINVAL;
	if (rc) {
		snprintf(why, sizeof(why), "TLS: cannot pass the connection to %s on: %s",
			 c->hostport, strerror(-rc));
		mqtt_conn_failed(c, why, false);
	}
	return rc;
}

int mqtt_conn_connect_bridge(struct mqtt_conn *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = c->bridge ? tls_bridge_path(c->bridge) : "";
	char why[WHY_LEN];
	int fd, rc;

	if (!c->bridge || strlen(path) >= sizeof(sa.sun_path)) {
		rc = -EINVAL;
		goto out_fail;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out_fail;
	}
	/* The bridge listens already: a local connect completes at once or
	 * not at all (EAGAIN: its backlog is full). */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		close(fd);
		goto out_fail;
	}
	rc = mqtt_conn_attach(c);
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;

out_fail:
	snprintf(why, sizeof(why), "TLS: cannot connect to the bridge for %s: %s", c->hostport,
		 strerror(-rc));
	mqtt_conn_failed(c, why, false);
	return rc;
}

/* ---- life ------------------------------------------------------------- */

int mqtt_conn_new(struct loop *l, const struct mqtt_conn_conf *conf, const char *label,
		  const struct mqtt_conn_ops *ops, void *arg, struct mqtt_conn **out,
		  char *err, size_t errlen)
{
	struct mqtt_conn *c;
	int rc;

	*out = NULL;
	c = xcalloc(1, sizeof(*c));
	if (!c)
		goto out_nomem;
	c->loop = l;
	c->conf = conf;
	c->ops = ops;
	c->arg = arg;
	c->probe_w.fd = -1;
	c->probe_w.cb = probe_cb;
	c->timer.cb = timer_cb;
	c->state = MC_CLOSED;
	c->label = xstrdup(label);
	if (!c->label)
		goto out_nomem;
	rc = conf->url ? parse_url(conf->url, c->host, sizeof(c->host), &c->port, &c->tls, err,
				   errlen) : -EINVAL;
	if (rc) {
		if (!conf->url)
			snprintf(err, errlen, "url is required");
		goto out_free;
	}
	snprintf(c->hostport, sizeof(c->hostport), strchr(c->host, ':') ? "[%s]:%d" : "%s:%d",
		 c->host, c->port);
	if (c->tls) {
		struct tls_bridge_conf tc = {
			.ca_file = conf->ca_file,
			.client_cert = conf->client_cert,
			.client_key = conf->client_key,
			.server_name = conf->tls_server_name ? conf->tls_server_name : c->host,
			.label = c->hostport,
		};

		rc = tls_bridge_new(l, &tc, tls_cb, c, &c->bridge, err, errlen);
		if (rc)
			goto out_free;
	}
	if (conf->username && conf->password_file) {
		rc = secret_read(conf->password_file, MQTT_CONN_MAX_PASSWORD, &c->password);
		if (rc) {
			snprintf(err, errlen, "cannot read password_file %s: %s", conf->password_file,
				 secret_strerror(rc));
			goto out_free;
		}
		c->password_len = strlen(c->password);
	}
	*out = c;
	return 0;

out_nomem:
	snprintf(err, errlen, "out of memory");
	rc = -ENOMEM;
out_free:
	mqtt_conn_free(c);
	return rc;
}

void mqtt_conn_free(struct mqtt_conn *c)
{
	if (!c)
		return;
	loop_timer_cancel(c->loop, &c->timer);
	close_probe(c);
	free_addrs(c);
	tls_bridge_free(c->bridge);
	secret_free(c->password);
	xfree(c->label);
	xfree(c);
}

/* ---- what the module knows -------------------------------------------- */

const char *mqtt_conn_hostport(const struct mqtt_conn *c)
{
	return c->hostport;
}

const char *mqtt_conn_username(const struct mqtt_conn *c)
{
	return c->conf->username;
}

const char *mqtt_conn_password(const struct mqtt_conn *c, size_t *len)
{
	if (len)
		*len = c->password_len;
	return c->password;
}

bool mqtt_conn_is_tls(const struct mqtt_conn *c)
{
	return c->tls;
}

unsigned mqtt_conn_attempt(const struct mqtt_conn *c)
{
	return c->attempt;
}

int64_t mqtt_conn_next_attempt_ms(const struct mqtt_conn *c)
{
	int64_t now = loop_now_ms();

	if (c->state != MC_WAIT || !c->timer.armed)
		return -1;
	return c->timer.due > now ? c->timer.due - now : 0;
}
