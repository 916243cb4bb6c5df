/* mqtt_conn.h - reaching an MQTT broker: the part every MQTT user of the
 * agent shares (the mqtt output, the mqtt_sub input, pushed configuration).
 *
 * It owns the connection keys of a section (url, credentials, TLS files,
 * timeouts, reconnect backoff), their validation, and the transport state
 * machine on the agent loop:
 *
 *   WAIT --timer--> PROBING (non-blocking TCP connect to each address of the
 *   host in turn, within connect_timeout) --mqtts--> HANDSHAKE (TLS bridge,
 *   within connect_timeout of its own) --> SESSION: the user's ready()
 *   callback; the session must be up (mqtt_conn_connected()) within what is
 *   left of that connect_timeout --> UP.
 *
 * The MQTT session itself (CONNECT/CONNACK and after) belongs to the user:
 * libmosquitto for the output, the agent's own client for subscribers. The
 * user reports the session's outcome back: connected() after a good CONNACK
 * (resets the backoff), failed() with the reason for status after any
 * failure (schedules the next attempt with backoff and jitter). Once ready()
 * has been called the attempt is the user's to end (mqtt_conn_failed()); the
 * module tells it through lost() and timeout() when it should.
 *
 * A client of the agent's own, in ready(): plain TCP, keep fd and send
 * CONNECT on it; mqtts, fd = mqtt_conn_connect_bridge(c) and send CONNECT
 * on that. On a good CONNACK mqtt_conn_connected(); on a refused one, a read
 * error or EOF, close fd and mqtt_conn_failed(c, why, false). The module
 * calls ready() again for the next attempt.
 *
 * Time and randomness come from loop.h only (loop_now_ms, backoff_delay,
 * timers), so tests drive it with a test clock. Name lookup still blocks
 * (getaddrinfo): give the broker as an IP address or a name in /etc/hosts.
 */
#ifndef AGENT_MQTT_CONN_H
#define AGENT_MQTT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"
#include "tls_bridge.h"

#define MQTT_DEFAULT_PORT 1883
#define MQTTS_DEFAULT_PORT 8883
#define MQTT_CONN_MAX_PASSWORD 65535

/* Embedded as member `conn` of a section's conf struct; its keys are the
 * rows MQTT_CONN_KEYS(type, def_url) adds to that section's cfg_key table.
 * Borrowed by mqtt_conn_new(): it must outlive the connection. */
struct mqtt_conn_conf {
	char *url;               /* mqtt://host:port or mqtts://host:port */
	char *username;
	char *password_file;
	char *ca_file, *client_cert, *client_key, *tls_server_name;
	int64_t keepalive_ms;
	int64_t connect_timeout_ms;
	int64_t reconnect_base_ms, reconnect_max_ms;
};

/* The key rows, for a conf struct `conf_type` whose member `conn` is a struct
 * mqtt_conn_conf, as initializers of a struct cfg_key table. Each row is
 * written once, here. MQTT_CONN_KEYS() gives all of them; a section that
 * documents its own keys between them (the mqtt output, whose reference
 * predates this module) places the groups one by one, and must place all
 * five. */
#define MQTT_CONN_MK(conf_type, f) .offset = offsetof(conf_type, conn.f)

#define MQTT_CONN_KEY_URL(conf_type, def_url)                                                      \
	{ .name = "url", .type = CFG_STR, .def = def_url, MQTT_CONN_MK(conf_type, url),            \
	  .help = "Broker address as mqtt://host:port (IPv6: mqtt://[::1]:1883; the port "         \
		  "defaults to 1883), or mqtts://host:port for MQTT over TLS (port 8883 by "       \
		  "default; TLS 1.2 or later, the broker's certificate is always verified and "    \
		  "must name the host). Prefer an IP address or a name from /etc/hosts: a DNS "    \
		  "lookup holds up the agent while it waits. With mqtts and an IP address, "       \
		  "set tls_server_name." },

#define MQTT_CONN_KEY_KEEPALIVE(conf_type)                                                         \
	{ .name = "keepalive", .type = CFG_DURATION, .def = "30s",                                 \
	  MQTT_CONN_MK(conf_type, keepalive_ms), .min = 5000, .max = 65535000,                     \
	  .help = "MQTT keepalive: a ping is sent after this long without traffic, and the "       \
		  "connection counts as lost when the broker stays silent for longer." },

#define MQTT_CONN_KEYS_AUTH(conf_type)                                                             \
	{ .name = "username", .type = CFG_STR, MQTT_CONN_MK(conf_type, username),                  \
	  .help = "User name for the broker, if it requires one." },                               \
	{ .name = "password_file", .type = CFG_STR, MQTT_CONN_MK(conf_type, password_file),        \
	  .help = "File holding the broker password (a trailing newline is ignored), read at "     \
		  "start. The password is never logged or shown. Needs username." },

