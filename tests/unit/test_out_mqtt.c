/* test_out_mqtt.c - the mqtt output type against a real mosquitto broker.
 *
 * Each test starts /usr/sbin/mosquitto on a free loopback port with a
 * generated config, drives the type through the agent's event loop, and
 * watches what arrives with a subscriber of its own. The core's services to
 * output types (output_*, backoff_delay) are defined here, recording what
 * the type reports, so the core's output.o is never linked in.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "log.h"
#include "loop.h"
#include "mem.h"
#include "output.h"
#include "test.h"
#include "test_clock.h"

/* ---- the core's services, recorded ------------------------------------ */

struct done {
	struct batch *b;
	int result;
	char reason[256];
};

struct output {
	const char *name;
	const char *agent;
	void *conf;
	struct loop *loop;
	bool connected;
	char why[512];
	int n_up, n_down, kicks;
	struct done done[32];
	int ndone;
	int unreachable;
	int64_t retry_probe_ms;
};

/* Reconnect delays: the first, then every later one. */
static int64_t backoff_first_ms = 100, backoff_later_ms = 100;
static int backoff_calls;

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

void output_set_connected(struct output *o, bool connected, const char *why)
{
	if (connected && !o->connected)
		o->n_up++;
	if (!connected && o->connected)
		o->n_down++;
	o->connected = connected;
	snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
}

void output_kick(struct output *o)
{
	o->kicks++;
}

void output_unreachable(struct output *o)
{
	o->unreachable++;
}

void output_probe_done(struct output *o, int err)
{
}

int64_t output_retry_probe_ms(const struct output *o)
{
	return o->retry_probe_ms;
}

int64_t backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt)
{
	backoff_calls++;
	return attempt == 0 ? backoff_first_ms : backoff_later_ms;
}

/* ---- the type's config, set through its key table --------------------- */

