/* test_mqtt_client.c - the agent's own MQTT session against a fake broker
 * written here on a socketpair: CONNECT, CONNACK, SUBSCRIBE; messages handed
 * over without any acknowledgement until the user gives it; PUBCOMP only on
 * request; keepalive and connect timeouts on the test clock; malformed
 * packets of every kind drop the connection with a reason. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mqtt_client.h"
#include "test.h"
#include "test_clock.h"

#define B(...) ((const uint8_t[]){ __VA_ARGS__ }), sizeof((const uint8_t[]){ __VA_ARGS__ })

struct ev {
	int subscribed, messages, released, closed, published;
	bool session_present;
	uint8_t codes[8];
	size_t ncodes;
	struct mqtt_publish last;
	char payload[64], topic[64];
	uint16_t last_released, last_published;
	char why[300];
};

static void on_subscribed(struct mqtt_client *c, void *arg, bool sp, const uint8_t *codes, size_t n)
{
	struct ev *e = arg;

	e->subscribed++;
	e->session_present = sp;
	e->ncodes = n < 8 ? n : 8;
	memcpy(e->codes, codes, e->ncodes);
}

static void on_message(struct mqtt_client *c, void *arg, const struct mqtt_publish *m)
{
	struct ev *e = arg;

	e->messages++;
	e->last = *m;
	snprintf(e->payload, sizeof(e->payload), "%.*s", (int)m->payload_len, (const char *)m->payload);
	snprintf(e->topic, sizeof(e->topic), "%.*s", (int)m->topic.len, m->topic.p);
}

static void on_released(struct mqtt_client *c, void *arg, uint16_t id)
{
	struct ev *e = arg;

	e->released++;
	e->last_released = id;
}

static void on_published(struct mqtt_client *c, void *arg, uint16_t id, uint8_t reason)
{
	struct ev *e = arg;

	e->published++;
	e->last_published = id;
}

static void on_closed(struct mqtt_client *c, void *arg, const char *why)
{
	struct ev *e = arg;

	e->closed++;
	snprintf(e->why, sizeof(e->why), "%s", why);
}

static const struct mqtt_client_ops ops = {
	.subscribed = on_subscribed, .message = on_message, .released = on_released,
	.published = on_published, .closed = on_closed,
};

static const struct mqtt_sub_topic topics[] = { { "s/#", 1 }, { "deny/#", 2 } };

struct fx {
	struct loop *l;
	struct mqtt_client *c;
	struct mqtt_client_conf conf;
	struct ev e;
	int broker;             /* the fake broker's end */
	uint8_t pkt[4096];      /* the last packet read from the client */
	size_t pkt_len;
};

static void fx_init(struct fx *f, int version)
{
	memset(f, 0, sizeof(*f));
	tc_install(0);
	f->conf = (struct mqtt_client_conf){
		.version = version, .client_id = "gw-1-sensors", .keepalive_s = 30,
		.session_expiry_s = 3600, .receive_maximum = 4, .max_packet_size = 1024,
		.connect_timeout_ms = 5000, .topics = topics, .n_topics = 2,
	};
	if (loop_init(&f->l) || mqtt_client_new(f->l, &f->conf, &ops, &f->e, &f->c))
		abort();
}

static int fx_attach(struct fx *f)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return -errno;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	f->broker = sv[1];
	return mqtt_client_attach(f->c, sv[0]);
}

static void fx_release(struct fx *f)
{
	mqtt_client_free(f->c);
	if (f->broker >= 0)
		close(f->broker);
	loop_free(f->l);
	tc_uninstall();
}

static void fx_send(struct fx *f, const uint8_t *p, size_t n)
{
	if (write(f->broker, p, n) != (ssize_t)n)
		abort();
	/* Let the client read it. */
	for (int i = 0; i < 5; i++)
		loop_turn(f->l, 0);
}

