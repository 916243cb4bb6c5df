/* test_config.c - the config format: values, units, strictness, messages. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"
#include "driver.h"
#include "mem.h"
#include "output.h"
#include "test.h"

#define GOOD_IO                                                              \
	"[input sensors]\ndriver = tail\npath = /tmp/x/*.log\n"              \
	"[output lake]\ntype = mqtt\n"
#define GOOD "[agent]\nid = gw-01\nstate_dir = /tmp/x\n" GOOD_IO

static char err[512];

static int parse(const char *text, struct config **c)
{
	return config_parse(text, strlen(text), "t.conf", c, err, sizeof(err));
}

/* Parse text that must fail and check the message holds `want`. */
static void bad(const char *text, const char *want)
{
	struct config *c = NULL;
	int rc = parse(text, &c);

	CHECK_EQ_INT(rc, -EINVAL);
	CHECK(c == NULL);
	if (!strstr(err, want)) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err, want);
		CHECK(0);
	}
}

TEST(test_good_and_defaults)
{
	struct config *c = NULL;

	REQUIRE(parse(GOOD, &c) == 0);
	CHECK_EQ_STR(c->agent.id, "gw-01");
	CHECK_EQ_STR(c->agent.control_socket, "/tmp/x/agentd.sock");
	CHECK_EQ_INT(c->queue.max_bytes, 1LL << 30);
	CHECK_EQ_INT(c->queue.on_full, ON_FULL_DROP_OLDEST);
	CHECK_EQ_INT(c->queue.synchronous, SYNC_FULL);
	CHECK_EQ_INT(c->queue.commit_interval_ms, 20);
	CHECK_EQ_INT(c->n_inputs, 1);
	CHECK_EQ_INT(c->n_outputs, 1);
	CHECK_EQ_STR(c->inputs->stream, "sensors");
	CHECK_EQ_INT(c->inputs->parser, PARSER_RAW);
	CHECK(c->inputs->drv_type == driver_find("tail"));
	CHECK(c->outputs->out_type == output_type_find("mqtt"));
	CHECK_EQ_INT(c->outputs->linger_ms, 500);
	CHECK_EQ_INT(strlen(c->hash), 64);
	config_free(c);
}

TEST(test_units_quotes_comments)
{
	struct config *c = NULL;
	const char *text =
		"# top comment\n"
		"[agent]\r\n"
		"id = gw-01   # trailing comment\n"
		"state_dir = \"/tmp/with # hash\"\n"
		"[queue]\n"
		"max_bytes = 2MiB\n"
		"commit_interval = 2s\n"
		"on_full = block\n"
		"synchronous = normal\n"
		"; another comment style\n"
		"[input a]\ndriver = tail\npath = /x/*.log\nparser = csv\nstream = s-1.x\n"
		"max_record_bytes = 4k\n"
		"[input b]\ndriver = tail\npath = /y\n"
		"[output lake]\ntype = mqtt\nlinger = 1m\nbatch_max_bytes = 64KiB\n";

	REQUIRE(parse(text, &c) == 0);
	CHECK_EQ_STR(c->agent.state_dir, "/tmp/with # hash");
	CHECK_EQ_INT(c->queue.max_bytes, 2 << 20);
	CHECK_EQ_INT(c->queue.commit_interval_ms, 2000);
	CHECK_EQ_INT(c->queue.on_full, ON_FULL_BLOCK);
	CHECK_EQ_INT(c->queue.synchronous, SYNC_NORMAL);
	CHECK_EQ_INT(c->n_inputs, 2);
	CHECK_EQ_STR(c->inputs->name, "a");
	CHECK_EQ_STR(c->inputs->next->name, "b");
	CHECK_EQ_STR(c->inputs->stream, "s-1.x");
	CHECK_EQ_INT(c->inputs->parser, PARSER_CSV);
	CHECK_EQ_INT(c->inputs->max_record_bytes, 4096);
	CHECK_EQ_INT(c->outputs->linger_ms, 60000);
	CHECK_EQ_INT(c->outputs->batch_max_bytes, 65536);
	config_free(c);
}

