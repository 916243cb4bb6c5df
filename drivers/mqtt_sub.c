/* mqtt_sub.c - the mqtt_sub input: subscribe to topics on a broker (QoS 0,
 * 1 and 2, a persistent session) and acknowledge each message only once the
 * transaction holding its record has committed, so that a crash at any
 * instant loses nothing: the broker sends again what it has no
 * acknowledgement for.
 *
 * The session is the agent's own client (mqtt_client.h), which acknowledges
 * nothing by itself, over the shared connection module (mqtt_conn.h).
 * Every message received is kept here, in arrival order, until its record
 * is committed; committed(upto) then sends the acknowledgements of the
 * tickets up to upto, in order (PUBACK, PUBREC; PUBCOMP once a release is
 * durable); rolled_back(after) emits the later ones again from these copies.
 * Acknowledgements belong to the connection a message came on: one from an
 * earlier connection is not sent (the broker sends the message again).
 *
 * Keys (docs/architecture.md, "MQTT subscribe: acknowledge after commit"):
 *   - "mqtt/<input>/<n>": n a counter saved as a position before each
 *     record, so it never repeats across restarts, whatever packet ids the
 *     broker reuses;
 *   - with id_property, "mqtt/<input>/id/<topic>/<id>" from the v5 user
 *     property the publisher sets: exact;
 *   - a QoS 1 or 2 message with DUP set that matches (packet id, hash of
 *     topic and payload) one of the last receive_maximum messages, saved as
 *     positions too: "<that key>/redelivered/<n>", with "redelivery_of".
 * QoS 2 packet ids received and not yet released are a position as well
 * (saved after their record, in its transaction or a later one): a DUP of
 * one is a redelivery, not stored again, only acknowledged again. A release
 * takes a ticket of its own (input_take_ticket()), so PUBCOMP waits for its
 * commit; a session the broker lost empties the set in a commit before any
 * message of the new session.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

#define KEY_MAX 320           /* "mqtt/<input>/id/<topic>/<id>" at most */
#define ID_PART_MAX 96            /* topic or id longer: its hash in the key */
#define QOS0_MAX_BYTES (8u << 20) /* QoS 0 copies held while the queue refuses */
#define HELD_MAX_BYTES (32u << 20) /* all copies: beyond, reconnect (a broker over the window) */
#define RETRY_MS 1000

enum { PROTO_V5, PROTO_V311 };
static const char *const protocol_names[] = { "v5", "v311", NULL };

struct topic_row {
	char *filter;
	int64_t qos;
};

struct sub_conf {
	struct mqtt_conn_conf conn;
	int protocol;
	char *client_id;
	struct cfg_table topics;
	int64_t session_expiry_ms;
	int64_t receive_maximum;
	int64_t max_packet_size;
	char *id_property;
};

#define RK(f) offsetof(struct topic_row, f)
static const struct cfg_key topic_cols[] = {
	{ .name = "filter", .type = CFG_STR, .offset = RK(filter), .required = true,
	  .help = "Topic filter; + and # are wildcards (sensors/+/temperature, plant/#)." },
	{ .name = "qos", .type = CFG_INT, .def = "1", .offset = RK(qos), .min = 0, .max = 2,
	  .help = "Subscription QoS: 0 (no acknowledgement: lost if the agent is down), 1 (at least "
		  "once) or 2 (exactly once between broker and agent)." },
	{ .name = NULL },
};

#define SK(f) .offset = offsetof(struct sub_conf, f)
static const struct cfg_key sub_keys[] = {
	MQTT_CONN_KEYS(struct sub_conf, "mqtt://127.0.0.1:1883")
	{ .name = "protocol", .type = CFG_ENUM, .def = "v5", SK(protocol), .enums = protocol_names,
	  .help = "MQTT version: v5 (session expiry, receive maximum, reasons, id_property) or v311 "
		  "for older brokers." },
	{ .name = "client_id", .type = CFG_STR, SK(client_id),
	  .help = "MQTT client identifier; default <agent id>-<input name>. The broker keeps the "
		  "session (subscriptions and unacknowledged messages) under it: keep it stable, and "
		  "unique on the broker." },
	{ .name = "topic", .type = CFG_TABLE, SK(topics), .cols = topic_cols,
	  .row_size = sizeof(struct topic_row), .required = true,
	  .example = "filter=sensors/# qos=1",
	  .help = "One line per subscription, as words column=value (columns below)." },
	{ .name = "session_expiry", .type = CFG_DURATION, .def = "7d", SK(session_expiry_ms),
	  .min = 0, .max = 4294967295000LL,
	  .help = "v5: how long the broker keeps the session, and the messages it queues for it, "
		  "while the agent is away. v3.1.1 sessions do not expire." },
	{ .name = "receive_maximum", .type = CFG_INT, .def = "64", SK(receive_maximum), .min = 1,
	  .max = 65535,
	  .help = "Messages the broker may send without an acknowledgement (v5; for v3.1.1 set the "
		  "broker's max_inflight_messages to at most this). Also how many recent messages are "
		  "remembered to identify redeliveries." },
	{ .name = "max_packet_size", .type = CFG_SIZE, .def = "1MiB", SK(max_packet_size),
	  .min = 128, .max = 268435460,
	  .help = "Largest packet accepted; the broker is told (v5) and a larger one drops the "
		  "connection." },
	{ .name = "id_property", .type = CFG_STR, SK(id_property),
	  .help = "v5: name of a user property the publishers set to a unique message id; the record's "
		  "key is then made of topic and id, so every copy of a message has the same key." },
	{ .name = NULL },
};