/* Read one whole packet the client sent; false when none comes. */
static bool fx_recv(struct fx *f, int wait_ms)
{
	size_t have = 0;

	for (;;) {
		struct pollfd p = { f->broker, POLLIN, 0 };
		struct mqtt_frame fr;
		int rc = have >= 2 ? mqtt_frame(f->pkt, have, 0, &fr) : 0;

		if (rc == 1) {
			f->pkt_len = fr.hdr_len + fr.body_len;
			return true;
		}
		loop_turn(f->l, 0);
		if (poll(&p, 1, wait_ms) <= 0)
			return false;
		/* One byte at a time: never beyond this packet. */
		if (read(f->broker, f->pkt + have, 1) != 1)
			return false;
		have++;
	}
}

static bool fx_got(struct fx *f, const uint8_t *want, size_t n)
{
	if (!fx_recv(f, 2000)) {
		fprintf(stderr, "no packet from the client\n");
		return false;
	}
	if (f->pkt_len != n || memcmp(f->pkt, want, n)) {
		fprintf(stderr, "got:");
		for (size_t i = 0; i < f->pkt_len; i++)
			fprintf(stderr, " %02x", f->pkt[i]);
		fprintf(stderr, "\n");
		return false;
	}
	return true;
}

/* CONNECT, CONNACK, SUBSCRIBE, SUBACK (QoS 1 granted, the second refused). */
static bool fx_session(struct fx *f, bool session_present)
{
	if (fx_attach(f))
		return false;
	if (!fx_recv(f, 2000) || f->pkt[0] != 0x10)
		return false;
	if (f->conf.version == MQTT_V5)
		fx_send(f, B(0x20, 0x03, session_present, 0x00, 0x00));
	else
		fx_send(f, B(0x20, 0x02, session_present, 0x00));
	if (!fx_recv(f, 2000) || f->pkt[0] != 0x82)
		return false;
	if (f->conf.version == MQTT_V5)
		fx_send(f, B(0x90, 0x05, f->pkt[2], f->pkt[3], 0x00, 0x01, 0x87));
	else
		fx_send(f, B(0x90, 0x04, f->pkt[2], f->pkt[3], 0x01, 0x80));
	return mqtt_client_up(f->c);
}

TEST(connect_and_subscribe_v5)
{
	struct fx f;

	fx_init(&f, MQTT_V5);
	REQUIRE(fx_attach(&f) == 0);
	/* CONNECT: v5, clean start off, keepalive 30, session expiry 3600,
	 * receive maximum 4, maximum packet size 1024. */
	CHECK(fx_got(&f, B(0x10, 0x26, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x1e,
			   0x0d, 0x11, 0x00, 0x00, 0x0e, 0x10, 0x21, 0x00, 0x04, 0x27, 0x00, 0x00, 0x04,
			   0x00, 0x00, 0x0c, 'g', 'w', '-', '1', '-', 's', 'e', 'n', 's', 'o', 'r', 's')));
	CHECK(!mqtt_client_up(f.c));
	fx_send(&f, B(0x20, 0x03, 0x01, 0x00, 0x00));
	CHECK(fx_got(&f, B(0x82, 0x12, 0x00, 0x01, 0x00, 0x00, 0x03, 's', '/', '#', 0x01,
			   0x00, 0x06, 'd', 'e', 'n', 'y', '/', '#', 0x02)));
	fx_send(&f, B(0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x87));
	CHECK(mqtt_client_up(f.c));
	CHECK_EQ_INT(f.e.subscribed, 1);
	CHECK(f.e.session_present);
	CHECK_EQ_INT(f.e.ncodes, 2);
	CHECK_EQ_INT(f.e.codes[1], 0x87);
	CHECK_EQ_INT(mqtt_client_generation(f.c), 1);
	fx_release(&f);
}

