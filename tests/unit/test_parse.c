/* test_parse.c - the raw, json and csv record parsers and the CSV splitter. */
#include <errno.h>
#include <stdbool.h>

#include "buf.h"
#include "config.h"
#include "mem.h"
#include "parse.h"
#include "test.h"

static char why[256];

/* Parses into a buffer that already holds "pre" and checks the result: on
 * success out must be "pre" + want, on failure still "pre" and why = want. */
static bool parses(int parser, const char *data, size_t len, const char *hdr,
		   int want_rc, const char *want)
{
	struct buf out = BUF_INIT;
	bool ok = true;
	int rc;

	buf_adds(&out, "pre");
	why[0] = '\0';
	rc = parse_record(parser, data, len, hdr, hdr ? strlen(hdr) : 0, &out,
			  why, sizeof(why));
	if (rc != want_rc) {
		fprintf(stderr, "  rc %d, expected %d (why: %s)\n", rc, want_rc,
			why);
		ok = false;
	} else if (rc == 0) {
		if (strncmp(out.p, "pre", 3) || strcmp(out.p + 3, want)) {
			fprintf(stderr, "  out '%s', expected 'pre%s'\n", out.p,
				want);
			ok = false;
		} else if (!json_valid(out.p + 3, out.len - 3, why, sizeof(why))) {
			fprintf(stderr, "  output is not JSON: %s\n", why);
			ok = false;
		}
	} else {
		if (strcmp(out.p, "pre") || out.len != 3) {
			fprintf(stderr, "  out not restored: '%s'\n", out.p);
			ok = false;
		}
		if (want && strcmp(why, want)) {
			fprintf(stderr, "  why '%s', expected '%s'\n", why, want);
			ok = false;
		}
	}
	buf_release(&out);
	return ok;
}

#define S(lit) lit, sizeof(lit) - 1

TEST(raw_records)
{
	CHECK(parses(PARSER_RAW, S("hello world"), NULL, 0, "\"hello world\""));
	CHECK(parses(PARSER_RAW, S(""), NULL, 0, "\"\""));
	CHECK(parses(PARSER_RAW, S("a\0b"), NULL, 0, "\"a\\u0000b\""));
	CHECK(parses(PARSER_RAW, S("say \"hi\"\t\\"), NULL, 0,
		     "\"say \\\"hi\\\"\\t\\\\\""));
	CHECK(parses(PARSER_RAW, S("\xc3\xa9t\xc3\xa9"), NULL, 0,
		     "\"\xc3\xa9t\xc3\xa9\""));
	CHECK(parses(PARSER_RAW, S("{\"not\":\"parsed\"}"), NULL, 0,
		     "\"{\\\"not\\\":\\\"parsed\\\"}\""));
	CHECK(parses(PARSER_RAW, S("ab\xff"), NULL, -EINVAL,
		     "invalid UTF-8 at byte 2"));
	CHECK(parses(PARSER_RAW, S("\xc0\x80"), NULL, -EINVAL,
		     "invalid UTF-8 at byte 0"));
	CHECK(parses(PARSER_RAW, S("x\xed\xa0\x80"), NULL, -EINVAL,
		     "invalid UTF-8 at byte 1"));
}

