/* tls_bridge.c - TLS for a plain-TCP client library, through mbedTLS.
 *
 * libmosquitto's own TLS is OpenSSL only, which would add megabytes to a
 * static binary next to the mbedTLS the agent already carries. Its client
 * connects to a Unix socket when given port 0, so the bridge does the TCP
 * connect's TLS handshake itself, then listens on a Unix socket in a private
 * directory, accepts libmosquitto's connection (checking it comes from this
 * process) and relays bytes both ways with non-blocking mbedTLS calls from
 * loop callbacks. Verification is always on, TLS 1.2 is the minimum and the
 * host name is checked (mbedTLS 2.28 matches DNS names only).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "log.h"
#include "mem.h"
#include "tls_bridge.h"

#define RELAY_BUF 16384
#define WHY_LEN 512

/* TLS alerts a server sends when it wants, or refuses, a client
 * certificate (RFC 5246 7.2.2, RFC 8446 6.2). */
#define ALERT_HANDSHAKE_FAILURE 40
#define ALERT_BAD_CERTIFICATE 42
#define ALERT_UNSUPPORTED_CERTIFICATE 43
#define ALERT_CERTIFICATE_REVOKED 44
#define ALERT_CERTIFICATE_EXPIRED 45
#define ALERT_CERTIFICATE_UNKNOWN 46
#define ALERT_UNKNOWN_CA 48
#define ALERT_ACCESS_DENIED 49
#define ALERT_CERTIFICATE_REQUIRED 116

enum bridge_state { BS_IDLE, BS_HANDSHAKE, BS_LISTENING, BS_RELAY };

struct tls_bridge {
	struct loop *loop;
	tls_bridge_cb cb;
	void *arg;
	char *server_name;
	char *label;
	bool have_cert;
	enum bridge_state state;
	char dir[64];
	char path[96];
	int listen_fd;
	struct loop_fd tcp_w;
	struct loop_fd local_w;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt cert;
	mbedtls_pk_context key;
	mbedtls_ssl_config conf;
	mbedtls_ssl_context ssl;
	bool ssl_ready;
	bool want_write;        /* mbedTLS waits for the TCP socket to take more */
	/* broker -> client library */
	unsigned char down[RELAY_BUF];
	size_t down_len, down_off;
	/* client library -> broker */
	unsigned char up[RELAY_BUF];
	size_t up_len, up_off;
};