TEST(nothing_is_acknowledged_until_the_user_says_so)
{
	struct fx f;

	fx_init(&f, MQTT_V5);
	REQUIRE(fx_session(&f, false));
	/* QoS 1, id 7 and QoS 2, id 8. */
	fx_send(&f, B(0x32, 0x08, 0x00, 0x03, 's', '/', '1', 0x00, 0x07, 0x00));
	fx_send(&f, B(0x34, 0x09, 0x00, 0x03, 's', '/', '2', 0x00, 0x08, 0x00, 'x'));
	CHECK_EQ_INT(f.e.messages, 2);
	CHECK_EQ_STR(f.e.topic, "s/2");
	CHECK_EQ_INT(f.e.last.qos, 2);
	CHECK_EQ_INT(mqtt_client_inflight(f.c), 2);
	CHECK(!fx_recv(&f, 50));                       /* no PUBACK, no PUBREC */
	CHECK_EQ_INT(mqtt_client_ack(f.c, 8), 0);
	CHECK(fx_got(&f, B(0x50, 0x02, 0x00, 0x08)));  /* PUBREC */
	CHECK_EQ_INT(mqtt_client_ack(f.c, 7), 0);
	CHECK(fx_got(&f, B(0x40, 0x02, 0x00, 0x07)));  /* PUBACK */
	CHECK_EQ_INT(mqtt_client_ack(f.c, 7), -ENOENT);
	CHECK_EQ_INT(mqtt_client_ack(f.c, 9), -ENOENT);
	/* PUBREL: handed over, PUBCOMP only on request. */
	fx_send(&f, B(0x62, 0x02, 0x00, 0x08));
	CHECK_EQ_INT(f.e.released, 1);
	CHECK_EQ_INT(f.e.last_released, 8);
	CHECK(!fx_recv(&f, 50));
	CHECK_EQ_INT(mqtt_client_complete(f.c, 8), 0);
	CHECK(fx_got(&f, B(0x70, 0x02, 0x00, 0x08)));
	CHECK_EQ_INT(mqtt_client_complete(f.c, 8), -ENOENT);
	CHECK_EQ_INT(mqtt_client_inflight(f.c), 0);
	/* A PUBREL for an id PUBREC'd on an earlier connection is handed over too. */
	fx_send(&f, B(0x62, 0x02, 0x00, 0x21));
	CHECK_EQ_INT(f.e.last_released, 0x21);
	CHECK_EQ_INT(f.e.closed, 0);
	fx_release(&f);
}

TEST(acknowledgements_belong_to_their_connection)
{
	struct fx f;

	fx_init(&f, MQTT_V311);
	REQUIRE(fx_session(&f, true));
	fx_send(&f, B(0x32, 0x06, 0x00, 0x01, 't', 0x00, 0x05, 'a'));
	CHECK_EQ_INT(f.e.messages, 1);
	close(f.broker);
	for (int i = 0; i < 5; i++)
		loop_turn(f.l, 0);
	CHECK_EQ_INT(f.e.closed, 1);
	CHECK_EQ_STR(f.e.why, "broker closed the connection");
	CHECK_EQ_INT(mqtt_client_ack(f.c, 5), -ENOTCONN);
	REQUIRE(fx_session(&f, true));
	CHECK_EQ_INT(mqtt_client_generation(f.c), 2);
	/* Id 5 is not waiting on this connection: nothing is sent. */
	CHECK_EQ_INT(mqtt_client_ack(f.c, 5), -ENOENT);
	CHECK(!fx_recv(&f, 50));
	fx_release(&f);
}

TEST(byte_by_byte)
{
	const uint8_t pub[] = { 0x30, 0x06, 0x00, 0x01, 't', 'a', 'b', 'c' };
	struct fx f;

	fx_init(&f, MQTT_V311);
	REQUIRE(fx_session(&f, false));
	for (size_t i = 0; i < sizeof(pub); i++)
		fx_send(&f, pub + i, 1);
	CHECK_EQ_INT(f.e.messages, 1);
	CHECK_EQ_STR(f.e.payload, "abc");
	/* Two in one write. */
	fx_send(&f, B(0x30, 0x04, 0x00, 0x01, 't', '1', 0x30, 0x04, 0x00, 0x01, 't', '2'));
	CHECK_EQ_INT(f.e.messages, 3);
	CHECK_EQ_STR(f.e.payload, "2");
	fx_release(&f);
}

