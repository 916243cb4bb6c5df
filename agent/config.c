/* config.c - strict loading of the one configuration format (see config.h).
 *
 * A file is read whole, split into sections of key = value lines, and each
 * section is checked against its key table. Input and output sections are
 * checked in two steps because the `driver` / `type` key, which may come on
 * any line, decides which further keys are allowed. Values are parsed in
 * config_value.c, the reference is printed by config_ref.c.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "config.h"
#include "config_int.h"
#include "driver.h"
#include "log.h"
#include "mem.h"
#include "output.h"

#define MAX_CONFIG_BYTES (1 << 20)

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const on_full_names[] = { "drop_oldest", "block", NULL };
static const char *const sync_names[] = { "off", "normal", "full", NULL };
static const char *const parser_names[] = { "raw", "json", "csv", "nmea", "influx", NULL };

#define AK(f) offsetof(struct agent_conf, f)
const struct cfg_key config_agent_keys[] = {
	{ "id", CFG_STR, NULL, AK(id),
	  "Agent id carried in every record and topic. Letters, digits, '-', '_' and '.'; default: the host name." },
	{ "state_dir", CFG_STR, "/var/lib/agentd", AK(state_dir),
	  "Directory holding the queue database (queue.db) and the control socket. Must be on persistent storage." },
	{ "control_socket", CFG_STR, NULL, AK(control_socket),
	  "Path of the control socket agentctl talks to; default: <state_dir>/agentd.sock." },
	{ "log_level", CFG_ENUM, "info", AK(log_level),
	  "How much agentd logs to standard error: error, warn, info or debug.", log_levels },
	{ "trust_clock", CFG_BOOL, "false", AK(trust_clock),
	  "Treat the wall clock as correct even when the kernel says it is not synchronised (no NTP). "
	  "When false, records taken while the clock is unsynchronised carry \"clock\":\"unsynced\"." },
	{ NULL },
};

#define QK(f) offsetof(struct queue_conf, f)
const struct cfg_key config_queue_keys[] = {
	{ "max_bytes", CFG_SIZE, "1GiB", QK(max_bytes),
	  "Disk budget for the queue (database plus write-ahead log). When it is reached, on_full decides. "
	  "If the filesystem has less room, the budget is what fits, keeping 2 MiB free.",
	  NULL, 1 << 20, 0 },
	{ "on_full", CFG_ENUM, "drop_oldest", QK(on_full),
	  "What happens when the disk budget is reached: drop_oldest evicts the oldest records and ships a gap "
	  "marker saying which seq range was lost; block stops reading inputs (a tailed file simply waits) until "
	  "outputs catch up, losing nothing but letting sources back up.", on_full_names },
	{ "commit_interval", CFG_DURATION, "20ms", QK(commit_interval_ms),
	  "Longest time an accepted record waits before its transaction commits. Records are only acknowledged "
	  "to sources and shipped after the commit.", NULL, 1, 10000 },
	{ "commit_records", CFG_INT, "5000", QK(commit_records),
	  "Commit as soon as this many records are pending, even before commit_interval.", NULL, 1, 1000000 },
	{ "synchronous", CFG_ENUM, "full", QK(synchronous),
	  "Durability of each commit; whatever the level, a seq (and a batch id) is never given twice "
	  "(docs/reliability.md). full: every commit is fsynced; a power cut loses nothing that was accepted "
	  "(measured: no committed record lost in 1600 simulated cuts). normal: fsync only at checkpoints; "
	  "several times faster on SD cards, but a power cut can take back the commits since the last "
	  "checkpoint, records the outputs may already have shipped (3% of them in the simulation): "
	  "lines of tailed files are read again, since the file position rolls back with them, and reach the "
	  "lake again under new seqs with the same key; records from sources that were already acknowledged "
	  "are lost, and reach the lake only if they were shipped before the cut. off: no fsync of the "
	  "database at all; a power cut can also damage the queue file (it is then moved aside and a fresh "
	  "one started, whose seqs go on above the old ones).", sync_names },
	{ "max_record_bytes", CFG_SIZE, "64KiB", QK(max_record_bytes),
	  "Largest record accepted. A longer record (for example a line) goes to the dead-letter queue whole, "
	  "with the reason; it is never cut.", NULL, 16, 64 << 20 },
	{ "dedupe_window", CFG_INT, "16384", QK(dedupe_window),
	  "A record whose dedupe key is among the keys of this many newest records is refused as a duplicate "
	  "(counted, not stored); the window is rebuilt from the queue at start. Costs about 20 bytes of memory "
	  "per record.", NULL, 1, 1 << 24 },
	{ NULL },
};

#define IK(f) offsetof(struct input_conf, f)
const struct cfg_key config_input_keys[] = {
	{ "driver", CFG_STR, NULL, IK(driver),
	  "Which input driver reads this source (see the driver keys below).", NULL, 0, 0, true },
	{ "stream", CFG_STR, NULL, IK(stream),
	  "Stream name carried by this input's records and used in topics; default: the input's name." },
	{ "parser", CFG_ENUM, "raw", IK(parser),
	  "How a record's bytes become its data: raw (a JSON string of the text), json (validated JSON, "
	  "shipped unchanged), csv (an object built from the file's header line), nmea (an NMEA 0183 "
	  "sentence with a valid checksum, as an object of its fields and decoded values) or influx (an "
	  "InfluxDB line protocol line as an object of measurement, tags, fields and time). Records that do not "
	  "parse go to the dead-letter queue with the reason. Drivers whose records are structured "
	  "(built field by field) take no parser.", parser_names },
	{ "max_record_bytes", CFG_SIZE, "0", IK(max_record_bytes),
	  "Per-input override of queue max_record_bytes; 0 uses the queue's value.", NULL, 0, 64 << 20 },
	{ NULL },
};

#define OK_(f) offsetof(struct output_conf, f)
const struct cfg_key config_output_keys[] = {
	{ "type", CFG_STR, NULL, OK_(type),
	  "Which output sends the batches (see the output keys below).", NULL, 0, 0, true },
	{ "streams", CFG_STR, "*", OK_(streams),
	  "Which streams this output receives: comma-separated glob patterns of stream names "
	  "(e.g. sensors,plant-*). A record leaves the queue once every output it is routed to has "
	  "delivered or dead-lettered it. Gap markers go to every output." },
	{ "batch_max_records", CFG_INT, "5000", OK_(batch_max_records),
	  "Most records in one batch.", NULL, 1, 1000000 },
	{ "batch_max_bytes", CFG_SIZE, "256KiB", OK_(batch_max_bytes),
	  "Most uncompressed bytes (NDJSON) in one batch; a single larger record travels alone.",
	  NULL, 1024, 256 << 20 },
	{ "linger", CFG_DURATION, "500ms", OK_(linger_ms),
	  "How long a batch that is not full waits for more records before it is sent.", NULL, 0, 3600000 },
	{ "max_inflight", CFG_INT, "4", OK_(max_inflight),
	  "Batches sent and not yet acknowledged, at most. Bounds memory and duplicates after a failure.",
	  NULL, 1, 64 },
	{ "retry_base", CFG_DURATION, "1s", OK_(retry_base_ms),
	  "First retry delay after a transient failure; it doubles on each further failure, with jitter.",
	  NULL, 10, 3600000 },
	{ "retry_max", CFG_DURATION, "5m", OK_(retry_max_ms),
	  "Longest retry delay.", NULL, 10, 86400000 },
	{ "retry_probe", CFG_DURATION, "1s", OK_(retry_probe_ms),
	  "While backed off, how often a TCP connect to the endpoint (no request; for mqtt the "
	  "reconnect attempt itself) checks whether it is back. Once a connect succeeds after the "
	  "endpoint could not be reached, the backlog is sent at once; a server that answers with "
	  "an error (HTTP 503, a refused CONNACK) gets the full backoff. 0 turns the check off.",
	  NULL, 0, 3600000 },
	{ "compression_level", CFG_INT, "3", OK_(compression_level),
	  "zstd level for batch bodies (1 fastest ... 19 smallest).", NULL, 1, 19 },
	{ NULL },
};

struct entry {
	const char *key;
	const char *value;      /* trimmed, unquoted, without a trailing comment */
	const char *raw;        /* the text after '=' as written: a table's row */
	int line;
	bool used;
};

