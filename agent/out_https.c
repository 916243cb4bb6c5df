/* out_https.c - the https output type: each batch is one HTTP POST, sent
 * with libcurl's multi interface on the agent's loop (curl_loop.c).
 *
 * HTTP has no standing connection to watch, so "connected" in status means
 * that the last request got an HTTP response; before the first request the
 * output counts as connected. Every transfer has an easy handle of its own,
 * kept in a small pool and reused; the multi handle keeps connections (and
 * TLS sessions) alive between requests.
 *
 * What the remote's answer means for the batch is decided in finish():
 * 2xx delivered; 408, 429, 5xx and transport failures retried (honouring
 * Retry-After); 413 split by the core; any other 4xx dead-letters the batch,
 * except answers that say the request was not authorised (401, 403, 407, and
 * nginx's 400 for a missing or refused client certificate): those are about
 * the agent's credentials, not the records, so they are retried until the
 * configuration is fixed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <mbedtls/x509.h>
#include <zlib.h>
#include <zstd.h>

#include "buf.h"
#include "curl_loop.h"
#include "log.h"
#include "mem.h"
#include "output.h"
#include "url.h"
#include "secret.h"

#define MAX_TRANSFERS 64
#define MAX_SECRET 4096
#define EXCERPT_LEN 200
#define WHY_LEN 1024
/* A Retry-After further away than this is taken as this: a bad clock or a
 * bad header must not stop delivery for days. */
#define MAX_RETRY_AFTER_MS (3600 * 1000LL)

enum { ENC_ZSTD, ENC_GZIP, ENC_NONE };

struct https_conf {
	char *url;
	int encoding;
	char *headers;
	char *ca_file;
	char *ca_dir;
	char *client_cert;
	char *client_key;
	char *token_file;
	char *username;
	char *password_file;
	char *proxy;
	int64_t connect_timeout_ms;
	int64_t timeout_ms;
};

static const char *const encoding_names[] = { "zstd", "gzip", "none", NULL };

#define HK(f) .offset = offsetof(struct https_conf, f)
static const struct cfg_key https_keys[] = {
	{ .name = "url", .type = CFG_STR, HK(url), .required = true,
	  .example = "https://lake.example.net/ingest",
	  .help = "Endpoint each batch is POSTed to, as https://host[:port]/path (IPv6: "
		  "https://[::1]:8443/ingest). http:// is accepted for a receiver on the same host or "
		  "behind a trusted proxy; it sends records and credentials in clear text. "
		  "Credentials do not belong in the URL: use token_file or username and "
		  "password_file." },
	{ .name = "content_encoding", .type = CFG_ENUM, .def = "zstd", HK(encoding),
	  .enums = encoding_names,
	  .help = "How the NDJSON body is compressed: zstd sends the batch's zstd frame as it is "
		  "(Content-Encoding: zstd); gzip recompresses it for endpoints that cannot read zstd "
		  "(Content-Encoding: gzip); none sends plain NDJSON. gzip and none cost CPU on the "
		  "gateway, none also bandwidth." },
	{ .name = "headers", .type = CFG_STR, HK(headers),
	  .help = "Extra request headers, as 'Name: value' pairs separated by ';', e.g. "
		  "headers = \"X-Tenant: plant-7; X-Env: prod\" (quote the value when it holds a #). "
		  "Names are HTTP tokens; values are printable text without ';'. The headers the "
		  "agent sets itself (Content-Type, Content-Encoding, Content-Length, Authorization, "
		  "Host, Idempotency-Key and the X-Agent-Id ... X-Stream family) cannot be "
		  "replaced." },
	{ .name = "ca_file", .type = CFG_STR, HK(ca_file),
	  .help = "PEM file of the certificate authorities that may sign the server's certificate. "
		  "Default: the system's store (/etc/ssl/certs). The server's certificate is always "
		  "verified, and must name the host of url." },
	{ .name = "ca_dir", .type = CFG_STR, HK(ca_dir),
	  .help = "Directory of CA certificates in OpenSSL's hashed layout (c_rehash), instead of or "
		  "besides ca_file." },
	{ .name = "client_cert", .type = CFG_STR, HK(client_cert),
	  .help = "PEM client certificate for mutual TLS, presented when the server asks for one. "
		  "Needs client_key." },
	{ .name = "client_key", .type = CFG_STR, HK(client_key),
	  .help = "PEM private key of client_cert (unencrypted; keep the file readable by the "
		  "agent only)." },
	{ .name = "token_file", .type = CFG_STR, HK(token_file),
	  .help = "File holding a bearer token, sent as 'Authorization: Bearer <token>' (a trailing "
		  "newline is ignored). Read at start and on reload; never logged or shown." },
	{ .name = "username", .type = CFG_STR, HK(username),
	  .help = "User name for HTTP basic authentication. Needs password_file; not together with "
		  "token_file." },
	{ .name = "password_file", .type = CFG_STR, HK(password_file),
	  .help = "File holding the basic authentication password (a trailing newline is ignored). "
		  "Never logged or shown. Needs username." },
	{ .name = "proxy", .type = CFG_STR, HK(proxy),
	  .help = "HTTP(S) proxy as http://host:port. Unset: the environment's https_proxy, "
		  "http_proxy and no_proxy variables apply (as for curl). none: no proxy, whatever "
		  "the environment says." },
	{ .name = "connect_timeout", .type = CFG_DURATION, .def = "10s", HK(connect_timeout_ms),
	  .min = 500, .max = 600000,
	  .help = "How long connecting (TCP and the TLS handshake) may take before the request is "
		  "abandoned and retried." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "60s", HK(timeout_ms),
	  .min = 1000, .max = 3600000,
	  .help = "How long a whole request (connect, upload, the server's answer) may take before "
		  "it is abandoned and the batch retried. Give slow ingest endpoints enough time: a "
		  "batch that timed out may have been stored, and is then delivered twice (same "
		  "Idempotency-Key)." },
	{ .name = NULL },
};