static const struct cfg_key *key_find(const char *name)
{
	for (const struct cfg_key *k = out_mqtt.conf_keys; k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

static int64_t parse_amount(const char *v)
{
	char *end;
	int64_t x = strtoll(v, &end, 10);

	if (!strcmp(end, "s"))
		x *= 1000;
	else if (!strcmp(end, "m"))
		x *= 60000;
	else if (!strcmp(end, "h"))
		x *= 3600000;
	return x;
}

static void conf_set(void *conf, const char *name, const char *v)
{
	const struct cfg_key *k = key_find(name);
	char *p;

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
	case CFG_ENUM:
		for (int i = 0; k->enums[i]; i++)
			if (!strcmp(k->enums[i], v))
				*(int *)p = i;
		break;
	case CFG_BOOL:
		*(bool *)p = !strcmp(v, "true");
		break;
	default:
		*(int64_t *)p = parse_amount(v);
		break;
	}
}

static void *conf_new(void)
{
	void *c = xcalloc(1, out_mqtt.conf_size);

	for (const struct cfg_key *k = out_mqtt.conf_keys; k->name; k++)
		if (k->def)
			conf_set(c, k->name, k->def);
	return c;
}

static void conf_free(void *c)
{
	for (const struct cfg_key *k = out_mqtt.conf_keys; k->name; k++)
		if (k->type == CFG_STR)
			xfree(*(char **)((char *)c + k->offset));
	xfree(c);
}

/* ---- temporary directories and the broker ------------------------------ */

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

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		abort();
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static bool port_open(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

struct broker {
	char dir[64];
	int port;
	pid_t pid;
	char extra[512];
};

/* Every broker of the run, so that a test that stops early on a failed
 * REQUIRE leaves no process or directory behind. */
static struct broker *brokers[64];
static int n_brokers;

static void broker_free(struct broker *br);

static bool broker_start(struct broker *br)
{
	char conf[128], log[128], text[1024];

	snprintf(conf, sizeof(conf), "%s/mosquitto.conf", br->dir);
	snprintf(log, sizeof(log), "%s/broker.log", br->dir);
	/* Run as ourselves: as root the broker would switch to a user that
	 * cannot read the test's private directory. */
	snprintf(text, sizeof(text), "user %s\nlistener %d 127.0.0.1\n%s%s",
		 getpwuid(geteuid())->pw_name, br->port,
		 strstr(br->extra, "allow_anonymous") ? "" : "allow_anonymous true\n", br->extra);
	write_file(conf, text);
	br->pid = fork();
	if (br->pid < 0)
		return false;
	if (br->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fd, 1);
		dup2(fd, 2);
		execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (port_open(br->port))
			return true;
		if (waitpid(br->pid, NULL, WNOHANG) == br->pid) {
			br->pid = 0;
			return false;
		}
		usleep(10000);
	}
	return false;
}

/* A broker in a fresh directory, with extra lines of config. */
static bool broker_new(struct broker *br, const char *extra)
{
	if (br->dir[0])
		broker_free(br);  /* left over by an earlier failed run of this test */
	memset(br, 0, sizeof(*br));
	snprintf(br->dir, sizeof(br->dir), "/tmp/test_out_mqtt.XXXXXX");
	if (!mkdtemp(br->dir))
		return false;
	if (n_brokers < 64)
		brokers[n_brokers++] = br;
	br->port = free_port();
	snprintf(br->extra, sizeof(br->extra), "%s", extra ? extra : "");
	return broker_start(br);
}

static void broker_signal(struct broker *br, int sig)
{
	if (br->pid <= 0)
		return;
	kill(br->pid, sig);
	if (sig == SIGKILL || sig == SIGTERM) {
		waitpid(br->pid, NULL, 0);
		br->pid = 0;
	}
}

static void broker_free(struct broker *br)
{
	if (br->pid > 0) {
		kill(br->pid, SIGCONT);
		broker_signal(br, SIGTERM);
	}
	if (br->dir[0])
		rm_dir(br->dir);
	br->dir[0] = '\0';
	for (int i = 0; i < n_brokers; i++)
		if (brokers[i] == br)
			brokers[i] = brokers[--n_brokers];
}

/* ---- running the loop --------------------------------------------------- */

struct waiter {
	struct loop_timer t;
	struct loop *l;
	bool (*cond)(void *);
	void *arg;
	int64_t deadline;
	bool met;
};

static int64_t waiter_cb(struct loop_timer *t)
{
	struct waiter *w = container_of(t, struct waiter, t);

	if ((w->cond && w->cond(w->arg)) || loop_now_ms() >= w->deadline) {
		w->met = w->cond && w->cond(w->arg);
		loop_stop(w->l);
		return -1;
	}
	return 5;
}

/* Run the loop until cond holds or ms pass (cond NULL: just run ms). */
static bool run_until(struct loop *l, bool (*cond)(void *), void *arg, int64_t ms)
{
	struct waiter w = { .t.cb = waiter_cb, .l = l, .cond = cond, .arg = arg,
			    .deadline = loop_now_ms() + ms };

	loop_timer_set(l, &w.t, 0);
	loop_run(l);
	loop_timer_cancel(l, &w.t);
	return w.met;
}

/* ---- a subscriber that records what arrives ---------------------------- */

struct rx {
	char topic[128];
	char payload[2048];
	int len;
	bool retain;
	char props[512];
	char ctype[64];
};

struct sub {
	struct mosquitto *mosq;
	struct loop *l;
	struct loop_timer t;
	bool subscribed;
	struct rx msgs[16];
	int n;
};

static void sub_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
			   const mosquitto_property *props)
{
	struct sub *s = obj;
	struct rx *r;
	const mosquitto_property *p;
	char *k = NULL, *v = NULL;

	if (s->n >= 16)
		return;
	r = &s->msgs[s->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->topic, sizeof(r->topic), "%s", msg->topic);
	r->len = msg->payloadlen < (int)sizeof(r->payload) - 1 ? msg->payloadlen
							      : (int)sizeof(r->payload) - 1;
	memcpy(r->payload, msg->payload, (size_t)r->len);
	r->retain = msg->retain;
	for (p = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &k, &v, false);
	     p; p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, true)) {
		size_t n = strlen(r->props);

		snprintf(r->props + n, sizeof(r->props) - n, "%s=%s;", k, v);
		free(k);
		free(v);
	}
	if (mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &k, false)) {
		snprintf(r->ctype, sizeof(r->ctype), "%s", k);
		free(k);
	}
}

static void sub_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *q,
			     const mosquitto_property *props)
{
	((struct sub *)obj)->subscribed = true;
}

static int64_t sub_timer_cb(struct loop_timer *t)
{
	struct sub *s = container_of(t, struct sub, t);

	mosquitto_loop(s->mosq, 0, 1);
	return 5;
}

static bool sub_ready(void *arg)
{
	return ((struct sub *)arg)->subscribed;
}