struct section {
	char kind[16];
	char name[64];
	int line;
	struct entry *e;
	size_t n, cap;
};

struct parser_state {
	const char *file;
	char *err;
	size_t errlen;
};

static const char *entry_value(const struct section *s, const char *key);
static const struct entry *find_entry(const struct section *s, const char *key);
static int fail(struct parser_state *ps, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct parser_state *ps, int line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (line > 0)
		n = snprintf(ps->err, ps->errlen, "%s:%d: ", ps->file, line);
	else
		n = snprintf(ps->err, ps->errlen, "%s: ", ps->file);
	if (n < 0 || (size_t)n >= ps->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}


/* Memory ran short while the file was read: that says nothing about the
 * file, so it must never look like a verdict on it. */
static int oom(struct parser_state *ps)
{
	snprintf(ps->err, ps->errlen, "%s: out of memory: the configuration could not be checked; "
		 "try again", ps->file);
	return -ENOMEM;
}


static const char *section_title(const struct section *s, char *out, size_t len)
{
	if (!s->kind[0]) /* cfg_parse_section()'s body without a header */
		snprintf(out, len, "the section");
	else
		snprintf(out, len, "[%s%s%s]", s->kind, s->name[0] ? " " : "", s->name);
	return out;
}

/* Apply every entry of s that the table knows; mark it used. */
static int apply(struct parser_state *ps, struct section *s, const struct cfg_key *keys, void *base)
{
	char msg[512], title[96];

	for (size_t i = 0; i < s->n; i++) {
		const struct cfg_key *k = cfg_find_key(keys, s->e[i].key);
		const struct entry *first;
		bool multi;
		int rc;

		if (!k)
			continue;
		multi = k->type == CFG_LIST || k->type == CFG_TABLE;
		first = find_entry(s, k->name);
		if (first != &s->e[i] && !multi)
			return fail(ps, s->e[i].line, "key '%s' set twice (first on line %d)", k->name,
				    first->line);
		/* The lines of a list or table replace its default. */
		if (first == &s->e[i] && multi)
			cfg_release_key(k, base);
		rc = cfg_set(k, base, k->type == CFG_TABLE ? s->e[i].raw : s->e[i].value, msg, sizeof(msg));
		if (rc == -ENOMEM)
			return oom(ps);
		if (rc)
			return fail(ps, s->e[i].line, "key '%s': %s", k->name, msg);
		s->e[i].used = true;
	}
	for (const struct cfg_key *k = keys; k && k->name; k++) {
		if (!k->required || entry_value(s, k->name))
			continue;
		/* "drivr = tail" is why 'driver' is missing: name the typo. */
		for (size_t i = 0; i < s->n; i++) {
			if (!cfg_find_key(keys, s->e[i].key) && cfg_close_to(s->e[i].key, k->name))
				return fail(ps, s->e[i].line,
					    "unknown key '%s' in %s (did you mean '%s'?): the required "
					    "key '%s' is missing", s->e[i].key,
					    section_title(s, title, sizeof(title)), k->name, k->name);
		}
		return fail(ps, s->line, "%s: missing required key '%s'",
			    section_title(s, title, sizeof(title)), k->name);
	}
	return 0;
}

/* Nothing unknown may remain; a near miss of a key of these tables is named. */
static int check_unused(struct parser_state *ps, const struct section *s, const struct cfg_key *a,
			const struct cfg_key *b, const char *what)
{
	char title[96];

	for (size_t i = 0; i < s->n; i++) {
		const char *near;

		if (s->e[i].used)
			continue;
		near = cfg_suggest(s->e[i].key, a, b);
		section_title(s, title, sizeof(title));
		if (near)
			return fail(ps, s->e[i].line, "unknown key '%s' in %s (did you mean '%s'?)",
				    s->e[i].key, title, near);
		return fail(ps, s->e[i].line, "unknown key '%s' in %s%s", s->e[i].key, title, what);
	}
	return 0;
}

static const struct entry *find_entry(const struct section *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->e[i].key, key))
			return &s->e[i];
	return NULL;
}

