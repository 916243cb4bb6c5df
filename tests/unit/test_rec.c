/* test_rec.c - the record builder: exact JSON for every kind of field,
 * units and qualities beside the values, and its errors. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "rec.h"
#include "test.h"

static const char *finish(struct rec *r, int *rc)
{
	const char *d = NULL;
	size_t n = 0;

	*rc = rec_finish(r, &d, &n);
	return *rc ? "" : d;
}

TEST(test_fields_of_every_kind)
{
	struct rec *r = rec_new();
	const char *out;
	int rc;

	REQUIRE(r);
	rec_reset(r, 0);
	rec_str(r, "device", "meter \"A\"");
	rec_num(r, "voltage", 230.1, "V");
	rec_int(r, "count", -42, NULL);
	rec_uint(r, "energy", UINT64_MAX, "Wh");
	rec_bool(r, "relay", true);
	rec_null(r, "current", "A", "timeout");
	rec_strn(r, "serial", "AB\0CD", 2);
	out = finish(r, &rc);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_STR(out, "{\"device\":\"meter \\\"A\\\"\",\"voltage\":230.1,\"count\":-42,"
		     "\"energy\":18446744073709551615,\"relay\":true,\"current\":null,\"serial\":\"AB\","
		     "\"units\":{\"voltage\":\"V\",\"energy\":\"Wh\",\"current\":\"A\"},"
		     "\"quality\":{\"current\":\"timeout\"}}");
	CHECK(json_valid(out, strlen(out), NULL, 0));
	rec_free(r);
}

/* Nested objects name their units and qualities by dotted path; a
 * non-finite number is null with quality "nan"; a quality can be put on a
 * value that was read (an out-of-range reading). */
TEST(test_nesting_paths_and_quality)
{
	struct rec *r = rec_new();
	const char *out;
	int rc;

	REQUIRE(r);
	rec_reset(r, 0);
	rec_obj_begin(r, "net");
	rec_obj_begin(r, "eth0");
	rec_uint(r, "rx_bytes", 10, "B");
	rec_obj_end(r);
	rec_obj_end(r);
	rec_num(r, "temp", NAN, "C");
	rec_num(r, "pressure", 1e300, "Pa");
	rec_quality(r, "pressure", "out of range");
	out = finish(r, &rc);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_STR(out, "{\"net\":{\"eth0\":{\"rx_bytes\":10}},\"temp\":null,\"pressure\":1e+300,"
		     "\"units\":{\"net.eth0.rx_bytes\":\"B\",\"temp\":\"C\",\"pressure\":\"Pa\"},"
		     "\"quality\":{\"temp\":\"nan\",\"pressure\":\"out of range\"}}");
	/* Reset reuses the builder. */
	rec_reset(r, 0);
	rec_int(r, "a", 1, NULL);
	out = finish(r, &rc);
	CHECK_EQ_STR(out, "{\"a\":1}");
	rec_free(r);
}

TEST(test_errors_are_kept_and_returned)
{
	struct rec *r = rec_new();
	int rc;

	REQUIRE(r);
	/* An object left open. */
	rec_reset(r, 0);
	rec_obj_begin(r, "x");
	finish(r, &rc);
	CHECK_EQ_INT(rc, -EINVAL);
	/* A close without an open. */
	rec_reset(r, 0);
	rec_obj_end(r);
	rec_int(r, "a", 1, NULL);
	finish(r, &rc);
	CHECK_EQ_INT(rc, -EINVAL);
	/* The side objects' names are reserved at the top level only. */
	rec_reset(r, 0);
	rec_str(r, "units", "V");
	finish(r, &rc);
	CHECK_EQ_INT(rc, -EINVAL);
	rec_reset(r, 0);
	rec_obj_begin(r, "m");
	rec_str(r, "units", "V");
	rec_obj_end(r);
	finish(r, &rc);
	CHECK_EQ_INT(rc, 0);
	/* An empty name. */
	rec_reset(r, 0);
	rec_int(r, "", 1, NULL);
	finish(r, &rc);
	CHECK_EQ_INT(rc, -EINVAL);
	/* Larger than the input's max_record_bytes. */
	rec_reset(r, 16);
	rec_str(r, "text", "0123456789abcdef");
	finish(r, &rc);
	CHECK_EQ_INT(rc, -EMSGSIZE);
	rec_free(r);
	/* A builder that could not be made: calls are no-ops. */
	rec_int(NULL, "a", 1, NULL);
	rec_obj_end(NULL);
	rec_free(NULL);
}

TEST(test_out_of_memory_is_reported)
{
	struct rec *r = rec_new();
	int rc, seen = 0;

	REQUIRE(r);
	for (int fail = 0; fail < 8; fail++) {
		rec_reset(r, 0);
		mem_fail_after(fail);
		for (int i = 0; i < 50; i++)
			rec_num(r, "a_rather_long_field_name", i, "unit");
		mem_fail_after(-1);
		finish(r, &rc);
		CHECK(rc == 0 || rc == -ENOMEM);
		seen += rc == -ENOMEM;
	}
	CHECK(seen > 0);
	rec_free(r);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	RUN(test_fields_of_every_kind);
	RUN(test_nesting_paths_and_quality);
	RUN(test_errors_are_kept_and_returned);
	RUN(test_out_of_memory_is_reported);
	RUN(test_no_leaks);
	TEST_END();
}
