/* test_out_s3.c - the s3 output type against a scripted HTTP server.
 *
 * The server is a child process listening on a loopback port bound before
 * the fork; it answers each request with the next scripted response and
 * saves what it received, so the tests check the request as sent (path
 * encoding, signature headers, payload hash, metadata) and the outcome the
 * type reports for each answer. The core's services to output types are
 * defined here, recording what the type reports, so output.o is never
 * linked in. Signature verification by a real S3 server is in
 * tests/integration/test_s3.py.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "loop.h"
#include "mem.h"
#include "output.h"
#include "test.h"

/* ---- the core's services, recorded ------------------------------------ */

struct done {
	struct batch *b;
	int result;
	char reason[512];
};

struct output {
	const char *name;
	const char *agent;
	void *conf;
	struct loop *loop;
	bool connected;
	char why[512];
	int64_t retry_after_ms;
	struct done done[16];
	int ndone;
	int unreachable, probes_done, probe_err;
};

const char *output_name(const struct output *o)
{
	return o->name;
}

const void *output_type_conf(const struct output *o)
{
	return o->conf;
}

const char *output_agent_id(const struct output *o)
{
	return o->agent;
}

struct loop *output_loop(struct output *o)
{
	return o->loop;
}

void output_batch_done(struct output *o, struct batch *b, int result, const char *reason)
{
	struct done *d;

	if (o->ndone >= (int)(sizeof(o->done) / sizeof(o->done[0])))
		return;
	d = &o->done[o->ndone++];
	d->b = b;
	d->result = result;
	snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
}

void output_retry_after(struct output *o, int64_t delay_ms)
{
	o->retry_after_ms = delay_ms;
}

void output_set_connected(struct output *o, bool connected, const char *why)
{
	o->connected = connected;
	snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
}

void output_kick(struct output *o)
{
}

void output_unreachable(struct output *o)
{
	o->unreachable++;
}

void output_probe_done(struct output *o, int err)
{
	o->probes_done++;
	o->probe_err = err;
}

int64_t output_retry_probe_ms(const struct output *o)
{
	return 0;
}

int64_t backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt)
{
	return base_ms;
}

/* ---- the type's config, set through its key table --------------------- */