TEST(test_errors_name_line_and_key)
{
	bad(GOOD "colour = blue\n", "t.conf:9: unknown key 'colour' in [output lake]");
	bad("[agent]\nid = a\nid = b\n" GOOD_IO, "t.conf:3: key 'id' set twice (first on line 2)");
	bad("[queue]\nmax_bytes = lots\n" GOOD, "t.conf:2: key 'max_bytes': 'lots' is not a valid size");
	bad("[queue]\nmax_bytes = 10\n" GOOD, "t.conf:2: key 'max_bytes': '10' is too small: the minimum is 1MiB");
	bad("[queue]\non_full = panic\n" GOOD,
	    "t.conf:2: key 'on_full': 'panic' is not one of: drop_oldest, block");
	bad("[queue]\ncommit_interval = 5 parsecs\n" GOOD, "t.conf:2: key 'commit_interval'");
	bad("[queue]\ncommit_records = 0\n" GOOD, "t.conf:2: key 'commit_records': '0' is too small: the minimum is 1");
	bad("[widgets]\n" GOOD, "t.conf:1: unknown section [widgets]");
	bad("[input]\n" GOOD, "t.conf:1: [input NAME] needs a name");
	bad("[agent x]\n", "t.conf:1: [agent] takes no name");
	bad(GOOD "[input sensors]\ndriver = tail\npath = /z\n",
	    "t.conf:9: section [input sensors] appears twice (first on line 4)");
	bad("[input s]\npath = /x\n[output o]\ntype = mqtt\n", "[input s]: missing required key 'driver'");
	bad("[input s]\ndriver = carrier-pigeon\n", "t.conf:2: key 'driver': unknown driver 'carrier-pigeon' (known: tail");
	bad("[input s]\ndriver = tail\n[output o]\ntype = mqtt\n", "[input s]: missing required key 'path'");
	bad("[input s]\ndriver = tail\npath = /x\nurl = mqtt://x\n[output o]\ntype = mqtt\n",
	    "t.conf:4: unknown key 'url' in [input s] (not a key of this driver)");
	bad("[agent]\nid = x\n[input s]\ndriver = tail\npath = /x\n", "no [output NAME] section");
	bad("[agent]\nid = x\n[output o]\ntype = mqtt\n", "no [input NAME] section");
	bad("id = x\n", "t.conf:1: key 'id' before any [section]");
	bad("[agent]\njust words\n", "t.conf:2: expected 'key = value' or '[section]'");
	bad("[agent]\nid = \"open\n", "t.conf:2: key 'id': unbalanced or misplaced quote");
	bad("[agent]\nid = has space\n" "[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\n",
	    "t.conf:2: [agent] key 'id': 'has space' may only hold");
	bad("[agent]\nstate_dir = relative/dir\n[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\n",
	    "t.conf:2: [agent] key 'state_dir': 'relative/dir' must be an absolute path");
	bad(GOOD "url = ftp://x\n", "t.conf:9: [output lake] key 'url': url 'ftp://x' must look like");
}

/* Every error names the file, the line and the key, also those found after
 * a section was read: the agent's id, a stream name, and what a driver's or
 * output type's own check says. */
TEST(test_errors_after_parsing_name_line_and_key)
{
	bad("# the agent\n[agent]\nstate_dir = /tmp/x\nid = gw 1/x\n[input s]\ndriver = tail\npath = /x\n"
	    "[output o]\ntype = mqtt\n",
	    "t.conf:4: [agent] key 'id': 'gw 1/x' may only hold letters, digits");
	/* Sections in any order: the check does not wait for the end. */
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\n[agent]\nid = a/b\n",
	    "t.conf:7: [agent] key 'id': 'a/b' may only hold");
	bad("[input s]\ndriver = tail\npath = /x\nstream = a b\n[output o]\ntype = mqtt\n",
	    "t.conf:4: [input s] key 'stream': 'a b' may only hold");
	/* The driver's check: its message is tied to the key's line. */
	bad("[input s]\ndriver = tail\n\npath = relative.log\n[output o]\ntype = mqtt\n",
	    "t.conf:4: [input s] key 'path': 'relative.log' is not an absolute path");
	/* The output type's checks, on a key that is set and on one that is not. */
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\nurl = mqtts://10.0.0.1\n",
	    "t.conf:6: [output o] key 'url': url 'mqtts://10.0.0.1' names the broker by IP address");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\nclient_key = /k\n"
	    "url = mqtts://broker\n",
	    "t.conf:6: [output o] key 'client_key': client_key needs client_cert");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = s3\nendpoint = https://h\n"
	    "bucket = b-1\naccess_key_file = /a\nsecret_key_file = /s\nkey = x/{stream}\n",
	    "t.conf:10: [output o] key 'key': key 'x/{stream}' must contain {batch_id}");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = https\nurl = https://h/x\n"
	    "headers = Bad Name: v\n",
	    "t.conf:7: [output o] key 'headers': headers: 'Bad Name' is not a valid header name");
}

