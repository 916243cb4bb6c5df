/* mqtt_proto.h - MQTT 3.1.1 and 5.0 packets as bytes: encoders that append
 * a whole packet to a struct buf and decoders of one packet's body. No I/O,
 * no state: the session (mqtt_client.c) frames the stream with
 * mqtt_frame() and hands each body to the decoder of its type.
 *
 * Decoders check every length against the bytes they were given and
 * return 0 or -EPROTO (malformed: the connection must be dropped), with a
 * few words in *why for status. Decoded strings and payloads point into the
 * caller's bytes (borrowed). Encoders return 0, -ENOMEM, -EINVAL (a string
 * or value MQTT cannot carry) or -EMSGSIZE (over the largest packet).
 */
#ifndef AGENT_MQTT_PROTO_H
#define AGENT_MQTT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum mqtt_version { MQTT_V311 = 4, MQTT_V5 = 5 };

enum mqtt_type {
	MQTT_CONNECT = 1, MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL,
	MQTT_PUBCOMP, MQTT_SUBSCRIBE, MQTT_SUBACK, MQTT_UNSUBSCRIBE, MQTT_UNSUBACK,
	MQTT_PINGREQ, MQTT_PINGRESP, MQTT_DISCONNECT, MQTT_AUTH
};

/* The largest Remaining Length the varint encodes (256 MiB - 1). */
#define MQTT_MAX_REMAINING 268435455u

/* v5 property identifiers used here. */
enum {
	MQTT_PROP_SESSION_EXPIRY = 0x11,
	MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
	MQTT_PROP_SERVER_KEEPALIVE = 0x13,
	MQTT_PROP_REASON_STRING = 0x1f,
	MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
	MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
	MQTT_PROP_TOPIC_ALIAS = 0x23,
	MQTT_PROP_MAXIMUM_QOS = 0x24,
	MQTT_PROP_USER_PROPERTY = 0x26,
	MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
};

/* A length-counted string inside a packet (not NUL-terminated). */
struct mqtt_str {
	const char *p;
	size_t len;
};

/* One whole packet at the start of a stream buffer. */
struct mqtt_frame {
	uint8_t type, flags;     /* the fixed header's two nibbles */
	size_t hdr_len;          /* fixed header bytes (1 + varint) */
	size_t body_len;         /* Remaining Length */
};

/* Find the packet at p[0..n): 1 when it is whole (f filled), 0 when more
 * bytes are needed, -EPROTO for a bad Remaining Length or a reserved type,
 * -EMSGSIZE when the packet would be larger than max_packet bytes (known
 * as soon as its length is, before the body arrives). */
int mqtt_frame(const uint8_t *p, size_t n, uint32_t max_packet, struct mqtt_frame *f);
/* Append a Remaining Length varint. 0, -ENOMEM, -EMSGSIZE. */
int mqtt_put_varint(struct buf *b, uint32_t v);

struct mqtt_connect {
	int version;                 /* MQTT_V311 or MQTT_V5 */
	const char *client_id;
	bool clean_start;            /* false: resume the persistent session */
	uint16_t keepalive_s;
	uint32_t session_expiry_s;   /* v5 only (v3.1.1 sessions do not expire) */
	uint16_t receive_maximum;    /* v5; 0: not sent (65535) */
	uint32_t max_packet_size;    /* v5; 0: not sent */
	const char *username;        /* NULL: none */
	const void *password;        /* NULL: none (v3.1.1 needs a username then) */
	size_t password_len;
};
int mqtt_encode_connect(struct buf *out, const struct mqtt_connect *c);

struct mqtt_connack {
	bool session_present;
	uint8_t reason;              /* 0: accepted; v3.1.1 return codes 1..5 */
	/* v5 properties (defaults when absent). */
	uint16_t receive_maximum;    /* 65535 */
	uint32_t max_packet_size;    /* 0: no limit */
	uint8_t max_qos;             /* 2 */
	int32_t server_keepalive_s;  /* -1: not sent */
	int64_t session_expiry_s;    /* -1: not sent */
	struct mqtt_str assigned_client_id, reason_string;
};
int mqtt_decode_connack(int version, const uint8_t *p, size_t n, struct mqtt_connack *out,
			char *why, size_t whylen);
/* Words for a CONNACK code ("not authorized"), for status. */
const char *mqtt_connack_str(int version, uint8_t code);

struct mqtt_sub_topic {
	const char *filter;
	uint8_t qos;                 /* 0, 1, 2 */
};
int mqtt_encode_subscribe(struct buf *out, int version, uint16_t packet_id,
			  const struct mqtt_sub_topic *t, size_t n);

struct mqtt_suback {
	uint16_t packet_id;
	const uint8_t *codes;        /* one per topic: granted QoS, or >= 0x80 refused */
	size_t n;
	struct mqtt_str reason_string;
};
int mqtt_decode_suback(int version, const uint8_t *p, size_t n, struct mqtt_suback *out,
		       char *why, size_t whylen);
/* Words for a v5 reason code ("not authorized"); v3.1.1 SUBACK 0x80: "failure". */
const char *mqtt_reason_str(uint8_t code);

struct mqtt_publish {
	uint8_t qos;
	bool dup, retain;
	uint16_t packet_id;          /* 0 for QoS 0 */
	struct mqtt_str topic;
	const uint8_t *payload;
	size_t payload_len;
	const uint8_t *props;        /* v5 properties (checked), for mqtt_user_property() */
	size_t props_len;
};
/* flags: the fixed header's low nibble. A topic alias is refused (the
 * client allows none), as are QoS 3, DUP on QoS 0, packet id 0 and a topic
 * that is empty, not UTF-8 or holds a wildcard or NUL. */
int mqtt_decode_publish(int version, uint8_t flags, const uint8_t *p, size_t n,
			struct mqtt_publish *out, char *why, size_t whylen);
/* The value of the first v5 user property called name; false: none. */
bool mqtt_user_property(const struct mqtt_publish *m, const char *name, struct mqtt_str *value);
/* PUBLISH out, QoS 0 or 1 (packet_id ignored for QoS 0), no properties. */
int mqtt_encode_publish(struct buf *out, int version, const char *topic, const void *payload,
			size_t len, uint8_t qos, bool retain, uint16_t packet_id);

/* PUBACK, PUBREC, PUBREL, PUBCOMP: type, packet id and, in v5, a reason
 * code (0: success, then left out). */
int mqtt_encode_ack(struct buf *out, int version, enum mqtt_type type, uint16_t packet_id,
		    uint8_t reason);
struct mqtt_ack {
	uint16_t packet_id;
	uint8_t reason;
	struct mqtt_str reason_string;
};
int mqtt_decode_ack(int version, enum mqtt_type type, uint8_t flags, const uint8_t *p,
		    size_t n, struct mqtt_ack *out, char *why, size_t whylen);

int mqtt_encode_pingreq(struct buf *out);
int mqtt_encode_disconnect(struct buf *out, int version, uint8_t reason);
struct mqtt_disconnect {
	uint8_t reason;
	struct mqtt_str reason_string;
};
int mqtt_decode_disconnect(int version, const uint8_t *p, size_t n, struct mqtt_disconnect *out,
			   char *why, size_t whylen);

#endif
