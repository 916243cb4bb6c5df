/* out_s3.c - the s3 output type: each batch becomes one object PUT to an
 * S3-compatible object store, signed with AWS Signature Version 4 by libcurl
 * and sent through curl_loop, so transfers never block the agent's loop.
 *
 * Object keys come from a template whose date and hour are those of the
 * batch's first record and whose file name is the batch id, so a batch that
 * is sent again lands on the same key and overwrites its earlier copy: a
 * retry never makes a second object. The body is the batch's zstd frame
 * as is, with Content-Type application/zstd and no Content-Encoding, so the
 * stored bytes are exactly those of a .ndjson.zst file (docs/wire-format.md).
 *
 * Signing. libcurl 7.88 signs (CURLOPT_AWS_SIGV4) the path exactly as it is
 * in the URL, the Host, x-amz-date and every header we add, but it does not
 * add x-amz-content-sha256 itself, which S3 requires; it does sign the value
 * we give. So the header carries the body's SHA-256, and the key is
 * percent-encoded the way S3 canonicalises it (RFC 3986 unreserved bytes and
 * '/' kept, everything else %XX, '=' too) before it goes into the URL.
 *
 * Refusals of the credentials (403 SignatureDoesNotMatch, InvalidAccessKeyId,
 * AccessDenied, ...) are configuration errors, not problems of the records:
 * the batch is retried, nothing goes to the dead-letter queue, status says
 * what to fix, and the key files are read again before the next attempt, so
 * a corrected secret is picked up without a restart.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "buf.h"
#include "curl_loop.h"
#include "log.h"
#include "mem.h"
#include "output.h"
#include "url.h"
#include "secret.h"

#define MAX_KEY_FILE 4096       /* access keys and secrets are far shorter */
#define MAX_PUTS 256            /* the core's max_inflight bounds it first */
#define MAX_ERROR_BODY 16384    /* S3 error documents are a few KiB */
#define MAX_OBJECT_KEY 1024     /* S3's limit, in bytes of UTF-8 */
#define WHY_LEN 512

#ifndef AGENT_VERSION
#define AGENT_VERSION "0"
#endif

struct s3_conf {
	char *endpoint;
	char *region;
	char *bucket;
	char *access_key_file;
	char *secret_key_file;
	bool path_style;
	char *prefix;
	char *key;
	char *ca_file;
	bool allow_http;
	int64_t connect_timeout_ms;
	int64_t timeout_ms;
};

