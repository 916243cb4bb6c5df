/* mqtt_client.c - the agent's own MQTT session on the loop (mqtt_client.h).
 *
 * States: CONNACK_WAIT (CONNECT sent) -> SUBACK_WAIT (SUBSCRIBE sent) -> UP,
 * bounded together by connect_timeout; any failure closes the socket and
 * reports closed(why). Inbound QoS 1/2 packet ids have a state of their
 * own (one byte per id, so every check is O(1)): waiting for the user's
 * acknowledgement, PUBREC sent, PUBREL received. The state belongs to one
 * connection: a new one starts empty, since the broker sends again what was
 * not acknowledged.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "log.h"
#include "mem.h"
#include "mqtt_client.h"

#define READ_CHUNK 16384
#define MAX_OUT_BYTES (8u << 20)   /* unsent bytes before the connection is dropped */

enum cstate { CS_IDLE, CS_CONNACK_WAIT, CS_SUBACK_WAIT, CS_UP };
/* Per inbound packet id. */
enum { ID_FREE, ID_ACK_WAIT1, ID_ACK_WAIT2, ID_REL_WAIT, ID_COMP_WAIT };

struct mqtt_client {
	struct loop *l;
	struct mqtt_client_conf conf;
	const struct mqtt_client_ops *ops;
	void *arg;
	struct loop_fd w;
	struct loop_timer connect_timer, ping_timer;
	enum cstate st;
	uint32_t gen;
	struct buf in, out;
	size_t out_off;
	uint8_t *ids;               /* 65536 inbound id states */
	unsigned inflight;
	uint8_t *out_ids;           /* 65536 bits: our QoS 1 publishes in flight */
	unsigned out_inflight;
	uint64_t over_window;       /* messages beyond receive_maximum */
	uint16_t next_out_id, sub_id;
	uint16_t send_max;          /* broker's receive maximum */
	uint32_t broker_max_packet;
	int64_t keepalive_ms, last_tx_ms, ping_sent_ms;
	char assigned[256];
	bool session_present, dropped;
};

static void set_id(struct mqtt_client *c, uint16_t id, uint8_t s)
{
	if (c->ids[id] == ID_FREE && s != ID_FREE)
		c->inflight++;
	else if (c->ids[id] != ID_FREE && s == ID_FREE)
		c->inflight--;
	c->ids[id] = s;
}

static void reset_session(struct mqtt_client *c)
{
	memset(c->ids, 0, 65536);
	memset(c->out_ids, 0, 65536 / 8);
	c->inflight = c->out_inflight = 0;
	buf_reset(&c->in);
	buf_reset(&c->out);
	c->out_off = 0;
	c->ping_sent_ms = 0;
	c->assigned[0] = '\0';
}

static void close_fd(struct mqtt_client *c)
{
	loop_timer_cancel(c->l, &c->connect_timer);
	loop_timer_cancel(c->l, &c->ping_timer);
	if (c->w.fd >= 0) {
		loop_fd_del(c->l, &c->w);
		close(c->w.fd);
		c->w.fd = -1;
	}
	c->st = CS_IDLE;
	reset_session(c);
}

/* The connection failed: close it and tell the user (once). */
static void drop(struct mqtt_client *c, const char *why)
{
	if (c->st == CS_IDLE)
		return;
	close_fd(c);
	c->dropped = true;
	if (c->ops->closed)
		c->ops->closed(c, c->arg, why);
}

static void flush(struct mqtt_client *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = write(c->w.fd, c->out.p + c->out_off, c->out.len - c->out_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			char why[128];

			snprintf(why, sizeof(why), "write to the broker failed: %s",
				 n < 0 ? strerror(errno) : "nothing written");
			drop(c, why);
			return;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len) {
		buf_reset(&c->out);
		c->out_off = 0;
	}
	loop_fd_update(c->l, &c->w, LOOP_READ | (c->out.len ? LOOP_WRITE : 0));
}

/* A packet was appended to c->out: send what the socket takes now. */
static int sent(struct mqtt_client *c, int rc)
{
	if (rc)
		return rc;
	c->last_tx_ms = loop_now_ms();
	if (c->out.len - c->out_off > MAX_OUT_BYTES) {
		drop(c, "the broker does not read what is sent to it");
		return -ENOTCONN;
	}
	flush(c);
	return c->st == CS_IDLE ? -ENOTCONN : 0;
}

