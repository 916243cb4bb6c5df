/* fuzz_parse.c - fuzz target for the record parsers and the validators they
 * rest on: whatever the bytes, nothing may crash, leak or overrun, and any
 * text a parser accepts must be JSON that json_valid accepts too.
 *
 * Every parser sees every input: raw, json, csv (first line as the header)
 * and influx (line protocol).
 *
 * Built with -fsanitize=fuzzer for libFuzzer, or with regression.c to replay
 * the committed corpus in tests/fuzz/corpus/parse/.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "mem.h"
#include "parse.h"
#include "utf8_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "prefix"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

static void fail(const char *what, const char *why)
{
	fprintf(stderr, "fuzz_parse: invariant broken: %s (%s)\n", what,
		why ? why : "");
	abort();
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Runs one parser into a buffer that already holds PREFIX and checks what
 * any outcome must satisfy. Returns the parser's result. */
static int run_parser(int parser, const char *s, size_t len, const char *hdr,
		      size_t hdr_len, struct buf *out)
{
	char why[160], why2[160];
	int rc;

	buf_reset(out);
	if (buf_adds(out, PREFIX))
		fail("prefix", NULL);
	memset(why, 0x5a, sizeof(why));
	rc = parse_record(parser, s, len, hdr, hdr_len, out, why, sizeof(why));
	if (rc == 0) {
		if (out->len < PREFIX_LEN || memcmp(out->p, PREFIX, PREFIX_LEN))
			fail("output did not append", NULL);
		if (out->p[out->len] != '\0')
			fail("output not terminated", NULL);
		if (!json_valid(out->p + PREFIX_LEN, out->len - PREFIX_LEN,
				why2, sizeof(why2)))
			fail("accepted record is not JSON", why2);
	} else {
		if (rc != -EINVAL)
			fail("unexpected error code", NULL);
		if (out->len != PREFIX_LEN || strcmp(out->p, PREFIX))
			fail("output not restored after an error", why);
		if (!memchr(why, '\0', sizeof(why)) || !why[0])
			fail("no reason given", NULL);
	}
	return rc;
}

/* The same parse with the k-th allocation failing must give the same
 * answer or -ENOMEM, and leave out as it was on -ENOMEM. */
static void run_parser_oom(int parser, const char *s, size_t len,
			   const char *hdr, size_t hdr_len, int want, long k)
{
	struct buf out = BUF_INIT;
	int rc;

	if (buf_adds(&out, PREFIX))
		fail("prefix", NULL);
	mem_fail_after(k);
	rc = parse_record(parser, s, len, hdr, hdr_len, &out, NULL, 0);
	mem_fail_after(-1);
	if (rc != want && rc != -ENOMEM)
		fail("allocation failure changed the result", NULL);
	if (rc && (out.len != PREFIX_LEN || strcmp(out.p, PREFIX)))
		fail("output not restored after allocation failure", NULL);
	buf_release(&out);
}

/* An independent check of an NMEA sentence's frame: '$' or '!', then
 * bytes whose XOR is the two hex digits after the last '*' (trailing CR,
 * blanks and tabs aside). */
