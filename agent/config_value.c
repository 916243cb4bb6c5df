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
	case CFG_LIST: return "list";
	case CFG_TABLE: return "table";
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

static int set_scalar(const struct cfg_key *k, void *base, const char *v, char *err, size_t errlen)
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
	case CFG_LIST:
	case CFG_TABLE:
		return -EINVAL; /* cfg_set() parses these */
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

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The next comma-separated item of a list value: [*s, *e) trimmed; returns
 * where the one after it starts, or NULL after the last. */
static const char *list_item(const char *p, const char **s, const char **e)
{
	const char *end = strchr(p, ',');

	if (!end)
		end = p + strlen(p);
	*s = p;
	*e = end;
	while (*s < *e && is_blank(**s))
		(*s)++;
	while (*e > *s && is_blank((*e)[-1]))
		(*e)--;
	return *end ? end + 1 : NULL;
}

static int set_list(const struct cfg_key *k, void *base, const char *v, char *err, size_t errlen)
{
	struct cfg_list *l = (struct cfg_list *)((char *)base + k->offset);
	const char *p, *s, *e;
	size_t items = 0;
	char **nv;

	/* Check every item before taking any: on an error the list is as it was. */
	for (p = v; p; items++) {
		p = list_item(p, &s, &e);
		if (s == e) {
			if (!p && !items)
				snprintf(err, errlen, "no value: a list needs at least one item");
			else
				snprintf(err, errlen, "'%s' has an empty item: items are separated by single commas",
					 v);
			return -EINVAL;
		}
	}
	nv = xrealloc(l->v, (l->n + items) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	l->v = nv;
	p = v;
	for (size_t i = 0; i < items; i++) {
		p = list_item(p, &s, &e);
		nv[l->n + i] = xstrndup(s, (size_t)(e - s));
		if (!nv[l->n + i]) {
			while (i--)
				xfree(nv[l->n + i]);
			return -ENOMEM;
		}
	}
	l->n += items;
	return 0;
}

/* Fill row from the words `col=value` of s (modified in place). */
static int parse_row(const struct cfg_key *cols, void *row, char *s, char *err, size_t errlen)
{
	uint64_t given = 0;
	size_t words = 0, ncols = 0;
	char msg[256];

	for (const struct cfg_key *c = cols; c->name; c++)
		ncols++;
	if (ncols > 64) {
		snprintf(err, errlen, "a table has at most 64 columns");
		return -EINVAL;
	}
	for (;;) {
		const struct cfg_key *c;
		char *name, *val;
		int rc;

		while (is_blank(*s))
			s++;
		if (!*s || *s == '#')
			break;
		name = s;
		while (*s && *s != '=' && !is_blank(*s))
			s++;
		if (*s != '=' || s == name) {
			while (*s && !is_blank(*s))
				s++;
			*s = '\0';
			snprintf(err, errlen, "'%s' is not column=value: a row is words column=value "
				 "separated by blanks", name);
			return -EINVAL;
		}
		*s++ = '\0';
		if (*s == '"') {
			char *q = strchr(s + 1, '"');

			if (!q) {
				snprintf(err, errlen, "column '%s': a quote is not closed", name);
				return -EINVAL;
			}
			val = s + 1;
			*q = '\0';
			s = q + 1;
			if (*s == '#') /* a comment right after the quote, as for keys */
				*s = '\0';
			if (*s && !is_blank(*s)) {
				snprintf(err, errlen, "column '%s': text right after the closing quote", name);
				return -EINVAL;
			}
		} else {
			val = s;
			while (*s && !is_blank(*s))
				s++;
		}
		if (*s)
			*s++ = '\0';
		c = cfg_find_key(cols, name);
		if (!c) {
			const char *near = cfg_suggest(name, cols, NULL);
			size_t n;

			if (near) {
				snprintf(err, errlen, "unknown column '%s' (did you mean '%s'?)", name, near);
				return -EINVAL;
			}
			n = (size_t)snprintf(err, errlen, "unknown column '%s' (columns:", name);
			for (c = cols; c->name && n < errlen; c++)
				n += (size_t)snprintf(err + n, errlen - n, "%s %s", c == cols ? "" : ",", c->name);
			if (n < errlen)
				snprintf(err + n, errlen - n, ")");
			return -EINVAL;
		}
		if (given & (1ULL << (c - cols))) {
			snprintf(err, errlen, "column '%s' is given twice in the row", name);
			return -EINVAL;
		}
		given |= 1ULL << (c - cols);
		words++;
		/* A list column of the row replaces its default. */
		if (c->type == CFG_LIST)
			cfg_release_key(c, row);
		rc = cfg_set(c, row, val, msg, sizeof(msg));
		if (rc == -ENOMEM)
			return rc;
		if (rc) {
			snprintf(err, errlen, "column '%s': %s", c->name, msg);
			return -EINVAL;
		}
	}
	if (!words) {
		snprintf(err, errlen, "an empty row: a row is words column=value separated by blanks");
		return -EINVAL;
	}
	for (const struct cfg_key *c = cols; c->name; c++) {
		if (c->required && !(given & (1ULL << (c - cols)))) {
			snprintf(err, errlen, "missing required column '%s'", c->name);
			return -EINVAL;
		}
	}
	return 0;
}

static int set_row(const struct cfg_key *k, void *base, const char *v, char *err, size_t errlen)
{
	struct cfg_table *t = (struct cfg_table *)((char *)base + k->offset);
	char *copy, *row;
	void *rows;
	int rc;

	rows = xrealloc(t->rows, (t->n + 1) * k->row_size);
	if (!rows)
		return -ENOMEM;
	t->rows = rows;
	row = (char *)rows + t->n * k->row_size;
	memset(row, 0, k->row_size);
	copy = xstrdup(v);
	if (!copy)
		return -ENOMEM;
	rc = cfg_defaults(k->cols, row);
	if (rc == -EINVAL)
		snprintf(err, errlen, "a built-in default of the table's columns is invalid");
	if (!rc)
		rc = parse_row(k->cols, row, copy, err, errlen);
	xfree(copy);
	if (rc) {
		cfg_release(k->cols, row);
		return rc;
	}
	t->n++;
	return 0;
}

int cfg_set(const struct cfg_key *k, void *base, const char *v, char *err, size_t errlen)
{
	switch (k->type) {
	case CFG_LIST:
		return set_list(k, base, v, err, errlen);
	case CFG_TABLE:
		return set_row(k, base, v, err, errlen);
	default:
		return set_scalar(k, base, v, err, errlen);
	}
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

void cfg_release_key(const struct cfg_key *k, void *base)
{
	char *p = (char *)base + k->offset;

	switch (k->type) {
	case CFG_STR:
		xfree(*(char **)p);
		*(char **)p = NULL;
		break;
	case CFG_LIST: {
		struct cfg_list *l = (struct cfg_list *)p;

		for (size_t i = 0; i < l->n; i++)
			xfree(l->v[i]);
		xfree(l->v);
		*l = (struct cfg_list){ NULL, 0 };
		break;
	}
	case CFG_TABLE: {
		struct cfg_table *t = (struct cfg_table *)p;

		for (size_t i = 0; i < t->n; i++)
			cfg_release(k->cols, (char *)t->rows + i * k->row_size);
		xfree(t->rows);
		*t = (struct cfg_table){ NULL, 0 };
		break;
	}
	default:
		break;
	}
}

void cfg_release(const struct cfg_key *keys, void *base)
{
	if (!base)
		return;
	for (const struct cfg_key *k = keys; k && k->name; k++)
		cfg_release_key(k, base);
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
