/* out_mqtt.c - the mqtt output type: each batch becomes one QoS 1 PUBLISH
 * sent through libmosquitto, which is driven only from the agent's event loop
 * (its socket as an fd watch, mosquitto_loop_misc from a timer).
 *
 * Connecting. libmosquitto 2.0 sends CONNECT properties (the Session Expiry
 * Interval) only from mosquitto_connect_bind_v5(), whose TCP connect blocks;
 * its non-blocking variants send CONNECT without properties. So each attempt
 * first opens a non-blocking TCP connection of its own to the broker (the
 * probe), bounded by connect_timeout, and only once that has succeeded lets
 * libmosquitto connect to the same numeric address: its blocking connect()
 * then costs one round trip instead of hanging for minutes on a host that
 * drops packets. The probe is closed at once; the broker only logs a client
 * that left before CONNECT. Name lookup (getaddrinfo) still blocks the loop
 * while DNS is slow, so the broker should be given as an IP address or a
 * name in /etc/hosts.
 *
 * mqtts. The probe's connection is kept and handed to the TLS bridge
 * (tls_bridge.c, mbedTLS), which does the handshake within connect_timeout
 * and then listens on a Unix socket; libmosquitto connects there (port 0)
 * without TLS of its own, and the bridge relays. A failed handshake becomes
 * the status why; so does a TLS error on a relayed connection, through
 * on_disconnect once libmosquitto sees its socket close.
 *
 * Publishes that are unacknowledged when the connection drops. libmosquitto
 * 2.0.11 keeps every QoS 1 message until its PUBACK: mosquitto__reconnect()
 * marks them for sending again (message__reconnect_reset) and
 * handle__connack() resends them, DUP set, right after every successful
 * CONNACK (message__retry_check), whether the broker kept the session or not:
 * it never looks at "session present". So a batch in flight stays in flight
 * here across disconnects and completes with the PUBACK of the resend;
 * reporting OUT_RETRY for it as well would make the core send it a second
 * time. When the broker lost the session the resend arrives as a new
 * message, which is what at-least-once needs (the lake drops duplicates by
 * batch id). For the same reason the client object is never recreated while
 * batches are pending. The only batches given up are those without a PUBACK
 * for ack_timeout on a live connection: they get OUT_RETRY and the connection
 * is re-established, so libmosquitto's copy is resent or acknowledged too.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "output.h"
#include "url.h"
#include "secret.h"
#include "tls_bridge.h"

#define MQTT_DEFAULT_PORT 1883
#define MQTTS_DEFAULT_PORT 8883
#define MQTT_MAX_REMAINING 268435455u  /* largest Remaining Length MQTT encodes */
#define MAX_PASSWORD 65535
/* libmosquitto's default send maximum: the window for v3.1.1, where the
 * broker announces none. */
#define V311_WINDOW 20
#define MISC_INTERVAL_MS 1000
#define WHY_LEN 512

enum { PROTO_V5, PROTO_V311 };

struct mqtt_conf {
	char *url;
	int protocol;
	char *client_id;
	char *topic;
	int64_t keepalive_ms;
	int64_t session_expiry_ms;
	char *username;
	char *password_file;
	char *status_topic;
	int64_t reconnect_base_ms;
	int64_t reconnect_max_ms;
	int64_t connect_timeout_ms;
	int64_t ack_timeout_ms;
	int64_t max_packet_size;
	char *ca_file;
	char *client_cert;
	char *client_key;
	char *tls_server_name;
};

static const char *const protocol_names[] = { "v5", "v311", NULL };

#define MK(f) .offset = offsetof(struct mqtt_conf, f)
static const struct cfg_key mqtt_keys[] = {
	{ .name = "url", .type = CFG_STR, .def = "mqtt://127.0.0.1:1883", MK(url),
	  .help = "Broker address as mqtt://host:port (IPv6: mqtt://[::1]:1883; the port defaults to "
		  "1883), or mqtts://host:port for MQTT over TLS (port 8883 by default; TLS 1.2 or "
		  "later, the broker's certificate is always verified and must name the host). Prefer "
		  "an IP address or a name from /etc/hosts: a DNS lookup holds up the agent while it "
		  "waits. With mqtts and an IP address, set tls_server_name." },
	{ .name = "protocol", .type = CFG_ENUM, .def = "v5", MK(protocol), .enums = protocol_names,
	  .help = "MQTT version: v5 sends batch metadata as user properties and learns from the broker "
		  "why a message was refused; v311 is for older brokers (metadata is then only in the "
		  "records, and every PUBACK counts as success)." },
	{ .name = "client_id", .type = CFG_STR, MK(client_id),
	  .help = "MQTT client identifier; default: <agent id>-<output name>. It must be unique on the "
		  "broker: a second client with the same id takes the session over and disconnects "
		  "this one." },
	{ .name = "topic", .type = CFG_STR, .def = "agents/{agent}/{stream}", MK(topic),
	  .help = "Topic each batch is published to, with QoS 1 (at least once). {agent}, {stream} and "
		  "{output} are replaced by the agent id, the batch's stream and this output's name." },
	{ .name = "keepalive", .type = CFG_DURATION, .def = "30s", MK(keepalive_ms),
	  .min = 5000, .max = 65535000,
	  .help = "MQTT keepalive: a ping is sent after this long without traffic, and the connection "
		  "counts as lost when the broker stays silent for longer." },
	{ .name = "session_expiry", .type = CFG_DURATION, .def = "1h", MK(session_expiry_ms),
	  .min = 0, .max = 4294967295000LL,
	  .help = "v5: how long the broker keeps this client's session after a disconnect (the client "
		  "connects with Clean Start off). Unacknowledged batches are sent again after a "
		  "reconnect either way." },
	{ .name = "username", .type = CFG_STR, MK(username),
	  .help = "User name for the broker, if it requires one." },
	{ .name = "password_file", .type = CFG_STR, MK(password_file),
	  .help = "File holding the broker password (a trailing newline is ignored), read at start. "
		  "The password is never logged or shown. Needs username." },
	{ .name = "status_topic", .type = CFG_STR, .def = "agents/{agent}/status", MK(status_topic),
	  .help = "Topic of a retained status message: {\"status\":\"online\",...} after each connect, "
		  "and {\"status\":\"offline\",...} on shutdown or, as the last will, published by the "
		  "broker when the connection is lost. {agent} and {output} are replaced; empty "
		  "disables status messages." },
	{ .name = "reconnect_base", .type = CFG_DURATION, .def = "1s", MK(reconnect_base_ms),
	  .min = 100, .max = 3600000,
	  .help = "Delay before reconnecting after a failure; it doubles with each further failure, "
		  "with jitter, up to reconnect_max." },
	{ .name = "reconnect_max", .type = CFG_DURATION, .def = "60s", MK(reconnect_max_ms),
	  .min = 100, .max = 86400000,
	  .help = "Longest delay between reconnect attempts." },
	{ .name = "connect_timeout", .type = CFG_DURATION, .def = "10s", MK(connect_timeout_ms),
	  .min = 500, .max = 600000,
	  .help = "How long a connection attempt (TCP connect and the broker's CONNACK) may take "
		  "before it is abandoned and retried." },
	{ .name = "ack_timeout", .type = CFG_DURATION, .def = "60s", MK(ack_timeout_ms),
	  .min = 500, .max = 86400000,
	  .help = "A batch the broker has not acknowledged (PUBACK) this long on a live connection is "
		  "sent again and the connection re-established." },
	{ .name = "max_packet_size", .type = CFG_SIZE, .def = "0", MK(max_packet_size),
	  .min = 0, .max = 268435460,
	  .help = "Largest MQTT packet sent; a larger batch is split. 0: the limit the broker "
		  "announces (v5) or none. Set it for a v311 broker with a limit: such a broker drops "
		  "the connection instead of refusing the message." },
	{ .name = "ca_file", .type = CFG_STR, MK(ca_file),
	  .help = "mqtts: PEM file of the certificate authorities that may sign the broker's "
		  "certificate. Default: the system's store (" TLS_DEFAULT_CA_FILE ")." },
	{ .name = "client_cert", .type = CFG_STR, MK(client_cert),
	  .help = "mqtts: PEM client certificate for mutual TLS, presented when the broker asks for "
		  "one (mosquitto: require_certificate true). Needs client_key." },
	{ .name = "client_key", .type = CFG_STR, MK(client_key),
	  .help = "mqtts: PEM private key of client_cert (unencrypted; keep the file readable by the "
		  "agent only)." },
	{ .name = "tls_server_name", .type = CFG_STR, MK(tls_server_name),
	  .help = "mqtts: the DNS name sent as SNI and that the broker's certificate must carry. "
		  "Default: the host of url. Required when url names the broker by IP address "
		  "(IP addresses in certificates are not matched)." },
	{ .name = NULL },
};