/* A slip of the keyboard is named with the key that was probably meant. */
TEST(test_unknown_keys_get_a_suggestion)
{
	/* A typo in a required key: not only "missing 'driver'". */
	bad("[input s]\ndrivr = tail\npath = /x\n[output o]\ntype = mqtt\n",
	    "t.conf:2: unknown key 'drivr' in [input s] (did you mean 'driver'?): the required key "
	    "'driver' is missing");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntpye = mqtt\n",
	    "t.conf:5: unknown key 'tpye' in [output o] (did you mean 'type'?)");
	bad("[agent]\nstate_dr = /x\n" GOOD_IO, "t.conf:2: unknown key 'state_dr' in [agent] (did you mean 'state_dir'?)");
	bad("[queue]\nmax-bytes = 1GiB\n" GOOD, "t.conf:2: unknown key 'max-bytes' in [queue] (did you mean 'max_bytes'?)");
	bad("[queue]\nOn_Full = block\n" GOOD, "(did you mean 'on_full'?)");
	/* Keys of the driver and of the output type are suggested too. */
	bad("[input s]\ndriver = tail\npath = /x\nparser = json\nstrem = s\n[output o]\ntype = mqtt\n",
	    "t.conf:5: unknown key 'strem' in [input s] (did you mean 'stream'?)");
	bad("[input s]\ndriver = tail\npth = /x\npath = /y\n[output o]\ntype = mqtt\n",
	    "t.conf:3: unknown key 'pth' in [input s] (did you mean 'path'?)");
	bad(GOOD "urll = mqtt://x\n", "t.conf:9: unknown key 'urll' in [output lake] (did you mean 'url'?)");
	bad(GOOD "lingr = 1s\n", "t.conf:9: unknown key 'lingr' in [output lake] (did you mean 'linger'?)");
	/* Nothing close: no guess. */
	bad(GOOD "colour = blue\n", "t.conf:9: unknown key 'colour' in [output lake] (not a key of this output type)");
	bad("[ouptut lake]\n", "t.conf:1: unknown section [ouptut] (did you mean [output NAME]?)");
}

/* A number too large says so and gives the maximum, for every kind. */
TEST(test_out_of_range_gives_the_bound)
{
	bad("[queue]\nmax_bytes = 99999999999999GiB\n" GOOD,
	    "t.conf:2: key 'max_bytes': '99999999999999GiB' is too large: the maximum is "
	    "9223372036854775807 bytes");
	bad("[queue]\nmax_record_bytes = 65MiB\n" GOOD,
	    "t.conf:2: key 'max_record_bytes': '65MiB' is too large: the maximum is 64MiB");
	bad("[queue]\nmax_record_bytes = 99999999999999999999\n" GOOD,
	    "key 'max_record_bytes': '99999999999999999999' is too large: the maximum is 64MiB");
	bad("[queue]\ncommit_records = 1000001\n" GOOD,
	    "t.conf:2: key 'commit_records': '1000001' is too large: the maximum is 1000000");
	bad("[queue]\ncommit_records = 99999999999999999999\n" GOOD,
	    "key 'commit_records': '99999999999999999999' is too large: the maximum is 1000000");
	bad("[queue]\ncommit_records = -99999999999999999999\n" GOOD,
	    "key 'commit_records': '-99999999999999999999' is too small: the minimum is 1");
	bad("[queue]\ncommit_interval = 1h\n" GOOD,
	    "t.conf:2: key 'commit_interval': '1h' is too large: the maximum is 10s");
	bad("[queue]\ncommit_interval = 9999999999999999d\n" GOOD,
	    "key 'commit_interval': '9999999999999999d' is too large: the maximum is 10s");
	bad(GOOD "retry_max = 2d\n", "t.conf:9: key 'retry_max': '2d' is too large: the maximum is 1d");
	bad(GOOD "retry_base = 5ms\n", "t.conf:9: key 'retry_base': '5ms' is too small: the minimum is 10 ms");
	bad("[queue]\nmax_bytes = -5MiB\n" GOOD, "key 'max_bytes': '-5MiB' is negative: a size cannot be");
	bad("[queue]\nmax_bytes = 12 parsecs\n" GOOD, "key 'max_bytes': '12 parsecs' is not a valid size");
	/* A port out of range in a URL says so. */
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\nurl = mqtt://h:70000\n",
	    "t.conf:6: [output o] key 'url': url 'mqtt://h:70000': the port must be 1 to 65535");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = https\nurl = https://h:0/x\n",
	    "t.conf:6: [output o] key 'url': url 'https://h:0/x': the port must be 1 to 65535");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = s3\nendpoint = https://h:99999999999999999999\n"
	    "bucket = b-1\naccess_key_file = /a\nsecret_key_file = /s\n",
	    "t.conf:6: [output o] key 'endpoint': endpoint 'https://h:99999999999999999999': the port must be 1 to 65535");
	bad("[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\nurl = mqtt://h:x1\n",
	    "url 'mqtt://h:x1' must look like mqtt://host:port");
}

TEST(test_booleans)
{
	static const char *const yes[] = { "true", "yes", "on", "1", "TRUE", "Yes", "ON" };
	static const char *const no[] = { "false", "no", "off", "0", "False", "NO", "Off" };
	char text[256];
	struct config *c = NULL;

	for (size_t i = 0; i < 7; i++) {
		snprintf(text, sizeof(text), "[agent]\ntrust_clock = %s\n" GOOD_IO, yes[i]);
		REQUIRE(parse(text, &c) == 0);
		CHECK(c->agent.trust_clock);
		config_free(c);
		snprintf(text, sizeof(text), "[agent]\ntrust_clock = %s\n" GOOD_IO, no[i]);
		REQUIRE(parse(text, &c) == 0);
		CHECK(!c->agent.trust_clock);
		config_free(c);
	}
	bad("[agent]\ntrust_clock = maybe\n" GOOD_IO,
	    "t.conf:2: key 'trust_clock': 'maybe' is not a boolean (use true/false, yes/no, on/off)");
}

