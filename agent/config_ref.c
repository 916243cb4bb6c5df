/* config_ref.c - the reference of every section and key, printed from the
 * key tables: markdown for docs/configuration.md and a commented example
 * config for conf/agentd.conf (make docs writes both).
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "driver.h"
#include "output.h"

static void print_comment(FILE *f, const char *h)
{
	while (*h) {
		int n = 0, last = 0;

		while (n < 74 && h[n]) {
			if (h[n] == ' ')
				last = n;
			n++;
		}
		if (h[n] && last)
			n = last;
		fprintf(f, "# %.*s\n", n, h);
		h += n;
		while (*h == ' ')
			h++;
	}
}

static const char *type_name(const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_SIZE: return "size";
	case CFG_DURATION: return "duration";
	case CFG_ENUM: return "enum";
	default: return cfg_type_hint(k->type);
	}
}

static void print_keys(FILE *f, const struct cfg_key *keys, bool md, const char *skip)
{
	for (const struct cfg_key *k = keys; k && k->name; k++) {
		if (skip && !strcmp(k->name, skip))
			continue;
		if (md) {
			fprintf(f, "| `%s` | %s", k->name, type_name(k));
			if (k->type == CFG_ENUM) {
				fprintf(f, ": ");
				for (int i = 0; k->enums[i]; i++)
					fprintf(f, "%s`%s`", i ? ", " : "", k->enums[i]);
			}
			fprintf(f, " | %s | %s |\n", k->required ? "**required**" : k->def ? k->def : "(see text)",
				k->help);
			continue;
		}
		fprintf(f, "\n");
		print_comment(f, k->help);
		if (k->required)
			fprintf(f, "%s = %s\n", k->name, k->example ? k->example : "");
		else
			fprintf(f, "#%s = %s\n", k->name, k->def ? k->def : k->example ? k->example : "");
	}
}

static void print_section(FILE *f, const char *title, const char *intro, const struct cfg_key *keys)
{
	fprintf(f, "\n### %s\n\n%s\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n",
		title, intro);
	print_keys(f, keys, true, NULL);
}

static void print_markdown(FILE *f)
{
	char title[96];

	print_section(f, "[agent]", "Who this agent is and where it keeps its state.", config_agent_keys);
	print_section(f, "[queue]", "The durable on-disk queue every accepted record is kept in.", config_queue_keys);
	print_section(f, "[input NAME]", "Keys every input has, whatever its driver.", config_input_keys);
	for (int i = 0; driver_registry[i]; i++) {
		snprintf(title, sizeof(title), "driver = %s", driver_registry[i]->name);
		print_section(f, title, driver_registry[i]->help, driver_registry[i]->conf_keys);
	}
	print_section(f, "[output NAME]", "Keys every output has, whatever its type.", config_output_keys);
	for (int i = 0; output_types[i]; i++) {
		snprintf(title, sizeof(title), "type = %s", output_types[i]->name);
		print_section(f, title, output_types[i]->help, output_types[i]->conf_keys);
	}
}

/* A loadable example: every key with its help, defaults commented out,
 * one input of the first driver and one output of the first type. */
static void print_example(FILE *f)
{
	const struct driver *d = driver_registry[0];
	const struct output_type *t = output_types[0];

	fprintf(f, "# agentd configuration: every key, with its default commented out.\n"
		   "# Sizes take KiB/MiB/GiB, durations ms/s/m/h, booleans true/false,\n"
		   "# yes/no or on/off. Validate with\n"
		   "#   agentd --check-config FILE\n\n[agent]\n");
	print_keys(f, config_agent_keys, false, NULL);
	fprintf(f, "\n[queue]\n");
	print_keys(f, config_queue_keys, false, NULL);
	fprintf(f, "\n# One section per input; NAME is the default stream name.\n[input sensors]\n");
	print_comment(f, config_input_keys[0].help);
	fprintf(f, "driver = %s\n", d->name);
	print_keys(f, config_input_keys, false, "driver");
	fprintf(f, "\n# Keys of driver = %s: %s\n", d->name, d->help);
	print_keys(f, d->conf_keys, false, NULL);
	fprintf(f, "\n# One section per output.\n[output lake]\n");
	print_comment(f, config_output_keys[0].help);
	fprintf(f, "type = %s\n", t->name);
	print_keys(f, config_output_keys, false, "type");
	fprintf(f, "\n# Keys of type = %s: %s\n", t->name, t->help);
	print_keys(f, t->conf_keys, false, NULL);
}

void config_print_reference(FILE *f, bool md)
{
	if (md)
		print_markdown(f);
	else
		print_example(f);
}