/* Headers the agent sets; config may not replace them. */
static const char *const reserved_headers[] = {
	"Content-Type", "Content-Encoding", "Content-Length", "Transfer-Encoding", "Authorization",
	"Proxy-Authorization", "Host", "Expect", "Connection", "Idempotency-Key", "X-Agent-Id",
	"X-Batch-Id", "X-Seq-First", "X-Seq-Last", "X-Record-Count", "X-Stream", NULL
};

struct xfer {
	struct out_https *h;
	CURL *easy;
	struct curl_slist *hdrs;
	struct batch *b;        /* NULL: the handle is free */
	struct buf body;        /* the request body for gzip and none */
	char excerpt[EXCERPT_LEN + 1];
	size_t excerpt_len;
	char retry_after[64];
	char errbuf[CURL_ERROR_SIZE];
};

struct out_https {
	struct output *o;
	const struct https_conf *conf;
	struct curl_loop *cl;
	char scheme[8];
	char host[256];
	int port;
	char hostport[272];
	struct curl_slist *fixed_hdrs;  /* Content-Type, extra headers, Authorization */
	char *password;
	ZSTD_DCtx *dctx;
	z_stream zs;
	bool zs_ready;
	struct buf plain;               /* scratch: the decompressed batch */
	struct xfer xfers[MAX_TRANSFERS];
	int nbusy;
	bool draining, drained;
};

/* ---- configuration ---------------------------------------------------- */

/* Split url into scheme, host and port; 0 or -EINVAL with err set. */
static int parse_url(const char *url, char *scheme, size_t slen, char *host, size_t hostlen,
		     int *port, char *err, size_t errlen)
{
	const char *h, *end, *rest;
	int rc;

	if (!strncmp(url, "https://", 8)) {
		snprintf(scheme, slen, "https");
		*port = 443;
		h = url + 8;
	} else if (!strncmp(url, "http://", 7)) {
		snprintf(scheme, slen, "http");
		*port = 80;
		h = url + 7;
	} else {
		snprintf(err, errlen, "url '%s' must start with https:// (or http://)", url);
		return -EINVAL;
	}
	end = h + strcspn(h, "/?#");
	if (memchr(h, '@', (size_t)(end - h))) {
		snprintf(err, errlen, "url must not hold credentials: use token_file or username and "
			 "password_file");
		return -EINVAL;
	}
	rc = url_host_port(h, host, hostlen, port, &rest);
	if (rc == -ERANGE) {
		snprintf(err, errlen, "url '%s': " URL_PORT_RANGE, url);
		return -EINVAL;
	}
	if (rc)
		goto bad;
	if (*rest && *rest != '/' && *rest != '?')
		goto bad;
	for (const char *p = url; *p; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			snprintf(err, errlen, "url '%s' must not contain blanks or control characters",
				 url);
			return -EINVAL;
		}
	}
	return 0;
bad:
	snprintf(err, errlen, "url '%s' must look like https://host[:port]/path", url);
	return -EINVAL;
}

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/* Walk the `headers` value: each "Name: value" is checked, then handed to
 * add (when not NULL) as a full header line. */