#define SK(f) .offset = offsetof(struct s3_conf, f)
static const struct cfg_key s3_keys[] = {
	{ .name = "endpoint", .type = CFG_STR, SK(endpoint), .required = true,
	  .example = "https://s3.eu-west-1.amazonaws.com",
	  .help = "Base URL of the S3 service, scheme and host (and port) only, e.g. "
		  "https://s3.eu-west-1.amazonaws.com or https://minio.example.net:9000. http:// is "
		  "accepted for a loopback address (127.0.0.1, ::1, localhost) and otherwise only with "
		  "allow_http = true. A host name is looked up while the agent waits, so prefer names "
		  "the resolver answers quickly (or /etc/hosts)." },
	{ .name = "region", .type = CFG_STR, .def = "us-east-1", SK(region),
	  .help = "Region the requests are signed for (AWS Signature Version 4). It must be the "
		  "bucket's region; S3-compatible stores mostly accept us-east-1." },
	{ .name = "bucket", .type = CFG_STR, SK(bucket), .required = true, .example = "sensor-lake",
	  .help = "Bucket the objects are written to; it must exist. 3 to 63 characters: lower-case "
		  "letters, digits, '-' and '.'." },
	{ .name = "access_key_file", .type = CFG_STR, SK(access_key_file), .required = true,
	  .example = "/etc/agentd/s3-access-key",
	  .help = "File holding the access key id (a trailing newline is ignored). Read at start, "
		  "and again after the store refused the credentials." },
	{ .name = "secret_key_file", .type = CFG_STR, SK(secret_key_file), .required = true,
	  .example = "/etc/agentd/s3-secret-key",
	  .help = "File holding the secret access key (a trailing newline is ignored), read like "
		  "access_key_file. The secret is never logged or shown; keep the file readable by "
		  "the agent's user only." },
	{ .name = "path_style", .type = CFG_BOOL, .def = "false", SK(path_style),
	  .help = "true: requests go to endpoint/bucket/key (path style, what MinIO, Ceph and "
		  "most S3-compatible stores and any IP-address endpoint need); false: to "
		  "bucket.host/key (virtual-host style, what AWS S3 prefers)." },
	{ .name = "prefix", .type = CFG_STR, .def = "lake", SK(prefix),
	  .help = "First part of every object key: replaces {prefix} in key. May contain '/'; empty "
		  "puts the objects at the top of the bucket." },
	{ .name = "key", .type = CFG_STR,
	  .def = "{prefix}/agent={agent}/stream={stream}/dt={yyyy}-{mm}-{dd}/hour={hh}/{batch_id}.ndjson.zst",
	  SK(key),
	  .help = "Template of each batch's object key. Placeholders: {prefix}, {agent}, {output}, "
		  "{stream}, {batch_id}, {first_seq}, {last_seq}, and {yyyy} {mm} {dd} {hh}, the UTC "
		  "date and hour of the batch's first record. It must contain {batch_id}: a batch sent "
		  "again then overwrites its own object and never another's. name=value directories "
		  "are Hive-style partitions that lake engines read as columns. Empty path segments "
		  "are dropped." },
	{ .name = "ca_file", .type = CFG_STR, SK(ca_file),
	  .help = "PEM file of the certificate authorities that may sign the endpoint's certificate; "
		  "default: the system's. Certificates are always verified (TLS 1.2 or newer)." },
	{ .name = "allow_http", .type = CFG_BOOL, .def = "false", SK(allow_http),
	  .help = "Allow an http:// endpoint that is not on loopback. The requests stay signed, so "
		  "the secret never travels, but the records do, readable by anyone on the path; "
		  "use it only inside a trusted network." },
	{ .name = "connect_timeout", .type = CFG_DURATION, .def = "10s", SK(connect_timeout_ms),
	  .min = 500, .max = 600000,
	  .help = "How long connecting (TCP and TLS) may take before the PUT counts as failed and "
		  "is retried." },
	{ .name = "timeout", .type = CFG_DURATION, .def = "120s", SK(timeout_ms),
	  .min = 1000, .max = 3600000,
	  .help = "How long a whole PUT, upload and answer, may take before it counts as failed "
		  "and is retried. Allow for the largest batch over the slowest link." },
	{ .name = NULL },
};

/* One PUT in flight, or an outcome decided inside send() and reported
 * from the loop (easy == NULL). */
struct put {
	struct out_s3 *s;
	struct batch *b;
	CURL *easy;
	struct curl_slist *hdrs;
	size_t off;             /* bytes of the body handed to libcurl */
	struct buf resp;        /* the start of the answer's body */
	int result;             /* deferred outcome */
	char why[WHY_LEN];
	char errbuf[CURL_ERROR_SIZE];
};

struct out_s3 {
	struct output *o;
	const struct s3_conf *conf;
	struct loop *loop;
	struct curl_loop *cl;
	char scheme[8];
	char hostport[272];     /* as in the endpoint, [v6] with brackets */
	char host[256];         /* without brackets, for the probe */
	int port;
	char sigv4[128];
	char *access_key, *secret_key;
	bool keys_stale;        /* read the key files again before the next PUT */
	bool draining;
	struct put **puts;
	size_t nputs;
	struct buf key, url;    /* scratch for send() */
	struct loop_timer defer_timer;
};

/* ---- configuration ---------------------------------------------------- */

static bool is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	size_t n = strlen(host);

	if (!strcasecmp(host, "localhost") ||
	    (n > 10 && !strcasecmp(host + n - 10, ".localhost")))
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

static bool is_ip(const char *host)
{
	unsigned char a[16];

	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Split an endpoint URL into scheme, host and host[:port]. */
static int parse_endpoint(const char *url, char *scheme, size_t slen, char *host, size_t hlen,
			  char *hostport, size_t hplen, char *err, size_t errlen)
{
	const char *h, *rest;
	int port = 0, rc;
	size_t n;

	if (!strncmp(url, "https://", 8)) {
		snprintf(scheme, slen, "https");
		h = url + 8;
	} else if (!strncmp(url, "http://", 7)) {
		snprintf(scheme, slen, "http");
		h = url + 7;
	} else {
		goto bad;
	}
	rc = url_host_port(h, host, hlen, &port, &rest);
	if (rc == -ERANGE) {
		snprintf(err, errlen, "endpoint '%s': " URL_PORT_RANGE, url);
		return -EINVAL;
	}
	if (rc)
		goto bad;
	n = (size_t)(rest - h);
	if (n >= hplen)
		goto bad;
	memcpy(hostport, h, n);
	hostport[n] = '\0';
	if (*rest == '/')
		rest++;
	if (*rest) {
		snprintf(err, errlen, "endpoint '%s': give only scheme, host and port (no path)", url);
		return -EINVAL;
	}
	for (const char *p = host; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("-._:", *p))
			goto bad;
	}
	return 0;
bad:
	snprintf(err, errlen, "endpoint '%s' must look like https://host or https://host:port", url);
	return -EINVAL;
}

