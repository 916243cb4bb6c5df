/* test_mqtt_proto.c - the MQTT codec: byte-exact packets (the
 * specification's varint examples and layouts computed by hand), malformed
 * packets of every kind refused with -EPROTO, and every truncation of every
 * valid packet decoded from an exactly-sized copy without reading past it. */
#include <errno.h>
#include <stdlib.h>

#include "mem.h"
#include "mqtt_proto.h"
#include "test.h"

#define B(...) ((const uint8_t[]){ __VA_ARGS__ })
#define BLEN(...) sizeof((const uint8_t[]){ __VA_ARGS__ })

static bool same(const struct buf *b, const uint8_t *want, size_t n)
{
	if (b->len != n || memcmp(b->p, want, n)) {
		fprintf(stderr, "got %zu bytes:", b->len);
		for (size_t i = 0; i < b->len; i++)
			fprintf(stderr, " %02x", (uint8_t)b->p[i]);
		fprintf(stderr, "\n");
		return false;
	}
	return true;
}

/* Decoded strings point into the packet: a copy that outlives the
 * statement (a compound literal inside a CHECK lives only as long as it). */
static uint8_t held[64][256];
static unsigned held_i;

static const uint8_t *hold(const uint8_t *p, size_t n)
{
	uint8_t *d = held[held_i++ % 64];

	memcpy(d, p, n);
	return d;
}

#define H(...) hold(B(__VA_ARGS__), BLEN(__VA_ARGS__))

#define CHECK_BYTES(b, ...) CHECK(same(b, B(__VA_ARGS__), BLEN(__VA_ARGS__)))

TEST(varints_as_the_spec_lists_them)
{
	static const struct { uint32_t v; uint8_t d[4]; size_t n; } cases[] = {
		{ 0, { 0x00 }, 1 }, { 127, { 0x7f }, 1 }, { 128, { 0x80, 0x01 }, 2 },
		{ 16383, { 0xff, 0x7f }, 2 }, { 16384, { 0x80, 0x80, 0x01 }, 3 },
		{ 2097151, { 0xff, 0xff, 0x7f }, 3 }, { 2097152, { 0x80, 0x80, 0x80, 0x01 }, 4 },
		{ 268435455, { 0xff, 0xff, 0xff, 0x7f }, 4 },
	};
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mqtt_frame f;
		uint8_t pkt[8] = { 0x30 };

		buf_reset(&b);
		CHECK_EQ_INT(mqtt_put_varint(&b, cases[i].v), 0);
		CHECK(same(&b, cases[i].d, cases[i].n));
		/* The frame reads it back: complete only with the whole body. */
		memcpy(pkt + 1, cases[i].d, cases[i].n);
		CHECK_EQ_INT(mqtt_frame(pkt, 1 + cases[i].n, 0, &f), cases[i].v == 0 ? 1 : 0);
		CHECK_EQ_INT(f.body_len, cases[i].v);
		CHECK_EQ_INT(f.hdr_len, 1 + cases[i].n);
	}
	CHECK_EQ_INT(mqtt_put_varint(&b, 268435456), -EMSGSIZE);
	buf_release(&b);
}

TEST(frames)
{
	struct mqtt_frame f;

	CHECK_EQ_INT(mqtt_frame(B(0x30), 1, 0, &f), 0);
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0x02, 0x00), 3, 0, &f), 0);
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0x02, 0x00, 0x01, 0xff), 5, 0, &f), 1);
	CHECK_EQ_INT(f.type, MQTT_PUBLISH);
	CHECK_EQ_INT(f.body_len, 2);
	/* Five length bytes, type 0. */
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0xff, 0xff, 0xff, 0xff, 0x01), 6, 0, &f), -EPROTO);
	CHECK_EQ_INT(mqtt_frame(B(0x00, 0x00), 2, 0, &f), -EPROTO);
	/* Too large is known from the header alone. */
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0x80, 0x01), 3, 100, &f), -EMSGSIZE);
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0x62), 2, 100, &f), 0);      /* 2 + 98 = 100: fits */
	CHECK_EQ_INT(mqtt_frame(B(0x30, 0x63), 2, 100, &f), -EMSGSIZE);
}

