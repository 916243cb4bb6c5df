/* parse.h - parsers that turn a raw record into the JSON text the queue holds.
 *
 *   raw   the bytes as a JSON string (must be valid UTF-8; NUL is escaped)
 *   json  a validated JSON value, stored as given (surrounding blanks trimmed)
 *   csv   an object {"<header field>": "<value>", ...} from an RFC 4180 line
 *         and the file's header line; values stay strings
 *   influx  an object {"measurement":..,"tags":{..},"fields":{..},"time":..}
 *         from one InfluxDB line protocol line (parse_influx.c)
 *
 * parse_record() returns 0 with the JSON appended to out, -EINVAL with a
 * reason in why (the record goes to the DLQ), or -ENOMEM.
 */
#ifndef AGENT_PARSE_H
#define AGENT_PARSE_H

#include <stddef.h>

#include "buf.h"

int parse_record(int parser, const char *data, size_t len, const char *header,
		 size_t header_len, struct buf *out, char *why, size_t whylen);

/* One InfluxDB line protocol line as a JSON object (parse_influx.c); the
 * same contract as parse_record(). */
int parse_influx(const char *data, size_t len, struct buf *out, char *why, size_t whylen);

/* Split one CSV line into fields (RFC 4180 quoting; a trailing CR is
 * dropped). Calls cb for each field with its unquoted value; cb returns 0
 * or -errno to stop. Returns the field count or -EINVAL with why. */
typedef int (*csv_field_cb)(const char *val, size_t len, void *arg);
int csv_split(const char *line, size_t len, csv_field_cb cb, void *arg,
	      char *why, size_t whylen);

#endif
