/* test_config.c - the config format: values, units, strictness, messages. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "driver.h"
#include "mem.h"
#include "output.h"
#include "test.h"

#define GOOD                                                                 \
	"[agent]\nid = gw-01\nstate_dir = /tmp/x\n"                          \
	"[input sensors]\ndriver = tail\npath = /tmp/x/*.log\n"              \
	"[output lake]\ntype = mqtt\n"

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
	bad("[agent]\nid = a\nid = b\n" GOOD, "t.conf:3: key 'id' set twice (first on line 2)");
	bad("[queue]\nmax_bytes = lots\n" GOOD, "t.conf:2: key 'max_bytes': 'lots' is not a valid size");
	bad("[queue]\nmax_bytes = 10\n" GOOD, "t.conf:2: key 'max_bytes': 10 is below the minimum");
	bad("[queue]\non_full = panic\n" GOOD,
	    "t.conf:2: key 'on_full': 'panic' is not one of: drop_oldest, block");
	bad("[queue]\ncommit_interval = 5 parsecs\n" GOOD, "t.conf:2: key 'commit_interval'");
	bad("[queue]\ncommit_records = 0\n" GOOD, "key 'commit_records': 0 is out of range");
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
	    "[agent] key 'id': 'has space' may only hold");
	bad("[agent]\nstate_dir = relative/dir\n[input s]\ndriver = tail\npath = /x\n[output o]\ntype = mqtt\n",
	    "must be an absolute path");
	bad(GOOD "url = ftp://x\n", "[output lake]");
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

TEST(test_out_of_memory)
{
	size_t before = mem_in_use();

	/* Fail each allocation in turn: always a clean error, never a leak. */
	for (long i = 0; i < 200; i++) {
		struct config *c = NULL;
		int rc;

		mem_fail_after(i);
		rc = parse(GOOD, &c);
		mem_fail_after(-1);
		if (rc == 0) {
			config_free(c);
			break;
		}
		CHECK(rc == -ENOMEM || rc == -EINVAL);
		CHECK(c == NULL);
		CHECK_EQ_INT(mem_in_use(), before);
	}
}

int main(void)
{
	RUN(test_good_and_defaults);
	RUN(test_units_quotes_comments);
	RUN(test_errors_name_line_and_key);
	RUN(test_binary_garbage);
	RUN(test_load_file_errors);
	RUN(test_same_text_same_hash);
	RUN(test_out_of_memory);
	TEST_END();
}