static const char *entry_value(const struct section *s, const char *key)
{
	const struct entry *e = find_entry(s, key);

	return e ? e->value : NULL;
}

/* The line a key is set on, or the section's line when it is not set. */
static int entry_line(const struct section *s, const char *key)
{
	const struct entry *e = find_entry(s, key);

	return e ? e->line : s->line;
}

static bool valid_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
			return false;
	return true;
}

/* What the common loader needs to know of the driver or output type a
 * section names. */
struct type_info {
	const char *key;        /* "driver" or "type" */
	const char *what;       /* "driver" or "output type" */
	char known[160];        /* the registry's names, for the message */
	bool found;
	const struct cfg_key *keys;
	size_t size;
	int (*validate)(const void *conf, char *err, size_t errlen);
};

static void add_known(struct type_info *ti, const char *name)
{
	size_t n = strlen(ti->known);

	snprintf(ti->known + n, sizeof(ti->known) - n, "%s%s", n ? ", " : "", name);
}

/* A driver's or type's check gets only a message buffer, and its messages
 * open with the key they are about ("url '...' must ...", "key 'path':
 * ...", "client_key needs client_cert"). Point at that key's line (or the
 * section's, when the key is not set) and name the key. */
static int fail_validate(struct parser_state *ps, const struct section *s, const struct cfg_key *generic,
			 const struct cfg_key *keys, const char *msg)
{
	char name[64], title[96];
	const char *body = msg;

	section_title(s, title, sizeof(title));
	/* "key 'path': ..." names the key path; "key '...' must" (a key
	 * called key, as in s3) and "url '...'" open with the key itself. */
	for (int pass = 0; pass < 2; pass++) {
		const char *p = msg + (pass == 0 && !strncmp(msg, "key '", 5) ? 5 : 0);
		size_t n = 0;

		while (n < sizeof(name) - 1 && (isalnum((unsigned char)p[n]) || p[n] == '_')) {
			name[n] = p[n];
			n++;
		}
		name[n] = '\0';
		if (n && (cfg_find_key(generic, name) || cfg_find_key(keys, name))) {
			if (p != msg && !strncmp(p + n, "': ", 3))
				body = p + n + 3;
			return fail(ps, entry_line(s, name), "%s key '%s': %s", title, name, body);
		}
	}
	return fail(ps, s->line, "%s: %s", title, msg);
}