enum conn_state {
	CS_WAIT,       /* not connected; conn_timer starts the next attempt */
	CS_PROBING,    /* our own non-blocking TCP connect is in progress */
	CS_HANDSHAKE,  /* mqtts: the TLS bridge is doing the handshake */
	CS_CONNECTING, /* libmosquitto sent CONNECT; waiting for CONNACK */
	CS_CONNECTED,
	CS_CLOSED,     /* drained or stopping: never reconnects */
};

struct pending {
	struct batch *b;
	int mid;        /* 0: refused before sending, reported from reject_timer */
	int64_t sent_ms;
};

struct out_mqtt {
	struct output *o;
	const struct mqtt_conf *conf;
	struct loop *loop;
	struct mosquitto *mosq;
	bool v5;
	char host[256];
	char hostport[272];
	int port;
	bool tls;
	struct tls_bridge *bridge;  /* mqtts only */
	char *client_id;
	char *status_topic;     /* expanded; NULL when status messages are off */
	struct buf topic;       /* scratch for send() */
	enum conn_state state;
	bool draining, drained;
	unsigned attempt;       /* failed attempts since the last CONNACK */
	bool unreachable;       /* the failing attempt found no broker to talk to */
	char why[WHY_LEN];          /* known cause of the current failure, if any */
	char logged_why[WHY_LEN];
	struct addrinfo *ai_list, *ai_cur;
	int probe_err;
	struct loop_fd probe_w;
	struct loop_fd sock_w;
	struct loop_timer conn_timer;   /* next attempt, or the attempt's timeout */
	struct loop_timer misc_timer;   /* keepalive and ack timeouts */
	struct loop_timer reject_timer; /* outcomes decided inside send() */
	unsigned recv_max;              /* the broker's Receive Maximum */
	uint32_t broker_max_packet;     /* 0: not announced */
	struct pending *pend;
	size_t npend, cap;
};

static bool lib_ready;

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

/* Expand a topic template; a NULL value makes its placeholder invalid.
 * Returns 0, -EINVAL (unknown placeholder or stray brace) or -ENOMEM. */
static int expand_topic(struct buf *out, const char *tmpl, const char *agent, const char *output,
			const char *stream)
{
	static const char *const names[] = { "agent", "output", "stream" };
	const char *vals[] = { agent, output, stream };
	const char *p = tmpl;

	buf_reset(out);
	if (buf_reserve(out, strlen(tmpl)))
		return -ENOMEM;
	while (*p) {
		const char *close;
		size_t i, n;

		if (*p != '{') {
			if (*p == '}')
				return -EINVAL;
			if (buf_addc(out, *p++))
				return -ENOMEM;
			continue;
		}
		close = strchr(p, '}');
		if (!close)
			return -EINVAL;
		n = (size_t)(close - p - 1);
		for (i = 0; i < 3; i++)
			if (strlen(names[i]) == n && !strncmp(p + 1, names[i], n))
				break;
		if (i == 3 || !vals[i])
			return -EINVAL;
		if (buf_adds(out, vals[i]))
			return -ENOMEM;
		p = close + 1;
	}
	return 0;
}

static int check_template(const char *key, const char *tmpl, bool with_stream, char *err,
			  size_t errlen)
{
	struct buf t = BUF_INIT;
	int rc;

	if (strpbrk(tmpl, "+#")) {
		snprintf(err, errlen, "%s '%s' must not contain the wildcards + or #", key, tmpl);
		return -EINVAL;
	}
	rc = expand_topic(&t, tmpl, "a", "o", with_stream ? "s" : NULL);
	buf_release(&t);
	if (rc == -EINVAL)
		snprintf(err, errlen, "%s '%s': unknown placeholder (allowed: %s)", key, tmpl,
			 with_stream ? "{agent}, {stream}, {output}" : "{agent}, {output}");
	else if (rc)
		snprintf(err, errlen, "out of memory");
	return rc;
}