static int parse_headers(const char *spec, struct curl_slist **list, char *err, size_t errlen)
{
	char *copy = xstrdup(spec), *save = NULL, *item;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
		char *colon, line[1024];
		const char *name, *value;

		if (!*trim(item))
			continue;
		colon = strchr(item, ':');
		if (!colon) {
			snprintf(err, errlen, "headers: '%s' must look like 'Name: value'", trim(item));
			rc = -EINVAL;
			break;
		}
		*colon = '\0';
		name = trim(item);
		value = trim(colon + 1);
		if (!*name) {
			snprintf(err, errlen, "headers: a header name is empty");
			rc = -EINVAL;
			break;
		}
		for (const char *p = name; *p; p++) {
			if (!is_tchar(*p)) {
				snprintf(err, errlen, "headers: '%s' is not a valid header name", name);
				rc = -EINVAL;
				goto out;
			}
		}
		for (const char *p = value; *p; p++) {
			if ((unsigned char)*p < ' ' || *p == 0x7f) {
				snprintf(err, errlen, "headers: the value of %s holds a control character",
					 name);
				rc = -EINVAL;
				goto out;
			}
		}
		for (int i = 0; reserved_headers[i]; i++) {
			if (!strcasecmp(name, reserved_headers[i])) {
				snprintf(err, errlen, "headers: %s is set by the agent and cannot be "
					 "configured", reserved_headers[i]);
				rc = -EINVAL;
				goto out;
			}
		}
		if (!list)
			continue;
		/* "Name;" is curl's way to send a header with an empty value. */
		if (*value)
			snprintf(line, sizeof(line), "%s: %s", name, value);
		else
			snprintf(line, sizeof(line), "%s;", name);
		if (strlen(line) >= sizeof(line) - 1) {
			snprintf(err, errlen, "headers: %s is too long", name);
			rc = -EINVAL;
			break;
		}
		{
			struct curl_slist *n = curl_slist_append(*list, line);

			if (!n) {
				rc = -ENOMEM;
				break;
			}
			*list = n;
		}
	}
out:
	xfree(copy);
	return rc;
}

static int https_validate(const void *conf, char *err, size_t errlen)
{
	const struct https_conf *c = conf;
	char scheme[8], host[256];
	int port, rc;

	if (!c->url) {
		snprintf(err, errlen, "url is required");
		return -EINVAL;
	}
	if (parse_url(c->url, scheme, sizeof(scheme), host, sizeof(host), &port, err, errlen))
		return -EINVAL;
	rc = c->headers ? parse_headers(c->headers, NULL, err, errlen) : 0;
	if (rc)
		return rc;      /* -ENOMEM stays itself: not a verdict on the config */
	if (!c->client_cert != !c->client_key) {
		snprintf(err, errlen, c->client_cert ? "client_cert needs client_key"
			 : "client_key needs client_cert");
		return -EINVAL;
	}
	if (c->password_file && !c->username) {
		snprintf(err, errlen, "password_file needs username");
		return -EINVAL;
	}
	if (c->username && !c->password_file) {
		snprintf(err, errlen, "username needs password_file");
		return -EINVAL;
	}
	if (c->username && c->token_file) {
		snprintf(err, errlen, "token_file and username exclude each other: choose bearer or "
			 "basic authentication");
		return -EINVAL;
	}
	if (c->username && strchr(c->username, ':')) {
		snprintf(err, errlen, "username must not contain ':'");
		return -EINVAL;
	}
	if (c->proxy && strcmp(c->proxy, "none") && !strstr(c->proxy, "://")) {
		snprintf(err, errlen, "proxy '%s' must look like http://host:port (or be none)",
			 c->proxy);
		return -EINVAL;
	}
	if (c->connect_timeout_ms > c->timeout_ms) {
		snprintf(err, errlen, "connect_timeout (%" PRId64 " ms) is longer than timeout (%"
			 PRId64 " ms)", c->connect_timeout_ms, c->timeout_ms);
		return -EINVAL;
	}
	return 0;
}

/* ---- outcomes --------------------------------------------------------- */

/* Milliseconds the server asked us to wait, or -1. */
static int64_t retry_after_ms(const char *v)
{
	int64_t ms;

	if (!*v)
		return -1;
	if (strspn(v, "0123456789") == strlen(v)) {
		if (strlen(v) > 9)
			return MAX_RETRY_AFTER_MS;
		ms = strtoll(v, NULL, 10) * 1000;
	} else {
		time_t t = curl_getdate(v, NULL);

		if (t < 0)
			return -1;
		ms = (int64_t)t * 1000 - loop_wall_ms();
		if (ms < 0)
			ms = 0;
	}
	return ms > MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : ms;
}

/* The start of the response body as one line of printable text: control
 * characters and runs of blanks become one space, and the tags of an HTML
 * error page are left out so that its words fit into the excerpt. */
