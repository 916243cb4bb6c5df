/* url.h - the host and port part of the URLs in output configs. */
#ifndef AGENT_URL_H
#define AGENT_URL_H

#include <stddef.h>

/* Parse "host", "host:port", "[v6addr]" or "[v6addr]:port" at the start of
 * s (what follows the scheme's "//"). The host ends at ':', '/', '?' or
 * '#'. host gets the name without brackets; *port is set only when a port
 * is given (1 to 65535); *rest points after what was parsed. Returns 0, or
 * -EINVAL for an empty or too long host, an unclosed bracket or a bad port. */
int url_host_port(const char *s, char *host, size_t hostlen, int *port, const char **rest);

#endif