static const struct cfg_key *key_find(const char *name)
{
	for (const struct cfg_key *k = out_s3.conf_keys; k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

static void conf_set(void *conf, const char *name, const char *v)
{
	const struct cfg_key *k = key_find(name);
	char *p, *end;

	if (!k) {
		fprintf(stderr, "no key %s\n", name);
		abort();
	}
	p = (char *)conf + k->offset;
	switch (k->type) {
	case CFG_STR:
		xfree(*(char **)p);
		*(char **)p = v ? xstrdup(v) : NULL;
		break;
	case CFG_BOOL:
		*(bool *)p = !strcmp(v, "true");
		break;
	default:
		*(int64_t *)p = strtoll(v, &end, 10) * (!strcmp(end, "s") ? 1000 : 1);
		break;
	}
}

static void *conf_new(void)
{
	void *c = xcalloc(1, out_s3.conf_size);

	for (const struct cfg_key *k = out_s3.conf_keys; k->name; k++)
		if (k->def)
			conf_set(c, k->name, k->def);
	return c;
}

static void conf_free(void *c)
{
	for (const struct cfg_key *k = out_s3.conf_keys; k->name; k++)
		if (k->type == CFG_STR)
			xfree(*(char **)((char *)c + k->offset));
	xfree(c);
}

/* ---- files -------------------------------------------------------------- */

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
}

/* Whole file into a NUL-terminated xmalloc'ed buffer, or NULL. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = xmalloc((size_t)n + 1);
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		xfree(p);
		p = NULL;
	}
	if (p)
		p[n] = '\0';
	if (len)
		*len = (size_t)n;
	fclose(f);
	return p;
}

/* ---- the scripted server ----------------------------------------------- */

struct server {
	char dir[64];
	int port;
	pid_t pid;
};

/* Read one request (headers, then Content-Length bytes of body) and save
 * it as req-N.hdr and req-N.body. */
static bool serve_one(int c, const char *dir, int n)
{
	static char buf[1 << 16];
	size_t len = 0, body_len = 0, hdr_len;
	char *end, *cl, path[128];
	FILE *f;

	for (;;) {
		ssize_t r = read(c, buf + len, sizeof(buf) - 1 - len);

		if (r <= 0)
			return false;
		len += (size_t)r;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end)
			break;
	}
	hdr_len = (size_t)(end - buf) + 4;
	cl = strcasestr(buf, "\r\ncontent-length:");
	if (cl && cl < end)
		body_len = strtoul(cl + 17, NULL, 10);
	if (strcasestr(buf, "\r\nexpect: 100-continue") &&
	    write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 25)
		return false;
	while (len < hdr_len + body_len && len < sizeof(buf) - 1) {
		ssize_t r = read(c, buf + len, sizeof(buf) - 1 - len);

		if (r <= 0)
			return false;
		len += (size_t)r;
	}
	snprintf(path, sizeof(path), "%s/req-%d.hdr", dir, n);
	f = fopen(path, "wb");
	if (!f)
		return false;
	fwrite(buf, 1, hdr_len, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/req-%d.body", dir, n);
	f = fopen(path, "wb");
	if (!f)
		return false;
	fwrite(buf + hdr_len, 1, len - hdr_len, f);
	fclose(f);
	return true;
}

/* Answer the responses in order, one connection each, then exit. */
static bool server_start(struct server *s, const char **responses)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int fd, one = 1;

	snprintf(s->dir, sizeof(s->dir), "/tmp/test_out_s3.XXXXXX");
	if (!mkdtemp(s->dir))
		return false;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&a, &alen)) {
		close(fd);
		return false;
	}
	s->port = ntohs(a.sin_port);
	s->pid = fork();
	if (s->pid < 0) {
		close(fd);
		return false;
	}
	if (s->pid == 0) {
		for (int i = 0; responses[i]; i++) {
			int c = accept(fd, NULL, NULL);
			size_t n = strlen(responses[i]);

			if (c < 0)
				_exit(1);
			if (!n) {
				serve_one(c, s->dir, i);
				pause();
			}
			if (serve_one(c, s->dir, i) && write(c, responses[i], n) != (ssize_t)n)
				_exit(1);
			close(c);
		}
		_exit(0);
	}
	close(fd);
	return true;
}

static void server_free(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
	rm_dir(s->dir);
}

static char *request_hdr(struct server *s, int n)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/req-%d.hdr", s->dir, n);
	return read_file(path, NULL);
}

static char *request_body(struct server *s, int n, size_t *len)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/req-%d.body", s->dir, n);
	return read_file(path, len);
}

/* ---- running the loop ---------------------------------------------------- */

struct waiter {
	struct loop_timer t;
	struct loop *l;
	struct output *o;
	int want;
	int64_t deadline;
};

static int64_t waiter_cb(struct loop_timer *t)
{
	struct waiter *w = container_of(t, struct waiter, t);

	if (w->o->ndone >= w->want || loop_now_ms() >= w->deadline) {
		loop_stop(w->l);
		return -1;
	}
	return 5;
}

/* Run the loop until `want` outcomes were reported, for at most ms. */
static bool run_until_done(struct output *o, int want, int64_t ms)
{
	struct waiter w = { .t.cb = waiter_cb, .l = o->loop, .o = o, .want = want,
			    .deadline = loop_now_ms() + ms };

	loop_timer_set(o->loop, &w.t, 0);
	loop_run(o->loop);
	loop_timer_cancel(o->loop, &w.t);
	return o->ndone >= want;
}

/* ---- fixture ------------------------------------------------------------ */

struct fx {
	struct output o;
	struct server srv;
	char keydir[64];
	void *state;
};

