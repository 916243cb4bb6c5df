/* parse_nmea.c - the nmea parser: one NMEA 0183 sentence (a GPS receiver's
 * $GPGGA..., an AIS receiver's !AIVDM...) becomes a JSON object.
 *
 * Only a sentence whose checksum is right is accepted: on a serial line a
 * wrong baud rate, a loose wire or a line cut at a reconnect all show up as
 * damaged sentences, and a damaged position is worse than none. The object
 * always holds the talker, the sentence type and every field as text (an
 * empty field as null), so sentences this file does not know still reach
 * the lake whole; for the common ones the values are decoded as well (see
 * parse.h and docs/wire-format.md).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "parse.h"

/* More fields than any standard sentence has (GSA and GSV have ~20). */
#define MAX_FIELDS 100

#define fail parse_fail

struct field {
	const char *p;
	size_t len;
};

struct sentence {
	char type[16];          /* "GGA", or the maker's id of a proprietary one */
	struct field f[MAX_FIELDS];
	size_t n;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A field's text for a message, cut to fit. */
static const char *show(const struct field *f, char *tmp, size_t cap)
{
	snprintf(tmp, cap, "%.*s", (int)(f->len > 24 ? 24 : f->len), f->p);
	return tmp;
}

/* A decimal number as NMEA writes them: [-]digits[.digits], no exponent. */
static bool number(const struct field *f, double *v)
{
	char tmp[64], *end;
	size_t i = 0, digits = 0;

	if (!f->len || f->len >= sizeof(tmp))
		return false;
	if (f->p[0] == '-' || f->p[0] == '+')
		i++;
	for (bool dot = false; i < f->len; i++) {
		if (f->p[i] >= '0' && f->p[i] <= '9')
			digits++;
		else if (f->p[i] == '.' && !dot)
			dot = true;
		else
			return false;
	}
	if (!digits)
		return false;
	memcpy(tmp, f->p, f->len);
	tmp[f->len] = '\0';
	*v = strtod(tmp, &end);
	return end == tmp + f->len && isfinite(*v);
}

static int add_key(struct buf *out, const char *name)
{
	int rc = buf_addc(out, ',');

	rc = rc ? rc : json_add_str(out, name, strlen(name));
	return rc ? rc : buf_addc(out, ':');
}

static int add_num(struct buf *out, const char *name, double v)
{
	int rc = add_key(out, name);

	/* Ten digits keep a position to the centimetre. */
	return rc ? rc : buf_printf(out, "%.10g", v == 0 ? 0.0 : v);
}

/* The decoders: a field that is empty ships as null; one that holds what
 * cannot be its value refuses the sentence, with the reason. */
struct dec {
	const struct sentence *s;
	struct buf *out;
	char *why;
	size_t whylen;
	int err;                /* first error: -EINVAL (why set) or -ENOMEM */
};

static const struct field *fld(struct dec *d, size_t i)
{
	static const struct field none = { "", 0 };

	return i < d->s->n ? &d->s->f[i] : &none;
}

static void put_rc(struct dec *d, int rc)
{
	if (!d->err && rc)
		d->err = rc;
}

static void bad(struct dec *d, size_t i, const char *what)
{
	char tmp[32];

	if (!d->err)
		d->err = fail(d->why, d->whylen, "%s field %zu (%s): '%s' is not valid", d->s->type,
			      i + 1, what, show(fld(d, i), tmp, sizeof(tmp)));
}

static void put_null(struct dec *d, const char *name)
{
	int rc = add_key(d->out, name);

	put_rc(d, rc ? rc : buf_adds(d->out, "null"));
}

static void dec_num(struct dec *d, const char *name, size_t i)
{
	double v;

	if (d->err)
		return;
	if (!fld(d, i)->len)
		put_null(d, name);
	else if (number(fld(d, i), &v))
		put_rc(d, add_num(d->out, name, v));
	else
		bad(d, i, name);
}

static void dec_int(struct dec *d, const char *name, size_t i)
{
	const struct field *f = fld(d, i);
	double v;

	if (d->err)
		return;
	if (!f->len)
		put_null(d, name);
	else if (f->len <= 9 && strspn(f->p, "0123456789") >= f->len && number(f, &v))
		put_rc(d, add_num(d->out, name, v));
	else
		bad(d, i, name);
}

static void dec_str(struct dec *d, const char *name, size_t i)
{
	const struct field *f = fld(d, i);
	int rc;

	if (d->err)
		return;
	if (!f->len) {
		put_null(d, name);
		return;
	}
	rc = add_key(d->out, name);
	put_rc(d, rc ? rc : json_add_str(d->out, f->p, f->len));
}

/* A status field, A (valid) or V (void): "valid": true/false. */
static void dec_valid(struct dec *d, size_t i)
{
	const struct field *f = fld(d, i);
	int rc;

	if (d->err)
		return;
	if (!f->len) {
		put_null(d, "valid");
		return;
	}
	if (f->len != 1 || (f->p[0] != 'A' && f->p[0] != 'V')) {
		bad(d, i, "status");
		return;
	}
	rc = add_key(d->out, "valid");
	put_rc(d, rc ? rc : buf_adds(d->out, f->p[0] == 'A' ? "true" : "false"));
}

/* hhmmss[.sss] -> "hh:mm:ss[.sss]" in tmp (at least 24 bytes); false if
 * it is not a time. */
static bool time_text(const struct field *f, char *tmp)
{
	int hh, mm, ss;

	if (f->len < 6 || f->len > 16 || strspn(f->p, "0123456789") < 6)
		return false;
	if (f->len > 6 && (f->p[6] != '.' || f->len == 7 ||
			   strspn(f->p + 7, "0123456789") < f->len - 7))
		return false;
	hh = (f->p[0] - '0') * 10 + f->p[1] - '0';
	mm = (f->p[2] - '0') * 10 + f->p[3] - '0';
	ss = (f->p[4] - '0') * 10 + f->p[5] - '0';
	if (hh > 23 || mm > 59 || ss > 60)
		return false;
	snprintf(tmp, 24, "%.2s:%.2s:%.*s", f->p, f->p + 2, (int)(f->len - 4), f->p + 4);
	return true;
}

static void dec_time(struct dec *d, size_t i, char *tmp)
{
	int rc;

	tmp[0] = '\0';
	if (d->err)
		return;
	if (!fld(d, i)->len) {
		put_null(d, "time");
		return;
	}
	if (!time_text(fld(d, i), tmp)) {
		tmp[0] = '\0';
		bad(d, i, "time");
		return;
	}
	rc = add_key(d->out, "time");
	put_rc(d, rc ? rc : json_add_str(d->out, tmp, strlen(tmp)));
}

static bool days_ok(int y, int m, int dd)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	if (m < 1 || m > 12 || dd < 1 || dd > mdays[m - 1])
		return false;
	return m != 2 || dd < 29 || (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
}

/* "date" (YYYY-MM-DD) and, when the time is known, "datetime" in UTC. */
static void put_date(struct dec *d, int y, int m, int dd, const char *time)
{
	int rc = add_key(d->out, "date");

	rc = rc ? rc : buf_printf(d->out, "\"%04d-%02d-%02d\"", y, m, dd);
	if (!rc && time[0]) {
		rc = add_key(d->out, "datetime");
		rc = rc ? rc : buf_printf(d->out, "\"%04d-%02d-%02dT%sZ\"", y, m, dd, time);
	}
	put_rc(d, rc);
}

/* ddmmyy: years 80-99 are 19xx, the rest 20xx (GPS started in 1980). */
static void dec_ddmmyy(struct dec *d, size_t i, const char *time)
{
	const struct field *f = fld(d, i);
	int dd, m, y;

	if (d->err)
		return;
	if (!f->len) {
		put_null(d, "date");
		return;
	}
	if (f->len != 6 || strspn(f->p, "0123456789") < 6) {
		bad(d, i, "date");
		return;
	}
	dd = (f->p[0] - '0') * 10 + f->p[1] - '0';
	m = (f->p[2] - '0') * 10 + f->p[3] - '0';
	y = (f->p[4] - '0') * 10 + f->p[5] - '0';
	y += y >= 80 ? 1900 : 2000;
	if (!days_ok(y, m, dd)) {
		bad(d, i, "date");
		return;
	}
	put_date(d, y, m, dd, time);
}

/* A latitude (ddmm.mmmm, hemisphere N/S) or longitude (dddmm.mmmm, E/W)
 * in fields i and i + 1, as signed decimal degrees. */
static void dec_coord(struct dec *d, const char *name, size_t i, bool lon)
{
	const struct field *v = fld(d, i), *h = fld(d, i + 1);
	size_t deg = lon ? 3 : 2;
	double x, min;
	int whole = 0;

	if (d->err)
		return;
	if (!v->len && !h->len) {
		put_null(d, name);
		return;
	}
	if (v->len < deg + 2 || strspn(v->p, "0123456789") < deg + 2 || !number(v, &x)) {
		bad(d, i, name);
		return;
	}
	for (size_t k = 0; k < deg; k++)
		whole = whole * 10 + v->p[k] - '0';
	min = x - whole * 100.0;
	if (min >= 60 || whole > (lon ? 180 : 90)) {
		bad(d, i, name);
		return;
	}
	x = whole + min / 60;
	if (x > (lon ? 180 : 90)) {
		bad(d, i, name);
		return;
	}
	if (h->len != 1 || !strchr(lon ? "EW" : "NS", h->p[0])) {
		bad(d, i + 1, lon ? "E or W" : "N or S");
		return;
	}
	if (h->p[0] == 'S' || h->p[0] == 'W')
		x = -x;
	put_rc(d, add_num(d->out, name, x));
}

/* A magnetic variation: degrees in field i, E or W in field i + 1 (W < 0). */
static void dec_variation(struct dec *d, size_t i)
{
	const struct field *v = fld(d, i), *h = fld(d, i + 1);
	double x;

	if (d->err)
		return;
	if (!v->len) {
		put_null(d, "magnetic_variation_deg");
		return;
	}
	if (!number(v, &x) || x < 0 || x > 180) {
		bad(d, i, "magnetic variation");
		return;
	}
	if (h->len != 1 || (h->p[0] != 'E' && h->p[0] != 'W')) {
		bad(d, i + 1, "E or W");
		return;
	}
	put_rc(d, add_num(d->out, "magnetic_variation_deg", h->p[0] == 'W' ? -x : x));
}

static void need_fields(struct dec *d, size_t n)
{
	if (!d->err && d->s->n < n)
		d->err = fail(d->why, d->whylen, "%s sentence has %zu fields, at least %zu expected",
			      d->s->type, d->s->n, n);
}

/* $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47 */
static void dec_gga(struct dec *d)
{
	char t[24];

	need_fields(d, 14);
	dec_time(d, 0, t);
	dec_coord(d, "lat", 1, false);
	dec_coord(d, "lon", 3, true);
	dec_int(d, "fix_quality", 5);
	dec_int(d, "satellites", 6);
	dec_num(d, "hdop", 7);
	dec_num(d, "altitude_m", 8);
	dec_num(d, "geoid_separation_m", 10);
	dec_num(d, "dgps_age_s", 12);
	dec_str(d, "dgps_station", 13);
}

/* $GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A */
static void dec_rmc(struct dec *d)
{
	char t[24];

	need_fields(d, 11);
	dec_time(d, 0, t);
	dec_valid(d, 1);
	dec_coord(d, "lat", 2, false);
	dec_coord(d, "lon", 4, true);
	dec_num(d, "speed_kn", 6);
	dec_num(d, "course_deg", 7);
	dec_ddmmyy(d, 8, t);
	dec_variation(d, 9);
	if (d->s->n > 11)
		dec_str(d, "mode", 11);
}

/* $GPGLL,4916.45,N,12311.12,W,225444,A,*1D */
static void dec_gll(struct dec *d)
{
	char t[24];

	need_fields(d, 6);
	dec_coord(d, "lat", 0, false);
	dec_coord(d, "lon", 2, true);
	dec_time(d, 4, t);
	dec_valid(d, 5);
	if (d->s->n > 6)
		dec_str(d, "mode", 6);
}

/* $GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48 */
static void dec_vtg(struct dec *d)
{
	need_fields(d, 8);
	dec_num(d, "course_deg", 0);
	dec_num(d, "course_magnetic_deg", 2);
	dec_num(d, "speed_kn", 4);
	dec_num(d, "speed_kmh", 6);
	if (d->s->n > 8)
		dec_str(d, "mode", 8);
}

/* $GPZDA,201530.00,04,07,2002,00,00*60 */
static void dec_zda(struct dec *d)
{
	const struct field *fd = fld(d, 1), *fm = fld(d, 2), *fy = fld(d, 3);
	char t[24];
	int dd, m, y;

	need_fields(d, 4);
	dec_time(d, 0, t);
	if (d->err)
		return;
	if (!fd->len && !fm->len && !fy->len) {
		put_null(d, "date");
	} else if (fd->len != 2 || fm->len != 2 || fy->len != 4 ||
		   strspn(fd->p, "0123456789") < 2 || strspn(fm->p, "0123456789") < 2 ||
		   strspn(fy->p, "0123456789") < 4) {
		bad(d, 1, "date");
	} else {
		dd = atoi(fd->p);
		m = atoi(fm->p);
		y = atoi(fy->p);
		if (days_ok(y, m, dd))
			put_date(d, y, m, dd, t);
		else
			bad(d, 1, "date");
	}
}

/* $GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39 */
static void dec_gsa(struct dec *d)
{
	bool first = true;
	int rc;

	need_fields(d, 17);
	dec_str(d, "mode", 0);
	dec_int(d, "fix_type", 1);
	if (d->err)
		return;
	rc = add_key(d->out, "satellites_used");
	rc = rc ? rc : buf_addc(d->out, '[');
	for (size_t i = 2; !rc && i < 14; i++) {
		const struct field *f = fld(d, i);
		double v;

		if (!f->len)
			continue;
		if (f->len > 3 || strspn(f->p, "0123456789") < f->len || !number(f, &v)) {
			bad(d, i, "satellite");
			return;
		}
		rc = first ? 0 : buf_addc(d->out, ',');
		rc = rc ? rc : buf_printf(d->out, "%d", (int)v);
		first = false;
	}
	put_rc(d, rc ? rc : buf_addc(d->out, ']'));
	dec_num(d, "pdop", 14);
	dec_num(d, "hdop", 15);
	dec_num(d, "vdop", 16);
}

static const struct {
	const char *type;
	void (*decode)(struct dec *d);
} decoders[] = {
	{ "GGA", dec_gga }, { "RMC", dec_rmc }, { "GLL", dec_gll },
	{ "VTG", dec_vtg }, { "ZDA", dec_zda }, { "GSA", dec_gsa },
};

/* Check the frame and checksum, split the fields. */
static int split(const char *data, size_t len, struct sentence *s, char *why, size_t whylen)
{
	const char *star, *body;
	size_t blen;
	unsigned sum = 0;
	int hi, lo;

	while (len && (data[len - 1] == ' ' || data[len - 1] == '\t' || data[len - 1] == '\r'))
		len--;
	if (!len)
		return fail(why, whylen, "empty line, not an NMEA sentence");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];