static void excerpt_text(const struct xfer *x, char *out, size_t len)
{
	size_t i = 0, j = 0;
	bool space = false, tag = false, html;

	while (i < x->excerpt_len && (x->excerpt[i] == ' ' || x->excerpt[i] == '\t' ||
				      x->excerpt[i] == '\r' || x->excerpt[i] == '\n'))
		i++;
	html = i < x->excerpt_len && x->excerpt[i] == '<';
	for (; i < x->excerpt_len && j + 2 < len; i++) {
		unsigned char c = (unsigned char)x->excerpt[i];

		if (html && (tag || c == '<')) {
			tag = c != '>';
			space = true;
			continue;
		}
		if (c <= ' ' || c >= 0x7f) {
			space = true;
			continue;
		}
		if (space && j > 0)
			out[j++] = ' ';
		space = false;
		out[j++] = (char)c;
	}
	out[j] = '\0';
}

static void fmt_secs(char *out, size_t len, int64_t ms)
{
	if (ms % 1000)
		snprintf(out, len, "%.1f s", (double)ms / 1000);
	else
		snprintf(out, len, "%" PRId64 " s", ms / 1000);
}

enum verify_cause { VC_OTHER, VC_EXPIRED, VC_FUTURE, VC_UNTRUSTED, VC_HOST };

/* libcurl reports the chain verification result in its TLS library's own
 * terms: on mbedTLS (the static builds) only in its message, which names
 * the first of MBEDTLS_X509_BADCERT_* flags it checks ("Cert verify failed:
 * BADCERT_EXPIRED"; CURLINFO_SSL_VERIFYRESULT stays 0), on OpenSSL (such as
 * Debian's libcurl) as an X509_V_ERR_* code. */
static enum verify_cause verify_cause(long v, const char *msg)
{
	static int mbed = -1;

	if (mbed < 0) {
		const curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);

		mbed = d && d->ssl_version && strncasecmp(d->ssl_version, "mbedtls", 7) == 0;
	}
	if (mbed) {
		if ((v & MBEDTLS_X509_BADCERT_EXPIRED) || strstr(msg, "BADCERT_EXPIRED"))
			return VC_EXPIRED;
		if ((v & MBEDTLS_X509_BADCERT_CN_MISMATCH) || strstr(msg, "BADCERT_CN_MISMATCH"))
			return VC_HOST;
		if ((v & MBEDTLS_X509_BADCERT_NOT_TRUSTED) || strstr(msg, "BADCERT_NOT_TRUSTED"))
			return VC_UNTRUSTED;
		if ((v & MBEDTLS_X509_BADCERT_FUTURE) || strstr(msg, "BADCERT_FUTURE"))
			return VC_FUTURE;
		return VC_OTHER;
	}
	switch (v) {
	case 9:  /* X509_V_ERR_CERT_NOT_YET_VALID */
		return VC_FUTURE;
	case 10: /* X509_V_ERR_CERT_HAS_EXPIRED */
		return VC_EXPIRED;
	case 2:  /* UNABLE_TO_GET_ISSUER_CERT */
	case 18: /* DEPTH_ZERO_SELF_SIGNED_CERT */
	case 19: /* SELF_SIGNED_CERT_IN_CHAIN */
	case 20: /* UNABLE_TO_GET_ISSUER_CERT_LOCALLY */
	case 21: /* UNABLE_TO_VERIFY_LEAF_SIGNATURE */
		return VC_UNTRUSTED;
	case 62: /* X509_V_ERR_HOSTNAME_MISMATCH */
		return VC_HOST;
	default:
		return VC_OTHER;
	}
}

