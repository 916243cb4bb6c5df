/* mem.h - the one allocation wrapper: accounting and injectable failure.
 *
 * Every allocation in the agent goes through these calls so that memory in use
 * can be reported in status and tests can make the N-th allocation fail.
 * All functions return NULL on failure (never abort); xfree(NULL) is a no-op.
 */
#ifndef AGENT_MEM_H
#define AGENT_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void xfree(void *p);

/* Bytes currently allocated through this wrapper. */
size_t mem_in_use(void);
/* Test hook: make the allocation `n` calls from now fail (0 = the next one);
 * a negative value disables injection. */
void mem_fail_after(long n);

#endif
