/* secret.h - credentials read from files (passwords, tokens, keys).
 *
 * A secret is one line of text; a trailing newline is ignored. It is never
 * logged, and its buffer is wiped before it is freed.
 */
#ifndef AGENT_SECRET_H
#define AGENT_SECRET_H

#include <stddef.h>

/* Read the secret in path, at most max bytes, into *out (secret_free()).
 * Returns 0, -errno of open/read, -EFBIG (longer than max), -EBADMSG
 * (control characters: not one line of text) or -ENOMEM. The secret may
 * be empty; callers that need one check. */
int secret_read(const char *path, size_t max, char **out);
/* Wipe and free; accepts NULL. */
void secret_free(char *s);
/* Words for a secret_read() error, for status and logs. */
const char *secret_strerror(int rc);

#endif
