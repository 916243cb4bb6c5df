/* test_secret.c - credentials read from files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"
#include "secret.h"
#include "test.h"

static char path[64];

static void put(const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (f) {
		fwrite(text, 1, len, f);
		fclose(f);
	}
}

TEST(test_reads_one_line)
{
	char *s = NULL;
	size_t before = mem_in_use();

	put("hunter2\r\n", 9);
	REQUIRE(secret_read(path, 64, &s) == 0);
	CHECK_EQ_STR(s, "hunter2");
	secret_free(s);
	put("", 0);
	REQUIRE(secret_read(path, 64, &s) == 0);
	CHECK_EQ_STR(s, "");
	secret_free(s);
	secret_free(NULL);
	CHECK_EQ_INT(mem_in_use(), before);
}

TEST(test_refuses_what_is_not_one_line)
{
	char *s = (char *)1;
	char big[100];

	memset(big, 'x', sizeof(big));
	put(big, sizeof(big));
	CHECK_EQ_INT(secret_read(path, 99, &s), -EFBIG);
	CHECK(s == NULL);
	CHECK_EQ_INT(secret_read(path, 100, &s), 0);
	secret_free(s);
	put("two\nlines\n", 10);
	CHECK_EQ_INT(secret_read(path, 64, &s), -EBADMSG);
	put("nul\0byte", 8);
	CHECK_EQ_INT(secret_read(path, 64, &s), -EBADMSG);
	CHECK_EQ_INT(secret_read("/nonexistent/secret", 64, &s), -ENOENT);
	CHECK(strstr(secret_strerror(-EBADMSG), "one line") != NULL);
}

int main(void)
{
	snprintf(path, sizeof(path), "/tmp/test_secret.%d", (int)getpid());
	RUN(test_reads_one_line);
	RUN(test_refuses_what_is_not_one_line);
	unlink(path);
	TEST_END();
}