/* A protocol violation: v5 says why in a DISCONNECT before closing. */
static void violation(struct mqtt_client *c, uint8_t reason, const char *what)
{
	char why[300];

	if (c->conf.version == MQTT_V5 && c->w.fd >= 0) {
		buf_reset(&c->out);
		c->out_off = 0;
		if (!mqtt_encode_disconnect(&c->out, MQTT_V5, reason))
			(void)!write(c->w.fd, c->out.p, c->out.len);
	}
	snprintf(why, sizeof(why), "broker sent a bad packet: %s", what);
	drop(c, why);
}

static int64_t ping_cb(struct loop_timer *t)
{
	struct mqtt_client *c = container_of(t, struct mqtt_client, ping_timer);
	int64_t now = loop_now_ms();

	if (c->st == CS_IDLE || !c->keepalive_ms)
		return -1;
	if (c->ping_sent_ms && now - c->ping_sent_ms >= c->keepalive_ms) {
		drop(c, "no PINGRESP from the broker within keepalive");
		return -1;
	}
	if (!c->ping_sent_ms && now - c->last_tx_ms >= c->keepalive_ms) {
		c->ping_sent_ms = now;
		if (sent(c, mqtt_encode_pingreq(&c->out)))
			return -1;
	}
	if (c->ping_sent_ms)
		return c->ping_sent_ms + c->keepalive_ms - now;
	return c->last_tx_ms + c->keepalive_ms - now;
}

static int64_t connect_cb(struct loop_timer *t)
{
	struct mqtt_client *c = container_of(t, struct mqtt_client, connect_timer);
	char why[128];

	snprintf(why, sizeof(why), "no %s from the broker within connect_timeout (%lld ms)",
		 c->st == CS_CONNACK_WAIT ? "CONNACK" : "SUBACK", (long long)c->conf.connect_timeout_ms);
	drop(c, why);
	return -1;
}

/* ---- inbound packets ------------------------------------------------------ */

static void on_connack(struct mqtt_client *c, const uint8_t *p, size_t n)
{
	struct mqtt_connack ca;
	char why[256];
	int rc;

	if (c->st != CS_CONNACK_WAIT)
		return violation(c, 0x82, "a second CONNACK");
	if (mqtt_decode_connack(c->conf.version, p, n, &ca, why, sizeof(why)))
		return violation(c, 0x81, why);
	if (ca.reason) {
		char msg[400];

		if (ca.reason_string.len)
			snprintf(msg, sizeof(msg), "broker refused the connection: %s (%.*s)",
				 mqtt_connack_str(c->conf.version, ca.reason),
				 (int)ca.reason_string.len, ca.reason_string.p);
		else
			snprintf(msg, sizeof(msg), "broker refused the connection: %s",
				 mqtt_connack_str(c->conf.version, ca.reason));
		drop(c, msg);
		return;
	}
	if (ca.server_keepalive_s >= 0)
		c->keepalive_ms = (int64_t)ca.server_keepalive_s * 1000;
	c->send_max = ca.receive_maximum;
	c->broker_max_packet = ca.max_packet_size;
	if (ca.assigned_client_id.len)
		snprintf(c->assigned, sizeof(c->assigned), "%.*s", (int)ca.assigned_client_id.len,
			 ca.assigned_client_id.p);
	if (c->keepalive_ms)
		loop_timer_set(c->l, &c->ping_timer, c->keepalive_ms);
	/* A persistent session keeps its subscriptions, but they are sent
	 * again anyway: the config may have changed, and SUBACK tells which
	 * were granted. */
	c->sub_id = c->sub_id == 65535 ? 1 : c->sub_id + 1;
	c->st = CS_SUBACK_WAIT;
	rc = mqtt_encode_subscribe(&c->out, c->conf.version, c->sub_id, c->conf.topics,
				   c->conf.n_topics);
	if (rc) {
		snprintf(why, sizeof(why), "cannot encode SUBSCRIBE: %s", strerror(-rc));
		drop(c, why);
		return;
	}
	c->session_present = ca.session_present;
	if (c->ops->connected) {
		uint32_t gen = c->gen;

		c->ops->connected(c, c->arg, ca.session_present);
		if (c->gen != gen || c->st == CS_IDLE)
			return;
	}
	sent(c, 0);
}

static void on_suback(struct mqtt_client *c, const uint8_t *p, size_t n)
{
	struct mqtt_suback sa;
	char why[256];

	if (c->st != CS_SUBACK_WAIT)
		return violation(c, 0x82, "SUBACK without SUBSCRIBE");
	if (mqtt_decode_suback(c->conf.version, p, n, &sa, why, sizeof(why)))
		return violation(c, 0x81, why);
	if (sa.packet_id != c->sub_id || sa.n != c->conf.n_topics) {
		snprintf(why, sizeof(why), "SUBACK for packet %u with %zu codes (SUBSCRIBE %u had %zu "
			 "topics)", sa.packet_id, sa.n, c->sub_id, c->conf.n_topics);
		return violation(c, 0x82, why);
	}
	loop_timer_cancel(c->l, &c->connect_timer);
	c->st = CS_UP;
	if (c->ops->subscribed)
		c->ops->subscribed(c, c->arg, c->session_present, sa.codes, sa.n);
}