TEST(connect_v311_and_v5)
{
	struct buf b = BUF_INIT;
	struct mqtt_connect c = { .version = MQTT_V311, .client_id = "ab", .keepalive_s = 60 };

	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), 0);
	CHECK_BYTES(&b, 0x10, 0x0e, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x00, 0x00, 0x3c,
		    0x00, 0x02, 'a', 'b');
	buf_reset(&b);
	c.clean_start = true;
	c.username = "u";
	c.password = "p";
	c.password_len = 1;
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), 0);
	CHECK_BYTES(&b, 0x10, 0x14, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xc2, 0x00, 0x3c,
		    0x00, 0x02, 'a', 'b', 0x00, 0x01, 'u', 0x00, 0x01, 'p');
	buf_reset(&b);
	c = (struct mqtt_connect){ .version = MQTT_V5, .client_id = "ab", .keepalive_s = 60,
				   .session_expiry_s = 3600, .receive_maximum = 20,
				   .max_packet_size = 1048576, .username = "u", .password = "p",
				   .password_len = 1 };
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), 0);
	CHECK_BYTES(&b, 0x10, 0x22, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xc0, 0x00, 0x3c,
		    0x0d, 0x11, 0x00, 0x00, 0x0e, 0x10, 0x21, 0x00, 0x14, 0x27, 0x00, 0x10, 0x00, 0x00,
		    0x00, 0x02, 'a', 'b', 0x00, 0x01, 'u', 0x00, 0x01, 'p');
	buf_reset(&b);
	/* v3.1.1 has no password without a user name; versions are 4 and 5. */
	c = (struct mqtt_connect){ .version = MQTT_V311, .client_id = "ab", .password = "p",
				   .password_len = 1 };
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), -EINVAL);
	c.version = 3;
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), -EINVAL);
	c = (struct mqtt_connect){ .version = MQTT_V5, .client_id = "\xff" };
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), -EINVAL);
	CHECK_EQ_INT(b.len, 0);
	buf_release(&b);
}

TEST(connack)
{
	struct mqtt_connack a;
	char why[128];

	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V311, H(0x01, 0x00), 2, &a, why, sizeof(why)), 0);
	CHECK(a.session_present);
	CHECK_EQ_INT(a.reason, 0);
	CHECK_EQ_INT(a.receive_maximum, 65535);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V311, H(0x00, 0x05), 2, &a, why, sizeof(why)), 0);
	CHECK_EQ_INT(a.reason, 5);
	CHECK_EQ_STR(mqtt_connack_str(MQTT_V311, 5), "not authorized");
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5,
		H(0x00, 0x00, 0x13, 0x21, 0x00, 0x0a, 0x27, 0x00, 0x00, 0x10, 0x00,
		  0x12, 0x00, 0x03, 'c', 'i', 'd', 0x1f, 0x00, 0x02, 'o', 'k'), 22, &a, why, sizeof(why)), 0);
	CHECK(!a.session_present);
	CHECK_EQ_INT(a.receive_maximum, 10);
	CHECK_EQ_INT(a.max_packet_size, 4096);
	CHECK(a.assigned_client_id.len == 3 && !memcmp(a.assigned_client_id.p, "cid", 3));
	CHECK(a.reason_string.len == 2 && !memcmp(a.reason_string.p, "ok", 2));
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x87, 0x00), 3, &a, why, sizeof(why)), 0);
	CHECK_EQ_STR(mqtt_connack_str(MQTT_V5, a.reason), "not authorized");
	/* Malformed: reserved flags, wrong length, property overruns, an
	 * unknown property, receive maximum 0, a property string not UTF-8. */
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V311, H(0x02, 0x00), 2, &a, why, sizeof(why)), -EPROTO);
	CHECK(strstr(why, "reserved flags"));
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V311, H(0x00, 0x00, 0x00), 3, &a, why, sizeof(why)),
		     -EPROTO);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V311, H(0x00), 1, &a, why, sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x00, 0x05, 0x21), 4, &a, why, sizeof(why)),
		     -EPROTO);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x00, 0x02, 0x7f, 0x00), 5, &a, why,
					 sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x00, 0x03, 0x21, 0x00, 0x00), 6, &a, why,
					 sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x00, 0x04, 0x1f, 0x00, 0x01, 0xff), 7, &a,
					 why, sizeof(why)), -EPROTO);
	/* A truncated property inside a block that claims more bytes. */
	CHECK_EQ_INT(mqtt_decode_connack(MQTT_V5, H(0x00, 0x00, 0x03, 0x27, 0x00, 0x00), 6, &a, why,
					 sizeof(why)), -EPROTO);
}

