/* parse.c - turns a raw record (raw bytes, a JSON value, or a CSV line) into
 * the JSON text the queue stores, refusing anything that is not well formed
 * so that every batch a sink receives parses (see parse.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "parse.h"

int parse_fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#define fail parse_fail

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int csv_split(const char *line, size_t len, csv_field_cb cb, void *arg,
	      char *why, size_t whylen)
{
	struct buf tmp = BUF_INIT;
	size_t i = 0, start, count = 0;
	const char *val;
	size_t vlen;
	int err = 0;

	if (len && line[len - 1] == '\r')
		len--;
	for (;;) {
		if (i < len && line[i] == '"') {
			size_t open = i++;

			/* Only a field with "" escapes needs a copy. */
			start = i;
			buf_reset(&tmp);
			for (;;) {
				const char *q = i < len ?
					memchr(line + i, '"', len - i) : NULL;

				if (!q) {
					err = fail(why, whylen,
						   "unterminated CSV quote at byte %zu",
						   open);
					goto out_release;
				}
				i = (size_t)(q - line);
				if (i + 1 < len && line[i + 1] == '"') {
					if ((err = buf_add(&tmp, line + start,
							   i + 1 - start)))
						goto out_release;
					i += 2;
					start = i;
					continue;
				}
				break;
			}
			if (tmp.len) {
				if ((err = buf_add(&tmp, line + start,
						   i - start)))
					goto out_release;
				val = tmp.p;
				vlen = tmp.len;
			} else {
				val = line + start;
				vlen = i - start;
			}
			i++; /* the closing quote */
			if (i < len && line[i] != ',') {
				err = fail(why, whylen,
					   "text after closing CSV quote at byte %zu",
					   i);
				goto out_release;
			}
		} else {
			/* A quote inside an unquoted field is kept as it
			 * is: common in real files and unambiguous. */
			const char *c = i < len ?
				memchr(line + i, ',', len - i) : NULL;

			start = i;
			i = c ? (size_t)(c - line) : len;
			val = line + start;
			vlen = i - start;
		}
		count++;
		if (cb && (err = cb(val, vlen, arg)))
			goto out_release;
		if (i >= len)
			break;
		i++; /* the comma */
	}
	if (count > INT_MAX)
		err = fail(why, whylen, "too many CSV fields");
	else
		err = (int)count;

out_release:
	buf_release(&tmp);
	return err;
}

/* The header's fields, unquoted, laid end to end in text. */
struct csv_header {
	struct buf text;
	struct buf offs; /* size_t pairs: start, length */
	size_t n;
};

static int header_field(const char *val, size_t len, void *arg)
{
	struct csv_header *h = arg;
	size_t pair[2] = { h->text.len, len };
	int err;

	if ((err = buf_add(&h->text, val, len)))
		return err;
	if ((err = buf_add(&h->offs, pair, sizeof(pair))))
		return err;
	h->n++;
	return 0;
}

static void header_get(const struct csv_header *h, size_t k, const char **p,
		       size_t *len)
{
	size_t pair[2];

	memcpy(pair, h->offs.p + k * sizeof(pair), sizeof(pair));
	*p = h->text.p + pair[0];
	*len = pair[1];
}

static int header_load(struct csv_header *h, const char *hdr, size_t len,
		       char *why, size_t whylen)
{
	const char *a, *b;
	size_t alen, blen, bad;
	int n;

	/* Spreadsheet exports often start with a byte order mark. */
	if (len >= 3 && !memcmp(hdr, "\xEF\xBB\xBF", 3)) {
		hdr += 3;
		len -= 3;
	}
	if (!utf8_valid(hdr, len, &bad))
		return fail(why, whylen, "invalid UTF-8 in CSV header at byte %zu",
			    bad);
	n = csv_split(hdr, len, header_field, h, why, whylen);
	if (n == -EINVAL && why && whylen) {
		char inner[96];

		snprintf(inner, sizeof(inner), "%s", why);
		snprintf(why, whylen, "CSV header: %s", inner);
	}
	if (n < 0)
		return n;
	for (size_t i = 0; i < h->n; i++) {
		header_get(h, i, &a, &alen);
		if (!alen)
			return fail(why, whylen, "CSV header field %zu is empty",
				    i + 1);
		for (size_t j = 0; j < i; j++) {
			header_get(h, j, &b, &blen);
			if (alen == blen && !memcmp(a, b, alen))
				return fail(why, whylen,
					    "duplicate CSV header field '%.*s'",
					    (int)(alen > 40 ? 40 : alen), a);
		}
	}
	return 0;
}

struct csv_row {
	const struct csv_header *h;
	struct buf *out;
	size_t n;
};

static int row_field(const char *val, size_t len, void *arg)
{
	struct csv_row *r = arg;
	const char *key;
	size_t klen;
	int err;

	/* Keep counting past the header's width for the error message. */
	if (r->n < r->h->n) {
		header_get(r->h, r->n, &key, &klen);
		if ((r->n && (err = buf_addc(r->out, ','))) ||
		    (err = json_add_str(r->out, key, klen)) ||
		    (err = buf_addc(r->out, ':')) ||
		    (err = json_add_str(r->out, val, len)))
			return err;
	}
	r->n++;
	return 0;
}

static int parse_csv(const char *data, size_t len, const char *hdr,
		     size_t hdr_len, struct buf *out, char *why, size_t whylen)
{
	struct csv_header h = { BUF_INIT, BUF_INIT, 0 };
	struct csv_row r = { &h, out, 0 };
	size_t bad;
	int err;

	if (!hdr || !hdr_len)
		return fail(why, whylen, "no CSV header");
	if ((err = header_load(&h, hdr, hdr_len, why, whylen)))
		goto out_release;
	if (!utf8_valid(data, len, &bad)) {
		err = fail(why, whylen, "invalid UTF-8 at byte %zu", bad);
		goto out_release;
	}
	if ((err = buf_addc(out, '{')))
		goto out_release;
	err = csv_split(data, len, row_field, &r, why, whylen);
	if (err < 0)
		goto out_release;
	if (r.n != h.n) {
		err = fail(why, whylen, "CSV line has %zu fields, header has %zu",
			   r.n, h.n);
		goto out_release;
	}
	err = buf_addc(out, '}');

out_release:
	buf_release(&h.text);
	buf_release(&h.offs);
	return err;
}

int parse_record(int parser, const char *data, size_t len, const char *header,
		 size_t header_len, struct buf *out, char *why, size_t whylen)
{
	size_t old = out->len, bad;
	int err;

	if (why && whylen)
		why[0] = '\0';
	switch (parser) {
	case PARSER_RAW:
		if (!utf8_valid(data, len, &bad))
			return fail(why, whylen, "invalid UTF-8 at byte %zu", bad);
		err = json_add_str(out, data, len);
		break;
	case PARSER_JSON:
		while (len && is_blank(data[len - 1]))
			len--;
		while (len && is_blank(data[0])) {
			data++;
			len--;
		}
		if (!len)
			return fail(why, whylen, "empty record");
		if (!json_valid(data, len, why, whylen))
			return -EINVAL;
		err = buf_add(out, data, len);
		break;
	case PARSER_CSV:
		err = parse_csv(data, len, header, header_len, out, why, whylen);
		break;
	case PARSER_NMEA:
		err = parse_nmea(data, len, out, why, whylen);
		break;
	case PARSER_INFLUX:
		err = parse_influx(data, len, out, why, whylen);
		break;
	default:
		return fail(why, whylen, "unknown parser %d", parser);
	}
	if (err && out->p) {
		out->len = old;
		out->p[old] = '\0';
	}
	return err;
}