static bool valid_bucket(const char *b)
{
	size_t n = strlen(b);

	if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
		return false;
	for (; *b; b++)
		if (!islower((unsigned char)*b) && !isdigit((unsigned char)*b) && !strchr("-.", *b))
			return false;
	return true;
}

enum {
	V_PREFIX, V_AGENT, V_OUTPUT, V_STREAM, V_BATCH_ID, V_FIRST_SEQ, V_LAST_SEQ,
	V_YYYY, V_MM, V_DD, V_HH, V_N
};

static const char *const var_names[V_N] = {
	"prefix", "agent", "output", "stream", "batch_id", "first_seq", "last_seq",
	"yyyy", "mm", "dd", "hh",
};

/* Expand a key template; a NULL value keeps its placeholder as written
 * (for describe). Empty path segments and leading slashes are dropped.
 * Returns 0, -EINVAL (unknown placeholder or stray brace) or -ENOMEM. */
static int expand_key(struct buf *out, const char *tmpl, const char *const vals[V_N])
{
	const char *p = tmpl;

	buf_reset(out);
	if (buf_reserve(out, strlen(tmpl) + 64))
		return -ENOMEM;
	while (*p) {
		const char *close, *v;
		size_t i, n;

		if (*p != '{') {
			if (*p == '}')
				return -EINVAL;
			if (*p == '/' && (!out->len || out->p[out->len - 1] == '/')) {
				p++;
				continue;
			}
			if (buf_addc(out, *p++))
				return -ENOMEM;
			continue;
		}
		close = strchr(p, '}');
		if (!close)
			return -EINVAL;
		n = (size_t)(close - p - 1);
		for (i = 0; i < V_N; i++)
			if (strlen(var_names[i]) == n && !strncmp(p + 1, var_names[i], n))
				break;
		if (i == V_N)
			return -EINVAL;
		v = vals[i];
		if (!v) {
			if (buf_add(out, p, n + 2))
				return -ENOMEM;
		} else {
			for (; *v; v++) {
				if (*v == '/' && (!out->len || out->p[out->len - 1] == '/'))
					continue;
				if (buf_addc(out, *v))
					return -ENOMEM;
			}
		}
		p = close + 1;
	}
	return 0;
}

