/* parse_influx.c - the InfluxDB line protocol parser: one line such as
 *
 *   cpu,host=a usage=0.5,n=3i,ok=true,msg="x" 1465839830100400200
 *
 * becomes the JSON object
 *
 *   {"measurement":"cpu","tags":{"host":"a"},
 *    "fields":{"usage":0.5,"n":3,"ok":true,"msg":"x"},"time":1465839830100400200}
 *
 * following the line protocol reference: backslash escapes comma and space
 * in the measurement, comma, equals sign and space in tag keys, tag values
 * and field keys, and double quote and backslash in string fields (any
 * other backslash is kept as it is); integers (`i`) and unsigned integers
 * (`u`) are range-checked and kept exact; floats take exponents and become
 * JSON numbers; booleans are t, T, true, True, TRUE and their f forms. The
 * timestamp is optional and stays what the sender wrote (nanoseconds by
 * convention): without one the object has no "time" and the record's own
 * receipt time is all there is. A comment line (`#`), an empty line, a
 * duplicate tag or field key and anything else out of the grammar is
 * refused with the byte offset, so the line goes to the dead-letter queue
 * instead of being dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "parse.h"

/* Longest number token converted (a float with all its digits fits). */
#define NUM_MAX 400

struct lp {
	const char *s;
	size_t len, i;
	struct buf tmp;   /* the element being unescaped */
	struct buf keys;  /* the keys of the set being read, for duplicates */
	struct buf offs;  /* size_t pairs into keys: start, length */
	size_t nkeys;
	char *why;
	size_t whylen;
};