TEST(test_binary_garbage)
{
	static const char garbage[] = "[agent]\nid = a\x01\x02\n";
	struct config *c = NULL;

	CHECK_EQ_INT(config_parse(garbage, sizeof(garbage) - 1, "g.conf", &c, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "g.conf:2: control character 0x01") != NULL);
	CHECK_EQ_INT(config_parse("[agent]\0x", 9, "n.conf", &c, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "NUL byte") != NULL);
}

TEST(test_load_file_errors)
{
	struct config *c = NULL;
	char dir[] = "/tmp/test_config.XXXXXX", path[128];
	FILE *f;

	REQUIRE(mkdtemp(dir));
	CHECK_EQ_INT(config_load("/nonexistent/agentd.conf", &c, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "/nonexistent/agentd.conf: cannot open") != NULL);
	CHECK(config_load(dir, &c, err, sizeof(err)) < 0);
	CHECK(strstr(err, "not a regular file") != NULL);
	snprintf(path, sizeof(path), "%s/a.conf", dir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs(GOOD, f);
	fclose(f);
	REQUIRE(config_load(path, &c, err, sizeof(err)) == 0);
	CHECK_EQ_STR(c->path, path);
	config_free(c);
	unlink(path);
	rmdir(dir);
}

TEST(test_same_text_same_hash)
{
	struct config *a = NULL, *b = NULL, *d = NULL;

	REQUIRE(parse(GOOD, &a) == 0);
	REQUIRE(parse(GOOD, &b) == 0);
	REQUIRE(parse(GOOD "# changed\n", &d) == 0);
	CHECK_EQ_STR(a->hash, b->hash);
	CHECK(strcmp(a->hash, d->hash) != 0);
	config_free(a);
	config_free(b);
	config_free(d);
}

/* A key table with a list and a table, like a device driver's register map:
 * no driver in the registry has one yet, so these go through
 * cfg_parse_section(), the code config_parse() runs for every section. */
static const char *const reg_types[] = { "u16", "s16", "float32", NULL };

struct reg {
	char *name;
	int64_t address;
	int type;
	int64_t max_age_ms;
	int64_t buffer;
	bool writable;
	char *desc;
};

#define RC(f) offsetof(struct reg, f)
static const struct cfg_key reg_cols[] = {
	{ "name", CFG_STR, NULL, RC(name), "Field name in the record.", NULL, 0, 0, true, "voltage" },
	{ "address", CFG_INT, NULL, RC(address), "Register address.", NULL, 0, 65535, true, "100" },
	{ "type", CFG_ENUM, "u16", RC(type), "How the registers are read.", reg_types },
	{ "max_age", CFG_DURATION, "1s", RC(max_age_ms), "Oldest reading kept.", NULL, 0, 3600000 },
	{ "buffer", CFG_SIZE, "1KiB", RC(buffer), "Read buffer.", NULL, 16, 1 << 20 },
	{ "writable", CFG_BOOL, "false", RC(writable), "May be written." },
	{ "desc", CFG_STR, "", RC(desc), "What it is, for people." },
	{ NULL },
};

struct dev {
	char *host;
	struct cfg_list tags;
	struct cfg_list servers;
	struct cfg_table regs;
	int64_t timeout_ms;
};

#define DK(f) offsetof(struct dev, f)
static const struct cfg_key dev_keys[] = {
	{ "host", CFG_STR, NULL, DK(host), "Device host.", NULL, 0, 0, true, "plc-1" },
	{ "tag", CFG_LIST, NULL, DK(tags), "Tags of the device." },
	{ "server", CFG_LIST, "a, b", DK(servers), "Servers asked in turn." },
	{ .name = "register", .type = CFG_TABLE, .offset = DK(regs), .help = "One register per line.",
	  .cols = reg_cols, .row_size = sizeof(struct reg) },
	{ "timeout", CFG_DURATION, "1s", DK(timeout_ms), "Answer timeout.", NULL, 1, 60000 },
	{ NULL },
};

static int parse_dev(const char *text, struct dev *d)
{
	memset(d, 0, sizeof(*d));
	return cfg_parse_section(dev_keys, d, text, "s.conf", err, sizeof(err));
}

/* A section body that must fail: the message holds `want`, nothing leaks. */
static void bad_dev(const char *text, const char *want)
{
	size_t before = mem_in_use();
	struct dev d;
	int rc = parse_dev(text, &d);

	CHECK_EQ_INT(rc, -EINVAL);
	CHECK_EQ_INT(mem_in_use(), before);
	if (!strstr(err, want)) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err, want);
		CHECK(0);
	}
}

