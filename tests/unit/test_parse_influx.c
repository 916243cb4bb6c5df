/* test_parse_influx.c - the InfluxDB line protocol parser: the reference's
 * examples give the objects they describe, and every kind of bad line is
 * refused with a reason that names the byte. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "mem.h"
#include "parse.h"
#include "test.h"

/* Parse through the dispatcher, as the input core does. */
static int parse(const char *line, struct buf *out, char *why, size_t whylen)
{
	buf_reset(out);
	return parse_record(PARSER_INFLUX, line, strlen(line), NULL, 0, out, why, whylen);
}

static void ok(const char *line, const char *want, int at)
{
	struct buf out = BUF_INIT;
	char why[200];
	int rc = parse(line, &out, why, sizeof(why));

	if (rc || strcmp(out.p ? out.p : "", want)) {
		fprintf(stderr, "line %d: %s\n  got %d %s (%s)\n  want %s\n", at, line, rc,
			out.p ? out.p : "", rc ? why : "", want);
		test_failed_checks++;
	} else if (!json_valid(out.p, out.len, why, sizeof(why))) {
		fprintf(stderr, "line %d: not JSON: %s (%s)\n", at, out.p, why);
		test_failed_checks++;
	}
	buf_release(&out);
}

static void bad(const char *line, const char *reason, int at)
{
	struct buf out = BUF_INIT;
	char why[200];
	int rc;

	buf_adds(&out, "kept");
	rc = parse_record(PARSER_INFLUX, line, strlen(line), NULL, 0, &out, why, sizeof(why));
	if (rc != -EINVAL || !strstr(why, reason) || strcmp(out.p, "kept")) {
		fprintf(stderr, "line %d: %s\n  got %d '%s', output '%s'\n  want -EINVAL '%s'\n", at,
			line, rc, rc ? why : "", out.p, reason);
		test_failed_checks++;
	}
	buf_release(&out);
}

#define OK(line, want) ok(line, want, __LINE__)
#define BAD(line, reason) bad(line, reason, __LINE__)

/* The examples of the line protocol reference. */
TEST(test_reference_examples)
{
	OK("myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\" 1556813561098000000",
	   "{\"measurement\":\"myMeasurement\",\"tags\":{\"tag1\":\"value1\",\"tag2\":\"value2\"},"
	   "\"fields\":{\"fieldKey\":\"fieldValue\"},\"time\":1556813561098000000}");
	OK("myTable,tag1=val1,tag2=val2 field1=\"v1\",field2=1i 0000000000000000000",
	   "{\"measurement\":\"myTable\",\"tags\":{\"tag1\":\"val1\",\"tag2\":\"val2\"},"
	   "\"fields\":{\"field1\":\"v1\",\"field2\":1},\"time\":0}");
	OK("weather,location=us-midwest temperature=82 1465839830100400200",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temperature\":82},\"time\":1465839830100400200}");
	OK("cpu,host=a usage=0.5,n=3i,ok=true,msg=\"x\" 1465839830100400200",
	   "{\"measurement\":\"cpu\",\"tags\":{\"host\":\"a\"},"
	   "\"fields\":{\"usage\":0.5,\"n\":3,\"ok\":true,\"msg\":\"x\"},\"time\":1465839830100400200}");
	/* No tags, no timestamp: empty tags and no "time". */
	OK("weather temperature=82",
	   "{\"measurement\":\"weather\",\"tags\":{},\"fields\":{\"temperature\":82}}");
	OK("weather,location=us-midwest temperature=82,humidity=71 1465839830100400200",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temperature\":82,\"humidity\":71},\"time\":1465839830100400200}");
	/* Escapes: comma and space in measurements; comma, equals, space in
	 * keys and tag values; quote and backslash in strings. */
	OK("wea\\,ther temperature=82",
	   "{\"measurement\":\"wea,ther\",\"tags\":{},\"fields\":{\"temperature\":82}}");
	OK("wea\\ ther temperature=82",
	   "{\"measurement\":\"wea ther\",\"tags\":{},\"fields\":{\"temperature\":82}}");
	OK("weather,location=us\\,midwest temperature=82",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us,midwest\"},"
	   "\"fields\":{\"temperature\":82}}");
	OK("weather,location=us-midwest temp\\=rature=82",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temp=rature\":82}}");
	OK("weather,location\\ place=us-midwest temperature=82",
	   "{\"measurement\":\"weather\",\"tags\":{\"location place\":\"us-midwest\"},"
	   "\"fields\":{\"temperature\":82}}");
	OK("weather,location=us-midwest temperature_str=\"too warm\"",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temperature_str\":\"too warm\"}}");
	OK("weather,location=us-midwest temperature_str=\"too hot\\\\cold\"",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temperature_str\":\"too hot\\\\cold\"}}");
	OK("weather,location=us-midwest temperature_str=\"too \\\"hot\\\"\"",
	   "{\"measurement\":\"weather\",\"tags\":{\"location\":\"us-midwest\"},"
	   "\"fields\":{\"temperature_str\":\"too \\\"hot\\\"\"}}");
	/* Equals sign in a measurement is plain; a backslash before another
	 * character is kept; commas and spaces inside strings are data. */
	OK("a=b f=1", "{\"measurement\":\"a=b\",\"tags\":{},\"fields\":{\"f\":1}}");
	OK("a\\b f=1", "{\"measurement\":\"a\\\\b\",\"tags\":{},\"fields\":{\"f\":1}}");
	OK("m s=\"a, b=c d\"", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"s\":\"a, b=c d\"}}");
	OK("m s=\"\"", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"s\":\"\"}}");
	OK("m s=\"a\\nb\"", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"s\":\"a\\\\nb\"}}");
	OK("m,emoji=\xf0\x9f\x98\x80 s=\"\xc3\xa9\"",
	   "{\"measurement\":\"m\",\"tags\":{\"emoji\":\"\xf0\x9f\x98\x80\"},\"fields\":{\"s\":\"\xc3\xa9\"}}");
}