static int lp_fail(struct lp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int lp_fail(struct lp *p, const char *fmt, ...)
{
	va_list ap;

	if (p->why && p->whylen) {
		va_start(ap, fmt);
		vsnprintf(p->why, p->whylen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Shown in messages: at most 40 bytes of a name or value. */
#define SHOW(b) (int)((b)->len > 40 ? 40 : (b)->len), (b)->p ? (b)->p : ""

enum elem { E_MEASUREMENT, E_TAG_KEY, E_TAG_VALUE, E_FIELD_KEY };

static bool special(enum elem e, char c)
{
	if (c == ',' || c == ' ')
		return true;
	return c == '=' && e != E_MEASUREMENT;
}

/* Read one element up to its unescaped end (a special character of its
 * kind, or the end of the line) into p->tmp, unescaped. A backslash before
 * a special character or another backslash stands for that character; any
 * other backslash is kept. */
static int read_elem(struct lp *p, enum elem e)
{
	int err;

	buf_reset(&p->tmp);
	while (p->i < p->len) {
		char c = p->s[p->i];

		if (c == '\\' && p->i + 1 < p->len &&
		    (special(e, p->s[p->i + 1]) || p->s[p->i + 1] == '\\')) {
			if ((err = buf_addc(&p->tmp, p->s[p->i + 1])))
				return err;
			p->i += 2;
			continue;
		}
		if (special(e, c))
			break;
		if ((err = buf_addc(&p->tmp, c)))
			return err;
		p->i++;
	}
	if (!p->tmp.p && (err = buf_reserve(&p->tmp, 1)))
		return err;
	return 0;
}

/* Remember p->tmp as a key of the current set; -EEXIST if it is there. */
static int add_key(struct lp *p)
{
	size_t pair[2];
	int err;

	for (size_t k = 0; k < p->nkeys; k++) {
		memcpy(pair, p->offs.p + k * sizeof(pair), sizeof(pair));
		if (pair[1] == p->tmp.len && !memcmp(p->keys.p + pair[0], p->tmp.p, pair[1]))
			return -EEXIST;
	}
	pair[0] = p->keys.len;
	pair[1] = p->tmp.len;
	if ((err = buf_add(&p->keys, p->tmp.p, p->tmp.len)) ||
	    (err = buf_add(&p->offs, pair, sizeof(pair))))
		return err;
	p->nkeys++;
	return 0;
}

static void new_set(struct lp *p)
{
	buf_reset(&p->keys);
	buf_reset(&p->offs);
	p->nkeys = 0;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Line protocol's float: [-](digits[.digits*] | .digits)[(e|E)[+-]digits]. */
static bool float_syntax(const char *t, size_t n)
{
	size_t i = 0, d = 0;

	if (i < n && t[i] == '-')
		i++;
	while (i < n && is_digit(t[i]))
		i++, d++;
	if (i < n && t[i] == '.') {
		i++;
		while (i < n && is_digit(t[i]))
			i++, d++;
	}
	if (!d)
		return false;
	if (i < n && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		if (i < n && (t[i] == '+' || t[i] == '-'))
			i++;
		if (i >= n || !is_digit(t[i]))
			return false;
		while (i < n && is_digit(t[i]))
			i++;
	}
	return i == n;
}

/* RFC 8259's number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number_syntax(const char *t, size_t n)
{
	size_t i = 0;

	if (i < n && t[i] == '-')
		i++;
	if (i < n && t[i] == '0')
		i++;
	else if (i < n && t[i] >= '1' && t[i] <= '9')
		while (i < n && is_digit(t[i]))
			i++;
	else
		return false;
	if (i < n && t[i] == '.') {
		if (++i >= n || !is_digit(t[i]))
			return false;
		while (i < n && is_digit(t[i]))
			i++;
	}
	if (i < n && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		if (i < n && (t[i] == '+' || t[i] == '-'))
			i++;
		if (i >= n || !is_digit(t[i]))
			return false;
		while (i < n && is_digit(t[i]))
			i++;
	}
	return i == n;
}

static bool all_digits(const char *t, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(t[i]))
			return false;
	return true;
}

static bool word_in(const char *t, size_t n, const char *const *words)
{
	for (; *words; words++)
		if (strlen(*words) == n && !memcmp(t, *words, n))
			return true;
	return false;
}

static const char *const true_words[] = { "t", "T", "true", "True", "TRUE", NULL };
static const char *const false_words[] = { "f", "F", "false", "False", "FALSE", NULL };

/* A string field value from the opening quote at p->i, unescaped into
 * p->tmp (\" and \\ stand for " and \; any other backslash is kept). */
static int read_string(struct lp *p)
{
	size_t open = p->i++;
	int err;

	buf_reset(&p->tmp);
	for (;;) {
		char c;

		if (p->i >= p->len)
			return lp_fail(p, "line protocol: string field value opened at byte %zu "
				       "is not closed", open);
		c = p->s[p->i];
		if (c == '"')
			break;
		if (c == '\\' && p->i + 1 < p->len &&
		    (p->s[p->i + 1] == '"' || p->s[p->i + 1] == '\\')) {
			c = p->s[++p->i];
		}
		if ((err = buf_addc(&p->tmp, c)))
			return err;
		p->i++;
	}
	p->i++;
	if (!p->tmp.p && (err = buf_reserve(&p->tmp, 1)))
		return err;
	return 0;
}

/* A number, integer, unsigned or boolean field value token at p->i (up to
 * ',' or ' '), appended to out as JSON. `key` is p->tmp: the field's name. */
static int field_value(struct lp *p, struct buf *out, const char *key, size_t klen)
{
	size_t start = p->i, n;
	const char *t = p->s + p->i;
	char num[NUM_MAX + 1], *end;
	int kl = (int)(klen > 40 ? 40 : klen);

	while (p->i < p->len && p->s[p->i] != ',' && p->s[p->i] != ' ')
		p->i++;
	n = p->i - start;
	if (!n)
		return lp_fail(p, "line protocol: field '%.*s' has no value at byte %zu", kl, key,
			       start);
	if (word_in(t, n, true_words))
		return buf_adds(out, "true");
	if (word_in(t, n, false_words))
		return buf_adds(out, "false");
	if (n > NUM_MAX)
		return lp_fail(p, "line protocol: field '%.*s': value at byte %zu is too long for "
			       "a number", kl, key, start);
	if (t[n - 1] == 'i' && n > 1 &&
	    (all_digits(t, n - 1) || (t[0] == '-' && all_digits(t + 1, n - 2)))) {
		long long v;

		memcpy(num, t, n - 1);
		num[n - 1] = '\0';
		errno = 0;
		v = strtoll(num, &end, 10);
		if (errno == ERANGE)
			return lp_fail(p, "line protocol: field '%.*s': integer %s at byte %zu is out "
				       "of the 64-bit range", kl, key, num, start);
		return buf_printf(out, "%lld", v);
	}
	if (t[n - 1] == 'u' && n > 1 && all_digits(t, n - 1)) {
		unsigned long long v;

		memcpy(num, t, n - 1);
		num[n - 1] = '\0';
		errno = 0;
		v = strtoull(num, &end, 10);
		if (errno == ERANGE)
			return lp_fail(p, "line protocol: field '%.*s': unsigned integer %s at byte %zu "
				       "is out of the 64-bit range", kl, key, num, start);
		return buf_printf(out, "%llu", v);
	}
	if (float_syntax(t, n)) {
		double v;

		memcpy(num, t, n);
		num[n] = '\0';
		errno = 0;
		v = strtod(num, &end);
		if (!isfinite(v))
			return lp_fail(p, "line protocol: field '%.*s': float %s at byte %zu is out of "
				       "range", kl, key, num, start);
		/* The sender's digits when they are JSON already, or the
		 * same number written as JSON ("1." -> 1, ".5" -> 0.5). */
		if (json_number_syntax(t, n))
			return buf_add(out, t, n);
		return buf_printf(out, "%.17g", v);
	}
	return lp_fail(p, "line protocol: field '%.*s': bad value '%.*s' at byte %zu (a float, an "
		       "integer 1i, an unsigned 1u, a boolean t/f or a \"string\")", kl, key,
		       (int)(n > 40 ? 40 : n), t, start);
}

static void skip_spaces(struct lp *p)
{
	while (p->i < p->len && p->s[p->i] == ' ')
		p->i++;
}

static int parse_line(struct lp *p, struct buf *out)
{
	size_t bad, at;
	int err;

	if (!utf8_valid(p->s, p->len, &bad))
		return lp_fail(p, "invalid UTF-8 at byte %zu", bad);
	while (p->i < p->len && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
		p->i++;
	if (p->i == p->len)
		return lp_fail(p, "line protocol: empty line (only blanks up to byte %zu)", p->len);
	if (p->s[p->i] == '#')
		return lp_fail(p, "line protocol: comment line (byte %zu), not a point", p->i);

	/* measurement */
	at = p->i;
	if ((err = read_elem(p, E_MEASUREMENT)))
		return err;
	if (!p->tmp.len)
		return lp_fail(p, "line protocol: no measurement at byte %zu", at);
	if ((err = buf_adds(out, "{\"measurement\":")) ||
	    (err = json_add_str(out, p->tmp.p, p->tmp.len)) ||
	    (err = buf_adds(out, ",\"tags\":{")))
		return err;

	/* tags */
	new_set(p);
	while (p->i < p->len && p->s[p->i] == ',') {
		p->i++;
		at = p->i;
		if ((err = read_elem(p, E_TAG_KEY)))
			return err;
		if (!p->tmp.len)
			return lp_fail(p, "line protocol: empty tag key at byte %zu", at);
		if (p->i >= p->len || p->s[p->i] != '=')
			return lp_fail(p, "line protocol: tag '%.*s' has no '=' at byte %zu", SHOW(&p->tmp),
				       p->i);
		err = add_key(p);
		if (err == -EEXIST)
			return lp_fail(p, "line protocol: duplicate tag '%.*s' at byte %zu", SHOW(&p->tmp),
				       at);
		if (err ||
		    (p->nkeys > 1 && (err = buf_addc(out, ','))) ||
		    (err = json_add_str(out, p->tmp.p, p->tmp.len)) ||
		    (err = buf_addc(out, ':')))
			return err;
		p->i++;
		at = p->i;
		if ((err = read_elem(p, E_TAG_VALUE)))
			return err;
		if (!p->tmp.len)
			return lp_fail(p, "line protocol: empty tag value at byte %zu", at);
		if (p->i < p->len && p->s[p->i] == '=')
			return lp_fail(p, "line protocol: unescaped '=' in tag value at byte %zu", p->i);
		if ((err = json_add_str(out, p->tmp.p, p->tmp.len)))
			return err;
	}
	if (p->i >= p->len)
		return lp_fail(p, "line protocol: no fields (the line ends at byte %zu)", p->len);
	if (p->s[p->i] != ' ')
		return lp_fail(p, "line protocol: unexpected '%c' at byte %zu", p->s[p->i], p->i);
	skip_spaces(p);
	if (p->i >= p->len)
		return lp_fail(p, "line protocol: no fields (the line ends at byte %zu)", p->len);
	if ((err = buf_adds(out, "},\"fields\":{")))
		return err;

	/* fields */
	new_set(p);
	for (;;) {
		at = p->i;
		if ((err = read_elem(p, E_FIELD_KEY)))
			return err;
		if (!p->tmp.len)
			return lp_fail(p, "line protocol: empty field key at byte %zu", at);
		if (p->i >= p->len || p->s[p->i] != '=')
			return lp_fail(p, "line protocol: field '%.*s' has no '=' at byte %zu",
				       SHOW(&p->tmp), p->i);
		err = add_key(p);
		if (err == -EEXIST)
			return lp_fail(p, "line protocol: duplicate field '%.*s' at byte %zu",
				       SHOW(&p->tmp), at);
		if (err ||
		    (p->nkeys > 1 && (err = buf_addc(out, ','))) ||
		    (err = json_add_str(out, p->tmp.p, p->tmp.len)) ||
		    (err = buf_addc(out, ':')))
			return err;
		p->i++;
		if (p->i < p->len && p->s[p->i] == '"') {
			if ((err = read_string(p)) || (err = json_add_str(out, p->tmp.p, p->tmp.len)))
				return err;
			if (p->i < p->len && p->s[p->i] != ',' && p->s[p->i] != ' ')
				return lp_fail(p, "line protocol: text after the closing quote at byte %zu",
					       p->i);
		} else {
			/* The key is the last one added to keys. */
			size_t pair[2];

			memcpy(pair, p->offs.p + (p->nkeys - 1) * sizeof(pair), sizeof(pair));
			if ((err = field_value(p, out, p->keys.p + pair[0], pair[1])))
				return err;
		}
		if (p->i < p->len && p->s[p->i] == ',') {
			p->i++;
			continue;
		}
		break;
	}
	if ((err = buf_addc(out, '}')))
		return err;

	/* timestamp */
	skip_spaces(p);
	if (p->i < p->len) {
		size_t start = p->i, n;
		const char *t = p->s + p->i;
		char num[32], *end;
		long long v;

		while (p->i < p->len && p->s[p->i] != ' ')
			p->i++;
		n = p->i - start;
		if (!(all_digits(t, n) || (t[0] == '-' && all_digits(t + 1, n - 1))) || n >= sizeof(num))
			return lp_fail(p, "line protocol: bad timestamp '%.*s' at byte %zu (an integer, "
				       "nanoseconds since the epoch)", (int)(n > 40 ? 40 : n), t, start);
		memcpy(num, t, n);
		num[n] = '\0';
		errno = 0;
		v = strtoll(num, &end, 10);
		if (errno == ERANGE)
			return lp_fail(p, "line protocol: timestamp %s at byte %zu is out of the 64-bit "
				       "range", num, start);
		skip_spaces(p);
		if (p->i < p->len)
			return lp_fail(p, "line protocol: text after the timestamp at byte %zu", p->i);
		if ((err = buf_printf(out, ",\"time\":%lld", v)))
			return err;
	}
	return buf_addc(out, '}');
}

int parse_influx(const char *data, size_t len, struct buf *out, char *why, size_t whylen)
{
	struct lp p = { data, len, 0, BUF_INIT, BUF_INIT, BUF_INIT, 0, why, whylen };
	size_t old = out->len;
	int err;

	if (len && data[len - 1] == '\r')
		p.len--;
	err = parse_line(&p, out);
	if (err && out->p) {
		out->len = old;
		out->p[old] = '\0';
	}
	buf_release(&p.tmp);
	buf_release(&p.keys);
	buf_release(&p.offs);
	return err;
}