TEST(test_list_values)
{
	struct dev d;

	REQUIRE(parse_dev("host = h\ntag = a, b\n# between\ntag =  c  \ntag = d # comment\n", &d) == 0);
	REQUIRE(d.tags.n == 4);
	CHECK_EQ_STR(d.tags.v[0], "a");
	CHECK_EQ_STR(d.tags.v[1], "b");
	CHECK_EQ_STR(d.tags.v[2], "c");
	CHECK_EQ_STR(d.tags.v[3], "d");
	/* Not given: the default, split the same way. */
	REQUIRE(d.servers.n == 2);
	CHECK_EQ_STR(d.servers.v[0], "a");
	CHECK_EQ_STR(d.servers.v[1], "b");
	cfg_release(dev_keys, &d);
	CHECK(d.tags.v == NULL && d.tags.n == 0);
	/* Given: the lines replace the default, they do not add to it. */
	REQUIRE(parse_dev("host = h\nserver = x\nserver = y,z\n", &d) == 0);
	REQUIRE(d.servers.n == 3);
	CHECK_EQ_STR(d.servers.v[0], "x");
	CHECK_EQ_STR(d.servers.v[2], "z");
	CHECK_EQ_INT(d.tags.n, 0);
	cfg_release(dev_keys, &d);
	bad_dev("host = h\ntag = a\ntag = a,,b\n", "s.conf:3: key 'tag': 'a,,b' has an empty item");
	bad_dev("host = h\ntag = a,\n", "s.conf:2: key 'tag': 'a,' has an empty item");
	bad_dev("host = h\ntag = , a\n", "s.conf:2: key 'tag': ', a' has an empty item");
	bad_dev("host = h\ntag =\n", "s.conf:2: key 'tag': no value: a list needs at least one item");
}

/* A list is not changed by a value it refuses. */
TEST(test_list_refused_value_leaves_it)
{
	const struct cfg_key *k = &dev_keys[1];
	struct dev d;

	memset(&d, 0, sizeof(d));
	REQUIRE(cfg_set(k, &d, "a", err, sizeof(err)) == 0);
	CHECK_EQ_INT(cfg_set(k, &d, "b,,c", err, sizeof(err)), -EINVAL);
	REQUIRE(d.tags.n == 1);
	CHECK_EQ_STR(d.tags.v[0], "a");
	cfg_release(dev_keys, &d);
}

TEST(test_table_rows)
{
	struct dev d;
	struct reg *r;

	REQUIRE(parse_dev("register = name=voltage address=100\n"
			  "host = h\n"
			  "register = address=7  name=flow type=float32 max_age=2m buffer=4KiB writable=yes "
			  "desc=\"litres # per s\"   # a comment\n", &d) == 0);
	REQUIRE(d.regs.n == 2);
	/* In file order; the first row has every column's default. */
	r = CFG_ROW(&d.regs, struct reg, 0);
	CHECK_EQ_STR(r->name, "voltage");
	CHECK_EQ_INT(r->address, 100);
	CHECK_EQ_INT(r->type, 0);
	CHECK_EQ_INT(r->max_age_ms, 1000);
	CHECK_EQ_INT(r->buffer, 1024);
	CHECK(!r->writable);
	CHECK_EQ_STR(r->desc, "");
	r = CFG_ROW(&d.regs, struct reg, 1);
	CHECK_EQ_STR(r->name, "flow");
	CHECK_EQ_INT(r->address, 7);
	CHECK_EQ_INT(r->type, 2);
	CHECK_EQ_INT(r->max_age_ms, 120000);
	CHECK_EQ_INT(r->buffer, 4096);
	CHECK(r->writable);
	CHECK_EQ_STR(r->desc, "litres # per s");
	CHECK_EQ_INT(d.timeout_ms, 1000);
	cfg_release(dev_keys, &d);
	/* A comment right after a closing quote ends the row, as after a key's value. */
	REQUIRE(parse_dev("host = h\nregister = address=1 name=\"a b\"# c=1\n", &d) == 0);
	REQUIRE(d.regs.n == 1);
	CHECK_EQ_STR(CFG_ROW(&d.regs, struct reg, 0)->name, "a b");
	cfg_release(dev_keys, &d);
	CHECK(d.regs.rows == NULL && d.regs.n == 0);
	/* No line: no rows. */
	REQUIRE(parse_dev("host = h\n", &d) == 0);
	CHECK_EQ_INT(d.regs.n, 0);
	cfg_release(dev_keys, &d);
}