/* Explain a failed transfer (no HTTP response) for status and the log. */
static void transport_why(struct out_https *h, struct xfer *x, CURLcode rc, char *why,
			  size_t len)
{
	const struct https_conf *c = h->conf;
	long verify = 0, oserr = 0;
	double connect_s = 0;
	char t[32];

	curl_easy_getinfo(x->easy, CURLINFO_SSL_VERIFYRESULT, &verify);
	curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oserr);
	curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME, &connect_s);
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		if (oserr == ECONNREFUSED)
			snprintf(why, len, "connection refused (is the server running at %s?)",
				 h->hostport);
		else
			snprintf(why, len, "cannot connect to %s: %s", h->hostport,
				 oserr ? strerror((int)oserr) : x->errbuf);
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(why, len, "cannot resolve host name %s", h->host);
		break;
	case CURLE_COULDNT_RESOLVE_PROXY:
		snprintf(why, len, "cannot resolve the proxy's host name: %s", x->errbuf);
		break;
	case CURLE_OPERATION_TIMEDOUT:
		if (connect_s <= 0) {
			fmt_secs(t, sizeof(t), c->connect_timeout_ms);
			snprintf(why, len, "connecting to %s timed out after %s", h->hostport, t);
		} else {
			fmt_secs(t, sizeof(t), c->timeout_ms);
			snprintf(why, len, "timed out after %s waiting for %s to answer", t,
				 h->hostport);
		}
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
		/* With OpenSSL a name mismatch is found by libcurl itself,
		 * which says so only in its message. */
		if (strstr(x->errbuf, "target host name")) {
			snprintf(why, len, "TLS: certificate does not match host %s", h->host);
			break;
		}
		switch (verify_cause(verify, x->errbuf)) {
		case VC_EXPIRED:
			snprintf(why, len, "TLS: certificate of %s has expired (check the clock if "
				 "it should not have)", h->host);
			break;
		case VC_FUTURE:
			snprintf(why, len, "TLS: certificate of %s is not yet valid (is this "
				 "device's clock right?)", h->host);
			break;
		case VC_UNTRUSTED:
			snprintf(why, len, "TLS: server certificate not trusted (unknown CA; check "
				 "ca_file)");
			break;
		case VC_HOST:
			snprintf(why, len, "TLS: certificate does not match host %s", h->host);
			break;
		default:
			snprintf(why, len, "TLS: server certificate rejected (verify error %ld): %s",
				 verify, x->errbuf);
			break;
		}
		break;
	case CURLE_SSL_CACERT_BADFILE:
		snprintf(why, len, "TLS: cannot read the CA certificates (check ca_file / ca_dir): %s",
			 x->errbuf);
		break;
	case CURLE_SSL_CERTPROBLEM:
		snprintf(why, len, "TLS: cannot use the client certificate (check client_cert and "
			 "client_key): %s", x->errbuf);
		break;
	case CURLE_SSL_CONNECT_ERROR:
		snprintf(why, len, "TLS handshake with %s failed: %s", h->hostport, x->errbuf);
		break;
	case CURLE_GOT_NOTHING:
		snprintf(why, len, "%s closed the connection without answering", h->hostport);
		break;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
		snprintf(why, len, "connection to %s broke off: %s", h->hostport,
			 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
		break;
	default:
		snprintf(why, len, "%s: %s", curl_easy_strerror(rc), x->errbuf);
		break;
	}
}

/* nginx answers 400 when the client certificate is missing or refused. */
static bool client_cert_refused(const char *excerpt)
{
	return strstr(excerpt, "No required SSL certificate was sent") ||
	       strstr(excerpt, "The SSL certificate error");
}

static void xfer_release(struct out_https *h, struct xfer *x)
{
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	x->b = NULL;
	if (x->body.cap > (1u << 20))
		buf_release(&x->body);
	h->nbusy--;
}

static void finish(CURL *easy, CURLcode rc, void *arg)
{
	struct xfer *x = arg;
	struct out_https *h = x->h;
	struct batch *b = x->b;
	char why[WHY_LEN], ex[EXCERPT_LEN + 1];
	int result;
	long status = 0;

	if (rc != CURLE_OK) {
		transport_why(h, x, rc, why, sizeof(why));
		if (curl_loop_unreachable(easy, rc))
			output_unreachable(h->o);
		xfer_release(h, x);
		output_set_connected(h->o, false, why);
		output_batch_done(h->o, b, OUT_RETRY, why);
		return;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	excerpt_text(x, ex, sizeof(ex));
	snprintf(why, sizeof(why), "HTTP %ld%s%s", status, ex[0] ? ": " : "", ex);
	if (status >= 200 && status < 300) {
		result = OUT_OK;
	} else if (status == 408 || status == 429 || status >= 500) {
		int64_t d = retry_after_ms(x->retry_after);

		if (d >= 0)
			output_retry_after(h->o, d);
		result = OUT_RETRY;
	} else if (status == 413) {
		result = OUT_REJECT;
	} else if (status == 401 || status == 403 || status == 407) {
		snprintf(why, sizeof(why), "HTTP %ld: not authorised (check token_file, username and "
			 "password_file, or client_cert)%s%s", status, ex[0] ? ": " : "", ex);
		result = OUT_RETRY;
	} else if (status == 400 && client_cert_refused(ex)) {
		snprintf(why, sizeof(why), "HTTP 400: the server requires a client certificate it "
			 "accepts (check client_cert and client_key): %s", ex);
		result = OUT_RETRY;
	} else if (status >= 400 && status < 500) {
		result = OUT_DEAD;
	} else {
		/* 1xx final or 3xx: the url points to the wrong place. */
		snprintf(why, sizeof(why), "HTTP %ld: unexpected answer (redirects are not followed; "
			 "check url)%s%s", status, ex[0] ? ": " : "", ex);
		result = OUT_RETRY;
	}
	xfer_release(h, x);
	/* A refused client certificate is a connection problem in all but name. */
	output_set_connected(h->o, !(status == 400 && result == OUT_RETRY),
			     result == OUT_OK ? NULL : why);
	output_batch_done(h->o, b, result, result == OUT_OK ? NULL : why);
}

static void https_probe_done(void *arg, int err)
{
	struct out_https *h = arg;

	output_probe_done(h->o, err);
}

/* The transfers' proxy: the configured one, none, or (unset) the
 * environment's for https, as libcurl would pick for them. */
static const char *probe_proxy(const struct https_conf *c, const char *scheme)
{
	const char *p;

	if (c->proxy)
		return strcmp(c->proxy, "none") ? c->proxy : "";
	if (!strcmp(scheme, "https")) {
		p = getenv("https_proxy");
		if (!p)
			p = getenv("HTTPS_PROXY");
	} else {
		p = getenv("http_proxy");
	}
	return p;
}

static int https_probe(void *state)
{
	struct out_https *h = state;

	return curl_loop_probe(h->cl, h->host, h->port, probe_proxy(h->conf, h->scheme),
			       h->conf->connect_timeout_ms, https_probe_done, h);
}

/* ---- transfers -------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = sz * n, room = EXCERPT_LEN - x->excerpt_len;

	if (len < room)
		room = len;
	memcpy(x->excerpt + x->excerpt_len, p, room);
	x->excerpt_len += room;
	return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = sz * n;

	/* A new status line (after 100 Continue, or a proxy's CONNECT answer)
	 * starts a new set of headers. */
	if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
		x->retry_after[0] = '\0';
		x->excerpt_len = 0;
	} else if (len > 12 && !strncasecmp(p, "Retry-After:", 12)) {
		const char *v = p + 12, *e = p + len;

		while (v < e && (*v == ' ' || *v == '\t'))
			v++;
		while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - v) < sizeof(x->retry_after)) {
			memcpy(x->retry_after, v, (size_t)(e - v));
			x->retry_after[e - v] = '\0';
		}
	}
	return len;
}