static int mqtt_validate(const void *conf, char *err, size_t errlen)
{
	const struct mqtt_conf *c = conf;
	unsigned char ip[16];
	char host[256];
	bool tls;
	int port, rc;

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
	if (!c->topic || !*c->topic) {
		snprintf(err, errlen, "topic must not be empty");
		return -EINVAL;
	}
	rc = check_template("topic", c->topic, true, err, errlen);
	if (!rc && c->status_topic && *c->status_topic)
		rc = check_template("status_topic", c->status_topic, false, err, errlen);
	if (rc)
		return rc;      /* -ENOMEM stays itself: not a verdict on the config */
	if (c->client_id && !*c->client_id) {
		snprintf(err, errlen, "client_id must not be empty (leave it out for the default)");
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

/* ---- status messages -------------------------------------------------- */

static int status_json(struct out_mqtt *m, struct buf *b, const char *status, const char *reason,
		       bool with_time)
{
	const char *agent = output_agent_id(m->o), *name = output_name(m->o);
	int rc;

	rc = buf_adds(b, "{\"status\":");
	rc = rc ? rc : json_add_str(b, status, strlen(status));
	rc = rc ? rc : buf_adds(b, ",\"agent\":");
	rc = rc ? rc : json_add_str(b, agent, strlen(agent));
	rc = rc ? rc : buf_adds(b, ",\"output\":");
	rc = rc ? rc : json_add_str(b, name, strlen(name));
	rc = rc ? rc : buf_adds(b, ",\"client_id\":");
	rc = rc ? rc : json_add_str(b, m->client_id, strlen(m->client_id));
	if (reason) {
		rc = rc ? rc : buf_adds(b, ",\"reason\":");
		rc = rc ? rc : json_add_str(b, reason, strlen(reason));
	}
	if (with_time)
		rc = rc ? rc : buf_printf(b, ",\"at_ms\":%" PRId64, loop_wall_ms());
	rc = rc ? rc : buf_addc(b, '}');
	return rc;
}

/* Retained and QoS 1 so the broker keeps it; its PUBACK matches no batch. */
static void publish_status(struct out_mqtt *m, const char *status, const char *reason)
{
	struct buf b = BUF_INIT;
	int rc;

	if (!m->status_topic)
		return;
	if (status_json(m, &b, status, reason, true)) {
		buf_release(&b);
		return;
	}
	rc = mosquitto_publish_v5(m->mosq, NULL, m->status_topic, (int)b.len, b.p, 1, true, NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		log_warn("output %s: cannot publish %s status: %s", output_name(m->o), status,
			 mosquitto_strerror(rc));
	buf_release(&b);
}

/* ---- pending publishes ------------------------------------------------ */

static int pend_add(struct out_mqtt *m, struct batch *b, int mid)
{
	if (m->npend == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;
		struct pending *p = xrealloc(m->pend, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		m->pend = p;
		m->cap = cap;
	}
	m->pend[m->npend].b = b;
	m->pend[m->npend].mid = mid;
	m->pend[m->npend].sent_ms = loop_now_ms();
	m->npend++;
	return 0;
}

static struct batch *pend_take(struct out_mqtt *m, size_t i)
{
	struct batch *b = m->pend[i].b;

	m->pend[i] = m->pend[--m->npend];
	return b;
}

static ssize_t pend_find_mid(const struct out_mqtt *m, int mid)
{
	for (size_t i = 0; i < m->npend; i++)
		if (m->pend[i].mid == mid)
			return (ssize_t)i;
	return -1;
}

/* ---- connection ------------------------------------------------------- */

/* "500 ms" or "10 s", for messages. */
static const char *fmt_ms(char *buf, size_t len, int64_t ms)
{
	if (ms % 1000)
		snprintf(buf, len, "%" PRId64 " ms", ms);
	else
		snprintf(buf, len, "%" PRId64 " s", ms / 1000);
	return buf;
}

static void close_probe(struct out_mqtt *m)
{
	loop_fd_del(m->loop, &m->probe_w);
	if (m->probe_w.fd >= 0)
		close(m->probe_w.fd);
	m->probe_w.fd = -1;
}

static void free_addrs(struct out_mqtt *m)
{
	if (m->ai_list)
		freeaddrinfo(m->ai_list);
	m->ai_list = m->ai_cur = NULL;
}

/* Watch libmosquitto's socket: always for reading, for writing while it has
 * queued packets. */
static void sync_watch(struct out_mqtt *m)
{
	int fd = mosquitto_socket(m->mosq);
	int rc;

	if (fd < 0 || (m->state != CS_CONNECTING && m->state != CS_CONNECTED)) {
		loop_fd_del(m->loop, &m->sock_w);
		return;
	}
	if (m->sock_w.added && m->sock_w.fd != fd)
		loop_fd_del(m->loop, &m->sock_w);
	m->sock_w.fd = fd;
	rc = loop_fd_update(m->loop, &m->sock_w,
			    LOOP_READ | (mosquitto_want_write(m->mosq) ? LOOP_WRITE : 0));
	if (rc)
		log_error("output %s: cannot watch the broker connection: %s", output_name(m->o),
			  strerror(-rc));
}

static void schedule_reconnect(struct out_mqtt *m, const char *why)
{
	int64_t d;

	close_probe(m);
	free_addrs(m);
	loop_fd_del(m->loop, &m->sock_w);
	tls_bridge_reset(m->bridge);
	if (m->draining || m->state == CS_CLOSED) {
		m->state = CS_CLOSED;
		loop_timer_cancel(m->loop, &m->conn_timer);
		output_set_connected(m->o, false, why);
		return;
	}
	m->state = CS_WAIT;
	output_set_connected(m->o, false, why);
	if (strcmp(why, m->logged_why)) {
		log_warn("output %s: %s", output_name(m->o), why);
		snprintf(m->logged_why, sizeof(m->logged_why), "%s", why);
	}
	d = backoff_delay(m->conf->reconnect_base_ms, m->conf->reconnect_max_ms, m->attempt);
	/* No broker answered (refused, unreachable, no answer to the TCP
	 * connect): the next attempt begins with a TCP connect, so it is the
	 * cheap probe of the core's retry_probe and comes at least that often.
	 * A broker that answered (a refused CONNACK, a failed handshake, a
	 * dropped connection) waits for the full backoff. */
	if (m->unreachable && output_retry_probe_ms(m->o) > 0 && d > output_retry_probe_ms(m->o))
		d = output_retry_probe_ms(m->o);
	m->unreachable = false;
	if (m->attempt < 32)
		m->attempt++;
	log_debug("output %s: next connection attempt in %" PRId64 " ms", output_name(m->o), d);
	loop_timer_set(m->loop, &m->conn_timer, d);
}

static void connect_failed(struct out_mqtt *m, int err)
{
	char why[sizeof(m->why)];

	if (err == ECONNREFUSED)
		snprintf(why, sizeof(why), "connection refused (is the broker running at %s?)",
			 m->hostport);
	else if (err == EHOSTUNREACH || err == ENETUNREACH)
		snprintf(why, sizeof(why), "broker %s is unreachable: %s (network down?)", m->hostport,
			 strerror(err));
	else
		snprintf(why, sizeof(why), "cannot connect to %s: %s", m->hostport, strerror(err));
	schedule_reconnect(m, why);
}

/* Let libmosquitto connect to addr: the broker's numeric address, or with
 * port 0 the TLS bridge's Unix socket. */
static void mosq_connect(struct out_mqtt *m, const char *addr, int port)
{
	mosquitto_property *props = NULL;
	int rc;

	if (m->v5 && m->conf->session_expiry_ms >= 1000 &&
	    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
					 (uint32_t)(m->conf->session_expiry_ms / 1000))) {
		connect_failed(m, ENOMEM);
		return;
	}
	m->why[0] = '\0';
	errno = 0;
	rc = mosquitto_connect_bind_v5(m->mosq, addr, port, (int)(m->conf->keepalive_ms / 1000),
				       NULL, props);
	mosquitto_property_free_all(&props);
	if (rc == MOSQ_ERR_ERRNO) {
		connect_failed(m, errno ? errno : EIO);
		return;
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		char why[sizeof(m->why)];

		snprintf(why, sizeof(why), "cannot connect to %s: %s", m->hostport,
			 mosquitto_strerror(rc));
		schedule_reconnect(m, why);
		return;
	}
	m->state = CS_CONNECTING;
	sync_watch(m);
}

/* The probe reached the broker: let libmosquitto connect to that address. */
static void mqtt_connect(struct out_mqtt *m, const struct addrinfo *ai)
{
	char addr[NI_MAXHOST];
	int rc;

	rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
	free_addrs(m);
	if (rc) {
		connect_failed(m, EINVAL);
		return;
	}
	mosq_connect(m, addr, m->port);
}

/* mqtts: the probe's connection becomes the TLS connection; the handshake
 * gets a connect_timeout of its own. */
static void start_tls(struct out_mqtt *m, int fd)
{
	char why[sizeof(m->why)];
	int rc;

	free_addrs(m);
	m->state = CS_HANDSHAKE;
	loop_timer_set(m->loop, &m->conn_timer, m->conf->connect_timeout_ms);
	rc = tls_bridge_start(m->bridge, fd);
	if (rc) {
		snprintf(why, sizeof(why), "TLS: cannot start a connection to %s: %s", m->hostport,
			 strerror(-rc));
		schedule_reconnect(m, why);
	}
}

/* Handshake outcome, or the end of a relayed connection. */
static void tls_cb(void *arg, int rc, const char *why)
{
	struct out_mqtt *m = arg;
	char w[sizeof(m->why)];

	if (m->state == CS_HANDSHAKE) {
		if (rc) {
			schedule_reconnect(m, why);
			return;
		}
		mosq_connect(m, tls_bridge_path(m->bridge), 0);
		if (m->state != CS_CONNECTING)
			return;
		rc = tls_bridge_attach(m->bridge);
		if (rc) {
			snprintf(w, sizeof(w), "TLS: cannot pass the connection to %s on: %s",
				 m->hostport, strerror(-rc));
			schedule_reconnect(m, w);
		}
		return;
	}
	/* libmosquitto sees its socket close next; on_disconnect says why. */
	if (rc && (m->state == CS_CONNECTING || m->state == CS_CONNECTED) && !m->why[0])
		snprintf(m->why, sizeof(m->why), "%s", why);
}

static void probe_next(struct out_mqtt *m)
{
	for (; m->ai_cur; m->ai_cur = m->ai_cur->ai_next) {
		const struct addrinfo *ai = m->ai_cur;
		int fd, rc;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			m->probe_err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			if (m->tls) {
				start_tls(m, fd);
				return;
			}
			close(fd);
			mqtt_connect(m, ai);
			return;
		}
		if (errno != EINPROGRESS) {
			m->probe_err = errno;
			close(fd);
			continue;
		}
		m->probe_w.fd = fd;
		m->probe_w.events = LOOP_WRITE;
		rc = loop_fd_add(m->loop, &m->probe_w);
		if (rc == 0)
			return;
		m->probe_err = -rc;
		close_probe(m);
	}
	/* No address took the TCP connect. */
	m->unreachable = true;
	connect_failed(m, m->probe_err ? m->probe_err : EHOSTUNREACH);
}

static void probe_cb(struct loop_fd *w, unsigned revents)
{
	struct out_mqtt *m = container_of(w, struct out_mqtt, probe_w);
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (!err && m->tls) {
		int fd = w->fd;

		loop_fd_del(m->loop, w);
		w->fd = -1;
		start_tls(m, fd);
		return;
	}
	close_probe(m);
	if (!err) {
		mqtt_connect(m, m->ai_cur);
		return;
	}
	/* Try the host's next address, as libmosquitto would. */
	m->probe_err = err;
	m->ai_cur = m->ai_cur->ai_next;
	probe_next(m);
}

static void begin_connect(struct out_mqtt *m)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	char port[8], why[sizeof(m->why)];
	int rc;

	snprintf(port, sizeof(port), "%d", m->port);
	free_addrs(m);
	rc = getaddrinfo(m->host, port, &hints, &m->ai_list);
	if (rc) {
		m->ai_list = NULL;
		snprintf(why, sizeof(why), "cannot resolve the broker host '%s': %s", m->host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		m->unreachable = true;
		schedule_reconnect(m, why);
		return;
	}
	m->ai_cur = m->ai_list;
	m->probe_err = 0;
	m->state = CS_PROBING;
	loop_timer_set(m->loop, &m->conn_timer, m->conf->connect_timeout_ms);
	probe_next(m);
}

static int64_t conn_timer_cb(struct loop_timer *t)
{
	struct out_mqtt *m = container_of(t, struct out_mqtt, conn_timer);
	char why[sizeof(m->why)], dur[32];

	switch (m->state) {
	case CS_WAIT:
		begin_connect(m);
		break;
	case CS_PROBING:
		snprintf(why, sizeof(why), "no answer from %s within %s (network down or port "
			 "filtered?)", m->hostport, fmt_ms(dur, sizeof(dur), m->conf->connect_timeout_ms));
		m->unreachable = true;
		schedule_reconnect(m, why);
		break;
	case CS_HANDSHAKE:
		snprintf(why, sizeof(why), "TLS: no handshake with %s within %s (is it a TLS "
			 "listener?)", m->hostport, fmt_ms(dur, sizeof(dur),
							   m->conf->connect_timeout_ms));
		schedule_reconnect(m, why);
		break;
	case CS_CONNECTING:
		/* The socket stays open until the next attempt, which makes
		 * libmosquitto close it; nothing reads it meanwhile. */
		snprintf(why, sizeof(why), "broker at %s did not answer CONNECT within %s",
			 m->hostport, fmt_ms(dur, sizeof(dur), m->conf->connect_timeout_ms));
		schedule_reconnect(m, why);
		break;
	default:
		break;
	}
	return -1;
}

/* ---- libmosquitto callbacks ------------------------------------------- */

static void connack_failed(struct out_mqtt *m, int rc)
{
	const char *s = m->v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc);
	bool auth = m->v5 ? rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD || rc == MQTT_RC_NOT_AUTHORIZED
			  : rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD ||
				    rc == CONNACK_REFUSED_NOT_AUTHORIZED;
	bool proto = m->v5 ? rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION
			   : rc == CONNACK_REFUSED_PROTOCOL_VERSION;
	bool id = m->v5 ? rc == MQTT_RC_CLIENTID_NOT_VALID
			: rc == CONNACK_REFUSED_IDENTIFIER_REJECTED;

	if (auth)
		snprintf(m->why, sizeof(m->why), "not authorised (check username/password_file): "
			 "broker said \"%s\"", s);
	else if (proto)
		snprintf(m->why, sizeof(m->why), "broker refused the connection: %s (try protocol = %s)",
			 s, m->v5 ? "v311" : "v5");
	else if (id)
		snprintf(m->why, sizeof(m->why), "broker refused client_id '%s': %s", m->client_id, s);
	else
		snprintf(m->why, sizeof(m->why), "broker refused the connection: %s", s);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
		       const mosquitto_property *props)
{
	struct out_mqtt *m = obj;
	int64_t now = loop_now_ms();
	uint16_t rm;
	uint32_t mp;

	if (rc) {
		/* libmosquitto closes the connection next and calls on_disconnect,
		 * which reports this reason. */
		connack_failed(m, rc);
		return;
	}
	loop_timer_cancel(m->loop, &m->conn_timer);
	m->state = CS_CONNECTED;
	m->attempt = 0;
	m->why[0] = m->logged_why[0] = '\0';
	m->recv_max = m->v5 ? 65535 : V311_WINDOW;
	m->broker_max_packet = 0;
	if (m->v5 && mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &rm, false))
		m->recv_max = rm ? rm : 1;
	if (m->v5 && mosquitto_property_read_int32(props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &mp, false))
		m->broker_max_packet = mp;
	/* libmosquitto resends the pending publishes right after this call:
	 * their ack clock starts again. */
	for (size_t i = 0; i < m->npend; i++)
		m->pend[i].sent_ms = now;
	log_debug("output %s: CONNACK from %s: session %s, receive maximum %u, maximum packet "
		  "size %" PRIu32 ", %zu publishes to resend", output_name(m->o), m->hostport,
		  flags & 1 ? "resumed" : "new", m->recv_max, m->broker_max_packet, m->npend);
	output_set_connected(m->o, true, NULL);
	if (m->draining)
		publish_status(m, "offline", "shutdown");
	else
		publish_status(m, "online", NULL);
	output_kick(m->o);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
			  const mosquitto_property *props)
{
	struct out_mqtt *m = obj;
	char why[sizeof(m->why)];

	loop_fd_del(m->loop, &m->sock_w);
	if (m->state != CS_CONNECTING && m->state != CS_CONNECTED)
		return;
	if (m->why[0])
		snprintf(why, sizeof(why), "%s", m->why);
	else if (rc >= 0x80)
		/* A v5 DISCONNECT from the broker: rc is its reason code. */
		snprintf(why, sizeof(why), "broker closed the connection: %s%s",
			 mosquitto_reason_string(rc), rc == MQTT_RC_SESSION_TAKEN_OVER ?
			 " (another client connected with the same client_id)" : "");
	else if (rc == MOSQ_ERR_KEEPALIVE)
		snprintf(why, sizeof(why), "broker at %s stopped answering (keepalive expired)",
			 m->hostport);
	else if (rc == MOSQ_ERR_ERRNO)
		snprintf(why, sizeof(why), "connection to %s lost: %s", m->hostport,
			 errno ? strerror(errno) : "unknown error");
	else
		snprintf(why, sizeof(why), "connection to %s lost: %s", m->hostport,
			 mosquitto_strerror(rc));
	schedule_reconnect(m, why);
}