/* Percent-encode a key for the request path as S3 canonicalises it. */
static int encode_key(struct buf *out, const char *key)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
		int rc;

		if (isalnum(*k) || strchr("-._~/", *k)) {
			rc = buf_addc(out, (char)*k);
		} else {
			char e[3] = { '%', hex[*k >> 4], hex[*k & 15] };

			rc = buf_add(out, e, 3);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int s3_validate(const void *conf, char *err, size_t errlen)
{
	const struct s3_conf *c = conf;
	const char *vals[V_N] = { "p", "a", "o", "s", "b", "1", "2", "2026", "01", "02", "03" };
	char scheme[8], host[256], hostport[272];
	struct buf t = BUF_INIT;
	int rc;

	if (!c->endpoint || parse_endpoint(c->endpoint, scheme, sizeof(scheme), host, sizeof(host),
					   hostport, sizeof(hostport), err, errlen)) {
		if (!c->endpoint)
			snprintf(err, errlen, "endpoint is required");
		return -EINVAL;
	}
	if (!strcmp(scheme, "http") && !c->allow_http && !is_loopback(host)) {
		snprintf(err, errlen, "endpoint '%s': http:// sends the records unencrypted; use "
			 "https://, or set allow_http = true for a trusted network", c->endpoint);
		return -EINVAL;
	}
	if (!c->bucket || !valid_bucket(c->bucket)) {
		snprintf(err, errlen, "bucket '%s': 3 to 63 characters, lower-case letters, digits, "
			 "'-' and '.', starting and ending with a letter or digit",
			 c->bucket ? c->bucket : "");
		return -EINVAL;
	}
	if (!c->path_style && is_ip(host)) {
		snprintf(err, errlen, "endpoint '%s' is an IP address, which cannot carry the bucket "
			 "as a host name: set path_style = true", c->endpoint);
		return -EINVAL;
	}
	if (!c->region || !*c->region || strpbrk(c->region, ":/ \t")) {
		snprintf(err, errlen, "region '%s' must be a region name such as eu-west-1",
			 c->region ? c->region : "");
		return -EINVAL;
	}
	if (!c->access_key_file || !c->secret_key_file) {
		snprintf(err, errlen, "access_key_file and secret_key_file are required");
		return -EINVAL;
	}
	if (!c->key || !strstr(c->key, "{batch_id}")) {
		snprintf(err, errlen, "key '%s' must contain {batch_id}, or batches would overwrite "
			 "each other", c->key ? c->key : "");
		return -EINVAL;
	}
	rc = expand_key(&t, c->key, vals);
	if (!rc && !t.len)
		rc = -EINVAL;
	buf_release(&t);
	if (rc == -ENOMEM) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	if (rc) {
		snprintf(err, errlen, "key '%s': unknown placeholder or stray brace (allowed: {prefix}, "
			 "{agent}, {output}, {stream}, {batch_id}, {first_seq}, {last_seq}, {yyyy}, "
			 "{mm}, {dd}, {hh})", c->key);
		return -EINVAL;
	}
	return 0;
}

/* ---- credentials ------------------------------------------------------ */

/* A key file: one line of text, not empty. */
static int read_key_file(const char *path, char **out)
{
	int rc = secret_read(path, MAX_KEY_FILE, out);

	if (!rc && !**out) {
		secret_free(*out);
		*out = NULL;
		rc = -ENODATA;
	}
	return rc;
}

/* Read both key files; on failure why says which and why. */
static int load_keys(struct out_s3 *s, char *why, size_t len)
{
	const struct s3_conf *c = s->conf;
	char *ak = NULL, *sk = NULL;
	const char *which = "access_key_file", *path = c->access_key_file;
	int rc;

	rc = read_key_file(c->access_key_file, &ak);
	if (!rc) {
		which = "secret_key_file";
		path = c->secret_key_file;
		rc = read_key_file(c->secret_key_file, &sk);
	}
	if (rc) {
		secret_free(ak);
		snprintf(why, len, "cannot read %s %s (%s)", which, path, secret_strerror(rc));
		return rc;
	}
	secret_free(s->access_key);
	secret_free(s->secret_key);
	s->access_key = ak;
	s->secret_key = sk;
	s->keys_stale = false;
	return 0;
}

/* ---- the answer ------------------------------------------------------- */

/* The text of <tag>...</tag> in an S3 error document, entities decoded and
 * anything unprintable replaced, or "" when there is none. */
static void xml_tag(const struct buf *body, const char *tag, char *out, size_t len)
{
	char open[40], close[40];
	const char *p, *e;
	size_t n = 0;

	out[0] = '\0';
	if (!body->p || !len)
		return;
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	p = strstr(body->p, open);
	if (!p)
		return;
	p += strlen(open);
	e = strstr(p, close);
	if (!e)
		return;
	while (p < e && n + 1 < len) {
		static const struct { const char *ent; char c; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' },
		};
		char c = *p;
		size_t adv = 1;

		if (c == '&') {
			for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
				size_t m = strlen(ents[i].ent);

				if ((size_t)(e - p) >= m && !strncmp(p, ents[i].ent, m)) {
					c = ents[i].c;
					adv = m;
					break;
				}
			}
		}
		if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
			c = (c == '\n' || c == '\t') ? ' ' : '?';
		out[n++] = c;
		p += adv;
	}
	out[n] = '\0';
}

static bool code_is(const char *code, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(code, *list))
			return true;
	return false;
}

/* Decide the outcome of an HTTP answer: the result for the core, whether
 * the store is reachable and takes our credentials, and why. */
