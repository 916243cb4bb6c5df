/* test_buf.c - growable buffers, JSON string escaping, the JSON writer and
 * the UTF-8 and JSON validators. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "mem.h"
#include "test.h"
#include "utf8_ref.h"

TEST(buf_grows_and_stays_terminated)
{
	struct buf b = BUF_INIT;
	size_t base = mem_in_use(), cap;

	CHECK(buf_reserve(&b, 0) == 0);
	REQUIRE(b.p != NULL);
	CHECK_EQ_STR(b.p, "");
	CHECK(buf_adds(&b, "abc") == 0);
	CHECK(buf_addc(&b, 'd') == 0);
	CHECK(buf_add(&b, "e\0f", 3) == 0);
	CHECK_EQ_INT(b.len, 7);
	CHECK(memcmp(b.p, "abcde\0f", 8) == 0);
	for (int i = 0; i < 1000; i++)
		CHECK(buf_addc(&b, (char)('a' + i % 26)) == 0);
	CHECK_EQ_INT(b.len, 1007);
	CHECK(b.p[b.len] == '\0');
	CHECK(b.cap > b.len);
	/* Doubling: the capacity is a power-of-two multiple of the first. */
	CHECK((b.cap & (b.cap - 1)) == 0);
	cap = b.cap;
	buf_reset(&b);
	CHECK_EQ_INT(b.len, 0);
	CHECK_EQ_INT(b.cap, cap);
	CHECK_EQ_STR(b.p, "");
	buf_release(&b);
	CHECK(b.p == NULL);
	CHECK_EQ_INT(b.cap, 0);
	CHECK_EQ_INT(mem_in_use(), base);
	buf_release(&b);
	buf_reset(&b);
}

TEST(buf_printf_formats_long_text)
{
	struct buf b = BUF_INIT;
	char want[400];

	CHECK(buf_printf(&b, "%d-%s", 42, "x") == 0);
	CHECK_EQ_STR(b.p, "42-x");
	memset(want, 'q', 300);
	want[300] = '\0';
	CHECK(buf_printf(&b, "[%s]", want) == 0);
	CHECK_EQ_INT(b.len, 4 + 302);
	CHECK(b.p[4] == '[' && b.p[305] == ']' && b.p[306] == '\0');
	CHECK(buf_printf(&b, "%s", "") == 0);
	CHECK_EQ_INT(b.len, 306);
	buf_release(&b);
}

TEST(buf_survives_allocation_failure)
{
	struct buf b = BUF_INIT;
	size_t base = mem_in_use();
	char big[200];

	memset(big, 'z', sizeof(big));
	mem_fail_after(0);
	CHECK(buf_add(&b, "x", 1) == -ENOMEM);
	CHECK(b.p == NULL && b.len == 0);
	mem_fail_after(0);
	CHECK(buf_addc(&b, 'x') == -ENOMEM);
	mem_fail_after(0);
	CHECK(buf_printf(&b, "%d", 1) == -ENOMEM);
	CHECK(b.p == NULL);

	CHECK(buf_adds(&b, "keep") == 0);
	mem_fail_after(0);
	CHECK(buf_add(&b, big, sizeof(big)) == -ENOMEM);
	CHECK_EQ_STR(b.p, "keep");
	mem_fail_after(0);
	CHECK(buf_printf(&b, "%.*s", 150, big) == -ENOMEM);
	CHECK_EQ_STR(b.p, "keep");
	CHECK_EQ_INT(b.len, 4);
	mem_fail_after(0);
	CHECK(json_add_str(&b, big, sizeof(big)) == -ENOMEM);
	CHECK_EQ_STR(b.p, "keep");
	mem_fail_after(-1);
	CHECK(buf_reserve(&b, SIZE_MAX) == -ENOMEM);
	CHECK(buf_reserve(&b, SIZE_MAX - 3) == -ENOMEM);
	CHECK_EQ_STR(b.p, "keep");
	buf_release(&b);
	CHECK_EQ_INT(mem_in_use(), base);
}

