/* batch.h - the wire encoding of records and batches (docs/wire-format.md).
 *
 * One record becomes one NDJSON line:
 *   {"agent":"gw-01","stream":"sensors","seq":42,"key":"tail:...",
 *    "ts":"2026-11-22T10:00:00.123Z","mono_ms":81234,"clock":"synced",
 *    "data":<the record's JSON>}
 * A gap marker carries "kind":"gap" before "data". A batch body is one zstd
 * frame of such lines.
 */
#ifndef AGENT_BATCH_H
#define AGENT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "queue.h"

/* Append r as one line (with its '\n'). 0 or -ENOMEM. */
int batch_encode_line(struct buf *out, const char *agent_id, const struct qrec *r);

/* The batch id: 32 hex digits of SHA-256 over agent id, output name and the
 * seq range, so a retry of the same records always carries the same id. */
void batch_make_id(char out[33], const char *agent_id, const char *output, int64_t first_seq,
		   int64_t last_seq);

/* Format wall-clock ms as RFC 3339 UTC with milliseconds ("...T..:..:..123Z").
 * out must hold 32 bytes. */
void batch_format_ts(char *out, int64_t wall_ms);

#endif
