/* test_parse_nmea.c - the nmea parser: published example sentences of
 * receivers (GGA, RMC, GLL, VTG, GSA, ZDA, GSV, a proprietary one, AIS)
 * decode to the values their documentation gives, and every kind of bad
 * sentence is refused with its reason, the output left as it was. */
#include <errno.h>
#include <stdbool.h>

#include "buf.h"
#include "config.h"
#include "mem.h"
#include "parse.h"
#include "test.h"

static char why[256];

/* Parses into a buffer that already holds "pre": on success out must be
 * "pre" + want and JSON, on failure still "pre" and why must hold want. */
static bool parses(const char *s, int want_rc, const char *want)
{
	struct buf out = BUF_INIT;
	bool ok = true;
	int rc;

	buf_adds(&out, "pre");
	why[0] = '\0';
	rc = parse_record(PARSER_NMEA, s, strlen(s), NULL, 0, &out, why, sizeof(why));
	if (rc != want_rc) {
		fprintf(stderr, "  %s: rc %d, expected %d (why: %s)\n", s, rc, want_rc, why);
		ok = false;
	} else if (rc == 0) {
		if (strcmp(out.p + 3, want)) {
			fprintf(stderr, "  %s:\n  out  '%s'\n  want '%s'\n", s, out.p + 3, want);
			ok = false;
		} else if (!json_valid(out.p + 3, out.len - 3, why, sizeof(why))) {
			fprintf(stderr, "  output is not JSON: %s\n", why);
			ok = false;
		}
	} else {
		if (strcmp(out.p, "pre") || out.len != 3) {
			fprintf(stderr, "  out not restored: '%s'\n", out.p);
			ok = false;
		}
		if (!strstr(why, want)) {
			fprintf(stderr, "  %s: why '%s', expected '%s'\n", s, why, want);
			ok = false;
		}
	}
	buf_release(&out);
	return ok;
}

/* The examples of the classic NMEA reference (gpsinformation.org). */
TEST(test_gga)
{
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", 0,
		     "{\"talker\":\"GP\",\"type\":\"GGA\",\"fields\":[\"123519\",\"4807.038\",\"N\","
		     "\"01131.000\",\"E\",\"1\",\"08\",\"0.9\",\"545.4\",\"M\",\"46.9\",\"M\",null,null],"
		     "\"time\":\"12:35:19\",\"lat\":48.1173,\"lon\":11.51666667,\"fix_quality\":1,"
		     "\"satellites\":8,\"hdop\":0.9,\"altitude_m\":545.4,\"geoid_separation_m\":46.9,"
		     "\"dgps_age_s\":null,\"dgps_station\":null}"));
	/* South and west are negative; fractional seconds are kept. */
	CHECK(parses("$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76", 0,
		     "{\"talker\":\"GP\",\"type\":\"GGA\",\"fields\":[\"092750.000\",\"5321.6802\",\"N\","
		     "\"00630.3372\",\"W\",\"1\",\"8\",\"1.03\",\"61.7\",\"M\",\"55.2\",\"M\",null,null],"
		     "\"time\":\"09:27:50.000\",\"lat\":53.36133667,\"lon\":-6.50562,\"fix_quality\":1,"
		     "\"satellites\":8,\"hdop\":1.03,\"altitude_m\":61.7,\"geoid_separation_m\":55.2,"
		     "\"dgps_age_s\":null,\"dgps_station\":null}"));
	/* No fix yet: the receiver sends empty fields, shipped as null. */
	CHECK(parses("$GPGGA,,,,,,0,00,99.99,,,,,,*48", 0,
		     "{\"talker\":\"GP\",\"type\":\"GGA\",\"fields\":[null,null,null,null,null,\"0\","
		     "\"00\",\"99.99\",null,null,null,null,null,null],\"time\":null,\"lat\":null,"
		     "\"lon\":null,\"fix_quality\":0,\"satellites\":0,\"hdop\":99.99,"
		     "\"altitude_m\":null,\"geoid_separation_m\":null,\"dgps_age_s\":null,"
		     "\"dgps_station\":null}"));
}