static const struct {
	const char *in;
	size_t len;
	const char *out;
} esc_cases[] = {
	{ "", 0, "\"\"" },
	{ "plain", 5, "\"plain\"" },
	{ "a\"b\\c", 5, "\"a\\\"b\\\\c\"" },
	{ "\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"" },
	{ "\x01\x1f", 2, "\"\\u0001\\u001f\"" },
	{ "a\0b", 3, "\"a\\u0000b\"" },
	{ "\x7f/", 2, "\"\x7f/\"" },
	{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
	  "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"" },
	/* Ill-formed input still gives valid JSON. */
	{ "a\xff" "b", 3, "\"a\\ufffdb\"" },
	{ "\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"" },
	{ "\xe2\x82", 2, "\"\\ufffd\\ufffd\"" },
};

TEST(json_add_str_escapes)
{
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++) {
		buf_reset(&b);
		CHECK(json_add_str(&b, esc_cases[i].in, esc_cases[i].len) == 0);
		CHECK_EQ_STR(b.p, esc_cases[i].out);
		CHECK(json_valid(b.p, b.len, NULL, 0));
	}
	/* It appends. */
	buf_reset(&b);
	buf_adds(&b, "[");
	json_add_str(&b, "x", 1);
	CHECK_EQ_STR(b.p, "[\"x\"");
	buf_release(&b);
}

TEST(json_add_str_oom_sweep)
{
	struct buf b = BUF_INIT;
	char in[300];
	int ok = 0;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i % 3 ? 'a' : 1);
	for (long k = 0; k < 20 && !ok; k++) {
		buf_release(&b);
		buf_adds(&b, "pre");
		mem_fail_after(k);
		if (json_add_str(&b, in, sizeof(in)) == 0) {
			ok = 1;
		} else {
			CHECK_EQ_STR(b.p, "pre");
		}
		mem_fail_after(-1);
	}
	CHECK(ok);
	CHECK(json_valid(b.p + 3, b.len - 3, NULL, 0));
	buf_release(&b);
}

static uint32_t rng_state = 2463534242u;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 63));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 63));
		o[2] = (char)(0x80 | (cp & 63));
		return 3;
	}
	o[0] = (char)(0xF0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 63));
	o[2] = (char)(0x80 | (cp >> 6 & 63));
	o[3] = (char)(0x80 | (cp & 63));
	return 4;
}

/* Decodes a JSON string literal as json_add_str writes it (no surrogate
 * escapes); returns the length or -1. */
static long unescape(const char *s, size_t len, char *out)
{
	size_t i = 1, o = 0;

	if (len < 2 || s[0] != '"' || s[len - 1] != '"')
		return -1;
	while (i < len - 1) {
		if (s[i] != '\\') {
			out[o++] = s[i++];
			continue;
		}
		switch (s[i + 1]) {
		case '"': out[o++] = '"'; break;
		case '\\': out[o++] = '\\'; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			char hex[5] = { 0 };

			memcpy(hex, s + i + 2, 4);
			o += put_utf8(out + o, (uint32_t)strtoul(hex, NULL, 16));
			i += 4;
			break;
		}
		default:
			return -1;
		}
		i += 2;
	}
	return (long)o;
}

TEST(escape_round_trip)
{
	struct buf b = BUF_INIT;
	char in[256], back[256 * 6];
	char why[128];

	for (int iter = 0; iter < 20000; iter++) {
		size_t n = 0, want = rnd() % 40;

		while (n < want) {
			uint32_t cp, pick = rnd() % 8;

			if (pick < 3)
				cp = rnd() % 0x80;
			else if (pick < 4)
				cp = rnd() % 0x20;
			else if (pick < 5)
				cp = 0x80 + rnd() % 0x780;
			else if (pick < 7)
				cp = 0x800 + rnd() % 0xF800;
			else
				cp = 0x10000 + rnd() % 0x100000;
			if (cp >= 0xD800 && cp <= 0xDFFF)
				cp = 0xFFFD;
			n += put_utf8(in + n, cp);
		}
		REQUIRE(utf8_valid(in, n, NULL));
		buf_reset(&b);
		REQUIRE(json_add_str(&b, in, n) == 0);
		if (!json_valid(b.p, b.len, why, sizeof(why))) {
			fprintf(stderr, "escaped text refused: %s\n", why);
			CHECK(0);
			break;
		}
		CHECK_EQ_INT(unescape(b.p, b.len, back), n);
		CHECK(memcmp(in, back, n) == 0);
	}
	buf_release(&b);
}