/* The common part of [input NAME] and [output NAME]: the generic keys into
 * base, then the keys of the driver or type into a new *conf, then nothing
 * unknown may remain and the driver or type checks the whole. */
static int load_typed(struct parser_state *ps, struct section *s, const struct cfg_key *generic,
		      void *base, const struct type_info *ti, void **conf)
{
	const char *tname = entry_value(s, ti->key);
	char msg[256];
	int rc;

	if (tname && !ti->found)
		return fail(ps, entry_line(s, ti->key), "key '%s': unknown %s '%s' (known: %s)",
			    ti->key, ti->what, tname, ti->known);
	rc = apply(ps, s, generic, base);
	if (rc)
		return rc;
	*conf = xcalloc(1, ti->size ? ti->size : 1);
	if (!*conf)
		return oom(ps);
	rc = cfg_defaults(ti->keys, *conf);
	if (rc == -ENOMEM)
		return oom(ps);
	if (rc)
		return fail(ps, s->line, "the built-in defaults of %s '%s' are invalid", ti->what, tname);
	rc = apply(ps, s, ti->keys, *conf);
	if (rc)
		return rc;
	snprintf(msg, sizeof(msg), " (not a key of this %s)", ti->what);
	rc = check_unused(ps, s, generic, ti->keys, msg);
	if (rc)
		return rc;
	msg[0] = '\0';
	rc = ti->validate ? ti->validate(*conf, msg, sizeof(msg)) : 0;
	if (rc == -ENOMEM)
		return oom(ps);
	if (rc)
		return fail_validate(ps, s, generic, ti->keys, msg);
	return 0;
}

static int load_input(struct parser_state *ps, struct config *c, struct section *s)
{
	struct input_conf *in = xcalloc(1, sizeof(*in)), **tail;
	struct type_info ti = { .key = "driver", .what = "driver" };
	const char *dname = entry_value(s, "driver");
	const struct driver *d = dname ? driver_find(dname) : NULL;
	int rc;

	if (!in)
		return oom(ps);
	for (tail = &c->inputs; *tail; tail = &(*tail)->next)
		;
	*tail = in;
	c->n_inputs++;
	in->name = xstrdup(s->name);
	if (!in->name || cfg_defaults(config_input_keys, in))
		return oom(ps);
	for (int i = 0; driver_registry[i]; i++)
		add_known(&ti, driver_registry[i]->name);
	if (d) {
		ti.found = true;
		ti.keys = d->conf_keys;
		ti.size = d->conf_size;
		ti.validate = d->validate;
	}
	in->drv_type = d;
	/* A driver built against another interface would read the core's
	 * structs wrongly: refuse it before it can start. */
	if (d && d->version != DRIVER_VERSION)
		return fail(ps, entry_line(s, "driver"),
			    "key 'driver': driver '%s' was built for interface version %d, this agent speaks %d",
			    d->name, d->version, DRIVER_VERSION);
	if (d && (d->flags & DRIVER_STRUCTURED) && find_entry(s, "parser"))
		return fail(ps, entry_line(s, "parser"),
			    "key 'parser': driver '%s' takes no parser: its records are structured", d->name);
	/* The driver's own default parser, where the section names none. */
	if (d && d->parser && !find_entry(s, "parser")) {
		for (int i = 0; parser_names[i]; i++)
			if (!strcmp(parser_names[i], d->parser))
				in->parser = i;
	}
	rc = load_typed(ps, s, config_input_keys, in, &ti, &in->drv);
	if (rc)
		return rc;
	if (!in->stream && !(in->stream = xstrdup(in->name)))
		return oom(ps);
	if (!valid_name(in->stream))
		return fail(ps, entry_line(s, "stream"),
			    "[input %s] key 'stream': '%s' may only hold letters, digits, '-', '_' and '.'",
			    s->name, in->stream);
	return 0;
}