TEST(test_rmc)
{
	CHECK(parses("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A", 0,
		     "{\"talker\":\"GP\",\"type\":\"RMC\",\"fields\":[\"123519\",\"A\",\"4807.038\",\"N\","
		     "\"01131.000\",\"E\",\"022.4\",\"084.4\",\"230394\",\"003.1\",\"W\"],"
		     "\"time\":\"12:35:19\",\"valid\":true,\"lat\":48.1173,\"lon\":11.51666667,"
		     "\"speed_kn\":22.4,\"course_deg\":84.4,\"date\":\"1994-03-23\","
		     "\"datetime\":\"1994-03-23T12:35:19Z\",\"magnetic_variation_deg\":-3.1}"));
	/* NMEA 2.3 adds the mode; a year below 80 is 20xx. */
	CHECK(parses("$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43", 0,
		     "{\"talker\":\"GP\",\"type\":\"RMC\",\"fields\":[\"092750.000\",\"A\",\"5321.6802\","
		     "\"N\",\"00630.3372\",\"W\",\"0.02\",\"31.66\",\"280511\",null,null,\"A\"],"
		     "\"time\":\"09:27:50.000\",\"valid\":true,\"lat\":53.36133667,\"lon\":-6.50562,"
		     "\"speed_kn\":0.02,\"course_deg\":31.66,\"date\":\"2011-05-28\","
		     "\"datetime\":\"2011-05-28T09:27:50.000Z\",\"magnetic_variation_deg\":null,"
		     "\"mode\":\"A\"}"));
	/* A receiver without a fix says V. */
	CHECK(parses("$GPRMC,,V,,,,,,,,,,N*53", 0,
		     "{\"talker\":\"GP\",\"type\":\"RMC\",\"fields\":[null,\"V\",null,null,null,null,null,"
		     "null,null,null,null,\"N\"],\"time\":null,\"valid\":false,\"lat\":null,\"lon\":null,"
		     "\"speed_kn\":null,\"course_deg\":null,\"date\":null,"
		     "\"magnetic_variation_deg\":null,\"mode\":\"N\"}"));
}

TEST(test_other_sentences)
{
	CHECK(parses("$GPGLL,4916.45,N,12311.12,W,225444,A,*1D", 0,
		     "{\"talker\":\"GP\",\"type\":\"GLL\",\"fields\":[\"4916.45\",\"N\",\"12311.12\",\"W\","
		     "\"225444\",\"A\",null],\"lat\":49.27416667,\"lon\":-123.1853333,"
		     "\"time\":\"22:54:44\",\"valid\":true,\"mode\":null}"));
	CHECK(parses("$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48", 0,
		     "{\"talker\":\"GP\",\"type\":\"VTG\",\"fields\":[\"054.7\",\"T\",\"034.4\",\"M\","
		     "\"005.5\",\"N\",\"010.2\",\"K\"],\"course_deg\":54.7,\"course_magnetic_deg\":34.4,"
		     "\"speed_kn\":5.5,\"speed_kmh\":10.2}"));
	CHECK(parses("$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39", 0,
		     "{\"talker\":\"GP\",\"type\":\"GSA\",\"fields\":[\"A\",\"3\",\"04\",\"05\",null,\"09\","
		     "\"12\",null,null,\"24\",null,null,null,null,\"2.5\",\"1.3\",\"2.1\"],\"mode\":\"A\","
		     "\"fix_type\":3,\"satellites_used\":[4,5,9,12,24],\"pdop\":2.5,\"hdop\":1.3,"
		     "\"vdop\":2.1}"));
	CHECK(parses("$GPZDA,201530.00,04,07,2002,00,00*60", 0,
		     "{\"talker\":\"GP\",\"type\":\"ZDA\",\"fields\":[\"201530.00\",\"04\",\"07\",\"2002\","
		     "\"00\",\"00\"],\"time\":\"20:15:30.00\",\"date\":\"2002-07-04\","
		     "\"datetime\":\"2002-07-04T20:15:30.00Z\"}"));
	/* Sentences without a decoder: talker, type and fields. */
	CHECK(parses("$GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45*75", 0,
		     "{\"talker\":\"GP\",\"type\":\"GSV\",\"fields\":[\"2\",\"1\",\"08\",\"01\",\"40\","
		     "\"083\",\"46\",\"02\",\"17\",\"308\",\"41\",\"12\",\"07\",\"344\",\"39\",\"14\","
		     "\"22\",\"228\",\"45\"]}"));
	CHECK(parses("$PGRME,15.0,M,45.0,M,25.0,M*1C", 0,
		     "{\"talker\":\"P\",\"type\":\"GRME\",\"fields\":[\"15.0\",\"M\",\"45.0\",\"M\","
		     "\"25.0\",\"M\"]}"));
	/* AIS (gpsd's AIVDM/AIVDO documentation): '!' sentences, payload kept. */
	CHECK(parses("!AIVDM,1,1,,B,177KQJ5000G?tO`K>RA1wUbN0TKH,0*5C", 0,
		     "{\"talker\":\"AI\",\"type\":\"VDM\",\"fields\":[\"1\",\"1\",null,\"B\","
		     "\"177KQJ5000G?tO`K>RA1wUbN0TKH\",\"0\"]}"));
	/* Lower-case hex digits, trailing CR and blanks are accepted. */
	CHECK(parses("$PGRME,15.0,M,45.0,M,25.0,M*1c\r", 0,
		     "{\"talker\":\"P\",\"type\":\"GRME\",\"fields\":[\"15.0\",\"M\",\"45.0\",\"M\","
		     "\"25.0\",\"M\"]}"));
	/* A sentence of only an address. */
	CHECK(parses("$GPTXT*4F", 0, "{\"talker\":\"GP\",\"type\":\"TXT\",\"fields\":[]}"));
}