static bool fx_init(struct fx *f, const char **responses, const char *secret)
{
	char ep[64], path[128];

	memset(f, 0, sizeof(*f));
	if (!server_start(&f->srv, responses))
		return false;
	snprintf(f->keydir, sizeof(f->keydir), "/tmp/test_out_s3k.XXXXXX");
	if (!mkdtemp(f->keydir))
		return false;
	f->o.name = "lake";
	f->o.agent = "gw-01";
	f->o.conf = conf_new();
	if (loop_init(&f->o.loop))
		return false;
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f->srv.port);
	conf_set(f->o.conf, "endpoint", ep);
	conf_set(f->o.conf, "bucket", "sensor-lake");
	conf_set(f->o.conf, "region", "eu-west-1");
	conf_set(f->o.conf, "path_style", "true");
	snprintf(path, sizeof(path), "%s/ak", f->keydir);
	write_file(path, "AKIDEXAMPLE\n");
	conf_set(f->o.conf, "access_key_file", path);
	snprintf(path, sizeof(path), "%s/sk", f->keydir);
	if (secret)
		write_file(path, secret);
	conf_set(f->o.conf, "secret_key_file", path);
	return true;
}

static void fx_free(struct fx *f)
{
	if (f->state)
		out_s3.stop(f->state);
	loop_free(f->o.loop);
	conf_free(f->o.conf);
	server_free(&f->srv);
	rm_dir(f->keydir);
}

static const char body[] = "\x28\xb5\x2f\xfd not really a zstd frame";

/* 2026-11-22T10:17:00Z */
#define WALL_MS 1795342620000LL

static void make_batch(struct batch *b)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "0123456789abcdef0123456789abcdef");
	b->stream = "sensors";
	b->first_seq = 7;
	b->last_seq = 9;
	b->count = 3;
	b->body = body;
	b->body_len = sizeof(body) - 1;
	b->raw_len = 100;
	b->encoding = "ndjson+zstd";
	b->first_wall_ms = WALL_MS;
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

/* An HTTP response with the right Content-Length, in a static slot. */
static const char *resp(int slot, const char *status, const char *headers, const char *xml)
{
	static char out[8][1024];

	snprintf(out[slot], sizeof(out[slot]),
		 "HTTP/1.1 %s\r\n%sContent-Type: application/xml\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n%s", status, headers, strlen(xml), xml);
	return out[slot];
}

#define OK_200 resp(0, "200 OK", "", "")

/* ---- tests ---------------------------------------------------------------- */

TEST(validate_rejects_bad_config)
{
	void *c = conf_new();
	char err[512];

	CHECK(out_s3.validate(c, err, sizeof(err)) != 0);       /* no endpoint */
	conf_set(c, "endpoint", "https://s3.eu-west-1.amazonaws.com");
	conf_set(c, "bucket", "sensor-lake");
	conf_set(c, "access_key_file", "/nonexistent/ak");
	conf_set(c, "secret_key_file", "/nonexistent/sk");
	CHECK(out_s3.validate(c, err, sizeof(err)) == 0);
	conf_set(c, "endpoint", "http://s3.example.net");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "allow_http"));
	conf_set(c, "allow_http", "true");
	CHECK(out_s3.validate(c, err, sizeof(err)) == 0);
	conf_set(c, "allow_http", "false");
	conf_set(c, "endpoint", "http://[::1]:9000");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "path_style"));
	conf_set(c, "path_style", "true");
	CHECK(out_s3.validate(c, err, sizeof(err)) == 0);
	conf_set(c, "endpoint", "https://s3.example.net/some/path");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0);
	conf_set(c, "endpoint", "ftp://s3.example.net");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0);
	conf_set(c, "endpoint", "https://127.0.0.1:9000");
	conf_set(c, "key", "{prefix}/{stream}/{first_seq}.zst");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "{batch_id}"));
	conf_set(c, "key", "{prefix}/{nope}/{batch_id}");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "placeholder"));
	conf_set(c, "key", "{prefix}/{batch_id}");
	conf_set(c, "bucket", "Not_A_Bucket");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "bucket"));
	conf_set(c, "bucket", "ok-bucket");
	conf_set(c, "region", "eu west");
	CHECK(out_s3.validate(c, err, sizeof(err)) != 0 && strstr(err, "region"));
	conf_free(c);
}