TEST(subscribe_and_suback)
{
	struct mqtt_sub_topic t[] = { { "a/b", 1 }, { "s/#", 2 } };
	struct mqtt_suback s;
	struct buf b = BUF_INIT;
	char why[128];

	CHECK_EQ_INT(mqtt_encode_subscribe(&b, MQTT_V311, 1, t, 1), 0);
	CHECK_BYTES(&b, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01);
	buf_reset(&b);
	CHECK_EQ_INT(mqtt_encode_subscribe(&b, MQTT_V5, 0x0102, t, 2), 0);
	CHECK_BYTES(&b, 0x82, 0x0f, 0x01, 0x02, 0x00, 0x00, 0x03, 'a', '/', 'b', 0x01,
		    0x00, 0x03, 's', '/', '#', 0x02);
	buf_reset(&b);
	CHECK_EQ_INT(mqtt_encode_subscribe(&b, MQTT_V5, 0, t, 2), -EINVAL);
	t[0].qos = 3;
	CHECK_EQ_INT(mqtt_encode_subscribe(&b, MQTT_V5, 1, t, 2), -EINVAL);
	CHECK_EQ_INT(b.len, 0);

	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V5, H(0x00, 0x01, 0x00, 0x01, 0x87), 5, &s, why,
					sizeof(why)), 0);
	CHECK_EQ_INT(s.packet_id, 1);
	CHECK_EQ_INT(s.n, 2);
	CHECK_EQ_INT(s.codes[0], 1);
	CHECK_EQ_INT(s.codes[1], 0x87);
	CHECK_EQ_STR(mqtt_reason_str(0x87), "not authorized");
	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V311, H(0x00, 0x07, 0x02, 0x80), 4, &s, why,
					sizeof(why)), 0);
	CHECK_EQ_INT(s.n, 2);
	CHECK_EQ_INT(s.codes[1], 0x80);
	/* Malformed: no codes, code 3, packet id 0, property overrun. */
	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V311, H(0x00, 0x07), 2, &s, why, sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V311, H(0x00, 0x07, 0x03), 3, &s, why, sizeof(why)),
		     -EPROTO);
	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V311, H(0x00, 0x00, 0x01), 3, &s, why, sizeof(why)),
		     -EPROTO);
	CHECK_EQ_INT(mqtt_decode_suback(MQTT_V5, H(0x00, 0x01, 0x09, 0x01), 4, &s, why, sizeof(why)),
		     -EPROTO);
	buf_release(&b);
}