TEST(json_records)
{
	CHECK(parses(PARSER_JSON, S("{\"a\":1}"), NULL, 0, "{\"a\":1}"));
	CHECK(parses(PARSER_JSON, S("  [1, 2]\t\r\n"), NULL, 0, "[1, 2]"));
	CHECK(parses(PARSER_JSON, S("{\"a\":1}\r"), NULL, 0, "{\"a\":1}"));
	CHECK(parses(PARSER_JSON, S("42"), NULL, 0, "42"));
	CHECK(parses(PARSER_JSON, S("\"s\""), NULL, 0, "\"s\""));
	CHECK(parses(PARSER_JSON, S(""), NULL, -EINVAL, "empty record"));
	CHECK(parses(PARSER_JSON, S(" \r\n\t"), NULL, -EINVAL, "empty record"));
	CHECK(parses(PARSER_JSON, S("{\"a\":1,\"b\":2 \"c\":3}"), NULL, -EINVAL,
		     "invalid JSON at byte 13: expected ',' or '}'"));
	CHECK(parses(PARSER_JSON, S("{} x"), NULL, -EINVAL, NULL));
	CHECK(parses(PARSER_JSON, S("01"), NULL, -EINVAL, NULL));
	CHECK(parses(PARSER_JSON, S("\"\xff\""), NULL, -EINVAL,
		     "invalid UTF-8 at byte 1"));
	CHECK(parses(PARSER_JSON, S("{\"a\":1}\0"), NULL, -EINVAL, NULL));
	/* Offsets count from the trimmed start. */
	CHECK(parses(PARSER_JSON, S("  [1 2]"), NULL, -EINVAL,
		     "invalid JSON at byte 3: expected ',' or ']'"));
}