enum msg_kind {
	MSG_RECORD,     /* a record to store, then acknowledge */
	MSG_ACK_ONLY,   /* a QoS 2 redelivery held already: PUBREC after what came before */
	MSG_RELEASE,    /* a PUBREL: forget the id, PUBCOMP once that is durable */
	MSG_BARRIER,    /* the QoS 2 ids emptied (a new session): durable before what follows */
};

/* One message received and not yet acknowledged, followed by its topic
 * (NUL-terminated) and payload. */
struct msg {
	struct msg *next;
	uint64_t ticket;
	uint64_t n;              /* its counter value (MSG_RECORD) */
	uint32_t gen;            /* the connection it came on */
	uint16_t id;
	uint8_t kind, qos;
	bool dup, retain, emitted;
	int ring;                /* its ring slot, -1: none */
	char key[KEY_MAX];
	char of[ID_PART_MAX + 32]; /* redelivery_of ("mqtt/<input>/<n>"), "" none */
	char msgid[ID_PART_MAX + 1];
	size_t topic_len, payload_len;
	char data[];
};

/* A recent QoS 1/2 message, to tell a redelivery. */
struct ring_ent {
	bool used;
	uint16_t id;
	uint64_t hash;
	uint64_t n;              /* its key is "<key_base>/<n>" */
	uint32_t gen, acked_gen;
};

/* A QoS 2 packet id received and not released. */
struct q2_ent {
	uint16_t id;
	uint64_t ticket;         /* of its record; 0: from an earlier run */
	char key[KEY_MAX];
};