TEST(jw_writes_exact_text)
{
	struct status_buf w;

	jw_init(&w);
	jw_obj_begin(&w, NULL);
	jw_str(&w, "id", "gw-1");
	jw_int(&w, "n", -42);
	jw_bool(&w, "up", true);
	jw_bool(&w, "down", false);
	jw_null(&w, "none");
	jw_str(&w, "nostr", NULL);
	jw_arr_begin(&w, "list");
	jw_int(&w, "ignored", 1);
	jw_str(&w, NULL, "two");
	jw_obj_begin(&w, NULL);
	jw_obj_end(&w);
	jw_arr_begin(&w, NULL);
	jw_arr_end(&w);
	jw_raw(&w, NULL, "{\"r\":1}", 7);
	jw_arr_end(&w);
	jw_obj_begin(&w, "sub");
	jw_double(&w, "d", 0.5);
	jw_obj_end(&w);
	jw_str(&w, "q\"k", "a\nb");
	jw_obj_end(&w);
	CHECK(jw_finish(&w) == 0);
	CHECK_EQ_STR(w.b.p,
		     "{\"id\":\"gw-1\",\"n\":-42,\"up\":true,\"down\":false,"
		     "\"none\":null,\"nostr\":null,"
		     "\"list\":[1,\"two\",{},[],{\"r\":1}],"
		     "\"sub\":{\"d\":0.5},\"q\\\"k\":\"a\\nb\"}");
	CHECK(json_valid(w.b.p, w.b.len, NULL, 0));
	buf_release(&w.b);

	jw_init(&w);
	jw_arr_begin(&w, "top-level key ignored");
	jw_arr_end(&w);
	CHECK(jw_finish(&w) == 0);
	CHECK_EQ_STR(w.b.p, "[]");
	buf_release(&w.b);

	jw_init(&w);
	CHECK(jw_finish(&w) == 0);
	CHECK_EQ_STR(w.b.p, "");
	buf_release(&w.b);
}

static const char *jw_one_double(struct status_buf *w, double v)
{
	jw_init(w);
	jw_double(w, NULL, v);
	if (jw_finish(w))
		return NULL;
	return w->b.p;
}

TEST(jw_double_compact)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1" },
		{ -2.5, "-2.5" },
		{ 0.1, "0.1" },
		{ 21.37, "21.37" },
		{ 1e300, "1e+300" },
		{ 1.0 / 3, "0.33333333333333331" },
		{ 123456789012, "123456789012" },
		{ 5e-324, "4.94065645841247e-324" },
	};
	struct status_buf w;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ_STR(jw_one_double(&w, cases[i].v), cases[i].want);
		CHECK(strtod(w.b.p, NULL) == cases[i].v);
		buf_release(&w.b);
	}
	CHECK_EQ_STR(jw_one_double(&w, NAN), "null");
	buf_release(&w.b);
	CHECK_EQ_STR(jw_one_double(&w, INFINITY), "null");
	buf_release(&w.b);
	CHECK_EQ_STR(jw_one_double(&w, -INFINITY), "null");
	buf_release(&w.b);
	for (int i = 0; i < 2000; i++) {
		uint64_t bits = (uint64_t)rnd() << 32 | rnd();
		double v;

		memcpy(&v, &bits, sizeof(v));
		jw_one_double(&w, v);
		if (isfinite(v)) {
			CHECK(strtod(w.b.p, NULL) == v);
			CHECK(json_valid(w.b.p, w.b.len, NULL, 0));
		} else {
			CHECK_EQ_STR(w.b.p, "null");
		}
		buf_release(&w.b);
	}
}

