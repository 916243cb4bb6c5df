/* status.c - renders a status snapshot for people (one screen) and as JSON.
 *
 * Both renderings depend only on the struct: ages are measured against
 * s->now_wall_ms, never the clock, so the output can be compared byte for
 * byte in transcript tests.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "status.h"

/* Problems are listed one per line; more than this on one screen helps
 * nobody, and the JSON carries the same list. */
#define MAX_HEALTH 8
#define HEALTH_LEN 320

/* An output whose oldest unsent record is older than this while connected is
 * falling behind, not merely busy. */
#define BEHIND_MS (10 * 60 * 1000)
/* An input error older than this is history, not a current problem. */
#define INPUT_ERROR_FRESH_MS (5 * 60 * 1000)
/* Data counts as flowing when something moved this recently. */
#define FLOWING_MS (2 * 60 * 1000)
/* A client certificate this close to its end is flagged for renewal. */
#define CERT_RENEW_MS (30LL * 24 * 3600 * 1000)

struct health {
	char line[MAX_HEALTH][HEALTH_LEN];
	int n;
	bool ok;
};

/* Copy s for display: control characters and bytes that are not valid UTF-8
 * become '?', so a hostile file name or a remote's error text can neither
 * break the screen nor produce invalid JSON. */
static void clean(char *dst, size_t dstlen, const char *s)
{
	size_t len = strnlen(s, dstlen - 1), off = 0, bad;

	memcpy(dst, s, len);
	dst[len] = '\0';
	while (off < len && !utf8_valid(dst + off, len - off, &bad)) {
		dst[off + bad] = '?';
		off += bad + 1;
	}
	/* Truncation may have cut a multi-byte sequence; the loop above
	 * replaced its remaining bytes, which is what we want. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
			dst[i] = '?';
}

/* "0s", "42s", "5m12s", "2h03m", "3d04h". */
static void human_dur(char *dst, size_t len, int64_t ms)
{
	int64_t s = ms > 0 ? ms / 1000 : 0;

	if (s < 60)
		snprintf(dst, len, "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(dst, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(dst, len, "%" PRId64 "h%02" PRId64 "m", s / 3600,
			 s % 3600 / 60);
	else
		snprintf(dst, len, "%" PRId64 "d%02" PRId64 "h", s / 86400,
			 s % 86400 / 3600);
}

/* Age of a wall-clock stamp: "3s ago", or "never" for 0. */
static void human_age(char *dst, size_t len, const struct status *s,
		      int64_t wall_ms)
{
	char d[48];

	if (wall_ms <= 0) {
		snprintf(dst, len, "never");
		return;
	}
	human_dur(d, sizeof(d), s->now_wall_ms - wall_ms);
	snprintf(dst, len, "%s ago", d);
}

/* "512 B", "1.2 KiB", "12.3 MiB", "1.0 GiB". */
static void human_size(char *dst, size_t len, int64_t bytes)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		snprintf(dst, len, "%" PRId64 " B", bytes < 0 ? 0 : bytes);
		return;
	}
	while (v >= 1024.0 && u < 3) {
		v /= 1024.0;
		u++;
	}
	snprintf(dst, len, "%.1f %s", v, unit[u]);
}

/* "s" unless exactly one: "1 record", "2 records". */
static const char *pl(int64_t n)
{
	return n == 1 ? "" : "s";
}

/* "2027-03-01 12:00 UTC" */
static void human_date(char *dst, size_t len, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm)) {
		snprintf(dst, len, "?");
		return;
	}
	strftime(dst, len, "%Y-%m-%d %H:%M UTC", &tm);
}

static const char *on_full_name(int on_full)
{
	return on_full == ON_FULL_BLOCK ? "block" : "drop_oldest";
}

/* host:port out of an endpoint line such as "mqtt://127.0.0.1:1883 v5 ...";
 * empty when the line does not start with a URL. */
static void endpoint_host(char *dst, size_t len, const char *endpoint)
{
	const char *p = strstr(endpoint, "://"), *e;
	size_t n;

	dst[0] = '\0';
	if (!p)
		return;
	p += 3;
	e = p + strcspn(p, " /\t");
	n = (size_t)(e - p);
	if (n >= len)
		n = len - 1;
	memcpy(dst, p, n);
	dst[n] = '\0';
}

