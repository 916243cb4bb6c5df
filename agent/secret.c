/* secret.c - credentials read from files (see secret.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"
#include "secret.h"

int secret_read(const char *path, size_t max, char **out)
{
	size_t len = 0, cap = max + 2;
	char *s;
	int fd, rc = 0;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	s = xmalloc(cap);
	if (!s) {
		rc = -ENOMEM;
		goto out_close;
	}
	/* Read one byte more than allowed, to tell "too long" apart. */
	while (len <= max) {
		ssize_t n = read(fd, s + len, max + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out_wipe;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	if (len > max) {
		rc = -EFBIG;
		goto out_wipe;
	}
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < ' ' || s[i] == 0x7f) {
			rc = -EBADMSG;
			goto out_wipe;
		}
	}
	s[len] = '\0';
	*out = s;
	goto out_close;
out_wipe:
	explicit_bzero(s, cap);
	xfree(s);
out_close:
	close(fd);
	return rc;
}

void secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	xfree(s);
}

const char *secret_strerror(int rc)
{
	switch (rc) {
	case -EFBIG:
		return "too long";
	case -EBADMSG:
		return "holds control characters (one line of text expected)";
	case -ENODATA:
		return "empty";
	default:
		return strerror(-rc);
	}
}
