/* test_modbus.c - the modbus driver's key table and its checks of a
 * register map, through cfg_parse_section() (the code config_parse() runs
 * for every section) and the driver's validate(): a good map passes, and
 * each mistake a field engineer makes is refused with a message that names
 * the register and what to do. */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "driver.h"
#include "test.h"

extern const struct driver modbus_driver;

static char err[512];

/* 0 when the section parses and validates; err holds the message. */
static int check(const char *text)
{
	void *conf = calloc(1, modbus_driver.conf_size);
	int rc;

	err[0] = '\0';
	if (!conf)
		return -ENOMEM;
	rc = cfg_parse_section(modbus_driver.conf_keys, conf, text, "m.conf", err, sizeof(err));
	if (!rc) {
		rc = modbus_driver.validate(conf, err, sizeof(err));
		cfg_release(modbus_driver.conf_keys, conf);
	}
	free(conf);
	return rc;
}

TEST(test_a_meter_map_passes)
{
	CHECK_EQ_INT(check("url = tcp://10.0.0.5\n"
			   "register = name=voltage function=input address=0 type=float32 unit=V\n"
			   "register = name=model address=30 type=string count=8\n"
			   "register = name=alarm address=33 type=bit bit=9\n"
			   "register = name=temp address=34 type=int16 scale=0.1 offset=-40 unit=\"deg C\"\n"
			   "register = name=relay function=coil address=0\n"
			   "register = name=energy function=input address=342 type=float32 order=cdab "
			   "group=slow interval=1m\n"), 0);
	CHECK_EQ_STR(err, "");
	CHECK(modbus_driver.flags & DRIVER_STRUCTURED);
	CHECK(modbus_driver.flags & DRIVER_REPLAY);
}

TEST(test_mistakes_are_named)
{
	static const struct {
		const char *text, *want;
	} bad[] = {
		{ "url = modbus://x\nregister = name=a address=0\n", "is not tcp://host" },
		{ "url = rtu://ttyUSB0\nregister = name=a address=0\n", "names the serial device" },
		{ "url = rtu+tcp://gw\nregister = name=a address=0\n", "give the converter's port" },
		{ "url = tcp://h\n", "register" },
		{ "url = tcp://h\nbaud = 10000\nregister = name=a address=0\n", "not a standard speed" },
		{ "url = tcp://h\nregister = name=a address=0 type=float33\n", "float33" },
		{ "url = tcp://h\nregister = name=a function=coil address=0 type=int16\n",
		  "register' 'a': coils and discrete inputs are read as type=bool" },
		{ "url = tcp://h\nregister = name=a address=0 type=bool\n", "use type=bit" },
		{ "url = tcp://h\nregister = name=a address=0 type=string\n", "needs count=N" },
		{ "url = tcp://h\nregister = name=a address=0 type=float32 count=4\n",
		  "takes 2 registers" },
		{ "url = tcp://h\nregister = name=a address=0 bit=3\n", "bit=N is for type=bit" },
		{ "url = tcp://h\nregister = name=a address=65535 type=uint32\n", "beyond 65535" },
		{ "url = tcp://h\nregister = name=a address=0 scale=ten\n", "not a number" },
		{ "url = tcp://h\nregister = name=a address=0\nregister = name=a address=1\n",
		  "given twice" },
		{ "url = tcp://h\nregister = name=device address=0\n", "taken by the record" },
		{ "url = tcp://h\nregister = name=a address=0 group=g interval=1s\n"
		  "register = name=b address=1 group=g interval=2s\n", "interval is given twice" },
		{ "url = tcp://h\nregister = address=0\n", "name" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = check(bad[i].text);

		if (rc != -EINVAL || !strstr(err, bad[i].want))
			fprintf(stderr, "case %zu: rc %d, err \"%s\", wanted \"%s\"\n", i, rc, err,
				bad[i].want);
		CHECK_EQ_INT(rc, -EINVAL);
		CHECK(strstr(err, bad[i].want) != NULL);
	}
}

int main(void)
{
	RUN(test_a_meter_map_passes);
	RUN(test_mistakes_are_named);
	TEST_END();
}