static int load_output(struct parser_state *ps, struct config *c, struct section *s)
{
	struct output_conf *o = xcalloc(1, sizeof(*o)), **tail;
	struct type_info ti = { .key = "type", .what = "output type" };
	const char *tname = entry_value(s, "type");
	const struct output_type *t = tname ? output_type_find(tname) : NULL;

	if (!o)
		return oom(ps);
	for (tail = &c->outputs; *tail; tail = &(*tail)->next)
		;
	*tail = o;
	c->n_outputs++;
	o->name = xstrdup(s->name);
	if (!o->name || cfg_defaults(config_output_keys, o))
		return oom(ps);
	for (int i = 0; output_types[i]; i++)
		add_known(&ti, output_types[i]->name);
	if (t) {
		ti.found = true;
		ti.keys = t->conf_keys;
		ti.size = t->conf_size;
		ti.validate = t->validate;
	}
	o->out_type = t;
	return load_typed(ps, s, config_output_keys, o, &ti, &o->typ);
}

/* [agent] id and state_dir, checked where they are set. */
static int check_agent(struct parser_state *ps, const struct section *s, const struct agent_conf *ac)
{
	if (ac->id && !valid_name(ac->id))
		return fail(ps, entry_line(s, "id"),
			    "[agent] key 'id': '%s' may only hold letters, digits, '-', '_' and '.'", ac->id);
	if (ac->state_dir[0] != '/')
		return fail(ps, entry_line(s, "state_dir"),
			    "[agent] key 'state_dir': '%s' must be an absolute path", ac->state_dir);
	return 0;
}

/* Trim blanks in place; strip a trailing comment (# after a blank) unless
 * the value is quoted. Returns the value start. */
static char *clean_value(char *v, bool *bad_quote)
{
	char *end;

	while (*v == ' ' || *v == '\t')
		v++;
	if (*v == '"') {
		char *q = strchr(v + 1, '"');

		if (!q) {
			*bad_quote = true;
			return v;
		}
		*q = '\0';
		for (char *r = q + 1; *r; r++) {
			if (*r == '#')
				break;
			if (*r != ' ' && *r != '\t') {
				*bad_quote = true;
				break;
			}
		}
		return v + 1;
	}
	for (char *p = v; *p; p++) {
		if (*p == '#' && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	}
	end = v + strlen(v);
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return v;
}

static int add_entry(struct section *s, const char *k, const char *v, const char *raw, int line)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct entry *e = xrealloc(s->e, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		s->e = e;
		s->cap = cap;
	}
	s->e[s->n++] = (struct entry){ k, v, raw, line, false };
	return 0;
}

