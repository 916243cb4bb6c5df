/* test_lines.c - line framing for stream sources: lines split across
 * reads, CRLF, lines not taken yet, over-long lines in one piece or many,
 * the end of the stream, and bounded memory. */
#include <errno.h>
#include <string.h>

#include "lines.h"
#include "mem.h"
#include "test.h"

static int next_str(struct lines *lf, char *out, size_t cap, const char **why, int64_t *off)
{
	struct lines_rec r;
	int rc = lines_next(lf, &r);

	if (rc != 1)
		return rc;
	snprintf(out, cap, "%.*s", (int)r.len, r.data);
	if (why)
		*why = r.too_long;
	if (off)
		*off = r.offset;
	lines_consume(lf);
	return 1;
}

TEST(test_lines_across_reads)
{
	struct lines lf;
	char s[64];
	int64_t off;

	lines_init(&lf, 100);
	lf.strip_cr = true;
	REQUIRE(lines_feed(&lf, "GPGGA,1", 7) == 0);
	CHECK_EQ_INT(lines_next(&lf, &(struct lines_rec){ 0 }), 0);
	REQUIRE(lines_feed(&lf, "23\r\nb\n\nc", 8) == 0);
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), NULL, &off), 1);
	CHECK_EQ_STR(s, "GPGGA,123");
	CHECK_EQ_INT(off, 0);
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), NULL, &off), 1);
	CHECK_EQ_STR(s, "b");
	CHECK_EQ_INT(off, 11);
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), NULL, &off), 1);
	CHECK_EQ_STR(s, "");
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), NULL, NULL), 0);
	CHECK_EQ_INT(lines_buffered(&lf), 1);
	/* The stream ends: "c" is the last line. */
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), NULL, NULL), 0);
	{
		struct lines_rec r;

		CHECK_EQ_INT(lines_flush(&lf, &r), 1);
		CHECK_EQ_INT((int)r.len, 1);
		CHECK(r.data[0] == 'c');
		lines_consume(&lf);
		CHECK_EQ_INT(lines_flush(&lf, &r), 0);
	}
	lines_release(&lf);
}

/* A line the queue did not take yet is returned again. */
TEST(test_line_not_taken_is_returned_again)
{
	struct lines lf;
	struct lines_rec r;

	lines_init(&lf, 100);
	REQUIRE(lines_feed(&lf, "one\ntwo\n", 8) == 0);
	CHECK_EQ_INT(lines_next(&lf, &r), 1);
	CHECK_EQ_INT((int)r.len, 3);
	CHECK_EQ_INT(lines_next(&lf, &r), 1);     /* not consumed: the same */
	CHECK(!memcmp(r.data, "one", 3));
	lines_consume(&lf);
	CHECK_EQ_INT(lines_next(&lf, &r), 1);
	CHECK(!memcmp(r.data, "two", 3));
	CHECK_EQ_INT(r.offset, 4);
	lines_release(&lf);
}

/* An over-long line that arrives in many pieces is dropped as it comes
 * (memory stays bounded), its head kept for the dead-letter queue; the
 * lines around it are intact. */
TEST(test_overlong_line_in_pieces)
{
	struct lines lf;
	char piece[1000], s[64];
	const char *why = NULL;
	int64_t off;

	lines_init(&lf, 16);
	memset(piece, 'x', sizeof(piece));
	REQUIRE(lines_feed(&lf, "ok\n", 3) == 0);
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), &why, NULL), 1);
	CHECK_EQ_STR(s, "ok");
	CHECK(why == NULL);
	/* Read, drain, read again, as a driver does. */
	for (int i = 0; i < 100; i++) {
		REQUIRE(lines_feed(&lf, piece, sizeof(piece)) == 0);
		CHECK_EQ_INT(next_str(&lf, s, sizeof(s), &why, NULL), 0);
		CHECK(lines_buffered(&lf) <= 16);
	}
	REQUIRE(lines_feed(&lf, "\nafter\n", 7) == 0);
	{
		struct lines_rec r;

		CHECK_EQ_INT(lines_next(&lf, &r), 1);
		CHECK(r.too_long != NULL);
		CHECK_EQ_INT((int)r.len, LINES_KEEP);
		CHECK_EQ_INT(r.offset, 3);
		CHECK(strstr(r.too_long, "100000 bytes") != NULL);
		lines_consume(&lf);
	}
	CHECK_EQ_INT(next_str(&lf, s, sizeof(s), &why, &off), 1);
	CHECK_EQ_STR(s, "after");
	CHECK(why == NULL);
	CHECK_EQ_INT(off, 3 + 100000 + 1);
	CHECK_EQ_INT(lf.overlong, 1);
	CHECK(lf.cap <= 4 * 4096);
	lines_release(&lf);
}

/* An over-long line complete in one read; and one cut by the end. */
TEST(test_overlong_line_in_one_piece_and_at_the_end)
{
	struct lines lf;
	struct lines_rec r;

	lines_init(&lf, 4);
	REQUIRE(lines_feed(&lf, "abcdefgh\nab\nxyzxyzxyz", 21) == 0);
	CHECK_EQ_INT(lines_next(&lf, &r), 1);
	CHECK(r.too_long != NULL);
	CHECK_EQ_INT((int)r.len, 8);
	lines_consume(&lf);
	CHECK_EQ_INT(lines_next(&lf, &r), 1);
	CHECK(r.too_long == NULL && r.len == 2);
	lines_consume(&lf);
	CHECK_EQ_INT(lines_next(&lf, &r), 0);
	CHECK_EQ_INT(lines_flush(&lf, &r), 1);
	CHECK(r.too_long != NULL);
	CHECK_EQ_INT((int)r.len, 9);
	lines_consume(&lf);
	CHECK_EQ_INT(lf.overlong, 2);
	lines_release(&lf);
}

TEST(test_out_of_memory)
{
	struct lines lf;

	lines_init(&lf, 100);
	mem_fail_after(0);
	CHECK_EQ_INT(lines_feed(&lf, "abc\n", 4), -ENOMEM);
	mem_fail_after(-1);
	CHECK_EQ_INT(lines_feed(&lf, "abc\n", 4), 0);
	lines_release(&lf);
}

TEST(test_no_leaks)
{
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	RUN(test_lines_across_reads);
	RUN(test_line_not_taken_is_returned_again);
	RUN(test_overlong_line_in_pieces);
	RUN(test_overlong_line_in_one_piece_and_at_the_end);
	RUN(test_out_of_memory);
	RUN(test_no_leaks);
	TEST_END();
}