static int classify(long status, const char *code, const char *msg, const char *hostport,
		    bool *conn_ok, bool *keys_bad, char *why, size_t len)
{
	static const char *const cred_codes[] = {
		"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
		"ExpiredToken", "TokenRefreshRequired", "AccountProblem", "InvalidSecurity",
		"NotSignedUp", "AllAccessDisabled", NULL,
	};
	static const char *const config_codes[] = {
		"NoSuchBucket", "AuthorizationHeaderMalformed", "PermanentRedirect",
		"TemporaryRedirect", "IllegalLocationConstraintException", "InvalidBucketName",
		"InvalidRequest", "XAmzContentSHA256Mismatch", "MissingSecurityHeader", NULL,
	};
	const char *c = *code ? code : "no error code";

	*conn_ok = true;
	*keys_bad = false;
	if (status >= 200 && status < 300) {
		why[0] = '\0';
		return OUT_OK;
	}
	*conn_ok = false;
	if (!strcmp(code, "SignatureDoesNotMatch")) {
		*keys_bad = true;
		snprintf(why, len, "S3 refused the signature (SignatureDoesNotMatch): check "
			 "secret_key_file");
		return OUT_RETRY;
	}
	if (!strcmp(code, "InvalidAccessKeyId")) {
		*keys_bad = true;
		snprintf(why, len, "S3 does not know the access key (InvalidAccessKeyId): check "
			 "access_key_file");
		return OUT_RETRY;
	}
	if (!strcmp(code, "RequestTimeTooSkewed")) {
		snprintf(why, len, "S3 refused the request time (RequestTimeTooSkewed): the gateway's "
			 "clock is wrong");
		return OUT_RETRY;
	}
	if (status == 403 || code_is(code, cred_codes)) {
		*keys_bad = true;
		snprintf(why, len, "S3 refused access (%d %s: %s): check the key files and the "
			 "bucket's permissions", (int)status, c, msg);
		return OUT_RETRY;
	}
	if (status == 413 || !strcmp(code, "EntityTooLarge")) {
		*conn_ok = true;
		snprintf(why, len, "S3 refused the object as too large (%d %s)", (int)status, c);
		return OUT_REJECT;
	}
	if (status >= 300 && status < 400) {
		snprintf(why, len, "S3 redirected the request (%d %s: %s): check endpoint, region "
			 "and path_style", (int)status, c, msg);
		return OUT_RETRY;
	}
	if (code_is(code, config_codes) || status == 404) {
		snprintf(why, len, "S3 refused the request (%d %s: %s): check endpoint, region and "
			 "bucket", (int)status, c, msg);
		return OUT_RETRY;
	}
	if (status >= 500 || status == 408 || status == 429) {
		snprintf(why, len, "S3 at %.100s answered %d %s%s%s", hostport, (int)status, c,
			 *msg ? ": " : "", msg);
		return OUT_RETRY;
	}
	*conn_ok = true;
	snprintf(why, len, "S3 refused the object: %d %s%s%s", (int)status, c, *msg ? ": " : "",
		 msg);
	return OUT_DEAD;
}

/* ---- transfers -------------------------------------------------------- */

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct put *p = arg;
	size_t n = size * nmemb, left = p->b->body_len - p->off;

	if (n > left)
		n = left;
	memcpy(dst, (const char *)p->b->body + p->off, n);
	p->off += n;
	return n;
}