TEST(publish_in)
{
	struct mqtt_publish m;
	struct mqtt_str v;
	char why[128];

	CHECK_EQ_INT(mqtt_decode_publish(MQTT_V311, 0x2, H(0x00, 0x01, 't', 0x00, 0x0a, 'h', 'i'), 7,
					 &m, why, sizeof(why)), 0);
	CHECK_EQ_INT(m.qos, 1);
	CHECK(!m.dup && !m.retain);
	CHECK_EQ_INT(m.packet_id, 10);
	CHECK(m.topic.len == 1 && m.topic.p[0] == 't');
	CHECK(m.payload_len == 2 && !memcmp(m.payload, "hi", 2));
	/* v5, QoS 2, DUP and retain, a user property. */
	CHECK_EQ_INT(mqtt_decode_publish(MQTT_V5, 0xd,
		H(0x00, 0x03, 's', '/', '1', 0x12, 0x34, 0x0a, 0x26, 0x00, 0x02, 'i', 'd', 0x00, 0x03,
		  'm', '-', '7', '{', '}'), 20, &m, why, sizeof(why)), 0);
	CHECK_EQ_INT(m.qos, 2);
	CHECK(m.dup && m.retain);
	CHECK_EQ_INT(m.packet_id, 0x1234);
	CHECK(m.payload_len == 2 && !memcmp(m.payload, "{}", 2));
	CHECK(mqtt_user_property(&m, "id", &v));
	CHECK(v.len == 3 && !memcmp(v.p, "m-7", 3));
	CHECK(!mqtt_user_property(&m, "i", &v));
	/* QoS 0: no packet id, empty payload allowed. */
	CHECK_EQ_INT(mqtt_decode_publish(MQTT_V311, 0x0, H(0x00, 0x01, 't'), 3, &m, why, sizeof(why)),
		     0);
	CHECK_EQ_INT(m.packet_id, 0);
	CHECK_EQ_INT(m.payload_len, 0);

	/* Malformed, each with a reason. */
	struct { int v; uint8_t flags; const uint8_t *p; size_t n; const char *why; } bad[] = {
		{ MQTT_V311, 0x6, B(0x00, 0x01, 't', 0x00, 0x01), 5, "QoS 3" },
		{ MQTT_V311, 0x8, B(0x00, 0x01, 't'), 3, "DUP" },
		{ MQTT_V311, 0x0, B(0x00, 0x05, 't'), 3, "overruns" },
		{ MQTT_V311, 0x0, B(0x00), 1, "overruns" },
		{ MQTT_V311, 0x0, B(0x00, 0x00), 2, "invalid" },
		{ MQTT_V311, 0x0, B(0x00, 0x03, 'a', '/', '+'), 5, "invalid" },
		{ MQTT_V311, 0x0, B(0x00, 0x01, '#'), 3, "invalid" },
		{ MQTT_V311, 0x0, B(0x00, 0x02, 'a', 0x00), 4, "invalid" },
		{ MQTT_V311, 0x0, B(0x00, 0x02, 'a', 0xff), 4, "invalid" },
		{ MQTT_V311, 0x2, B(0x00, 0x01, 't', 0x00, 0x00), 5, "packet identifier" },
		{ MQTT_V311, 0x2, B(0x00, 0x01, 't', 0x00), 4, "packet identifier" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't'), 3, "properties" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't', 0x05, 0x01), 5, "properties" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't', 0x02, 0x7f, 0x00), 6, "property" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't', 0x03, 0x23, 0x00, 0x01), 7, "alias" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't', 0x05, 0x26, 0x00, 0x01, 'a', 0x00), 9, "property" },
		{ MQTT_V5, 0x0, B(0x00, 0x01, 't', 0x01, 0xff), 5, "property" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		CHECK_EQ_INT(mqtt_decode_publish(bad[i].v, bad[i].flags, bad[i].p, bad[i].n, &m, why,
						 sizeof(why)), -EPROTO);
		if (!strstr(why, bad[i].why))
			fprintf(stderr, "case %zu: why \"%s\", expected \"%s\"\n", i, why, bad[i].why);
		CHECK(strstr(why, bad[i].why));
	}
}

TEST(publish_out)
{
	struct buf b = BUF_INIT;

	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V311, "t", "hi", 2, 1, false, 10), 0);
	CHECK_BYTES(&b, 0x32, 0x07, 0x00, 0x01, 't', 0x00, 0x0a, 'h', 'i');
	buf_reset(&b);
	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V5, "a/s", "x", 1, 0, true, 0), 0);
	CHECK_BYTES(&b, 0x31, 0x07, 0x00, 0x03, 'a', '/', 's', 0x00, 'x');
	buf_reset(&b);
	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V5, "a/#", "x", 1, 0, false, 0), -EINVAL);
	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V5, "a", "x", 1, 2, false, 1), -EINVAL);
	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V5, "a", "x", 1, 1, false, 0), -EINVAL);
	CHECK_EQ_INT(mqtt_encode_publish(&b, MQTT_V5, "", "x", 1, 0, false, 0), -EINVAL);
	CHECK_EQ_INT(b.len, 0);
	buf_release(&b);
}