static int bio_send(void *ctx, const unsigned char *p, size_t n)
{
	struct tls_bridge *b = ctx;
	ssize_t r = send(b->tcp_w.fd, p, n, MSG_NOSIGNAL);

	if (r >= 0)
		return (int)r;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *p, size_t n)
{
	struct tls_bridge *b = ctx;
	ssize_t r = recv(b->tcp_w.fd, p, n, 0);

	if (r >= 0)
		return (int)r;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

static void close_fd_watch(struct tls_bridge *b, struct loop_fd *w)
{
	loop_fd_del(b->loop, w);
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}

static void close_listener(struct tls_bridge *b)
{
	if (b->listen_fd >= 0) {
		close(b->listen_fd);
		unlink(b->path);
	}
	b->listen_fd = -1;
}

static void close_all(struct tls_bridge *b, bool notify)
{
	if (notify && b->ssl_ready && b->tcp_w.fd >= 0 &&
	    (b->state == BS_RELAY || b->state == BS_LISTENING))
		mbedtls_ssl_close_notify(&b->ssl);
	close_fd_watch(b, &b->tcp_w);
	close_fd_watch(b, &b->local_w);
	close_listener(b);
	if (b->ssl_ready)
		mbedtls_ssl_free(&b->ssl);
	b->ssl_ready = false;
	b->want_write = false;
	b->down_len = b->down_off = b->up_len = b->up_off = 0;
	b->state = BS_IDLE;
}

/* Close everything, then tell the owner, who may restart us. */
static void fail(struct tls_bridge *b, const char *why)
{
	tls_bridge_cb cb = b->cb;
	void *arg = b->arg;

	close_all(b, false);
	cb(arg, -EIO, why);
}

static void fmt_time(char *out, size_t len, const mbedtls_x509_time *t)
{
	snprintf(out, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", t->year, t->mon, t->day, t->hour,
		 t->min, t->sec);
}

static const char *alert_name(int a)
{
	switch (a) {
	case ALERT_HANDSHAKE_FAILURE: return "handshake failure";
	case ALERT_BAD_CERTIFICATE: return "bad certificate";
	case ALERT_UNSUPPORTED_CERTIFICATE: return "unsupported certificate";
	case ALERT_CERTIFICATE_REVOKED: return "certificate revoked";
	case ALERT_CERTIFICATE_EXPIRED: return "certificate expired";
	case ALERT_CERTIFICATE_UNKNOWN: return "certificate unknown";
	case ALERT_UNKNOWN_CA: return "unknown CA";
	case ALERT_ACCESS_DENIED: return "access denied";
	case ALERT_CERTIFICATE_REQUIRED: return "certificate required";
	default: return "fatal alert";
	}
}

/* Words for a failed handshake, most specific cause first. */
static void handshake_why(struct tls_bridge *b, int ret, char *why, size_t len)
{
	char err[160], when[40];
	bool closed;

	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
		uint32_t flags = mbedtls_ssl_get_verify_result(&b->ssl);
		const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&b->ssl);

		if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
			snprintf(why, len, "TLS: server certificate not trusted (unknown CA; check "
				 "ca_file)");
		} else if (flags & MBEDTLS_X509_BADCERT_EXPIRED) {
			when[0] = '\0';
			if (peer)
				fmt_time(when, sizeof(when), &peer->valid_to);
			snprintf(why, len, "TLS: certificate of %s has expired%s%s (check the clock if "
				 "it should not have)", b->server_name, *when ? " on " : "", when);
		} else if (flags & MBEDTLS_X509_BADCERT_FUTURE) {
			when[0] = '\0';
			if (peer)
				fmt_time(when, sizeof(when), &peer->valid_from);
			snprintf(why, len, "TLS: certificate of %s is not yet valid%s%s (is this "
				 "device's clock right?)", b->server_name, *when ? " before " : "",
				 when);
		} else if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
			snprintf(why, len, "TLS: certificate does not match host %s (set "
				 "tls_server_name if the broker's certificate names another)",
				 b->server_name);
		} else {
			mbedtls_x509_crt_verify_info(err, sizeof(err), "", flags);
			err[strcspn(err, "\n")] = '\0';
			snprintf(why, len, "TLS: server certificate rejected: %s", err);
		}
		return;
	}
	closed = ret == MBEDTLS_ERR_SSL_CONN_EOF || ret == MBEDTLS_ERR_NET_CONN_RESET ||
		 ret == MBEDTLS_ERR_NET_SEND_FAILED || ret == MBEDTLS_ERR_NET_RECV_FAILED;
	/* A server that refuses the client's certificate (or its absence)
	 * sends an alert and closes; the close may be all that arrives. */
	if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE || (closed && b->ssl.client_auth)) {
		const char *what = "connection closed";

		if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE)
			what = alert_name(b->ssl.in_msg ? b->ssl.in_msg[1] : 0);
		if (!b->have_cert && b->ssl.client_auth)
			snprintf(why, len, "TLS: %s refused the handshake (%s): it requires a client "
				 "certificate (set client_cert and client_key)", b->label, what);
		else if (b->have_cert && b->ssl.client_auth)
			snprintf(why, len, "TLS: %s refused the handshake (%s): the client certificate "
				 "is not accepted", b->label, what);
		else
			snprintf(why, len, "TLS: %s refused the handshake (%s)", b->label, what);
		return;
	}
	if (closed) {
		snprintf(why, len, "TLS: %s closed the connection during the handshake (not a TLS "
			 "listener?)", b->label);
		return;
	}
	mbedtls_strerror(ret, err, sizeof(err));
	snprintf(why, len, "TLS: handshake with %s failed: %s", b->label, err);
}

