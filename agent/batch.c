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

int batch_encode_line(struct buf *out, const char *agent_id, const struct qrec *r)
{
	char ts[32];
	size_t start = out->len;
	int rc;

	batch_format_ts(ts, r->ts_wall_ms);
	rc = buf_reserve(out, r->len + strlen(r->key) + strlen(agent_id) + 160);
	if (rc)
		return rc;
	rc = buf_printf(out, "{\"agent\":\"%s\",\"stream\":\"%s\",\"seq\":%" PRId64 ",\"key\":",
			agent_id, r->stream, r->seq);
	if (!rc)
		rc = json_add_str(out, r->key, strlen(r->key));
	if (!rc)
		rc = buf_printf(out, ",\"ts\":\"%s\",\"mono_ms\":%" PRId64 ",\"clock\":\"%s\",%s\"data\":", ts,
				r->ts_mono_ms, r->clock == CLOCK_SYNCED ? "synced" : "unsynced",
				r->kind == REC_GAP ? "\"kind\":\"gap\"," : "");
	if (!rc)
		rc = buf_add(out, r->data, r->len);
	if (!rc)
		rc = buf_add(out, "}\n", 2);
	if (rc)
		out->len = start;
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