static bool publish_rejected(int reason)
{
	switch (reason) {
	case MQTT_RC_NOT_AUTHORIZED:
	case MQTT_RC_TOPIC_NAME_INVALID:
	case MQTT_RC_PAYLOAD_FORMAT_INVALID:
	case MQTT_RC_PACKET_TOO_LARGE:
		return true;
	default:
		return false;
	}
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
		       const mosquitto_property *props)
{
	struct out_mqtt *m = obj;
	ssize_t i = pend_find_mid(m, mid);
	struct batch *b;
	char why[WHY_LEN];

	if (i < 0)
		return;  /* a status message, or a batch already given up */
	b = pend_take(m, (size_t)i);
	/* v3.1.1 has no reason codes: any PUBACK means the broker has it. */
	if (!m->v5 || reason < 0x80) {
		output_batch_done(m->o, b, OUT_OK, NULL);
	} else if (publish_rejected(reason)) {
		snprintf(why, sizeof(why), "broker rejected publish: %s",
			 mosquitto_reason_string(reason));
		output_batch_done(m->o, b, OUT_REJECT, why);
	} else {
		/* Quota exceeded, unspecified and implementation-specific
		 * errors, and anything unknown, may pass. */
		snprintf(why, sizeof(why), "broker could not take publish: %s",
			 mosquitto_reason_string(reason));
		output_batch_done(m->o, b, OUT_RETRY, why);
	}
}

