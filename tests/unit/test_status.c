/* test_status.c - the status screen and JSON for hand-built snapshots.
 *
 * Each text rendering is compared byte for byte with a transcript in
 * tests/unit/transcripts/<case>.txt. After an intended change to the screen,
 * regenerate them from the repository root with
 *
 *     UPDATE_TRANSCRIPTS=1 build/tests/test_status
 *
 * and review the diff before committing. TRANSCRIPT_DIR overrides where the
 * files are looked for (default: tests/unit/transcripts, relative to the
 * working directory, which is the repository root under `make test`).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "mem.h"
#include "status.h"
#include "test.h"

/* 2024-05-01T12:00:00Z: every age below is relative to this. */
#define NOW 1714564800000LL
#define SEC 1000LL
#define MIN (60 * SEC)

static struct status_input inputs[2];
static struct status_output outputs[2];

static void base(struct status *s)
{
	memset(s, 0, sizeof(*s));
	memset(inputs, 0, sizeof(inputs));
	memset(outputs, 0, sizeof(outputs));

	s->running = true;
	snprintf(s->version, sizeof(s->version), "0.1.0");
	s->pid = 4242;
	s->now_wall_ms = NOW;
	s->uptime_ms = 2 * 3600 * SEC + 3 * MIN + 17 * SEC;
	snprintf(s->agent_id, sizeof(s->agent_id), "gw-01");
	snprintf(s->config_path, sizeof(s->config_path), "/etc/agentd/agentd.conf");
	snprintf(s->config_hash, sizeof(s->config_hash),
		 "3f2a9c1b0d4e77aa0123456789abcdef0123456789abcdef0123456789abcdef");
	snprintf(s->state_dir, sizeof(s->state_dir), "/var/lib/agentd");
	s->clock_synced = true;
	s->mem_bytes = 3 * 1024 * 1024 + 300 * 1024;

	s->queue.records = 1234;
	s->queue.first_seq = 88001;
	s->queue.last_seq = 89234;
	s->queue.oldest_wall_ms = NOW - 5 * SEC;
	s->queue.disk_bytes = 12 * 1024 * 1024 + 345 * 1024;
	s->queue.max_bytes = 256LL * 1024 * 1024;
	s->queue.dlq_records = 3;
	s->on_full = ON_FULL_DROP_OLDEST;

	snprintf(inputs[0].name, sizeof(inputs[0].name), "sensors");
	snprintf(inputs[0].driver, sizeof(inputs[0].driver), "tail");
	snprintf(inputs[0].stream, sizeof(inputs[0].stream), "sensors");
	snprintf(inputs[0].state, sizeof(inputs[0].state), "tailing 3 files");
	inputs[0].records = 102345;
	inputs[0].bytes = 9 * 1024 * 1024;
	inputs[0].rate = 12.5;
	inputs[0].last_read_wall_ms = NOW - 1 * SEC;
	inputs[0].dlq = 2;

	snprintf(inputs[1].name, sizeof(inputs[1].name), "plc");
	snprintf(inputs[1].driver, sizeof(inputs[1].driver), "modbus");
	snprintf(inputs[1].stream, sizeof(inputs[1].stream), "plc");
	snprintf(inputs[1].state, sizeof(inputs[1].state),
		 "polling 12 registers every 1s");
	inputs[1].records = 7200;
	inputs[1].bytes = 700 * 1024;
	inputs[1].rate = 1.0;
	inputs[1].last_read_wall_ms = NOW - 400;
	inputs[1].duplicates = 4;
	snprintf(inputs[1].last_error, sizeof(inputs[1].last_error),
		 "timeout reading register 40001");
	inputs[1].last_error_wall_ms = NOW - 2 * 3600 * SEC;

	snprintf(outputs[0].name, sizeof(outputs[0].name), "lake");
	snprintf(outputs[0].type, sizeof(outputs[0].type), "mqtt");
	snprintf(outputs[0].endpoint, sizeof(outputs[0].endpoint),
		 "mqtt://127.0.0.1:1883 v5 topic agents/gw-01/{stream}");
	outputs[0].connected = true;
	outputs[0].last_ack_wall_ms = NOW - 2 * SEC;
	outputs[0].cursor = 89200;
	outputs[0].backlog_records = 34;
	outputs[0].backlog_bytes = 8704;
	outputs[0].backlog_oldest_wall_ms = NOW - 3 * SEC;
	outputs[0].inflight_batches = 1;
	outputs[0].delivered_records = 109000;
	outputs[0].delivered_batches = 1090;
	outputs[0].retries = 2;
	outputs[0].next_retry_in_ms = -1;
	outputs[0].rate = 13.5;

	snprintf(outputs[1].name, sizeof(outputs[1].name), "archive");
	snprintf(outputs[1].type, sizeof(outputs[1].type), "https");
	snprintf(outputs[1].endpoint, sizeof(outputs[1].endpoint),
		 "https://lake.example.com:443/ingest mTLS");
	outputs[1].connected = true;
	outputs[1].last_ack_wall_ms = NOW - 20 * SEC;
	outputs[1].cursor = 88000;
	outputs[1].backlog_records = 1234;
	outputs[1].backlog_bytes = 315904;
	outputs[1].backlog_oldest_wall_ms = NOW - 5 * SEC;
	outputs[1].inflight_batches = 2;
	outputs[1].delivered_records = 108000;
	outputs[1].delivered_batches = 108;
	outputs[1].dlq_records = 1;
	outputs[1].next_retry_in_ms = -1;
	outputs[1].rate = 12.0;

	s->inputs = inputs;
	s->n_inputs = 2;
	s->outputs = outputs;
	s->n_outputs = 2;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0) {
		p = xmalloc((size_t)n + 1);
		if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
			xfree(p);
			p = NULL;
		} else if (p) {
			p[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(f);
	return p;
}

/* Compare (or, with UPDATE_TRANSCRIPTS=1, rewrite) one transcript. */
static bool transcript(const char *name, const struct buf *got)
{
	const char *dir = getenv("TRANSCRIPT_DIR");
	const char *update = getenv("UPDATE_TRANSCRIPTS");
	char path[512];
	size_t len = 0;
	char *want;
	bool same;

	snprintf(path, sizeof(path), "%s/%s.txt",
		 dir ? dir : "tests/unit/transcripts", name);
	if (update && !strcmp(update, "1")) {
		FILE *f = fopen(path, "wb");

		if (!f || fwrite(got->p, 1, got->len, f) != got->len) {
			fprintf(stderr, "cannot write %s\n", path);
			if (f)
				fclose(f);
			return false;
		}
		fclose(f);
		fprintf(stderr, "updated %s\n", path);
		return true;
	}
	want = read_file(path, &len);
	if (!want) {
		fprintf(stderr, "cannot read %s (run from the repository root)\n",
			path);
		return false;
	}
	same = len == got->len && !memcmp(want, got->p, len);
	if (!same)
		fprintf(stderr, "--- %s differs; got:\n%s--- expected:\n%s---\n",
			path, got->p, want);
	xfree(want);
	return same;
}

static int count_lines(const struct buf *b)
{
	int n = 0;

	for (size_t i = 0; i < b->len; i++)
		n += b->p[i] == '\n';
	return n;
}

static bool has(const struct buf *b, const char *needle)
{
	if (!strstr(b->p, needle)) {
		fprintf(stderr, "missing: %s\n", needle);
		return false;
	}
	return true;
}

/* Render both ways, compare the text, validate the JSON. */
static void check_case(const char *name, const struct status *s,
		       struct buf *text, struct buf *json)
{
	char why[128];

	CHECK_EQ_INT(status_render_text(s, text), 0);
	CHECK(transcript(name, text));
	CHECK(count_lines(text) <= 40);
	CHECK_EQ_INT(status_render_json(s, json), 0);
	CHECK(json->p && json_valid(json->p, json->len, why, sizeof(why)));
	CHECK(has(json, "\"running\":"));
	CHECK(has(json, "\"queue\":{"));
	CHECK(has(json, "\"health\":{"));
	CHECK(has(json, "\"inputs\":["));
	CHECK(has(json, "\"outputs\":["));
}

TEST(test_running_healthy)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	check_case("running_healthy", &s, &text, &json);
	CHECK(has(&text, "agentd 0.1.0 RUNNING  (pid 4242, up 2h03m)\n"));
	CHECK(has(&text, "\nOK: data is flowing\n"));
	CHECK(!strstr(text.p, "PROBLEM"));
	CHECK(has(&text, "(sha256 3f2a9c1b0d4e)\n"));
	CHECK(has(&text, "12.3 MiB of 256.0 MiB (4.8%)"));
	/* An old input error is shown but is not a current problem. */
	CHECK(has(&text, "last error 2h00m ago: timeout reading register 40001"));
	CHECK(has(&json, "\"backlog_records\":1234"));
	CHECK(has(&json, "\"ok\":true"));
	CHECK(has(&json, "\"rate\":12.5"));
	CHECK(has(&json, "\"config_hash\":\"3f2a9c1b0d4e77aa"));
	buf_release(&text);
	buf_release(&json);
}