static void update_watches(struct tls_bridge *b)
{
	unsigned tcp_ev = 0, local_ev = 0;

	if (b->state == BS_HANDSHAKE || b->state == BS_LISTENING) {
		tcp_ev = b->want_write ? LOOP_WRITE : LOOP_READ;
		if (b->state == BS_LISTENING)
			tcp_ev = 0;
	} else if (b->state == BS_RELAY) {
		if (b->down_len == 0)
			tcp_ev |= LOOP_READ;
		if (b->want_write)
			tcp_ev |= LOOP_WRITE;
		if (b->up_len == 0)
			local_ev |= LOOP_READ;
		if (b->down_len > b->down_off)
			local_ev |= LOOP_WRITE;
	}
	if (b->tcp_w.fd >= 0 && loop_fd_update(b->loop, &b->tcp_w, tcp_ev))
		log_error("TLS %s: cannot watch the connection", b->label);
	if (b->local_w.fd >= 0 && loop_fd_update(b->loop, &b->local_w, local_ev))
		log_error("TLS %s: cannot watch the local socket", b->label);
}

static int listen_local(struct tls_bridge *b)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", b->path);
	unlink(b->path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 1)) {
		int err = -errno;

		close(fd);
		return err;
	}
	b->listen_fd = fd;
	return 0;
}

static void step_handshake(struct tls_bridge *b)
{
	char why[WHY_LEN];
	int ret, rc;

	ret = mbedtls_ssl_handshake(&b->ssl);
	if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
		b->want_write = ret == MBEDTLS_ERR_SSL_WANT_WRITE;
		update_watches(b);
		return;
	}
	if (ret) {
		handshake_why(b, ret, why, sizeof(why));
		fail(b, why);
		return;
	}
	b->want_write = false;
	rc = listen_local(b);
	if (rc) {
		snprintf(why, sizeof(why), "TLS: cannot listen on %s: %s", b->path, strerror(-rc));
		fail(b, why);
		return;
	}
	b->state = BS_LISTENING;
	update_watches(b);
	log_debug("TLS %s: %s with %s", b->label, mbedtls_ssl_get_version(&b->ssl),
		  mbedtls_ssl_get_ciphersuite(&b->ssl));
	b->cb(b->arg, 0, NULL);
}

/* Move bytes both ways until neither side can take or give more. */
static void pump(struct tls_bridge *b)
{
	char why[WHY_LEN], err[160];
	bool progress = true;

	while (progress && b->state == BS_RELAY) {
		ssize_t n;
		int ret;

		progress = false;
		if (b->down_len == 0) {
			ret = mbedtls_ssl_read(&b->ssl, b->down, sizeof(b->down));
			if (ret > 0) {
				b->down_len = (size_t)ret;
				b->down_off = 0;
				progress = true;
			} else if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
				snprintf(why, sizeof(why), "TLS: %s closed the connection", b->label);
				fail(b, why);
				return;
			} else if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
				b->want_write = true;
			} else if (ret != MBEDTLS_ERR_SSL_WANT_READ) {
				mbedtls_strerror(ret, err, sizeof(err));
				snprintf(why, sizeof(why), "TLS: connection to %s lost: %s", b->label, err);
				fail(b, why);
				return;
			}
		}
		if (b->down_len > b->down_off) {
			n = send(b->local_w.fd, b->down + b->down_off, b->down_len - b->down_off,
				 MSG_NOSIGNAL);
			if (n > 0) {
				b->down_off += (size_t)n;
				if (b->down_off == b->down_len)
					b->down_len = b->down_off = 0;
				progress = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				/* The client library closed its end: it knows. */
				close_all(b, true);
				return;
			}
		}
		if (b->up_len == 0) {
			n = recv(b->local_w.fd, b->up, sizeof(b->up), 0);
			if (n > 0) {
				b->up_len = (size_t)n;
				b->up_off = 0;
				progress = true;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				close_all(b, true);
				return;
			}
		}
		if (b->up_len > b->up_off) {
			ret = mbedtls_ssl_write(&b->ssl, b->up + b->up_off, b->up_len - b->up_off);
			if (ret > 0) {
				b->want_write = false;
				b->up_off += (size_t)ret;
				if (b->up_off == b->up_len)
					b->up_len = b->up_off = 0;
				progress = true;
			} else if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
				b->want_write = true;
			} else if (ret != MBEDTLS_ERR_SSL_WANT_READ) {
				mbedtls_strerror(ret, err, sizeof(err));
				snprintf(why, sizeof(why), "TLS: connection to %s lost: %s", b->label, err);
				fail(b, why);
				return;
			}
		}
	}
	update_watches(b);
}

