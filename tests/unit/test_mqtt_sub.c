/* test_mqtt_sub.c - the mqtt_sub driver on the real input core and queue
 * (input_rig.h, the power-cut VFS to fail a commit, the test clock), with a
 * fake broker written here on a loopback socket: no PUBACK before the
 * commit, PUBACKs after it in order; a failed commit sends none and stores
 * the messages again; QoS 2 redeliveries are not stored twice and PUBCOMP
 * waits for the release's commit; DUP redeliveries name what they repeat;
 * reused packet ids never lose a message; bad payloads are dead-lettered and
 * acknowledged; reconnects back off; bad packets drop the connection. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "input_rig.h"
#include "mqtt_proto.h"
#include "status.h"
#include "test.h"
#include "test_clock.h"

static char dir[256];

/* ---- the fake broker ---------------------------------------------------- */

struct fb {
	int lfd, fd, port;
	uint8_t pkt[8192];
	size_t len;
};

static int fb_listen(struct fb *b)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (b->lfd < 0 || bind(b->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(b->lfd, 4) ||
	    getsockname(b->lfd, (struct sockaddr *)&a, &al))
		return -1;
	b->port = ntohs(a.sin_port);
	return 0;
}

static void fb_close(struct fb *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

static void fb_release(struct fb *b)
{
	fb_close(b);
	close(b->lfd);
}

/* Is a connection waiting (without waiting for one)? */
static bool fb_pending(struct fb *b)
{
	struct pollfd p = { b->lfd, POLLIN, 0 };

	return poll(&p, 1, 0) == 1;
}

static bool fb_accept(struct rig *r, struct fb *b)
{
	int64_t limit = tc_real_ms() + 10000;

	while (!fb_pending(b)) {
		if (tc_real_ms() > limit)
			return false;
		loop_turn(r->a.loop, 10);
	}
	fb_close(b);
	b->fd = accept(b->lfd, NULL, NULL);
	if (b->fd >= 0)
		setsockopt(b->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	return b->fd >= 0;
}

static void fb_send(struct rig *r, struct fb *b, const void *p, size_t n)
{
	if (write(b->fd, p, n) != (ssize_t)n)
		abort();
	/* Loopback delivers at once; the turns return as soon as the
	 * agent's socket is readable (Nagle is off on both ends). */
	for (int i = 0; i < 4; i++)
		loop_turn(r->a.loop, 10);
}

/* One packet from the agent, or false when none comes within wait_ms. */
static bool fb_recv(struct rig *r, struct fb *b, int wait_ms)
{
	size_t have = 0;
	int64_t limit = tc_real_ms() + wait_ms;

	for (;;) {
		struct pollfd p = { b->fd, POLLIN, 0 };
		struct mqtt_frame f;

		if (have >= 2 && mqtt_frame(b->pkt, have, 0, &f) == 1) {
			b->len = f.hdr_len + f.body_len;
			return true;
		}
		loop_turn(r->a.loop, 0);
		if (poll(&p, 1, 5) <= 0) {
			if (tc_real_ms() > limit)
				return false;
			continue;
		}
		if (read(b->fd, b->pkt + have, 1) != 1)
			return false;
		have++;
	}
}

/* The next packet is an acknowledgement of this type and id. */
static bool fb_ack(struct rig *r, struct fb *b, uint8_t first, uint16_t id)
{
	if (!fb_recv(r, b, 2000)) {
		fprintf(stderr, "no packet (expected 0x%02x for id %u)\n", first, id);
		return false;
	}
	if (b->pkt[0] != first || b->pkt[2] != id >> 8 || b->pkt[3] != (id & 0xff)) {
		fprintf(stderr, "got 0x%02x for id %u, expected 0x%02x for id %u\n", b->pkt[0],
			b->pkt[2] << 8 | b->pkt[3], first, id);
		return false;
	}
	return true;
}

/* Nothing from the agent for a while (the test clock standing still). */
static bool fb_quiet(struct rig *r, struct fb *b)
{
	if (fb_recv(r, b, 100)) {
		fprintf(stderr, "unexpected packet 0x%02x\n", b->pkt[0]);
		return false;
	}
	return true;
}

/* CONNECT in, CONNACK, SUBSCRIBE in, SUBACK with codes. */
static bool fb_session(struct rig *r, struct fb *b, bool present, uint8_t code2)
{
	if (!fb_accept(r, b) || !fb_recv(r, b, 2000) || b->pkt[0] != 0x10)
		return false;
	fb_send(r, b, (const uint8_t[]){ 0x20, 0x03, present, 0x00, 0x00 }, 5);
	if (!fb_recv(r, b, 2000) || b->pkt[0] != 0x82)
		return false;
	fb_send(r, b, (const uint8_t[]){ 0x90, 0x05, b->pkt[2], b->pkt[3], 0x00, 0x01, code2 }, 7);
	return true;
}

static void fb_publish(struct rig *r, struct fb *b, int qos, bool dup, uint16_t id,
		       const char *topic, const char *payload, const char *prop, const char *val)
{
	struct buf body = BUF_INIT, pkt = BUF_INIT, props = BUF_INIT;
	uint8_t tl[2] = { 0, (uint8_t)strlen(topic) };

	buf_add(&body, tl, 2);
	buf_adds(&body, topic);
	if (qos) {
		uint8_t i[2] = { (uint8_t)(id >> 8), (uint8_t)id };

		buf_add(&body, i, 2);
	}
	if (prop) {
		uint8_t h[3] = { 0x26, 0, (uint8_t)strlen(prop) }, v[2] = { 0, (uint8_t)strlen(val) };

		buf_add(&props, h, 3);
		buf_adds(&props, prop);
		buf_add(&props, v, 2);
		buf_adds(&props, val);
	}
	mqtt_put_varint(&body, (uint32_t)props.len);
	buf_add(&body, props.p, props.len);
	buf_adds(&body, payload);
	buf_addc(&pkt, (char)(0x30 | (dup ? 8 : 0) | qos << 1));
	mqtt_put_varint(&pkt, (uint32_t)body.len);
	buf_add(&pkt, body.p, body.len);
	fb_send(r, b, pkt.p, pkt.len);
	buf_release(&body);
	buf_release(&pkt);
	buf_release(&props);
}

/* ---- the rig -------------------------------------------------------------- */

static int rig_init(struct rig *r, struct fb *b, const char *keys)
{
	char text[2048], db[512];

	tc_now_ms = 1000000;
	tc_install(0);
	if (fb_listen(b))
		return -1;
	snprintf(text, sizeof(text),
		 "[agent]\nid = gw-01\nstate_dir = %s\n[queue]\ncommit_interval = 1s\n"
		 "[input sensors]\ndriver = mqtt_sub\nurl = mqtt://127.0.0.1:%d\n"
		 "topic = filter=s/# qos=1\ntopic = filter=q/# qos=2\nparser = json\n"
		 "reconnect_base = 1s\nreconnect_max = 4s\nreceive_maximum = 8\n%s"
		 "[output lake]\ntype = mqtt\n", dir, b->port, keys);
	snprintf(db, sizeof(db), "%s/queue.db", dir);
	return input_rig_init(r, text, db, true, NULL);
}

static void rig_release(struct rig *r, struct fb *b)
{
	input_rig_release(r);
	fb_release(b);
	crashvfs_reset();
	tc_uninstall();
}

struct seen {
	int n;
	char key[16][200];
	char data[16][512];
};

static int collect(const struct qrec *q, void *arg)
{
	struct seen *s = arg;

	if (strcmp(q->stream, "sensors"))
		return 0;
	if (s->n < 16) {
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", q->key ? q->key : "");
		snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)q->len, q->data);
	}
	s->n++;
	return 0;
}