/* Options every transfer of this output shares. */
static int setup_easy(struct out_https *h, CURL *e)
{
	const struct https_conf *c = h->conf;
	CURLcode rc = CURLE_OK;

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
	SET(CURLOPT_URL, c->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_POST, 1L);
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_USERAGENT, "agentd/" AGENT_VERSION);
	if (c->ca_file)
		SET(CURLOPT_CAINFO, c->ca_file);
	if (c->ca_dir)
		SET(CURLOPT_CAPATH, c->ca_dir);
	if (c->client_cert) {
		SET(CURLOPT_SSLCERT, c->client_cert);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
		SET(CURLOPT_SSLKEY, c->client_key);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (c->proxy)
		SET(CURLOPT_PROXY, strcmp(c->proxy, "none") ? c->proxy : "");
	if (c->username) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SET(CURLOPT_USERNAME, c->username);
		SET(CURLOPT_PASSWORD, h->password);
	}
#undef SET
	if (rc != CURLE_OK) {
		log_error("output %s: libcurl option: %s", output_name(h->o), curl_easy_strerror(rc));
		return rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
	}
	return 0;
}

static struct xfer *xfer_get(struct out_https *h)
{
	for (int i = 0; i < MAX_TRANSFERS; i++) {
		struct xfer *x = &h->xfers[i];

		if (x->b)
			continue;
		if (!x->easy) {
			x->h = h;
			x->easy = curl_easy_init();
			if (!x->easy)
				return NULL;
			if (setup_easy(h, x->easy)) {
				curl_easy_cleanup(x->easy);
				x->easy = NULL;
				return NULL;
			}
		}
		return x;
	}
	return NULL;
}

/* The batch's NDJSON into h->plain. */
static int decompress(struct out_https *h, const struct batch *b)
{
	size_t n;

	buf_reset(&h->plain);
	if (buf_reserve(&h->plain, b->raw_len + 1))
		return -ENOMEM;
	n = ZSTD_decompressDCtx(h->dctx, h->plain.p, b->raw_len + 1, b->body, b->body_len);
	if (ZSTD_isError(n) || n != b->raw_len) {
		log_error("output %s: batch %s: cannot decompress its body: %s", output_name(h->o),
			  b->id, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "length differs");
		return -EIO;
	}
	h->plain.len = n;
	return 0;
}

