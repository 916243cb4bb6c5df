/* config.c - strict loading of the one configuration format (see config.h).
 *
 * A file is read whole, split into sections of key = value lines, and each
 * section is checked against its key table. Input and output sections are
 * checked in two steps because the `driver` / `type` key, which may come on
 * any line, decides which further keys are allowed.
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
#include "driver.h"
#include "log.h"
#include "mem.h"
#include "output.h"

#define MAX_CONFIG_BYTES (1 << 20)

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const on_full_names[] = { "drop_oldest", "block", NULL };
static const char *const sync_names[] = { "off", "normal", "full", NULL };
static const char *const parser_names[] = { "raw", "json", "csv", NULL };

#define AK(f) offsetof(struct agent_conf, f)
static const struct cfg_key agent_keys[] = {
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
static const struct cfg_key queue_keys[] = {
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
static const struct cfg_key input_keys[] = {
	{ "driver", CFG_STR, NULL, IK(driver),
	  "Which input driver reads this source (see the driver keys below).", NULL, 0, 0, true },
	{ "stream", CFG_STR, NULL, IK(stream),
	  "Stream name carried by this input's records and used in topics; default: the input's name." },
	{ "parser", CFG_ENUM, "raw", IK(parser),
	  "How a record's bytes become its data: raw (a JSON string of the text), json (validated JSON, "
	  "shipped unchanged) or csv (an object built from the file's header line). Records that do not "
	  "parse go to the dead-letter queue with the reason.", parser_names },
	{ "max_record_bytes", CFG_SIZE, "0", IK(max_record_bytes),
	  "Per-input override of queue max_record_bytes; 0 uses the queue's value.", NULL, 0, 64 << 20 },
	{ NULL },
};

#define OK_(f) offsetof(struct output_conf, f)
static const struct cfg_key output_keys[] = {
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
	const char *key, *value;
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

/* A number: 0, -EINVAL (not one) or -ERANGE (beyond 64 bits; *out is then
 * the bound it passed, *rest still set). */
static int parse_int(const char *v, int64_t *out, const char **rest)
{
	char *end;
	long long x;

	errno = 0;
	if (!isdigit((unsigned char)v[0]) && !(v[0] == '-' && isdigit((unsigned char)v[1])))
		return -EINVAL;
	x = strtoll(v, &end, 10);
	*out = x;
	*rest = end;
	if (errno == ERANGE)
		return -ERANGE;
	return errno ? -EINVAL : 0;
}

struct unit {
	const char *s;
	int64_t m;
};

static const struct unit size_units[] = {
	{ "", 1 }, { "b", 1 }, { "k", 1024 }, { "kib", 1024 }, { "kb", 1024 },
	{ "m", 1 << 20 }, { "mib", 1 << 20 }, { "mb", 1 << 20 },
	{ "g", 1 << 30 }, { "gib", 1 << 30 }, { "gb", 1 << 30 },
	{ "t", 1LL << 40 }, { "tib", 1LL << 40 }, { "tb", 1LL << 40 },
	{ NULL, 0 },
};

