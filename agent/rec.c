/* rec.c - the record builder drivers use instead of writing JSON by hand.
 *
 * A record is one JSON object of named fields, written with the status
 * JSON writer (commas, escaping, nesting, sticky errors). Units and
 * qualities are gathered on the side, keyed by the field's dotted path, and
 * appended as two flat objects at the end, so a value stays a plain number
 * that a lake reads as a column, and a reading that failed is a null whose
 * reason travels beside it.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mem.h"
#include "rec.h"

#define REC_MAX_DEPTH 16
#define REC_PATH_MAX 512

struct rec {
	struct status_buf w;
	struct buf units, quality;   /* "path":"text" pairs, comma-separated */
	char path[REC_PATH_MAX];
	size_t plen[REC_MAX_DEPTH + 1]; /* path length at each depth */
	int depth;                   /* 0: outside the record; 1: its top level */
	int err;
	size_t max_bytes;
};

static void rec_fail(struct rec *r, int err)
{
	if (!r->err)
		r->err = err;
}

void rec_set_error(struct rec *r, int err)
{
	if (r)
		rec_fail(r, err);
}

struct rec *rec_new(void)
{
	return xcalloc(1, sizeof(struct rec));
}

void rec_free(struct rec *r)
{
	if (!r)
		return;
	buf_release(&r->w.b);
	buf_release(&r->units);
	buf_release(&r->quality);
	xfree(r);
}

void rec_reset(struct rec *r, size_t max_bytes)
{
	struct buf keep = r->w.b;     /* the writer's buffer, reused */

	buf_reset(&keep);
	jw_init(&r->w);
	r->w.b = keep;
	buf_reset(&r->units);
	buf_reset(&r->quality);
	r->path[0] = '\0';
	r->plen[0] = r->plen[1] = 0;
	r->err = 0;
	r->max_bytes = max_bytes;
	r->depth = 1;
	jw_obj_begin(&r->w, NULL);
}

/* The dotted path of `name` in the current object, or NULL (kept error). */
static const char *path_of(struct rec *r, const char *name, char *out, size_t len)
{
	size_t base = r->plen[r->depth];
	int n;

	if (!name || !*name) {
		rec_fail(r, -EINVAL);
		return NULL;
	}
	n = base ? snprintf(out, len, "%.*s.%s", (int)base, r->path, name)
		 : snprintf(out, len, "%s", name);
	if (n < 0 || (size_t)n >= len) {
		rec_fail(r, -EMSGSIZE);
		return NULL;
	}
	return out;
}

static void side_add(struct rec *r, struct buf *b, const char *name, const char *text)
{
	char path[REC_PATH_MAX];

	if (!text || !path_of(r, name, path, sizeof(path)))
		return;
	if ((b->len && buf_addc(b, ',')) || json_add_str(b, path, strlen(path)) ||
	    buf_addc(b, ':') || json_add_str(b, text, strlen(text)))
		rec_fail(r, -ENOMEM);
}

static bool usable(struct rec *r, const char *name)
{
	if (!r || r->err)
		return false;
	if (r->depth < 1 || !name || !*name) {
		rec_fail(r, -EINVAL);
		return false;
	}
	/* The side objects' names are taken at the top level. */
	if (r->depth == 1 && (!strcmp(name, "units") || !strcmp(name, "quality"))) {
		rec_fail(r, -EINVAL);
		return false;
	}
	return true;
}

void rec_str(struct rec *r, const char *name, const char *s)
{
	if (usable(r, name))
		jw_str(&r->w, name, s);
}

void rec_strn(struct rec *r, const char *name, const char *s, size_t len)
{
	if (!usable(r, name))
		return;
	if (!s) {
		jw_null(&r->w, name);
		return;
	}
	jw_raw(&r->w, name, "", 0);     /* the key and its comma */
	if (!r->w.err && json_add_str(&r->w.b, s, len))
		rec_fail(r, -ENOMEM);
}

void rec_num(struct rec *r, const char *name, double v, const char *unit)
{
	if (!usable(r, name))
		return;
	jw_double(&r->w, name, v);
	side_add(r, &r->units, name, unit);
	if (!isfinite(v))
		side_add(r, &r->quality, name, "nan");
}

void rec_int(struct rec *r, const char *name, int64_t v, const char *unit)
{
	if (!usable(r, name))
		return;
	jw_int(&r->w, name, v);
	side_add(r, &r->units, name, unit);
}

void rec_uint(struct rec *r, const char *name, uint64_t v, const char *unit)
{
	char tmp[24];
	int n;

	if (!usable(r, name))
		return;
	n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	jw_raw(&r->w, name, tmp, (size_t)n);
	side_add(r, &r->units, name, unit);
}

void rec_base64(struct rec *r, const char *name, const void *data, size_t len)
{
	if (!usable(r, name))
		return;
	jw_raw(&r->w, name, "\"", 1);
	if (!r->w.err && (buf_add_base64(&r->w.b, data, len) || buf_addc(&r->w.b, '"')))
		rec_fail(r, -ENOMEM);
}

void rec_json(struct rec *r, const char *name, const char *json, size_t len)
{
	if (usable(r, name))
		jw_raw(&r->w, name, json, len);
}

void rec_bool(struct rec *r, const char *name, bool v)
{
	if (usable(r, name))
		jw_bool(&r->w, name, v);
}

void rec_null(struct rec *r, const char *name, const char *unit, const char *quality)
{
	if (!usable(r, name))
		return;
	jw_null(&r->w, name);
	side_add(r, &r->units, name, unit);
	side_add(r, &r->quality, name, quality ? quality : "unknown");
}

void rec_quality(struct rec *r, const char *name, const char *quality)
{
	if (usable(r, name))
		side_add(r, &r->quality, name, quality);
}

void rec_obj_begin(struct rec *r, const char *name)
{
	char path[REC_PATH_MAX];

	if (!usable(r, name) || !path_of(r, name, path, sizeof(path)))
		return;
	if (r->depth >= REC_MAX_DEPTH) {
		rec_fail(r, -EINVAL);
		return;
	}
	jw_obj_begin(&r->w, name);
	memcpy(r->path, path, strlen(path) + 1);
	r->plen[++r->depth] = strlen(path);
}

void rec_obj_end(struct rec *r)
{
	if (!r || r->err)
		return;
	if (r->depth < 2) {
		rec_fail(r, -EINVAL);
		return;
	}
	jw_obj_end(&r->w);
	r->depth--;
	r->path[r->plen[r->depth]] = '\0';
}

static void side_emit(struct rec *r, const char *key, const struct buf *b)
{
	if (!b->len)
		return;
	jw_raw(&r->w, key, "{", 1);
	if (!r->w.err && (buf_add(&r->w.b, b->p, b->len) || buf_addc(&r->w.b, '}')))
		rec_fail(r, -ENOMEM);
}

int rec_finish(struct rec *r, const char **data, size_t *len)
{
	int rc;

	if (r->err)
		return r->err;
	if (r->depth != 1)
		return -EINVAL;
	side_emit(r, "units", &r->units);
	side_emit(r, "quality", &r->quality);
	jw_obj_end(&r->w);
	r->depth = 0;
	rc = r->err ? r->err : jw_finish(&r->w);
	if (rc)
		return rc;
	if (r->max_bytes && r->w.b.len > r->max_bytes)
		return -EMSGSIZE;
	*data = r->w.b.p;
	*len = r->w.b.len;
	return 0;
}