TEST(jw_int_limits)
{
	struct status_buf w;

	jw_init(&w);
	jw_arr_begin(&w, NULL);
	jw_int(&w, NULL, INT64_MIN);
	jw_int(&w, NULL, INT64_MAX);
	jw_int(&w, NULL, 0);
	jw_arr_end(&w);
	CHECK(jw_finish(&w) == 0);
	CHECK_EQ_STR(w.b.p, "[-9223372036854775808,9223372036854775807,0]");
	buf_release(&w.b);
}

TEST(jw_misuse_is_reported)
{
	struct status_buf w;

	jw_init(&w);
	jw_obj_begin(&w, NULL);
	CHECK_EQ_INT(jw_finish(&w), -EINVAL);
	buf_release(&w.b);

	jw_init(&w);
	jw_obj_end(&w);
	CHECK_EQ_INT(jw_finish(&w), -EINVAL);
	buf_release(&w.b);

	jw_init(&w);
	jw_obj_begin(&w, NULL);
	jw_arr_end(&w);
	CHECK_EQ_INT(jw_finish(&w), -EINVAL);
	buf_release(&w.b);

	jw_init(&w);
	jw_obj_begin(&w, NULL);
	jw_int(&w, NULL, 1);
	jw_obj_end(&w);
	CHECK_EQ_INT(jw_finish(&w), -EINVAL);
	buf_release(&w.b);

	/* 32 levels fit, the 33rd does not. */
	jw_init(&w);
	for (int i = 0; i < 32; i++)
		jw_arr_begin(&w, NULL);
	for (int i = 0; i < 32; i++)
		jw_arr_end(&w);
	CHECK(jw_finish(&w) == 0);
	CHECK_EQ_INT(w.b.len, 64);
	buf_release(&w.b);
	jw_init(&w);
	for (int i = 0; i < 33; i++)
		jw_arr_begin(&w, NULL);
	for (int i = 0; i < 33; i++)
		jw_arr_end(&w);
	CHECK_EQ_INT(jw_finish(&w), -EINVAL);
	buf_release(&w.b);
}

static void jw_sample(struct status_buf *w)
{
	jw_init(w);
	jw_obj_begin(w, NULL);
	for (int i = 0; i < 20; i++) {
		jw_arr_begin(w, "a-rather-long-key-name-to-force-growth");
		jw_str(w, NULL, "some value text that takes room");
		jw_double(w, NULL, i * 0.25);
		jw_arr_end(w);
	}
	jw_obj_end(w);
}

TEST(jw_oom_is_sticky)
{
	struct status_buf w, ref;
	int failed = 0, done = 0;

	jw_sample(&ref);
	REQUIRE(jw_finish(&ref) == 0);
	for (long k = 0; k < 40 && !done; k++) {
		mem_fail_after(k);
		jw_sample(&w);
		mem_fail_after(-1);
		if (jw_finish(&w) == 0) {
			CHECK_EQ_STR(w.b.p, ref.b.p);
			done = 1;
		} else {
			CHECK_EQ_INT(w.err, -ENOMEM);
			failed++;
		}
		buf_release(&w.b);
	}
	CHECK(done);
	CHECK(failed > 0);
	buf_release(&ref.b);
}

static bool ref_utf8(const unsigned char *s, size_t n)
{
	return ref_utf8_bad(s, n) == n;
}