/* Every message names the row's line, the key and the column. */
TEST(test_table_errors)
{
	bad_dev("host = h\nregister = name=a address=1\nregister = name=b address=2 type=float33\n",
		"s.conf:3: key 'register': column 'type': 'float33' is not one of: u16, s16, float32");
	bad_dev("host = h\nregister = name=a adress=1\n",
		"s.conf:2: key 'register': unknown column 'adress' (did you mean 'address'?)");
	bad_dev("host = h\nregister = name=a colour=1\n",
		"s.conf:2: key 'register': unknown column 'colour' (columns: name, address, type, max_age, "
		"buffer, writable, desc)");
	bad_dev("host = h\nregister = name=a\n", "s.conf:2: key 'register': missing required column 'address'");
	bad_dev("host = h\nregister = name=a address=70000\n",
		"s.conf:2: key 'register': column 'address': '70000' is too large: the maximum is 65535");
	bad_dev("host = h\nregister = name=a address=1 max_age=5 parsecs\n",
		"s.conf:2: key 'register': 'parsecs' is not column=value");
	bad_dev("host = h\nregister = name=a address=1 max_age=2h\n",
		"s.conf:2: key 'register': column 'max_age': '2h' is too large: the maximum is 1h");
	bad_dev("host = h\nregister = name=a address=1 max_age=soon\n",
		"s.conf:2: key 'register': column 'max_age': 'soon' is not a valid duration");
	bad_dev("host = h\nregister = name=a address=1 buffer=2\n",
		"s.conf:2: key 'register': column 'buffer': '2' is too small: the minimum is 16 bytes");
	bad_dev("host = h\nregister = name=a address=1 writable=perhaps\n",
		"s.conf:2: key 'register': column 'writable': 'perhaps' is not a boolean");
	bad_dev("host = h\nregister = name=a address=1 address=2\n",
		"s.conf:2: key 'register': column 'address' is given twice in the row");
	bad_dev("host = h\nregister = name=a address=1 desc=\"open\n",
		"s.conf:2: key 'register': column 'desc': a quote is not closed");
	bad_dev("host = h\nregister = name=a address=1 desc=\"a\"b\n",
		"s.conf:2: key 'register': column 'desc': text right after the closing quote");
	bad_dev("host = h\nregister = # nothing\n", "s.conf:2: key 'register': an empty row");
	bad_dev("host = h\nregister = =1\n", "s.conf:2: key 'register': '=1' is not column=value");
}

/* Keys of the other types may still be given once only; so may a section's
 * keys in a whole config. */
TEST(test_single_keys_given_twice)
{
	bad_dev("host = a\ntag = x\nhost = b\n", "s.conf:3: key 'host' set twice (first on line 1)");
	bad_dev("host = a\ntimeout = 1s\ntimeout = 2s\n", "s.conf:3: key 'timeout' set twice (first on line 2)");
	bad("[queue]\non_full = block\n\non_full = block\n" GOOD,
	    "t.conf:4: key 'on_full' set twice (first on line 2)");
	bad("[input s]\ndriver = tail\npath = /x\npath = /y\n[output o]\ntype = mqtt\n",
	    "t.conf:4: key 'path' set twice (first on line 3)");
	bad(GOOD "url = mqtt://a\nurl = mqtt://b\n", "t.conf:10: key 'url' set twice (first on line 9)");
}

/* The body parser is the section parser: the same checks and messages. */
TEST(test_section_body_checks)
{
	bad_dev("tag = a\n", "s.conf: the section: missing required key 'host'");
	bad_dev("hst = a\n", "s.conf:1: unknown key 'hst' in the section (did you mean 'host'?)");
	bad_dev("host = a\nregistr = name=a address=1\n",
		"s.conf:2: unknown key 'registr' in the section (did you mean 'register'?)");
	bad_dev("host = a\ntimeout = 0\n", "s.conf:2: key 'timeout': '0' is too small: the minimum is 1 ms");
	bad_dev("host = a\n[input x]\n", "s.conf:2: a section header where only the keys of one section may be");
	bad_dev("host = \"a\n", "s.conf:1: key 'host': unbalanced or misplaced quote");
}

static char *print_to_string(bool md)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (!f)
		return NULL;
	if (md)
		cfg_print_section_md(f, "driver = dev", "A device.", dev_keys);
	else
		cfg_print_keys_conf(f, dev_keys, NULL);
	fclose(f);
	return out;
}

static void check_has(const char *text, const char *want)
{
	if (!strstr(text, want)) {
		fprintf(stderr, "reference lacks \"%s\" in:\n%s\n", want, text);
		CHECK(0);
	}
}

/* The reference shows a table's columns under its key, with type, default
 * and help, and says how lists are written. */