static void hash_hex(const char *text, size_t len, char out[65])
{
	unsigned char d[32];

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	mbedtls_sha256((const unsigned char *)text, len, d, 0);
#else
	mbedtls_sha256_ret((const unsigned char *)text, len, d, 0);
#endif
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* A text split into sections. Keys and raw values point into the text,
 * cleaned values into vals, a buffer of the text's size. */
struct sections {
	struct section *s;
	size_t n;
	char *vals;
};

static void sections_release(struct sections *ss)
{
	for (size_t i = 0; i < ss->n; i++)
		xfree(ss->s[i].e);
	xfree(ss->s);
	xfree(ss->vals);
	*ss = (struct sections){ NULL, 0, NULL };
}

/* Split text (modified in place) into sections of entries. The same key
 * may come on several lines: whether it may is known only once the section's
 * key table is, in apply(). A body is the lines of one section without its
 * header (cfg_parse_section()). */
static int parse_sections(struct parser_state *ps, char *text, bool body, struct sections *out)
{
	struct section *secs = NULL;
	size_t n = 0, cap = 0;
	char *line = text, *next, *vals;
	int lineno = 0, rc = 0;

	vals = xmalloc(strlen(text) + 1);
	if (!vals)
		return -ENOMEM;
	if (body) {
		secs = xcalloc(1, sizeof(*secs));
		if (!secs) {
			rc = -ENOMEM;
			goto out_free;
		}
		n = cap = 1;
	}
	for (; line; line = next) {
		char *p, *eq;
		bool badq = false;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if ((p = strchr(line, '\r')) && p[1] == '\0')
			*p = '\0';
		for (p = line; *p; p++) {
			if ((unsigned char)*p < 0x20 && *p != '\t') {
				rc = fail(ps, lineno, "control character 0x%02x in line", (unsigned char)*p);
				goto out_free;
			}
		}
		p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#' || *p == ';')
			continue;
		if (*p == '[' && body) {
			rc = fail(ps, lineno, "a section header where only the keys of one section may be");
			goto out_free;
		}
		if (*p == '[') {
			char *close = strchr(p, ']'), *rest, kind[16] = "", name[64] = "";
			int fields;

			if (!close) {
				rc = fail(ps, lineno, "section header without ']'");
				goto out_free;
			}
			*close = '\0';
			rest = clean_value(close + 1, &badq);
			if (*rest) {
				rc = fail(ps, lineno, "text after section header: '%s'", rest);
				goto out_free;
			}
			fields = sscanf(p + 1, " %15s %63s", kind, name);
			{
				char extra[8];

				if (sscanf(p + 1, " %*s %*s %7s", extra) == 1) {
					rc = fail(ps, lineno, "section header has too many words");
					goto out_free;
				}
			}
			if (fields < 1) {
				rc = fail(ps, lineno, "empty section header");
				goto out_free;
			}
			if (!strcmp(kind, "agent") || !strcmp(kind, "queue")) {
				if (fields == 2) {
					rc = fail(ps, lineno, "[%s] takes no name", kind);
					goto out_free;
				}
			} else if (!strcmp(kind, "input") || !strcmp(kind, "output")) {
				if (fields != 2 || !valid_name(name)) {
					rc = fail(ps, lineno, "[%s NAME] needs a name of letters, digits, '-', '_' and '.'",
						  kind);
					goto out_free;
				}
			} else {
				static const char *const kinds[] = { "agent", "queue", "input", "output", NULL };
				const char *near = NULL;

				for (int i = 0; kinds[i] && !near; i++)
					if (cfg_close_to(kind, kinds[i]))
						near = kinds[i];
				if (near)
					rc = fail(ps, lineno, "unknown section [%s] (did you mean [%s%s]?)", kind,
						  near, strcmp(near, "input") && strcmp(near, "output") ? "" : " NAME");
				else
					rc = fail(ps, lineno, "unknown section [%s] (known: agent, queue, input NAME, "
						  "output NAME)", kind);
				goto out_free;
			}
			for (size_t i = 0; i < n; i++) {
				if (!strcmp(secs[i].kind, kind) && !strcmp(secs[i].name, name)) {
					rc = fail(ps, lineno, "section [%s%s%s] appears twice (first on line %d)",
						  kind, *name ? " " : "", name, secs[i].line);
					goto out_free;
				}
			}
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 8;
				struct section *ns = xrealloc(secs, nc * sizeof(*ns));

				if (!ns) {
					rc = -ENOMEM;
					goto out_free;
				}
				secs = ns;
				cap = nc;
			}
			memset(&secs[n], 0, sizeof(secs[n]));
			snprintf(secs[n].kind, sizeof(secs[n].kind), "%s", kind);
			snprintf(secs[n].name, sizeof(secs[n].name), "%s", name);
			secs[n].line = lineno;
			n++;
			continue;
		}
		eq = strchr(p, '=');
		if (!eq) {
			rc = fail(ps, lineno, "expected 'key = value' or '[section]'");
			goto out_free;
		}
		{
			char *k = p, *ke = eq, *v, *raw = eq + 1;

			while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
				ke--;
			*ke = '\0';
			while (*raw == ' ' || *raw == '\t')
				raw++;
			v = strcpy(vals + (raw - text), raw);
			v = clean_value(v, &badq);
			if (badq) {
				rc = fail(ps, lineno, "key '%s': unbalanced or misplaced quote", k);
				goto out_free;
			}
			if (!*k) {
				rc = fail(ps, lineno, "missing key before '='");
				goto out_free;
			}
			if (!n) {
				rc = fail(ps, lineno, "key '%s' before any [section]", k);
				goto out_free;
			}
			if (add_entry(&secs[n - 1], k, v, raw, lineno)) {
				rc = -ENOMEM;
				goto out_free;
			}
		}
	}
	*out = (struct sections){ secs, n, vals };
	return 0;
out_free:
	for (size_t i = 0; i < n; i++)
		xfree(secs[i].e);
	xfree(secs);
	xfree(vals);
	return rc;
}