TEST(utf8_edge_cases)
{
	static const struct {
		const char *s;
		size_t len;
		bool ok;
		size_t bad;
	} cases[] = {
		{ "", 0, true, 0 },
		{ "hello", 5, true, 0 },
		{ "a\0b", 3, true, 0 },
		{ "\xc2\x80", 2, true, 0 },
		{ "\xdf\xbf", 2, true, 0 },
		{ "\xe0\xa0\x80", 3, true, 0 },
		{ "\xef\xbf\xbf", 3, true, 0 },
		{ "\xed\x9f\xbf", 3, true, 0 },    /* U+D7FF */
		{ "\xee\x80\x80", 3, true, 0 },    /* U+E000 */
		{ "\xf0\x90\x80\x80", 4, true, 0 },
		{ "\xf4\x8f\xbf\xbf", 4, true, 0 }, /* U+10FFFF */
		{ "\xc0\x80", 2, false, 0 },       /* overlong NUL */
		{ "\xc1\xbf", 2, false, 0 },
		{ "\xe0\x80\x80", 3, false, 0 },
		{ "\xe0\x9f\xbf", 3, false, 0 },
		{ "\xf0\x8f\xbf\xbf", 4, false, 0 },
		{ "\xed\xa0\x80", 3, false, 0 },   /* U+D800 */
		{ "\xed\xbf\xbf", 3, false, 0 },   /* U+DFFF */
		{ "\xf4\x90\x80\x80", 4, false, 0 },
		{ "\xf5\x80\x80\x80", 4, false, 0 },
		{ "\xff", 1, false, 0 },
		{ "\x80", 1, false, 0 },
		{ "ab\xbf", 3, false, 2 },
		{ "abc\xe2\x82", 5, false, 3 },    /* truncated at the end */
		{ "\xe2\x82" "abc", 5, false, 0 }, /* truncated in the middle */
		{ "\xf0\x9f\x98", 3, false, 0 },
		{ "0123456789abcdef\xc3", 17, false, 16 },
		{ "0123456789\xc3\xa9" "0123456789\xc3", 23, false, 22 },
	};
	size_t bad;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bad = 999;
		CHECK(utf8_valid(cases[i].s, cases[i].len, &bad) == cases[i].ok);
		if (!cases[i].ok)
			CHECK_EQ_INT(bad, cases[i].bad);
		CHECK(ref_utf8((const unsigned char *)cases[i].s,
			       cases[i].len) == cases[i].ok);
	}
	CHECK(!utf8_valid("\xc0", 1, NULL));
}

TEST(utf8_matches_reference)
{
	/* Every sequence of up to four bytes drawn from the values at the
	 * edges of the UTF-8 ranges, in every position. */
	static const unsigned char v[] = {
		0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
		0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1,
		0xf3, 0xf4, 0xf5, 0xff,
	};
	const size_t nv = sizeof(v);
	unsigned char s[4];
	long mismatches = 0;

	for (size_t a = 0; a < nv; a++)
		for (size_t b = 0; b <= nv; b++)
			for (size_t c = 0; c <= nv; c++)
				for (size_t d = 0; d <= nv; d++) {
					size_t n = 1;

					s[0] = v[a];
					if (b < nv) {
						s[n++] = v[b];
						if (c < nv) {
							s[n++] = v[c];
							if (d < nv)
								s[n++] = v[d];
						}
					}
					if (utf8_valid((char *)s, n, NULL) !=
					    ref_utf8(s, n))
						mismatches++;
				}
	CHECK_EQ_INT(mismatches, 0);

	/* And every two-byte pair exhaustively. */
	for (unsigned x = 0; x < 65536; x++) {
		s[0] = (unsigned char)(x >> 8);
		s[1] = (unsigned char)x;
		if (utf8_valid((char *)s, 2, NULL) != ref_utf8(s, 2))
			mismatches++;
	}
	CHECK_EQ_INT(mismatches, 0);
}

/* The record shapes the agent sees most. (Their cost per record is
 * measured by make bench, not asserted here.) */
TEST(utf8_typical_records)
{
	char rec[126];
	size_t bad = 0;

	memset(rec, 'x', 125);
	memcpy(rec, "{\"t\":1700000000.123,\"dev\":\"pump-7\",\"v\":", 39);
	rec[125] = '\0';
	CHECK(utf8_valid(rec, 125, NULL));
	memcpy(rec + 60, "\xc3\xa9\xe2\x82\xac", 5);
	CHECK(utf8_valid(rec, 125, NULL));
	rec[124] = '\xc3'; /* a sequence cut off by the end of the record */
	CHECK(!utf8_valid(rec, 125, &bad));
	CHECK_EQ_INT((int)bad, 124);
}