TEST(acks_ping_disconnect)
{
	struct buf b = BUF_INIT;
	struct mqtt_ack a;
	struct mqtt_disconnect d;
	char why[128];

	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V5, MQTT_PUBACK, 5, 0), 0);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V5, MQTT_PUBACK, 5, 0x10), 0);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V311, MQTT_PUBREC, 0x0102, 0x80), 0);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V311, MQTT_PUBREL, 5, 0), 0);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V311, MQTT_PUBCOMP, 5, 0), 0);
	CHECK_EQ_INT(mqtt_encode_pingreq(&b), 0);
	CHECK_EQ_INT(mqtt_encode_disconnect(&b, MQTT_V5, 0x04), 0);
	CHECK_EQ_INT(mqtt_encode_disconnect(&b, MQTT_V311, 0x04), 0);
	CHECK_BYTES(&b, 0x40, 0x02, 0x00, 0x05, 0x40, 0x03, 0x00, 0x05, 0x10, 0x50, 0x02, 0x01, 0x02,
		    0x62, 0x02, 0x00, 0x05, 0x70, 0x02, 0x00, 0x05, 0xc0, 0x00, 0xe0, 0x01, 0x04,
		    0xe0, 0x00);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V5, MQTT_PUBACK, 0, 0), -EINVAL);
	CHECK_EQ_INT(mqtt_encode_ack(&b, MQTT_V5, MQTT_PUBLISH, 1, 0), -EINVAL);

	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBREL, 0x2, H(0x00, 0x05), 2, &a, why,
				     sizeof(why)), 0);
	CHECK_EQ_INT(a.packet_id, 5);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V5, MQTT_PUBACK, 0, H(0x00, 0x05, 0x10), 3, &a, why,
				     sizeof(why)), 0);
	CHECK_EQ_INT(a.reason, 0x10);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V5, MQTT_PUBREL, 0x2, H(0x00, 0x05, 0x92, 0x05, 0x1f, 0x00,
				     0x02, 'n', 'o'), 9, &a, why, sizeof(why)), 0);
	CHECK_EQ_INT(a.reason, 0x92);
	CHECK(a.reason_string.len == 2);
	/* Malformed: PUBREL without its flags, PUBACK with flags, id 0, short,
	 * v3.1.1 with a reason code, a v5 property overrun. */
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBREL, 0, H(0x00, 0x05), 2, &a, why,
				     sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBACK, 2, H(0x00, 0x05), 2, &a, why,
				     sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBACK, 0, H(0x00, 0x00), 2, &a, why,
				     sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBACK, 0, H(0x00), 1, &a, why, sizeof(why)),
		     -EPROTO);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V311, MQTT_PUBACK, 0, H(0x00, 0x01, 0x00), 3, &a, why,
				     sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_ack(MQTT_V5, MQTT_PUBACK, 0, H(0x00, 0x01, 0x00, 0x04, 0x1f), 5, &a,
				     why, sizeof(why)), -EPROTO);

	CHECK_EQ_INT(mqtt_decode_disconnect(MQTT_V311, NULL, 0, &d, why, sizeof(why)), 0);
	CHECK_EQ_INT(mqtt_decode_disconnect(MQTT_V311, H(0x00), 1, &d, why, sizeof(why)), -EPROTO);
	CHECK_EQ_INT(mqtt_decode_disconnect(MQTT_V5, H(0x8b), 1, &d, why, sizeof(why)), 0);
	CHECK_EQ_STR(mqtt_reason_str(d.reason), "server shutting down");
	CHECK_EQ_INT(mqtt_decode_disconnect(MQTT_V5, H(0x8e, 0x05, 0x1f, 0x00, 0x02, 'h', 'i'), 7, &d,
					    why, sizeof(why)), 0);
	CHECK(d.reason_string.len == 2);
	CHECK_EQ_INT(mqtt_decode_disconnect(MQTT_V5, H(0x8e, 0x05, 0x1f), 3, &d, why, sizeof(why)),
		     -EPROTO);
	buf_release(&b);
}