int config_parse(const char *text, size_t len, const char *name, struct config **out, char *err,
		 size_t errlen)
{
	struct parser_state ps = { name, err, errlen };
	struct section *agent_sec = NULL, no_sec = { .line = 0 };
	struct sections ss = { NULL, 0, NULL };
	struct config *c;
	char *copy;
	int rc;

	err[0] = '\0';
	if (memchr(text, '\0', len))
		return fail(&ps, 0, "file contains a NUL byte: not a text config");
	c = xcalloc(1, sizeof(*c));
	copy = xstrndup(text, len);
	if (!c || !copy) {
		rc = -ENOMEM;
		goto out_free;
	}
	hash_hex(text, len, c->hash);
	c->path = xstrdup(name);
	if (!c->path || cfg_defaults(config_agent_keys, &c->agent) || cfg_defaults(config_queue_keys, &c->queue)) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = parse_sections(&ps, copy, false, &ss);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < ss.n && !rc; i++) {
		struct section *s = &ss.s[i];

		if (!strcmp(s->kind, "agent")) {
			rc = apply(&ps, s, config_agent_keys, &c->agent);
			if (!rc)
				rc = check_unused(&ps, s, config_agent_keys, NULL, "");
			if (!rc)
				rc = check_agent(&ps, s, &c->agent);
			agent_sec = s;
		} else if (!strcmp(s->kind, "queue")) {
			rc = apply(&ps, s, config_queue_keys, &c->queue);
			if (!rc)
				rc = check_unused(&ps, s, config_queue_keys, NULL, "");
		} else if (!strcmp(s->kind, "input")) {
			rc = load_input(&ps, c, s);
		} else {
			rc = load_output(&ps, c, s);
		}
	}
	if (rc)
		goto out_free;
	if (!agent_sec && (rc = check_agent(&ps, &no_sec, &c->agent)))
		goto out_free;
	if (!c->agent.id) {
		char host[256] = "agent";

		gethostname(host, sizeof(host) - 1);
		if (!valid_name(host)) {
			rc = fail(&ps, agent_sec ? agent_sec->line : 0,
				  "[agent] key 'id' is not set, and the host name '%s' is not a valid id "
				  "(letters, digits, '-', '_' and '.'): set id", host);
			goto out_free;
		}
		if (!(c->agent.id = xstrdup(host))) {
			rc = -ENOMEM;
			goto out_free;
		}
	}
	if (!c->agent.control_socket) {
		struct buf b = BUF_INIT;

		if (buf_printf(&b, "%s/agentd.sock", c->agent.state_dir)) {
			rc = -ENOMEM;
			goto out_free;
		}
		c->agent.control_socket = b.p;
	}
	if (!c->n_inputs) {
		rc = fail(&ps, 0, "no [input NAME] section: the agent would have nothing to collect");
		goto out_free;
	}
	if (!c->n_outputs) {
		rc = fail(&ps, 0, "no [output NAME] section: the agent would have nowhere to send data");
		goto out_free;
	}
	*out = c;
	c = NULL;
out_free:
	if (rc == -ENOMEM)
		oom(&ps);
	sections_release(&ss);
	xfree(copy);
	config_free(c);
	return rc;
}