TEST(test_output_disconnected)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	outputs[0].connected = false;
	snprintf(outputs[0].why, sizeof(outputs[0].why), "connection refused");
	outputs[0].last_ack_wall_ms = NOW - 5 * MIN - 12 * SEC;
	outputs[0].backlog_records = 4120;
	outputs[0].backlog_oldest_wall_ms = NOW - 5 * MIN - 14 * SEC;
	outputs[0].inflight_batches = 0;
	outputs[0].next_retry_in_ms = 7 * SEC;
	outputs[0].retries = 19;
	check_case("output_disconnected", &s, &text, &json);
	CHECK(has(&text, "PROBLEM: output lake not connected (last ack 5m12s ago): connection refused (is the broker running at 127.0.0.1:1883?)\n"));
	CHECK(has(&text, "DISCONNECTED: connection refused"));
	CHECK(has(&text, "next retry in 7s"));
	CHECK(!strstr(text.p, "OK:"));
	CHECK(has(&json, "\"ok\":false"));
	CHECK(has(&json, "\"connected\":false"));
	CHECK(has(&json, "\"why\":\"connection refused\""));
	buf_release(&text);
	buf_release(&json);

	/* A reason that carries its own hint does not get a second one. */
	snprintf(outputs[0].why, sizeof(outputs[0].why),
		 "connection refused (is the broker running at 127.0.0.1:1883?)");
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	REQUIRE(text.p);
	CHECK(has(&text, "connection refused (is the broker running at 127.0.0.1:1883?)\n"));
	CHECK(!strstr(text.p, "?) (is"));
	buf_release(&text);
}