/* Decode every prefix of a valid body from an exactly-sized copy: under
 * AddressSanitizer a read past the end is caught; every result is 0 or
 * -EPROTO. */
static int decode_any(int v, int type, uint8_t flags, const uint8_t *p, size_t n)
{
	char why[128];

	switch (type) {
	case MQTT_CONNACK: { struct mqtt_connack a; return mqtt_decode_connack(v, p, n, &a, why, sizeof(why)); }
	case MQTT_SUBACK: { struct mqtt_suback s; return mqtt_decode_suback(v, p, n, &s, why, sizeof(why)); }
	case MQTT_PUBLISH: {
		struct mqtt_publish m;
		struct mqtt_str s;
		int rc = mqtt_decode_publish(v, flags, p, n, &m, why, sizeof(why));

		if (!rc)
			(void)mqtt_user_property(&m, "id", &s);
		return rc;
	}
	case MQTT_DISCONNECT: { struct mqtt_disconnect d; return mqtt_decode_disconnect(v, p, n, &d, why, sizeof(why)); }
	default: { struct mqtt_ack a; return mqtt_decode_ack(v, type, flags, p, n, &a, why, sizeof(why)); }
	}
}

TEST(truncations_never_read_past_the_end)
{
	const struct { int v, type; uint8_t flags; const uint8_t *p; size_t n; } ok[] = {
		{ MQTT_V5, MQTT_CONNACK, 0, B(0x00, 0x00, 0x13, 0x21, 0x00, 0x0a, 0x27, 0x00, 0x00, 0x10,
		  0x00, 0x12, 0x00, 0x03, 'c', 'i', 'd', 0x1f, 0x00, 0x02, 'o', 'k'), 22 },
		{ MQTT_V5, MQTT_SUBACK, 0, B(0x00, 0x01, 0x00, 0x01, 0x87), 5 },
		{ MQTT_V5, MQTT_PUBLISH, 0xd, B(0x00, 0x03, 's', '/', '1', 0x12, 0x34, 0x0a, 0x26, 0x00,
		  0x02, 'i', 'd', 0x00, 0x03, 'm', '-', '7', '{', '}'), 20 },
		{ MQTT_V311, MQTT_PUBLISH, 0x2, B(0x00, 0x01, 't', 0x00, 0x0a, 'h', 'i'), 7 },
		{ MQTT_V5, MQTT_PUBREL, 0x2, B(0x00, 0x05, 0x92, 0x05, 0x1f, 0x00, 0x02, 'n', 'o'), 9 },
		{ MQTT_V5, MQTT_DISCONNECT, 0, B(0x8e, 0x05, 0x1f, 0x00, 0x02, 'h', 'i'), 7 },
	};
	int refused = 0;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		CHECK_EQ_INT(decode_any(ok[i].v, ok[i].type, ok[i].flags, ok[i].p, ok[i].n), 0);
		for (size_t n = 0; n < ok[i].n; n++) {
			uint8_t *copy = malloc(n ? n : 1);
			int rc;

			memcpy(copy, ok[i].p, n);
			rc = decode_any(ok[i].v, ok[i].type, ok[i].flags, copy, n);
			CHECK(rc == 0 || rc == -EPROTO);
			refused += rc == -EPROTO;
			/* Every byte flipped, too: never a crash. */
			for (size_t j = 0; j < n; j++) {
				uint8_t was = copy[j];

				copy[j] ^= 0xff;
				rc = decode_any(ok[i].v, ok[i].type, ok[i].flags, copy, n);
				CHECK(rc == 0 || rc == -EPROTO);
				copy[j] = was;
			}
			free(copy);
		}
	}
	/* Most prefixes are not whole packets. */
	CHECK(refused > 50);
}

int main(void)
{
	RUN(varints_as_the_spec_lists_them);
	RUN(frames);
	RUN(connect_v311_and_v5);
	RUN(connack);
	RUN(subscribe_and_suback);
	RUN(publish_in);
	RUN(publish_out);
	RUN(acks_ping_disconnect);
	RUN(truncations_never_read_past_the_end);
	TEST_END();
}