/* ---- loop callbacks --------------------------------------------------- */

static void sock_cb(struct loop_fd *w, unsigned revents)
{
	struct out_mqtt *m = container_of(w, struct out_mqtt, sock_w);

	/* Errors end in on_disconnect, which says why; the return codes add
	 * nothing. */
	if (revents & (LOOP_READ | LOOP_ERROR))
		mosquitto_loop_read(m->mosq, 1);
	if ((revents & LOOP_WRITE) && mosquitto_socket(m->mosq) >= 0 &&
	    (m->state == CS_CONNECTING || m->state == CS_CONNECTED))
		mosquitto_loop_write(m->mosq, 1);
	sync_watch(m);
}

/* Give up the batches without PUBACK for ack_timeout, then reconnect so
 * that libmosquitto's copies are dealt with too. */
static void check_ack_timeouts(struct out_mqtt *m)
{
	int64_t now = loop_now_ms();
	bool expired = false;
	char why[WHY_LEN], t[32];

	fmt_ms(t, sizeof(t), m->conf->ack_timeout_ms);
	snprintf(why, sizeof(why), "no PUBACK from %s within %s", m->hostport, t);
	for (size_t i = 0; i < m->npend;) {
		if (m->pend[i].mid && now - m->pend[i].sent_ms >= m->conf->ack_timeout_ms) {
			/* Taken out first: the core may call back into us. */
			output_batch_done(m->o, pend_take(m, i), OUT_RETRY, why);
			expired = true;
			i = 0;
			continue;
		}
		i++;
	}
	if (!expired || m->state != CS_CONNECTED)
		return;
	snprintf(m->why, sizeof(m->why), "no PUBACK from %s within %s; reconnecting", m->hostport,
		 t);
	loop_fd_del(m->loop, &m->sock_w);
	mosquitto_disconnect(m->mosq);
	/* Usually the DISCONNECT went out and on_disconnect ran; when the
	 * socket is full it did not, and the next attempt closes it. */
	if (m->state == CS_CONNECTED)
		schedule_reconnect(m, m->why);
}

