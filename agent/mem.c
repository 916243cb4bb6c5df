/* mem.c - allocation with accounting and injectable failure (see mem.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* Each block carries its size in front so frees can be accounted. The
 * header is 16 bytes to keep the user pointer aligned for any type. */
#define HDR 16

static size_t in_use;
static long fail_countdown = -1;

static int should_fail(void)
{
	if (fail_countdown < 0)
		return 0;
	if (fail_countdown == 0) {
		fail_countdown = -1;
		return 1;
	}
	fail_countdown--;
	return 0;
}

void *xmalloc(size_t n)
{
	unsigned char *p;

	if (should_fail() || n > SIZE_MAX - HDR)
		return NULL;
	p = malloc(n + HDR);
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof(n));
	in_use += n;
	return p + HDR;
}

void *xcalloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = xmalloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *xrealloc(void *ptr, size_t n)
{
	unsigned char *base, *p;
	size_t old;

	if (!ptr)
		return xmalloc(n);
	if (should_fail() || n > SIZE_MAX - HDR)
		return NULL;
	base = (unsigned char *)ptr - HDR;
	memcpy(&old, base, sizeof(old));
	p = realloc(base, n + HDR);
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof(n));
	in_use = in_use - old + n;
	return p + HDR;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

char *xstrdup(const char *s)
{
	return s ? xstrndup(s, strlen(s)) : NULL;
}

void xfree(void *ptr)
{
	unsigned char *base;
	size_t old;

	if (!ptr)
		return;
	base = (unsigned char *)ptr - HDR;
	memcpy(&old, base, sizeof(old));
	in_use -= old;
	free(base);
}

size_t mem_in_use(void)
{
	return in_use;
}

void mem_fail_after(long n)
{
	fail_countdown = n;
}
