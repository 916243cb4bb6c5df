/* out_mqtt.c - the mqtt output type: each batch becomes one QoS 1 PUBLISH
 * sent through libmosquitto, which is driven only from the agent's event loop
 * (its socket as an fd watch, mosquitto_loop_misc from a timer).
 *
 * Connecting is mqtt_conn.c's: a non-blocking TCP connect of its own to
 * the broker (the probe), bounded by connect_timeout, and for mqtts the TLS
 * bridge. Once the probe has succeeded, libmosquitto connects to the same
 * numeric address (or, for mqtts, to the bridge's Unix socket, port 0), so
 * that mosquitto_connect_bind_v5(), the only call of libmosquitto 2.0 that
 * sends CONNECT properties (the Session Expiry Interval) and whose TCP
 * connect blocks, costs one round trip instead of hanging for minutes on a
 * host that drops packets. The probe is closed at once; the broker only logs
 * a client that left before CONNECT.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "mqtt_conn.h"
#include "output.h"

#define MQTT_MAX_REMAINING 268435455u  /* largest Remaining Length MQTT encodes */
/* libmosquitto's default send maximum: the window for v3.1.1, where the
 * broker announces none. */
#define V311_WINDOW 20
#define MISC_INTERVAL_MS 1000
#define WHY_LEN 512

enum { PROTO_V5, PROTO_V311 };

struct mqtt_conf {
	struct mqtt_conn_conf conn;  /* url, credentials, TLS, timeouts, backoff */
	int protocol;
	char *client_id;
	char *topic;
	int64_t session_expiry_ms;
	char *status_topic;
	int64_t ack_timeout_ms;
	int64_t max_packet_size;
};

static const char *const protocol_names[] = { "v5", "v311", NULL };

#define MK(f) .offset = offsetof(struct mqtt_conf, f)
static const struct cfg_key mqtt_keys[] = {
	MQTT_CONN_KEY_URL(struct mqtt_conf, "mqtt://127.0.0.1:1883")
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
	MQTT_CONN_KEY_KEEPALIVE(struct mqtt_conf)
	{ .name = "session_expiry", .type = CFG_DURATION, .def = "1h", MK(session_expiry_ms),
	  .min = 0, .max = 4294967295000LL,
	  .help = "v5: how long the broker keeps this client's session after a disconnect (the client "
		  "connects with Clean Start off). Unacknowledged batches are sent again after a "
		  "reconnect either way." },
	MQTT_CONN_KEYS_AUTH(struct mqtt_conf)
	{ .name = "status_topic", .type = CFG_STR, .def = "agents/{agent}/status", MK(status_topic),
	  .help = "Topic of a retained status message: {\"status\":\"online\",...} after each connect, "
		  "and {\"status\":\"offline\",...} on shutdown or, as the last will, published by the "
		  "broker when the connection is lost. {agent} and {output} are replaced; empty "
		  "disables status messages." },
	MQTT_CONN_KEYS_RECONNECT(struct mqtt_conf)
	{ .name = "ack_timeout", .type = CFG_DURATION, .def = "60s", MK(ack_timeout_ms),
	  .min = 500, .max = 86400000,
	  .help = "A batch the broker has not acknowledged (PUBACK) this long on a live connection is "
		  "sent again and the connection re-established." },
	{ .name = "max_packet_size", .type = CFG_SIZE, .def = "0", MK(max_packet_size),
	  .min = 0, .max = 268435460,
	  .help = "Largest MQTT packet sent; a larger batch is split. 0: the limit the broker "
		  "announces (v5) or none. Set it for a v311 broker with a limit: such a broker drops "
		  "the connection instead of refusing the message." },
	MQTT_CONN_KEYS_TLS(struct mqtt_conf)
	{ .name = NULL },
};

enum conn_state {
	CS_WAIT,       /* not connected; the connection module is at work */
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
	struct mqtt_conn *conn;
	char *client_id;
	char *status_topic;     /* expanded; NULL when status messages are off */
	struct buf topic;       /* scratch for send() */
	enum conn_state state;
	bool draining, drained;
	char why[WHY_LEN];          /* known cause of the current failure, if any */
	struct loop_fd sock_w;
	struct loop_timer misc_timer;   /* keepalive and ack timeouts */
	struct loop_timer reject_timer; /* outcomes decided inside send() */
	unsigned recv_max;              /* the broker's Receive Maximum */
	uint32_t broker_max_packet;     /* 0: not announced */
	struct pending *pend;
	size_t npend, cap;
};

