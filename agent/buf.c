/* buf.c - growable buffers, JSON string output, and the UTF-8 and JSON
 * validators that guard every record entering the queue (see buf.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"

#define BUF_MIN_CAP 64

int buf_presize(struct buf *b, size_t cap)
{
	char *p;

	if (cap <= b->cap)
		return 0;
	p = xrealloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	if (!b->p)
		p[0] = '\0';
	b->p = p;
	b->cap = cap;
	return 0;
}

int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	/* One extra byte always stays free for the terminating NUL. */
	if (extra > SIZE_MAX - b->len - 1)
		return -ENOMEM;
	need = b->len + extra + 1;
	if (b->p && need <= b->cap)
		return 0;
	cap = b->cap > BUF_MIN_CAP ? b->cap : BUF_MIN_CAP;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = xrealloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	if (!b->p)
		p[0] = '\0';
	b->p = p;
	b->cap = cap;
	return 0;
}

int buf_add(struct buf *b, const void *data, size_t len)
{
	if (buf_reserve(b, len))
		return -ENOMEM;
	if (len)
		memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
	return 0;
}

int buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_addc(struct buf *b, char c)
{
	if (buf_reserve(b, 1))
		return -ENOMEM;
	b->p[b->len++] = c;
	b->p[b->len] = '\0';
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	if (buf_reserve(b, 0))
		return -ENOMEM;
	room = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->p[b->len] = '\0';
		return -EINVAL;
	}
	if ((size_t)n >= room) {
		if (buf_reserve(b, (size_t)n)) {
			b->p[b->len] = '\0';
			return -ENOMEM;
		}
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

void buf_release(struct buf *b)
{
	xfree(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
}

/* Length of the well-formed UTF-8 sequence that starts with a byte >= 0x80
 * at s (Unicode table 3-7), or 0 if it is ill-formed or cut short. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need;

	if (c < 0xC2)
		return 0;
	if (c < 0xE0) {
		need = 2;
	} else if (c < 0xF0) {
		need = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c < 0xF5) {
		need = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return need;
}

#define HIGH_BITS 0x8080808080808080ULL

bool utf8_valid(const char *str, size_t len, size_t *bad_off)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, n;
	uint64_t w;

	while (i < len) {
		/* Records are mostly ASCII: skip eight bytes per step. */
		while (len - i >= 8) {
			memcpy(&w, s + i, 8);
			if (w & HIGH_BITS)
				break;
			i += 8;
		}
		while (i < len && s[i] < 0x80)
			i++;
		if (i >= len)
			break;
		n = utf8_seq(s + i, len - i);
		if (!n) {
			if (bad_off)
				*bad_off = i;
			return false;
		}
		i += n;
	}
	return true;
}

