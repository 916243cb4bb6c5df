/* url.c - the host and port part of the URLs in output configs (url.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int url_host_port(const char *s, char *host, size_t hostlen, int *port, const char **rest)
{
	const char *h = s, *end, *r;
	size_t n;

	if (*h == '[') {
		end = strchr(++h, ']');
		if (!end)
			return -EINVAL;
		r = end + 1;
	} else {
		end = h + strcspn(h, ":/?#");
		r = end;
	}
	n = (size_t)(end - h);
	if (!n || n >= hostlen)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	if (*r == ':') {
		char *e;
		long p;

		errno = 0;
		p = strtol(r + 1, &e, 10);
		if (e == r + 1 || !isdigit((unsigned char)r[1]))
			return -EINVAL;
		if (errno == ERANGE || p < 1 || p > 65535)
			return -ERANGE;
		*port = (int)p;
		r = e;
	}
	*rest = r;
	return 0;
}
