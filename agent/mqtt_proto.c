/* mqtt_proto.c - the MQTT packet codec (see mqtt_proto.h): Remaining Length
 * varints, the fixed header, and the packets the agent's own client sends
 * and receives, for MQTT 3.1.1 and 5.0 (the OASIS specifications' layouts).
 * Every read is bounded by a cursor over the caller's bytes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mqtt_proto.h"

/* ---- reading ------------------------------------------------------------ */

struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static size_t rd_left(const struct rd *r)
{
	return (size_t)(r->end - r->p);
}

static uint8_t rd_u8(struct rd *r)
{
	if (r->bad || rd_left(r) < 1) {
		r->bad = true;
		return 0;
	}
	return *r->p++;
}

static uint16_t rd_u16(struct rd *r)
{
	uint16_t v;

	if (r->bad || rd_left(r) < 2) {
		r->bad = true;
		return 0;
	}
	v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return v;
}

static uint32_t rd_u32(struct rd *r)
{
	uint32_t v;

	if (r->bad || rd_left(r) < 4) {
		r->bad = true;
		return 0;
	}
	v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	return v;
}

/* A varint of at most 4 bytes; a non-minimal encoding is accepted, as
 * brokers' are read by every client. */
static uint32_t rd_varint(struct rd *r)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		uint8_t b = rd_u8(r);

		if (r->bad)
			return 0;
		v |= (uint32_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			return v;
	}
	r->bad = true;
	return 0;
}

static struct mqtt_str rd_bin(struct rd *r)
{
	struct mqtt_str s = { NULL, 0 };
	uint16_t n = rd_u16(r);

	if (r->bad || rd_left(r) < n) {
		r->bad = true;
		return s;
	}
	s.p = (const char *)r->p;
	s.len = n;
	r->p += n;
	return s;
}

/* A UTF-8 string: valid UTF-8 without U+0000 (MQTT 1.5.4). */
static struct mqtt_str rd_str(struct rd *r)
{
	struct mqtt_str s = rd_bin(r);

	if (!r->bad && (memchr(s.p, 0, s.len) || !utf8_valid(s.p, s.len, NULL)))
		r->bad = true;
	return s;
}