static bool nmea_checksum_ok(const char *s, size_t len)
{
	unsigned sum = 0, want;
	char hex[3];
	size_t i;

	while (len && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len < 4 || (s[0] != '$' && s[0] != '!') || s[len - 3] != '*')
		return false;
	for (i = 1; i < len - 3; i++)
		sum ^= (unsigned char)s[i];
	memcpy(hex, s + len - 2, 2);
	hex[2] = '\0';
	if (!strchr("0123456789abcdefABCDEF", hex[0]) || !strchr("0123456789abcdefABCDEF", hex[1]) ||
	    !hex[0] || !hex[1])
		return false;
	want = (unsigned)strtoul(hex, NULL, 16);
	return sum == want;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *nl = memchr(s, '\n', size);
	const char *hdr = s, *line = s;
	size_t hdr_len = 0, line_len = size, bad = SIZE_MAX;
	size_t base = mem_in_use();
	struct buf out = BUF_INIT;
	char why[8];
	bool utf8, json;
	int rc_raw, rc_json, rc_csv, rc_nmea, rc_influx;
	size_t a, b;

	utf8 = utf8_valid(s, size, &bad);
	if ((utf8 ? size : bad) != ref_utf8_bad(data, size))
		fail("utf8_valid disagrees with the reference decoder", NULL);

	/* A reason buffer too small for the text must be cut, not overrun. */
	memset(why, 0x5a, sizeof(why));
	json = json_valid(s, size, why, 5);
	if (!json && (why[4] != '\0' || why[5] != 0x5a))
		fail("json_valid overran its reason buffer", NULL);
	if (json && !utf8)
		fail("json_valid accepted invalid UTF-8", NULL);
	if (json != json_valid(s, size, NULL, 0))
		fail("json_valid depends on its reason buffer", NULL);

	rc_raw = run_parser(PARSER_RAW, s, size, NULL, 0, &out);
	if ((rc_raw == 0) != utf8)
		fail("raw parser and utf8_valid disagree", NULL);

	rc_json = run_parser(PARSER_JSON, s, size, NULL, 0, &out);
	if ((rc_json == 0) != json)
		fail("json parser and json_valid disagree", NULL);
	if (rc_json == 0) {
		/* The stored text is the input less surrounding blanks. */
		a = 0;
		b = size;
		while (b > a && is_blank(s[b - 1]))
			b--;
		while (a < b && is_blank(s[a]))
			a++;
		if (out.len - PREFIX_LEN != b - a ||
		    memcmp(out.p + PREFIX_LEN, s + a, b - a))
			fail("json parser changed the record", NULL);
	}

	if (nl) {
		hdr_len = (size_t)(nl - s);
		line = nl + 1;
		line_len = size - hdr_len - 1;
	}
	rc_csv = run_parser(PARSER_CSV, line, line_len, hdr, hdr_len, &out);
	if (rc_csv == 0 &&
	    csv_split(line, line_len, NULL, NULL, NULL, 0) < 1)
		fail("csv parser accepted a line csv_split refuses", NULL);

	/* A sentence is accepted only with its checksum right. */
	rc_nmea = run_parser(PARSER_NMEA, s, size, NULL, 0, &out);
	if (rc_nmea == 0 && !nmea_checksum_ok(s, size))
		fail("nmea parser accepted a sentence whose checksum is wrong", NULL);
	/* Line protocol: an object when accepted (run_parser checks it is
	 * JSON), and never for what is not valid UTF-8. */
	rc_influx = run_parser(PARSER_INFLUX, s, size, NULL, 0, &out);
	if (rc_influx == 0 && (!utf8 || out.p[PREFIX_LEN] != '{'))
		fail("influx parser accepted invalid UTF-8 or gave no object", NULL);

	/* Escaping anything at all gives valid JSON. */
	buf_reset(&out);
	if (json_add_str(&out, s, size) || !json_valid(out.p, out.len, NULL, 0))
		fail("escaped text is not JSON", NULL);
	buf_release(&out);

	if (size) {
		long k = data[size - 1] % 6;

		run_parser_oom(PARSER_RAW, s, size, NULL, 0, rc_raw, k);
		run_parser_oom(PARSER_JSON, s, size, NULL, 0, rc_json, k);
		run_parser_oom(PARSER_CSV, line, line_len, hdr, hdr_len,
			       rc_csv, k);
		run_parser_oom(PARSER_NMEA, s, size, NULL, 0, rc_nmea, k);
		run_parser_oom(PARSER_INFLUX, s, size, NULL, 0, rc_influx, k);
	}

	if (mem_in_use() != base)
		fail("memory leaked", NULL);
	return 0;
}
