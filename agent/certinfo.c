/* certinfo.c - see certinfo.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mbedtls/error.h>
#include <mbedtls/x509_crt.h>

#include "certinfo.h"
#include "config.h"
#include "output.h"
#include "status.h"

static int64_t x509_ms(const mbedtls_x509_time *t)
{
	struct tm tm = {
		.tm_year = t->year - 1900,
		.tm_mon = t->mon - 1,
		.tm_mday = t->day,
		.tm_hour = t->hour,
		.tm_min = t->min,
		.tm_sec = t->sec,
	};

	return (int64_t)timegm(&tm) * 1000;
}

int cert_file_dates(const char *path, int64_t *not_before_ms, int64_t *not_after_ms, char *err,
		    size_t errlen)
{
	mbedtls_x509_crt crt;
	char e[128];
	int ret;

	mbedtls_x509_crt_init(&crt);
	/* A positive ret counts entries that were not certificates (a key or
	 * a comment block in the same file): the first certificate still
	 * counts. */
	ret = mbedtls_x509_crt_parse_file(&crt, path);
	if (ret < 0 || crt.version == 0) {
		if (ret == MBEDTLS_ERR_PK_FILE_IO_ERROR) {
			snprintf(err, errlen, "cannot read %s", path);
		} else {
			mbedtls_strerror(ret, e, sizeof(e));
			snprintf(err, errlen, "not a certificate: %s", e);
		}
		mbedtls_x509_crt_free(&crt);
		return ret == MBEDTLS_ERR_PK_FILE_IO_ERROR ? -ENOENT : -EINVAL;
	}
	*not_before_ms = x509_ms(&crt.valid_from);
	*not_after_ms = x509_ms(&crt.valid_to);
	mbedtls_x509_crt_free(&crt);
	return 0;
}

void cert_status_fill(const struct output_conf *oc, struct status_output *st)
{
	const struct output_type *t = oc->out_type;
	const char *path;

	if (!t || !t->client_cert || !oc->typ)
		return;
	path = t->client_cert(oc->typ);
	if (!path || !*path)
		return;
	snprintf(st->cert_path, sizeof(st->cert_path), "%s", path);
	if (cert_file_dates(path, &st->cert_not_before_wall_ms, &st->cert_not_after_wall_ms,
			    st->cert_error, sizeof(st->cert_error))) {
		st->cert_not_before_wall_ms = 0;
		st->cert_not_after_wall_ms = 0;
	}
}