		if (c < 0x20 || c > 0x7e)
			return fail(why, whylen,
				    "not an NMEA sentence: byte 0x%02x at %zu is not printable ASCII "
				    "(a wrong baud rate?)", c, i);
	}
	if (data[0] != '$' && data[0] != '!')
		return fail(why, whylen, "not an NMEA sentence: it does not start with '$' or '!'");
	star = memchr(data, '*', len);
	if (!star)
		return fail(why, whylen, "NMEA checksum missing: no '*hh' at the end");
	if ((size_t)(data + len - star) != 3 || (hi = hexval(star[1])) < 0 || (lo = hexval(star[2])) < 0)
		return fail(why, whylen, "NMEA checksum malformed: '%.*s' is not '*' and two hex digits",
			    (int)(data + len - star > 8 ? 8 : data + len - star), star);
	body = data + 1;
	blen = (size_t)(star - body);
	for (size_t i = 0; i < blen; i++)
		sum ^= (unsigned char)body[i];
	if (sum != (unsigned)(hi * 16 + lo))
		return fail(why, whylen, "NMEA checksum mismatch: the sentence says %02X, its bytes give %02X",
			    (unsigned)(hi * 16 + lo), sum);
	/* The address: talker and type (GPGGA), or P and a maker's id. */
	{
		const char *c = memchr(body, ',', blen);
		size_t alen = c ? (size_t)(c - body) : blen;

		if (alen < 2 || alen >= sizeof(s->type) + 2 ||
		    strspn(body, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") < alen ||
		    (body[0] != 'P' && alen < 3))
			return fail(why, whylen, "NMEA address '%.*s' is not a talker and a sentence type",
				    (int)(alen > 16 ? 16 : alen), body);
		s->n = 0;
		if (!c)
			return 0;
		for (const char *p = c + 1;; ) {
			const char *e = memchr(p, ',', (size_t)(star - p));

			if (s->n == MAX_FIELDS)
				return fail(why, whylen, "NMEA sentence has more than %d fields", MAX_FIELDS);
			s->f[s->n].p = p;
			s->f[s->n].len = e ? (size_t)(e - p) : (size_t)(star - p);
			s->n++;
			if (!e)
				break;
			p = e + 1;
		}
	}
	return 0;
}