/* Every kind of bad sentence, each with its reason. */
TEST(test_bad_sentences)
{
	/* The checksum: missing, wrong, malformed. */
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", -EINVAL,
		     "NMEA checksum missing"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", -EINVAL,
		     "NMEA checksum mismatch: the sentence says 48, its bytes give 47"));
	/* One byte damaged in transit. */
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.5,M,46.9,M,,*47", -EINVAL,
		     "NMEA checksum mismatch"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4", -EINVAL,
		     "NMEA checksum malformed: '*4'"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4G", -EINVAL,
		     "NMEA checksum malformed"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*470", -EINVAL,
		     "NMEA checksum malformed"));
	CHECK(parses("$GPGGA,123519,*4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", -EINVAL,
		     "NMEA checksum malformed"));
	/* Cut: the line began in the middle of a sentence. */
	CHECK(parses("31.000,E,1,08,0.9,545.4,M,46.9,M,,*47", -EINVAL, "does not start with '$' or '!'"));
	CHECK(parses("", -EINVAL, "empty line"));
	CHECK(parses("\r", -EINVAL, "empty line"));
	/* Wrong baud rate: bytes that are not text. */
	CHECK(parses("\xf0\x8c\x1e$GP\xff", -EINVAL, "byte 0xf0 at 0 is not printable ASCII (a wrong baud rate?)"));
	CHECK(parses("$GPGGA,1\t2*51", -EINVAL, "byte 0x09 at 8"));
	/* The address. */
	CHECK(parses("$*00", -EINVAL, "NMEA address '' is not"));
	CHECK(parses("$G,1*5A", -EINVAL, "NMEA address 'G' is not"));
	CHECK(parses("$GP,1*0A", -EINVAL, "NMEA address 'GP' is not"));
	CHECK(parses("$gpgga,1*6B", -EINVAL, "NMEA address 'gpgga' is not"));
	CHECK(parses("$GPGGAGPGGAGPGGAGPGGA,1*1D", -EINVAL, "is not a talker and a sentence type"));
	/* Right checksum, fields that cannot be what they stand for. */
	CHECK(parses("$GPGGA,123519,48x7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*0F", -EINVAL,
		     "GGA field 2 (lat): '48x7.038' is not valid"));
	CHECK(parses("$GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*51", -EINVAL,
		     "GGA field 3 (N or S): 'X' is not valid"));
	CHECK(parses("$GPGGA,123519,4807.038,,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*09", -EINVAL,
		     "GGA field 3 (N or S): '' is not valid"));
	CHECK(parses("$GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*41", -EINVAL,
		     "GGA field 2 (lat): '4867.038'"));
	CHECK(parses("$GPGGA,123519,9107.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*43", -EINVAL,
		     "GGA field 2 (lat)"));
	CHECK(parses("$GPGGA,123519,4807.038,N,18131.000,E,1,08,0.9,545.4,M,46.9,M,,*4F", -EINVAL,
		     "GGA field 4 (lon)"));
	CHECK(parses("$GPGGA,253519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*43", -EINVAL,
		     "GGA field 1 (time): '253519'"));
	CHECK(parses("$GPGGA,12351,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*7E", -EINVAL,
		     "GGA field 1 (time)"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,1e5,M,46.9,M,,*08", -EINVAL,
		     "GGA field 9 (altitude_m): '1e5'"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,-8,0.9,545.4,M,46.9,M,,*5A", -EINVAL,
		     "GGA field 7 (satellites)"));
	CHECK(parses("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4*7E", -EINVAL,
		     "GGA sentence has 9 fields, at least 14 expected"));
	CHECK(parses("$GPRMC,123519,X,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*73", -EINVAL,
		     "RMC field 2 (status): 'X'"));
	CHECK(parses("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,300294,003.1,W*69", -EINVAL,
		     "RMC field 9 (date): '300294'"));
	CHECK(parses("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,Q*6C", -EINVAL,
		     "RMC field 11 (E or W)"));
	CHECK(parses("$GPZDA,201530.00,31,02,2002,00,00*63", -EINVAL, "ZDA field 2 (date)"));
	CHECK(parses("$GPGSA,A,3,04,0x5,,09,12,,,24,,,,,2.5,1.3,2.1*41", -EINVAL,
		     "GSA field 4 (satellite): '0x5'"));
}