/* libcurl rewinds when it sends the body again on a new connection. */
static int seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct put *p = arg;

	if (origin != SEEK_SET || offset < 0 || (size_t)offset > p->b->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	p->off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static size_t write_cb(char *src, size_t size, size_t nmemb, void *arg)
{
	struct put *p = arg;
	size_t n = size * nmemb, room = MAX_ERROR_BODY - p->resp.len;

	/* The rest is dropped, not refused: the transfer must finish. */
	if (room && buf_add(&p->resp, src, n < room ? n : room))
		return 0;
	return n;
}

static void put_free(struct put *p)
{
	if (!p)
		return;
	if (p->easy)
		curl_easy_cleanup(p->easy);
	curl_slist_free_all(p->hdrs);
	buf_release(&p->resp);
	xfree(p);
}

static int put_add(struct out_s3 *s, struct put *p)
{
	struct put **n = xrealloc(s->puts, (s->nputs + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	s->puts = n;
	s->puts[s->nputs++] = p;
	return 0;
}

static void put_take(struct out_s3 *s, struct put *p)
{
	for (size_t i = 0; i < s->nputs; i++) {
		if (s->puts[i] == p) {
			memmove(&s->puts[i], &s->puts[i + 1], (s->nputs - i - 1) * sizeof(*s->puts));
			s->nputs--;
			return;
		}
	}
}

static void put_done(CURL *easy, CURLcode res, void *arg)
{
	struct put *p = arg;
	struct out_s3 *s = p->s;
	struct batch *b = p->b;
	char code[64], msg[160], why[WHY_LEN];
	bool conn_ok, keys_bad;
	long status = 0;
	curl_off_t retry_after = 0;
	int result;

	put_take(s, p);
	if (res != CURLE_OK) {
		snprintf(why, sizeof(why), "PUT to %.100s failed: %.300s", s->hostport,
			 p->errbuf[0] ? p->errbuf : curl_easy_strerror(res));
		output_set_connected(s->o, false, why);
		if (curl_loop_unreachable(easy, res))
			output_unreachable(s->o);
		put_free(p);
		output_batch_done(s->o, b, OUT_RETRY, why);
		return;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	xml_tag(&p->resp, "Code", code, sizeof(code));
	xml_tag(&p->resp, "Message", msg, sizeof(msg));
	result = classify(status, code, msg, s->hostport, &conn_ok, &keys_bad, why, sizeof(why));
	if (keys_bad)
		s->keys_stale = true;
	if (result == OUT_RETRY &&
	    curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
	    retry_after > 0)
		output_retry_after(s->o, (int64_t)(retry_after > 86400 ? 86400 : retry_after) * 1000);
	output_set_connected(s->o, conn_ok, conn_ok ? NULL : why);
	put_free(p);
	output_batch_done(s->o, b, result, result == OUT_OK ? NULL : why);
}

static void s3_probe_done(void *arg, int err)
{
	struct out_s3 *s = arg;

	output_probe_done(s->o, err);
}

static int s3_probe(void *state)
{
	struct out_s3 *s = state;

	return curl_loop_probe(s->cl, s->host, s->port, NULL, s->conf->connect_timeout_ms,
			       s3_probe_done, s);
}

static int64_t defer_timer_cb(struct loop_timer *t)
{
	struct out_s3 *s = container_of(t, struct out_s3, defer_timer);

	for (size_t i = 0; i < s->nputs;) {
		struct put *p = s->puts[i];

		if (p->easy) {
			i++;
			continue;
		}
		put_take(s, p);
		{
			struct batch *b = p->b;
			int result = p->result;
			char why[WHY_LEN];

			snprintf(why, sizeof(why), "%s", p->why);
			put_free(p);
			output_batch_done(s->o, b, result, why);
		}
		i = 0;
	}
	return -1;
}

/* Report an outcome decided inside send() after send() has returned, as
 * the core expects. */
static int defer(struct out_s3 *s, struct batch *b, int result, const char *why)
{
	struct put *p = xcalloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->s = s;
	p->b = b;
	p->result = result;
	snprintf(p->why, sizeof(p->why), "%s", why);
	if (put_add(s, p)) {
		xfree(p);
		return -ENOMEM;
	}
	loop_timer_set(s->loop, &s->defer_timer, 0);
	return 0;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char d[32];

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	mbedtls_sha256(data, len, d, 0);
#else
	mbedtls_sha256_ret(data, len, d, 0);
#endif
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
	char line[512];
	struct curl_slist *n;

	snprintf(line, sizeof(line), "%s: %s", name, value);
	n = curl_slist_append(*l, line);
	if (!n)
		return -ENOMEM;
	*l = n;
	return 0;
}

/* Object key and URL of a batch into s->key and s->url. */
static int object_url(struct out_s3 *s, const struct batch *b)
{
	const struct s3_conf *c = s->conf;
	char first[24], last[24], yyyy[16], mm[16], dd[16], hh[16];
	const char *vals[V_N];
	time_t t = (time_t)(b->first_wall_ms >= 0 ? b->first_wall_ms / 1000
						  : (b->first_wall_ms - 999) / 1000);
	struct tm tm;
	int rc;

	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	snprintf(first, sizeof(first), "%" PRId64, b->first_seq);
	snprintf(last, sizeof(last), "%" PRId64, b->last_seq);
	strftime(yyyy, sizeof(yyyy), "%Y", &tm);
	strftime(mm, sizeof(mm), "%m", &tm);
	strftime(dd, sizeof(dd), "%d", &tm);
	strftime(hh, sizeof(hh), "%H", &tm);
	vals[V_PREFIX] = c->prefix ? c->prefix : "";
	vals[V_AGENT] = output_agent_id(s->o);
	vals[V_OUTPUT] = output_name(s->o);
	vals[V_STREAM] = b->stream;
	vals[V_BATCH_ID] = b->id;
	vals[V_FIRST_SEQ] = first;
	vals[V_LAST_SEQ] = last;
	vals[V_YYYY] = yyyy;
	vals[V_MM] = mm;
	vals[V_DD] = dd;
	vals[V_HH] = hh;
	rc = expand_key(&s->key, c->key, vals);
	if (rc)
		return rc;
	buf_reset(&s->url);
	if (c->path_style)
		rc = buf_printf(&s->url, "%s://%s/%s/", s->scheme, s->hostport, c->bucket);
	else
		rc = buf_printf(&s->url, "%s://%s.%s/", s->scheme, c->bucket, s->hostport);
	return rc ? rc : encode_key(&s->url, s->key.p);
}

static int setup_easy(struct out_s3 *s, struct put *p)
{
	const struct s3_conf *c = s->conf;
	CURL *e = p->easy;
	CURLcode rc = CURLE_OK;

#define SET(opt, val) \
	do { \
		if (rc == CURLE_OK) \
			rc = curl_easy_setopt(e, opt, val); \
	} while (0)
	SET(CURLOPT_URL, s->url.p);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_PATH_AS_IS, 1L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_UPLOAD, 1L);
	SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)p->b->body_len);
	SET(CURLOPT_READFUNCTION, read_cb);
	SET(CURLOPT_READDATA, p);
	SET(CURLOPT_SEEKFUNCTION, seek_cb);
	SET(CURLOPT_SEEKDATA, p);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, p);
	SET(CURLOPT_ERRORBUFFER, p->errbuf);
	SET(CURLOPT_HTTPHEADER, p->hdrs);
	SET(CURLOPT_AWS_SIGV4, s->sigv4);
	SET(CURLOPT_USERNAME, s->access_key);
	SET(CURLOPT_PASSWORD, s->secret_key);
	SET(CURLOPT_USERAGENT, "agentd/" AGENT_VERSION);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		SET(CURLOPT_CAINFO, c->ca_file);
#undef SET
	if (rc != CURLE_OK) {
		log_warn("output %s: libcurl: %s", output_name(s->o), curl_easy_strerror(rc));
		return rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
	}
	return 0;
}

