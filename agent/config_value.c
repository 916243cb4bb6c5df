/* config_value.c - one value of the config: parsing text into the struct a
 * key table describes (numbers with units, bounds, enums), defaults, release,
 * and the near-miss suggestions that name the key probably meant.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "config_int.h"
#include "log.h"
#include "mem.h"

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

const char *cfg_type_hint(enum cfg_type t)
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
		snprintf(err, errlen, "'%s' is not a valid %s", v, cfg_type_hint(k->type));
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

const struct cfg_key *cfg_find_key(const struct cfg_key *keys, const char *name)
{
	for (const struct cfg_key *k = keys; k && k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
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

bool cfg_close_to(const char *name, const char *want)
{
	size_t d = edit_distance(name, want);

	return d <= (strlen(want) > 6 ? 2u : 1u);
}

const char *cfg_suggest(const char *name, const struct cfg_key *a, const struct cfg_key *b)
{
	const struct cfg_key *tables[] = { a, b };
	const char *best = NULL;
	size_t best_d = SIZE_MAX;

	for (size_t t = 0; t < 2; t++) {
		for (const struct cfg_key *k = tables[t]; k && k->name; k++) {
			size_t d = edit_distance(name, k->name);

			if (d < best_d && cfg_close_to(name, k->name)) {
				best = k->name;
				best_d = d;
			}
		}
	}
	return best;
}