static int fail(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

/* v5 properties: how each identifier's value is encoded. */
enum ptype { P_NONE, P_BYTE, P_TWO, P_FOUR, P_VARINT, P_STR, P_BIN, P_PAIR };

static enum ptype prop_type(uint32_t id)
{
	switch (id) {
	case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2a:
		return P_BYTE;
	case 0x13: case 0x21: case 0x22: case 0x23:
		return P_TWO;
	case 0x02: case 0x11: case 0x18: case 0x27:
		return P_FOUR;
	case 0x0b:
		return P_VARINT;
	case 0x03: case 0x08: case 0x12: case 0x15: case 0x1a: case 0x1c: case 0x1f:
		return P_STR;
	case 0x09: case 0x16:
		return P_BIN;
	case 0x26:
		return P_PAIR;
	default:
		return P_NONE;
	}
}

struct prop {
	uint32_t id;
	uint32_t num;
	struct mqtt_str s, v;    /* P_STR/P_BIN: s; P_PAIR: s = name, v = value */
};

/* The next property of a block: 1, 0 at its end, -EPROTO. */
static int prop_next(struct rd *r, struct prop *pr)
{
	if (r->bad)
		return -EPROTO;
	if (!rd_left(r))
		return 0;
	memset(pr, 0, sizeof(*pr));
	pr->id = rd_varint(r);
	switch (prop_type(pr->id)) {
	case P_BYTE: pr->num = rd_u8(r); break;
	case P_TWO: pr->num = rd_u16(r); break;
	case P_FOUR: pr->num = rd_u32(r); break;
	case P_VARINT: pr->num = rd_varint(r); break;
	case P_STR: pr->s = rd_str(r); break;
	case P_BIN: pr->s = rd_bin(r); break;
	case P_PAIR: pr->s = rd_str(r); pr->v = rd_str(r); break;
	default: return -EPROTO;
	}
	return r->bad ? -EPROTO : 1;
}

/* Split off a v5 property block: *props covers it, r is left after it. */
static bool rd_props(struct rd *r, struct rd *props)
{
	uint32_t n = rd_varint(r);

	if (r->bad || rd_left(r) < n) {
		r->bad = true;
		return false;
	}
	props->p = r->p;
	props->end = r->p + n;
	props->bad = false;
	r->p += n;
	return true;
}

/* ---- writing ------------------------------------------------------------ */

int mqtt_put_varint(struct buf *b, uint32_t v)
{
	uint8_t d[4];
	size_t n = 0;

	if (v > MQTT_MAX_REMAINING)
		return -EMSGSIZE;
	do {
		d[n] = v & 0x7f;
		v >>= 7;
		if (v)
			d[n] |= 0x80;
		n++;
	} while (v);
	return buf_add(b, d, n);
}

static int put_u8(struct buf *b, uint8_t v)
{
	return buf_add(b, &v, 1);
}

static int put_u16(struct buf *b, uint16_t v)
{
	uint8_t d[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	return buf_add(b, d, 2);
}

static int put_u32(struct buf *b, uint32_t v)
{
	uint8_t d[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

	return buf_add(b, d, 4);
}

static int put_bin(struct buf *b, const void *p, size_t n)
{
	int rc;

	if (n > 65535)
		return -EINVAL;
	rc = put_u16(b, (uint16_t)n);
	return rc ? rc : buf_add(b, p, n);
}

static int put_str(struct buf *b, const char *s)
{
	size_t n = strlen(s);

	if (!utf8_valid(s, n, NULL))
		return -EINVAL;
	return put_bin(b, s, n);
}

/* Append fixed header + body to out, leaving out as it was on an error. */
static int put_packet(struct buf *out, uint8_t first, const struct buf *body)
{
	size_t was = out->len;
	int rc;

	if (body->len > MQTT_MAX_REMAINING)
		return -EMSGSIZE;
	rc = put_u8(out, first);
	rc = rc ? rc : mqtt_put_varint(out, (uint32_t)body->len);
	rc = rc ? rc : buf_add(out, body->p, body->len);
	if (rc)
		out->len = was;
	return rc;
}

/* ---- framing ------------------------------------------------------------ */

int mqtt_frame(const uint8_t *p, size_t n, uint32_t max_packet, struct mqtt_frame *f)
{
	uint32_t rem = 0;
	size_t i;

	if (n < 2)
		return 0;
	f->type = p[0] >> 4;
	f->flags = p[0] & 0x0f;
	if (f->type == 0)
		return -EPROTO;
	for (i = 1;; i++) {
		if (i > 4)
			return -EPROTO;
		if (i >= n)
			return 0;
		rem |= (uint32_t)(p[i] & 0x7f) << (7 * (i - 1));
		if (!(p[i] & 0x80))
			break;
	}
	f->hdr_len = i + 1;
	f->body_len = rem;
	if (max_packet && f->hdr_len + (size_t)rem > max_packet)
		return -EMSGSIZE;
	return n - f->hdr_len >= rem ? 1 : 0;
}

/* ---- CONNECT / CONNACK -------------------------------------------------- */

int mqtt_encode_connect(struct buf *out, const struct mqtt_connect *c)
{
	struct buf b = BUF_INIT, props = BUF_INIT;
	uint8_t flags = c->clean_start ? 0x02 : 0;
	int rc;

	if (c->version != MQTT_V311 && c->version != MQTT_V5)
		return -EINVAL;
	if (c->password && !c->username && c->version == MQTT_V311)
		return -EINVAL;
	if (c->username)
		flags |= 0x80;
	if (c->password)
		flags |= 0x40;
	rc = put_str(&b, "MQTT");
	rc = rc ? rc : put_u8(&b, (uint8_t)c->version);
	rc = rc ? rc : put_u8(&b, flags);
	rc = rc ? rc : put_u16(&b, c->keepalive_s);
	if (!rc && c->version == MQTT_V5) {
		rc = put_u8(&props, MQTT_PROP_SESSION_EXPIRY);
		rc = rc ? rc : put_u32(&props, c->session_expiry_s);
		if (!rc && c->receive_maximum) {
			rc = put_u8(&props, MQTT_PROP_RECEIVE_MAXIMUM);
			rc = rc ? rc : put_u16(&props, c->receive_maximum);
		}
		if (!rc && c->max_packet_size) {
			rc = put_u8(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE);
			rc = rc ? rc : put_u32(&props, c->max_packet_size);
		}
		rc = rc ? rc : mqtt_put_varint(&b, (uint32_t)props.len);
		rc = rc ? rc : buf_add(&b, props.p, props.len);
	}
	rc = rc ? rc : put_str(&b, c->client_id ? c->client_id : "");
	if (!rc && c->username)
		rc = put_str(&b, c->username);
	if (!rc && c->password)
		rc = put_bin(&b, c->password, c->password_len);
	rc = rc ? rc : put_packet(out, MQTT_CONNECT << 4, &b);
	buf_release(&b);
	buf_release(&props);
	return rc;
}

int mqtt_decode_connack(int version, const uint8_t *p, size_t n, struct mqtt_connack *out,
			char *why, size_t whylen)
{
	struct rd r = { p, p + n, false }, pr;
	struct prop x;
	uint8_t ack;
	int rc;

	memset(out, 0, sizeof(*out));
	out->receive_maximum = 65535;
	out->max_qos = 2;
	out->server_keepalive_s = -1;
	out->session_expiry_s = -1;
	ack = rd_u8(&r);
	out->reason = rd_u8(&r);
	if (r.bad)
		return fail(why, whylen, "CONNACK of %zu bytes", n);
	if (ack & 0xfe)
		return fail(why, whylen, "CONNACK with reserved flags 0x%02x", ack);
	out->session_present = ack & 1;
	if (version != MQTT_V5)
		return rd_left(&r) ? fail(why, whylen, "CONNACK of %zu bytes", n) : 0;
	if (!rd_left(&r))        /* a v5 broker may leave the properties out */
		return 0;
	if (!rd_props(&r, &pr) || rd_left(&r))
		return fail(why, whylen, "CONNACK properties overrun the packet");
	while ((rc = prop_next(&pr, &x)) == 1) {
		switch (x.id) {
		case MQTT_PROP_RECEIVE_MAXIMUM:
			if (!x.num)
				return fail(why, whylen, "CONNACK receive maximum 0");
			out->receive_maximum = (uint16_t)x.num;
			break;
		case MQTT_PROP_MAXIMUM_PACKET_SIZE:
			if (!x.num)
				return fail(why, whylen, "CONNACK maximum packet size 0");
			out->max_packet_size = x.num;
			break;
		case MQTT_PROP_MAXIMUM_QOS:
			if (x.num > 1)
				return fail(why, whylen, "CONNACK maximum QoS %u", x.num);
			out->max_qos = (uint8_t)x.num;
			break;
		case MQTT_PROP_SERVER_KEEPALIVE: out->server_keepalive_s = (int32_t)x.num; break;
		case MQTT_PROP_SESSION_EXPIRY: out->session_expiry_s = x.num; break;
		case MQTT_PROP_ASSIGNED_CLIENT_ID: out->assigned_client_id = x.s; break;
		case MQTT_PROP_REASON_STRING: out->reason_string = x.s; break;
		default: break;  /* others (retain available, ...) do not concern a subscriber */
		}
	}
	return rc ? fail(why, whylen, "malformed CONNACK property") : 0;
}

const char *mqtt_connack_str(int version, uint8_t code)
{
	static const char *const v311[] = { "accepted", "unacceptable protocol version",
					    "client identifier rejected", "server unavailable",
					    "bad user name or password", "not authorized" };

	if (version != MQTT_V5)
		return code < 6 ? v311[code] : "unknown return code";
	return mqtt_reason_str(code);
}

const char *mqtt_reason_str(uint8_t code)
{
	switch (code) {
	case 0x00: return "success";
	case 0x01: return "granted QoS 1";
	case 0x02: return "granted QoS 2";
	case 0x04: return "disconnect with will message";
	case 0x80: return "unspecified error";
	case 0x81: return "malformed packet";
	case 0x82: return "protocol error";
	case 0x83: return "implementation specific error";
	case 0x84: return "unsupported protocol version";
	case 0x85: return "client identifier not valid";
	case 0x86: return "bad user name or password";
	case 0x87: return "not authorized";
	case 0x88: return "server unavailable";
	case 0x89: return "server busy";
	case 0x8a: return "banned";
	case 0x8b: return "server shutting down";
	case 0x8d: return "keep alive timeout";
	case 0x8e: return "session taken over";
	case 0x8f: return "topic filter invalid";
	case 0x90: return "topic name invalid";
	case 0x91: return "packet identifier in use";
	case 0x92: return "packet identifier not found";
	case 0x93: return "receive maximum exceeded";
	case 0x95: return "packet too large";
	case 0x97: return "quota exceeded";
	case 0x99: return "payload format invalid";
	case 0x9a: return "retain not supported";
	case 0x9b: return "QoS not supported";
	case 0x9c: return "use another server";
	case 0x9d: return "server moved";
	case 0x9e: return "shared subscriptions not supported";
	case 0x9f: return "connection rate exceeded";
	case 0xa1: return "subscription identifiers not supported";
	case 0xa2: return "wildcard subscriptions not supported";
	default: return "unknown reason code";
	}
}

/* ---- SUBSCRIBE / SUBACK ------------------------------------------------- */

int mqtt_encode_subscribe(struct buf *out, int version, uint16_t packet_id,
			  const struct mqtt_sub_topic *t, size_t n)
{
	struct buf b = BUF_INIT;
	int rc;

	if (!n || !packet_id)
		return -EINVAL;
	rc = put_u16(&b, packet_id);
	if (!rc && version == MQTT_V5)
		rc = put_u8(&b, 0);              /* no properties */
	for (size_t i = 0; !rc && i < n; i++) {
		if (t[i].qos > 2 || !t[i].filter[0])
			rc = -EINVAL;
		rc = rc ? rc : put_str(&b, t[i].filter);
		/* v5 options beyond the QoS stay 0: local messages too, retain
		 * flag as the broker sets it, retained messages at subscribe. */
		rc = rc ? rc : put_u8(&b, t[i].qos);
	}
	rc = rc ? rc : put_packet(out, MQTT_SUBSCRIBE << 4 | 0x2, &b);
	buf_release(&b);
	return rc;
}

int mqtt_decode_suback(int version, const uint8_t *p, size_t n, struct mqtt_suback *out,
		       char *why, size_t whylen)
{
	struct rd r = { p, p + n, false }, pr;
	struct prop x;
	int rc;

	memset(out, 0, sizeof(*out));
	out->packet_id = rd_u16(&r);
	if (r.bad || !out->packet_id)
		return fail(why, whylen, "SUBACK without a packet identifier");
	if (version == MQTT_V5) {
		if (!rd_props(&r, &pr))
			return fail(why, whylen, "SUBACK properties overrun the packet");
		while ((rc = prop_next(&pr, &x)) == 1)
			if (x.id == MQTT_PROP_REASON_STRING)
				out->reason_string = x.s;
		if (rc)
			return fail(why, whylen, "malformed SUBACK property");
	}
	out->codes = r.p;
	out->n = rd_left(&r);
	if (!out->n)
		return fail(why, whylen, "SUBACK without reason codes");
	for (size_t i = 0; i < out->n; i++) {
		uint8_t c = out->codes[i];

		if (c > 2 && c < 0x80)
			return fail(why, whylen, "SUBACK code 0x%02x", c);
	}
	return 0;
}

/* ---- PUBLISH ------------------------------------------------------------ */

int mqtt_decode_publish(int version, uint8_t flags, const uint8_t *p, size_t n,
			struct mqtt_publish *out, char *why, size_t whylen)
{
	struct rd r = { p, p + n, false }, pr;
	struct prop x;
	int rc;

	memset(out, 0, sizeof(*out));
	out->retain = flags & 1;
	out->qos = (flags >> 1) & 3;
	out->dup = flags & 8;
	if (out->qos == 3)
		return fail(why, whylen, "PUBLISH with QoS 3");
	if (out->qos == 0 && out->dup)
		return fail(why, whylen, "PUBLISH QoS 0 with DUP set");
	out->topic = rd_bin(&r);
	if (r.bad)
		return fail(why, whylen, "PUBLISH topic overruns the packet");
	if (!out->topic.len || memchr(out->topic.p, 0, out->topic.len) ||
	    memchr(out->topic.p, '+', out->topic.len) || memchr(out->topic.p, '#', out->topic.len) ||
	    !utf8_valid(out->topic.p, out->topic.len, NULL))
		return fail(why, whylen, "PUBLISH topic name invalid (empty, wildcard, NUL or not UTF-8)");
	if (out->qos) {
		out->packet_id = rd_u16(&r);
		if (r.bad || !out->packet_id)
			return fail(why, whylen, "PUBLISH QoS %u without a packet identifier", out->qos);
	}
	if (version == MQTT_V5) {
		if (!rd_props(&r, &pr))
			return fail(why, whylen, "PUBLISH properties overrun the packet");
		out->props = pr.p;
		out->props_len = rd_left(&pr);
		while ((rc = prop_next(&pr, &x)) == 1)
			if (x.id == MQTT_PROP_TOPIC_ALIAS)
				return fail(why, whylen, "PUBLISH with a topic alias (none allowed)");
		if (rc)
			return fail(why, whylen, "malformed PUBLISH property");
	}
	out->payload = r.p;
	out->payload_len = rd_left(&r);
	return 0;
}

bool mqtt_user_property(const struct mqtt_publish *m, const char *name, struct mqtt_str *value)
{
	struct rd r = { m->props, m->props + m->props_len, false };
	size_t nl = strlen(name);
	struct prop x;

	while (prop_next(&r, &x) == 1) {
		if (x.id == MQTT_PROP_USER_PROPERTY && x.s.len == nl && !memcmp(x.s.p, name, nl)) {
			*value = x.v;
			return true;
		}
	}
	return false;
}

int mqtt_encode_publish(struct buf *out, int version, const char *topic, const void *payload,
			size_t len, uint8_t qos, bool retain, uint16_t packet_id)
{
	struct buf b = BUF_INIT;
	int rc;

	if (qos > 1 || (qos && !packet_id) || !topic[0] || strpbrk(topic, "+#"))
		return -EINVAL;
	rc = put_str(&b, topic);
	if (!rc && qos)
		rc = put_u16(&b, packet_id);
	if (!rc && version == MQTT_V5)
		rc = put_u8(&b, 0);
	rc = rc ? rc : buf_add(&b, payload, len);
	rc = rc ? rc : put_packet(out, (uint8_t)(MQTT_PUBLISH << 4 | qos << 1 | (retain ? 1 : 0)), &b);
	buf_release(&b);
	return rc;
}

/* ---- PUBACK / PUBREC / PUBREL / PUBCOMP ---------------------------------- */

static bool is_ack(enum mqtt_type t)
{
	return t == MQTT_PUBACK || t == MQTT_PUBREC || t == MQTT_PUBREL || t == MQTT_PUBCOMP;
}

int mqtt_encode_ack(struct buf *out, int version, enum mqtt_type type, uint16_t packet_id,
		    uint8_t reason)
{
	uint8_t d[5];
	size_t n = 4;

	if (!is_ack(type) || !packet_id)
		return -EINVAL;
	d[0] = (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 0x2 : 0));
	d[1] = 2;
	d[2] = (uint8_t)(packet_id >> 8);
	d[3] = (uint8_t)packet_id;
	if (version == MQTT_V5 && reason) {
		d[1] = 3;
		d[4] = reason;
		n = 5;
	}
	return buf_add(out, d, n);
}

int mqtt_decode_ack(int version, enum mqtt_type type, uint8_t flags, const uint8_t *p,
		    size_t n, struct mqtt_ack *out, char *why, size_t whylen)
{
	struct rd r = { p, p + n, false }, pr;
	struct prop x;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!is_ack(type) || flags != (type == MQTT_PUBREL ? 0x2 : 0))
		return fail(why, whylen, "packet type %d with flags 0x%x", type, flags);
	out->packet_id = rd_u16(&r);
	if (r.bad || !out->packet_id)
		return fail(why, whylen, "acknowledgement without a packet identifier");
	if (version != MQTT_V5)
		return rd_left(&r) ? fail(why, whylen, "acknowledgement of %zu bytes", n) : 0;
	if (rd_left(&r))
		out->reason = rd_u8(&r);
	if (rd_left(&r)) {
		if (!rd_props(&r, &pr) || rd_left(&r))
			return fail(why, whylen, "acknowledgement properties overrun the packet");
		while ((rc = prop_next(&pr, &x)) == 1)
			if (x.id == MQTT_PROP_REASON_STRING)
				out->reason_string = x.s;
		if (rc)
			return fail(why, whylen, "malformed acknowledgement property");
	}
	return 0;
}

/* ---- PINGREQ / DISCONNECT ----------------------------------------------- */

int mqtt_encode_pingreq(struct buf *out)
{
	static const uint8_t d[2] = { MQTT_PINGREQ << 4, 0 };

	return buf_add(out, d, 2);
}

int mqtt_encode_disconnect(struct buf *out, int version, uint8_t reason)
{
	uint8_t d[3] = { MQTT_DISCONNECT << 4, 0, reason };

	if (version == MQTT_V5 && reason) {
		d[1] = 1;
		return buf_add(out, d, 3);
	}
	return buf_add(out, d, 2);
}

int mqtt_decode_disconnect(int version, const uint8_t *p, size_t n, struct mqtt_disconnect *out,
			   char *why, size_t whylen)
{
	struct rd r = { p, p + n, false }, pr;
	struct prop x;
	int rc;

	memset(out, 0, sizeof(*out));
	if (version != MQTT_V5)
		return n ? fail(why, whylen, "DISCONNECT of %zu bytes", n) : 0;
	if (rd_left(&r))
		out->reason = rd_u8(&r);
	if (rd_left(&r)) {
		if (!rd_props(&r, &pr) || rd_left(&r))
			return fail(why, whylen, "DISCONNECT properties overrun the packet");
		while ((rc = prop_next(&pr, &x)) == 1)
			if (x.id == MQTT_PROP_REASON_STRING)
				out->reason_string = x.s;
		if (rc)
			return fail(why, whylen, "malformed DISCONNECT property");
	}
	return 0;
}