TEST(keepalive_on_the_test_clock)
{
	struct fx f;

	fx_init(&f, MQTT_V5);
	REQUIRE(fx_session(&f, false));
	tc_advance(f.l, 29000);
	CHECK(!fx_recv(&f, 0));
	tc_advance(f.l, 1000);
	CHECK(fx_got(&f, B(0xc0, 0x00)));
	fx_send(&f, B(0xd0, 0x00));
	tc_advance(f.l, 30000);
	CHECK(fx_got(&f, B(0xc0, 0x00)));
	/* No answer within keepalive: the connection is dropped. */
	tc_advance(f.l, 29000);
	CHECK_EQ_INT(f.e.closed, 0);
	tc_advance(f.l, 1000);
	CHECK_EQ_INT(f.e.closed, 1);
	CHECK(strstr(f.e.why, "PINGRESP"));
	fx_release(&f);
}

TEST(connect_timeout_and_refusal)
{
	struct fx f;

	fx_init(&f, MQTT_V5);
	REQUIRE(fx_attach(&f) == 0);
	tc_advance(f.l, 4999);
	CHECK_EQ_INT(f.e.closed, 0);
	tc_advance(f.l, 1);
	CHECK_EQ_INT(f.e.closed, 1);
	CHECK(strstr(f.e.why, "no CONNACK"));
	close(f.broker);
	REQUIRE(fx_attach(&f) == 0);
	REQUIRE(fx_recv(&f, 2000));
	fx_send(&f, B(0x20, 0x08, 0x00, 0x87, 0x05, 0x1f, 0x00, 0x02, 'n', 'o'));
	CHECK_EQ_INT(f.e.closed, 2);
	CHECK_EQ_STR(f.e.why, "broker refused the connection: not authorized (no)");
	close(f.broker);
	/* SUBACK never comes. */
	REQUIRE(fx_attach(&f) == 0);
	REQUIRE(fx_recv(&f, 2000));
	fx_send(&f, B(0x20, 0x03, 0x00, 0x00, 0x00));
	tc_advance(f.l, 5000);
	CHECK_EQ_INT(f.e.closed, 3);
	CHECK(strstr(f.e.why, "no SUBACK"));
	fx_release(&f);
}