#define MQTT_CONN_KEYS_RECONNECT(conf_type)                                                        \
	{ .name = "reconnect_base", .type = CFG_DURATION, .def = "1s",                             \
	  MQTT_CONN_MK(conf_type, reconnect_base_ms), .min = 100, .max = 3600000,                  \
	  .help = "Delay before reconnecting after a failure; it doubles with each further "       \
		  "failure, with jitter, up to reconnect_max." },                                  \
	{ .name = "reconnect_max", .type = CFG_DURATION, .def = "60s",                             \
	  MQTT_CONN_MK(conf_type, reconnect_max_ms), .min = 100, .max = 86400000,                  \
	  .help = "Longest delay between reconnect attempts." },                                   \
	{ .name = "connect_timeout", .type = CFG_DURATION, .def = "10s",                           \
	  MQTT_CONN_MK(conf_type, connect_timeout_ms), .min = 500, .max = 600000,                  \
	  .help = "How long a connection attempt (TCP connect and the broker's CONNACK) may "      \
		  "take before it is abandoned and retried." },

#define MQTT_CONN_KEYS_TLS(conf_type)                                                              \
	{ .name = "ca_file", .type = CFG_STR, MQTT_CONN_MK(conf_type, ca_file),                    \
	  .help = "mqtts: PEM file of the certificate authorities that may sign the broker's "     \
		  "certificate. Default: the system's store (" TLS_DEFAULT_CA_FILE ")." },         \
	{ .name = "client_cert", .type = CFG_STR, MQTT_CONN_MK(conf_type, client_cert),            \
	  .help = "mqtts: PEM client certificate for mutual TLS, presented when the broker "       \
		  "asks for one (mosquitto: require_certificate true). Needs client_key." },       \
	{ .name = "client_key", .type = CFG_STR, MQTT_CONN_MK(conf_type, client_key),              \
	  .help = "mqtts: PEM private key of client_cert (unencrypted; keep the file readable "    \
		  "by the agent only)." },                                                         \
	{ .name = "tls_server_name", .type = CFG_STR, MQTT_CONN_MK(conf_type, tls_server_name),    \
	  .help = "mqtts: the DNS name sent as SNI and that the broker's certificate must "        \
		  "carry. Default: the host of url. Required when url names the broker by IP "     \
		  "address (IP addresses in certificates are not matched)." },

#define MQTT_CONN_KEYS(conf_type, def_url)                                                         \
	MQTT_CONN_KEY_URL(conf_type, def_url)                                                      \
	MQTT_CONN_KEY_KEEPALIVE(conf_type)                                                         \
	MQTT_CONN_KEYS_AUTH(conf_type)                                                             \
	MQTT_CONN_KEYS_RECONNECT(conf_type)                                                        \
	MQTT_CONN_KEYS_TLS(conf_type)

/* Check the keys beyond their types: url required and of the form
 * mqtt[s]://host[:port]; the TLS keys only with mqtts; client_cert and
 * client_key together; tls_server_name a DNS name, and required under mqtts
 * when url gives an IP address; password_file needs username;
 * reconnect_base <= reconnect_max. Returns 0, or -EINVAL with the problem in
 * err ("url 'x' must look like ..."). */
int mqtt_conn_validate(const struct mqtt_conn_conf *c, char *err, size_t errlen);

struct mqtt_conn;

struct mqtt_conn_ops {
	/* Required. The transport is up. Plain TCP: fd is a connected
	 * non-blocking socket to numeric address addr:port, now the user's
	 * (libmosquitto closes it and connects to addr:port itself). mqtts: fd
	 * is -1 and addr is the bridge's Unix socket path (port 0); the user
	 * connects to it (mqtt_conn_connect_bridge() does so for a client of
	 * its own) and then calls mqtt_conn_attach(). The user may call
	 * mqtt_conn_failed() from inside. addr is borrowed for the call. */
	void (*ready)(struct mqtt_conn *c, void *arg, int fd, const char *addr, int port);
	/* Optional: the transport went down on its own (the TLS bridge saw the
	 * relayed connection end), with the reason. The module does nothing
	 * more: the user's session sees its socket close as well and then calls
	 * mqtt_conn_failed(); this reason is the better one to report. */
	void (*lost)(struct mqtt_conn *c, void *arg, const char *why);
	/* Optional: the session was not up (mqtt_conn_connected()) within
	 * connect_timeout. The user ends its session and calls
	 * mqtt_conn_failed() (with why, unless it knows better). NULL: the
	 * module calls mqtt_conn_failed(c, why, false) itself, and the user
	 * learns of it through status(). */
	void (*timeout)(struct mqtt_conn *c, void *arg, const char *why);
	/* Optional: status changed (connected or not, and why: "connecting to
	 * URL", the failure's reason for the field engineer; NULL when
	 * connected), for the owner's status line (output_set_connected(),
	 * input_set_connected()). Called from mqtt_conn_start(), _connected()
	 * and _failed() (and wherever the module fails an attempt itself), with
	 * the module's state already updated; mqtt_conn_close() and _free()
	 * report nothing. */
	void (*status)(struct mqtt_conn *c, void *arg, bool connected, const char *why);
};