static struct seen records(struct rig *r)
{
	struct seen s = { 0 };

	if (queue_read(r->a.q, 0, 100, collect, &s) < 0)
		s.n = -1;
	return s;
}

/* ---- the tests ------------------------------------------------------------- */

TEST(puback_only_after_the_commit_and_in_order)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	CHECK(snapshot(&r).connected);
	fb_publish(&r, &b, 1, false, 3, "s/a", "{\"v\":1}", NULL, NULL);
	fb_publish(&r, &b, 1, false, 1, "s/b", "{\"v\":2}", NULL, NULL);
	fb_publish(&r, &b, 0, false, 0, "s/c", "{\"v\":3}", NULL, NULL);
	fb_publish(&r, &b, 1, false, 2, "s/d", "{\"v\":4}", NULL, NULL);
	CHECK_EQ_INT(input_ticket(r.in), 4);
	CHECK(fb_quiet(&r, &b));                     /* appended, not committed */
	tc_advance(r.a.loop, 999);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 1);                     /* the commit */
	CHECK(fb_ack(&r, &b, 0x40, 3));
	CHECK(fb_ack(&r, &b, 0x40, 1));
	CHECK(fb_ack(&r, &b, 0x40, 2));
	CHECK(fb_quiet(&r, &b));
	s = records(&r);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.key[0], "mqtt/sensors/0");
	CHECK_EQ_STR(s.key[3], "mqtt/sensors/3");
	CHECK_EQ_STR(s.data[0], "{\"topic\":\"s/a\",\"qos\":1,\"packet_id\":3,\"dup\":false,"
		     "\"retain\":false,\"payload\":{\"v\":1}}");
	CHECK_EQ_STR(s.data[2], "{\"topic\":\"s/c\",\"qos\":0,\"dup\":false,\"retain\":false,"
		     "\"payload\":{\"v\":3}}");
	CHECK(strstr(snapshot(&r).state, "4 received, 3 acknowledged, 0 awaiting commit"));
	rig_release(&r, &b);
}

