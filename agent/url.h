/* url.h - the host and port part of the URLs in output configs. */
#ifndef AGENT_URL_H
#define AGENT_URL_H

#include <stddef.h>

/* Parse "host", "host:port", "[v6addr]" or "[v6addr]:port" at the start of
 * s (what follows the scheme's "//"). The host ends at ':', '/', '?' or
 * '#'. host gets the name without brackets; *port is set only when a port
 * is given (1 to 65535); *rest points after what was parsed. Returns 0,
 * -ERANGE for a port number outside 1 to 65535 (URL_PORT_RANGE says so), or
 * -EINVAL for an empty or too long host, an unclosed bracket or a port that
 * is not a number. */
#define URL_PORT_RANGE "the port must be 1 to 65535"

int url_host_port(const char *s, char *host, size_t hostlen, int *port, const char **rest);

#endif