/* What agentctl builds from the database when agentd is down. */
TEST(test_not_running)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	s.running = false;
	s.pid = 0;
	s.uptime_ms = 0;
	s.mem_bytes = 0;
	s.clock_synced = false;
	for (int i = 0; i < 2; i++) {
		struct status_input *in = &inputs[i];
		struct status_output *o = &outputs[i];

		in->records = in->bytes = in->dlq = in->duplicates = 0;
		in->rate = 0;
		in->last_read_wall_ms = 0;
		in->last_error[0] = '\0';
		in->last_error_wall_ms = 0;
		snprintf(in->state, sizeof(in->state), "agentd not running");
		o->endpoint[0] = '\0';
		o->connected = false;
		snprintf(o->why, sizeof(o->why), "agentd not running");
		o->last_ack_wall_ms = 0;
		o->inflight_batches = o->delivered_records = 0;
		o->delivered_batches = o->retries = o->dlq_records = 0;
		o->rate = 0;
	}
	outputs[0].backlog_oldest_wall_ms = NOW - 3 * 86400 * SEC - 4 * 3600 * SEC;
	check_case("not_running", &s, &text, &json);
	CHECK(has(&text, "agentd NOT RUNNING  (state read from /var/lib/agentd/queue.db)\n"));
	CHECK(has(&text, "PROBLEM: agentd is not running"));
	CHECK(has(&text, "backlog 34 records (~8.5 KiB on disk, oldest 3d04h)"));
	/* A stopped agent is one problem, not one per output. */
	CHECK(!strstr(text.p, "PROBLEM: output"));
	CHECK(has(&json, "\"running\":false"));
	buf_release(&text);
	buf_release(&json);
}