static void on_publish(struct mqtt_client *c, uint8_t flags, const uint8_t *p, size_t n)
{
	struct mqtt_publish m;
	char why[256];

	if (c->st == CS_CONNACK_WAIT)
		return violation(c, 0x82, "PUBLISH before CONNACK");
	if (mqtt_decode_publish(c->conf.version, flags, p, n, &m, why, sizeof(why)))
		return violation(c, 0x81, why);
	if (m.qos) {
		uint8_t s = c->ids[m.packet_id];

		if (s == ID_COMP_WAIT || (s != ID_FREE && (s == ID_ACK_WAIT1) != (m.qos == 1))) {
			snprintf(why, sizeof(why), "PUBLISH QoS %u reuses packet id %u still in use",
				 m.qos, m.packet_id);
			return violation(c, 0x91, why);
		}
		/* A broker over our receive maximum (mosquitto 2.0 is, once
		 * acknowledgements flow) is counted, not disconnected: it
		 * would do the same after every reconnect, and nothing would
		 * ever be acknowledged. The user bounds what it holds. */
		if (s == ID_FREE && c->conf.receive_maximum && c->inflight >= c->conf.receive_maximum)
			c->over_window++;
		/* A PUBLISH again for an id whose PUBREC is sent: the user
		 * decides again (it acknowledges a redelivery it holds). */
		set_id(c, m.packet_id, m.qos == 1 ? ID_ACK_WAIT1 : ID_ACK_WAIT2);
	}
	if (c->ops->message)
		c->ops->message(c, c->arg, &m);
}

static void on_ack(struct mqtt_client *c, enum mqtt_type type, uint8_t flags, const uint8_t *p,
		   size_t n)
{
	struct mqtt_ack a;
	char why[256];

	if (c->st == CS_CONNACK_WAIT)
		return violation(c, 0x82, "acknowledgement before CONNACK");
	if (mqtt_decode_ack(c->conf.version, type, flags, p, n, &a, why, sizeof(why)))
		return violation(c, 0x81, why);
	if (type == MQTT_PUBREL) {
		uint8_t s = c->ids[a.packet_id];

		if (s == ID_ACK_WAIT1 || s == ID_ACK_WAIT2) {
			snprintf(why, sizeof(why), "PUBREL for packet id %u before its PUBREC",
				 a.packet_id);
			return violation(c, 0x82, why);
		}
		/* Also for an id unknown here: the PUBREC was sent on an
		 * earlier connection and the broker goes on from there. */
		set_id(c, a.packet_id, ID_COMP_WAIT);
		if (c->ops->released)
			c->ops->released(c, c->arg, a.packet_id);
		return;
	}
	if (type == MQTT_PUBACK) {
		uint8_t bit = (uint8_t)(1u << (a.packet_id & 7));

		if (!(c->out_ids[a.packet_id >> 3] & bit)) {
			snprintf(why, sizeof(why), "PUBACK for packet id %u not in flight", a.packet_id);
			return violation(c, 0x82, why);
		}
		c->out_ids[a.packet_id >> 3] &= (uint8_t)~bit;
		c->out_inflight--;
		if (c->ops->published)
			c->ops->published(c, c->arg, a.packet_id, a.reason);
		return;
	}
	snprintf(why, sizeof(why), "%s for a QoS 2 publish never sent",
		 type == MQTT_PUBREC ? "PUBREC" : "PUBCOMP");
	violation(c, 0x82, why);
}