TEST(a_failed_commit_sends_no_puback_and_stores_them_again)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":1}", NULL, NULL);
	fb_publish(&r, &b, 1, false, 2, "s/a", "{\"v\":2}", NULL, NULL);
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 1000);                  /* the commit fails */
	CHECK(fb_quiet(&r, &b));
	CHECK_EQ_INT(records(&r).n, 0);
	/* One more while records are refused: held, stored after the others. */
	fb_publish(&r, &b, 1, false, 3, "s/a", "{\"v\":3}", NULL, NULL);
	CHECK(strstr(snapshot(&r).state, "3 awaiting commit"));
	tc_advance(r.a.loop, 1500);                  /* inputs recover after 1 s: emitted again */
	CHECK(fb_quiet(&r, &b));
	CHECK(strstr(snapshot(&r).state, "3 awaiting commit"));
	tc_advance(r.a.loop, 500);                   /* committed */
	CHECK(fb_ack(&r, &b, 0x40, 1));
	CHECK(fb_ack(&r, &b, 0x40, 2));
	CHECK(fb_ack(&r, &b, 0x40, 3));
	s = records(&r);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.key[0], "mqtt/sensors/0");
	CHECK_EQ_STR(s.key[1], "mqtt/sensors/1");
	CHECK_EQ_STR(s.key[2], "mqtt/sensors/2");
	CHECK(strstr(s.data[1], "\"payload\":{\"v\":2}"));
	CHECK(strstr(s.data[2], "\"payload\":{\"v\":3}"));
	/* The next message gets the next key. */
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":4}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	s = records(&r);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.key[3], "mqtt/sensors/3");
	rig_release(&r, &b);
}

TEST(qos2_redelivery_is_not_stored_twice_and_pubcomp_waits_for_the_release)
{
	struct rig r;
	struct fb b;
	int64_t t0;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 2, false, 5, "q/x", "{\"v\":1}", NULL, NULL);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 5));              /* PUBREC after the commit */
	/* The broker loses the connection before it has the PUBREC, and
	 * the agent reconnects with backoff (1 s, jitter at its bottom: 0.5 s). */
	fb_close(&b);
	for (int i = 0; i < 20; i++)
		loop_turn(r.a.loop, 2);
	CHECK(!snapshot(&r).connected);
	t0 = tc_now_ms;
	tc_advance(r.a.loop, 400);
	CHECK(!fb_pending(&b));
	tc_advance(r.a.loop, 600);
	REQUIRE(fb_session(&r, &b, true, 0x02));
	CHECK(tc_now_ms - t0 >= 500);
	fb_publish(&r, &b, 2, true, 5, "q/x", "{\"v\":1}", NULL, NULL);
	CHECK(fb_ack(&r, &b, 0x50, 5));              /* durable already: PUBREC at once */
	CHECK_EQ_INT(records(&r).n, 1);
	/* PUBREL: PUBCOMP only once the release is committed, also when the
	 * first commit of it fails. */
	fb_send(&r, &b, (const uint8_t[]){ 0x62, 0x02, 0x00, 0x05 }, 4);
	CHECK(fb_quiet(&r, &b));
	crashvfs_fail_writes(1, SQLITE_FULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 2000);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x70, 5));
	/* Released: id 5 again, DUP 0, is a new message. */
	fb_publish(&r, &b, 2, false, 5, "q/x", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 5));
	CHECK_EQ_INT(records(&r).n, 2);
	CHECK(strstr(snapshot(&r).state, "1 redeliveries"));
	rig_release(&r, &b);
}