TEST(malformed_packets_drop_the_connection_with_a_reason)
{
	const struct { const uint8_t *p; size_t n; const char *why; uint8_t reason; } bad[] = {
		{ B(0x30, 0xff, 0xff, 0xff, 0xff, 0x01), "malformed fixed header", 0x81 },
		{ B(0x00, 0x00), "malformed fixed header", 0x81 },
		{ B(0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01), "QoS 3", 0x81 },
		{ B(0x30, 0x03, 0x00, 0x05, 't'), "overruns", 0x81 },
		{ B(0x32, 0x04, 0x00, 0x01, 't', 0x00), "packet identifier", 0x81 },
		{ B(0x30, 0x05, 0x00, 0x01, 't', 0x03, 0x23), "properties", 0x81 },
		{ B(0x30, 0x06, 0x00, 0x01, 't', 0x02, 0x23, 0x00), "property", 0x81 },
		{ B(0x20, 0x03, 0x00, 0x00, 0x00), "second CONNACK", 0x82 },
		{ B(0x90, 0x04, 0x00, 0x01, 0x00, 0x01), "SUBACK without SUBSCRIBE", 0x82 },
		{ B(0x40, 0x02, 0x00, 0x09), "not in flight", 0x82 },
		{ B(0x50, 0x02, 0x00, 0x09), "PUBREC", 0x82 },
		{ B(0x60, 0x02, 0x00, 0x09), "flags", 0x81 },
		{ B(0xd0, 0x01, 0x00), "PINGRESP", 0x81 },
		{ B(0x80, 0x00), "unexpected packet type", 0x82 },
		{ B(0x30, 0x80, 0x08), "max_packet_size", 0x95 },
		{ B(0xe0, 0x02, 0x8b, 0x09), "DISCONNECT properties", 0x81 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fx f;

		fx_init(&f, MQTT_V5);
		REQUIRE(fx_session(&f, false));
		fx_send(&f, bad[i].p, bad[i].n);
		CHECK_EQ_INT(f.e.closed, 1);
		if (!strstr(f.e.why, bad[i].why))
			fprintf(stderr, "case %zu: why \"%s\", expected \"%s\"\n", i, f.e.why, bad[i].why);
		CHECK(strstr(f.e.why, bad[i].why));
		/* v5: a DISCONNECT that says why, then the end of the stream. */
		CHECK(fx_recv(&f, 1000) && f.pkt[0] == 0xe0 && f.pkt[1] == 1 && f.pkt[2] == bad[i].reason);
		CHECK(!mqtt_client_up(f.c));
		fx_release(&f);
	}
}

TEST(broker_reasons_and_limits)
{
	struct fx f;

	fx_init(&f, MQTT_V5);
	REQUIRE(fx_session(&f, false));
	fx_send(&f, B(0xe0, 0x01, 0x8e));
	CHECK_EQ_STR(f.e.why, "broker disconnected: session taken over");
	close(f.broker);
	/* More unacknowledged messages than receive_maximum (4): counted,
	 * handed over, the connection kept. */
	REQUIRE(fx_session(&f, false));
	for (uint8_t id = 1; id <= 5; id++)
		fx_send(&f, (const uint8_t[]){ 0x32, 0x06, 0x00, 0x01, 't', 0x00, id, 0x00 }, 8);
	CHECK_EQ_INT(f.e.messages, 5);
	CHECK_EQ_INT(mqtt_client_over_window(f.c), 1);
	CHECK_EQ_INT(mqtt_client_inflight(f.c), 5);
	CHECK(mqtt_client_up(f.c));
	CHECK_EQ_INT(mqtt_client_ack(f.c, 5), 0);
	CHECK(fx_got(&f, B(0x40, 0x02, 0x00, 0x05)));
	close(f.broker);
	/* An id reused while its QoS 2 exchange is open. */
	REQUIRE(fx_session(&f, false));
	fx_send(&f, B(0x34, 0x06, 0x00, 0x01, 't', 0x00, 0x03, 0x00));
	REQUIRE(mqtt_client_ack(f.c, 3) == 0);
	fx_send(&f, B(0x62, 0x02, 0x00, 0x03));
	fx_send(&f, B(0x32, 0x06, 0x00, 0x01, 't', 0x00, 0x03, 0x00));
	CHECK(strstr(f.e.why, "still in use"));
	CHECK_EQ_INT(f.e.closed, 2);
	fx_release(&f);
}

TEST(publish_out_qos1)
{
	struct fx f;
	int id;

	fx_init(&f, MQTT_V5);
	CHECK_EQ_INT(mqtt_client_publish(f.c, "a/state", "{}", 2, 1, true), -ENOTCONN);
	REQUIRE(fx_session(&f, false));
	id = mqtt_client_publish(f.c, "a/state", "{}", 2, 1, true);
	CHECK_EQ_INT(id, 1);
	CHECK(fx_got(&f, B(0x33, 0x0e, 0x00, 0x07, 'a', '/', 's', 't', 'a', 't', 'e', 0x00, 0x01, 0x00,
			   '{', '}')));
	fx_send(&f, B(0x40, 0x02, 0x00, 0x01));
	CHECK_EQ_INT(f.e.published, 1);
	CHECK_EQ_INT(f.e.last_published, 1);
	CHECK_EQ_INT(mqtt_client_publish(f.c, "a/#", "{}", 2, 0, false), -EINVAL);
	fx_release(&f);
}

int main(void)
{
	RUN(connect_and_subscribe_v5);
	RUN(nothing_is_acknowledged_until_the_user_says_so);
	RUN(acknowledgements_belong_to_their_connection);
	RUN(byte_by_byte);
	RUN(keepalive_on_the_test_clock);
	RUN(connect_timeout_and_refusal);
	RUN(malformed_packets_drop_the_connection_with_a_reason);
	RUN(broker_reasons_and_limits);
	RUN(publish_out_qos1);
	TEST_END();
}