static int s3_send(void *state, struct batch *b)
{
	struct out_s3 *s = state;
	const char *enc = b->encoding ? b->encoding : "ndjson+zstd";
	char why[WHY_LEN], sha[65], num[24];
	struct put *p;
	int rc;

	if (s->draining)
		return -EAGAIN;
	if (s->keys_stale && load_keys(s, why, sizeof(why))) {
		output_set_connected(s->o, false, why);
		return defer(s, b, OUT_RETRY, why);
	}
	rc = object_url(s, b);
	if (rc == -ENOMEM)
		return rc;
	if (rc || !s->key.len || s->key.len > MAX_OBJECT_KEY) {
		snprintf(why, sizeof(why), "no valid object key for stream '%s' from '%s'", b->stream,
			 s->conf->key);
		return defer(s, b, OUT_DEAD, why);
	}

	p = xcalloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->b = b;
	rc = -ENOMEM;
	sha256_hex(b->body, b->body_len, sha);
	if (add_header(&p->hdrs, "x-amz-content-sha256", sha) ||
	    add_header(&p->hdrs, "Content-Type",
		       strstr(enc, "zstd") ? "application/zstd" : "application/x-ndjson") ||
	    add_header(&p->hdrs, "x-amz-meta-agent", output_agent_id(s->o)) ||
	    add_header(&p->hdrs, "x-amz-meta-stream", b->stream) ||
	    add_header(&p->hdrs, "x-amz-meta-batch-id", b->id) ||
	    add_header(&p->hdrs, "x-amz-meta-encoding", enc))
		goto out_free;
	snprintf(num, sizeof(num), "%" PRId64, b->first_seq);
	if (add_header(&p->hdrs, "x-amz-meta-first-seq", num))
		goto out_free;
	snprintf(num, sizeof(num), "%" PRId64, b->last_seq);
	if (add_header(&p->hdrs, "x-amz-meta-last-seq", num))
		goto out_free;
	snprintf(num, sizeof(num), "%" PRId64, b->count);
	if (add_header(&p->hdrs, "x-amz-meta-count", num))
		goto out_free;
	p->easy = curl_easy_init();
	if (!p->easy)
		goto out_free;
	rc = setup_easy(s, p);
	if (rc)
		goto out_free;
	rc = put_add(s, p);
	if (rc)
		goto out_free;
	rc = curl_loop_add(s->cl, p->easy, put_done, p);
	if (rc) {
		put_take(s, p);
		goto out_free;
	}
	return 0;

out_free:
	put_free(p);
	return rc;
}