/* One whole packet; false when the connection is gone. */
static bool dispatch(struct mqtt_client *c, const struct mqtt_frame *f, const uint8_t *body)
{
	struct mqtt_disconnect d;
	char why[300];
	uint32_t gen = c->gen;

	switch (f->type) {
	case MQTT_CONNACK:
		if (f->flags)
			violation(c, 0x81, "CONNACK with flags in its fixed header");
		else
			on_connack(c, body, f->body_len);
		break;
	case MQTT_SUBACK:
		if (f->flags)
			violation(c, 0x81, "SUBACK with flags in its fixed header");
		else
			on_suback(c, body, f->body_len);
		break;
	case MQTT_PUBLISH:
		on_publish(c, f->flags, body, f->body_len);
		break;
	case MQTT_PUBACK: case MQTT_PUBREC: case MQTT_PUBREL: case MQTT_PUBCOMP:
		on_ack(c, (enum mqtt_type)f->type, f->flags, body, f->body_len);
		break;
	case MQTT_PINGRESP:
		if (f->flags || f->body_len)
			violation(c, 0x81, "PINGRESP with a body or flags");
		else
			c->ping_sent_ms = 0;
		break;
	case MQTT_DISCONNECT:
		if (mqtt_decode_disconnect(c->conf.version, body, f->body_len, &d, why, sizeof(why))) {
			violation(c, 0x81, why);
			break;
		}
		if (d.reason_string.len)
			snprintf(why, sizeof(why), "broker disconnected: %s (%.*s)",
				 mqtt_reason_str(d.reason), (int)d.reason_string.len, d.reason_string.p);
		else if (c->conf.version == MQTT_V5)
			snprintf(why, sizeof(why), "broker disconnected: %s", mqtt_reason_str(d.reason));
		else
			snprintf(why, sizeof(why), "broker disconnected");
		drop(c, why);
		break;
	default:
		snprintf(why, sizeof(why), "unexpected packet type %u", f->type);
		violation(c, 0x82, why);
		break;
	}
	return c->st != CS_IDLE && c->gen == gen;
}

static void on_readable(struct mqtt_client *c)
{
	uint32_t gen = c->gen;
	size_t off = 0;

	for (;;) {
		ssize_t n;

		if (buf_reserve(&c->in, READ_CHUNK)) {
			drop(c, "out of memory reading from the broker");
			return;
		}
		n = read(c->w.fd, c->in.p + c->in.len, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			char why[160];

			snprintf(why, sizeof(why), "%s", n == 0 ? "broker closed the connection" :
				 strerror(errno));
			if (n < 0)
				snprintf(why, sizeof(why), "read from the broker failed: %s", strerror(errno));
			drop(c, why);
			return;
		}
		c->in.len += (size_t)n;
		if ((size_t)n < READ_CHUNK)
			break;
	}
	while (off < c->in.len) {
		struct mqtt_frame f;
		int rc = mqtt_frame((const uint8_t *)c->in.p + off, c->in.len - off,
				    c->conf.max_packet_size, &f);

		if (rc == 0)
			break;
		if (rc == -EMSGSIZE) {
			char why[160];

			snprintf(why, sizeof(why), "a packet larger than max_packet_size (%u bytes)",
				 c->conf.max_packet_size);
			violation(c, 0x95, why);
			return;
		}
		if (rc < 0) {
			violation(c, 0x81, "malformed fixed header");
			return;
		}
		if (!dispatch(c, &f, (const uint8_t *)c->in.p + off + f.hdr_len))
			return;
		off += f.hdr_len + f.body_len;
	}
	if (c->gen != gen || c->st == CS_IDLE)
		return;
	memmove(c->in.p, c->in.p + off, c->in.len - off);
	c->in.len -= off;
}

static void fd_cb(struct loop_fd *w, unsigned revents)
{
	struct mqtt_client *c = container_of(w, struct mqtt_client, w);
	uint32_t gen = c->gen;

	if (revents & (LOOP_READ | LOOP_ERROR))
		on_readable(c);
	if (c->gen == gen && c->st != CS_IDLE && (revents & LOOP_WRITE))
		flush(c);
}

/* ---- the API ------------------------------------------------------------ */

int mqtt_client_new(struct loop *l, const struct mqtt_client_conf *conf,
		    const struct mqtt_client_ops *ops, void *arg, struct mqtt_client **out)
{
	struct mqtt_client *c = xcalloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->ids = xcalloc(65536, 1);
	c->out_ids = xcalloc(65536 / 8, 1);
	if (!c->ids || !c->out_ids) {
		mqtt_client_free(c);
		return -ENOMEM;
	}
	c->l = l;
	c->conf = *conf;
	c->ops = ops;
	c->arg = arg;
	c->w.fd = -1;
	c->w.cb = fd_cb;
	c->connect_timer.cb = connect_cb;
	c->ping_timer.cb = ping_cb;
	*out = c;
	return 0;
}

void mqtt_client_free(struct mqtt_client *c)
{
	if (!c)
		return;
	if (c->ids)
		close_fd(c);
	buf_release(&c->in);
	buf_release(&c->out);
	xfree(c->ids);
	xfree(c->out_ids);
	xfree(c);
}