static bool sub_start(struct sub *s, struct loop *l, int port, const char *topic)
{
	memset(s, 0, sizeof(*s));
	s->l = l;
	s->mosq = mosquitto_new(NULL, true, s);
	if (!s->mosq)
		return false;
	mosquitto_int_option(s->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_message_v5_callback_set(s->mosq, sub_on_message);
	mosquitto_subscribe_v5_callback_set(s->mosq, sub_on_subscribe);
	if (mosquitto_connect_bind_v5(s->mosq, "127.0.0.1", port, 60, NULL, NULL) ||
	    mosquitto_subscribe_v5(s->mosq, NULL, topic, 1, 0, NULL))
		return false;
	s->t.cb = sub_timer_cb;
	loop_timer_set(l, &s->t, 0);
	return run_until(l, sub_ready, s, 3000);
}

static void sub_stop(struct sub *s)
{
	if (!s->mosq)
		return;
	loop_timer_cancel(s->l, &s->t);
	mosquitto_disconnect(s->mosq);
	mosquitto_destroy(s->mosq);
	s->mosq = NULL;
}

static const struct rx *sub_find(const struct sub *s, const char *topic, const char *needle)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->msgs[i].topic, topic) &&
		    (!needle || strstr(s->msgs[i].payload, needle)))
			return &s->msgs[i];
	return NULL;
}

/* ---- the output under test ------------------------------------------- */

struct fx {
	struct loop *l;
	struct output o;
	void *conf;
	void *state;
};

static void fx_init(struct fx *f, int port, const char *protocol)
{
	char url[64];

	memset(f, 0, sizeof(*f));
	/* The real clock, even after a test on the test clock failed early. */
	tc_uninstall();
	if (loop_init(&f->l))
		abort();
	f->conf = conf_new();
	snprintf(url, sizeof(url), "mqtt://127.0.0.1:%d", port);
	conf_set(f->conf, "url", url);
	conf_set(f->conf, "protocol", protocol);
	f->o.name = "lake";
	f->o.agent = "gw-01";
	f->o.conf = f->conf;
	f->o.loop = f->l;
	backoff_first_ms = backoff_later_ms = 100;
}

static void fx_stop(struct fx *f)
{
	out_mqtt.stop(f->state);
	f->state = NULL;
}

static void fx_free(struct fx *f)
{
	fx_stop(f);
	conf_free(f->conf);
	loop_free(f->l);
}

static bool is_up(void *arg)
{
	return ((struct fx *)arg)->o.connected;
}

static bool is_down(void *arg)
{
	return !((struct fx *)arg)->o.connected;
}

static bool has_done(void *arg)
{
	return ((struct fx *)arg)->o.ndone > 0;
}

static bool refused_twice(void *arg)
{
	return backoff_calls >= 2 && strstr(((struct fx *)arg)->o.why, "connection refused");
}

static bool why_refused(void *arg)
{
	return strstr(((struct fx *)arg)->o.why, "connection refused") != NULL;
}

static bool start_and_connect(struct fx *f)
{
	if (out_mqtt.start(&f->o, &f->state))
		return false;
	return run_until(f->l, is_up, f, 3000);
}

static void make_batch(struct batch *b, const char *stream, const void *body, size_t len)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "0123456789abcdef0123456789abcdef");
	b->stream = stream;
	b->first_seq = 41;
	b->last_seq = 43;
	b->count = 3;
	b->body = body;
	b->body_len = len;
	b->raw_len = len * 3;
	b->encoding = "ndjson+zstd";
}

static const char body[] = "\x28\xb5\x2f\xfd not really a zstd frame";

/* ---- tests ------------------------------------------------------------ */

