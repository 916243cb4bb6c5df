/* parse.h - parsers that turn a raw record into the JSON text the queue holds.
 *
 *   raw   the bytes as a JSON string (must be valid UTF-8; NUL is escaped)
 *   json  a validated JSON value, stored as given (surrounding blanks trimmed)
 *   csv   an object {"<header field>": "<value>", ...} from an RFC 4180 line
 *         and the file's header line; values stay strings
 *   nmea  an NMEA 0183 sentence with a valid *hh checksum:
 *         {"talker":"GP","type":"GGA","fields":["123519",...,null]} (empty
 *         fields null), and for GGA, RMC, GLL, VTG, ZDA and GSA the decoded
 *         values too (lat/lon in signed decimal degrees, time, date, ...);
 *         see parse_nmea.c
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

/* The nmea parser (parse_nmea.c): 0 with the object appended, -EINVAL
 * with why (no or a wrong checksum, not a sentence, a field that cannot be
 * its value), or -ENOMEM. On an error out may hold a partial object. */
int parse_nmea(const char *data, size_t len, struct buf *out, char *why, size_t whylen);
/* One InfluxDB line protocol line as a JSON object (parse_influx.c); the
 * same contract as parse_record(). */
int parse_influx(const char *data, size_t len, struct buf *out, char *why, size_t whylen);

/* Write a reason into why (when given) and return -EINVAL: how every
 * parser refuses a record. */
int parse_fail(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Split one CSV line into fields (RFC 4180 quoting; a trailing CR is
 * dropped). Calls cb for each field with its unquoted value; cb returns 0
 * or -errno to stop. Returns the field count or -EINVAL with why. */
typedef int (*csv_field_cb)(const char *val, size_t len, void *arg);
int csv_split(const char *line, size_t len, csv_field_cb cb, void *arg,
	      char *why, size_t whylen);

#endif