static const char *const json_good[] = {
	"0", "-0", "1", "-1", "123", "1.5", "-0.0", "0e0", "1E+2", "1e-2",
	"12.34e56", "true", "false", "null", "\"\"", "\"abc\"",
	"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u0000\"", "\"\\uD83D\\uDE00\"",
	"\"\\ud800\"", "\"\\uDFFF x\"", "\"\\uABCDef\"", "\"caf\xc3\xa9\"",
	"\"\xf0\x9f\x98\x80\"", "\"\x7f\"", "[]", "{}", "[1,2,3]",
	"{\"a\":1}", "{\"a\":{\"b\":[true,false,null]},\"c\":\"d\"}",
	" \t\r\n[ 1 , { \"k\" : \"v\" } ] \n", "[[[[]]]]", "{\"\":0}",
	"{\"a\":1,\"a\":2}", "[\"\",[],{}]", "-1.0e-0",
	"123456789012345678901234567890",
};

static const char *const json_bad[] = {
	"", " ", "1.", "01", "-", "1e", "1e+", "+1", ".5", "-.5", "1.e3",
	"00", "-01", "NaN", "Infinity", "-Infinity", "0x10", "tru", "nul",
	"True", "nulll", "\"", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"",
	"\"\\\"", "\"\\U0041\"", "\"\t\"", "\"a\nb\"", "\"\x1f\"", "[", "]",
	"[1", "[1,]", "[,1]", "[1 2]", "{", "}", "{\"a\"}", "{\"a\":}",
	"{\"a\" 1}", "{\"a\":1,}", "{a:1}", "{'a':1}", "{1:1}", "{} x",
	"{}{}", "1 2", "[1]]", "\"a\"\"b\"", "/* */1", "1//", "\xef\xbb\xbf{}",
	"\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xff\"", "\"\xe2\x82\"",
	"[\"\xf4\x90\x80\x80\"]", "{\"\xc3\":1}", "\x00",
};

