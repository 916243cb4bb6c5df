/* test_batch.c - record lines, batch ids, timestamps and backoff. */
#include <string.h>

#include "batch.h"
#include "buf.h"
#include "output.h"
#include "test.h"

TEST(test_line_exact)
{
	struct buf b = BUF_INIT;
	struct qrec r = { .seq = 42, .kind = REC_DATA, .stream = "sensors",
			  .key = "tail:1:2:3:4", .ts_wall_ms = 1795349323435LL,
			  .ts_mono_ms = 81234, .clock = CLOCK_SYNCED,
			  .data = "{\"t\":21.5}", .len = 10 };

	REQUIRE(batch_encode_line(&b, "gw-01", &r) == 0);
	CHECK_EQ_STR(b.p, "{\"agent\":\"gw-01\",\"stream\":\"sensors\",\"seq\":42,"
			  "\"key\":\"tail:1:2:3:4\",\"ts\":\"2026-11-22T12:08:43.435Z\","
			  "\"mono_ms\":81234,\"clock\":\"synced\",\"data\":{\"t\":21.5}}\n");
	buf_release(&b);
}

TEST(test_gap_and_unsynced)
{
	struct buf b = BUF_INIT;
	char why[64];
	const char *gap = "{\"gap\":{\"first_seq\":1,\"last_seq\":9,\"count\":9,\"reason\":\"disk_full\"}}";
	struct qrec r = { .seq = 10, .kind = REC_GAP, .stream = "_agent", .key = "gap:1-9",
			  .ts_wall_ms = 5, .ts_mono_ms = 1, .clock = CLOCK_UNSYNCED,
			  .data = gap, .len = strlen(gap) };

	REQUIRE(batch_encode_line(&b, "a", &r) == 0);
	CHECK(strstr(b.p, "\"ts\":\"1970-01-01T00:00:00.005Z\"") != NULL);
	CHECK(strstr(b.p, "\"clock\":\"unsynced\",\"kind\":\"gap\",\"data\":{\"gap\"") != NULL);
	/* Every line is one valid JSON object ending in a newline. */
	CHECK(b.p[b.len - 1] == '\n');
	CHECK(json_valid(b.p, b.len - 1, why, sizeof(why)));
	buf_release(&b);
}

TEST(test_key_is_escaped)
{
	struct buf b = BUF_INIT;
	char why[64];
	struct qrec r = { .seq = 1, .stream = "s", .key = "a\"b\\c\n", .data = "1", .len = 1 };

	REQUIRE(batch_encode_line(&b, "a", &r) == 0);
	CHECK(strstr(b.p, "\"key\":\"a\\\"b\\\\c\\n\"") != NULL);
	CHECK(json_valid(b.p, b.len - 1, why, sizeof(why)));
	buf_release(&b);
}

TEST(test_batch_id)
{
	char a[33], b[33], c[33], d[33];

	batch_make_id(a, "gw-01", "lake", 1, 100);
	batch_make_id(b, "gw-01", "lake", 1, 100);
	batch_make_id(c, "gw-01", "lake", 1, 101);
	batch_make_id(d, "gw-02", "lake", 1, 100);
	CHECK_EQ_INT(strlen(a), 32);
	CHECK_EQ_STR(a, b);             /* a retry carries the same id */
	CHECK(strcmp(a, c) != 0);
	CHECK(strcmp(a, d) != 0);
	CHECK(strspn(a, "0123456789abcdef") == 32);
}

TEST(test_timestamps)
{
	char ts[32];

	batch_format_ts(ts, 0);
	CHECK_EQ_STR(ts, "1970-01-01T00:00:00.000Z");
	batch_format_ts(ts, 951782400999LL);
	CHECK_EQ_STR(ts, "2000-02-29T00:00:00.999Z");
	batch_format_ts(ts, 951782401000LL);
	CHECK_EQ_STR(ts, "2000-02-29T00:00:01.000Z");
	/* 64-bit time: past 2038. */
	batch_format_ts(ts, 4102444800000LL);
	CHECK_EQ_STR(ts, "2100-01-01T00:00:00.000Z");
}

TEST(test_backoff)
{
	/* Doubling from the base, capped, jittered in [d/2, d]. */
	for (int i = 0; i < 200; i++) {
		int64_t d0 = backoff_delay(1000, 60000, 0);
		int64_t d3 = backoff_delay(1000, 60000, 3);
		int64_t d20 = backoff_delay(1000, 60000, 20);
		int64_t dbig = backoff_delay(1000, 60000, 4000000000u);

		CHECK(d0 >= 500 && d0 <= 1000);
		CHECK(d3 >= 4000 && d3 <= 8000);
		CHECK(d20 >= 30000 && d20 <= 60000);
		CHECK(dbig >= 30000 && dbig <= 60000);
	}
	{
		/* Jitter really varies, so gateways do not retry in step. */
		int64_t first = backoff_delay(1000, 60000, 5);
		bool varied = false;

		for (int i = 0; i < 50 && !varied; i++)
			varied = backoff_delay(1000, 60000, 5) != first;
		CHECK(varied);
	}
}

int main(void)
{
	RUN(test_line_exact);
	RUN(test_gap_and_unsynced);
	RUN(test_key_is_escaped);
	RUN(test_batch_id);
	RUN(test_timestamps);
	RUN(test_backoff);
	TEST_END();
}