int mqtt_client_attach(struct mqtt_client *c, int fd)
{
	struct mqtt_connect cc = {
		.version = c->conf.version, .client_id = c->conf.client_id,
		.clean_start = c->conf.clean_start, .keepalive_s = c->conf.keepalive_s,
		.session_expiry_s = c->conf.session_expiry_s,
		.receive_maximum = c->conf.receive_maximum,
		.max_packet_size = c->conf.max_packet_size, .username = c->conf.username,
		.password = c->conf.password, .password_len = c->conf.password_len,
	};
	int one = 1, rc;

	close_fd(c);
	c->gen++;
	/* Acknowledgements are small and latency shows in the broker's
	 * in-flight window: no Nagle delay (fails harmlessly on a Unix
	 * socket to the TLS bridge). */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->w.fd = fd;
	c->w.events = LOOP_READ;
	rc = loop_fd_add(c->l, &c->w);
	if (rc) {
		close(fd);
		c->w.fd = -1;
		return rc;
	}
	c->st = CS_CONNACK_WAIT;
	c->keepalive_ms = (int64_t)c->conf.keepalive_s * 1000;
	c->send_max = 65535;
	rc = mqtt_encode_connect(&c->out, &cc);
	if (rc) {
		close_fd(c);
		return rc;
	}
	loop_timer_set(c->l, &c->connect_timer, c->conf.connect_timeout_ms);
	c->dropped = false;
	sent(c, 0);
	/* A write error was reported through closed() already. */
	return 0;
}

void mqtt_client_disconnect(struct mqtt_client *c)
{
	if (!c || c->st == CS_IDLE)
		return;
	buf_reset(&c->out);
	c->out_off = 0;
	if (!mqtt_encode_disconnect(&c->out, c->conf.version, 0))
		(void)!write(c->w.fd, c->out.p, c->out.len);
	close_fd(c);
}

int mqtt_client_ack(struct mqtt_client *c, uint16_t packet_id)
{
	uint8_t s;

	if (c->st != CS_UP && c->st != CS_SUBACK_WAIT)
		return -ENOTCONN;
	s = c->ids[packet_id];
	if (!packet_id || (s != ID_ACK_WAIT1 && s != ID_ACK_WAIT2))
		return -ENOENT;
	set_id(c, packet_id, s == ID_ACK_WAIT1 ? ID_FREE : ID_REL_WAIT);
	return sent(c, mqtt_encode_ack(&c->out, c->conf.version,
				       s == ID_ACK_WAIT1 ? MQTT_PUBACK : MQTT_PUBREC, packet_id, 0));
}

int mqtt_client_complete(struct mqtt_client *c, uint16_t packet_id)
{
	if (c->st != CS_UP && c->st != CS_SUBACK_WAIT)
		return -ENOTCONN;
	if (!packet_id || c->ids[packet_id] != ID_COMP_WAIT)
		return -ENOENT;
	set_id(c, packet_id, ID_FREE);
	return sent(c, mqtt_encode_ack(&c->out, c->conf.version, MQTT_PUBCOMP, packet_id, 0));
}

int mqtt_client_publish(struct mqtt_client *c, const char *topic, const void *payload,
			size_t len, uint8_t qos, bool retain)
{
	uint16_t id = 0;
	size_t was;
	int rc;

	if (c->st != CS_UP)
		return -ENOTCONN;
	if (qos > 1)
		return -EINVAL;
	if (qos) {
		if (c->out_inflight >= c->send_max)
			return -EBUSY;
		do {
			c->next_out_id = c->next_out_id == 65535 ? 1 : c->next_out_id + 1;
		} while (c->out_ids[c->next_out_id >> 3] & (1u << (c->next_out_id & 7)));
		id = c->next_out_id;
	}
	was = c->out.len;
	rc = mqtt_encode_publish(&c->out, c->conf.version, topic, payload, len, qos, retain, id);
	if (rc)
		return rc;
	if (c->broker_max_packet && c->out.len - was > c->broker_max_packet) {
		c->out.len = was;
		return -EMSGSIZE;
	}
	if (qos) {
		c->out_ids[id >> 3] |= (uint8_t)(1u << (id & 7));
		c->out_inflight++;
	}
	rc = sent(c, 0);
	return rc ? rc : id;
}

bool mqtt_client_up(const struct mqtt_client *c)
{
	return c->st == CS_UP;
}

uint32_t mqtt_client_generation(const struct mqtt_client *c)
{
	return c->gen;
}

unsigned mqtt_client_inflight(const struct mqtt_client *c)
{
	return c->inflight;
}

uint64_t mqtt_client_over_window(const struct mqtt_client *c)
{
	return c->over_window;
}

const char *mqtt_client_assigned_id(const struct mqtt_client *c)
{
	return c->assigned[0] ? c->assigned : NULL;
}