TEST(a_dup_that_matches_a_recent_message_names_it)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 9, "s/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 9));
	/* The PUBACK is lost with the connection; the broker sends it again. */
	fb_close(&b);
	tc_advance(r.a.loop, 1000);
	REQUIRE(fb_session(&r, &b, true, 0x02));
	fb_publish(&r, &b, 1, true, 9, "s/a", "{\"v\":1}", NULL, NULL);
	/* DUP with another payload: a message not seen before. */
	fb_publish(&r, &b, 1, true, 10, "s/a", "{\"v\":2}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 9));
	CHECK(fb_ack(&r, &b, 0x40, 10));
	s = records(&r);
	REQUIRE(s.n == 3);
	CHECK_EQ_STR(s.key[1], "mqtt/sensors/0/redelivered/1");
	CHECK_EQ_STR(s.data[1], "{\"topic\":\"s/a\",\"qos\":1,\"packet_id\":9,\"dup\":true,"
		     "\"retain\":false,\"redelivery_of\":\"mqtt/sensors/0\",\"payload\":{\"v\":1}}");
	CHECK_EQ_STR(s.key[2], "mqtt/sensors/2");
	CHECK(!strstr(s.data[2], "redelivery_of"));
	rig_release(&r, &b);
}

TEST(reused_packet_ids_with_identical_payloads_are_two_records)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	/* The lowest free id at once, same topic, same payload. */
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	fb_publish(&r, &b, 2, false, 1, "q/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 1));
	fb_send(&r, &b, (const uint8_t[]){ 0x62, 0x02, 0x00, 0x01 }, 4);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x70, 1));
	fb_publish(&r, &b, 2, false, 1, "q/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 1));
	s = records(&r);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.key[0], "mqtt/sensors/0");
	CHECK_EQ_STR(s.key[1], "mqtt/sensors/1");
	CHECK_EQ_STR(s.key[2], "mqtt/sensors/2");
	CHECK_EQ_STR(s.key[3], "mqtt/sensors/3");
	CHECK_EQ_INT(snapshot(&r).duplicates, 0);
	rig_release(&r, &b);
}

static int count_dlq(const struct dlq_entry *e, const void *data, void *arg)
{
	int *n = arg;

	if (!strcmp(e->key, "mqtt/sensors/0") && e->len == 4 && !memcmp(data, "nope", 4) &&
	    strstr(e->reason, "payload on topic s/bad"))
		(*n)++;
	return 0;
}

TEST(a_bad_payload_is_dead_lettered_and_acknowledged)
{
	struct rig r;
	struct fb b;
	int n = 0;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 4, "s/bad", "nope", NULL, NULL);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 4));
	CHECK(queue_dlq_list(r.a.q, 0, 10, count_dlq, &n) >= 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(snapshot(&r).dlq, 1);
	CHECK_EQ_INT(records(&r).n, 0);
	rig_release(&r, &b);
}

TEST(the_id_property_makes_the_key)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "id_property = mid\n") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":1}", "mid", "m-42");
	fb_publish(&r, &b, 1, false, 2, "s/a", "{\"v\":1}", "mid", "m-42");  /* publisher retry */
	fb_publish(&r, &b, 1, false, 3, "s/a", "{\"v\":2}", NULL, NULL);     /* no property */
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	CHECK(fb_ack(&r, &b, 0x40, 2));
	CHECK(fb_ack(&r, &b, 0x40, 3));
	s = records(&r);
	REQUIRE(s.n == 2);
	CHECK_EQ_STR(s.key[0], "mqtt/sensors/id/s/a/m-42");
	CHECK(strstr(s.data[0], "\"message_id\":\"m-42\""));
	CHECK_EQ_STR(s.key[1], "mqtt/sensors/2");
	CHECK_EQ_INT(snapshot(&r).duplicates, 1);
	rig_release(&r, &b);
}

TEST(refused_subscriptions_and_bad_packets)
{
	struct rig r;
	struct fb b;
	struct status_input st;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x87));
	st = snapshot(&r);
	CHECK_EQ_INT(st.errors[INPUT_ERR_EXCEPTION], 1);
	CHECK(strstr(st.last_error, "subscription to q/# refused: not authorized"));
	CHECK(strstr(st.state, "1 of 2 topics subscribed (1 refused)"));
	/* A PUBLISH with QoS 3: dropped with the reason, and connected again. */
	fb_send(&r, &b, (const uint8_t[]){ 0x36, 0x06, 0x00, 0x01, 't', 0x00, 0x01, 0x00 }, 8);
	st = snapshot(&r);
	CHECK(!st.connected);
	CHECK(strstr(st.conn_why, "broker sent a bad packet: PUBLISH with QoS 3"));
	CHECK(strstr(st.last_error, "QoS 3"));
	tc_advance(r.a.loop, 1000);
	REQUIRE(fb_session(&r, &b, true, 0x01));
	CHECK(snapshot(&r).connected);
	CHECK(strstr(snapshot(&r).state, "2 of 2 topics subscribed"));
	rig_release(&r, &b);
}