TEST(csv_records)
{
	CHECK(parses(PARSER_CSV, S("1,2,3"), "a,b,c", 0,
		     "{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"}"));
	CHECK(parses(PARSER_CSV, S("x"), "only", 0, "{\"only\":\"x\"}"));
	CHECK(parses(PARSER_CSV, S(""), "only", 0, "{\"only\":\"\"}"));
	CHECK(parses(PARSER_CSV, S(",,"), "a,b,c", 0,
		     "{\"a\":\"\",\"b\":\"\",\"c\":\"\"}"));
	CHECK(parses(PARSER_CSV, S("\"x, y\",\"say \"\"hi\"\"\",\"\""),
		     "a,b,c", 0,
		     "{\"a\":\"x, y\",\"b\":\"say \\\"hi\\\"\",\"c\":\"\"}"));
	CHECK(parses(PARSER_CSV, S("1,2\r"), "a,b\r", 0,
		     "{\"a\":\"1\",\"b\":\"2\"}"));
	CHECK(parses(PARSER_CSV, S("\"1\",\"2\"\r"), "\"a\",\"b\"", 0,
		     "{\"a\":\"1\",\"b\":\"2\"}"));
	CHECK(parses(PARSER_CSV, S("\"\"\"\""), "q", 0, "{\"q\":\"\\\"\"}"));
	CHECK(parses(PARSER_CSV, S("\"line\r\nbreak\""), "m", 0,
		     "{\"m\":\"line\\r\\nbreak\"}"));
	CHECK(parses(PARSER_CSV, S("5 \"in\",x"), "a,b", 0,
		     "{\"a\":\"5 \\\"in\\\"\",\"b\":\"x\"}"));
	CHECK(parses(PARSER_CSV, S("\xc3\xa9,\t"), "\xc3\xa9t\xc3\xa9,tab", 0,
		     "{\"\xc3\xa9t\xc3\xa9\":\"\xc3\xa9\",\"tab\":\"\\t\"}"));
	CHECK(parses(PARSER_CSV, S("1"), "\xef\xbb\xbfid", 0, "{\"id\":\"1\"}"));
	CHECK(parses(PARSER_CSV, S("a\0b"), "n", 0, "{\"n\":\"a\\u0000b\"}"));
}

TEST(csv_errors)
{
	CHECK(parses(PARSER_CSV, S("1,2,3"), NULL, -EINVAL, "no CSV header"));
	CHECK(parses(PARSER_CSV, S("1,2,3"), "", -EINVAL, "no CSV header"));
	CHECK(parses(PARSER_CSV, S("1,2,3"), "a,b,c,d", -EINVAL,
		     "CSV line has 3 fields, header has 4"));
	CHECK(parses(PARSER_CSV, S("1,2,3,4,5"), "a,b", -EINVAL,
		     "CSV line has 5 fields, header has 2"));
	CHECK(parses(PARSER_CSV, S("1,2"), "a,,c", -EINVAL,
		     "CSV header field 2 is empty"));
	CHECK(parses(PARSER_CSV, S("1,2"), "a,b,", -EINVAL,
		     "CSV header field 3 is empty"));
	CHECK(parses(PARSER_CSV, S("1,2,3"), "x,y,x", -EINVAL,
		     "duplicate CSV header field 'x'"));
	CHECK(parses(PARSER_CSV, S("1,2"), "\"x\",x", -EINVAL,
		     "duplicate CSV header field 'x'"));
	CHECK(parses(PARSER_CSV, S("1,\"2"), "a,b", -EINVAL,
		     "unterminated CSV quote at byte 2"));
	CHECK(parses(PARSER_CSV, S("\"1\"x,2"), "a,b", -EINVAL,
		     "text after closing CSV quote at byte 3"));
	CHECK(parses(PARSER_CSV, S("1,2"), "a,\"b", -EINVAL,
		     "CSV header: unterminated CSV quote at byte 2"));
	CHECK(parses(PARSER_CSV, S("1,\xff"), "a,b", -EINVAL,
		     "invalid UTF-8 at byte 2"));
	CHECK(parses(PARSER_CSV, S("1,2"), "a,\xc0\x80", -EINVAL,
		     "invalid UTF-8 in CSV header at byte 2"));
}

struct fields {
	char text[256];
	size_t n;
	int stop_at;
};

static int collect(const char *val, size_t len, void *arg)
{
	struct fields *f = arg;
	size_t used = strlen(f->text);

	if (f->stop_at >= 0 && (int)f->n == f->stop_at)
		return -ECANCELED;
	snprintf(f->text + used, sizeof(f->text) - used, "%s<%.*s>",
		 f->n ? "," : "", (int)len, val);
	f->n++;
	return 0;
}

static int split(const char *line, struct fields *f, int stop_at)
{
	memset(f, 0, sizeof(*f));
	f->stop_at = stop_at;
	why[0] = '\0';
	return csv_split(line, strlen(line), collect, f, why, sizeof(why));
}

TEST(csv_split_fields)
{
	struct fields f;

	CHECK_EQ_INT(split("", &f, -1), 1);
	CHECK_EQ_STR(f.text, "<>");
	CHECK_EQ_INT(split("a", &f, -1), 1);
	CHECK_EQ_INT(split("a,b", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<a>,<b>");
	CHECK_EQ_INT(split(",", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<>,<>");
	CHECK_EQ_INT(split("\r", &f, -1), 1);
	CHECK_EQ_STR(f.text, "<>");
	CHECK_EQ_INT(split("a,b\r", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<a>,<b>");
	CHECK_EQ_INT(split("a\rb", &f, -1), 1);
	CHECK_EQ_STR(f.text, "<a\rb>");
	CHECK_EQ_INT(split("\"a,b\",c", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<a,b>,<c>");
	CHECK_EQ_INT(split("\"\",\"\"\"\"", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<>,<\">");
	CHECK_EQ_INT(split("\"a\"\"b\"\"c\",\"x\"\"\"", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<a\"b\"c>,<x\">");
	CHECK_EQ_INT(split(" a , b ", &f, -1), 2);
	CHECK_EQ_STR(f.text, "< a >,< b >");
	CHECK_EQ_INT(split("a,\"b\"\r", &f, -1), 2);
	CHECK_EQ_STR(f.text, "<a>,<b>");

	CHECK_EQ_INT(split("\"", &f, -1), -EINVAL);
	CHECK_EQ_STR(why, "unterminated CSV quote at byte 0");
	CHECK_EQ_INT(split("a,\"b\"\"", &f, -1), -EINVAL);
	CHECK_EQ_STR(why, "unterminated CSV quote at byte 2");
	CHECK_EQ_INT(split("\"a\" ,b", &f, -1), -EINVAL);
	CHECK_EQ_STR(why, "text after closing CSV quote at byte 3");
	CHECK_EQ_INT(split("\"a\"\r\r", &f, -1), -EINVAL);

	/* The callback's error stops the split and is passed back. */
	CHECK_EQ_INT(split("a,b,c", &f, 1), -ECANCELED);
	CHECK_EQ_STR(f.text, "<a>");
	/* Counting only. */
	CHECK_EQ_INT(csv_split("a,\"b,c\",d", 9, NULL, NULL, NULL, 0), 3);
}

TEST(unknown_parser)
{
	CHECK(parses(7, S("x"), NULL, -EINVAL, "unknown parser 7"));
}

/* Every allocation failure during a parse gives -ENOMEM and leaves out as
 * it was; eventually the parse succeeds with the right text. */
static void oom_sweep(int parser, const char *data, size_t len,
		      const char *hdr, const char *want)
{
	struct buf out = BUF_INIT;
	size_t base = mem_in_use();
	int rc = -1, failures = 0;

	for (long k = 0; k < 50 && rc != 0; k++) {
		buf_release(&out);
		buf_adds(&out, "keep");
		mem_fail_after(k);
		rc = parse_record(parser, data, len, hdr, hdr ? strlen(hdr) : 0,
				  &out, why, sizeof(why));
		mem_fail_after(-1);
		if (rc) {
			CHECK_EQ_INT(rc, -ENOMEM);
			CHECK_EQ_STR(out.p, "keep");
			failures++;
		}
	}
	CHECK_EQ_INT(rc, 0);
	CHECK(failures > 0);
	CHECK(out.p && !strncmp(out.p, "keep", 4) && !strcmp(out.p + 4, want));
	buf_release(&out);
	CHECK_EQ_INT(mem_in_use(), base);
}

TEST(parsers_survive_allocation_failure)
{
	char big[600];
	struct buf want = BUF_INIT;

	memset(big, 'v', sizeof(big));
	json_add_str(&want, big, sizeof(big));
	oom_sweep(PARSER_RAW, big, sizeof(big), NULL, want.p);
	buf_release(&want);

	memset(big, ' ', sizeof(big));
	memset(big + 100, '7', 400);
	big[500] = '\0';
	oom_sweep(PARSER_JSON, big, 500, NULL, big + 100);

	oom_sweep(PARSER_CSV, S("\"a\"\"b\",c,\"d,e\",0123456789012345678901234567890123456789012345678901234567890123456789"),
		  "\"h\"\"1\",h2,h3,h4",
		  "{\"h\\\"1\":\"a\\\"b\",\"h2\":\"c\",\"h3\":\"d,e\",\"h4\":"
		  "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}");
}

TEST(output_is_appended)
{
	struct buf out = BUF_INIT;

	CHECK(parse_record(PARSER_JSON, S("1"), NULL, 0, &out, why,
			   sizeof(why)) == 0);
	CHECK(buf_addc(&out, '\n') == 0);
	CHECK(parse_record(PARSER_RAW, S("x"), NULL, 0, &out, why,
			   sizeof(why)) == 0);
	CHECK(buf_addc(&out, '\n') == 0);
	CHECK(parse_record(PARSER_CSV, S("v"), "k", 1, &out, why,
			   sizeof(why)) == 0);
	CHECK_EQ_STR(out.p, "1\n\"x\"\n{\"k\":\"v\"}");
	/* A failure on a fresh buffer leaves it empty, and why may be NULL. */
	buf_release(&out);
	CHECK(parse_record(PARSER_CSV, S("v"), "k,k", 3, &out, NULL, 0) ==
	      -EINVAL);
	CHECK(out.len == 0);
	CHECK(parse_record(PARSER_CSV, S("v,w"), "k", 1, &out, NULL, 0) ==
	      -EINVAL);
	CHECK(out.len == 0 && out.p && out.p[0] == '\0');
	buf_release(&out);
}

int main(void)
{
	RUN(raw_records);
	RUN(json_records);
	RUN(csv_records);
	RUN(csv_errors);
	RUN(csv_split_fields);
	RUN(unknown_parser);
	RUN(parsers_survive_allocation_failure);
	RUN(output_is_appended);
	TEST_END();
}