/* A leap day exists only in leap years. */
TEST(test_dates)
{
	CHECK(parses("$GPZDA,000000,29,02,2024,00,00*45", 0,
		     "{\"talker\":\"GP\",\"type\":\"ZDA\",\"fields\":[\"000000\",\"29\",\"02\",\"2024\","
		     "\"00\",\"00\"],\"time\":\"00:00:00\",\"date\":\"2024-02-29\","
		     "\"datetime\":\"2024-02-29T00:00:00Z\"}"));
	CHECK(parses("$GPZDA,000000,29,02,2023,00,00*42", -EINVAL, "ZDA field 2 (date)"));
	CHECK(parses("$GPZDA,000000,29,02,2000,00,00*43", 0, "{\"talker\":\"GP\",\"type\":\"ZDA\","
		     "\"fields\":[\"000000\",\"29\",\"02\",\"2000\",\"00\",\"00\"],\"time\":\"00:00:00\","
		     "\"date\":\"2000-02-29\",\"datetime\":\"2000-02-29T00:00:00Z\"}"));
	CHECK(parses("$GPZDA,000000,29,02,2100,00,00*42", -EINVAL, "ZDA field 2 (date)"));
}

/* Whatever allocation fails, the answer is the same or -ENOMEM, and the
 * output is as it was. */
TEST(test_out_of_memory)
{
	static const char s[] = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
	bool done = false;

	for (long k = 0; k < 100 && !done; k++) {
		struct buf out = BUF_INIT;
		int rc;

		buf_adds(&out, "pre");
		mem_fail_after(k);
		rc = parse_record(PARSER_NMEA, s, strlen(s), NULL, 0, &out, why, sizeof(why));
		mem_fail_after(-1);
		CHECK(rc == 0 || rc == -ENOMEM);
		if (rc)
			CHECK_EQ_STR(out.p, "pre");
		done = rc == 0;
		buf_release(&out);
	}
	CHECK(done);
	CHECK_EQ_INT(mem_in_use(), 0);
}

int main(void)
{
	RUN(test_gga);
	RUN(test_rmc);
	RUN(test_other_sentences);
	RUN(test_bad_sentences);
	RUN(test_dates);
	RUN(test_out_of_memory);
	TEST_END();
}