TEST(test_reference_shows_columns_and_lists)
{
	char *md = print_to_string(true), *conf = print_to_string(false);

	REQUIRE(md && conf);
	check_has(md, "| `register` | table (one row per line the key is given on; columns below) | (no rows) | "
		  "One register per line. |\n");
	check_has(md, "| `tag` | list (comma-separated; the key may be given on several lines) | (none) |");
	check_has(md, "| `server` | list (comma-separated; the key may be given on several lines) | a, b |");
	check_has(md, "\nColumns of `register`: each line `register = column=value column=value ...`");
	check_has(md, "    register = name=voltage address=100\n");
	check_has(md, "| column | type | default | meaning |\n| --- | --- | --- | --- |\n"
		  "| `name` | text | **required** | Field name in the record. |\n"
		  "| `address` | integer | **required** | Register address. |\n"
		  "| `type` | enum: `u16`, `s16`, `float32` | u16 | How the registers are read. |\n"
		  "| `max_age` | duration | 1s | Oldest reading kept. |\n");
	check_has(md, "| `desc` | text | `\"\"` | What it is, for people. |\n");
	/* The columns come after the section's key table, not inside it. */
	CHECK(strstr(md, "| `timeout` |") < strstr(md, "Columns of `register`"));
	check_has(conf, "# Tags of the device.\n# Items are separated by commas; the key may be given on "
		  "several lines.\n#tag = \n");
	check_has(conf, "#server = a, b\n");
	check_has(conf, "# One register per line.\n");
	check_has(conf, "#   name: text, required. Field name in the record.\n");
	check_has(conf, "#   type: one of u16, s16, float32, default u16. How the registers are read.\n");
	check_has(conf, "#   desc: text, default \"\". What it is, for people.\n");
	check_has(conf, "#register = name=voltage address=100\n");
	check_has(conf, "host = plc-1\n");
	free(md);
	free(conf);
}

/* Configs that between them reach every allocation of a parse: each
 * output type's check, more sections and keys than the first allocation
 * of their arrays holds. */
static const char *const oom_texts[] = {
	GOOD,
	"[agent]\nid = gw-01\nstate_dir = /tmp/x\ncontrol_socket = /tmp/x/s\nlog_level = debug\n"
	"trust_clock = yes\n[queue]\nmax_bytes = 2GiB\non_full = block\ncommit_interval = 5ms\n"
	"commit_records = 10\nsynchronous = normal\nmax_record_bytes = 1MiB\ndedupe_window = 100\n"
	"[input a]\ndriver = tail\npath = /a/*.log, /b/*.log\nparser = csv\nstream = s\n"
	"[input b]\ndriver = tail\npath = /b\n[input c]\ndriver = tail\npath = /c\n"
	"[input d]\ndriver = tail\npath = /d\n[input e]\ndriver = tail\npath = /e\n"
	"[input f]\ndriver = tail\npath = /f\n[input g]\ndriver = tail\npath = /g\n"
	"[output m]\ntype = mqtt\nurl = mqtts://broker:8883\ntopic = t/{agent}/{stream}\n"
	"status_topic = s/{agent}\nusername = u\npassword_file = /p\nclient_id = c\n"
	"ca_file = /ca\nclient_cert = /c\nclient_key = /k\nbatch_max_records = 10\n"
	"batch_max_bytes = 64KiB\nlinger = 1s\nmax_inflight = 2\nretry_base = 1s\nretry_max = 1m\n"
	"compression_level = 5\nstreams = s,x-*\n"
	"[output h]\ntype = https\nurl = https://lake:8443/in\nheaders = X-A: 1; X-B: 2\n"
	"[output s]\ntype = s3\nendpoint = https://s3.example.com\nbucket = lake-1\n"
	"access_key_file = /a\nsecret_key_file = /s\n",
};

/* Memory running short is never taken for a bad file: each allocation of
 * a parse fails in turn, and every time the answer is -ENOMEM with a
 * message that says so, nothing leaks, and once memory is there again the
 * same text parses. */
TEST(test_out_of_memory)
{
	size_t before = mem_in_use();

	for (size_t t = 0; t < sizeof(oom_texts) / sizeof(oom_texts[0]); t++) {
		struct config *want = NULL;
		size_t want_bytes;
		long i;

		REQUIRE(parse(oom_texts[t], &want) == 0);
		want_bytes = mem_in_use() - before;
		for (i = 0; i < 100000; i++) {
			struct config *c = NULL;
			int rc;

			mem_fail_after(i);
			rc = parse(oom_texts[t], &c);
			mem_fail_after(-1);
			if (rc == 0) {
				/* Past the last allocation: the parse is whole. */
				CHECK_EQ_STR(c->hash, want->hash);
				CHECK_EQ_INT(c->n_inputs, want->n_inputs);
				CHECK_EQ_INT(c->n_outputs, want->n_outputs);
				config_free(c);
				break;
			}
			if (rc != -ENOMEM)
				fprintf(stderr, "text %zu, allocation %ld: rc %d: %s\n", t, i, rc, err);
			CHECK_EQ_INT(rc, -ENOMEM);
			CHECK(strstr(err, "t.conf: out of memory") == err);
			CHECK(strstr(err, "invalid") == NULL);
			CHECK(c == NULL);
			CHECK_EQ_INT(mem_in_use(), before + want_bytes);
			/* And memory is there again: the same text parses. */
			REQUIRE(parse(oom_texts[t], &c) == 0);
			config_free(c);
		}
		/* The walk went over many allocations, not none. */
		CHECK(i > 10);
		config_free(want);
		CHECK_EQ_INT(mem_in_use(), before);
	}
}

