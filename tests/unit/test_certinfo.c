/* test_certinfo.c - the validity dates of client certificates for status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certinfo.h"
#include "config.h"
#include "output.h"
#include "status.h"
#include "test.h"

/* A self-signed P-256 certificate valid from 2024-01-01 00:00:00 UTC to
 * 2040-01-01 12:34:56 UTC: its end lies past 2038, where a 32-bit time_t
 * would wrap. */
static const char CERT[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBCzCBswICEAEwCgYIKoZIzj0EAwIwEjEQMA4GA1UEAwwHZml4dHVyZTAeFw0y\n"
	"NDAxMDEwMDAwMDBaFw00MDAxMDExMjM0NTZaMBIxEDAOBgNVBAMMB2ZpeHR1cmUw\n"
	"WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASMoS9DxeDlLIJDWUlLEu+sSr8E+Hfq\n"
	"1RMWCqDUPz1/fIjUHutplUnfY7ujsRRsEffsCT3eszVaTeqf0dZXFUPvMAoGCCqG\n"
	"SM49BAMCA0cAMEQCIAu09Kx5Lqia1m8W9keb8G8zwFb5O/HAKqvHmDQvn/i7AiBM\n"
	"3fK6qLnrn8OKB3TbchIZJ8OdHA6Qd6IxCI1sdKqvnQ==\n"
	"-----END CERTIFICATE-----\n";
#define NOT_BEFORE_MS 1704067200000LL
#define NOT_AFTER_MS 2209034096000LL

static const char KEY[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZmFrZWtleWZha2Vr\n"
	"-----END PRIVATE KEY-----\n";

static char dir[64];
static const char *const FILES[] = { "c.pem", "both.pem", "k.pem", "empty.pem",
				     "chain.pem" };

static const char *put(const char *name, const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	return path;
}

TEST(test_dates_of_a_certificate)
{
	int64_t nb = 0, na = 0;
	char err[160] = "";

	CHECK_EQ_INT(cert_file_dates(put("c.pem", CERT), &nb, &na, err, sizeof(err)), 0);
	CHECK(nb == NOT_BEFORE_MS);
	CHECK(na == NOT_AFTER_MS);
	CHECK_EQ_STR(err, "");
}

/* Key and certificate in one file: the certificate still counts. */
TEST(test_key_and_certificate_in_one_file)
{
	char both[sizeof(KEY) + sizeof(CERT)];
	int64_t nb = 0, na = 0;
	char err[160] = "";

	snprintf(both, sizeof(both), "%s%s", KEY, CERT);
	CHECK_EQ_INT(cert_file_dates(put("both.pem", both), &nb, &na, err, sizeof(err)), 0);
	CHECK(na == NOT_AFTER_MS);
}

/* A chain file whose second entry is damaged: the first certificate, the
 * client's own, still gives the dates. */
TEST(test_damaged_second_entry)
{
	char chain[sizeof(CERT) + 128];
	int64_t nb = 0, na = 0;
	char err[160] = "";

	snprintf(chain, sizeof(chain), "%s%s", CERT,
		 "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
	CHECK_EQ_INT(cert_file_dates(put("chain.pem", chain), &nb, &na, err, sizeof(err)), 0);
	CHECK(na == NOT_AFTER_MS);
	CHECK_EQ_STR(err, "");
}

TEST(test_what_is_not_a_certificate)
{
	int64_t nb = 1, na = 1;
	char err[160] = "", path[128];

	CHECK_EQ_INT(cert_file_dates(put("k.pem", KEY), &nb, &na, err, sizeof(err)), -EINVAL);
	CHECK(!strncmp(err, "not a certificate: ", 19));
	CHECK_EQ_INT(cert_file_dates(put("empty.pem", ""), &nb, &na, err, sizeof(err)), -EINVAL);
	snprintf(path, sizeof(path), "%s/missing.pem", dir);
	CHECK_EQ_INT(cert_file_dates(path, &nb, &na, err, sizeof(err)), -ENOENT);
	CHECK(!strncmp(err, "cannot read ", 12));
}

static const char *conf_cert(const void *conf)
{
	return *(const char *const *)conf;
}

/* What status shows for an output: nothing without a client certificate,
 * the dates with one, the reason when it cannot be read. */
TEST(test_status_fill)
{
	static const struct output_type t = { .name = "fake", .client_cert = conf_cert };
	const char *typ = NULL;
	struct output_conf oc = { .name = "lake", .typ = &typ, .out_type = &t };
	struct status_output st;
	char path[128];

	memset(&st, 0, sizeof(st));
	cert_status_fill(&oc, &st);
	CHECK_EQ_STR(st.cert_path, "");

	snprintf(path, sizeof(path), "%s", put("c.pem", CERT));
	typ = path;
	cert_status_fill(&oc, &st);
	CHECK_EQ_STR(st.cert_path, path);
	CHECK(st.cert_not_before_wall_ms == NOT_BEFORE_MS);
	CHECK(st.cert_not_after_wall_ms == NOT_AFTER_MS);
	CHECK_EQ_STR(st.cert_error, "");

	memset(&st, 0, sizeof(st));
	snprintf(path, sizeof(path), "%s/gone.pem", dir);
	cert_status_fill(&oc, &st);
	CHECK_EQ_STR(st.cert_path, path);
	CHECK(st.cert_not_after_wall_ms == 0);
	CHECK(!strncmp(st.cert_error, "cannot read ", 12));
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_certinfo.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_dates_of_a_certificate);
	RUN(test_key_and_certificate_in_one_file);
	RUN(test_damaged_second_entry);
	RUN(test_what_is_not_a_certificate);
	RUN(test_status_fill);
	for (size_t i = 0; i < sizeof(FILES) / sizeof(FILES[0]); i++) {
		char p[128];

		snprintf(p, sizeof(p), "%s/%s", dir, FILES[i]);
		unlink(p);
	}
	rmdir(dir);
	TEST_END();
}