TEST(test_numbers)
{
	OK("m f=1.5e10", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1.5e10}}");
	OK("m f=-1.5E-3", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":-1.5E-3}}");
	OK("m f=1e+5", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1e+5}}");
	/* Forms JSON does not have become the same number. */
	OK("m f=1.", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1}}");
	OK("m f=.5", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":0.5}}");
	OK("m f=-.25", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":-0.25}}");
	OK("m f=007", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":7}}");
	/* Integers exact at the ends of their ranges. */
	OK("m i=9223372036854775807i",
	   "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"i\":9223372036854775807}}");
	OK("m i=-9223372036854775808i",
	   "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"i\":-9223372036854775808}}");
	OK("m u=18446744073709551615u",
	   "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"u\":18446744073709551615}}");
	OK("m u=0u,i=-0i,j=012i", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"u\":0,\"i\":0,\"j\":12}}");
	OK("m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
	   "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"a\":true,\"b\":true,\"c\":true,\"d\":true,"
	   "\"e\":true,\"f\":false,\"g\":false,\"h\":false,\"i\":false,\"j\":false}}");
	OK("m f=1 -1000", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1},\"time\":-1000}");
	OK("m f=1 9223372036854775807",
	   "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1},\"time\":9223372036854775807}");
	/* Several spaces between the parts, a trailing space and CR. */
	/* A tab is no separator: it belongs to the name. */
	OK("cpu\t f=1", "{\"measurement\":\"cpu\\t\",\"tags\":{},\"fields\":{\"f\":1}}");
	OK("  m  f=1   5  \r", "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1},\"time\":5}");
}

TEST(test_bad_lines)
{
	BAD("", "empty line (only blanks up to byte 0)");
	BAD("   ", "empty line (only blanks up to byte 3)");
	BAD("# a comment", "comment line (byte 0)");
	BAD("  #x f=1", "comment line (byte 2)");
	BAD("cpu", "no fields");
	BAD("cpu ", "no fields");
	BAD("cpu,host=a", "no fields");
	BAD(",host=a f=1", "no measurement at byte 0");
	BAD(" f=1", "no fields");   /* "f=1" is the measurement */
	BAD("cpu,=a f=1", "empty tag key at byte 4");
	BAD("cpu,host f=1", "tag 'host' has no '=' at byte 8");
	BAD("cpu,host= f=1", "empty tag value at byte 9");
	BAD("cpu,host=a=b f=1", "unescaped '=' in tag value at byte 10");
	BAD("cpu,host=a,host=b f=1", "duplicate tag 'host' at byte 11");
	BAD("cpu,host=a, f=1", "empty tag key at byte 11");
	BAD("cpu =1", "empty field key at byte 4");
	BAD("cpu f", "field 'f' has no '=' at byte 5");
	BAD("cpu f=", "field 'f' has no value at byte 6");
	BAD("cpu f=1,", "empty field key at byte 8");
	BAD("cpu f=1,f=2", "duplicate field 'f' at byte 8");
	BAD("cpu f=1,,g=2", "empty field key at byte 8");
	BAD("cpu f=abc", "field 'f': bad value 'abc' at byte 6");
	BAD("cpu f=1.2.3", "bad value '1.2.3' at byte 6");
	BAD("cpu f=nan", "bad value 'nan'");
	BAD("cpu f=inf", "bad value 'inf'");
	BAD("cpu f=0x10", "bad value '0x10'");
	BAD("cpu f=+1", "bad value '+1'");
	BAD("cpu f=1e", "bad value '1e'");
	BAD("cpu f=-", "bad value '-'");
	BAD("cpu f=yes", "bad value 'yes'");
	BAD("cpu f=1e999", "float 1e999 at byte 6 is out of range");
	BAD("cpu f=9223372036854775808i", "integer 9223372036854775808 at byte 6 is out of the 64-bit range");
	BAD("cpu f=-9223372036854775809i", "out of the 64-bit range");
	BAD("cpu f=18446744073709551616u", "unsigned integer 18446744073709551616 at byte 6");
	BAD("cpu f=-1u", "bad value '-1u'");
	BAD("cpu f=1.5i", "bad value '1.5i'");
	BAD("cpu f=i", "bad value 'i'");
	BAD("cpu f=\"abc", "string field value opened at byte 6 is not closed");
	BAD("cpu f=\"abc\\\"", "is not closed");
	BAD("cpu f=\"a\"b", "text after the closing quote at byte 9");
	BAD("cpu f=1 12x", "bad timestamp '12x' at byte 8");
	BAD("cpu f=1 1.5", "bad timestamp '1.5'");
	BAD("cpu f=1 -", "bad timestamp '-'");
	BAD("cpu f=1 99999999999999999999", "timestamp 99999999999999999999 at byte 8 is out of the 64-bit");
	BAD("cpu f=1 5 6", "text after the timestamp at byte 10");
	BAD("cpu,host=a\xff f=1", "invalid UTF-8 at byte 10");
	BAD("cpu f=\"\xc3\x28\"", "invalid UTF-8 at byte 7");
}