/* A section with lists and a table: each allocation fails in turn, the
 * answer is -ENOMEM with a message saying so, nothing leaks, and the same
 * text parses once memory is there again. */
TEST(test_out_of_memory_lists_and_tables)
{
	static const char text[] =
		"host = plc-1\ntag = a, b, c\ntag = d\nserver = x\n"
		"register = name=voltage address=100 type=float32 desc=\"volts # L1\"\n"
		"register = name=current address=102\nregister = name=power address=104 max_age=5s\n"
		"timeout = 2s\n";
	size_t before = mem_in_use();
	long i;

	for (i = 0; i < 100000; i++) {
		struct dev d;
		int rc;

		mem_fail_after(i);
		rc = parse_dev(text, &d);
		mem_fail_after(-1);
		if (rc == 0) {
			CHECK_EQ_INT(d.tags.n, 4);
			CHECK_EQ_INT(d.servers.n, 1);
			CHECK_EQ_INT(d.regs.n, 3);
			CHECK_EQ_STR(CFG_ROW(&d.regs, struct reg, 0)->desc, "volts # L1");
			cfg_release(dev_keys, &d);
			break;
		}
		if (rc != -ENOMEM)
			fprintf(stderr, "allocation %ld: rc %d: %s\n", i, rc, err);
		CHECK_EQ_INT(rc, -ENOMEM);
		CHECK(strstr(err, "s.conf: out of memory") == err);
		CHECK_EQ_INT(mem_in_use(), before);
	}
	CHECK(i > 10);
	CHECK_EQ_INT(mem_in_use(), before);
}

/* agentctl reads [agent] of a file that may be invalid elsewhere: a key
 * given twice there keeps its default, one given twice elsewhere does not
 * matter. */
TEST(test_peek_agent_with_keys_given_twice)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[128];
	struct agent_conf ac;
	FILE *f;

	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.conf", dir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs("[agent]\nstate_dir = /a\nstate_dir = /b\ncontrol_socket = /s\n"
	      "[output o]\ntype = mqtt\ntype = https\n", f);
	fclose(f);
	REQUIRE(config_peek_agent(path, &ac) == 0);
	CHECK_EQ_STR(ac.state_dir, "/var/lib/agentd");
	CHECK_EQ_STR(ac.control_socket, "/s");
	config_agent_release(&ac);
	unlink(path);
	rmdir(dir);
}

/* The same from a file, where reading it allocates too. */
TEST(test_out_of_memory_loading_a_file)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[128];
	size_t before = mem_in_use();
	FILE *f;
	long i;

	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.conf", dir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs(GOOD, f);
	fclose(f);
	for (i = 0; i < 100000; i++) {
		struct config *c = NULL;
		int rc;

		mem_fail_after(i);
		rc = config_load(path, &c, err, sizeof(err));
		mem_fail_after(-1);
		if (rc == 0) {
			config_free(c);
			break;
		}
		CHECK_EQ_INT(rc, -ENOMEM);
		CHECK(strncmp(err, path, strlen(path)) == 0 && strstr(err, ": out of memory") != NULL);
		CHECK_EQ_INT(mem_in_use(), before);
	}
	CHECK(i > 10);
	unlink(path);
	rmdir(dir);
}

/* A driver built against another interface is refused when a config
 * names it (test_config_drivers.c); none of ours may be one. */
TEST(test_registered_drivers_speak_this_interface)
{
	int n = 0;

	for (int i = 0; driver_registry[i]; i++, n++) {
		if (driver_registry[i]->version != DRIVER_VERSION)
			fprintf(stderr, "driver '%s' is version %d\n", driver_registry[i]->name,
				driver_registry[i]->version);
		CHECK_EQ_INT(driver_registry[i]->version, DRIVER_VERSION);
	}
	CHECK(n > 0);
}

int main(void)
{
	RUN(test_good_and_defaults);
	RUN(test_units_quotes_comments);
	RUN(test_errors_name_line_and_key);
	RUN(test_errors_after_parsing_name_line_and_key);
	RUN(test_unknown_keys_get_a_suggestion);
	RUN(test_out_of_range_gives_the_bound);
	RUN(test_booleans);
	RUN(test_binary_garbage);
	RUN(test_load_file_errors);
	RUN(test_same_text_same_hash);
	RUN(test_list_values);
	RUN(test_list_refused_value_leaves_it);
	RUN(test_table_rows);
	RUN(test_table_errors);
	RUN(test_single_keys_given_twice);
	RUN(test_section_body_checks);
	RUN(test_reference_shows_columns_and_lists);
	RUN(test_out_of_memory);
	RUN(test_out_of_memory_lists_and_tables);
	RUN(test_registered_drivers_speak_this_interface);
	RUN(test_out_of_memory_loading_a_file);
	RUN(test_peek_agent_with_keys_given_twice);
	TEST_END();
}