static bool lib_ready;

/* ---- configuration ---------------------------------------------------- */

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
	int rc;

	rc = mqtt_conn_validate(&c->conn, err, errlen);
	if (rc)
		return rc;
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

/* The session failed: the connection module reconnects after its backoff,
 * or, while draining, no more. */
static void session_failed(struct out_mqtt *m, const char *why)
{
	if (m->draining)
		mqtt_conn_close(m->conn);
	mqtt_conn_failed(m->conn, why, false);
}

/* Let libmosquitto connect to addr: the broker's numeric address, or with
 * port 0 the TLS bridge's Unix socket. */
static void mosq_connect(struct out_mqtt *m, const char *addr, int port)
{
	mosquitto_property *props = NULL;
	char why[sizeof(m->why)];
	int rc;

	if (m->v5 && m->conf->session_expiry_ms >= 1000 &&
	    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
					 (uint32_t)(m->conf->session_expiry_ms / 1000))) {
		session_failed(m, mqtt_conn_strerror(m->conn, ENOMEM, why, sizeof(why)));
		return;
	}
	m->why[0] = '\0';
	errno = 0;
	rc = mosquitto_connect_bind_v5(m->mosq, addr, port,
				       (int)(m->conf->conn.keepalive_ms / 1000), NULL, props);
	mosquitto_property_free_all(&props);
	if (rc == MOSQ_ERR_ERRNO) {
		session_failed(m, mqtt_conn_strerror(m->conn, errno ? errno : EIO, why,
						     sizeof(why)));
		return;
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(why, sizeof(why), "cannot connect to %s: %s", mqtt_conn_hostport(m->conn),
			 mosquitto_strerror(rc));
		session_failed(m, why);
		return;
	}
	m->state = CS_CONNECTING;
	sync_watch(m);
}

/* The probe reached the broker (fd, closed here: libmosquitto makes a
 * connection of its own to that address), or for mqtts the TLS handshake
 * is done and the bridge listens at addr. */
static void conn_ready(struct mqtt_conn *c, void *arg, int fd, const char *addr, int port)
{
	struct out_mqtt *m = arg;

	if (fd >= 0)
		close(fd);
	mosq_connect(m, addr, port);
	if (mqtt_conn_is_tls(c) && m->state == CS_CONNECTING)
		mqtt_conn_attach(c);
}

/* A TLS error on the relayed connection: libmosquitto sees its socket close
 * next, and on_disconnect says why with this. */
static void conn_lost(struct mqtt_conn *c, void *arg, const char *why)
{
	struct out_mqtt *m = arg;

	if ((m->state == CS_CONNECTING || m->state == CS_CONNECTED) && !m->why[0])
		snprintf(m->why, sizeof(m->why), "%s", why);
}

/* No CONNACK within connect_timeout. The socket stays open until the next
 * attempt, which makes libmosquitto close it; nothing reads it meanwhile. */
static void conn_timeout(struct mqtt_conn *c, void *arg, const char *why)
{
	session_failed(arg, why);
}

static void conn_status(struct mqtt_conn *c, void *arg, bool connected, const char *why)
{
	struct out_mqtt *m = arg;

	if (!connected) {
		loop_fd_del(m->loop, &m->sock_w);
		m->state = m->draining || m->state == CS_CLOSED ? CS_CLOSED : CS_WAIT;
	}
	output_set_connected(m->o, connected, why);
}

