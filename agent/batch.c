/* batch.c - record lines and batch ids, the contract with the lake. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "batch.h"

void batch_format_ts(char *out, int64_t wall_ms)
{
	/* Formatting the date is the costly part; lines of one batch mostly
	 * share their second, so the last one is remembered. */
	static int64_t cached_sec = INT64_MIN;
	static char cached[24];
	int64_t sec = wall_ms >= 0 ? wall_ms / 1000 : (wall_ms - 999) / 1000;
	int ms = (int)(wall_ms - sec * 1000);

	if (sec != cached_sec) {
		time_t t = (time_t)sec;
		struct tm tm;

		gmtime_r(&t, &tm);
		strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
		cached_sec = sec;
	}
	snprintf(out, 32, "%s.%03dZ", cached, ms);
}

/* Decimal digits of v at p (which has room for 20 + sign); returns the end. */
static char *put_int(char *p, int64_t v)
{
	char tmp[24];
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	int n = 0;

	if (v < 0)
		*p++ = '-';
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_str(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

/* This runs for every record shipped: plain copies, no format parsing.
 * Agent ids and stream names are checked names (no characters to escape). */
int batch_encode_line(struct buf *out, const char *agent_id, const struct qrec *r)
{
	size_t start = out->len, klen = strlen(r->key);
	char ts[32], *p;
	int rc;

	batch_format_ts(ts, r->ts_wall_ms);
	rc = buf_reserve(out, strlen(agent_id) + strlen(r->stream) + 64);
	if (rc)
		return rc;
	p = out->p + out->len;
	p = put_str(p, "{\"agent\":\"");
	p = put_str(p, agent_id);
	p = put_str(p, "\",\"stream\":\"");
	p = put_str(p, r->stream);
	p = put_str(p, "\",\"seq\":");
	p = put_int(p, r->seq);
	p = put_str(p, ",\"key\":");
	out->len = (size_t)(p - out->p);
	rc = json_add_str(out, r->key, klen);
	if (rc)
		goto out_undo;
	rc = buf_reserve(out, r->len + 128);
	if (rc)
		goto out_undo;
	p = out->p + out->len;
	p = put_str(p, ",\"ts\":\"");
	p = put_str(p, ts);
	p = put_str(p, "\",\"mono_ms\":");
	p = put_int(p, r->ts_mono_ms);
	p = put_str(p, r->clock == CLOCK_SYNCED ? ",\"clock\":\"synced\"," : ",\"clock\":\"unsynced\",");
	if (r->kind == REC_GAP)
		p = put_str(p, "\"kind\":\"gap\",");
	p = put_str(p, "\"data\":");
	memcpy(p, r->data, r->len);
	p += r->len;
	*p++ = '}';
	*p++ = '\n';
	*p = '\0';
	out->len = (size_t)(p - out->p);
	return 0;
out_undo:
	out->len = start;
	out->p[start] = '\0';
	return rc;
}

void batch_make_id(char out[33], const char *agent_id, const char *output, int64_t first_seq,
		   int64_t last_seq)
{
	char text[256];
	unsigned char d[32];
	int n;

	n = snprintf(text, sizeof(text), "%s/%s/%" PRId64 "/%" PRId64, agent_id, output, first_seq,
		     last_seq);
	if (n < 0 || (size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	mbedtls_sha256((const unsigned char *)text, (size_t)n, d, 0);
#else
	mbedtls_sha256_ret((const unsigned char *)text, (size_t)n, d, 0);
#endif
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}