static int64_t misc_timer_cb(struct loop_timer *t)
{
	struct out_mqtt *m = container_of(t, struct out_mqtt, misc_timer);

	if (m->state == CS_CONNECTING || m->state == CS_CONNECTED)
		mosquitto_loop_misc(m->mosq);
	if (m->state == CS_CONNECTED)
		check_ack_timeouts(m);
	sync_watch(m);
	return m->state == CS_CLOSED ? -1 : MISC_INTERVAL_MS;
}

static int64_t reject_timer_cb(struct loop_timer *t)
{
	struct out_mqtt *m = container_of(t, struct out_mqtt, reject_timer);
	char why[WHY_LEN];

	for (size_t i = 0; i < m->npend;) {
		if (m->pend[i].mid == 0) {
			struct batch *b = pend_take(m, i);

			snprintf(why, sizeof(why), "stream '%s' does not make a valid MQTT topic from '%s'",
				 b->stream, m->conf->topic);
			output_batch_done(m->o, b, OUT_REJECT, why);
			i = 0;
			continue;
		}
		i++;
	}
	return -1;
}

/* ---- the type --------------------------------------------------------- */

/* A libmosquitto client with its options, credentials and last will. It
 * is made again when libmosquitto holds on to a packet size limit that the
 * broker no longer announces (libmosquitto never clears it). */
static int make_handle(struct out_mqtt *m)
{
	const struct mqtt_conf *c = m->conf;
	const char *name = output_name(m->o);
	struct buf b = BUF_INIT;
	char *pw = NULL;
	int rc;

	m->mosq = mosquitto_new(m->client_id, false, m);
	if (!m->mosq) {
		rc = errno == EINVAL ? -EINVAL : -ENOMEM;
		goto out_destroy;
	}
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
			     m->v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);

	if (c->username) {
		if (c->password_file) {
			rc = secret_read(c->password_file, MAX_PASSWORD, &pw);
			if (rc) {
				log_error("output %s: cannot read password_file %s: %s", name,
					  c->password_file, secret_strerror(rc));
				goto out_destroy;
			}
		}
		rc = mosquitto_username_pw_set(m->mosq, c->username, pw);
		secret_free(pw);
		if (rc != MOSQ_ERR_SUCCESS) {
			log_error("output %s: username: %s", name, mosquitto_strerror(rc));
			rc = rc == MOSQ_ERR_NOMEM ? -ENOMEM : -EINVAL;
			goto out_destroy;
		}
	}
	if (m->status_topic) {
		buf_reset(&b);
		if (status_json(m, &b, "offline", "connection lost", false)) {
			rc = -ENOMEM;
			goto out_destroy;
		}
		rc = mosquitto_will_set_v5(m->mosq, m->status_topic, (int)b.len, b.p, 1, true, NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			log_error("output %s: last will: %s", name, mosquitto_strerror(rc));
			rc = rc == MOSQ_ERR_NOMEM ? -ENOMEM : -EINVAL;
			goto out_destroy;
		}
	}
	buf_release(&b);
	return 0;

out_destroy:
	buf_release(&b);
	mosquitto_destroy(m->mosq);
	m->mosq = NULL;
	return rc;
}

