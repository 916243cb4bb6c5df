/* rec.h - the core's side of the record builder (drivers see driver.h). */
#ifndef AGENT_REC_H
#define AGENT_REC_H

#include "buf.h"
#include "driver.h"

/* NULL on out of memory; rec_free() accepts NULL. */
struct rec *rec_new(void);
void rec_free(struct rec *r);
/* Empty r and open its top-level object; max_bytes 0 = no limit. */
void rec_reset(struct rec *r, size_t max_bytes);
/* Close the record: data and len point into r until the next reset.
 * 0, or the first error: -ENOMEM, -EINVAL (nesting, an empty or reserved
 * name), -EMSGSIZE (over max_bytes, or a path too long). */
int rec_finish(struct rec *r, const char **data, size_t *len);
/* Make err the builder's error, unless it already has one. */
void rec_set_error(struct rec *r, int err);
/* Add a JSON value the caller has validated (input_rec_parsed()). */
void rec_json(struct rec *r, const char *name, const char *json, size_t len);

#endif