int parse_nmea(const char *data, size_t len, struct buf *out, char *why, size_t whylen)
{
	struct sentence s;
	const char *addr;
	size_t alen, tlen;
	struct dec d;
	int rc;

	rc = split(data, len, &s, why, whylen);
	if (rc)
		return rc;
	addr = data + 1;
	alen = strcspn(addr, ",*");
	tlen = addr[0] == 'P' ? 1 : 2;
	snprintf(s.type, sizeof(s.type), "%.*s", (int)(alen - tlen), addr + tlen);
	rc = buf_adds(out, "{\"talker\":");
	rc = rc ? rc : json_add_str(out, addr, tlen);
	rc = rc ? rc : buf_adds(out, ",\"type\":");
	rc = rc ? rc : json_add_str(out, s.type, strlen(s.type));
	rc = rc ? rc : buf_adds(out, ",\"fields\":[");
	for (size_t i = 0; !rc && i < s.n; i++) {
		rc = i ? buf_addc(out, ',') : 0;
		if (!rc)
			rc = s.f[i].len ? json_add_str(out, s.f[i].p, s.f[i].len) : buf_adds(out, "null");
	}
	rc = rc ? rc : buf_addc(out, ']');
	if (rc)
		return rc;
	d = (struct dec){ &s, out, why, whylen, 0 };
	if (tlen == 2) {
		for (size_t i = 0; i < sizeof(decoders) / sizeof(decoders[0]); i++)
			if (!strcmp(s.type, decoders[i].type))
				decoders[i].decode(&d);
	}
	if (d.err)
		return d.err;
	return buf_addc(out, '}');
}