/* What json_add_str must do with each byte: 0 copy, 1 escape, 2 UTF-8. */
static const unsigned char str_class[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* The letter of a two-character escape, or 0 where \u00XX is needed. */
static char short_escape(unsigned char c)
{
	switch (c) {
	case '"':
		return '"';
	case '\\':
		return '\\';
	case '\b':
		return 'b';
	case '\f':
		return 'f';
	case '\n':
		return 'n';
	case '\r':
		return 'r';
	case '\t':
		return 't';
	default:
		return 0;
	}
}

int buf_add_base64(struct buf *b, const void *data, size_t len)
{
	static const char al[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = data;
	size_t i = 0;
	char *o;
	int err;

	if (len > (SIZE_MAX - 3) / 4 * 3)
		return -ENOMEM;
	if ((err = buf_reserve(b, (len + 2) / 3 * 4)))
		return err;
	o = b->p + b->len;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		*o++ = al[v >> 18];
		*o++ = al[(v >> 12) & 63];
		*o++ = al[(v >> 6) & 63];
		*o++ = al[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);

		*o++ = al[v >> 18];
		*o++ = al[(v >> 12) & 63];
		*o++ = i + 1 < len ? al[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	b->len = (size_t)(o - b->p);
	b->p[b->len] = '\0';
	return 0;
}

int json_add_str(struct buf *b, const char *str, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t old = b->len, i = 0, run, n;
	char esc[6];
	int err;

	/* Escapes take at most 6 bytes per input byte; reserving for the
	 * common case up front keeps the loop to one reallocation. */
	if ((err = buf_reserve(b, len + 2)))
		return err;
	b->p[b->len++] = '"';
	while (i < len) {
		run = i;
		while (i < len && !str_class[s[i]])
			i++;
		if (i > run && (err = buf_add(b, s + run, i - run)))
			goto out_restore;
		if (i >= len)
			break;
		if (str_class[s[i]] == 2) {
			/* Callers validate first; an ill-formed byte that
			 * slips through becomes U+FFFD so the output stays
			 * valid JSON. */
			n = utf8_seq(s + i, len - i);
			if (n)
				err = buf_add(b, s + i, n);
			else
				err = buf_add(b, "\\ufffd", 6);
			if (err)
				goto out_restore;
			i += n ? n : 1;
			continue;
		}
		esc[0] = '\\';
		esc[1] = short_escape(s[i]);
		n = 2;
		if (!esc[1]) {
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[s[i] >> 4];
			esc[5] = hex[s[i] & 15];
			n = 6;
		}
		if ((err = buf_add(b, esc, n)))
			goto out_restore;
		i++;
	}
	if ((err = buf_addc(b, '"')))
		goto out_restore;
	return 0;

out_restore:
	b->len = old;
	b->p[old] = '\0';
	return err;
}

/* ---- JSON writer ------------------------------------------------------- */

#define JW_MAX_DEPTH 32

_Static_assert(sizeof(((struct status_buf *)0)->first) == JW_MAX_DEPTH &&
		       sizeof(((struct status_buf *)0)->arrays) * 8 >= JW_MAX_DEPTH,
	       "one first[] entry and one arrays bit per level");

void jw_init(struct status_buf *w)
{
	memset(w, 0, sizeof(*w));
}

static void jw_fail(struct status_buf *w, int err)
{
	if (!w->err)
		w->err = err;
}

static bool jw_in_array(const struct status_buf *w)
{
	return w->depth > 0 && (w->arrays & (1u << (w->depth - 1)));
}

/* Writes the comma and key that go before a value; false once in error. */
static bool jw_prefix(struct status_buf *w, const char *key)
{
	if (w->err)
		return false;
	if (w->depth == 0)
		return true;
	if (!w->first[w->depth - 1] && buf_addc(&w->b, ',')) {
		jw_fail(w, -ENOMEM);
		return false;
	}
	w->first[w->depth - 1] = false;
	if (jw_in_array(w))
		return true;
	if (!key) {
		jw_fail(w, -EINVAL);
		return false;
	}
	if (json_add_str(&w->b, key, strlen(key)) || buf_addc(&w->b, ':')) {
		jw_fail(w, -ENOMEM);
		return false;
	}
	return true;
}

static void jw_put(struct status_buf *w, const char *key, const char *text,
		   size_t len)
{
	if (jw_prefix(w, key) && buf_add(&w->b, text, len))
		jw_fail(w, -ENOMEM);
}

static void jw_begin(struct status_buf *w, const char *key, char open,
		     bool array)
{
	if (!jw_prefix(w, key))
		return;
	if (w->depth >= JW_MAX_DEPTH) {
		jw_fail(w, -EINVAL);
		return;
	}
	if (buf_addc(&w->b, open)) {
		jw_fail(w, -ENOMEM);
		return;
	}
	w->first[w->depth] = true;
	if (array)
		w->arrays |= 1u << w->depth;
	else
		w->arrays &= ~(1u << w->depth);
	w->depth++;
}

static void jw_end(struct status_buf *w, char close, bool array)
{
	if (w->err)
		return;
	if (w->depth == 0 || jw_in_array(w) != array) {
		jw_fail(w, -EINVAL);
		return;
	}
	w->depth--;
	if (buf_addc(&w->b, close))
		jw_fail(w, -ENOMEM);
}

void jw_obj_begin(struct status_buf *w, const char *key)
{
	jw_begin(w, key, '{', false);
}

void jw_obj_end(struct status_buf *w)
{
	jw_end(w, '}', false);
}

void jw_arr_begin(struct status_buf *w, const char *key)
{
	jw_begin(w, key, '[', true);
}

void jw_arr_end(struct status_buf *w)
{
	jw_end(w, ']', true);
}

void jw_null(struct status_buf *w, const char *key)
{
	jw_put(w, key, "null", 4);
}

void jw_double(struct status_buf *w, const char *key, double v)
{
	char tmp[32];
	int n;

	if (!isfinite(v)) {
		jw_null(w, key);
		return;
	}
	/* The shortest of the two that reads back as the same double. */
	n = snprintf(tmp, sizeof(tmp), "%.15g", v);
	if (strtod(tmp, NULL) != v)
		n = snprintf(tmp, sizeof(tmp), "%.17g", v);
	jw_put(w, key, tmp, (size_t)n);
}

void jw_raw(struct status_buf *w, const char *key, const char *json, size_t len)
{
	jw_put(w, key, json, len);
}

void jw_str(struct status_buf *w, const char *key, const char *val)
{
	if (!val) {
		jw_null(w, key);
		return;
	}
	if (jw_prefix(w, key) && json_add_str(&w->b, val, strlen(val)))
		jw_fail(w, -ENOMEM);
}

void jw_int(struct status_buf *w, const char *key, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	jw_put(w, key, tmp, (size_t)n);
}

void jw_bool(struct status_buf *w, const char *key, bool v)
{
	if (v)
		jw_put(w, key, "true", 4);
	else
		jw_put(w, key, "false", 5);
}

int jw_finish(struct status_buf *w)
{
	if (!w->err && w->depth != 0)
		w->err = -EINVAL;
	/* An empty document still hands back a C string. */
	if (!w->err && buf_reserve(&w->b, 0))
		w->err = -ENOMEM;
	return w->err;
}

/* ---- JSON validation --------------------------------------------------- */

#define JSON_MAX_DEPTH 64

/* Bytes that end the fast scan of a string body: '"', '\\', controls and
 * bytes of multi-byte UTF-8 sequences (the same set json_add_str stops at). */
#define str_special(c) (str_class[(unsigned char)(c)] != 0)

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

struct jv {
	const unsigned char *s;
	size_t len, i;
	char *why;
	size_t whylen;
};

static bool jv_fail(struct jv *v, const char *what)
{
	if (v->why && v->whylen)
		snprintf(v->why, v->whylen, "invalid JSON at byte %zu: %s",
			 v->i, what);
	return false;
}

static void jv_ws(struct jv *v)
{
	while (v->i < v->len && is_ws(v->s[v->i]))
		v->i++;
}

/* A string whose opening quote is at v->i; leaves v->i after the close. */
static bool jv_string(struct jv *v)
{
	const unsigned char *s = v->s;
	size_t n;

	v->i++;
	for (;;) {
		while (v->i < v->len && !str_special(s[v->i]))
			v->i++;
		if (v->i >= v->len)
			return jv_fail(v, "unterminated string");
		switch (s[v->i]) {
		case '"':
			v->i++;
			return true;
		case '\\':
			v->i++;
			if (v->i >= v->len)
				return jv_fail(v, "unterminated string");
			switch (s[v->i]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				v->i++;
				break;
			case 'u':
				/* Lone surrogate escapes are grammatical
				 * (RFC 8259 section 8.2) and so accepted. */
				for (n = 1; n <= 4; n++)
					if (v->i + n >= v->len ||
					    !is_hex(s[v->i + n])) {
						v->i += n;
						return jv_fail(v, "bad \\u escape");
					}
				v->i += 5;
				break;
			default:
				return jv_fail(v, "bad escape in string");
			}
			break;
		default:
			if (s[v->i] < 0x20)
				return jv_fail(v, "control character in string");
			n = utf8_seq(s + v->i, v->len - v->i);
			if (!n) {
				if (v->why && v->whylen)
					snprintf(v->why, v->whylen,
						 "invalid UTF-8 at byte %zu", v->i);
				return false;
			}
			v->i += n;
		}
	}
}

static bool jv_digits(struct jv *v)
{
	if (v->i >= v->len || !is_digit(v->s[v->i]))
		return jv_fail(v, "expected a digit");
	while (v->i < v->len && is_digit(v->s[v->i]))
		v->i++;
	return true;
}

static bool jv_number(struct jv *v)
{
	const unsigned char *s = v->s;

	if (s[v->i] == '-')
		v->i++;
	if (v->i < v->len && s[v->i] == '0') {
		v->i++;
		if (v->i < v->len && is_digit(s[v->i]))
			return jv_fail(v, "leading zero in number");
	} else if (!jv_digits(v)) {
		return false;
	}
	if (v->i < v->len && s[v->i] == '.') {
		v->i++;
		if (!jv_digits(v))
			return false;
	}
	if (v->i < v->len && (s[v->i] == 'e' || s[v->i] == 'E')) {
		v->i++;
		if (v->i < v->len && (s[v->i] == '+' || s[v->i] == '-'))
			v->i++;
		if (!jv_digits(v))
			return false;
	}
	return true;
}

static bool jv_literal(struct jv *v, const char *word, size_t n)
{
	if (v->len - v->i < n || memcmp(v->s + v->i, word, n) != 0)
		return jv_fail(v, "expected a value");
	v->i += n;
	return true;
}

bool json_valid(const char *str, size_t len, char *why, size_t whylen)
{
	/* The nesting stack: '{' or '[' per open container. Values are
	 * walked iteratively so hostile input cannot exhaust the C stack. */
	char stack[JSON_MAX_DEPTH];
	struct jv v = { (const unsigned char *)str, len, 0, why, whylen };
	int depth = 0;
	unsigned char c;

	if (why && whylen)
		why[0] = '\0';
	jv_ws(&v);
value:
	if (v.i >= v.len)
		return jv_fail(&v, "expected a value");
	c = v.s[v.i];
	switch (c) {
	case '{':
	case '[':
		if (depth == JSON_MAX_DEPTH) {
			if (why && whylen)
				snprintf(why, whylen,
					 "nesting deeper than %d at byte %zu",
					 JSON_MAX_DEPTH, v.i);
			return false;
		}
		stack[depth++] = (char)c;
		v.i++;
		jv_ws(&v);
		if (v.i < v.len && v.s[v.i] == (c == '{' ? '}' : ']')) {
			v.i++;
			depth--;
			goto after_value;
		}
		if (c == '{')
			goto key;
		goto value;
	case '"':
		if (!jv_string(&v))
			return false;
		break;
	case 't':
		if (!jv_literal(&v, "true", 4))
			return false;
		break;
	case 'f':
		if (!jv_literal(&v, "false", 5))
			return false;
		break;
	case 'n':
		if (!jv_literal(&v, "null", 4))
			return false;
		break;
	default:
		if (c != '-' && !is_digit(c))
			return jv_fail(&v, "expected a value");
		if (!jv_number(&v))
			return false;
	}
after_value:
	jv_ws(&v);
	if (depth == 0) {
		if (v.i != v.len)
			return jv_fail(&v, "unexpected text after the value");
		return true;
	}
	if (stack[depth - 1] == '{') {
		if (v.i < v.len && v.s[v.i] == ',') {
			v.i++;
			jv_ws(&v);
			goto key;
		}
		if (v.i < v.len && v.s[v.i] == '}') {
			v.i++;
			depth--;
			goto after_value;
		}
		return jv_fail(&v, "expected ',' or '}'");
	}
	if (v.i < v.len && v.s[v.i] == ',') {
		v.i++;
		jv_ws(&v);
		goto value;
	}
	if (v.i < v.len && v.s[v.i] == ']') {
		v.i++;
		depth--;
		goto after_value;
	}
	return jv_fail(&v, "expected ',' or ']'");
key:
	if (v.i >= v.len || v.s[v.i] != '"')
		return jv_fail(&v, "expected a string key");
	if (!jv_string(&v))
		return false;
	jv_ws(&v);
	if (v.i >= v.len || v.s[v.i] != ':')
		return jv_fail(&v, "expected ':'");
	v.i++;
	jv_ws(&v);
	goto value;
}
