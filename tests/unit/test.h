/* test.h - the unit tests' tiny harness.
 *
 * Each tests/unit/test_<module>.c defines TEST(name) functions and lists them
 * in main() with RUN(name). CHECK() records a failure and goes on; REQUIRE()
 * returns from the test. The program prints "N passed, N failed" and exits
 * non-zero on any failure.
 */
#ifndef TEST_H
#define TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks;
static int test_passed, test_failed;

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
		name();                                                      \
		if (test_failed_checks == before_) {                         \
			test_passed++;                                       \
		} else {                                                     \
			test_failed++;                                       \
			fprintf(stderr, "FAIL %s\n", #name);                 \
		}                                                            \
	} while (0)

#define TEST_END()                                                           \
	do {                                                                 \
		printf("%d passed, %d failed\n", test_passed, test_failed);  \
		return test_failed ? 1 : 0;                                  \
	} while (0)

#endif