TEST(test_queue_full_blocked)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	s.on_full = ON_FULL_BLOCK;
	s.queue.full = true;
	s.queue.disk_bytes = 256LL * 1024 * 1024 + 40 * 1024;
	s.queue.records = 2000000;
	s.queue.oldest_wall_ms = NOW - 26 * 3600 * SEC;
	inputs[0].blocked = inputs[1].blocked = true;
	inputs[0].rate = inputs[1].rate = 0;
	inputs[0].last_read_wall_ms = NOW - 90 * SEC;
	outputs[1].backlog_records = 2000000;
	outputs[1].backlog_oldest_wall_ms = NOW - 26 * 3600 * SEC;
	snprintf(outputs[1].why, sizeof(outputs[1].why), "HTTP 503");
	check_case("queue_full_blocked", &s, &text, &json);
	CHECK(has(&text, "PROBLEM: queue full (256.0 MiB of 256.0 MiB), inputs blocked until outputs catch up\n"));
	CHECK(has(&text, "PROBLEM: output archive is falling behind: 2000000 records waiting, oldest 1d02h: HTTP 503\n"));
	CHECK(has(&text, "[BLOCKED: queue full]"));
	CHECK(has(&json, "\"blocked\":true"));
	CHECK(has(&json, "\"on_full\":\"block\""));
	CHECK(has(&json, "\"full\":true"));
	buf_release(&text);
	buf_release(&json);
}

TEST(test_corruption_recovered)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	s.uptime_ms = 42 * SEC;
	s.clock_synced = false;
	s.queue.recovered_at_ms = NOW - 41 * SEC;
	snprintf(s.queue.recovered_path, sizeof(s.queue.recovered_path),
		 "/var/lib/agentd/queue.db.corrupt-1714564759");
	s.queue.records = 12;
	s.queue.first_seq = 1;
	s.queue.last_seq = 12;
	s.queue.disk_bytes = 600;
	check_case("corruption_recovered", &s, &text, &json);
	CHECK(has(&text, "PROBLEM: queue file was corrupt and was replaced 41s ago; the old file is /var/lib/agentd/queue.db.corrupt-1714564759\n"));
	CHECK(has(&text, "RECOVERED from corruption 41s ago"));
	CHECK(has(&text, "clock      NOT synced: timestamps marked\n"));
	CHECK(has(&json, "\"recovered_at_ms\":1714564759000"));
	buf_release(&text);
	buf_release(&json);
}

/* A filesystem that reports no size (FUSE, some network filesystems):
 * its free space is unknown, and status says so instead of a budget cut. */
TEST(test_fs_without_size)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	s.queue.disk_size_unknown = true;
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	CHECK(has(&text, "filesystem reports no size: free space unknown, budget is max_bytes\n"));
	CHECK(!strstr(text.p, "budget cut"));
	CHECK_EQ_INT(status_render_json(&s, &json), 0);
	CHECK(has(&json, "\"disk_size_unknown\":true"));
	buf_release(&text);
	buf_release(&json);
}

/* Remote error texts and file names can hold anything; neither rendering
 * may pass control characters or invalid UTF-8 through. */
TEST(test_hostile_strings)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;
	char why[128];
	size_t off;

	base(&s);
	snprintf(inputs[0].last_error, sizeof(inputs[0].last_error),
		 "cannot open /var/log/\xff\xfe\n\x1b[2Jevil \"q\" \\");
	inputs[0].last_error_wall_ms = NOW - 3 * SEC;
	snprintf(outputs[0].why, sizeof(outputs[0].why), "caf\xc3\xa9 \xc3");
	outputs[0].connected = false;
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	CHECK_EQ_INT(status_render_json(&s, &json), 0);
	REQUIRE(text.p && json.p);
	CHECK(!strchr(text.p, '\x1b'));
	CHECK(utf8_valid(text.p, text.len, &off));
	CHECK(has(&text, "PROBLEM: input sensors: cannot open /var/log/??"));
	CHECK(has(&text, "caf\xc3\xa9 ?"));
	CHECK(json_valid(json.p, json.len, why, sizeof(why)));
	CHECK(has(&json, "evil \\\"q\\\" \\\\"));
	buf_release(&text);
	buf_release(&json);
}