static const struct mqtt_conn_ops conn_ops = {
	.ready = conn_ready,
	.lost = conn_lost,
	.timeout = conn_timeout,
	.status = conn_status,
};

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
	m->state = CS_CONNECTED;
	m->why[0] = '\0';
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
		  "size %" PRIu32 ", %zu publishes to resend", output_name(m->o),
		  mqtt_conn_hostport(m->conn), flags & 1 ? "resumed" : "new", m->recv_max, m->broker_max_packet, m->npend);
	mqtt_conn_connected(m->conn);
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
			 mqtt_conn_hostport(m->conn));
	else if (rc == MOSQ_ERR_ERRNO)
		snprintf(why, sizeof(why), "connection to %s lost: %s", mqtt_conn_hostport(m->conn),
			 errno ? strerror(errno) : "unknown error");
	else
		snprintf(why, sizeof(why), "connection to %s lost: %s", mqtt_conn_hostport(m->conn),
			 mosquitto_strerror(rc));
	session_failed(m, why);
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

	mqtt_conn_fmt_ms(t, sizeof(t), m->conf->ack_timeout_ms);
	snprintf(why, sizeof(why), "no PUBACK from %s within %s", mqtt_conn_hostport(m->conn), t);
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
	snprintf(m->why, sizeof(m->why), "no PUBACK from %s within %s; reconnecting", mqtt_conn_hostport(m->conn),
		 t);
	loop_fd_del(m->loop, &m->sock_w);
	mosquitto_disconnect(m->mosq);
	/* Usually the DISCONNECT went out and on_disconnect ran; when the
	 * socket is full it did not, and the next attempt closes it. */
	if (m->state == CS_CONNECTED)
		session_failed(m, m->why);
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
	const char *name = output_name(m->o);
	struct buf b = BUF_INIT;
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

	if (mqtt_conn_username(m->conn)) {
		rc = mosquitto_username_pw_set(m->mosq, mqtt_conn_username(m->conn),
					       mqtt_conn_password(m->conn, NULL));
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
	m->sock_w.fd = -1;
	m->sock_w.cb = sock_cb;
	m->misc_timer.cb = misc_timer_cb;
	m->reject_timer.cb = reject_timer_cb;
	m->recv_max = m->v5 ? 65535 : V311_WINDOW;

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
	buf_reset(&b);
	if (buf_printf(&b, "output %s", name)) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = mqtt_conn_new(m->loop, &c->conn, b.p, &conn_ops, m, &m->conn, err, sizeof(err));
	if (rc) {
		log_error("output %s: %s", name, err);
		goto out_free;
	}
	mqtt_conn_set_probe_cap(m->conn, output_retry_probe_ms(o));
	rc = make_handle(m);
	if (rc)
		goto out_free;
	buf_release(&b);

	m->state = CS_WAIT;
	mqtt_conn_start(m->conn, 0);
	loop_timer_set(m->loop, &m->misc_timer, MISC_INTERVAL_MS);
	*statep = m;
	return 0;

out_free:
	buf_release(&b);
	if (m->mosq)
		mosquitto_destroy(m->mosq);
	mqtt_conn_free(m->conn);
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
			session_failed(m, "reconnecting: the broker's packet size limit changed");
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
	return ((const struct mqtt_conf *)conf)->conn.client_cert;
}

static void mqtt_describe(void *state, char *out, size_t len)
{
	struct out_mqtt *m = state;
	struct buf t = BUF_INIT;
	const char *topic = m->conf->topic;

	if (!expand_topic(&t, m->conf->topic, output_agent_id(m->o), output_name(m->o), "{stream}"))
		topic = t.p;
	snprintf(out, len, "%s://%s %s qos1 topic %s", mqtt_conn_is_tls(m->conn) ? "mqtts" : "mqtt", mqtt_conn_hostport(m->conn), m->v5 ? "v5" : "v311", topic);
	buf_release(&t);
}

static int64_t mqtt_next_attempt(void *state)
{
	struct out_mqtt *m = state;

	return mqtt_conn_next_attempt_ms(m->conn);
}

/* After this, batches still unacknowledged get no outcome: their records are
 * still queued and are sent again after the next start. */
static void finish_drain(struct out_mqtt *m)
{
	bool live = m->state == CS_CONNECTING || m->state == CS_CONNECTED;

	m->state = CS_CLOSED;
	loop_timer_cancel(m->loop, &m->misc_timer);
	loop_timer_cancel(m->loop, &m->reject_timer);
	/* A live TLS connection stays up to carry the DISCONNECT. */
	mqtt_conn_close(m->conn);
	loop_fd_del(m->loop, &m->sock_w);
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
	loop_timer_cancel(m->loop, &m->misc_timer);
	loop_timer_cancel(m->loop, &m->reject_timer);
	loop_fd_del(m->loop, &m->sock_w);
	/* Without a DISCONNECT first, the broker publishes the last will. */
	mosquitto_destroy(m->mosq);
	mqtt_conn_free(m->conn);
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