/* ---- the type --------------------------------------------------------- */

static int s3_start(struct output *o, void **statep)
{
	const struct s3_conf *c = output_type_conf(o);
	const char *name = output_name(o);
	struct out_s3 *s;
	char err[WHY_LEN], host[256];
	int rc;

	*statep = NULL;
	s = xcalloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = o;
	s->conf = c;
	s->loop = output_loop(o);
	s->defer_timer.cb = defer_timer_cb;
	parse_endpoint(c->endpoint, s->scheme, sizeof(s->scheme), host, sizeof(host), s->hostport,
		       sizeof(s->hostport), err, sizeof(err));
	{
		const char *rest;

		s->port = strcmp(s->scheme, "https") ? 80 : 443;
		snprintf(s->host, sizeof(s->host), "%s", host);
		url_host_port(s->hostport, s->host, sizeof(s->host), &s->port, &rest);
	}
	snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", c->region);
	rc = curl_loop_init(&s->cl, s->loop);
	if (rc) {
		xfree(s);
		return rc;
	}
	/* Without readable keys the output still starts: every batch is
	 * retried, status says which file is wrong, and the files are read
	 * again before each attempt until they can be. */
	if (load_keys(s, err, sizeof(err))) {
		log_error("output %s: %s", name, err);
		s->keys_stale = true;
		output_set_connected(o, false, err);
	} else {
		/* There is no connection to keep: the store counts as up until
		 * a request says otherwise. */
		output_set_connected(o, true, NULL);
	}
	*statep = s;
	return 0;
}

static bool s3_ready(void *state)
{
	struct out_s3 *s = state;

	return s && !s->draining && s->nputs < MAX_PUTS;
}

static void s3_describe(void *state, char *out, size_t len)
{
	struct out_s3 *s = state;
	const struct s3_conf *c = s->conf;
	const char *vals[V_N] = { 0 };
	struct buf t = BUF_INIT;

	vals[V_PREFIX] = c->prefix ? c->prefix : "";
	vals[V_AGENT] = output_agent_id(s->o);
	vals[V_OUTPUT] = output_name(s->o);
	snprintf(out, len, "%s://%s bucket %s%s key %s", s->scheme, s->hostport, c->bucket,
		 c->path_style ? " (path style)" : "",
		 expand_key(&t, c->key, vals) ? c->key : t.p);
	buf_release(&t);
}

/* Abandon what is in flight: the records stay queued behind the cursor
 * and are sent again after the next start, to the same keys. */
static void abandon_all(struct out_s3 *s)
{
	loop_timer_cancel(s->loop, &s->defer_timer);
	while (s->nputs) {
		struct put *p = s->puts[--s->nputs];

		if (p->easy)
			curl_loop_remove(s->cl, p->easy);
		put_free(p);
	}
}

static bool s3_drain(void *state, int64_t deadline_ms)
{
	struct out_s3 *s = state;

	if (!s)
		return true;
	s->draining = true;
	if (s->nputs && loop_now_ms() < deadline_ms)
		return false;
	abandon_all(s);
	output_set_connected(s->o, false, "stopped");
	return true;
}

static void s3_stop(void *state)
{
	struct out_s3 *s = state;

	if (!s)
		return;
	abandon_all(s);
	curl_loop_free(s->cl);
	secret_free(s->access_key);
	secret_free(s->secret_key);
	buf_release(&s->key);
	buf_release(&s->url);
	xfree(s->puts);
	xfree(s);
}

const struct output_type out_s3 = {
	.version = OUTPUT_VERSION,
	.name = "s3",
	.help = "Writes each batch as one object (a zstd-compressed NDJSON file) to a bucket of an "
		"S3-compatible object store with a signed PUT (AWS Signature Version 4); a batch "
		"counts as delivered when the store answers 2xx. Keys are Hive-style partitions by "
		"agent, stream, date and hour, and a retried batch overwrites its own object "
		"(docs/wire-format.md).",
	.conf_keys = s3_keys,
	.conf_size = sizeof(struct s3_conf),
	.validate = s3_validate,
	.start = s3_start,
	.ready = s3_ready,
	.send = s3_send,
	.describe = s3_describe,
	.drain = s3_drain,
	.stop = s3_stop,
	.probe = s3_probe,
};