TEST(json_valid_tables)
{
	char why[128];

	for (size_t i = 0; i < sizeof(json_good) / sizeof(json_good[0]); i++) {
		why[0] = '\0';
		if (!json_valid(json_good[i], strlen(json_good[i]), why,
				sizeof(why))) {
			fprintf(stderr, "refused %s: %s\n", json_good[i], why);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(json_bad) / sizeof(json_bad[0]); i++) {
		size_t len = strlen(json_bad[i]);

		if (len == 0 && i > 1)
			len = 1; /* the cases that are a lone NUL */
		why[0] = '\0';
		if (json_valid(json_bad[i], len, why, sizeof(why))) {
			fprintf(stderr, "accepted bad case %zu: %s\n", i,
				json_bad[i]);
			CHECK(0);
		}
		CHECK(why[0] != '\0');
	}
	/* An embedded NUL after a valid value, and inside an array. */
	CHECK(!json_valid("1\0", 2, NULL, 0));
	CHECK(!json_valid("[1,\0]", 5, NULL, 0));
	CHECK(json_valid("\"a\\u0000b\"", 10, NULL, 0));
	/* Only len bytes are read. */
	CHECK(json_valid("[1]garbage", 3, NULL, 0));
	CHECK(!json_valid("[1]", 2, NULL, 0));
}

static const struct {
	const char *in;
	const char *why;
} json_reasons[] = {
	{ "{\"a\":1,\"b\":2 \"c\"}", "invalid JSON at byte 13: expected ',' or '}'" },
	{ "[1 2]", "invalid JSON at byte 3: expected ',' or ']'" },
	{ "{} x", "invalid JSON at byte 3: unexpected text after the value" },
	{ "\"ab\xff\"", "invalid UTF-8 at byte 3" },
	{ "01", "invalid JSON at byte 1: leading zero in number" },
	{ "1.", "invalid JSON at byte 2: expected a digit" },
	{ "\"\\x\"", "invalid JSON at byte 2: bad escape in string" },
	{ "\"a\tb\"", "invalid JSON at byte 2: control character in string" },
	{ "\"abc", "invalid JSON at byte 4: unterminated string" },
	{ "", "invalid JSON at byte 0: expected a value" },
	{ "{\"a\" 1}", "invalid JSON at byte 5: expected ':'" },
	{ "{1:1}", "invalid JSON at byte 1: expected a string key" },
	{ "\"\\u00zz\"", "invalid JSON at byte 5: bad \\u escape" },
};

TEST(json_valid_reasons)
{
	char why[128];

	for (size_t i = 0; i < sizeof(json_reasons) / sizeof(json_reasons[0]);
	     i++) {
		CHECK(!json_valid(json_reasons[i].in, strlen(json_reasons[i].in),
				  why, sizeof(why)));
		CHECK_EQ_STR(why, json_reasons[i].why);
	}
	/* A short reason buffer is truncated, not overrun. */
	memset(why, 'z', sizeof(why));
	CHECK(!json_valid("[1 2]", 5, why, 8));
	CHECK_EQ_STR(why, "invalid");
	CHECK(why[8] == 'z');
	CHECK(json_valid("1", 1, why, sizeof(why)));
	CHECK_EQ_STR(why, "");
}

TEST(json_valid_nesting)
{
	struct buf b = BUF_INIT;
	char why[128];

	for (int i = 0; i < 64; i++)
		buf_adds(&b, i % 2 ? "{\"k\":" : "[");
	buf_adds(&b, "1");
	for (int i = 63; i >= 0; i--)
		buf_adds(&b, i % 2 ? "}" : "]");
	CHECK(json_valid(b.p, b.len, why, sizeof(why)));

	buf_reset(&b);
	for (int i = 0; i < 65; i++)
		buf_addc(&b, '[');
	for (int i = 0; i < 65; i++)
		buf_addc(&b, ']');
	CHECK(!json_valid(b.p, b.len, why, sizeof(why)));
	CHECK(strstr(why, "nesting deeper than 64") != NULL);

	/* Hostile depth is refused without deep recursion. */
	buf_reset(&b);
	for (int i = 0; i < 1000000; i++)
		buf_addc(&b, '[');
	CHECK(!json_valid(b.p, b.len, why, sizeof(why)));
	CHECK(strstr(why, "nesting deeper than 64") != NULL);
	buf_release(&b);
}

TEST(json_valid_typical_record)
{
	const char *rec = "{\"t\":1700000000.123,\"dev\":\"pump-7\",\"v\":[21.5,"
			  "-0.25,3e2],\"ok\":true,\"note\":\"caf\xc3\xa9 \\u00e9\","
			  "\"n\":null}";

	CHECK(json_valid(rec, strlen(rec), NULL, 0));
	CHECK(!json_valid(rec, strlen(rec) - 1, NULL, 0));
}

TEST(base64_rfc4648_vectors)
{
	static const char *const v[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	static const unsigned char bin[] = { 0x00, 0xfb, 0xff, 0xfe, 0x3e, 0x3f };
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		buf_reset(&b);
		REQUIRE(buf_adds(&b, "x") == 0);
		CHECK_EQ_INT(buf_add_base64(&b, v[i][0], strlen(v[i][0])), 0);
		CHECK_EQ_STR(b.p + 1, v[i][1]);
	}
	buf_reset(&b);
	CHECK_EQ_INT(buf_add_base64(&b, bin, sizeof(bin)), 0);
	CHECK_EQ_STR(b.p, "APv//j4/");
	buf_release(&b);
}

int main(void)
{
	RUN(buf_grows_and_stays_terminated);
	RUN(buf_printf_formats_long_text);
	RUN(buf_survives_allocation_failure);
	RUN(json_add_str_escapes);
	RUN(base64_rfc4648_vectors);
	RUN(json_add_str_oom_sweep);
	RUN(escape_round_trip);
	RUN(jw_writes_exact_text);
	RUN(jw_double_compact);
	RUN(jw_int_limits);
	RUN(jw_misuse_is_reported);
	RUN(jw_oom_is_sticky);
	RUN(utf8_edge_cases);
	RUN(utf8_matches_reference);
	RUN(utf8_typical_records);
	RUN(json_valid_tables);
	RUN(json_valid_reasons);
	RUN(json_valid_nesting);
	RUN(json_valid_typical_record);
	TEST_END();
}