static int gzip_into(struct out_https *h, const struct buf *in, struct buf *out)
{
	z_stream *zs = &h->zs;
	uLong bound;
	int zrc;

	if (!h->zs_ready) {
		memset(zs, 0, sizeof(*zs));
		/* windowBits 15 + 16: a gzip wrapper rather than zlib's. */
		if (deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		h->zs_ready = true;
	} else if (deflateReset(zs) != Z_OK) {
		return -EIO;
	}
	bound = deflateBound(zs, (uLong)in->len);
	buf_reset(out);
	if (buf_reserve(out, bound))
		return -ENOMEM;
	zs->next_in = (Bytef *)in->p;
	zs->avail_in = (uInt)in->len;
	zs->next_out = (Bytef *)out->p;
	zs->avail_out = (uInt)bound;
	zrc = deflate(zs, Z_FINISH);
	if (zrc != Z_STREAM_END)
		return -EIO;
	out->len = bound - zs->avail_out;
	return 0;
}

static int add_header(struct curl_slist **list, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int add_header(struct curl_slist **list, const char *fmt, ...)
{
	char line[512];
	struct curl_slist *n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	n = curl_slist_append(*list, line);
	if (!n)
		return -ENOMEM;
	*list = n;
	return 0;
}

static int batch_headers(struct out_https *h, struct xfer *x, const struct batch *b)
{
	static const char *const enc_names[] = { "zstd", "gzip", NULL };
	const char *enc = enc_names[h->conf->encoding];
	int rc = 0;

	for (struct curl_slist *s = h->fixed_hdrs; s && !rc; s = s->next)
		rc = add_header(&x->hdrs, "%s", s->data);
	if (enc)
		rc = rc ? rc : add_header(&x->hdrs, "Content-Encoding: %s", enc);
	rc = rc ? rc : add_header(&x->hdrs, "Idempotency-Key: %s", b->id);
	rc = rc ? rc : add_header(&x->hdrs, "X-Agent-Id: %s", output_agent_id(h->o));
	rc = rc ? rc : add_header(&x->hdrs, "X-Batch-Id: %s", b->id);
	rc = rc ? rc : add_header(&x->hdrs, "X-Seq-First: %" PRId64, b->first_seq);
	rc = rc ? rc : add_header(&x->hdrs, "X-Seq-Last: %" PRId64, b->last_seq);
	rc = rc ? rc : add_header(&x->hdrs, "X-Record-Count: %" PRId64, b->count);
	rc = rc ? rc : add_header(&x->hdrs, "X-Stream: %s", b->stream);
	return rc;
}

static int https_send(void *state, struct batch *b)
{
	struct out_https *h = state;
	const void *body = b->body;
	size_t body_len = b->body_len;
	struct xfer *x;
	int rc;

	if (h->draining)
		return -EAGAIN;
	x = xfer_get(h);
	if (!x)
		return h->nbusy >= MAX_TRANSFERS ? -EAGAIN : -ENOMEM;
	if (h->conf->encoding != ENC_ZSTD) {
		rc = decompress(h, b);
		if (rc)
			return rc;
		if (h->conf->encoding == ENC_GZIP) {
			rc = gzip_into(h, &h->plain, &x->body);
		} else {
			buf_reset(&x->body);
			rc = buf_add(&x->body, h->plain.p, h->plain.len);
		}
		if (rc)
			return rc;
		body = x->body.p;
		body_len = x->body.len;
		/* A batch of a few megabytes is not kept around afterwards. */
		if (h->plain.cap > (4u << 20))
			buf_release(&h->plain);
	}
	rc = batch_headers(h, x, b);
	if (rc)
		goto out_headers;
	x->excerpt_len = 0;
	x->retry_after[0] = '\0';
	x->errbuf[0] = '\0';
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
	rc = curl_loop_add(h->cl, x->easy, finish, x);
	if (rc)
		goto out_headers;
	x->b = b;
	h->nbusy++;
	return 0;

out_headers:
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	return rc;
}

/* ---- the type --------------------------------------------------------- */

static int make_fixed_headers(struct out_https *h)
{
	const struct https_conf *c = h->conf;
	const char *name = output_name(h->o);
	char err[256];
	char *token = NULL;
	int rc;

	rc = add_header(&h->fixed_hdrs, "Content-Type: application/x-ndjson");
	/* libcurl would otherwise wait for 100 Continue before large bodies. */
	rc = rc ? rc : add_header(&h->fixed_hdrs, "Expect:");
	if (rc)
		return rc;
	if (c->headers) {
		rc = parse_headers(c->headers, &h->fixed_hdrs, err, sizeof(err));
		if (rc) {
			if (rc != -ENOMEM)
				log_error("output %s: %s", name, err);
			return rc;
		}
	}
	if (c->token_file) {
		size_t n;
		char *line;
		struct curl_slist *s;

		rc = secret_read(c->token_file, MAX_SECRET, &token);
		if (rc) {
			log_error("output %s: cannot read token_file %s: %s", name, c->token_file,
				  secret_strerror(rc));
			return rc;
		}
		n = strlen(token) + sizeof("Authorization: Bearer ");
		line = xmalloc(n);
		if (!line) {
			rc = -ENOMEM;
		} else {
			snprintf(line, n, "Authorization: Bearer %s", token);
			s = curl_slist_append(h->fixed_hdrs, line);
			if (s)
				h->fixed_hdrs = s;
			else
				rc = -ENOMEM;
			explicit_bzero(line, n);
			xfree(line);
		}
		secret_free(token);
		if (rc)
			return rc;
	}
	if (c->password_file) {
		rc = secret_read(c->password_file, MAX_SECRET, &h->password);
		if (rc) {
			log_error("output %s: cannot read password_file %s: %s", name,
				  c->password_file, secret_strerror(rc));
			return rc;
		}
	}
	return 0;
}

/* curl's copies of header lines are wiped too: one holds the token. */
static void free_fixed_headers(struct out_https *h)
{
	for (struct curl_slist *s = h->fixed_hdrs; s; s = s->next)
		explicit_bzero(s->data, strlen(s->data));
	curl_slist_free_all(h->fixed_hdrs);
	h->fixed_hdrs = NULL;
}

static void free_xfers(struct out_https *h)
{
	for (int i = 0; i < MAX_TRANSFERS; i++) {
		struct xfer *x = &h->xfers[i];

		if (x->b)
			curl_loop_remove(h->cl, x->easy);
		if (x->hdrs) {
			for (struct curl_slist *s = x->hdrs; s; s = s->next)
				explicit_bzero(s->data, strlen(s->data));
			curl_slist_free_all(x->hdrs);
			x->hdrs = NULL;
		}
		x->b = NULL;
		if (x->easy)
			curl_easy_cleanup(x->easy);
		x->easy = NULL;
		buf_release(&x->body);
	}
	h->nbusy = 0;
}

static void https_stop(void *state)
{
	struct out_https *h = state;

	if (!h)
		return;
	free_xfers(h);
	curl_loop_free(h->cl);
	free_fixed_headers(h);
	secret_free(h->password);
	if (h->zs_ready)
		deflateEnd(&h->zs);
	ZSTD_freeDCtx(h->dctx);
	buf_release(&h->plain);
	xfree(h);
}

static int https_start(struct output *o, void **statep)
{
	const struct https_conf *c = output_type_conf(o);
	const char *name = output_name(o);
	struct out_https *h;
	char err[256];
	int rc;

	*statep = NULL;
	h = xcalloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->o = o;
	h->conf = c;
	parse_url(c->url, h->scheme, sizeof(h->scheme), h->host, sizeof(h->host), &h->port, err,
		  sizeof(err));
	snprintf(h->hostport, sizeof(h->hostport), strchr(h->host, ':') ? "[%s]:%d" : "%s:%d",
		 h->host, h->port);
	rc = make_fixed_headers(h);
	if (rc)
		goto out_stop;
	rc = -ENOMEM;
	if (c->encoding != ENC_ZSTD && !(h->dctx = ZSTD_createDCtx()))
		goto out_stop;
	rc = curl_loop_init(&h->cl, output_loop(o));
	if (rc) {
		log_error("output %s: cannot set up libcurl: %s", name, strerror(-rc));
		goto out_stop;
	}
	if (!strcmp(h->scheme, "http"))
		log_warn("output %s: %s is plain http: records%s travel unencrypted", name, c->url,
			 c->token_file || c->username ? " and credentials" : "");
	output_set_connected(o, true, NULL);
	*statep = h;
	return 0;

out_stop:
	https_stop(h);
	return rc;
}

static bool https_ready(void *state)
{
	struct out_https *h = state;

	return h && !h->draining && h->nbusy < MAX_TRANSFERS;
}

static const char *https_client_cert(const void *conf)
{
	return ((const struct https_conf *)conf)->client_cert;
}

static void https_describe(void *state, char *out, size_t len)
{
	struct out_https *h = state;

	snprintf(out, len, "%s POST %s", h->conf->url, encoding_names[h->conf->encoding]);
}

/* Transfers still running at the deadline are abandoned without an outcome:
 * their records stay queued and are sent again after the next start. */
static bool https_drain(void *state, int64_t deadline_ms)
{
	struct out_https *h = state;

	if (!h || h->drained)
		return true;
	h->draining = true;
	if (h->nbusy && loop_now_ms() < deadline_ms)
		return false;
	free_xfers(h);
	h->drained = true;
	output_set_connected(h->o, false, "stopped");
	return true;
}

const struct output_type out_https = {
	.version = OUTPUT_VERSION,
	.name = "https",
	.help = "POSTs each batch to an HTTP endpoint (TLS verified, optionally with a client "
		"certificate); a batch counts as delivered when the server answers 2xx. See "
		"docs/wire-format.md for the headers and how each status is handled.",
	.conf_keys = https_keys,
	.conf_size = sizeof(struct https_conf),
	.validate = https_validate,
	.start = https_start,
	.ready = https_ready,
	.send = https_send,
	.describe = https_describe,
	.client_cert = https_client_cert,
	.drain = https_drain,
	.stop = https_stop,
	.probe = https_probe,
};