TEST(validate_rejects_bad_config)
{
	void *c = conf_new();
	char err[256];

	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);
	conf_set(c, "url", "mqtt://[::1]:1884");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);

	/* TLS: DNS names only, unless tls_server_name says which name the
	 * certificate must carry; the TLS keys need mqtts. */
	conf_set(c, "url", "mqtts://broker:8883");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);
	conf_set(c, "url", "mqtts://broker");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);
	conf_set(c, "client_cert", "/etc/agentd/gw.crt");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "client_cert needs client_key") != NULL);
	conf_set(c, "client_key", "/etc/agentd/gw.key");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);
	conf_set(c, "url", "mqtts://10.0.0.5:8883");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "tls_server_name") != NULL);
	conf_set(c, "url", "mqtts://[fd00::5]:8883");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	conf_set(c, "tls_server_name", "broker.plant.example");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);
	conf_set(c, "url", "mqtt://[::1]:1884");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "applies to mqtts:// urls only") != NULL);
	conf_free(c);
	c = conf_new();

	conf_set(c, "url", "http://broker");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "mqtt://host:port") != NULL);
	conf_set(c, "url", "mqtt://broker:0");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	conf_set(c, "url", "mqtt://broker:1883/x");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	conf_set(c, "url", "mqtt://127.0.0.1:1883");

	conf_set(c, "topic", "a/{nope}/b");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "unknown placeholder") != NULL);
	conf_set(c, "topic", "a/+/b");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "wildcards") != NULL);
	conf_set(c, "topic", "lake/{output}/{agent}/{stream}");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);

	conf_set(c, "status_topic", "s/{stream}");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	conf_set(c, "status_topic", "");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);

	conf_set(c, "password_file", "/nonexistent");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "username") != NULL);
	conf_set(c, "username", "u");
	CHECK_EQ_INT(out_mqtt.validate(c, err, sizeof(err)), 0);

	conf_set(c, "reconnect_base", "2m");
	CHECK(out_mqtt.validate(c, err, sizeof(err)) == -EINVAL);
	conf_free(c);
}

TEST(refused_reason_and_describe)
{
	struct fx f;
	struct batch b;
	char d[256], want[256];
	int port = free_port();

	fx_init(&f, port, "v5");
	backoff_calls = 0;
	REQUIRE(out_mqtt.start(&f.o, &f.state) == 0);
	CHECK(!out_mqtt.ready(f.state));
	/* It keeps trying, after the core's backoff each time. */
	REQUIRE(run_until(f.l, refused_twice, &f, 5000));
	snprintf(want, sizeof(want), "connection refused (is the broker running at 127.0.0.1:%d?)",
		 port);
	CHECK_EQ_STR(f.o.why, want);
	CHECK(!f.o.connected);
	out_mqtt.describe(f.state, d, sizeof(d));
	snprintf(want, sizeof(want), "mqtt://127.0.0.1:%d v5 qos1 topic agents/gw-01/{stream}",
		 port);
	CHECK_EQ_STR(d, want);
	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), -EAGAIN);
	/* Nothing in flight and no connection: drained at once. */
	CHECK(out_mqtt.drain(f.state, loop_now_ms() + 5000));
	CHECK_EQ_STR(f.o.why, "stopped");
	fx_free(&f);
}

static bool sub_has_sensors(void *arg)
{
	return sub_find(arg, "agents/gw-01/sensors", NULL) != NULL;
}

static void publish_roundtrip(const char *protocol)
{
	static struct broker br;
	struct fx f;
	struct sub s;
	struct batch b;
	const struct rx *r;
	bool v5 = !strcmp(protocol, "v5");

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, protocol);
	REQUIRE(sub_start(&s, f.l, br.port, "agents/#"));
	REQUIRE(start_and_connect(&f));
	CHECK(f.o.kicks > 0);
	CHECK(out_mqtt.ready(f.state));

	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	REQUIRE(run_until(f.l, has_done, &f, 3000));
	CHECK(f.o.done[0].b == &b);
	CHECK_EQ_INT(f.o.done[0].result, OUT_OK);
	REQUIRE(run_until(f.l, sub_has_sensors, &s, 3000));

	r = sub_find(&s, "agents/gw-01/sensors", NULL);
	REQUIRE(r != NULL);
	CHECK_EQ_INT(r->len, sizeof(body));
	CHECK(!memcmp(r->payload, body, sizeof(body)));
	CHECK(!r->retain);
	if (v5) {
		CHECK(strstr(r->props, "batch_id=0123456789abcdef0123456789abcdef;") != NULL);
		CHECK(strstr(r->props, "first_seq=41;") != NULL);
		CHECK(strstr(r->props, "last_seq=43;") != NULL);
		CHECK(strstr(r->props, "count=3;") != NULL);
		CHECK(strstr(r->props, "encoding=ndjson+zstd;") != NULL);
		CHECK(strstr(r->props, "agent=gw-01;") != NULL);
		CHECK_EQ_STR(r->ctype, "application/zstd");
	} else {
		CHECK_EQ_STR(r->props, "");
	}
	/* The online status reached the subscriber too. */
	CHECK(sub_find(&s, "agents/gw-01/status", "\"status\":\"online\"") != NULL);

	sub_stop(&s);
	fx_free(&f);
	broker_free(&br);
}

TEST(publish_v5_with_properties)
{
	publish_roundtrip("v5");
}

TEST(publish_v311)
{
	publish_roundtrip("v311");
}