/* label: "output lake" / "input sensors", for log lines. Parses the url
 * (validated before), makes the TLS bridge for mqtts (loading its CA, client
 * certificate and key) and reads the password file. Returns 0 with *out set,
 * or -EINVAL/-ENOMEM/-errno with words in err (TLS material: tls_bridge's
 * words; "cannot read password_file F: why"); *out is then NULL. conf and
 * ops are borrowed until mqtt_conn_free(). */
int mqtt_conn_new(struct loop *l, const struct mqtt_conn_conf *conf, const char *label,
		  const struct mqtt_conn_ops *ops, void *arg, struct mqtt_conn **out,
		  char *err, size_t errlen);
/* Closes everything the module holds (probe, TLS bridge, timer); accepts
 * NULL. The user closes its own socket. */
void mqtt_conn_free(struct mqtt_conn *c);

/* Begin connecting after delay_ms (0: on the next loop turn); reports
 * status(false, "connecting to URL"). */
void mqtt_conn_start(struct mqtt_conn *c, int64_t delay_ms);
/* The session is established (good CONNACK): the connect_timeout stops,
 * backoff starts over, status(true, NULL). */
void mqtt_conn_connected(struct mqtt_conn *c);
/* The session or transport failed: close what the module holds (probe, TLS
 * connection), report why through status(), log it (once while it stays the
 * same) and try again after the backoff: reconnect_base doubled per failure
 * in a row, at most reconnect_max, with jitter (backoff_delay()).
 * unreachable: no broker answered (refused, unreachable, no answer to the
 * TCP connect): the delay is then at most the probe cap. After
 * mqtt_conn_close() it only releases the transport and reports why. */
void mqtt_conn_failed(struct mqtt_conn *c, const char *why, bool unreachable);
/* Stop for good (drain, stop): no further attempts, no more timing. An
 * attempt in progress (waiting, probing, TLS handshake) is abandoned. A
 * session already handed over keeps its transport, so that a last
 * DISCONNECT can go out through the TLS bridge, until mqtt_conn_failed() or
 * mqtt_conn_free(). Reports nothing. */
void mqtt_conn_close(struct mqtt_conn *c);
/* Cap the delay after an unreachable attempt (0: no cap): the output's
 * retry_probe, so a broker that is back is found within that time however
 * long the backoff has grown. */
void mqtt_conn_set_probe_cap(struct mqtt_conn *c, int64_t cap_ms);

/* mqtts, from ready(): connect a non-blocking Unix stream socket to the
 * bridge and attach it (mqtt_conn_attach()). Returns the fd, now the
 * user's; or -errno, the attempt having then been failed (reported through
 * status(), next attempt scheduled). */
int mqtt_conn_connect_bridge(struct mqtt_conn *c);
/* mqtts, from ready(), once the user's connect() to the bridge's path has
 * been made: the bridge accepts it and relays. Returns 0, or -errno, the
 * attempt having then been failed as above. */
int mqtt_conn_attach(struct mqtt_conn *c);

/* What the module knows, for messages and CONNECT. */
const char *mqtt_conn_hostport(const struct mqtt_conn *c);  /* "host:port", "[v6]:port" */
const char *mqtt_conn_username(const struct mqtt_conn *c);  /* NULL: none */
/* The password from password_file, *len its length; NULL: none. */
const char *mqtt_conn_password(const struct mqtt_conn *c, size_t *len);
bool mqtt_conn_is_tls(const struct mqtt_conn *c);
unsigned mqtt_conn_attempt(const struct mqtt_conn *c);      /* failures in a row */
/* Milliseconds until the next attempt begins while waiting for it (0: due
 * now), else -1. */
int64_t mqtt_conn_next_attempt_ms(const struct mqtt_conn *c);
/* Words for a failed connect to the broker (an errno: "connection refused
 * (is the broker running at H:P?)", ...) in buf, for mqtt_conn_failed().
 * Returns buf. */
const char *mqtt_conn_strerror(const struct mqtt_conn *c, int err, char *buf, size_t len);
/* "500 ms" or "10 s", for messages. Returns buf. */
const char *mqtt_conn_fmt_ms(char *buf, size_t len, int64_t ms);

#endif