/* A NUL inside a line is data (escaped in JSON), not an end. */
TEST(test_nul_and_lengths)
{
	struct buf out = BUF_INIT;
	char why[200];

	CHECK_EQ_INT(parse_record(PARSER_INFLUX, "m s=\"a\0b\"", 9, NULL, 0, &out, why, sizeof(why)), 0);
	CHECK_EQ_STR(out.p, "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"s\":\"a\\u0000b\"}}");
	buf_reset(&out);
	/* Only the first len bytes are the line. */
	CHECK_EQ_INT(parse_record(PARSER_INFLUX, "m f=1 123", 7, NULL, 0, &out, why, sizeof(why)), 0);
	CHECK_EQ_STR(out.p, "{\"measurement\":\"m\",\"tags\":{},\"fields\":{\"f\":1},\"time\":1}");
	buf_release(&out);
	/* A reason buffer that is too small is cut, never overrun. */
	{
		char small[12];

		memset(small, 'x', sizeof(small));
		CHECK_EQ_INT(parse_record(PARSER_INFLUX, "cpu", 3, NULL, 0, &out, small, 8), -EINVAL);
		CHECK(small[7] == '\0' && small[8] == 'x');
		buf_release(&out);
	}
}

/* Out of memory at every allocation: -ENOMEM, nothing leaked, the output
 * as it was. */
TEST(test_out_of_memory)
{
	const char *line = "cpu,host=a,rack=b usage=0.5,n=3i,ok=true,msg=\"x y\" 1465839830100400200";
	size_t before = mem_in_use();
	bool done = false;

	for (long k = 0; k < 100 && !done; k++) {
		struct buf out = BUF_INIT;
		char why[200];
		int rc;

		buf_adds(&out, "kept");
		mem_fail_after(k);
		rc = parse_record(PARSER_INFLUX, line, strlen(line), NULL, 0, &out, why, sizeof(why));
		mem_fail_after(-1);
		if (rc == 0)
			done = true;
		else {
			CHECK_EQ_INT(rc, -ENOMEM);
			CHECK_EQ_STR(out.p, "kept");
		}
		buf_release(&out);
		CHECK_EQ_INT(mem_in_use(), before);
	}
	CHECK(done);
}

TEST(test_parser_name)
{
	struct config *cfg = NULL;
	char err[256];
	const char *text = "[agent]\nid = g\nstate_dir = /tmp\n[input s]\ndriver = tail\n"
			   "path = /tmp/x.log\nparser = influx\n[output lake]\ntype = mqtt\n";

	REQUIRE(config_parse(text, strlen(text), "t.conf", &cfg, err, sizeof(err)) == 0);
	CHECK_EQ_INT(cfg->inputs->parser, PARSER_INFLUX);
	config_free(cfg);
}

int main(void)
{
	RUN(test_reference_examples);
	RUN(test_numbers);
	RUN(test_bad_lines);
	RUN(test_nul_and_lengths);
	RUN(test_out_of_memory);
	RUN(test_parser_name);
	TEST_END();
}