static bool connected_twice(void *arg)
{
	return ((struct fx *)arg)->o.n_up >= 2;
}

static bool sub_has_b3(void *arg)
{
	struct sub *s = arg;

	for (int i = 0; i < s->n; i++)
		if (strstr(s->msgs[i].props, "batch_id=fedcba9876543210fedcba9876543210;"))
			return true;
	return false;
}

TEST(broker_restart_completes_inflight_publish)
{
	static struct broker br;
	struct fx f;
	struct sub s;
	struct batch b, b2, b3;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));

	/* The broker takes the PUBLISH into its socket but never answers. */
	broker_signal(&br, SIGSTOP);
	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	run_until(f.l, NULL, NULL, 50);
	backoff_first_ms = 200;
	backoff_later_ms = 1500;
	broker_signal(&br, SIGKILL);
	REQUIRE(run_until(f.l, is_down, &f, 3000));
	CHECK(strstr(f.o.why, "lost") != NULL);
	CHECK(!out_mqtt.ready(f.state));
	make_batch(&b2, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b2), -EAGAIN);
	CHECK_EQ_INT(f.o.ndone, 0);

	/* The first attempt, after 200 ms, finds nothing listening. */
	REQUIRE(run_until(f.l, why_refused, &f, 3000));
	CHECK_EQ_INT(f.o.ndone, 0);

	REQUIRE(broker_start(&br));
	REQUIRE(sub_start(&s, f.l, br.port, "agents/gw-01/sensors"));
	REQUIRE(run_until(f.l, connected_twice, &f, 4000));
	REQUIRE(run_until(f.l, has_done, &f, 3000));
	CHECK_EQ_INT(f.o.ndone, 1);
	CHECK(f.o.done[0].b == &b);
	CHECK_EQ_INT(f.o.done[0].result, OUT_OK);
	/* A later batch is the barrier: a second copy of the first one would
	 * arrive before it. */
	make_batch(&b3, "sensors", body, sizeof(body));
	snprintf(b3.id, sizeof(b3.id), "fedcba9876543210fedcba9876543210");
	CHECK_EQ_INT(out_mqtt.send(f.state, &b3), 0);
	REQUIRE(run_until(f.l, sub_has_b3, &s, 3000));
	CHECK_EQ_INT(s.n, 2);

	sub_stop(&s);
	fx_free(&f);
	broker_free(&br);
}

TEST(oversize_batch_is_emsgsize)
{
	static struct broker br;
	struct fx f;
	struct batch b;
	static char big[2000];

	REQUIRE(broker_new(&br, "max_packet_size 1000\n"));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));
	make_batch(&b, "sensors", big, sizeof(big));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), -EMSGSIZE);
	make_batch(&b, "sensors", big, 900);
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), -EMSGSIZE);
	make_batch(&b, "sensors", big, 500);
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	REQUIRE(run_until(f.l, has_done, &f, 3000));
	CHECK_EQ_INT(f.o.done[0].result, OUT_OK);
	CHECK(f.o.connected);
	fx_free(&f);
	broker_free(&br);
}

static bool has_two(void *arg)
{
	return ((struct fx *)arg)->o.ndone >= 2;
}

static void acl_case(const char *protocol, int want_denied)
{
	static struct broker br;
	struct fx f;
	struct batch ok, denied;
	char acl[128];

	REQUIRE(broker_new(&br, NULL));
	snprintf(acl, sizeof(acl), "%s/acl", br.dir);
	write_file(acl, "topic readwrite agents/gw-01/status\ntopic readwrite agents/gw-01/ok\n");
	snprintf(br.extra, sizeof(br.extra), "acl_file %s\n", acl);
	broker_signal(&br, SIGTERM);
	REQUIRE(broker_start(&br));

	fx_init(&f, br.port, protocol);
	REQUIRE(start_and_connect(&f));
	make_batch(&ok, "ok", body, sizeof(body));
	make_batch(&denied, "denied", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &ok), 0);
	CHECK_EQ_INT(out_mqtt.send(f.state, &denied), 0);
	REQUIRE(run_until(f.l, has_two, &f, 3000));
	for (int i = 0; i < 2; i++) {
		if (f.o.done[i].b == &ok) {
			CHECK_EQ_INT(f.o.done[i].result, OUT_OK);
		} else {
			CHECK_EQ_INT(f.o.done[i].result, want_denied);
			if (want_denied == OUT_REJECT)
				CHECK_EQ_STR(f.o.done[i].reason,
					     "broker rejected publish: Not authorized");
		}
	}
	CHECK(f.o.connected);
	fx_free(&f);
	broker_free(&br);
}