TEST(put_is_signed_encoded_and_acknowledged)
{
	const char *script[] = { OK_200, NULL };
	struct fx f;
	struct batch b;
	static const char want_line[] =
		"PUT /sensor-lake/lake/agent%3Dgw-01/stream%3Dsensors/dt%3D2026-11-22/hour%3D10/"
		"0123456789abcdef0123456789abcdef.ndjson.zst HTTP/1.1\r\n";
	char *hdr, *got, sha[65], want[256], desc[256];
	size_t got_len = 0;

	REQUIRE(fx_init(&f, script, "secret/With+Symbols\n"));
	REQUIRE(out_s3.start(&f.o, &f.state) == 0);
	CHECK(f.o.connected);
	out_s3.describe(f.state, desc, sizeof(desc));
	CHECK(strstr(desc, "http://127.0.0.1:") == desc);
	CHECK(strstr(desc, "bucket sensor-lake") != NULL);
	CHECK(strstr(desc, "key lake/agent=gw-01/stream={stream}/dt={yyyy}-") != NULL);
	CHECK(out_s3.ready(f.state));
	make_batch(&b);
	REQUIRE(out_s3.send(f.state, &b) == 0);
	REQUIRE(run_until_done(&f.o, 1, 10000));
	CHECK(f.o.done[0].b == &b);
	CHECK_EQ_INT(f.o.done[0].result, OUT_OK);
	CHECK(f.o.connected);

	hdr = request_hdr(&f.srv, 0);
	got = request_body(&f.srv, 0, &got_len);
	REQUIRE(hdr && got);
	/* The key with its partitions, '=' percent-encoded in the path. */
	CHECK(strncmp(hdr, want_line, strlen(want_line)) == 0);
	CHECK(got_len == b.body_len && !memcmp(got, body, got_len));
	sha256_hex(body, sizeof(body) - 1, sha);
	snprintf(want, sizeof(want), "\r\nx-amz-content-sha256: %s\r\n", sha);
	CHECK(strstr(hdr, want) != NULL);
	CHECK(strstr(hdr, "\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") != NULL);
	CHECK(strstr(hdr, "/eu-west-1/s3/aws4_request, SignedHeaders=") != NULL);
	CHECK(strstr(hdr, "x-amz-content-sha256") && strstr(hdr, ";x-amz-meta-batch-id;"));
	CHECK(strstr(hdr, "\r\nX-Amz-Date: ") != NULL || strstr(hdr, "\r\nx-amz-date: ") != NULL);
	CHECK(strstr(hdr, "\r\nContent-Type: application/zstd\r\n") != NULL);
	CHECK(strcasestr(hdr, "\r\nContent-Encoding:") == NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-agent: gw-01\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-stream: sensors\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-batch-id: 0123456789abcdef0123456789abcdef\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-first-seq: 7\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-last-seq: 9\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-count: 3\r\n") != NULL);
	CHECK(strstr(hdr, "\r\nx-amz-meta-encoding: ndjson+zstd\r\n") != NULL);
	/* The secret itself never travels. */
	CHECK(strstr(hdr, "secret") == NULL);
	xfree(hdr);
	xfree(got);
	fx_free(&f);
}

TEST(answers_map_to_outcomes)
{
	const char *script[] = {
		resp(1, "503 Slow Down", "Retry-After: 3\r\n",
		     "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
		     "<Message>Reduce your rate</Message></Error>"),
		resp(2, "403 Forbidden", "", "<Error><Code>SignatureDoesNotMatch</Code><Message>The "
		     "request signature we calculated does not match</Message></Error>"),
		resp(3, "400 Bad Request", "",
		     "<Error><Code>InvalidArgument</Code><Message>a &amp; b</Message></Error>"),
		resp(4, "400 Bad Request", "",
		     "<Error><Code>EntityTooLarge</Code><Message>too big</Message></Error>"),
		NULL,
	};
	struct fx f;
	struct batch b[5];

	REQUIRE(fx_init(&f, script, "wrong-secret"));
	conf_set(f.o.conf, "key", "{prefix}/{stream}/{batch_id}");
	conf_set(f.o.conf, "prefix", "");
	REQUIRE(out_s3.start(&f.o, &f.state) == 0);
	for (int i = 0; i < 5; i++) {
		make_batch(&b[i]);
		REQUIRE(out_s3.send(f.state, &b[i]) == 0);
		REQUIRE(run_until_done(&f.o, i + 1, 10000));
		CHECK(f.o.done[i].b == &b[i]);
		if (i == 0) {
			char *hdr = request_hdr(&f.srv, 0);

			/* An empty prefix leaves no empty path segment. */
			CHECK(hdr && !strncmp(hdr, "PUT /sensor-lake/sensors/0123", 29));
			xfree(hdr);
		}
		/* Refusals of the object still mean a working store; refusals
		 * of the request do not. */
		CHECK(f.o.connected == (i == 2 || i == 3));
	}
	/* 503 SlowDown: retried, not before Retry-After. */
	CHECK_EQ_INT(f.o.done[0].result, OUT_RETRY);
	CHECK(strstr(f.o.done[0].reason, "503 SlowDown") != NULL);
	CHECK(f.o.retry_after_ms == 3000);
	/* A refused signature: retried, never dead-lettered, and said so. */
	CHECK_EQ_INT(f.o.done[1].result, OUT_RETRY);
	CHECK(strstr(f.o.done[1].reason, "SignatureDoesNotMatch") != NULL);
	CHECK(strstr(f.o.done[1].reason, "secret_key_file") != NULL);
	/* 400: the batch is dead, with the code and the decoded message. */
	CHECK_EQ_INT(f.o.done[2].result, OUT_DEAD);
	CHECK(strstr(f.o.done[2].reason, "400 InvalidArgument: a & b") != NULL);
	/* EntityTooLarge: split. */
	CHECK_EQ_INT(f.o.done[3].result, OUT_REJECT);
	CHECK(strstr(f.o.done[3].reason, "EntityTooLarge") != NULL);
	/* The server is gone: a connection failure, retried. */
	CHECK_EQ_INT(f.o.done[4].result, OUT_RETRY);
	CHECK(strstr(f.o.done[4].reason, "PUT to 127.0.0.1:") != NULL);
	CHECK(!f.o.connected);
	fx_free(&f);
}

TEST(unreadable_secret_retries_until_the_file_is_fixed)
{
	const char *script[] = { OK_200, NULL };
	struct fx f;
	struct batch b1, b2;
	char path[128];

	REQUIRE(fx_init(&f, script, NULL));
	/* The output starts without its secret and says which file is wrong. */
	REQUIRE(out_s3.start(&f.o, &f.state) == 0);
	CHECK(!f.o.connected);
	CHECK(strstr(f.o.why, "secret_key_file") != NULL);
	make_batch(&b1);
	REQUIRE(out_s3.send(f.state, &b1) == 0);
	REQUIRE(run_until_done(&f.o, 1, 10000));
	CHECK_EQ_INT(f.o.done[0].result, OUT_RETRY);
	CHECK(strstr(f.o.done[0].reason, "cannot read secret_key_file") != NULL);
	/* Fixed in place: the next attempt reads it and goes through. */
	snprintf(path, sizeof(path), "%s/sk", f.keydir);
	write_file(path, "now-there\n");
	make_batch(&b2);
	REQUIRE(out_s3.send(f.state, &b2) == 0);
	REQUIRE(run_until_done(&f.o, 2, 10000));
	CHECK_EQ_INT(f.o.done[1].result, OUT_OK);
	CHECK(f.o.connected);
	fx_free(&f);
}

TEST(drain_abandons_in_flight_after_deadline)
{
	/* "": the server reads the request and never answers. */
	const char *script[] = { "", NULL };
	struct fx f;
	struct batch b;

	REQUIRE(fx_init(&f, script, "s\n"));
	REQUIRE(out_s3.start(&f.o, &f.state) == 0);
	make_batch(&b);
	REQUIRE(out_s3.send(f.state, &b) == 0);
	CHECK(!run_until_done(&f.o, 1, 300));
	CHECK(!out_s3.drain(f.state, loop_now_ms() + 60000));
	CHECK(!out_s3.ready(f.state));
	CHECK(out_s3.drain(f.state, loop_now_ms() - 1));
	CHECK_EQ_INT(f.o.ndone, 0);
	fx_free(&f);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(validate_rejects_bad_config);
	RUN(put_is_signed_encoded_and_acknowledged);
	RUN(answers_map_to_outcomes);
	RUN(unreadable_secret_retries_until_the_file_is_fixed);
	RUN(drain_abandons_in_flight_after_deadline);
	TEST_END();
}