static void tcp_cb(struct loop_fd *w, unsigned revents)
{
	struct tls_bridge *b = container_of(w, struct tls_bridge, tcp_w);

	if (b->state == BS_HANDSHAKE)
		step_handshake(b);
	else if (b->state == BS_RELAY)
		pump(b);
}

static void local_cb(struct loop_fd *w, unsigned revents)
{
	struct tls_bridge *b = container_of(w, struct tls_bridge, local_w);

	if (b->state == BS_RELAY)
		pump(b);
}

int tls_bridge_start(struct tls_bridge *b, int fd)
{
	int ret, rc;

	close_all(b, true);
	mbedtls_ssl_init(&b->ssl);
	b->ssl_ready = true;
	ret = mbedtls_ssl_setup(&b->ssl, &b->conf);
	if (!ret)
		ret = mbedtls_ssl_set_hostname(&b->ssl, b->server_name);
	if (ret) {
		close(fd);
		close_all(b, false);
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? -ENOMEM : -EINVAL;
	}
	mbedtls_ssl_set_bio(&b->ssl, b, bio_send, bio_recv, NULL);
	b->tcp_w.fd = fd;
	b->tcp_w.events = LOOP_WRITE;
	rc = loop_fd_add(b->loop, &b->tcp_w);
	if (rc) {
		close_all(b, false);
		return rc;
	}
	b->state = BS_HANDSHAKE;
	/* The ClientHello can go out at once; the rest follows from tcp_cb. */
	step_handshake(b);
	return 0;
}

const char *tls_bridge_path(const struct tls_bridge *b)
{
	return b->path;
}

int tls_bridge_attach(struct tls_bridge *b)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd, rc;

	if (b->state != BS_LISTENING)
		return -ENOTCONN;
	fd = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* The directory is private, but only our own connection may use the
	 * TLS session. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) || cred.pid != getpid()) {
		close(fd);
		return -EPERM;
	}
	close_listener(b);
	b->local_w.fd = fd;
	b->local_w.events = LOOP_READ;
	rc = loop_fd_add(b->loop, &b->local_w);
	if (rc) {
		close(fd);
		b->local_w.fd = -1;
		return rc;
	}
	b->state = BS_RELAY;
	pump(b);
	return 0;
}

void tls_bridge_reset(struct tls_bridge *b)
{
	if (b)
		close_all(b, true);
}

/* The private directories are /tmp/agentd-tls-PID-XXXXXX. A process that
 * was killed (SIGKILL, power cut with a persistent /tmp) cannot remove its
 * own; the next bridge removes those of this user whose process is gone. */
#define DIR_PREFIX "/tmp/agentd-tls-"

static void sweep_stale_dirs(void)
{
	char path[300];
	struct dirent *e;
	struct stat st;
	DIR *d = opendir("/tmp");
	long pid;
	char *end;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "agentd-tls-", 11) || strlen(e->d_name) > 64)
			continue;
		pid = strtol(e->d_name + 11, &end, 10);
		if (pid <= 0 || *end != '-' || pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "/tmp/%s", e->d_name);
		if (lstat(path, &st) || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
			continue;
		snprintf(path, sizeof(path), "/tmp/%s/s", e->d_name);
		unlink(path);
		snprintf(path, sizeof(path), "/tmp/%s", e->d_name);
		if (!rmdir(path))
			log_info("removed %s, left by a stopped agentd (pid %ld)", path, pid);
	}
	closedir(d);
}

int tls_bridge_new(struct loop *l, const struct tls_bridge_conf *c, tls_bridge_cb cb, void *arg,
		   struct tls_bridge **out, char *err, size_t errlen)
{
	const char *ca = c->ca_file ? c->ca_file : TLS_DEFAULT_CA_FILE;
	static const char pers[] = "agentd tls bridge";
	struct tls_bridge *b;
	char e[160];
	int ret, rc;