TEST(acl_denial_v5_is_reject)
{
	acl_case("v5", OUT_REJECT);
}

TEST(acl_denial_v311_counts_as_ok)
{
	/* MQTT 3.1.1 cannot say no: the broker acknowledges and drops. */
	acl_case("v311", OUT_OK);
}

static bool why_says_auth(void *arg)
{
	return strstr(((struct fx *)arg)->o.why, "not authorised") != NULL;
}

static void auth_case(const char *protocol)
{
	static struct broker br;
	struct fx f;
	char cmd[512], pwfile[128], agentpw[128], logpath[128], logtext[8192];
	int saved, fd;
	ssize_t n;

	REQUIRE(broker_new(&br, NULL));
	snprintf(pwfile, sizeof(pwfile), "%s/passwd", br.dir);
	snprintf(cmd, sizeof(cmd), "mosquitto_passwd -c -b %s agent Sup3rSecret >/dev/null 2>&1",
		 pwfile);
	REQUIRE(system(cmd) == 0);
	snprintf(br.extra, sizeof(br.extra), "allow_anonymous false\npassword_file %s\n", pwfile);
	broker_signal(&br, SIGTERM);
	REQUIRE(broker_start(&br));

	snprintf(agentpw, sizeof(agentpw), "%s/agent.pw", br.dir);
	snprintf(logpath, sizeof(logpath), "%s/agent.log", br.dir);
	saved = dup(2);
	fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	log_set_level(LOGL_DEBUG);

	/* Right password, with the newline an editor leaves. */
	write_file(agentpw, "Sup3rSecret\n");
	fx_init(&f, br.port, protocol);
	conf_set(f.conf, "username", "agent");
	conf_set(f.conf, "password_file", agentpw);
	CHECK(start_and_connect(&f));
	fx_free(&f);

	/* Wrong password: refused, with the reason a person can act on. */
	write_file(agentpw, "WrongSecret\n");
	fx_init(&f, br.port, protocol);
	conf_set(f.conf, "username", "agent");
	conf_set(f.conf, "password_file", agentpw);
	REQUIRE(out_mqtt.start(&f.o, &f.state) == 0);
	CHECK(run_until(f.l, why_says_auth, &f, 3000));
	CHECK(strstr(f.o.why, "not authorised (check username/password_file)") != NULL);
	CHECK(!f.o.connected);
	fx_free(&f);

	/* No password file at all: start fails. */
	fx_init(&f, br.port, protocol);
	conf_set(f.conf, "username", "agent");
	conf_set(f.conf, "password_file", "/nonexistent/pw");
	CHECK_EQ_INT(out_mqtt.start(&f.o, &f.state), -ENOENT);
	CHECK(f.state == NULL);
	fx_free(&f);

	log_set_level(LOGL_INFO);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	fd = open(logpath, O_RDONLY);
	n = fd >= 0 ? read(fd, logtext, sizeof(logtext) - 1) : -1;
	if (fd >= 0)
		close(fd);
	REQUIRE(n >= 0);
	logtext[n] = '\0';
	CHECK(strstr(logtext, "cannot read password_file /nonexistent/pw") != NULL);
	CHECK(strstr(logtext, "Sup3rSecret") == NULL);
	CHECK(strstr(logtext, "WrongSecret") == NULL);
	broker_free(&br);
}

TEST(password_auth_v5)
{
	auth_case("v5");
}

TEST(password_auth_v311)
{
	auth_case("v311");
}

static bool sub_has_offline(void *arg)
{
	return sub_find(arg, "agents/gw-01/status", "\"status\":\"offline\"") != NULL;
}

static bool sub_has_online(void *arg)
{
	return sub_find(arg, "agents/gw-01/status", "\"status\":\"online\"") != NULL;
}

