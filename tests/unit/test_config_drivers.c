/* test_config_drivers.c - what the config says of a driver's interface
 * version and flags, through config_parse() itself.
 *
 * This binary links its own driver registry: driver_registry and
 * driver_find are defined here, so the linker never takes
 * drivers/registry.o from libagent.a, and `driver =` finds these drivers
 * (tail, a structured one and one built for an older interface).
 */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "driver.h"
#include "test.h"

extern const struct driver tail_driver;

static const struct driver structured_driver = {
	.version = DRIVER_VERSION,
	.name = "modbus",
	.help = "A structured driver.",
	.flags = DRIVER_STRUCTURED,
};

static const struct driver old_driver = {
	.version = 1,
	.name = "old",
	.help = "A driver of interface version 1.",
};

static const struct driver json_driver = {
	.version = DRIVER_VERSION,
	.name = "lines",
	.help = "A driver whose records are JSON lines by default.",
	.parser = "json",
};

const struct driver *const driver_registry[] = {
	&tail_driver,
	&structured_driver,
	&old_driver,
	&json_driver,
	NULL,
};

const struct driver *driver_find(const char *name)
{
	for (size_t i = 0; driver_registry[i]; i++)
		if (!strcmp(driver_registry[i]->name, name))
			return driver_registry[i];
	return NULL;
}

#define REST "[output o]\ntype = mqtt\n"

static char err[512];

static int parse(const char *text, struct config **c)
{
	*c = NULL;
	return config_parse(text, strlen(text), "t.conf", c, err, sizeof(err));
}

static void bad(const char *text, const char *want)
{
	struct config *c;

	CHECK_EQ_INT(parse(text, &c), -EINVAL);
	CHECK(c == NULL);
	if (!strstr(err, want)) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err, want);
		CHECK(0);
	}
}

TEST(test_structured_driver_takes_no_parser)
{
	struct config *c;

	bad("[agent]\nid = a\n[input m]\ndriver = modbus\n\nparser = json\n" REST,
	    "t.conf:6: key 'parser': driver 'modbus' takes no parser: its records are structured");
	/* Even the default, written out, is refused: it would not be used. */
	bad("[agent]\nid = a\n[input m]\nparser = raw\ndriver = modbus\n" REST,
	    "t.conf:4: key 'parser': driver 'modbus' takes no parser");
	/* Without the key it loads. */
	REQUIRE(parse("[agent]\nid = a\n[input m]\ndriver = modbus\n" REST, &c) == 0);
	CHECK(c->inputs->drv_type == &structured_driver);
	config_free(c);
	/* A driver without the flag keeps its parser. */
	REQUIRE(parse("[agent]\nid = a\n[input t]\ndriver = tail\npath = /x\nparser = csv\n" REST, &c) == 0);
	CHECK_EQ_INT(c->inputs->parser, PARSER_CSV);
	config_free(c);
}

TEST(test_driver_of_another_version_is_refused)
{
	bad("[agent]\nid = a\n[input o]\n\ndriver = old\n" REST,
	    "t.conf:5: key 'driver': driver 'old' was built for interface version 1, this agent speaks 2");
}

/* A driver may name its own default parser; the section's key still wins. */
TEST(test_driver_default_parser)
{
	struct config *c;

	REQUIRE(parse("[agent]\nid = a\n[input l]\ndriver = lines\n" REST, &c) == 0);
	CHECK_EQ_INT(c->inputs->parser, PARSER_JSON);
	config_free(c);
	REQUIRE(parse("[agent]\nid = a\n[input l]\nparser = influx\ndriver = lines\n" REST, &c) == 0);
	CHECK_EQ_INT(c->inputs->parser, PARSER_INFLUX);
	config_free(c);
	REQUIRE(parse("[agent]\nid = a\n[input l]\nparser = raw\ndriver = lines\n" REST, &c) == 0);
	CHECK_EQ_INT(c->inputs->parser, PARSER_RAW);
	config_free(c);
	/* Others keep raw. */
	REQUIRE(parse("[agent]\nid = a\n[input t]\ndriver = tail\npath = /x\n" REST, &c) == 0);
	CHECK_EQ_INT(c->inputs->parser, PARSER_RAW);
	config_free(c);
}

int main(void)
{
	RUN(test_driver_default_parser);
	RUN(test_structured_driver_takes_no_parser);
	RUN(test_driver_of_another_version_is_refused);
	TEST_END();
}