TEST(test_no_memory)
{
	struct buf out = BUF_INIT;
	struct status s;
	int rc = 0;

	base(&s);
	/* Some allocation along the way fails: the renderer reports it. */
	for (long n = 0; n < 8; n++) {
		buf_release(&out);
		mem_fail_after(n);
		rc = status_render_json(&s, &out);
		mem_fail_after(-1);
		if (rc)
			break;
	}
	CHECK_EQ_INT(rc, -ENOMEM);
	buf_release(&out);
	mem_fail_after(0);
	rc = status_render_text(&s, &out);
	mem_fail_after(-1);
	CHECK_EQ_INT(rc, -ENOMEM);
	buf_release(&out);
}

static size_t mem_before;

/* The client certificate's dates: a line under its output, and a verdict
 * line when it is expired, not yet valid or within a month of its end. */
TEST(test_client_certificate)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;
	struct status_output *o = &outputs[0];

	base(&s);
	snprintf(o->cert_path, sizeof(o->cert_path), "/etc/agentd/gw-01.crt");
	o->cert_not_before_wall_ms = NOW - 10 * 24 * 60 * MIN;
	o->cert_not_after_wall_ms = NOW + 300LL * 24 * 60 * MIN + 90 * MIN; /* 2025-02-25 13:30 */
	check_case("client_cert_valid", &s, &text, &json);
	CHECK(has(&text, "client certificate /etc/agentd/gw-01.crt valid until 2025-02-25 13:30 UTC (300d01h left)\n"));
	CHECK(has(&text, "\nOK: data is flowing\n"));
	CHECK(!strstr(text.p, "WARNING"));
	CHECK(has(&json, "\"client_cert\":{\"path\":\"/etc/agentd/gw-01.crt\""));
	CHECK(has(&json, "\"not_after_wall_ms\":1740490200000"));
	buf_release(&text);
	buf_release(&json);

	o->cert_not_after_wall_ms = NOW + 12LL * 24 * 60 * MIN;
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	REQUIRE(text.p);
	CHECK(has(&text, "WARNING: output lake: client certificate /etc/agentd/gw-01.crt expires in 12d00h (2024-05-13 12:00 UTC); renew it\n"));
	CHECK(has(&text, "\nOK: data is flowing\n"));
	buf_release(&text);

	o->cert_not_after_wall_ms = NOW - 3LL * 24 * 60 * MIN;
	check_case("client_cert_expired", &s, &text, &json);
	CHECK(has(&text, "PROBLEM: output lake: client certificate /etc/agentd/gw-01.crt expired on 2024-04-28 12:00 UTC; the server will refuse it"));
	CHECK(has(&text, "client certificate /etc/agentd/gw-01.crt EXPIRED on 2024-04-28 12:00 UTC (3d00h ago)\n"));
	CHECK(!strstr(text.p, "OK:"));
	CHECK(has(&json, "\"ok\":false"));
	buf_release(&text);
	buf_release(&json);

	/* A gateway whose clock is behind sees its certificate as not yet valid. */
	o->cert_not_before_wall_ms = NOW + 400LL * 24 * 60 * MIN;
	o->cert_not_after_wall_ms = NOW + 800LL * 24 * 60 * MIN;
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	REQUIRE(text.p);
	CHECK(has(&text, "PROBLEM: output lake: client certificate /etc/agentd/gw-01.crt is not valid until 2025-06-05 12:00 UTC (is this gateway's clock right?)\n"));
	CHECK(has(&text, "NOT YET VALID: valid from 2025-06-05 12:00 UTC\n"));
	buf_release(&text);

	snprintf(o->cert_error, sizeof(o->cert_error), "cannot read /etc/agentd/gw-01.crt");
	CHECK_EQ_INT(status_render_text(&s, &text), 0);
	REQUIRE(text.p);
	CHECK(has(&text, "PROBLEM: output lake: client certificate /etc/agentd/gw-01.crt: cannot read /etc/agentd/gw-01.crt\n"));
	buf_release(&text);
}

/* Just started: the moving averages have not seen a full interval, so
 * the rates are the counts over the time since start, not "0.0 rec/s"
 * beside 2000 records. Once the warm-up is over, the averages again. */
