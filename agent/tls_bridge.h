/* tls_bridge.h - an in-process TLS client (mbedTLS) that relays between a
 * local Unix socket and a TLS connection, driven by the agent loop.
 *
 * A client library that speaks plain TCP (libmosquitto) connects to the
 * bridge's Unix socket; the bridge carries its bytes over TLS to the server.
 * One bridge serves one connection at a time and is reused across
 * reconnects.
 */
#ifndef AGENT_TLS_BRIDGE_H
#define AGENT_TLS_BRIDGE_H

#include <stddef.h>

#include "loop.h"

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

struct tls_bridge_conf {
	const char *ca_file;      /* PEM CA certificates; NULL: TLS_DEFAULT_CA_FILE */
	const char *client_cert;  /* PEM; NULL: no client certificate */
	const char *client_key;   /* PEM, unencrypted; with client_cert */
	const char *server_name;  /* SNI and the name the certificate must carry */
	const char *label;        /* "host:port" for messages */
};

/* Called once per connection when the handshake has failed (rc < 0), has
 * completed (rc == 0: connect to tls_bridge_path() now, then call
 * tls_bridge_attach()), or when a relayed connection ended (rc < 0) for the
 * reason in why. The bridge has closed its own descriptors by then and may
 * be reset or restarted from inside the callback. */
typedef void (*tls_bridge_cb)(void *arg, int rc, const char *why);

struct tls_bridge;

/* Load the certificates and key. Returns 0, or -EINVAL/-ENOMEM/-errno with
 * words in err. */
int tls_bridge_new(struct loop *l, const struct tls_bridge_conf *c, tls_bridge_cb cb, void *arg,
		   struct tls_bridge **out, char *err, size_t errlen);
/* Closes any connection and removes the Unix socket; accepts NULL. */
void tls_bridge_free(struct tls_bridge *b);

/* Take over fd, a connected non-blocking TCP socket, and begin the
 * handshake. Ends any previous connection first. Returns 0 or -errno (fd is
 * closed either way on error). */
int tls_bridge_start(struct tls_bridge *b, int fd);
/* Path of the Unix socket that listens once the handshake is done. */
const char *tls_bridge_path(const struct tls_bridge *b);
/* Accept the client's connection on the Unix socket and start relaying.
 * Returns 0 or -errno. */
int tls_bridge_attach(struct tls_bridge *b);
/* Close the connection (with a close_notify when possible); no callback. */
void tls_bridge_reset(struct tls_bridge *b);

#endif
