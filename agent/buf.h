/* buf.h - growable byte buffers and a small JSON writer.
 *
 * struct buf owns its bytes (released with buf_release); p is always
 * NUL-terminated when non-NULL, so text can be used as a C string.
 * Functions return 0 or -ENOMEM.
 */
#ifndef AGENT_BUF_H
#define AGENT_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	char *p;
	size_t len, cap;
};

#define BUF_INIT { NULL, 0, 0 }

int buf_reserve(struct buf *b, size_t extra);
/* Make room for exactly cap bytes (with the NUL) now, where the final size
 * is known, instead of growing by doubling to up to twice that. */
int buf_presize(struct buf *b, size_t cap);
int buf_add(struct buf *b, const void *data, size_t len);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);   /* len = 0, keeps memory */
void buf_release(struct buf *b); /* frees memory */

/* Append s as a JSON string literal (with quotes). The input should be
 * valid UTF-8 (see utf8_valid); control characters are escaped, and any
 * ill-formed byte is written as \ufffd so the output is always valid JSON.
 * On -ENOMEM b is left as it was. */
int json_add_str(struct buf *b, const char *s, size_t len);
/* Append data in standard base64 (RFC 4648, with '=' padding, no line
 * breaks). 0 or -ENOMEM. */
int buf_add_base64(struct buf *b, const void *data, size_t len);

/* A JSON writer that tracks commas; keys are ignored inside arrays.
 * Errors are sticky in w->err and reported by jw_finish(). */
struct status_buf {
	struct buf b;
	int depth;
	bool first[32];
	uint32_t arrays; /* bit n set: level n is an array */
	int err;
};
void jw_init(struct status_buf *w);
void jw_obj_begin(struct status_buf *w, const char *key);
void jw_obj_end(struct status_buf *w);
void jw_arr_begin(struct status_buf *w, const char *key);
void jw_arr_end(struct status_buf *w);
void jw_null(struct status_buf *w, const char *key);
void jw_double(struct status_buf *w, const char *key, double v);
/* Raw JSON value text (already valid JSON). */
void jw_raw(struct status_buf *w, const char *key, const char *json, size_t len);
void jw_str(struct status_buf *w, const char *key, const char *val); /* NULL -> null */
void jw_int(struct status_buf *w, const char *key, int64_t v);
void jw_bool(struct status_buf *w, const char *key, bool v);
/* 0, -ENOMEM, or -EINVAL when begin/end calls do not pair up, nesting
 * passes 32, or a value inside an object has no key. */
int jw_finish(struct status_buf *w);

/* UTF-8 validation (no overlongs, no surrogates, max U+10FFFF).
 * Returns true if valid; otherwise *bad_off gets the first bad byte. */
bool utf8_valid(const char *s, size_t len, size_t *bad_off);

/* Strict RFC 8259 JSON validation of one value (surrounding whitespace
 * allowed), with UTF-8 checking and a nesting limit of 64. Returns true if
 * valid; otherwise writes a short reason with the byte offset into why. */
bool json_valid(const char *s, size_t len, char *why, size_t whylen);

#endif