	*out = NULL;
	b = xcalloc(1, sizeof(*b));
	if (!b) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->loop = l;
	b->cb = cb;
	b->arg = arg;
	b->listen_fd = -1;
	b->tcp_w.fd = -1;
	b->tcp_w.cb = tcp_cb;
	b->local_w.fd = -1;
	b->local_w.cb = local_cb;
	b->server_name = xstrdup(c->server_name);
	b->label = xstrdup(c->label ? c->label : c->server_name);
	mbedtls_entropy_init(&b->entropy);
	mbedtls_ctr_drbg_init(&b->drbg);
	mbedtls_x509_crt_init(&b->ca);
	mbedtls_x509_crt_init(&b->cert);
	mbedtls_pk_init(&b->key);
	mbedtls_ssl_config_init(&b->conf);
	if (!b->server_name || !b->label) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out_free;
	}

	rc = -EINVAL;
	ret = mbedtls_ctr_drbg_seed(&b->drbg, mbedtls_entropy_func, &b->entropy,
				    (const unsigned char *)pers, sizeof(pers) - 1);
	if (ret) {
		mbedtls_strerror(ret, e, sizeof(e));
		snprintf(err, errlen, "TLS: cannot seed the random generator: %s", e);
		rc = -EIO;
		goto out_free;
	}
	ret = mbedtls_x509_crt_parse_file(&b->ca, ca);
	if (ret < 0) {
		mbedtls_strerror(ret, e, sizeof(e));
		snprintf(err, errlen, "cannot read the CA certificates in %s (ca_file): %s", ca, e);
		goto out_free;
	}
	if (c->client_cert) {
		ret = mbedtls_x509_crt_parse_file(&b->cert, c->client_cert);
		if (ret) {
			mbedtls_strerror(ret, e, sizeof(e));
			snprintf(err, errlen, "cannot read client_cert %s: %s", c->client_cert, e);
			goto out_free;
		}
		ret = mbedtls_pk_parse_keyfile(&b->key, c->client_key, NULL);
		if (ret) {
			mbedtls_strerror(ret, e, sizeof(e));
			snprintf(err, errlen, "cannot read client_key %s: %s", c->client_key, e);
			goto out_free;
		}
		if (mbedtls_x509_time_is_past(&b->cert.valid_to)) {
			char when[40];

			fmt_time(when, sizeof(when), &b->cert.valid_to);
			log_warn("TLS %s: client_cert %s expired on %s", b->label, c->client_cert,
				 when);
		}
		b->have_cert = true;
	}
	ret = mbedtls_ssl_config_defaults(&b->conf, MBEDTLS_SSL_IS_CLIENT,
					  MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
	if (ret) {
		snprintf(err, errlen, "TLS: cannot set up the configuration");
		goto out_free;
	}
	mbedtls_ssl_conf_min_version(&b->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_authmode(&b->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&b->conf, &b->ca, NULL);
	mbedtls_ssl_conf_rng(&b->conf, mbedtls_ctr_drbg_random, &b->drbg);
	if (b->have_cert) {
		ret = mbedtls_ssl_conf_own_cert(&b->conf, &b->cert, &b->key);
		if (ret) {
			snprintf(err, errlen, "client_key %s does not fit client_cert %s",
				 c->client_key, c->client_cert);
			goto out_free;
		}
	}

	sweep_stale_dirs();
	snprintf(b->dir, sizeof(b->dir), "%s%d-XXXXXX", DIR_PREFIX, (int)getpid());
	if (!mkdtemp(b->dir)) {
		rc = -errno;
		snprintf(err, errlen, "TLS: cannot make a private directory in /tmp: %s",
			 strerror(-rc));
		b->dir[0] = '\0';
		goto out_free;
	}
	snprintf(b->path, sizeof(b->path), "%s/s", b->dir);
	*out = b;
	return 0;

out_free:
	tls_bridge_free(b);
	return rc;
}

void tls_bridge_free(struct tls_bridge *b)
{
	if (!b)
		return;
	close_all(b, false);
	if (b->dir[0])
		rmdir(b->dir);
	mbedtls_ssl_config_free(&b->conf);
	mbedtls_pk_free(&b->key);
	mbedtls_x509_crt_free(&b->cert);
	mbedtls_x509_crt_free(&b->ca);
	mbedtls_ctr_drbg_free(&b->drbg);
	mbedtls_entropy_free(&b->entropy);
	xfree(b->label);
	xfree(b->server_name);
	xfree(b);
}