static bool contains(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

/* What a field engineer should check first for a connection failure. */
static void connect_hint(char *dst, size_t len, const char *why,
			 const char *host, const char *type)
{
	const char *server = !strcmp(type, "mqtt") ? "broker" : "server";

	if (contains(why, "refused"))
		snprintf(dst, len, "is the %s running at %s?", server,
			 host[0] ? host : "the configured address");
	else if (contains(why, "authori") || contains(why, "auth") ||
		 contains(why, "password") || contains(why, "forbidden") ||
		 contains(why, "401") || contains(why, "403"))
		snprintf(dst, len,
			 "check the credentials / client certificate in the config");
	else if (contains(why, "certif") || contains(why, "verif") ||
		 contains(why, "tls") || contains(why, "ssl") ||
		 contains(why, "handshake"))
		snprintf(dst, len,
			 "check ca_file, the server certificate and the clock");
	else if (contains(why, "resolv") || contains(why, "name") ||
		 contains(why, "dns"))
		snprintf(dst, len, "check the host name and DNS");
	else if (contains(why, "timed out") || contains(why, "timeout") ||
		 contains(why, "unreachable") || contains(why, "no route") ||
		 contains(why, "network"))
		snprintf(dst, len, "check the network link to %s",
			 host[0] ? host : "the server");
	else
		dst[0] = '\0';
}

static void health_add(struct health *h, bool problem, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void health_add(struct health *h, bool problem, const char *fmt, ...)
{
	va_list ap;

	if (problem)
		h->ok = false;
	if (h->n >= MAX_HEALTH)
		return;
	va_start(ap, fmt);
	vsnprintf(h->line[h->n], HEALTH_LEN, fmt, ap);
	va_end(ap);
	h->n++;
}

static void output_health(const struct status *s,
			  const struct status_output *o, struct health *h)
{
	char name[64], why[256], endpoint[256], host[64], hint[160];
	char age[80], buf[48];

	clean(name, sizeof(name), o->name);
	clean(why, sizeof(why), o->why);
	clean(endpoint, sizeof(endpoint), o->endpoint);
	endpoint_host(host, sizeof(host), endpoint);

	if (!o->connected) {
		/* Output types may already explain themselves "(...)". */
		if (strchr(why, '('))
			hint[0] = '\0';
		else
			connect_hint(hint, sizeof(hint), why, host, o->type);
		if (o->last_ack_wall_ms > 0) {
			human_dur(buf, sizeof(buf),
				  s->now_wall_ms - o->last_ack_wall_ms);
			snprintf(age, sizeof(age), "last ack %s ago", buf);
		} else {
			snprintf(age, sizeof(age), "never acknowledged");
		}
		health_add(h, true,
			   "PROBLEM: output %s not connected (%s): %s%s%s%s", name,
			   age, why[0] ? why : "no reason reported",
			   hint[0] ? " (" : "", hint, hint[0] ? ")" : "");
		return;
	}
	if (o->backlog_records > 0 && o->backlog_oldest_wall_ms > 0 &&
	    s->now_wall_ms - o->backlog_oldest_wall_ms > BEHIND_MS) {
		human_dur(buf, sizeof(buf),
			  s->now_wall_ms - o->backlog_oldest_wall_ms);
		health_add(h, true,
			   "PROBLEM: output %s is falling behind: %" PRId64
			   " record%s waiting, oldest %s%s%s",
			   name, o->backlog_records, pl(o->backlog_records), buf, why[0] ? ": " : "",
			   why);
	}
}

/* Client certificates: expired or not yet valid is a problem (the server
 * refuses the connection); a month from its end is a warning. */
static void cert_health(const struct status *s, const struct status_output *o,
			struct health *h)
{
	char name[64], path[256], date[48], left[48], err[160];

	if (!o->cert_path[0])
		return;
	clean(name, sizeof(name), o->name);
	clean(path, sizeof(path), o->cert_path);
	if (o->cert_error[0]) {
		clean(err, sizeof(err), o->cert_error);
		health_add(h, true, "PROBLEM: output %s: client certificate %s: %s", name, path,
			   err);
		return;
	}
	if (o->cert_not_after_wall_ms <= s->now_wall_ms) {
		human_date(date, sizeof(date), o->cert_not_after_wall_ms);
		health_add(h, true,
			   "PROBLEM: output %s: client certificate %s expired on %s; the server will refuse it (install a renewed one, then agentctl reload)",
			   name, path, date);
	} else if (o->cert_not_before_wall_ms > s->now_wall_ms) {
		human_date(date, sizeof(date), o->cert_not_before_wall_ms);
		health_add(h, true,
			   "PROBLEM: output %s: client certificate %s is not valid until %s (is this gateway's clock right?)",
			   name, path, date);
	} else if (o->cert_not_after_wall_ms - s->now_wall_ms < CERT_RENEW_MS) {
		human_date(date, sizeof(date), o->cert_not_after_wall_ms);
		human_dur(left, sizeof(left), o->cert_not_after_wall_ms - s->now_wall_ms);
		health_add(h, false,
			   "WARNING: output %s: client certificate %s expires in %s (%s); renew it",
			   name, path, left, date);
	}
}

/* The verdict lines under the title, shared by both renderings. */
static void health_eval(const struct status *s, struct health *h)
{
	const struct queue_stats *q = &s->queue;
	char buf[80], path[256], size[48], size2[48];
	int64_t last_move = 0;

	memset(h, 0, sizeof(*h));
	h->ok = true;

	if (!s->running) {
		health_add(h, true,
			   "PROBLEM: agentd is not running; nothing is collected or sent (start it: systemctl start agentd)");
	}
	if (q->recovered_at_ms) {
		human_age(buf, sizeof(buf), s, q->recovered_at_ms);
		clean(path, sizeof(path), q->recovered_path);
		health_add(h, true,
			   "PROBLEM: queue file was corrupt and was replaced %s; the old file is %s",
			   buf, path[0] ? path : "(unknown)");
	}
	if (q->full) {
		human_size(size, sizeof(size), q->disk_bytes);
		human_size(size2, sizeof(size2), q->max_bytes);
		if (s->on_full == ON_FULL_BLOCK)
			health_add(h, true,
				   "PROBLEM: queue full (%s of %s), inputs blocked until outputs catch up",
				   size, size2);
		else
			health_add(h, true,
				   "PROBLEM: queue full (%s of %s), oldest records are being dropped (%" PRId64 " so far)",
				   size, size2, q->evicted_records);
	}
	for (int i = 0; s->running && i < s->n_outputs; i++)
		output_health(s, &s->outputs[i], h);
	for (int i = 0; i < s->n_outputs; i++)
		cert_health(s, &s->outputs[i], h);
	for (int i = 0; s->running && i < s->n_inputs; i++) {
		const struct status_input *in = &s->inputs[i];
		char name[64], err[256];

		if (in->last_read_wall_ms > last_move)
			last_move = in->last_read_wall_ms;
		if (in->device && !in->connected) {
			clean(name, sizeof(name), in->name);
			clean(err, sizeof(err), in->conn_why);
			health_add(h, true, "PROBLEM: input %s: device not connected: %s", name,
				   err[0] ? err : "not yet");
			continue;
		}
		if (!in->last_error[0] ||
		    s->now_wall_ms - in->last_error_wall_ms > INPUT_ERROR_FRESH_MS)
			continue;
		clean(name, sizeof(name), in->name);
		clean(err, sizeof(err), in->last_error);
		human_age(buf, sizeof(buf), s, in->last_error_wall_ms);
		health_add(h, true, "PROBLEM: input %s: %s (%s)", name, err, buf);
	}
	if (!h->ok)
		return;

	for (int i = 0; i < s->n_outputs; i++)
		if (s->outputs[i].last_ack_wall_ms > last_move)
			last_move = s->outputs[i].last_ack_wall_ms;
	if (last_move && s->now_wall_ms - last_move <= FLOWING_MS) {
		health_add(h, false, "OK: data is flowing");
	} else if (last_move) {
		human_dur(buf, sizeof(buf), s->now_wall_ms - last_move);
		health_add(h, false, "OK: running, idle (no new data for %s)",
			   buf);
	} else {
		health_add(h, false, "OK: running, no data read yet");
	}
}

double status_rate(double avg, int64_t count, int64_t counting_ms)
{
	if (counting_ms <= 0 || counting_ms >= STATUS_RATE_WARMUP_MS)
		return avg;
	return (double)count * 1000.0 / (double)counting_ms;
}

const char *const status_err_names[STATUS_ERR_KINDS] = {
	"timeout", "exception", "crc", "protocol", "connect", "io", "value",
};

/* "device connected" (or why not), then
 * "120 requests, errors: 2 timeout, 1 crc; last sample 1s ago". */
static int render_device(const struct status_input *in, struct buf *out)
{
	char why[160], age[48];
	bool any = false;
	int rc;

	clean(why, sizeof(why), in->conn_why);
	if (in->connected)
		rc = buf_adds(out, "      device connected");
	else
		rc = buf_printf(out, "      device NOT CONNECTED: %s", why[0] ? why : "not yet");
	rc |= buf_printf(out, "\n      %" PRId64 " request%s", in->requests, pl(in->requests));
	for (int k = 0; k < STATUS_ERR_KINDS; k++) {
		if (!in->errors[k])
			continue;
		rc |= buf_printf(out, "%s %" PRId64 " %s", any ? "," : ", errors:", in->errors[k],
				 status_err_names[k]);
		any = true;
	}
	if (!any)
		rc |= buf_adds(out, ", no errors");
	if (in->last_sample_age_ms < 0) {
		rc |= buf_adds(out, "; no sample yet");
	} else {
		human_dur(age, sizeof(age), in->last_sample_age_ms);
		rc |= buf_printf(out, "; last sample %s ago", age);
	}
	if (in->missed_samples)
		rc |= buf_printf(out, "; %" PRId64 " sample%s skipped after stalls", in->missed_samples,
				 pl(in->missed_samples));
	rc |= buf_addc(out, '\n');
	return rc ? -ENOMEM : 0;
}

static int render_inputs(const struct status *s, struct buf *out)
{
	char name[64], drv[32], state[128], err[256], age[80], size[48];
	int rc = 0;

	if (s->n_inputs == 0)
		return buf_adds(out, "inputs: none configured\n");
	rc |= buf_printf(out, "inputs (%d):\n", s->n_inputs);
	for (int i = 0; i < s->n_inputs; i++) {
		const struct status_input *in = &s->inputs[i];

		clean(name, sizeof(name), in->name);
		clean(drv, sizeof(drv), in->driver);
		clean(state, sizeof(state), in->state);
		rc |= buf_printf(out, "  %-12s %-8s %s%s\n", name, drv,
				 state[0] ? state : "-",
				 in->blocked ? "  [BLOCKED: queue full]" : "");
		if (!s->running)
			continue;
		human_age(age, sizeof(age), s, in->last_read_wall_ms);
		human_size(size, sizeof(size), in->bytes);
		rc |= buf_printf(out,
				 "      %.1f rec/s, %" PRId64 " record%s (%s), last read %s, dlq %" PRId64 ", duplicates %" PRId64 "\n",
				 status_rate(in->rate, in->records, s->counting_ms), in->records,
				 pl(in->records), size, age, in->dlq,
				 in->duplicates);
		if (in->device)
			rc |= render_device(in, out);
		if (in->last_error[0]) {
			clean(err, sizeof(err), in->last_error);
			human_age(age, sizeof(age), s, in->last_error_wall_ms);
			rc |= buf_printf(out, "      last error %s: %s\n", age,
					 err);
		}
	}
	return rc ? -ENOMEM : 0;
}

/* "client certificate PATH valid until DATE (300d left)". */
static int render_cert(const struct status *s, const struct status_output *o, struct buf *out)
{
	char path[256], date[48], dur[48], err[160];

	if (!o->cert_path[0])
		return 0;
	clean(path, sizeof(path), o->cert_path);
	if (o->cert_error[0]) {
		clean(err, sizeof(err), o->cert_error);
		return buf_printf(out, "      client certificate %s: %s\n", path, err);
	}
	if (o->cert_not_after_wall_ms <= s->now_wall_ms) {
		human_date(date, sizeof(date), o->cert_not_after_wall_ms);
		human_dur(dur, sizeof(dur), s->now_wall_ms - o->cert_not_after_wall_ms);
		return buf_printf(out, "      client certificate %s EXPIRED on %s (%s ago)\n", path,
				  date, dur);
	}
	if (o->cert_not_before_wall_ms > s->now_wall_ms) {
		human_date(date, sizeof(date), o->cert_not_before_wall_ms);
		return buf_printf(out, "      client certificate %s NOT YET VALID: valid from %s\n",
				  path, date);
	}
	human_date(date, sizeof(date), o->cert_not_after_wall_ms);
	human_dur(dur, sizeof(dur), o->cert_not_after_wall_ms - s->now_wall_ms);
	return buf_printf(out, "      client certificate %s valid until %s (%s left)\n", path, date,
			  dur);
}

static int render_outputs(const struct status *s, struct buf *out)
{
	char name[64], type[32], endpoint[256], why[256], age[80], dur[48];
	int rc = 0;

	if (s->n_outputs == 0)
		return buf_adds(out, "outputs: none configured\n");
	rc |= buf_printf(out, "outputs (%d):\n", s->n_outputs);
	for (int i = 0; i < s->n_outputs; i++) {
		const struct status_output *o = &s->outputs[i];

		clean(name, sizeof(name), o->name);
		clean(type, sizeof(type), o->type);
		clean(endpoint, sizeof(endpoint), o->endpoint);
		clean(why, sizeof(why), o->why);
		rc |= buf_printf(out, "  %-12s %-8s %s\n", name, type,
				 endpoint[0] ? endpoint : "-");

		human_age(age, sizeof(age), s, o->last_ack_wall_ms);
		if (!s->running)
			rc |= buf_printf(out, "      not connected (agentd not running), last ack %s\n",
					 age);
		else if (o->connected)
			rc |= buf_printf(out, "      CONNECTED, last ack %s%s%s\n",
					 age, why[0] ? ", last failure: " : "",
					 why);
		else
			rc |= buf_printf(out, "      DISCONNECTED: %s, last ack %s\n",
					 why[0] ? why : "no reason reported",
					 age);

		if (o->backlog_records > 0 && o->backlog_oldest_wall_ms > 0) {
			char size[32];

			human_dur(dur, sizeof(dur),
				  s->now_wall_ms - o->backlog_oldest_wall_ms);
			human_size(size, sizeof(size), o->backlog_bytes);
			rc |= buf_printf(out, "      backlog %" PRId64 " record%s (~%s on disk, oldest %s)",
					 o->backlog_records,
					 pl(o->backlog_records), size, dur);
		} else {
			rc |= buf_printf(out, "      backlog %" PRId64 " record%s",
					 o->backlog_records,
					 pl(o->backlog_records));
		}
		rc |= buf_printf(out, ", in flight %" PRId64 " batch%s",
				 o->inflight_batches,
				 o->inflight_batches == 1 ? "" : "es");
		if (o->next_retry_in_ms >= 0) {
			human_dur(dur, sizeof(dur), o->next_retry_in_ms);
			rc |= buf_printf(out, ", next retry in %s", dur);
		}
		rc |= buf_addc(out, '\n');
		rc |= render_cert(s, o, out);
		if (!s->running)
			continue;
		rc |= buf_printf(out,
				 "      delivered %" PRId64 " record%s in %" PRId64 " batch%s (%.1f rec/s), dlq %" PRId64 ", retries %" PRId64 "\n",
				 o->delivered_records, pl(o->delivered_records),
				 o->delivered_batches,
				 o->delivered_batches == 1 ? "" : "es",
				 status_rate(o->rate, o->delivered_records, s->counting_ms),
				 o->dlq_records, o->retries);
	}
	return rc ? -ENOMEM : 0;
}

int status_render_text(const struct status *s, struct buf *out)
{
	const struct queue_stats *q = &s->queue;
	struct health h;
	char a[256], b[80], c[48], d[48];
	int rc = 0;

	health_eval(s, &h);

	clean(a, sizeof(a), s->version);
	if (s->running) {
		human_dur(c, sizeof(c), s->uptime_ms);
		rc |= buf_printf(out, "agentd %s RUNNING  (pid %d, up %s)\n", a,
				 s->pid, c);
	} else {
		clean(a, sizeof(a), s->state_dir);
		rc |= buf_printf(out, "agentd NOT RUNNING  (state read from %s/queue.db)\n",
				 a);
	}
	for (int i = 0; i < h.n; i++)
		rc |= buf_printf(out, "%s\n", h.line[i]);
	rc |= buf_addc(out, '\n');

	clean(a, sizeof(a), s->config_path);
	clean(b, sizeof(b), s->config_hash);
	b[12 < strlen(b) ? 12 : strlen(b)] = '\0';
	rc |= buf_printf(out, "config     %s  (sha256 %s)\n", a[0] ? a : "-",
			 b[0] ? b : "-");
	clean(a, sizeof(a), s->agent_id);
	rc |= buf_printf(out, "agent id   %s\n", a[0] ? a : "-");
	if (!s->running)
		rc |= buf_adds(out, "clock      unknown (agentd not running)\n");
	else if (s->clock_synced)
		rc |= buf_adds(out, "clock      synced\n");
	else
		rc |= buf_adds(out, "clock      NOT synced: timestamps marked\n");
	if (s->running) {
		human_size(c, sizeof(c), s->mem_bytes);
		rc |= buf_printf(out, "memory     %s\n", c);
	}

	human_size(c, sizeof(c), q->disk_bytes);
	if (q->max_bytes > 0) {
		human_size(d, sizeof(d), q->max_bytes);
		rc |= buf_printf(out, "queue      %s of %s (%.1f%%)%s%s, on full: %s\n",
				 c, d, 100.0 * (double)q->disk_bytes /
				 (double)q->max_bytes, q->full ? " FULL" : "",
				 q->disk_limited ? " (budget cut to the free disk space)" : "",
				 on_full_name(s->on_full));
	} else {
		rc |= buf_printf(out, "queue      %s (no disk budget)\n", c);
	}
	if (q->disk_size_unknown)
		rc |= buf_adds(out, "           filesystem reports no size: free space unknown, budget is max_bytes\n");
	human_age(b, sizeof(b), s, q->oldest_wall_ms);
	if (q->records > 0)
		rc |= buf_printf(out, "           %" PRId64 " record%s (seq %" PRId64 "..%" PRId64 "), oldest written %s\n",
				 q->records, pl(q->records), q->first_seq, q->last_seq, b);
	else
		rc |= buf_adds(out, "           0 records (empty)\n");
	rc |= buf_printf(out, "           dead-letter %" PRId64 " record%s, evicted %" PRId64 " record%s\n",
			 q->dlq_records, pl(q->dlq_records), q->evicted_records,
			 pl(q->evicted_records));
	if (q->recovered_at_ms) {
		human_age(b, sizeof(b), s, q->recovered_at_ms);
		clean(a, sizeof(a), q->recovered_path);
		rc |= buf_printf(out, "           RECOVERED from corruption %s; old file kept at %s\n",
				 b, a[0] ? a : "(unknown)");
	}
	rc |= buf_addc(out, '\n');
	if (rc)
		return -ENOMEM;
	rc = render_inputs(s, out);
	if (!rc)
		rc = buf_addc(out, '\n');
	if (!rc)
		rc = render_outputs(s, out);
	return rc ? -ENOMEM : 0;
}

/* jw_str() wants valid UTF-8; everything in the struct is cleaned first. */
static void jw_cstr(struct status_buf *w, const char *key, const char *val)
{
	char tmp[512];

	clean(tmp, sizeof(tmp), val);
	jw_str(w, key, tmp);
}

static void json_queue(struct status_buf *w, const struct status *s)
{
	const struct queue_stats *q = &s->queue;

	jw_obj_begin(w, "queue");
	jw_int(w, "records", q->records);
	jw_int(w, "first_seq", q->first_seq);
	jw_int(w, "last_seq", q->last_seq);
	jw_int(w, "oldest_wall_ms", q->oldest_wall_ms);
	jw_int(w, "disk_bytes", q->disk_bytes);
	jw_int(w, "max_bytes", q->max_bytes);
	jw_bool(w, "disk_limited", q->disk_limited);
	jw_bool(w, "disk_size_unknown", q->disk_size_unknown);
	jw_int(w, "dlq_records", q->dlq_records);
	jw_int(w, "evicted_records", q->evicted_records);
	jw_bool(w, "full", q->full);
	jw_str(w, "on_full", on_full_name(s->on_full));
	jw_int(w, "recovered_at_ms", q->recovered_at_ms);
	jw_cstr(w, "recovered_path", q->recovered_path);
	jw_obj_end(w);
}

static void json_inputs(struct status_buf *w, const struct status *s)
{
	jw_arr_begin(w, "inputs");
	for (int i = 0; i < s->n_inputs; i++) {
		const struct status_input *in = &s->inputs[i];

		jw_obj_begin(w, NULL);
		jw_cstr(w, "name", in->name);
		jw_cstr(w, "driver", in->driver);
		jw_cstr(w, "stream", in->stream);
		jw_cstr(w, "state", in->state);
		jw_cstr(w, "last_error", in->last_error);
		jw_int(w, "last_error_wall_ms", in->last_error_wall_ms);
		jw_int(w, "records", in->records);
		jw_int(w, "bytes", in->bytes);
		jw_int(w, "dlq", in->dlq);
		jw_int(w, "duplicates", in->duplicates);
		jw_double(w, "rate", status_rate(in->rate, in->records, s->counting_ms));
		jw_int(w, "last_read_wall_ms", in->last_read_wall_ms);
		jw_bool(w, "blocked", in->blocked);
		if (in->device) {
			jw_obj_begin(w, "device");
			jw_bool(w, "connected", in->connected);
			jw_cstr(w, "why", in->conn_why);
			jw_int(w, "requests", in->requests);
			jw_obj_begin(w, "errors");
			for (int k = 0; k < STATUS_ERR_KINDS; k++)
				jw_int(w, status_err_names[k], in->errors[k]);
			jw_obj_end(w);
			if (in->last_sample_age_ms < 0)
				jw_null(w, "last_sample_age_ms");
			else
				jw_int(w, "last_sample_age_ms", in->last_sample_age_ms);
			jw_int(w, "missed_samples", in->missed_samples);
			jw_obj_end(w);
		}
		jw_obj_end(w);
	}
	jw_arr_end(w);
}

static void json_outputs(struct status_buf *w, const struct status *s)
{
	jw_arr_begin(w, "outputs");
	for (int i = 0; i < s->n_outputs; i++) {
		const struct status_output *o = &s->outputs[i];

		jw_obj_begin(w, NULL);
		jw_cstr(w, "name", o->name);
		jw_cstr(w, "type", o->type);
		jw_cstr(w, "endpoint", o->endpoint);
		jw_bool(w, "connected", o->connected);
		jw_cstr(w, "why", o->why);
		jw_int(w, "last_ack_wall_ms", o->last_ack_wall_ms);
		jw_int(w, "cursor", o->cursor);
		jw_int(w, "backlog_records", o->backlog_records);
		jw_int(w, "backlog_bytes", o->backlog_bytes);
		jw_int(w, "backlog_oldest_wall_ms", o->backlog_oldest_wall_ms);
		jw_int(w, "inflight_batches", o->inflight_batches);
		jw_int(w, "delivered_records", o->delivered_records);
		jw_int(w, "delivered_batches", o->delivered_batches);
		jw_int(w, "dlq_records", o->dlq_records);
		jw_int(w, "retries", o->retries);
		jw_int(w, "next_retry_in_ms", o->next_retry_in_ms);
		jw_double(w, "rate", status_rate(o->rate, o->delivered_records, s->counting_ms));
		if (o->cert_path[0]) {
			jw_obj_begin(w, "client_cert");
			jw_cstr(w, "path", o->cert_path);
			jw_int(w, "not_before_wall_ms", o->cert_not_before_wall_ms);
			jw_int(w, "not_after_wall_ms", o->cert_not_after_wall_ms);
			jw_cstr(w, "error", o->cert_error);
			jw_obj_end(w);
		}
		jw_obj_end(w);
	}
	jw_arr_end(w);
}

int status_render_json(const struct status *s, struct buf *out)
{
	struct status_buf w;
	struct health h;
	int rc;

	health_eval(s, &h);
	jw_init(&w);
	jw_obj_begin(&w, NULL);
	jw_bool(&w, "running", s->running);
	jw_cstr(&w, "version", s->version);
	jw_int(&w, "pid", s->pid);
	jw_int(&w, "now_wall_ms", s->now_wall_ms);
	jw_int(&w, "uptime_ms", s->uptime_ms);
	jw_cstr(&w, "agent_id", s->agent_id);
	jw_cstr(&w, "config_path", s->config_path);
	jw_cstr(&w, "config_hash", s->config_hash);
	jw_cstr(&w, "state_dir", s->state_dir);
	jw_bool(&w, "clock_synced", s->clock_synced);
	jw_int(&w, "mem_bytes", s->mem_bytes);
	jw_obj_begin(&w, "health");
	jw_bool(&w, "ok", h.ok);
	jw_arr_begin(&w, "lines");
	for (int i = 0; i < h.n; i++)
		jw_cstr(&w, NULL, h.line[i]);
	jw_arr_end(&w);
	jw_obj_end(&w);
	json_queue(&w, s);
	json_inputs(&w, s);
	json_outputs(&w, s);
	jw_obj_end(&w);

	rc = jw_finish(&w);
	if (!rc)
		rc = buf_add(out, w.b.p, w.b.len);
	if (!rc)
		rc = buf_addc(out, '\n');
	buf_release(&w.b);
	return rc;
}
