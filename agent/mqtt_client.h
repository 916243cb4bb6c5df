/* mqtt_client.h - the agent's own MQTT session, on the agent loop, for
 * subscribers that acknowledge a message only once they have made it
 * durable (libmosquitto acknowledges inside its read path).
 *
 * The user hands the client a connected non-blocking stream socket
 * (mqtt_client_attach(), from mqtt_conn's ready()); the client sends
 * CONNECT, waits for CONNACK and SUBACK within connect_timeout, keeps the
 * connection alive with PINGREQ, buffers its writes and frames what it
 * reads. Nothing inbound is acknowledged by the client itself:
 *   - every PUBLISH goes to message(); the user calls mqtt_client_ack()
 *     later (PUBACK for QoS 1, PUBREC for QoS 2), on the same connection;
 *   - every PUBREL goes to released(); the user calls
 *     mqtt_client_complete() (PUBCOMP) once the release is durable.
 * When the connection ends (broker, error, malformed packet, timeout) the
 * client closes the socket and calls closed() with the reason; the user
 * reconnects. Time comes from the loop's clock seam only.
 */
#ifndef AGENT_MQTT_CLIENT_H
#define AGENT_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "mqtt_proto.h"

struct mqtt_client;

struct mqtt_client_conf {
	int version;                 /* MQTT_V5 or MQTT_V311 */
	const char *client_id;
	bool clean_start;            /* false (a persistent session) for subscribers */
	uint16_t keepalive_s;        /* 0: no pings */
	uint32_t session_expiry_s;   /* v5 */
	uint16_t receive_maximum;    /* v5: unacknowledged QoS 1/2 messages allowed */
	uint32_t max_packet_size;    /* larger inbound packets drop the connection */
	const char *username;        /* NULL: none */
	const void *password;        /* NULL: none */
	size_t password_len;
	int64_t connect_timeout_ms;  /* for CONNACK and SUBACK */
	const struct mqtt_sub_topic *topics;  /* subscribed after every CONNACK */
	size_t n_topics;
};

struct mqtt_client_ops {
	/* Optional: CONNACK accepted, before SUBSCRIBE goes out (messages of
	 * a kept session may come before SUBACK). session_present: the
	 * broker kept the session; false: it starts afresh (no packet id of
	 * an earlier connection means anything any more). */
	void (*connected)(struct mqtt_client *c, void *arg, bool session_present);
	/* CONNACK accepted and SUBACK received: codes[i] is topic i's
	 * granted QoS or (>= 0x80) why it was refused. */
	void (*subscribed)(struct mqtt_client *c, void *arg, bool session_present,
			   const uint8_t *codes, size_t n);
	/* An inbound PUBLISH (borrowed for the call). */
	void (*message)(struct mqtt_client *c, void *arg, const struct mqtt_publish *m);
	/* An inbound PUBREL: QoS 2 message packet_id is released. */
	void (*released)(struct mqtt_client *c, void *arg, uint16_t packet_id);
	/* Optional: the broker acknowledged one of our QoS 1 publishes. */
	void (*published)(struct mqtt_client *c, void *arg, uint16_t packet_id, uint8_t reason);
	/* The connection ended and its socket is closed; why is for status. */
	void (*closed)(struct mqtt_client *c, void *arg, const char *why);
};

/* conf's strings and topics must live as long as the client. 0 or -ENOMEM. */
int mqtt_client_new(struct loop *l, const struct mqtt_client_conf *conf,
		    const struct mqtt_client_ops *ops, void *arg, struct mqtt_client **out);
/* Closes the connection (no callback); accepts NULL. */
void mqtt_client_free(struct mqtt_client *c);

/* Take fd (connected, non-blocking; the client closes it) and start the
 * session: CONNECT now. 0 or -errno (fd is closed then too). */
int mqtt_client_attach(struct mqtt_client *c, int fd);
/* End the connection now: a DISCONNECT (best effort) and close, without
 * closed(). */
void mqtt_client_disconnect(struct mqtt_client *c);

/* Acknowledge inbound message packet_id of the current connection: PUBACK
 * (QoS 1) or PUBREC (QoS 2). 0; -ENOENT when it is not waiting for an
 * acknowledgement on this connection (it came on an earlier one: the
 * broker sends it again); -ENOTCONN; -ENOMEM. */
int mqtt_client_ack(struct mqtt_client *c, uint16_t packet_id);
/* PUBCOMP for a released QoS 2 message. Returns like mqtt_client_ack(). */
int mqtt_client_complete(struct mqtt_client *c, uint16_t packet_id);
/* PUBLISH out at QoS 0 or 1; returns the packet id (QoS 1; 0 for QoS 0)
 * or -errno (-ENOTCONN, -EBUSY: the broker's receive maximum is in use,
 * -EMSGSIZE, -EINVAL). */
int mqtt_client_publish(struct mqtt_client *c, const char *topic, const void *payload,
			size_t len, uint8_t qos, bool retain);

/* True once CONNACK and SUBACK are in. */
bool mqtt_client_up(const struct mqtt_client *c);
/* Increases with every attach: tells connections apart (0: none yet). */
uint32_t mqtt_client_generation(const struct mqtt_client *c);
/* QoS 1/2 messages of this connection not yet acknowledged or completed. */
unsigned mqtt_client_inflight(const struct mqtt_client *c);
/* Messages received (since the client was made) while receive_maximum
 * others were unacknowledged: the broker does not honour the window. */
uint64_t mqtt_client_over_window(const struct mqtt_client *c);
/* The session's negotiated values (after CONNACK). */
const char *mqtt_client_assigned_id(const struct mqtt_client *c); /* NULL: none */

#endif