/* The driver restarted (as after a crash of agentd, the queue kept): the
 * counter goes on, the ring and the QoS 2 ids come back from positions. */
TEST(a_restarted_driver_knows_its_past)
{
	struct rig r;
	struct fb b;
	struct seen s;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 1, false, 1, "s/a", "{\"v\":1}", NULL, NULL);
	fb_publish(&r, &b, 2, false, 2, "q/a", "{\"v\":2}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	CHECK(fb_ack(&r, &b, 0x50, 2));
	input_stop(r.in);
	fb_close(&b);
	REQUIRE(input_start(r.in) == 0);
	REQUIRE(fb_session(&r, &b, true, 0x02));
	/* Neither acknowledgement reached the broker. */
	fb_publish(&r, &b, 1, true, 1, "s/a", "{\"v\":1}", NULL, NULL);
	fb_publish(&r, &b, 2, true, 2, "q/a", "{\"v\":2}", NULL, NULL);
	fb_publish(&r, &b, 1, false, 3, "s/a", "{\"v\":3}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x40, 1));
	CHECK(fb_ack(&r, &b, 0x50, 2));
	CHECK(fb_ack(&r, &b, 0x40, 3));
	s = records(&r);
	REQUIRE(s.n == 4);
	CHECK_EQ_STR(s.key[2], "mqtt/sensors/0/redelivered/2");
	CHECK(strstr(s.data[2], "\"redelivery_of\":\"mqtt/sensors/0\""));
	CHECK_EQ_STR(s.key[3], "mqtt/sensors/3");
	/* The release after the restart: PUBCOMP once it is committed. */
	fb_send(&r, &b, (const uint8_t[]){ 0x62, 0x02, 0x00, 0x02 }, 4);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x70, 2));
	rig_release(&r, &b);
}

/* The broker lost the session: the QoS 2 ids held are emptied, durably,
 * before any message of the new session is stored (so a crash cannot bring
 * an old id back and take a new message for its redelivery). */
TEST(a_lost_session_empties_the_qos2_ids_first)
{
	struct rig r;
	struct fb b;
	uint64_t t;

	REQUIRE(rig_init(&r, &b, "") == 0);
	REQUIRE(fb_session(&r, &b, false, 0x02));
	fb_publish(&r, &b, 2, false, 7, "q/a", "{\"v\":1}", NULL, NULL);
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 7));
	fb_close(&b);
	tc_advance(r.a.loop, 1000);
	REQUIRE(fb_session(&r, &b, false, 0x02));     /* no session */
	t = input_ticket(r.in);
	/* Id 7 with DUP in the new session: not a redelivery of ours. */
	fb_publish(&r, &b, 2, true, 7, "q/a", "{\"v\":2}", NULL, NULL);
	CHECK_EQ_INT(input_ticket(r.in), t);          /* behind the emptied set */
	tc_advance(r.a.loop, 1000);                   /* that is committed */
	CHECK_EQ_INT(input_ticket(r.in), t + 1);
	CHECK(fb_quiet(&r, &b));
	tc_advance(r.a.loop, 1000);
	CHECK(fb_ack(&r, &b, 0x50, 7));
	CHECK_EQ_INT(records(&r).n, 2);
	rig_release(&r, &b);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_mqtt_sub.XXXXXX");
	if (!mkdtemp(dir) || crashvfs_register())
		return 1;
	RUN(puback_only_after_the_commit_and_in_order);
	RUN(a_failed_commit_sends_no_puback_and_stores_them_again);
	RUN(qos2_redelivery_is_not_stored_twice_and_pubcomp_waits_for_the_release);
	RUN(a_dup_that_matches_a_recent_message_names_it);
	RUN(reused_packet_ids_with_identical_payloads_are_two_records);
	RUN(a_bad_payload_is_dead_lettered_and_acknowledged);
	RUN(the_id_property_makes_the_key);
	RUN(refused_subscriptions_and_bad_packets);
	RUN(a_restarted_driver_knows_its_past);
	RUN(a_lost_session_empties_the_qos2_ids_first);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	TEST_END();
}