int cfg_parse_section(const struct cfg_key *keys, void *base, const char *text, const char *name,
		      char *err, size_t errlen)
{
	struct parser_state ps = { name, err, errlen };
	struct sections ss = { NULL, 0, NULL };
	char *copy;
	int rc;

	err[0] = '\0';
	copy = xstrdup(text);
	if (!copy)
		return oom(&ps);
	rc = cfg_defaults(keys, base);
	if (rc == -EINVAL)
		rc = fail(&ps, 0, "the built-in defaults of the key table are invalid");
	if (!rc)
		rc = parse_sections(&ps, copy, true, &ss);
	if (!rc)
		rc = apply(&ps, &ss.s[0], keys, base);
	if (!rc)
		rc = check_unused(&ps, &ss.s[0], keys, NULL, "");
	if (rc == -ENOMEM)
		oom(&ps);
	if (rc)
		cfg_release(keys, base);
	sections_release(&ss);
	xfree(copy);
	return rc;
}

/* Read a config file whole (NUL-terminated, xmalloc'ed). */
static int read_config_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	char *p = NULL;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		rc = -EINVAL;
		goto out_close;
	}
	if (st.st_size > MAX_CONFIG_BYTES) {
		snprintf(err, errlen, "%s: larger than %d bytes: not a config file", path, MAX_CONFIG_BYTES);
		rc = -EFBIG;
		goto out_close;
	}
	p = xmalloc((size_t)st.st_size + 1);
	if (!p) {
		struct parser_state ps = { path, err, errlen };

		rc = oom(&ps);
		goto out_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "%s: read failed: %s", path, strerror(-rc));
			xfree(p);
			goto out_close;
		}
		got += (size_t)n;
	}
	p[got] = '\0';
	*text = p;
	*len = got;
	rc = 0;
out_close:
	close(fd);
	return rc;
}

const char *config_default_path(void)
{
	const char *env = getenv("AGENTD_CONFIG");

	return env && *env ? env : CONFIG_DEFAULT_PATH;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = read_config_file(path, &text, &len, err, errlen);
	if (rc)
		return rc;
	rc = config_parse(text, len, path, out, err, errlen);
	xfree(text);
	return rc;
}

int config_peek_agent(const char *path, struct agent_conf *ac)
{
	struct parser_state ps;
	struct sections ss = { NULL, 0, NULL };
	size_t len;
	char *text = NULL, err[256];
	int rc;

	memset(ac, 0, sizeof(*ac));
	ps = (struct parser_state){ path, err, sizeof(err) };
	rc = read_config_file(path, &text, &len, err, sizeof(err));
	if (rc)
		return rc;
	rc = cfg_defaults(config_agent_keys, ac);
	if (!rc && memchr(text, '\0', len))
		rc = -EINVAL;
	if (!rc)
		rc = parse_sections(&ps, text, false, &ss);
	for (size_t i = 0; !rc && i < ss.n; i++) {
		const struct section *s = &ss.s[i];

		/* Bad values elsewhere do not matter here; a bad one in
		 * [agent], or one set twice, leaves that key at its default. */
		for (size_t j = 0; !strcmp(s->kind, "agent") && j < s->n; j++) {
			const struct cfg_key *k = cfg_find_key(config_agent_keys, s->e[j].key);
			bool twice = false;

			for (size_t o = 0; o < s->n; o++)
				twice |= o != j && !strcmp(s->e[o].key, s->e[j].key);
			if (k && !twice && cfg_set(k, ac, s->e[j].value, err, sizeof(err)) == -ENOMEM)
				rc = -ENOMEM;
		}
	}
	sections_release(&ss);
	xfree(text);
	if (rc)
		cfg_release(config_agent_keys, ac);
	return rc;
}

void config_agent_release(struct agent_conf *ac)
{
	cfg_release(config_agent_keys, ac);
}

void config_free(struct config *c)
{
	if (!c)
		return;
	while (c->inputs) {
		struct input_conf *in = c->inputs;

		c->inputs = in->next;
		if (in->drv_type)
			cfg_release(in->drv_type->conf_keys, in->drv);
		xfree(in->drv);
		cfg_release(config_input_keys, in);
		xfree(in->name);
		xfree(in);
	}
	while (c->outputs) {
		struct output_conf *o = c->outputs;

		c->outputs = o->next;
		if (o->out_type)
			cfg_release(o->out_type->conf_keys, o->typ);
		xfree(o->typ);
		cfg_release(config_output_keys, o);
		xfree(o->name);
		xfree(o);
	}
	cfg_release(config_agent_keys, &c->agent);
	cfg_release(config_queue_keys, &c->queue);
	xfree(c->path);
	xfree(c);
}

