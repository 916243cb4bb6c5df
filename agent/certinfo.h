/* certinfo.h - the validity dates of a configured client certificate, for
 * `agentctl status`.
 *
 * The file is read on every status request, so the screen shows what is on
 * disk now: a field engineer who has just copied a renewed certificate sees
 * its new date at once (agentd uses it from the next reload).
 */
#ifndef AGENT_CERTINFO_H
#define AGENT_CERTINFO_H

#include <stddef.h>
#include <stdint.h>

struct output_conf;
struct status_output;

/* Validity of the first certificate in a PEM or DER file, as Unix time in
 * milliseconds. Returns 0, or -errno with words in err. */
int cert_file_dates(const char *path, int64_t *not_before_ms, int64_t *not_after_ms, char *err,
		    size_t errlen);

/* Fill st's client certificate fields from the output's configuration
 * (nothing when the output has no client certificate). */
void cert_status_fill(const struct output_conf *oc, struct status_output *st);

#endif