struct sub {
	struct input *in;
	const struct sub_conf *c;
	struct loop *l;
	struct mqtt_conn *conn;
	struct mqtt_client *client;
	struct mqtt_client_conf cc;
	struct mqtt_sub_topic *topics;
	char client_id[256];
	char key_base[ID_PART_MAX + 8];   /* "mqtt/<input>" */
	char lost_why[256];
	struct msg *head, *tail, *todo;
	size_t qos0_bytes, held_bytes;
	uint64_t over_window;
	uint64_t next_n, durable;
	uint64_t barrier;        /* ticket of an emptied QoS 2 set not yet durable */
	struct ring_ent *ring;
	size_t ring_size, ring_next;
	struct q2_ent *q2;
	size_t q2_n, q2_cap;
	struct loop_timer retry_timer;
	bool up, stopping;
	unsigned granted, refused;
	int64_t received, acked, redeliveries, pending, qos0_dropped;
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t msg_hash(const char *topic, size_t tl, const void *payload, size_t pl)
{
	uint64_t h = fnv1a(0xcbf29ce484222325ULL, topic, tl);

	h = fnv1a(h, "", 1);
	return fnv1a(h, payload, pl);
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void update_state(struct sub *s)
{
	char refused[32] = "";

	if (s->refused)
		snprintf(refused, sizeof(refused), " (%u refused)", s->refused);
	input_set_state(s->in, "%s%u of %zu topics subscribed%s; %" PRId64 " received, %" PRId64
			" acknowledged, %" PRId64 " awaiting commit, %" PRId64 " redeliveries",
			s->up ? "" : "not connected: ", s->granted, s->c->topics.n, refused,
			s->received, s->acked, s->pending, s->redeliveries);
}

/* ---- positions: the counter, the ring, the QoS 2 ids ---------------------- */

/* "n": the next counter value and the ring's size (8 + 4 bytes). */
static int save_counter(struct sub *s)
{
	uint8_t b[12];

	put_u64(b, s->next_n);
	b[8] = (uint8_t)(s->ring_size >> 24);
	b[9] = (uint8_t)(s->ring_size >> 16);
	b[10] = (uint8_t)(s->ring_size >> 8);
	b[11] = (uint8_t)s->ring_size;
	return input_save_position(s->in, "n", b, sizeof(b));
}

/* "r<slot>": id (2), hash (8), counter value (8). */
static int save_ring(struct sub *s, size_t slot)
{
	const struct ring_ent *e = &s->ring[slot];
	uint8_t b[18];
	char name[24];

	b[0] = (uint8_t)(e->id >> 8);
	b[1] = (uint8_t)e->id;
	put_u64(b + 2, e->hash);
	put_u64(b + 10, e->n);
	snprintf(name, sizeof(name), "r%zu", slot);
	return input_save_position(s->in, name, b, sizeof(b));
}

/* "q2": the QoS 2 ids received and not released, each id (2), key length
 * (2), key. */
static int save_q2(struct sub *s)
{
	uint8_t *b = xmalloc(s->q2_n * (4 + KEY_MAX) + 1), *p;
	int rc;

	if (!b)
		return -ENOMEM;
	p = b;
	for (size_t i = 0; i < s->q2_n; i++) {
		size_t kl = strlen(s->q2[i].key);

		*p++ = (uint8_t)(s->q2[i].id >> 8);
		*p++ = (uint8_t)s->q2[i].id;
		*p++ = (uint8_t)(kl >> 8);
		*p++ = (uint8_t)kl;
		memcpy(p, s->q2[i].key, kl);
		p += kl;
	}
	rc = input_save_position(s->in, "q2", b, (size_t)(p - b));
	xfree(b);
	return rc;
}

static int load_positions(struct sub *s)
{
	size_t len, old_size = 0;
	void *v;
	int rc;

	rc = input_load_position(s->in, "n", &v, &len);
	if (rc == 0 && len == 12) {
		const uint8_t *b = v;

		s->next_n = get_u64(b);
		old_size = (size_t)b[8] << 24 | (size_t)b[9] << 16 | (size_t)b[10] << 8 | b[11];
	}
	if (!rc)
		xfree(v);
	else if (rc != -ENOENT)
		return rc;
	/* The ring as it was saved, into the slots there are now. */
	for (size_t i = 0; i < (old_size > s->ring_size ? old_size : s->ring_size); i++) {
		char name[24];

		snprintf(name, sizeof(name), "r%zu", i);
		rc = input_load_position(s->in, name, &v, &len);
		if (rc == -ENOENT)
			continue;
		if (rc)
			return rc;
		if (len == 18) {
			struct ring_ent *e = &s->ring[s->ring_next];
			const uint8_t *b = v;

			memset(e, 0, sizeof(*e));
			e->used = true;
			e->id = (uint16_t)(b[0] << 8 | b[1]);
			e->hash = get_u64(b + 2);
			e->n = get_u64(b + 10);
			s->ring_next = (s->ring_next + 1) % s->ring_size;
		}
		xfree(v);
	}
	rc = input_load_position(s->in, "q2", &v, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	for (const uint8_t *b = v, *end = b + len; end - b >= 4;) {
		size_t kl = (size_t)b[2] << 8 | b[3];

		if ((size_t)(end - b) < 4 + kl || kl >= KEY_MAX)
			break;
		if (s->q2_n == s->q2_cap) {
			size_t cap = s->q2_cap ? 2 * s->q2_cap : 16;
			struct q2_ent *q = xrealloc(s->q2, cap * sizeof(*q));

			if (!q) {
				xfree(v);
				return -ENOMEM;
			}
			s->q2 = q;
			s->q2_cap = cap;
		}
		memset(&s->q2[s->q2_n], 0, sizeof(s->q2[0]));
		s->q2[s->q2_n].id = (uint16_t)(b[0] << 8 | b[1]);
		memcpy(s->q2[s->q2_n].key, b + 4, kl);
		s->q2_n++;
		b += 4 + kl;
	}
	xfree(v);
	return 0;
}

static struct q2_ent *q2_find(struct sub *s, uint16_t id)
{
	for (size_t i = 0; i < s->q2_n; i++)
		if (s->q2[i].id == id)
			return &s->q2[i];
	return NULL;
}

static int q2_add(struct sub *s, uint16_t id, const char *key, uint64_t ticket)
{
	struct q2_ent *e = q2_find(s, id);

	if (!e) {
		if (s->q2_n == s->q2_cap) {
			size_t cap = s->q2_cap ? 2 * s->q2_cap : 16;
			struct q2_ent *q = xrealloc(s->q2, cap * sizeof(*q));

			if (!q)
				return -ENOMEM;
			s->q2 = q;
			s->q2_cap = cap;
		}
		e = &s->q2[s->q2_n++];
	}
	e->id = id;
	e->ticket = ticket;
	snprintf(e->key, sizeof(e->key), "%s", key);
	return 0;
}

static void q2_del(struct sub *s, uint16_t id)
{
	struct q2_ent *e = q2_find(s, id);

	if (e)
		*e = s->q2[--s->q2_n];
}

/* ---- the messages held until acknowledged ------------------------------- */

static void append(struct sub *s, struct msg *m)
{
	m->next = NULL;
	if (s->tail)
		s->tail->next = m;
	else
		s->head = m;
	s->tail = m;
	if (!s->todo)
		s->todo = m;
	s->pending++;
	s->held_bytes += sizeof(*m) + m->topic_len + m->payload_len;
	if (m->kind == MSG_RECORD && m->qos == 0)
		s->qos0_bytes += sizeof(*m) + m->topic_len + m->payload_len;
}

static void msg_free(struct sub *s, struct msg *m)
{
	s->pending--;
	s->held_bytes -= sizeof(*m) + m->topic_len + m->payload_len;
	if (m->kind == MSG_RECORD && m->qos == 0)
		s->qos0_bytes -= sizeof(*m) + m->topic_len + m->payload_len;
	xfree(m);
}

/* The record of one message; 0, -EAGAIN or -errno. */
static int emit_record(struct sub *s, struct msg *m)
{
	const char *topic = m->data, *payload = m->data + m->topic_len + 1;
	struct rec *r;
	char why[200];
	int rc;

	/* The counter first: an inline commit inside the emit must never
	 * hold a key whose counter value is not saved. */
	rc = save_counter(s);
	if (rc)
		return rc;
	r = input_rec_begin(s->in);
	rec_strn(r, "topic", topic, m->topic_len);
	rec_int(r, "qos", m->qos, NULL);
	if (m->qos)
		rec_int(r, "packet_id", m->id, NULL);
	rec_bool(r, "dup", m->dup);
	rec_bool(r, "retain", m->retain);
	if (m->msgid[0])
		rec_str(r, "message_id", m->msgid);
	if (m->of[0])
		rec_str(r, "redelivery_of", m->of);
	rc = input_rec_parsed(s->in, r, "payload", payload, m->payload_len, why, sizeof(why));
	if (rc == -EINVAL) {
		char reason[300];

		snprintf(reason, sizeof(reason), "payload on topic %.*s: %s",
			 (int)(m->topic_len > 100 ? 100 : m->topic_len), topic, why);
		rc = input_reject(s->in, payload, m->payload_len, m->key, reason);
	} else {
		rc = input_emit_rec(s->in, r, m->key, NULL);
	}
	if (rc == -EMSGSIZE)
		rc = input_reject(s->in, payload, m->payload_len, m->key,
				  "record larger than max_record_bytes");
	if (rc)
		return rc;
	m->ticket = input_ticket(s->in);
	/* The ring slot and the QoS 2 id after the record: either in its
	 * transaction or a later one, never naming a key not stored. */
	if (m->ring >= 0 && s->ring[m->ring].used && s->ring[m->ring].n == m->n)
		save_ring(s, (size_t)m->ring);
	if (m->qos == 2) {
		struct q2_ent *e = q2_find(s, m->id);

		if (e && !strcmp(e->key, m->key))
			e->ticket = m->ticket;
		save_q2(s);
	}
	return 0;
}

static int emit_one(struct sub *s, struct msg *m)
{
	int rc = 0;

	switch (m->kind) {
	case MSG_RECORD:
		rc = emit_record(s, m);
		break;
	case MSG_ACK_ONLY:
		/* After everything before it, its original included. */
		m->ticket = input_ticket(s->in);
		break;
	case MSG_RELEASE:
	case MSG_BARRIER:
		rc = save_q2(s);
		if (!rc)
			m->ticket = input_take_ticket(s->in);
		break;
	}
	if (!rc)
		m->emitted = true;
	return rc;
}

static void ack_upto(struct sub *s, uint64_t upto);

/* Hand over what is not in the queue yet, in order. */
static void pump(struct sub *s)
{
	while (s->todo) {
		int rc;

		if (s->barrier > s->durable) {
			/* Nothing after an emptied QoS 2 set shares its
			 * transaction: a crash must not bring back the old ids
			 * with a message of the new session (committed() goes
			 * on). */
			update_state(s);
			return;
		}
		rc = emit_one(s, s->todo);

		if (rc == -EAGAIN) {
			update_state(s);
			return;      /* resume() or rolled_back() goes on */
		}
		if (rc) {
			input_count_error(s->in, INPUT_ERR_IO, "cannot queue a message: %s; trying again",
					  strerror(-rc));
			if (!s->retry_timer.armed)
				loop_timer_set(s->l, &s->retry_timer, RETRY_MS);
			update_state(s);
			return;
		}
		if (s->todo->kind == MSG_BARRIER)
			s->barrier = s->todo->ticket;
		s->todo = s->todo->next;
	}
	/* An acknowledgement that waits for nothing new goes at once. */
	ack_upto(s, s->durable);
	update_state(s);
}

static int64_t retry_cb(struct loop_timer *t)
{
	struct sub *s = container_of(t, struct sub, retry_timer);

	pump(s);
	return -1;
}

/* Acknowledge, in order, every message whose ticket is durable. */
static void ack_upto(struct sub *s, uint64_t upto)
{
	uint32_t gen = mqtt_client_generation(s->client);

	if (upto > s->durable)
		s->durable = upto;
	while (s->head && s->head->emitted && s->head->ticket <= upto) {
		struct msg *m = s->head;
		int rc = -ENOENT;

		s->head = m->next;
		if (!s->head)
			s->tail = NULL;
		if (m->qos && m->gen == gen) {
			if (m->kind == MSG_RELEASE)
				rc = mqtt_client_complete(s->client, m->id);
			else
				rc = mqtt_client_ack(s->client, m->id);
		}
		if (!rc) {
			s->acked++;
			if (m->ring >= 0 && s->ring[m->ring].n == m->n)
				s->ring[m->ring].acked_gen = gen;
		}
		/* else: it came on an earlier connection, which the broker
		 * answers by sending it again. */
		msg_free(s, m);
	}
	update_state(s);
}

/* ---- the session's callbacks --------------------------------------------- */

static struct msg *new_msg(const struct mqtt_publish *p, uint32_t gen, enum msg_kind kind)
{
	struct msg *m = xcalloc(1, sizeof(*m) + p->topic.len + 1 + p->payload_len + 1);

	if (!m)
		return NULL;
	m->kind = (uint8_t)kind;
	m->gen = gen;
	m->id = p->packet_id;
	m->qos = p->qos;
	m->dup = p->dup;
	m->retain = p->retain;
	m->ring = -1;
	m->topic_len = p->topic.len;
	m->payload_len = p->payload_len;
	if (p->topic.len)
		memcpy(m->data, p->topic.p, p->topic.len);
	if (p->payload_len)
		memcpy(m->data + p->topic.len + 1, p->payload, p->payload_len);
	return m;
}

/* A key part that fits: the text, or its hash when long. */
static void key_part(char *out, size_t outlen, const char *p, size_t n)
{
	if (n <= ID_PART_MAX && !memchr(p, '\0', n))
		snprintf(out, outlen, "%.*s", (int)n, p);
	else
		snprintf(out, outlen, "h%016" PRIx64, fnv1a(0xcbf29ce484222325ULL, p, n));
}

static struct ring_ent *ring_match(struct sub *s, uint16_t id, uint64_t hash, uint32_t gen)
{
	for (size_t i = 0; i < s->ring_size; i++) {
		struct ring_ent *e = &s->ring[i];

		/* Not one acknowledged on this connection: the broker has
		 * that PUBACK and cannot be sending it again. */
		if (e->used && e->id == id && e->hash == hash && e->acked_gen != gen)
			return e;
	}
	return NULL;
}

static void on_message(struct mqtt_client *cl, void *arg, const struct mqtt_publish *p)
{
	struct sub *s = arg;
	uint32_t gen = mqtt_client_generation(cl);
	uint64_t hash = msg_hash(p->topic.p, p->topic.len, p->payload, p->payload_len);
	struct q2_ent *held = p->qos == 2 ? q2_find(s, p->packet_id) : NULL;
	struct mqtt_str idv;
	struct msg *m;

	s->received++;
	if (mqtt_client_over_window(cl) > s->over_window) {
		if (!s->over_window)
			log_warn("input %s: the broker sends more than receive_maximum (%" PRId64
				 ") messages without acknowledgement (mosquitto 2.0 does once "
				 "acknowledgements flow): they are held until their commit, up to %u MiB",
				 input_name(s->in), s->c->receive_maximum, HELD_MAX_BYTES >> 20);
		s->over_window = mqtt_client_over_window(cl);
	}
	if (p->qos && s->held_bytes + sizeof(*m) + p->topic.len + p->payload_len > HELD_MAX_BYTES) {
		/* Not acknowledged: the broker sends it again. */
		input_count_error(s->in, INPUT_ERR_PROTOCOL, "%zu bytes of messages await their "
				  "commit: reconnecting, the broker sends the rest again", s->held_bytes);
		mqtt_client_disconnect(cl);
		s->up = false;
		mqtt_conn_failed(s->conn, "too many messages awaiting commit (the broker ignores "
				 "receive_maximum)", false);
		return;
	}
	if (held && p->dup) {
		/* Stored already (its record is durable or ahead in the
		 * list): PUBREC again, after what came before. */
		m = new_msg(p, gen, MSG_ACK_ONLY);
		if (!m)
			goto out_nomem;
		snprintf(m->key, sizeof(m->key), "%s", held->key);
		s->redeliveries++;
		append(s, m);
		pump(s);
		return;
	}
	if (p->qos == 0 &&
	    s->qos0_bytes + sizeof(*m) + p->topic.len + p->payload_len > QOS0_MAX_BYTES) {
		s->qos0_dropped++;
		input_count_error(s->in, INPUT_ERR_IO, "QoS 0 message on %.*s dropped: %" PRId64
				  " held while the queue refuses records", (int)p->topic.len,
				  p->topic.p, s->pending);
		return;
	}
	m = new_msg(p, gen, MSG_RECORD);
	if (!m)
		goto out_nomem;
	m->n = s->next_n++;
	if (s->c->id_property && s->c->protocol == PROTO_V5 &&
	    mqtt_user_property(p, s->c->id_property, &idv)) {
		char t[ID_PART_MAX + 1], i[ID_PART_MAX + 1];

		key_part(t, sizeof(t), p->topic.p, p->topic.len);
		key_part(i, sizeof(i), idv.p, idv.len);
		snprintf(m->key, sizeof(m->key), "%s/id/%s/%s", s->key_base, t, i);
		snprintf(m->msgid, sizeof(m->msgid), "%.*s",
			 (int)(idv.len > ID_PART_MAX ? ID_PART_MAX : idv.len), idv.p);
	} else {
		struct ring_ent *e = p->qos && p->dup ? ring_match(s, p->packet_id, hash, gen) : NULL;

		if (e) {
			snprintf(m->of, sizeof(m->of), "%s/%" PRIu64, s->key_base, e->n);
			snprintf(m->key, sizeof(m->key), "%s/redelivered/%" PRIu64, m->of, m->n);
			s->redeliveries++;
		} else {
			snprintf(m->key, sizeof(m->key), "%s/%" PRIu64, s->key_base, m->n);
			if (p->qos) {
				struct ring_ent *r = &s->ring[s->ring_next];

				memset(r, 0, sizeof(*r));
				r->used = true;
				r->id = p->packet_id;
				r->hash = hash;
				r->gen = gen;
				r->n = m->n;
				m->ring = (int)s->ring_next;
				s->ring_next = (s->ring_next + 1) % s->ring_size;
			}
		}
	}
	if (p->qos == 2 && q2_add(s, p->packet_id, m->key, 0)) {
		xfree(m);
		goto out_nomem;
	}
	append(s, m);
	pump(s);
	return;
out_nomem:
	/* Not acknowledged: the broker sends it again after a reconnect. */
	input_count_error(s->in, INPUT_ERR_IO, "out of memory holding a message: reconnecting");
	mqtt_client_disconnect(cl);
	s->up = false;
	mqtt_conn_failed(s->conn, "out of memory holding a message", false);
}

static void on_released(struct mqtt_client *cl, void *arg, uint16_t id)
{
	struct sub *s = arg;
	struct mqtt_publish p = { .qos = 2, .packet_id = id };
	struct msg *m = new_msg(&p, mqtt_client_generation(cl), MSG_RELEASE);

	if (!m) {
		input_count_error(s->in, INPUT_ERR_IO, "out of memory holding a release: reconnecting");
		mqtt_client_disconnect(cl);
		s->up = false;
		mqtt_conn_failed(s->conn, "out of memory holding a release", false);
		return;
	}
	q2_del(s, id);
	append(s, m);
	pump(s);
}

static void on_subscribed(struct mqtt_client *cl, void *arg, bool session_present,
			  const uint8_t *codes, size_t n)
{
	struct sub *s = arg;

	s->up = true;
	s->granted = s->refused = 0;
	for (size_t i = 0; i < n; i++) {
		if (codes[i] < 0x80) {
			s->granted++;
			if (codes[i] < s->topics[i].qos)
				input_error(s->in, "subscription to %s granted at QoS %u only",
					    s->topics[i].filter, codes[i]);
			continue;
		}
		s->refused++;
		input_count_error(s->in, INPUT_ERR_EXCEPTION, "subscription to %s refused: %s",
				  s->topics[i].filter, codes[i] == 0x80 && s->c->protocol == PROTO_V311
				  ? "failure" : mqtt_reason_str(codes[i]));
	}
	mqtt_conn_connected(s->conn);
	update_state(s);
}

static void on_connected(struct mqtt_client *cl, void *arg, bool session_present)
{
	struct sub *s = arg;

	if (session_present)
		return;
	if (s->q2_n) {
		/* The broker starts afresh: none of its QoS 2 ids are ours.
		 * The emptied set is committed before anything that follows,
		 * or a crash could bring the old ids back and take a new
		 * message under one of them for a redelivery. */
		struct mqtt_publish p = { .qos = 0 };
		struct msg *m = new_msg(&p, mqtt_client_generation(cl), MSG_BARRIER);

		if (!m) {
			input_count_error(s->in, INPUT_ERR_IO, "out of memory: reconnecting");
			mqtt_client_disconnect(cl);
			mqtt_conn_failed(s->conn, "out of memory", false);
			return;
		}
		s->q2_n = 0;
		append(s, m);
		pump(s);
	}
	log_info("input %s: the broker had no session for client id %s (first connection, "
		 "or it expired): only messages published from now on are received",
		 input_name(s->in), s->client_id);
}

static void on_closed(struct mqtt_client *cl, void *arg, const char *why)
{
	struct sub *s = arg;

	s->up = false;
	input_count_error(s->in, INPUT_ERR_CONNECT, "%s", s->lost_why[0] ? s->lost_why : why);
	mqtt_conn_failed(s->conn, s->lost_why[0] ? s->lost_why : why, false);
	s->lost_why[0] = '\0';
	update_state(s);
}

static const struct mqtt_client_ops client_ops = {
	.connected = on_connected,
	.subscribed = on_subscribed,
	.message = on_message,
	.released = on_released,
	.closed = on_closed,
};

/* ---- the transport's callbacks ------------------------------------------- */

static void conn_ready(struct mqtt_conn *c, void *arg, int fd, const char *addr, int port)
{
	struct sub *s = arg;
	int rc;

	s->lost_why[0] = '\0';
	if (fd < 0) {
		fd = mqtt_conn_connect_bridge(c);
		if (fd < 0)
			return;      /* failed and rescheduled by the module */
	}
	rc = mqtt_client_attach(s->client, fd);
	if (rc) {
		char why[128];

		snprintf(why, sizeof(why), "cannot start the MQTT session: %s", strerror(-rc));
		mqtt_conn_failed(c, why, false);
	}
}

static void conn_lost(struct mqtt_conn *c, void *arg, const char *why)
{
	struct sub *s = arg;

	snprintf(s->lost_why, sizeof(s->lost_why), "%s", why);
}

static void conn_timeout(struct mqtt_conn *c, void *arg, const char *why)
{
	struct sub *s = arg;

	mqtt_client_disconnect(s->client);
	s->up = false;
	input_count_error(s->in, INPUT_ERR_TIMEOUT, "%s", why);
	mqtt_conn_failed(c, why, false);
}

static void conn_status(struct mqtt_conn *c, void *arg, bool connected, const char *why)
{
	struct sub *s = arg;

	input_set_connected(s->in, connected, "%s", why ? why : "");
	update_state(s);
}

static const struct mqtt_conn_ops conn_ops = {
	.ready = conn_ready,
	.lost = conn_lost,
	.timeout = conn_timeout,
	.status = conn_status,
};

/* ---- the driver ------------------------------------------------------------ */

static int sub_validate(const void *conf, char *err, size_t errlen)
{
	const struct sub_conf *c = conf;
	int rc = mqtt_conn_validate(&c->conn, err, errlen);

	if (rc)
		return rc;
	if (c->id_property && c->protocol != PROTO_V5) {
		snprintf(err, errlen, "id_property needs protocol = v5 (user properties are v5 only)");
		return -EINVAL;
	}
	if (c->client_id && (!c->client_id[0] || strlen(c->client_id) > 200)) {
		snprintf(err, errlen, "client_id must have 1 to 200 characters");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->topics.n; i++) {
		const struct topic_row *t = CFG_ROW(&c->topics, struct topic_row, i);

		if (!t->filter[0] || strlen(t->filter) > 65535) {
			snprintf(err, errlen, "topic filter '%s' is empty or too long", t->filter);
			return -EINVAL;
		}
		for (const char *p = t->filter; *p; p++) {
			bool alone = (p == t->filter || p[-1] == '/') && (!p[1] || p[1] == '/');

			if ((*p == '+' && !alone) || (*p == '#' && (!alone || p[1]))) {
				snprintf(err, errlen, "topic filter '%s': + and # must stand alone between "
					 "slashes, and # only last", t->filter);
				return -EINVAL;
			}
		}
	}
	return 0;
}

static void sub_stop(struct input *in, void *state)
{
	struct sub *s = state;

	if (!s)
		return;
	s->stopping = true;
	loop_timer_cancel(s->l, &s->retry_timer);
	if (s->client)
		mqtt_client_disconnect(s->client);
	if (s->conn)
		mqtt_conn_close(s->conn);
	mqtt_client_free(s->client);
	mqtt_conn_free(s->conn);
	while (s->head) {
		struct msg *m = s->head;

		s->head = m->next;
		xfree(m);
	}
	xfree(s->topics);
	xfree(s->ring);
	xfree(s->q2);
	xfree(s);
}

static int sub_start(struct input *in, void **state)
{
	const struct sub_conf *c = input_driver_conf(in);
	struct sub *s = xcalloc(1, sizeof(*s));
	char label[160], err[256];
	const char *pw;
	size_t pwlen = 0;
	int rc;

	if (!s)
		return -ENOMEM;
	*state = s;
	s->in = in;
	s->c = c;
	s->l = input_loop(in);
	s->retry_timer.cb = retry_cb;
	s->durable = input_ticket(in);
	s->ring_size = (size_t)c->receive_maximum;
	s->ring = xcalloc(s->ring_size, sizeof(*s->ring));
	s->topics = xcalloc(c->topics.n, sizeof(*s->topics));
	if (!s->ring || !s->topics) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < c->topics.n; i++) {
		const struct topic_row *t = CFG_ROW(&c->topics, struct topic_row, i);

		s->topics[i].filter = t->filter;
		s->topics[i].qos = (uint8_t)t->qos;
	}
	if (c->client_id)
		snprintf(s->client_id, sizeof(s->client_id), "%s", c->client_id);
	else
		snprintf(s->client_id, sizeof(s->client_id), "%s-%s", input_agent_id(in),
			 input_name(in));
	key_part(s->key_base + 5, sizeof(s->key_base) - 5, input_name(in), strlen(input_name(in)));
	memcpy(s->key_base, "mqtt/", 5);
	rc = load_positions(s);
	if (rc) {
		input_error(in, "cannot load the saved session state: %s", strerror(-rc));
		goto out_free;
	}
	snprintf(label, sizeof(label), "input %s", input_name(in));
	rc = mqtt_conn_new(s->l, &c->conn, label, &conn_ops, s, &s->conn, err, sizeof(err));
	if (rc) {
		input_error(in, "%s", err);
		goto out_free;
	}
	pw = mqtt_conn_password(s->conn, &pwlen);
	s->cc = (struct mqtt_client_conf){
		.version = c->protocol == PROTO_V5 ? MQTT_V5 : MQTT_V311,
		.client_id = s->client_id,
		.clean_start = false,
		.keepalive_s = (uint16_t)(c->conn.keepalive_ms / 1000),
		.session_expiry_s = (uint32_t)(c->session_expiry_ms / 1000),
		.receive_maximum = (uint16_t)c->receive_maximum,
		.max_packet_size = (uint32_t)c->max_packet_size,
		.username = mqtt_conn_username(s->conn),
		.password = pw,
		.password_len = pwlen,
		.connect_timeout_ms = c->conn.connect_timeout_ms,
		.topics = s->topics,
		.n_topics = c->topics.n,
	};
	rc = mqtt_client_new(s->l, &s->cc, &client_ops, s, &s->client);
	if (rc)
		goto out_free;
	update_state(s);
	mqtt_conn_start(s->conn, 0);
	return 0;
out_free:
	sub_stop(in, s);
	*state = NULL;
	return rc;
}

static void sub_resume(struct input *in, void *state)
{
	pump(state);
}

static void sub_committed(struct input *in, void *state, uint64_t upto)
{
	struct sub *s = state;

	ack_upto(s, upto);
	if (s->todo)
		pump(s);     /* after a barrier that is durable now */
}

static void sub_rolled_back(struct input *in, void *state, uint64_t after)
{
	struct sub *s = state;

	/* What is at most `after` is durable; the rest is emitted again, in
	 * order, with the keys it had, when resume() comes. */
	ack_upto(s, after);
	for (struct msg *m = s->head; m; m = m->next)
		m->emitted = false;
	s->todo = s->head;
	s->barrier = 0;          /* emitted again in its place */
	/* The ids of the lost records are saved again with them. */
	update_state(s);
}

const struct driver mqtt_sub_driver = {
	.version = DRIVER_VERSION,
	.name = "mqtt_sub",
	.help = "Messages of MQTT topics on a broker, each acknowledged only once its record is "
		"committed",
	.parser = "json",        /* sensors publish JSON; raw or csv when told */
	.conf_keys = sub_keys,
	.conf_size = sizeof(struct sub_conf),
	.validate = sub_validate,
	.start = sub_start,
	.resume = sub_resume,
	.stop = sub_stop,
	.committed = sub_committed,
	.rolled_back = sub_rolled_back,
};