static const struct unit duration_units[] = {
	{ "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "min", 60000 },
	{ "h", 3600000 }, { "d", 86400000 },
	{ NULL, 0 },
};

/* A number with a unit of u (case-insensitive when icase): 0, -EINVAL (not
 * such a value), -EDOM (negative) or -ERANGE (more than 64 bits hold). */
static int parse_scaled(const char *v, const struct unit *u, bool icase, int64_t *out)
{
	const char *rest;
	int64_t x;
	int rc = parse_int(v, &x, &rest);

	if (rc == -EINVAL)
		return rc;
	while (*rest == ' ')
		rest++;
	for (; u->s; u++) {
		if (icase ? strcasecmp(rest, u->s) : strcmp(rest, u->s))
			continue;
		if (x < 0)
			return -EDOM;
		if (rc || x > INT64_MAX / u->m)
			return -ERANGE;
		*out = x * u->m;
		return 0;
	}
	return -EINVAL;
}

static const char *type_hint(enum cfg_type t)
{
	switch (t) {
	case CFG_STR: return "text";
	case CFG_INT: return "integer";
	case CFG_SIZE: return "size (e.g. 512KiB, 64MiB, 1GiB)";
	case CFG_DURATION: return "duration (e.g. 250ms, 5s, 2m, 1h)";
	case CFG_BOOL: return "boolean (true/false, yes/no, on/off)";
	case CFG_ENUM: return "one of";
	}
	return "value";
}

/* A bound as the file would write it: the largest unit it is a whole
 * number of (64MiB, 1h), else bytes or ms. */
static void format_bound(const struct cfg_key *k, int64_t x, char *out, size_t len)
{
	static const struct unit sizes[] = {
		{ "TiB", 1LL << 40 }, { "GiB", 1 << 30 }, { "MiB", 1 << 20 }, { "KiB", 1024 },
		{ NULL, 0 },
	};
	static const struct unit durations[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { NULL, 0 },
	};
	const struct unit *u = k->type == CFG_SIZE ? sizes : k->type == CFG_DURATION ? durations : NULL;

	for (; u && u->s; u++) {
		if (x && x % u->m == 0) {
			snprintf(out, len, "%" PRId64 "%s", x / u->m, u->s);
			return;
		}
	}
	snprintf(out, len, "%" PRId64 "%s%s", x,
		 k->type == CFG_SIZE ? " bytes" : k->type == CFG_DURATION ? " ms" : "",
		 x == INT64_MAX && k->type == CFG_SIZE ? " (just under 8 EiB)" : "");
}

static bool is_word(const char *v, const char *const *words)
{
	for (; *words; words++)
		if (!strcasecmp(v, *words))
			return true;
	return false;
}

int cfg_set(const struct cfg_key *k, void *base, const char *v, char *err, size_t errlen)
{
	static const char *const yes[] = { "true", "yes", "on", "1", NULL };
	static const char *const no[] = { "false", "no", "off", "0", NULL };
	char *p = (char *)base + k->offset, bound[64];
	int64_t x = 0;
	int rc = 0;

	switch (k->type) {
	case CFG_STR: {
		char *s = xstrdup(v);

		if (!s)
			return -ENOMEM;
		xfree(*(char **)p);
		*(char **)p = s;
		return 0;
	}
	case CFG_BOOL:
		if (is_word(v, yes)) {
			*(bool *)p = true;
			return 0;
		}
		if (is_word(v, no)) {
			*(bool *)p = false;
			return 0;
		}
		snprintf(err, errlen, "'%s' is not a boolean (use true/false, yes/no, on/off)", v);
		return -EINVAL;
	case CFG_ENUM:
		for (int i = 0; k->enums[i]; i++) {
			if (!strcmp(v, k->enums[i])) {
				*(int *)p = i;
				return 0;
			}
		}
		{
			size_t n = (size_t)snprintf(err, errlen, "'%s' is not one of:", v);

			for (int i = 0; k->enums[i] && n < errlen; i++)
				n += (size_t)snprintf(err + n, errlen - n, "%s %s", i ? "," : "", k->enums[i]);
		}
		return -EINVAL;
	case CFG_INT: {
		const char *rest;

		rc = parse_int(v, &x, &rest);
		if (rc != -EINVAL && *rest)
			rc = -EINVAL;
		break;
	}
	case CFG_SIZE:
		rc = parse_scaled(v, size_units, true, &x);
		break;
	case CFG_DURATION:
		rc = parse_scaled(v, duration_units, false, &x);
		break;
	}
	if (rc == -EINVAL) {
		snprintf(err, errlen, "'%s' is not a valid %s", v, type_hint(k->type));
		return rc;
	}
	if (rc == -EDOM) {
		snprintf(err, errlen, "'%s' is negative: a %s cannot be", v,
			 k->type == CFG_SIZE ? "size" : "duration");
		return -EINVAL;
	}
	/* Beyond 64 bits, or beyond the key's bounds: say which bound. */
	if ((rc == -ERANGE && v[0] != '-') || (k->max && x > k->max)) {
		format_bound(k, k->max ? k->max : INT64_MAX, bound, sizeof(bound));
		snprintf(err, errlen, "'%s' is too large: the maximum is %s", v, bound);
		return -EINVAL;
	}
	if (rc == -ERANGE || ((k->min || k->max) && x < k->min)) {
		format_bound(k, k->min || k->max ? k->min : INT64_MIN, bound, sizeof(bound));
		snprintf(err, errlen, "'%s' is too small: the minimum is %s", v, bound);
		return -EINVAL;
	}
	*(int64_t *)p = x;
	return 0;
}

int cfg_defaults(const struct cfg_key *keys, void *base)
{
	char err[128];

	for (const struct cfg_key *k = keys; k && k->name; k++) {
		int rc;

		if (!k->def)
			continue;
		rc = cfg_set(k, base, k->def, err, sizeof(err));
		if (rc == -ENOMEM)
			return rc;
		if (rc) {
			log_error("built-in default of %s is invalid: %s", k->name, err);
			return -EINVAL;
		}
	}
	return 0;
}

void cfg_release(const struct cfg_key *keys, void *base)
{
	if (!base)
		return;
	for (const struct cfg_key *k = keys; k && k->name; k++) {
		if (k->type == CFG_STR) {
			char **p = (char **)((char *)base + k->offset);

			xfree(*p);
			*p = NULL;
		}
	}
}

static const struct cfg_key *find_key(const struct cfg_key *keys, const char *name)
{
	for (const struct cfg_key *k = keys; k && k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

/* Memory ran short while the file was read: that says nothing about the
 * file, so it must never look like a verdict on it. */
static int oom(struct parser_state *ps)
{
	snprintf(ps->err, ps->errlen, "%s: out of memory: the configuration could not be checked; "
		 "try again", ps->file);
	return -ENOMEM;
}

/* Edit distance (insertions, deletions, changes, swaps of neighbours),
 * ignoring case; names longer than 63 bytes are never close. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), d[64][64];

	if (la >= 64 || lb >= 64)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			size_t best = d[i - 1][j - 1] + cost;

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/* Is name a plausible misspelling of want? One slip in a short name, two
 * in a longer one. */
static bool close_to(const char *name, const char *want)
{
	size_t d = edit_distance(name, want);

	return d <= (strlen(want) > 6 ? 2u : 1u);
}

/* The key of these tables that name most likely meant, or NULL. */
static const char *suggest_key(const char *name, const struct cfg_key *a, const struct cfg_key *b)
{
	const struct cfg_key *tables[] = { a, b };
	const char *best = NULL;
	size_t best_d = SIZE_MAX;

	for (size_t t = 0; t < 2; t++) {
		for (const struct cfg_key *k = tables[t]; k && k->name; k++) {
			size_t d = edit_distance(name, k->name);

			if (d < best_d && close_to(name, k->name)) {
				best = k->name;
				best_d = d;
			}
		}
	}
	return best;
}

static const char *section_title(const struct section *s, char *out, size_t len)
{
	snprintf(out, len, "[%s%s%s]", s->kind, s->name[0] ? " " : "", s->name);
	return out;
}

/* Apply every entry of s that the table knows; mark it used. */
static int apply(struct parser_state *ps, struct section *s, const struct cfg_key *keys, void *base)
{
	char msg[256], title[96];

	for (size_t i = 0; i < s->n; i++) {
		const struct cfg_key *k = find_key(keys, s->e[i].key);
		int rc;

		if (!k)
			continue;
		rc = cfg_set(k, base, s->e[i].value, msg, sizeof(msg));
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
			if (!find_key(keys, s->e[i].key) && close_to(s->e[i].key, k->name))
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
		near = suggest_key(s->e[i].key, a, b);
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
		if (n && (find_key(generic, name) || find_key(keys, name))) {
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
	if (!in->name || cfg_defaults(input_keys, in))
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
	rc = load_typed(ps, s, input_keys, in, &ti, &in->drv);
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
	if (!o->name || cfg_defaults(output_keys, o))
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
	return load_typed(ps, s, output_keys, o, &ti, &o->typ);
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

static int add_entry(struct section *s, const char *k, const char *v, int line)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct entry *e = xrealloc(s->e, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		s->e = e;
		s->cap = cap;
	}
	s->e[s->n++] = (struct entry){ k, v, line, false };
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

static int parse_sections(struct parser_state *ps, char *text, struct section **out, size_t *nout)
{
	struct section *secs = NULL;
	size_t n = 0, cap = 0;
	char *line = text, *next;
	int lineno = 0, rc = 0;

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
					if (close_to(kind, kinds[i]))
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
			char *k = p, *ke = eq, *v;

			while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
				ke--;
			*ke = '\0';
			v = clean_value(eq + 1, &badq);
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
			for (size_t i = 0; i < secs[n - 1].n; i++) {
				if (!strcmp(secs[n - 1].e[i].key, k)) {
					rc = fail(ps, lineno, "key '%s' set twice (first on line %d)", k,
						  secs[n - 1].e[i].line);
					goto out_free;
				}
			}
			if (add_entry(&secs[n - 1], k, v, lineno)) {
				rc = -ENOMEM;
				goto out_free;
			}
		}
	}
	*out = secs;
	*nout = n;
	return 0;
out_free:
	for (size_t i = 0; i < n; i++)
		xfree(secs[i].e);
	xfree(secs);
	return rc;
}

int config_parse(const char *text, size_t len, const char *name, struct config **out, char *err,
		 size_t errlen)
{
	struct parser_state ps = { name, err, errlen };
	struct section *secs = NULL, *agent_sec = NULL, no_sec = { .line = 0 };
	struct config *c;
	size_t nsec = 0;
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
	if (!c->path || cfg_defaults(agent_keys, &c->agent) || cfg_defaults(queue_keys, &c->queue)) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = parse_sections(&ps, copy, &secs, &nsec);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < nsec && !rc; i++) {
		struct section *s = &secs[i];

		if (!strcmp(s->kind, "agent")) {
			rc = apply(&ps, s, agent_keys, &c->agent);
			if (!rc)
				rc = check_unused(&ps, s, agent_keys, NULL, "");
			if (!rc)
				rc = check_agent(&ps, s, &c->agent);
			agent_sec = s;
		} else if (!strcmp(s->kind, "queue")) {
			rc = apply(&ps, s, queue_keys, &c->queue);
			if (!rc)
				rc = check_unused(&ps, s, queue_keys, NULL, "");
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
	for (size_t i = 0; i < nsec; i++)
		xfree(secs[i].e);
	xfree(secs);
	xfree(copy);
	config_free(c);
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
	struct section *secs = NULL;
	size_t nsec = 0, len;
	char *text = NULL, err[256];
	int rc;

	memset(ac, 0, sizeof(*ac));
	ps = (struct parser_state){ path, err, sizeof(err) };
	rc = read_config_file(path, &text, &len, err, sizeof(err));
	if (rc)
		return rc;
	rc = cfg_defaults(agent_keys, ac);
	if (!rc && memchr(text, '\0', len))
		rc = -EINVAL;
	if (!rc)
		rc = parse_sections(&ps, text, &secs, &nsec);
	for (size_t i = 0; !rc && i < nsec; i++) {
		/* Bad values elsewhere do not matter here; a bad one in
		 * [agent] leaves that key at its default. */
		for (size_t j = 0; !strcmp(secs[i].kind, "agent") && j < secs[i].n; j++) {
			const struct cfg_key *k = find_key(agent_keys, secs[i].e[j].key);

			if (k && cfg_set(k, ac, secs[i].e[j].value, err, sizeof(err)) == -ENOMEM)
				rc = -ENOMEM;
		}
	}
	for (size_t i = 0; i < nsec; i++)
		xfree(secs[i].e);
	xfree(secs);
	xfree(text);
	if (rc)
		cfg_release(agent_keys, ac);
	return rc;
}

void config_agent_release(struct agent_conf *ac)
{
	cfg_release(agent_keys, ac);
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
		cfg_release(input_keys, in);
		xfree(in->name);
		xfree(in);
	}
	while (c->outputs) {
		struct output_conf *o = c->outputs;

		c->outputs = o->next;
		if (o->out_type)
			cfg_release(o->out_type->conf_keys, o->typ);
		xfree(o->typ);
		cfg_release(output_keys, o);
		xfree(o->name);
		xfree(o);
	}
	cfg_release(agent_keys, &c->agent);
	cfg_release(queue_keys, &c->queue);
	xfree(c->path);
	xfree(c);
}

static void print_comment(FILE *f, const char *h)
{
	while (*h) {
		int n = 0, last = 0;

		while (n < 74 && h[n]) {
			if (h[n] == ' ')
				last = n;
			n++;
		}
		if (h[n] && last)
			n = last;
		fprintf(f, "# %.*s\n", n, h);
		h += n;
		while (*h == ' ')
			h++;
	}
}

static const char *type_name(const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_SIZE: return "size";
	case CFG_DURATION: return "duration";
	case CFG_ENUM: return "enum";
	default: return type_hint(k->type);
	}
}

static void print_keys(FILE *f, const struct cfg_key *keys, bool md, const char *skip)
{
	for (const struct cfg_key *k = keys; k && k->name; k++) {
		if (skip && !strcmp(k->name, skip))
			continue;
		if (md) {
			fprintf(f, "| `%s` | %s", k->name, type_name(k));
			if (k->type == CFG_ENUM) {
				fprintf(f, ": ");
				for (int i = 0; k->enums[i]; i++)
					fprintf(f, "%s`%s`", i ? ", " : "", k->enums[i]);
			}
			fprintf(f, " | %s | %s |\n", k->required ? "**required**" : k->def ? k->def : "(see text)",
				k->help);
			continue;
		}
		fprintf(f, "\n");
		print_comment(f, k->help);
		if (k->required)
			fprintf(f, "%s = %s\n", k->name, k->example ? k->example : "");
		else
			fprintf(f, "#%s = %s\n", k->name, k->def ? k->def : k->example ? k->example : "");
	}
}

static void print_section(FILE *f, const char *title, const char *intro, const struct cfg_key *keys)
{
	fprintf(f, "\n### %s\n\n%s\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n",
		title, intro);
	print_keys(f, keys, true, NULL);
}

static void print_markdown(FILE *f)
{
	char title[96];

	print_section(f, "[agent]", "Who this agent is and where it keeps its state.", agent_keys);
	print_section(f, "[queue]", "The durable on-disk queue every accepted record is kept in.", queue_keys);
	print_section(f, "[input NAME]", "Keys every input has, whatever its driver.", input_keys);
	for (int i = 0; driver_registry[i]; i++) {
		snprintf(title, sizeof(title), "driver = %s", driver_registry[i]->name);
		print_section(f, title, driver_registry[i]->help, driver_registry[i]->conf_keys);
	}
	print_section(f, "[output NAME]", "Keys every output has, whatever its type.", output_keys);
	for (int i = 0; output_types[i]; i++) {
		snprintf(title, sizeof(title), "type = %s", output_types[i]->name);
		print_section(f, title, output_types[i]->help, output_types[i]->conf_keys);
	}
}

/* A loadable example: every key with its help, defaults commented out,
 * one input of the first driver and one output of the first type. */
static void print_example(FILE *f)
{
	const struct driver *d = driver_registry[0];
	const struct output_type *t = output_types[0];

	fprintf(f, "# agentd configuration: every key, with its default commented out.\n"
		   "# Sizes take KiB/MiB/GiB, durations ms/s/m/h, booleans true/false,\n"
		   "# yes/no or on/off. Validate with\n"
		   "#   agentd --check-config FILE\n\n[agent]\n");
	print_keys(f, agent_keys, false, NULL);
	fprintf(f, "\n[queue]\n");
	print_keys(f, queue_keys, false, NULL);
	fprintf(f, "\n# One section per input; NAME is the default stream name.\n[input sensors]\n");
	print_comment(f, input_keys[0].help);
	fprintf(f, "driver = %s\n", d->name);
	print_keys(f, input_keys, false, "driver");
	fprintf(f, "\n# Keys of driver = %s: %s\n", d->name, d->help);
	print_keys(f, d->conf_keys, false, NULL);
	fprintf(f, "\n# One section per output.\n[output lake]\n");
	print_comment(f, output_keys[0].help);
	fprintf(f, "type = %s\n", t->name);
	print_keys(f, output_keys, false, "type");
	fprintf(f, "\n# Keys of type = %s: %s\n", t->name, t->help);
	print_keys(f, t->conf_keys, false, NULL);
}

void config_print_reference(FILE *f, bool md)
{
	if (md)
		print_markdown(f);
	else
		print_example(f);
}