static int rebuild_handle(struct out_mqtt *m)
{
	struct mosquitto *old = m->mosq;
	int rc;

	m->mosq = NULL;
	rc = make_handle(m);
	if (rc) {
		m->mosq = old;
		log_error("output %s: cannot make a new MQTT client: %s", output_name(m->o),
			  strerror(-rc));
		return rc;
	}
	loop_fd_del(m->loop, &m->sock_w);
	mosquitto_disconnect(old);
	mosquitto_destroy(old);
	return 0;
}

static int mqtt_start(struct output *o, void **statep)
{
	const struct mqtt_conf *c = output_type_conf(o);
	const char *name = output_name(o), *agent = output_agent_id(o);
	struct out_mqtt *m;
	struct buf b = BUF_INIT;
	char err[256];
	int rc;

	*statep = NULL;
	m = xcalloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->o = o;
	m->conf = c;
	m->loop = output_loop(o);
	m->v5 = c->protocol == PROTO_V5;
	m->probe_w.fd = -1;
	m->probe_w.cb = probe_cb;
	m->sock_w.fd = -1;
	m->sock_w.cb = sock_cb;
	m->conn_timer.cb = conn_timer_cb;
	m->misc_timer.cb = misc_timer_cb;
	m->reject_timer.cb = reject_timer_cb;
	m->recv_max = m->v5 ? 65535 : V311_WINDOW;
	parse_url(c->url, m->host, sizeof(m->host), &m->port, &m->tls, err, sizeof(err));
	snprintf(m->hostport, sizeof(m->hostport), strchr(m->host, ':') ? "[%s]:%d" : "%s:%d",
		 m->host, m->port);

	rc = -ENOMEM;
	if (c->client_id)
		m->client_id = xstrdup(c->client_id);
	else if (!buf_printf(&b, "%s-%s", agent, name))
		m->client_id = xstrdup(b.p);
	if (!m->client_id)
		goto out_free;
	if (c->status_topic && *c->status_topic) {
		if (expand_topic(&b, c->status_topic, agent, name, NULL))
			goto out_free;
		m->status_topic = xstrdup(b.p);
		if (!m->status_topic)
			goto out_free;
	}

	if (!lib_ready) {
		if (mosquitto_lib_init() != MOSQ_ERR_SUCCESS) {
			rc = -EIO;
			goto out_free;
		}
		lib_ready = true;
	}
	if (m->tls) {
		struct tls_bridge_conf tc = {
			.ca_file = c->ca_file,
			.client_cert = c->client_cert,
			.client_key = c->client_key,
			.server_name = c->tls_server_name ? c->tls_server_name : m->host,
			.label = m->hostport,
		};

		rc = tls_bridge_new(m->loop, &tc, tls_cb, m, &m->bridge, err, sizeof(err));
		if (rc) {
			log_error("output %s: %s", name, err);
			goto out_free;
		}
	}
	rc = make_handle(m);
	if (rc)
		goto out_free;
	buf_release(&b);

	snprintf(err, sizeof(err), "connecting to %s", c->url);
	output_set_connected(o, false, err);
	m->state = CS_WAIT;
	loop_timer_set(m->loop, &m->conn_timer, 0);
	loop_timer_set(m->loop, &m->misc_timer, MISC_INTERVAL_MS);
	*statep = m;
	return 0;

out_free:
	buf_release(&b);
	if (m->mosq)
		mosquitto_destroy(m->mosq);
	tls_bridge_free(m->bridge);
	xfree(m->status_topic);
	xfree(m->client_id);
	xfree(m);
	return rc;
}

static bool mqtt_ready(void *state)
{
	struct out_mqtt *m = state;

	return m && m->state == CS_CONNECTED && !m->draining && m->npend < m->recv_max &&
	       m->npend < 65535;
}

static size_t varint_len(size_t n)
{
	return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

/* Add a v5 user property and count its encoded length. */
static int add_user_prop(mosquitto_property **props, size_t *len, const char *k, const char *v)
{
	*len += 1 + 2 + strlen(k) + 2 + strlen(v);
	return mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, k, v);
}

static int mqtt_send(void *state, struct batch *b)
{
	struct out_mqtt *m = state;
	const char *enc = b->encoding ? b->encoding : "ndjson+zstd";
	const char *agent = output_agent_id(m->o);
	mosquitto_property *props = NULL;
	size_t props_len = 0, remaining, total, limit;
	char first[24], last[24], count[24];
	const char *ctype;
	int rc, mid = 0;

	if (m->state != CS_CONNECTED || m->draining)
		return -EAGAIN;
	rc = expand_topic(&m->topic, m->conf->topic, agent, output_name(m->o), b->stream);
	if (rc == -ENOMEM)
		return rc;
	if (rc || !m->topic.len || m->topic.len > 65535 ||
	    mosquitto_validate_utf8(m->topic.p, (int)m->topic.len) != MOSQ_ERR_SUCCESS ||
	    mosquitto_pub_topic_check(m->topic.p) != MOSQ_ERR_SUCCESS) {
		/* Sending it again would fail again: reject it, after send()
		 * has returned as the core expects. */
		if (pend_add(m, b, 0))
			return -ENOMEM;
		loop_timer_set(m->loop, &m->reject_timer, 0);
		return 0;
	}

	if (m->v5) {
		snprintf(first, sizeof(first), "%" PRId64, b->first_seq);
		snprintf(last, sizeof(last), "%" PRId64, b->last_seq);
		snprintf(count, sizeof(count), "%" PRId64, b->count);
		rc = add_user_prop(&props, &props_len, "batch_id", b->id);
		rc = rc ? rc : add_user_prop(&props, &props_len, "first_seq", first);
		rc = rc ? rc : add_user_prop(&props, &props_len, "last_seq", last);
		rc = rc ? rc : add_user_prop(&props, &props_len, "count", count);
		rc = rc ? rc : add_user_prop(&props, &props_len, "encoding", enc);
		rc = rc ? rc : add_user_prop(&props, &props_len, "agent", agent);
		rc = rc ? rc : add_user_prop(&props, &props_len, "stream", b->stream);
		/* The Content Type describes the payload's bytes, which are a
		 * zstd frame (RFC 8878's application/zstd) unless the encoding
		 * says they are plain NDJSON; what is inside the frame is in
		 * the encoding property. */
		ctype = strstr(enc, "zstd") ? "application/zstd" : "application/x-ndjson";
		props_len += 1 + 2 + strlen(ctype);
		rc = rc ? rc : mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, ctype);
		if (rc) {
			mosquitto_property_free_all(&props);
			return -ENOMEM;
		}
	}

	/* PUBLISH: topic, packet id, properties (v5), payload. */
	remaining = 2 + m->topic.len + 2 + b->body_len;
	if (m->v5)
		remaining += varint_len(props_len) + props_len;
	total = 1 + varint_len(remaining) + remaining;
	limit = m->broker_max_packet;
	if (m->conf->max_packet_size > 0 && (!limit || (size_t)m->conf->max_packet_size < limit))
		limit = (size_t)m->conf->max_packet_size;
	if (remaining > MQTT_MAX_REMAINING || (limit && total > limit)) {
		mosquitto_property_free_all(&props);
		return -EMSGSIZE;
	}

	rc = mosquitto_publish_v5(m->mosq, &mid, m->topic.p, (int)b->body_len, b->body, 1, false,
				  props);
	mosquitto_property_free_all(&props);
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
	case MOSQ_ERR_NO_CONN:
		/* With NO_CONN the message is already in libmosquitto's queue
		 * and goes out after the reconnect, so it is pending all the
		 * same. */
		break;
	case MOSQ_ERR_PAYLOAD_SIZE:
		return -EMSGSIZE;
	case MOSQ_ERR_OVERSIZE_PACKET:
		/* The size checks above passed against what the broker
		 * announces now, so libmosquitto still applies a limit from
		 * an earlier connection: rebuild the client once nothing is
		 * pending on it, and have the core try again meanwhile. */
		if (!m->npend && rebuild_handle(m) == 0)
			schedule_reconnect(m, "reconnecting: the broker's packet size limit changed");
		return -EAGAIN;
	case MOSQ_ERR_NOMEM:
		return -ENOMEM;
	default:
		log_warn("output %s: publish: %s", output_name(m->o), mosquitto_strerror(rc));
		return -EIO;
	}
	if (pend_add(m, b, mid)) {
		/* Its PUBACK will match nothing; the core resends it later. */
		return -ENOMEM;
	}
	sync_watch(m);
	return 0;
}