TEST(status_retained_and_last_will)
{
	static struct broker br;
	struct fx f;
	struct sub s;
	const struct rx *r;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	REQUIRE(sub_start(&s, f.l, br.port, "agents/gw-01/status"));
	REQUIRE(start_and_connect(&f));
	/* Once one subscriber has it, the broker holds it retained. */
	REQUIRE(run_until(f.l, sub_has_online, &s, 3000));
	sub_stop(&s);

	/* A subscriber arriving later gets the retained online status. */
	REQUIRE(sub_start(&s, f.l, br.port, "agents/gw-01/status"));
	REQUIRE(run_until(f.l, sub_has_online, &s, 3000));
	r = sub_find(&s, "agents/gw-01/status", "\"status\":\"online\"");
	REQUIRE(r != NULL);
	CHECK(r->retain);
	CHECK(strstr(r->payload, "\"client_id\":\"gw-01-lake\"") != NULL);

	/* Gone without DISCONNECT: the broker publishes the last will. */
	fx_stop(&f);
	REQUIRE(run_until(f.l, sub_has_offline, &s, 3000));
	r = sub_find(&s, "agents/gw-01/status", "\"status\":\"offline\"");
	CHECK(strstr(r->payload, "\"reason\":\"connection lost\"") != NULL);
	sub_stop(&s);

	/* And it stays, retained, for whoever looks next. */
	REQUIRE(sub_start(&s, f.l, br.port, "agents/gw-01/status"));
	REQUIRE(run_until(f.l, sub_has_offline, &s, 3000));
	CHECK(sub_find(&s, "agents/gw-01/status", "\"status\":\"offline\"")->retain);
	sub_stop(&s);
	fx_free(&f);
	broker_free(&br);
}

struct drain_arg {
	struct fx *f;
	int64_t deadline;
	bool done;
};

static bool drained(void *arg)
{
	struct drain_arg *d = arg;

	d->done = out_mqtt.drain(d->f->state, d->deadline);
	return d->done;
}

TEST(drain_waits_for_puback_then_goes_offline)
{
	static struct broker br;
	struct fx f;
	struct sub s;
	struct batch b;
	struct drain_arg d;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));
	REQUIRE(sub_start(&s, f.l, br.port, "agents/gw-01/status"));

	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	d = (struct drain_arg){ .f = &f, .deadline = loop_now_ms() + 3000 };
	CHECK(!out_mqtt.drain(f.state, d.deadline));
	CHECK(!out_mqtt.ready(f.state));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), -EAGAIN);
	REQUIRE(run_until(f.l, drained, &d, 3000));
	CHECK(loop_now_ms() < d.deadline);
	CHECK_EQ_INT(f.o.ndone, 1);
	CHECK_EQ_INT(f.o.done[0].result, OUT_OK);
	CHECK(out_mqtt.drain(f.state, d.deadline));
	CHECK(!f.o.connected);
	REQUIRE(run_until(f.l, sub_has_offline, &s, 3000));
	CHECK(sub_find(&s, "agents/gw-01/status", "\"reason\":\"shutdown\"") != NULL);
	/* A clean DISCONNECT: no last will follows. */
	run_until(f.l, NULL, NULL, 200);
	CHECK(sub_find(&s, "agents/gw-01/status", "connection lost") == NULL);
	sub_stop(&s);
	fx_free(&f);
	broker_free(&br);
}

TEST(drain_gives_up_at_deadline)
{
	static struct broker br;
	struct fx f;
	struct batch b;
	struct drain_arg d;
	int64_t t0;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));
	broker_signal(&br, SIGSTOP);
	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	t0 = loop_now_ms();
	d = (struct drain_arg){ .f = &f, .deadline = t0 + 300 };
	REQUIRE(run_until(f.l, drained, &d, 3000));
	CHECK(loop_now_ms() >= d.deadline);
	/* No outcome: the core sends those records again after a restart. */
	CHECK_EQ_INT(f.o.ndone, 0);
	fx_free(&f);
	broker_free(&br);
}

TEST(ack_timeout_retries_and_reconnects)
{
	static struct broker br;
	struct fx f;
	struct batch b, b2;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	conf_set(f.conf, "ack_timeout", "500ms");
	conf_set(f.conf, "connect_timeout", "1s");
	REQUIRE(start_and_connect(&f));
	broker_signal(&br, SIGSTOP);
	make_batch(&b, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	REQUIRE(run_until(f.l, has_done, &f, 4000));
	CHECK_EQ_INT(f.o.done[0].result, OUT_RETRY);
	CHECK(strstr(f.o.done[0].reason, "no PUBACK") != NULL);
	CHECK(!f.o.connected);
	broker_signal(&br, SIGCONT);
	REQUIRE(run_until(f.l, connected_twice, &f, 5000));
	/* libmosquitto's copy may be acknowledged now; it is not reported
	 * twice. Its PUBACK comes before that of a batch sent after it. */
	make_batch(&b2, "sensors", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b2), 0);
	REQUIRE(run_until(f.l, has_two, &f, 3000));
	CHECK_EQ_INT(f.o.ndone, 2);
	CHECK(f.o.done[1].b == &b2);
	fx_free(&f);
	broker_free(&br);
}