TEST(test_rates_right_after_start)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	s.uptime_ms = 500;
	s.counting_ms = 500;
	inputs[0].records = 2000;
	inputs[0].rate = 0;
	inputs[1].records = 0;
	inputs[1].bytes = 0;
	inputs[1].rate = 0;
	outputs[0].delivered_records = 2000;
	outputs[0].delivered_batches = 1;
	outputs[0].rate = 0;
	outputs[1].delivered_records = 500;
	outputs[1].delivered_batches = 1;
	outputs[1].rate = 0;
	check_case("just_started", &s, &text, &json);
	CHECK(has(&text, "      4000.0 rec/s, 2000 records"));
	CHECK(has(&text, "      0.0 rec/s, 0 records"));
	CHECK(has(&text, "delivered 2000 records in 1 batch (4000.0 rec/s)"));
	CHECK(has(&text, "delivered 500 records in 1 batch (1000.0 rec/s)"));
	CHECK(has(&json, "\"rate\":4000"));
	buf_release(&text);
	buf_release(&json);

	CHECK(status_rate(0, 2000, 500) == 4000.0);
	CHECK(status_rate(3.5, 2000, STATUS_RATE_WARMUP_MS - 1) > 400.0);
	/* Warmed up, or no time known: the moving average as it is. */
	CHECK(status_rate(3.5, 2000, STATUS_RATE_WARMUP_MS) == 3.5);
	CHECK(status_rate(3.5, 2000, 0) == 3.5);

	base(&s);
	s.counting_ms = STATUS_RATE_WARMUP_MS;
	inputs[0].records = 2000;
	inputs[0].rate = 12.5;
	REQUIRE(status_render_text(&s, &text) == 0);
	CHECK(has(&text, "      12.5 rec/s, 2000 records"));
	buf_release(&text);
}

/* A device input: connected with counters, then not connected, which is
 * a PROBLEM line with the reason. */
TEST(test_device_inputs)
{
	struct buf text = BUF_INIT, json = BUF_INIT;
	struct status s;

	base(&s);
	inputs[1].device = true;
	inputs[1].connected = true;
	inputs[1].requests = 14400;
	inputs[1].errors[0] = 2;    /* timeout */
	inputs[1].errors[2] = 1;    /* crc */
	inputs[1].last_sample_age_ms = 400;
	inputs[1].missed_samples = 3;
	check_case("device_connected", &s, &text, &json);
	CHECK(has(&text, "      device connected\n      14400 requests, errors: 2 timeout, 1 crc; "
		  "last sample 0s ago; 3 samples skipped after stalls\n"));
	CHECK(has(&text, "\nOK: data is flowing\n"));
	CHECK(has(&json, "\"device\":{\"connected\":true,\"why\":\"\",\"requests\":14400,"
		  "\"errors\":{\"timeout\":2,\"exception\":0,\"crc\":1,\"protocol\":0,"
		  "\"connect\":0,\"io\":0,\"value\":0},\"last_sample_age_ms\":400,"
		  "\"missed_samples\":3}"));
	/* The tail input is no device: one device object only. */
	CHECK(strstr(strstr(json.p, "\"device\":{") + 1, "\"device\":{") == NULL);
	buf_reset(&text);
	buf_reset(&json);
	inputs[1].connected = false;
	snprintf(inputs[1].conn_why, sizeof(inputs[1].conn_why),
		 "connect 10.0.0.5:502: connection refused");
	inputs[1].errors[4] = 7;    /* connect */
	inputs[1].last_sample_age_ms = -1;
	inputs[1].missed_samples = 0;
	check_case("device_not_connected", &s, &text, &json);
	CHECK(has(&text, "PROBLEM: input plc: device not connected: connect 10.0.0.5:502: "
		  "connection refused"));
	CHECK(has(&text, "      device NOT CONNECTED: connect 10.0.0.5:502: connection refused\n"
		  "      14400 requests, errors: 2 timeout, 1 crc, 7 connect; no sample yet\n"));
	CHECK(has(&json, "\"last_sample_age_ms\":null"));
	buf_release(&text);
	buf_release(&json);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), mem_before);
}

int main(void)
{
	mem_before = mem_in_use();
	RUN(test_running_healthy);
	RUN(test_output_disconnected);
	RUN(test_not_running);
	RUN(test_queue_full_blocked);
	RUN(test_corruption_recovered);
	RUN(test_fs_without_size);
	RUN(test_hostile_strings);
	RUN(test_no_memory);
	RUN(test_client_certificate);
	RUN(test_rates_right_after_start);
	RUN(test_device_inputs);
	RUN(test_no_leaks);
	TEST_END();
}
