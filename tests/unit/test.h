/* test.h - the unit tests' tiny harness.
 *
 * Each tests/unit/test_<module>.c defines TEST(name) functions and lists them
 * in main() with RUN(name). CHECK() records a failure and goes on; REQUIRE()
 * returns from the test. SKIP("why") ends a test that cannot run here: it
 * prints "SKIP: name: why" and counts as skipped, never as passed. The
 * program prints "N passed, N failed, N skipped" and exits 1 on any failure,
 * 77 when every test was skipped (tests/run-tests counts that as a skip),
 * else 0.
 */
#ifndef TEST_H
#define TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_EXIT_SKIP 77

static int test_failed_checks;
static int test_passed, test_failed, test_skipped;
static const char *test_current = "";
static int test_skip_flag;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			test_failed_checks++;                                \
		}                                                            \
	} while (0)

#define REQUIRE(cond)                                                        \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n",       \
				__FILE__, __LINE__, #cond);                  \
			test_failed_checks++;                                \
			return;                                              \
		}                                                            \
	} while (0)

/* End the current test as skipped; the reason is shown by tests/run-tests. */
#define SKIP(...)                                                            \
	do {                                                                 \
		printf("SKIP: %s: ", test_current);                          \
		printf(__VA_ARGS__);                                         \
		printf("\n");                                                \
		test_skip_flag = 1;                                          \
		return;                                                      \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                   \
	do {                                                                 \
		long long a_ = (long long)(a), b_ = (long long)(b);          \
		if (a_ != b_) {                                              \
			fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n",  \
				__FILE__, __LINE__, #a, a_, b_);             \
			test_failed_checks++;                                \
		}                                                            \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                   \
	do {                                                                 \
		const char *a_ = (a), *b_ = (b);                             \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                     \
			fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", \
				__FILE__, __LINE__, #a, a_ ? a_ : "(null)",  \
				b_ ? b_ : "(null)");                         \
			test_failed_checks++;                                \
		}                                                            \
	} while (0)

#define RUN(name)                                                            \
	do {                                                                 \
		int before_ = test_failed_checks;                            \
		test_current = #name;                                        \
		test_skip_flag = 0;                                          \
		name();                                                      \
		if (test_failed_checks == before_ && test_skip_flag) {       \
			test_skipped++;                                      \
		} else if (test_failed_checks == before_) {                  \
			test_passed++;                                       \
		} else {                                                     \
			test_failed++;                                       \
			fprintf(stderr, "FAIL %s\n", #name);                 \
		}                                                            \
	} while (0)

#define TEST_END()                                                           \
	do {                                                                 \
		printf("%d passed, %d failed, %d skipped\n", test_passed,    \
		       test_failed, test_skipped);                           \
		fflush(stdout);                                              \
		return test_failed ? 1 : test_skipped && !test_passed        \
			     ? TEST_EXIT_SKIP : 0;                           \
	} while (0)

#endif