TEST(invalid_topic_is_rejected_later)
{
	static struct broker br;
	struct fx f;
	struct batch b;

	REQUIRE(broker_new(&br, NULL));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));
	make_batch(&b, "bad+stream", body, sizeof(body));
	CHECK_EQ_INT(out_mqtt.send(f.state, &b), 0);
	CHECK_EQ_INT(f.o.ndone, 0);
	REQUIRE(run_until(f.l, has_done, &f, 1000));
	CHECK_EQ_INT(f.o.done[0].result, OUT_REJECT);
	CHECK(strstr(f.o.done[0].reason, "bad+stream") != NULL);
	fx_free(&f);
	broker_free(&br);
}

static bool window_full(void *arg)
{
	return !out_mqtt.ready(arg);
}

TEST(ready_follows_receive_maximum)
{
	static struct broker br;
	struct fx f;
	struct batch b[3];

	REQUIRE(broker_new(&br, "max_inflight_messages 2\n"));
	fx_init(&f, br.port, "v5");
	REQUIRE(start_and_connect(&f));
	broker_signal(&br, SIGSTOP);
	for (int i = 0; i < 2; i++) {
		make_batch(&b[i], "sensors", body, sizeof(body));
		CHECK(out_mqtt.ready(f.state));
		CHECK_EQ_INT(out_mqtt.send(f.state, &b[i]), 0);
	}
	CHECK(window_full(f.state));
	broker_signal(&br, SIGCONT);
	REQUIRE(run_until(f.l, has_two, &f, 3000));
	CHECK(out_mqtt.ready(f.state));
	fx_free(&f);
	broker_free(&br);
}

/* Brokers of tests that returned early (their structs are static). */
static void broker_cleanup_all(void)
{
	while (n_brokers)
		broker_free(brokers[0]);
}

static bool backoff_called_twice(void *arg)
{
	return backoff_calls >= 2;
}

static bool up_cond(void *arg)
{
	return ((struct fx *)arg)->o.connected;
}

/* While no broker listens, each reconnect attempt begins with a TCP connect,
 * the cheap probe: it comes every retry_probe however long the backoff has
 * grown, so a broker that is back is found within that time. On the test
 * clock: the broker is back 200 ms (retry_probe) after the last attempt,
 * with the backoff at 5 s. */
TEST(reconnect_while_unreachable_comes_every_retry_probe)
{
	static struct broker br;
	struct fx f;

	REQUIRE(broker_new(&br, NULL));
	broker_signal(&br, SIGTERM);        /* nothing listens on its port now */
	fx_init(&f, br.port, "v5");
	tc_install(0);
	backoff_first_ms = backoff_later_ms = 5000;
	f.o.retry_probe_ms = 200;
	backoff_calls = 0;
	REQUIRE(out_mqtt.start(&f.o, &f.state) == 0);
	REQUIRE(tc_wait_io(f.l, why_refused, &f));
	CHECK_EQ_INT(backoff_calls, 1);
	tc_advance(f.l, 199);
	CHECK_EQ_INT(backoff_calls, 1);
	tc_advance(f.l, 1);
	REQUIRE(tc_wait_io(f.l, backoff_called_twice, &f));
	CHECK(!f.o.connected);
	REQUIRE(broker_start(&br));
	tc_advance(f.l, 200);
	REQUIRE(tc_wait_io(f.l, up_cond, &f));
	CHECK_EQ_INT(backoff_calls, 2);
	fx_free(&f);
	tc_uninstall();
	broker_free(&br);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(validate_rejects_bad_config);
	RUN(refused_reason_and_describe);
	RUN(reconnect_while_unreachable_comes_every_retry_probe);
	RUN(publish_v5_with_properties);
	RUN(publish_v311);
	RUN(broker_restart_completes_inflight_publish);
	RUN(oversize_batch_is_emsgsize);
	RUN(acl_denial_v5_is_reject);
	RUN(acl_denial_v311_counts_as_ok);
	RUN(password_auth_v5);
	RUN(password_auth_v311);
	RUN(status_retained_and_last_will);
	RUN(drain_waits_for_puback_then_goes_offline);
	RUN(drain_gives_up_at_deadline);
	RUN(ack_timeout_retries_and_reconnects);
	RUN(invalid_topic_is_rejected_later);
	RUN(ready_follows_receive_maximum);
	broker_cleanup_all();
	TEST_END();
}