static const char *mqtt_client_cert(const void *conf)
{
	return ((const struct mqtt_conf *)conf)->client_cert;
}

static void mqtt_describe(void *state, char *out, size_t len)
{
	struct out_mqtt *m = state;
	struct buf t = BUF_INIT;
	const char *topic = m->conf->topic;

	if (!expand_topic(&t, m->conf->topic, output_agent_id(m->o), output_name(m->o), "{stream}"))
		topic = t.p;
	snprintf(out, len, "%s://%s %s qos1 topic %s", m->tls ? "mqtts" : "mqtt", m->hostport, m->v5 ? "v5" : "v311", topic);
	buf_release(&t);
}

static int64_t mqtt_next_attempt(void *state)
{
	struct out_mqtt *m = state;
	int64_t now = loop_now_ms();

	if (m->state != CS_WAIT || !m->conn_timer.armed)
		return -1;
	return m->conn_timer.due > now ? m->conn_timer.due - now : 0;
}

/* After this, batches still unacknowledged get no outcome: their records are
 * still queued and are sent again after the next start. */
static void finish_drain(struct out_mqtt *m)
{
	bool live = m->state == CS_CONNECTING || m->state == CS_CONNECTED;

	m->state = CS_CLOSED;
	loop_timer_cancel(m->loop, &m->conn_timer);
	loop_timer_cancel(m->loop, &m->misc_timer);
	loop_timer_cancel(m->loop, &m->reject_timer);
	close_probe(m);
	free_addrs(m);
	loop_fd_del(m->loop, &m->sock_w);
	/* A live TLS connection stays up to carry the DISCONNECT. */
	if (!live)
		tls_bridge_reset(m->bridge);
	if (live && mosquitto_socket(m->mosq) >= 0) {
		/* A clean DISCONNECT: the broker drops the last will, the
		 * offline status having been published already. */
		mosquitto_disconnect(m->mosq);
		if (mosquitto_socket(m->mosq) >= 0)
			mosquitto_loop_write(m->mosq, 1);
	}
	m->npend = 0;
	m->drained = true;
	output_set_connected(m->o, false, "stopped");
}

static bool mqtt_drain(void *state, int64_t deadline_ms)
{
	struct out_mqtt *m = state;

	if (!m || m->drained)
		return true;
	if (!m->draining) {
		m->draining = true;
		if (m->state == CS_CONNECTED) {
			publish_status(m, "offline", "shutdown");
			sync_watch(m);
		}
	}
	if ((m->state == CS_CONNECTED || m->state == CS_CONNECTING) && m->npend &&
	    loop_now_ms() < deadline_ms)
		return false;
	finish_drain(m);
	return true;
}

static void mqtt_stop(void *state)
{
	struct out_mqtt *m = state;

	if (!m)
		return;
	m->state = CS_CLOSED;
	loop_timer_cancel(m->loop, &m->conn_timer);
	loop_timer_cancel(m->loop, &m->misc_timer);
	loop_timer_cancel(m->loop, &m->reject_timer);
	close_probe(m);
	free_addrs(m);
	loop_fd_del(m->loop, &m->sock_w);
	/* Without a DISCONNECT first, the broker publishes the last will. */
	mosquitto_destroy(m->mosq);
	tls_bridge_free(m->bridge);
	buf_release(&m->topic);
	xfree(m->pend);
	xfree(m->status_topic);
	xfree(m->client_id);
	xfree(m);
}

const struct output_type out_mqtt = {
	.version = OUTPUT_VERSION,
	.name = "mqtt",
	.help = "Publishes each batch as one MQTT message with QoS 1 (at least once) to a broker; a "
		"batch counts as delivered when the broker acknowledges it (PUBACK).",
	.conf_keys = mqtt_keys,
	.conf_size = sizeof(struct mqtt_conf),
	.validate = mqtt_validate,
	.start = mqtt_start,
	.ready = mqtt_ready,
	.send = mqtt_send,
	.describe = mqtt_describe,
	.next_attempt_ms = mqtt_next_attempt,
	.client_cert = mqtt_client_cert,
	.drain = mqtt_drain,
	.stop = mqtt_stop,
};
